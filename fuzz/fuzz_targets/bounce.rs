//! The bounce reader (`from-bounce`): arbitrary bytes as a bounce message.
//!
//! Properties: no panic; a bounce that is read serializes to JSON, and the
//! scenario written from it loads (`mailfault check` accepts it).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailfault::bounce::{dsn, reproduce};
use mailfault::scenario;

fuzz_target!(|data: &[u8]| {
    let Ok(bounce) = dsn::parse(data) else {
        return;
    };
    serde_json::to_string(&bounce).expect("a bounce serializes");
    let text = reproduce::scenario(&bounce, "fuzz.eml");
    if let Err(e) = scenario::parse(&text, "generated.toml", "generated") {
        panic!("from-bounce wrote a scenario that does not load:\n{e}\n---\n{text}");
    }
});
