//! Requests on a `NETLINK_NETFILTER` socket and the answers to them, matched by sequence
//! number: one request and its answer (a dump, or a request with its ack), or a batch and
//! the acks of its messages.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use netlink_sys::{Socket, protocols::NETLINK_NETFILTER};

use super::{Answer, DecodeError, EncodeError, Message, messages};

/// Failures of a request on an [`NfnlSocket`].
#[derive(Debug, thiserror::Error)]
pub enum NfnlError {
    #[error("open a netfilter netlink socket")]
    Open(#[source] io::Error),
    #[error("send to netfilter netlink")]
    Send(#[source] io::Error),
    #[error("receive from netfilter netlink")]
    Receive(#[source] io::Error),
    #[error("build a netfilter netlink request")]
    Encode(#[from] EncodeError),
    #[error("read a netfilter netlink answer")]
    Decode(#[from] DecodeError),
    /// The kernel's answer to request `seq`.
    #[error("netfilter netlink request {seq} failed")]
    Kernel {
        seq: u32,
        #[source]
        source: io::Error,
    },
}

impl NfnlError {
    /// The errno the kernel answered, if this is the kernel's answer.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NfnlError::Kernel { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    /// As an `io::Error`, for callers whose own error names the step: the socket's or the
    /// kernel's error as it is, a malformed buffer as `InvalidData`.
    pub fn into_io(self) -> io::Error {
        match self {
            NfnlError::Open(e)
            | NfnlError::Send(e)
            | NfnlError::Receive(e)
            | NfnlError::Kernel { source: e, .. } => e,
            NfnlError::Encode(e) => io::Error::new(io::ErrorKind::InvalidInput, e),
            NfnlError::Decode(e) => io::Error::new(io::ErrorKind::InvalidData, e),
        }
    }
}

fn kernel(seq: u32, errno: i32) -> NfnlError {
    NfnlError::Kernel {
        seq,
        source: io::Error::from_raw_os_error(errno),
    }
}

/// A `NETLINK_NETFILTER` socket in the network namespace of the thread that opened it,
/// numbering its requests.
pub struct NfnlSocket {
    socket: Socket,
    seq: u32,
}

impl NfnlSocket {
    pub fn open() -> Result<NfnlSocket, NfnlError> {
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(NfnlError::Open)?;
        socket.bind_auto().map_err(NfnlError::Open)?;
        Ok(NfnlSocket { socket, seq: 0 })
    }

    /// The sequence number for the next message: 1, 2, …
    pub fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends `buf` ([`Writer::finish`]) as one datagram, growing the socket's send buffer
    /// first when the datagram would not fit (a batch of thousands of elements), as `nft`
    /// does: a datagram larger than the buffer fails with EMSGSIZE.
    pub fn send(&self, buf: &[u8]) -> Result<(), NfnlError> {
        self.fit_send_buffer(buf.len());
        self.socket.send(buf, 0).map_err(NfnlError::Send)?;
        Ok(())
    }

    /// Best effort: SO_SNDBUFFORCE needs CAP_NET_ADMIN (plugins have it), SO_SNDBUF is capped
    /// by `net.core.wmem_max`; if neither takes, the send reports EMSGSIZE.
    fn fit_send_buffer(&self, len: usize) {
        let fd = self.as_raw_fd();
        let mut current: libc::c_int = 0;
        let mut size = libc::socklen_t::try_from(size_of::<libc::c_int>()).unwrap_or(4);
        // SAFETY: a valid socket descriptor and an int-sized, writable out-parameter.
        let got = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                (&raw mut current).cast(),
                &raw mut size,
            )
        };
        // The kernel reports twice what was asked (its bookkeeping overhead); ask with margin.
        let wanted = len.saturating_mul(2).saturating_add(64 * 1024);
        if got == 0 && usize::try_from(current).is_ok_and(|c| c >= wanted) {
            return;
        }
        let value = libc::c_int::try_from(wanted).unwrap_or(libc::c_int::MAX);
        for option in [libc::SO_SNDBUFFORCE, libc::SO_SNDBUF] {
            // SAFETY: a valid socket descriptor and a pointer to an int that outlives the call.
            let set = unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    option,
                    (&raw const value).cast(),
                    libc::socklen_t::try_from(size_of::<libc::c_int>()).unwrap_or(4),
                )
            };
            if set == 0 {
                return;
            }
        }
    }

    /// Reads the answer to request `seq` up to its end (`NLMSG_DONE` of a dump, or the
    /// `NLMSG_ERROR` of a request sent with `NLM_F_ACK`), giving each data message to `each`.
    /// The kernel's errno becomes [`NfnlError::Kernel`].
    pub fn answer(
        &self,
        seq: u32,
        mut each: impl FnMut(&Message<'_>) -> Result<(), NfnlError>,
    ) -> Result<(), NfnlError> {
        loop {
            let (buf, _) = self.socket.recv_from_full().map_err(NfnlError::Receive)?;
            if take_answer(&buf, seq, &mut each)? {
                return Ok(());
            }
        }
    }

    /// Reads the acks of a batch's messages `seqs` (each sent with `NLM_F_ACK`), in
    /// whatever order they come, until all arrived or one failed (the kernel then rolled the
    /// whole batch back and says nothing more about the rest). `delimiters` are the batch's
    /// BEGIN and END: never acked on success, but when the kernel refuses the batch as a whole
    /// (no nf_tables, a subsystem it does not know) the only answer is an error for BEGIN —
    /// waiting for the others then would wait forever.
    pub fn batch_acks(&self, seqs: &[u32], delimiters: &[u32]) -> Result<(), NfnlError> {
        let mut pending = seqs.to_vec();
        while !pending.is_empty() {
            let (buf, _) = self.socket.recv_from_full().map_err(NfnlError::Receive)?;
            take_acks(&buf, &mut pending, delimiters)?;
        }
        Ok(())
    }
}

impl AsRawFd for NfnlSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

/// [`NfnlSocket::answer`] on one datagram: true once the answer to `seq` is complete.
/// Messages answering other requests (a late reply to an earlier one) are skipped.
fn take_answer(
    buf: &[u8],
    seq: u32,
    each: &mut impl FnMut(&Message<'_>) -> Result<(), NfnlError>,
) -> Result<bool, NfnlError> {
    for msg in messages(buf) {
        let msg = msg?;
        if msg.header.seq != seq {
            continue;
        }
        match msg.answer()? {
            Answer::Data => each(&msg)?,
            Answer::Done { errno: 0 } | Answer::Ack { errno: 0 } => return Ok(true),
            Answer::Done { errno } | Answer::Ack { errno } => return Err(kernel(seq, errno)),
        }
    }
    Ok(false)
}

/// [`NfnlSocket::batch_acks`] on one datagram: removes the acked from `pending`; the first
/// failure in it is the error.
fn take_acks(buf: &[u8], pending: &mut Vec<u32>, delimiters: &[u32]) -> Result<(), NfnlError> {
    let mut failed = None;
    for msg in messages(buf) {
        let msg = msg?;
        let Answer::Ack { errno } = msg.answer()? else {
            continue;
        };
        let seq = msg.header.seq;
        if errno != 0 && delimiters.contains(&seq) {
            // The whole batch was refused: nothing else will come.
            return Err(kernel(seq, errno));
        }
        let Some(i) = pending.iter().position(|s| *s == seq) else {
            continue;
        };
        pending.swap_remove(i);
        if errno != 0 && failed.is_none() {
            failed = Some(kernel(seq, errno));
        }
    }
    failed.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

    use super::super::msg_type;
    use super::super::tests::{SUBSYS, done_msg, error_msg, sample};
    use super::*;

    #[test]
    fn the_kernels_errno_ends_the_answer() {
        let buf = error_msg(5, -libc::ENOENT);
        let err = take_answer(&buf, 5, &mut |_| Ok(())).unwrap_err();
        assert_eq!(err.errno(), Some(libc::ENOENT));
        assert_eq!(
            err.into_io().kind(),
            io::ErrorKind::NotFound,
            "the kernel's errno as it is"
        );
        // An ack ends the answer without error.
        assert!(take_answer(&error_msg(5, 0), 5, &mut |_| Ok(())).unwrap());
        // A failed dump says so in its DONE.
        let mut done = done_msg(3);
        done[16..20].copy_from_slice(&(-libc::EINTR).to_ne_bytes());
        let err = take_answer(&done, 3, &mut |_| Ok(())).unwrap_err();
        assert_eq!(err.errno(), Some(libc::EINTR));
    }

    #[test]
    fn answers_follow_their_sequence_number() {
        let mut buf = sample(); // data of seq 7, DONE of seq 8
        buf.extend(error_msg(6, -libc::EPERM)); // a late answer to an earlier request
        buf.extend(error_msg(7, 0));
        let mut seen = Vec::new();
        let done = take_answer(&buf, 7, &mut |m| {
            seen.push(m.header.kind);
            Ok(())
        })
        .unwrap();
        assert!(done);
        assert_eq!(seen, [msg_type(SUBSYS, 12)]);
        // Not finished yet: the rest comes in the next datagram.
        assert!(!take_answer(&buf[..first_len(&buf)], 7, &mut |_| Ok(())).unwrap());
    }

    fn first_len(buf: &[u8]) -> usize {
        u32::from_ne_bytes(buf[..4].try_into().unwrap()) as usize
    }

    #[test]
    fn batch_acks_come_in_any_order_and_the_first_failure_wins() {
        let mut pending = vec![2, 3, 4];
        let buf = [error_msg(3, 0), error_msg(9, -libc::EPERM), error_msg(2, 0)].concat();
        take_acks(&buf, &mut pending, &[1, 5]).unwrap();
        assert_eq!(pending, [4]);
        let buf = [error_msg(4, -libc::EEXIST), error_msg(4, -libc::EBUSY)].concat();
        let err = take_acks(&buf, &mut pending, &[1, 5]).unwrap_err();
        assert!(matches!(err, NfnlError::Kernel { seq: 4, .. }));
        assert_eq!(err.errno(), Some(libc::EEXIST));
        assert!(pending.is_empty());
    }

    /// A batch refused as a whole is answered only for its BEGIN: that ends the wait, where
    /// waiting for the element messages' acks would block forever.
    #[test]
    fn an_error_for_the_batch_begin_ends_the_wait() {
        let mut pending = vec![2, 3];
        let buf = error_msg(1, -libc::EOPNOTSUPP);
        let err = take_acks(&buf, &mut pending, &[1, 4]).unwrap_err();
        assert!(matches!(err, NfnlError::Kernel { seq: 1, .. }));
        assert_eq!(err.errno(), Some(libc::EOPNOTSUPP));
    }
}
