//! Where the counters live, as given to `serve --state URL`.

use std::str::FromStr;
use std::sync::Arc;

use super::redis_store::RedisBackend;
use super::{MemoryStore, StateStore};

/// What stateful rules do while the store is unavailable
/// (`--state-fail`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailMode {
    /// Answer [`super::STORE_UNAVAILABLE`]: the sender retries later.
    #[default]
    Tempfail,
    /// Act as if the rule did not match.
    Ignore,
}

impl FromStr for FailMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tempfail" => Ok(Self::Tempfail),
            "ignore" => Ok(Self::Ignore),
            _ => Err(format!("{s:?}: write tempfail or ignore")),
        }
    }
}

/// The state backend of a server: every listener's scenario gets its own
/// store from it.
#[derive(Clone, Default)]
pub enum Backend {
    /// Counters in this process (the default).
    #[default]
    Memory,
    /// Counters in Redis, shared by every instance pointing at it.
    Redis(Arc<RedisBackend>),
}

impl Backend {
    /// Parses `memory`, `redis://HOST:PORT[/DB]`, `rediss://...` or
    /// `redis-cluster://HOST:PORT[,HOST:PORT...]`. Nothing is connected yet:
    /// a Redis that is down at start is an outage like any other.
    pub fn parse(url: &str, fail: FailMode) -> anyhow::Result<Self> {
        if url == "memory" {
            return Ok(Self::Memory);
        }
        Ok(Self::Redis(Arc::new(RedisBackend::parse(url, fail)?)))
    }

    /// A store for one scenario: `name` and `rules_hash` namespace its keys,
    /// so two scenarios never collide and a changed scenario starts fresh.
    pub fn store(&self, name: &str, rules_hash: u64) -> Arc<dyn StateStore> {
        match self {
            Self::Memory => Arc::new(MemoryStore::default()),
            Self::Redis(b) => Arc::new(b.store(name, rules_hash)),
        }
    }

    pub fn is_shared(&self) -> bool {
        matches!(self, Self::Redis(_))
    }
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Memory => f.write_str("memory"),
            Self::Redis(b) => write!(f, "{}", b.describe()),
        }
    }
}
