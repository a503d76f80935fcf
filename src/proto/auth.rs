//! AUTH (RFC 4954): the SASL exchanges for PLAIN, LOGIN, CRAM-MD5 and
//! XOAUTH2, without I/O. The session feeds client lines in and gets either a
//! challenge to send or the user and whether the credentials were right.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};

use super::reply::{defaults, Reply};

/// The mechanisms mailfault offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    Login,
    CramMd5,
    Xoauth2,
}

impl Mechanism {
    pub const ALL: [Mechanism; 4] = [
        Mechanism::Plain,
        Mechanism::Login,
        Mechanism::CramMd5,
        Mechanism::Xoauth2,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
            Mechanism::CramMd5 => "CRAM-MD5",
            Mechanism::Xoauth2 => "XOAUTH2",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(s))
    }

    /// Mechanisms that send the password itself (RFC 4954 §4: they need
    /// an encrypted channel).
    pub fn sends_password(self) -> bool {
        matches!(
            self,
            Mechanism::Plain | Mechanism::Login | Mechanism::Xoauth2
        )
    }
}

/// `[auth]` as the session needs it.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub mechanisms: Vec<Mechanism>,
    /// MAIL without AUTH gets 530 5.7.0.
    pub required: bool,
    /// Accepted user names and passwords (XOAUTH2: the token). Empty:
    /// any credentials are accepted.
    pub users: BTreeMap<String, String>,
    /// Allow password mechanisms without TLS (otherwise 538 5.7.11).
    pub allow_plaintext: bool,
}

impl AuthConfig {
    fn check(&self, user: &str, password: &str) -> bool {
        self.users.is_empty() || self.users.get(user).is_some_and(|p| p == password)
    }
}

/// Where an exchange stands, waiting for the client's next line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exchange {
    Plain,
    LoginUser,
    LoginPassword {
        user: String,
    },
    CramMd5 {
        challenge: String,
    },
    Xoauth2,
    /// XOAUTH2 failed; the server sent its error and waits for the
    /// client's empty line before 535.
    Xoauth2Failed {
        user: String,
    },
}

/// What the server does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send `334 <text>` and read another line.
    Challenge(Exchange, String),
    /// The exchange is over.
    Done { user: String, ok: bool },
    /// The exchange failed (bad encoding, cancelled).
    Error(Reply),
}

fn decode(b64: &str) -> Result<Vec<u8>, Reply> {
    if b64 == "=" {
        return Ok(Vec::new());
    }
    B64.decode(b64.trim())
        .map_err(|_| defaults::cannot_decode())
}

fn text(bytes: Vec<u8>) -> Result<String, Reply> {
    String::from_utf8(bytes).map_err(|_| defaults::cannot_decode())
}

/// Starts an exchange. `initial` is the initial response on the AUTH line;
/// `nonce` makes the CRAM-MD5 challenge unique.
pub fn start(m: Mechanism, initial: Option<&str>, cfg: &AuthConfig, nonce: &str) -> Step {
    match (m, initial) {
        (Mechanism::Plain, Some(r)) => respond(Exchange::Plain, r, cfg),
        (Mechanism::Plain, None) => Step::Challenge(Exchange::Plain, String::new()),
        (Mechanism::Login, Some(r)) => respond(Exchange::LoginUser, r, cfg),
        (Mechanism::Login, None) => Step::Challenge(Exchange::LoginUser, B64.encode("Username:")),
        (Mechanism::CramMd5, _) => {
            let challenge = format!("<{nonce}>");
            let b64 = B64.encode(&challenge);
            Step::Challenge(Exchange::CramMd5 { challenge }, b64)
        }
        (Mechanism::Xoauth2, Some(r)) => respond(Exchange::Xoauth2, r, cfg),
        (Mechanism::Xoauth2, None) => Step::Challenge(Exchange::Xoauth2, String::new()),
    }
}

/// The client's next line.
pub fn respond(state: Exchange, line: &str, cfg: &AuthConfig) -> Step {
    // RFC 4954 §4: "*" cancels the exchange.
    if line.trim() == "*" {
        return Step::Error(defaults::auth_cancelled());
    }
    match step(state, line, cfg) {
        Ok(s) => s,
        Err(r) => Step::Error(r),
    }
}

fn step(state: Exchange, line: &str, cfg: &AuthConfig) -> Result<Step, Reply> {
    Ok(match state {
        Exchange::Plain => {
            // authzid NUL authcid NUL passwd (RFC 4616).
            let raw = text(decode(line)?)?;
            let mut parts = raw.split('\0');
            let (_authz, user, pass) =
                match (parts.next(), parts.next(), parts.next(), parts.next()) {
                    (Some(a), Some(u), Some(p), None) => (a, u, p),
                    _ => return Err(defaults::cannot_decode()),
                };
            Step::Done {
                user: user.to_string(),
                ok: cfg.check(user, pass),
            }
        }
        Exchange::LoginUser => {
            let user = text(decode(line)?)?;
            Step::Challenge(Exchange::LoginPassword { user }, B64.encode("Password:"))
        }
        Exchange::LoginPassword { user } => {
            let pass = text(decode(line)?)?;
            let ok = cfg.check(&user, &pass);
            Step::Done { user, ok }
        }
        Exchange::CramMd5 { challenge } => {
            // "user hex-digest" (RFC 2195).
            let raw = text(decode(line)?)?;
            let (user, digest) = raw.rsplit_once(' ').ok_or_else(defaults::cannot_decode)?;
            let ok = match cfg.users.get(user) {
                Some(pass) => hmac_md5_hex(pass, &challenge).eq_ignore_ascii_case(digest),
                None => cfg.users.is_empty(),
            };
            Step::Done {
                user: user.to_string(),
                ok,
            }
        }
        Exchange::Xoauth2 => {
            // "user=" U ^A "auth=Bearer " T ^A ^A
            let raw = text(decode(line)?)?;
            let mut user = None;
            let mut token = None;
            for field in raw.split('\u{1}') {
                if let Some(u) = field.strip_prefix("user=") {
                    user = Some(u.to_string());
                } else if let Some(t) = field.strip_prefix("auth=Bearer ") {
                    token = Some(t.to_string());
                }
            }
            let (Some(user), Some(token)) = (user, token) else {
                return Err(defaults::cannot_decode());
            };
            if cfg.check(&user, &token) {
                Step::Done { user, ok: true }
            } else {
                // As Gmail does: an error challenge, then 535 after the
                // client's empty reply.
                let err = B64.encode(
                    r#"{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}"#,
                );
                Step::Challenge(Exchange::Xoauth2Failed { user }, err)
            }
        }
        Exchange::Xoauth2Failed { user } => Step::Done { user, ok: false },
    })
}

fn hmac_md5_hex(key: &str, msg: &str) -> String {
    let mut mac =
        <Hmac<md5::Md5> as Mac>::new_from_slice(key.as_bytes()).expect("HMAC takes any key length");
    mac.update(msg.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> AuthConfig {
        AuthConfig {
            mechanisms: Mechanism::ALL.to_vec(),
            required: false,
            users: BTreeMap::from([("alice".to_string(), "secret".to_string())]),
            allow_plaintext: false,
        }
    }

    fn done(user: &str, ok: bool) -> Step {
        Step::Done {
            user: user.into(),
            ok,
        }
    }

    #[test]
    fn plain() {
        let c = cfg();
        assert_eq!(
            start(
                Mechanism::Plain,
                Some(&B64.encode("\0alice\0secret")),
                &c,
                "n"
            ),
            done("alice", true)
        );
        assert_eq!(
            start(
                Mechanism::Plain,
                Some(&B64.encode("\0alice\0wrong")),
                &c,
                "n"
            ),
            done("alice", false)
        );
        assert_eq!(
            start(Mechanism::Plain, None, &c, "n"),
            Step::Challenge(Exchange::Plain, String::new())
        );
        assert_eq!(
            respond(Exchange::Plain, "not base64!", &c),
            Step::Error(defaults::cannot_decode())
        );
        assert_eq!(
            respond(Exchange::Plain, "*", &c),
            Step::Error(defaults::auth_cancelled())
        );
    }

    #[test]
    fn login() {
        let c = cfg();
        let Step::Challenge(s, prompt) = start(Mechanism::Login, None, &c, "n") else {
            panic!()
        };
        assert_eq!(prompt, "VXNlcm5hbWU6");
        let Step::Challenge(s, prompt) = respond(s, &B64.encode("alice"), &c) else {
            panic!()
        };
        assert_eq!(prompt, "UGFzc3dvcmQ6");
        assert_eq!(respond(s, &B64.encode("secret"), &c), done("alice", true));
    }

    #[test]
    fn cram_md5_matches_rfc_2195_example() {
        // RFC 2195 §2: tim / tanstaaftanstaaf.
        assert_eq!(
            hmac_md5_hex(
                "tanstaaftanstaaf",
                "<1896.697170952@postoffice.reston.mci.net>"
            ),
            "b913a602c7eda7a495b4e6e7334d3890"
        );
        let c = cfg();
        let Step::Challenge(s, b64) = start(Mechanism::CramMd5, None, &c, "1.2@mx") else {
            panic!()
        };
        let challenge = String::from_utf8(B64.decode(b64).unwrap()).unwrap();
        assert_eq!(challenge, "<1.2@mx>");
        let answer = format!("alice {}", hmac_md5_hex("secret", &challenge));
        assert_eq!(
            respond(s.clone(), &B64.encode(answer), &c),
            done("alice", true)
        );
        assert_eq!(
            respond(s, &B64.encode("alice 00"), &c),
            done("alice", false)
        );
    }

    #[test]
    fn xoauth2() {
        let c = cfg();
        let good = B64.encode("user=alice\u{1}auth=Bearer secret\u{1}\u{1}");
        assert_eq!(
            start(Mechanism::Xoauth2, Some(&good), &c, "n"),
            done("alice", true)
        );
        let bad = B64.encode("user=alice\u{1}auth=Bearer nope\u{1}\u{1}");
        let Step::Challenge(s, _) = start(Mechanism::Xoauth2, Some(&bad), &c, "n") else {
            panic!()
        };
        assert_eq!(respond(s, "", &c), done("alice", false));
    }

    #[test]
    fn no_users_accepts_anyone() {
        let mut c = cfg();
        c.users.clear();
        assert_eq!(
            start(Mechanism::Plain, Some(&B64.encode("\0bob\0x")), &c, "n"),
            done("bob", true)
        );
    }
}
