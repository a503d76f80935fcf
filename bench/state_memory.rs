//! Measures the memory the counter store needs for one million distinct
//! keys of each kind, and how much a sweep gives back.
//!
//!     cargo run --release --example state-memory
//!
//! Figures go into docs/performance.md.

use std::time::{Duration, Instant};

use mailfault::state::{MemoryStore, StateStore};

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

const N: usize = 1_000_000;

fn measure(name: &str, fill: impl Fn(&MemoryStore, usize, Instant)) {
    let before = rss_kib();
    let store = MemoryStore::default();
    let t0 = Instant::now();
    let start = Instant::now();
    for i in 0..N {
        fill(&store, i, t0);
    }
    let took = start.elapsed();
    let after = rss_kib();
    let used = after.saturating_sub(before);
    let swept = store.sweep(t0 + Duration::from_secs(48 * 3600));
    println!(
        "{name:<40} {:>8.1} MiB  {:>5} B/key  {:>6.0} ns/op  swept {swept}",
        used as f64 / 1024.0,
        used * 1024 / N as u64,
        took.as_nanos() as f64 / N as f64
    );
}

fn main() {
    let key = |kind: &str, i: usize| {
        format!(
            "{kind}0\u{1e}198.51.100.{}\u{1f}sender{i}@example.test\u{1f}",
            i % 256
        )
    };
    // Each kind runs in a process of its own: freed memory stays with the
    // allocator, so measuring several kinds in one process would hide costs.
    match std::env::args().nth(1).as_deref() {
        Some("incr") => measure("times/sequence counters (incr)", |s, i, _| {
            let _ = s.incr(&key("r", i));
        }),
        Some("rate1") => measure("rate windows, 1 pass each (5/1m)", |s, i, t| {
            let _ = s.rate_pass(&key("l", i), 5, Duration::from_secs(60), t);
        }),
        Some("rate5") => measure("rate windows, 5 passes each (5/1m)", |s, i, t| {
            for _ in 0..5 {
                let _ = s.rate_pass(&key("l", i), 5, Duration::from_secs(60), t);
            }
        }),
        Some("grey") => measure("greylist triplets", |s, i, t| {
            let _ = s.greylist(
                &key("g", i),
                Duration::from_secs(60),
                Duration::from_secs(4 * 3600),
                t,
            );
        }),
        Some("rep") => measure("reputation tallies", |s, i, t| {
            s.record(&key("p", i), i % 10 == 0, Duration::from_secs(3600), t);
        }),
        _ => {
            println!("{N} distinct keys per kind, keys of about 50 bytes\n");
            let me = std::env::current_exe().expect("own path");
            for kind in ["incr", "rate1", "rate5", "grey", "rep"] {
                let status = std::process::Command::new(&me)
                    .arg(kind)
                    .status()
                    .expect("run");
                assert!(status.success());
            }
        }
    }
}
