//! What a message's transcript costs the session that records it: the 11
//! events of one message on a kept connection (MAIL, RCPT and DATA with
//! their replies and facts, the message, its 250, the transaction),
//! recorded with no event stream open and with one subscribed to the
//! capture's channel (what a session pays for an open stream: the reader
//! encodes them on the API's thread), and encoded alone (what that reader
//! pays).
//!
//!   cargo bench --bench events            # figures in docs/performance.md
//!   cargo bench --bench events -- --quick

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use mailfault::capture::{Capture, Event};

/// One message's events, as the server wrote them with `--events`.
const MESSAGE: &str = include_str!("fixtures/message-events.jsonl");

fn message() -> Vec<Event> {
    MESSAGE
        .lines()
        .map(|l| serde_json::from_str(l).expect("a fixture line is an event"))
        .collect()
}

fn record(capture: &Capture, events: &[Event]) {
    for e in events {
        capture.record(&e.listener, &e.scenario, e.session, e.kind.clone());
    }
}

fn events(c: &mut Criterion) {
    let events = message();
    assert_eq!(events.len(), 11);
    let mut group = c.benchmark_group("a message's 11 events");
    let capture = Capture::in_memory();
    group.bench_function("record, no stream", |b| {
        b.iter(|| record(&capture, black_box(&events)))
    });
    let capture = Capture::in_memory();
    let mut live = capture.live();
    group.bench_function("record, a stream subscribed", |b| {
        b.iter(|| {
            record(&capture, black_box(&events));
            // The stream's reader (on the API's thread in the server)
            // takes them; here at every message, so the channel never
            // fills.
            while live.try_recv().is_ok() {}
        })
    });
    let mut out = Vec::with_capacity(1 << 16);
    group.bench_function("encode", |b| {
        b.iter(|| {
            out.clear();
            for e in black_box(&events) {
                e.write_json(&mut out);
            }
            black_box(out.len())
        })
    });
    group.finish();
}

criterion_group!(benches, events);
criterion_main!(benches);
