//! The `tuning` meta plugin: chained after a plugin that created the container's interface, it
//! sets network sysctls of the container's namespace and the interface's MAC, MTU,
//! promiscuous and all-multicast modes and transmit queue length, and passes `prevResult` on
//! (with the new MAC). The original interface values are saved in `dataDir` and put back by
//! DEL, in the reference's file layout.
//!
//! - [`config`]: the keys, their sources and precedence, validated into `Settings`.
//! - `sysctl`: which keys may be written, and writing them in the container's namespace.
//! - `attrs`: the interface attributes: save, change, restore, compare.
//! - `state`: the saved-values files.
//! - [`error`]: the plugin's error and its CNI codes.
//!
//! See README.md for the keys and the differences from the reference.

mod attrs;
pub mod config;
pub mod error;
mod state;
mod sysctl;

use std::path::Path;

use berth_cni::{
    Attachment, CmdArgs, CniError, CniResult, ContainerId, IfName, NetConf, NetworkArgs, Plugin,
};
use berth_netlink::{Netlink, Netns, NetnsError, Rollback, error_chain, format_mac};

use crate::config::{Attrs, Settings, TuningConf};
use crate::error::TuningError;
use crate::state::{Saved, StateFile};

/// The plugin.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tuning;

impl Plugin for Tuning {
    type Conf = TuningConf;

    fn add(&self, args: &CmdArgs, conf: &NetConf<TuningConf>) -> Result<CniResult, CniError> {
        let netns = args.netns()?;
        add(args, netns, conf).map_err(CniError::from)
    }

    fn del(&self, args: &CmdArgs, conf: &NetConf<TuningConf>) -> Result<(), CniError> {
        del(args, conf).map_err(CniError::from)
    }

    fn check(&self, args: &CmdArgs, conf: &NetConf<TuningConf>) -> Result<(), CniError> {
        let netns = args.netns()?;
        check(args, netns, conf).map_err(CniError::from)
    }

    /// Tuning depends on nothing outside the call, so it is ready whenever its configuration
    /// is valid (sysctl keys checked with `IFNAME` standing for a plain interface name).
    fn status(&self, _: &NetworkArgs, conf: &NetConf<TuningConf>) -> Result<(), CniError> {
        Settings::new(conf, None, "eth0")
            .map(drop)
            .map_err(|e| TuningError::from(e).into())
    }

    /// Removes the saved values of this network's attachments that are not in `valid`.
    fn gc(
        &self,
        _: &NetworkArgs,
        conf: &NetConf<TuningConf>,
        valid: &[Attachment],
    ) -> Result<(), CniError> {
        gc(conf, valid).map_err(CniError::from)
    }
}

fn open_netns(path: &Path) -> Result<Netns, TuningError> {
    Netns::open(path).map_err(|source| TuningError::Netns {
        path: path.to_path_buf(),
        source,
    })
}

fn open_netlink(ns: &Netns) -> Result<Netlink, TuningError> {
    Netlink::open_in(ns).map_err(|source| TuningError::Netlink {
        netns: ns.to_string(),
        source,
    })
}

fn add(args: &CmdArgs, netns: &Path, conf: &NetConf<TuningConf>) -> Result<CniResult, TuningError> {
    let ifname = args.ifname.as_str();
    // Everything is validated before anything is touched: a refused configuration changes
    // nothing.
    let settings = Settings::new(conf, Some(&args.args), ifname)?;
    let prev = conf.prev_result.as_ref().ok_or(TuningError::NoPrevResult)?;
    let ns = open_netns(netns)?;
    // Without attributes to change the interface is not looked up at all: a sysctl-only
    // configuration works whatever CNI_IFNAME names, as in the reference.
    let nl = if settings.attrs.is_empty() {
        None
    } else {
        Some(open_netlink(&ns)?)
    };

    let mut rb = Rollback::new();
    if !settings.sysctls.is_empty() {
        let written = sysctl::apply(&ns, &settings.sysctls)?;
        let ns = &ns;
        rb.push("put the sysctls back", move || {
            sysctl::restore(ns, &written)
        });
    }
    if let Some(nl) = &nl {
        let link = nl
            .link_by_name(ifname)?
            .ok_or_else(|| TuningError::LinkMissing {
                ifname: ifname.to_owned(),
                netns: ns.to_string(),
            })?;
        if settings.attrs.mac.is_some()
            && let Some(mac) = link.mac.filter(|m| !attrs::assignable(m))
        {
            return Err(TuningError::MacNotRestorable {
                ifname: ifname.to_owned(),
                netns: ns.to_string(),
                mac: format_mac(&mac),
            });
        }
        // Saved before anything changes, so that a crash in between leaves the originals.
        let file = StateFile::new(&settings.data_dir, args.container_id.as_str(), ifname);
        let previous = file.read()?;
        let mut saved = attrs::snapshot(&link, &settings.attrs);
        if let Some(bytes) = &previous {
            match file.decode(bytes) {
                Ok(older) => saved = saved.keep_older(&older),
                // Nothing in it can be trusted to be the original; the current values are the
                // best there is.
                Err(e) => eprintln!("tuning: {}: replacing it", error_chain(&e)),
            }
        }
        saved.network = Some(conf.name.to_string());
        saved.container_id = Some(args.container_id.to_string());
        saved.ifname = Some(ifname.to_owned());
        file.write(&saved.encode())?;
        rb.push("put the saved-values file back", move || {
            file.put_back(previous.as_deref())
        });
        attrs::apply(nl, &link, &settings.attrs, &mut rb)?;
    }
    let result = updated_result(prev, ifname, &settings.attrs);
    rb.commit();
    Ok(result)
}

/// `prevResult` with the new MAC (and, shown from 1.1.0 on, MTU) of the container interface.
/// Interfaces are matched by name alone, as in the reference.
fn updated_result(prev: &CniResult, ifname: &str, attrs: &Attrs) -> CniResult {
    let mut result = prev.clone();
    for iface in result.interfaces.iter_mut().filter(|i| i.name == ifname) {
        if let Some(mac) = attrs.mac {
            iface.mac = Some(format_mac(&mac));
        }
        if let Some(mtu) = attrs.mtu {
            iface.mtu = Some(mtu);
        }
    }
    result
}

/// Puts the saved values back and removes the file. Needs nothing but `dataDir` from the
/// configuration, so a configuration that ADD would now refuse can still be torn down. When
/// the namespace or the interface is gone there is nothing to put back, and the file goes too
/// (the reference keeps it forever).
fn del(args: &CmdArgs, conf: &NetConf<TuningConf>) -> Result<(), TuningError> {
    let data_dir = config::data_dir(&conf.plugin);
    let file = StateFile::new(&data_dir, args.container_id.as_str(), args.ifname.as_str());
    let Some(bytes) = file.read()? else {
        // Also sweeps a temporary a killed ADD may have left.
        file.remove()?;
        return Ok(());
    };
    let mut errors = Vec::new();
    match file.decode(&bytes) {
        // A failure to reach the namespace for another reason than its being gone may pass:
        // keep the file so that a retried DEL can still restore.
        Ok(saved) => errors.extend(restore(args, &saved)?),
        Err(e) => errors.push(e.into()),
    }
    // Restore failures are reported, but the file goes anyway: a retry would fail the same
    // way, and a DEL that can never succeed blocks the runtime's teardown for good.
    if let Err(e) = file.remove() {
        errors.push(e.into());
    }
    TuningError::teardown(errors)
}

/// The failures of putting `saved` back (none when the namespace or interface is gone), or
/// the error that kept us from trying.
fn restore(args: &CmdArgs, saved: &Saved) -> Result<Vec<TuningError>, TuningError> {
    let Some(path) = args.netns_opt() else {
        return Ok(Vec::new());
    };
    let ns = match Netns::open(path) {
        Ok(ns) => ns,
        // A netns file whose mount is gone is an empty regular file: also "gone".
        Err(NetnsError::NotFound { .. } | NetnsError::NotNetns { .. }) => return Ok(Vec::new()),
        Err(source) => {
            return Err(TuningError::Netns {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let nl = open_netlink(&ns)?;
    let Some(link) = nl.link_by_name(args.ifname.as_str())? else {
        return Ok(Vec::new());
    };
    Ok(attrs::restore(&nl, link.index, saved)
        .into_iter()
        .map(TuningError::from)
        .collect())
}

fn check(args: &CmdArgs, netns: &Path, conf: &NetConf<TuningConf>) -> Result<(), TuningError> {
    let ifname = args.ifname.as_str();
    let settings = Settings::new(conf, Some(&args.args), ifname)?;
    conf.prev_result.as_ref().ok_or(TuningError::NoPrevResult)?;
    let ns = open_netns(netns)?;
    sysctl::check(&ns, &settings.sysctls)?;
    if settings.attrs.is_empty() {
        return Ok(());
    }
    let nl = open_netlink(&ns)?;
    let link = nl
        .link_by_name(ifname)?
        .ok_or_else(|| TuningError::LinkMissing {
            ifname: ifname.to_owned(),
            netns: ns.to_string(),
        })?;
    attrs::check(&link, &settings.attrs)?;
    Ok(())
}

/// Files of this network (Berth writes its name into them) whose attachment is not in `valid`.
/// Files without a network, such as the reference's, are left alone: their name does not say
/// which network they belong to, and the data directory is shared by all networks.
fn gc(conf: &NetConf<TuningConf>, valid: &[Attachment]) -> Result<(), TuningError> {
    let data_dir = config::data_dir(&conf.plugin);
    let mut errors = Vec::new();
    for path in state::list(&data_dir)? {
        let Some(saved) = std::fs::read(&path)
            .ok()
            .and_then(|bytes| Saved::decode(&bytes).ok())
        else {
            continue;
        };
        if saved.network.as_deref() != Some(conf.name.as_str()) {
            continue;
        }
        // The names come from a file: validate them before they make a path.
        let (Some(Ok(id)), Some(Ok(ifname))) = (
            saved.container_id.as_deref().map(ContainerId::try_from),
            saved.ifname.as_deref().map(IfName::try_from),
        ) else {
            continue;
        };
        if valid
            .iter()
            .any(|a| a.container_id == id && a.ifname == ifname)
        {
            continue;
        }
        let file = StateFile::new(&data_dir, id.as_str(), ifname.as_str());
        if file.path() != path {
            continue;
        }
        if let Err(e) = file.remove() {
            errors.push(e.into());
        }
    }
    TuningError::teardown(errors)
}
