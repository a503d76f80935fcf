//! What `report` reads: transcripts (JSON Lines, possibly still being
//! written) and the scenarios their listeners served.

use std::path::{Path, PathBuf};

use crate::capture::{scenario_hash, Event, EventKind};
use crate::scenario::{self, model::Expect};

/// `report --check` exit codes (documented in `report --help` and the README).
pub const EXIT_PASSED: u8 = 0;
/// An expectation failed or the sender misbehaved (an error finding).
pub const EXIT_FAILED: u8 = 1;
/// Nothing to judge (no events, no sessions) or unreadable input.
pub const EXIT_NOTHING: u8 = 2;

/// Events read, in time order, and how many lines were not events.
pub struct Input {
    pub events: Vec<Event>,
    pub skipped: usize,
}

/// Reads JSON Lines transcripts (`-`: stdin). A last line without its
/// newline is a line the server is still writing: it is left for later,
/// not counted as garbage.
pub fn read(paths: &[PathBuf]) -> Result<Input, String> {
    let mut events = vec![];
    let mut skipped = 0;
    for p in paths {
        let text = if p.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin())
                .map_err(|e| format!("cannot read stdin: {e}"))?
        } else {
            std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?
        };
        let complete = if p.as_os_str() == "-" || text.ends_with('\n') {
            &text[..]
        } else {
            text.rfind('\n').map_or("", |i| &text[..=i])
        };
        for line in complete.lines().filter(|l| !l.trim().is_empty()) {
            match serde_json::from_str::<Event>(line) {
                Ok(e) => events.push(e),
                Err(_) => skipped += 1,
            }
        }
    }
    // Several files: keep time order (RFC 3339 UTC sorts as text).
    events.sort_by(|a, b| a.ts.cmp(&b.ts));
    Ok(Input { events, skipped })
}

/// Why there is nothing to judge, if so: a CI job pointed at the wrong
/// file must not pass.
pub fn nothing_to_judge(input: &Input, what: &str) -> Option<String> {
    if input.events.is_empty() {
        return Some(if input.skipped > 0 {
            format!(
                "{what}: not an events file ({} line{} and no mailfault event); nothing to judge",
                input.skipped,
                if input.skipped == 1 { "" } else { "s" }
            )
        } else {
            format!("{what}: no events; nothing to judge")
        });
    }
    let sessions = input
        .events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Connect { .. }))
        .count();
    (sessions == 0).then(|| format!("{what}: no client connected; nothing to judge"))
}

/// The expectations of the scenarios the listeners served, found by the
/// absolute path the Listen events recorded. `warn` hears about a file that
/// changed since (its hash differs) or cannot be read.
pub fn expectations(events: &[Event], mut warn: impl FnMut(String)) -> Vec<Expect> {
    // Each file once, in the order first served, with the hash of the
    // version served last: a hot reload records a new Listen event.
    let mut files: Vec<(&str, &Option<String>)> = vec![];
    for e in events {
        if let EventKind::Listen {
            file: Some(file),
            hash,
        } = &e.kind
        {
            match files.iter_mut().find(|(f, _)| *f == file.as_str()) {
                Some(known) => known.1 = hash,
                None => files.push((file, hash)),
            }
        }
    }
    let mut out = vec![];
    for (file, hash) in files {
        let path = Path::new(file);
        match std::fs::read(path) {
            Ok(text) => {
                if let Some(h) = hash.as_ref().filter(|h| **h != scenario_hash(&text)) {
                    warn(format!(
                        "{file} changed since the server read it ({h} then, {} now): the expectations checked are today's",
                        scenario_hash(&text)
                    ));
                }
            }
            Err(err) => {
                warn(format!(
                    "cannot read {file}, so its [[expect]] are not checked: {err}"
                ));
                continue;
            }
        }
        match scenario::load_file(path) {
            Ok(s) => out.extend(s.expects),
            Err(err) => warn(format!("cannot read the expectations of {file}: {err}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONNECT: &str = r#"{"ts":"2026-01-01T00:00:00.000Z","listener":"127.0.0.1:2525","scenario":"t","session":1,"type":"connect","client":"127.0.0.1:40000"}"#;

    fn file(name: &str, text: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("mailfault-input-{}-{name}", std::process::id()));
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn a_line_being_written_is_left_for_later() {
        let p = file("partial", &format!("{CONNECT}\n{}", &CONNECT[..40]));
        let input = read(std::slice::from_ref(&p)).unwrap();
        assert_eq!((input.events.len(), input.skipped), (1, 0));
        assert_eq!(nothing_to_judge(&input, "f"), None);
        let _ = std::fs::remove_file(p);
    }

    #[test]
    fn nothing_to_judge_says_why() {
        let p = file("text", "hello\nworld\n");
        let input = read(std::slice::from_ref(&p)).unwrap();
        assert_eq!(
            nothing_to_judge(&input, "f").unwrap(),
            "f: not an events file (2 lines and no mailfault event); nothing to judge"
        );
        let _ = std::fs::remove_file(p);
        let missing = read(&[PathBuf::from("/nonexistent/events.jsonl")])
            .err()
            .unwrap();
        assert!(
            missing.starts_with("cannot read /nonexistent/events.jsonl: "),
            "{missing}"
        );
    }
}
