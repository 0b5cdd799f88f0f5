//! The `firewall` plugin, chained after `bridge`: forwarded traffic of the container
//! accepted ahead of a host `FORWARD` policy of DROP (the reference's `CNI-FORWARD`, behind
//! the admin chain `iptablesAdminChainName`), and isolation between networks.
//!
//! Isolation is off by default (`ingressPolicy: "open"`). With `ingressPolicy: "same-bridge"` (the
//! reference's name) or `isolation: "strict"`, containers of this network's bridge and of
//! every other isolated bridge cannot reach each other; replies (conntrack
//! `ESTABLISHED,RELATED`) and connections to published ports (DNAT'ed by `portmap`) still
//! pass. Isolation belongs to the network: DEL leaves it (as the reference does), GC removes
//! it once no attachment of the network is left.
//!
//! The accept rules belong to the attachment: ADD adds them for the container's addresses
//! in `prevResult`, DEL removes them, GC removes those of attachments not in the valid
//! list. They exist with the iptables backend only (see `berth_firewall::ForwardAccept`).
//! Every firewall call runs on the plugin's own thread, the host's namespace.

use berth_cni::{
    Attachment, CmdArgs, CniError, CniResult, ErrorCode, NetConf, NetworkArgs, Plugin,
};
use berth_firewall::{
    BackendKind, Desired, Firewall, FirewallError, ForwardAccept, Isolation, KeyError, Owner,
    Removal, RuleKind,
};

pub struct FirewallPlugin;

/// The `firewall` keys of a network configuration, as berth-firewall types them (`berth network
/// reload` reads the same struct).
pub type FirewallConf = berth_firewall::FirewallKeys;

/// Errors of the plugin; [`From<FirewallPluginError> for CniError`] is the code table.
#[derive(Debug, thiserror::Error)]
pub enum FirewallPluginError {
    #[error("firewall: {0}")]
    Keys(#[source] KeyError),
    #[error(
        "firewall: isolation needs the bridge: chain the firewall plugin after bridge (prevResult has no interface)"
    )]
    NoBridge,
    #[error("firewall: accept forwarded traffic of {owner}")]
    Forward {
        owner: String,
        #[source]
        source: Box<FirewallError>,
    },
    #[error("firewall: no usable firewall backend")]
    Detect(#[source] Box<FirewallError>),
    #[error("firewall: isolate network {network}")]
    Add {
        network: String,
        #[source]
        source: Box<FirewallError>,
    },
    #[error("firewall: isolation of network {network} is missing or wrong")]
    Check {
        network: String,
        #[source]
        source: Box<FirewallError>,
    },
    #[error("firewall: remove the isolation of network {network}")]
    Gc {
        network: String,
        #[source]
        source: Box<FirewallError>,
    },
    #[error("firewall: the firewall backend is not usable")]
    Status(#[source] Box<FirewallError>),
}

impl From<FirewallPluginError> for CniError {
    fn from(e: FirewallPluginError) -> CniError {
        let code = match &e {
            FirewallPluginError::Keys(KeyError::Unsupported { .. }) => ErrorCode::UnsupportedField,
            FirewallPluginError::Keys(_) | FirewallPluginError::NoBridge => {
                ErrorCode::InvalidConfig
            }
            FirewallPluginError::Detect(_) | FirewallPluginError::Status(_) => {
                ErrorCode::NotAvailable
            }
            FirewallPluginError::Add { source, .. } if source.is_input() => {
                ErrorCode::InvalidConfig
            }
            FirewallPluginError::Add { .. }
            | FirewallPluginError::Forward { .. }
            | FirewallPluginError::Check { .. }
            | FirewallPluginError::Gc { .. } => ErrorCode::Internal,
        };
        CniError::from_error(code, &e)
    }
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub backend: Option<BackendKind>,
    pub isolate: bool,
    pub admin_chain: String,
}

impl Config {
    pub fn new(keys: &FirewallConf) -> Result<Config, FirewallPluginError> {
        Ok(Config {
            backend: keys.backend().map_err(FirewallPluginError::Keys)?,
            isolate: keys.isolate().map_err(FirewallPluginError::Keys)?,
            admin_chain: keys.admin_chain().map_err(FirewallPluginError::Keys)?,
        })
    }
}

fn setup(conf: &NetConf<FirewallConf>) -> Result<(Config, Firewall), FirewallPluginError> {
    let cfg = Config::new(&conf.plugin)?;
    let fw = Firewall::detect(cfg.backend).map_err(|e| FirewallPluginError::Detect(Box::new(e)))?;
    Ok((cfg, fw))
}

fn owner(args: &CmdArgs, conf: &NetConf<FirewallConf>) -> Owner {
    Owner::new(
        conf.name.as_str(),
        args.container_id.as_str(),
        args.ifname.as_str(),
    )
}

/// The container's addresses in `prev`, for the accept rules.
fn forward(
    args: &CmdArgs,
    conf: &NetConf<FirewallConf>,
    cfg: &Config,
    prev: &CniResult,
) -> ForwardAccept {
    ForwardAccept {
        owner: owner(args, conf),
        addresses: prev
            .container_ips(args.ifname.as_str())
            .iter()
            .map(|n| n.ip())
            .collect(),
        admin_chain: cfg.admin_chain.clone(),
    }
}

fn forward_err(owner: &Owner) -> impl FnOnce(FirewallError) -> FirewallPluginError + '_ {
    move |source| FirewallPluginError::Forward {
        owner: owner.to_string(),
        source: Box::new(source),
    }
}

/// The network's bridge: the previous result's first interface, as the reference reads it.
fn isolation(
    conf: &NetConf<FirewallConf>,
    prev: &CniResult,
) -> Result<Isolation, FirewallPluginError> {
    let bridge = prev
        .interfaces
        .first()
        .map(|i| i.name.clone())
        .filter(|n| !n.is_empty())
        .ok_or(FirewallPluginError::NoBridge)?;
    Ok(Isolation {
        network: conf.name.to_string(),
        bridge,
    })
}

impl Plugin for FirewallPlugin {
    type Conf = FirewallConf;

    fn add(&self, args: &CmdArgs, conf: &NetConf<FirewallConf>) -> Result<CniResult, CniError> {
        let prev = conf.prev_result()?.clone();
        let (cfg, fw) = setup(conf)?;
        let iso = if cfg.isolate {
            Some(isolation(conf, &prev)?)
        } else {
            None
        };
        let fwd = forward(args, conf, &cfg, &prev);
        fw.apply(&Desired::Forward(fwd.clone()))
            .map_err(forward_err(&fwd.owner))?;
        if let Some(iso) = iso {
            let added = fw
                .apply(&Desired::Isolation(iso.clone()))
                .map_err(|source| FirewallPluginError::Add {
                    network: iso.network.clone(),
                    source: Box::new(source),
                });
            if let Err(e) = added {
                // Roll back: a failed ADD leaves nothing of this attachment.
                let _ = fw.remove(Removal::Forward {
                    owner: &fwd.owner,
                    request: Some(&fwd),
                });
                return Err(e.into());
            }
        }
        Ok(prev)
    }

    /// The attachment's accept rules go; isolation belongs to the network and outlives one
    /// attachment (GC removes it).
    fn del(&self, args: &CmdArgs, conf: &NetConf<FirewallConf>) -> Result<(), CniError> {
        let (cfg, fw) = setup(conf)?;
        let owner = owner(args, conf);
        // With `prevResult` the rules are known and deleted without listing.
        let request = conf
            .prev_result
            .as_ref()
            .map(|prev| forward(args, conf, &cfg, prev));
        fw.remove(Removal::Forward {
            owner: &owner,
            request: request.as_ref(),
        })
        .map_err(forward_err(&owner))?;
        Ok(())
    }

    fn check(&self, args: &CmdArgs, conf: &NetConf<FirewallConf>) -> Result<(), CniError> {
        let prev = conf.prev_result()?;
        let (cfg, fw) = setup(conf)?;
        let fwd = forward(args, conf, &cfg, prev);
        fw.check(&Desired::Forward(fwd.clone()))
            .map_err(forward_err(&fwd.owner))?;
        if !cfg.isolate {
            return Ok(());
        }
        let iso = isolation(conf, prev)?;
        fw.check(&Desired::Isolation(iso.clone()))
            .map_err(|source| FirewallPluginError::Check {
                network: iso.network.clone(),
                source: Box::new(source),
            })?;
        Ok(())
    }

    fn status(&self, _: &NetworkArgs, conf: &NetConf<FirewallConf>) -> Result<(), CniError> {
        let cfg = Config::new(&conf.plugin)?;
        let status = |e| FirewallPluginError::Status(Box::new(e));
        let fw = Firewall::detect(cfg.backend).map_err(status)?;
        fw.status().map_err(status)?;
        Ok(())
    }

    /// Accept rules of attachments not in `valid` go; the network's isolation goes when none
    /// of its attachments is left.
    fn gc(
        &self,
        _: &NetworkArgs,
        conf: &NetConf<FirewallConf>,
        valid: &[Attachment],
    ) -> Result<(), CniError> {
        let (_, fw) = setup(conf)?;
        let network = conf.name.to_string();
        let keep = Owner::of_network(
            &network,
            valid
                .iter()
                .map(|a| (a.container_id.as_str(), a.ifname.as_str())),
        );
        fw.gc(RuleKind::Forward, &network, &keep)
            .map_err(|source| FirewallPluginError::Gc {
                network: network.clone(),
                source: Box::new(source),
            })?;
        if valid.is_empty() {
            fw.remove(Removal::Isolation { network: &network })
                .map_err(|source| FirewallPluginError::Gc {
                    network: network.clone(),
                    source: Box::new(source),
                })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(json: &str) -> FirewallConf {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn options() {
        let c = |j| Config::new(&conf(j));
        assert_eq!(
            c("{}").unwrap(),
            Config {
                backend: None,
                isolate: false,
                admin_chain: "CNI-ADMIN".into(),
            }
        );
        assert_eq!(
            c(r#"{"iptablesAdminChainName": "MY-ADMIN"}"#)
                .unwrap()
                .admin_chain,
            "MY-ADMIN"
        );
        let e: CniError = c(r#"{"iptablesAdminChainName": "-j ACCEPT"}"#)
            .unwrap_err()
            .into();
        assert_eq!(e.code, ErrorCode::InvalidConfig);
        assert!(c(r#"{"ingressPolicy": "same-bridge"}"#).unwrap().isolate);
        assert!(
            c(r#"{"isolation": "strict", "backend": "nftables"}"#)
                .unwrap()
                .isolate
        );
        assert!(
            c(r#"{"isolation": "strict", "ingressPolicy": "same-bridge"}"#)
                .unwrap()
                .isolate
        );
        assert!(matches!(
            c(r#"{"isolation": "strict", "ingressPolicy": "open"}"#),
            Err(FirewallPluginError::Keys(KeyError::Disagree { .. }))
        ));
        assert!(matches!(
            c(r#"{"isolation": "loose"}"#),
            Err(FirewallPluginError::Keys(KeyError::Value { .. }))
        ));
        let e: CniError = c(r#"{"backend": "firewalld"}"#).unwrap_err().into();
        assert_eq!(e.code, ErrorCode::UnsupportedField);
        let e: CniError = c(r#"{"ingressPolicy": "x"}"#).unwrap_err().into();
        assert_eq!(e.code, ErrorCode::InvalidConfig);
    }
}
