//! Hot reload loads only finished files: a scenario written in two steps
//! (truncated, half written, a pause, the rest) never serves its first half.

mod common;

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use common::{tmp, Client};
use mailfault::server::{ListenerSpec, Options, Server, Source};
use tokio::time::Instant;

async fn serve_file(path: &Path) -> Server {
    serve_file_quiet(path, mailfault::server::RELOAD_QUIET).await
}

/// A server whose reloads wait for `quiet`: the half-written tests use a
/// quiet time far longer than their pause, so a slow, loaded machine that
/// stretches the pause cannot make them fail.
async fn serve_file_quiet(path: &Path, quiet: Duration) -> Server {
    let mut opts = Options::new(vec![ListenerSpec {
        addr: "127.0.0.1:0".parse().unwrap(),
        source: Source::File(path.to_path_buf()),
        tls: Default::default(),
    }]);
    opts.watch = true;
    opts.reload_quiet = quiet;
    opts.grace = Duration::from_millis(200);
    Server::start(opts).await.unwrap()
}

/// One session: the reply to RCPT TO:<probe@x.test> and to NOOP.
async fn probe(server: &Server) -> (String, String) {
    let mut c = Client::connect(server).await;
    assert!(c.reply().await.starts_with("220 "));
    c.cmd("EHLO reload.test").await;
    c.cmd("MAIL FROM:<a@reload.test>").await;
    let rcpt = c.cmd("RCPT TO:<probe@x.test>").await;
    let noop = c.cmd("NOOP").await;
    c.cmd("QUIT").await;
    (rcpt, noop)
}

const FIRST: &str = "[[rule]]\non = \"noop\"\nreply = \"250 version one\"\n";

/// Writes `halves` the way a shell `>` redirect or a slow generator does:
/// truncate, write the first half, pause, write the rest, close. Probes
/// during the pause and returns every answer seen.
async fn write_slowly(
    server: &Server,
    path: &Path,
    halves: [&str; 2],
    pause: Duration,
) -> Vec<(String, String)> {
    let mut seen = vec![];
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(halves[0].as_bytes()).unwrap();
    f.flush().unwrap();
    let end = Instant::now() + pause;
    while Instant::now() < end {
        seen.push(probe(server).await);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f.write_all(halves[1].as_bytes()).unwrap();
    drop(f);
    seen
}

/// Probes until NOOP answers `want` (at most 5 s); returns every answer.
async fn until_noop(server: &Server, want: &str) -> Vec<(String, String)> {
    let end = Instant::now() + Duration::from_secs(5);
    let mut seen = vec![];
    loop {
        let got = probe(server).await;
        let done = got.1 == want;
        seen.push(got);
        if done {
            return seen;
        }
        assert!(Instant::now() < end, "never served {want:?}: {seen:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_first_half_is_never_served() {
    let d = tmp("reload-half-valid");
    let path = d.join("live.toml");
    std::fs::write(&path, FIRST).unwrap();
    let server = serve_file_quiet(&path, Duration::from_secs(1)).await;
    assert_eq!(probe(&server).await.1, "250 version one");

    // The first half alone is a valid scenario that refuses every
    // recipient; the whole file refuses only nobody@.
    let halves = [
        "[[rule]]\non = \"rcpt\"\nreply = \"550 5.1.1 half written\"\n",
        "when = { rcpt = \"nobody@*\" }\n\n[[rule]]\non = \"noop\"\nreply = \"250 version two\"\n",
    ];
    let mut seen = write_slowly(&server, &path, halves, Duration::from_millis(150)).await;
    seen.extend(until_noop(&server, "250 version two").await);
    for (rcpt, noop) in &seen {
        assert!(rcpt.starts_with("250 "), "half-written file served: {rcpt}");
        assert!(
            noop == "250 version one" || noop == "250 version two",
            "{noop}"
        );
    }
    assert!(seen.iter().any(|s| s.1 == "250 version one"), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_first_half_leaves_the_old_scenario_until_the_file_is_done() {
    let d = tmp("reload-half-invalid");
    let path = d.join("live.toml");
    std::fs::write(&path, FIRST).unwrap();
    let server = serve_file_quiet(&path, Duration::from_secs(1)).await;

    // Cut inside a string: not TOML yet.
    let halves = ["[[rule]]\non = \"noop\"\nreply = \"250 vers", "ion two\"\n"];
    let mut seen = write_slowly(&server, &path, halves, Duration::from_millis(150)).await;
    assert!(seen.iter().all(|s| s.1 == "250 version one"), "{seen:?}");
    seen = until_noop(&server, "250 version two").await;
    assert!(seen.iter().all(|s| s.0.starts_with("250 ")), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_is_loaded_after_a_short_quiet_moment() {
    let d = tmp("reload-quiet");
    let path = d.join("live.toml");
    std::fs::write(&path, FIRST).unwrap();
    let server = serve_file(&path).await;
    let t = Instant::now();
    std::fs::write(
        &path,
        "[[rule]]\non = \"noop\"\nreply = \"250 version two\"\n",
    )
    .unwrap();
    until_noop(&server, "250 version two").await;
    // Quiet for 300 ms, so not before that; and not much later.
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
}

/// A reload is recorded as a new Listen event with the new text's hash, so
/// `report` does not take the edit for a change made after the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_records_the_version_now_served() {
    use mailfault::capture::{scenario_hash, EventKind};
    let d = tmp("reload-listen");
    let path = d.join("live.toml");
    std::fs::write(&path, FIRST).unwrap();
    let server = serve_file(&path).await;
    let second = "[[rule]]\non = \"noop\"\nreply = \"250 version two\"\n\n[[expect]]\nname = \"x\"\ndelivered = true\n";
    std::fs::write(&path, second).unwrap();
    until_noop(&server, "250 version two").await;
    let events = server.capture.events();
    let hashes: Vec<Option<String>> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Listen { hash, .. } => Some(hash.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        hashes,
        [
            Some(scenario_hash(FIRST.as_bytes())),
            Some(scenario_hash(second.as_bytes()))
        ]
    );
    let mut warnings = vec![];
    let expects = mailfault::report::input::expectations(&events, |w| warnings.push(w));
    assert_eq!(warnings, Vec::<String>::new());
    assert_eq!(expects.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_editor_that_saves_by_renaming_is_followed() {
    let d = tmp("reload-rename");
    let path = d.join("live.toml");
    std::fs::write(&path, FIRST).unwrap();
    let server = serve_file(&path).await;
    // Written in full under another name, then moved over the scenario:
    // the half-written temporary file is never the scenario.
    let temp = d.join(".live.toml.swp");
    let mut f = std::fs::File::create(&temp).unwrap();
    f.write_all(b"[[rule]]\non = \"noop\"\nreply = \"250 vers")
        .unwrap();
    f.flush().unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    f.write_all(b"ion two\"\n").unwrap();
    drop(f);
    std::fs::rename(&temp, &path).unwrap();
    let seen = until_noop(&server, "250 version two").await;
    assert!(seen.iter().all(|s| s.0.starts_with("250 ")), "{seen:?}");
}

/// The real binary, its stderr in a file: a slow writer causes no error,
/// one "scenario reloaded" once done, and SIGHUP still reloads at once.
#[test]
fn the_binary_reports_no_error_for_a_slow_writer_and_reloads_on_sighup() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let d = tmp("reload-binary");
    let path = d.join("live.toml");
    std::fs::write(&path, FIRST).unwrap();
    let log = d.join("stderr.log");
    let mut child = Killed(
        Command::new(common::bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--scenario"])
            .arg(&path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let wait_for = |needle: &str, count: usize| {
        let end = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&log).unwrap();
            if text.matches(needle).count() >= count {
                return text;
            }
            assert!(
                std::time::Instant::now() < end,
                "{needle:?} x{count}:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };

    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(b"[[rule]]\non = \"noop\"\nreply = \"250 vers")
        .unwrap();
    f.flush().unwrap();
    std::thread::sleep(Duration::from_millis(150));
    f.write_all(b"ion two\"\n").unwrap();
    drop(f);
    let text = wait_for("scenario reloaded", 1);
    assert!(!text.contains("ERROR"), "{text}");

    Command::new("kill")
        .args(["-HUP", &child.0.id().to_string()])
        .status()
        .unwrap();
    let text = wait_for("scenario reloaded", 2);
    assert!(text.contains("SIGHUP: reloading scenarios"), "{text}");
    assert!(!text.contains("ERROR"), "{text}");
    assert!(
        !text.contains("seed"),
        "no random rules, no seed hint:\n{text}"
    );

    // A version with random rules and no seed names the seed it drew.
    std::fs::write(
        &path,
        "[[rule]]\non = \"rcpt\"\nprobability = 0.5\nreply = \"451 4.3.0 Try later\"\n",
    )
    .unwrap();
    let text = wait_for("scenario reloaded", 3);
    let last = text
        .lines()
        .rfind(|l| l.contains("scenario reloaded"))
        .unwrap();
    assert!(
        last.contains("to replay its random choices, set [server] seed = "),
        "{last}"
    );
}

/// A child process killed when the test ends, even by a failed assertion.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
