//! Several instances, one truth: two in-process servers sharing a real
//! `redis-server` (single node and a 3-node Cluster, started here on free
//! loopback ports) answer as one; Redis can die and return.
//!
//! Needs Debian's `redis-server` and `redis-tools`: skipped with a printed
//! reason outside CI when missing, mandatory with CI=true.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{capable, Client};
use mailfault::scenario;
use mailfault::server::{ListenerSpec, Options, Server, Source};
use mailfault::state::{Backend, FailMode, Greylist, MemoryStore, StateStore, Tally};

fn have_redis() -> bool {
    capable(
        "redis-server --version && redis-cli --version",
        "redis-server/redis-cli not installed (apt-get install redis-server redis-tools)",
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A free port for a cluster node: its cluster bus listens 10,000 above
/// it, so the port must be 55535 or less (redis-server refuses to start
/// otherwise) and the bus port free too. Ephemeral ports reach 60999.
fn cluster_port() -> u16 {
    loop {
        let port = free_port();
        if port <= 55535 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// A redis-server of this test, on 127.0.0.1, killed when dropped.
struct Redis {
    port: u16,
    child: Option<Child>,
    extra: Vec<String>,
    /// Extra redis-cli arguments (TLS).
    cli_extra: Vec<String>,
}

impl Redis {
    fn start() -> Self {
        Self::start_with(free_port(), vec![])
    }

    fn start_with(port: u16, extra: Vec<String>) -> Self {
        let mut r = Self {
            port,
            child: None,
            extra,
            cli_extra: vec![],
        };
        r.restart();
        r
    }

    /// (Re)starts the server on the same port and waits until it answers.
    fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--protected-mode", "yes"])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.cli(&["PING"]).contains("PONG") {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(&self.cli_extra)
            .args(args)
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Three cluster nodes with every slot assigned, on loopback.
struct Cluster {
    nodes: Vec<Redis>,
    _dir: std::path::PathBuf,
}

impl Cluster {
    fn start() -> Self {
        let dir = common::tmp(&format!("cluster-{}", free_port()));
        let nodes: Vec<Redis> = (0..3)
            .map(|_| {
                let port = cluster_port();
                let conf = dir.join(format!("nodes-{port}.conf"));
                let _ = std::fs::remove_file(&conf);
                Redis::start_with(
                    port,
                    vec![
                        "--cluster-enabled".into(),
                        "yes".into(),
                        "--cluster-config-file".into(),
                        conf.display().to_string(),
                        "--dir".into(),
                        dir.display().to_string(),
                    ],
                )
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster create");
        assert!(
            out.status.success(),
            "cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while !nodes
            .iter()
            .all(|n| n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok"))
        {
            assert!(Instant::now() < deadline, "cluster did not become ok");
            std::thread::sleep(Duration::from_millis(100));
        }
        Self { nodes, _dir: dir }
    }

    fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis-cluster://{}", hosts.join(","))
    }
}

const SHARED: &str = r#"
[[rule]]
on = "rcpt"
when = { rcpt = "*@bad.test" }
reply = "550 5.1.1 No such user"

[[rule]]
on = "rcpt"
when = { rcpt = "*@grey.test" }
greylist = { retry_after = "1s" }
reply = "450 4.2.0 Greylisted"

[[rule]]
on = "mail"
when = { mail_from = "rate@*" }
key = ["client_ip"]
limit = { rate = "5/1m" }
reply = "450 4.2.1 Slow down"

[[rule]]
on = "rcpt"
when = { rcpt = "*@flaky.test" }
times = 2
reply = "451 4.3.0 Try later"
"#;

const CONCURRENT: &str = r#"
[[rule]]
on = "connect"
limit = { concurrent = 3 }
reply = "421 4.7.0 Too many connections"
"#;

/// One in-process instance: listener 0 serves SHARED, listener 1 CONCURRENT.
async fn instance(url: &str, fail: FailMode) -> Server {
    let spec = |toml: &str, name: &str| ListenerSpec {
        addr: "127.0.0.1:0".parse().unwrap(),
        source: Source::Given(Arc::new(
            scenario::parse(toml, "test.toml", name).unwrap_or_else(|e| panic!("{e}")),
        )),
        tls: Default::default(),
    };
    let mut opts = Options::new(vec![spec(SHARED, "shared"), spec(CONCURRENT, "conc")]);
    opts.grace = Duration::from_millis(200);
    opts.state = Backend::parse(url, fail).unwrap();
    Server::start(opts).await.unwrap()
}

/// A session up to MAIL; returns the client.
async fn mail(addr: SocketAddr, from: &str) -> Client {
    let mut c = Client::connect_addr(addr).await;
    assert!(c.reply().await.starts_with("220 "));
    c.expect("EHLO client.test", "250").await;
    c.expect(&format!("MAIL FROM:<{from}>"), "250 ").await;
    c
}

async fn rcpt(addr: SocketAddr, to: &str) -> String {
    let mut c = mail(addr, "sender@example.test").await;
    c.cmd(&format!("RCPT TO:<{to}>")).await
}

/// The shared cases, through instances `a` and `b` alternately.
async fn answer_as_one(a: &Server, b: &Server) {
    let (a0, b0) = (a.listeners[0].addr, b.listeners[0].addr);

    // Greylisted through one, retried through the other.
    assert_eq!(rcpt(a0, "x@grey.test").await, "450 4.2.0 Greylisted");
    assert_eq!(rcpt(b0, "x@grey.test").await, "450 4.2.0 Greylisted");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(rcpt(b0, "x@grey.test").await.starts_with("250 "));
    assert!(rcpt(a0, "x@grey.test").await.starts_with("250 "));

    // `times = 2` counts once across instances.
    assert_eq!(rcpt(b0, "y@flaky.test").await, "451 4.3.0 Try later");
    assert_eq!(rcpt(a0, "y@flaky.test").await, "451 4.3.0 Try later");
    assert!(rcpt(b0, "y@flaky.test").await.starts_with("250 "));

    // `5/1m` over both: exactly 5 of 10 attempts pass.
    let mut passed = 0;
    for (i, addr) in [a0, b0].iter().cycle().take(10).enumerate() {
        let mut c = Client::connect_addr(*addr).await;
        assert!(c.reply().await.starts_with("220 "));
        c.expect("EHLO client.test", "250").await;
        let got = c.cmd("MAIL FROM:<rate@example.test>").await;
        match got.as_str() {
            "450 4.2.1 Slow down" => {}
            g if g.starts_with("250 ") => passed += 1,
            g => panic!("attempt {i}: {g:?}"),
        }
    }
    assert_eq!(passed, 5);

    // `concurrent = 3` across instances: the 4th open session is refused
    // wherever it lands; one closing makes room.
    let (a1, b1) = (a.listeners[1].addr, b.listeners[1].addr);
    let mut open = vec![];
    for addr in [a1, b1, a1] {
        let mut c = Client::connect_addr(addr).await;
        assert!(c.reply().await.starts_with("220 "));
        open.push(c);
    }
    for addr in [b1, a1] {
        let mut c = Client::connect_addr(addr).await;
        assert_eq!(c.reply().await, "421 4.7.0 Too many connections");
    }
    let mut first = open.remove(0);
    first.expect("QUIT", "221").await;
    assert!(first.closed().await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut c = Client::connect_addr(b1).await;
    let r = c.reply().await;
    assert!(r.starts_with("220 "), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_redis() {
    if !have_redis() {
        return;
    }
    let redis = Redis::start();
    let a = instance(&redis.url(), FailMode::Tempfail).await;
    let b = instance(&redis.url(), FailMode::Tempfail).await;
    answer_as_one(&a, &b).await;
    // Keys are namespaced by scenario and rules hash, in one hash tag.
    let keys = redis.cli(&["--scan", "--pattern", "mailfault:*"]);
    assert!(
        keys.lines()
            .all(|k| k.starts_with("mailfault:{shared:") || k.starts_with("mailfault:{conc:")),
        "{keys}"
    );
    assert!(keys.contains("mailfault:{shared:"), "{keys}");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_a_redis_cluster() {
    if !have_redis() {
        return;
    }
    let cluster = Cluster::start();
    let a = instance(&cluster.url(), FailMode::Tempfail).await;
    let b = instance(&cluster.url(), FailMode::Tempfail).await;
    answer_as_one(&a, &b).await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_dies_and_returns() {
    if !have_redis() {
        return;
    }
    let mut redis = Redis::start();
    let strict = instance(&redis.url(), FailMode::Tempfail).await;
    let lenient = instance(&redis.url(), FailMode::Ignore).await;
    let (s, l) = (strict.listeners[0].addr, lenient.listeners[0].addr);
    assert_eq!(rcpt(s, "z@grey.test").await, "450 4.2.0 Greylisted");

    redis.kill();
    let t = Instant::now();
    // Stateless rules answer exactly; stateful ones per --state-fail.
    assert_eq!(rcpt(s, "u@bad.test").await, "550 5.1.1 No such user");
    assert_eq!(
        rcpt(s, "z@grey.test").await,
        "451 4.3.0 Temporary state store failure, try again later"
    );
    assert!(rcpt(l, "z@grey.test").await.starts_with("250 "));
    assert_eq!(rcpt(l, "u@bad.test").await, "550 5.1.1 No such user");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "no hang on a dead store"
    );
    let store = strict.listeners[0].slot.current().engine.clone();
    assert!(store.store().is_down());
    assert_eq!(store.store().outages(), 1);
    // What /metrics shows as mailfault_state_store_up and _outages_total.
    let health = strict.runtime().store_health();
    assert!(health.iter().all(|(_, up, n)| !up && *n == 1), "{health:?}");

    // Same port again: both recover by themselves (a fresh Redis is empty,
    // so the greylist starts over).
    redis.restart();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rcpt(s, "z@grey.test").await, "450 4.2.0 Greylisted");
    assert_eq!(rcpt(l, "z@grey.test").await, "450 4.2.0 Greylisted");
    assert!(!store.store().is_down());
    assert_eq!(store.store().outages(), 1);
    let health = strict.runtime().store_health();
    assert!(health.iter().all(|(_, up, n)| *up && *n == 1), "{health:?}");
    strict.shutdown().await;
    lenient.shutdown().await;
}

/// The same store cases against any store, in real time.
fn conformance(s: &dyn StateStore) {
    let now = Instant::now;
    assert_eq!(s.incr("c"), Ok(1));
    assert_eq!(s.incr("c"), Ok(2));
    assert_eq!(s.incr("other"), Ok(1));

    let w = Duration::from_millis(400);
    let passes = (0..5).filter(|_| s.rate_pass("r", 3, w, now()) == Ok(true));
    assert_eq!(passes.count(), 3, "3 per window");
    std::thread::sleep(w + Duration::from_millis(50));
    assert_eq!(s.rate_pass("r", 3, w, now()), Ok(true), "the window moved");

    let (retry, expire) = (Duration::from_millis(300), Duration::from_secs(60));
    assert!(matches!(
        s.greylist("g", retry, expire, now()),
        Ok(Greylist::Refused { first: true, .. })
    ));
    assert!(matches!(
        s.greylist("g", retry, expire, now()),
        Ok(Greylist::Refused { first: false, .. })
    ));
    std::thread::sleep(retry + Duration::from_millis(50));
    assert_eq!(s.greylist("g", retry, expire, now()), Ok(Greylist::Passed));

    assert_eq!(s.open("o"), Ok(1));
    assert_eq!(s.open("o"), Ok(2));
    s.close("o");
    assert_eq!(s.open("o"), Ok(2));
    s.close("o");
    s.close("o");

    let w = Duration::from_secs(60);
    for i in 0..10 {
        s.record("p", i % 5 == 0, w, now());
    }
    assert_eq!(
        s.tally("p", w, now()),
        Ok(Tally {
            attempts: 10,
            failures: 2
        })
    );
    assert_eq!(s.tally("nobody", w, now()), Ok(Tally::default()));
    assert_eq!(s.shared_seed(7), s.shared_seed(7));
    s.reset();
    assert_eq!(s.incr("c"), Ok(1), "reset forgets");
}

#[test]
fn conformance_memory() {
    conformance(&MemoryStore::default());
}

#[test]
fn conformance_redis() {
    if !have_redis() {
        return;
    }
    let redis = Redis::start();
    let backend = Backend::parse(&redis.url(), FailMode::Tempfail).unwrap();
    let store = backend.store("conformance", 1);
    conformance(&*store);
    // A second instance sees the first one's seed.
    let other = Backend::parse(&redis.url(), FailMode::Tempfail).unwrap();
    assert_eq!(store.shared_seed(5), 5);
    assert_eq!(other.store("conformance", 1).shared_seed(99), 5);
    assert_eq!(
        other.store("conformance", 2).shared_seed(99),
        99,
        "another rules hash is another namespace"
    );
}

#[test]
fn a_crashed_instance_leaks_no_session() {
    if !have_redis() {
        return;
    }
    let redis = Redis::start();
    let store = Backend::parse(&redis.url(), FailMode::Tempfail)
        .unwrap()
        .store("leases", 1);
    assert_eq!(store.open("k"), Ok(1));
    // The lease is a sorted-set member scored by its expiry: make it
    // expire now, as if its instance had died without refreshing it.
    let key = "mailfault:{leases:0000000000000001}:k";
    let member = redis.cli(&["ZRANGE", key, "0", "0"]);
    redis.cli(&["ZADD", key, "XX", "1", member.trim()]);
    assert_eq!(store.open("k"), Ok(1), "the dead lease no longer counts");
    // A live instance refreshes its leases at every sweep...
    let score = || -> f64 {
        let m = redis.cli(&["ZRANGE", key, "0", "0"]);
        redis
            .cli(&["ZSCORE", key, m.trim()])
            .trim()
            .parse()
            .unwrap()
    };
    let before = score();
    std::thread::sleep(Duration::from_millis(20));
    store.sweep(Instant::now());
    assert!(score() > before, "refreshed");
    // ...and gives them back when the session ends.
    store.close("k");
    assert_eq!(redis.cli(&["ZCARD", key]).trim(), "0");
}

const BEHIND_HAPROXY: &str = r#"
[[rule]]
on = "rcpt"
when = { client_ip = "127.0.0.2", rcpt = "who@*" }
reply = "550 5.7.1 You are 127.0.0.2"

[[rule]]
on = "rcpt"
when = { rcpt = "*@grey.test" }
greylist = { retry_after = "1s" }
reply = "450 4.2.0 Greylisted"
"#;

/// An haproxy of this test, killed when dropped.
struct Haproxy(Child);

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// HAProxy on `front`, round-robin over `a` and `b` with send-proxy-v2:
/// the configuration of docs/deploy.md, with its ports replaced.
fn haproxy(front: u16, a: SocketAddr, b: SocketAddr) -> Haproxy {
    let dir = common::tmp(&format!("haproxy-{front}"));
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/deploy.md")).unwrap();
    let block = doc
        .split("```haproxy\n")
        .nth(1)
        .and_then(|r| r.split("```").next())
        .expect("docs/deploy.md has a haproxy.cfg block");
    let cfg = [
        ("127.0.0.1:2525", format!("127.0.0.1:{front}")),
        ("127.0.0.1:2601", a.to_string()),
        ("127.0.0.1:2602", b.to_string()),
    ]
    .iter()
    .fold(block.to_string(), |cfg, (from, to)| {
        assert!(
            cfg.contains(from),
            "docs/deploy.md's haproxy.cfg names {from}"
        );
        cfg.replace(from, to)
    });
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, cfg).unwrap();
    let child = Command::new("haproxy")
        .args(["-db", "-f"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start haproxy");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", front)).is_err() {
        assert!(Instant::now() < deadline, "haproxy did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Haproxy(child)
}

/// A RCPT from 127.0.0.2 (another loopback address, so that the client
/// and the balancer differ).
async fn rcpt_from_127_0_0_2(front: u16, to: &str) -> String {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let stream = sock
        .connect(SocketAddr::from(([127, 0, 0, 1], front)))
        .await
        .unwrap();
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut last = String::new();
    let rcpt = format!("RCPT TO:<{to}>");
    for line in ["", "EHLO client.test", "MAIL FROM:<a@example.test>", &rcpt] {
        if !line.is_empty() {
            w.write_all(format!("{line}\r\n").as_bytes()).await.unwrap();
        }
        loop {
            last.clear();
            let n = tokio::time::timeout(Duration::from_secs(10), r.read_line(&mut last))
                .await
                .expect("a reply within 10 s")
                .unwrap();
            assert!(n > 0, "closed after {line:?}");
            if last.as_bytes().get(3) != Some(&b'-') {
                break;
            }
        }
    }
    last.trim_end().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_round_robin_in_front_of_two_instances() {
    if !have_redis()
        || !capable(
            "haproxy -v",
            "haproxy not installed (apt-get install haproxy)",
        )
    {
        return;
    }
    let redis = Redis::start();
    let start = || async {
        let s = scenario::parse(BEHIND_HAPROXY, "test.toml", "lb").unwrap();
        let mut opts = Options::new(vec![ListenerSpec {
            addr: "127.0.0.1:0".parse().unwrap(),
            source: Source::Given(Arc::new(s)),
            tls: Default::default(),
        }]);
        opts.grace = Duration::from_millis(200);
        opts.state = Backend::parse(&redis.url(), FailMode::Tempfail).unwrap();
        opts.proxy = vec![0];
        Server::start(opts).await.unwrap()
    };
    let (a, b) = (start().await, start().await);
    let front = free_port();
    let _lb = haproxy(front, a.addr(), b.addr());

    for _ in 0..4 {
        assert_eq!(
            rcpt_from_127_0_0_2(front, "who@example.test").await,
            "550 5.7.1 You are 127.0.0.2"
        );
    }
    // One greylist for both instances, keyed by the header's address.
    assert_eq!(
        rcpt_from_127_0_0_2(front, "g@grey.test").await,
        "450 4.2.0 Greylisted"
    );
    assert_eq!(
        rcpt_from_127_0_0_2(front, "g@grey.test").await,
        "450 4.2.0 Greylisted"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(rcpt_from_127_0_0_2(front, "g@grey.test")
        .await
        .starts_with("250 "));
    assert!(rcpt_from_127_0_0_2(front, "g@grey.test")
        .await
        .starts_with("250 "));

    let from_client = |s: &Server| {
        s.capture
            .events()
            .into_iter()
            .filter(|e| {
                matches!(&e.kind, mailfault::capture::EventKind::Connect { client }
                    if client.starts_with("127.0.0.2:"))
            })
            .count()
    };
    // Round robin used both (haproxy's start-up probe from 127.0.0.1 may
    // have shifted the turn); each saw the client's address, not haproxy's.
    let (na, nb) = (from_client(&a), from_client(&b));
    assert_eq!(na + nb, 8);
    assert!(na >= 2 && nb >= 2, "round robin: {na} and {nb}");
    a.shutdown().await;
    b.shutdown().await;
}

/// Starts `mailfault serve` with these arguments; returns it and its address.
fn serve(args: &[&str]) -> (Child, SocketAddr) {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(common::bin())
        .arg("serve")
        .args(args)
        .args(["--listen", "127.0.0.1:0", "--no-watch"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("listening") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "no listening line");
    }
    (child, common::listening_addr(&line))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_state_flag() {
    let bad = Command::new(common::bin())
        .args([
            "serve",
            "--state",
            "mysql://127.0.0.1:1",
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("redis-cluster://HOST:PORT"), "{err}");
    if !have_redis() {
        return;
    }
    let redis = Redis::start();
    let dir = common::tmp("serve-state");
    let file = dir.join("shared.toml");
    std::fs::write(&file, SHARED).unwrap();
    let args = [
        "--scenario",
        file.to_str().unwrap(),
        "--state",
        &redis.url(),
        "--state-fail",
        "ignore",
    ];
    let (mut a, a_addr) = serve(&args);
    let (mut b, b_addr) = serve(&args);
    assert_eq!(rcpt(a_addr, "w@flaky.test").await, "451 4.3.0 Try later");
    assert_eq!(rcpt(b_addr, "w@flaky.test").await, "451 4.3.0 Try later");
    assert!(rcpt(a_addr, "w@flaky.test").await.starts_with("250 "));
    drop(redis);
    // --state-fail ignore: the greylist rule does not match while Redis is gone.
    assert!(rcpt(b_addr, "v@grey.test").await.starts_with("250 "));
    for c in [&mut a, &mut b] {
        let _ = c.kill();
        let _ = c.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_over_tls() {
    if !have_redis() {
        return;
    }
    let dir = common::tmp("rediss");
    let made = Command::new(common::bin())
        .args(["certs", "--hostname", "localhost", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(made.status.success());
    let f = |n: &str| dir.join(n).display().to_string();
    let port = free_port();
    let mut redis = Redis {
        port,
        child: None,
        extra: [
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            &f("server.pem"),
            "--tls-key-file",
            &f("server.key"),
            "--tls-ca-cert-file",
            &f("ca.pem"),
            "--tls-auth-clients",
            "no",
        ]
        .map(String::from)
        .to_vec(),
        cli_extra: ["--tls", "--cacert", &f("ca.pem")]
            .map(String::from)
            .to_vec(),
    };
    redis.restart();
    let file = dir.join("shared.toml");
    std::fs::write(&file, SHARED).unwrap();
    // The test CA is trusted through SSL_CERT_FILE, as a private CA would be.
    let mut child = Command::new(common::bin())
        .env("SSL_CERT_FILE", f("ca.pem"))
        .args(["serve", "--scenario", file.to_str().unwrap()])
        .args(["--state", &format!("rediss://127.0.0.1:{port}")])
        .args(["--listen", "127.0.0.1:0", "--no-watch"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr = {
        use std::io::{BufRead, BufReader};
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        while !line.starts_with("listening") {
            line.clear();
            assert!(out.read_line(&mut line).unwrap() > 0, "no listening line");
        }
        common::listening_addr(&line)
    };
    assert_eq!(rcpt(addr, "t@flaky.test").await, "451 4.3.0 Try later");
    assert_eq!(rcpt(addr, "t@flaky.test").await, "451 4.3.0 Try later");
    assert!(rcpt(addr, "t@flaky.test").await.starts_with("250 "));
    let keys = redis.cli(&["--scan", "--pattern", "mailfault:{shared:*"]);
    assert!(
        keys.contains("flaky.test"),
        "counters live in Redis: {keys}"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_costs_a_deadline_not_a_hang() {
    if !have_redis() {
        return;
    }
    let redis = Redis::start();
    let server = instance(&redis.url(), FailMode::Tempfail).await;
    let addr = server.listeners[0].addr;
    assert_eq!(rcpt(addr, "f@grey.test").await, "450 4.2.0 Greylisted");
    // Stopped, not dead: connections are accepted and never answered.
    let pid = redis.child.as_ref().unwrap().id();
    common::signal(pid, "STOP");
    let t = Instant::now();
    assert_eq!(
        rcpt(addr, "f@grey.test").await,
        "451 4.3.0 Temporary state store failure, try again later"
    );
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert_eq!(rcpt(addr, "u@bad.test").await, "550 5.1.1 No such user");
    common::signal(pid, "CONT");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rcpt(addr, "h@grey.test").await, "450 4.2.0 Greylisted");
    server.shutdown().await;
}

/// With Redis frozen, the sessions waiting for it hold no worker thread:
/// on a 2-worker runtime, sessions with stateless answers keep getting
/// them at once while several stateful decisions wait out their deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_waiting_for_a_frozen_redis_stall_no_other_session() {
    if !have_redis() {
        return;
    }
    let redis = Redis::start();
    let server = instance(&redis.url(), FailMode::Tempfail).await;
    let addr = server.listeners[0].addr;
    assert_eq!(rcpt(addr, "w@grey.test").await, "450 4.2.0 Greylisted");
    let pid = redis.child.as_ref().unwrap().id();
    common::signal(pid, "STOP");
    // More waiting decisions than worker threads, all at once.
    let waiting: Vec<_> = (0..6)
        .map(|i| tokio::spawn(async move { rcpt(addr, &format!("w{i}@grey.test")).await }))
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    for _ in 0..3 {
        let t = Instant::now();
        let mut c = Client::connect_addr(addr).await;
        assert!(c.reply().await.starts_with("220 "));
        c.expect("EHLO client.test", "250").await;
        c.expect("MAIL FROM:<s@example.test>", "250 ").await;
        assert_eq!(
            c.cmd("RCPT TO:<u@bad.test>").await,
            "550 5.1.1 No such user"
        );
        // A blocked worker would hold these behind the store's deadline.
        assert!(
            t.elapsed() < Duration::from_millis(300),
            "{:?}",
            t.elapsed()
        );
    }
    for w in waiting {
        assert_eq!(
            w.await.unwrap(),
            "451 4.3.0 Temporary state store failure, try again later"
        );
    }
    common::signal(pid, "CONT");
    server.shutdown().await;
}

const GATED_AND_COUNTED: &str = r#"
[[rule]]
on = "rcpt"
when = { rcpt = "*@gt.test" }
greylist = { retry_after = "1h" }
times = 1
reply = "450 4.2.0 Greylisted once"

[[rule]]
on = "rcpt"
when = { rcpt = "*@rt.test" }
key = ["client_ip"]
limit = { rate = "1/1m" }
sequence = ["451 4.7.0 First over", "452 4.7.0 Still over"]

[[rule]]
on = "rcpt"
when = { rcpt = "*@bad.test" }
reply = "550 5.1.1 No such user"

[[rule]]
on = "mail"
when = { mail_from = "rep@*" }
key = ["client_ip"]
reputation = { window = "1h", min_attempts = 3, max_failure_rate = 0.25 }
times = 1
reply = "550 5.7.1 Dirty list"
"#;

/// A rule with a gate and a counter (`greylist` with `times`, `limit` with
/// `sequence`): the counter moves only when the gate lets the rule apply,
/// in the same script as the gate, and Redis answers as memory does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_and_its_counter_answer_as_in_memory() {
    if !have_redis() {
        return;
    }
    let redis = Redis::start();
    for url in ["memory".to_string(), redis.url()] {
        let spec = ListenerSpec {
            addr: "127.0.0.1:0".parse().unwrap(),
            source: Source::Given(Arc::new(
                scenario::parse(GATED_AND_COUNTED, "test.toml", "gc").unwrap(),
            )),
            tls: Default::default(),
        };
        let mut opts = Options::new(vec![spec]);
        opts.grace = Duration::from_millis(200);
        opts.state = Backend::parse(&url, FailMode::Tempfail).unwrap();
        let server = Server::start(opts).await.unwrap();
        let addr = server.listeners[0].addr;
        let mut got = vec![];
        for to in ["a@gt.test", "a@gt.test", "a@gt.test"] {
            got.push(rcpt(addr, to).await);
        }
        for to in ["b@rt.test", "c@rt.test", "d@rt.test", "e@rt.test"] {
            got.push(rcpt(addr, to).await);
        }
        // Reputation by client IP: the 3 recipients accepted above and 2 of
        // these 3 refused is 2 of 6, over 25% (the outcomes reach the store
        // as effects); then the gate applies once (`times = 1`).
        let mut c = mail(addr, "rep@example.test").await;
        for to in ["x@bad.test", "y@bad.test", "z@ok.test"] {
            got.push(c.cmd(&format!("RCPT TO:<{to}>")).await);
        }
        for _ in 0..2 {
            let mut c = Client::connect_addr(addr).await;
            assert!(c.reply().await.starts_with("220 "));
            c.expect("EHLO client.test", "250").await;
            got.push(c.cmd("MAIL FROM:<rep@example.test>").await);
        }
        let codes: Vec<&str> = got.iter().map(|g| &g[..3]).collect();
        assert_eq!(
            codes,
            ["450", "250", "250", "250", "451", "452", "452", "550", "550", "250", "550", "250"],
            "{url}: {got:#?}"
        );
        server.shutdown().await;
    }
}
