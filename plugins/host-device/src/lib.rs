//! The `host-device` plugin: moves an existing link of the host into the container as
//! `CNI_IFNAME` (optionally configured by an IPAM plugin), and back under its own name on DEL.
//! A drop-in for the reference one; see README.md for keys and differences.
//!
//! ADD, in order, each step with its undo in a [`Rollback`]:
//! 1. record the link's host name, MTU, up state, alias and MAC ([`state`]);
//! 2. move it into the container, renamed to `CNI_IFNAME`, its host name in its alias, up
//!    ([`device::move_in`]);
//! 3. IPAM ADD, then its addresses and routes on the link ([`addressing`]).
//!
//! A failed ADD therefore leaves the device in the host under its name, as it was.

pub mod addressing;
pub mod config;
pub mod device;
pub mod error;
pub mod select;
pub mod state;

use berth_cni::delegate::{
    delegate_add, delegate_check, delegate_del, delegate_gc, delegate_status,
};
use berth_cni::{
    Attachment, CmdArgs, CniError, CniResult, Interface, NetConf, NetworkArgs, Plugin,
};
use berth_netlink::{Link, Netlink, Netns, NetnsError, Rollback, error_chain, format_mac};

use crate::config::{Config, HostDeviceConf};
use crate::device::{DeviceError, Home, Recovered};
use crate::error::HostDeviceError;
use crate::state::{Saved, Store};

pub struct HostDevice;

type Conf = NetConf<HostDeviceConf>;

fn ipam_error(kind: &str, verb: &'static str) -> impl FnOnce(CniError) -> HostDeviceError {
    let kind = kind.to_owned();
    move |source| HostDeviceError::Ipam { kind, verb, source }
}

fn open_container(path: &std::path::Path) -> Result<Netns, HostDeviceError> {
    Netns::open(path).map_err(|source| HostDeviceError::ContainerNetns {
        path: path.display().to_string(),
        source,
    })
}

/// The host's namespace (the plugin's own) and a handle on it.
fn open_host() -> Result<(Netns, Netlink), HostDeviceError> {
    let ns = Netns::current().map_err(HostDeviceError::HostNetns)?;
    let nl = Netlink::open_in(&ns)?;
    Ok((ns, nl))
}

/// A PCI device bound to a user-space (DPDK) driver has no kernel link: nothing to move.
fn is_dpdk(cfg: &Config) -> Result<bool, HostDeviceError> {
    match cfg.pci_id() {
        Some(id) => Ok(select::is_dpdk(id)?),
        None => Ok(false),
    }
}

/// Whether `link` (found in the container) is the device this attachment moved there: it
/// carries its host name as alias (or, half-way through a move, still has that name).
fn is_ours(link: &Link, saved: Option<&Saved>) -> bool {
    match saved {
        Some(s) => link.alias.as_deref() == Some(s.device.as_str()) || link.name == s.device,
        None => link.alias.as_deref().is_some_and(|a| !a.is_empty()),
    }
}

/// Moves the attachment's device from the container back home; `Ok(false)` if it is not in
/// the container (never moved, or already gone from there).
fn return_home(
    ctr: &Netlink,
    host_ns: &Netns,
    host: &Netlink,
    ifname: &str,
    saved: Option<&Saved>,
) -> Result<bool, DeviceError> {
    let host_name = saved.map_or("", |s| s.device.as_str());
    let link = match saved {
        Some(_) => device::find_in_container(ctr, ifname, host_name)?,
        None => ctr.link_by_name(ifname)?,
    };
    let Some(link) = link else {
        return Ok(false);
    };
    if !is_ours(&link, saved) {
        eprintln!(
            "host-device: {} in {} was not moved there by host-device (no alias naming a host link): left alone",
            link.name,
            ctr.netns()
        );
        return Ok(true);
    }
    let home = match (saved, link.alias.as_deref()) {
        (Some(s), _) => Home::from_saved(s),
        (None, Some(alias)) => Home::from_alias(alias),
        // INVARIANT: `is_ours` without a record requires an alias.
        (None, None) => return Ok(true),
    };
    device::move_out(ctr, link.index, host_ns, host, &home)?;
    Ok(true)
}

fn add(args: &CmdArgs, conf: &Conf) -> Result<CniResult, CniError> {
    let cfg = config::load(conf)?;
    let netns_path = args.netns()?;
    let ctr_ns = open_container(netns_path)?;
    if is_dpdk(&cfg)? {
        // As the reference: the device stays with its user-space driver; no IPAM either.
        return Ok(CniResult::default());
    }
    let (host_ns, host) = open_host()?;
    if ctr_ns == host_ns {
        return Err(HostDeviceError::NetnsIsHost {
            path: netns_path.display().to_string(),
        }
        .into());
    }
    let link = select::find(&host, &cfg.selector).map_err(HostDeviceError::from)?;
    let ctr = Netlink::open_in(&ctr_ns).map_err(HostDeviceError::from)?;
    let ifname = args.ifname.as_str();
    if ctr
        .link_by_name(ifname)
        .map_err(|e| HostDeviceError::Device(e.into()))?
        .is_some()
    {
        return Err(HostDeviceError::Device(DeviceError::IfnameTaken {
            device: link.name.clone(),
            ifname: ifname.to_owned(),
            netns: ctr.netns().to_owned(),
        })
        .into());
    }

    let store = Store::new(&cfg.data_dir, conf.name.as_str());
    let saved = Saved {
        container_id: args.container_id.to_string(),
        ifname: ifname.to_owned(),
        device: link.name.clone(),
        alias: link.alias.clone().unwrap_or_default(),
        mtu: link.mtu,
        up: link.up,
        mac: link.mac.as_ref().map(format_mac),
    };
    let mut rb = Rollback::new();
    store.save(&saved).map_err(HostDeviceError::from)?;
    rb.push(format!("remove the record of {}", saved.device), || {
        store.remove(&saved.container_id, &saved.ifname)
    });
    // Registered before the move: a request that fails half-way may still have moved it.
    rb.push(format!("return {} to the host", saved.device), || {
        return_home(&ctr, &host_ns, &host, ifname, Some(&saved)).map(drop)
    });
    let moved =
        device::move_in(&host, &link, &ctr_ns, &ctr, ifname).map_err(HostDeviceError::from)?;

    let mut result = CniResult {
        interfaces: vec![Interface {
            name: moved.name.clone(),
            mac: moved.mac.as_ref().map(format_mac),
            mtu: Some(moved.mtu),
            sandbox: Some(netns_path.display().to_string()),
            socket_path: None,
            pci_id: cfg.pci_id().map(str::to_owned),
        }],
        dns: cfg.dns.clone().unwrap_or_default(),
        ..CniResult::default()
    };
    if let Some(kind) = &cfg.ipam {
        let mut ipam = delegate_add(kind, args).map_err(ipam_error(kind, "ADD"))?;
        rb.push(format!("release the address from {kind}"), move || {
            delegate_del(kind, args)
        });
        if ipam.ips.is_empty() {
            return Err(HostDeviceError::NoAddress { kind: kind.clone() }.into());
        }
        // Every address belongs to the moved device.
        for ip in &mut ipam.ips {
            ip.interface = Some(0);
        }
        addressing::configure(&ctr_ns, &ctr, moved.index, ifname, &ipam)
            .map_err(HostDeviceError::from)?;
        result.ips = ipam.ips;
        result.routes = ipam.routes;
        if cfg.dns.is_none() {
            result.dns = ipam.dns;
        }
    }
    rb.commit();
    Ok(result)
}

/// DEL: the device back home (from the container, or from wherever it went when the
/// container's namespace died), the IPAM reservation released, the record removed. Every
/// step is tried; their failures are reported together.
fn del(args: &CmdArgs, conf: &Conf) -> Result<(), HostDeviceError> {
    let cfg = Config::from_conf(conf, conf.runtime_arg("deviceID").ok().flatten())?;
    // A PCI device that no longer exists is not DPDK: look for the link as usual.
    if is_dpdk(&cfg).unwrap_or(false) {
        return Ok(());
    }
    let mut errors: Vec<HostDeviceError> = Vec::new();
    let (cid, ifname) = (args.container_id.as_str(), args.ifname.as_str());
    let store = Store::new(&cfg.data_dir, conf.name.as_str());
    let saved = store.load(cid, ifname).unwrap_or_else(|e| {
        errors.push(e.into());
        None
    });

    // Whether the record has served its purpose (the device is home or cannot come back).
    let mut settled = false;
    match open_host() {
        Err(e) => errors.push(e),
        Ok((host_ns, host)) => {
            let ctr_ns = match args.netns_opt().map(Netns::open) {
                Some(Ok(ns)) => Some(ns),
                Some(Err(NetnsError::NotFound { .. } | NetnsError::NotNetns { .. })) => None,
                Some(Err(source)) => {
                    errors.push(HostDeviceError::ContainerNetns {
                        path: args
                            .netns_opt()
                            .map(|p| p.display().to_string())
                            .unwrap_or_default(),
                        source,
                    });
                    return Err(HostDeviceError::Teardown(errors));
                }
                None => None,
            };
            let in_container = match &ctr_ns {
                Some(ns) => match Netlink::open_in(ns) {
                    Ok(ctr) => match return_home(&ctr, &host_ns, &host, ifname, saved.as_ref()) {
                        Ok(found) => found,
                        Err(e) => {
                            errors.push(e.into());
                            true
                        }
                    },
                    Err(e) => {
                        errors.push(e.into());
                        true
                    }
                },
                None => false,
            };
            if in_container {
                settled = errors.is_empty();
            } else {
                settled = recover(&host, saved.as_ref(), args.netns_opt().is_some())
                    .unwrap_or_else(|e| {
                        errors.push(e);
                        false
                    });
            }
        }
    }
    if let Some(kind) = &cfg.ipam {
        if let Err(e) = delegate_del(kind, args) {
            errors.push(ipam_error(kind, "DEL")(e));
        }
    }
    if settled {
        if let Err(e) = store.remove(cid, ifname) {
            errors.push(e.into());
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(HostDeviceError::Teardown(errors))
    }
}

/// The device is not in the container (never moved, moved back, or its namespace is gone):
/// bring it home if it is in this namespace under another name. Returns whether the record
/// can go. `netns_given`: the runtime named a namespace, so a device found nowhere is lost
/// for good (a namespace without a path to name it is not kept by the runtime).
fn recover(
    host: &Netlink,
    saved: Option<&Saved>,
    netns_given: bool,
) -> Result<bool, HostDeviceError> {
    let Some(saved) = saved else {
        return Ok(true);
    };
    match device::recover(host, saved)? {
        Recovered::AlreadyHome => Ok(true),
        Recovered::Renamed { from } => {
            eprintln!(
                "host-device: {} came back to {} as {from} (its container's namespace is gone): renamed back",
                saved.device,
                host.netns()
            );
            Ok(true)
        }
        Recovered::Gone => {
            eprintln!(
                "host-device: {} (mac {}) is neither in the container nor in {}: a virtual device \
                 is destroyed with its namespace; a physical one returns to the initial network \
                 namespace under its container name, alias {:?}",
                saved.device,
                saved.mac.as_deref().unwrap_or("unknown"),
                host.netns(),
                saved.device
            );
            Ok(netns_given)
        }
    }
}

fn check(args: &CmdArgs, conf: &Conf) -> Result<(), CniError> {
    let cfg = config::load(conf)?;
    let netns_path = args.netns()?;
    let ctr_ns = open_container(netns_path)?;
    if let Some(kind) = &cfg.ipam {
        delegate_check(kind, args).map_err(ipam_error(kind, "CHECK"))?;
    }
    let prev = conf.prev_result()?;
    if is_dpdk(&cfg)? {
        return Ok(());
    }
    let ifname = args.ifname.as_str();
    let sandbox = netns_path.display().to_string();
    let fail = |findings: Vec<String>| -> CniError {
        HostDeviceError::Check {
            ifname: ifname.to_owned(),
            findings,
        }
        .into()
    };
    let Some(index) = prev
        .interfaces
        .iter()
        .position(|i| i.name == ifname && i.sandbox.as_deref() == Some(sandbox.as_str()))
    else {
        return Err(fail(vec![format!(
            "prevResult has no interface {ifname} in sandbox {sandbox}"
        )]));
    };
    let ctr = Netlink::open_in(&ctr_ns).map_err(HostDeviceError::from)?;
    let Some(link) = ctr
        .link_by_name(ifname)
        .map_err(|e| HostDeviceError::Device(e.into()))?
    else {
        return Err(fail(vec![format!("{ifname} is not in {sandbox}")]));
    };
    let mut findings = Vec::new();
    if let Some(want) = &prev.interfaces[index].mac {
        let have = link.mac.as_ref().map(format_mac).unwrap_or_default();
        if !want.eq_ignore_ascii_case(&have) {
            findings.push(format!("mac is {have}, prevResult says {want}"));
        }
    }
    if link.alias.as_deref().is_none_or(str::is_empty) {
        findings.push("no alias naming its host link (not moved here by host-device)".into());
    }
    if !link.up {
        findings.push("it is down".into());
    }
    let mine = CniResult {
        ips: prev
            .ips
            .iter()
            .filter(|ip| ip.interface.is_none_or(|i| i == index))
            .cloned()
            .collect(),
        routes: prev.routes.clone(),
        ..CniResult::default()
    };
    findings.extend(addressing::missing(&ctr, link.index, ifname, &mine));
    if findings.is_empty() {
        Ok(())
    } else {
        Err(fail(findings))
    }
}

/// GC: records of attachments the runtime no longer knows are settled like a DEL whose
/// namespace is gone (the device brought home if it came back here), then the IPAM plugin's
/// GC runs.
fn gc(args: &NetworkArgs, conf: &Conf, valid: &[Attachment]) -> Result<(), HostDeviceError> {
    let cfg = Config::from_conf(conf, conf.runtime_arg("deviceID").ok().flatten())?;
    let store = Store::new(&cfg.data_dir, conf.name.as_str());
    let mut errors = Vec::new();
    let stale: Vec<Saved> = store
        .list()?
        .into_iter()
        .filter(|s| {
            !valid
                .iter()
                .any(|a| a.container_id.as_str() == s.container_id && a.ifname.as_str() == s.ifname)
        })
        .collect();
    if !stale.is_empty() {
        let (_, host) = open_host()?;
        for saved in &stale {
            match recover(&host, Some(saved), true) {
                Ok(_) => {
                    if let Err(e) = store.remove(&saved.container_id, &saved.ifname) {
                        errors.push(e.into());
                    }
                }
                Err(e) => errors.push(e),
            }
        }
    }
    if let Some(kind) = &cfg.ipam {
        if let Err(e) = delegate_gc(kind, args) {
            errors.push(ipam_error(kind, "GC")(e));
        }
    }
    match errors.len() {
        0 => Ok(()),
        _ => Err(HostDeviceError::Teardown(errors)),
    }
}

impl Plugin for HostDevice {
    type Conf = HostDeviceConf;

    fn add(&self, args: &CmdArgs, conf: &Conf) -> Result<CniResult, CniError> {
        add(args, conf)
    }

    fn del(&self, args: &CmdArgs, conf: &Conf) -> Result<(), CniError> {
        del(args, conf).map_err(|e| {
            eprintln!("host-device: DEL: {}", error_chain(&e));
            e.into()
        })
    }

    fn check(&self, args: &CmdArgs, conf: &Conf) -> Result<(), CniError> {
        check(args, conf)
    }

    fn status(&self, args: &NetworkArgs, conf: &Conf) -> Result<(), CniError> {
        match conf
            .ipam
            .as_ref()
            .map(|i| i.kind.as_str())
            .filter(|k| !k.is_empty())
        {
            Some(kind) => {
                delegate_status(kind, args).map_err(|e| ipam_error(kind, "STATUS")(e).into())
            }
            None => Ok(()),
        }
    }

    fn gc(&self, args: &NetworkArgs, conf: &Conf, valid: &[Attachment]) -> Result<(), CniError> {
        gc(args, conf, valid).map_err(CniError::from)
    }
}
