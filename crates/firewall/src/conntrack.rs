//! Removing stale UDP conntrack entries for newly published ports, through ctnetlink.
//!
//! UDP has no connection setup: a client that sent to `host:53` before the mapping existed
//! has a conntrack entry without DNAT, and every later datagram of that flow follows the
//! entry, not the new rule, until it times out. The reference deletes those entries after
//! ADD; so do we, in-process (a dump of the family's table, then one delete per match) rather
//! than one `conntrack` process per port.
//!
//! Acts on the calling thread's network namespace (the socket is opened on it).

use std::io;

use netlink_sys::{Socket, protocols::NETLINK_NETFILTER};

use crate::model::Family;
use crate::ports::PortRange;

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_DST_PORT: u16 = 3;
const CTA_ZONE: u16 = 18;
const IPPROTO_UDP: u8 = 17;

/// Errors of the `conntrack` module.
#[derive(Debug, thiserror::Error)]
pub enum ConntrackError {
    #[error("open a ctnetlink socket")]
    Open(#[source] io::Error),
    #[error("dump the {family} conntrack table")]
    Dump {
        family: Family,
        #[source]
        source: io::Error,
    },
    #[error("delete {count} stale {family} UDP conntrack entries")]
    Delete {
        family: Family,
        count: usize,
        #[source]
        source: io::Error,
    },
}

/// Deletes the UDP conntrack entries whose original destination port is in one of `ports`
/// (per family). Returns how many went. Entries that vanish meanwhile are not an error.
pub fn delete_udp_entries(ports: &[(Family, PortRange)]) -> Result<usize, ConntrackError> {
    if ports.is_empty() {
        return Ok(0);
    }
    let mut socket = Socket::new(NETLINK_NETFILTER).map_err(ConntrackError::Open)?;
    socket.bind_auto().map_err(ConntrackError::Open)?;
    let mut deleted = 0;
    for family in Family::ALL {
        let ranges: Vec<PortRange> = ports
            .iter()
            .filter(|(f, _)| *f == family)
            .map(|(_, r)| *r)
            .collect();
        if ranges.is_empty() {
            continue;
        }
        let stale = dump(&socket, family, |port| {
            ranges.iter().any(|r| r.contains(port))
        })
        .map_err(|source| ConntrackError::Dump { family, source })?;
        let count = stale.len();
        delete(&socket, family, &stale).map_err(|source| ConntrackError::Delete {
            family,
            count,
            source,
        })?;
        deleted += count;
    }
    Ok(deleted)
}

fn af(family: Family) -> u8 {
    match family {
        Family::V4 => libc::AF_INET as u8,
        Family::V6 => libc::AF_INET6 as u8,
    }
}

/// nlmsghdr + nfgenmsg + attributes.
fn message(kind: u16, flags: u16, seq: u32, family: Family, attrs: &[u8]) -> Vec<u8> {
    let len = 16 + 4 + attrs.len();
    let mut msg = Vec::with_capacity(len);
    msg.extend_from_slice(&(len as u32).to_ne_bytes());
    msg.extend_from_slice(&((NFNL_SUBSYS_CTNETLINK << 8) | kind).to_ne_bytes());
    msg.extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
    msg.extend_from_slice(&seq.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(&[af(family), 0, 0, 0]);
    msg.extend_from_slice(attrs);
    msg
}

/// Iterates `(type, payload, raw attribute bytes with padding)` of an attribute stream.
fn attrs(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8], &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([buf[0], buf[1]]));
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > buf.len() {
            return None;
        }
        let padded = (len + 3) & !3;
        let raw = &buf[..len];
        let payload = &buf[4..len];
        buf = &buf[padded.min(buf.len())..];
        Some((kind, payload, raw))
    })
}

/// Walks the netlink messages of one `recv`, calling `f(type, body)` for each; returns true
/// at the end of a dump or an ack. Errors in NLMSG_ERROR become `io::Error`s.
fn messages(buf: &[u8], mut f: impl FnMut(u16, &[u8])) -> io::Result<bool> {
    let mut rest = buf;
    while rest.len() >= 16 {
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let kind = u16::from_ne_bytes([rest[4], rest[5]]);
        if len < 16 || len > rest.len() {
            break;
        }
        let body = &rest[16..len];
        match kind {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let code = body
                    .get(..4)
                    .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                if code != 0 {
                    return Err(io::Error::from_raw_os_error(-code));
                }
                return Ok(true);
            }
            _ => f(kind, body),
        }
        rest = &rest[((len + 3) & !3).min(rest.len())..];
    }
    Ok(false)
}

/// The `CTA_TUPLE_ORIG` (and `CTA_ZONE`) attributes of every UDP entry whose original
/// destination port `wanted` accepts: exactly what a delete request needs.
fn dump(socket: &Socket, family: Family, wanted: impl Fn(u16) -> bool) -> io::Result<Vec<Vec<u8>>> {
    socket.send(&message(IPCTNL_MSG_CT_GET, NLM_F_DUMP, 1, family, &[]), 0)?;
    let mut out = Vec::new();
    loop {
        let (buf, _) = socket.recv_from_full()?;
        let done = messages(&buf, |_, body| {
            let Some(attrs_buf) = body.get(4..) else {
                return;
            };
            let mut key = Vec::new();
            let mut matches = false;
            for (kind, payload, raw) in attrs(attrs_buf) {
                match kind {
                    CTA_TUPLE_ORIG => {
                        matches = is_udp_to(payload, &wanted);
                        key.extend_from_slice(raw);
                        pad(&mut key);
                    }
                    CTA_ZONE => {
                        key.extend_from_slice(raw);
                        pad(&mut key);
                    }
                    _ => {}
                }
            }
            if matches {
                out.push(key);
            }
        })?;
        if done {
            return Ok(out);
        }
    }
}

fn pad(buf: &mut Vec<u8>) {
    while buf.len() % 4 != 0 {
        buf.push(0);
    }
}

fn is_udp_to(tuple: &[u8], wanted: &impl Fn(u16) -> bool) -> bool {
    let Some((_, proto, _)) = attrs(tuple).find(|(k, _, _)| *k == CTA_TUPLE_PROTO) else {
        return false;
    };
    let (mut num, mut dport) = (None, None);
    for (kind, payload, _) in attrs(proto) {
        match kind {
            CTA_PROTO_NUM => num = payload.first().copied(),
            CTA_PROTO_DST_PORT if payload.len() >= 2 => {
                dport = Some(u16::from_be_bytes([payload[0], payload[1]]));
            }
            _ => {}
        }
    }
    num == Some(IPPROTO_UDP) && dport.is_some_and(wanted)
}

fn delete(socket: &Socket, family: Family, entries: &[Vec<u8>]) -> io::Result<()> {
    for (seq, key) in (2u32..).zip(entries) {
        // The attribute bytes are copied as received: CTA_TUPLE_ORIG stays nested.
        let _ = NLA_F_NESTED;
        socket.send(
            &message(IPCTNL_MSG_CT_DELETE, NLM_F_ACK, seq, family, key),
            0,
        )?;
        let (buf, _) = socket.recv_from_full()?;
        match messages(&buf, |_, _| {}) {
            Ok(_) => {}
            // Gone meanwhile (timed out, or deleted by someone else): fine.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nla(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(payload);
        pad(&mut v);
        v
    }

    #[test]
    fn recognises_udp_tuples_by_destination_port() {
        let proto = [
            nla(CTA_PROTO_NUM, &[IPPROTO_UDP]),
            nla(CTA_PROTO_DST_PORT, &53u16.to_be_bytes()),
        ]
        .concat();
        let tuple = nla(CTA_TUPLE_PROTO | NLA_F_NESTED, &proto);
        assert!(is_udp_to(&tuple, &|p| p == 53));
        assert!(!is_udp_to(&tuple, &|p| p == 54));
        let tcp = nla(
            CTA_TUPLE_PROTO | NLA_F_NESTED,
            &[
                nla(CTA_PROTO_NUM, &[6]),
                nla(CTA_PROTO_DST_PORT, &53u16.to_be_bytes()),
            ]
            .concat(),
        );
        assert!(!is_udp_to(&tcp, &|p| p == 53));
    }

    #[test]
    fn messages_have_the_ctnetlink_header() {
        let m = message(IPCTNL_MSG_CT_GET, NLM_F_DUMP, 7, Family::V6, &[]);
        assert_eq!(m.len(), 20);
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), 0x101);
        assert_eq!(m[16], libc::AF_INET6 as u8);
    }
}
