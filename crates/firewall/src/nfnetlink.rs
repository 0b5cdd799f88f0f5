//! The netfilter netlink (nfnetlink) wire format and its request/answer rules, shared by
//! ctnetlink ([`crate::conntrack`]) and nf_tables (`nftables::netlink`).
//!
//! A message is an `nlmsghdr` (16 bytes: length, type, flags, sequence number, port id),
//! an `nfgenmsg` (4 bytes: address family, version, resource id in network order), then
//! attributes. An attribute is an `nlattr` (2-byte length of header + payload without
//! padding, 2-byte type whose top two bits are flags) and its payload, padded to 4 bytes; a
//! nested attribute's payload is attributes again. Header fields are in host order; each
//! payload's order is the attribute's own business (ports big-endian, marks host order…).
//!
//! The kernel answers a request with data messages (a dump ends with `NLMSG_DONE`), and
//! with one `NLMSG_ERROR` when the request asked for an ack (`NLM_F_ACK`) or failed: a
//! negative errno (0 for success) and a copy of the request's header. Every answer carries
//! the sequence number of the request it answers; in an nf_tables batch each message is
//! acked on its own and the kernel rolls the whole batch back at the first failure.
//!
//! This file is the wire format; [`socket`] sends requests and reads their answers.
//!
//! Nothing here panics on what it is given: the builder records a length that does not fit
//! its field and reports it from [`Writer::finish`] (the hand-rolled writers this replaces
//! truncated it silently), and the parsers return a [`DecodeError`] for a length that runs
//! past its buffer.

mod socket;

pub use socket::{NfnlError, NfnlSocket};

pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_EXCL: u16 = 0x200;
pub const NLM_F_CREATE: u16 = 0x400;
/// `NLM_F_ROOT | NLM_F_MATCH`.
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLA_F_NESTED: u16 = 0x8000;
const NLA_F_NET_BYTEORDER: u16 = 0x4000;
const NLA_TYPE_MASK: u16 = !(NLA_F_NESTED | NLA_F_NET_BYTEORDER);
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
/// Delimiters of an nf_tables transaction: nfnetlink's own types, not a subsystem's; the
/// subsystem goes in the `res_id` of their `nfgenmsg`.
pub const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
pub const NFNL_MSG_BATCH_END: u16 = 0x11;
const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;
const NLA_HDRLEN: usize = 4;
/// The most payload one attribute holds: its length field is 16 bits and counts the header.
pub const MAX_ATTR_PAYLOAD: usize = u16::MAX as usize - NLA_HDRLEN;

/// Netlink's 4-byte alignment of messages and attributes.
fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// The message type of `msg` of nfnetlink subsystem `subsys` (`NFNL_SUBSYS_*`).
pub const fn msg_type(subsys: u16, msg: u16) -> u16 {
    (subsys << 8) | msg
}

/// `nlmsghdr` without its length, which follows from the content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: u16,
    pub flags: u16,
    pub seq: u32,
    /// The sender's port id: 0 for the kernel and in our requests (the kernel fills it in).
    pub port: u32,
}

impl Header {
    /// A request to the kernel: port 0.
    pub fn request(kind: u16, flags: u16, seq: u32) -> Header {
        Header {
            kind,
            flags,
            seq,
            port: 0,
        }
    }
}

/// `nfgenmsg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NfGenMsg {
    /// `AF_*` for ctnetlink, `NFPROTO_*` for nf_tables, `AF_UNSPEC` on batch delimiters.
    pub family: u8,
    /// `NFNETLINK_V0`, the only version there is.
    pub version: u8,
    /// In host order here, network order on the wire.
    pub res_id: u16,
}

impl NfGenMsg {
    /// The usual `nfgenmsg`: a family, version 0, resource id 0.
    pub fn family(family: u8) -> NfGenMsg {
        NfGenMsg {
            family,
            version: 0,
            res_id: 0,
        }
    }
}

/// A length that does not fit its field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("netlink attribute of type {kind} needs {len} bytes, its length field holds 65535")]
    AttrTooLong { kind: u16, len: usize },
    #[error("netlink message of type {kind} needs {len} bytes, its length field holds 4 GiB")]
    MessageTooLong { kind: u16, len: usize },
}

/// What a received buffer got wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("netlink message header cut short: {have} of 16 bytes")]
    ShortHeader { have: usize },
    #[error("netlink message claims {len} bytes, {have} are there")]
    MessageLength { len: usize, have: usize },
    #[error("netlink message of type {kind} too short for its {what}: {have} bytes")]
    ShortBody {
        kind: u16,
        what: &'static str,
        have: usize,
    },
    #[error("netlink attribute header cut short: {have} of 4 bytes")]
    ShortAttrHeader { have: usize },
    #[error("netlink attribute of type {kind} claims {len} bytes, {have} are there")]
    AttrLength { kind: u16, len: usize, have: usize },
    #[error("netlink attribute of type {kind} holds {have} bytes, {want} expected")]
    AttrPayload { kind: u16, have: usize, want: usize },
}

/// Builds one buffer of netlink messages: a single request, or a batch sent in one `send`.
#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
    /// The first length that did not fit; the buffer is worthless then.
    error: Option<EncodeError>,
}

impl Writer {
    pub fn new() -> Writer {
        Writer::default()
    }

    /// Appends a message: `header`, `nfgen`, then the attributes `body` writes.
    pub fn message(
        &mut self,
        header: Header,
        nfgen: NfGenMsg,
        body: impl FnOnce(&mut Attrs<'_>),
    ) -> &mut Writer {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // length, patched below
        self.buf.extend_from_slice(&header.kind.to_ne_bytes());
        self.buf.extend_from_slice(&header.flags.to_ne_bytes());
        self.buf.extend_from_slice(&header.seq.to_ne_bytes());
        self.buf.extend_from_slice(&header.port.to_ne_bytes());
        self.buf.extend_from_slice(&[nfgen.family, nfgen.version]);
        self.buf.extend_from_slice(&nfgen.res_id.to_be_bytes());
        body(&mut Attrs {
            buf: &mut self.buf,
            error: &mut self.error,
        });
        let len = self.buf.len() - start;
        match u32::try_from(len) {
            Ok(l) => self.buf[start..start + 4].copy_from_slice(&l.to_ne_bytes()),
            Err(_) => {
                self.error.get_or_insert(EncodeError::MessageTooLong {
                    kind: header.kind,
                    len,
                });
            }
        }
        self
    }

    /// The messages, or the first length that did not fit.
    pub fn finish(self) -> Result<Vec<u8>, EncodeError> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.buf),
        }
    }
}

/// Appends attributes, each padded to 4 bytes, to a message (or to a bare attribute stream,
/// see [`encode_attrs`]).
pub struct Attrs<'a> {
    buf: &'a mut Vec<u8>,
    error: &'a mut Option<EncodeError>,
}

impl Attrs<'_> {
    pub fn put(&mut self, kind: u16, payload: &[u8]) -> &mut Self {
        let start = self.begin(kind);
        self.buf.extend_from_slice(payload);
        self.end(start, kind)
    }

    /// A NUL-terminated string, as the kernel's `NLA_STRING` policies want names.
    pub fn put_strz(&mut self, kind: u16, s: &str) -> &mut Self {
        let start = self.begin(kind);
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
        self.end(start, kind)
    }

    /// A nested attribute (`NLA_F_NESTED` set) holding what `body` writes.
    pub fn nest(&mut self, kind: u16, body: impl FnOnce(&mut Attrs<'_>)) -> &mut Self {
        let start = self.begin(kind | NLA_F_NESTED);
        body(&mut Attrs {
            buf: &mut *self.buf,
            error: &mut *self.error,
        });
        self.end(start, kind)
    }

    /// Attributes encoded elsewhere (received ones, or [`encode_attrs`] output), as they are.
    pub fn raw(&mut self, attrs: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(attrs);
        self.pad()
    }

    fn begin(&mut self, kind: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes()); // length, patched by `end`
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        start
    }

    /// Patches the length of the attribute at `start` (its padding is not counted, but a
    /// nested attribute's length covers its children's padding, as the kernel's does).
    fn end(&mut self, start: usize, kind: u16) -> &mut Self {
        let len = self.buf.len() - start;
        match u16::try_from(len) {
            Ok(l) => self.buf[start..start + 2].copy_from_slice(&l.to_ne_bytes()),
            Err(_) => {
                self.error
                    .get_or_insert(EncodeError::AttrTooLong { kind, len });
            }
        }
        self.pad()
    }

    fn pad(&mut self) -> &mut Self {
        self.buf.resize(align(self.buf.len()), 0);
        self
    }
}

/// Attributes on their own, to measure them or to put them with [`Attrs::raw`] later.
pub fn encode_attrs(body: impl FnOnce(&mut Attrs<'_>)) -> Result<Vec<u8>, EncodeError> {
    let (mut buf, mut error) = (Vec::new(), None);
    body(&mut Attrs {
        buf: &mut buf,
        error: &mut error,
    });
    match error {
        Some(e) => Err(e),
        None => Ok(buf),
    }
}

/// One received attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr<'a> {
    /// Header and payload, without padding.
    raw: &'a [u8],
}

impl<'a> Attr<'a> {
    /// The type, without the flag bits.
    pub fn kind(&self) -> u16 {
        self.type_field() & NLA_TYPE_MASK
    }

    /// Only the tests' generic walker asks: callers know which of their attributes nest.
    #[cfg(test)]
    pub fn is_nested(&self) -> bool {
        self.type_field() & NLA_F_NESTED != 0
    }

    pub fn payload(&self) -> &'a [u8] {
        &self.raw[NLA_HDRLEN..]
    }

    /// The attribute as received (flags included, padding not), to send back as it is.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// The attributes inside a nested one.
    pub fn nested(&self) -> AttrIter<'a> {
        attrs(self.payload())
    }

    pub fn u8(&self) -> Result<u8, DecodeError> {
        Ok(self.fixed::<1>()?[0])
    }

    /// A big-endian 16-bit payload (ports).
    pub fn be16(&self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.fixed::<2>()?))
    }

    /// The first `N` bytes of the payload; more is fine (the kernel pads small payloads).
    fn fixed<const N: usize>(&self) -> Result<[u8; N], DecodeError> {
        let payload = self.payload();
        payload
            .get(..N)
            .and_then(|b| b.try_into().ok())
            .ok_or(DecodeError::AttrPayload {
                kind: self.kind(),
                have: payload.len(),
                want: N,
            })
    }

    fn type_field(&self) -> u16 {
        u16::from_ne_bytes([self.raw[2], self.raw[3]])
    }
}

/// The attributes of a buffer, in order. After an error it yields nothing more.
#[derive(Debug, Clone)]
pub struct AttrIter<'a> {
    rest: &'a [u8],
}

/// Walks the attribute stream `buf`.
pub fn attrs(buf: &[u8]) -> AttrIter<'_> {
    AttrIter { rest: buf }
}

impl<'a> AttrIter<'a> {
    /// The first attribute of type `kind`, if any; a malformed one before it is an error.
    pub fn find_kind(self, kind: u16) -> Result<Option<Attr<'a>>, DecodeError> {
        for attr in self {
            let attr = attr?;
            if attr.kind() == kind {
                return Ok(Some(attr));
            }
        }
        Ok(None)
    }
}

impl<'a> Iterator for AttrIter<'a> {
    type Item = Result<Attr<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        let buf = self.rest;
        if buf.is_empty() {
            return None;
        }
        // Whatever happens below, nothing follows an error.
        self.rest = &[];
        let Some(header) = buf.get(..NLA_HDRLEN) else {
            return Some(Err(DecodeError::ShortAttrHeader { have: buf.len() }));
        };
        let len = usize::from(u16::from_ne_bytes([header[0], header[1]]));
        if len < NLA_HDRLEN || len > buf.len() {
            return Some(Err(DecodeError::AttrLength {
                kind: u16::from_ne_bytes([header[2], header[3]]) & NLA_TYPE_MASK,
                len,
                have: buf.len(),
            }));
        }
        // The last attribute's padding may be missing: the kernel does not require it.
        self.rest = &buf[align(len).min(buf.len())..];
        Some(Ok(Attr { raw: &buf[..len] }))
    }
}

/// One received message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    pub header: Header,
    /// Everything after the `nlmsghdr`.
    pub payload: &'a [u8],
}

/// What a received message means for the request it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// A subsystem's message: a dump entry, a GET's object.
    Data,
    /// `NLMSG_DONE`, the end of a dump; `errno` is not 0 when the dump failed.
    Done { errno: i32 },
    /// `NLMSG_ERROR`: the request's ack (`errno` 0) or its failure.
    Ack { errno: i32 },
}

impl<'a> Message<'a> {
    /// Only the tests ask: answers are matched to requests by sequence number, and each
    /// request's family is known to its sender.
    #[cfg(test)]
    pub fn nfgen(&self) -> Result<NfGenMsg, DecodeError> {
        match self.payload.get(..NFGENMSG_LEN) {
            Some(&[family, version, r0, r1]) => Ok(NfGenMsg {
                family,
                version,
                res_id: u16::from_be_bytes([r0, r1]),
            }),
            _ => Err(self.short("nfgenmsg")),
        }
    }

    /// The attributes after the `nfgenmsg`.
    pub fn attrs(&self) -> Result<AttrIter<'a>, DecodeError> {
        match self.payload.get(NFGENMSG_LEN..) {
            Some(rest) => Ok(attrs(rest)),
            None => Err(self.short("nfgenmsg")),
        }
    }

    pub fn answer(&self) -> Result<Answer, DecodeError> {
        match self.header.kind {
            // Both start with an `int`, a negative errno.
            NLMSG_ERROR => Ok(Answer::Ack {
                errno: self.errno("error code")?,
            }),
            // A DONE without its `int` is a plain end.
            NLMSG_DONE if self.payload.is_empty() => Ok(Answer::Done { errno: 0 }),
            NLMSG_DONE => Ok(Answer::Done {
                errno: self.errno("dump result")?,
            }),
            _ => Ok(Answer::Data),
        }
    }

    fn errno(&self, what: &'static str) -> Result<i32, DecodeError> {
        match self.payload.get(..4) {
            Some(&[a, b, c, d]) => Ok(i32::from_ne_bytes([a, b, c, d]).saturating_neg()),
            _ => Err(self.short(what)),
        }
    }

    fn short(&self, what: &'static str) -> DecodeError {
        DecodeError::ShortBody {
            kind: self.header.kind,
            what,
            have: self.payload.len(),
        }
    }
}

/// The messages of one received datagram, in order. After an error it yields nothing more.
#[derive(Debug, Clone)]
pub struct Messages<'a> {
    rest: &'a [u8],
}

pub fn messages(buf: &[u8]) -> Messages<'_> {
    Messages { rest: buf }
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<Message<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        let buf = self.rest;
        if buf.is_empty() {
            return None;
        }
        self.rest = &[];
        let Some(h) = buf.get(..NLMSG_HDRLEN) else {
            return Some(Err(DecodeError::ShortHeader { have: buf.len() }));
        };
        let field = |at: usize| u32::from_ne_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
        let len = field(0) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return Some(Err(DecodeError::MessageLength {
                len,
                have: buf.len(),
            }));
        }
        self.rest = &buf[align(len).min(buf.len())..];
        Some(Ok(Message {
            header: Header {
                kind: u16::from_ne_bytes([h[4], h[5]]),
                flags: u16::from_ne_bytes([h[6], h[7]]),
                seq: field(8),
                port: field(12),
            },
            payload: &buf[NLMSG_HDRLEN..len],
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

    use super::*;

    pub(super) const SUBSYS: u16 = 10;

    /// Two messages: a request (seq 7) with plain and nested attributes, a DONE (seq 8).
    pub(super) fn sample() -> Vec<u8> {
        let mut w = Writer::new();
        w.message(
            Header::request(msg_type(SUBSYS, 12), NLM_F_REQUEST | NLM_F_ACK, 7),
            NfGenMsg {
                family: 1,
                version: 0,
                res_id: 0x0a0b,
            },
            |a| {
                a.put_strz(1, "tbl").put(2, &[9, 9, 9]).nest(3, |a| {
                    a.nest(1, |a| {
                        a.put(1, &[1, 2, 3, 4, 5]);
                    })
                    .put(2, &53u16.to_be_bytes());
                });
            },
        );
        w.message(
            Header {
                kind: NLMSG_DONE,
                flags: 0,
                seq: 8,
                port: 99,
            },
            NfGenMsg::family(0),
            |_| {},
        );
        w.finish().unwrap()
    }

    /// `seq`'s `NLMSG_ERROR` with `code` (0 or a negative errno), as the kernel builds it.
    pub(super) fn error_msg(seq: u32, code: i32) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&36u32.to_ne_bytes());
        v.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        v.extend_from_slice(&0u16.to_ne_bytes());
        v.extend_from_slice(&seq.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes());
        v.extend_from_slice(&code.to_ne_bytes());
        // The request's header.
        v.extend_from_slice(&20u32.to_ne_bytes());
        v.extend_from_slice(&msg_type(SUBSYS, 12).to_ne_bytes());
        v.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        v.extend_from_slice(&seq.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes());
        v
    }

    /// Walks everything in `buf` (messages, attributes, nested ones): the first error.
    fn walk(buf: &[u8]) -> Result<usize, DecodeError> {
        fn walk_attrs(it: AttrIter<'_>) -> Result<usize, DecodeError> {
            let mut n = 0;
            for a in it {
                let a = a?;
                n += 1;
                if a.is_nested() {
                    n += walk_attrs(a.nested())?;
                }
            }
            Ok(n)
        }
        let mut n = 0;
        for m in messages(buf) {
            let m = m?;
            m.nfgen()?;
            m.answer()?;
            n += 1 + walk_attrs(m.attrs()?)?;
        }
        Ok(n)
    }

    #[test]
    fn headers_round_trip() {
        let buf = sample();
        let msgs: Vec<Message<'_>> = messages(&buf).map(Result::unwrap).collect();
        assert_eq!(msgs.len(), 2);
        assert_eq!(
            msgs[0].header,
            Header::request(0x0a0c, NLM_F_REQUEST | NLM_F_ACK, 7)
        );
        assert_eq!(
            msgs[0].nfgen().unwrap(),
            NfGenMsg {
                family: 1,
                version: 0,
                res_id: 0x0a0b
            }
        );
        // res_id is big-endian on the wire.
        assert_eq!(&msgs[0].payload[2..4], &[0x0a, 0x0b]);
        assert_eq!(msgs[0].answer().unwrap(), Answer::Data);
        assert_eq!(msgs[1].header.port, 99);
        assert_eq!(msgs[1].header.seq, 8);
        assert_eq!(msgs[1].answer().unwrap(), Answer::Done { errno: 0 });
        // Lengths: each message's own, in host order, and the buffer is exactly both.
        let len0 = u32::from_ne_bytes(buf[..4].try_into().unwrap()) as usize;
        assert_eq!(len0, 16 + msgs[0].payload.len());
        assert_eq!(len0 + 20, buf.len());
    }

    #[test]
    fn nested_attributes_round_trip() {
        let buf = sample();
        let msg = messages(&buf).next().unwrap().unwrap();
        let top: Vec<Attr<'_>> = msg.attrs().unwrap().map(Result::unwrap).collect();
        assert_eq!(top.iter().map(Attr::kind).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(top[0].payload(), b"tbl\0");
        assert_eq!(top[1].payload(), [9, 9, 9]);
        assert!(!top[1].is_nested());
        // Unpadded length in the header, padding in the stream.
        assert_eq!(top[1].raw().len(), 7);
        assert!(top[2].is_nested());
        let inner: Vec<Attr<'_>> = top[2].nested().map(Result::unwrap).collect();
        assert_eq!(inner.len(), 2);
        assert!(inner[0].is_nested());
        let leaf = inner[0].nested().find_kind(1).unwrap().unwrap();
        assert_eq!(leaf.payload(), [1, 2, 3, 4, 5]);
        assert_eq!(leaf.u8().unwrap(), 1);
        assert_eq!(inner[1].be16().unwrap(), 53);
        // A nest's length covers its children with their padding: 4 + (4 + 12) + 8.
        assert_eq!(top[2].raw().len(), 28);
        assert_eq!(top[2].nested().find_kind(9).unwrap(), None);
    }

    #[test]
    fn raw_attributes_are_copied_as_received() {
        let buf = sample();
        let msg = messages(&buf).next().unwrap().unwrap();
        let nest = msg.attrs().unwrap().find_kind(3).unwrap().unwrap();
        let copy = encode_attrs(|a| {
            a.raw(nest.raw());
        })
        .unwrap();
        let again = attrs(&copy).next().unwrap().unwrap();
        assert_eq!(again, nest);
        assert_eq!(copy.len() % 4, 0);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let buf = sample();
        let full = walk(&buf).unwrap();
        assert_eq!(full, 2 + 6);
        let first_len = u32::from_ne_bytes(buf[..4].try_into().unwrap()) as usize;
        for cut in 1..buf.len() {
            let got = walk(&buf[..cut]);
            if cut == first_len {
                // Exactly the first message: complete.
                assert_eq!(got, Ok(1 + 6), "cut at {cut}");
            } else {
                assert!(got.is_err(), "cut at {cut}: {got:?}");
            }
        }
    }

    #[test]
    fn malformed_lengths_are_errors() {
        // A message length below the header's own.
        let mut buf = sample();
        buf[..4].copy_from_slice(&8u32.to_ne_bytes());
        assert_eq!(
            messages(&buf).next().unwrap(),
            Err(DecodeError::MessageLength {
                len: 8,
                have: buf.len()
            })
        );
        // An attribute length below its header's, and one past the buffer.
        assert_eq!(
            attrs(&[2, 0, 1, 0]).next().unwrap(),
            Err(DecodeError::AttrLength {
                kind: 1,
                len: 2,
                have: 4
            })
        );
        let mut it = attrs(&[9, 0, 1, 0, 0]);
        assert!(it.next().unwrap().is_err());
        assert!(it.next().is_none(), "nothing after an error");
        // Too short for what it holds.
        let a = attrs(&[4, 0, 1, 0]).next().unwrap().unwrap();
        assert!(a.u8().is_err());
        assert!(a.be16().is_err());
        let m = Message {
            header: Header::request(NLMSG_ERROR, 0, 1),
            payload: &[0, 0],
        };
        assert!(m.answer().is_err());
        assert!(m.nfgen().is_err());
        assert!(m.attrs().is_err());
        // Garbage of every length never panics.
        let junk: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37)).collect();
        for cut in 0..junk.len() {
            let _ = walk(&junk[..cut]);
        }
    }

    #[test]
    fn lengths_that_do_not_fit_are_reported() {
        let big = vec![0u8; MAX_ATTR_PAYLOAD + 1];
        assert_eq!(
            encode_attrs(|a| {
                a.put(5, &big);
            }),
            Err(EncodeError::AttrTooLong {
                kind: 5,
                len: MAX_ATTR_PAYLOAD + 5
            })
        );
        assert!(
            encode_attrs(|a| {
                a.put(5, &big[..MAX_ATTR_PAYLOAD]);
            })
            .is_ok()
        );
        // A nest whose children together overflow it.
        let half = vec![0u8; MAX_ATTR_PAYLOAD / 2];
        let mut w = Writer::new();
        w.message(Header::request(1, 0, 1), NfGenMsg::family(0), |a| {
            a.nest(3, |a| {
                a.put(1, &half).put(1, &half);
            });
        });
        assert!(matches!(
            w.finish(),
            Err(EncodeError::AttrTooLong { kind: 3, .. })
        ));
    }

    #[test]
    fn errno_comes_from_nlmsg_error_and_done() {
        let buf = error_msg(5, -libc::ENOENT);
        let m = messages(&buf).next().unwrap().unwrap();
        assert_eq!(m.header.seq, 5);
        assert_eq!(
            m.answer().unwrap(),
            Answer::Ack {
                errno: libc::ENOENT
            }
        );
        let ack = error_msg(5, 0);
        let m = messages(&ack).next().unwrap().unwrap();
        assert_eq!(m.answer().unwrap(), Answer::Ack { errno: 0 });
        // A failed dump says so in its DONE.
        let mut done = done_msg(3);
        done[16..20].copy_from_slice(&(-libc::EINTR).to_ne_bytes());
        let m = messages(&done).next().unwrap().unwrap();
        assert_eq!(m.answer().unwrap(), Answer::Done { errno: libc::EINTR });
    }

    /// A DONE of `seq` whose result says success.
    pub(super) fn done_msg(seq: u32) -> Vec<u8> {
        let mut w = Writer::new();
        w.message(
            Header::request(NLMSG_DONE, 0, seq),
            NfGenMsg::family(0),
            |_| {},
        );
        w.finish().unwrap()
    }
}
