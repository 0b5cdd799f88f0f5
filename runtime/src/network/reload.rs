//! `berth network reload [NAME...]`: puts the firewall rules of every running container's
//! attachments back after someone flushed the firewall (`iptables -t nat -F`, `nft flush
//! ruleset`, a firewalld reload), like `podman network reload`.
//!
//! The rules are re-derived from what the CNI result cache holds for each attachment (the
//! configuration list ADD ran, its capability arguments, its result), exactly as the plugins
//! derive them at ADD, and handed to [`berth_firewall::Firewall::reconcile`], which lists the
//! tables once and writes back only what is missing or wrong (shared chains included). No
//! plugin is run: a DEL + ADD would hand out other addresses, and CHECK only reports. Nothing
//! else changes: links, addresses and routes survive a firewall flush.
//!
//! The plugins whose rules are re-derived, with the keys they read (the same defaults):
//! - `bridge`: `ipMasq` (with `ipam`), `ipMasqBackend`: masquerade of the result's addresses;
//! - `veth` (host mode, no `peer`): `ipMasq`, `ipMasqBackend`: the same;
//! - `portmap`: the `portMappings` capability argument, `snat`, `masqAll`, `markMasqBit`,
//!   `externalSetMarkChain`, `conditionsV4`/`conditionsV6`, `backend`: published ports to the
//!   result's addresses on the attachment's interface;
//! - `firewall`: `ingressPolicy: same-bridge` or `isolation: strict`, `backend`: isolation of
//!   the bridge (the result's first interface).
//!
//! Each of these plugins passes its `prevResult` through (or, for `bridge`/`veth`, makes it),
//! so the cached final result is what each of them saw. Other plugin types own no rules.

use std::net::IpAddr;

use berth_cni::invoke::CachedAttachment;
use berth_cni::{CniResult, NetConfList, gojson};
use berth_firewall::{
    BackendKind, DEFAULT_ADMIN_CHAIN, DEFAULT_MARK_BIT, Desired, Firewall, FirewallError,
    ForwardAccept, Isolation, MarkSpec, Masquerade, Owner, PortMap, PortMapping,
    conditions_look_like_iptables,
};
use ipnetwork::IpNetwork;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::names::ContainerName;
use crate::state::{StateError, Status, Store};

use super::{NetworkError, Networks};

/// Errors of the `reload` module.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(
        "container {container} has no cached CNI result for {ifname} on network {network}: its rules cannot be re-derived"
    )]
    NotCached {
        container: ContainerName,
        network: String,
        ifname: String,
    },
    #[error("cached {what} of container {container} ({ifname} on network {network})")]
    Cache {
        container: ContainerName,
        network: String,
        ifname: String,
        what: &'static str,
        #[source]
        source: Box<berth_cni::CniError>,
    },
    #[error("plugin {plugin} of network {network}: invalid {key} {value}")]
    Key {
        network: String,
        plugin: &'static str,
        key: &'static str,
        value: String,
    },
    #[error("no usable {} firewall backend", backend_name(*.backend))]
    Detect {
        backend: Option<BackendKind>,
        #[source]
        source: Box<FirewallError>,
    },
    #[error("re-apply the {} firewall rules", backend_name(*.backend))]
    Reconcile {
        backend: Option<BackendKind>,
        #[source]
        source: Box<FirewallError>,
    },
}

fn backend_name(backend: Option<BackendKind>) -> String {
    backend.map_or_else(|| "default".to_owned(), |b| b.to_string())
}

/// What a reload did.
#[derive(Debug, Default)]
pub struct Reloaded {
    /// The running containers whose attachments were reconciled, in record order.
    pub containers: Vec<ContainerName>,
    /// Owners whose rules had to be put back (`network/container/ifname`, or a network's
    /// isolation).
    pub repaired: Vec<String>,
    /// Shared chains, maps or rules were missing.
    pub skeleton_repaired: bool,
    /// Attachments or backends that could not be reconciled (the others were).
    pub errors: Vec<ReloadError>,
}

/// The rules one backend should hold.
type Batch = (Option<BackendKind>, Vec<Desired>);

/// Reconciles the firewall with the attachments of every running container, on `names`
/// only when given (each must exist). Keeps going past an attachment it cannot read;
/// returns what it did and every failure.
pub fn reload(
    store: &Store,
    networks: &Networks,
    names: &[String],
) -> Result<Reloaded, ReloadError> {
    for name in names {
        networks.load(store, name)?;
    }
    let wanted = |network: &str| names.is_empty() || names.iter().any(|n| n == network);
    let mut done = Reloaded::default();
    let mut batches: Vec<Batch> = Vec::new();
    for record in store.records()? {
        // A container being started gets its rules from its own ADD.
        if record.live_status() != Status::Running {
            continue;
        }
        let mut any = false;
        for a in record
            .state
            .attachments
            .iter()
            .filter(|a| wanted(&a.network))
        {
            let rules = networks
                .cached_attachment(&a.network, &record.id, &a.ifname)?
                .ok_or_else(|| ReloadError::NotCached {
                    container: record.name.clone(),
                    network: a.network.clone(),
                    ifname: a.ifname.clone(),
                })
                .and_then(|cached| desired(&record.name, &cached));
            match rules {
                Ok(rules) => {
                    any = true;
                    for (backend, rule) in rules {
                        add_rule(&mut batches, backend, rule);
                    }
                }
                Err(e) => done.errors.push(e),
            }
        }
        if any {
            done.containers.push(record.name.clone());
        }
    }
    for (backend, desired) in &batches {
        let report = Firewall::detect(*backend)
            .map_err(|source| ReloadError::Detect {
                backend: *backend,
                source: Box::new(source),
            })
            .and_then(|fw| {
                fw.reconcile(desired)
                    .map_err(|source| ReloadError::Reconcile {
                        backend: *backend,
                        source: Box::new(source),
                    })
            });
        match report {
            Ok(report) => {
                done.skeleton_repaired |= report.skeleton_repaired;
                done.repaired.extend(report.repaired);
            }
            Err(e) => done.errors.push(e),
        }
    }
    Ok(done)
}

/// Adds `rule` to its backend's batch; a network's isolation is added once.
fn add_rule(batches: &mut Vec<Batch>, backend: Option<BackendKind>, rule: Desired) {
    let index = match batches.iter().position(|(b, _)| *b == backend) {
        Some(i) => i,
        None => {
            batches.push((backend, Vec::new()));
            batches.len() - 1
        }
    };
    let rules = &mut batches[index].1;
    if !rules.contains(&rule) {
        rules.push(rule);
    }
}

/// The rules one cached attachment implies, each with the backend its plugin asks for.
pub fn desired(
    container: &ContainerName,
    cached: &CachedAttachment,
) -> Result<Vec<(Option<BackendKind>, Desired)>, ReloadError> {
    let network = cached.network_name.to_string();
    let ifname = cached.if_name.to_string();
    let cache_err = |what, source| ReloadError::Cache {
        container: container.clone(),
        network: network.clone(),
        ifname: ifname.clone(),
        what,
        source: Box::new(source),
    };
    let list =
        NetConfList::from_bytes(&cached.config).map_err(|e| cache_err("configuration list", e))?;
    let result = match &cached.result {
        Some(value) => CniResult::from_value(value).map_err(|e| cache_err("result", e))?,
        None => CniResult::default(),
    };
    let owner = Owner::new(&network, cached.container_id.as_str(), &ifname);
    let mut rules = Vec::new();
    for plugin in &list.plugins {
        let keys = PluginKeys {
            network: &network,
            plugin,
        };
        match gojson::get(plugin, "type").and_then(Value::as_str) {
            Some("bridge") if keys.flag("ipMasq") && gojson::get(plugin, "ipam").is_some() => {
                rules.push(masquerade(&keys, "bridge", &owner, &result)?);
            }
            // Host mode only: a link between two containers has no host side.
            Some("veth") if keys.flag("ipMasq") && gojson::get(plugin, "peer").is_none() => {
                rules.push(masquerade(&keys, "veth", &owner, &result)?);
            }
            Some("portmap") => {
                if let Some(rule) = port_map(&keys, &owner, &result, &cached.capability_args)? {
                    rules.push(rule);
                }
            }
            Some("firewall") => {
                rules.push(forward_accept(&keys, &owner, &result)?);
                if let Some(rule) = isolation(&keys, &network, &result)? {
                    rules.push(rule);
                }
            }
            _ => {}
        }
    }
    Ok(rules)
}

/// One plugin's configuration, read as the plugin reads it.
struct PluginKeys<'a> {
    network: &'a str,
    plugin: &'a Map<String, Value>,
}

impl PluginKeys<'_> {
    fn flag(&self, key: &str) -> bool {
        gojson::get(self.plugin, key)
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    fn text(&self, key: &str) -> Option<&str> {
        gojson::get(self.plugin, key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }

    fn invalid(&self, plugin: &'static str, key: &'static str) -> ReloadError {
        ReloadError::Key {
            network: self.network.to_owned(),
            plugin,
            key,
            value: gojson::get(self.plugin, key)
                .map(ToString::to_string)
                .unwrap_or_default(),
        }
    }

    /// `iptables`, `nftables` or unset (what the host uses).
    fn backend(
        &self,
        plugin: &'static str,
        key: &'static str,
    ) -> Result<Option<BackendKind>, ReloadError> {
        match self.text(key) {
            None => Ok(None),
            Some("iptables") => Ok(Some(BackendKind::Iptables)),
            Some("nftables") => Ok(Some(BackendKind::Nftables)),
            Some(_) => Err(self.invalid(plugin, key)),
        }
    }

    fn strings(&self, plugin: &'static str, key: &'static str) -> Result<Vec<String>, ReloadError> {
        match gojson::get(self.plugin, key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(v) => gojson::from_value::<Vec<String>>(v).map_err(|_| self.invalid(plugin, key)),
        }
    }
}

/// `ipMasq` of bridge and veth: every address of the result, with its subnet prefix.
fn masquerade(
    keys: &PluginKeys<'_>,
    plugin: &'static str,
    owner: &Owner,
    result: &CniResult,
) -> Result<(Option<BackendKind>, Desired), ReloadError> {
    let backend = keys.backend(plugin, "ipMasqBackend")?;
    let sources: Vec<IpNetwork> = result.ips.iter().map(|ip| ip.address).collect();
    Ok((
        backend,
        Desired::Masquerade(Masquerade {
            owner: owner.clone(),
            sources,
        }),
    ))
}

/// firewall: forwarded traffic of the container's addresses accepted behind the admin chain.
fn forward_accept(
    keys: &PluginKeys<'_>,
    owner: &Owner,
    result: &CniResult,
) -> Result<(Option<BackendKind>, Desired), ReloadError> {
    let backend = keys.backend("firewall", "backend")?;
    let admin_chain = keys
        .text("iptablesAdminChainName")
        .filter(|c| !c.is_empty())
        .unwrap_or(DEFAULT_ADMIN_CHAIN)
        .to_owned();
    Ok((
        backend,
        Desired::Forward(ForwardAccept {
            owner: owner.clone(),
            addresses: result
                .container_ips(&owner.ifname)
                .iter()
                .map(|n| n.ip())
                .collect(),
            admin_chain,
        }),
    ))
}

/// One `portMappings` entry as the runtime passed it (portmap's wire form).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireMapping {
    #[serde(default)]
    host_port: i64,
    #[serde(default)]
    container_port: i64,
    #[serde(default)]
    protocol: String,
    #[serde(default, rename = "hostIP")]
    host_ip: Option<String>,
    #[serde(default)]
    range: Option<i64>,
    #[serde(default)]
    host_port_end: Option<i64>,
}

/// portmap: the mappings of the `portMappings` capability (when the plugin declares it), to
/// the result's addresses on the attachment's interface.
fn port_map(
    keys: &PluginKeys<'_>,
    owner: &Owner,
    result: &CniResult,
    capability_args: &Map<String, Value>,
) -> Result<Option<(Option<BackendKind>, Desired)>, ReloadError> {
    // Capability names are map keys: exact, as libcni reads them.
    let declared = gojson::get(keys.plugin, "capabilities")
        .and_then(|c| c.get("portMappings"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let Some(wire) = capability_args.get("portMappings").filter(|_| declared) else {
        return Ok(None);
    };
    let wire = gojson::from_value::<Vec<WireMapping>>(wire).map_err(|_| ReloadError::Key {
        network: keys.network.to_owned(),
        plugin: "portmap",
        key: "portMappings",
        value: wire.to_string(),
    })?;
    if wire.is_empty() {
        return Ok(None);
    }
    let mut mappings = Vec::with_capacity(wire.len());
    for m in wire {
        let host_ip = match m.host_ip.as_deref() {
            None | Some("") => None,
            Some(text) => Some(text.parse::<IpAddr>().map_err(|_| ReloadError::Key {
                network: keys.network.to_owned(),
                plugin: "portmap",
                key: "portMappings hostIP",
                value: text.to_owned(),
            })?),
        };
        mappings.push(PortMapping {
            protocol: m.protocol,
            host_port: m.host_port,
            container_port: m.container_port,
            range: m.range,
            host_port_end: m.host_port_end,
            host_ip,
        });
    }
    let chain = keys.text("externalSetMarkChain").map(str::to_owned);
    let mark = match (chain, gojson::get(keys.plugin, "markMasqBit")) {
        (Some(chain), _) => MarkSpec::ExternalChain(chain),
        (None, None) => MarkSpec::Bit(DEFAULT_MARK_BIT),
        (None, Some(bit)) => MarkSpec::Bit(
            bit.as_u64()
                .and_then(|b| u8::try_from(b).ok())
                .ok_or_else(|| keys.invalid("portmap", "markMasqBit"))?,
        ),
    };
    let conditions_v4 = keys.strings("portmap", "conditionsV4")?;
    let conditions_v6 = keys.strings("portmap", "conditionsV6")?;
    // As portmap decides: the explicit backend, else what the options imply.
    let backend = match keys.backend("portmap", "backend")? {
        Some(kind) => Some(kind),
        None if matches!(mark, MarkSpec::ExternalChain(_)) => Some(BackendKind::Iptables),
        None => [&conditions_v4, &conditions_v6]
            .into_iter()
            .find_map(|c| conditions_look_like_iptables(c))
            .map(|ipt| {
                if ipt {
                    BackendKind::Iptables
                } else {
                    BackendKind::Nftables
                }
            }),
    };
    Ok(Some((
        backend,
        Desired::PortMap(PortMap {
            owner: owner.clone(),
            mappings,
            container_ips: result.container_ips(&owner.ifname),
            snat: gojson::get(keys.plugin, "snat")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            masq_all: keys.flag("masqAll"),
            mark,
            conditions_v4,
            conditions_v6,
        }),
    )))
}

/// firewall: isolation of the network's bridge (the result's first interface).
fn isolation(
    keys: &PluginKeys<'_>,
    network: &str,
    result: &CniResult,
) -> Result<Option<(Option<BackendKind>, Desired)>, ReloadError> {
    let policy = match keys.text("ingressPolicy") {
        None | Some("open") => false,
        Some("same-bridge") => true,
        Some(_) => return Err(keys.invalid("firewall", "ingressPolicy")),
    };
    let strict = match keys.text("isolation") {
        None | Some("none") => false,
        Some("strict") => true,
        Some(_) => return Err(keys.invalid("firewall", "isolation")),
    };
    if !(policy || strict) {
        return Ok(None);
    }
    let Some(bridge) = result.interfaces.first().filter(|i| !i.name.is_empty()) else {
        return Ok(None);
    };
    let backend = keys.backend("firewall", "backend")?;
    Ok(Some((
        backend,
        Desired::Isolation(Isolation {
            network: network.to_owned(),
            bridge: bridge.name.clone(),
        }),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cached(conflist: Value, capability_args: Value, result: Value) -> CachedAttachment {
        CachedAttachment {
            kind: "cniCacheV1".into(),
            container_id: berth_cni::ContainerId::try_from("c1").unwrap(),
            config: serde_json::to_vec(&conflist).unwrap(),
            if_name: berth_cni::IfName::try_from("eth0").unwrap(),
            network_name: berth_cni::NetworkName::try_from("lab").unwrap(),
            netns: None,
            cni_args: Vec::new(),
            capability_args: capability_args.as_object().cloned().unwrap_or_default(),
            result: Some(result),
        }
    }

    fn result() -> Value {
        json!({
            "cniVersion": "1.1.0",
            "interfaces": [
                {"name": "br-lab"},
                {"name": "veth1"},
                {"name": "eth0", "sandbox": "/run/netns/x"}
            ],
            "ips": [{"address": "198.18.0.5/24", "interface": 2}]
        })
    }

    #[test]
    fn every_plugin_with_rules_is_read_like_the_plugin() {
        let conflist = json!({
            "cniVersion": "1.1.0",
            "name": "lab",
            "plugins": [
                {"type": "loopback"},
                {"type": "bridge", "bridge": "br-lab", "ipMasq": true,
                 "ipam": {"type": "host-local"}},
                {"type": "portmap", "capabilities": {"portMappings": true}, "snat": false},
                {"type": "firewall", "ingressPolicy": "same-bridge", "backend": "nftables"}
            ]
        });
        let args = json!({"portMappings": [
            {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}
        ]});
        let name = ContainerName::try_from("web").unwrap();
        let rules = desired(&name, &cached(conflist, args, result())).unwrap();
        let owner = Owner {
            network: "lab".into(),
            container_id: "c1".into(),
            ifname: "eth0".into(),
        };
        let address: IpNetwork = "198.18.0.5/24".parse().unwrap();
        assert_eq!(
            rules,
            [
                (
                    None,
                    Desired::Masquerade(Masquerade {
                        owner: owner.clone(),
                        sources: vec![address],
                    })
                ),
                (
                    None,
                    Desired::PortMap(PortMap {
                        owner: owner.clone(),
                        mappings: vec![PortMapping {
                            protocol: "tcp".into(),
                            host_port: 8080,
                            container_port: 80,
                            range: None,
                            host_port_end: None,
                            host_ip: None,
                        }],
                        container_ips: vec![address],
                        snat: false,
                        masq_all: false,
                        mark: MarkSpec::Bit(DEFAULT_MARK_BIT),
                        conditions_v4: vec![],
                        conditions_v6: vec![],
                    })
                ),
                (
                    Some(BackendKind::Nftables),
                    Desired::Forward(ForwardAccept {
                        owner,
                        addresses: vec![address.ip()],
                        admin_chain: DEFAULT_ADMIN_CHAIN.into(),
                    })
                ),
                (
                    Some(BackendKind::Nftables),
                    Desired::Isolation(Isolation {
                        network: "lab".into(),
                        bridge: "br-lab".into(),
                    })
                ),
            ]
        );
    }

    #[test]
    fn only_the_firewall_plugin_without_options_and_bad_keys_are_named() {
        let name = ContainerName::try_from("web").unwrap();
        let plain = json!({
            "cniVersion": "1.1.0",
            "name": "lab",
            "plugins": [
                {"type": "bridge", "ipam": {"type": "host-local"}},
                {"type": "veth", "ipMasq": true, "peer": {"netns": "/run/netns/b"}},
                {"type": "portmap", "capabilities": {"portMappings": true}},
                {"type": "firewall"}
            ]
        });
        // The firewall plugin always accepts the container's forwarded traffic.
        let rules = desired(&name, &cached(plain, json!({}), result())).unwrap();
        assert_eq!(
            rules,
            [(
                None,
                Desired::Forward(ForwardAccept {
                    owner: Owner {
                        network: "lab".into(),
                        container_id: "c1".into(),
                        ifname: "eth0".into(),
                    },
                    addresses: vec!["198.18.0.5".parse().unwrap()],
                    admin_chain: DEFAULT_ADMIN_CHAIN.into(),
                })
            )]
        );

        let bad = json!({
            "cniVersion": "1.1.0",
            "name": "lab",
            "plugins": [{"type": "bridge", "ipMasq": true, "ipMasqBackend": "pf",
                         "ipam": {"type": "host-local"}}]
        });
        let err = desired(&name, &cached(bad, json!({}), result())).unwrap_err();
        assert_eq!(
            err.to_string(),
            "plugin bridge of network lab: invalid ipMasqBackend \"pf\""
        );
    }
}
