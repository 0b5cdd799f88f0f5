//! Impairments of a lab's links: the topology's `impairments` blocks (applied at deploy) and
//! `berth lab impair NODE:IF …` at run time, through `berth-impair` (netem where the kernel
//! has it, otherwise tbf, an nftables netdev table and a delay line process).
//!
//! What is in force is kept in the lab's state, one entry per interface: the impairment as
//! written (for `save` and `inspect`) and what `berth-impair` put in place (for `clear`).
//! A delay line is a process of its own (`berth lab wire`, hidden) holding sockets in the
//! node's namespace, so it would keep that namespace, and the veths in it, alive: every
//! impairment of a node's links is therefore cleared before the node stops or the lab is
//! destroyed, and put back when it starts again.
//!
//! Only ends inside a node's own namespace are impaired; a bridge port or `host:IF` end
//! (the lab's host namespace, which has no file of its own to name) is refused up front:
//! impair the node's end instead (each end's egress is one direction).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use berth_impair::{
    Applied, ClearError, CommandLauncher, ImpairError as KernelError, Impairment, Missing,
};
use berth_topology::{
    Attach, Delay, Impairments, Kind, NetworkMode, NodeInterface, Percent, Rate, Topology,
};
use serde::{Deserialize, Serialize};

use crate::lab::source::SourceArgs;
use crate::lab::state::{self, LabState};
use crate::state::{ContainerRecord, Status, Store};

/// Errors of the `impair` module.
#[derive(Debug, thiserror::Error)]
pub enum LabImpairError {
    #[error(
        "{at}: impairments on a bridge port or a host end are not supported: put them on the node's end of the link"
    )]
    HostEnd { at: String },
    #[error("{at}: node {node} is not running")]
    NotRunning { at: String, node: String },
    #[error("{at}")]
    Apply {
        at: String,
        #[source]
        source: KernelError,
    },
    #[error(transparent)]
    Clear(#[from] ClearError),
    #[error("{at} is not an interface of a link in lab {lab}")]
    NoEndpoint { lab: String, at: String },
    #[error("invalid NODE:INTERFACE {text:?}")]
    Endpoint {
        text: String,
        #[source]
        source: berth_topology::NameError,
    },
    #[error(transparent)]
    Source(#[from] Box<crate::lab::source::SourceError>),
    #[error("{what} {path}")]
    File {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not valid")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("delay line")]
    Wire(#[source] berth_impair::DelayLineError),
    #[error("invalid --{flag} {value:?}")]
    Value {
        flag: &'static str,
        value: String,
        #[source]
        source: berth_topology::impair::ImpairError,
    },
}

/// One impaired interface, as kept in the lab's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImpairedEnd {
    pub node: String,
    pub ifname: String,
    /// As a file would write it: `delay` → `20ms`, `loss` → `5%`, …
    pub spec: BTreeMap<String, String>,
    /// What is in place now; `None` while the node (or its peer) is stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<Applied>,
}

impl ImpairedEnd {
    /// Whether this is the end `node:ifname`.
    pub fn is_at(&self, node: &str, ifname: &str) -> bool {
        self.node == node && self.ifname == ifname
    }

    /// The impairment as berth-topology types (for `save`); what cannot be read back is
    /// left out (it was written by this module from valid values).
    pub fn impairments(&self) -> Impairments {
        let get = |k: &str| self.spec.get(k).map(String::as_str);
        Impairments {
            delay: get("delay").and_then(|v| Delay::try_from(v).ok()),
            jitter: get("jitter").and_then(|v| Delay::try_from(v).ok()),
            loss: get("loss").and_then(|v| Percent::try_from(v).ok()),
            rate: get("rate").and_then(|v| Rate::try_from(v).ok()),
            corrupt: get("corrupt").and_then(|v| Percent::try_from(v).ok()),
        }
    }
}

/// `lab impair`'s values, checked with berth-topology's parsers (tc's units).
#[derive(Debug, Clone, Default)]
pub struct ImpairValues {
    pub delay: Option<String>,
    pub jitter: Option<String>,
    pub loss: Option<String>,
    pub rate: Option<String>,
    pub corrupt: Option<String>,
}

impl ImpairValues {
    pub fn parse(&self) -> Result<Impairments, LabImpairError> {
        fn one<T>(
            flag: &'static str,
            value: &Option<String>,
            parse: impl Fn(&str) -> Result<T, berth_topology::impair::ImpairError>,
        ) -> Result<Option<T>, LabImpairError> {
            value
                .as_deref()
                .map(|v| {
                    parse(v).map_err(|source| LabImpairError::Value {
                        flag,
                        value: v.to_owned(),
                        source,
                    })
                })
                .transpose()
        }
        let imp = Impairments {
            delay: one("delay", &self.delay, |v| Delay::try_from(v))?,
            jitter: one("jitter", &self.jitter, |v| Delay::try_from(v))?,
            loss: one("loss", &self.loss, |v| Percent::try_from(v))?,
            rate: one("rate", &self.rate, |v| Rate::try_from(v))?,
            corrupt: one("corrupt", &self.corrupt, |v| Percent::try_from(v))?,
        };
        imp.check().map_err(|source| LabImpairError::Value {
            flag: "jitter",
            value: self.jitter.clone().unwrap_or_default(),
            source,
        })?;
        Ok(imp)
    }
}

/// Whether an endpoint of `t` lives in a linux node's own namespace (impairable).
pub fn in_node(t: &Topology, attach: &Attach) -> bool {
    match attach {
        Attach::Node(n) => t
            .nodes
            .get(n)
            .is_some_and(|n| n.kind == Kind::Linux && n.network_mode != Some(NetworkMode::Host)),
        Attach::Host | Attach::MgmtNet => false,
    }
}

/// Every impaired end the topology asks for, refused where it is a host-side end.
pub fn planned(t: &Topology) -> Result<Vec<(String, String, Impairments)>, LabImpairError> {
    let mut out = Vec::new();
    for link in &t.links {
        for side in 0..2 {
            let imp = link.impairments_of(side);
            if imp.is_empty() {
                continue;
            }
            let end = &link.endpoints[side];
            let at = format!("{}:{}", end.attach.as_str(), end.ifname);
            if !in_node(t, &end.attach) {
                return Err(LabImpairError::HostEnd { at });
            }
            out.push((end.attach.as_str().to_owned(), end.ifname.to_string(), imp));
        }
    }
    Ok(out)
}

/// The launcher of delay lines: this binary's hidden `lab wire`, with the same roots; its
/// stderr appended to `<root>/labs/<lab>/delay-lines.log`.
fn launcher(store: &Store, lab: &str) -> CommandLauncher {
    let arg = |s: &str| OsString::from(s);
    CommandLauncher {
        program: PathBuf::from("/proc/self/exe"),
        args: vec![
            arg("--root"),
            store.root().as_os_str().to_owned(),
            arg("--runroot"),
            store.runroot().as_os_str().to_owned(),
            arg("lab"),
            arg("wire"),
        ],
        log: Some(state::lab_dir(store.root(), lab).join("delay-lines.log")),
    }
}

/// The netns file of a running linux node.
fn netns_of(store: &Store, t: &Topology, node: &str, at: &str) -> Result<PathBuf, LabImpairError> {
    netns_among(store, &store.records().unwrap_or_default(), t, node, at)
}

/// [`netns_of`] among records already read (one read for many ends). An unreadable store
/// or a missing container reads as not running.
fn netns_among(
    store: &Store,
    records: &[ContainerRecord],
    t: &Topology,
    node: &str,
    at: &str,
) -> Result<PathBuf, LabImpairError> {
    let not_running = || LabImpairError::NotRunning {
        at: at.to_owned(),
        node: node.to_owned(),
    };
    let name = t
        .nodes
        .get_key_value(node)
        .and_then(|(n, _)| t.container_name(n).ok())
        .ok_or_else(not_running)?;
    let record = records
        .iter()
        .find(|r| r.name.as_str() == name.as_str())
        .filter(|r| r.live_status() == Status::Running)
        .ok_or_else(not_running)?;
    Ok(store.netns_of(record))
}

/// Applies `imp` on `node:ifname` (replacing what Berth had there).
pub fn apply(
    store: &Store,
    t: &Topology,
    node: &str,
    ifname: &str,
    imp: &Impairments,
) -> Result<ImpairedEnd, LabImpairError> {
    let at = format!("{node}:{ifname}");
    let netns = netns_of(store, t, node, &at)?;
    apply_in(store, t, &netns, node, ifname, imp)
}

/// [`apply`] in a node's namespace already looked up.
fn apply_in(
    store: &Store,
    t: &Topology,
    netns: &Path,
    node: &str,
    ifname: &str,
    imp: &Impairments,
) -> Result<ImpairedEnd, LabImpairError> {
    let at = format!("{node}:{ifname}");
    let applied = berth_impair::apply(
        netns,
        ifname,
        &Impairment::from(imp),
        &launcher(store, t.name.as_str()),
    )
    .map_err(|source| LabImpairError::Apply { at, source })?;
    Ok(ImpairedEnd {
        node: node.to_owned(),
        ifname: ifname.to_owned(),
        spec: imp
            .entries()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        applied: Some(applied),
    })
}

/// Removes what `end` has in place (a vanished namespace or interface counts as removed)
/// and marks it not applied. On failure it stays marked applied, so `destroy` keeps it on
/// file and a second `destroy` tries again.
pub fn clear(end: &mut ImpairedEnd) -> Result<(), LabImpairError> {
    if let Some(applied) = &end.applied {
        berth_impair::clear(applied)?;
        end.applied = None;
    }
    Ok(())
}

/// `<root>/labs/<lab>/impairments.json`: the impaired ends of a lab.
fn file(root: &Path, lab: &str) -> PathBuf {
    state::lab_dir(root, lab).join("impairments.json")
}

/// The impaired ends of lab `lab` (none when the file does not exist).
pub fn load(root: &Path, lab: &str) -> Result<Vec<ImpairedEnd>, LabImpairError> {
    let path = file(root, lab);
    match fs::read(&path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).map_err(|source| LabImpairError::Parse { path, source })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(LabImpairError::File {
            what: "read",
            path,
            source,
        }),
    }
}

/// The impaired ends of `t` when it is deployed: what is in force (`lab impair` changes
/// them). `None` for a lab that is not deployed: a file alone has only its own.
pub fn in_force(store: &Store, t: &Topology) -> Option<Vec<ImpairedEnd>> {
    let lab = t.name.as_str();
    LabState::load_if_exists(store.root(), lab)
        .is_ok_and(|s| s.is_some())
        .then(|| load(store.root(), lab).unwrap_or_default())
}

/// Writes the impaired ends atomically; right after each change, so a killed `berth` leaves
/// a list that names every delay line it started.
fn save(root: &Path, lab: &str, ends: &[ImpairedEnd]) -> Result<(), LabImpairError> {
    let path = file(root, lab);
    let bytes = serde_json::to_vec_pretty(ends).map_err(|source| LabImpairError::Parse {
        path: path.clone(),
        source,
    })?;
    berth_fs::write_atomic(&path, &bytes, berth_fs::WriteOptions::default()).map_err(|source| {
        LabImpairError::File {
            what: "write",
            path,
            source,
        }
    })
}

/// Deploy: the topology's impairments, each end recorded as soon as it is in place.
pub fn apply_topology(store: &Store, t: &Topology) -> Result<(), LabImpairError> {
    let lab = t.name.as_str();
    let mut ends = load(store.root(), lab)?;
    // The store's records are read once, not once per impaired end.
    let records = store.records().unwrap_or_default();
    for (node, ifname, imp) in planned(t)? {
        let at = format!("{node}:{ifname}");
        let netns = netns_among(store, &records, t, &node, &at)?;
        let end = apply_in(store, t, &netns, &node, &ifname, &imp)?;
        ends.retain(|e| !e.is_at(&node, &ifname));
        ends.push(end);
        save(store.root(), lab, &ends)?;
    }
    Ok(())
}

/// Destroy: every impairment of the lab cleared (delay lines stopped and waited for). Keeps
/// going; returns every failure, and keeps the ends it could not clear on file.
pub fn clear_lab(root: &Path, lab: &str) -> Vec<LabImpairError> {
    let mut ends = match load(root, lab) {
        Ok(ends) => ends,
        Err(e) => return vec![e],
    };
    let mut errors = clear_each(ends.iter_mut());
    ends.retain(|e| e.applied.is_some());
    if let Err(e) = save(root, lab, &ends) {
        // The lab's directory may be gone already (destroy of a lab without impairments).
        if !matches!(&e, LabImpairError::File { source, .. } if source.kind() == io::ErrorKind::NotFound)
        {
            errors.push(e);
        }
    }
    errors
}

/// Whether `end` is on `node` or faces it across a link (a veth dies with either end).
fn touches(t: &Topology, end: &ImpairedEnd, node: &str) -> bool {
    if end.node == node {
        return true;
    }
    t.links.iter().any(|l| {
        let names: Vec<(&str, &str)> = l
            .endpoints
            .iter()
            .map(|e| (e.attach.as_str(), e.ifname.as_str()))
            .collect();
        names.contains(&(end.node.as_str(), end.ifname.as_str()))
            && names.iter().any(|(n, _)| *n == node)
    })
}

/// `lab stop NODE`: the impairments on its links' ends cleared (kept on file to be put
/// back): a delay line would keep the namespace, and so the veths, alive.
pub fn clear_node(store: &Store, t: &Topology, node: &str) -> Result<(), LabImpairError> {
    let lab = t.name.as_str();
    let mut ends = load(store.root(), lab)?;
    // Keeps going: one end that cannot be cleared must not leave the others' delay lines
    // holding their namespaces; what was cleared is on file either way.
    let errors = clear_each(ends.iter_mut().filter(|e| touches(t, e, node)));
    save(store.root(), lab, &ends)?;
    errors.into_iter().next().map_or(Ok(()), Err)
}

/// [`clear`] on every end, past failures; returns them all.
fn clear_each<'a>(ends: impl Iterator<Item = &'a mut ImpairedEnd>) -> Vec<LabImpairError> {
    ends.filter_map(|end| clear(end).err()).collect()
}

/// `lab start NODE`: the impairments `clear_node` took off put back where both ends run.
pub fn reapply_node(store: &Store, t: &Topology, node: &str) -> Result<(), LabImpairError> {
    let lab = t.name.as_str();
    let mut ends = load(store.root(), lab)?;
    for i in 0..ends.len() {
        let end = &ends[i];
        if end.applied.is_some() || !touches(t, end, node) {
            continue;
        }
        let at = format!("{}:{}", end.node, end.ifname);
        // Looked up once: a node that is not running keeps its end off.
        let Ok(netns) = netns_of(store, t, &end.node, &at) else {
            continue;
        };
        let again = apply_in(
            store,
            t,
            &netns,
            &end.node.clone(),
            &end.ifname.clone(),
            &end.impairments(),
        )?;
        ends[i] = again;
        save(store.root(), lab, &ends)?;
    }
    Ok(())
}

/// `berth lab impair` and the hidden delay line.
#[derive(Debug, clap::Subcommand)]
pub enum ImpairVerb {
    /// Impair one end's egress: delay, jitter, loss, rate, corruption (tc's units); --clear
    /// removes it. Without values, shows what is in force.
    Impair {
        #[command(flatten)]
        source: SourceArgs,
        /// The interface: NODE:INTERFACE.
        endpoint: String,
        /// Delay, e.g. 20ms.
        #[arg(long)]
        delay: Option<String>,
        /// Jitter around the delay, e.g. 2ms.
        #[arg(long)]
        jitter: Option<String>,
        /// Loss, e.g. 5%.
        #[arg(long)]
        loss: Option<String>,
        /// Rate, e.g. 10mbit.
        #[arg(long)]
        rate: Option<String>,
        /// Corrupted frames, e.g. 1%.
        #[arg(long)]
        corrupt: Option<String>,
        /// Remove the impairment.
        #[arg(long, conflicts_with_all = ["delay", "jitter", "loss", "rate", "corrupt"])]
        clear: bool,
    },
    /// A delay line (internal: started by `lab impair` and `lab deploy`).
    #[command(hide = true)]
    Wire { config: String },
}

/// Runs an impair verb; prints what is in force on the interface afterwards.
pub fn dispatch(store: &Store, verb: ImpairVerb) -> Result<u8, LabImpairError> {
    let (source, endpoint, values, clear_it) = match verb {
        ImpairVerb::Wire { config } => {
            let config =
                berth_impair::DelayLineConfig::from_json(&config).map_err(LabImpairError::Wire)?;
            berth_impair::delay_line::run(&config).map_err(LabImpairError::Wire)?;
            return Ok(0);
        }
        ImpairVerb::Impair {
            source,
            endpoint,
            delay,
            jitter,
            loss,
            rate,
            corrupt,
            clear,
        } => (
            source,
            endpoint,
            ImpairValues {
                delay,
                jitter,
                loss,
                rate,
                corrupt,
            },
            clear,
        ),
    };
    let at =
        NodeInterface::try_from(endpoint.as_str()).map_err(|source| LabImpairError::Endpoint {
            text: endpoint.clone(),
            source,
        })?;
    let loaded = source.load(store.root()).map_err(Box::new)?;
    let t = &loaded.topology;
    let Some((index, side)) = t.find(&at) else {
        return Err(LabImpairError::NoEndpoint {
            lab: t.name.to_string(),
            at: at.to_string(),
        });
    };
    if !in_node(t, &t.links[index].endpoints[side].attach) {
        return Err(LabImpairError::HostEnd { at: at.to_string() });
    }
    let lab = t.name.as_str();
    let (node, ifname) = (at.node.to_string(), at.ifname.to_string());
    let mut ends = load(store.root(), lab)?;
    let position = ends.iter().position(|e| e.is_at(&node, &ifname));
    let imp = values.parse()?;
    if clear_it || !imp.is_empty() {
        if let Some(i) = position {
            clear(&mut ends[i])?;
            ends.remove(i);
            save(store.root(), lab, &ends)?;
        }
        if !imp.is_empty() {
            ends.push(apply(store, t, &node, &ifname, &imp)?);
            save(store.root(), lab, &ends)?;
        }
    }
    let end = ends.iter().find(|e| e.is_at(&node, &ifname));
    let now = end.map(|e| e.impairments().to_string());
    println!(
        "{at}: {}{}",
        now.as_deref().unwrap_or("no impairment"),
        end.and_then(|e| e.applied.as_ref())
            .map(not_in_place)
            .unwrap_or_default()
    );
    Ok(0)
}

/// What of `applied` is no longer in place, as a note for `impair`'s line (empty when all
/// is). A delay line killed from outside leaves its link dark (the egress rule forwards to a
/// TAP that went with it), so it must be seen; applying again restarts it.
fn not_in_place(applied: &Applied) -> String {
    let missing = match berth_impair::status(applied) {
        Ok(missing) if missing.is_empty() => return String::new(),
        Ok(missing) => missing,
        Err(e) => return format!(" (state unknown: {})", berth_netlink::error_chain(&e)),
    };
    let parts: Vec<String> = missing
        .iter()
        .map(|m| match m {
            Missing::Netns => "the namespace is gone".to_owned(),
            Missing::Interface => "the interface is gone".to_owned(),
            Missing::Qdisc => "Berth's root qdisc (tbf or netem) was removed".to_owned(),
            Missing::Table => "the nftables table was removed".to_owned(),
            Missing::DelayLine { pid } => format!("the delay line (pid {pid}) exited"),
        })
        .collect();
    format!(
        " (NOT IN PLACE: {}; impair again to restore it)",
        parts.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_impair::Mechanism;

    fn end(ifname: &str, netns: &str) -> ImpairedEnd {
        ImpairedEnd {
            node: "a".into(),
            ifname: ifname.into(),
            spec: BTreeMap::new(),
            applied: Some(Applied {
                netns: netns.into(),
                ifname: ifname.into(),
                ifindex: 2,
                impairment: Impairment::default(),
                mechanism: Mechanism::None,
                qdisc: false,
                table: None,
                delay_line: None,
            }),
        }
    }

    /// `lab stop`/`destroy`: an end that cannot be cleared (its netns path is no namespace)
    /// stays marked applied (kept on file) and does not stop the next one from being
    /// cleared (a vanished namespace counts as cleared).
    #[test]
    fn clearing_keeps_going_past_a_failed_end() {
        let mut ends = [
            end("eth1", "/proc/self/status"),
            end("eth2", "/run/netns/berth-no-such-namespace"),
        ];
        let errors = clear_each(ends.iter_mut());
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(ends[0].applied.is_some(), "kept, for destroy to try again");
        assert!(ends[1].applied.is_none(), "the second end was cleared too");
    }
}
