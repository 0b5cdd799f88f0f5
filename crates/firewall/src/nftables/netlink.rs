//! Set element operations spoken directly to nf_tables over netlink: add, create, delete
//! (in one atomic batch) and get one element by key.
//!
//! Why not `nft`: the CLI first builds a cache of the table, and for any command that
//! touches a set it fetches the set's elements, so its cost grows with the number of
//! attachments (12 ms per call at 1000 here, against 2 ms in an empty table). The kernel
//! operations themselves are a hash insert or lookup. Only element operations are done here;
//! chains and rules (created once, rarely) still go through `nft`.
//!
//! Encoding, as nft sends it: keys and data are concatenations of fields, each padded to a
//! 4-byte register; addresses and ports in network order, marks in host order; a comment is
//! the userdata TLV `{0, len, "text\0"}`.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use netlink_sys::{Socket, protocols::NETLINK_NETFILTER};

use crate::runner::Program;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_GETSETELEM: u16 = 13;
const NFT_MSG_DELSETELEM: u16 = 14;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;
const NFPROTO_INET: u8 = 1;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_SET_ELEM_USERDATA: u16 = 6;
const NFTA_SET_ELEM_KEY_END: u16 = 10;
const NFTA_DATA_VALUE: u16 = 1;
const NFTNL_UDATA_SET_ELEM_COMMENT: u8 = 0;

/// One field of a key or data value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Ip(std::net::IpAddr),
    /// `inet_proto`: one byte.
    Proto(u8),
    /// `inet_service`: two bytes, network order.
    Port(u16),
    /// `mark`: four bytes, host order.
    Mark(u32),
}

/// Encodes fields as one register-padded value.
pub fn encode(fields: &[Field]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in fields {
        match f {
            Field::Ip(std::net::IpAddr::V4(ip)) => out.extend_from_slice(&ip.octets()),
            Field::Ip(std::net::IpAddr::V6(ip)) => out.extend_from_slice(&ip.octets()),
            Field::Proto(p) => out.push(*p),
            Field::Port(p) => out.extend_from_slice(&p.to_be_bytes()),
            Field::Mark(m) => out.extend_from_slice(&m.to_ne_bytes()),
        }
        while out.len() % 4 != 0 {
            out.push(0);
        }
    }
    out
}

/// A set element as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elem {
    pub key: Vec<u8>,
    /// End of the interval, for interval sets (concatenated ranges).
    pub key_end: Option<Vec<u8>>,
    pub data: Option<Vec<u8>>,
    pub comment: Option<String>,
}

/// What a batch does to one set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `add element`: no-op if the element exists with the same data, EBUSY if with other
    /// data.
    Add(&'static str, Vec<Elem>),
    /// `create element`: EEXIST if the key exists.
    Create(&'static str, Vec<Elem>),
    /// `delete element`: ENOENT if the key is missing.
    Delete(&'static str, Vec<Elem>),
}

/// A failed batch: the kernel's errno for the first failing operation (the whole batch was
/// rolled back).
#[derive(Debug, thiserror::Error)]
pub enum NlError {
    #[error("nf_tables netlink socket")]
    Socket(#[source] io::Error),
    #[error("nf_tables refused {op} in set {set}")]
    Refused {
        op: &'static str,
        set: &'static str,
        #[source]
        source: io::Error,
    },
}

impl NlError {
    pub fn errno(&self) -> Option<i32> {
        match self {
            NlError::Refused { source, .. } => source.raw_os_error(),
            NlError::Socket(_) => None,
        }
    }
}

/// A netlink socket in the calling thread's network namespace.
pub struct Nfnl {
    socket: Socket,
    seq: u32,
}

fn put_attr(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(payload);
    while buf.len() % 4 != 0 {
        buf.push(0);
    }
}

fn nested(kind: u16, build: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut inner = Vec::new();
    build(&mut inner);
    let mut out = Vec::new();
    put_attr(&mut out, kind | NLA_F_NESTED, &inner);
    out
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

fn elements_attr(elems: &[Elem]) -> Vec<u8> {
    nested(NFTA_SET_ELEM_LIST_ELEMENTS, |list| {
        for e in elems {
            list.extend(nested(NFTA_LIST_ELEM, |el| {
                el.extend(nested(NFTA_SET_ELEM_KEY, |k| {
                    put_attr(k, NFTA_DATA_VALUE, &e.key)
                }));
                if let Some(end) = &e.key_end {
                    el.extend(nested(NFTA_SET_ELEM_KEY_END, |k| {
                        put_attr(k, NFTA_DATA_VALUE, end)
                    }));
                }
                if let Some(data) = &e.data {
                    el.extend(nested(NFTA_SET_ELEM_DATA, |d| {
                        put_attr(d, NFTA_DATA_VALUE, data)
                    }));
                }
                if let Some(comment) = &e.comment {
                    let text = cstr(comment);
                    let mut udata = vec![NFTNL_UDATA_SET_ELEM_COMMENT, text.len() as u8];
                    udata.extend_from_slice(&text);
                    put_attr(el, NFTA_SET_ELEM_USERDATA, &udata);
                }
            }));
        }
    })
}

/// Walks attributes: `(type, payload)`.
fn attrs(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([buf[0], buf[1]]));
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > buf.len() {
            return None;
        }
        let payload = &buf[4..len];
        buf = &buf[((len + 3) & !3).min(buf.len())..];
        Some((kind, payload))
    })
}

impl Nfnl {
    pub fn open() -> Result<Nfnl, NlError> {
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(NlError::Socket)?;
        socket.bind_auto().map_err(NlError::Socket)?;
        Ok(Nfnl { socket, seq: 0 })
    }

    /// Closes the socket without waiting for the kernel to free what transactions deleted.
    ///
    /// Closing an nf_tables netlink socket waits until the objects that any transaction
    /// (ours or anyone's, in any namespace) deleted are freed, one RCU grace period
    /// (`nft_rcv_nl_event` → flush of the destroy work): 10–15 ms here, on the critical path
    /// of every DEL, and of the next ADD when it closes its socket while the previous DEL's
    /// period still runs. The deletion itself is complete once the batch was acked, and the
    /// kernel frees the objects on its own a grace period later; only the wait remains. So the socket goes to a
    /// short-lived helper process (`sleep`), whose exit is then the last close and does the
    /// waiting; our own copy closes at once. Without a `sleep` binary the socket simply
    /// closes here.
    pub fn release_later(self) {
        let Some(sleep) = Program::find("sleep") else {
            return;
        };
        let fd = self.socket.as_raw_fd();
        let mut cmd = Command::new(sleep.path());
        cmd.arg("0.2")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: runs in the forked child before exec and only calls fcntl(2), which is
        // async-signal-safe; `fd` stays open in the parent until after spawn returns.
        unsafe {
            cmd.pre_exec(move || {
                // Keep the socket across exec in the child only.
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        if let Ok(mut child) = cmd.spawn() {
            // Reap it, for callers that live on (the runtime); a plugin exits first and
            // leaves it to init.
            std::thread::spawn(move || child.wait());
        }
        drop(self);
    }

    fn header(&mut self, buf: &mut Vec<u8>, kind: u16, flags: u16, family: u8, res_id: u16) -> u32 {
        self.seq += 1;
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, patched by `finish`
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&self.seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(&[family, 0]);
        buf.extend_from_slice(&res_id.to_be_bytes());
        self.seq
    }

    fn finish(buf: &mut [u8], start: usize) {
        let len = (buf.len() - start) as u32;
        buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    }

    /// Applies `ops` in one transaction of table `inet <table>`: all or nothing.
    pub fn batch(&mut self, table: &str, ops: &[Op]) -> Result<(), NlError> {
        if ops.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        let start = buf.len();
        self.header(
            &mut buf,
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            0,
            NFNL_SUBSYS_NFTABLES,
        );
        Self::finish(&mut buf, start);
        let mut pending: Vec<(u32, &'static str, &'static str)> = Vec::new();
        for op in ops {
            let (msg, flags, set, elems, name) = match op {
                Op::Add(set, e) => (NFT_MSG_NEWSETELEM, NLM_F_CREATE, set, e, "add element"),
                Op::Create(set, e) => (
                    NFT_MSG_NEWSETELEM,
                    NLM_F_CREATE | NLM_F_EXCL,
                    set,
                    e,
                    "create element",
                ),
                Op::Delete(set, e) => (NFT_MSG_DELSETELEM, 0, set, e, "delete element"),
            };
            if elems.is_empty() {
                continue;
            }
            let start = buf.len();
            let seq = self.header(
                &mut buf,
                (NFNL_SUBSYS_NFTABLES << 8) | msg,
                NLM_F_REQUEST | NLM_F_ACK | flags,
                NFPROTO_INET,
                0,
            );
            put_attr(&mut buf, NFTA_SET_ELEM_LIST_TABLE, &cstr(table));
            put_attr(&mut buf, NFTA_SET_ELEM_LIST_SET, &cstr(set));
            buf.extend(elements_attr(elems));
            Self::finish(&mut buf, start);
            pending.push((seq, name, set));
        }
        let start = buf.len();
        self.header(
            &mut buf,
            NFNL_MSG_BATCH_END,
            NLM_F_REQUEST,
            0,
            NFNL_SUBSYS_NFTABLES,
        );
        Self::finish(&mut buf, start);
        self.socket.send(&buf, 0).map_err(NlError::Socket)?;
        // One ack (or error) per message.
        let mut first_error: Option<NlError> = None;
        while !pending.is_empty() {
            let (reply, _) = self.socket.recv_from_full().map_err(NlError::Socket)?;
            for (seq, code) in acks(&reply) {
                if let Some(i) = pending.iter().position(|(s, _, _)| *s == seq) {
                    let (_, op, set) = pending.remove(i);
                    if code != 0 && first_error.is_none() {
                        first_error = Some(NlError::Refused {
                            op,
                            set,
                            source: io::Error::from_raw_os_error(-code),
                        });
                    }
                }
            }
            if first_error.is_some() {
                break;
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The data of one element of `inet <table> <set>`, or `None` if there is no such key.
    pub fn get(
        &mut self,
        table: &str,
        set: &'static str,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, NlError> {
        let mut buf = Vec::new();
        self.header(
            &mut buf,
            (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETSETELEM,
            NLM_F_REQUEST | NLM_F_ACK,
            NFPROTO_INET,
            0,
        );
        put_attr(&mut buf, NFTA_SET_ELEM_LIST_TABLE, &cstr(table));
        put_attr(&mut buf, NFTA_SET_ELEM_LIST_SET, &cstr(set));
        buf.extend(elements_attr(&[Elem {
            key: key.to_vec(),
            key_end: None,
            data: None,
            comment: None,
        }]));
        Self::finish(&mut buf, 0);
        self.socket.send(&buf, 0).map_err(NlError::Socket)?;
        let mut data = None;
        loop {
            let (reply, _) = self.socket.recv_from_full().map_err(NlError::Socket)?;
            let mut rest = reply.as_slice();
            while rest.len() >= 16 {
                let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                let kind = u16::from_ne_bytes([rest[4], rest[5]]);
                if len < 16 || len > rest.len() {
                    break;
                }
                let body = &rest[16..len];
                match kind {
                    NLMSG_ERROR | NLMSG_DONE => {
                        let code = body
                            .get(..4)
                            .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                        return match code {
                            0 => Ok(data),
                            c if -c == libc::ENOENT => Ok(None),
                            c => Err(NlError::Refused {
                                op: "get element",
                                set,
                                source: io::Error::from_raw_os_error(-c),
                            }),
                        };
                    }
                    _ => data = data.or_else(|| element_data(body.get(4..).unwrap_or(&[]))),
                }
                rest = &rest[((len + 3) & !3).min(rest.len())..];
            }
        }
    }
}

/// `(seq, error code)` of every NLMSG_ERROR in a reply.
fn acks(reply: &[u8]) -> Vec<(u32, i32)> {
    let mut out = Vec::new();
    let mut rest = reply;
    while rest.len() >= 16 {
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let kind = u16::from_ne_bytes([rest[4], rest[5]]);
        if len < 16 || len > rest.len() {
            break;
        }
        let body = &rest[16..len];
        if kind == NLMSG_ERROR && body.len() >= 4 + 16 {
            let code = i32::from_ne_bytes([body[0], body[1], body[2], body[3]]);
            // The original request's header follows the code: its seq says which one.
            let seq = u32::from_ne_bytes([body[12], body[13], body[14], body[15]]);
            out.push((seq, code));
        }
        rest = &rest[((len + 3) & !3).min(rest.len())..];
    }
    out
}

/// The data value of the first element in a NEWSETELEM reply's attributes.
fn element_data(attrs_buf: &[u8]) -> Option<Vec<u8>> {
    let (_, list) = attrs(attrs_buf).find(|(k, _)| *k == NFTA_SET_ELEM_LIST_ELEMENTS)?;
    let (_, elem) = attrs(list).find(|(k, _)| *k == NFTA_LIST_ELEM)?;
    let (_, data) = attrs(elem).find(|(k, _)| *k == NFTA_SET_ELEM_DATA)?;
    let (_, value) = attrs(data).find(|(k, _)| *k == NFTA_DATA_VALUE)?;
    Some(value.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_encode_like_nft() {
        // From `nft --debug=netlink add element … { 192.0.2.1 . tcp . 53 : 10.88.0.5 . 5353 }`:
        // element 010200c0 00000006 00003500  : 0500580a 0000e914
        let key = encode(&[
            Field::Ip("192.0.2.1".parse().unwrap()),
            Field::Proto(6),
            Field::Port(53),
        ]);
        assert_eq!(key, [192, 0, 2, 1, 6, 0, 0, 0, 0, 53, 0, 0]);
        let data = encode(&[Field::Ip("10.88.0.5".parse().unwrap()), Field::Port(5353)]);
        assert_eq!(data, [10, 88, 0, 5, 0x14, 0xe9, 0, 0]);
        assert_eq!(encode(&[Field::Mark(1)]), 1u32.to_ne_bytes());
    }

    #[test]
    fn elements_nest_key_data_and_comment() {
        let attr = elements_attr(&[Elem {
            key: vec![1, 2, 3, 4],
            key_end: None,
            data: Some(vec![5, 6, 7, 8]),
            comment: Some("x".into()),
        }]);
        let (kind, list) = attrs(&attr).next().unwrap();
        assert_eq!(kind, NFTA_SET_ELEM_LIST_ELEMENTS);
        let (_, elem) = attrs(list).next().unwrap();
        let kinds: Vec<u16> = attrs(elem).map(|(k, _)| k).collect();
        assert_eq!(
            kinds,
            [
                NFTA_SET_ELEM_KEY,
                NFTA_SET_ELEM_DATA,
                NFTA_SET_ELEM_USERDATA
            ]
        );
        let (_, udata) = attrs(elem).nth(2).unwrap();
        assert_eq!(udata, [0, 2, b'x', 0]);
    }
}
