//! The `portmap` plugin: publishes container ports on the host, chained after the plugin
//! that gave the container its addresses (`bridge`, `veth`, …). A drop-in for the reference
//! plugin's configuration; the rules are [`berth_firewall`]'s.
//!
//! - ADD: validate everything (nothing is applied on bad input), enable `route_localnet`
//!   where localhost needs it, apply the rules (one atomic batch), delete stale UDP conntrack
//!   entries for the mapped ports, pass the previous result through.
//! - DEL: remove exactly this attachment's rules, idempotently; the request (when the
//!   runtime passes `portMappings` and `prevResult` again, as libcni does) spares a listing.
//! - CHECK: the rules are in place. GC: rules of attachments not in the valid list go.
//!   STATUS: the firewall backend is usable (else code 50).
//!
//! Every firewall call runs on the plugin's own thread, i.e. in the host's namespace.

mod config;
mod error;
mod localnet;

use berth_cni::{Attachment, CmdArgs, CniError, CniResult, NetConf, NetworkArgs, Plugin};
use berth_firewall::{Desired, Firewall, Owner, Removal, RuleKind, conntrack, udp_ports};

pub use config::{Config, ConfigError, PortmapConf, WireMapping};
pub use error::PortmapError;

pub struct Portmap;

/// The capability key runtimes fill in (CONVENTIONS.md).
const PORT_MAPPINGS: &str = "portMappings";

fn config(args: &CmdArgs, conf: &NetConf<PortmapConf>) -> Result<Config, CniError> {
    let mappings: Vec<WireMapping> = conf.runtime_arg(PORT_MAPPINGS)?.unwrap_or_default();
    Ok(Config::new(conf, args, &mappings).map_err(config_error)?)
}

fn config_error(e: ConfigError) -> PortmapError {
    PortmapError::Config(Box::new(e))
}

fn firewall(cfg: &Config) -> Result<Firewall, PortmapError> {
    Firewall::detect(cfg.backend).map_err(|e| PortmapError::Detect(Box::new(e)))
}

fn invalid(cfg: &Config, source: berth_firewall::FirewallError) -> PortmapError {
    PortmapError::Invalid {
        owner: cfg.request.owner.to_string(),
        source: Box::new(source),
    }
}

impl Plugin for Portmap {
    type Conf = PortmapConf;

    fn add(&self, args: &CmdArgs, conf: &NetConf<PortmapConf>) -> Result<CniResult, CniError> {
        let prev = conf.prev_result()?.clone();
        let cfg = config(args, conf)?;
        if cfg.request.mappings.is_empty() {
            return Ok(prev);
        }
        let pm = &cfg.request;
        let desired = Desired::PortMap(pm.clone());
        Firewall::validate(&desired).map_err(|e| invalid(&cfg, e))?;
        let fw = firewall(&cfg)?;
        if let Some(ip) = localnet::needed(pm) {
            localnet::enable_towards(ip).map_err(|source| PortmapError::Localnet {
                owner: pm.owner.to_string(),
                source: Box::new(source),
            })?;
        }
        fw.apply(&desired).map_err(|source| {
            if source.is_input() {
                invalid(&cfg, source)
            } else {
                PortmapError::Add {
                    owner: pm.owner.to_string(),
                    source: Box::new(source),
                }
            }
        })?;
        // After the rules: new datagrams of a stale flow now meet the DNAT. Informative
        // only, as in the reference.
        if let Ok(ports) = udp_ports(pm) {
            if let Err(e) = conntrack::delete_udp_entries(&ports) {
                eprintln!("portmap: {}: {e}", pm.owner);
            }
        }
        Ok(prev)
    }

    fn del(&self, args: &CmdArgs, conf: &NetConf<PortmapConf>) -> Result<(), CniError> {
        let cfg = config(args, conf)?;
        let fw = firewall(&cfg)?;
        let pm = &cfg.request;
        // A request the rules can be derived from spares a listing; without one (no
        // mappings, no prevResult) the backend finds the owner's rules itself.
        let request = (!pm.mappings.is_empty() && !pm.container_ips.is_empty()).then_some(pm);
        fw.remove(Removal::Ports {
            owner: &pm.owner,
            request,
        })
        .map_err(|source| PortmapError::Del {
            owner: pm.owner.to_string(),
            source: Box::new(source),
        })?;
        Ok(())
    }

    fn check(&self, args: &CmdArgs, conf: &NetConf<PortmapConf>) -> Result<(), CniError> {
        conf.prev_result()?;
        let cfg = config(args, conf)?;
        if cfg.request.mappings.is_empty() {
            return Ok(());
        }
        let desired = Desired::PortMap(cfg.request.clone());
        Firewall::validate(&desired).map_err(|e| invalid(&cfg, e))?;
        let fw = firewall(&cfg)?;
        fw.check(&desired).map_err(|source| {
            if source.is_input() {
                invalid(&cfg, source)
            } else {
                PortmapError::Check {
                    owner: cfg.request.owner.to_string(),
                    source: Box::new(source),
                }
            }
        })?;
        Ok(())
    }

    fn status(&self, _: &NetworkArgs, conf: &NetConf<PortmapConf>) -> Result<(), CniError> {
        let backend = Config::new(conf, &status_args(), &[])
            .map_err(config_error)?
            .backend;
        let status = |e| PortmapError::Status(Box::new(e));
        let fw = Firewall::detect(backend).map_err(status)?;
        fw.status().map_err(status)?;
        Ok(())
    }

    fn gc(
        &self,
        _: &NetworkArgs,
        conf: &NetConf<PortmapConf>,
        valid: &[Attachment],
    ) -> Result<(), CniError> {
        let backend = Config::new(conf, &status_args(), &[])
            .map_err(config_error)?
            .backend;
        let fw = Firewall::detect(backend).map_err(|e| PortmapError::Detect(Box::new(e)))?;
        let network = conf.name.to_string();
        let keep = Owner::of_network(
            &network,
            valid
                .iter()
                .map(|a| (a.container_id.as_str(), a.ifname.as_str())),
        );
        fw.gc(RuleKind::Ports, &network, &keep)
            .map_err(|source| PortmapError::Gc {
                network,
                source: Box::new(source),
            })?;
        Ok(())
    }
}

/// STATUS and GC concern the whole network: the owner fields of the config are unused.
fn status_args() -> CmdArgs {
    // INVARIANT: constant, valid names.
    CmdArgs::new(
        berth_cni::Command::Status,
        berth_cni::ContainerId::try_from("status").expect("valid container id"),
        None,
        berth_cni::IfName::try_from("eth0").expect("valid ifname"),
        Vec::new(),
    )
}
