//! The interfaces of the ADD result, and finding them again in CHECK's `prevResult`.

use std::path::Path;

use berth_cni::{CniResult, Interface};
use berth_netlink::{Link, format_mac};

use crate::check::Problems;

/// A result interface for `link`; `sandbox` for an end inside a container's namespace.
pub fn interface(link: &Link, sandbox: Option<&Path>) -> Interface {
    Interface {
        name: link.name.clone(),
        mac: link.mac.as_ref().map(format_mac),
        mtu: Some(link.mtu),
        sandbox: sandbox.map(|p| p.display().to_string()),
        ..Interface::default()
    }
}

/// The interface `name` of `prev` with the given sandbox (none for a host end), and its index
/// (what `ips[].interface` refers to). Records a problem when it is not there.
pub fn find<'r>(
    prev: &'r CniResult,
    name: &str,
    sandbox: Option<&Path>,
    problems: &mut Problems,
) -> (Option<usize>, Option<&'r Interface>) {
    let sandbox = sandbox.map(|p| p.display().to_string());
    match prev.interfaces.iter().enumerate().find(|(_, i)| {
        i.name == name && i.sandbox.as_deref().filter(|s| !s.is_empty()) == sandbox.as_deref()
    }) {
        Some((index, iface)) => (Some(index), Some(iface)),
        None => {
            let place = sandbox.map_or_else(|| "the host".to_owned(), |s| format!("sandbox {s}"));
            problems.push(format!("prevResult has no interface {name} in {place}"));
            (None, None)
        }
    }
}
