//! Finding the host link a configuration names: by name, MAC, sysfs device path or PCI
//! address, in the namespace the plugin runs in (the host's).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use berth_netlink::{Link, LinkError, Netlink, format_mac};

use crate::config::Selector;

/// Where the kernel lists PCI devices.
const SYS_BUS_PCI: &str = "/sys/bus/pci/devices";

/// Drivers that hand a PCI NIC to user space (DPDK): such a device has no kernel link to move.
const USERSPACE_DRIVERS: [&str; 3] = ["vfio-pci", "uio_pci_generic", "igb_uio"];

/// Errors of the `select` module.
#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    #[error("no link named {name} in the host namespace")]
    NoSuchName { name: String },
    #[error("no link with hardware address {mac} in the host namespace")]
    NoSuchMac { mac: String },
    #[error("failed to find network devices at {path:?}")]
    ReadNetDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("none of the network devices at {path:?} is a link of the host namespace")]
    NoLinkAt { path: PathBuf },
    #[error("no net directory under PCI device {id}")]
    NoPciNet { id: String },
    #[error("find the driver of PCI device {id}")]
    PciDriver {
        id: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Link(#[from] LinkError),
}

/// Whether PCI device `id` is bound to a user-space driver. Like the reference, a device that
/// does not exist (or has no driver) is an error here, before anything else happens.
pub fn is_dpdk(id: &str) -> Result<bool, SelectError> {
    let driver =
        fs::canonicalize(Path::new(SYS_BUS_PCI).join(id).join("driver")).map_err(|source| {
            SelectError::PciDriver {
                id: id.to_owned(),
                source,
            }
        })?;
    Ok(driver
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| USERSPACE_DRIVERS.contains(&n)))
}

/// The names in a sysfs `net/` directory, sorted (Go's `ReadDir` order).
fn net_entries(dir: &Path) -> Result<Vec<String>, SelectError> {
    let read = fs::read_dir(dir).map_err(|source| SelectError::ReadNetDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut names: Vec<String> = read
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    Ok(names)
}

/// `<pci>/net`, or `<pci>/virtio*/net` for virtio devices.
fn pci_net_dir(id: &str) -> Result<PathBuf, SelectError> {
    let dev = Path::new(SYS_BUS_PCI).join(id);
    let direct = dev.join("net");
    if fs::symlink_metadata(&direct).is_ok() {
        return Ok(direct);
    }
    let mut virtio: Vec<PathBuf> = fs::read_dir(&dev)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("virtio"))
        .map(|e| e.path().join("net"))
        .filter(|p| p.exists())
        .collect();
    virtio.sort();
    virtio
        .into_iter()
        .next()
        .ok_or_else(|| SelectError::NoPciNet { id: id.to_owned() })
}

/// The host link `selector` names.
pub fn find(host: &Netlink, selector: &Selector) -> Result<Link, SelectError> {
    match selector {
        Selector::Name(name) => {
            host.link_by_name(name.as_str())?
                .ok_or_else(|| SelectError::NoSuchName {
                    name: name.to_string(),
                })
        }
        // The first link in the kernel's order, as the reference.
        Selector::Mac(mac) => host
            .links()?
            .into_iter()
            .find(|l| l.mac.as_ref() == Some(mac))
            .ok_or_else(|| SelectError::NoSuchMac {
                mac: format_mac(mac),
            }),
        Selector::KernelPath(path) => {
            let dir = path.join("net");
            let links = host.links()?;
            net_entries(&dir)?
                .iter()
                .find_map(|n| links.iter().find(|l| &l.name == n).cloned())
                .ok_or(SelectError::NoLinkAt { path: dir })
        }
        Selector::Pci(id) => {
            let dir = pci_net_dir(id)?;
            let first = net_entries(&dir)?
                .into_iter()
                .next()
                .ok_or_else(|| SelectError::NoLinkAt { path: dir.clone() })?;
            host.link_by_name(&first)?
                .ok_or(SelectError::NoSuchName { name: first })
        }
    }
}
