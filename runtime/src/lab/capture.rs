//! `berth lab capture NODE:IF`: the packets of one interface of a lab as a pcap stream
//! (what `tcpdump -r`, `wireshark -k -i -` and tshark read), with nothing installed in the
//! node.
//!
//! An `AF_PACKET` socket is opened inside the node's network namespace (a socket keeps the
//! namespace it was created in, so the helper thread that entered it can end at once) and
//! bound to the interface's index there; it sees both directions, as tcpdump does. Each
//! packet is written as a classic pcap record (microsecond timestamps, link type Ethernet)
//! and flushed, so a reader on a pipe sees it at once.

use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{SystemTime, UNIX_EPOCH};

use berth_netlink::{Netlink, Netns};
use berth_topology::{Kind, NetworkMode, NodeInterface};

use crate::lab::source::Loaded;
use crate::lab::wire::{self, WireError};
use crate::state::{Status, Store};

/// The largest frame kept: a jumbo frame of containerlab's 9500-byte MTU and then some.
const SNAPLEN: usize = 65_535;

/// Errors of `lab capture`.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("{at} is not an interface of a link in lab {lab}")]
    NoEndpoint { lab: String, at: String },
    #[error("node {node} is not running")]
    NotRunning { node: String },
    #[error("node {node}")]
    Netns {
        node: String,
        #[source]
        source: WireError,
    },
    #[error("interface {at}")]
    Lookup {
        at: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("open a packet socket in the namespace of {node}")]
    Socket {
        node: String,
        #[source]
        source: io::Error,
    },
    #[error("bind the packet socket to {at}")]
    Bind {
        at: String,
        #[source]
        source: io::Error,
    },
    #[error("receive from {at}")]
    Receive {
        at: String,
        #[source]
        source: io::Error,
    },
    #[error("write the capture")]
    Write(#[source] io::Error),
}

/// Captures on `at` into `out` until `count` packets (`None`: until killed or the reader
/// goes away); `ready` is called once the socket is bound (the CLI says "listening").
/// Returns the number of packets written.
pub fn capture(
    store: &Store,
    loaded: &Loaded,
    at: &NodeInterface,
    count: Option<u64>,
    out: &mut dyn Write,
    ready: &mut dyn FnMut(),
) -> Result<u64, CaptureError> {
    let t = &loaded.topology;
    if t.find(at).is_none() {
        return Err(CaptureError::NoEndpoint {
            lab: t.name.to_string(),
            at: at.to_string(),
        });
    }
    let node = at.node.to_string();
    let netns = match t.nodes.get(&at.node) {
        Some(n) if n.kind == Kind::Linux && n.network_mode != Some(NetworkMode::Host) => {
            let container = t
                .container_name(&at.node)
                .map_err(|e| CaptureError::Lookup {
                    at: at.to_string(),
                    source: Box::new(e),
                })?;
            let record = store
                .find(container.as_str())
                .ok()
                .filter(|r| r.live_status() == Status::Running)
                .ok_or_else(|| CaptureError::NotRunning { node: node.clone() })?;
            wire::open_netns(&store.netns_of(&record)).map_err(|source| CaptureError::Netns {
                node: node.clone(),
                source,
            })?
        }
        // Bridge ports, `host:IF` and host-mode nodes: the lab's host namespace.
        _ => Netns::current().map_err(|e| CaptureError::Lookup {
            at: at.to_string(),
            source: Box::new(e),
        })?,
    };
    let index = Netlink::open_in(&netns)
        .map_err(|e| CaptureError::Lookup {
            at: at.to_string(),
            source: Box::new(e),
        })?
        .link_by_name(at.ifname.as_str())
        .map_err(|e| CaptureError::Lookup {
            at: at.to_string(),
            source: Box::new(e),
        })?
        .ok_or_else(|| CaptureError::Lookup {
            at: at.to_string(),
            source: "no such interface (is the link's node stopped?)".into(),
        })?
        .index;
    let socket = netns
        .run(packet_socket)
        .map_err(|e| CaptureError::Socket {
            node: node.clone(),
            source: io::Error::other(e),
        })?
        .map_err(|source| CaptureError::Socket {
            node: node.clone(),
            source,
        })?;
    bind(&socket, index).map_err(|source| CaptureError::Bind {
        at: at.to_string(),
        source,
    })?;

    out.write_all(&global_header())
        .map_err(CaptureError::Write)?;
    out.flush().map_err(CaptureError::Write)?;
    ready();
    let mut buf = vec![0u8; SNAPLEN];
    let mut written = 0u64;
    while count.is_none_or(|c| written < c) {
        // SAFETY: recv writes at most buf.len() bytes into buf, which lives for the call;
        // MSG_TRUNC makes it return the frame's full length even when that is larger.
        let n = unsafe {
            libc::recv(
                socket.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_TRUNC,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(CaptureError::Receive {
                at: at.to_string(),
                source: e,
            });
        }
        let original = usize::try_from(n).unwrap_or(0);
        let kept = original.min(buf.len());
        let record = record_header(SystemTime::now(), kept, original);
        let result = out
            .write_all(&record)
            .and_then(|()| out.write_all(&buf[..kept]))
            .and_then(|()| out.flush());
        match result {
            Ok(()) => written += 1,
            // The reader went away (`| head`, wireshark closed): the capture is over.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => break,
            Err(e) => return Err(CaptureError::Write(e)),
        }
    }
    Ok(written)
}

/// An `AF_PACKET` raw socket for every protocol, in the calling thread's namespace.
fn packet_socket() -> io::Result<OwnedFd> {
    let all = i32::from((libc::ETH_P_ALL as u16).to_be());
    // SAFETY: socket takes integers only; the result is checked before it is owned.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, all) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Binds the socket to interface `index`: only its packets arrive from then on.
fn bind(socket: &OwnedFd, index: u32) -> io::Result<()> {
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value before the fields are set.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    addr.sll_ifindex = i32::try_from(index).map_err(io::Error::other)?;
    // SAFETY: addr is a valid sockaddr_ll and the length passed is its size.
    let rc = unsafe {
        libc::bind(
            socket.as_raw_fd(),
            std::ptr::addr_of!(addr).cast(),
            u32::try_from(size_of::<libc::sockaddr_ll>()).map_err(io::Error::other)?,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The pcap file header: magic (microseconds), version 2.4, UTC, snaplen, Ethernet.
fn global_header() -> Vec<u8> {
    let mut h = Vec::with_capacity(24);
    h.extend_from_slice(&0xa1b2_c3d4u32.to_ne_bytes());
    h.extend_from_slice(&2u16.to_ne_bytes());
    h.extend_from_slice(&4u16.to_ne_bytes());
    h.extend_from_slice(&0i32.to_ne_bytes());
    h.extend_from_slice(&0u32.to_ne_bytes());
    h.extend_from_slice(&(SNAPLEN as u32).to_ne_bytes());
    h.extend_from_slice(&1u32.to_ne_bytes());
    h
}

/// A record header: seconds, microseconds, bytes kept, bytes on the wire.
fn record_header(at: SystemTime, kept: usize, original: usize) -> Vec<u8> {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut h = Vec::with_capacity(16);
    h.extend_from_slice(
        &u32::try_from(since.as_secs())
            .unwrap_or(u32::MAX)
            .to_ne_bytes(),
    );
    h.extend_from_slice(&since.subsec_micros().to_ne_bytes());
    h.extend_from_slice(&u32::try_from(kept).unwrap_or(u32::MAX).to_ne_bytes());
    h.extend_from_slice(&u32::try_from(original).unwrap_or(u32::MAX).to_ne_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcap_headers_have_the_classic_layout() {
        let g = global_header();
        assert_eq!(g.len(), 24);
        assert_eq!(g[..4], 0xa1b2_c3d4u32.to_ne_bytes());
        assert_eq!(g[20..], 1u32.to_ne_bytes());
        let r = record_header(
            UNIX_EPOCH + std::time::Duration::from_micros(1_500_000),
            60,
            98,
        );
        assert_eq!(r[..4], 1u32.to_ne_bytes());
        assert_eq!(r[4..8], 500_000u32.to_ne_bytes());
        assert_eq!(r[8..12], 60u32.to_ne_bytes());
        assert_eq!(r[12..], 98u32.to_ne_bytes());
    }
}
