//! A listener's scenario, swappable at run time (hot reload). Sessions take
//! a snapshot when they start, so a reload changes new sessions only.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use rustls::ServerConfig;

use crate::certs::{self, TestCa};
use crate::proto::SessionConfig;
use crate::scenario::model::{CertFault, Certificate, TlsSettings, TlsVersion, DEFAULT_HOSTNAME};
use crate::scenario::{self, Engine, Scenario};
use crate::state::Backend;

/// What one listener serves right now.
pub struct Active {
    pub engine: Arc<Engine>,
    pub session: Arc<SessionConfig>,
    pub idle_timeout: Duration,
    /// The TLS configuration, when the scenario has `[tls]` or the listener
    /// is implicit TLS.
    pub tls: Option<Arc<ServerConfig>>,
    /// The certificate the listener presents, for the listening line: a
    /// fault name (`expired`...) or `file`; `None` without TLS.
    pub certificate: Option<&'static str>,
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

/// The test CA, made or read the first time a listener needs it.
pub struct CaStore {
    dir: Option<PathBuf>,
    ca: OnceLock<Arc<TestCa>>,
}

impl CaStore {
    /// `dir`: where the CA is kept (None: a CA in memory only).
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self {
            dir,
            ca: OnceLock::new(),
        }
    }

    /// A store with this CA already in it.
    pub fn with(ca: TestCa) -> Self {
        let s = Self::new(None);
        let _ = s.ca.set(Arc::new(ca));
        s
    }

    pub fn get(&self) -> anyhow::Result<Arc<TestCa>> {
        if let Some(ca) = self.ca.get() {
            return Ok(ca.clone());
        }
        let ca = match &self.dir {
            Some(d) => TestCa::load_or_create(d)?,
            None => TestCa::generate()?,
        };
        Ok(self.ca.get_or_init(|| Arc::new(ca)).clone())
    }

    /// Where `ca.pem` is, once the CA exists and was written.
    pub fn path(&self) -> Option<PathBuf> {
        self.ca.get().and_then(|c| c.path.clone())
    }
}

/// How a listener speaks TLS.
#[derive(Clone, Default)]
pub struct TlsOptions {
    /// TLS from the first byte (SMTPS).
    pub implicit: bool,
    /// Replaces the scenario's `[tls] certificate`.
    pub certificate: Option<CertFault>,
}

pub struct Slot {
    pub source: Source,
    hostname: Option<String>,
    tls: TlsOptions,
    ca: Arc<CaStore>,
    state: Backend,
    active: RwLock<Arc<Active>>,
}

impl Slot {
    /// Loads the scenario. A bad scenario is an error carrying its
    /// [`scenario::LoadError`].
    pub fn new(
        source: Source,
        hostname: Option<String>,
        tls: TlsOptions,
        ca: Arc<CaStore>,
        state: Backend,
    ) -> anyhow::Result<Self> {
        let scenario = Self::read(&source)?;
        let active = build(scenario, hostname.as_deref(), &tls, &ca, &state, None)?;
        Ok(Self {
            source,
            hostname,
            tls,
            ca,
            state,
            active: RwLock::new(Arc::new(active)),
        })
    }

    fn read(source: &Source) -> Result<Arc<Scenario>, scenario::LoadError> {
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

    pub fn implicit_tls(&self) -> bool {
        self.tls.implicit
    }

    /// Reads the scenario again. A bad file leaves the running one in place
    /// and returns why. A good one starts with fresh counters.
    pub fn reload(&self) -> anyhow::Result<Arc<Active>> {
        self.install(Self::read(&self.source)?, false)
    }

    /// Serves `scenario` from now on (run-time scenarios): new sessions see
    /// it, open ones finish with theirs. `keep_counters` keeps the running
    /// engine's counters, seed and windows (a prepended rule); otherwise
    /// they start fresh (a replaced scenario, a reset).
    pub fn install(
        &self,
        scenario: Arc<Scenario>,
        keep_counters: bool,
    ) -> anyhow::Result<Arc<Active>> {
        // Built outside the lock (TLS set-up can take a while): sessions
        // starting meanwhile get the old scenario. Callers serialise
        // installs (the run-time registry's lock).
        let previous = keep_counters.then(|| self.current().engine.clone());
        let active = Arc::new(build(
            scenario,
            self.hostname.as_deref(),
            &self.tls,
            &self.ca,
            &self.state,
            previous.as_deref(),
        )?);
        *self.active.write().unwrap_or_else(|p| p.into_inner()) = active.clone();
        Ok(active)
    }
}

fn build(
    scenario: Arc<Scenario>,
    hostname: Option<&str>,
    opts: &TlsOptions,
    ca: &CaStore,
    state: &Backend,
    previous: Option<&Engine>,
) -> anyhow::Result<Active> {
    let s = &scenario.server;
    let hostname = hostname
        .map(String::from)
        .or_else(|| s.hostname.clone())
        .unwrap_or_else(|| DEFAULT_HOSTNAME.into());
    let tls_settings = match (&scenario.tls, opts.implicit) {
        (Some(t), _) => Some(t.clone()),
        (None, true) => Some(TlsSettings::default()),
        (None, false) => None,
    };
    let tls = match &tls_settings {
        Some(t) => {
            Some(server_config(t, &hostname, opts.certificate, ca).context("cannot set up TLS")?)
        }
        None => None,
    };
    let session = SessionConfig {
        hostname,
        greeting: s.greeting.clone(),
        max_message_size: s.max_message_size,
        max_recipients: s.max_recipients,
        require_tls: s.require_tls,
        extensions: s.extensions.clone(),
        starttls: tls_settings.as_ref().is_some_and(|t| t.starttls) && !opts.implicit,
        auth: scenario.auth.clone().map(Arc::new),
        bare_lf: s.bare_lf,
        max_line_length: s.max_line_length,
        canned: Default::default(),
    };
    let certificate = tls_settings
        .as_ref()
        .map(|t| match (opts.certificate, &t.certificate) {
            (Some(fault), _) | (None, &Certificate::Made(fault)) => fault.name(),
            (None, Certificate::Files { .. }) => "file",
        });
    let idle_timeout = s.idle_timeout;
    let epoch = tokio::time::Instant::now().into_std();
    Ok(Active {
        engine: Arc::new(match previous {
            Some(e) => e.rebuilt(scenario),
            None => Engine::with_backend(scenario, state, epoch),
        }),
        session: Arc::new(session),
        idle_timeout,
        tls,
        certificate,
    })
}

/// A rustls configuration for the scenario's certificate (or the listener's
/// override) and versions.
fn server_config(
    t: &TlsSettings,
    hostname: &str,
    over: Option<CertFault>,
    ca: &CaStore,
) -> anyhow::Result<Arc<ServerConfig>> {
    let (chain, key) = match (over, &t.certificate) {
        (Some(fault), _) | (None, &Certificate::Made(fault)) => {
            let issued = ca.get()?.issue(&certs::server_names(hostname), fault)?;
            (issued.chain()?, issued.key()?)
        }
        (None, Certificate::Files { cert_pem, key_pem }) => {
            (certs::parse_chain(cert_pem)?, certs::parse_key(key_pem)?)
        }
    };
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = t
        .versions
        .iter()
        .map(|v| match v {
            TlsVersion::V1_2 => &rustls::version::TLS12,
            TlsVersion::V1_3 => &rustls::version::TLS13,
        })
        .collect();
    let cfg =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&versions)?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
    Ok(Arc::new(cfg))
}
