//! The delay line: a small user-space process that holds an interface's outgoing frames for
//! `delay ± jitter` (and corrupts some), for kernels without `netem`.
//!
//! How frames get to it and back, all inside the node's namespace and without touching the
//! link itself:
//!
//! ```text
//!  node's stack ──▶ IF egress hook (table netdev berth-impair-IF):
//!                     mark == MARK?  accept ───────────────────────────────▶ IF qdisc (tbf) ──▶ wire
//!                     numgen < loss? drop
//!                     fwd to TAP ──▶ berthdlN (TAP)  ──▶ this process: hold, corrupt
//!                                                         │
//!                      AF_PACKET socket bound to IF, SO_MARK = MARK ◀──┘ (after the delay)
//! ```
//!
//! - The TAP is not persistent: it exists as long as this process holds it open, so a killed
//!   delay line takes its TAP with it, the `fwd` then finds no device and the frames are
//!   dropped — a dead delay line blackholes the link rather than silently removing the delay,
//!   and [`crate::status`] reports it.
//! - The TAP has no offloads (none were asked with `TUNSETOFFLOAD`), so the kernel segments
//!   GSO packets and fills in checksums before a frame reaches it: what is written back is
//!   an ordinary frame, and a corrupted bit is seen by the receiver's checksum, as with netem
//!   (which also computes the checksum first).
//! - Frames written back carry `SO_MARK`, which the first rule of the table lets through:
//!   they then pass the qdisc (tbf rate) once, after the delay. The mark does not cross the
//!   veth into the peer's namespace (the kernel scrubs it).
//! - Every frame is delayed, whatever its EtherType (ARP, IPv6 neighbour discovery), as
//!   netem does.
//! - Jitter: each frame's delay is uniform in `[delay - jitter, delay + jitter]` (clamped at
//!   0), netem's distribution when no table is given; frames leave in the order of their
//!   release times, so jitter reorders frames, as netem does.
//!
//! The process exits on SIGTERM/SIGINT, when its TAP is deleted (how `apply` replaces it),
//! when the interface disappears, and when the namespace path no longer names the namespace
//! it started in (the lab was destroyed), so a forgotten delay line does not keep a dead
//! namespace alive.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use berth_netlink::{Netlink, Netns, NetnsError, sysctl};
use serde::{Deserialize, Serialize};

/// The mark the delay line's frames carry (`SO_MARK`), so the egress chain lets them
/// through: "Bert" in ASCII.
pub const MARK: u32 = 0x4265_7274;

/// How often the process checks that its namespace and interface still exist.
const HOUSEKEEPING: Duration = Duration::from_millis(500);
/// Larger than any frame of a 64 KiB-MTU link.
const FRAME_BUF: usize = 65_600;
/// Bytes held at once; past it new frames are dropped, as netem drops past its `limit`. At
/// 10 Gbit/s that is 50 ms of traffic; a lab link that needs more is a slower one.
const MAX_HELD_BYTES: usize = 64 << 20;

/// What one delay line does. The caller passes it to the process as JSON
/// ([`DelayLineConfig::to_json`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DelayLineConfig {
    /// The node's network namespace.
    pub netns: PathBuf,
    /// The impaired interface in it.
    pub ifname: String,
    /// The TAP device to create there.
    pub tap: String,
    pub delay_us: u64,
    pub jitter_us: u64,
    /// Frames corrupted per million (one random bit flipped).
    pub corrupt_ppm: u32,
    /// `SO_MARK` of the frames written back.
    pub mark: u32,
}

impl DelayLineConfig {
    pub fn to_json(&self) -> String {
        // INVARIANT: a struct of strings, paths and integers always serializes.
        serde_json::to_string(self).expect("DelayLineConfig serializes")
    }

    pub fn from_json(text: &str) -> Result<DelayLineConfig, DelayLineError> {
        serde_json::from_str(text).map_err(DelayLineError::Config)
    }
}

/// Failures of the delay line. Each names the step and what it worked on.
#[derive(Debug, thiserror::Error)]
pub enum DelayLineError {
    #[error("read the delay line's configuration")]
    Config(#[source] serde_json::Error),
    #[error("open network namespace {0}")]
    Netns(PathBuf, #[source] NetnsError),
    #[error("no interface {ifname} in {netns}")]
    NoInterface { ifname: String, netns: PathBuf },
    #[error("look up interface {ifname} in {netns}")]
    Lookup {
        ifname: String,
        netns: PathBuf,
        #[source]
        source: Box<berth_netlink::LinkError>,
    },
    #[error("open rtnetlink in {0}")]
    Netlink(PathBuf, #[source] berth_netlink::OpenError),
    #[error("create TAP {tap} in {netns} (/dev/net/tun, CONFIG_TUN)")]
    Tap {
        tap: String,
        netns: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("set up TAP {tap} in {netns}")]
    TapSetup {
        tap: String,
        netns: PathBuf,
        #[source]
        source: Box<berth_netlink::LinkError>,
    },
    #[error("open an AF_PACKET socket on {ifname} in {netns} (CONFIG_PACKET)")]
    Packet {
        ifname: String,
        netns: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("install signal handlers")]
    Signals(#[source] io::Error),
    #[error("wait for frames on TAP {tap}")]
    Poll {
        tap: String,
        #[source]
        source: io::Error,
    },
}

/// Why [`run`] returned without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// SIGTERM or SIGINT.
    Signalled,
    /// The TAP was deleted (a new `apply` or `clear` did it).
    TapRemoved,
    /// The impaired interface is gone.
    InterfaceGone,
    /// The namespace path is gone or names another namespace.
    NetnsGone,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Runs the delay line of `config` until it has a reason to stop ([`Exit`]). Blocking; meant
/// to be the whole life of a process of its own (the runtime's hidden `berth lab wire`).
pub fn run(config: &DelayLineConfig) -> Result<Exit, DelayLineError> {
    let ns =
        Netns::open(&config.netns).map_err(|e| DelayLineError::Netns(config.netns.clone(), e))?;
    let nl = Netlink::open_in(&ns).map_err(|e| DelayLineError::Netlink(config.netns.clone(), e))?;
    let link = nl
        .link_by_name(&config.ifname)
        .map_err(|source| DelayLineError::Lookup {
            ifname: config.ifname.clone(),
            netns: config.netns.clone(),
            source: Box::new(source),
        })?
        .ok_or_else(|| DelayLineError::NoInterface {
            ifname: config.ifname.clone(),
            netns: config.netns.clone(),
        })?;
    let (tap, packet) = ns
        .run(|| open_in_netns(config, link.index))
        .map_err(|e| DelayLineError::Netns(config.netns.clone(), e))??;
    let tap_link = nl
        .link_by_name(&config.tap)
        .map_err(|source| DelayLineError::Lookup {
            ifname: config.tap.clone(),
            netns: config.netns.clone(),
            source: Box::new(source),
        })?
        .ok_or_else(|| DelayLineError::NoInterface {
            ifname: config.tap.clone(),
            netns: config.netns.clone(),
        })?;
    let setup = |source| DelayLineError::TapSetup {
        tap: config.tap.clone(),
        netns: config.netns.clone(),
        source: Box::new(source),
    };
    // Frames up to the interface's MTU must fit; a deep queue, since a fast link can fill
    // the default 1000 frames between two reads.
    nl.set_mtu(tap_link.index, link.mtu).map_err(setup)?;
    nl.set_txqlen(tap_link.index, 10_000).map_err(setup)?;
    nl.set_up(tap_link.index).map_err(setup)?;
    install_signals()?;
    sharpen();
    Line::new(config, tap, packet).serve(&ns, &nl, link.index)
}

/// Opens the TAP and the packet socket; on the namespace's helper thread, since both belong
/// to the namespace of the thread that creates them.
fn open_in_netns(
    config: &DelayLineConfig,
    ifindex: u32,
) -> Result<(File, OwnedFd), DelayLineError> {
    let tap_err = |source| DelayLineError::Tap {
        tap: config.tap.clone(),
        netns: config.netns.clone(),
        source,
    };
    let tap = open_tap(&config.tap).map_err(tap_err)?;
    // The kernel must not send anything of its own on the TAP (router solicitations, MLD):
    // whatever arrives there is a frame of the impaired interface. Without IPv6 the key is
    // missing, which is as good.
    let _ = sysctl::write(&format!("net/ipv6/conf/{}/disable_ipv6", config.tap), "1");
    let packet = open_packet(ifindex, config.mark).map_err(|source| DelayLineError::Packet {
        ifname: config.ifname.clone(),
        netns: config.netns.clone(),
        source,
    })?;
    Ok((tap, packet))
}

/// `struct ifreq` with the `ifr_flags` member of its union.
#[repr(C)]
struct IfReqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// `TUNSETIFF`: `_IOW('T', 202, int)`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

/// A TAP device named `name`, non-blocking, not persistent (gone when the fd closes).
pub(crate) fn open_tap(name: &str) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")?;
    let mut req = IfReqFlags {
        name: [0; libc::IFNAMSIZ],
        flags: (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short,
        _pad: [0; 22],
    };
    if name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: a valid tun descriptor and a pointer to an ifreq-sized struct that outlives
    // the call.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &raw mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(file)
}

/// A raw AF_PACKET socket bound to `ifindex` for sending only (protocol 0: the kernel
/// hands it no frames), whose frames carry `mark`.
pub(crate) fn open_packet(ifindex: u32, mark: u32) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: an all-zero sockaddr_ll is valid; the fields that matter are set below.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_ifindex =
        i32::try_from(ifindex).map_err(|_| io::Error::from_raw_os_error(libc::ENODEV))?;
    // SAFETY: a valid socket and a sockaddr_ll of the length given.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const addr).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    setsockopt_u32(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_MARK, mark)?;
    Ok(fd)
}

fn setsockopt_u32(fd: RawFd, level: libc::c_int, name: libc::c_int, value: u32) -> io::Result<()> {
    // SAFETY: a valid socket and a pointer to a u32 that outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&raw const value).cast(),
            size_of::<u32>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Netem works in the kernel's softirq; a user-space delay line competes with everything
/// else for the CPU, and every millisecond it waits for one is added to the delay: measured
/// here with both cores busy, a 20 ms line at nice 0 or -10 gave medians of 24 ms and
/// outliers of 50 ms (the scheduler lets a running task finish its slice before a woken one
/// gets the CPU). So the thread asks for the lowest real-time priority, `SCHED_FIFO` 1:
/// above every ordinary task, below the kernel's own threads, and capped by the kernel's
/// real-time throttling (`sched_rt_runtime_us`, 95 % of each second by default), so even a
/// bug cannot starve the machine. The loop only ever blocks in `ppoll` or does bounded work
/// per frame. Where that is refused (no CAP_SYS_NICE, an RT group without budget), nice -10
/// is the fallback. Timer wake-ups are made exact (no 50 µs slack). All best effort: without
/// them the line works, less precisely. These apply to the calling thread, the one that
/// runs the loop.
fn sharpen() {
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: plain syscalls on the calling thread (tid 0 = self), with valid arguments.
    unsafe {
        if libc::sched_setscheduler(0, libc::SCHED_FIFO, &raw const param) != 0 {
            libc::setpriority(libc::PRIO_PROCESS, 0, -10);
        }
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
    }
}

fn install_signals() -> Result<(), DelayLineError> {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: an all-zero sigaction is valid; the handler only stores to an atomic,
        // which is async-signal-safe. No SA_RESTART: ppoll returns EINTR at once.
        let rc = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&raw mut action.sa_mask);
            libc::sigaction(sig, &raw const action, std::ptr::null_mut())
        };
        if rc < 0 {
            return Err(DelayLineError::Signals(io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// xorshift64*: plenty for choosing delays and dropped bits, seeded from the kernel.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn seeded() -> Rng {
        let mut seed = [0u8; 8];
        // SAFETY: writes at most 8 bytes into `seed`.
        let n = unsafe { libc::getrandom(seed.as_mut_ptr().cast(), 8, 0) };
        let mut s = u64::from_ne_bytes(seed);
        if n != 8 || s == 0 {
            // The time is a poor seed but a working one; zero would stay zero forever.
            s = Instant::now().elapsed().as_nanos() as u64 ^ 0x9e37_79b9_7f4a_7c15;
        }
        Rng(s | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0), bias below 2^-32 for the n used here.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
}

/// The delay of one frame: uniform in `[delay - jitter, delay + jitter]`, at least 0.
pub(crate) fn frame_delay(rng: &mut Rng, delay_us: u64, jitter_us: u64) -> Duration {
    if jitter_us == 0 {
        return Duration::from_micros(delay_us);
    }
    let offset = rng.below(2 * jitter_us + 1);
    Duration::from_micros((delay_us + offset).saturating_sub(jitter_us))
}

/// Flips one random bit of one random byte, as netem's `corrupt` does.
pub(crate) fn corrupt(rng: &mut Rng, frame: &mut [u8]) {
    if frame.is_empty() {
        return;
    }
    let byte = rng.below(frame.len() as u64) as usize;
    frame[byte] ^= 1 << rng.below(8);
}

struct Held {
    due: Instant,
    seq: u64,
    frame: Vec<u8>,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Held {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

struct Line<'a> {
    config: &'a DelayLineConfig,
    tap: File,
    packet: OwnedFd,
    held: BinaryHeap<Reverse<Held>>,
    held_bytes: usize,
    seq: u64,
    rng: Rng,
}

impl<'a> Line<'a> {
    fn new(config: &'a DelayLineConfig, tap: File, packet: OwnedFd) -> Line<'a> {
        Line {
            config,
            tap,
            packet,
            held: BinaryHeap::new(),
            held_bytes: 0,
            seq: 0,
            rng: Rng::seeded(),
        }
    }

    fn serve(mut self, ns: &Netns, nl: &Netlink, ifindex: u32) -> Result<Exit, DelayLineError> {
        let mut buf = vec![0u8; FRAME_BUF];
        let mut next_check = Instant::now() + HOUSEKEEPING;
        loop {
            if STOP.load(Ordering::SeqCst) {
                return Ok(Exit::Signalled);
            }
            let now = Instant::now();
            if now >= next_check {
                if let Some(exit) = self.gone(ns, nl, ifindex) {
                    return Ok(exit);
                }
                next_check = now + HOUSEKEEPING;
            }
            let mut wake = next_check;
            if let Some(Reverse(first)) = self.held.peek() {
                wake = wake.min(first.due);
            }
            match self.wait(wake.saturating_duration_since(now)) {
                Ok(true) => {
                    if let Some(exit) = self.take(&mut buf)? {
                        return Ok(exit);
                    }
                }
                Ok(false) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(DelayLineError::Poll {
                        tap: self.config.tap.clone(),
                        source,
                    });
                }
            }
            self.release();
        }
    }

    /// Waits up to `timeout` for the TAP to be readable (or to fail: deleted).
    fn wait(&self, timeout: Duration) -> io::Result<bool> {
        let mut fds = [libc::pollfd {
            fd: self.tap.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
        };
        // SAFETY: one valid pollfd, a valid timespec, no signal mask change.
        let n = unsafe { libc::ppoll(fds.as_mut_ptr(), 1, &raw const ts, std::ptr::null()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n > 0)
    }

    /// Reads every frame the TAP has; `Some` when the TAP is gone.
    fn take(&mut self, buf: &mut [u8]) -> Result<Option<Exit>, DelayLineError> {
        loop {
            match self.tap.read(buf) {
                Ok(0) => return Ok(None),
                Ok(n) => {
                    if self.held_bytes + n > MAX_HELD_BYTES {
                        continue;
                    }
                    self.held_bytes += n;
                    let mut frame = buf[..n].to_vec();
                    if self.config.corrupt_ppm > 0
                        && self.rng.below(1_000_000) < u64::from(self.config.corrupt_ppm)
                    {
                        corrupt(&mut self.rng, &mut frame);
                    }
                    let delay =
                        frame_delay(&mut self.rng, self.config.delay_us, self.config.jitter_us);
                    self.seq += 1;
                    self.held.push(Reverse(Held {
                        due: Instant::now() + delay,
                        seq: self.seq,
                        frame,
                    }));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // EBADFD (or EIO): the TAP was deleted under us.
                Err(_) => return Ok(Some(Exit::TapRemoved)),
            }
        }
    }

    /// Writes out every frame whose time has come. A failed send (the link is down, the frame
    /// is larger than its MTU) loses that frame, as the wire would.
    fn release(&mut self) {
        let now = Instant::now();
        while let Some(Reverse(first)) = self.held.peek() {
            if first.due > now {
                break;
            }
            let Some(Reverse(held)) = self.held.pop() else {
                break;
            };
            self.held_bytes -= held.frame.len();
            // SAFETY: a valid socket and a buffer of the length given.
            let _ = unsafe {
                libc::send(
                    self.packet.as_raw_fd(),
                    held.frame.as_ptr().cast(),
                    held.frame.len(),
                    libc::MSG_DONTWAIT,
                )
            };
        }
    }

    fn gone(&self, ns: &Netns, nl: &Netlink, ifindex: u32) -> Option<Exit> {
        match Netns::open(&self.config.netns) {
            Ok(now) if now == *ns => {}
            _ => return Some(Exit::NetnsGone),
        }
        match nl.link_by_index(ifindex) {
            Ok(Some(_)) => {}
            Ok(None) => return Some(Exit::InterfaceGone),
            // A failed lookup is not a verdict; ask again next time.
            Err(_) => {}
        }
        match nl.link_by_name(&self.config.tap) {
            Ok(None) => Some(Exit::TapRemoved),
            _ => None,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn jitter_is_uniform_around_the_delay() {
        let mut rng = Rng(42);
        let samples: Vec<u64> = (0..20_000)
            .map(|_| frame_delay(&mut rng, 20_000, 2_000).as_micros() as u64)
            .collect();
        assert!(samples.iter().all(|&d| (18_000..=22_000).contains(&d)));
        let mean = samples.iter().sum::<u64>() as f64 / samples.len() as f64;
        assert!((mean - 20_000.0).abs() < 100.0, "mean {mean}");
        // Both halves of the range are used.
        assert!(samples.iter().any(|&d| d < 18_500) && samples.iter().any(|&d| d > 21_500));
        // A jitter larger than the delay clamps at zero instead of wrapping.
        assert!(frame_delay(&mut rng, 1_000, 5_000) <= Duration::from_millis(6));
    }

    #[test]
    fn corrupt_flips_exactly_one_bit() {
        let mut rng = Rng(7);
        for _ in 0..100 {
            let mut frame = vec![0u8; 60];
            corrupt(&mut rng, &mut frame);
            assert_eq!(frame.iter().map(|b| b.count_ones()).sum::<u32>(), 1);
        }
    }

    #[test]
    fn config_round_trips_as_json() {
        let config = DelayLineConfig {
            netns: "/run/netns/clab-x-r1".into(),
            ifname: "eth1".into(),
            tap: "berthdl7".into(),
            delay_us: 20_000,
            jitter_us: 2_000,
            corrupt_ppm: 0,
            mark: MARK,
        };
        assert_eq!(
            DelayLineConfig::from_json(&config.to_json()).unwrap(),
            config
        );
    }
}
