//! Hot reload: watches scenario files (notify) and reloads the listeners
//! that use them. A change is loaded only once the file has been quiet for
//! [`QUIET`] and its size and modification time have not moved since the
//! last event: a shell `>` redirect or a slow generator truncates the file
//! first and writes it later, and that half-written file must never serve.
//! A bad new version is refused and the old one keeps serving.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use notify::{RecursiveMode, Watcher as _};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::{sleep_until, Instant};

use super::slot::{Slot, Source};
use crate::capture::{Capture, EventKind};

/// How long a scenario file must see no change before it is loaded.
pub const QUIET: Duration = Duration::from_millis(300);

/// Keeps the file watcher alive.
pub struct Watcher {
    _inner: notify::RecommendedWatcher,
}

/// Where a reload is told: the listener's address and the capture, which
/// gets a new Listen event so `report` knows the text now served.
#[derive(Clone)]
pub struct Listener {
    pub addr: SocketAddr,
    pub capture: Arc<Capture>,
}

/// Reloads one slot and logs the outcome. A new version is recorded as a
/// Listen event with the hash of the text loaded: without it, `report`
/// would take an edit made while serving for a change since the run.
pub fn reload(slot: &Slot, at: &Listener) {
    match slot.reload() {
        Ok(active) => {
            let scenario = active.scenario_name();
            let rules = active.engine.scenario.rules.len();
            if let Source::File(path) = &slot.source {
                let listen = EventKind::listen(Some(path));
                at.capture.record(&at.addr.to_string(), scenario, 0, listen);
            }
            match super::unseeded_random(&active) {
                Some(seed) => tracing::info!(
                    scenario,
                    rules,
                    seed,
                    "scenario reloaded; to replay its random choices, set [server] seed = {seed}"
                ),
                None => tracing::info!(scenario, rules, "scenario reloaded"),
            }
        }
        Err(e) => {
            match e.downcast_ref::<crate::scenario::LoadError>() {
                Some(le) => {
                    for d in &le.diagnostics {
                        tracing::error!("{d}");
                    }
                }
                None => tracing::error!("{e:#}"),
            }
            tracing::error!("reload refused: the previous scenario keeps running");
        }
    }
}

impl Watcher {
    pub fn start(slots: Vec<(Arc<Slot>, Listener)>, quiet: Duration) -> Option<Self> {
        let files: Vec<(PathBuf, Arc<Slot>, Listener)> = slots
            .into_iter()
            .filter_map(|(s, at)| match &s.source {
                Source::File(p) => Some((
                    std::path::absolute(p).unwrap_or_else(|_| p.clone()),
                    s.clone(),
                    at,
                )),
                _ => None,
            })
            .collect();
        if files.is_empty() {
            return None;
        }
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<PathBuf>();
        let mut inner = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if let Ok(ev) = res {
                if ev.kind.is_modify() || ev.kind.is_create() {
                    for p in ev.paths {
                        let _ = tx.send(p);
                    }
                }
            }
        })
        .map_err(|e| tracing::warn!("cannot watch scenario files: {e}"))
        .ok()?;
        // Watch the folders: editors often replace a file instead of
        // writing it in place.
        let dirs: HashSet<PathBuf> = files
            .iter()
            .filter_map(|(p, _, _)| p.parent().map(PathBuf::from))
            .collect();
        for d in dirs {
            if let Err(e) = inner.watch(&d, RecursiveMode::NonRecursive) {
                tracing::warn!("cannot watch {}: {e}", d.display());
            }
        }
        tokio::spawn(settle_and_reload(files, rx, quiet));
        Some(Self { _inner: inner })
    }
}

/// What a file looked like at one moment: a write that raised no event
/// (or whose event is still on its way) still changes one of these.
#[derive(PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        len: m.len(),
        modified: m.modified().ok(),
    })
}

/// A file changed and waits to be quiet.
struct Pending {
    due: Instant,
    seen: Option<Stamp>,
}

/// True when an event on `changed` concerns the watched `path` (events
/// may name it by another spelling of the same folder).
fn concerns(changed: &Path, path: &Path) -> bool {
    changed == path || changed.file_name() == path.file_name() && changed.parent() == path.parent()
}

/// Reloads each file once it has been quiet for `quiet` ([`QUIET`] unless
/// a test asks for another): every event
/// pushes its deadline back, and at the deadline a file whose size or
/// modification time moved since the last event waits once more.
async fn settle_and_reload(
    files: Vec<(PathBuf, Arc<Slot>, Listener)>,
    mut rx: UnboundedReceiver<PathBuf>,
    quiet: Duration,
) {
    let mut pending: HashMap<usize, Pending> = HashMap::new();
    loop {
        let next = pending.values().map(|p| p.due).min();
        tokio::select! {
            changed = rx.recv() => {
                let Some(changed) = changed else { return };
                for (i, (path, _, _)) in files.iter().enumerate() {
                    if concerns(&changed, path) {
                        let due = Instant::now() + quiet;
                        pending.insert(i, Pending { due, seen: stamp(path) });
                    }
                }
            }
            _ = sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {
                let now = Instant::now();
                let due: Vec<usize> = pending
                    .iter()
                    .filter(|(_, p)| p.due <= now)
                    .map(|(i, _)| *i)
                    .collect();
                for i in due {
                    let Some(p) = pending.remove(&i) else { continue };
                    let (path, slot, at) = &files[i];
                    let now_seen = stamp(path);
                    if now_seen != p.seen {
                        pending.insert(i, Pending { due: now + quiet, seen: now_seen });
                    } else {
                        reload(slot, at);
                    }
                }
            }
        }
    }
}
