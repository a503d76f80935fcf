//! TLS and AUTH with real clients: lettre (rustls), Python's smtplib and
//! ssl, and in CI openssl s_client, swaks and curl. Each certificate fault
//! is seen by a verifying client as the right failure and accepted by a
//! non-verifying one.

mod common;

use std::process::Command;

use common::*;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::AsyncSmtpTransport;
use lettre::{AsyncTransport, Message, Tokio1Executor};
use mailfault::scenario::model::CertFault;

const TLS: &str = "[tls]\ncertificate = \"valid\"\n";

fn message() -> Message {
    Message::builder()
        .from("Sender <sender@example.test>".parse::<Mailbox>().unwrap())
        .to("rcpt@example.test".parse::<Mailbox>().unwrap())
        .subject("over TLS")
        .body(String::from("secret things\r\n"))
        .unwrap()
}

fn params(ca: Option<&str>, accept_invalid: bool) -> TlsParameters {
    let mut b = TlsParameters::builder("localhost".into());
    if let Some(pem) = ca {
        b = b.add_root_certificate(Certificate::from_pem(pem.as_bytes()).unwrap());
    }
    b.dangerous_accept_invalid_certs(accept_invalid)
        .dangerous_accept_invalid_hostnames(accept_invalid)
        .build_rustls()
        .unwrap()
}

fn mailer(port: u16, tls: Tls) -> AsyncSmtpTransport<Tokio1Executor> {
    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(port)
        .tls(tls)
        .timeout(Some(std::time::Duration::from_secs(10)))
        .build()
}

#[tokio::test]
async fn lettre_starttls_and_implicit_tls_verified_by_the_test_ca() {
    let (server, ca) = start_tls(TLS, false, None).await;
    let ok = mailer(
        server.addr().port(),
        Tls::Required(params(Some(&ca), false)),
    )
    .send(message())
    .await
    .unwrap();
    assert_eq!(ok.code().to_string(), "250");
    let m = &server.capture.messages()[0];
    assert!(m.tls, "the message arrived under TLS");
    let kinds: Vec<String> = server
        .capture
        .events()
        .iter()
        .map(|e| {
            serde_json::to_value(&e.kind).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(kinds.contains(&"tls".to_string()));

    let (server, ca) = start_tls("", true, None).await;
    let ok = mailer(server.addr().port(), Tls::Wrapper(params(Some(&ca), false)))
        .send(message())
        .await
        .unwrap();
    assert_eq!(ok.code().to_string(), "250");
    assert!(server.capture.messages()[0].tls);
}

#[tokio::test]
async fn every_certificate_fault_fails_verification_and_passes_without_it() {
    for (fault, want) in [
        (CertFault::Expired, "Expired"),
        (CertFault::NotYetValid, "NotValidYet"),
        (CertFault::WrongHost, "NotValidForName"),
        (CertFault::SelfSigned, "UnknownIssuer"),
    ] {
        let (server, ca) = start_tls(TLS, false, Some(fault)).await;
        let port = server.addr().port();
        let err = mailer(port, Tls::Required(params(Some(&ca), false)))
            .send(message())
            .await
            .unwrap_err();
        let text = format!("{err:?}");
        assert!(text.contains(want), "{fault:?}: {text}");
        let ok = mailer(port, Tls::Required(params(None, true)))
            .send(message())
            .await;
        assert!(
            ok.is_ok(),
            "{fault:?} accepted without verification: {ok:?}"
        );
    }
}

#[tokio::test]
async fn versions_limit_what_is_offered() {
    let (server, ca) = start_tls("[tls]\nversions = [\"1.2\"]\n", false, None).await;
    mailer(
        server.addr().port(),
        Tls::Required(params(Some(&ca), false)),
    )
    .send(message())
    .await
    .unwrap();
    let tls = server
        .capture
        .events()
        .into_iter()
        .find_map(|e| match e.kind {
            mailfault::capture::EventKind::Tls { version, .. } => Some(version),
            _ => None,
        })
        .unwrap();
    assert_eq!(tls, "TLSv1_2");
}

#[tokio::test]
async fn starttls_injection_is_never_run() {
    let (server, _) = start_tls(TLS, false, None).await;
    let mut c = Client::connect(&server).await;
    c.reply().await;
    assert!(c.cmd("EHLO x").await.ends_with("250 STARTTLS"));
    // CVE-2011-0411: commands after STARTTLS in the same packet.
    c.send(b"STARTTLS\r\nMAIL FROM:<evil@injected.test>\r\n")
        .await;
    assert_eq!(c.reply().await, "220 2.0.0 Ready to start TLS");
    assert!(c.closed().await);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let events = serde_json::to_string(&server.capture.events()).unwrap();
    assert!(
        events.contains("MAIL FROM:<evil@injected.test>"),
        "recorded: {events}"
    );
    assert!(
        events.contains("bytes pipelined after STARTTLS"),
        "{events}"
    );
    assert!(!events.contains("250 2.1.0"), "never answered as a command");
}

#[tokio::test]
async fn starttls_faults_and_tls_required() {
    let (server, ca) = start_tls(
        "[server]\nrequire_tls = true\n[tls]\n\
         [[rule]]\non = \"starttls\"\nwhen = { helo = \"busy.*\" }\nreply = \"454 4.7.0 TLS not available due to temporary reason\"\n\
         [[rule]]\non = \"starttls\"\nwhen = { helo = \"abort.*\" }\naction = \"tls_abort\"\n\
         [[rule]]\non = \"rcpt\"\nwhen = { tls = false, rcpt = \"*@tls-only.test\" }\npreset = \"gmail.tls_required_rcpt_domain\"\n",
        false,
        None,
    )
    .await;
    let mut c = Client::connect(&server).await;
    c.reply().await;
    c.expect("EHLO busy.test", "250").await;
    assert_eq!(
        c.cmd("STARTTLS").await,
        "454 4.7.0 TLS not available due to temporary reason"
    );
    assert_eq!(
        c.cmd("MAIL FROM:<a@b.test>").await,
        "530 5.7.0 Must issue a STARTTLS command first"
    );

    let mut c = Client::connect(&server).await;
    c.reply().await;
    c.expect("EHLO abort.test", "250").await;
    assert_eq!(c.cmd("STARTTLS").await, "220 2.0.0 Ready to start TLS");
    assert!(c.closed().await, "closed instead of the handshake");

    // A verifying client that requires TLS gets through; one that does not
    // offer TLS is refused.
    let ok = mailer(
        server.addr().port(),
        Tls::Required(params(Some(&ca), false)),
    )
    .send(message())
    .await;
    assert!(ok.is_ok(), "{ok:?}");
    let err = mailer(server.addr().port(), Tls::None)
        .send(message())
        .await
        .unwrap_err();
    assert_eq!(err.status().unwrap().to_string(), "530");

    // TLS required for a recipient domain (Gmail's 421).
    let (server, _) = start_tls(
        "[tls]\n[[rule]]\non = \"rcpt\"\nwhen = { tls = false, rcpt = \"*@tls-only.test\" }\npreset = \"gmail.tls_required_rcpt_domain\"\n",
        false,
        None,
    )
    .await;
    let mut c = Client::connect(&server).await;
    c.envelope("a@b.test", "x@other.test").await;
    assert_eq!(
        c.cmd("RCPT TO:<x@tls-only.test>").await,
        "421 4.7.0 TLS required for RCPT domain, closing connection."
    );
    assert!(c.closed().await);
}

const AUTH: &str = "[tls]\n[auth]\nmechanisms = [\"PLAIN\", \"LOGIN\", \"CRAM-MD5\", \"XOAUTH2\"]\nrequired = true\nusers = { alice = \"secret\" }\n\
    [[rule]]\non = \"auth\"\nwhen = { auth_user = \"busy*\" }\nreply = \"454 4.7.0 Temporary authentication failure\"\n\
    [[rule]]\non = \"auth\"\nwhen = { auth_user = \"weak*\" }\nreply = \"534 5.7.9 Authentication mechanism is too weak\"\n";

#[tokio::test]
async fn lettre_authenticates_with_every_mechanism() {
    let (server, ca) = start_tls(AUTH, false, None).await;
    for mech in [Mechanism::Plain, Mechanism::Login, Mechanism::Xoauth2] {
        let m = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(server.addr().port())
            .tls(Tls::Required(params(Some(&ca), false)))
            .credentials(Credentials::new("alice".into(), "secret".into()))
            .authentication(vec![mech])
            .build();
        assert!(m.send(message()).await.is_ok(), "{mech:?}");
        let bad = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(server.addr().port())
            .tls(Tls::Required(params(Some(&ca), false)))
            .credentials(Credentials::new("alice".into(), "wrong".into()))
            .authentication(vec![mech])
            .build();
        let err = bad.send(message()).await.unwrap_err();
        if mech == Mechanism::Xoauth2 {
            // Like Gmail, a bad token gets a 334 error challenge first
            // (then 535); lettre does not expect one and gives up there.
            assert!(
                err.to_string().contains("does not expect a challenge"),
                "{err}"
            );
        } else {
            assert_eq!(err.status().unwrap().to_string(), "535", "{mech:?}");
            assert!(
                err.to_string()
                    .contains("5.7.8 Error: authentication failed"),
                "{err}"
            );
        }
    }
    // Without credentials: AUTH is required.
    let err = mailer(
        server.addr().port(),
        Tls::Required(params(Some(&ca), false)),
    )
    .send(message())
    .await
    .unwrap_err();
    assert_eq!(err.status().unwrap().to_string(), "530");
    assert!(
        err.to_string().contains("5.7.0 Authentication required"),
        "{err}"
    );
    // Passwords never reach the transcript.
    let events = serde_json::to_string(&server.capture.events()).unwrap();
    assert!(
        !events.contains("secret") && !events.contains("wrong"),
        "{events}"
    );
    assert!(
        events.contains("[SASL response hidden]") || events.contains("[initial response hidden]")
    );
}

#[tokio::test]
async fn raw_sasl_exchanges_and_scripted_auth_faults() {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let (server, _) = start_tls(
        &AUTH.replace("required = true", "required = true\nallow_plaintext = true"),
        false,
        None,
    )
    .await;
    let mut c = Client::connect(&server).await;
    c.reply().await;
    assert!(c
        .cmd("EHLO x")
        .await
        .ends_with("250 AUTH PLAIN LOGIN CRAM-MD5 XOAUTH2"));
    assert_eq!(
        c.cmd("MAIL FROM:<a@b.test>").await,
        "530 5.7.0 Authentication required"
    );
    assert_eq!(
        c.cmd("AUTH NTLM").await,
        "504 5.5.4 Unrecognized authentication type"
    );
    assert_eq!(c.cmd("AUTH LOGIN").await, "334 VXNlcm5hbWU6");
    assert_eq!(c.cmd(&b64("alice")).await, "334 UGFzc3dvcmQ6");
    assert_eq!(
        c.cmd(&b64("nope")).await,
        "535 5.7.8 Error: authentication failed"
    );
    assert_eq!(c.cmd("AUTH PLAIN").await, "334 ");
    assert_eq!(c.cmd("*").await, "501 5.0.0 Authentication aborted");
    assert_eq!(
        c.cmd("AUTH PLAIN !!!").await,
        "501 5.5.2 Cannot decode response"
    );
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}", b64("\0busybox\0x"))).await,
        "454 4.7.0 Temporary authentication failure"
    );
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}", b64("\0weakling\0x"))).await,
        "534 5.7.9 Authentication mechanism is too weak"
    );
    // CRAM-MD5 with the challenge the server sent.
    let challenge = c.cmd("AUTH CRAM-MD5").await;
    let challenge = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(challenge.trim_start_matches("334 "))
            .unwrap(),
    )
    .unwrap();
    assert!(
        challenge.starts_with('<') && challenge.ends_with("@mailfault.test>"),
        "{challenge}"
    );
    let digest = {
        use hmac::{Hmac, Mac};
        let mut mac = <Hmac<md5::Md5> as Mac>::new_from_slice(b"secret").unwrap();
        mac.update(challenge.as_bytes());
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    assert_eq!(
        c.cmd(&b64(&format!("alice {digest}"))).await,
        "235 2.7.0 Authentication successful"
    );
    assert_eq!(
        c.cmd("AUTH PLAIN").await,
        "503 5.5.1 Error: already authenticated"
    );
    assert_eq!(c.cmd("MAIL FROM:<a@b.test>").await, "250 2.1.0 Ok");
}

#[tokio::test]
async fn auth_over_plaintext_is_refused() {
    let (server, _) = start_tls(AUTH, false, None).await;
    let mut c = Client::connect(&server).await;
    c.reply().await;
    c.cmd("EHLO x").await;
    assert_eq!(
        c.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA==").await,
        "538 5.7.11 Encryption required for requested authentication mechanism"
    );
    // CRAM-MD5 does not send the password: allowed in the clear.
    assert!(c.cmd("AUTH CRAM-MD5").await.starts_with("334 "));
}

const PY_TLS: &str = r#"
import smtplib, ssl, sys
port, cafile, verify = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "1"
ctx = ssl.create_default_context(cafile=cafile) if verify else ssl._create_unverified_context()
s = smtplib.SMTP("127.0.0.1", port, timeout=20)
s.ehlo("py.test")
try:
    s.starttls(context=ctx, server_hostname="localhost") if False else s.starttls(context=ctx)
except ssl.SSLCertVerificationError as e:
    print("verify failed:", e.verify_message)
    sys.exit(0)
s.ehlo("py.test")
s.login("alice", "secret")
s.sendmail("py@example.test", ["r@example.test"], b"Subject: py tls\r\n\r\nhi\r\n")
print("sent", s.sock.version())
s.quit()
"#;

fn python(port: u16, ca: &std::path::Path, verify: bool) -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            PY_TLS,
            &port.to_string(),
            ca.to_str().unwrap(),
            if verify { "1" } else { "0" },
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn python_smtplib_starttls_with_and_without_verification() {
    if !have_python3_ssl() {
        return;
    }
    let auth = "[auth]\nusers = { alice = \"secret\" }\n";
    let dir = tmp("py-tls");
    for (fault, want) in [
        (None, "sent TLSv1.3"),
        (
            Some(CertFault::Expired),
            "verify failed: certificate has expired",
        ),
        (
            Some(CertFault::NotYetValid),
            "verify failed: certificate is not yet valid",
        ),
        (
            Some(CertFault::WrongHost),
            "verify failed: IP address mismatch, certificate is not valid for '127.0.0.1'.",
        ),
        (
            Some(CertFault::SelfSigned),
            "verify failed: self-signed certificate",
        ),
    ] {
        let (server, ca) = start_tls(&format!("{TLS}{auth}"), false, fault).await;
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, &ca).unwrap();
        let port = server.addr().port();
        let got = tokio::task::spawn_blocking(move || {
            (python(port, &ca_file, true), python(port, &ca_file, false))
        })
        .await
        .unwrap();
        assert_eq!(got.0, want, "{fault:?} verified");
        assert_eq!(got.1, "sent TLSv1.3", "{fault:?} unverified");
    }
}

#[tokio::test]
async fn openssl_swaks_and_curl() {
    let dir = tmp("cli-tls");
    let (server, ca) = start_tls(TLS, false, None).await;
    let (smtps, smtps_ca) = start_tls("", true, None).await;
    let smtps_ca_file = dir.join("smtps-ca.pem");
    std::fs::write(&smtps_ca_file, &smtps_ca).unwrap();
    let (expired, expired_ca) = start_tls(TLS, false, Some(CertFault::Expired)).await;
    let expired_ca_file = dir.join("expired-ca.pem");
    std::fs::write(&expired_ca_file, &expired_ca).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &ca).unwrap();
    let port = server.addr().port().to_string();
    let ca_s = ca_file.to_str().unwrap().to_string();

    if have_openssl() {
        let text = openssl_starttls(server.addr().port(), ca_s.clone()).await;
        assert!(text.contains("Verification: OK"), "{text}");
        assert!(text.contains("221 2.0.0 Bye"), "{text}");
        let text = openssl_starttls(
            expired.addr().port(),
            expired_ca_file.to_str().unwrap().to_string(),
        )
        .await;
        assert!(text.contains("certificate has expired"), "{text}");
    }

    if have_swaks_tls() {
        let (p, c) = (&port, &ca_s);
        let out = output(
            "swaks",
            &[
                "--server",
                "127.0.0.1",
                "--port",
                p,
                "--to",
                "r@example.test",
                "--tls",
                "--tls-verify",
                "--tls-ca-path",
                c,
                "--tls-sni",
                "localhost",
                "--timeout",
                "20",
            ],
        )
        .await;
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("=== TLS started with cipher"), "{text}");
        assert!(text.contains(" ~> MAIL FROM:"), "{text}");
        assert!(text.contains("\n<~  250 2.0.0 Ok: queued as"), "{text}");
        let sp = smtps.addr().port().to_string();
        let out = output(
            "swaks",
            &[
                "--server",
                "127.0.0.1",
                "--port",
                &sp,
                "--to",
                "r@example.test",
                "--tlsc",
                "--timeout",
                "20",
            ],
        )
        .await;
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        assert!(
            text.contains("\n<~  220 mailfault.test ESMTP mailfault"),
            "{text}"
        );
    }

    if have_curl_smtps() {
        let url = format!("smtps://127.0.0.1:{}/curl.test", smtps.addr().port());
        let c = smtps_ca_file.to_str().unwrap();
        let file = dir.join("m.eml");
        std::fs::write(&file, "Subject: curl tls\r\n\r\nhi\r\n").unwrap();
        let out = output(
            "curl",
            &[
                "-sS",
                "-v",
                "--max-time",
                "20",
                &url,
                "--cacert",
                c,
                "--mail-from",
                "c@example.test",
                "--mail-rcpt",
                "r@example.test",
                "--upload-file",
                file.to_str().unwrap(),
            ],
        )
        .await;
        let text = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{text}");
        assert!(text.contains("SSL certificate verify ok"), "{text}");
        assert!(text.contains("< 250 2.0.0 Ok: queued as"), "{text}");
    }
}

/// `openssl s_client -starttls smtp` verifying against `ca`; its output.
/// The QUIT is sent in lower case: s_client takes a line starting with "Q"
/// as its own command to quit.
async fn openssl_starttls(port: u16, ca: String) -> String {
    let out = output("sh", &["-c", &format!("(sleep 1; printf 'quit\\r\\n'; sleep 1) | openssl s_client -starttls smtp -connect 127.0.0.1:{port} -CAfile {ca} -verify_return_error -brief 2>&1")]).await;
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn certs_command_writes_a_ca_and_a_certificate_openssl_accepts() {
    let dir = tmp("certs-cmd");
    let out = Command::new(bin())
        .args(["certs", "--out"])
        .arg(&dir)
        .args(["--hostname", "mx.example.test"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let listed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(listed.lines().count(), 4);
    for f in ["ca.pem", "ca.key", "server.pem", "server.key"] {
        assert!(dir.join(f).exists(), "{f}");
    }
    let ca_before = std::fs::read_to_string(dir.join("ca.pem")).unwrap();
    Command::new(bin())
        .args(["certs", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.join("ca.pem")).unwrap(),
        ca_before,
        "the CA is reused"
    );
    if have_openssl() {
        let v = Command::new("openssl")
            .args(["verify", "-CAfile"])
            .arg(dir.join("ca.pem"))
            .arg(dir.join("server.pem"))
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&v.stdout).contains(": OK"),
            "{}",
            String::from_utf8_lossy(&v.stderr)
        );
    }
}

#[test]
fn serve_listen_tls_prints_the_ca_and_overrides_certificates() {
    let dir = tmp("serve-tls");
    let scenario = dir.join("t.toml");
    std::fs::write(&scenario, TLS).unwrap();
    let mut child = Command::new(bin())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--listen-tls",
            "127.0.0.1:0",
            "--ca-dir",
        ])
        .arg(dir.join("ca"))
        .arg("--scenario")
        .arg(&scenario)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut lines = vec![];
    for _ in 0..2 {
        let mut l = String::new();
        std::io::BufRead::read_line(&mut out, &mut l).unwrap();
        lines.push(l.trim_end().to_string());
    }
    let ca = dir.join("ca").join("ca.pem");
    assert!(
        lines[0].starts_with("listening smtp://127.0.0.1:"),
        "{lines:?}"
    );
    assert!(
        lines[0].ends_with(&format!(
            " scenario=t certificate=valid ca={}",
            ca.display()
        )),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with("listening smtps://127.0.0.1:"),
        "{lines:?}"
    );
    assert!(ca.exists() && dir.join("ca").join("ca.key").exists());
    let _ = child.kill();
    let _ = child.wait();

    // --certificate names a listener that does not exist: a clear error.
    let out = Command::new(bin())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--certificate",
            "127.0.0.1:9=expired",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("--certificate \"127.0.0.1:9=expired\": no listener on 127.0.0.1:9"));
}
