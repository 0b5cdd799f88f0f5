//! The plugins' firewall keys as a network configuration carries them, typed once.
//!
//! `bridge` and `veth` read [`MasqKeys`], `portmap` reads [`PortmapKeys`] and the port
//! mappings of its capability ([`WirePortMapping`]), the `firewall` plugin reads
//! [`FirewallKeys`] — and `berth network reload` reads the same structs from the CNI result
//! cache, so a reload derives exactly the rules, defaults included, the plugins derived at
//! ADD. Every struct is read with Go's key matching (`berth_cni::gojson`, as all of a
//! configuration is) from the plugin's whole configuration object, beside the plugin's own
//! keys.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde::Deserialize;

use crate::forward::{DEFAULT_ADMIN_CHAIN, check_admin_chain};
use crate::model::InputError;
use crate::ports::{
    DEFAULT_MARK_BIT, MAX_MARK_BIT, MarkSpec, PortMap, PortMapping, conditions_look_like_iptables,
};
use crate::{BackendKind, Desired, ForwardAccept, Isolation, Masquerade, Owner};

/// A key whose value cannot be used. Every variant is the configuration's fault (code 7 in a
/// plugin), except [`KeyError::Unsupported`] (code 2: a backend the reference knows).
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("unknown {key} {value:?} (expected {expected})")]
    Value {
        key: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("{key} {value:?} is not supported (use iptables or nftables)")]
    Unsupported { key: &'static str, value: String },
    #[error("ingressPolicy {policy:?} and isolation {isolation:?} disagree")]
    Disagree { policy: String, isolation: String },
    #[error("cannot specify externalSetMarkChain and markMasqBit")]
    MarkAndChain,
    #[error("markMasqBit {bit} is out of range (0-{MAX_MARK_BIT})")]
    MarkBit { bit: i64 },
    #[error("{requested} backend was requested but configuration contains {other}-specific options [{}]", .options.join(" "))]
    WrongBackend {
        requested: BackendKind,
        other: BackendKind,
        options: Vec<&'static str>,
    },
    #[error("configuration mixes iptables-specific options [{}] and nftables-specific options [{}]", .iptables.join(" "), .nftables.join(" "))]
    MixedBackends {
        iptables: Vec<&'static str>,
        nftables: Vec<&'static str>,
    },
    #[error("port mapping {index}: hostIP {value:?} is not an IP address")]
    HostIp { index: usize, value: String },
    #[error("invalid iptablesAdminChainName")]
    AdminChain(#[source] InputError),
}

/// `iptables`, `nftables`, or unset/empty (what the host uses).
fn backend_key(key: &'static str, value: Option<&str>) -> Result<Option<BackendKind>, KeyError> {
    match value {
        None | Some("") => Ok(None),
        Some("iptables") => Ok(Some(BackendKind::Iptables)),
        Some("nftables") => Ok(Some(BackendKind::Nftables)),
        Some(other) => Err(KeyError::Value {
            key,
            value: other.to_owned(),
            expected: "iptables or nftables",
        }),
    }
}

/// `ipMasq` and `ipMasqBackend` of `bridge` and `veth` (host mode).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MasqKeys {
    /// Masquerade the container's traffic leaving the host.
    #[serde(default)]
    pub ip_masq: bool,
    /// `iptables` or `nftables`; unset: iptables if it works here, else nftables.
    #[serde(default)]
    pub ip_masq_backend: Option<String>,
}

impl MasqKeys {
    /// `Some(backend)` when `ipMasq` is on (the backend itself `None`: detect).
    pub fn masquerade(&self) -> Result<Option<Option<BackendKind>>, KeyError> {
        let backend = backend_key("ipMasqBackend", self.ip_masq_backend.as_deref())?;
        Ok(self.ip_masq.then_some(backend))
    }

    /// The rule for `owner`'s addresses (with their subnet prefix), when `ipMasq` is on.
    pub fn desired(
        &self,
        owner: &Owner,
        sources: Vec<IpNetwork>,
    ) -> Result<Option<(Option<BackendKind>, Desired)>, KeyError> {
        Ok(self.masquerade()?.map(|backend| {
            (
                backend,
                Desired::Masquerade(Masquerade {
                    owner: owner.clone(),
                    sources,
                }),
            )
        }))
    }
}

/// The `portmap` keys (the reference's, plus `backend` as in newer references).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortmapKeys {
    /// Masquerade hairpin and localhost connections; default true.
    #[serde(default)]
    pub snat: Option<bool>,
    #[serde(default)]
    pub masq_all: bool,
    /// Signed on the wire so a negative bit gets a clear message rather than a decode error.
    #[serde(default)]
    pub mark_masq_bit: Option<i64>,
    #[serde(default)]
    pub external_set_mark_chain: Option<String>,
    #[serde(default, rename = "conditionsV4")]
    pub conditions_v4: Option<Vec<String>>,
    #[serde(default, rename = "conditionsV6")]
    pub conditions_v6: Option<Vec<String>>,
    /// `iptables` or `nftables`; unset: what the options imply, else what the host uses.
    #[serde(default)]
    pub backend: Option<String>,
}

/// One `runtimeConfig.portMappings` entry (CONVENTIONS.md), plus port ranges as netavark
/// names them (`range`) or as an end port (`hostPortEnd`). containerd sends the keys
/// capitalised (`HostPort`), which Go's key matching reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WirePortMapping {
    #[serde(default)]
    pub host_port: i64,
    #[serde(default)]
    pub container_port: i64,
    #[serde(default)]
    pub protocol: String,
    #[serde(default, rename = "hostIP")]
    pub host_ip: Option<String>,
    #[serde(default)]
    pub range: Option<i64>,
    #[serde(default)]
    pub host_port_end: Option<i64>,
}

impl PortmapKeys {
    /// How packets are marked for masquerading: `externalSetMarkChain`, or a bit of the mark.
    pub fn mark(&self) -> Result<MarkSpec, KeyError> {
        match (&self.external_set_mark_chain, self.mark_masq_bit) {
            (Some(_), Some(_)) => Err(KeyError::MarkAndChain),
            (Some(chain), None) => Ok(MarkSpec::ExternalChain(chain.clone())),
            (None, Some(bit)) => u8::try_from(bit)
                .ok()
                .filter(|b| *b <= MAX_MARK_BIT)
                .map(MarkSpec::Bit)
                .ok_or(KeyError::MarkBit { bit }),
            (None, None) => Ok(MarkSpec::Bit(DEFAULT_MARK_BIT)),
        }
    }

    /// The backend the options call for. As in the reference: conditions starting with `-`
    /// or `!` are iptables arguments, others nft expressions; `externalSetMarkChain` is
    /// iptables. An explicit `backend` must agree with them.
    pub fn backend(&self) -> Result<Option<BackendKind>, KeyError> {
        let mut ipt: Vec<&'static str> = Vec::new();
        let mut nft: Vec<&'static str> = Vec::new();
        if self.external_set_mark_chain.is_some() {
            ipt.push("externalSetMarkChain");
        }
        for (key, conditions) in [
            ("conditionsV4", &self.conditions_v4),
            ("conditionsV6", &self.conditions_v6),
        ] {
            match conditions
                .as_deref()
                .and_then(conditions_look_like_iptables)
            {
                Some(true) => ipt.push(key),
                Some(false) => nft.push(key),
                None => {}
            }
        }
        match backend_key("backend", self.backend.as_deref())? {
            Some(BackendKind::Iptables) if !nft.is_empty() => Err(KeyError::WrongBackend {
                requested: BackendKind::Iptables,
                other: BackendKind::Nftables,
                options: nft,
            }),
            Some(BackendKind::Nftables) if !ipt.is_empty() => Err(KeyError::WrongBackend {
                requested: BackendKind::Nftables,
                other: BackendKind::Iptables,
                options: ipt,
            }),
            Some(kind) => Ok(Some(kind)),
            None if !ipt.is_empty() && !nft.is_empty() => Err(KeyError::MixedBackends {
                iptables: ipt,
                nftables: nft,
            }),
            None if !ipt.is_empty() => Ok(Some(BackendKind::Iptables)),
            None if !nft.is_empty() => Ok(Some(BackendKind::Nftables)),
            None => Ok(None),
        }
    }

    /// The request for `owner`: `mappings` (the capability's) to `container_ips` (the
    /// result's addresses on the attachment's interface; empty on a DEL without one).
    pub fn port_map(
        &self,
        owner: Owner,
        mappings: &[WirePortMapping],
        container_ips: Vec<IpNetwork>,
    ) -> Result<PortMap, KeyError> {
        let mut parsed = Vec::with_capacity(mappings.len());
        for (index, m) in mappings.iter().enumerate() {
            let host_ip = match m.host_ip.as_deref() {
                None | Some("") => None,
                Some(text) => Some(text.parse::<IpAddr>().map_err(|_| KeyError::HostIp {
                    index,
                    value: text.to_owned(),
                })?),
            };
            parsed.push(PortMapping {
                protocol: m.protocol.clone(),
                host_port: m.host_port,
                container_port: m.container_port,
                range: m.range,
                host_port_end: m.host_port_end,
                host_ip,
            });
        }
        Ok(PortMap {
            owner,
            mappings: parsed,
            container_ips,
            snat: self.snat.unwrap_or(true),
            masq_all: self.masq_all,
            mark: self.mark()?,
            conditions_v4: self.conditions_v4.clone().unwrap_or_default(),
            conditions_v6: self.conditions_v6.clone().unwrap_or_default(),
        })
    }
}

/// The keys of the `firewall` plugin.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FirewallKeys {
    /// `iptables` or `nftables` (`firewalld` is not supported); unset: what the host uses.
    #[serde(default)]
    pub backend: Option<String>,
    /// `open` (default) or `same-bridge`.
    #[serde(default)]
    pub ingress_policy: Option<String>,
    /// `none` (default) or `strict`: the same switch under the name Berth's docs use.
    #[serde(default)]
    pub isolation: Option<String>,
    /// The chain jumped to before any accept rule (the host's own rules go there);
    /// default `CNI-ADMIN`, as in the reference.
    #[serde(default)]
    pub iptables_admin_chain_name: Option<String>,
}

impl FirewallKeys {
    pub fn backend(&self) -> Result<Option<BackendKind>, KeyError> {
        match self.backend.as_deref() {
            Some(other @ "firewalld") => Err(KeyError::Unsupported {
                key: "backend",
                value: other.to_owned(),
            }),
            value => backend_key("backend", value),
        }
    }

    /// Whether the network is isolated: `ingressPolicy: same-bridge` or `isolation: strict`.
    pub fn isolate(&self) -> Result<bool, KeyError> {
        let switch = |key: &'static str,
                      value: &Option<String>,
                      off: &'static str,
                      on: &'static str,
                      expected: &'static str| {
            match value.as_deref() {
                None | Some("") => Ok(None),
                Some(v) if v == off => Ok(Some(false)),
                Some(v) if v == on => Ok(Some(true)),
                Some(other) => Err(KeyError::Value {
                    key,
                    value: other.to_owned(),
                    expected,
                }),
            }
        };
        let policy = switch(
            "ingressPolicy",
            &self.ingress_policy,
            "open",
            "same-bridge",
            "open or same-bridge",
        )?;
        let isolation = switch(
            "isolation",
            &self.isolation,
            "none",
            "strict",
            "none or strict",
        )?;
        match (policy, isolation) {
            (Some(a), Some(b)) if a != b => Err(KeyError::Disagree {
                policy: self.ingress_policy.clone().unwrap_or_default(),
                isolation: self.isolation.clone().unwrap_or_default(),
            }),
            (a, b) => Ok(a.or(b).unwrap_or(false)),
        }
    }

    pub fn admin_chain(&self) -> Result<String, KeyError> {
        let chain = self
            .iptables_admin_chain_name
            .clone()
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| DEFAULT_ADMIN_CHAIN.to_owned());
        check_admin_chain(&chain).map_err(KeyError::AdminChain)?;
        Ok(chain)
    }

    /// The accept rules of `owner`'s `addresses`.
    pub fn forward(&self, owner: Owner, addresses: Vec<IpAddr>) -> Result<ForwardAccept, KeyError> {
        Ok(ForwardAccept {
            owner,
            addresses,
            admin_chain: self.admin_chain()?,
        })
    }

    /// The network's isolation, when on; `bridge` is the previous result's first interface.
    pub fn isolation(&self, network: &str, bridge: &str) -> Result<Option<Isolation>, KeyError> {
        Ok(self.isolate()?.then(|| Isolation {
            network: network.to_owned(),
            bridge: bridge.to_owned(),
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn owner() -> Owner {
        Owner::new("n", "c", "eth0")
    }

    #[test]
    fn masquerade_is_off_unless_asked_and_backends_are_named() {
        assert_eq!(MasqKeys::default().masquerade().unwrap(), None);
        let on = MasqKeys {
            ip_masq: true,
            ip_masq_backend: Some("nftables".into()),
        };
        assert_eq!(on.masquerade().unwrap(), Some(Some(BackendKind::Nftables)));
        let bad = MasqKeys {
            ip_masq: true,
            ip_masq_backend: Some("pf".into()),
        };
        assert_eq!(
            bad.masquerade().unwrap_err().to_string(),
            "unknown ipMasqBackend \"pf\" (expected iptables or nftables)"
        );
    }

    #[test]
    fn portmap_backend_follows_the_options() {
        let keys = |v: serde_json::Value| serde_json::from_value::<PortmapKeys>(v).unwrap();
        assert_eq!(keys(serde_json::json!({})).backend().unwrap(), None);
        assert_eq!(
            keys(serde_json::json!({"externalSetMarkChain": "X"}))
                .backend()
                .unwrap(),
            Some(BackendKind::Iptables)
        );
        assert_eq!(
            keys(serde_json::json!({"conditionsV4": ["ip saddr 10.0.0.0/8"]}))
                .backend()
                .unwrap(),
            Some(BackendKind::Nftables)
        );
        assert!(matches!(
            keys(serde_json::json!({"backend": "nftables", "externalSetMarkChain": "X"})).backend(),
            Err(KeyError::WrongBackend { .. })
        ));
        assert!(matches!(
            keys(serde_json::json!({"markMasqBit": 32})).mark(),
            Err(KeyError::MarkBit { bit: 32 })
        ));
        let pm = keys(serde_json::json!({"snat": false}))
            .port_map(
                owner(),
                &[WirePortMapping {
                    host_port: 8080,
                    container_port: 80,
                    protocol: "tcp".into(),
                    host_ip: Some("".into()),
                    ..WirePortMapping::default()
                }],
                vec![],
            )
            .unwrap();
        assert!(!pm.snat && pm.mappings[0].host_ip.is_none());
        assert_eq!(pm.mark, MarkSpec::Bit(DEFAULT_MARK_BIT));
    }

    #[test]
    fn firewall_switches_agree_or_are_refused() {
        let keys = |v: serde_json::Value| serde_json::from_value::<FirewallKeys>(v).unwrap();
        assert!(!keys(serde_json::json!({})).isolate().unwrap());
        assert!(
            keys(serde_json::json!({"ingressPolicy": "same-bridge"}))
                .isolate()
                .unwrap()
        );
        assert!(
            keys(serde_json::json!({"isolation": "strict"}))
                .isolate()
                .unwrap()
        );
        assert!(matches!(
            keys(serde_json::json!({"ingressPolicy": "open", "isolation": "strict"})).isolate(),
            Err(KeyError::Disagree { .. })
        ));
        assert!(matches!(
            keys(serde_json::json!({"backend": "firewalld"})).backend(),
            Err(KeyError::Unsupported { .. })
        ));
        assert_eq!(
            keys(serde_json::json!({})).admin_chain().unwrap(),
            DEFAULT_ADMIN_CHAIN
        );
    }
}
