//! The `veth` plugin: a point-to-point veth link from the container to the host (ptp's
//! behaviour and keys, under our name) or to another container's namespace.
//!
//! - [`config`]: the keys and their validation; `routing`: the address and route layout of
//!   each end (ptp's, for host mode).
//! - `host` and `peer`: one mode each, with `add`, `del` and `check` side by side.
//! - `pair`: the veth pair; `ns`: namespaces; `ipam`: delegation; `ipMasq` through berth-firewall's `Masquerading`;
//!   `forwarding`: the host's sysctls; `check`: CHECK's bookkeeping; `attachment`: the names
//!   derived from (network, container, ifname); `step`: ADD's steps, for failpoints.
//! - [`error`]: the plugin's error and the one mapping to CNI codes.
//!
//! See README.md for the keys and semantics.

mod attachment;
mod check;
pub mod config;
pub mod error;
mod forwarding;
mod host;
mod ipam;
mod ns;
mod pair;
mod peer;
mod result;
mod routing;
mod step;

use berth_cni::{
    Attachment as GcAttachment, CmdArgs, CniError, CniResult, NetConf, NetworkArgs, Plugin,
};

use crate::attachment::Attachment;
use crate::config::{Config, Host, Mode, VethConf};
use crate::error::VethError;
pub use crate::step::Step;

/// The plugin. `failpoint` makes ADD fail right after that step (tests only; `main` uses
/// `Veth::default()`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Veth {
    pub failpoint: Option<Step>,
}

/// One ADD/DEL/CHECK call: its arguments, its validated configuration.
pub(crate) struct Call<'a> {
    pub args: &'a CmdArgs,
    pub conf: &'a NetConf<VethConf>,
    pub config: &'a Config,
    pub failpoint: Option<Step>,
}

impl Call<'_> {
    pub fn attachment(&self) -> Attachment<'_> {
        Attachment::new(&self.conf.name, self.args)
    }

    /// The failpoint: fail right after `step` if asked to.
    pub fn reached(&self, step: Step) -> Result<(), VethError> {
        match self.failpoint {
            Some(fail) if fail == step => Err(VethError::Failpoint(step)),
            _ => Ok(()),
        }
    }

    pub fn prev_result(&self) -> Result<&CniResult, VethError> {
        self.conf
            .prev_result
            .as_ref()
            .ok_or(VethError::NoPrevResult)
    }
}

fn config(conf: &NetConf<VethConf>) -> Result<Config, CniError> {
    Config::from_netconf(conf).map_err(|e| VethError::from(e).into())
}

impl Plugin for Veth {
    type Conf = VethConf;

    fn add(&self, args: &CmdArgs, conf: &NetConf<VethConf>) -> Result<CniResult, CniError> {
        let config = config(conf)?;
        let netns = args.netns()?;
        let call = Call {
            args,
            conf,
            config: &config,
            failpoint: self.failpoint,
        };
        match &config.mode {
            Mode::Host(host) => host::add(&call, netns, host),
            Mode::Peer(peer) => peer::add(&call, netns, peer),
        }
        .map_err(CniError::from)
    }

    fn del(&self, args: &CmdArgs, conf: &NetConf<VethConf>) -> Result<(), CniError> {
        let config = config(conf)?;
        let call = Call {
            args,
            conf,
            config: &config,
            failpoint: None,
        };
        match &config.mode {
            Mode::Host(host) => host::del(&call, host),
            Mode::Peer(peer) => peer::del(&call, peer),
        }
        .map_err(CniError::from)
    }

    fn check(&self, args: &CmdArgs, conf: &NetConf<VethConf>) -> Result<(), CniError> {
        let config = config(conf)?;
        let netns = args.netns()?;
        let call = Call {
            args,
            conf,
            config: &config,
            failpoint: None,
        };
        match &config.mode {
            Mode::Host(host) => host::check(&call, netns, host),
            Mode::Peer(peer) => peer::check(&call, netns, peer),
        }
        .map_err(CniError::from)
    }

    /// The IPAM plugin's status, and with `ipMasq` the firewall backend's.
    fn status(&self, args: &NetworkArgs, conf: &NetConf<VethConf>) -> Result<(), CniError> {
        let config = config(conf)?;
        if let Some(kind) = config.ipam() {
            ipam::status(kind, args).map_err(VethError::from)?;
        }
        if let Mode::Host(Host { masq: Some(m), .. }) = config.mode {
            berth_firewall::Masquerading::open(m.backend)
                .and_then(|fw| fw.status())
                .map_err(VethError::from)?;
        }
        Ok(())
    }

    /// IPAM GC, and with `ipMasq` the masquerade rules of attachments not in `valid`. Links
    /// need no GC: a pair dies with either of its namespaces.
    fn gc(
        &self,
        args: &NetworkArgs,
        conf: &NetConf<VethConf>,
        valid: &[GcAttachment],
    ) -> Result<(), CniError> {
        let config = config(conf)?;
        let mut errors = Vec::new();
        if let Some(kind) = config.ipam() {
            if let Err(e) = ipam::gc(kind, args) {
                errors.push(VethError::from(e));
            }
        }
        if let Mode::Host(Host { masq: Some(m), .. }) = config.mode {
            let keep = berth_firewall::Owner::of_network(
                conf.name.as_str(),
                valid
                    .iter()
                    .map(|a| (a.container_id.as_str(), a.ifname.as_str())),
            );
            if let Err(e) = berth_firewall::Masquerading::open(m.backend)
                .and_then(|fw| fw.gc(conf.name.as_str(), &keep))
            {
                errors.push(e.into());
            }
        }
        VethError::teardown(errors).map_err(CniError::from)
    }
}
