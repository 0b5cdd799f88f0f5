//! netem over rtnetlink, for kernels that have it (`CONFIG_NET_SCH_NETEM`): one root qdisc
//! does delay, jitter, loss, rate and corruption.
//!
//! berth-netlink's tc module has no netem (its options are not attributes but a
//! `struct tc_netem_qopt` *followed* by attributes, which netlink-packet-route cannot
//! express), so the request is built here, with the layouts of
//! `include/uapi/linux/pkt_sched.h`:
//! - `tc_netem_qopt`: latency, limit, loss, gap, duplicate, jitter (u32 each; latency and
//!   jitter in psched ticks, overridden by `TCA_NETEM_LATENCY64`/`JITTER64` in
//!   nanoseconds, which is what is sent); loss is a probability scaled to `u32::MAX`.
//! - `TCA_NETEM_CORRUPT` = `{probability, correlation}`, same scale.
//! - `TCA_NETEM_RATE` = `{rate bytes/s, packet_overhead, cell_size, cell_overhead}`, with
//!   `TCA_NETEM_RATE64` when the rate does not fit 32 bits.

use std::io;

use netlink_sys::{Socket, protocols::NETLINK_ROUTE};

use crate::shape::HANDLE;
use crate::types::Impairment;

const RTM_NEWQDISC: u16 = 36;
const RTM_DELQDISC: u16 = 37;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_CREATE: u16 = 0x400;
const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
const TCA_NETEM_CORRUPT: u16 = 4;
const TCA_NETEM_RATE: u16 = 6;
const TCA_NETEM_RATE64: u16 = 8;
const TCA_NETEM_LATENCY64: u16 = 10;
const TCA_NETEM_JITTER64: u16 = 11;
/// `TC_H_ROOT`.
const ROOT: u32 = 0xffff_ffff;
/// Frames netem holds at most; its default of 1000 is short for a delayed fast link.
const LIMIT: u32 = 10_000;

/// A refused netem request.
#[derive(Debug, thiserror::Error)]
pub enum NetemError {
    #[error("rtnetlink socket")]
    Socket(#[source] io::Error),
    #[error("{step} netem qdisc on link {index} (CONFIG_NET_SCH_NETEM)")]
    Refused {
        step: &'static str,
        index: u32,
        #[source]
        source: io::Error,
    },
}

/// A probability (parts per million) as netem's u32 scale, rounded as tc rounds it.
fn scaled(ppm: u32) -> u32 {
    let v = (u64::from(ppm) * u64::from(u32::MAX) + 500_000) / 1_000_000;
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// Nanoseconds as psched ticks for `tc_netem_qopt`: `PSCHED_NS2TICKS(x) = x >> 6`.
fn ticks(ns: i64) -> u32 {
    u32::try_from(ns >> 6).unwrap_or(u32::MAX)
}

fn attr(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize((buf.len() + 3) & !3, 0);
}

/// The `TCA_OPTIONS` payload for `imp`.
pub fn options(imp: &Impairment) -> Vec<u8> {
    let mut out = Vec::new();
    let ns = |d: std::time::Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
    let loss = imp.loss.map_or(0, |l| scaled(l.ppm()));
    // Latency and jitter in ticks as tc writes them (older kernels read only these), and
    // below in nanoseconds, which newer ones (4.15+) take instead: exact past 274 s too.
    let latency = imp.delay.map_or(0, |d| ticks(ns(d)));
    let jitter = imp.jitter.map_or(0, |j| ticks(ns(j)));
    for v in [latency, LIMIT, loss, 0, 0, jitter] {
        out.extend_from_slice(&v.to_ne_bytes());
    }
    if let Some(d) = imp.delay {
        attr(&mut out, TCA_NETEM_LATENCY64, &ns(d).to_ne_bytes());
    }
    if let Some(j) = imp.jitter {
        attr(&mut out, TCA_NETEM_JITTER64, &ns(j).to_ne_bytes());
    }
    if let Some(c) = imp.corrupt {
        let mut p = scaled(c.ppm()).to_ne_bytes().to_vec();
        p.extend_from_slice(&0u32.to_ne_bytes());
        attr(&mut out, TCA_NETEM_CORRUPT, &p);
    }
    if let Some(r) = imp.rate {
        let bytes = r.bits() / 8;
        let mut p = u32::try_from(bytes)
            .unwrap_or(u32::MAX)
            .to_ne_bytes()
            .to_vec();
        p.extend_from_slice(&[0; 12]);
        attr(&mut out, TCA_NETEM_RATE, &p);
        if bytes >= u64::from(u32::MAX) {
            attr(&mut out, TCA_NETEM_RATE64, &bytes.to_ne_bytes());
        }
    }
    out
}

/// An `RTM_*QDISC` request for the root qdisc of link `index` with Berth's handle.
fn request(kind: u16, flags: u16, index: u32, body: Option<&[u8]>) -> Vec<u8> {
    let mut buf = vec![0u8; 16];
    buf[4..6].copy_from_slice(&kind.to_ne_bytes());
    buf[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_ACK | flags).to_ne_bytes());
    buf[8..12].copy_from_slice(&1u32.to_ne_bytes());
    // tcmsg: family, pads, ifindex, handle, parent, info.
    buf.extend_from_slice(&[0, 0, 0, 0]);
    buf.extend_from_slice(&index.to_ne_bytes());
    buf.extend_from_slice(&HANDLE.0.to_ne_bytes());
    buf.extend_from_slice(&ROOT.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
    if let Some(opts) = body {
        attr(&mut buf, TCA_KIND, b"netem\0");
        attr(&mut buf, TCA_OPTIONS, opts);
    }
    let len = buf.len() as u32;
    buf[0..4].copy_from_slice(&len.to_ne_bytes());
    buf
}

/// Sends one request on a socket of the calling thread's namespace; the kernel's errno.
fn call(buf: &[u8]) -> Result<Result<(), io::Error>, io::Error> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.send(buf, 0)?;
    loop {
        let (answer, _) = socket.recv_from_full()?;
        let mut rest = &answer[..];
        while rest.len() >= 20 {
            let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let kind = u16::from_ne_bytes([rest[4], rest[5]]);
            if kind == NLMSG_ERROR {
                let code = i32::from_ne_bytes([rest[16], rest[17], rest[18], rest[19]]);
                return Ok(if code == 0 {
                    Ok(())
                } else {
                    Err(io::Error::from_raw_os_error(-code))
                });
            }
            if len < 16 || len > rest.len() {
                break;
            }
            rest = &rest[(len + 3) & !3..];
        }
    }
}

/// Installs (or replaces) Berth's root netem qdisc on link `index` of the calling thread's
/// namespace.
pub fn replace(index: u32, imp: &Impairment) -> Result<(), NetemError> {
    let buf = request(
        RTM_NEWQDISC,
        NLM_F_CREATE | NLM_F_REPLACE,
        index,
        Some(&options(imp)),
    );
    call(&buf)
        .map_err(NetemError::Socket)?
        .map_err(|source| NetemError::Refused {
            step: "add",
            index,
            source,
        })
}

/// Tries a netem qdisc on link `index` (a throwaway namespace's loopback) and removes it.
pub fn probe(index: u32) -> Result<(), NetemError> {
    replace(index, &Impairment::default())?;
    let buf = request(RTM_DELQDISC, 0, index, None);
    call(&buf)
        .map_err(NetemError::Socket)?
        .map_err(|source| NetemError::Refused {
            step: "delete",
            index,
            source,
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::types::{Percent, Rate};
    use std::time::Duration;

    /// What `tc qdisc add dev lo root handle be27: netem delay 20ms 2ms loss 5% rate
    /// 10mbit` (iproute2 6.1) sent here, read with strace: `tc_netem_qopt` then
    /// `TCA_NETEM_RATE`. Berth sends the same, plus the 64-bit latency and jitter.
    #[test]
    fn options_as_tc_sends_them() {
        let imp = Impairment {
            delay: Some(Duration::from_millis(20)),
            jitter: Some(Duration::from_millis(2)),
            loss: Percent::whole(5),
            rate: Rate::bits_per_second(10_000_000),
            corrupt: None,
        };
        let tc_qopt: [u8; 24] = [
            0xb4, 0xc4, 0x04, 0x00, 0xe8, 0x03, 0x00, 0x00, 0xcd, 0xcc, 0xcc, 0x0c, 0, 0, 0, 0, 0,
            0, 0, 0, 0x12, 0x7a, 0x00, 0x00,
        ];
        let tc_rate: [u8; 20] = [
            0x14, 0x00, 0x06, 0x00, 0xd0, 0x12, 0x13, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        let o = options(&imp);
        // Ours keeps a deeper queue than tc's default 1000 frames.
        let mut qopt = o[..24].to_vec();
        qopt[4..8].copy_from_slice(&1000u32.to_ne_bytes());
        assert_eq!(qopt, tc_qopt);
        assert_eq!(u32::from_ne_bytes(o[4..8].try_into().unwrap()), LIMIT);
        // LATENCY64 and JITTER64: 4-byte header + 8 bytes of nanoseconds each.
        assert_eq!(
            u16::from_ne_bytes(o[26..28].try_into().unwrap()),
            TCA_NETEM_LATENCY64
        );
        assert_eq!(
            i64::from_ne_bytes(o[28..36].try_into().unwrap()),
            20_000_000
        );
        assert_eq!(
            u16::from_ne_bytes(o[38..40].try_into().unwrap()),
            TCA_NETEM_JITTER64
        );
        assert_eq!(i64::from_ne_bytes(o[40..48].try_into().unwrap()), 2_000_000);
        assert_eq!(o[48..], tc_rate);
    }
}
