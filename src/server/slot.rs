//! A listener's scenario, swappable at run time (hot reload). Sessions take
//! a snapshot when they start, so a reload changes new sessions only.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::proto::SessionConfig;
use crate::scenario::model::DEFAULT_HOSTNAME;
use crate::scenario::{self, Engine, LoadError, Scenario};

/// What one listener serves right now.
pub struct Active {
    pub engine: Arc<Engine>,
    pub session: Arc<SessionConfig>,
    pub idle_timeout: Duration,
}

impl Active {
    pub fn scenario_name(&self) -> &str {
        &self.engine.scenario.name
    }
}

/// Where a listener's scenario comes from.
#[derive(Clone)]
pub enum Source {
    /// The built-in default scenario.
    Default,
    File(PathBuf),
    /// Already parsed (tests and the library harness).
    Given(Arc<Scenario>),
}

pub struct Slot {
    pub source: Source,
    hostname: Option<String>,
    active: RwLock<Arc<Active>>,
}

impl Slot {
    pub fn new(source: Source, hostname: Option<String>) -> Result<Self, LoadError> {
        let scenario = Self::read(&source)?;
        let active = RwLock::new(Arc::new(build(scenario, hostname.as_deref())));
        Ok(Self {
            source,
            hostname,
            active,
        })
    }

    fn read(source: &Source) -> Result<Arc<Scenario>, LoadError> {
        Ok(match source {
            Source::Default => Arc::new(scenario::default_scenario()),
            Source::File(p) => Arc::new(scenario::load_file(p)?),
            Source::Given(s) => s.clone(),
        })
    }

    pub fn current(&self) -> Arc<Active> {
        self.active
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Reads the scenario again. A bad file leaves the running one in place
    /// and returns why. A good one starts with fresh counters.
    pub fn reload(&self) -> Result<Arc<Active>, LoadError> {
        let scenario = Self::read(&self.source)?;
        let active = Arc::new(build(scenario, self.hostname.as_deref()));
        *self.active.write().unwrap_or_else(|p| p.into_inner()) = active.clone();
        Ok(active)
    }
}

fn build(scenario: Arc<Scenario>, hostname: Option<&str>) -> Active {
    let s = &scenario.server;
    let session = SessionConfig {
        hostname: hostname
            .map(String::from)
            .or_else(|| s.hostname.clone())
            .unwrap_or_else(|| DEFAULT_HOSTNAME.into()),
        greeting: s.greeting.clone(),
        max_message_size: s.max_message_size,
        max_recipients: s.max_recipients,
        require_tls: s.require_tls,
        extensions: s.extensions.clone(),
    };
    let idle_timeout = s.idle_timeout;
    let epoch = tokio::time::Instant::now().into_std();
    Active {
        engine: Arc::new(Engine::new(scenario, epoch)),
        session: Arc::new(session),
        idle_timeout,
    }
}
