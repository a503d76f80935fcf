//! Scenarios managed while the server runs: list them, put a new one on a
//! fresh loopback port, replace one, prepend a rule, reset counters, close
//! one. The HTTP API and `mailfault::testing` both call these.
//!
//! Every scenario has a name (`[A-Za-z0-9._-]{1,64}`), a listener and its
//! own counters. The listeners given at start are registered under their
//! scenario names (the file stem, or `default`); a second listener serving
//! the same name gets `-PORT` appended.
//!
//! What each change does to counters and sessions:
//! - put, new name: binds `127.0.0.1:0`; fresh counters.
//! - put, existing name: the new scenario replaces the old one atomically
//!   on the same port; new sessions see it, open sessions finish with the
//!   scenario they started with; counters start fresh.
//! - prepend a rule: counters, seed and `during` windows are kept (a
//!   greylist already under way goes on); the new rule counts from zero.
//! - reset: fresh counters and windows (and, for the whole server, the
//!   captured messages and events in memory).
//! - delete: the port stops accepting at once (connections are refused);
//!   open sessions finish with their scenario, and still end with 421 at
//!   the end of a shutdown's grace period.
//!
//! A file listener whose scenario was replaced by a put goes back to its
//! file when the file changes (hot reload) or on SIGHUP: the file stays the
//! source of truth for the listeners given at start.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::connection::Conn;
use super::slot::{CaStore, Slot, Source, TlsOptions};
use crate::capture::{scenario_hash, Capture, EventKind};
use crate::scenario::{self, Diagnostic, LoadError, Scenario};

/// The longest scenario name.
pub const MAX_NAME: usize = 64;
/// Scenarios at most: each holds a port and its counters, so a client
/// looping on new names must hit a limit, not exhaust file descriptors.
pub const MAX_SCENARIOS: usize = 256;
/// Rules a scenario may reach by prepending: a loop of prepends must not
/// grow memory (and every rule is tried at every stage) without end.
pub const MAX_RULES: usize = 10_000;
/// Where run-time scenarios listen: loopback, a free port.
pub const RUNTIME_ADDR: &str = "127.0.0.1:0";

/// What `scenarios()` shows of one scenario.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScenarioInfo {
    pub name: String,
    /// The listener's address.
    pub addr: SocketAddr,
    pub port: u16,
    /// The scenario file, for a listener given at start with one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// Rules in force (prepended ones included).
    pub rules: usize,
    /// The hash of the text served (see `capture::scenario_hash`); with
    /// prepended rules, of their texts and the scenario's together. None
    /// for a scenario given already parsed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// `smtp`, or `smtps` for implicit TLS.
    pub scheme: &'static str,
    /// STARTTLS or implicit TLS is on.
    pub tls: bool,
}

/// Why a run-time change was refused.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The name has characters outside `[A-Za-z0-9._-]` or is too long.
    #[error("bad scenario name {0:?}: use 1 to 64 characters of A-Z a-z 0-9 . _ -")]
    BadName(String),
    #[error("no scenario named {0:?}")]
    NotFound(String),
    /// [`MAX_SCENARIOS`] or [`MAX_RULES`] reached.
    #[error("{0}")]
    Full(String),
    /// The scenario or rule is invalid: every problem with its position.
    #[error("{0}")]
    Invalid(LoadError),
    /// Binding the port or setting up TLS failed.
    #[error("{0:#}")]
    Failed(anyhow::Error),
}

impl RuntimeError {
    /// The HTTP status the API answers with.
    pub fn status(&self) -> u16 {
        match self {
            RuntimeError::BadName(_) => 400,
            RuntimeError::NotFound(_) => 404,
            RuntimeError::Full(_) => 409,
            RuntimeError::Invalid(_) => 422,
            RuntimeError::Failed(_) => 500,
        }
    }

    /// Every `NAME:LINE:COL: message` of an invalid scenario or rule.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            RuntimeError::Invalid(e) => &e.diagnostics,
            _ => &[],
        }
    }
}

/// True for a name a scenario may have: letters, digits, `.`, `_` and `-`,
/// not starting with a dot (no `.` or `..`, no hidden names), as for
/// message ids.
pub fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// What every listener shares: the capture, the connection cap, session
/// ids, shutdown.
pub(super) struct Shared {
    pub capture: Arc<Capture>,
    pub hostname: Option<String>,
    pub ca: Arc<CaStore>,
    pub permits: Arc<Semaphore>,
    pub ids: Arc<AtomicU64>,
    pub shutdown: CancellationToken,
    pub hard_stop: CancellationToken,
    pub tracker: TaskTracker,
    /// Message memory budget, per-IP sessions, session lifetime.
    pub limits: Arc<super::limits::Shared>,
    /// Where new scenarios keep their counters (`--state`).
    pub state: crate::state::Backend,
    /// The listen backlog of a listener added at run time (`--backlog`).
    pub backlog: u32,
    /// The runtime that serves SMTP. The API runs on a thread of its own
    /// (`api::spawn`), and a listener it adds must still be served here.
    pub smtp: tokio::runtime::Handle,
}

/// One registered scenario and its listener.
struct Entry {
    addr: SocketAddr,
    slot: Arc<Slot>,
    file: Option<PathBuf>,
    hash: Option<String>,
    /// The text last put under this name (None: the file, or the built-in
    /// default, is the text).
    text: Option<Arc<str>>,
    /// The rules put before the text's at run time, newest first, each as
    /// the TOML it was checked as. A PUT starts over without them.
    prepended: Vec<Arc<str>>,
    /// Stops this listener's accept and sweep loops.
    stop: CancellationToken,
    accept: JoinHandle<()>,
}

impl Entry {
    fn info(&self, name: &str) -> ScenarioInfo {
        let active = self.slot.current();
        ScenarioInfo {
            name: name.to_string(),
            addr: self.addr,
            port: self.addr.port(),
            file: self.file.clone(),
            rules: active.engine.scenario.rules.len(),
            hash: self.hash.clone(),
            scheme: if self.slot.implicit_tls() {
                "smtps"
            } else {
                "smtp"
            },
            tls: active.tls.is_some(),
        }
    }
}

/// The scenarios of a running server, by name.
pub struct Runtime {
    shared: Shared,
    // One lock for every change: two changes to one scenario never
    // interleave (two prepends both land). Never held across an await.
    entries: Mutex<BTreeMap<String, Entry>>,
}

impl Runtime {
    pub(super) fn new(shared: Shared) -> Self {
        Self {
            shared,
            entries: Mutex::new(BTreeMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts serving `slot` on `listener`: its accept loop and its
    /// counter sweep, both stopped by the returned token.
    fn serve(
        &self,
        listener: TcpListener,
        slot: Arc<Slot>,
        proxy: bool,
    ) -> (CancellationToken, JoinHandle<()>) {
        let s = &self.shared;
        let stop = s.shutdown.child_token();
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let conn = Arc::new(Conn {
            listener: addr,
            capture: s.capture.clone(),
            hard_stop: s.hard_stop.clone(),
            limits: s.limits.clone(),
            proxy,
        });
        // A listener is driven by the reactor of the runtime it is
        // registered with: taken out of the caller's (the API's, for a
        // scenario added through it) and registered again on the SMTP one.
        let listener = listener.into_std();
        let (permits, ids, tracker) = (s.permits.clone(), s.ids.clone(), s.tracker.clone());
        let (accepting, stopping) = (slot.clone(), stop.clone());
        let accept = s.tracker.spawn_on(
            async move {
                match listener.and_then(TcpListener::from_std) {
                    Ok(l) => {
                        let accept =
                            super::accept_loop(l, accepting, conn, permits, ids, stopping, tracker);
                        accept.await;
                    }
                    Err(e) => tracing::warn!("cannot serve a listener: {e}"),
                }
            },
            &s.smtp,
        );
        s.tracker
            .spawn_on(super::sweep_loop(slot, stop.clone()), &s.smtp);
        (stop, accept)
    }

    /// Registers a listener given at start, under its scenario's name.
    pub(super) fn add_start(
        &self,
        listener: TcpListener,
        slot: Arc<Slot>,
        proxy: bool,
    ) -> anyhow::Result<()> {
        let addr = listener.local_addr()?;
        let file = match &slot.source {
            Source::File(p) => Some(p.clone()),
            _ => None,
        };
        let listen = EventKind::listen(file.as_deref());
        let hash = match (&listen, &slot.source) {
            (EventKind::Listen { hash, .. }, Source::File(_)) => hash.clone(),
            (_, Source::Default) => Some(scenario_hash(scenario::load::DEFAULT_TOML.as_bytes())),
            _ => None,
        };
        let scenario_name = slot.current().scenario_name().to_string();
        let slot_source_default = matches!(slot.source, Source::Default);
        self.shared
            .capture
            .record(&addr.to_string(), &scenario_name, 0, listen);
        let (stop, accept) = self.serve(listener, slot.clone(), proxy);
        let mut entries = self.lock();
        let name = unique_name(&entries, &scenario_name, addr.port());
        let entry = Entry {
            addr,
            slot,
            file,
            hash,
            text: slot_source_default.then(|| Arc::from(scenario::load::DEFAULT_TOML)),
            prepended: vec![],
            stop,
            accept,
        };
        entries.insert(name, entry);
        Ok(())
    }

    /// Every scenario, by name.
    pub fn list(&self) -> Vec<ScenarioInfo> {
        self.lock().iter().map(|(n, e)| e.info(n)).collect()
    }

    /// Each scenario's state store: (name, reachable, outages since start).
    /// The memory store is always reachable; a Redis store is not during an
    /// outage (issue: "shows it in `/metrics`").
    pub fn store_health(&self) -> Vec<(String, bool, u64)> {
        self.lock()
            .iter()
            .map(|(n, e)| {
                let engine = e.slot.current().engine.clone();
                let store = engine.store();
                (n.clone(), !store.is_down(), store.outages())
            })
            .collect()
    }

    /// One scenario.
    pub fn get(&self, name: &str) -> Result<ScenarioInfo, RuntimeError> {
        let entries = self.lock();
        let entry = entries
            .get(name)
            .ok_or_else(|| RuntimeError::NotFound(name.into()))?;
        Ok(entry.info(name))
    }

    /// The scenario a name serves now.
    pub fn scenario(&self, name: &str) -> Result<Arc<Scenario>, RuntimeError> {
        let entries = self.lock();
        let entry = entries
            .get(name)
            .ok_or_else(|| RuntimeError::NotFound(name.into()))?;
        Ok(entry.slot.current().engine.scenario.clone())
    }

    /// The text a scenario was loaded from: the body of its last put, or
    /// its file as it is now (the file is the source of truth, hot reload
    /// follows it), or the built-in default. None for a scenario given
    /// already parsed. Prepended rules are not in it (`rules` counts them).
    pub fn text(&self, name: &str) -> Result<Option<Arc<str>>, RuntimeError> {
        let (text, file) = {
            let entries = self.lock();
            let entry = entries
                .get(name)
                .ok_or_else(|| RuntimeError::NotFound(name.into()))?;
            (entry.text.clone(), entry.file.clone())
        };
        if text.is_some() {
            return Ok(text);
        }
        // Read outside the lock: a slow disk must not stall other changes.
        Ok(file.and_then(|f| std::fs::read_to_string(f).ok().map(Arc::from)))
    }

    /// The rules prepended to `name` at run time, newest (first in force)
    /// first, each as TOML.
    pub fn prepended(&self, name: &str) -> Result<Vec<Arc<str>>, RuntimeError> {
        let entries = self.lock();
        let entry = entries
            .get(name)
            .ok_or_else(|| RuntimeError::NotFound(name.into()))?;
        Ok(entry.prepended.clone())
    }

    /// Puts the scenario `text` under `name`: a new name gets a fresh
    /// loopback port, an existing one is replaced on its port. Diagnostics
    /// read `NAME:LINE:COL: ...`.
    pub fn put(&self, name: &str, text: &str) -> Result<ScenarioInfo, RuntimeError> {
        if !valid_name(name) {
            return Err(RuntimeError::BadName(name.into()));
        }
        let scenario = Arc::new(scenario::parse(text, name, name).map_err(RuntimeError::Invalid)?);
        let hash = Some(scenario_hash(text.as_bytes()));
        let mut entries = self.lock();
        if let Some(entry) = entries.get_mut(name) {
            entry
                .slot
                .install(scenario, false)
                .map_err(RuntimeError::Failed)?;
            entry.hash = hash;
            entry.file = None;
            entry.text = Some(Arc::from(text));
            entry.prepended.clear();
            tracing::info!(scenario = name, addr = %entry.addr, "scenario replaced");
            return Ok(entry.info(name));
        }
        if entries.len() >= MAX_SCENARIOS {
            return Err(RuntimeError::Full(format!(
                "{MAX_SCENARIOS} scenarios already run; delete one first"
            )));
        }
        let slot = Arc::new(
            Slot::new(
                Source::Given(scenario),
                self.shared.hostname.clone(),
                TlsOptions::default(),
                self.shared.ca.clone(),
                self.shared.state.clone(),
            )
            .map_err(RuntimeError::Failed)?,
        );
        let listener = bind_loopback(self.shared.backlog).map_err(RuntimeError::Failed)?;
        let addr = listener
            .local_addr()
            .map_err(|e| RuntimeError::Failed(e.into()))?;
        self.shared.capture.record(
            &addr.to_string(),
            name,
            0,
            EventKind::Listen {
                file: None,
                hash: hash.clone(),
            },
        );
        let (stop, accept) = self.serve(listener, slot.clone(), false);
        let entry = Entry {
            addr,
            slot,
            file: None,
            hash,
            text: Some(Arc::from(text)),
            prepended: vec![],
            stop,
            accept,
        };
        tracing::info!(scenario = name, addr = %addr, "listening (scenario added)");
        let info = entry.info(name);
        entries.insert(name.to_string(), entry);
        Ok(info)
    }

    /// Closes a scenario's port: when this returns, connections to it are
    /// refused. Open sessions finish with their scenario.
    pub async fn delete(&self, name: &str) -> Result<ScenarioInfo, RuntimeError> {
        let entry = self
            .lock()
            .remove(name)
            .ok_or_else(|| RuntimeError::NotFound(name.into()))?;
        let info = entry.info(name);
        entry.stop.cancel();
        // The accept loop drops the socket as it returns; it only waits
        // for the cancellation, so this is quick.
        let _ = tokio::time::timeout(Duration::from_secs(5), entry.accept).await;
        tracing::info!(scenario = name, addr = %info.addr, "scenario deleted, port closed");
        Ok(info)
    }

    /// Prepends one rule, given as JSON with the TOML field names of
    /// `[[rule]]`. Diagnostics point into the rule written as TOML
    /// (`[[rule]]` on line 1, then one field a line in the order given).
    pub fn prepend_json(
        &self,
        name: &str,
        rule: &serde_json::Value,
    ) -> Result<ScenarioInfo, RuntimeError> {
        let text = rule_json_to_toml(name, rule)?;
        self.prepend_text(name, &text, 0)
    }

    /// Prepends one rule written in TOML: the fields of one `[[rule]]`,
    /// with or without the `[[rule]]` line. Diagnostics point into `text`.
    pub fn prepend_toml(&self, name: &str, text: &str) -> Result<ScenarioInfo, RuntimeError> {
        if has_rule_header(text) {
            self.prepend_text(name, text, 0)
        } else {
            self.prepend_text(name, &format!("[[rule]]\n{text}"), 1)
        }
    }

    /// Checks `text` (one `[[rule]]`) and puts its rule first. `shift`:
    /// lines added before the caller's text, taken off diagnostics.
    fn prepend_text(
        &self,
        name: &str,
        text: &str,
        shift: usize,
    ) -> Result<ScenarioInfo, RuntimeError> {
        if !valid_name(name) {
            return Err(RuntimeError::BadName(name.into()));
        }
        // An unknown scenario is a 404 whatever the rule says.
        if !self.lock().contains_key(name) {
            return Err(RuntimeError::NotFound(name.into()));
        }
        let rule_file = format!("{name} rule");
        let mut parsed = scenario::parse(text, &rule_file, name)
            .map_err(|e| RuntimeError::Invalid(shift_lines(e, shift)))?;
        check_only_one_rule(text, &parsed, &rule_file)?;
        let mut rule = parsed.rules.remove(0);
        let mut entries = self.lock();
        let entry = entries
            .get_mut(name)
            .ok_or_else(|| RuntimeError::NotFound(name.into()))?;
        let current = entry.slot.current().engine.scenario.clone();
        if current.rules.len() >= MAX_RULES {
            return Err(RuntimeError::Full(format!(
                "{name} has {MAX_RULES} rules already; put the scenario again to start over"
            )));
        }
        let mut next = (*current).clone();
        // A fresh index: the rules already there keep theirs, and with them
        // their counters and their `rule #N` labels.
        rule.index = next.rules.iter().map(|r| r.index + 1).max().unwrap_or(0);
        next.rules.insert(0, rule);
        entry
            .slot
            .install(Arc::new(next), true)
            .map_err(RuntimeError::Failed)?;
        let mut hashed = text.as_bytes().to_vec();
        hashed.extend_from_slice(entry.hash.as_deref().unwrap_or("").as_bytes());
        entry.hash = Some(scenario_hash(&hashed));
        entry.prepended.insert(0, Arc::from(text));
        tracing::info!(scenario = name, "rule prepended");
        Ok(entry.info(name))
    }

    /// Fresh counters and `during` windows for one scenario.
    pub fn reset(&self, name: &str) -> Result<ScenarioInfo, RuntimeError> {
        let entries = self.lock();
        let entry = entries
            .get(name)
            .ok_or_else(|| RuntimeError::NotFound(name.into()))?;
        refresh(&entry.slot)?;
        Ok(entry.info(name))
    }

    /// Fresh counters and windows for every scenario, and no captured
    /// messages or events in memory.
    pub fn reset_all(&self) -> Result<(), RuntimeError> {
        for entry in self.lock().values() {
            refresh(&entry.slot)?;
        }
        self.shared.capture.clear();
        tracing::info!("reset: counters, windows and captured messages");
        Ok(())
    }
}

/// Serves the current scenario again with a new engine.
fn refresh(slot: &Slot) -> Result<(), RuntimeError> {
    let scenario = slot.current().engine.scenario.clone();
    slot.install(scenario, false)
        .map(|_| ())
        .map_err(RuntimeError::Failed)
}

/// A name for a start listener: the scenario name made valid, with
/// `-PORT` (then `-PORT-N`) when already taken.
fn unique_name(entries: &BTreeMap<String, Entry>, scenario: &str, port: u16) -> String {
    let mut base: String = scenario
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(MAX_NAME - 12)
        .collect();
    if base.is_empty() {
        base = "scenario".into();
    }
    let mut name = base.clone();
    let mut n = 1;
    while entries.contains_key(&name) {
        name = if n == 1 {
            format!("{base}-{port}")
        } else {
            format!("{base}-{port}-{n}")
        };
        n += 1;
    }
    name
}

/// A listener on a free loopback port, made synchronously so that a put
/// returns with the port already accepting; bound as the listeners given
/// at start are (`--backlog`, TCP_NODELAY).
fn bind_loopback(backlog: u32) -> anyhow::Result<TcpListener> {
    Ok(super::limits::bind(RUNTIME_ADDR.parse()?, backlog)?)
}

/// True when the text has its own `[[rule]]` line.
fn has_rule_header(text: &str) -> bool {
    text.lines().any(|l| {
        l.trim_start()
            .strip_prefix("[[")
            .is_some_and(|r| r.trim_start().starts_with("rule"))
    })
}

/// A rule posted as JSON, written as TOML for the scenario checker.
fn rule_json_to_toml(name: &str, rule: &serde_json::Value) -> Result<String, RuntimeError> {
    let invalid = |message: String| {
        RuntimeError::Invalid(LoadError {
            diagnostics: vec![Diagnostic {
                file: format!("{name} rule"),
                position: None,
                message,
            }],
        })
    };
    if !rule.is_object() {
        return Err(invalid(
            "a rule is a JSON object with the fields of a [[rule]] (on, when, reply, times...)"
                .into(),
        ));
    }
    let value = toml::Value::try_from(rule)
        .map_err(|e| invalid(format!("cannot be written as TOML: {e}")))?;
    let mut doc = toml::Table::new();
    doc.insert("rule".into(), toml::Value::Array(vec![value]));
    toml::to_string(&doc).map_err(|e| invalid(format!("cannot be written as TOML: {e}")))
}

/// A prepended rule is one `[[rule]]` and nothing else.
fn check_only_one_rule(text: &str, parsed: &Scenario, file: &str) -> Result<(), RuntimeError> {
    let others: Vec<String> = text
        .parse::<toml::Table>()
        .map(|t| t.keys().filter(|k| *k != "rule").cloned().collect())
        .unwrap_or_default();
    let problem = if !others.is_empty() {
        Some(format!(
            "only one [[rule]] can be prepended, not [{}]",
            others.join("], [")
        ))
    } else if parsed.rules.len() != 1 {
        Some(format!(
            "give exactly one [[rule]] to prepend, not {}",
            parsed.rules.len()
        ))
    } else {
        None
    };
    match problem {
        Some(message) => Err(RuntimeError::Invalid(LoadError {
            diagnostics: vec![Diagnostic {
                file: file.into(),
                position: None,
                message,
            }],
        })),
        None => Ok(()),
    }
}

/// Takes `shift` lines off every position (lines the caller did not write).
fn shift_lines(mut e: LoadError, shift: usize) -> LoadError {
    for d in &mut e.diagnostics {
        if let Some((line, col)) = d.position {
            d.position = Some((line.saturating_sub(shift).max(1), col));
        }
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("tempfail-2.a_b"));
        assert!(valid_name(&"a".repeat(64)));
        assert!(!valid_name(&"a".repeat(65)));
        assert!(!valid_name(""));
        assert!(!valid_name("../etc"));
        assert!(!valid_name(".."));
        assert!(!valid_name(".hidden"));
        assert!(!valid_name("a b"));
        assert!(!valid_name("é"));
    }

    #[test]
    fn rule_header_is_found() {
        assert!(has_rule_header("[[rule]]\non = \"rcpt\""));
        assert!(has_rule_header("# c\n  [[ rule ]]\n"));
        assert!(!has_rule_header("on = \"rcpt\"\nreply = \"450\""));
    }

    #[test]
    fn json_rule_becomes_one_toml_rule() {
        let v = serde_json::json!({"on": "rcpt", "reply": "450 4.2.0 later", "times": 3});
        let text = rule_json_to_toml("t", &v).unwrap();
        assert!(text.starts_with("[[rule]]\n"), "{text}");
        let s = scenario::parse(&text, "t", "t").unwrap();
        assert_eq!(s.rules.len(), 1);
        assert_eq!(s.rules[0].times, Some(3));
        let err = rule_json_to_toml("t", &serde_json::json!([1])).unwrap_err();
        assert_eq!(err.status(), 422);
    }
}
