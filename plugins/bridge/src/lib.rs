//! The `bridge` plugin: a drop-in replacement for the reference containernetworking `bridge`.
//!
//! ADD creates the bridge if needed, a veth pair whose host end is a port of the bridge and
//! whose other end is created directly in the container's namespace as `CNI_IFNAME`, gets
//! addresses from the IPAM plugin, and configures them with routes in the container, the
//! gateway on the bridge (`isGateway`), masquerading (`ipMasq`) and the MAC spoofing guard
//! (`macspoofchk`). The recipe is in
//! [`setup`], its mirror in [`teardown`], the verification in [`check`]; [`config`] holds the
//! configuration keys (same names and defaults as the reference).

pub mod addressing;
pub mod check;
pub mod config;
mod error;
pub mod names;
mod owner;
pub mod setup;
pub mod spoof;
pub mod teardown;

use berth_cni::delegate::delegate_status;
use berth_cni::{Attachment, CmdArgs, CniError, CniResult, NetConf, NetworkArgs, Plugin};

pub use config::{BridgeConf, Config, TeardownConfig};
pub use setup::Step;

/// The plugin. `failpoint` is a test hook: ADD fails right after that step (and rolls back);
/// the binary always runs with `None`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Bridge {
    pub failpoint: Option<Step>,
}

impl Bridge {
    /// The plugin with a failure injected after `step` (tests).
    pub fn failing_after(step: Step) -> Bridge {
        Bridge {
            failpoint: Some(step),
        }
    }
}

impl Plugin for Bridge {
    type Conf = BridgeConf;

    fn add(&self, args: &CmdArgs, conf: &NetConf<BridgeConf>) -> Result<CniResult, CniError> {
        let cfg = Config::validate(conf, &args.args)?;
        let netns = args.netns()?;
        Ok(setup::add(&cfg, args, netns, self.failpoint)?)
    }

    fn del(&self, args: &CmdArgs, conf: &NetConf<BridgeConf>) -> Result<(), CniError> {
        Ok(teardown::del(&TeardownConfig::from_conf(conf), args)?)
    }

    fn check(&self, args: &CmdArgs, conf: &NetConf<BridgeConf>) -> Result<(), CniError> {
        let cfg = Config::validate(conf, &args.args)?;
        let prev = conf.prev_result()?;
        let netns = args.netns()?;
        Ok(check::check(&cfg, args, netns, prev)?)
    }

    /// Usable when the IPAM plugin is (it answers for its ranges and store), with `ipMasq`
    /// when a firewall backend is usable, and with `macspoofchk` when nftables is.
    fn status(&self, args: &NetworkArgs, conf: &NetConf<BridgeConf>) -> Result<(), CniError> {
        let cfg = TeardownConfig::from_conf(conf);
        if let Some(ipam) = &cfg.ipam {
            delegate_status(ipam, args)?;
        }
        if let Some(backend) = cfg.masquerade {
            berth_firewall::Masquerading::open(backend)
                .and_then(|m| m.status())
                .map_err(|e| error::status_error(&e))?;
        }
        if cfg.mac_spoof_check {
            spoof::Spoof::open().map_err(|e| error::status_error(&e))?;
        }
        Ok(())
    }

    fn gc(
        &self,
        args: &NetworkArgs,
        conf: &NetConf<BridgeConf>,
        valid: &[Attachment],
    ) -> Result<(), CniError> {
        Ok(teardown::gc(&TeardownConfig::from_conf(conf), args, valid)?)
    }
}
