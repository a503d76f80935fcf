//! Test harness: an in-process server on 127.0.0.1:0 and a raw SMTP client
//! that reads whole (multi-line) replies.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use mailfault::scenario;
use mailfault::server::{ListenerSpec, Options, Server, Source};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// Starts a server on a free loopback port with this scenario text.
pub async fn start(toml: &str) -> Server {
    let s = scenario::parse(toml, "test.toml", "test").unwrap_or_else(|e| panic!("{e}"));
    start_with(Source::Given(Arc::new(s))).await
}

pub async fn start_default() -> Server {
    start_with(Source::Default).await
}

pub async fn start_with(source: Source) -> Server {
    let mut opts = Options::new(vec![ListenerSpec {
        addr: "127.0.0.1:0".parse().unwrap(),
        source,
        tls: Default::default(),
    }]);
    opts.grace = Duration::from_millis(200);
    Server::start(opts).await.unwrap()
}

/// A raw SMTP client.
pub struct Client {
    r: BufReader<OwnedReadHalf>,
    w: OwnedWriteHalf,
}

impl Client {
    pub async fn connect(server: &Server) -> Self {
        Self::connect_addr(server.addr()).await
    }

    pub async fn connect_addr(addr: std::net::SocketAddr) -> Self {
        let s = TcpStream::connect(addr).await.unwrap();
        let (r, w) = s.into_split();
        Self {
            r: BufReader::new(r),
            w,
        }
    }

    /// Reads one whole reply; lines joined with "\n". Empty on EOF.
    pub async fn reply(&mut self) -> String {
        let mut all = vec![];
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(Duration::from_secs(30), self.r.read_line(&mut line))
                .await
                .expect("reply within 30 s")
                .unwrap_or(0);
            if n == 0 {
                break;
            }
            let l = line.trim_end_matches(['\r', '\n']).to_string();
            let last = l.as_bytes().get(3) != Some(&b'-');
            all.push(l);
            if last {
                break;
            }
        }
        all.join("\n")
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).await.unwrap();
    }

    /// Sends bytes; false when the server has closed the connection.
    pub async fn try_send(&mut self, bytes: &[u8]) -> bool {
        self.w.write_all(bytes).await.is_ok()
    }

    /// Sends a line and returns the reply.
    pub async fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    /// Sends a line and asserts the reply starts with `expected`.
    #[track_caller]
    pub fn expect<'a>(
        &'a mut self,
        line: &'a str,
        expected: &'a str,
    ) -> impl std::future::Future<Output = String> + 'a {
        let caller = std::panic::Location::caller();
        async move {
            let got = self.cmd(line).await;
            assert!(
                got.starts_with(expected),
                "{caller}: {line:?}: expected {expected:?}, got {got:?}"
            );
            got
        }
    }

    /// True when the server closed the connection (EOF within 5 s).
    pub async fn closed(&mut self) -> bool {
        let mut buf = String::new();
        matches!(
            tokio::time::timeout(Duration::from_secs(5), self.r.read_line(&mut buf)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    /// Greeting, EHLO, MAIL, RCPT.
    pub async fn envelope(&mut self, from: &str, to: &str) {
        assert!(self.reply().await.starts_with("220 "));
        self.expect("EHLO client.test", "250-").await;
        self.expect(&format!("MAIL FROM:<{from}>"), "250 ").await;
        self.expect(&format!("RCPT TO:<{to}>"), "250 ").await;
    }

    /// The message after a 354 (already received); returns the final reply.
    pub async fn data_body(&mut self, body: &str) -> String {
        self.send(body.as_bytes()).await;
        self.cmd(".").await
    }

    /// DATA with a small message; returns the final reply.
    pub async fn data(&mut self, body: &str) -> String {
        self.expect("DATA", "354 ").await;
        self.send(body.as_bytes()).await;
        self.cmd(".").await
    }
}

/// Path to the built binary.
/// Runs the binary with `args` to the end: exit code, stdout, stderr.
pub fn run<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (i32, String, String) {
    let out = std::process::Command::new(bin())
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_mailfault")
}

/// True when CI=true (or 1): a test's outside programs are mandatory there.
pub fn in_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true" | "1"))
}

/// True when `check` (a shell line) succeeds, i.e. an outside program can do
/// what a test needs. Otherwise the test skips with `missing` as the printed
/// reason, except in CI, where it fails: `.ci/run` installs every program.
pub fn capable(check: &str, missing: &str) -> bool {
    let ok = std::process::Command::new("sh")
        .args(["-c", &format!("({check}) >/dev/null 2>&1")])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        assert!(
            !in_ci(),
            "{missing}: mandatory with CI=true (.ci/run installs it)"
        );
        eprintln!("skipping: {missing}");
    }
    ok
}

/// True when a client program exists (see `capable`).
pub fn have(program: &str) -> bool {
    capable(
        &format!("command -v {program}"),
        &format!("{program} not installed"),
    )
}

/// swaks for plain SMTP.
pub fn have_swaks() -> bool {
    capable("swaks --version", "swaks not installed (install swaks)")
}

/// swaks with STARTTLS and SMTPS: it needs Perl's Net::SSLeay, which
/// Debian's swaks only recommends. `swaks --support` is swaks's own word.
pub fn have_swaks_tls() -> bool {
    have_swaks()
        && capable(
            "swaks --support 2>&1 | grep -q '^=== TLS supported'",
            "swaks has no TLS support (install libnet-ssleay-perl)",
        )
}

/// curl built with the smtp protocol.
pub fn have_curl_smtp() -> bool {
    capable(
        "curl -V | grep '^Protocols:' | grep -qw smtp",
        "curl missing or built without smtp (install curl)",
    )
}

/// curl built with smtps (implicit TLS).
pub fn have_curl_smtps() -> bool {
    capable(
        "curl -V | grep '^Protocols:' | grep -qw smtps",
        "curl missing or built without smtps (install curl with TLS)",
    )
}

/// python3 with smtplib.
pub fn have_python3() -> bool {
    capable(
        "python3 -c 'import smtplib'",
        "python3 missing or without smtplib (install python3)",
    )
}

/// python3 with smtplib and the ssl module (a python built without OpenSSL
/// headers has no ssl).
pub fn have_python3_ssl() -> bool {
    have_python3()
        && capable(
            "python3 -c 'import ssl, smtplib'",
            "python3 has no ssl module (install python3 built with OpenSSL)",
        )
}

/// The openssl command line (s_client, verify).
pub fn have_openssl() -> bool {
    capable("openssl version", "openssl not installed (install openssl)")
}

/// bash, for the shell loops in documented commands.
pub fn have_bash() -> bool {
    capable("bash -c true", "bash not installed")
}

/// Sends `sig` (such as "TERM") to a process with the shell's built-in
/// `kill`, so the tests need no procps on a minimal machine.
pub fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("sh")
        .args(["-c", &format!("kill -{sig} {pid}")])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{sig} {pid} failed");
}

/// A fresh folder for one test's files.
pub fn tmp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("mailfault-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Starts a TLS-capable server: STARTTLS on a plain listener (or implicit
/// TLS), with its own in-memory test CA. Returns the server and the CA PEM.
pub async fn start_tls(
    toml: &str,
    implicit: bool,
    fault: Option<mailfault::scenario::model::CertFault>,
) -> (Server, String) {
    use mailfault::certs::TestCa;
    use mailfault::server::{CaStore, TlsOptions};
    let s = scenario::parse(toml, "test.toml", "test").unwrap_or_else(|e| panic!("{e}"));
    let ca = TestCa::generate().unwrap();
    let pem = ca.cert_pem.clone();
    let mut opts = Options::new(vec![ListenerSpec {
        addr: "127.0.0.1:0".parse().unwrap(),
        source: Source::Given(Arc::new(s)),
        tls: TlsOptions {
            implicit,
            certificate: fault,
        },
    }]);
    opts.ca = Arc::new(CaStore::with(ca));
    opts.grace = Duration::from_millis(200);
    (Server::start(opts).await.unwrap(), pem)
}

/// Reads `listening smtp://ADDR scenario=...` lines printed by `serve`.
pub fn listening_addr(line: &str) -> std::net::SocketAddr {
    line.split("://")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("not a listening line: {line:?}"))
}

/// Runs a client program (swaks, curl, openssl...) to the end on a blocking
/// thread, so the in-process server keeps running meanwhile.
pub async fn output(program: &str, args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new(program);
    cmd.args(args);
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

/// One plain HTTP/1.1 request, its head only (`extra` are more header
/// lines, each ending in CRLF), with `Connection: close`: the response's
/// status, head and body. Blocking, with a 10 s read timeout, so a server
/// that never answers fails the test instead of hanging it.
pub fn http_head_only(addr: &str, method: &str, path: &str, extra: &str) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        c,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out)
        .expect("a whole response, then the close");
    let (head, body) = out.split_once("\r\n\r\n").expect("a response head");
    let status = head[9..12].parse().unwrap();
    (status, head.to_string(), body.to_string())
}
