//! The master (parent) link: named by `master`, else the interface of the first default
//! route; looked up in the host's namespace, or in the container's with `linkInContainer`.
//! Its MTU bounds `mtu`.

use berth_cni::IfName;
use berth_netlink::{IpFamily, Link, LinkError, Netlink, RouteError};

use crate::config::Config;

/// Errors of the `master` module. The reference reports all of them with code 999.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    #[error("no default route interface found in {netns}: set master")]
    NoDefaultRoute { netns: String },
    #[error("look for the default route interface")]
    Routes(#[source] RouteError),
    #[error("master {name} not found in {netns}")]
    NotFound { name: String, netns: String },
    #[error("failed to lookup master {name}")]
    Lookup {
        name: String,
        #[source]
        source: LinkError,
    },
    #[error("invalid MTU {mtu}, must be [0, master MTU({master_mtu})] (master {master})")]
    Mtu {
        mtu: i64,
        master: String,
        master_mtu: u32,
    },
}

/// The interface of the first default route in `nl`'s namespace, IPv4 before IPv6 (the order
/// of the reference's dump of both families). Multipath routes have no single interface and
/// are skipped.
fn default_route_interface(nl: &Netlink, place: &str) -> Result<String, MasterError> {
    for family in [IpFamily::V4, IpFamily::V6] {
        let routes = nl.routes(family, None).map_err(MasterError::Routes)?;
        for oif in routes
            .iter()
            .filter(|r| r.dst.prefix() == 0)
            .filter_map(|r| r.oif)
        {
            let link = nl
                .link_by_index(oif)
                .map_err(|source| MasterError::Lookup {
                    name: format!("index {oif}"),
                    source,
                })?;
            if let Some(link) = link {
                return Ok(link.name);
            }
        }
    }
    Err(MasterError::NoDefaultRoute {
        netns: place.to_owned(),
    })
}

/// Where the master is looked for, for messages.
pub const HOST: &str = "the host's namespace";
pub const CONTAINER: &str = "the container's namespace (linkInContainer)";

/// The master link (`master`, else the default route's interface), looked up through `nl`:
/// the host's namespace, or the container's with `linkInContainer` (`place` says which).
pub fn resolve(nl: &Netlink, master: Option<&IfName>, place: &str) -> Result<Link, MasterError> {
    let name = match master {
        Some(name) => name.to_string(),
        None => default_route_interface(nl, place)?,
    };
    nl.link_by_name(&name)
        .map_err(|source| MasterError::Lookup {
            name: name.clone(),
            source,
        })?
        .ok_or_else(|| MasterError::NotFound {
            name,
            netns: place.to_owned(),
        })
}

/// The MTU to create the link with: `None` (the kernel's default, the master's MTU) for `0`;
/// otherwise it must not exceed the master's, as in the reference.
pub fn mtu(config: &Config, master: &Link) -> Result<Option<u32>, MasterError> {
    let out_of_range = || MasterError::Mtu {
        mtu: config.mtu,
        master: master.name.clone(),
        master_mtu: master.mtu,
    };
    match config.mtu {
        0 => Ok(None),
        m if m < 0 || m > i64::from(master.mtu) => Err(out_of_range()),
        m => u32::try_from(m).map(Some).map_err(|_| out_of_range()),
    }
}

/// Where `config` has its master.
pub fn place(config: &Config) -> &'static str {
    if config.link_in_container {
        CONTAINER
    } else {
        HOST
    }
}
