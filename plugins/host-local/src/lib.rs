//! The `host-local` IPAM plugin: a drop-in for the reference one, over `berth-ipam`.
//!
//! Reads the `ipam` section (single-range shorthand or `ranges`), takes requested addresses
//! from `CNI_ARGS IP=`, `args.cni.ips` and `runtimeConfig.ips`, and `runtimeConfig.ipRanges`.
//! State lives in the reference's on-disk layout under `dataDir`. Beyond the reference: GC
//! releases reservations of attachments the runtime no longer knows, and STATUS reports an
//! exhausted range or an unusable store (code 50).

use std::net::IpAddr;

use berth_cni::{
    Attachment, CmdArgs, CniError, CniResult, Dns, ErrorCode, IpConfig, NetConf, NetworkArgs,
    Plugin, Route,
};
use berth_ipam::{ErrorKind, HostLocalConf, IpamConfig, LeaseKey, RangeConf, ops};
use ipnetwork::IpNetwork;
use serde::Deserialize;

pub struct HostLocal;

/// host-local reads only the spec's well-known keys (`ipam`, `runtimeConfig`, `args`).
#[derive(Debug, Default, Deserialize)]
pub struct HostLocalPluginConf {}

type Conf = NetConf<HostLocalPluginConf>;

/// The one table from IPAM error kinds to CNI codes.
fn code_of(kind: ErrorKind) -> ErrorCode {
    match kind {
        ErrorKind::InvalidConfig => ErrorCode::InvalidConfig,
        // Addresses come back as containers go: the runtime may retry.
        ErrorKind::Exhausted | ErrorKind::Unavailable => ErrorCode::TryAgainLater,
        ErrorKind::Io => ErrorCode::Io,
        ErrorKind::CheckFailed => ErrorCode::Internal,
    }
}

fn cni_err<E: std::error::Error + 'static>(kind: ErrorKind, err: E) -> CniError {
    CniError::from_error(code_of(kind), &err)
}

/// The validated `ipam` section, with `runtimeConfig.ipRanges` in front as the reference does.
fn ipam_config(conf: &Conf) -> Result<IpamConfig, CniError> {
    let ipam = conf
        .ipam
        .as_ref()
        .ok_or_else(|| CniError::invalid_config("host-local: the ipam section is missing"))?;
    let wire: HostLocalConf = ipam
        .typed()
        .map_err(|e| CniError::new(ErrorCode::Decode, format!("decode ipam section: {e}")))?;
    let runtime_ranges: Vec<Vec<RangeConf>> = conf.runtime_arg("ipRanges")?.unwrap_or_default();
    wire.validate_with_runtime_ranges(&runtime_ranges)
        .map_err(|e| cni_err(e.kind(), e))
}

fn lease_key(conf: &Conf, args: &CmdArgs) -> LeaseKey {
    LeaseKey {
        network: conf.name.to_string(),
        container_id: args.container_id.to_string(),
        ifname: args.ifname.to_string(),
    }
}

/// Accepts `10.1.2.3` and `10.1.2.3/24` (the prefix is ignored, as in the reference).
fn parse_requested(s: &str, source: &str) -> Result<IpAddr, CniError> {
    let s = s.trim();
    s.parse::<IpAddr>()
        .or_else(|_| s.parse::<IpNetwork>().map(|n| n.ip()))
        .map_err(|_| CniError::invalid_config(format!("{source}: invalid IP address {s:?}")))
}

/// Requested addresses from `CNI_ARGS IP=a,b`, `args.cni.ips` and `runtimeConfig.ips`, in that
/// order, without duplicates.
fn requested_ips(conf: &Conf, args: &CmdArgs) -> Result<Vec<IpAddr>, CniError> {
    let mut out: Vec<IpAddr> = Vec::new();
    let mut push = |ip: IpAddr| {
        if !out.contains(&ip) {
            out.push(ip);
        }
    };
    if let Some(list) = args.args.get("IP") {
        for item in list.split(',').filter(|s| !s.trim().is_empty()) {
            push(parse_requested(item, "CNI_ARGS IP")?);
        }
    }
    for (ips, source) in [
        (conf.cni_arg::<Vec<String>>("ips")?, "args.cni.ips"),
        (conf.runtime_arg::<Vec<String>>("ips")?, "runtimeConfig.ips"),
    ] {
        for item in ips.unwrap_or_default() {
            push(parse_requested(&item, source)?);
        }
    }
    Ok(out)
}

fn dns_of(config: &IpamConfig) -> Result<Dns, CniError> {
    let Some(path) = &config.resolv_conf else {
        return Ok(Dns::default());
    };
    let parsed = berth_ipam::Dns::from_resolv_conf(path).map_err(|e| cni_err(e.kind(), e))?;
    Ok(Dns {
        nameservers: parsed.nameservers,
        domain: parsed.domain,
        search: parsed.search,
        options: parsed.options,
    })
}

impl Plugin for HostLocal {
    type Conf = HostLocalPluginConf;

    fn add(&self, args: &CmdArgs, conf: &Conf) -> Result<CniResult, CniError> {
        let config = ipam_config(conf)?;
        let requested = requested_ips(conf, args)?;
        // Read resolvConf before reserving, so a bad path leaves nothing in the store.
        let dns = dns_of(&config)?;
        let key = lease_key(conf, args);
        let allocations =
            ops::allocate_all(&config, &key, &requested).map_err(|e| cni_err(e.kind(), e))?;
        Ok(CniResult {
            interfaces: Vec::new(),
            ips: allocations
                .iter()
                .map(|a| IpConfig {
                    address: a.ip,
                    gateway: Some(a.gateway),
                    interface: None,
                })
                .collect(),
            routes: config
                .routes
                .iter()
                .map(|r| Route::new(r.dst, r.gw))
                .collect(),
            dns,
        })
    }

    fn del(&self, args: &CmdArgs, conf: &Conf) -> Result<(), CniError> {
        let config = ipam_config(conf)?;
        ops::release(&config, &lease_key(conf, args))
            .map(drop)
            .map_err(|e| cni_err(e.kind(), e))
    }

    /// The store must hold exactly the addresses of `prevResult` that fall in our ranges (or,
    /// without a `prevResult`, at least one address for this attachment).
    fn check(&self, args: &CmdArgs, conf: &Conf) -> Result<(), CniError> {
        let config = ipam_config(conf)?;
        let key = lease_key(conf, args);
        let expected: Vec<IpAddr> = match &conf.prev_result {
            Some(prev) => prev
                .ips
                .iter()
                .map(|ip| ip.address.ip())
                .filter(|ip| config.range_sets.iter().any(|s| s.contains(*ip)))
                .collect(),
            None => Vec::new(),
        };
        if expected.is_empty() {
            // Nothing to compare against: the attachment must hold something.
            let held = ops::held(&config, &key).map_err(|e| cni_err(e.kind(), e))?;
            if held.is_empty() {
                return Err(CniError::internal(format!(
                    "host-local: no address is reserved for {}/{}/{}",
                    key.network, key.container_id, key.ifname
                )));
            }
            return Ok(());
        }
        ops::check(&config, &key, &expected).map_err(|e| cni_err(e.kind(), e))
    }

    fn status(&self, _: &NetworkArgs, conf: &Conf) -> Result<(), CniError> {
        let config = ipam_config(conf)?;
        ops::status(&config, conf.name.as_str())
            .map_err(|e| CniError::from_error(ErrorCode::NotAvailable, &e))
    }

    fn gc(&self, _: &NetworkArgs, conf: &Conf, valid: &[Attachment]) -> Result<(), CniError> {
        let config = ipam_config(conf)?;
        let valid: Vec<(String, String)> = valid
            .iter()
            .map(|a| (a.container_id.to_string(), a.ifname.to_string()))
            .collect();
        ops::gc(&config, conf.name.as_str(), &valid)
            .map(drop)
            .map_err(|e| cni_err(e.kind(), e))
    }
}
