//! An in-process mailfault for Rust tests: [`TestServer`] starts on a free
//! loopback port from a scenario string, shows what arrived, waits for a
//! message without sleeping, and stops when dropped.
//!
//! ```
//! use std::time::Duration;
//!
//! use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
//! use mailfault::testing::TestServer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anyhow::Result<()> {
//! let server = TestServer::start(
//!     r#"
//!     [[rule]]
//!     on = "rcpt"
//!     when.rcpt = "full@*"
//!     reply = "552 5.2.2 Mailbox full"
//!     "#,
//! )
//! .await?;
//! let mailer = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
//!     .port(server.addr().port())
//!     .build();
//! let mail = |to: &str| {
//!     Message::builder()
//!         .from("app@example.test".parse().unwrap())
//!         .to(to.parse().unwrap())
//!         .subject("Your order")
//!         .body(String::from("Thank you.\r\n"))
//!         .unwrap()
//! };
//!
//! // The scripted refusal reaches the client.
//! let refused = mailer.send(mail("full@example.test")).await.unwrap_err();
//! assert!(refused.to_string().contains("Mailbox full"), "{refused}");
//!
//! // Send in the background and wait for it: no sleep, no race.
//! let sending = tokio::spawn(async move { mailer.send(mail("ann@example.test")).await });
//! let got = server
//!     .wait_for_rcpt("ann@example.test", Duration::from_secs(10))
//!     .await?;
//! assert_eq!(got.mail_from, "app@example.test");
//! assert!(sending.await?.is_ok());
//!
//! // Two sessions, each with its replies and the rule that decided them.
//! assert_eq!(server.transcripts().len(), 2);
//!
//! // The HTTP API runs too, on its own free loopback port.
//! assert!(server.api_url().unwrap().starts_with("http://127.0.0.1:"));
//! # Ok(())
//! # }
//! ```
//!
//! Each test can load more scenarios on their own ports with
//! [`TestServer::put_scenario`]; each has its own counters, so tests running
//! in parallel never share a `times` or a greylist.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::capture::store::Message;
use crate::capture::{Capture, Event};
use crate::report::Report;
use crate::scenario;
use crate::server::{ListenerSpec, Options, RuntimeError, ScenarioInfo, Server, Source};

/// The name of the scenario [`TestServer::start`] serves.
pub const MAIN: &str = "test";
/// How long open sessions may finish when a test server stops.
pub const GRACE: Duration = Duration::from_millis(200);

/// No matching message arrived in time.
#[derive(Debug, thiserror::Error)]
#[error("no matching message within {waited:?}; {} message(s) arrived: {}", seen.len(), seen.join("; "))]
pub struct WaitTimeout {
    pub waited: Duration,
    /// What did arrive (`id from -> rcpts (code)`), to see why it missed.
    pub seen: Vec<String>,
}

/// One session's events, in order.
#[derive(Debug, Clone)]
pub struct Transcript {
    pub session: u64,
    pub listener: String,
    pub scenario: String,
    pub events: Vec<Event>,
}

/// A mailfault server inside the test process. Dropping it stops it: no
/// more connections, and open sessions answer 421 and close.
pub struct TestServer {
    server: Option<Server>,
    api: Option<SocketAddr>,
}

impl TestServer {
    /// Starts on `127.0.0.1:0` with this scenario (named [`MAIN`]), and the
    /// HTTP API on another free loopback port ([`TestServer::api_url`]). A
    /// bad scenario fails with every `test:LINE:COL` problem.
    pub async fn start(scenario_toml: &str) -> anyhow::Result<Self> {
        let s = scenario::parse(scenario_toml, MAIN, MAIN)?;
        let mut opts = Options::new(vec![ListenerSpec {
            addr: "127.0.0.1:0".parse()?,
            source: Source::Given(Arc::new(s)),
            tls: Default::default(),
        }]);
        opts.grace = GRACE;
        opts.api = Some(crate::api::ApiOptions::new("127.0.0.1:0".parse()?));
        Self::start_with(opts).await
    }

    /// Starts with any options (several listeners, TLS, a capture folder);
    /// the API runs when `opts.api` asks for it.
    pub async fn start_with(opts: Options) -> anyhow::Result<Self> {
        let server = Server::start(opts).await?;
        let api = server.api_addr;
        Ok(Self::from_server(server, api))
    }

    /// Wraps a server already started; `api`: where its HTTP API listens.
    pub fn from_server(server: Server, api: Option<SocketAddr>) -> Self {
        Self {
            server: Some(server),
            api,
        }
    }

    /// The running server.
    pub fn server(&self) -> &Server {
        self.server
            .as_ref()
            .expect("a TestServer holds its server until stop()")
    }

    fn capture(&self) -> &Capture {
        &self.server().capture
    }

    /// The SMTP address of the first listener.
    pub fn addr(&self) -> SocketAddr {
        self.server().addr()
    }

    /// The HTTP API's base URL (`http://127.0.0.1:PORT`), when it runs.
    pub fn api_url(&self) -> Option<String> {
        self.api.map(|a| format!("http://{a}"))
    }

    /// Every message captured so far, oldest first (refused ones too: see
    /// `accepted`).
    pub fn messages(&self) -> Vec<Arc<Message>> {
        self.capture().messages()
    }

    /// Waits until a captured message satisfies `matches` (already there or
    /// arriving later) and returns it. It subscribes before it looks, so a
    /// message arriving meanwhile is never missed.
    pub async fn wait_for_message(
        &self,
        matches: impl Fn(&Message) -> bool,
        timeout: Duration,
    ) -> Result<Arc<Message>, WaitTimeout> {
        let mut arrived = self.capture().subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            arrived.borrow_and_update();
            if let Some(m) = self.messages().into_iter().find(|m| matches(m)) {
                return Ok(m);
            }
            match tokio::time::timeout_at(deadline, arrived.changed()).await {
                Ok(Ok(())) => {}
                // The sender lives in the capture we hold: it cannot close;
                // fall through to the timeout answer all the same.
                Ok(Err(_)) | Err(_) => {
                    return Err(WaitTimeout {
                        waited: timeout,
                        seen: self.messages().iter().map(|m| describe(m)).collect(),
                    })
                }
            }
        }
    }

    /// Waits for an accepted message to `rcpt` (case-insensitive).
    pub async fn wait_for_rcpt(
        &self,
        rcpt: &str,
        timeout: Duration,
    ) -> Result<Arc<Message>, WaitTimeout> {
        self.wait_for_message(
            |m| m.accepted && m.rcpts.iter().any(|r| r.eq_ignore_ascii_case(rcpt)),
            timeout,
        )
        .await
    }

    /// The events kept in memory, grouped by session in the order the
    /// sessions began (listener start-up events left out).
    pub fn transcripts(&self) -> Vec<Transcript> {
        let mut order = vec![];
        let mut by_session: BTreeMap<u64, Transcript> = BTreeMap::new();
        for e in self
            .capture()
            .events()
            .into_iter()
            .filter(|e| e.session != 0)
        {
            let t = by_session.entry(e.session).or_insert_with(|| {
                order.push(e.session);
                Transcript {
                    session: e.session,
                    listener: e.listener.to_string(),
                    scenario: e.scenario.to_string(),
                    events: vec![],
                }
            });
            t.events.push(e);
        }
        order
            .into_iter()
            .filter_map(|s| by_session.remove(&s))
            .collect()
    }

    /// The sender report over the events in memory, checked against the
    /// `[[expect]]` of every scenario served now.
    pub fn report(&self) -> Report {
        let runtime = self.server().runtime();
        let expects: Vec<_> = runtime
            .list()
            .iter()
            .filter_map(|i| runtime.scenario(&i.name).ok())
            .flat_map(|s| s.expects.clone())
            .collect();
        crate::report::build(&self.capture().events(), &expects, 0)
    }

    /// Every scenario served now.
    pub fn scenarios(&self) -> Vec<ScenarioInfo> {
        self.server().scenarios()
    }

    /// Adds a scenario on a fresh port, or replaces one; see
    /// [`crate::server::runtime`].
    pub fn put_scenario(&self, name: &str, toml: &str) -> Result<ScenarioInfo, RuntimeError> {
        self.server().put_scenario(name, toml)
    }

    /// Closes a scenario's port.
    pub async fn delete_scenario(&self, name: &str) -> Result<ScenarioInfo, RuntimeError> {
        self.server().delete_scenario(name).await
    }

    /// Puts one rule (TOML fields, with or without `[[rule]]`) first in a
    /// scenario, keeping its counters.
    pub fn prepend_rule(&self, name: &str, rule_toml: &str) -> Result<ScenarioInfo, RuntimeError> {
        self.server().runtime().prepend_toml(name, rule_toml)
    }

    /// [`TestServer::prepend_rule`] with the rule as JSON (the TOML field
    /// names), as the HTTP API takes it.
    pub fn prepend_rule_json(
        &self,
        name: &str,
        rule: &serde_json::Value,
    ) -> Result<ScenarioInfo, RuntimeError> {
        self.server().prepend_rule(name, rule)
    }

    /// Fresh counters and windows everywhere; no messages or events.
    pub fn reset(&self) -> Result<(), RuntimeError> {
        self.server().reset()
    }

    /// Stops gracefully: open sessions get [`GRACE`] to finish. Returns the
    /// stopped server, whose capture can still be read.
    pub async fn stop(mut self) -> Server {
        let server = self
            .server
            .take()
            .expect("a TestServer holds its server until stop()");
        server.shutdown().await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = &self.server {
            s.stop_now();
        }
    }
}

fn describe(m: &Message) -> String {
    format!(
        "{} {} -> {} ({})",
        m.id,
        m.mail_from,
        m.rcpts.join(","),
        m.reply_code.map_or("no reply".into(), |c| c.to_string())
    )
}
