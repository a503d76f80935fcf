//! The web UI and `report --html` in real headless Chromium: the binary
//! serves, lettre sends, and the Playwright scripts in tests/ui/ (run with
//! node, playwright-core and Debian's chromium) click through the pages and
//! assert what they show. The run writes target/screenshots/*.png
//! (docs/screenshots with `MAILFAULT_SCREENSHOTS=docs`).

mod common;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::*;
use lettre::message::Mailbox;
use lettre::transport::smtp::Error as SmtpError;
use lettre::{Message, SmtpTransport, Transport};

/// Fail twice with 451 at the end of the message, then accept; refuse one
/// recipient at RCPT.
const SCENARIO: &str = r#"[[rule]]
name = "flaky"
on = "message"
when = { rcpt = "*@flaky.test" }
times = 2
reply = "451 4.3.0 Try again later"

[[rule]]
name = "no such user"
on = "rcpt"
when = { rcpt = "nobody@*" }
reply = "550 5.1.1 No such user"
"#;

fn ui_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui")
}

/// node, playwright-core (npm ci --prefix tests/ui) and /usr/bin/chromium.
fn have_browser() -> bool {
    capable(
        "node --version",
        "node not installed (apt-get install nodejs)",
    ) && capable(
        &format!(
            "test -d {}/node_modules/playwright-core",
            ui_dir().display()
        ),
        "playwright-core not installed (npm ci --prefix tests/ui)",
    ) && capable(
        "/usr/bin/chromium --version",
        "chromium not installed (apt-get install chromium)",
    )
}

struct Serve {
    child: Child,
    smtp: u16,
    api: String,
    dir: PathBuf,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `serve --listen 127.0.0.1:0 --api 127.0.0.1:0` with [`SCENARIO`] and an
/// events file; the ports from the lines it prints.
fn serve(name: &str) -> Serve {
    serve_with(name, &[])
}

fn serve_with(name: &str, extra: &[&str]) -> Serve {
    let dir = std::env::temp_dir().join(format!("mailfault-ui-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(&file, SCENARIO).unwrap();
    let mut child = Command::new(bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--api", "127.0.0.1:0"])
        .arg("--scenario")
        .arg(&file)
        .arg("--events")
        .arg(dir.join("events.jsonl"))
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = || {
        let mut l = String::new();
        out.read_line(&mut l).unwrap();
        l.trim_end().to_string()
    };
    let smtp = listening_addr(&line()).port();
    let api = line();
    let api = api
        .strip_prefix("listening ")
        .and_then(|r| r.strip_suffix(" api"))
        .unwrap_or_else(|| panic!("not the API line: {api:?}"))
        .to_string();
    Serve {
        child,
        smtp,
        api,
        dir,
    }
}

/// Sends one message with lettre: the reply's code and first line.
fn send(port: u16, to: &str, subject: &str) -> String {
    let m = Message::builder()
        .from("Sender <sender@example.test>".parse::<Mailbox>().unwrap())
        .to(to.parse::<Mailbox>().unwrap())
        .subject(subject)
        .body("Line one of the body.\r\nLine two.\r\n".to_string())
        .unwrap();
    let mailer = SmtpTransport::builder_dangerous("127.0.0.1")
        .port(port)
        .build();
    match mailer.send(&m) {
        Ok(r) => format!("{} {}", r.code(), r.message().next().unwrap_or("")),
        Err(e) => reply_of(&e),
    }
}

fn reply_of(e: &SmtpError) -> String {
    let code = e.status().map(|c| c.to_string()).unwrap_or_default();
    // lettre's Display: "permanent error (550): 5.1.1 No such user".
    let text = e.to_string();
    let text = text.split_once("): ").map_or(text.as_str(), |(_, t)| t);
    format!("{code} {text}")
}

/// The mail every view shows: a delivery that failed twice, then passed;
/// one refused at RCPT; one plain.
fn send_the_mail(s: &Serve) {
    let hello = send(s.smtp, "alice@example.test", "Hello from the UI test");
    assert!(hello.starts_with("250 "), "{hello}");
    for _ in 0..2 {
        assert_eq!(
            send(s.smtp, "bob@flaky.test", "Retried"),
            "451 4.3.0 Try again later"
        );
    }
    let third = send(s.smtp, "bob@flaky.test", "Retried");
    assert!(third.starts_with("250 "), "{third}");
    assert_eq!(
        send(s.smtp, "nobody@example.test", "Refused"),
        "550 5.1.1 No such user"
    );
}

/// Runs a script of tests/ui/ with node; panics with its output on failure.
fn node(script: &str, args: &[&str]) {
    let out = Command::new("node")
        .arg(ui_dir().join(script))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(out.status.success(), "{script} failed:\n{text}");
}

/// Where the pages are photographed: docs/screenshots (the README's
/// pictures) when `MAILFAULT_SCREENSHOTS=docs`, so an ordinary test run
/// leaves the tree as it was; target/screenshots otherwise.
fn screenshots() -> String {
    let dir = match std::env::var("MAILFAULT_SCREENSHOTS").as_deref() {
        Ok("docs") => "docs/screenshots",
        _ => "target/screenshots",
    };
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    std::fs::create_dir_all(&d).unwrap();
    d.display().to_string()
}

/// The start page, the timeline of a fail-twice-then-accept delivery as
/// three attempts with their replies, a transcript, a message, Japanese.
#[test]
fn deliveries_timeline_transcript_message_and_japanese() {
    if !have_browser() {
        return;
    }
    let s = serve("views");
    send_the_mail(&s);
    node("views.mjs", &[&s.api, &screenshots(), &s.smtp.to_string()]);
}

/// A bad edit shows its error at its line; a good one changes the next
/// reply (sent with lettre after the script saved it); explain explains.
/// Needs PUT /api/v1/scenarios/{name} and POST /api/v1/explain.
#[test]
fn scenario_editor_marks_the_error_line_and_an_edit_changes_the_reply() {
    if !have_browser() {
        return;
    }
    let s = serve("editor");
    let before = send(s.smtp, "carol@edited.test", "Before");
    assert!(before.starts_with("250 "), "{before}");
    node("editor.mjs", &[&s.api, &screenshots(), "editor"]);
    assert_eq!(
        send(s.smtp, "carol@edited.test", "After"),
        "550 5.7.1 Refused by an edit in the web UI"
    );
}

/// `report --html` over the events file: one page that opens from disk
/// and shows the same timeline, with no request to anywhere.
#[test]
fn report_html_opens_and_shows_the_timeline() {
    let s = serve("report");
    send_the_mail(&s);
    let events = s.dir.join("events.jsonl");
    let page = s.dir.join("report.html");
    // The events file is written by a thread of its own: wait for the last reply.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !std::fs::read_to_string(&events)
        .unwrap_or_default()
        .contains("550 5.1.1")
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let args: [&std::ffi::OsStr; 4] = [
        "report".as_ref(),
        events.as_os_str(),
        "--html".as_ref(),
        page.as_os_str(),
    ];
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "{out}{err}");
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.starts_with("<!doctype html>"));
    assert!(
        html.contains("\"rcpt\":\"bob@flaky.test\""),
        "the report's JSON is inside"
    );
    assert!(
        html.contains("function mfTimeline("),
        "the UI's timeline script is inside"
    );
    for outside in ["src=\"http", "href=\"http", "@import", "url("] {
        assert!(!html.contains(outside), "the page loads nothing: {outside}");
    }
    if !have_browser() {
        return;
    }
    node("report.mjs", &[&page.display().to_string(), &screenshots()]);
}

/// A plain HTTP/1.1 GET: status, content type and body.
fn get(api: &str, path: &str) -> (u16, String, String) {
    let (status, head, body) =
        http_head_only(api.strip_prefix("http://").unwrap(), "GET", path, "");
    let kind = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type: ")
                .map(str::to_string)
        })
        .unwrap_or_default();
    (status, kind, body)
}

/// With --api-token the page and its files load without it (they hold no
/// data), with their types; the data needs it; the page asks for it once.
#[test]
fn the_page_loads_without_the_token_and_asks_for_it() {
    let s = serve_with("token", &["--api-token", "ui-secret"]);
    let page = get(&s.api, "/");
    assert_eq!((page.0, page.1.as_str()), (200, "text/html; charset=utf-8"));
    assert!(page.2.contains("<script src=\"/ui/app.js\">"));
    for (path, kind) in [
        ("/ui/app.js", "text/javascript; charset=utf-8"),
        ("/ui/timeline.js", "text/javascript; charset=utf-8"),
        ("/ui/i18n.js", "text/javascript; charset=utf-8"),
        ("/ui/app.css", "text/css; charset=utf-8"),
    ] {
        let (status, got, _) = get(&s.api, path);
        assert_eq!((status, got.as_str()), (200, kind), "{path}");
    }
    assert_eq!(
        get(&s.api, "/ui/nothing.js").0,
        404,
        "an unknown file is not found"
    );
    assert_eq!(get(&s.api, "/api/v1/deliveries").0, 401);
    let hello = send(s.smtp, "alice@example.test", "Hello from the UI test");
    assert!(hello.starts_with("250 "), "{hello}");
    if !have_browser() {
        return;
    }
    node("token.mjs", &[&s.api, "ui-secret"]);
}
