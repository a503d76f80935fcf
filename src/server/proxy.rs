//! The PROXY protocol, v1 (text) and v2 (binary), as HAProxy and other load
//! balancers send it before the client's first byte, so that rules, keys,
//! transcripts and the report see the client's address and not the
//! balancer's. Spec: haproxy.org/download/2.6/doc/proxy-protocol.txt.
//!
//! The header is read byte-exact (nothing of the SMTP dialogue that follows
//! is consumed), within [`HEADER_TIMEOUT`] and a size limit, and parsed by
//! the `ppp` crate. A listener that expects it closes a connection without
//! a valid header.

use std::net::SocketAddr;
use std::time::Duration;

use ppp::v1::Addresses as V1;
use ppp::v2::{Addresses as V2, Command};
use ppp::HeaderResult;
use tokio::io::{AsyncRead, AsyncReadExt};

/// How long a balancer may take to send the header.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest v1 header, CRLF included (spec §2.1).
const V1_MAX: usize = 107;
/// v2: 16 bytes, then the announced length; more than this is refused
/// (addresses take at most 216 bytes; the rest would be TLVs we ignore).
const V2_MAX: usize = 4096;
/// The v2 signature (spec §2.2).
const V2_SIG: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no PROXY protocol header within {0:?}")]
    Timeout(Duration),
    #[error("connection failed before the PROXY protocol header ended: {0}")]
    Io(#[from] std::io::Error),
    #[error("the connection does not start with a PROXY protocol header")]
    Missing,
    #[error("PROXY protocol header longer than {0} bytes")]
    TooLong(usize),
    #[error("invalid PROXY protocol header: {0}")]
    Invalid(String),
}

/// Reads the header from `stream` and returns the client's address (the
/// connection's own `peer` for v1 `UNKNOWN` and v2 `LOCAL`, e.g. the
/// balancer's health checks, as the spec asks).
pub async fn read_header<S: AsyncRead + Unpin>(
    stream: &mut S,
    peer: SocketAddr,
    within: Duration,
) -> Result<SocketAddr, ProxyError> {
    let bytes = tokio::time::timeout(within, read_bytes(stream))
        .await
        .map_err(|_| ProxyError::Timeout(within))??;
    source(&bytes, peer)
}

async fn read_bytes<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Vec<u8>, ProxyError> {
    // Both kinds are at least 8 bytes long ("PROXY UNKNOWN\r\n" is 15).
    let mut buf = vec![0u8; 8];
    stream.read_exact(&mut buf).await?;
    if buf.starts_with(b"PROXY ") {
        // One byte at a time: what follows the CRLF is the client's.
        while !buf.ends_with(b"\r\n") {
            if buf.len() >= V1_MAX {
                return Err(ProxyError::TooLong(V1_MAX));
            }
            buf.push(stream.read_u8().await?);
        }
        return Ok(buf);
    }
    if buf[..] != V2_SIG[..8] {
        return Err(ProxyError::Missing);
    }
    buf.resize(16, 0);
    stream.read_exact(&mut buf[8..]).await?;
    if buf[..12] != V2_SIG[..] {
        return Err(ProxyError::Missing);
    }
    let len = 16 + u16::from_be_bytes([buf[14], buf[15]]) as usize;
    if len > V2_MAX {
        return Err(ProxyError::TooLong(V2_MAX));
    }
    buf.resize(len, 0);
    stream.read_exact(&mut buf[16..]).await?;
    Ok(buf)
}

/// The client address a whole header names.
pub fn source(bytes: &[u8], peer: SocketAddr) -> Result<SocketAddr, ProxyError> {
    let invalid = |e: &dyn std::fmt::Debug| ProxyError::Invalid(format!("{e:?}"));
    Ok(match HeaderResult::parse(bytes) {
        HeaderResult::V1(Ok(h)) => match h.addresses {
            V1::Tcp4(a) => (a.source_address, a.source_port).into(),
            V1::Tcp6(a) => (a.source_address, a.source_port).into(),
            V1::Unknown => peer,
        },
        HeaderResult::V2(Ok(h)) => match (h.command, h.addresses) {
            (Command::Local, _) => peer,
            (_, V2::IPv4(a)) => (a.source_address, a.source_port).into(),
            (_, V2::IPv6(a)) => (a.source_address, a.source_port).into(),
            // UNIX sockets or unspecified: nothing better than the peer.
            _ => peer,
        },
        HeaderResult::V1(Err(e)) => return Err(invalid(&e)),
        HeaderResult::V2(Err(e)) => return Err(invalid(&e)),
    })
}

/// `ADDR,proxy` or `ADDR,proxy=FILE` (as given to `--listen` and
/// `--listen-tls`): the listen argument without the flag, and whether the
/// flag was there.
pub fn split_flag(arg: &str) -> (String, bool) {
    let (addr, file) = match arg.split_once('=') {
        Some((a, f)) => (a, Some(f)),
        None => (arg, None),
    };
    match addr.strip_suffix(",proxy") {
        Some(a) => (
            file.map_or_else(|| a.to_string(), |f| format!("{a}={f}")),
            true,
        ),
        None => (arg.to_string(), false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn peer() -> SocketAddr {
        "127.0.0.1:40000".parse().unwrap()
    }

    async fn read(input: &[u8]) -> (Result<SocketAddr, ProxyError>, Vec<u8>) {
        let (mut a, mut b) = tokio::io::duplex(8192);
        a.write_all(input).await.unwrap();
        drop(a);
        let got = read_header(&mut b, peer(), HEADER_TIMEOUT).await;
        let mut rest = vec![];
        let _ = b.read_to_end(&mut rest).await;
        (got, rest)
    }

    #[tokio::test]
    async fn v1_gives_the_client_and_leaves_the_dialogue() {
        let (got, rest) = read(b"PROXY TCP4 192.0.2.7 198.51.100.1 51000 25\r\nEHLO x\r\n").await;
        assert_eq!(got.unwrap(), "192.0.2.7:51000".parse().unwrap());
        assert_eq!(rest, b"EHLO x\r\n");
        let (got, _) = read(b"PROXY TCP6 2001:db8::1 2001:db8::2 1 25\r\n").await;
        assert_eq!(got.unwrap(), "[2001:db8::1]:1".parse().unwrap());
        let (got, _) = read(b"PROXY UNKNOWN\r\n").await;
        assert_eq!(got.unwrap(), peer());
    }

    #[tokio::test]
    async fn v2_gives_the_client_and_local_keeps_the_peer() {
        let client: SocketAddr = "203.0.113.9:6000".parse().unwrap();
        let server: SocketAddr = "127.0.0.1:25".parse().unwrap();
        let h = ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Proxy,
            ppp::v2::Protocol::Stream,
            (client, server),
        )
        .build()
        .unwrap();
        let (got, rest) = read(&[&h[..], b"QUIT\r\n"].concat()).await;
        assert_eq!(got.unwrap(), client);
        assert_eq!(rest, b"QUIT\r\n");
        let local = ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Local,
            ppp::v2::Protocol::Unspecified,
            ppp::v2::Addresses::Unspecified,
        )
        .build()
        .unwrap();
        assert_eq!(read(&local).await.0.unwrap(), peer());
    }

    #[tokio::test]
    async fn bad_headers_are_refused() {
        assert!(matches!(
            read(b"EHLO client.test\r\n").await.0,
            Err(ProxyError::Missing)
        ));
        let long = format!("PROXY TCP4 {}\r\n", "1".repeat(200));
        assert!(matches!(
            read(long.as_bytes()).await.0,
            Err(ProxyError::TooLong(107))
        ));
        assert!(matches!(
            read(b"PROXY TCP4 300.0.2.7 1.1.1.1 1 2\r\n").await.0,
            Err(ProxyError::Invalid(_))
        ));
        let mut big = V2_SIG.to_vec();
        big.extend([0x21, 0x11, 0xff, 0xff]);
        assert!(matches!(read(&big).await.0, Err(ProxyError::TooLong(4096))));
        assert!(matches!(read(b"PROXY TC").await.0, Err(ProxyError::Io(_))));
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_balancer_times_out() {
        let (_a, mut b) = tokio::io::duplex(64);
        let got = read_header(&mut b, peer(), HEADER_TIMEOUT).await;
        assert!(matches!(got, Err(ProxyError::Timeout(_))));
    }

    #[test]
    fn listen_flag() {
        assert_eq!(
            split_flag("127.0.0.1:25,proxy"),
            ("127.0.0.1:25".into(), true)
        );
        assert_eq!(
            split_flag("127.0.0.1:25,proxy=a,b.toml"),
            ("127.0.0.1:25=a,b.toml".into(), true)
        );
        assert_eq!(
            split_flag("127.0.0.1:25=x,proxy"),
            ("127.0.0.1:25=x,proxy".into(), false)
        );
        assert_eq!(split_flag("[::1]:25"), ("[::1]:25".into(), false));
    }
}
