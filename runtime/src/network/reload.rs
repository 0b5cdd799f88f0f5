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
//! The plugins whose rules are re-derived, with the keys they read — berth-firewall's typed
//! key sets, the very structs the plugins read, so the defaults cannot drift apart:
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

use berth_cni::invoke::CachedAttachment;
use berth_cni::{CniResult, NetConfList, gojson};
use berth_firewall::{
    BackendKind, Desired, Firewall, FirewallError, FirewallKeys, KeyError, MasqKeys, Owner,
    PortmapKeys, WirePortMapping,
};
use serde::de::DeserializeOwned;
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
    #[error("plugin {plugin} of network {network}: {reason}")]
    Key {
        network: String,
        plugin: String,
        reason: String,
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

/// The rules one cached attachment implies, each with the backend its plugin asks for: each
/// plugin's keys read with the same typed structs (berth-firewall's `MasqKeys`,
/// `PortmapKeys`, `FirewallKeys`) and the same defaults as the plugin itself reads them.
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
    let container_ips = result.container_ips(&ifname);
    let mut rules = Vec::new();
    for entry in &list.plugins {
        let plugin = Plugin {
            network: &network,
            entry,
        };
        let masquerade = |kind: &str| -> Result<_, ReloadError> {
            let keys: MasqKeys = plugin.keys(kind)?;
            let sources = result.ips.iter().map(|ip| ip.address).collect();
            keys.desired(&owner, sources)
                .map_err(|e| plugin.invalid(kind, e))
        };
        match plugin.kind() {
            // bridge's ipMasq needs addresses from its IPAM.
            Some("bridge") if plugin.has("ipam") => rules.extend(masquerade("bridge")?),
            // veth's only in host mode: a link between two containers has no host side.
            Some("veth") if !plugin.has("peer") => rules.extend(masquerade("veth")?),
            Some("portmap") => {
                if let Some(wire) = plugin.port_mappings(&cached.capability_args)? {
                    let keys: PortmapKeys = plugin.keys("portmap")?;
                    let backend = keys.backend().map_err(|e| plugin.invalid("portmap", e))?;
                    let pm = keys
                        .port_map(owner.clone(), &wire, container_ips.clone())
                        .map_err(|e| plugin.invalid("portmap", e))?;
                    rules.push((backend, Desired::PortMap(pm)));
                }
            }
            Some("firewall") => {
                let keys: FirewallKeys = plugin.keys("firewall")?;
                let invalid = |e| plugin.invalid("firewall", e);
                let backend = keys.backend().map_err(invalid)?;
                let addresses = container_ips.iter().map(|n| n.ip()).collect();
                let forward = keys.forward(owner.clone(), addresses).map_err(invalid)?;
                rules.push((backend, Desired::Forward(forward)));
                // The network's bridge: the result's first interface, as the plugin reads it.
                if let Some(bridge) = result.interfaces.first().filter(|i| !i.name.is_empty()) {
                    let isolation = keys.isolation(&network, &bridge.name).map_err(invalid)?;
                    rules.extend(isolation.map(|i| (backend, Desired::Isolation(i))));
                }
            }
            _ => {}
        }
    }
    Ok(rules)
}

/// One plugin entry of a cached configuration list.
struct Plugin<'a> {
    network: &'a str,
    entry: &'a Map<String, Value>,
}

impl Plugin<'_> {
    fn kind(&self) -> Option<&str> {
        gojson::get(self.entry, "type").and_then(Value::as_str)
    }

    fn has(&self, key: &str) -> bool {
        gojson::get(self.entry, key).is_some_and(|v| !v.is_null())
    }

    /// A typed key set of the entry, read as the plugin reads it (Go's key matching).
    fn keys<T: DeserializeOwned>(&self, plugin: &str) -> Result<T, ReloadError> {
        gojson::from_value(&Value::Object(self.entry.clone())).map_err(|e| ReloadError::Key {
            network: self.network.to_owned(),
            plugin: plugin.to_owned(),
            reason: e.to_string(),
        })
    }

    fn invalid(&self, plugin: &str, e: KeyError) -> ReloadError {
        ReloadError::Key {
            network: self.network.to_owned(),
            plugin: plugin.to_owned(),
            reason: e.to_string(),
        }
    }

    /// The `portMappings` capability argument, when the entry declares the capability (the
    /// capability names are map keys: exact, as libcni reads them) and mappings were passed.
    fn port_mappings(
        &self,
        capability_args: &Map<String, Value>,
    ) -> Result<Option<Vec<WirePortMapping>>, ReloadError> {
        let declared = gojson::get(self.entry, "capabilities")
            .and_then(|c| c.get("portMappings"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let Some(wire) = capability_args.get("portMappings").filter(|_| declared) else {
            return Ok(None);
        };
        let wire: Vec<WirePortMapping> =
            gojson::from_value(wire).map_err(|e| ReloadError::Key {
                network: self.network.to_owned(),
                plugin: "portmap".to_owned(),
                reason: format!("portMappings: {e}"),
            })?;
        Ok((!wire.is_empty()).then_some(wire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_firewall::{
        DEFAULT_ADMIN_CHAIN, DEFAULT_MARK_BIT, ForwardAccept, Isolation, MarkSpec, Masquerade,
        PortMap, PortMapping,
    };
    use ipnetwork::IpNetwork;
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
            "plugin bridge of network lab: unknown ipMasqBackend \"pf\" (expected iptables or nftables)"
        );
    }
}
