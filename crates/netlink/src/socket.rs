//! The synchronous rtnetlink engine: one `NETLINK_ROUTE` socket, requests with sequence
//! numbers, acks, multi-part dumps and their retries.
//!
//! Protocol notes that shape this file:
//! - Every request carries a fresh sequence number and we only look at replies carrying it.
//!   If an earlier exchange was abandoned half-way (an error in the middle of a dump), its
//!   leftover datagrams are still queued on the socket; the sequence check skips them.
//! - A modifying request is sent with `NLM_F_ACK`; the kernel answers with `NLMSG_ERROR`
//!   whose code is 0 for success or `-errno`. A non-dump GET answers with the object and then
//!   the ack.
//! - A dump (`NLM_F_DUMP`) answers with any number of datagrams, each holding several
//!   messages, terminated by `NLMSG_DONE` (which may itself carry an error code).
//! - If the kernel's tables changed while it was dumping, it sets `NLM_F_DUMP_INTR` on the
//!   messages: the result may be inconsistent and must be fetched again (the reference wraps
//!   every dump for this; rtnetlink-the-crate does not surface the flag at all).

use std::io;
use std::sync::{Mutex, PoisonError};

use netlink_packet_core::{
    DecodeError, NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_CAPPED, NLM_F_DUMP, NLM_F_DUMP_INTR,
    NLM_F_REQUEST, NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NlaBuffer,
    NlasIterator,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// Kernel-side receive buffer. Dumps of a busy namespace arrive faster than we parse them;
/// a small buffer turns that into ENOBUFS.
const SOCKET_RCVBUF: i32 = 1 << 20;
/// Initial user-side datagram buffer; grown on demand (we peek at each datagram's size).
const DATAGRAM_BUF: usize = 32 * 1024;
/// How many times a dump is restarted when the kernel flags it as interrupted.
pub(crate) const DUMP_ATTEMPTS: usize = 10;
/// `NLMSGERR_ATTR_MSG`: the human-readable extended-ack string.
const NLMSGERR_ATTR_MSG: u16 = 1;
const NLMSG_HDRLEN: usize = 16;

/// Errors of the netlink engine. Higher-level errors wrap this as their `source`.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("open rtnetlink socket")]
    Open(#[source] io::Error),
    #[error("set rtnetlink socket option {option}")]
    SetOption {
        option: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("send rtnetlink request")]
    Send(#[source] io::Error),
    #[error("receive rtnetlink reply")]
    Receive(#[source] io::Error),
    #[error("decode rtnetlink reply")]
    Decode(#[source] Box<DecodeError>),
    #[error("rtnetlink reply overrun: messages were lost")]
    Overrun,
    /// The kernel refused the request. `message` is the extended-ack text, when it sent one
    /// (e.g. "Unknown device type").
    #[error("{}", kernel_text(*.errno, .message.as_deref()))]
    Kernel {
        errno: i32,
        message: Option<Box<str>>,
    },
    #[error("dump still interrupted (NLM_F_DUMP_INTR) after {attempts} attempts")]
    DumpInterrupted { attempts: usize },
}

fn kernel_text(errno: i32, message: Option<&str>) -> String {
    let os = io::Error::from_raw_os_error(errno);
    match message {
        Some(msg) => format!("{os}: {msg}"),
        None => os.to_string(),
    }
}

/// Access to the errno behind an error, for callers that must tell "already gone" or "already
/// there" apart from real failures (DEL treats ENOENT/ENODEV/ESRCH as success; ADD turns EEXIST
/// into a message naming the interface).
pub trait Errno {
    /// The underlying errno, if the failure came from the kernel or an OS call.
    fn errno(&self) -> Option<i32>;

    /// ENOENT, ENODEV or ESRCH: the object (link, address, route, netns) does not exist.
    fn is_not_found(&self) -> bool {
        matches!(
            self.errno(),
            Some(libc::ENOENT | libc::ENODEV | libc::ESRCH)
        )
    }

    /// EEXIST: the object already exists.
    fn is_exists(&self) -> bool {
        self.errno() == Some(libc::EEXIST)
    }
}

impl Errno for NetlinkError {
    fn errno(&self) -> Option<i32> {
        match self {
            Self::Kernel { errno, .. } => Some(*errno),
            Self::Open(e)
            | Self::Send(e)
            | Self::Receive(e)
            | Self::SetOption { source: e, .. } => e.raw_os_error(),
            Self::Decode(_) | Self::Overrun | Self::DumpInterrupted { .. } => None,
        }
    }
}

/// One rtnetlink socket. The mutex serializes exchanges so that a handle shared between
/// threads never interleaves two requests' replies.
pub(crate) struct Conn {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Conn {
    // Not derived: the receive buffer is tens of kilobytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").finish_non_exhaustive()
    }
}

struct Inner {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
    interrupted_dumps: u64,
}

impl Conn {
    /// Opens a socket in the calling thread's network namespace (where it stays for its life).
    pub(crate) fn open() -> Result<Conn, NetlinkError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(NetlinkError::Open)?;
        socket.bind_auto().map_err(NetlinkError::Open)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(NetlinkError::Open)?;
        socket
            .set_rx_buf_sz(SOCKET_RCVBUF)
            .map_err(|source| NetlinkError::SetOption {
                option: "SO_RCVBUF",
                source,
            })?;
        // Both options are conveniences (better messages, kernel-side dump filters); old kernels
        // lack them, and nothing below depends on them, so failures are ignored on purpose.
        let _ = socket.set_ext_ack(true);
        let _ = socket.set_netlink_get_strict_chk(true);
        Ok(Conn {
            inner: Mutex::new(Inner {
                socket,
                seq: 0,
                buf: Vec::with_capacity(DATAGRAM_BUF),
                interrupted_dumps: 0,
            }),
        })
    }

    /// Sends `msg` with `NLM_F_REQUEST | NLM_F_ACK | flags` and waits for the ack. Returns the
    /// messages the kernel sent before the ack (the object, for a non-dump GET).
    pub(crate) fn request(
        &self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let reply = inner.exchange(msg, NLM_F_REQUEST | NLM_F_ACK | flags)?;
        Ok(reply.messages)
    }

    /// Dumps with `NLM_F_REQUEST | NLM_F_DUMP`, restarting while the kernel flags the result
    /// as interrupted.
    pub(crate) fn dump(
        &self,
        msg: RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        for _ in 0..DUMP_ATTEMPTS {
            let reply = inner.exchange(msg.clone(), NLM_F_REQUEST | NLM_F_DUMP)?;
            if !reply.interrupted {
                return Ok(reply.messages);
            }
            inner.interrupted_dumps += 1;
        }
        Err(NetlinkError::DumpInterrupted {
            attempts: DUMP_ATTEMPTS,
        })
    }
}

impl Conn {
    pub(crate) fn interrupted_dumps(&self) -> u64 {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .interrupted_dumps
    }
}

impl Inner {
    fn exchange(&mut self, msg: RouteNetlinkMessage, flags: u16) -> Result<Reply, NetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let bytes = encode(msg, flags, seq);
        self.socket.send(&bytes, 0).map_err(NetlinkError::Send)?;

        let mut reply = Reply::new(seq);
        while !reply.finished {
            let len = self.recv_datagram()?;
            reply.feed(&self.buf[..len])?;
        }
        Ok(reply)
    }

    /// Receives one datagram into `self.buf`, growing it first if the datagram is larger.
    fn recv_datagram(&mut self) -> Result<usize, NetlinkError> {
        loop {
            self.buf.clear();
            // MSG_TRUNC makes the kernel report the datagram's real size.
            let size = match self
                .socket
                .recv(&mut self.buf, libc::MSG_PEEK | libc::MSG_TRUNC)
            {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => other.map_err(NetlinkError::Receive)?,
            };
            self.buf.clear();
            self.buf.reserve(size);
            match self.socket.recv(&mut self.buf, 0) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other.map_err(NetlinkError::Receive),
            }
        }
    }
}

fn encode(msg: RouteNetlinkMessage, flags: u16, seq: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = seq;
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
    packet.finalize();
    let mut bytes = vec![0; packet.buffer_len()];
    packet.serialize(&mut bytes);
    bytes
}

/// The replies to one request, assembled datagram by datagram. Pure: unit-tested on crafted
/// bytes.
#[derive(Debug)]
pub(crate) struct Reply {
    seq: u32,
    pub(crate) messages: Vec<RouteNetlinkMessage>,
    /// Some message carried `NLM_F_DUMP_INTR`: the dump must be restarted.
    pub(crate) interrupted: bool,
    /// The ack, error or `NLMSG_DONE` for our sequence number has arrived.
    pub(crate) finished: bool,
}

impl Reply {
    pub(crate) fn new(seq: u32) -> Reply {
        Reply {
            seq,
            messages: Vec::new(),
            interrupted: false,
            finished: false,
        }
    }

    /// Consumes every netlink message in one datagram.
    pub(crate) fn feed(&mut self, mut datagram: &[u8]) -> Result<(), NetlinkError> {
        while !datagram.is_empty() && !self.finished {
            let buf = NetlinkBuffer::new_checked(datagram).map_err(decode_error)?;
            let len = buf.length() as usize;
            let (seq, flags) = (buf.sequence_number(), buf.flags());
            let (current, rest) = datagram.split_at(len);
            datagram = rest.get(align4(len) - len..).unwrap_or_default();
            if seq != self.seq {
                continue; // a leftover of an abandoned exchange
            }
            if flags & NLM_F_DUMP_INTR != 0 {
                self.interrupted = true;
            }
            let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(current)
                .map_err(decode_error)?;
            match msg.payload {
                NetlinkPayload::InnerMessage(inner) => self.messages.push(inner),
                NetlinkPayload::Error(err) => match err.code {
                    None => self.finished = true,
                    Some(code) => {
                        return Err(NetlinkError::Kernel {
                            errno: code.get().saturating_abs(),
                            message: ext_ack_message(flags, &err.header),
                        });
                    }
                },
                NetlinkPayload::Done(done) => {
                    if done.code < 0 {
                        return Err(NetlinkError::Kernel {
                            errno: done.code.saturating_abs(),
                            message: None,
                        });
                    }
                    self.finished = true;
                }
                NetlinkPayload::Overrun(_) => return Err(NetlinkError::Overrun),
                // Noop, and whatever future variants the (non-exhaustive) enum grows.
                _ => {}
            }
        }
        Ok(())
    }
}

fn decode_error(e: DecodeError) -> NetlinkError {
    NetlinkError::Decode(Box::new(e))
}

fn align4(len: usize) -> usize {
    (len + 3) & !3
}

/// Extracts the extended-ack text from the payload of an `NLMSG_ERROR` (everything after the
/// error code): the echoed request header, the request itself unless `NLM_F_CAPPED`, then TLVs.
fn ext_ack_message(flags: u16, payload: &[u8]) -> Option<Box<str>> {
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    let echoed = if flags & NLM_F_CAPPED != 0 {
        NLMSG_HDRLEN
    } else {
        let len = payload.get(..4)?;
        align4(u32::from_ne_bytes(len.try_into().ok()?) as usize)
    };
    NlasIterator::new(payload.get(echoed..)?)
        .filter_map(Result::ok)
        .find(|nla: &NlaBuffer<&[u8]>| nla.kind() == NLMSGERR_ATTR_MSG)
        .map(|nla| {
            let text = nla.value();
            let text = text.split(|b| *b == 0).next().unwrap_or(text);
            String::from_utf8_lossy(text).into()
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{DoneMessage, ErrorMessage, NLM_F_MULTIPART};
    use netlink_packet_route::link::{LinkAttribute, LinkMessage};
    use std::num::NonZeroI32;

    fn packet(seq: u32, flags: u16, payload: NetlinkPayload<RouteNetlinkMessage>) -> Vec<u8> {
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = seq;
        let mut msg = NetlinkMessage::new(header, payload);
        msg.finalize();
        let mut bytes = vec![0; msg.buffer_len()];
        msg.serialize(&mut bytes);
        bytes
    }

    fn link(name: &str) -> NetlinkPayload<RouteNetlinkMessage> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.into()));
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(msg))
    }

    fn done() -> NetlinkPayload<RouteNetlinkMessage> {
        NetlinkPayload::Done(DoneMessage::default())
    }

    fn error(code: i32, header: Vec<u8>) -> NetlinkPayload<RouteNetlinkMessage> {
        let mut err = ErrorMessage::default();
        err.code = NonZeroI32::new(code);
        err.header = header;
        NetlinkPayload::Error(err)
    }

    #[test]
    fn multipart_dump_collects_until_done() {
        let mut reply = Reply::new(7);
        let mut first = packet(7, NLM_F_MULTIPART, link("a"));
        first.extend(packet(7, NLM_F_MULTIPART, link("b")));
        reply.feed(&first).expect("feed");
        assert!(!reply.finished);
        reply
            .feed(&packet(7, NLM_F_MULTIPART, done()))
            .expect("feed");
        assert!(reply.finished && !reply.interrupted);
        assert_eq!(reply.messages.len(), 2);
    }

    #[test]
    fn dump_intr_flag_marks_the_reply_interrupted() {
        let mut reply = Reply::new(1);
        let mut bytes = packet(1, NLM_F_MULTIPART | NLM_F_DUMP_INTR, link("a"));
        bytes.extend(packet(1, NLM_F_MULTIPART | NLM_F_DUMP_INTR, done()));
        reply.feed(&bytes).expect("feed");
        assert!(reply.finished);
        assert!(reply.interrupted, "NLM_F_DUMP_INTR must trigger a retry");
    }

    #[test]
    fn ack_code_zero_finishes_a_request() {
        let mut reply = Reply::new(3);
        reply
            .feed(&packet(3, 0, error(0, vec![0; 16])))
            .expect("ack");
        assert!(reply.finished);
        assert!(reply.messages.is_empty());
    }

    #[test]
    fn negative_code_becomes_errno() {
        let mut reply = Reply::new(3);
        let err = reply
            .feed(&packet(3, 0, error(-libc::EEXIST, vec![0; 16])))
            .expect_err("nack");
        assert_eq!(err.errno(), Some(libc::EEXIST));
        assert!(err.is_exists() && !err.is_not_found());
        assert_eq!(err.to_string(), "File exists (os error 17)");
    }

    #[test]
    fn done_with_error_code_is_an_error() {
        let mut reply = Reply::new(3);
        let mut done = DoneMessage::default();
        done.code = -libc::ENODEV;
        let err = reply
            .feed(&packet(3, 0, NetlinkPayload::Done(done)))
            .expect_err("error in done");
        assert!(err.is_not_found());
    }

    #[test]
    fn replies_to_other_sequence_numbers_are_skipped() {
        let mut reply = Reply::new(5);
        let mut bytes = packet(4, 0, error(-libc::EPERM, vec![0; 16]));
        bytes.extend(packet(4, NLM_F_MULTIPART, link("stale")));
        bytes.extend(packet(5, 0, error(0, vec![0; 16])));
        reply.feed(&bytes).expect("stale replies ignored");
        assert!(reply.finished && reply.messages.is_empty());
    }

    #[test]
    fn extended_ack_text_is_extracted() {
        // Capped echo: just the 16-byte request header, then NLMSGERR_ATTR_MSG.
        let mut payload = vec![0u8; NLMSG_HDRLEN];
        let text = b"Unknown device type\0";
        let nla_len = 4 + text.len();
        payload.extend((nla_len as u16).to_ne_bytes());
        payload.extend(NLMSGERR_ATTR_MSG.to_ne_bytes());
        payload.extend(text);
        payload.resize(align4(payload.len()), 0);
        let mut reply = Reply::new(9);
        let err = reply
            .feed(&packet(
                9,
                NLM_F_ACK_TLVS | NLM_F_CAPPED,
                error(-libc::EOPNOTSUPP, payload),
            ))
            .expect_err("nack");
        assert_eq!(
            err.to_string(),
            "Operation not supported (os error 95): Unknown device type"
        );
    }

    #[test]
    fn truncated_datagram_is_a_decode_error() {
        let bytes = packet(1, 0, link("a"));
        let mut reply = Reply::new(1);
        let err = reply
            .feed(&bytes[..bytes.len() - 4])
            .expect_err("truncated");
        assert!(matches!(err, NetlinkError::Decode(_)), "{err:?}");
    }
}
