//! Link impairments — delay, jitter, loss, rate, corruption — on the egress of one interface
//! inside a network namespace, for `berth lab impair` and the `impairments` of a topology.
//!
//! The mechanism is chosen by [`probe`]-ing the kernel:
//! - **netem**, where the kernel has it: one root qdisc does everything (`tc qdisc replace
//!   dev IF root netem …`).
//! - Otherwise, each impairment with what the kernel has:
//!   - rate: a `tbf` root qdisc ([`shape`]);
//!   - loss: `numgen random mod 1000000 < N drop` in an nftables `netdev` table on the
//!     interface's egress, `berth-impair-IF`, owned by Berth ([`nft`]);
//!   - delay, jitter, corruption: the [`delay_line`], a process of its own that the same
//!     table's `fwd` feeds through a TAP device and that writes frames back through an
//!     AF_PACKET socket once their time has come.
//!
//! Impairing both directions of a link means impairing both ends' egress, as with netem.
//!
//! [`apply`] replaces whatever Berth had on the interface and returns an [`Applied`], the
//! state the caller stores (it serializes to JSON); [`clear`] removes exactly that;
//! [`status`] tells whether it is all still there (a killed delay line shows up there, and
//! applying again restarts it). When a needed mechanism is missing, [`apply`] fails with
//! [`ImpairError::Unsupported`] naming the kernel feature, before changing anything: it
//! never silently does nothing.

pub mod delay_line;
mod launch;
mod netem;
mod nft;
mod probe;
mod shape;
mod types;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_netlink::{Handle, LinkError, Netlink, Netns, NetnsError, OpenError, TcClock, TcError};
use serde::{Deserialize, Serialize};

pub use delay_line::{DelayLineConfig, DelayLineError, Exit as DelayLineExit};
pub use launch::{CommandLauncher, Launcher, spawn_detached};
pub use netem::NetemError;
pub use nft::{NftError, table_name};
pub use probe::{Availability, Capabilities, probe};
pub use types::{Impairment, Percent, Rate};

/// How long `apply` waits for a new delay line's TAP to come up.
const DELAY_LINE_START: Duration = Duration::from_secs(5);
/// How long `clear` gives a delay line to exit after each signal.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Failures of `apply`, `clear` and `status`. Each names the step, the interface and the
/// namespace.
#[derive(Debug, thiserror::Error)]
pub enum ImpairError {
    #[error("invalid impairment: {0}")]
    Invalid(String),
    #[error(
        "cannot apply {what} on this kernel: it needs {feature}, which is missing here ({why})"
    )]
    Unsupported {
        what: &'static str,
        feature: &'static str,
        why: String,
    },
    #[error("network namespace {0} does not exist (any more)")]
    NetnsGone(PathBuf),
    #[error("open network namespace {0}")]
    Netns(PathBuf, #[source] Box<NetnsError>),
    #[error("open rtnetlink in {0}")]
    Netlink(PathBuf, #[source] Box<OpenError>),
    #[error("no interface {ifname} in {netns}")]
    NoInterface { ifname: String, netns: PathBuf },
    #[error("{step} {ifname} in {netns}")]
    Link {
        step: &'static str,
        ifname: String,
        netns: PathBuf,
        #[source]
        source: Box<LinkError>,
    },
    #[error("{step} on {ifname} in {netns}")]
    Tc {
        step: &'static str,
        ifname: String,
        netns: PathBuf,
        #[source]
        source: Box<TcError>,
    },
    #[error("netem on {ifname} in {netns}")]
    Netem {
        ifname: String,
        netns: PathBuf,
        #[source]
        source: NetemError,
    },
    #[error("nftables table netdev {table} in {netns}")]
    Nft {
        table: String,
        netns: PathBuf,
        #[source]
        source: NftError,
    },
    #[error("start the delay line for {ifname} in {netns}")]
    Launch {
        ifname: String,
        netns: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the delay line (pid {pid}) for {ifname} in {netns} exited before its TAP {tap} came up; see its log"
    )]
    DelayLineExited {
        pid: u32,
        tap: String,
        ifname: String,
        netns: PathBuf,
    },
    #[error(
        "the delay line (pid {pid}) for {ifname} in {netns}: TAP {tap} not up after {waited:?}"
    )]
    DelayLineNotReady {
        pid: u32,
        tap: String,
        ifname: String,
        netns: PathBuf,
        waited: Duration,
    },
    #[error("stop the delay line (pid {pid})")]
    Kill {
        pid: u32,
        #[source]
        source: io::Error,
    },
}

/// Every failure of a `clear`, which keeps going after each.
#[derive(Debug, thiserror::Error)]
#[error("clear impairments of {ifname} in {netns}: {}", .errors.iter().map(|e| berth_netlink::error_chain(e)).collect::<Vec<_>>().join("; "))]
pub struct ClearError {
    pub ifname: String,
    pub netns: PathBuf,
    pub errors: Vec<ImpairError>,
}

/// How the impairment was put in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mechanism {
    /// Nothing (an empty impairment: `apply` then only removed the old one).
    None,
    /// One netem root qdisc.
    Netem,
    /// tbf, the nftables netdev table, the delay line: whichever the impairment needs.
    Fallback,
}

/// A delay line that `apply` started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunningDelayLine {
    pub pid: u32,
    /// The process's start time (`/proc/PID/stat` field 22), so a reused pid is not taken
    /// for it.
    pub start_time: u64,
    pub tap: String,
    pub config: DelayLineConfig,
}

/// What `apply` put in place: the state the caller keeps, for `clear` and `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Applied {
    pub netns: PathBuf,
    pub ifname: String,
    pub ifindex: u32,
    pub impairment: Impairment,
    pub mechanism: Mechanism,
    /// Berth's root qdisc (`be27:`, tbf or netem) is on the interface.
    pub qdisc: bool,
    /// The nftables netdev table Berth created, if any.
    pub table: Option<String>,
    pub delay_line: Option<RunningDelayLine>,
}

/// A part of an [`Applied`] that is no longer in place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "part")]
pub enum Missing {
    Netns,
    Interface,
    Qdisc,
    Table,
    DelayLine { pid: u32 },
}

/// The TAP of the delay line of link `ifindex`: unique in the namespace, at most 15 bytes
/// (`berthdl` and up to 8 hex digits).
fn tap_name(ifindex: u32) -> String {
    format!("berthdl{ifindex:x}")
}

struct Target {
    ns: Netns,
    nl: Netlink,
    path: PathBuf,
    ifname: String,
    index: u32,
    mtu: u32,
}

impl Target {
    fn open(path: &Path, ifname: &str) -> Result<Target, ImpairError> {
        let ns = Netns::open(path).map_err(|e| match e {
            NetnsError::NotFound { .. } => ImpairError::NetnsGone(path.to_path_buf()),
            e => ImpairError::Netns(path.to_path_buf(), Box::new(e)),
        })?;
        let nl = Netlink::open_in(&ns)
            .map_err(|e| ImpairError::Netlink(path.to_path_buf(), Box::new(e)))?;
        let link = nl
            .link_by_name(ifname)
            .map_err(|e| ImpairError::Link {
                step: "look up",
                ifname: ifname.to_owned(),
                netns: path.to_path_buf(),
                source: Box::new(e),
            })?
            .ok_or_else(|| ImpairError::NoInterface {
                ifname: ifname.to_owned(),
                netns: path.to_path_buf(),
            })?;
        Ok(Target {
            ns,
            nl,
            path: path.to_path_buf(),
            ifname: ifname.to_owned(),
            index: link.index,
            mtu: link.mtu,
        })
    }

    fn tc_err(&self, step: &'static str) -> impl FnOnce(TcError) -> ImpairError + '_ {
        move |e| ImpairError::Tc {
            step,
            ifname: self.ifname.clone(),
            netns: self.path.clone(),
            source: Box::new(e),
        }
    }

    fn nft_err(&self, table: &str) -> impl FnOnce(NftError) -> ImpairError + '_ {
        let table = table.to_owned();
        move |source| ImpairError::Nft {
            table,
            netns: self.path.clone(),
            source,
        }
    }

    fn enter_err(&self, e: NetnsError) -> ImpairError {
        ImpairError::Netns(self.path.clone(), Box::new(e))
    }

    fn with_tables<T: Send>(
        &self,
        table: &str,
        f: impl FnOnce(&mut nft::Tables) -> Result<T, NftError> + Send,
    ) -> Result<T, ImpairError> {
        self.ns
            .run(|| nft::Tables::open().and_then(|mut t| f(&mut t)))
            .map_err(|e| self.enter_err(e))?
            .map_err(self.nft_err(table))
    }

    /// Removes what Berth may have on the interface: the delay line's TAP (the process
    /// exits when it is deleted), the table, the root qdisc with Berth's handle. Each is
    /// tried, and the first failure reported.
    fn remove_all(&self) -> Vec<ImpairError> {
        let mut errors = Vec::new();
        if let Err(e) = self.nl.del_link_by_name_if_exists(&tap_name(self.index)) {
            errors.push(ImpairError::Link {
                step: "delete the delay line's TAP of",
                ifname: self.ifname.clone(),
                netns: self.path.clone(),
                source: Box::new(e),
            });
        }
        let table = table_name(&self.ifname);
        if let Err(e) = self.with_tables(&table, |t| t.delete(&table)) {
            errors.push(e);
        }
        if let Err(e) = self
            .nl
            .del_qdisc(self.index, Handle::ROOT, shape::HANDLE)
            .map_err(self.tc_err("delete Berth's root qdisc"))
        {
            errors.push(e);
        }
        errors
    }
}

fn check(imp: &Impairment) -> Result<(), ImpairError> {
    if let (Some(j), None) = (imp.jitter, imp.delay) {
        return Err(ImpairError::Invalid(format!(
            "jitter {j:?} needs a delay: jitter varies the delay around its value"
        )));
    }
    Ok(())
}

/// Which kernel feature is missing for `imp`, if any, checked before anything changes.
fn unsupported(imp: &Impairment, caps: &Capabilities) -> Result<(), ImpairError> {
    let no = |what, feature, a: &Availability| match a {
        Availability::Yes => Ok(()),
        Availability::No(why) => Err(ImpairError::Unsupported {
            what,
            feature,
            why: why.clone(),
        }),
    };
    if imp.rate.is_some() {
        no("rate", "netem or tbf (CONFIG_NET_SCH_TBF)", &caps.tbf)?;
    }
    if imp.loss.is_some_and(|l| l.ppm() > 0) {
        no(
            "loss",
            "netem, or an nftables netdev egress chain with numgen (CONFIG_NETFILTER_EGRESS, CONFIG_NFT_NUMGEN)",
            &caps.nft_egress,
        )?;
    }
    if imp.needs_delay_line() {
        no(
            "delay, jitter or corruption",
            "netem, or for Berth's delay line an nftables netdev egress chain with fwd (CONFIG_NETFILTER_EGRESS, CONFIG_NFT_FWD_NETDEV), TAP devices (CONFIG_TUN) and AF_PACKET (CONFIG_PACKET)",
            &caps.delay_line(),
        )?;
    }
    Ok(())
}

/// Impairs the egress of `ifname` in the namespace at `netns`, replacing whatever Berth had
/// there. An empty impairment removes it. A delay line, when one is needed, is started with
/// `launcher`.
pub fn apply(
    netns: &Path,
    ifname: &str,
    imp: &Impairment,
    launcher: &dyn Launcher,
) -> Result<Applied, ImpairError> {
    check(imp)?;
    let target = Target::open(netns, ifname)?;
    let caps = probe();
    let netem = caps.netem.is_yes();
    if !netem {
        unsupported(imp, &caps)?;
    }
    if let Some(first) = target.remove_all().into_iter().next() {
        return Err(first);
    }
    let mut applied = Applied {
        netns: netns.to_path_buf(),
        ifname: ifname.to_owned(),
        ifindex: target.index,
        impairment: imp.clone(),
        mechanism: Mechanism::None,
        qdisc: false,
        table: None,
        delay_line: None,
    };
    if imp.is_empty() {
        return Ok(applied);
    }
    let result = if netem {
        applied.mechanism = Mechanism::Netem;
        apply_netem(&target, imp, &mut applied)
    } else {
        applied.mechanism = Mechanism::Fallback;
        apply_fallback(&target, imp, launcher, &mut applied)
    };
    match result {
        Ok(()) => Ok(applied),
        Err(e) => {
            // Nothing half-applied stays: the old state is gone already, so the interface
            // ends unimpaired, and the error says why.
            if let Some(line) = &applied.delay_line {
                let _ = stop(line);
            }
            let _ = target.remove_all();
            Err(e)
        }
    }
}

fn apply_netem(
    target: &Target,
    imp: &Impairment,
    applied: &mut Applied,
) -> Result<(), ImpairError> {
    target
        .ns
        .run(|| netem::replace(target.index, imp))
        .map_err(|e| target.enter_err(e))?
        .map_err(|source| ImpairError::Netem {
            ifname: target.ifname.clone(),
            netns: target.path.clone(),
            source,
        })?;
    applied.qdisc = true;
    Ok(())
}

fn apply_fallback(
    target: &Target,
    imp: &Impairment,
    launcher: &dyn Launcher,
    applied: &mut Applied,
) -> Result<(), ImpairError> {
    if let Some(rate) = imp.rate {
        let clock = TcClock::read().map_err(target.tc_err("read the packet scheduler clock"))?;
        let tbf = shape::tbf(rate.bits(), target.mtu, &clock);
        target
            .nl
            .add_tbf(target.index, shape::HANDLE, Handle::ROOT, &tbf)
            .map_err(target.tc_err("add the tbf root qdisc"))?;
        applied.qdisc = true;
    }
    let mut rules = nft::EgressRules {
        loss_ppm: imp.loss.map(Percent::ppm).filter(|&p| p > 0),
        delay_line: None,
    };
    if imp.needs_delay_line() {
        let line = start_delay_line(target, imp, launcher)?;
        let tap_index = wait_for_tap(target, &line)?;
        rules.delay_line = Some((tap_index, line.config.mark));
        applied.delay_line = Some(line);
    }
    if rules.loss_ppm.is_some() || rules.delay_line.is_some() {
        let table = table_name(&target.ifname);
        target.with_tables(&table, |t| t.replace(&table, &target.ifname, &rules))?;
        applied.table = Some(table);
    }
    Ok(())
}

fn start_delay_line(
    target: &Target,
    imp: &Impairment,
    launcher: &dyn Launcher,
) -> Result<RunningDelayLine, ImpairError> {
    let micros =
        |d: Option<Duration>| d.map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    let tap = tap_name(target.index);
    let config = DelayLineConfig {
        netns: target.path.clone(),
        ifname: target.ifname.clone(),
        tap: tap.clone(),
        delay_us: micros(imp.delay),
        jitter_us: micros(imp.jitter),
        corrupt_ppm: imp.corrupt.map_or(0, Percent::ppm),
        mark: delay_line::MARK,
    };
    let pid = launcher
        .launch(&config)
        .map_err(|source| ImpairError::Launch {
            ifname: target.ifname.clone(),
            netns: target.path.clone(),
            source,
        })?;
    Ok(RunningDelayLine {
        pid,
        // A process that already exited has no start time: 0 never matches a live one.
        start_time: start_time(pid).unwrap_or(0),
        tap,
        config,
    })
}

/// Waits until the delay line's TAP is up (the process then holds it and reads it).
fn wait_for_tap(target: &Target, line: &RunningDelayLine) -> Result<u32, ImpairError> {
    let started = Instant::now();
    loop {
        let link = target
            .nl
            .link_by_name(&line.tap)
            .map_err(|e| ImpairError::Link {
                step: "look up the delay line's TAP of",
                ifname: target.ifname.clone(),
                netns: target.path.clone(),
                source: Box::new(e),
            })?;
        if let Some(link) = link.filter(|l| l.up) {
            return Ok(link.index);
        }
        if !alive(line) {
            return Err(ImpairError::DelayLineExited {
                pid: line.pid,
                tap: line.tap.clone(),
                ifname: target.ifname.clone(),
                netns: target.path.clone(),
            });
        }
        if started.elapsed() > DELAY_LINE_START {
            return Err(ImpairError::DelayLineNotReady {
                pid: line.pid,
                tap: line.tap.clone(),
                ifname: target.ifname.clone(),
                netns: target.path.clone(),
                waited: started.elapsed(),
            });
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The start time of process `pid` (clock ticks since boot), if it runs (zombies do not).
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); field 22 is index 19.
    if fields.first() == Some(&"Z") || fields.first() == Some(&"X") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

fn alive(line: &RunningDelayLine) -> bool {
    start_time(line.pid).is_some_and(|t| t == line.start_time)
}

/// Stops the delay line, if it is still the process `apply` started, and waits until it is
/// gone, so that a `destroy` after `clear` finds no process: SIGTERM, then SIGKILL after
/// [`STOP_GRACE`]. A zombie counts as gone (its reaper is whoever started it, or init).
fn stop(line: &RunningDelayLine) -> Result<(), ImpairError> {
    for (signal, grace) in [(libc::SIGTERM, STOP_GRACE), (libc::SIGKILL, STOP_GRACE)] {
        if !alive(line) {
            return Ok(());
        }
        let pid = i32::try_from(line.pid).map_err(|_| ImpairError::Kill {
            pid: line.pid,
            source: io::Error::from_raw_os_error(libc::ESRCH),
        })?;
        // SAFETY: kill(2) of a pid checked just above to be our delay line (same start
        // time); a pid reused in between would need a wrap-around within microseconds.
        if unsafe { libc::kill(pid, signal) } < 0 {
            let source = io::Error::last_os_error();
            if source.raw_os_error() == Some(libc::ESRCH) {
                return Ok(());
            }
            return Err(ImpairError::Kill {
                pid: line.pid,
                source,
            });
        }
        let deadline = Instant::now() + grace;
        while alive(line) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    if alive(line) {
        return Err(ImpairError::Kill {
            pid: line.pid,
            source: io::Error::new(io::ErrorKind::TimedOut, "still running after SIGKILL"),
        });
    }
    Ok(())
}

/// Removes what `applied` put in place. Gone is fine: a vanished namespace or interface took
/// its qdisc, table and TAP with it (and its delay line exits on its own). Every step is
/// tried; all failures are reported together.
pub fn clear(applied: &Applied) -> Result<(), ClearError> {
    let mut errors = Vec::new();
    if let Some(line) = &applied.delay_line {
        if let Err(e) = stop(line) {
            errors.push(e);
        }
    }
    match Target::open(&applied.netns, &applied.ifname) {
        Ok(target) => errors.extend(target.remove_all()),
        Err(ImpairError::NetnsGone(_) | ImpairError::NoInterface { .. }) => {}
        Err(e) => errors.push(e),
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ClearError {
            ifname: applied.ifname.clone(),
            netns: applied.netns.clone(),
            errors,
        })
    }
}

/// What of `applied` is no longer in place; empty when all of it is. A killed delay line
/// shows as [`Missing::DelayLine`]: `apply` again with `applied.impairment` restarts it.
pub fn status(applied: &Applied) -> Result<Vec<Missing>, ImpairError> {
    let target = match Target::open(&applied.netns, &applied.ifname) {
        Ok(t) => t,
        Err(ImpairError::NetnsGone(_)) => return Ok(vec![Missing::Netns]),
        Err(ImpairError::NoInterface { .. }) => return Ok(vec![Missing::Interface]),
        Err(e) => return Err(e),
    };
    if target.index != applied.ifindex {
        return Ok(vec![Missing::Interface]);
    }
    let mut missing = Vec::new();
    if applied.qdisc {
        let qdiscs = target
            .nl
            .qdiscs(target.index)
            .map_err(target.tc_err("list the qdiscs"))?;
        if !qdiscs.iter().any(|q| q.handle == shape::HANDLE) {
            missing.push(Missing::Qdisc);
        }
    }
    if let Some(table) = &applied.table {
        if !target.with_tables(table, |t| t.exists(table))? {
            missing.push(Missing::Table);
        }
    }
    if let Some(line) = &applied.delay_line {
        let tap = target
            .nl
            .link_by_name(&line.tap)
            .map_err(|e| ImpairError::Link {
                step: "look up the delay line's TAP of",
                ifname: target.ifname.clone(),
                netns: target.path.clone(),
                source: Box::new(e),
            })?;
        if tap.is_none() || !alive(line) {
            missing.push(Missing::DelayLine { pid: line.pid });
        }
    }
    Ok(missing)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn caps(tap: Availability) -> Capabilities {
        Capabilities {
            netem: Availability::No("add netem qdisc on link 1 (CONFIG_NET_SCH_NETEM)".into()),
            tbf: Availability::Yes,
            nft_egress: Availability::Yes,
            tap,
            packet: Availability::Yes,
        }
    }

    #[test]
    fn a_missing_feature_is_named_before_anything_changes() {
        let delay = Impairment {
            delay: Some(Duration::from_millis(20)),
            ..Impairment::default()
        };
        let no_tap = caps(Availability::No("open /dev/net/tun: No such file".into()));
        let err = unsupported(&delay, &no_tap).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("cannot apply delay, jitter or corruption"),
            "{text}"
        );
        assert!(text.contains("CONFIG_TUN"), "{text}");
        assert!(text.contains("TAP devices: open /dev/net/tun"), "{text}");
        // Rate and loss do not need the TAP.
        let rate_loss = Impairment {
            rate: Rate::bits_per_second(1_000_000),
            loss: Percent::whole(1),
            ..Impairment::default()
        };
        unsupported(&rate_loss, &no_tap).unwrap();
        let mut no_tbf = caps(Availability::Yes);
        no_tbf.tbf = Availability::No("Specified qdisc kind is unknown".into());
        let err = unsupported(&rate_loss, &no_tbf).unwrap_err();
        assert!(err.to_string().contains("CONFIG_NET_SCH_TBF"), "{err}");
    }

    #[test]
    fn jitter_needs_a_delay() {
        let bad = Impairment {
            jitter: Some(Duration::from_millis(2)),
            ..Impairment::default()
        };
        assert!(matches!(check(&bad), Err(ImpairError::Invalid(_))));
    }

    #[test]
    fn tap_names_fit_an_interface_name() {
        assert!(tap_name(u32::MAX).len() <= 15, "{}", tap_name(u32::MAX));
    }
}
