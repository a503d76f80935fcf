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
//!
//! Decisions reach Redis only through [`StateStore::perform`]: an async
//! call on one multiplexed connection (or the async Cluster client), which
//! the connection driver awaits; no tokio worker blocks on it. The blocking
//! calls that remain serve what is not a decision: the shared seed and
//! epoch when a scenario is loaded, the lease refresh of the sweep, and
//! `reset`/`len` for the API and tests.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::{ConnectionLike, RedisResult, Script, ScriptInvocation};

use super::op::{Done, GateOp, Op};
use super::{Answer, FailMode, Greylist, Pending, StateStore, Tally, Unavailable};

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

/// The tail of a rule's gate script: when the gate lets the rule apply and
/// the rule counts (KEYS[2], a key of the same hash tag), its match counter
/// moves in the same script, so a gate and its counter are one round trip.
/// The counter's keep_ms is the last ARGV.
const COUNTED: &str = "local function counted(applies)\n\
  if applies == 1 and KEYS[2] then\n\
    local n = redis.call('INCR', KEYS[2])\n\
    redis.call('PEXPIRE', KEYS[2], ARGV[#ARGV])\n\
    return n\n\
  end\n\
  return 1\n\
end\n";

fn rule_script(body: &str) -> Script {
    script(&format!("{COUNTED}{body}"))
}

/// A rate gate and its rule's counter. ARGV: max, window_ms, unique
/// member, keep_ms. Returns {applies, count, 0, 0}.
static RATE_RULE: LazyLock<Script> = LazyLock::new(|| {
    rule_script(
        "local w = tonumber(ARGV[2])\n\
         redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - w)\n\
         if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then\n\
           redis.call('ZADD', KEYS[1], now, ARGV[3])\n\
           redis.call('PEXPIRE', KEYS[1], w)\n\
           return {0, 1, 0, 0}\n\
         end\n\
         return {1, counted(1), 0, 0}",
    )
});

/// A greylist gate and its rule's counter. ARGV: retry_ms, expire_ms,
/// keep_ms. Returns {applies, count, 0, 0}.
static GREY_RULE: LazyLock<Script> = LazyLock::new(|| {
    rule_script(
        "local first = redis.call('GET', KEYS[1])\n\
         redis.call('PEXPIRE', KEYS[1], ARGV[2])\n\
         if first then\n\
           if now - tonumber(first) >= tonumber(ARGV[1]) then return {0, 1, 0, 0} end\n\
           return {1, counted(1), 0, 0}\n\
         end\n\
         redis.call('SET', KEYS[1], now, 'PX', ARGV[2])\n\
         return {1, counted(1), 0, 0}",
    )
});

/// Sums the reputation buckets whose start is inside the window into `a`
/// (attempts) and `f` (failures). ARGV[1]: window_ms, ARGV[2]: width_ms.
const SUM_BUCKETS: &str = "local w, width = tonumber(ARGV[1]), tonumber(ARGV[2])\n\
     local all = redis.call('HGETALL', KEYS[1])\n\
     local a, f = 0, 0\n\
     for i = 1, #all, 2 do\n\
       local name = all[i]\n\
       if now - tonumber(string.sub(name, 2)) * width < w then\n\
         if string.sub(name, 1, 1) == 'a' then a = a + tonumber(all[i + 1])\n\
         else f = f + tonumber(all[i + 1]) end\n\
       end\n\
     end\n";

/// A reputation gate and its rule's counter. ARGV: window_ms, width_ms,
/// min_attempts, max_failure_rate, keep_ms. Returns {applies, count,
/// attempts, failures}.
static TALLY_RULE: LazyLock<Script> = LazyLock::new(|| {
    rule_script(&format!(
        "{SUM_BUCKETS}\
         local applies = 0\n\
         if a > 0 and a >= tonumber(ARGV[3]) and f / a > tonumber(ARGV[4]) then applies = 1 end\n\
         return {{applies, counted(applies), a, f}}"
    ))
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
static TALLY: LazyLock<Script> = LazyLock::new(|| script(&format!("{SUM_BUCKETS}return {{a, f}}")));

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
    Single(Box<redis::Client>),
    Cluster(Box<ClusterClient>),
}

type Conn = Box<dyn ConnectionLike + Send>;

/// The async connection decisions use: cheap to clone, multiplexed.
#[derive(Clone)]
enum AsyncConn {
    Single(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl redis::aio::ConnectionLike for AsyncConn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            AsyncConn::Single(c) => c.req_packed_command(cmd),
            AsyncConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            AsyncConn::Single(c) => c.req_packed_commands(cmd, offset, count),
            AsyncConn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            AsyncConn::Single(c) => c.get_db(),
            AsyncConn::Cluster(c) => c.get_db(),
        }
    }
}

/// A connection to Redis shared by every scenario's [`RedisStore`].
pub struct RedisBackend {
    target: Target,
    /// The URL without its password, for logs.
    shown: String,
    fail: FailMode,
    pool: Mutex<Vec<Conn>>,
    /// The connection decisions share (None until the first, and after a
    /// failure until the next attempt).
    shared: tokio::sync::Mutex<Option<AsyncConn>>,
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
            Target::Cluster(Box::new(client))
        } else if url.starts_with("redis://") || url.starts_with("rediss://") {
            if url.starts_with("rediss://") {
                // The redis crate takes rustls' process-wide provider.
                let _ = rustls::crypto::ring::default_provider().install_default();
            }
            Target::Single(Box::new(redis::Client::open(url).with_context(bad)?))
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
            shared: tokio::sync::Mutex::new(None),
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

impl RedisBackend {
    async fn connect_async(&self) -> RedisResult<AsyncConn> {
        Ok(match &self.target {
            Target::Single(c) => {
                let cfg = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(OP_TIMEOUT))
                    .set_response_timeout(Some(OP_TIMEOUT));
                AsyncConn::Single(c.get_multiplexed_async_connection_with_config(&cfg).await?)
            }
            Target::Cluster(c) => AsyncConn::Cluster(c.get_async_connection().await?),
        })
    }

    /// The shared async connection, made when there is none (at most one
    /// attempt per [`RETRY_EVERY`] during an outage).
    async fn conn_async(&self) -> Answer<AsyncConn> {
        let mut shared = self.shared.lock().await;
        if let Some(c) = &*shared {
            return Ok(c.clone());
        }
        if self.down.load(Ordering::Relaxed) && self.recently_failed() {
            return Err(Unavailable);
        }
        let made = tokio::time::timeout(OP_TIMEOUT, self.connect_async()).await;
        match made {
            Ok(Ok(c)) => {
                *shared = Some(c.clone());
                Ok(c)
            }
            Ok(Err(e)) => Err(self.failed(&e)),
            Err(_) => Err(self.failed(&timed_out())),
        }
    }

    /// Runs `op` on the shared connection within [`OP_TIMEOUT`]; a broken
    /// connection is dropped so that the next call makes a new one.
    async fn exec_async<T>(&self, op: &OpRun<'_>) -> Answer<T>
    where
        T: redis::FromRedisValue,
    {
        let mut conn = self.conn_async().await?;
        let result = tokio::time::timeout(OP_TIMEOUT, op.run::<T>(&mut conn)).await;
        let e = match result {
            Ok(Ok(v)) => {
                if self.down.swap(false, Ordering::Relaxed) {
                    tracing::info!(store = %self.shown, "state store reachable again");
                }
                return Ok(v);
            }
            Ok(Err(e)) => e,
            Err(_) => timed_out(),
        };
        if is_broken(&e) {
            self.shared.lock().await.take();
        }
        Err(self.failed(&e))
    }
}

/// One command for [`RedisBackend::exec_async`].
enum OpRun<'a> {
    Script(ScriptInvocation<'a>),
    Cmd(redis::Cmd),
}

impl OpRun<'_> {
    async fn run<T: redis::FromRedisValue>(&self, conn: &mut AsyncConn) -> RedisResult<T> {
        match self {
            OpRun::Script(inv) => inv.invoke_async(conn).await,
            OpRun::Cmd(cmd) => cmd.query_async(conn).await,
        }
    }
}

fn timed_out() -> redis::RedisError {
    redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut))
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
    async fn script<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        key: &str,
        args: impl FnOnce(&mut ScriptInvocation<'_>),
    ) -> Answer<T> {
        let mut inv = script.key(self.key(key));
        args(&mut inv);
        self.backend.exec_async(&OpRun::Script(inv)).await
    }

    /// A rule's gate and, when it applies, its counter: one script.
    async fn rule_async(&self, g: &GateOp, count: Option<&str>) -> Answer<Done> {
        let (script, key): (&Script, &str) = match g {
            GateOp::Rate { key, .. } => (&RATE_RULE, key),
            GateOp::Greylist { key, .. } => (&GREY_RULE, key),
            GateOp::Reputation { key, .. } => (&TALLY_RULE, key),
        };
        let mut inv = script.key(self.key(key));
        if let Some(c) = count {
            inv.key(self.key(c));
        }
        match g {
            GateOp::Rate { max, window, .. } => {
                inv.arg(max).arg(ms(*window)).arg(self.backend.unique());
            }
            GateOp::Greylist {
                retry_after,
                expire,
                ..
            } => {
                inv.arg(ms(*retry_after)).arg(ms(*expire));
            }
            GateOp::Reputation {
                window,
                min_attempts,
                max_failure_rate,
                ..
            } => {
                let width = (*window / 60).max(Duration::from_millis(1));
                let rate = f64::from_bits(*max_failure_rate);
                inv.arg(ms(*window))
                    .arg(ms(width))
                    .arg(min_attempts)
                    .arg(rate.to_string());
            }
        }
        inv.arg(ms(KEEP));
        let (applies, count, attempts, failures): (u8, u64, u64, u64) =
            self.backend.exec_async(&OpRun::Script(inv)).await?;
        Ok(Done::Rule {
            applies: applies == 1,
            tally: Tally { attempts, failures },
            count,
        })
    }

    async fn incr_async(&self, key: &str) -> Answer<u64> {
        self.script(&INCR, key, |i| {
            i.arg(ms(KEEP));
        })
        .await
    }

    async fn open_async(&self, key: &str) -> Answer<u64> {
        let lease = self.backend.unique();
        let n = self
            .script(&OPEN, key, |i| {
                i.arg(&lease).arg(ms(LEASE_TTL));
            })
            .await?;
        self.held(key).push(lease);
        Ok(n)
    }

    async fn close_async(&self, key: &str) {
        let key = self.key(key);
        let Some(lease) = self.release(&key) else {
            return;
        };
        let mut cmd = redis::cmd("ZREM");
        cmd.arg(&key).arg(&lease);
        // Best effort: a lease not removed now expires with its TTL.
        let _: Answer<u64> = self.backend.exec_async(&OpRun::Cmd(cmd)).await;
    }

    async fn perform_async(&self, op: Op) -> Answer<Done> {
        Ok(match op {
            Op::Rule {
                gate: Some(g),
                count,
            } => self.rule_async(&g, count.as_deref()).await?,
            Op::Rule { gate: None, count } => Done::Rule {
                applies: true,
                tally: Tally::default(),
                count: match count {
                    Some(key) => self.incr_async(&key).await?,
                    None => 1,
                },
            },
            Op::Incr(keys) => {
                let mut n = Vec::with_capacity(keys.len());
                for k in &keys {
                    n.push(self.incr_async(k).await?);
                }
                Done::Counts(n)
            }
            Op::Open(keys) => {
                let mut n = Vec::with_capacity(keys.len());
                for k in &keys {
                    n.push(self.open_async(k).await?);
                }
                Done::Counts(n)
            }
            Op::Close(keys) => {
                for k in &keys {
                    self.close_async(k).await;
                }
                Done::Nothing
            }
            Op::Record(items) => {
                for (key, failed, window) in &items {
                    let width = (*window / 60).max(Duration::from_millis(1));
                    // Best effort: an outage loses these outcomes, nothing more.
                    let _: Answer<u8> = self
                        .script(&RECORD, key, |i| {
                            i.arg(*failed as u8).arg(ms(*window)).arg(ms(width));
                        })
                        .await;
                }
                Done::Nothing
            }
        })
    }

    /// The lease ids held under `key` (a short lock, never across I/O).
    fn held(&self, key: &str) -> LeaseList<'_> {
        LeaseList {
            all: self
                .backend
                .leases
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
            key: self.key(key),
        }
    }

    /// Takes one lease of the full key `key`, if this instance holds one.
    fn release(&self, key: &str) -> Option<String> {
        let mut all = self
            .backend
            .leases
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let list = all.get_mut(key)?;
        let lease = list.pop();
        if list.is_empty() {
            all.remove(key);
        }
        lease
    }

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

/// The leases of one key, under the lease map's lock.
struct LeaseList<'a> {
    all: std::sync::MutexGuard<'a, HashMap<String, Vec<String>>>,
    key: String,
}

impl LeaseList<'_> {
    fn push(mut self, lease: String) {
        let key = std::mem::take(&mut self.key);
        self.all.entry(key).or_default().push(lease);
    }
}

impl StateStore for RedisStore {
    /// Never on the spot: every operation is network I/O.
    fn run_now(&self, _: &Op, _: Instant) -> Option<Answer<Done>> {
        None
    }

    fn perform(&self, op: Op, _: Instant) -> Pending<'_> {
        Box::pin(self.perform_async(op))
    }

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
        self.held(key).push(lease);
        Ok(n)
    }

    fn close(&self, key: &str) {
        let key = self.key(key);
        let Some(lease) = self.release(&key) else {
            return;
        };
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
