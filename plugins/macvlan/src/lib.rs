//! The `macvlan` plugin: a macvlan link on a master (parent) interface, created directly in
//! the container's namespace, with addresses from the IPAM plugin or none (layer 2 only).
//! A drop-in replacement for the reference plugin: same keys, same result, same error codes.
//!
//! - [`config`]: the keys and their validation; `master`: the parent link and its MTU bound.
//! - `add`, `check`, `del`: one verb each; `ipam`: delegation; `ns`: namespaces.
//! - [`error`]: the plugin's error and the one mapping to CNI codes.
//!
//! See README.md for the keys and where we differ from the reference.

mod add;
mod check;
pub mod config;
mod del;
pub mod error;
mod ipam;
mod master;
mod ns;
mod step;

use std::path::Path;

use berth_cni::{
    Attachment, CmdArgs, CniError, CniResult, ErrorCode, NetConf, NetworkArgs, Plugin,
};

use crate::config::{Config, MacvlanConf, ipam_kind, master_name};
use crate::error::MacvlanError;
pub use crate::step::Step;

/// The plugin. `failpoint` makes ADD fail right after that step (tests only; `main` uses
/// `Macvlan::default()`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Macvlan {
    pub failpoint: Option<Step>,
}

/// One ADD or CHECK call: its arguments and validated configuration.
pub(crate) struct Call<'a> {
    pub args: &'a CmdArgs,
    pub conf: &'a NetConf<MacvlanConf>,
    pub config: &'a Config,
    /// CNI_NETNS.
    pub netns: &'a Path,
    pub failpoint: Option<Step>,
}

impl Plugin for Macvlan {
    type Conf = MacvlanConf;

    fn add(&self, args: &CmdArgs, conf: &NetConf<MacvlanConf>) -> Result<CniResult, CniError> {
        let config = Config::for_attach(conf, args).map_err(MacvlanError::from)?;
        let call = Call {
            args,
            conf,
            config: &config,
            netns: args.netns()?,
            failpoint: self.failpoint,
        };
        add::add(&call).map_err(CniError::from)
    }

    /// Needs nothing but `ipam.type`, CNI_NETNS and CNI_IFNAME: a configuration whose master
    /// has gone, or whose other keys became invalid, can still be torn down.
    fn del(&self, args: &CmdArgs, conf: &NetConf<MacvlanConf>) -> Result<(), CniError> {
        del::del(args, ipam_kind(conf).as_deref()).map_err(CniError::from)
    }

    fn check(&self, args: &CmdArgs, conf: &NetConf<MacvlanConf>) -> Result<(), CniError> {
        let config = Config::for_attach(conf, args).map_err(MacvlanError::from)?;
        let call = Call {
            args,
            conf,
            config: &config,
            netns: args.netns()?,
            failpoint: None,
        };
        check::check(&call).map_err(CniError::from)
    }

    /// The IPAM plugin's STATUS, and the master: an ADD cannot succeed while it is missing
    /// (code 50). With `linkInContainer` the master lives in containers, so only IPAM counts.
    fn status(&self, args: &NetworkArgs, conf: &NetConf<MacvlanConf>) -> Result<(), CniError> {
        if let Some(kind) = ipam_kind(conf) {
            ipam::status(&kind, args).map_err(MacvlanError::from)?;
        }
        if conf.plugin.link_in_container.unwrap_or(false) {
            return Ok(());
        }
        let unavailable = |e: MacvlanError| CniError::from_error(ErrorCode::NotAvailable, &e);
        let master =
            master_name(conf.plugin.master.as_deref()).map_err(|e| unavailable(e.into()))?;
        let host = ns::host().map_err(|e| unavailable(e.into()))?;
        master::resolve(&host, master.as_ref(), master::HOST).map_err(|e| unavailable(e.into()))?;
        Ok(())
    }

    /// The IPAM plugin's GC. Links need none: a macvlan dies with its namespace.
    fn gc(
        &self,
        args: &NetworkArgs,
        conf: &NetConf<MacvlanConf>,
        _valid: &[Attachment],
    ) -> Result<(), CniError> {
        match ipam_kind(conf) {
            Some(kind) => ipam::gc(&kind, args)
                .map_err(MacvlanError::from)
                .map_err(CniError::from),
            None => Ok(()),
        }
    }
}
