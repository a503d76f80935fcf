//! The network server: listeners (one scenario and one set of counters
//! each), the connection cap, hot reload, and graceful shutdown.
//!
//! Shutdown has two steps: `shutdown` stops accepting at once; after the
//! grace period `hard_stop` tells every session still open to answer
//! 421 4.3.2 and close.

mod connection;
pub mod limits;
pub mod proxy;
pub mod runtime;
pub mod slot;
mod watch;
pub use watch::QUIET as RELOAD_QUIET;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::capture::{Capture, EventKind};
use crate::proto::reply::defaults;
pub use runtime::{Runtime, RuntimeError, ScenarioInfo};
pub use slot::{Active, CaStore, Slot, Source, TlsOptions};

pub use connection::{DRIP_CHUNK, MAX_SESSION};

/// One address to listen on and what it serves.
#[derive(Clone)]
pub struct ListenerSpec {
    pub addr: SocketAddr,
    pub source: Source,
    pub tls: TlsOptions,
}

/// How to run the server.
pub struct Options {
    pub listeners: Vec<ListenerSpec>,
    /// Overrides every scenario's `[server] hostname`.
    pub hostname: Option<String>,
    pub capture: Arc<Capture>,
    /// How long sessions may finish after a shutdown request.
    pub grace: Duration,
    /// Open sessions at most; one more is accepted and answered 421.
    pub max_connections: usize,
    /// Reload scenario files when they change.
    pub watch: bool,
    /// How long a changed file must stay untouched before it is loaded
    /// (`watch::QUIET`; tests on a loaded machine may want more margin).
    pub reload_quiet: Duration,
    /// The test CA for TLS listeners.
    pub ca: Arc<CaStore>,
    /// The HTTP API, if wanted.
    pub api: Option<crate::api::ApiOptions>,
    /// Bytes of message buffers in flight, all sessions together.
    pub max_message_memory: u64,
    /// Open sessions per client IP (0: no limit); more are answered 421.
    pub max_sessions_per_ip: usize,
    /// The listen backlog of every listener.
    pub backlog: u32,
    /// No session lives longer than this.
    pub session_lifetime: Duration,
    /// Where counters live (`--state`): in memory or shared in Redis.
    pub state: crate::state::Backend,
    /// Indexes into `listeners` of those whose connections start with a
    /// PROXY protocol header (`--proxy-protocol`, `--listen ADDR,proxy`).
    pub proxy: Vec<usize>,
}

impl Options {
    pub fn new(listeners: Vec<ListenerSpec>) -> Self {
        Self {
            listeners,
            hostname: None,
            capture: Arc::new(Capture::in_memory()),
            grace: Duration::from_secs(10),
            max_connections: 1000,
            watch: false,
            reload_quiet: watch::QUIET,
            ca: Arc::new(CaStore::new(None)),
            api: None,
            max_message_memory: crate::proto::DEFAULT_MAX_MESSAGE_MEMORY,
            max_sessions_per_ip: 0,
            backlog: limits::DEFAULT_BACKLOG,
            session_lifetime: MAX_SESSION,
            state: crate::state::Backend::Memory,
            proxy: vec![],
        }
    }
}

/// What a reload of `b` tells.
fn watch_at(b: &Bound, capture: &Arc<Capture>) -> watch::Listener {
    watch::Listener {
        addr: b.addr,
        capture: capture.clone(),
    }
}

/// A bound listener.
pub struct Bound {
    pub addr: SocketAddr,
    pub slot: Arc<Slot>,
}

impl Bound {
    /// Logs what this listener serves. The seed is named, with the hint to
    /// fix it, only when the scenario draws random choices without a
    /// `[server] seed`: otherwise there is nothing to replay.
    pub fn log_listening(&self) {
        let active = self.slot.current();
        let scenario = active.scenario_name();
        let rules = active.engine.scenario.rules.len();
        match unseeded_random(&active) {
            Some(seed) => tracing::info!(
                addr = %self.addr,
                scenario,
                rules,
                seed,
                "listening; to replay its random choices, set [server] seed = {seed}"
            ),
            None => tracing::info!(addr = %self.addr, scenario, rules, "listening"),
        }
    }
}

/// The seed drawn for this scenario, when it has random rules (a
/// `probability` or a delay range) and no `[server] seed` of its own.
pub(crate) fn unseeded_random(active: &Active) -> Option<u64> {
    let scenario = &active.engine.scenario;
    let random = scenario
        .rules
        .iter()
        .any(|r| r.probability.is_some() || r.delay.is_some_and(|d| d.min != d.max));
    (random && scenario.server.seed.is_none()).then(|| active.engine.seed())
}

/// A running server.
pub struct Server {
    /// The listeners given at start (see [`Server::scenarios`] for every
    /// scenario served now, added ones included).
    pub listeners: Vec<Bound>,
    pub capture: Arc<Capture>,
    /// The test CA (made on first use).
    pub ca: Arc<CaStore>,
    /// Where the HTTP API listens (None: no API).
    pub api_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    hard_stop: CancellationToken,
    tracker: TaskTracker,
    grace: Duration,
    runtime: Arc<Runtime>,
    _watcher: Option<watch::Watcher>,
}

/// Where a scenario problem at start-up is reported: the diagnostics, so the
/// CLI can print them and exit 1.
pub use crate::scenario::LoadError;

impl Server {
    /// Loads every scenario and binds every listener. A bad scenario fails
    /// here with its diagnostics ([`LoadError`] inside the error).
    pub async fn start(opts: Options) -> anyhow::Result<Self> {
        let shutdown = CancellationToken::new();
        let hard_stop = CancellationToken::new();
        let tracker = TaskTracker::new();
        // One cap for the whole server: it protects the process, not a
        // scenario.
        let permits = Arc::new(Semaphore::new(opts.max_connections.max(1)));
        let ids = Arc::new(AtomicU64::new(1));
        let shared = Arc::new(limits::Shared {
            budget: crate::proto::MemoryBudget::new(opts.max_message_memory),
            per_ip: limits::PerIp::new(opts.max_sessions_per_ip),
            lifetime: opts.session_lifetime,
        });
        let runtime = Arc::new(Runtime::new(runtime::Shared {
            capture: opts.capture.clone(),
            hostname: opts.hostname.clone(),
            ca: opts.ca.clone(),
            permits,
            ids,
            shutdown: shutdown.clone(),
            hard_stop: hard_stop.clone(),
            tracker: tracker.clone(),
            limits: shared.clone(),
            state: opts.state.clone(),
            backlog: opts.backlog,
            smtp: tokio::runtime::Handle::current(),
        }));
        // The API answers /livez from here on, and /readyz once every
        // listener is bound; a failure below cancels it (the guard).
        let stop_api = shutdown.clone().drop_guard();
        let api = match &opts.api {
            Some(a) => crate::api::bind(a).await?,
            None => None,
        };
        let api_addr = api.as_ref().map(TcpListener::local_addr).transpose()?;
        let api_state = crate::api::ApiState::new(
            opts.capture.clone(),
            opts.api.as_ref().and_then(|a| a.token.clone()),
            shutdown.clone(),
        )
        .with_runtime(runtime.clone());
        if let Some(l) = api {
            crate::api::spawn(l, api_state.clone(), &tracker)
                .context("cannot start the API's thread")?;
        }
        let mut listeners = vec![];
        for (i, spec) in opts.listeners.iter().enumerate() {
            let slot = Arc::new(Slot::new(
                spec.source.clone(),
                opts.hostname.clone(),
                spec.tls.clone(),
                opts.ca.clone(),
                opts.state.clone(),
            )?);
            let listener = limits::bind(spec.addr, opts.backlog)
                .with_context(|| format!("cannot listen on {}", spec.addr))?;
            let addr = listener.local_addr()?;
            runtime.add_start(listener, slot.clone(), opts.proxy.contains(&i))?;
            listeners.push(Bound { addr, slot });
        }
        api_state.set_listeners(
            listeners
                .iter()
                .map(|b| crate::api::ListenerView {
                    addr: b.addr,
                    slot: b.slot.clone(),
                })
                .collect(),
        );
        stop_api.disarm();
        let watcher = if opts.watch {
            watch::Watcher::start(
                listeners
                    .iter()
                    .map(|b| (b.slot.clone(), watch_at(b, &opts.capture)))
                    .collect(),
                opts.reload_quiet,
            )
        } else {
            None
        };
        Ok(Self {
            listeners,
            capture: opts.capture,
            ca: opts.ca,
            api_addr,
            shutdown,
            hard_stop,
            tracker,
            grace: opts.grace,
            runtime,
            _watcher: watcher,
        })
    }

    /// The address of the first listener.
    pub fn addr(&self) -> SocketAddr {
        self.listeners[0].addr
    }

    /// Reloads every listener's scenario; problems are logged and the old
    /// scenario stays.
    pub fn reload_all(&self) {
        for b in &self.listeners {
            watch::reload(&b.slot, &watch_at(b, &self.capture));
        }
    }

    /// The run-time scenario registry, for holders that outlive a borrow
    /// of the server (the HTTP API).
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.clone()
    }

    /// Every scenario served now: the listeners given at start (under
    /// their scenario names) and those added with [`Server::put_scenario`].
    pub fn scenarios(&self) -> Vec<ScenarioInfo> {
        self.runtime.list()
    }

    /// Adds (fresh loopback port, fresh counters) or replaces (same port,
    /// fresh counters) the scenario `name`; see [`runtime`].
    pub fn put_scenario(&self, name: &str, toml: &str) -> Result<ScenarioInfo, RuntimeError> {
        self.runtime.put(name, toml)
    }

    /// Closes the port of scenario `name`; see [`runtime`].
    pub async fn delete_scenario(&self, name: &str) -> Result<ScenarioInfo, RuntimeError> {
        self.runtime.delete(name).await
    }

    /// Puts one rule (JSON with the TOML field names) first in scenario
    /// `name`, keeping its counters; see [`runtime`].
    pub fn prepend_rule(
        &self,
        name: &str,
        rule: &serde_json::Value,
    ) -> Result<ScenarioInfo, RuntimeError> {
        self.runtime.prepend_json(name, rule)
    }

    /// Fresh counters and windows everywhere; captured messages and events
    /// in memory forgotten.
    pub fn reset(&self) -> Result<(), RuntimeError> {
        self.runtime.reset_all()
    }

    /// Stops at once without waiting: no more accepting, and open sessions
    /// answer 421 4.3.2 and close (what dropping a test server does).
    pub fn stop_now(&self) {
        self.shutdown.cancel();
        self.hard_stop.cancel();
        self.tracker.close();
    }

    /// Stops accepting, lets sessions finish for the grace period, then
    /// closes the rest with 421 4.3.2. Returns the stopped server, whose
    /// capture and scenarios can still be read.
    pub async fn shutdown(self) -> Self {
        self.shutdown.cancel();
        self.tracker.close();
        if tokio::time::timeout(self.grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::info!("grace period over, closing open sessions");
            self.hard_stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), self.tracker.wait()).await;
        }
        self.capture.flush();
        self
    }
}

/// How often expired counters are removed.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// Keeps a listener's counters bounded: removes entries that can no longer
/// change an answer.
async fn sweep_loop(slot: Arc<Slot>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let removed = slot.current().engine.sweep(tokio::time::Instant::now().into_std());
                if removed > 0 {
                    tracing::debug!(removed, "expired counters removed");
                }
            }
            _ = shutdown.cancelled() => return,
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    slot: Arc<Slot>,
    conn: Arc<connection::Conn>,
    permits: Arc<Semaphore>,
    ids: Arc<AtomicU64>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let mut nodelay_inherited = None;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.cancelled() => return,
        };
        let (mut stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: pause, do not spin.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        limits::nodelay(&stream, &mut nodelay_inherited);
        let id = ids.fetch_add(1, Ordering::Relaxed);
        let active = slot.current();
        let conn = conn.clone();
        let implicit = slot.implicit_tls();
        match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                // Boxed: the session's future is about 1.4 KB, and the task
                // would otherwise copy it whole three times as it is spawned
                // (clippy's `large_futures`).
                tracker.spawn(Box::pin(connection::serve(
                    conn, stream, peer, active, id, implicit, permit,
                )));
            }
            Err(_) => {
                // Show the refusal instead of hiding it in the backlog.
                tracker.spawn(async move {
                    let reply = defaults::too_many_connections(&active.session.hostname);
                    tracing::info!(
                        session = id,
                        client = %peer,
                        stage = %"connect",
                        code = reply.code,
                        reply = reply.to_string().as_str(),
                        reason = "--max-connections reached",
                        "refused"
                    );
                    let name = active.scenario_name().to_string();
                    conn.capture.record(
                        &conn.listener,
                        &name,
                        id,
                        EventKind::Connect {
                            client: peer.to_string(),
                        },
                    );
                    let _ = stream.write_all(&reply.to_wire()).await;
                    let _ = stream.shutdown().await;
                    conn.capture.record(
                        &conn.listener,
                        &name,
                        id,
                        EventKind::Close {
                            by: "server".into(),
                            reason: "too many connections".into(),
                        },
                    );
                });
            }
        }
    }
}

/// Parses `ADDR` or `ADDR=FILE` as given to `--listen`.
pub fn parse_listen(s: &str, default: &Source) -> anyhow::Result<ListenerSpec> {
    let (addr, source) = match s.split_once('=') {
        Some((a, f)) => (a, Source::File(PathBuf::from(f))),
        None => (s, default.clone()),
    };
    let addr = addr.parse().with_context(|| {
        format!("bad listen address {addr:?}: write IP:PORT, e.g. 127.0.0.1:2525 or [::1]:2525")
    })?;
    Ok(ListenerSpec {
        addr,
        source,
        tls: TlsOptions::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The client's address in a Connect event reads as `Display` writes it.
    #[test]
    fn a_client_address_is_written_as_display_writes_it() {
        for a in [
            "127.0.0.1:25",
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "10.0.20.3:40123",
            "[::1]:2525",
        ] {
            let a: std::net::SocketAddr = a.parse().unwrap();
            assert_eq!(connection::addr_text(&a), a.to_string());
        }
    }

    /// An idle session costs its task: the future of `connection::serve` plus
    /// tokio's task header. Keeping it small keeps 10,000 idle sessions
    /// under 4 KiB each (docs/performance.md, "Idle sessions").
    #[tokio::test]
    async fn a_session_future_stays_small() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap());
        let (_client, accepted) = tokio::join!(client, listener.accept());
        let (stream, peer) = accepted.unwrap();
        let slot = connection::tests::default_slot();
        let conn = Arc::new(connection::tests::conn());
        let permit = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap();
        let task = connection::serve(conn, stream, peer, slot.current(), 1, false, permit);
        let size = std::mem::size_of_val(&task);
        println!("session future: {size} bytes");
        // 2,712 bytes (debug build) before the handshake, the store and
        // the rare waits were boxed and the task lost its wrapper.
        // 1,520 before one timer served the whole session and the batch
        // being performed was boxed (1,408 after; 1,424 once a batch that
        // needs no waiting was performed unboxed).
        assert!(size <= 1500, "the session future grew to {size} bytes");
    }
}
