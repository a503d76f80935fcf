//! Docs that run: every "Try it" command in the header of each file in
//! scenarios/, and the swaks lines of the README's "Run it", are executed
//! by bash against the real binary serving that scenario, and each promised
//! outcome is checked.
//!
//! The format the headers follow (keep it when adding a scenario):
//!
//! ```text
//! # Try it:
//! #   cargo run --release -- serve --scenario scenarios/flaky.toml
//! #   swaks --server 127.0.0.1:2525 --to someone@flaky.test   # 451 4.3.0
//! #   # a line starting with "#" is prose and is not run
//! #   cargo run --release -- report events.jsonl --check     # exit 1
//! ```
//!
//! - A command is everything before " # "; a trailing "\" continues it on
//!   the next line.
//! - The comment is the promise: `exit N` is the exit status; otherwise the
//!   text up to an optional " — " (then a note for people) must appear in the
//!   command's output: a reply (three digits first, such as "451 4.3.0") or
//!   any text in double quotes. A command with no comment must exit 0.
//! - `cargo run --release --` and a leading `mailfault` run the built binary.
//!   The `serve` line is started in the background; without `--listen` it
//!   gets `--listen 127.0.0.1:0` and the port it prints replaces 2525 in the
//!   other commands; explicit ports are swapped for free ones everywhere.
//!   `/tmp/mailfault-ca` becomes a folder of the test's own (`--ca-dir`).
//! - Commands run in a fresh folder (so `events.jsonl` lands there), in
//!   order. Before the first `report` line the server is stopped, as a user
//!   would after the run, so the report sees the whole transcript.
//! - What takes minutes is not waited for: a `sleep` over 5 s is not run, nor
//!   the command after it, which needed the wait (greylist.toml: the retry
//!   61 s later; its report still runs). An outage's "for 2 minutes" is
//!   checked by its first reply only. Each command is bounded (60 s).

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A `sleep` longer than this ends the block: the test does not wait.
const LONGEST_SLEEP_S: u64 = 5;
/// No documented command may take longer than this.
const COMMAND_LIMIT: Duration = Duration::from_secs(60);
const CA_DIR: &str = "/tmp/mailfault-ca";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// What a documented command promises.
#[derive(Debug, Clone, PartialEq)]
enum Promise {
    /// Exit 0 (no comment).
    Success,
    Exit(i32),
    /// This text appears in its output (stdout or stderr).
    Shows(String),
}

#[derive(Debug, Clone)]
struct Step {
    line: usize,
    command: String,
    promise: Promise,
}

/// The promise in a command's comment; None when it is not machine-checkable.
fn promise(comment: &str) -> Option<Promise> {
    let text = comment.split(" — ").next().unwrap_or("").trim();
    if let Some(n) = text.strip_prefix("exit ") {
        return n.trim().parse().ok().map(Promise::Exit);
    }
    if let Some(quoted) = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        return Some(Promise::Shows(quoted.to_string()));
    }
    let code = text.get(..3)?;
    (code.bytes().all(|b| b.is_ascii_digit()) && text.len() > 4)
        .then(|| Promise::Shows(text.to_string()))
}

/// Splits shell lines (already stripped of the doc's comment markers) into
/// steps. `first` is the file line of `lines[0]`.
fn steps(lines: &[&str], first: usize, file: &str) -> Vec<Step> {
    let mut out: Vec<Step> = vec![];
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in lines.iter().enumerate() {
        let l = raw.trim();
        if pending.is_none() && (l.is_empty() || l.starts_with('#')) {
            continue;
        }
        let (cmd, comment) = match l.split_once(" # ") {
            Some((c, m)) => (c.trim(), Some(m)),
            None => (l, None),
        };
        let (start, mut text) = pending.take().unwrap_or((first + i, String::new()));
        if let Some(c) = cmd.strip_suffix('\\') {
            assert!(
                comment.is_none(),
                "{file}:{}: comment before '\\'",
                first + i
            );
            text.push_str(c.trim());
            text.push(' ');
            pending = Some((start, text));
            continue;
        }
        text.push_str(cmd);
        let promise = match comment {
            None => Promise::Success,
            Some(c) => promise(c).unwrap_or_else(|| {
                panic!(
                    "{file}:{}: {c:?} is not a promise the test can check \
                     (a reply such as \"451 4.3.0\", or \"exit 1\"; a note follows \" — \")",
                    first + i
                )
            }),
        };
        out.push(Step {
            line: start,
            command: text,
            promise,
        });
    }
    assert!(pending.is_none(), "{file}: the last command ends with '\\'");
    out
}

/// The "Try it" block of a scenario header, as steps.
fn try_it(text: &str, file: &str) -> Vec<Step> {
    let lines: Vec<&str> = text.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("# Try it") && l.trim_end().ends_with(':'))
        .unwrap_or_else(|| panic!("{file}: no \"# Try it:\" line in the header"));
    let body: Vec<&str> = lines[at + 1..]
        .iter()
        .take_while(|l| l.starts_with('#'))
        .map(|l| l.trim_start_matches('#'))
        .collect();
    let s = steps(&body, at + 2, file);
    assert!(
        s.iter().any(|s| is_serve(&s.command)),
        "{file}: the Try it block starts the server"
    );
    s
}

/// The shell blocks of one README section, as steps.
fn readme_section(text: &str, heading: &str) -> Vec<Step> {
    let start = text
        .lines()
        .position(|l| l == heading)
        .unwrap_or_else(|| panic!("README.md: no {heading:?}"));
    let mut out = vec![];
    let mut block: Option<(usize, Vec<&str>)> = None;
    for (i, l) in text.lines().enumerate().skip(start + 1) {
        if l.starts_with("## ") {
            break;
        }
        match (&mut block, l) {
            (None, "```sh") => block = Some((i + 2, vec![])),
            (Some((first, b)), "```") => {
                out.extend(steps(b, *first, "README.md"));
                block = None;
            }
            (Some((_, b)), l) => b.push(l),
            _ => {}
        }
    }
    out
}

fn is_serve(command: &str) -> bool {
    command.contains("-- serve") || command.starts_with("mailfault serve")
}

/// The outside programs a block needs; false (skip) when one is missing.
fn can_run(steps: &[Step]) -> bool {
    let all: String = steps.iter().map(|s| s.command.as_str()).collect();
    let swaks = all.contains("swaks");
    let tls = steps
        .iter()
        .any(|s| s.command.contains("swaks") && s.command.contains(" --tls"));
    have_bash()
        && (!swaks || have_swaks())
        && (!tls || have_swaks_tls())
        && (!all.contains("curl ") || have_curl_smtp())
}

/// Every `127.0.0.1:PORT` in a command.
fn ports(command: &str) -> Vec<u16> {
    let mut out = vec![];
    for (i, _) in command.match_indices("127.0.0.1:") {
        let digits: String = command[i + 10..]
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        if let Ok(p) = digits.parse() {
            out.push(p);
        }
    }
    out
}

/// A port nobody listens on right now.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Rewrites a documented command to run here: the built binary, the
/// repository's scenarios, this test's CA folder and ports.
fn localise(command: &str, ports: &BTreeMap<u16, u16>, dir: &Path) -> String {
    let bin = bin();
    let mut c = command.replace("cargo run --release --", bin);
    if let Some(rest) = c.strip_prefix("mailfault ") {
        c = format!("{bin} {rest}");
    }
    c = c.replace(" scenarios/", &format!(" {}/scenarios/", root().display()));
    c = c.replace(CA_DIR, &dir.join("ca").display().to_string());
    for (from, to) in ports {
        // Longest first is not needed: each is followed by a non-digit.
        c = replace_port(&c, *from, *to);
    }
    c
}

fn replace_port(c: &str, from: u16, to: u16) -> String {
    let needle = format!("127.0.0.1:{from}");
    let mut out = String::new();
    let mut rest = c;
    while let Some(i) = rest.find(&needle) {
        let after = &rest[i + needle.len()..];
        out.push_str(&rest[..i]);
        if after.starts_with(|ch: char| ch.is_ascii_digit()) {
            out.push_str(&needle);
        } else {
            out.push_str(&format!("127.0.0.1:{to}"));
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// The running `serve` of one block.
struct Served {
    child: Child,
    stderr: PathBuf,
}

impl Served {
    /// Starts the serve command; returns it and 2525's stand-in when the
    /// command named no listener.
    fn start(command: &str, dir: &Path) -> (Self, Option<u16>) {
        let explicit = command.contains("--listen");
        let mut c = command.to_string();
        if !explicit {
            c.push_str(" --listen 127.0.0.1:0");
        }
        if !c.contains("--ca-dir") {
            c.push_str(&format!(" --ca-dir {}", dir.join("ca").display()));
        }
        let listeners = c.matches("--listen").count();
        let stderr = dir.join("serve.log");
        let child = Command::new("bash")
            .args(["-c", &format!("exec {c}")])
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let mut served = Served { child, stderr };
        let out = BufReader::new(served.child.stdout.take().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in out.lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        let mut first = None;
        for _ in 0..listeners {
            let l = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
            assert!(l.starts_with("listening "), "{c}: {l:?}\n{}", served.log());
            first.get_or_insert(listening_addr(&l).port());
        }
        (served, first.filter(|_| !explicit))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// SIGTERM, then wait: the server flushes its files on the way out.
    fn stop(&mut self) {
        if self.child.try_wait().unwrap().is_some() {
            return;
        }
        signal(self.child.id(), "TERM");
        let end = Instant::now() + Duration::from_secs(15);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < end, "serve did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs one command with bash in `dir`, bounded; exit status and output.
fn run(command: &str, dir: &Path) -> (Option<i32>, String) {
    let mut child = Command::new("bash")
        .args(["-c", &format!("{command} 2>&1")])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut pipe = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = pipe.read_to_string(&mut s);
        s
    });
    let end = Instant::now() + COMMAND_LIMIT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("{command}: still running after {COMMAND_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status.code(), reader.join().unwrap())
}

/// A `sleep N` the test will not wait for.
fn long_sleep(command: &str) -> Option<u64> {
    let n: u64 = command.strip_prefix("sleep ")?.trim().parse().ok()?;
    (n > LONGEST_SLEEP_S).then_some(n)
}

/// Runs a block's steps in order and checks each promise.
fn check_block(file: &str, steps: &[Step], name: &str) {
    if !can_run(steps) {
        return;
    }
    let dir = tmp(&format!("docs-{name}"));
    let mut map = BTreeMap::new();
    let serve = steps.iter().find(|s| is_serve(&s.command)).unwrap();
    for p in ports(&serve.command) {
        map.insert(p, free_port());
    }
    let (mut served, default) = Served::start(&localise(&serve.command, &map, &dir), &dir);
    if let Some(p) = default {
        map.insert(2525, p);
    }
    let mut waited_for = None;
    for step in steps.iter().filter(|s| !is_serve(&s.command)) {
        let at = format!("{file}:{}: {}", step.line, step.command);
        if let Some(n) = long_sleep(&step.command) {
            waited_for = Some(n);
            continue;
        }
        if let Some(n) = waited_for.take() {
            eprintln!("{at}: not run (it follows a {n} s wait)");
            continue;
        }
        if step.command.contains(" report ") {
            served.stop();
        }
        let (code, out) = run(&localise(&step.command, &map, &dir), &dir);
        let log = served.log();
        match &step.promise {
            Promise::Success => assert_eq!(code, Some(0), "{at}\n{out}\nserver log:\n{log}"),
            Promise::Exit(n) => assert_eq!(code, Some(*n), "{at}\n{out}\nserver log:\n{log}"),
            Promise::Shows(t) => assert!(
                out.contains(t.as_str()),
                "{at}\npromised {t:?}; got:\n{out}\nserver log:\n{log}"
            ),
        }
    }
    // Dropping `served` kills it: nothing is promised about the end.
}

fn scenario(name: &str) {
    let file = format!("scenarios/{name}.toml");
    let text = std::fs::read_to_string(root().join(&file)).unwrap();
    check_block(&file, &try_it(&text, &file), name);
}

macro_rules! try_it_tests {
    ($($f:ident => $name:literal),* $(,)?) => {
        $( #[test] fn $f() { scenario($name) } )*
        const COVERED: &[&str] = &[$($name),*];
    };
}

try_it_tests! {
    chaos_try_it => "chaos",
    default_try_it => "default",
    flaky_try_it => "flaky",
    gmail_bounces_try_it => "gmail-bounces",
    greylist_try_it => "greylist",
    outage_try_it => "outage",
    rate_limit_try_it => "rate-limit",
    reputation_try_it => "reputation",
    retry_check_try_it => "retry-check",
    slow_try_it => "slow",
    submission_try_it => "submission",
    tls_broken_try_it => "tls-broken",
    tls_required_try_it => "tls-required",
}

#[test]
fn every_scenario_file_has_its_try_it_test() {
    let mut files: Vec<String> = std::fs::read_dir(root().join("scenarios"))
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            let stem = p.file_stem()?.to_string_lossy().into_owned();
            p.extension().is_some_and(|x| x == "toml").then_some(stem)
        })
        .collect();
    files.sort();
    assert_eq!(files, COVERED, "add the new file to try_it_tests!");
}

#[test]
fn readme_run_it_commands() {
    let text = std::fs::read_to_string(root().join("README.md")).unwrap();
    let steps = readme_section(&text, "## Run it");
    assert!(steps.len() >= 5, "{steps:?}");
    check_block("README.md", &steps, "readme");
}

#[test]
fn promises_parse_and_notes_are_not_promises() {
    assert_eq!(
        promise("451 4.3.0 — twice, then 250"),
        Some(Promise::Shows("451 4.3.0".into()))
    );
    assert_eq!(promise("exit 1"), Some(Promise::Exit(1)));
    assert_eq!(promise("the provider turned"), None);
    let s = steps(
        &[
            "  a --x \\",
            "     --y   # 250 2.0.0 Ok",
            "  # prose",
            "  b",
        ],
        10,
        "t",
    );
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].command, "a --x --y");
    assert_eq!(s[0].line, 10);
    assert_eq!(s[1].promise, Promise::Success);
    assert_eq!(
        replace_port("x 127.0.0.1:2525 127.0.0.1:25250", 2525, 1),
        "x 127.0.0.1:1 127.0.0.1:25250"
    );
}
