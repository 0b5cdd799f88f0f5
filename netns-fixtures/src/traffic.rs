//! Real traffic between test namespaces: a veth cable, a TCP+UDP server that answers with a
//! fixed text, and one-shot clients that return what they read (`None`: no answer).
//!
//! Failing to enter a namespace is an infrastructure failure, not "no answer": the clients
//! panic then, so an assertion that a port is closed cannot pass by accident.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::{TestNetns, TestNetnsError};

/// How long a client waits to connect and for the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_millis(700);

/// Errors of the `traffic` module.
#[derive(Debug, thiserror::Error)]
pub enum TrafficError {
    #[error(transparent)]
    Netns(#[from] TestNetnsError),
    #[error("enter {ns} to bind {addr}")]
    Enter {
        ns: String,
        addr: SocketAddr,
        #[source]
        source: berth_netlink::NetnsError,
    },
    #[error("bind {addr} in {ns}")]
    Bind {
        ns: String,
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// A veth pair between `a` (named `a_if`) and `b` (named `b_if`), both ends up.
pub fn wire(a: &TestNetns, a_if: &str, b: &TestNetns, b_if: &str) -> Result<(), TrafficError> {
    a.ip(&[
        "link",
        "add",
        a_if,
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "netns",
        b.name(),
    ])?;
    a.ip(&["link", "set", a_if, "up"])?;
    b.ip(&["link", "set", b_if, "up"])?;
    Ok(())
}

/// A TCP and a UDP server on one address in a namespace, answering every connection and
/// datagram with `reply`. The sockets are opened inside the namespace (and stay there); the
/// serving threads stop on drop.
pub struct EchoServer {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl EchoServer {
    pub fn start(
        ns: &TestNetns,
        addr: SocketAddr,
        reply: &str,
    ) -> Result<EchoServer, TrafficError> {
        let bind_err = |source| TrafficError::Bind {
            ns: ns.name().to_owned(),
            addr,
            source,
        };
        let (tcp, udp) = ns
            .run(|| (TcpListener::bind(addr), UdpSocket::bind(addr)))
            .map_err(|source| TrafficError::Enter {
                ns: ns.name().to_owned(),
                addr,
                source,
            })?;
        let (tcp, udp) = (tcp.map_err(bind_err)?, udp.map_err(bind_err)?);
        // Polling, so the threads notice `stop` without a connection to wake them.
        tcp.set_nonblocking(true).map_err(bind_err)?;
        udp.set_read_timeout(Some(Duration::from_millis(20)))
            .map_err(bind_err)?;
        let stop = Arc::new(AtomicBool::new(false));
        let (s, r) = (stop.clone(), reply.to_owned());
        let tcp_thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match tcp.accept() {
                    Ok((mut conn, _)) => {
                        let _ = conn.set_nonblocking(false);
                        let _ = conn.write_all(r.as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        let (s, r) = (stop.clone(), reply.to_owned());
        let udp_thread = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while !s.load(Ordering::Relaxed) {
                if let Ok((_, from)) = udp.recv_from(&mut buf) {
                    let _ = udp.send_to(r.as_bytes(), from);
                }
            }
        });
        Ok(EchoServer {
            stop,
            threads: vec![tcp_thread, udp_thread],
        })
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn in_ns<T: Send>(ns: &TestNetns, f: impl FnOnce() -> T + Send) -> T {
    ns.run(f)
        .unwrap_or_else(|e| panic!("enter {} for a client: {e}", ns.name()))
}

/// What a TCP connection from `ns` to `to` reads, or `None` if it cannot connect.
pub fn tcp_get(ns: &TestNetns, to: SocketAddr) -> Option<String> {
    in_ns(ns, || {
        let mut s = TcpStream::connect_timeout(&to, CLIENT_TIMEOUT).ok()?;
        s.set_read_timeout(Some(CLIENT_TIMEOUT)).ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out)
    })
}

/// The answer to one UDP datagram from `ns` (bound to `from` if given) to `to`.
pub fn udp_get(ns: &TestNetns, to: SocketAddr, from: Option<SocketAddr>) -> Option<String> {
    in_ns(ns, || {
        let local = from.unwrap_or_else(|| match to {
            SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
            SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
        });
        let s = UdpSocket::bind(local).ok()?;
        s.set_read_timeout(Some(CLIENT_TIMEOUT)).ok()?;
        s.send_to(b"hi", to).ok()?;
        let mut buf = [0u8; 64];
        let (n, _) = s.recv_from(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    })
}
