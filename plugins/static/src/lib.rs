//! The `static` IPAM plugin: a drop-in for the reference one.
//!
//! ADD returns the addresses (with gateways), routes and DNS of the `ipam` section, together
//! with the addresses the runtime asks for through `CNI_ARGS IP=`/`GATEWAY=`, `args.cni.ips`
//! and `runtimeConfig.ips` (see [`config`] for how they combine). It touches no network and
//! keeps no state: the main plugin (`bridge`, `veth`, `macvlan`, `host-device`, …) configures
//! what it returns. DEL, STATUS and GC have nothing to release and succeed; CHECK compares
//! `prevResult` with what ADD would return now.

pub mod config;

use berth_cni::{
    Attachment, CmdArgs, CniError, CniResult, ErrorCode, IpConfig, NetConf, NetworkArgs, Plugin,
};
use serde::Deserialize;

use crate::config::{Address, ConfigError, Plan, Requested};

pub struct Static;

/// `static` reads only the spec's well-known keys (`ipam`, `runtimeConfig`, `args`).
#[derive(Debug, Default, Deserialize)]
pub struct StaticConf {}

type Conf = NetConf<StaticConf>;

/// The one table from this plugin's errors to CNI codes. The reference answers 999 for every
/// configuration error; the spec's 7 ("invalid network config") says what happened, and is
/// what host-local and the other Berth plugins answer (see README).
fn code_of(e: &ConfigError) -> ErrorCode {
    match e {
        ConfigError::Decode(_) => ErrorCode::Decode,
        ConfigError::NoIpam
        | ConfigError::Address { .. }
        | ConfigError::Gateway { .. }
        | ConfigError::RouteDst { .. }
        | ConfigError::RouteGw { .. }
        | ConfigError::ArgsIp { .. }
        | ConfigError::ArgsGateway { .. }
        | ConfigError::RequestedIp { .. } => ErrorCode::InvalidConfig,
    }
}

fn plan_of(conf: &Conf, args: &CmdArgs) -> Result<Plan, CniError> {
    let req = Requested {
        args_cni_ips: conf.cni_arg("ips")?,
        runtime_ips: conf.runtime_arg("ips")?,
    };
    config::plan(conf, args, req).map_err(|e| CniError::from_error(code_of(&e), &e))
}

fn describe(a: &Address) -> String {
    match a.gateway {
        Some(gw) => format!("{} (gateway {gw})", a.net),
        None => a.net.to_string(),
    }
}

impl Plugin for Static {
    type Conf = StaticConf;

    fn add(&self, args: &CmdArgs, conf: &Conf) -> Result<CniResult, CniError> {
        let plan = plan_of(conf, args)?;
        Ok(CniResult {
            interfaces: Vec::new(),
            ips: plan
                .addresses
                .iter()
                .map(|a| IpConfig {
                    address: a.net,
                    gateway: a.gateway,
                    interface: None,
                })
                .collect(),
            routes: plan.routes,
            dns: plan.dns,
        })
    }

    /// Nothing was reserved, so nothing is released. The configuration is not even read (as
    /// in the reference): DEL must succeed for a configuration that no longer validates.
    fn del(&self, _: &CmdArgs, _: &Conf) -> Result<(), CniError> {
        Ok(())
    }

    /// Every address ADD would return must be in `prevResult`, with the same prefix length and,
    /// when one is configured, the same gateway. The reference only checks the gateway of the
    /// addresses it finds, so a missing address passes there.
    fn check(&self, args: &CmdArgs, conf: &Conf) -> Result<(), CniError> {
        let plan = plan_of(conf, args)?;
        let prev = conf.prev_result()?;
        let missing: Vec<String> = plan
            .addresses
            .iter()
            .filter(|want| {
                !prev.ips.iter().any(|got| {
                    got.address == want.net && want.gateway.is_none_or(|gw| got.gateway == Some(gw))
                })
            })
            .map(describe)
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(CniError::internal(format!(
            "static: prevResult of {} lacks {}",
            args.ifname,
            missing.join(", ")
        )))
    }

    fn status(&self, _: &NetworkArgs, _: &Conf) -> Result<(), CniError> {
        Ok(())
    }

    fn gc(&self, _: &NetworkArgs, _: &Conf, _: &[Attachment]) -> Result<(), CniError> {
        Ok(())
    }
}
