//! PROXY protocol on SMTP listeners: the address in the header is the
//! client rules, transcripts and the report see; a connection without a
//! valid header is closed. (HAProxy in front of two instances:
//! tests/redis.rs.)

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Client;
use mailfault::capture::EventKind;
use mailfault::scenario;
use mailfault::server::{ListenerSpec, Options, Server, Source};

const DOC_NET: &str = r#"
[[rule]]
on = "rcpt"
when = { client_ip = "192.0.2.0/24" }
reply = "550 5.7.1 Documentation addresses are not welcome"
"#;

/// A server whose only listener expects a PROXY header.
async fn start(toml: &str) -> Server {
    let s = scenario::parse(toml, "test.toml", "proxy").unwrap_or_else(|e| panic!("{e}"));
    let mut opts = Options::new(vec![ListenerSpec {
        addr: "127.0.0.1:0".parse().unwrap(),
        source: Source::Given(Arc::new(s)),
        tls: Default::default(),
    }]);
    opts.grace = Duration::from_millis(200);
    opts.proxy = vec![0];
    Server::start(opts).await.unwrap()
}

async fn rcpt_after(addr: SocketAddr, header: &[u8]) -> String {
    let mut c = Client::connect_addr(addr).await;
    c.send(header).await;
    assert!(c.reply().await.starts_with("220 "));
    c.expect("EHLO client.test", "250").await;
    c.expect("MAIL FROM:<a@example.test>", "250 ").await;
    c.cmd("RCPT TO:<b@example.test>").await
}

fn clients(server: &Server) -> Vec<String> {
    server
        .capture
        .events()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Connect { client } => Some(client),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_v1_header_with_a_documentation_address_makes_a_client_ip_rule_fire() {
    let server = start(DOC_NET).await;
    let got = rcpt_after(
        server.addr(),
        b"PROXY TCP4 192.0.2.25 127.0.0.1 40125 25\r\n",
    )
    .await;
    assert_eq!(got, "550 5.7.1 Documentation addresses are not welcome");
    let got = rcpt_after(
        server.addr(),
        b"PROXY TCP4 198.51.100.3 127.0.0.1 40126 25\r\n",
    )
    .await;
    assert!(got.starts_with("250 "), "{got}");
    // Transcripts (and so the report) see the header's address.
    assert_eq!(clients(&server), ["192.0.2.25:40125", "198.51.100.3:40126"]);
    server.shutdown().await;
}

#[tokio::test]
async fn a_v2_header_gives_the_client_too() {
    let server = start(DOC_NET).await;
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    // PROXY command, TCP over IPv4, 12 bytes of addresses.
    h.extend([
        0x21, 0x11, 0, 12, 192, 0, 2, 99, 127, 0, 0, 1, 0x9c, 0x40, 0, 25,
    ]);
    let got = rcpt_after(server.addr(), &h).await;
    assert_eq!(got, "550 5.7.1 Documentation addresses are not welcome");
    assert_eq!(clients(&server), ["192.0.2.99:40000"]);
    server.shutdown().await;
}

#[tokio::test]
async fn no_header_no_session() {
    let server = start(DOC_NET).await;
    let mut c = Client::connect_addr(server.addr()).await;
    c.send(b"EHLO client.test\r\n").await;
    assert!(c.closed().await, "closed without a greeting");
    let mut c = Client::connect_addr(server.addr()).await;
    c.send(b"PROXY TCP4 999.0.2.1 127.0.0.1 1 25\r\n").await;
    assert!(c.closed().await, "an invalid header is refused");
    assert!(clients(&server).is_empty(), "no session started");
    server.shutdown().await;
}

/// The binary: `--listen ADDR,proxy=FILE` and `--proxy-protocol`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_flags() {
    let dir = common::tmp("proxy-flags");
    let file = dir.join("doc.toml");
    std::fs::write(&file, DOC_NET).unwrap();
    for args in [
        vec![
            "--listen".to_string(),
            format!("127.0.0.1:0,proxy={}", file.display()),
        ],
        vec![
            "--proxy-protocol".to_string(),
            "--scenario".to_string(),
            file.display().to_string(),
            "--listen".to_string(),
            "127.0.0.1:0".to_string(),
        ],
    ] {
        let mut child = Command::new(common::bin())
            .arg("serve")
            .args(&args)
            .arg("--no-watch")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let deadline = Instant::now() + Duration::from_secs(20);
        while !line.starts_with("listening") {
            line.clear();
            assert!(
                out.read_line(&mut line).unwrap() > 0,
                "{args:?}: no listening line"
            );
            assert!(Instant::now() < deadline);
        }
        let addr = common::listening_addr(&line);
        let got = rcpt_after(addr, b"PROXY TCP4 192.0.2.1 127.0.0.1 1000 25\r\n").await;
        assert_eq!(
            got, "550 5.7.1 Documentation addresses are not welcome",
            "{args:?}"
        );
        let _ = child.kill();
        let _ = child.wait();
    }
}
