//! The real binary's logs: plain text when stderr is not a terminal, a line
//! for every refusal, the seed hint only where it helps, and SMTP that never
//! waits for stderr.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{bin, tmp};

/// `mailfault serve` on a free port with stderr going to `stderr`; killed
/// on drop.
struct Serve {
    child: Child,
    addr: String,
}

impl Serve {
    fn start(args: &[&str], stderr: Stdio, log: &str) -> Self {
        let mut child = Command::new(bin())
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", log)
            .env_remove("NO_COLOR")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = common::listening_addr(&line).to_string();
        Self { child, addr }
    }

    fn connect(&self) -> Smtp {
        let s = TcpStream::connect(&self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Smtp {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking SMTP client that reads whole replies.
struct Smtp {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Smtp {
    fn reply(&mut self) -> String {
        let mut all = vec![];
        loop {
            let mut l = String::new();
            if self.r.read_line(&mut l).unwrap_or(0) == 0 {
                break;
            }
            let l = l.trim_end().to_string();
            let last = l.as_bytes().get(3) != Some(&b'-');
            all.push(l);
            if last {
                break;
            }
        }
        all.join("\n")
    }

    fn cmd(&mut self, line: &str) -> String {
        self.w.write_all(format!("{line}\r\n").as_bytes()).unwrap();
        self.reply()
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Waits until the log file holds a line with every needle; returns it.
fn wait_line(log: &Path, needles: &[&str]) -> String {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
            return l.to_string();
        }
        assert!(
            Instant::now() < end,
            "no log line with {needles:?} in:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

const REFUSALS: &str = r#"
[[rule]]
name = "busy then down"
on = "connect"
sequence = ["450 4.7.0 Try again later", "421 4.3.2 Down for maintenance", "accept"]

[[rule]]
name = "unknown user"
on = "rcpt"
when = { rcpt = "nobody@*" }
reply = "550 5.1.1 The email account that you tried to reach does not exist."

[[rule]]
name = "bad sender"
on = "mail"
when = { mail_from = "bad@*" }
reply = "553 5.7.1 Sender refused"

[[rule]]
name = "spam"
on = "message"
when = { rcpt = "spam@*" }
reply = "554 5.7.1 Message refused as spam"
"#;

#[test]
fn logs_to_a_file_are_plain_and_name_every_refusal() {
    let d = tmp("logs-refusals");
    let f = write(&d, "refusals.toml", REFUSALS);
    let log = d.join("stderr.log");
    let s = Serve::start(
        &["--scenario", f.to_str().unwrap()],
        Stdio::from(std::fs::File::create(&log).unwrap()),
        "info",
    );

    let mut c = s.connect();
    assert_eq!(c.reply(), "450 4.7.0 Try again later");
    c.cmd("QUIT");
    drop(c);
    let mut c = s.connect();
    assert_eq!(c.reply(), "421 4.3.2 Down for maintenance");
    drop(c);
    let mut c = s.connect();
    assert!(c.reply().starts_with("220 "));
    c.cmd("EHLO logs.test");
    assert!(c.cmd("MAIL FROM:<a@logs.test>").starts_with("250 "));
    assert_eq!(
        c.cmd("RCPT TO:<nobody@x.test>"),
        "550 5.1.1 The email account that you tried to reach does not exist."
    );
    assert_eq!(
        c.cmd("MAIL FROM:<bad@logs.test>"),
        "553 5.7.1 Sender refused"
    );
    assert!(c.cmd("FROB").starts_with("502 "));
    assert!(c.cmd("STARTTLS").starts_with("502 "));
    assert!(c.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA==").starts_with("502 "));
    assert!(c.cmd("HELO").starts_with("501 "));
    assert!(c.cmd("RSET").starts_with("250 "));
    assert!(c.cmd("MAIL FROM:<a@logs.test>").starts_with("250 "));
    assert!(c.cmd("RCPT TO:<spam@x.test>").starts_with("250 "));
    assert!(c.cmd("DATA").starts_with("354 "));
    assert_eq!(
        c.cmd("Subject: hi\r\n\r\nhello\r\n."),
        "554 5.7.1 Message refused as spam"
    );
    wait_line(
        &log,
        &[
            " refused ",
            "client=127.0.0.1:",
            "stage=connect code=450 reply=\"450 4.7.0 Try again later\" rule=\"busy then down\"",
        ],
    );
    wait_line(
        &log,
        &["stage=connect code=421 reply=\"421 4.3.2 Down for maintenance\" rule=\"busy then down\""],
    );
    wait_line(
        &log,
        &[
            "stage=rcpt code=550 reply=\"550 5.1.1 The email account that you tried to reach does not exist.\" rule=\"unknown user\"",
        ],
    );
    wait_line(
        &log,
        &["stage=mail code=553 reply=\"553 5.7.1 Sender refused\" rule=\"bad sender\""],
    );
    let unknown = wait_line(&log, &["stage=unknown code=502 reply=\"502 "]);
    assert!(!unknown.contains("rule="), "{unknown}");
    wait_line(&log, &["stage=starttls code=502 reply=\"502 5.5.1 "]);
    wait_line(&log, &["stage=auth code=502 reply=\"502 5.5.1 "]);
    wait_line(&log, &["stage=helo code=501 reply=\"501 5.5.4 "]);
    wait_line(
        &log,
        &["stage=message code=554 reply=\"554 5.7.1 Message refused as spam\" rule=\"spam\""],
    );
    let text = std::fs::read(&log).unwrap();
    assert!(
        !text.windows(2).any(|w| w == b"\x1b["),
        "colour codes in a log file:\n{}",
        String::from_utf8_lossy(&text)
    );
}

#[test]
fn a_client_over_the_connection_cap_is_logged_as_refused() {
    let d = tmp("logs-cap");
    let log = d.join("stderr.log");
    let s = Serve::start(
        &["--max-connections", "1"],
        Stdio::from(std::fs::File::create(&log).unwrap()),
        "info",
    );
    let mut first = s.connect();
    assert!(first.reply().starts_with("220 "));
    let mut other = s.connect();
    assert!(other.reply().starts_with("421 4.7.0 "));
    wait_line(
        &log,
        &[
            " refused ",
            "client=127.0.0.1:",
            "stage=connect code=421 reply=\"421 4.7.0 ",
            "reason=\"--max-connections reached\"",
        ],
    );
}

/// Starts the binary with this scenario, returns its first log lines up to
/// the listening line.
fn listening_log(name: &str, scenario: &str) -> String {
    let d = tmp(&format!("logs-seed-{name}"));
    let f = write(&d, &format!("{name}.toml"), scenario);
    let log = d.join("stderr.log");
    let _s = Serve::start(
        &["--scenario", f.to_str().unwrap()],
        Stdio::from(std::fs::File::create(&log).unwrap()),
        "info",
    );
    wait_line(&log, &[" listening"])
}

#[test]
fn the_seed_hint_appears_only_for_random_rules_without_a_seed() {
    let random = "[[rule]]\non = \"rcpt\"\nprobability = 0.5\nreply = \"451 4.3.0 Try later\"\n";
    let line = listening_log("random", random);
    assert!(
        line.contains("to replay its random choices, set [server] seed = "),
        "{line}"
    );
    let range = "[[rule]]\non = \"mail\"\ndelay = \"1ms..5ms\"\naction = \"accept\"\n";
    let line = listening_log("range", range);
    assert!(line.contains("set [server] seed = "), "{line}");

    let seeded = format!("[server]\nseed = 7\n{random}");
    let line = listening_log("given", &seeded);
    assert!(line.contains(" listening addr="), "{line}");
    assert!(!line.contains("seed"), "{line}");
    let fixed = "[[rule]]\non = \"rcpt\"\nreply = \"451 4.3.0 Try later\"\n";
    let line = listening_log("fixed", fixed);
    assert!(!line.contains("seed"), "{line}");
}

#[test]
fn smtp_does_not_wait_for_a_stderr_nobody_reads() {
    // Debug logs write several lines per command: far more than the 64 KiB
    // a pipe holds, so a writer on the SMTP path would block.
    let mut s = Serve::start(&[], Stdio::piped(), "debug");
    let started = Instant::now();
    let mut c = s.connect();
    assert!(c.reply().starts_with("220 "));
    c.cmd("EHLO logs.test");
    let body = format!("Subject: load\r\n\r\n{}\r\n.", "x".repeat(400));
    for i in 0..200 {
        c.cmd("MAIL FROM:<a@logs.test>");
        c.cmd(&format!("RCPT TO:<user{i}@logs.test>"));
        c.cmd("DATA");
        let reply = c.cmd(&body);
        assert!(reply.starts_with("250 "), "message {i}: {reply:?}");
    }
    assert!(started.elapsed() < Duration::from_secs(30));
    // Only now read stderr: the logs were really more than a pipe holds.
    let mut err = s.child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while let Ok(n) = err.read(&mut buf) {
            if n == 0 || tx.send(n).is_err() {
                return;
            }
        }
    });
    let mut logged = 0;
    while let Ok(n) = rx.recv_timeout(Duration::from_millis(500)) {
        logged += n;
    }
    assert!(logged > 64 * 1024, "only {logged} bytes of logs");
}
