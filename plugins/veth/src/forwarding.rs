//! IP forwarding in the host's namespace: host mode routes every packet of the container
//! through the host, so the host must forward (ptp's `ip.EnableForward`).
//!
//! The sysctls are written from the calling thread, i.e. in the host's namespace
//! (`/proc/sys/net` resolves against the namespace of the thread that opens it). They are not
//! reset on DEL or rollback: they are host-wide and other networks may rely on them.

use berth_netlink::{IpFamily, SysctlError, sysctl};

/// Errors of the `forwarding` module.
#[derive(Debug, thiserror::Error)]
pub enum ForwardingError {
    #[error("enable {family} forwarding in the host's namespace")]
    Enable {
        family: IpFamily,
        #[source]
        source: SysctlError,
    },
}

fn key(family: IpFamily) -> &'static str {
    match family {
        IpFamily::V4 => "net/ipv4/ip_forward",
        IpFamily::V6 => "net/ipv6/conf/all/forwarding",
    }
}

fn is_enabled(family: IpFamily) -> Result<bool, SysctlError> {
    Ok(sysctl::read(key(family))?.trim() == "1")
}

/// Enables forwarding for each family (written only when it is off).
pub fn enable(families: &[IpFamily]) -> Result<(), ForwardingError> {
    for &family in families {
        let set = || -> Result<(), SysctlError> {
            if !is_enabled(family)? {
                sysctl::write(key(family), "1")?;
            }
            Ok(())
        };
        set().map_err(|source| ForwardingError::Enable { family, source })?;
    }
    Ok(())
}

/// The families among `families` whose forwarding is off (or unreadable).
pub fn disabled(families: &[IpFamily]) -> Vec<String> {
    families
        .iter()
        .filter_map(|&family| match is_enabled(family) {
            Ok(true) => None,
            Ok(false) => Some(format!(
                "{family} forwarding is off in the host's namespace ({})",
                key(family)
            )),
            Err(e) => Some(format!(
                "cannot read {}: {}",
                key(family),
                berth_netlink::error_chain(&e)
            )),
        })
        .collect()
}

/// The families of a set of addresses, each once, IPv4 first.
pub fn families_of(ips: impl IntoIterator<Item = std::net::IpAddr>) -> Vec<IpFamily> {
    let ips: Vec<_> = ips.into_iter().collect();
    [IpFamily::V4, IpFamily::V6]
        .into_iter()
        .filter(|f| ips.iter().any(|ip| IpFamily::of(*ip) == *f))
        .collect()
}
