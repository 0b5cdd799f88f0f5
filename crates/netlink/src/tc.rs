//! Traffic control over rtnetlink: the qdiscs, classes and filters of rate limiting — the `tbf`
//! and `htb` shapers, the `ingress` hook, `u32` filters with a `mirred` redirect — and reading
//! them back, for CHECK and DEL.
//!
//! netlink-packet-route 0.34 models the ingress qdisc, the u32 filter and the mirred action,
//! and those types are used here. It does not model `tbf` or `htb`: their options are built
//! and parsed here as raw attributes, with the layouts of `include/uapi/linux/pkt_sched.h`.
//!
//! Kernel facts this file relies on:
//! - Times in tc messages are psched ticks; how many ticks make a microsecond is in
//!   `/proc/net/psched` ([`TcClock`]). The kernel keeps a tbf bucket as nanoseconds
//!   (`PSCHED_TICKS2NS(x) = x << 6`), and its size in bytes capped at `u32::MAX`.
//! - Rates are bytes per second; above `u32::MAX` they travel in a separate 64-bit attribute
//!   and the 32-bit field carries `u32::MAX` (htb refuses a zero there).
//! - A filter's priority and protocol share `tcm_info`: priority in the upper 16 bits, the
//!   EtherType in network byte order in the lower 16.
//! - A u32 dump answers with the filter's table and hash-table entries as well as its rules;
//!   only the rules carry a selector.
//! - Deleting a qdisc that is not there is ENOENT ("Cannot find specified qdisc" or "Cannot
//!   delete qdisc with handle of zero", the built-in default); a qdisc of another handle at
//!   that place is EINVAL ("Invalid handle").

use std::fmt;
use std::io;
use std::sync::Arc;

use netlink_packet_core::{
    DefaultNla, NLA_TYPE_MASK, NLM_F_CREATE, NLM_F_EXCL, Nla, NlaBuffer, NlasIterator,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::tc::{
    TcAction, TcActionAttribute, TcActionMirrorOption, TcActionOption, TcActionType, TcAttribute,
    TcFilterU32Option, TcMessage, TcMirror, TcMirrorActionType, TcOption, TcU32Key, TcU32Selector,
    TcU32SelectorFlags,
};

use crate::netlink::Netlink;
use crate::socket::{Errno, NetlinkError};

/// Where the kernel publishes its packet-scheduler clock.
pub const PSCHED_PATH: &str = "/proc/net/psched";

/// EtherType "every protocol" (`ETH_P_ALL`), for filters that see every frame.
pub const ETH_P_ALL: u16 = 0x0003;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;

const TCA_OPTIONS: u16 = 2;

// pkt_sched.h: tbf.
const TCA_TBF_PARMS: u16 = 1;
const TCA_TBF_RATE64: u16 = 4;
// pkt_sched.h: htb.
const TCA_HTB_PARMS: u16 = 1;
const TCA_HTB_INIT: u16 = 2;
const TCA_HTB_RATE64: u16 = 6;
const TCA_HTB_CEIL64: u16 = 7;
/// `TC_HTB_PROTOVER`: the htb ABI version the kernel expects in `tc_htb_glob`.
const HTB_PROTOVER: u32 = 3;

/// `struct tc_ratespec`: cell_log u8, linklayer u8, overhead u16, cell_align i16, mpu u16, rate u32.
const RATESPEC_LEN: usize = 12;
/// `struct tc_tbf_qopt`: rate, peakrate, limit, buffer, mtu.
const TBF_QOPT_LEN: usize = 2 * RATESPEC_LEN + 12;
/// `struct tc_htb_glob`: version, rate2quantum, defcls, debug, direct_pkts.
const HTB_GLOB_LEN: usize = 20;
/// `struct tc_htb_opt`: rate, ceil, buffer, cbuffer, quantum, level, prio.
const HTB_OPT_LEN: usize = 2 * RATESPEC_LEN + 20;
/// `TC_LINKLAYER_ETHERNET`: what tc sets for htb; tbf is sent with 0 (unaware), as the
/// reference plugin does, which the kernel treats the same.
const LINKLAYER_ETHERNET: u8 = 1;

/// A tc handle or class id, `major:minor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Handle(pub u32);

impl Handle {
    /// `TC_H_ROOT`: the parent of a device's root qdisc.
    pub const ROOT: Handle = Handle(0xffff_ffff);
    /// `TC_H_INGRESS`: the parent of the ingress (or clsact) qdisc.
    pub const INGRESS: Handle = Handle(0xffff_fff1);
    /// The ingress qdisc's own handle, `ffff:`, the parent of its filters.
    pub const INGRESS_QDISC: Handle = Handle::new(0xffff, 0);
    pub const UNSPEC: Handle = Handle(0);

    pub const fn new(major: u16, minor: u16) -> Handle {
        Handle(((major as u32) << 16) | minor as u32)
    }

    pub const fn major(self) -> u16 {
        (self.0 >> 16) as u16
    }

    pub const fn minor(self) -> u16 {
        (self.0 & 0xffff) as u16
    }
}

impl fmt::Display for Handle {
    /// As `tc` prints it: hexadecimal, `1:` for a qdisc, `1:30` for a class.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Handle::ROOT => f.write_str("root"),
            Handle::INGRESS => f.write_str("ingress"),
            h if h.minor() == 0 => write!(f, "{:x}:", h.major()),
            h => write!(f, "{:x}:{:x}", h.major(), h.minor()),
        }
    }
}

/// The kernel's packet-scheduler clock: how many ticks make a microsecond. tc computes bucket
/// sizes with it; so does the reference plugin (through the Go netlink library), and Berth
/// does it the same way so that both program the same numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TcClock {
    ticks_per_usec: f64,
}

impl TcClock {
    /// Reads [`PSCHED_PATH`]. The clock is global, not per namespace.
    pub fn read() -> Result<TcClock, TcError> {
        let text = std::fs::read_to_string(PSCHED_PATH).map_err(TcError::ReadClock)?;
        TcClock::parse(&text)
    }

    /// `t2us us2t clock_res hz` in hexadecimal, as iproute2's `tc_core_init` reads it: a
    /// microsecond is `t2us / us2t` ticks, scaled by the clock resolution relative to 1 MHz
    /// (and very old kernels with a nanosecond clock report `t2us` in `us2t`'s place).
    pub fn parse(text: &str) -> Result<TcClock, TcError> {
        let bad = || TcError::ParseClock(text.trim().to_owned());
        let fields: Vec<u64> = text
            .split_whitespace()
            .take(3)
            .map(|f| u64::from_str_radix(f, 16))
            .collect::<Result<_, _>>()
            .map_err(|_| bad())?;
        let &[mut t2us, us2t, clock_res] = fields.as_slice() else {
            return Err(bad());
        };
        if us2t == 0 || clock_res == 0 {
            return Err(bad());
        }
        if clock_res == 1_000_000_000 {
            t2us = us2t;
        }
        let clock_factor = clock_res as f64 / 1_000_000.0;
        Ok(TcClock {
            ticks_per_usec: t2us as f64 / us2t as f64 * clock_factor,
        })
    }

    pub fn ticks_per_usec(&self) -> f64 {
        self.ticks_per_usec
    }

    /// Microseconds to ticks, truncated, saturating at `u32::MAX` (the field is 32 bits).
    pub fn usec_to_ticks(&self, usec: f64) -> u32 {
        // `as` from f64 saturates (and maps NaN to 0): no wrap-around.
        (usec * self.ticks_per_usec) as u32
    }

    pub fn ticks_to_usec(&self, ticks: u32) -> f64 {
        f64::from(ticks) / self.ticks_per_usec
    }
}

/// `tbf` parameters as the kernel takes them (`struct tc_tbf_qopt`, `TCA_TBF_RATE64`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tbf {
    /// Bytes per second.
    pub rate: u64,
    /// The bucket, as the time to fill it at `rate`, in ticks ([`TcClock`]).
    pub buffer: u32,
    /// Bytes that may wait in the queue.
    pub limit: u32,
}

impl Tbf {
    /// The bucket in bytes, as the kernel computes it (`max_size`): packets larger than this
    /// are dropped (or, for GSO packets, segmented first). Zero makes the kernel refuse the
    /// qdisc (EINVAL).
    pub fn max_size(&self) -> u64 {
        let ns = u64::from(self.buffer) << 6;
        let bytes = u128::from(ns) * u128::from(self.rate) / 1_000_000_000;
        u64::try_from(bytes)
            .unwrap_or(u64::MAX)
            .min(u64::from(u32::MAX))
    }
}

/// An `htb` qdisc (`struct tc_htb_glob`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Htb {
    /// The minor number of the class unclassified traffic goes to.
    pub default_class: u16,
    /// Divides a class's rate to get its quantum when the class sets none.
    pub rate2quantum: u32,
}

/// An `htb` class (`struct tc_htb_opt`, `TCA_HTB_RATE64`, `TCA_HTB_CEIL64`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HtbClass {
    pub classid: Handle,
    pub parent: Handle,
    /// Bytes per second guaranteed.
    pub rate: u64,
    /// Bytes per second at most (borrowing from the parent class).
    pub ceil: u64,
    /// Bucket for `rate`, in ticks.
    pub buffer: u32,
    /// Bucket for `ceil`, in ticks.
    pub cbuffer: u32,
    /// Bytes per round when classes share; 0: the kernel derives it from the rate.
    pub quantum: u32,
}

/// One 32-bit match of a u32 filter: `(packet[offset..offset + 4] & mask) == value`, offsets
/// from the network header, values in host order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct U32Key {
    pub mask: u32,
    pub value: u32,
    pub offset: i32,
}

/// A u32 filter rule. Written with [`Netlink::add_u32_filter`] and read back by
/// [`Netlink::filters`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct U32Filter {
    /// The qdisc (or class) it hangs off.
    pub parent: Handle,
    /// Lower numbers are tried first (`pref`/`prio` in tc).
    pub priority: u16,
    /// EtherType ([`ETH_P_ALL`], [`ETH_P_IP`], ...), host order.
    pub protocol: u16,
    /// The class a match goes to (`flowid`).
    pub classid: Option<Handle>,
    /// All must match; none matches every packet (sent as one all-zero key, like tc's
    /// `match u32 0 0`).
    pub keys: Vec<U32Key>,
    /// `action mirred egress redirect dev <index>`: a match leaves through that link.
    pub redirect_to: Option<u32>,
}

/// A filter as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub kind: String,
    /// The kernel's handle of the rule (`800::800` for the first u32 rule).
    pub handle: u32,
    /// For u32 filters, the rule; for other kinds only parent, priority and protocol are
    /// filled in.
    pub rule: U32Filter,
}

/// A qdisc as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qdisc {
    pub index: u32,
    pub handle: Handle,
    pub parent: Handle,
    pub kind: String,
    /// Set when `kind` is `tbf`.
    pub tbf: Option<Tbf>,
    /// Set when `kind` is `htb`.
    pub htb: Option<Htb>,
}

/// Errors of the `tc` module. Each variant names the step, the link and the namespace.
#[derive(Debug, thiserror::Error)]
pub enum TcError {
    #[error("add {kind} qdisc {handle} (parent {parent}) on link {index} in {netns}")]
    AddQdisc {
        kind: &'static str,
        handle: Handle,
        parent: Handle,
        index: u32,
        netns: Arc<str>,
        #[source]
        source: NetlinkError,
    },
    #[error("delete qdisc {handle} (parent {parent}) on link {index} in {netns}")]
    DelQdisc {
        handle: Handle,
        parent: Handle,
        index: u32,
        netns: Arc<str>,
        #[source]
        source: NetlinkError,
    },
    #[error("add htb class {classid} on link {index} in {netns}")]
    AddClass {
        classid: Handle,
        index: u32,
        netns: Arc<str>,
        #[source]
        source: NetlinkError,
    },
    #[error("add u32 filter (parent {parent}, priority {priority}) on link {index} in {netns}")]
    AddFilter {
        parent: Handle,
        priority: u16,
        index: u32,
        netns: Arc<str>,
        #[source]
        source: NetlinkError,
    },
    #[error("list the {what} of link {index} in {netns}")]
    List {
        what: &'static str,
        index: u32,
        netns: Arc<str>,
        #[source]
        source: NetlinkError,
    },
    #[error("read the packet scheduler clock {PSCHED_PATH}")]
    ReadClock(#[source] io::Error),
    #[error("unexpected contents of {PSCHED_PATH}: {0:?}")]
    ParseClock(String),
}

impl Errno for TcError {
    fn errno(&self) -> Option<i32> {
        match self {
            Self::AddQdisc { source, .. }
            | Self::DelQdisc { source, .. }
            | Self::AddClass { source, .. }
            | Self::AddFilter { source, .. }
            | Self::List { source, .. } => source.errno(),
            Self::ReadClock(e) => e.raw_os_error(),
            Self::ParseClock(_) => None,
        }
    }
}

impl Netlink {
    /// `tc qdisc add dev <index> parent <parent> handle <handle> tbf ...`.
    pub fn add_tbf(
        &self,
        index: u32,
        handle: Handle,
        parent: Handle,
        tbf: &Tbf,
    ) -> Result<(), TcError> {
        self.add_qdisc(index, handle, parent, "tbf", tbf_options(tbf))
    }

    /// `tc qdisc add dev <index> parent <parent> handle <handle> htb default <class>`.
    pub fn add_htb(
        &self,
        index: u32,
        handle: Handle,
        parent: Handle,
        htb: &Htb,
    ) -> Result<(), TcError> {
        self.add_qdisc(index, handle, parent, "htb", htb_options(htb))
    }

    /// `tc qdisc add dev <index> ingress` (handle `ffff:`), the hook for filters on received
    /// traffic.
    pub fn add_ingress_qdisc(&self, index: u32) -> Result<(), TcError> {
        self.add_qdisc(
            index,
            Handle::INGRESS_QDISC,
            Handle::INGRESS,
            "ingress",
            Vec::new(),
        )
    }

    fn add_qdisc(
        &self,
        index: u32,
        handle: Handle,
        parent: Handle,
        kind: &'static str,
        options: Vec<TcOption>,
    ) -> Result<(), TcError> {
        let mut msg = tc_message(index, handle, parent, 0);
        msg.attributes.push(TcAttribute::Kind(kind.to_owned()));
        if !options.is_empty() {
            msg.attributes.push(TcAttribute::Options(options));
        }
        self.conn
            .request(
                RouteNetlinkMessage::NewQueueDiscipline(msg),
                NLM_F_CREATE | NLM_F_EXCL,
            )
            .map(drop)
            .map_err(|source| TcError::AddQdisc {
                kind,
                handle,
                parent,
                index,
                netns: self.label(),
                source,
            })
    }

    /// `tc class add dev <index> parent <parent> classid <classid> htb ...`.
    pub fn add_htb_class(&self, index: u32, class: &HtbClass) -> Result<(), TcError> {
        let mut msg = tc_message(index, class.classid, class.parent, 0);
        msg.attributes.push(TcAttribute::Kind("htb".to_owned()));
        msg.attributes
            .push(TcAttribute::Options(htb_class_options(class)));
        self.conn
            .request(
                RouteNetlinkMessage::NewTrafficClass(msg),
                NLM_F_CREATE | NLM_F_EXCL,
            )
            .map(drop)
            .map_err(|source| TcError::AddClass {
                classid: class.classid,
                index,
                netns: self.label(),
                source,
            })
    }

    /// `tc filter add dev <index> parent <parent> protocol <protocol> prio <priority> u32
    /// match ... [flowid <classid>] [action mirred egress redirect dev <index>]`.
    pub fn add_u32_filter(&self, index: u32, filter: &U32Filter) -> Result<(), TcError> {
        let info = filter_info(filter.priority, filter.protocol);
        let mut msg = tc_message(index, Handle::UNSPEC, filter.parent, info);
        msg.attributes.push(TcAttribute::Kind("u32".to_owned()));
        msg.attributes
            .push(TcAttribute::Options(u32_options(filter)));
        self.conn
            .request(
                RouteNetlinkMessage::NewTrafficFilter(msg),
                NLM_F_CREATE | NLM_F_EXCL,
            )
            .map(drop)
            .map_err(|source| TcError::AddFilter {
                parent: filter.parent,
                priority: filter.priority,
                index,
                netns: self.label(),
                source,
            })
    }

    /// The qdiscs of link `index`, including the kernel's defaults (`noqueue`, `pfifo_fast`,
    /// `mq`, with handle 0).
    pub fn qdiscs(&self, index: u32) -> Result<Vec<Qdisc>, TcError> {
        let replies = self
            .dump_tc(RouteNetlinkMessage::GetQueueDiscipline(tc_message(
                index,
                Handle::UNSPEC,
                Handle::UNSPEC,
                0,
            )))
            .map_err(|source| self.list_error("qdiscs", index, source))?;
        Ok(replies
            .iter()
            .filter_map(|reply| match reply {
                RouteNetlinkMessage::NewQueueDiscipline(msg) => Some(qdisc_from_message(msg)),
                _ => None,
            })
            // The kernel may answer for every link of the namespace.
            .filter(|q| q.index == index)
            .collect())
    }

    /// The htb classes of link `index`.
    pub fn htb_classes(&self, index: u32) -> Result<Vec<HtbClass>, TcError> {
        let replies = self
            .dump_tc(RouteNetlinkMessage::GetTrafficClass(tc_message(
                index,
                Handle::UNSPEC,
                Handle::UNSPEC,
                0,
            )))
            .map_err(|source| self.list_error("classes", index, source))?;
        Ok(replies
            .iter()
            .filter_map(|reply| match reply {
                RouteNetlinkMessage::NewTrafficClass(msg) if msg.header.index == index as i32 => {
                    htb_class_from_message(msg)
                }
                _ => None,
            })
            .collect())
    }

    /// The filters attached to `parent` on link `index` (e.g. [`Handle::INGRESS_QDISC`]); for
    /// u32, only its rules (see the module notes). No qdisc at `parent` means no filters.
    pub fn filters(&self, index: u32, parent: Handle) -> Result<Vec<Filter>, TcError> {
        let replies = match self.dump_tc(RouteNetlinkMessage::GetTrafficFilter(tc_message(
            index,
            Handle::UNSPEC,
            parent,
            0,
        ))) {
            Ok(replies) => replies,
            Err(e) if e.is_not_found() || e.errno() == Some(libc::EINVAL) => Vec::new(),
            Err(source) => return Err(self.list_error("filters", index, source)),
        };
        Ok(replies
            .iter()
            .filter_map(|reply| match reply {
                RouteNetlinkMessage::NewTrafficFilter(msg) if msg.header.index == index as i32 => {
                    filter_from_message(msg)
                }
                _ => None,
            })
            .collect())
    }

    /// `tc qdisc del dev <index> parent <parent> handle <handle>`: deletes the qdisc at
    /// `parent` if it has handle `handle`, with its classes and filters. `Ok(false)` when
    /// there is none there, or one with another handle (someone else's: left alone), or the
    /// link is gone.
    pub fn del_qdisc(&self, index: u32, parent: Handle, handle: Handle) -> Result<bool, TcError> {
        let msg = tc_message(index, handle, parent, 0);
        match self
            .conn
            .request(RouteNetlinkMessage::DelQueueDiscipline(msg), 0)
        {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() || e.errno() == Some(libc::EINVAL) => Ok(false),
            Err(source) => Err(TcError::DelQdisc {
                handle,
                parent,
                index,
                netns: self.label(),
                source,
            }),
        }
    }

    fn dump_tc(&self, msg: RouteNetlinkMessage) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        self.conn.dump(msg)
    }

    fn list_error(&self, what: &'static str, index: u32, source: NetlinkError) -> TcError {
        TcError::List {
            what,
            index,
            netns: self.label(),
            source,
        }
    }
}

fn tc_message(index: u32, handle: Handle, parent: Handle, info: u32) -> TcMessage {
    // Link indexes are positive `int`s in the kernel; a u32 above i32::MAX cannot name one.
    let mut msg = TcMessage::with_index(i32::try_from(index).unwrap_or(i32::MAX));
    msg.header.handle = handle.0.into();
    msg.header.parent = parent.0.into();
    msg.header.info = info;
    msg
}

/// `tcm_info` of a filter: `TC_H_MAKE(prio << 16, htons(protocol))`.
fn filter_info(priority: u16, protocol: u16) -> u32 {
    (u32::from(priority) << 16) | u32::from(protocol.to_be())
}

fn raw(kind: u16, value: Vec<u8>) -> TcOption {
    TcOption::Other(DefaultNla::new(kind, value))
}

/// `struct tc_ratespec` for `rate` bytes/s: the 32-bit field saturates (the exact rate then
/// goes in the 64-bit attribute).
fn ratespec(rate: u64, linklayer: u8) -> [u8; RATESPEC_LEN] {
    let mut spec = [0u8; RATESPEC_LEN];
    spec[1] = linklayer;
    spec[8..12].copy_from_slice(&saturate_u32(rate).to_ne_bytes());
    spec
}

fn saturate_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

fn tbf_options(tbf: &Tbf) -> Vec<TcOption> {
    let mut qopt = Vec::with_capacity(TBF_QOPT_LEN);
    qopt.extend(ratespec(tbf.rate, 0));
    qopt.extend([0u8; RATESPEC_LEN]); // no peak rate
    qopt.extend(tbf.limit.to_ne_bytes());
    qopt.extend(tbf.buffer.to_ne_bytes());
    qopt.extend(0u32.to_ne_bytes()); // mtu: only used with a peak rate
    let mut options = vec![raw(TCA_TBF_PARMS, qopt)];
    if tbf.rate > u64::from(u32::MAX) {
        options.push(raw(TCA_TBF_RATE64, tbf.rate.to_ne_bytes().to_vec()));
    }
    options
}

fn htb_options(htb: &Htb) -> Vec<TcOption> {
    let mut glob = Vec::with_capacity(HTB_GLOB_LEN);
    glob.extend(HTB_PROTOVER.to_ne_bytes());
    glob.extend(htb.rate2quantum.to_ne_bytes());
    glob.extend(u32::from(htb.default_class).to_ne_bytes());
    glob.extend(0u32.to_ne_bytes()); // debug
    glob.extend(0u32.to_ne_bytes()); // direct_pkts (read-only)
    vec![raw(TCA_HTB_INIT, glob)]
}

fn htb_class_options(class: &HtbClass) -> Vec<TcOption> {
    let mut opt = Vec::with_capacity(HTB_OPT_LEN);
    opt.extend(ratespec(class.rate, LINKLAYER_ETHERNET));
    opt.extend(ratespec(class.ceil, LINKLAYER_ETHERNET));
    opt.extend(class.buffer.to_ne_bytes());
    opt.extend(class.cbuffer.to_ne_bytes());
    opt.extend(class.quantum.to_ne_bytes());
    opt.extend(0u32.to_ne_bytes()); // level: computed by the kernel
    opt.extend(0u32.to_ne_bytes()); // prio
    let mut options = vec![raw(TCA_HTB_PARMS, opt)];
    if class.rate > u64::from(u32::MAX) {
        options.push(raw(TCA_HTB_RATE64, class.rate.to_ne_bytes().to_vec()));
    }
    if class.ceil > u64::from(u32::MAX) {
        options.push(raw(TCA_HTB_CEIL64, class.ceil.to_ne_bytes().to_vec()));
    }
    options
}

fn u32_options(filter: &U32Filter) -> Vec<TcOption> {
    let mut keys: Vec<TcU32Key> = filter
        .keys
        .iter()
        .map(|k| {
            let mut key = TcU32Key::default();
            key.mask = k.mask;
            key.val = k.value & k.mask;
            key.off = k.offset;
            key
        })
        .collect();
    if keys.is_empty() {
        // Match everything: one key that compares no bits.
        keys.push(TcU32Key::default());
    }
    let mut selector = TcU32Selector::default();
    selector.flags = TcU32SelectorFlags::Terminal;
    // At most a handful of keys (one per 32-bit word of an address).
    selector.nkeys = u8::try_from(keys.len()).unwrap_or(u8::MAX);
    selector.keys = keys;

    let mut options = vec![TcOption::U32(TcFilterU32Option::Selector(selector))];
    if let Some(classid) = filter.classid {
        options.push(TcOption::U32(TcFilterU32Option::ClassId(classid.0.into())));
    }
    if let Some(target) = filter.redirect_to {
        let mut mirror = TcMirror::default();
        mirror.eaction = TcMirrorActionType::EgressRedir;
        mirror.ifindex = target;
        // Stolen: the packet is consumed here and continues on the target link only.
        mirror.generic.action = TcActionType::Stolen;
        let mut action = TcAction::default(); // tab 1: the first action
        action.attributes = vec![
            TcActionAttribute::Kind("mirred".to_owned()),
            TcActionAttribute::Options(vec![TcActionOption::Mirror(TcActionMirrorOption::Parms(
                mirror,
            ))]),
        ];
        options.push(TcOption::U32(TcFilterU32Option::Action(vec![action])));
    }
    options
}

fn kind_of(msg: &TcMessage) -> String {
    msg.attributes
        .iter()
        .find_map(|a| match a {
            TcAttribute::Kind(kind) => Some(kind.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

/// The nested attributes inside `TCA_OPTIONS` of a kind netlink-packet-route does not model:
/// it hands them over as one opaque attribute (see `VecTcOption` there).
fn raw_options(msg: &TcMessage) -> Vec<(u16, Vec<u8>)> {
    let mut out = Vec::new();
    for attr in &msg.attributes {
        let TcAttribute::Options(options) = attr else {
            continue;
        };
        for option in options {
            let TcOption::Other(nla) = option else {
                continue;
            };
            let mut value = vec![0u8; nla.value_len()];
            nla.emit_value(&mut value);
            if nla.kind() & NLA_TYPE_MASK == TCA_OPTIONS {
                for inner in NlasIterator::new(value.as_slice()).flatten() {
                    let inner: NlaBuffer<&[u8]> = inner;
                    out.push((inner.kind() & NLA_TYPE_MASK, inner.value().to_vec()));
                }
            } else {
                out.push((nla.kind() & NLA_TYPE_MASK, value));
            }
        }
    }
    out
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn u64_of(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_ne_bytes(bytes.get(..8)?.try_into().ok()?))
}

fn qdisc_from_message(msg: &TcMessage) -> Qdisc {
    let kind = kind_of(msg);
    let options = raw_options(msg);
    let find = |k: u16| options.iter().find(|(kind, _)| *kind == k).map(|(_, v)| v);
    let (mut tbf, mut htb) = (None, None);
    match kind.as_str() {
        "tbf" => {
            if let Some(qopt) = find(TCA_TBF_PARMS) {
                let rate32 = u32_at(qopt, 8);
                let limit = u32_at(qopt, 2 * RATESPEC_LEN);
                let buffer = u32_at(qopt, 2 * RATESPEC_LEN + 4);
                if let (Some(rate32), Some(limit), Some(buffer)) = (rate32, limit, buffer) {
                    let rate = find(TCA_TBF_RATE64)
                        .and_then(|v| u64_of(v))
                        .unwrap_or(u64::from(rate32));
                    tbf = Some(Tbf {
                        rate,
                        buffer,
                        limit,
                    });
                }
            }
        }
        "htb" => {
            if let Some(glob) = find(TCA_HTB_INIT) {
                if let (Some(r2q), Some(defcls)) = (u32_at(glob, 4), u32_at(glob, 8)) {
                    htb = Some(Htb {
                        default_class: u16::try_from(defcls).unwrap_or(u16::MAX),
                        rate2quantum: r2q,
                    });
                }
            }
        }
        _ => {}
    }
    Qdisc {
        index: u32::try_from(msg.header.index).unwrap_or(0),
        handle: Handle(msg.header.handle.into()),
        parent: Handle(msg.header.parent.into()),
        kind,
        tbf,
        htb,
    }
}

fn htb_class_from_message(msg: &TcMessage) -> Option<HtbClass> {
    if kind_of(msg) != "htb" {
        return None;
    }
    let options = raw_options(msg);
    let find = |k: u16| options.iter().find(|(kind, _)| *kind == k).map(|(_, v)| v);
    let opt = find(TCA_HTB_PARMS)?;
    let rate = find(TCA_HTB_RATE64)
        .and_then(|v| u64_of(v))
        .unwrap_or(u64::from(u32_at(opt, 8)?));
    let ceil = find(TCA_HTB_CEIL64)
        .and_then(|v| u64_of(v))
        .unwrap_or(u64::from(u32_at(opt, RATESPEC_LEN + 8)?));
    Some(HtbClass {
        classid: Handle(msg.header.handle.into()),
        parent: Handle(msg.header.parent.into()),
        rate,
        ceil,
        buffer: u32_at(opt, 2 * RATESPEC_LEN)?,
        cbuffer: u32_at(opt, 2 * RATESPEC_LEN + 4)?,
        quantum: u32_at(opt, 2 * RATESPEC_LEN + 8)?,
    })
}

fn filter_from_message(msg: &TcMessage) -> Option<Filter> {
    let kind = kind_of(msg);
    let handle: u32 = msg.header.handle.into();
    let info = msg.header.info;
    let mut rule = U32Filter {
        parent: Handle(msg.header.parent.into()),
        priority: (info >> 16) as u16,
        protocol: u16::from_be((info & 0xffff) as u16),
        classid: None,
        keys: Vec::new(),
        redirect_to: None,
    };
    if kind != "u32" {
        // The filter's table itself (handle 0) is no rule.
        return (handle != 0).then_some(Filter { kind, handle, rule });
    }
    let mut selector = None;
    for attr in &msg.attributes {
        let TcAttribute::Options(options) = attr else {
            continue;
        };
        for option in options {
            match option {
                TcOption::U32(TcFilterU32Option::Selector(sel)) => selector = Some(sel),
                TcOption::U32(TcFilterU32Option::ClassId(id)) => {
                    rule.classid = Some(Handle((*id).into()));
                }
                TcOption::U32(TcFilterU32Option::Action(actions)) if rule.redirect_to.is_none() => {
                    rule.redirect_to = actions.iter().find_map(egress_redirect);
                }
                _ => {}
            }
        }
    }
    // Only rules carry a selector; the table and hash-table entries do not.
    let selector = selector?;
    rule.keys = selector
        .keys
        .iter()
        .filter(|k| k.mask != 0)
        .map(|k| U32Key {
            mask: k.mask,
            value: k.val,
            offset: k.off,
        })
        .collect();
    Some(Filter { kind, handle, rule })
}

/// The target of a `mirred egress redirect` action.
fn egress_redirect(action: &TcAction) -> Option<u32> {
    action.attributes.iter().find_map(|attr| match attr {
        TcActionAttribute::Options(options) => options.iter().find_map(|o| match o {
            TcActionOption::Mirror(TcActionMirrorOption::Parms(m))
                if m.eaction == TcMirrorActionType::EgressRedir =>
            {
                Some(m.ifindex)
            }
            _ => None,
        }),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{Emitable, Parseable};

    #[test]
    fn handles_print_like_tc() {
        assert_eq!(Handle::new(1, 0).to_string(), "1:");
        assert_eq!(Handle::new(1, 48).to_string(), "1:30");
        assert_eq!(Handle::INGRESS_QDISC.to_string(), "ffff:");
        assert_eq!(Handle::ROOT.to_string(), "root");
        assert_eq!(Handle::new(0xffff, 0).0, 0xffff_0000);
    }

    #[test]
    fn clock_of_a_modern_kernel() {
        // What a 1 GHz hrtimer kernel reports: 1000/64 ticks per µs.
        let clock = TcClock::parse("000003e8 00000040 000f4240 3b9aca00\n").unwrap();
        assert_eq!(clock.ticks_per_usec(), 15.625);
        assert_eq!(clock.usec_to_ticks(20_000.0), 312_500);
        assert_eq!(clock.usec_to_ticks(1e12), u32::MAX, "saturates");
        assert!(TcClock::parse("garbage").is_err());
        assert!(TcClock::parse("1 0 1 1").is_err());
    }

    #[test]
    fn tbf_bucket_in_bytes_is_what_the_kernel_computes() {
        // 20 Mbit/s = 2.5 MB/s, 50 000 bytes = 20 ms = 312 500 ticks.
        let tbf = Tbf {
            rate: 2_500_000,
            buffer: 312_500,
            limit: 112_500,
        };
        assert_eq!(tbf.max_size(), 50_000);
        // A bucket under one tick holds nothing: the kernel refuses it.
        let tbf = Tbf { buffer: 0, ..tbf };
        assert_eq!(tbf.max_size(), 0);
        // The kernel keeps at most u32::MAX bytes.
        let tbf = Tbf {
            rate: 1_000_000_000,
            buffer: u32::MAX,
            ..tbf
        };
        assert_eq!(tbf.max_size(), u64::from(u32::MAX));
    }

    #[test]
    fn filter_info_puts_the_protocol_in_network_order() {
        assert_eq!(filter_info(1, ETH_P_ALL), 0x0001_0300);
        assert_eq!(filter_info(16, ETH_P_IP), 0x0010_0008);
    }

    /// Round trip through bytes: what we send parses back as the same qdisc.
    #[test]
    fn tbf_and_htb_options_round_trip() {
        let tbf = Tbf {
            rate: 5_000_000_000, // above u32: the 64-bit attribute
            buffer: 4_000,
            limit: 1_000_000,
        };
        let mut msg = tc_message(7, Handle::new(1, 0), Handle::ROOT, 0);
        msg.attributes.push(TcAttribute::Kind("tbf".into()));
        msg.attributes.push(TcAttribute::Options(tbf_options(&tbf)));
        let parsed = reparse(&msg);
        let q = qdisc_from_message(&parsed);
        assert_eq!((q.index, q.kind.as_str()), (7, "tbf"));
        assert_eq!((q.handle, q.parent), (Handle::new(1, 0), Handle::ROOT));
        assert_eq!(q.tbf, Some(tbf));

        let htb = Htb {
            default_class: 48,
            rate2quantum: 10,
        };
        let mut msg = tc_message(7, Handle::new(1, 0), Handle::ROOT, 0);
        msg.attributes.push(TcAttribute::Kind("htb".into()));
        msg.attributes.push(TcAttribute::Options(htb_options(&htb)));
        assert_eq!(qdisc_from_message(&reparse(&msg)).htb, Some(htb));

        let class = HtbClass {
            classid: Handle::new(1, 1),
            parent: Handle::new(1, 0),
            rate: 100_000_000_000,
            ceil: 100_000_000_000,
            buffer: 10,
            cbuffer: 20,
            quantum: 200_000,
        };
        let mut msg = tc_message(7, class.classid, class.parent, 0);
        msg.attributes.push(TcAttribute::Kind("htb".into()));
        msg.attributes
            .push(TcAttribute::Options(htb_class_options(&class)));
        assert_eq!(htb_class_from_message(&reparse(&msg)), Some(class));
    }

    #[test]
    fn u32_redirect_round_trips() {
        let filter = U32Filter {
            parent: Handle::INGRESS_QDISC,
            priority: 1,
            protocol: ETH_P_ALL,
            classid: Some(Handle::new(1, 1)),
            keys: Vec::new(),
            redirect_to: Some(42),
        };
        let mut msg = tc_message(
            3,
            Handle(0x800_800),
            filter.parent,
            filter_info(1, ETH_P_ALL),
        );
        msg.attributes.push(TcAttribute::Kind("u32".into()));
        msg.attributes
            .push(TcAttribute::Options(u32_options(&filter)));
        let parsed = filter_from_message(&reparse(&msg)).unwrap();
        assert_eq!(parsed.kind, "u32");
        assert_eq!(
            parsed.rule, filter,
            "the match-all key reads back as no key"
        );

        let subnet = U32Filter {
            parent: Handle::new(1, 0),
            priority: 16,
            protocol: ETH_P_IP,
            classid: Some(Handle::new(1, 1)),
            keys: vec![U32Key {
                mask: 0xff00_0000,
                value: 0x0a00_0000,
                offset: 16,
            }],
            redirect_to: None,
        };
        let mut msg = tc_message(
            3,
            Handle(0x800_800),
            subnet.parent,
            filter_info(16, ETH_P_IP),
        );
        msg.attributes.push(TcAttribute::Kind("u32".into()));
        msg.attributes
            .push(TcAttribute::Options(u32_options(&subnet)));
        assert_eq!(filter_from_message(&reparse(&msg)).unwrap().rule, subnet);
    }

    fn reparse(msg: &TcMessage) -> TcMessage {
        let mut bytes = vec![0u8; msg.buffer_len()];
        msg.emit(&mut bytes);
        TcMessage::parse(bytes.as_slice()).unwrap()
    }

    #[test]
    fn error_stays_small() {
        assert!(size_of::<TcError>() <= 88, "{}", size_of::<TcError>());
    }
}
