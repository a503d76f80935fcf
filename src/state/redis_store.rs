//! Counters in Redis (or Valkey), shared by every instance that points at
//! the same server or Cluster.
//!
//! Each operation is one Lua script (loaded once, run by its SHA with
//! EVALSHA, sent again when the server lost it), so check-and-update cannot
//! race between instances, and time comes from Redis `TIME` inside the
//! script, not from each host's clock. Keys are
//! `mailfault:{<scenario>:<rules hash>}:<key>`: the braces are a Cluster
//! hash tag, so a scenario's keys live in one slot and a script may touch
//! several of them. Entries expire by `PEXPIRE`; nothing is swept. Open
//! sessions (`concurrent`) are leases in a sorted set scored by their
//! expiry, refreshed while the session lives, so a crashed instance cannot
//! leak them.
//!
//! Every call has a deadline ([`OP_TIMEOUT`]): a dead or slow store is an
//! [`Unavailable`] answer, never a hang. The outage is logged once when it
//! starts and once when it ends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::{ConnectionLike, RedisResult, Script, ScriptInvocation};

use super::{Answer, FailMode, Greylist, StateStore, Tally, Unavailable};

/// The deadline of one store operation (connect, send or answer).
pub const OP_TIMEOUT: Duration = Duration::from_millis(500);
/// During an outage, how often a new connection is tried; in between,
/// operations fail at once.
const RETRY_EVERY: Duration = Duration::from_millis(250);
/// How long an open-session lease lives without a refresh. The server
/// refreshes at every sweep (10 s).
pub const LEASE_TTL: Duration = Duration::from_secs(30);
/// Match counters, seeds and epochs live as long as the scenario is used:
/// this long after their last use.
const KEEP: Duration = Duration::from_secs(30 * 24 * 3600);
/// Idle connections kept for reuse.
const POOL: usize = 16;

/// Lua prologue: the server's time in milliseconds.
const NOW: &str = "local t = redis.call('TIME')\n\
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n";

fn script(body: &str) -> Script {
    Script::new(&format!("{NOW}{body}"))
}

/// INCR with a refreshed TTL. ARGV: keep_ms.
static INCR: LazyLock<Script> = LazyLock::new(|| {
    script(
        "local n = redis.call('INCR', KEYS[1])\n\
         redis.call('PEXPIRE', KEYS[1], ARGV[1])\n\
         return n",
    )
});

/// Sliding log of passes. ARGV: max, window_ms, unique member.
static RATE: LazyLock<Script> = LazyLock::new(|| {
    script(
        "local w = tonumber(ARGV[2])\n\
         redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - w)\n\
         if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then\n\
           redis.call('ZADD', KEYS[1], now, ARGV[3])\n\
           redis.call('PEXPIRE', KEYS[1], w)\n\
           return 1\n\
         end\n\
         return 0",
    )
});

/// Greylist: the value is the first attempt; the TTL (refreshed at every
/// attempt) is `expire`. ARGV: retry_ms, expire_ms. Returns
/// {passed, age_ms, first}.
static GREY: LazyLock<Script> = LazyLock::new(|| {
    script(
        "local first = redis.call('GET', KEYS[1])\n\
         redis.call('PEXPIRE', KEYS[1], ARGV[2])\n\
         if first then\n\
           local age = now - tonumber(first)\n\
           if age >= tonumber(ARGV[1]) then return {1, age, 0} end\n\
           return {0, age, 0}\n\
         end\n\
         redis.call('SET', KEYS[1], now, 'PX', ARGV[2])\n\
         return {0, 0, 1}",
    )
});

/// One more lease. ARGV: lease id, ttl_ms. Returns the live leases.
static OPEN: LazyLock<Script> = LazyLock::new(|| {
    script(
        "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)\n\
         redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])\n\
         redis.call('PEXPIRE', KEYS[1], ARGV[2])\n\
         return redis.call('ZCARD', KEYS[1])",
    )
});

/// Pushes the expiry of live leases. ARGV: ttl_ms, lease ids...
static REFRESH: LazyLock<Script> = LazyLock::new(|| {
    script(
        "local ttl = tonumber(ARGV[1])\n\
         for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', now + ttl, ARGV[i]) end\n\
         redis.call('PEXPIRE', KEYS[1], ttl)\n\
         return 1",
    )
});

/// Reputation buckets in a hash: `a<n>`/`f<n>` count attempts/failures of
/// bucket n (of `width` ms). ARGV: failed (0/1), window_ms, width_ms.
static RECORD: LazyLock<Script> = LazyLock::new(|| {
    script(
        "local w, width = tonumber(ARGV[2]), tonumber(ARGV[3])\n\
         local idx = math.floor(now / width)\n\
         redis.call('HINCRBY', KEYS[1], 'a' .. idx, 1)\n\
         if ARGV[1] == '1' then redis.call('HINCRBY', KEYS[1], 'f' .. idx, 1) end\n\
         for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do\n\
           if now - tonumber(string.sub(f, 2)) * width >= w + width then\n\
             redis.call('HDEL', KEYS[1], f)\n\
           end\n\
         end\n\
         redis.call('PEXPIRE', KEYS[1], w + width)\n\
         return 1",
    )
});

/// Sums the buckets whose start is inside the window. ARGV: window_ms,
/// width_ms. Returns {attempts, failures}.
static TALLY: LazyLock<Script> = LazyLock::new(|| {
    script(
        "local w, width = tonumber(ARGV[1]), tonumber(ARGV[2])\n\
         local all = redis.call('HGETALL', KEYS[1])\n\
         local a, f = 0, 0\n\
         for i = 1, #all, 2 do\n\
           local name = all[i]\n\
           if now - tonumber(string.sub(name, 2)) * width < w then\n\
             if string.sub(name, 1, 1) == 'a' then a = a + tonumber(all[i + 1])\n\
             else f = f + tonumber(all[i + 1]) end\n\
           end\n\
         end\n\
         return {a, f}",
    )
});

/// The first stored value wins. ARGV: value, keep_ms. Returns the value.
static FIRST: LazyLock<Script> = LazyLock::new(|| {
    script(
        "redis.call('SET', KEYS[1], ARGV[1], 'NX')\n\
         redis.call('PEXPIRE', KEYS[1], ARGV[2])\n\
         return redis.call('GET', KEYS[1])",
    )
});

/// The shared epoch: stores the server's time once; returns how long ago
/// it was. ARGV: keep_ms.
static EPOCH: LazyLock<Script> = LazyLock::new(|| {
    script(
        "redis.call('SET', KEYS[1], now, 'NX')\n\
         redis.call('PEXPIRE', KEYS[1], ARGV[1])\n\
         return now - tonumber(redis.call('GET', KEYS[1]))",
    )
});

/// Counts (ARGV[2] = 0) or deletes (1) the keys matching ARGV[1]. They
/// share KEYS[1]'s slot, so this runs on the node that holds them.
static SCAN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "local cursor, n = '0', 0\n\
         repeat\n\
           local r = redis.call('SCAN', cursor, 'MATCH', ARGV[1], 'COUNT', 1000)\n\
           cursor = r[1]\n\
           for _, k in ipairs(r[2]) do\n\
             n = n + 1\n\
             if ARGV[2] == '1' then redis.call('DEL', k) end\n\
           end\n\
         until cursor == '0'\n\
         return n",
    )
});

enum Target {
    Single(redis::Client),
    Cluster(ClusterClient),
}

type Conn = Box<dyn ConnectionLike + Send>;

/// A connection to Redis shared by every scenario's [`RedisStore`].
pub struct RedisBackend {
    target: Target,
    /// The URL without its password, for logs.
    shown: String,
    fail: FailMode,
    pool: Mutex<Vec<Conn>>,
    down: AtomicBool,
    outages: AtomicU64,
    last_failure: Mutex<Option<Instant>>,
    /// Makes lease ids and rate-log members unique across instances.
    instance: String,
    seq: AtomicU64,
    /// The lease ids this instance holds, per full key: kept here rather
    /// than per scenario so that sessions begun before a reload keep theirs
    /// refreshed.
    leases: Mutex<HashMap<String, Vec<String>>>,
}

impl RedisBackend {
    /// Parses the URL (see [`super::Backend::parse`]); connects lazily.
    pub fn parse(url: &str, fail: FailMode) -> anyhow::Result<Self> {
        let bad = || format!("bad --state {:?}", hide_password(url));
        let target = if let Some(rest) = url.strip_prefix("redis-cluster://") {
            let (auth, hosts) = match rest.rsplit_once('@') {
                Some((a, h)) => (format!("{a}@"), h),
                None => (String::new(), rest),
            };
            let nodes: Vec<String> = hosts
                .split(',')
                .map(|h| format!("redis://{auth}{}", h.trim_end_matches('/')))
                .collect();
            let client = ClusterClientBuilder::new(nodes)
                .connection_timeout(OP_TIMEOUT)
                .response_timeout(OP_TIMEOUT)
                .build()
                .with_context(bad)?;
            Target::Cluster(client)
        } else if url.starts_with("redis://") || url.starts_with("rediss://") {
            if url.starts_with("rediss://") {
                // The redis crate takes rustls' process-wide provider.
                let _ = rustls::crypto::ring::default_provider().install_default();
            }
            Target::Single(redis::Client::open(url).with_context(bad)?)
        } else {
            anyhow::bail!(
                "{}: write memory, redis://HOST:PORT[/DB], rediss://HOST:PORT[/DB] \
                 or redis-cluster://HOST:PORT[,HOST:PORT...]",
                bad()
            );
        };
        Ok(Self {
            target,
            shown: hide_password(url),
            fail,
            pool: Mutex::new(vec![]),
            down: AtomicBool::new(false),
            outages: AtomicU64::new(0),
            last_failure: Mutex::new(None),
            instance: format!("{:016x}", rand::random::<u64>()),
            seq: AtomicU64::new(0),
            leases: Mutex::new(HashMap::new()),
        })
    }

    pub fn describe(&self) -> &str {
        &self.shown
    }

    /// The store of one scenario.
    pub fn store(self: &Arc<Self>, name: &str, rules_hash: u64) -> RedisStore {
        RedisStore {
            backend: self.clone(),
            prefix: format!("mailfault:{{{name}:{rules_hash:016x}}}:"),
        }
    }

    fn unique(&self) -> String {
        format!(
            "{}:{}",
            self.instance,
            self.seq.fetch_add(1, Ordering::Relaxed)
        )
    }

    fn connect(&self) -> RedisResult<Conn> {
        Ok(match &self.target {
            Target::Single(c) => {
                let conn = c.get_connection_with_timeout(OP_TIMEOUT)?;
                conn.set_read_timeout(Some(OP_TIMEOUT))?;
                conn.set_write_timeout(Some(OP_TIMEOUT))?;
                Box::new(conn)
            }
            Target::Cluster(c) => Box::new(c.get_connection()?),
        })
    }

    /// Runs `op` on a connection, blocking this thread for at most about
    /// [`OP_TIMEOUT`] (twice when a pooled connection turns out dead).
    fn exec<T>(&self, op: impl Fn(&mut dyn ConnectionLike) -> RedisResult<T>) -> Answer<T> {
        blocking(|| {
            let pooled = self.pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
            if let Some(mut conn) = pooled {
                match op(&mut *conn) {
                    Ok(v) => return Ok(self.done(conn, v)),
                    Err(e) if !is_broken(&e) => return Err(self.script_error(conn, &e)),
                    // Redis restarted since: drop the idle ones, try a new one.
                    Err(_) => self.pool.lock().unwrap_or_else(|p| p.into_inner()).clear(),
                }
            }
            if self.down.load(Ordering::Relaxed) && self.recently_failed() {
                return Err(Unavailable);
            }
            let mut conn = self.connect().map_err(|e| self.failed(&e))?;
            match op(&mut *conn) {
                Ok(v) => Ok(self.done(conn, v)),
                Err(e) if !is_broken(&e) => Err(self.script_error(conn, &e)),
                Err(e) => Err(self.failed(&e)),
            }
        })
    }

    fn done<T>(&self, conn: Conn, v: T) -> T {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < POOL {
            pool.push(conn);
        }
        drop(pool);
        if self.down.swap(false, Ordering::Relaxed) {
            tracing::info!(store = %self.shown, "state store reachable again");
        }
        v
    }

    /// Redis answered with an error (loading, a Cluster that is down, a
    /// read-only replica...): an outage too, on a connection still usable.
    fn script_error(&self, conn: Conn, e: &redis::RedisError) -> Unavailable {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < POOL {
            pool.push(conn);
        }
        drop(pool);
        self.failed(e)
    }

    fn recently_failed(&self) -> bool {
        self.last_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|t| t.elapsed() < RETRY_EVERY)
    }

    fn failed(&self, e: &redis::RedisError) -> Unavailable {
        *self.last_failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        if !self.down.swap(true, Ordering::Relaxed) {
            self.outages.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                store = %self.shown,
                fail = ?self.fail,
                "state store unavailable, stateful rules follow --state-fail: {e}"
            );
        }
        Unavailable
    }
}

fn is_broken(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal()
}

/// Lets the runtime move other tasks off this worker while a store call
/// blocks it (only a multi-thread runtime can).
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// `redis://user:secret@host` → `redis://user:***@host`.
fn hide_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.rsplit_once('@') {
        Some((auth, host)) => {
            let user = auth.split_once(':').map_or(auth, |(u, _)| u);
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_string(),
    }
}

fn ms(d: Duration) -> u64 {
    (d.as_millis() as u64).max(1)
}

/// One scenario's counters in Redis.
pub struct RedisStore {
    backend: Arc<RedisBackend>,
    prefix: String,
}

impl RedisStore {
    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn run<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        key: &str,
        args: impl Fn(&mut ScriptInvocation<'_>),
    ) -> Answer<T> {
        let key = self.key(key);
        self.backend.exec(|con| {
            let mut inv = script.key(&key);
            args(&mut inv);
            inv.invoke(con)
        })
    }

    /// Counts (or deletes) this scenario's keys.
    fn scan(&self, delete: bool) -> Answer<usize> {
        let pattern: String = self
            .prefix
            .chars()
            .flat_map(|c| match c {
                '*' | '?' | '[' | ']' | '\\' => vec!['\\', c],
                c => vec![c],
            })
            .chain(['*'])
            .collect();
        let n: u64 = self.run(&SCAN, "scan", |i| {
            i.arg(&pattern).arg(delete as u8);
        })?;
        Ok(n as usize)
    }
}

impl StateStore for RedisStore {
    fn incr(&self, key: &str) -> Answer<u64> {
        self.run(&INCR, key, |i| {
            i.arg(ms(KEEP));
        })
    }

    fn rate_pass(&self, key: &str, max: u64, window: Duration, _: Instant) -> Answer<bool> {
        let member = self.backend.unique();
        let n: u8 = self.run(&RATE, key, |i| {
            i.arg(max).arg(ms(window)).arg(&member);
        })?;
        Ok(n == 1)
    }

    fn greylist(
        &self,
        key: &str,
        retry: Duration,
        expire: Duration,
        now: Instant,
    ) -> Answer<Greylist> {
        let (passed, age, first): (u8, u64, u8) = self.run(&GREY, key, |i| {
            i.arg(ms(retry)).arg(ms(expire));
        })?;
        Ok(if passed == 1 {
            Greylist::Passed
        } else {
            Greylist::Refused {
                first_seen: now.checked_sub(Duration::from_millis(age)).unwrap_or(now),
                first: first == 1,
            }
        })
    }

    fn open(&self, key: &str) -> Answer<u64> {
        let lease = self.backend.unique();
        let n = self.run(&OPEN, key, |i| {
            i.arg(&lease).arg(ms(LEASE_TTL));
        })?;
        self.backend
            .leases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(self.key(key))
            .or_default()
            .push(lease);
        Ok(n)
    }

    fn close(&self, key: &str) {
        let key = self.key(key);
        let lease = {
            let mut all = self
                .backend
                .leases
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let Some(list) = all.get_mut(&key) else {
                return;
            };
            let lease = list.pop();
            if list.is_empty() {
                all.remove(&key);
            }
            lease
        };
        let Some(lease) = lease else { return };
        // Best effort: a lease not removed now expires with its TTL.
        let _ = self
            .backend
            .exec(|con| redis::cmd("ZREM").arg(&key).arg(&lease).query::<u64>(con));
    }

    fn record(&self, key: &str, failed: bool, window: Duration, _: Instant) {
        let width = (window / 60).max(Duration::from_millis(1));
        // Best effort: an outage loses these outcomes, nothing more.
        let _: Answer<u8> = self.run(&RECORD, key, |i| {
            i.arg(failed as u8).arg(ms(window)).arg(ms(width));
        });
    }

    fn tally(&self, key: &str, window: Duration, _: Instant) -> Answer<Tally> {
        let width = (window / 60).max(Duration::from_millis(1));
        let (attempts, failures) = self.run(&TALLY, key, |i| {
            i.arg(ms(window)).arg(ms(width));
        })?;
        Ok(Tally { attempts, failures })
    }

    /// Nothing to remove (Redis expires entries); refreshes the leases of
    /// the sessions still open in this instance.
    fn sweep(&self, _: Instant) -> usize {
        let held: Vec<(String, Vec<String>)> = self
            .backend
            .leases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (key, leases) in held {
            let _ = self.backend.exec(|con| {
                REFRESH
                    .key(&key)
                    .arg(ms(LEASE_TTL))
                    .arg(&leases)
                    .invoke::<u8>(con)
            });
        }
        0
    }

    /// Deletes this scenario's keys. Like `len`, it scans the node's
    /// keyspace in one script: for tests and diagnostics, not a hot path.
    fn reset(&self) {
        let _ = self.scan(true);
    }

    fn len(&self) -> usize {
        self.scan(false).unwrap_or(0)
    }

    fn shared_seed(&self, local: u64) -> u64 {
        let stored: Answer<String> = self.run(&FIRST, "seed", |i| {
            i.arg(local).arg(ms(KEEP));
        });
        stored.ok().and_then(|s| s.parse().ok()).unwrap_or(local)
    }

    fn shared_epoch(&self, local: Instant) -> Instant {
        let age: Answer<u64> = self.run(&EPOCH, "epoch", |i| {
            i.arg(ms(KEEP));
        });
        age.ok()
            .and_then(|a| local.checked_sub(Duration::from_millis(a)))
            .unwrap_or(local)
    }

    fn fail_mode(&self) -> FailMode {
        self.backend.fail
    }

    fn is_down(&self) -> bool {
        self.backend.down.load(Ordering::Relaxed)
    }

    fn outages(&self) -> u64 {
        self.backend.outages.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(
            hide_password("redis://:s3cret@127.0.0.1:6379/2"),
            "redis://:***@127.0.0.1:6379/2"
        );
        assert_eq!(hide_password("rediss://app:pw@h:1"), "rediss://app:***@h:1");
        assert_eq!(hide_password("redis://h:1"), "redis://h:1");
    }

    #[test]
    fn bad_urls_say_what_to_write() {
        let e = RedisBackend::parse("mysql://h", FailMode::Tempfail)
            .err()
            .unwrap();
        assert!(format!("{e:#}").contains("redis-cluster://"), "{e:#}");
    }

    #[test]
    fn a_dead_store_answers_unavailable_quickly() {
        // Port 1 on loopback: nothing listens, the connect is refused.
        let b = Arc::new(RedisBackend::parse("redis://127.0.0.1:1", FailMode::Ignore).unwrap());
        let s = b.store("t", 1);
        let t = Instant::now();
        assert_eq!(s.incr("k"), Err(Unavailable));
        assert_eq!(
            s.rate_pass("k", 1, Duration::from_secs(1), t),
            Err(Unavailable)
        );
        assert!(s.is_down());
        assert_eq!(s.outages(), 1, "one outage, however many failed calls");
        assert!(t.elapsed() < Duration::from_secs(2));
        assert_eq!(s.fail_mode(), FailMode::Ignore);
    }
}
