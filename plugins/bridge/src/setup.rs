//! ADD: bridge, veth pair, bridge port, IPAM, container addresses and routes, gateway on the
//! bridge, masquerading. Each step registers its undo in a [`Rollback`]; a failure undoes
//! everything this call made, in reverse order, except what is shared with other attachments
//! (the bridge, its gateway address, a VLAN gateway interface, `ip_forward`).
//!
//! Threads and namespaces: this runs on the plugin's thread, which is in the host's namespace.
//! The container is reached through a netlink socket opened inside its namespace; the few
//! container sysctls go through `Netns::run` (a helper thread). IPAM and the firewall spawn
//! processes, which therefore start in the host namespace, as they must.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_cni::delegate::{delegate_add, delegate_del};
use berth_cni::{CmdArgs, CniError, CniResult, HostLinkName, IfName, Interface};
use berth_netlink::{
    AddrError, AddrOptions, BridgeError, BridgeSpec, BridgeVlan, Errno, IpFamily, Link, LinkError,
    Netlink, Netns, NetnsError, OpenError, OwnedName, Rollback, RouteError, RouteScope,
    SysctlError, VethPair, VlanTarget, error_chain, format_mac, sysctl,
};
use ipnetwork::IpNetwork;

use crate::addressing::{Addressing, AddressingError};
use crate::config::Config;
use berth_firewall::{MasqError, Masquerading};

use crate::names::vlan_gateway_peer_name;
use crate::owner::owner;
use crate::spoof::{Spoof, SpoofError};

/// The steps of ADD, in order; a test failpoint makes ADD fail right after one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// The bridge exists and is up.
    Bridge,
    /// The veth pair exists, the container end in the container's namespace.
    Veth,
    /// The host end is a configured bridge port and up.
    Port,
    /// The port only passes frames from the container's MAC (`macspoofchk`).
    SpoofCheck,
    /// The IPAM plugin reserved the addresses.
    Ipam,
    /// The container interface is up with its addresses and routes.
    Container,
    /// The bridge holds the gateway addresses; forwarding is on.
    Gateway,
    /// The masquerade rules are in place.
    Masquerade,
    /// The result is built (the last moment before success).
    Result,
}

impl Step {
    pub const ALL: [Step; 9] = [
        Step::Bridge,
        Step::Veth,
        Step::Port,
        Step::SpoofCheck,
        Step::Ipam,
        Step::Container,
        Step::Gateway,
        Step::Masquerade,
        Step::Result,
    ];
}

/// How long to wait for IPv6 duplicate address detection with `enabledad` (the reference's
/// `SettleAddresses` timeout).
const DAD_TIMEOUT: Duration = Duration::from_secs(10);
const DAD_POLL: Duration = Duration::from_millis(50);
const VLAN_DEFAULT: u16 = 1;

/// Errors of the `setup` module: one variant per step, carrying its inputs.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("open the container's network namespace {path}")]
    OpenNetns {
        path: PathBuf,
        #[source]
        source: NetnsError,
    },
    #[error("open rtnetlink")]
    OpenNetlink(#[source] OpenError),
    #[error("create or look up bridge {bridge}")]
    Bridge {
        bridge: IfName,
        #[source]
        source: BridgeError,
    },
    #[error("look up bridge {bridge}")]
    BridgeLookup {
        bridge: IfName,
        #[source]
        source: LinkError,
    },
    #[error("{bridge} exists but is a {kind} device, not a bridge")]
    NotABridge { bridge: IfName, kind: String },
    #[error("set bridge {bridge} {what}")]
    BridgeState {
        bridge: IfName,
        what: &'static str,
        #[source]
        source: Box<LinkError>,
    },
    /// Code 2: the kernel lacks CONFIG_BRIDGE_VLAN_FILTERING.
    #[error(
        "{key}: bridge {bridge} cannot do VLAN filtering on this kernel \
         (CONFIG_BRIDGE_VLAN_FILTERING is missing), so vlan/vlanTrunk are unsupported here"
    )]
    VlanUnsupported {
        key: String,
        bridge: IfName,
        #[source]
        source: Box<BridgeError>,
    },
    /// The names and namespaces are in the source's message.
    #[error(
        "{ifname} already exists in the container, or the host veth on the host \
         (ADD twice without DEL?)"
    )]
    VethExists {
        ifname: IfName,
        #[source]
        source: LinkError,
    },
    #[error("create the veth pair for {ifname}")]
    CreateVeth {
        ifname: IfName,
        #[source]
        source: LinkError,
    },
    /// The namespace is in the source's message.
    #[error("look up {name}")]
    Lookup {
        name: String,
        #[source]
        source: LinkError,
    },
    #[error("{name} vanished from {netns} right after it was created")]
    Vanished { name: String, netns: String },
    #[error("attach {veth} to bridge {bridge}")]
    Attach {
        veth: String,
        bridge: IfName,
        #[source]
        source: Box<LinkError>,
    },
    #[error("set {option} on bridge port {veth}")]
    PortOption {
        veth: String,
        option: String,
        #[source]
        source: Box<BridgeError>,
    },
    #[error("bring {name} up")]
    Up {
        name: String,
        #[source]
        source: LinkError,
    },
    #[error("IPAM plugin {ipam}: ADD failed")]
    Ipam {
        ipam: String,
        #[source]
        source: CniError,
    },
    #[error("IPAM plugin result")]
    Addressing(#[from] AddressingError),
    #[error("add address {address} to {ifname} in the container")]
    ContainerAddr {
        address: IpNetwork,
        ifname: IfName,
        #[source]
        source: Box<AddrError>,
    },
    #[error("IPv6 duplicate address detection on {ifname}: {address} {outcome}")]
    Dad {
        address: IpNetwork,
        ifname: IfName,
        outcome: &'static str,
    },
    #[error("list addresses of {name}")]
    ListAddrs {
        name: String,
        #[source]
        source: AddrError,
    },
    #[error("add route {route} via {ifname} in the container")]
    ContainerRoute {
        route: String,
        ifname: IfName,
        #[source]
        source: Box<RouteError>,
    },
    #[error(
        "{device} already has address {existing}, different from gateway {gateway} \
         (set forceAddress to replace it)"
    )]
    GatewayConflict {
        device: String,
        existing: IpNetwork,
        gateway: IpNetwork,
    },
    #[error("replace address {existing} of {device} by gateway {gateway} (forceAddress)")]
    GatewayReplace {
        device: String,
        existing: IpNetwork,
        gateway: IpNetwork,
        #[source]
        source: Box<AddrError>,
    },
    #[error("add gateway address {gateway} to {device}")]
    GatewayAddr {
        device: String,
        gateway: IpNetwork,
        #[source]
        source: Box<AddrError>,
    },
    #[error("pin the MAC of {device}")]
    PinMac {
        device: String,
        #[source]
        source: LinkError,
    },
    #[error("enable forwarding ({key}) in the host namespace")]
    Forwarding {
        key: &'static str,
        #[source]
        source: SysctlError,
    },
    #[error("VLAN gateway interface {name}: name longer than 15 bytes (shorten the bridge name)")]
    VlanGatewayName { name: String },
    #[error("create VLAN gateway veth {name} <-> {peer}")]
    VlanGatewayVeth {
        name: String,
        peer: String,
        #[source]
        source: Box<LinkError>,
    },
    #[error("run in the container's namespace {path}")]
    EnterNetns {
        path: PathBuf,
        #[source]
        source: NetnsError,
    },
    #[error(transparent)]
    Masq(#[from] MasqError),
    #[error(transparent)]
    Spoof(#[from] SpoofError),
    #[error("failure injected after step {0:?} (test failpoint)")]
    Failpoint(Step),
}

/// A failed ADD: the error, and the undo steps that failed in turn (normally none).
#[derive(Debug)]
pub struct AddFailure {
    pub error: Box<SetupError>,
    pub undo_failures: Vec<String>,
}

impl From<SetupError> for AddFailure {
    fn from(error: SetupError) -> AddFailure {
        AddFailure {
            error: Box::new(error),
            undo_failures: Vec::new(),
        }
    }
}

/// Everything ADD works with, opened before anything is created.
struct Ctx<'a> {
    cfg: &'a Config,
    args: &'a CmdArgs,
    netns_path: &'a Path,
    ctr_ns: Netns,
    host: Netlink,
    ctr: Netlink,
    masq: Option<Masquerading>,
    spoof: Option<Spoof>,
    host_veth: HostLinkName,
    failpoint: Option<Step>,
}

impl Ctx<'_> {
    fn reached(&self, step: Step) -> Result<(), SetupError> {
        if self.failpoint == Some(step) {
            return Err(SetupError::Failpoint(step));
        }
        Ok(())
    }

    fn ctr_label(&self) -> String {
        self.netns_path.display().to_string()
    }
}

/// ADD. `failpoint` (tests only) fails the call right after that step.
pub fn add(
    cfg: &Config,
    args: &CmdArgs,
    netns_path: &Path,
    failpoint: Option<Step>,
) -> Result<CniResult, AddFailure> {
    let ctr_ns = Netns::open(netns_path).map_err(|source| SetupError::OpenNetns {
        path: netns_path.to_path_buf(),
        source,
    })?;
    let host = Netlink::open_current().map_err(SetupError::OpenNetlink)?;
    let ctr = Netlink::open_in(&ctr_ns).map_err(SetupError::OpenNetlink)?;
    // Detect the firewall before creating anything: a host without a usable backend fails
    // here, with nothing to undo.
    let masq = match (cfg.masquerade, &cfg.ipam) {
        (Some(backend), Some(_)) => Some(Masquerading::open(backend).map_err(SetupError::from)?),
        _ => None,
    };
    let spoof = match cfg.mac_spoof_check {
        true => Some(Spoof::open().map_err(SetupError::from)?),
        false => None,
    };
    let ctx = Ctx {
        cfg,
        args,
        netns_path,
        ctr_ns,
        host,
        ctr,
        masq,
        spoof,
        host_veth: HostLinkName::of(
            cfg.network.as_str(),
            args.container_id.as_str(),
            args.ifname.as_str(),
        ),
        failpoint,
    };
    let mut rollback = Rollback::new();
    match steps(&ctx, &mut rollback) {
        Ok(result) => {
            rollback.commit();
            Ok(result)
        }
        Err(error) => {
            let undo_failures = rollback
                .rollback()
                .into_iter()
                .map(|(what, err)| format!("{what}: {}", error_chain(err.as_ref())))
                .collect();
            Err(AddFailure {
                error: Box::new(error),
                undo_failures,
            })
        }
    }
}

/// The recipe. Reads top-down; every step that creates something private to this attachment
/// registers its undo right after it succeeds.
///
/// The IPAM plugin (a process of its own, ~4 ms) runs on a thread while this one builds the
/// links: it needs nothing from them, and they nothing from it until the container is
/// addressed. Its reservation is registered for undo as soon as it is known, whatever the
/// link steps did meanwhile.
fn steps<'a>(ctx: &'a Ctx<'a>, rollback: &mut Rollback<'a>) -> Result<CniResult, SetupError> {
    let cfg = ctx.cfg;
    let (links, reserved) = std::thread::scope(|scope| {
        // Threads start in the namespace of the thread that spawns them: the host's.
        let ipam = cfg
            .ipam
            .as_deref()
            .map(|ipam| (ipam, scope.spawn(move || delegate_add(ipam, ctx.args))));
        let links = link_steps(ctx, rollback);
        let reserved = ipam.map(|(ipam, handle)| {
            let outcome = handle
                .join()
                .unwrap_or_else(|_| Err(CniError::internal("the IPAM thread panicked")));
            if outcome.is_ok() {
                rollback.push(
                    format!("release addresses through IPAM {ipam}"),
                    move || delegate_del(ipam, ctx.args),
                );
            }
            (ipam, outcome)
        });
        (links, reserved)
    });
    let (bridge, host_end, ctr_link) = links?;

    let mut interfaces = vec![
        Interface::default(),
        Interface {
            name: host_end.name.clone(),
            mac: host_end.mac.as_ref().map(format_mac),
            ..Interface::default()
        },
        Interface::default(),
    ];
    let mut result = CniResult::default();

    if let Some((ipam, reserved)) = reserved {
        let reserved = reserved.map_err(|source| SetupError::Ipam {
            ipam: ipam.to_owned(),
            source,
        })?;
        ctx.reached(Step::Ipam)?;

        let plan = Addressing::plan(reserved, ipam, cfg)?;
        configure_container(ctx, &ctr_link, &plan)?;
        ctx.reached(Step::Container)?;

        if cfg.is_gateway && !plan.gateways.is_empty() {
            let device = match cfg.vlan.access {
                Some(vid) => {
                    let vlan_if = ensure_vlan_gateway(ctx, &bridge, vid)?;
                    interfaces.push(Interface {
                        name: vlan_if.name.clone(),
                        mac: vlan_if.mac.as_ref().map(format_mac),
                        ..Interface::default()
                    });
                    vlan_if
                }
                None => bridge.clone(),
            };
            ensure_gateways(ctx, &device, &plan.gateways)?;
            enable_forwarding(&plan.gateways)?;
        }
        ctx.reached(Step::Gateway)?;

        if let Some(masq) = &ctx.masq {
            let owner = owner(cfg.network.as_str(), ctx.args);
            let sources: Vec<IpNetwork> = plan.ips.iter().map(|ip| ip.address).collect();
            masq.add(&owner, &sources)?;
            rollback.push(
                format!(
                    "delete masquerade rules of {}/{}/{}",
                    owner.network, owner.container_id, owner.ifname
                ),
                move || masq.del(&owner),
            );
        }
        ctx.reached(Step::Masquerade)?;

        result.ips = plan.ips;
        result.routes = plan.routes;
        result.dns = plan.dns;
    } else if !cfg.disable_container_interface {
        set_up(&ctx.ctr, &ctr_link)?;
    }

    // The bridge's MAC may have changed since we looked it up (it follows the lowest port MAC
    // on a bridge whose MAC was never set explicitly): report the current one.
    let bridge_now = lookup(&ctx.host, cfg.bridge.as_str(), ctx.host.netns())?;
    interfaces[0] = Interface {
        name: bridge_now.name.clone(),
        mac: bridge_now.mac.as_ref().map(format_mac),
        ..Interface::default()
    };
    interfaces[2] = Interface {
        name: ctr_link.name.clone(),
        mac: ctr_link.mac.as_ref().map(format_mac),
        mtu: Some(ctr_link.mtu),
        sandbox: Some(ctx.ctr_label()),
        ..Interface::default()
    };
    result.interfaces = interfaces;
    ctx.reached(Step::Result)?;
    Ok(result)
}

/// The bridge, the veth pair, the port and its MAC guard: (bridge, host end, container end).
fn link_steps<'a>(
    ctx: &'a Ctx<'a>,
    rollback: &mut Rollback<'a>,
) -> Result<(Link, Link, Link), SetupError> {
    let bridge = ensure_bridge(ctx, rollback)?;
    ctx.reached(Step::Bridge)?;

    let host_end = create_veth(ctx)?;
    let host_index = host_end.index;
    rollback.push(format!("delete veth {}", host_end.name), move || {
        // Deleting either end removes the pair (and the container end's addresses and routes).
        match ctx.host.del_link(host_index) {
            Err(e) if e.is_not_found() => Ok(()),
            other => other,
        }
    });
    ctx.reached(Step::Veth)?;

    configure_port(ctx, &bridge, &host_end)?;
    ctx.reached(Step::Port)?;

    let ctr_link = lookup(&ctx.ctr, ctx.args.ifname.as_str(), &ctx.ctr_label())?;
    if let Some(spoof) = &ctx.spoof {
        let owner = owner(ctx.cfg.network.as_str(), ctx.args);
        let guard = Spoof::guard(&owner, &host_end.name, ctr_link.mac.as_ref())?;
        spoof.add(&guard)?;
        rollback.push(
            format!("remove the MAC spoofing guard of {owner}"),
            move || spoof.del(&owner),
        );
    }
    ctx.reached(Step::SpoofCheck)?;
    Ok((bridge, host_end, ctr_link))
}

fn lookup(nl: &Netlink, name: &str, netns: &str) -> Result<Link, SetupError> {
    nl.link_by_name(name)
        .map_err(|source| SetupError::Lookup {
            name: name.to_owned(),
            source,
        })?
        .ok_or_else(|| SetupError::Vanished {
            name: name.to_owned(),
            netns: netns.to_owned(),
        })
}

fn set_up(nl: &Netlink, link: &Link) -> Result<(), SetupError> {
    nl.set_up(link.index).map_err(|source| SetupError::Up {
        name: link.name.clone(),
        source,
    })
}

fn is_eopnotsupp(e: &impl Errno) -> bool {
    e.errno() == Some(libc::EOPNOTSUPP)
}

/// Creates the bridge if it does not exist; safe against concurrent ADDs creating it too
/// (the loser of the `NLM_F_EXCL` race looks the winner's up). A bridge this call created is
/// kept on failure, as the reference does: other ADDs may already be using it.
/// The bridge, created if missing. A bridge this call created is deleted again by the
/// rollback of a failed ADD, unless another attachment joined it meanwhile (a concurrent ADD
/// on the same new bridge): a failed ADD leaves nothing it created.
fn ensure_bridge<'a>(ctx: &'a Ctx<'a>, rollback: &mut Rollback<'a>) -> Result<Link, SetupError> {
    let cfg = ctx.cfg;
    let name = &cfg.bridge;
    let spec = BridgeSpec {
        name: name.as_str(),
        mtu: cfg.mtu,
        vlan_filtering: cfg.vlan.filtering(),
        mac: None,
    };
    let bridge_err = |source: BridgeError| {
        if cfg.vlan.filtering() && is_eopnotsupp(&source) {
            SetupError::VlanUnsupported {
                key: cfg.vlan.key(),
                bridge: name.clone(),
                source: Box::new(source),
            }
        } else {
            SetupError::Bridge {
                bridge: name.clone(),
                source,
            }
        }
    };
    let existing =
        ctx.host
            .link_by_name(name.as_str())
            .map_err(|source| SetupError::BridgeLookup {
                bridge: name.clone(),
                source,
            })?;
    let (bridge, created) = match existing {
        Some(link) if link.kind.as_deref() == Some("bridge") => (link, false),
        Some(link) => {
            return Err(SetupError::NotABridge {
                bridge: name.clone(),
                kind: link.kind.unwrap_or_else(|| "kind-less".into()),
            });
        }
        None => match ctx.host.add_bridge(&spec) {
            Ok(link) => (link, true),
            Err(e) if e.is_exists() => (ctx.host.ensure_bridge(&spec).map_err(bridge_err)?, false),
            Err(e) => return Err(bridge_err(e)),
        },
    };
    if created {
        let (host, index) = (&ctx.host, bridge.index);
        rollback.push(
            format!("delete bridge {name} (created by this ADD)"),
            move || {
                if host.links()?.iter().any(|l| l.master == Some(index)) {
                    return Ok(());
                }
                match host.del_link(index) {
                    Err(e) if e.is_not_found() => Ok(()),
                    other => other,
                }
            },
        );
    }
    let state_err = |what| {
        move |source| SetupError::BridgeState {
            bridge: name.clone(),
            what,
            source: Box::new(source),
        }
    };
    if created {
        // A bridge without an explicitly set MAC takes the lowest MAC of its ports, so it
        // would change as containers come and go and stale the containers' neighbour caches
        // for the gateway. Setting its own random MAC explicitly pins it.
        if let Some(mac) = bridge.mac {
            ctx.host
                .set_mac(bridge.index, mac)
                .map_err(state_err("MAC"))?;
        }
        // We own the routes of this interface (the reference does the same); a failure only
        // means IPv6 is off.
        let _ = sysctl::write(&format!("net/ipv6/conf/{name}/accept_ra"), "0");
    }
    if cfg.promisc && !bridge.promisc {
        ctx.host
            .set_promisc(bridge.index, true)
            .map_err(state_err("promiscuous"))?;
    }
    if !bridge.up {
        ctx.host.set_up(bridge.index).map_err(state_err("up"))?;
    }
    Ok(bridge)
}

/// The veth pair, its container end created directly inside the container's namespace with
/// the requested name, MAC and MTU: it never appears in the host's namespace under a name
/// that could clash.
fn create_veth(ctx: &Ctx<'_>) -> Result<Link, SetupError> {
    let ifname = &ctx.args.ifname;
    let pair = VethPair {
        // Chosen by `add_owned_veth_pair` among the attachment's candidates.
        name: "",
        peer_name: ifname.as_str(),
        peer_netns: Some(&ctx.ctr_ns),
        mtu: ctx.cfg.mtu,
        mac: None,
        peer_mac: ctx.cfg.mac,
    };
    let name = OwnedName {
        candidates: &ctx.host_veth.candidates,
        alias: &ctx.host_veth.alias,
    };
    ctx.host.add_owned_veth_pair(name, &pair).map_err(|source| {
        let ifname = ifname.clone();
        if source.is_exists() {
            SetupError::VethExists { ifname, source }
        } else {
            SetupError::CreateVeth { ifname, source }
        }
    })
}

/// Makes `port` a port of `bridge` with the configured options (hairpin, isolation, VLANs)
/// and brings it up.
fn configure_port(ctx: &Ctx<'_>, bridge: &Link, port: &Link) -> Result<(), SetupError> {
    let cfg = ctx.cfg;
    ctx.host
        .set_master(port.index, bridge.index)
        .map_err(|source| SetupError::Attach {
            veth: port.name.clone(),
            bridge: cfg.bridge.clone(),
            source: Box::new(source),
        })?;
    let option_err = |option: String| {
        move |source| SetupError::PortOption {
            veth: port.name.clone(),
            option,
            source: Box::new(source),
        }
    };
    // Both default to off on a new port: only an explicit "on" needs a request.
    if cfg.hairpin {
        ctx.host
            .set_bridge_port_hairpin(port.index, true)
            .map_err(option_err("hairpinMode".into()))?;
    }
    if cfg.port_isolation {
        ctx.host
            .set_bridge_port_isolated(port.index, true)
            .map_err(option_err("portIsolation".into()))?;
    }
    configure_port_vlans(ctx, port)?;
    // A bridge port carries no L3. Without IPv6 on it, its carrier coming up sends no DAD,
    // MLD or router solicitation, each of which the bridge floods to every other port (with
    // 1000 containers: 1000 copies processed while the kernel holds the rtnl lock). A host
    // without IPv6 has no such key: nothing to do there.
    let _ = sysctl::write(&format!("net/ipv6/conf/{}/disable_ipv6", port.name), "1");
    set_up(&ctx.host, port)
}

/// `vlan` (PVID, untagged) or `vlanTrunk` (tagged) entries on the port, and the default VLAN
/// removed unless `preserveDefaultVlan`. Needs bridge VLAN filtering in the kernel.
fn configure_port_vlans(ctx: &Ctx<'_>, port: &Link) -> Result<(), SetupError> {
    let vlan = &ctx.cfg.vlan;
    if !vlan.has_port_vlans() {
        return Ok(());
    }
    let vlan_err = |option: String| {
        move |source: BridgeError| {
            if is_eopnotsupp(&source) {
                SetupError::VlanUnsupported {
                    key: vlan.key(),
                    bridge: ctx.cfg.bridge.clone(),
                    source: Box::new(source),
                }
            } else {
                SetupError::PortOption {
                    veth: port.name.clone(),
                    option,
                    source: Box::new(source),
                }
            }
        }
    };
    if !vlan.preserve_default {
        let default = BridgeVlan {
            vid: VLAN_DEFAULT,
            pvid: true,
            untagged: true,
        };
        ctx.host
            .bridge_vlan_del(port.index, default, VlanTarget::Master)
            .map_err(vlan_err("preserveDefaultVlan=false".into()))?;
    }
    if let Some(vid) = vlan.access {
        let entry = BridgeVlan {
            vid,
            pvid: true,
            untagged: true,
        };
        ctx.host
            .bridge_vlan_add(port.index, entry, VlanTarget::Master)
            .map_err(vlan_err(format!("vlan {vid}")))?;
    }
    for &vid in &vlan.trunk {
        let entry = BridgeVlan {
            vid,
            pvid: false,
            untagged: false,
        };
        ctx.host
            .bridge_vlan_add(port.index, entry, VlanTarget::Master)
            .map_err(vlan_err(format!("vlanTrunk vid {vid}")))?;
    }
    Ok(())
}

/// Inside the container: DAD and ARP sysctls, the interface up, addresses, routes.
fn configure_container(ctx: &Ctx<'_>, link: &Link, plan: &Addressing) -> Result<(), SetupError> {
    let ifname = &ctx.args.ifname;
    let has_v6 = plan.ips.iter().any(|ip| ip.address.is_ipv6());
    let enable_dad = ctx.cfg.enable_dad;
    // /proc/sys/net resolves against the namespace of the thread that opens the file, hence a
    // helper thread inside the container's namespace. Failures are ignored, as in the
    // reference: these keys are missing when IPv6 is disabled, and they are tuning only.
    ctx.ctr_ns
        .run(|| {
            let key = |k: &str| format!("net/ipv6/conf/{ifname}/{k}");
            if has_v6 {
                // Addresses of a family the interface has disabled would be refused.
                for dev in ["lo", ifname.as_str()] {
                    let k = format!("net/ipv6/conf/{dev}/disable_ipv6");
                    if sysctl::read(&k).is_ok_and(|v| v != "0") {
                        let _ = sysctl::write(&k, "0");
                    }
                }
            } else {
                // IPv4 only (as Docker does for IPv4-only networks): no link-local address,
                // so coming up sends no MLD report or router solicitation for the bridge to
                // flood to every other port (1000 copies under the rtnl lock with 1000
                // containers on it).
                let _ = sysctl::write(&key("disable_ipv6"), "1");
            }
            if enable_dad {
                let _ = sysctl::write(&key("enhanced_dad"), "1");
                let _ = sysctl::write(&key("accept_dad"), "1");
            } else {
                let _ = sysctl::write(&key("accept_dad"), "0");
            }
            let _ = sysctl::write(&format!("net/ipv4/conf/{ifname}/arp_notify"), "1");
        })
        .map_err(|source| SetupError::EnterNetns {
            path: ctx.netns_path.to_path_buf(),
            source,
        })?;

    set_up(&ctx.ctr, link)?;
    for ip in &plan.ips {
        // Without DAD (the default) IPv6 addresses are usable at once instead of "tentative"
        // for a second or more.
        let options = AddrOptions { nodad: !enable_dad };
        ctx.ctr
            .add_addr_with(link.index, ip.address, options)
            .map_err(|source| SetupError::ContainerAddr {
                address: ip.address,
                ifname: ifname.clone(),
                source: Box::new(source),
            })?;
    }
    if enable_dad && has_v6 {
        settle_dad(ctx, link, plan)?;
    }
    for route in &plan.routes {
        let family = IpFamily::of(route.dst.ip());
        let kernel = kernel_route(route, link.index, plan.default_gateway(family));
        ctx.ctr
            .add_route(&kernel)
            .map_err(|source| SetupError::ContainerRoute {
                route: kernel.to_string(),
                ifname: ifname.clone(),
                source: Box::new(source),
            })?;
    }
    Ok(())
}

/// The kernel route for a result route: through the container interface, via its gateway or
/// the family's default gateway (as the reference's `ConfigureIface`).
pub fn kernel_route(
    route: &berth_cni::Route,
    oif: u32,
    default_gw: Option<IpAddr>,
) -> berth_netlink::Route {
    berth_netlink::Route {
        gateway: route.gw.or(default_gw),
        oif: Some(oif),
        table: route.table,
        metric: route.priority,
        scope: match route.scope {
            Some(253) => RouteScope::Link,
            Some(254) => RouteScope::Host,
            _ => RouteScope::Universe,
        },
        mtu: route.mtu,
        advmss: route.advmss,
        ..berth_netlink::Route::new(route.dst)
    }
}

/// With `enabledad`, waits until the IPv6 addresses leave the "tentative" state, so that the
/// container can use them when ADD returns.
fn settle_dad(ctx: &Ctx<'_>, link: &Link, plan: &Addressing) -> Result<(), SetupError> {
    let ifname = &ctx.args.ifname;
    let deadline = Instant::now() + DAD_TIMEOUT;
    loop {
        let addrs = ctx
            .ctr
            .addrs(Some(link.index))
            .map_err(|source| SetupError::ListAddrs {
                name: ifname.to_string(),
                source,
            })?;
        let mut pending = None;
        for ip in plan.ips.iter().filter(|ip| ip.address.is_ipv6()) {
            match addrs.iter().find(|a| a.net == ip.address) {
                Some(a) if a.dad_failed => {
                    return Err(SetupError::Dad {
                        address: ip.address,
                        ifname: ifname.clone(),
                        outcome: "found a duplicate",
                    });
                }
                Some(a) if a.tentative => pending = Some(ip.address),
                _ => {}
            }
        }
        let Some(address) = pending else {
            return Ok(());
        };
        if Instant::now() >= deadline {
            return Err(SetupError::Dad {
                address,
                ifname: ifname.clone(),
                outcome: "is still tentative after 10 s",
            });
        }
        std::thread::sleep(DAD_POLL);
    }
}

/// Puts each gateway address on `device` (the bridge, or the VLAN gateway interface), as the
/// reference's `ensureAddr`:
/// - an address already there is success (concurrent ADDs race to add it: EEXIST is success);
/// - another IPv4 address, or an overlapping IPv6 one, is a conflict unless `forceAddress`
///   (then it is replaced).
fn ensure_gateways(ctx: &Ctx<'_>, device: &Link, gateways: &[IpNetwork]) -> Result<(), SetupError> {
    let name = device.name.clone();
    let existing = ctx
        .host
        .addrs(Some(device.index))
        .map_err(|source| SetupError::ListAddrs {
            name: name.clone(),
            source,
        })?;
    for gw in gateways {
        if existing.iter().any(|a| a.net == *gw) {
            continue;
        }
        for a in &existing {
            let conflicts = a.net.is_ipv4() == gw.is_ipv4()
                && !gateways.contains(&a.net)
                && (gw.is_ipv4() || a.net.contains(gw.ip()) || gw.contains(a.net.ip()));
            if !conflicts {
                continue;
            }
            if !ctx.cfg.force_address {
                return Err(SetupError::GatewayConflict {
                    device: name,
                    existing: a.net,
                    gateway: *gw,
                });
            }
            match ctx.host.del_addr(device.index, a.net) {
                Err(e) if e.errno() != Some(libc::EADDRNOTAVAIL) => {
                    return Err(SetupError::GatewayReplace {
                        device: name,
                        existing: a.net,
                        gateway: *gw,
                        source: Box::new(e),
                    });
                }
                _ => {}
            }
        }
        // Without `enabledad` the gateway skips DAD too: otherwise the containers' IPv6
        // default route stays unusable for a second or more after ADD returns.
        let options = AddrOptions {
            nodad: !ctx.cfg.enable_dad,
        };
        match ctx.host.add_addr_with(device.index, *gw, options) {
            Err(e) if !e.is_exists() => {
                return Err(SetupError::GatewayAddr {
                    device: name,
                    gateway: *gw,
                    source: Box::new(e),
                });
            }
            _ => {}
        }
    }
    // The reference pins the MAC here too, for bridges it did not create (see ensure_bridge).
    let current = lookup(&ctx.host, &name, ctx.host.netns())?;
    if let Some(mac) = current.mac {
        ctx.host
            .set_mac(current.index, mac)
            .map_err(|source| SetupError::PinMac {
                device: name,
                source,
            })?;
    }
    Ok(())
}

/// `ip_forward` for each family that has a gateway, in the host namespace (this thread's).
/// Written only when off, so an already forwarding host sees no write.
fn enable_forwarding(gateways: &[IpNetwork]) -> Result<(), SetupError> {
    let mut keys = Vec::new();
    if gateways.iter().any(IpNetwork::is_ipv4) {
        keys.push("net/ipv4/ip_forward");
    }
    if gateways.iter().any(IpNetwork::is_ipv6) {
        keys.push("net/ipv6/conf/all/forwarding");
    }
    for key in keys {
        if sysctl::read(key).is_ok_and(|v| v == "1") {
            continue;
        }
        sysctl::write(key, "1").map_err(|source| SetupError::Forwarding { key, source })?;
    }
    Ok(())
}

/// `isGateway` with `vlan`: the gateway address cannot sit on the bridge (its own port is
/// not in the VLAN), so, like the reference, a veth pair `<bridge>.<vid>` <-> port carries
/// it, the port being an untagged member of the VLAN. Shared by every attachment of that VLAN,
/// so it is created once and never rolled back or deleted (like the bridge).
fn ensure_vlan_gateway(ctx: &Ctx<'_>, bridge: &Link, vid: u16) -> Result<Link, SetupError> {
    let name = format!("{}.{vid}", ctx.cfg.bridge);
    if IfName::try_from(name.as_str()).is_err() {
        return Err(SetupError::VlanGatewayName { name });
    }
    let host_label = ctx.host.netns().to_owned();
    if let Some(link) = ctx
        .host
        .link_by_name(&name)
        .map_err(|source| SetupError::Lookup {
            name: name.clone(),
            source,
        })?
    {
        return Ok(link);
    }
    let peer = vlan_gateway_peer_name(ctx.cfg.bridge.as_str(), vid);
    let pair = VethPair {
        mtu: Some(bridge.mtu),
        ..VethPair::new(&name, &peer)
    };
    let link = match ctx.host.add_veth_pair(&pair) {
        Ok(link) => link,
        // A concurrent ADD made it.
        Err(e) if e.is_exists() => return lookup(&ctx.host, &name, &host_label),
        Err(source) => {
            return Err(SetupError::VlanGatewayVeth {
                name,
                peer,
                source: Box::new(source),
            });
        }
    };
    let configured = (|| {
        let port = lookup(&ctx.host, &peer, &host_label)?;
        ctx.host
            .set_master(port.index, bridge.index)
            .map_err(|source| SetupError::Attach {
                veth: peer.clone(),
                bridge: ctx.cfg.bridge.clone(),
                source: Box::new(source),
            })?;
        let vlan_err = |source: BridgeError| SetupError::VlanUnsupported {
            key: ctx.cfg.vlan.key(),
            bridge: ctx.cfg.bridge.clone(),
            source: Box::new(source),
        };
        if !ctx.cfg.vlan.preserve_default {
            let default = BridgeVlan {
                vid: VLAN_DEFAULT,
                pvid: true,
                untagged: true,
            };
            ctx.host
                .bridge_vlan_del(port.index, default, VlanTarget::Master)
                .map_err(vlan_err)?;
        }
        let entry = BridgeVlan {
            vid,
            pvid: true,
            untagged: true,
        };
        ctx.host
            .bridge_vlan_add(port.index, entry, VlanTarget::Master)
            .map_err(vlan_err)?;
        set_up(&ctx.host, &port)?;
        set_up(&ctx.host, &link)
    })();
    if let Err(e) = configured {
        // Half-configured, it would be reused as is by the next ADD: remove it.
        let _ = ctx.host.del_link(link.index);
        return Err(e);
    }
    Ok(link)
}
