//! Hot reload: watches scenario files (notify) and reloads the listeners
//! that use them. A bad new version is refused and the old one keeps
//! serving.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher as _};

use super::slot::{Slot, Source};

/// Keeps the file watcher alive.
pub struct Watcher {
    _inner: notify::RecommendedWatcher,
}

/// Reloads one slot and logs the outcome.
pub fn reload(slot: &Slot) {
    match slot.reload() {
        Ok(active) => tracing::info!(
            scenario = active.scenario_name(),
            rules = active.engine.scenario.rules.len(),
            "scenario reloaded"
        ),
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
    pub fn start(slots: Vec<Arc<Slot>>) -> Option<Self> {
        let files: Vec<(PathBuf, Arc<Slot>)> = slots
            .into_iter()
            .filter_map(|s| match &s.source {
                Source::File(p) => Some((
                    std::path::absolute(p).unwrap_or_else(|_| p.clone()),
                    s.clone(),
                )),
                _ => None,
            })
            .collect();
        if files.is_empty() {
            return None;
        }
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<PathBuf>();
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
            .filter_map(|(p, _)| p.parent().map(PathBuf::from))
            .collect();
        for d in dirs {
            if let Err(e) = inner.watch(&d, RecursiveMode::NonRecursive) {
                tracing::warn!("cannot watch {}: {e}", d.display());
            }
        }
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                // Let a burst of events from one save settle.
                tokio::time::sleep(Duration::from_millis(100)).await;
                let mut changed = HashSet::from([first]);
                while let Ok(p) = rx.try_recv() {
                    changed.insert(p);
                }
                for (path, slot) in &files {
                    if changed.iter().any(|c| {
                        c == path
                            || c.file_name() == path.file_name() && c.parent() == path.parent()
                    }) {
                        reload(slot);
                    }
                }
            }
        });
        Some(Self { _inner: inner })
    }
}
