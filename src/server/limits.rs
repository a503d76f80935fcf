//! Limits that protect the process, shared by every listener: the message
//! memory budget, sessions per client IP, and the listen backlog. Every
//! limit mailfault has is listed in docs/limits.md.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::proto::MemoryBudget;

/// Default for `--backlog`. Linux caps it at `net.core.somaxconn` (4096 on
/// current kernels); 128 overflowed with 200 simultaneous connects.
pub const DEFAULT_BACKLOG: u32 = 4096;

/// What every connection of the server shares.
pub struct Shared {
    /// Bytes of message buffers in flight, all sessions together.
    pub budget: Arc<MemoryBudget>,
    /// Open sessions per client IP (0: no limit).
    pub per_ip: PerIp,
    /// No session lives longer than this.
    pub lifetime: Duration,
}

/// Counts open sessions per client IP.
pub struct PerIp {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One session counted for its IP; uncounted on drop, however the session
/// ends.
pub struct IpSlot<'a> {
    per_ip: &'a PerIp,
    ip: IpAddr,
}

impl PerIp {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one more session from `ip`, or None when it already has the
    /// most it may have. Entries go when their count reaches 0, so the map
    /// holds only IPs with open sessions.
    pub fn enter(&self, ip: IpAddr) -> Option<IpSlot<'_>> {
        if self.max == 0 {
            return Some(IpSlot { per_ip: self, ip });
        }
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(IpSlot { per_ip: self, ip })
    }

    /// IPs with a session counted now.
    pub fn tracked(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl Drop for IpSlot<'_> {
    fn drop(&mut self) {
        if self.per_ip.max == 0 {
            return;
        }
        let mut open = self.per_ip.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Binds a listener with an explicit backlog: a load test opening hundreds
/// of connections at once needs the kernel to queue them rather than drop
/// SYNs, which costs each client a 1 s retransmit.
pub fn bind(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    // As tokio's own bind does: a restarted server can take its port back
    // while old connections sit in TIME_WAIT.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    // Copied to every accepted socket where the system does (see
    // `nodelay`); a system that refuses it here only costs a call each.
    let _ = socket.set_nodelay(true);
    socket.bind(addr)?;
    socket.listen(backlog.max(1))
}

/// Makes an accepted socket send each reply at once (TCP_NODELAY): the
/// replies to a pipelined batch are separate writes, and under Nagle's
/// algorithm the second would wait for the client's delayed ACK.
///
/// Linux copies the option from the listening socket, which `bind` sets
/// on every listener (those added at run time too), so a listener asks its
/// first connection (`inherited` starts as `None`) and later ones spend a
/// system call on it only on a system that did not copy it.
pub fn nodelay(stream: &TcpStream, inherited: &mut Option<bool>) {
    if !*inherited.get_or_insert_with(|| stream.nodelay().unwrap_or(false)) {
        let _ = stream.set_nodelay(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_counts_and_forgets() {
        let p = PerIp::new(2);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let a = p.enter(ip).unwrap();
        let b = p.enter(ip).unwrap();
        assert!(p.enter(ip).is_none());
        let c = p.enter(other).unwrap();
        drop(a);
        let d = p.enter(ip).unwrap();
        drop((b, c, d));
        assert_eq!(p.tracked(), 0);
    }

    /// Every accepted socket ends up with TCP_NODELAY: copied from a
    /// listener made by `bind`, set by hand where it was not copied (here a
    /// listener without it, as on a system that does not copy it).
    #[tokio::test]
    async fn accepted_sockets_send_each_reply_at_once() {
        let by_bind = bind("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        plain.set_nonblocking(true).unwrap();
        let plain = TcpListener::from_std(plain).unwrap();
        for (listener, copied) in [(by_bind, true), (plain, false)] {
            let mut inherited = None;
            for _ in 0..2 {
                let client = TcpStream::connect(listener.local_addr().unwrap());
                let (_client, accepted) = tokio::join!(client, listener.accept());
                let (stream, _) = accepted.unwrap();
                nodelay(&stream, &mut inherited);
                assert!(stream.nodelay().unwrap());
            }
            // Linux copies it; other systems may not, and then it is set.
            #[cfg(target_os = "linux")]
            assert_eq!(inherited, Some(copied));
            #[cfg(not(target_os = "linux"))]
            let _ = copied;
        }
    }

    #[test]
    fn zero_means_no_limit() {
        let p = PerIp::new(0);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let slots: Vec<_> = (0..100).map(|_| p.enter(ip).unwrap()).collect();
        assert_eq!(slots.len(), 100);
        assert_eq!(p.tracked(), 0);
    }
}
