//! The lab's links, through `berth-netlink` only (no `ip` is run).
//!
//! A link is one veth pair created by one request inside the namespace of its first end,
//! its peer created directly inside the namespace of the second (`IFLA_NET_NS_FD` on the
//! peer), both under their final names and MTU. Nothing ever appears in the lab's host
//! namespace under a temporary name, so a deploy killed between two requests leaves no
//! stray link there: an end inside a node dies with the node's namespace, and the only
//! host-side links (bridge ports, `host:IF` ends) are listed in the lab's plan before they
//! are made.

use std::collections::HashMap;

use berth_netlink::{
    BridgeError, BridgeSpec, Errno, LinkError, Mac, Netlink, Netns, NetnsError, OpenError, VethPair,
};

/// Errors of the `wire` module.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("open a netlink socket in {netns}")]
    Open {
        netns: String,
        #[source]
        source: Box<OpenError>,
    },
    #[error("open network namespace {path}")]
    Netns {
        path: String,
        #[source]
        source: Box<NetnsError>,
    },
    #[error("create veth {a} <-> {b}")]
    Veth {
        a: String,
        b: String,
        #[source]
        source: Box<LinkError>,
    },
    #[error("interface {name} in {netns}")]
    Link {
        name: String,
        netns: String,
        #[source]
        source: Box<LinkError>,
    },
    #[error("interface {name} is missing in {netns}")]
    Missing { name: String, netns: String },
    #[error("bridge {name}")]
    Bridge {
        name: String,
        #[source]
        source: Box<BridgeError>,
    },
}

/// One end of a link.
#[derive(Debug, Clone, Copy)]
pub struct End<'a> {
    pub netns: &'a Netns,
    /// The namespace's name in messages (`clab-tri-r1`, `host`).
    pub label: &'a str,
    pub ifname: &'a str,
    pub mac: Option<Mac>,
    /// The bridge this end is a port of (in the same namespace).
    pub master: Option<&'a str>,
}

/// Netlink sockets, one per namespace, opened on first use.
#[derive(Default)]
pub struct Sockets {
    open: HashMap<(u64, String), Netlink>,
}

impl Sockets {
    /// The socket of `end`'s namespace.
    pub fn of(&mut self, netns: &Netns, label: &str) -> Result<&Netlink, WireError> {
        let key = (netns.inode(), label.to_owned());
        if !self.open.contains_key(&key) {
            let netlink = Netlink::open_in(netns).map_err(|source| WireError::Open {
                netns: label.to_owned(),
                source: Box::new(source),
            })?;
            self.open.insert(key.clone(), netlink);
        }
        self.open.get(&key).ok_or_else(|| WireError::Missing {
            name: "netlink socket".into(),
            netns: label.to_owned(),
        })
    }
}

/// Creates the veth pair `a` <-> `b` with `mtu`, enslaves the ends that have a bridge,
/// and sets both up.
pub fn connect(sockets: &mut Sockets, a: &End<'_>, b: &End<'_>, mtu: u32) -> Result<(), WireError> {
    let pair = VethPair {
        name: a.ifname,
        peer_name: b.ifname,
        peer_netns: (a.netns != b.netns).then_some(b.netns),
        mtu: Some(mtu),
        mac: a.mac,
        peer_mac: b.mac,
    };
    sockets
        .of(a.netns, a.label)?
        .add_veth_pair(&pair)
        .map_err(|source| WireError::Veth {
            a: format!("{}:{}", a.label, a.ifname),
            b: format!("{}:{}", b.label, b.ifname),
            source: Box::new(source),
        })?;
    for end in [a, b] {
        let netlink = sockets.of(end.netns, end.label)?;
        let index = index_of(netlink, end)?;
        if let Some(master) = end.master {
            let bridge = index_of(
                netlink,
                &End {
                    ifname: master,
                    ..*end
                },
            )?;
            netlink
                .set_master(index, bridge)
                .map_err(|source| link_err(end, source))?;
        }
        netlink
            .set_up(index)
            .map_err(|source| link_err(end, source))?;
    }
    Ok(())
}

/// Sets `end` up or down (`berth lab link … up|down`).
pub fn set_state(sockets: &mut Sockets, end: &End<'_>, up: bool) -> Result<(), WireError> {
    let netlink = sockets.of(end.netns, end.label)?;
    let index = index_of(netlink, end)?;
    if up {
        netlink.set_up(index)
    } else {
        netlink.set_down(index)
    }
    .map_err(|source| link_err(end, source))
}

/// Creates bridge `name` in `host` (up) unless it exists; `Ok(true)` if this call made it.
pub fn ensure_bridge(host: &Netlink, name: &str) -> Result<bool, WireError> {
    let bridge_err = |source| WireError::Bridge {
        name: name.to_owned(),
        source: Box::new(source),
    };
    let created = match host.add_bridge(&BridgeSpec::new(name)) {
        Ok(_) => true,
        Err(e) if e.is_exists() => {
            host.ensure_bridge(&BridgeSpec::new(name))
                .map_err(bridge_err)?;
            false
        }
        Err(e) => return Err(bridge_err(e)),
    };
    let link = host
        .link_by_name(name)
        .map_err(|source| WireError::Link {
            name: name.to_owned(),
            netns: "host".into(),
            source: Box::new(source),
        })?
        .ok_or_else(|| WireError::Missing {
            name: name.to_owned(),
            netns: "host".into(),
        })?;
    host.set_up(link.index).map_err(|source| WireError::Link {
        name: name.to_owned(),
        netns: "host".into(),
        source: Box::new(source),
    })?;
    Ok(created)
}

/// Deletes link `name` of `netlink`'s namespace (`label` in errors) if it exists (a veth's
/// peer goes with it).
pub fn delete(netlink: &Netlink, label: &str, name: &str) -> Result<(), WireError> {
    netlink
        .del_link_by_name_if_exists(name)
        .map(drop)
        .map_err(|source| WireError::Link {
            name: name.to_owned(),
            netns: label.to_owned(),
            source: Box::new(source),
        })
}

/// Whether link `name` exists in `netlink`'s namespace.
pub fn exists(netlink: &Netlink, name: &str) -> Result<bool, WireError> {
    netlink
        .link_by_name(name)
        .map(|l| l.is_some())
        .map_err(|source| WireError::Link {
            name: name.to_owned(),
            netns: netlink.netns().to_owned(),
            source: Box::new(source),
        })
}

fn index_of(netlink: &Netlink, end: &End<'_>) -> Result<u32, WireError> {
    netlink
        .link_by_name(end.ifname)
        .map_err(|source| link_err(end, source))?
        .map(|l| l.index)
        .ok_or_else(|| WireError::Missing {
            name: end.ifname.to_owned(),
            netns: end.label.to_owned(),
        })
}

fn link_err(end: &End<'_>, source: LinkError) -> WireError {
    WireError::Link {
        name: end.ifname.to_owned(),
        netns: end.label.to_owned(),
        source: Box::new(source),
    }
}

/// Opens the namespace file at `path`.
pub fn open_netns(path: &std::path::Path) -> Result<Netns, WireError> {
    Netns::open(path).map_err(|source| WireError::Netns {
        path: path.display().to_string(),
        source: Box::new(source),
    })
}
