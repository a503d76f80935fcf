//! `explain` on arbitrary reply text, and the strict reply parser the
//! scenario loader uses.
//!
//! Properties: no panic; an explanation renders in both languages and as
//! JSON; a reply that parses keeps its code through its wire form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailfault::bounce::explain::{explain, render, ReadReply};
use mailfault::proto::Reply;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Some(read) = ReadReply::parse(&text) {
        assert!((200..=599).contains(&read.code), "code {} outside 200-599", read.code);
        let _ = read.text();
        for ja in [false, true] {
            let e = explain(read.clone(), ja);
            let _ = render(&e);
            serde_json::to_string(&e).expect("an explanation serializes");
        }
    }
    if let Ok(reply) = Reply::parse(&text) {
        let wire = String::from_utf8(reply.to_wire()).expect("wire form is UTF-8");
        let again = Reply::parse(&wire).expect("the wire form of a reply parses");
        assert_eq!(again.code, reply.code);
        let _ = reply.summary();
    }
});
