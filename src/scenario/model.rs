//! A validated scenario: what the engine runs.

use std::time::Duration;

use ipnet::IpNet;

use super::pattern::Pattern;
use super::units::{DurationRange, SizeCmp, Window};
use crate::proto::{Reply, Stage};

/// One scenario file, checked.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The file stem, or `default`.
    pub name: String,
    pub server: ServerSettings,
    pub rules: Vec<Rule>,
    /// `[[expect]]`: what the sender should have done (checked by the report).
    pub expects: Vec<Expect>,
    /// `[tls]`: absent means no STARTTLS (an implicit-TLS listener still
    /// uses a valid certificate).
    pub tls: Option<TlsSettings>,
    /// `[auth]`.
    pub auth: Option<crate::proto::auth::AuthConfig>,
}

pub use crate::certs::CertFault;

/// TLS protocol versions a listener offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    V1_2,
    V1_3,
}

/// Where the server certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Certificate {
    /// Made at start-up by the test CA, healthy or broken on purpose.
    Made(CertFault),
    /// Read from PEM files.
    Files { cert_pem: String, key_pem: String },
}

/// `[tls]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub starttls: bool,
    pub certificate: Certificate,
    pub versions: Vec<TlsVersion>,
}

impl Default for TlsSettings {
    fn default() -> Self {
        Self {
            starttls: true,
            certificate: Certificate::Made(CertFault::Valid),
            versions: vec![TlsVersion::V1_2, TlsVersion::V1_3],
        }
    }
}

/// One `[[expect]]`.
#[derive(Debug, Clone)]
pub struct Expect {
    pub name: String,
    /// Which deliveries: by recipient and sender (absent: all).
    pub rcpt: Option<Pattern>,
    pub mail_from: Option<Pattern>,
    /// One attempt finally got 250 after the message (or none did).
    pub delivered: Option<bool>,
    /// Attempts per delivery: at least, and at most.
    pub attempts: Option<(u64, Option<u64>)>,
    /// Between consecutive attempts of one delivery.
    pub min_interval: Option<Duration>,
    /// No attempt after a 5xx for that recipient.
    pub no_retry_after_permanent: bool,
}

/// `[server]`.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub hostname: Option<String>,
    pub greeting: String,
    pub max_message_size: u64,
    pub max_recipients: usize,
    pub require_tls: bool,
    pub idle_timeout: Duration,
    pub seed: Option<u64>,
    pub extensions: Vec<String>,
    pub magic_recipients: bool,
    /// `bare_lf = "accept" | "reject"`.
    pub bare_lf: BareLf,
    /// Longest command line, CRLF included.
    pub max_line_length: usize,
}

pub use crate::proto::BareLf;

pub use crate::proto::session::{
    DEFAULT_EXTENSIONS, DEFAULT_GREETING, DEFAULT_HOSTNAME, DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MAX_RECIPIENTS,
};
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            hostname: None,
            greeting: DEFAULT_GREETING.into(),
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_recipients: DEFAULT_MAX_RECIPIENTS,
            require_tls: false,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            seed: None,
            extensions: DEFAULT_EXTENSIONS.map(String::from).to_vec(),
            magic_recipients: false,
            bare_lf: BareLf::Accept,
            max_line_length: crate::proto::line::MAX_COMMAND_LINE,
        }
    }
}

/// What a rule counts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyField {
    ClientIp,
    Helo,
    MailFrom,
    Rcpt,
}

impl KeyField {
    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "client_ip" => KeyField::ClientIp,
            "helo" => KeyField::Helo,
            "mail_from" => KeyField::MailFrom,
            "rcpt" => KeyField::Rcpt,
            _ => return None,
        })
    }

    /// True when the session knows this field at that stage.
    pub fn known_at(self, stage: Stage) -> bool {
        match self {
            KeyField::ClientIp => true,
            KeyField::Helo => stage != Stage::Connect,
            KeyField::MailFrom => matches!(
                stage,
                Stage::Mail | Stage::Rcpt | Stage::Data | Stage::Message
            ),
            KeyField::Rcpt => matches!(stage, Stage::Rcpt | Stage::Data | Stage::Message),
        }
    }

    /// Every envelope field known at that stage (the contract's default).
    pub fn default_for(stage: Stage) -> &'static [KeyField] {
        use KeyField::*;
        match stage {
            Stage::Connect | Stage::Ehlo | Stage::Helo | Stage::Starttls | Stage::Auth => {
                &[ClientIp]
            }
            Stage::Mail => &[ClientIp, MailFrom],
            _ => &[ClientIp, MailFrom, Rcpt],
        }
    }
}

/// `when`: all present conditions must hold.
#[derive(Debug, Clone, Default)]
pub struct When {
    pub client_ip: Option<Vec<IpNet>>,
    pub helo: Option<Pattern>,
    pub mail_from: Option<Pattern>,
    pub rcpt: Option<Pattern>,
    pub tls: Option<bool>,
    pub authenticated: Option<bool>,
    pub size: Option<SizeCmp>,
    pub header: Vec<(String, Pattern)>,
    /// Any of these windows (time since start or reload).
    pub during: Option<Vec<Window>>,
    pub auth_user: Option<Pattern>,
}

/// A gate that decides, per key, whether the rule applies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Gate {
    /// `limit = { rate = "N/DURATION" }`: applies beyond N passes in any
    /// sliding window.
    Rate { max: u64, window: Duration },
    /// `limit = { concurrent = N }` at connect: applies when N sessions of
    /// the key are already open.
    Concurrent { max: u64 },
    /// `greylist = { retry_after, expire }`.
    Greylist {
        retry_after: Duration,
        expire: Duration,
    },
    /// `reputation = { window, min_attempts, max_failure_rate }`.
    Reputation {
        window: Duration,
        min_attempts: u64,
        max_failure_rate: f64,
    },
}

/// Greylist entries are forgotten after this long without an attempt,
/// unless the rule says otherwise.
pub const DEFAULT_GREYLIST_EXPIRE: Duration = Duration::from_secs(24 * 3600);
/// Reputation needs this many recipients before it judges, unless the rule
/// says otherwise.
pub const DEFAULT_MIN_ATTEMPTS: u64 = 10;

/// One thing a rule (or one item of a sequence) does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Reply(Reply),
    Accept,
    Disconnect,
    Hang,
    Raw(Vec<u8>),
    /// At STARTTLS: answer 220, then close instead of the handshake.
    TlsAbort,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleOutcome {
    Step(Step),
    /// The Nth match uses item N; past the end, the last repeats.
    Sequence(Vec<Step>),
}

/// One `[[rule]]`.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Position in the file, from 0.
    pub index: usize,
    pub name: Option<String>,
    pub stages: Vec<Stage>,
    /// `on` includes `any`: every command stage.
    pub any: bool,
    pub when: When,
    pub outcome: RuleOutcome,
    pub delay: Option<DurationRange>,
    pub close: Option<bool>,
    pub drip: Option<Duration>,
    pub probability: Option<f64>,
    pub times: Option<u64>,
    pub key: Option<Vec<KeyField>>,
    pub gate: Option<Gate>,
}

impl Rule {
    /// The name shown in logs and transcripts.
    pub fn label(&self) -> String {
        match &self.name {
            Some(n) => n.clone(),
            None => format!("rule #{}", self.index + 1),
        }
    }

    pub fn applies_at(&self, stage: Stage) -> bool {
        (self.any && stage.is_command()) || self.stages.contains(&stage)
    }

    /// The key fields: as written, or the stage's default. Reputation and
    /// concurrency count per client IP unless told otherwise.
    pub fn key_fields(&self, stage: Stage) -> &[KeyField] {
        match (&self.key, &self.gate) {
            (Some(k), _) => k,
            (None, Some(Gate::Reputation { .. } | Gate::Concurrent { .. })) => {
                &[KeyField::ClientIp]
            }
            (None, _) => KeyField::default_for(stage),
        }
    }

    /// True when matching the rule needs a counter.
    pub fn counts(&self) -> bool {
        self.times.is_some()
            || self.probability.is_some()
            || matches!(self.outcome, RuleOutcome::Sequence(_))
            || self.delay.is_some_and(|d| d.min != d.max)
    }
}
