//! The network server: listeners (one scenario and one set of counters
//! each), the connection cap, hot reload, and graceful shutdown.
//!
//! Shutdown has two steps: `shutdown` stops accepting at once; after the
//! grace period `hard_stop` tells every session still open to answer
//! 421 4.3.2 and close.

mod connection;
pub mod proxy;
pub mod slot;
mod watch;

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
    /// The test CA for TLS listeners.
    pub ca: Arc<CaStore>,
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
            ca: Arc::new(CaStore::new(None)),
            state: crate::state::Backend::Memory,
            proxy: vec![],
        }
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
    pub listeners: Vec<Bound>,
    pub capture: Arc<Capture>,
    /// The test CA (made on first use).
    pub ca: Arc<CaStore>,
    shutdown: CancellationToken,
    hard_stop: CancellationToken,
    tracker: TaskTracker,
    grace: Duration,
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
        let mut listeners = vec![];
        for (i, spec) in opts.listeners.iter().enumerate() {
            let slot = Arc::new(Slot::new(
                spec.source.clone(),
                opts.hostname.clone(),
                spec.tls.clone(),
                opts.ca.clone(),
                opts.state.clone(),
            )?);
            let listener = TcpListener::bind(spec.addr)
                .await
                .with_context(|| format!("cannot listen on {}", spec.addr))?;
            let addr = listener.local_addr()?;
            let conn = Arc::new(connection::Conn {
                listener: addr.to_string(),
                capture: opts.capture.clone(),
                hard_stop: hard_stop.clone(),
                proxy: opts.proxy.contains(&i),
            });
            tracker.spawn(accept_loop(
                listener,
                slot.clone(),
                conn,
                permits.clone(),
                ids.clone(),
                shutdown.clone(),
                tracker.clone(),
            ));
            tracker.spawn(sweep_loop(slot.clone(), shutdown.clone()));
            let file = match &slot.source {
                Source::File(p) => Some(p.as_path()),
                _ => None,
            };
            opts.capture.record(
                &addr.to_string(),
                slot.current().scenario_name(),
                0,
                EventKind::listen(file),
            );
            listeners.push(Bound { addr, slot });
        }
        let watcher = if opts.watch {
            watch::Watcher::start(listeners.iter().map(|b| b.slot.clone()).collect())
        } else {
            None
        };
        Ok(Self {
            listeners,
            capture: opts.capture,
            ca: opts.ca,
            shutdown,
            hard_stop,
            tracker,
            grace: opts.grace,
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
            watch::reload(&b.slot);
        }
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
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.cancelled() => return,
        };
        let (mut stream, mut peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: pause, do not spin.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let id = ids.fetch_add(1, Ordering::Relaxed);
        let active = slot.current();
        let conn = conn.clone();
        let implicit = slot.implicit_tls();
        match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                tracker.spawn(async move {
                    if conn.proxy {
                        match proxy::read_header(&mut stream, peer, proxy::HEADER_TIMEOUT).await {
                            Ok(client) => peer = client,
                            Err(e) => {
                                tracing::info!(session = id, peer = %peer, listener = %conn.listener, "closed: {e}");
                                return;
                            }
                        }
                    }
                    connection::serve(conn, stream, peer, active, id, implicit).await;
                    drop(permit);
                });
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
