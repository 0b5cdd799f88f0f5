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

use crate::model::Family;
use crate::nfnetlink::{
    self, Attr, DecodeError, EncodeError, Header, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NfGenMsg,
    NfnlError, NfnlSocket, Writer, msg_type,
};
use crate::ports::PortRange;

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
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
    let mut socket = NfnlSocket::open().map_err(|e| ConntrackError::Open(e.into_io()))?;
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
        let stale = dump(&mut socket, family, |port| {
            ranges.iter().any(|r| r.contains(port))
        })
        .map_err(|e| ConntrackError::Dump {
            family,
            source: e.into_io(),
        })?;
        let count = stale.len();
        delete(&mut socket, family, &stale).map_err(|e| ConntrackError::Delete {
            family,
            count,
            source: e.into_io(),
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

/// A ctnetlink request: nlmsghdr + nfgenmsg + `attrs` (already encoded).
fn request(
    kind: u16,
    flags: u16,
    seq: u32,
    family: Family,
    attrs: &[u8],
) -> Result<Vec<u8>, EncodeError> {
    let mut w = Writer::new();
    w.message(
        Header::request(
            msg_type(NFNL_SUBSYS_CTNETLINK, kind),
            NLM_F_REQUEST | flags,
            seq,
        ),
        NfGenMsg::family(af(family)),
        |a| {
            a.raw(attrs);
        },
    );
    w.finish()
}

/// The `CTA_TUPLE_ORIG` (and `CTA_ZONE`) attributes of every UDP entry whose original
/// destination port `wanted` accepts: exactly what a delete request needs.
fn dump(
    socket: &mut NfnlSocket,
    family: Family,
    wanted: impl Fn(u16) -> bool,
) -> Result<Vec<Vec<u8>>, NfnlError> {
    let seq = socket.next_seq();
    socket.send(&request(IPCTNL_MSG_CT_GET, NLM_F_DUMP, seq, family, &[])?)?;
    let mut out = Vec::new();
    socket.answer(seq, |msg| {
        let mut key: Vec<Attr<'_>> = Vec::new();
        let mut matches = false;
        for attr in msg.attrs()? {
            let attr = attr?;
            match attr.kind() {
                CTA_TUPLE_ORIG => {
                    matches = is_udp_to(attr.payload(), &wanted)?;
                    key.push(attr);
                }
                CTA_ZONE => key.push(attr),
                _ => {}
            }
        }
        if matches {
            // Copied as received: CTA_TUPLE_ORIG stays nested, the zone as it was.
            out.push(nfnetlink::encode_attrs(|a| {
                for attr in &key {
                    a.raw(attr.raw());
                }
            })?);
        }
        Ok(())
    })?;
    Ok(out)
}

fn is_udp_to(tuple: &[u8], wanted: &impl Fn(u16) -> bool) -> Result<bool, DecodeError> {
    let Some(proto) = nfnetlink::attrs(tuple).find_kind(CTA_TUPLE_PROTO)? else {
        return Ok(false);
    };
    let (mut num, mut dport) = (None, None);
    for attr in proto.nested() {
        let attr = attr?;
        match attr.kind() {
            CTA_PROTO_NUM => num = Some(attr.u8()?),
            CTA_PROTO_DST_PORT => dport = Some(attr.be16()?),
            _ => {}
        }
    }
    Ok(num == Some(IPPROTO_UDP) && dport.is_some_and(wanted))
}

fn delete(socket: &mut NfnlSocket, family: Family, entries: &[Vec<u8>]) -> Result<(), NfnlError> {
    for key in entries {
        let seq = socket.next_seq();
        socket.send(&request(IPCTNL_MSG_CT_DELETE, NLM_F_ACK, seq, family, key)?)?;
        match socket.answer(seq, |_| Ok(())) {
            Ok(()) => {}
            // Gone meanwhile (timed out, or deleted by someone else): fine.
            Err(e) if e.errno() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

    use super::*;
    use crate::nfnetlink::NLA_F_NESTED;

    fn nla(kind: u16, payload: &[u8]) -> Vec<u8> {
        nfnetlink::encode_attrs(|a| {
            a.put(kind, payload);
        })
        .unwrap()
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn recognises_udp_tuples_by_destination_port() {
        let proto = [
            nla(CTA_PROTO_NUM, &[IPPROTO_UDP]),
            nla(CTA_PROTO_DST_PORT, &53u16.to_be_bytes()),
        ]
        .concat();
        let tuple = nla(CTA_TUPLE_PROTO | NLA_F_NESTED, &proto);
        assert!(is_udp_to(&tuple, &|p| p == 53).unwrap());
        assert!(!is_udp_to(&tuple, &|p| p == 54).unwrap());
        let tcp = nla(
            CTA_TUPLE_PROTO | NLA_F_NESTED,
            &[
                nla(CTA_PROTO_NUM, &[6]),
                nla(CTA_PROTO_DST_PORT, &53u16.to_be_bytes()),
            ]
            .concat(),
        );
        assert!(!is_udp_to(&tcp, &|p| p == 53).unwrap());
        assert!(!is_udp_to(&[], &|p| p == 53).unwrap());
        // A tuple cut short is an error, not a guess.
        assert!(is_udp_to(&tuple[..tuple.len() - 4], &|p| p == 53).is_err());
    }

    #[test]
    fn messages_have_the_ctnetlink_header() {
        let m = request(IPCTNL_MSG_CT_GET, NLM_F_DUMP, 7, Family::V6, &[]).unwrap();
        assert_eq!(m.len(), 20);
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), 0x101);
        assert_eq!(m[16], libc::AF_INET6 as u8);
    }

    #[test]
    fn requests_are_byte_for_byte_those_of_the_hand_rolled_encoder() {
        // Captured from the encoder this module had before the shared codec (x86-64).
        if cfg!(target_endian = "big") {
            return;
        }
        let dump = request(IPCTNL_MSG_CT_GET, NLM_F_DUMP, 1, Family::V4, &[]).unwrap();
        assert_eq!(hex(&dump), "1400000001010103010000000000000002000000");
        let key = [
            nla(
                CTA_TUPLE_ORIG | NLA_F_NESTED,
                &nla(
                    CTA_TUPLE_PROTO | NLA_F_NESTED,
                    &nla(CTA_PROTO_NUM, &[IPPROTO_UDP]),
                ),
            ),
            nla(CTA_ZONE, &[0, 5]),
        ]
        .concat();
        let del = request(IPCTNL_MSG_CT_DELETE, NLM_F_ACK, 2, Family::V6, &key).unwrap();
        assert_eq!(
            hex(&del),
            "2c0000000201050002000000000000000a000000100001800c00028005000100\
             110000000600120000050000"
        );
    }
}
