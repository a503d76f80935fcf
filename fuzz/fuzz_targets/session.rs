//! The session core: arbitrary bytes in arbitrary chunks, under a scenario
//! with every outcome (fuzz/scenarios/every-outcome.toml), with the real
//! rule engine as the policy.
//!
//! Properties: no panic; a captured message never holds more than the size
//! limit; a recorded command line never exceeds the line limit; once the
//! session stops, it outputs nothing more for input.
#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use mailfault::proto::line::MAX_COMMAND_LINE;
use mailfault::proto::{Output, Policy, Session, SessionConfig};
use mailfault::scenario::{self, Engine, Scenario};

const SCENARIO: &str = include_str!("../scenarios/every-outcome.toml");

static LOADED: LazyLock<(Arc<Scenario>, Arc<SessionConfig>, Instant)> = LazyLock::new(|| {
    let s = scenario::parse(SCENARIO, "every-outcome.toml", "every-outcome")
        .unwrap_or_else(|e| panic!("{e}"));
    let cfg = SessionConfig {
        hostname: "fuzz.test".into(),
        max_message_size: s.server.max_message_size,
        max_recipients: s.server.max_recipients,
        starttls: true,
        auth: s.auth.clone().map(Arc::new),
        ..Default::default()
    };
    (Arc::new(s), Arc::new(cfg), Instant::now())
});

fn check(outputs: &[Output], limit: u64, stopped: &mut bool, session: &mut Session) {
    for o in outputs {
        match o {
            Output::Message(m) => {
                assert!(m.body.len() as u64 <= limit, "message stored past the limit");
            }
            Output::Command { line, .. } => {
                // Lossy UTF-8 may triple a byte; the line itself is bounded.
                assert!(line.len() <= 3 * MAX_COMMAND_LINE);
            }
            Output::StartTls => session.tls_established(),
            Output::Close(_) | Output::Hang { .. } => *stopped = true,
            _ => {}
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 5 {
        return;
    }
    let (scenario, cfg, epoch) = &*LOADED;
    // A fresh engine per input, so a crash replays from its input alone.
    let engine = Arc::new(Engine::new(scenario.clone(), *epoch));
    let policy: Arc<dyn Policy> = engine.clone();
    let client: SocketAddr = "192.0.2.7:40000".parse().unwrap();
    let mut session = Session::new(cfg.clone(), policy.clone(), client, 1);
    let sizes: Vec<usize> = data[..4].iter().map(|&b| 1 + b as usize).collect();
    let step = Duration::from_millis(250 * data[4] as u64);
    let stream = &data[5..];

    let limit = cfg.max_message_size;
    let mut now = *epoch;
    let mut stopped = false;
    let out = session.greet(now);
    check(&out, limit, &mut stopped, &mut session);
    let mut pos = 0;
    let mut i = 0;
    while pos < stream.len() {
        let end = (pos + sizes[i % sizes.len()]).min(stream.len());
        i += 1;
        now += step;
        let out = session.feed(&stream[pos..end], now);
        if stopped {
            assert!(out.is_empty(), "output after the session stopped: {out:?}");
        }
        check(&out, limit, &mut stopped, &mut session);
        pos = end;
    }
    let out = if data[4] % 2 == 0 {
        session.idle_timeout()
    } else {
        session.shutdown()
    };
    check(&out, limit, &mut stopped, &mut session);
    policy.session_closed(1);
});
