//! The real binary: check, serve, hot reload, signals, events, presets.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{bin, tmp};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn check(files: &[&Path]) -> (i32, String, String) {
    let mut args = vec![std::ffi::OsStr::new("check")];
    args.extend(files.iter().map(|f| f.as_os_str()));
    common::run(&args)
}

#[test]
fn check_accepts_good_files() {
    let d = tmp("good");
    let f = write(
        &d,
        "ok.toml",
        "[[rule]]\non = \"rcpt\"\nreply = \"550 5.1.1 no\"\n",
    );
    let (code, out, _) = check(&[&f]);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        format!("{}: ok: scenario \"ok\", 1 rule\n", f.display())
    );
}

#[test]
fn check_rejects_bad_files_with_positions() {
    let d = tmp("bad");
    let cases: &[(&str, &str, &str)] = &[
        ("unknown-key.toml", "[server]\nhostnme = \"x\"\n", ":2:1: unknown field `hostnme`"),
        ("bad-stage.toml", "[[rule]]\non = \"rcpt_to\"\nreply = \"550 x\"\n", ":2:6: unknown stage \"rcpt_to\""),
        ("bad-code.toml", "[[rule]]\non = \"rcpt\"\nreply = \"150 x\"\n", ":3:9: bad reply \"150 x\": reply code 150 is outside 200-599"),
        ("class.toml", "[[rule]]\non = \"rcpt\"\nreply = \"550 4.1.1 x\"\n", ":3:9: bad reply \"550 4.1.1 x\": enhanced status code 4.1.1 does not match reply code 550"),
        ("two-outcomes.toml", "[[rule]]\non = \"rcpt\"\nreply = \"550 x\"\npreset = \"gmail.user_unknown\"\n", ":4:10: a rule has exactly one outcome"),
        ("preset.toml", "[[rule]]\non = \"rcpt\"\npreset = \"gmail.no_such\"\n", ":3:10: unknown preset \"gmail.no_such\""),
        ("duration.toml", "[[rule]]\non = \"rcpt\"\ndelay = \"soon\"\naction = \"accept\"\n", ":3:9: bad duration \"soon\""),
        ("size.toml", "[server]\nmax_message_size = \"lots\"\n", ":2:20: bad size \"lots\""),
        ("cidr.toml", "[[rule]]\non = \"connect\"\nwhen = { client_ip = \"300.1.1.1/8\" }\naction = \"disconnect\"\n", ":3:22: bad client_ip \"300.1.1.1/8\""),
        ("regex.toml", "[[rule]]\non = \"mail\"\nwhen = { mail_from = \"/[a-/\" }\naction = \"accept\"\n", ":3:22: bad regular expression /[a-/: unclosed character class\n"),
        ("rate.toml", "[[rule]]\non = \"mail\"\nlimit = { rate = \"five a minute\" }\naction = \"accept\"\n", ":3:18: bad rate \"five a minute\""),
        ("syntax.toml", "[[rule]]\non = \"rcpt\nreply = \"550\"\n", ":2:"),
        ("tls.toml", "[tls]\ncertificate = \"expird\"\n", ":2:15: unknown certificate \"expird\""),
        ("tls-key.toml", "[tls]\ncertificate = \"expired\"\nkey = \"x.key\"\n", ":3:7: key is only for a certificate read from a file"),
        ("tls-file.toml", "[tls]\ncertificate = \"/no/such/cert.pem\"\nkey = \"/no/such/key.pem\"\n", ":2:15: cannot read /no/such/cert.pem"),
        ("auth.toml", "[auth]\nmechanisms = [\"NTLM\"]\n", ":2:15: unknown mechanism \"NTLM\""),
        ("abort.toml", "[[rule]]\non = \"rcpt\"\naction = \"tls_abort\"\n", ":3:10: action \"tls_abort\" works at stage starttls only"),
    ];
    for (name, text, want) in cases {
        let f = write(&d, name, text);
        let (code, out, err) = check(&[&f]);
        assert_eq!(code, 1, "{name}: {out}{err}");
        let expected = format!("{}{want}", f.display());
        assert!(
            err.starts_with(&expected),
            "{name}: expected {expected:?}, got {err:?}"
        );
    }
    let (code, _, err) = check(&[Path::new("/no/such/file.toml")]);
    assert_eq!(code, 1);
    assert!(err.starts_with("/no/such/file.toml: cannot read:"), "{err}");
}

/// A running `mailfault serve`, killed on drop.
struct Serve {
    child: Child,
    addr: String,
    stderr: std::sync::mpsc::Receiver<String>,
}

impl Serve {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(bin())
            .arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("listening smtp://127.0.0.1:"), "{line:?}");
        let addr = common::listening_addr(&line).to_string();
        let (tx, rx) = std::sync::mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        Self {
            child,
            addr,
            stderr: rx,
        }
    }

    fn signal(&self, sig: &str) {
        common::signal(self.child.id(), sig);
    }

    /// Waits for a stderr line containing `needle`.
    fn wait_log(&self, needle: &str) -> String {
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Ok(l) = self.stderr.recv_timeout(Duration::from_millis(100)) {
                if l.contains(needle) {
                    return l;
                }
            }
        }
        panic!("no log line with {needle:?}");
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a short SMTP dialogue with std sockets; returns every reply line.
fn talk(addr: &str, lines: &[&str]) -> Vec<String> {
    let s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    let mut out = vec![];
    let mut read_reply = |out: &mut Vec<String>| loop {
        let mut l = String::new();
        if r.read_line(&mut l).unwrap_or(0) == 0 {
            return;
        }
        let l = l.trim_end().to_string();
        let last = l.as_bytes().get(3) != Some(&b'-');
        out.push(l);
        if last {
            return;
        }
    };
    read_reply(&mut out);
    for line in lines {
        use std::io::Write;
        w.write_all(format!("{line}\r\n").as_bytes()).unwrap();
        read_reply(&mut out);
    }
    out
}

#[test]
fn serve_prints_the_port_talks_smtp_and_stops_on_sigterm() {
    let d = tmp("serve");
    let events = d.join("events.jsonl");
    let mut s = Serve::start(&["--events", events.to_str().unwrap(), "--grace", "1s"]);
    let replies = talk(
        &s.addr,
        &[
            "EHLO cli.test",
            "MAIL FROM:<a@b.test>",
            "RCPT TO:<550-5.1.1@x.test>",
            "QUIT",
        ],
    );
    assert_eq!(replies[0], "220 mailfault.test ESMTP mailfault");
    assert!(
        replies
            .iter()
            .any(|r| r.starts_with("550 5.1.1 The email account")),
        "{replies:?}"
    );
    assert_eq!(replies.last().unwrap(), "221 2.0.0 Bye");
    s.signal("TERM");
    let t = Instant::now();
    let status = s.child.wait().unwrap();
    assert!(status.success());
    assert!(t.elapsed() < Duration::from_secs(5));
    let text = std::fs::read_to_string(&events).unwrap();
    let kinds: Vec<String> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(kinds[0], "listen");
    assert_eq!(kinds[1], "connect");
    assert_eq!(kinds.last().unwrap(), "close");
    assert!(text.contains("\"line\":\"RCPT TO:<550-5.1.1@x.test>\""));
    assert!(text.contains("\"rule\":\"magic recipient 550-5.1.1@x.test\""));
}

#[test]
fn sigterm_gives_open_sessions_421_after_grace() {
    let s = Serve::start(&["--grace", "300ms"]);
    let sock = std::net::TcpStream::connect(&s.addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut r = BufReader::new(sock);
    let mut greeting = String::new();
    r.read_line(&mut greeting).unwrap();
    s.signal("TERM");
    let mut rest = String::new();
    r.read_to_string(&mut rest).unwrap();
    assert_eq!(
        rest,
        "421 4.3.2 mailfault.test Service shutting down, closing transmission channel\r\n"
    );
}

#[test]
fn serve_refuses_a_bad_scenario() {
    let d = tmp("refuse");
    let f = write(
        &d,
        "bad.toml",
        "[[rule]]\non = \"rcpt\"\nreply = \"999 nope\"\n",
    );
    let out = Command::new(bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--scenario"])
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:3:9: bad reply \"999 nope\"", f.display())),
        "{err}"
    );
}

#[test]
fn hot_reload_and_sighup() {
    let d = tmp("reload");
    let f = write(
        &d,
        "live.toml",
        "[[rule]]\non = \"noop\"\nreply = \"250 version one\"\n",
    );
    let s = Serve::start(&["--scenario", f.to_str().unwrap()]);
    assert_eq!(talk(&s.addr, &["NOOP"])[1], "250 version one");

    write(
        &d,
        "live.toml",
        "[[rule]]\non = \"noop\"\nreply = \"250 version two\"\n",
    );
    s.wait_log("scenario reloaded");
    assert_eq!(talk(&s.addr, &["NOOP"])[1], "250 version two");

    // A bad version is refused with its position; the old one keeps serving.
    write(
        &d,
        "live.toml",
        "[[rule]]\non = \"noop\"\nreply = \"250 version three\"\ntimes = 0\n",
    );
    let line = s.wait_log("live.toml:4:9: times must be at least 1");
    assert!(line.contains("ERROR"), "{line}");
    assert_eq!(talk(&s.addr, &["NOOP"])[1], "250 version two");

    // SIGHUP reloads too (the file is good again).
    std::fs::write(
        &f,
        "[[rule]]\non = \"noop\"\nreply = \"250 version four\"\n",
    )
    .unwrap();
    s.wait_log("scenario reloaded");
    s.signal("HUP");
    s.wait_log("SIGHUP");
    s.wait_log("scenario reloaded");
    assert_eq!(talk(&s.addr, &["NOOP"])[1], "250 version four");
}

#[test]
fn presets_lists_the_catalog() {
    let out = Command::new(bin()).arg("presets").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().count() > 118);
    let row = text
        .lines()
        .find(|l| l.starts_with("gmail.user_unknown "))
        .unwrap();
    assert!(row.contains("rcpt"));
    assert!(row.contains("550 5.1.1 The email account that you tried to reach does not exist."));

    let out = Command::new(bin())
        .args(["presets", "--provider", "gmail", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 41);
    assert_eq!(v[0]["id"], "gmail.server_busy");
    assert_eq!(v[0]["reply"], "421 4.4.5 Server busy, try again later.\r\n");
}

#[test]
fn several_listeners_each_with_its_own_scenario() {
    let d = tmp("multi");
    let a = write(
        &d,
        "alpha.toml",
        "[[rule]]\non = \"noop\"\nreply = \"250 alpha\"\n",
    );
    let b = write(
        &d,
        "beta.toml",
        "[[rule]]\non = \"noop\"\nreply = \"250 beta\"\n",
    );
    let mut child = Command::new(bin())
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:0={}", a.display()),
            "--listen",
            &format!("127.0.0.1:0={}", b.display()),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut lines = vec![];
    for _ in 0..2 {
        let mut l = String::new();
        out.read_line(&mut l).unwrap();
        lines.push(l);
    }
    assert!(
        lines[0].ends_with(" scenario=alpha\n") && lines[1].ends_with(" scenario=beta\n"),
        "{lines:?}"
    );
    let addr = |l: &str| {
        l.split("smtp://")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(talk(&addr(&lines[0]), &["NOOP"])[1], "250 alpha");
    assert_eq!(talk(&addr(&lines[1]), &["NOOP"])[1], "250 beta");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn check_reports_every_error_with_its_position() {
    let d = tmp("every-error");
    let f = write(
        &d,
        "many.toml",
        "[server]\nhostnme = \"x\"\nmax_recipients = 0\n\n\
         [[rule]]\non = \"rcpt\"\nreplyy = \"550 x\"\ntimes = \"three\"\n\n\
         [[rule]]\non = \"mail\"\nreply = \"650 nope\"\n\n\
         [[rule]]\non = \"rcpt_to\"\nreply = \"550 5.1.1 x\"\ndelay = \"soon\"\n",
    );
    let (code, out, err) = check(&[&f]);
    assert_eq!(code, 1, "{out}{err}");
    let file = f.display().to_string();
    let want = [
        ":2:1: unknown field `hostnme`",
        ":3:18: max_recipients must be at least 1",
        ":7:1: unknown field `replyy`",
        ":8:9: invalid type: string \"three\", expected i64",
        ":12:9: bad reply \"650 nope\": reply code 650 is outside 200-599",
        ":15:6: unknown stage \"rcpt_to\"",
        ":17:9: bad duration \"soon\"",
    ];
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), want.len(), "{err}");
    for (line, w) in lines.iter().zip(want) {
        assert!(
            line.starts_with(&format!("{file}{w}")),
            "expected {file}{w}, got {line}"
        );
    }
}

#[test]
fn check_refuses_354_at_connect_and_points_to_raw() {
    let d = tmp("354");
    let f = write(
        &d,
        "greeting.toml",
        "[[rule]]\non = \"connect\"\nreply = \"354 Start mail input\"\n",
    );
    let (code, _, err) = check(&[&f]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        format!(
            "{}:3:9: reply code 354 is not a reply to connect, which takes 220 (RFC 5321 §4.3.2) \
             or a 4xx/5xx refusal; to send it anyway, use raw = \"354 Start mail input\\r\\n\"\n",
            f.display()
        )
    );
    // The suggested raw line is accepted as it is.
    let raw = write(
        &d,
        "raw.toml",
        "[[rule]]\non = \"connect\"\nraw = \"354 Start mail input\\r\\n\"\n",
    );
    let (code, out, err) = check(&[&raw]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(": ok: scenario \"raw\", 1 rule"), "{out}");
}

#[test]
fn check_accepts_every_shipped_scenario() {
    let files: Vec<PathBuf> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
    assert!(files.len() >= 10);
    let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let (code, out, err) = check(&refs);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), files.len(), "{out}");
}

fn presets(args: &[&str]) -> (i32, String, String) {
    common::run(&[&["presets"], args].concat())
}

#[test]
fn presets_refuses_an_unknown_stage_or_provider_and_lists_the_valid_ones() {
    let (code, out, err) = presets(&["--stage", "rcpt_to"]);
    assert_eq!(code, 2, "{out}{err}");
    assert_eq!(out, "");
    assert_eq!(
        err,
        "mailfault: --stage \"rcpt_to\": no presets for that stage; use one of \
         any, auth, connect, data, ehlo, mail, message, rcpt, starttls\n"
    );
    let (code, out, err) = presets(&["--provider", "hotmial"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.starts_with(
            "mailfault: --provider \"hotmial\": no such provider; use one of gmail, ms, yahoo,"
        ),
        "{err}"
    );
    // Known values still list presets.
    let (code, out, _) = presets(&["--provider", "microsoft", "--stage", "rcpt"]);
    assert_eq!(code, 0);
    assert!(out.lines().skip(1).all(|l| l.starts_with("ms.")), "{out}");
    assert!(out.lines().count() > 1, "{out}");
}

fn serve_err(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(bin())
        .arg("serve")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn certificate_for_an_address_two_listeners_share_is_refused() {
    let (code, err) = serve_err(&[
        "--listen",
        "127.0.0.1:0",
        "--listen-tls",
        "127.0.0.1:0",
        "--certificate",
        "127.0.0.1:0=expired",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(
        err,
        "mailfault: --certificate \"127.0.0.1:0=expired\" could mean two listeners: \
         --listen 127.0.0.1:0 and --listen-tls 127.0.0.1:0; give each its own address\n"
    );
    // The same address given twice: both are named.
    let (code, err) = serve_err(&[
        "--listen",
        "127.0.0.1:1=a.toml",
        "--listen",
        "127.0.0.1:1=b.toml",
        "--certificate",
        "127.0.0.1:1=valid",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(
            "could mean two listeners: --listen 127.0.0.1:1=a.toml and --listen 127.0.0.1:1=b.toml"
        ),
        "{err}"
    );
    // Two different faults for one listener.
    let (code, err) = serve_err(&[
        "--listen",
        "127.0.0.1:1",
        "--certificate",
        "127.0.0.1:1=expired",
        "--certificate",
        "127.0.0.1:1=valid",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--certificate \"127.0.0.1:1=valid\": --listen 127.0.0.1:1 already has certificate expired"),
        "{err}"
    );
}

#[test]
fn listening_line_names_each_certificate_fault() {
    let d = tmp("listen-cert");
    let f = write(&d, "tls-broken.toml", "[tls]\ncertificate = \"expired\"\n");
    let plain = write(&d, "plain.toml", "");
    // A fixed port is needed to name a listener in --certificate: find a
    // free one, then give it back.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let fixed = format!("127.0.0.1:{port}");
    let mut child = Command::new(bin())
        .args(["serve", "--scenario"])
        .arg(&f)
        .args(["--listen", "127.0.0.1:0", "--listen-tls", &fixed])
        .args(["--listen", &format!("127.0.0.1:0={}", plain.display())])
        .args(["--certificate", &format!("{fixed}=wrong_host")])
        .arg("--ca-dir")
        .arg(d.join("ca"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut lines = vec![];
    for _ in 0..3 {
        let mut l = String::new();
        out.read_line(&mut l).unwrap();
        lines.push(l.trim_end().to_string());
    }
    let _ = child.kill();
    let _ = child.wait();
    let ca = format!(" ca={}", d.join("ca").join("ca.pem").display());
    assert!(
        lines[0].starts_with("listening smtp://127.0.0.1:")
            && lines[0].ends_with(&format!(" scenario=tls-broken certificate=expired{ca}")),
        "{lines:?}"
    );
    // Without [tls] a plain listener has no certificate to name.
    assert!(lines[1].ends_with(" scenario=plain"), "{lines:?}");
    assert_eq!(
        lines[2],
        format!("listening smtps://{fixed} scenario=tls-broken certificate=wrong_host{ca}")
    );
}

#[test]
fn certificate_for_a_listener_without_tls_is_a_warning() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let fixed = format!("127.0.0.1:{port}");
    let s = Serve::start(&[
        "--listen",
        &fixed,
        "--certificate",
        &format!("{fixed}=expired"),
    ]);
    let line = s.wait_log("--certificate has no effect here");
    assert!(line.contains("WARN") && line.contains(&fixed), "{line}");
}

/// `serve` started with `args`: its "serving with" log line, once a
/// session has had MAIL accepted and QUIT answered.
fn serving_line(args: &[&str]) -> String {
    let s = Serve::start(args);
    let line = s.wait_log("worker thread");
    let mut lines = talk(
        &s.addr,
        &["EHLO client.test", "MAIL FROM:<a@b.test>", "QUIT"],
    );
    assert_eq!(lines.pop().unwrap(), "221 2.0.0 Bye");
    assert_eq!(lines.pop().unwrap(), "250 2.1.0 Ok");
    line
}

#[test]
fn threads_are_one_fewer_than_the_cores_unless_asked() {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let want = format!("threads={}", (cores - 1).max(1));
    assert!(serving_line(&[]).contains(&want));
    let line = serving_line(&["--threads", "3"]);
    assert!(
        line.contains("threads=3") && line.contains("multi-thread"),
        "{line}"
    );
}

/// One thread is a current-thread runtime, unless counters live in Redis
/// (its synchronous calls need the multi-thread runtime's
/// `block_in_place`). Redis is only named here, never reached: SMTP
/// without stateful rules does not ask it anything.
#[test]
fn one_thread_serves_on_the_main_thread_unless_redis_holds_the_state() {
    let line = serving_line(&["--threads", "1"]);
    assert!(
        line.contains("threads=1") && line.contains("current-thread"),
        "{line}"
    );
    let line = serving_line(&["--threads", "1", "--state", "redis://127.0.0.1:1"]);
    assert!(
        line.contains("threads=1") && line.contains("multi-thread"),
        "{line}"
    );
}

#[test]
fn the_api_has_a_thread_of_its_own() {
    let task = Path::new("/proc/self/task");
    if !task.exists() {
        assert!(
            std::env::var("CI").is_err(),
            "CI runs on Linux: /proc is needed"
        );
        eprintln!("skipped: no /proc to list threads in");
        return;
    }
    let names = |pid: u32| -> Vec<String> {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .map(|n| n.trim().to_string())
            .collect()
    };
    let s = Serve::start(&["--api", "127.0.0.1:0"]);
    assert_eq!(talk(&s.addr, &["QUIT"]).last().unwrap(), "221 2.0.0 Bye");
    let threads = names(s.child.id());
    assert!(threads.iter().any(|n| n == "mailfault-api"), "{threads:?}");
    let s = Serve::start(&["--no-api"]);
    assert_eq!(talk(&s.addr, &["QUIT"]).last().unwrap(), "221 2.0.0 Bye");
    let threads = names(s.child.id());
    assert!(!threads.iter().any(|n| n == "mailfault-api"), "{threads:?}");
}
