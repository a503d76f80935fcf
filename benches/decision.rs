//! One decision: the rule engine asked at RCPT, against 1, 10, 100 and
//! 1,000 rules. All but the last rule miss (globs, literal addresses and
//! regular expressions on the sender and the recipient); the last matches
//! the recipient, so every decision walks the whole list, as a scenario
//! whose only matching rule is its last one does. Each decision is about
//! the same sender and recipient, as a load test's messages are, so the
//! index answers from what its thread remembers; the group "another
//! address each time" asks about sixteen in turn, more than a thread
//! remembers (`scenario/memo.rs`), so every decision finds its rules anew.
//!
//!   cargo bench --bench decision            # figures in docs/performance.md
//!   cargo bench --bench decision -- --quick
//!
//! A field added to `proto::Context` must be added in `ask` below too.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use mailfault::proto::command::Command;
use mailfault::proto::{Context, Stage};
use mailfault::scenario::{self, Engine};

/// A scenario of `n` rules at RCPT: `n - 1` misses, then one match.
fn rules(n: usize) -> String {
    let mut t = String::from("[server]\nhostname = \"bench.test\"\n\n");
    for i in 1..n {
        let when = match i % 3 {
            0 => format!("{{ rcpt = \"nobody{i}@*\" }}"),
            1 => format!("{{ mail_from = \"user{i}@example{i}.test\" }}"),
            _ => format!("{{ mail_from = \"/^never{i}[0-9]+@/\" }}"),
        };
        t.push_str(&format!(
            "[[rule]]\non = [\"mail\", \"rcpt\", \"message\"]\nwhen = {when}\nreply = \"550 5.7.1 Never sent\"\n\n"
        ));
    }
    t.push_str("[[rule]]\non = \"rcpt\"\nwhen = { rcpt = \"rcpt@bench.test\" }\nreply = \"250 2.1.5 Ok\"\n");
    t
}

fn ask(engine: &Engine, command: &Command, client_ip: IpAddr, now: Instant) -> bool {
    ask_about(engine, command, client_ip, now, "sender@bench.test")
}

/// Sixteen senders, asked about in turn.
fn senders() -> Vec<String> {
    (0..16).map(|k| format!("sender{k}@bench.test")).collect()
}

fn ask_about(
    engine: &Engine,
    command: &Command,
    client_ip: IpAddr,
    now: Instant,
    sender: &str,
) -> bool {
    let ctx = Context {
        stage: Stage::Rcpt,
        session_id: 1,
        command: Some(command),
        client_ip,
        helo: Some("client.bench.test"),
        mail_from: Some(sender),
        rcpt: Some("rcpt@bench.test"),
        rcpts: &[],
        tls: false,
        authenticated: false,
        auth_user: None,
        size: None,
        message: None,
    };
    engine.decide(&ctx, now).is_some()
}

fn decision(c: &mut Criterion) {
    let command = Command::parse(b"RCPT TO:<rcpt@bench.test>");
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let now = Instant::now();
    let engines: Vec<(usize, Engine)> = [1, 10, 100, 1000]
        .into_iter()
        .map(|n| {
            let s =
                scenario::parse(&rules(n), "bench.toml", "bench").unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(s.rules.len(), n);
            (n, Engine::new(Arc::new(s), now))
        })
        .collect();

    let mut group = c.benchmark_group("decision at RCPT");
    for (n, engine) in &engines {
        assert!(ask(engine, &command, ip, now), "the last rule must decide");
        group.bench_with_input(BenchmarkId::from_parameter(n), engine, |b, engine| {
            b.iter(|| ask(black_box(engine), black_box(&command), ip, now))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("decision at RCPT, another address each time");
    let senders = senders();
    for (n, engine) in &engines {
        for sender in &senders {
            assert!(ask_about(engine, &command, ip, now, sender));
        }
        let mut turn = senders.iter().cycle();
        group.bench_with_input(BenchmarkId::from_parameter(n), engine, |b, engine| {
            b.iter(|| {
                let sender = turn.next().map_or("", String::as_str);
                ask_about(black_box(engine), black_box(&command), ip, now, sender)
            })
        });
    }
    group.finish();

    // A rule that counts (`times`): each decision also updates a counter in
    // the memory store, through the same `Op` a store behind the network
    // gets, answered on the spot (no suspension, no task, no future).
    let mut group = c.benchmark_group("decision at RCPT, counted");
    let text = format!(
        "{}\ntimes = 1000000000000\n",
        rules(10).trim_end_matches('\n')
    );
    let s = scenario::parse(&format!("{text}\n"), "bench.toml", "bench")
        .unwrap_or_else(|e| panic!("{e}"));
    let now = Instant::now();
    let engine = Engine::new(Arc::new(s), now);
    assert!(ask(&engine, &command, ip, now));
    group.bench_function("10", |b| {
        b.iter(|| ask(black_box(&engine), black_box(&command), ip, now))
    });
    group.finish();
}

criterion_group!(benches, decision);
criterion_main!(benches);
