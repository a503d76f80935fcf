//! The scenario loader: arbitrary TOML text.
//!
//! Properties: no panic; an error renders as `file:line:col` diagnostics;
//! a scenario that loads answers a plain transaction without panicking.
#![no_main]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use mailfault::proto::{Policy, Session, SessionConfig};
use mailfault::scenario::{self, Engine};

const TRANSACTION: &[u8] = b"EHLO client.test\r\nMAIL FROM:<a@example.test> SIZE=100\r\n\
RCPT TO:<b@example.test>\r\nDATA\r\nSubject: hi\r\n\r\nhello\r\n.\r\nRSET\r\nNOOP\r\nQUIT\r\n";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let s = match scenario::parse(text, "fuzz.toml", "fuzz") {
        Ok(s) => s,
        Err(e) => {
            let shown = e.to_string();
            assert!(shown.contains("fuzz.toml:"), "diagnostic without a position: {shown}");
            return;
        }
    };
    let cfg = Arc::new(SessionConfig {
        max_message_size: s.server.max_message_size,
        max_recipients: s.server.max_recipients,
        auth: s.auth.clone().map(Arc::new),
        ..Default::default()
    });
    let now = Instant::now();
    let policy: Arc<dyn Policy> = Arc::new(Engine::new(Arc::new(s), now));
    let client: SocketAddr = "192.0.2.7:40000".parse().unwrap();
    let mut session = Session::new(cfg, policy.clone(), client, 1);
    session.greet(now);
    session.feed(TRANSACTION, now);
    session.shutdown();
    policy.session_closed(1);
});
