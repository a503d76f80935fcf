//! Failed deliveries in MTA logs: Postfix (`status=bounced|deferred (host
//! ... said: ... (in reply to RCPT TO command))`, `dsn=`), Exim (`**` for a
//! failure, `==` for a deferral, `SMTP error from remote mail server after
//! RCPT TO:<...>: 550 ...`) and Sendmail (`dsn=`, `stat=`). A line carries
//! the recipient, the remote reply, the remote host and often the stage.

use super::dsn::{complete, diagnose, Bounce, Failure, NotBounce};

/// Longer lines are not log lines of these MTAs (they are noise or data).
const MAX_LINE: usize = 16 * 1024;

/// True when the text reads as a log of one of the MTAs we know: a line
/// with a delivery verdict among the first lines.
pub fn looks_like_log(text: &str) -> bool {
    text.lines()
        .take(200)
        .any(|l| verdict(l).is_some() || log_line(l))
}

/// Any line these MTAs write about a message (a delivery, a queue event).
fn log_line(l: &str) -> bool {
    let syslog = [" postfix/", " sm-mta[", " sendmail["]
        .iter()
        .any(|w| l.contains(w));
    let exim = l.len() > 20
        && l.as_bytes()[..4].iter().all(u8::is_ascii_digit)
        && [" <= ", " => ", " -> ", " Completed"]
            .iter()
            .any(|w| l.contains(w));
    syslog || exim
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mta {
    Postfix,
    Exim,
    Sendmail,
}

/// Which MTA wrote the line, if it reports a failed or deferred delivery.
fn verdict(line: &str) -> Option<Mta> {
    if line.len() > MAX_LINE {
        return None;
    }
    if line.contains(" to=<")
        && (line.contains("status=bounced") || line.contains("status=deferred"))
    {
        return Some(Mta::Postfix);
    }
    if line.contains(" to=") && line.contains(" stat=") && line.contains(" dsn=") {
        let dsn = field(line, "dsn=")?;
        return (dsn.starts_with('4') || dsn.starts_with('5')).then_some(Mta::Sendmail);
    }
    if line.contains(" ** ") || line.contains(" == ") {
        return Some(Mta::Exim);
    }
    None
}

/// Reads every failed or deferred delivery in a log.
pub fn parse(text: &str) -> Result<Bounce, NotBounce> {
    let mut bounce = Bounce {
        format: "log".into(),
        ..Bounce::default()
    };
    for line in text.lines() {
        let f = match verdict(line) {
            Some(Mta::Postfix) => postfix(line),
            Some(Mta::Exim) => exim(line),
            Some(Mta::Sendmail) => sendmail(line),
            None => None,
        };
        bounce.failures.extend(f);
    }
    complete(&mut bounce.failures);
    if bounce.failures.is_empty() {
        return Err(NotBounce::NoLogFailure);
    }
    Ok(bounce)
}

/// The value of `name=` up to the next `,` or space.
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let i = line.find(name)? + name.len();
    let rest = &line[i..];
    let end = rest.find([',', ' ']).unwrap_or(rest.len());
    Some(&rest[..end])
}

fn angle(s: &str) -> String {
    s.trim()
        .trim_start_matches('<')
        .trim_end_matches(['>', ',', ':'])
        .to_string()
}

/// The stage a reply answered, from "in reply to RCPT TO command" (Postfix)
/// or "after RCPT TO:<...>" (Exim).
fn stage(text: &str) -> Option<&'static str> {
    let t = text.to_ascii_lowercase();
    const TABLE: &[(&str, &str)] = &[
        ("end of data", "message"),
        ("end of message", "message"),
        ("rcpt to", "rcpt"),
        ("mail from", "mail"),
        ("data command", "data"),
        ("after data", "data"),
        ("helo", "ehlo"),
        ("ehlo", "ehlo"),
        ("initial connection", "connect"),
        ("greeting", "connect"),
    ];
    let at = t.find("in reply to ").or_else(|| t.find(" after "))?;
    let tail = &t[at..];
    TABLE
        .iter()
        .find(|(k, _)| tail.contains(k))
        .map(|(_, v)| *v)
}

fn postfix(line: &str) -> Option<Failure> {
    let to = angle(field(line, " to=")?);
    let mut f = failure(&to, "Postfix to=");
    f.action = Some(
        if line.contains("status=deferred") {
            "delayed"
        } else {
            "failed"
        }
        .into(),
    );
    if let Some(d) = field(line, "dsn=") {
        f.status = Some(d.to_string());
        f.status_from = Some("Postfix dsn=".into());
    }
    if let Some(relay) = field(line, "relay=").filter(|r| *r != "none") {
        f.remote_host = Some(relay.split('[').next().unwrap_or(relay).to_string());
    }
    let i = line.find("status=")?;
    let why = line[i..].split_once(" (").map(|x| x.1).unwrap_or("");
    let why = why.strip_suffix(')').unwrap_or(why);
    f.stage = stage(why).map(str::to_string);
    if f.stage.is_some() {
        f.stage_from = Some("\"in reply to ... command\" in the log line".into());
    }
    match why.split_once(" said: ") {
        Some((_, said)) => {
            let reply = said.rsplit_once(" (in reply to").map_or(said, |x| x.0);
            diagnose(&mut f, reply, "the log line (\"said:\")");
        }
        None => f.diagnostic = Some(why.to_string()).filter(|d| !d.is_empty()),
    }
    Some(f)
}

fn exim(line: &str) -> Option<Failure> {
    let (mark, after) = line
        .split_once(" ** ")
        .map(|x| ("**", x.1))
        .or_else(|| line.split_once(" == ").map(|x| ("==", x.1)))?;
    let addr = angle(after.split_whitespace().next()?);
    let mut f = failure(&addr, "Exim log line");
    f.action = Some(if mark == "==" { "delayed" } else { "failed" }.into());
    if let Some(h) = after.split_once(" H=").map(|x| x.1) {
        f.remote_host = h.split_whitespace().next().map(str::to_string);
    }
    let why = after
        .split_once("SMTP error from remote mail server")
        .map(|x| x.1)
        .or_else(|| after.split_once(": ").map(|x| x.1))
        .unwrap_or("");
    f.stage = stage(why).map(str::to_string);
    if f.stage.is_some() {
        f.stage_from = Some("\"after ...\" in the log line".into());
    }
    // "after RCPT TO:<a@b>: 550 5.1.1 ..." — the reply follows the command.
    let reply = why.split_once(">: ").map_or(why, |x| x.1);
    let reply = reply
        .split_once(": ")
        .filter(|_| !reply.trim_start().starts_with(char::is_numeric))
        .map_or(reply, |x| x.1);
    diagnose(&mut f, reply, "the log line");
    Some(f)
}

fn sendmail(line: &str) -> Option<Failure> {
    let to = angle(field(line, " to=")?);
    let mut f = failure(&to, "Sendmail to=");
    if let Some(d) = field(line, "dsn=") {
        f.status = Some(d.to_string());
        f.status_from = Some("Sendmail dsn=".into());
        f.action = Some(
            if d.starts_with('4') {
                "delayed"
            } else {
                "failed"
            }
            .into(),
        );
    }
    if let Some(relay) = field(line, "relay=") {
        f.remote_host = Some(relay.trim_end_matches('.').to_string());
    }
    let stat = line.split_once(" stat=").map(|x| x.1).unwrap_or("");
    let stat = stat.strip_prefix("Deferred: ").unwrap_or(stat);
    diagnose(&mut f, stat, "Sendmail stat=");
    Some(f)
}

fn failure(addr: &str, from: &str) -> Failure {
    Failure {
        recipient: addr.to_string(),
        recipient_from: from.into(),
        ..Failure::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_postfix_line_gives_reply_host_and_stage() {
        let l = "Jan  5 10:00:01 mx postfix/smtp[42]: 4F3A1: to=<nobody@example.com>, relay=mx.example.com[192.0.2.1]:25, delay=1, delays=0/0/0.5/0.5, dsn=5.1.1, status=bounced (host mx.example.com[192.0.2.1] said: 550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown (in reply to RCPT TO command))";
        let b = parse(l).unwrap();
        let f = &b.failures[0];
        assert_eq!(f.recipient, "nobody@example.com");
        assert_eq!(
            f.reply,
            vec!["550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown"]
        );
        assert_eq!(f.stage.as_deref(), Some("rcpt"));
        assert_eq!(f.remote_host.as_deref(), Some("mx.example.com"));
        assert!(f.hard_bounce);
    }

    #[test]
    fn an_exim_deferral_is_soft() {
        let l = "2026-01-05 10:00:01 1vXyZa-000123-AB == someone@example.net R=dnslookup T=remote_smtp defer (-44) H=mx.example.net [192.0.2.7]: SMTP error from remote mail server after RCPT TO:<someone@example.net>: 451 4.7.1 Greylisted, try again later";
        let b = parse(l).unwrap();
        let f = &b.failures[0];
        assert_eq!(f.reply, vec!["451 4.7.1 Greylisted, try again later"]);
        assert_eq!(f.stage.as_deref(), Some("rcpt"));
        assert!(!f.hard_bounce);
    }

    #[test]
    fn a_log_without_failures_is_refused() {
        let l = "Jan  5 10:00:01 mx postfix/smtp[42]: 4F3A1: to=<a@example.com>, relay=mx.example.com[192.0.2.1]:25, dsn=2.0.0, status=sent (250 ok)";
        assert_eq!(parse(l), Err(NotBounce::NoLogFailure));
    }
}
