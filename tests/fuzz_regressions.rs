//! What the fuzz targets (fuzz/) found, kept as tests: each input is the
//! minimized one the fuzzer reported, and the assertion is the property the
//! target checks. See docs/robustness.md for the runs.

use mailfault::bounce::{dsn, reproduce};
use mailfault::scenario;

/// `from-bounce` then `check` on the scenario it wrote.
fn reproduced_scenario_loads(bounce: &[u8]) -> String {
    let b = dsn::parse(bounce).expect("read as a bounce");
    let text = reproduce::scenario(&b, "fuzz.eml");
    if let Err(e) = scenario::parse(&text, "generated.toml", "generated") {
        panic!("from-bounce wrote a scenario that does not load:\n{e}\n---\n{text}");
    }
    text
}

/// fuzz target `bounce`: a NUL in a free-text bounce went into a comment of
/// the generated scenario, and TOML refuses control characters in comments.
#[test]
fn control_characters_in_a_bounce_stay_out_of_comments() {
    let text = reproduced_scenario_loads(b"R:\n\nU@delivery has failed\0");
    assert!(text.contains('\u{FFFD}'), "{text}");
    for c in ["\u{1b}", "\u{7f}", "\u{8}", "\r"] {
        let bounce = format!("R:\n\nU@delivery has failed{c}x\n");
        reproduced_scenario_loads(bounce.as_bytes());
    }
}
