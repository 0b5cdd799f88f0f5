//! Networking through CNI: the network definitions under `<root>/networks`, the embedded
//! default network, and attaching containers with `berth_cni::invoke` (libcni semantics:
//! plugins in order for ADD, reverse for DEL, results cached for DEL/CHECK/GC).
//!
//! - [`definition`]: `network create` flags → conflist, and conflist → [`definition::NetworkSummary`];
//! - [`ports`]: `-p` parsing and conflicts;
//! - [`hosts`]: `/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf` of a container;
//! - [`reload`]: the firewall rules of running containers put back after a flush.
//!
//! **Where plugins come from.** `--cni-plugin-dir` (repeatable), else `BERTH_CNI_PATH`
//! (colon-separated), else the directory of the running `berth` (plugins are built and
//! installed next to it) and then `/usr/libexec/berth/cni`. The reference plugins in
//! `/usr/lib/cni` are used only when named explicitly: mixing the two silently would make
//! behaviour depend on what else is installed.
//!
//! **Isolation of state.** Every conflist Berth writes puts host-local's `dataDir` under
//! `<root>/cni/networks`, and the result cache is `<root>/cni/cache`: two roots never share
//! IPAM state or cached results.

pub mod attachments;
mod cni;
pub mod definition;
pub mod hosts;
pub mod ports;
pub mod reload;

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use berth_cni::gojson;
use berth_cni::invoke::{self, CniConfig, InvokeError};
use berth_cni::{IfName, NetConfList, NetworkName};
use ipnetwork::{IpNetwork, Ipv4Network};
use serde_json::{Map, Value};

use crate::names::ContainerId;
use crate::state::{StateError, Store};

use definition::{DefinitionError, NetworkSpec, NetworkSummary};

/// The network containers join when `--network` is not given.
pub const DEFAULT_NETWORK: &str = "berth";
/// Its bridge (override: `BERTH_DEFAULT_BRIDGE`).
pub const DEFAULT_BRIDGE: &str = "berth0";
/// Its subnet (override: `BERTH_DEFAULT_SUBNET`): neither docker's 172.17.0.0/16 nor
/// podman's 10.88.0.0/16.
pub const DEFAULT_SUBNET: &str = "10.210.0.0/16";
/// Installed plugins, after the directory of `berth` itself.
pub const LIBEXEC_PLUGIN_DIR: &str = "/usr/libexec/berth/cni";

/// Errors of the `network` module.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error(transparent)]
    Definition(#[from] DefinitionError),
    #[error("network {name} not found (berth network ls lists them)")]
    NotFound { name: String },
    #[error("network {name} already exists")]
    Exists { name: String },
    #[error("subnet {subnet} overlaps {other} of network {network}")]
    Overlap {
        subnet: IpNetwork,
        other: IpNetwork,
        network: String,
    },
    #[error("the {plugin} plugin is not installed: {purpose} needs it (looked in {path})")]
    MissingPlugin {
        plugin: &'static str,
        purpose: &'static str,
        path: String,
    },
    #[error(
        "network {network} has no plugin with the {capability} capability, so {flag} cannot be honoured{hint}"
    )]
    MissingCapability {
        network: String,
        capability: &'static str,
        flag: &'static str,
        hint: String,
    },
    #[error("--ip {ip} is not inside a subnet of network {network} ({subnets})")]
    IpOutside {
        ip: std::net::IpAddr,
        network: String,
        subnets: String,
    },
    #[error("invalid {what} {value:?} for CNI")]
    CniName { what: &'static str, value: String },
    #[error("invalid BERTH_DEFAULT_SUBNET {input:?}: expected an IPv4 CIDR such as 10.210.0.0/16")]
    DefaultSubnet { input: String },
    #[error("write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("remove {path}")]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("network {name} is in use by container(s) {containers}")]
    InUse { name: String, containers: String },
    #[error("the default network {name} cannot be removed")]
    RemoveDefault { name: String },
    #[error("delete bridge {bridge}")]
    DeleteBridge {
        bridge: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("attach to network {network} as {ifname}")]
    Add {
        network: String,
        ifname: String,
        #[source]
        source: Box<InvokeError>,
    },
    #[error("attach to network {network} as {ifname}: {add}; and undoing it failed too: {del}")]
    AddAndDel {
        network: String,
        ifname: String,
        add: String,
        del: String,
    },
    #[error("detach from network {network} ({ifname})")]
    Del {
        network: String,
        ifname: String,
        #[source]
        source: Box<InvokeError>,
    },
    #[error("garbage-collect network {network}")]
    Gc {
        network: String,
        #[source]
        source: Box<InvokeError>,
    },
    #[error(transparent)]
    Invoke(Box<InvokeError>),
    #[error(transparent)]
    State(#[from] StateError),
}

impl From<InvokeError> for NetworkError {
    fn from(e: InvokeError) -> NetworkError {
        NetworkError::Invoke(Box::new(e))
    }
}

/// The default network's bridge and subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultNetwork {
    pub bridge: String,
    pub subnet: Ipv4Network,
}

impl DefaultNetwork {
    /// The built-in defaults, with `BERTH_DEFAULT_BRIDGE` / `BERTH_DEFAULT_SUBNET` applied.
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<DefaultNetwork, NetworkError> {
        let bridge = env("BERTH_DEFAULT_BRIDGE")
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| DEFAULT_BRIDGE.to_owned());
        if IfName::try_from(bridge.as_str()).is_err() {
            return Err(DefinitionError::Bridge { input: bridge }.into());
        }
        let input = env("BERTH_DEFAULT_SUBNET")
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| DEFAULT_SUBNET.to_owned());
        let subnet: Ipv4Network = input
            .parse()
            .ok()
            .filter(|n: &Ipv4Network| n.ip() == n.network() && n.prefix() <= 30)
            .ok_or(NetworkError::DefaultSubnet { input })?;
        Ok(DefaultNetwork { bridge, subnet })
    }
}

/// The plugin search path (see the module doc): `flags`, else `env` (`BERTH_CNI_PATH`),
/// else the directory of `exe` and [`LIBEXEC_PLUGIN_DIR`].
pub fn plugin_path(flags: &[PathBuf], env: Option<&OsStr>, exe: Option<&Path>) -> Vec<PathBuf> {
    if !flags.is_empty() {
        return flags.to_vec();
    }
    if let Some(env) = env.filter(|e| !e.is_empty()) {
        return std::env::split_paths(env)
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
    }
    exe.and_then(Path::parent)
        .map(Path::to_path_buf)
        .into_iter()
        .chain([PathBuf::from(LIBEXEC_PLUGIN_DIR)])
        .collect()
}

/// A network definition as loaded for use.
#[derive(Debug, Clone)]
pub struct Network {
    pub list: NetConfList,
    pub summary: NetworkSummary,
}

impl Network {
    /// The definition for a second (third, …) attachment: without default routes (the
    /// `0.0.0.0/0` and `::/0` entries of every `ipam.routes`, and `isDefaultGateway`), since
    /// a container has one default route per family, the first network's (as with docker).
    /// Two lists adding one each would fail with EEXIST.
    pub fn without_default_routes(&self) -> Result<Network, NetworkError> {
        let mut doc: Value = serde_json::from_slice(&self.list.bytes).map_err(|e| {
            NetworkError::from(InvokeError::Load {
                path: self.summary.file.clone(),
                source: e.into(),
            })
        })?;
        let plugins = doc
            .get_mut("plugins")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
            .filter_map(Value::as_object_mut);
        // Plugins read these keys with Go's rule, so change whichever casing they will read.
        for plugin in plugins {
            if let Some(flag) = gojson::get_mut(plugin, "isDefaultGateway") {
                *flag = false.into();
            }
            let routes = gojson::get_mut(plugin, "ipam")
                .and_then(Value::as_object_mut)
                .and_then(|ipam| gojson::get_mut(ipam, "routes"))
                .and_then(Value::as_array_mut);
            if let Some(routes) = routes {
                routes.retain(|r| {
                    let dst = r.as_object().and_then(|r| gojson::get(r, "dst"));
                    !matches!(dst.and_then(Value::as_str), Some("0.0.0.0/0" | "::/0"))
                });
            }
        }
        let bytes = serde_json::to_vec(&doc).map_err(|e| {
            NetworkError::from(InvokeError::Load {
                path: self.summary.file.clone(),
                source: e.into(),
            })
        })?;
        let list = NetConfList::from_bytes(&bytes).map_err(|source| {
            NetworkError::from(InvokeError::Load {
                path: self.summary.file.clone(),
                source,
            })
        })?;
        Ok(Network {
            list,
            summary: self.summary.clone(),
        })
    }
}

/// The networks of one state root.
#[derive(Debug, Clone)]
pub struct Networks {
    config_dir: PathBuf,
    ipam_dir: PathBuf,
    cni: CniConfig,
    defaults: DefaultNetwork,
}

/// One attachment to make or undo.
#[derive(Debug, Clone)]
pub struct AttachRequest<'a> {
    pub id: &'a ContainerId,
    pub netns: &'a Path,
    pub ifname: &'a str,
    /// `portMappings`, `mac`, `ips`: only what the first network gets.
    pub capability_args: Map<String, Value>,
}

impl Networks {
    pub fn new(store: &Store, plugin_path: Vec<PathBuf>, defaults: DefaultNetwork) -> Networks {
        Networks {
            config_dir: store.root().join("networks"),
            ipam_dir: store.root().join("cni").join("networks"),
            cni: CniConfig::new(plugin_path, store.root().join("cni").join("cache")),
            defaults,
        }
    }

    pub fn plugin_path(&self) -> &[PathBuf] {
        &self.cni.path
    }

    pub fn config_dir(&self) -> &Path {
        &self.config_dir
    }

    /// The first directory of the search path holding an executable `name`.
    pub fn find_plugin(&self, name: &str) -> Option<PathBuf> {
        self.cni.path.iter().map(|d| d.join(name)).find(|p| {
            fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    }

    fn path_text(&self) -> String {
        self.cni
            .path
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    }

    fn conflist_path(&self, name: &str) -> PathBuf {
        self.config_dir.join(format!("{name}.conflist"))
    }

    /// Writes the default network's conflist if it is missing, or rewrites it once the
    /// `portmap` plugin appeared next to berth after it was generated (only adding portmap:
    /// its DEL is harmless for attachments made without it). Under the store lock.
    pub fn ensure_default(&self, store: &Store) -> Result<(), NetworkError> {
        let path = self.conflist_path(DEFAULT_NETWORK);
        let portmap = self.find_plugin("portmap").is_some();
        let needs_write = |path: &Path| match invoke::load_conf_file(path) {
            Ok(list) => {
                portmap
                    && !NetworkSummary::of(&list, path.into())
                        .plugins
                        .iter()
                        .any(|p| p == "portmap")
            }
            Err(_) => !path.exists(),
        };
        if !needs_write(&path) {
            return Ok(());
        }
        let _lock = store.lock()?;
        if !needs_write(&path) {
            return Ok(());
        }
        let name = NetworkName::try_from(DEFAULT_NETWORK).map_err(|_| NetworkError::CniName {
            what: "network name",
            value: DEFAULT_NETWORK.into(),
        })?;
        let spec =
            NetworkSpec::default_network(name, self.defaults.bridge.clone(), self.defaults.subnet);
        self.write_conflist(&path, &spec.conflist(&self.ipam_dir, portmap))
    }

    fn write_conflist(&self, path: &Path, conflist: &Value) -> Result<(), NetworkError> {
        let err = |source| NetworkError::Write {
            path: path.to_path_buf(),
            source,
        };
        fs::create_dir_all(&self.config_dir).map_err(err)?;
        let mut bytes =
            serde_json::to_vec_pretty(conflist).map_err(|e| err(io::Error::other(e)))?;
        bytes.push(b'\n');
        // Whoever writes a network definition sweeps what a killed writer left beside it.
        if let Err(e) = berth_fs::sweep_temporaries(&self.config_dir) {
            eprintln!("berth: sweep {}: {e}", self.config_dir.display());
        }
        let opts = berth_fs::WriteOptions {
            mode: 0o644,
            durable: true,
        };
        berth_fs::write_atomic(path, &bytes, opts).map_err(err)
    }

    /// Loads a network by name (generating the default one on first use).
    pub fn load(&self, store: &Store, name: &str) -> Result<Network, NetworkError> {
        if name == DEFAULT_NETWORK {
            self.ensure_default(store)?;
        }
        let path = self.conflist_path(name);
        if let Ok(list) = invoke::load_conf_file(&path) {
            if list.name.as_str() == name {
                let summary = NetworkSummary::of(&list, path);
                return Ok(Network { list, summary });
            }
        }
        // A hand-written file under another file name.
        match self
            .list_all(store)?
            .into_iter()
            .find(|n| n.list.name.as_str() == name)
        {
            Some(n) => Ok(n),
            None => Err(NetworkError::NotFound {
                name: name.to_owned(),
            }),
        }
    }

    /// Every network (the default one included), sorted by file name.
    pub fn list_all(&self, store: &Store) -> Result<Vec<Network>, NetworkError> {
        self.ensure_default(store)?;
        Ok(invoke::load_conf_lists(&self.config_dir)?
            .into_iter()
            .map(|(path, list)| Network {
                summary: NetworkSummary::of(&list, path),
                list,
            })
            .collect())
    }

    /// `berth network create`: validates against the existing networks (name, overlapping
    /// subnets, plugins), picks missing subnets, writes the conflist. Under the store lock.
    pub fn create(&self, store: &Store, mut spec: NetworkSpec) -> Result<Network, NetworkError> {
        if spec.isolate && self.find_plugin("firewall").is_none() {
            return Err(NetworkError::MissingPlugin {
                plugin: "firewall",
                purpose: "--isolate",
                path: self.path_text(),
            });
        }
        let main = match spec.driver {
            definition::Driver::Bridge => "bridge",
            definition::Driver::Veth => "veth",
        };
        for plugin in [main, "host-local", "loopback"] {
            if self.find_plugin(plugin).is_none() {
                return Err(NetworkError::MissingPlugin {
                    plugin,
                    purpose: "network create",
                    path: self.path_text(),
                });
            }
        }
        let existing = self.list_all(store)?;
        let _lock = store.lock()?;
        let path = self.conflist_path(spec.name.as_str());
        if path.exists() || existing.iter().any(|n| n.list.name == spec.name) {
            return Err(NetworkError::Exists {
                name: spec.name.to_string(),
            });
        }
        let taken: Vec<(IpNetwork, &str)> = existing
            .iter()
            .flat_map(|n| {
                n.summary
                    .subnets
                    .iter()
                    .map(move |s| (*s, n.summary.name.as_str()))
            })
            .collect();
        for subnet in spec.subnets() {
            if let Some((other, network)) =
                taken.iter().find(|(t, _)| definition::overlaps(t, &subnet))
            {
                return Err(NetworkError::Overlap {
                    subnet,
                    other: *other,
                    network: (*network).to_owned(),
                });
            }
        }
        let taken_nets: Vec<IpNetwork> = taken.iter().map(|(t, _)| *t).collect();
        spec.fill_subnets(&taken_nets)?;
        let portmap = self.find_plugin("portmap").is_some();
        self.write_conflist(&path, &spec.conflist(&self.ipam_dir, portmap))?;
        let list = invoke::load_conf_file(&path)?;
        Ok(Network {
            summary: NetworkSummary::of(&list, path),
            list,
        })
    }

    /// `berth network rm`: refuses the default network and networks any container record
    /// names; runs CNI GC with an empty valid list, removes the conflist, the network's IPAM
    /// directory, and its bridge if no port is left on it. Under the store lock.
    pub fn remove(&self, store: &Store, name: &str) -> Result<(), NetworkError> {
        if name == DEFAULT_NETWORK {
            return Err(NetworkError::RemoveDefault {
                name: name.to_owned(),
            });
        }
        let network = self.load(store, name)?;
        let _lock = store.lock()?;
        let users: Vec<String> = store
            .records()?
            .into_iter()
            .filter(|r| {
                r.config
                    .network
                    .networks()
                    .iter()
                    .any(|n| n.as_str() == name)
                    || r.state.attachments.iter().any(|a| a.network == name)
            })
            .map(|r| r.name.to_string())
            .collect();
        if !users.is_empty() {
            return Err(NetworkError::InUse {
                name: name.to_owned(),
                containers: users.join(", "),
            });
        }
        // GC with no valid attachment: what the plugins keep per network (the firewall
        // plugin's isolation rules, stale reservations or rules of crashed containers) goes.
        // A failure is reported, after the rest was removed (a broken plugin must not make
        // the network impossible to remove).
        let gc = self
            .cni
            .gc_network_list(&network.list, &[])
            .map_err(|source| NetworkError::Gc {
                network: name.to_owned(),
                source: Box::new(source),
            });
        let file = network.summary.file.clone();
        fs::remove_file(&file).map_err(|source| NetworkError::Remove { path: file, source })?;
        let ipam = self.ipam_dir.join(name);
        match fs::remove_dir_all(&ipam) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(NetworkError::Remove { path: ipam, source }),
        }
        if network.summary.driver == "bridge" {
            if let Some(bridge) = &network.summary.bridge {
                delete_idle_bridge(bridge)?;
            }
        }
        gc
    }

    /// Checks, before anything is created, that `networks` can honour the flags: the first
    /// one must declare `portMappings` for `-p` (and the portmap plugin must be installed),
    /// `mac` for `--mac-address`, `ips` for `--ip` (inside one of its subnets).
    pub fn check_capabilities(
        &self,
        networks: &[Network],
        ports: bool,
        mac: bool,
        ip: Option<std::net::IpAddr>,
    ) -> Result<(), NetworkError> {
        let Some(first) = networks.first() else {
            return Ok(());
        };
        let summary = &first.summary;
        if ports {
            let names_portmap = summary.plugins.iter().any(|p| p == "portmap");
            let capable = summary.has_capability("portMappings");
            if (names_portmap || !capable) && self.find_plugin("portmap").is_none() {
                return Err(NetworkError::MissingPlugin {
                    plugin: "portmap",
                    purpose: "publishing ports (-p)",
                    path: self.path_text(),
                });
            }
            if !capable {
                return Err(NetworkError::MissingCapability {
                    network: summary.name.clone(),
                    capability: "portMappings",
                    flag: "-p",
                    hint: " (it was created before the portmap plugin was installed: recreate it)"
                        .into(),
                });
            }
        }
        if mac && !summary.has_capability("mac") {
            return Err(NetworkError::MissingCapability {
                network: summary.name.clone(),
                capability: "mac",
                flag: "--mac-address",
                hint: String::new(),
            });
        }
        if let Some(ip) = ip {
            if !summary.has_capability("ips") {
                return Err(NetworkError::MissingCapability {
                    network: summary.name.clone(),
                    capability: "ips",
                    flag: "--ip",
                    hint: String::new(),
                });
            }
            if !summary.subnets.iter().any(|s| s.contains(ip)) {
                return Err(NetworkError::IpOutside {
                    ip,
                    network: summary.name.clone(),
                    subnets: summary
                        .subnets
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        }
        Ok(())
    }
}

/// Deletes `bridge` in the calling thread's network namespace if it exists, is a bridge, and
/// no link is attached to it any more (another runtime's or user's bridge with ports stays).
fn delete_idle_bridge(bridge: &str) -> Result<(), NetworkError> {
    let err = |source: Box<dyn std::error::Error + Send + Sync>| NetworkError::DeleteBridge {
        bridge: bridge.to_owned(),
        source,
    };
    let netlink = berth_netlink::Netlink::open_current().map_err(|e| err(Box::new(e)))?;
    let links = netlink.links().map_err(|e| err(Box::new(e)))?;
    let Some(link) = links.iter().find(|l| l.name == bridge) else {
        return Ok(());
    };
    if link.kind.as_deref() != Some("bridge") || links.iter().any(|l| l.master == Some(link.index))
    {
        return Ok(());
    }
    netlink.del_link(link.index).map_err(|e| err(Box::new(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_path_precedence() {
        let exe = Path::new("/opt/berth/bin/berth");
        assert_eq!(
            plugin_path(&[], None, Some(exe)),
            [
                PathBuf::from("/opt/berth/bin"),
                PathBuf::from(LIBEXEC_PLUGIN_DIR)
            ]
        );
        assert_eq!(
            plugin_path(&[], Some(OsStr::new("/a:/b")), Some(exe)),
            [PathBuf::from("/a"), PathBuf::from("/b")]
        );
        assert_eq!(
            plugin_path(&[PathBuf::from("/c")], Some(OsStr::new("/a")), Some(exe)),
            [PathBuf::from("/c")]
        );
    }

    #[test]
    fn default_network_overrides() {
        let none = |_: &str| None;
        let d = DefaultNetwork::from_env(none).unwrap();
        assert_eq!(
            (d.bridge.as_str(), d.subnet.to_string().as_str()),
            (DEFAULT_BRIDGE, DEFAULT_SUBNET)
        );
        let env = |k: &str| match k {
            "BERTH_DEFAULT_BRIDGE" => Some("bt0".to_owned()),
            "BERTH_DEFAULT_SUBNET" => Some("198.18.4.0/24".to_owned()),
            _ => None,
        };
        assert_eq!(
            DefaultNetwork::from_env(env).unwrap().subnet.to_string(),
            "198.18.4.0/24"
        );
        let bad = |k: &str| (k == "BERTH_DEFAULT_SUBNET").then(|| "10.0.0.1/8".to_owned());
        assert!(DefaultNetwork::from_env(bad).is_err());
    }
}
