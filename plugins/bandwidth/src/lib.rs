//! The `bandwidth` plugin: rate limits on a container's veth, in both directions, programmed
//! over rtnetlink (no `tc` processes).
//!
//! - [`config`]: the keys (top level or the `bandwidth` capability) and their validation;
//!   `shape`: from bits to the kernel's bytes and ticks, exactly as the reference computes
//!   them; `plan`: the shapers one ADD programs, checked before anything is touched.
//! - `host`: the host end of the container's veth; `ifb`: the egress device's name and mark.
//! - `add`, `del` (DEL and GC) and `check`: the verbs.
//! - [`error`]: the plugin's error and the one mapping to CNI codes.
//!
//! See README.md for the keys, their units and the differences from the reference.

mod add;
mod check;
pub mod config;
mod del;
pub mod error;
mod host;
mod ifb;
mod plan;
mod shape;
mod step;

use berth_cni::{Attachment, CmdArgs, CniError, CniResult, NetConf, NetworkArgs, Plugin};
use berth_netlink::{Netlink, TcClock};

use crate::config::{BandwidthConf, Limits};
use crate::error::BandwidthError;
pub use crate::ifb::name as ifb_name;
pub use crate::step::Step;

/// The plugin. `failpoint` makes ADD fail right after that step (tests only; `main` uses
/// `Bandwidth::default()`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Bandwidth {
    pub failpoint: Option<Step>,
}

/// One ADD/DEL/CHECK call: its arguments and its validated configuration.
pub(crate) struct Call<'a> {
    pub args: &'a CmdArgs,
    pub conf: &'a NetConf<BandwidthConf>,
    pub limits: Limits,
    pub failpoint: Option<Step>,
}

impl Call<'_> {
    /// Fails right after `step` if a test asked for it.
    pub fn reached(&self, step: Step) -> Result<(), BandwidthError> {
        match self.failpoint {
            Some(fail) if fail == step => Err(BandwidthError::Failpoint(step)),
            _ => Ok(()),
        }
    }

    pub fn prev_result(&self) -> Result<&CniResult, BandwidthError> {
        self.conf
            .prev_result
            .as_ref()
            .ok_or(BandwidthError::NoPrevResult)
    }

    /// The ifb device of this attachment.
    pub fn ifb_name(&self) -> String {
        ifb::name(self.conf.name.as_str(), self.args.container_id.as_str())
    }
}

/// The plugin runs in the host's namespace; this handle stays bound to it.
pub(crate) fn host_netlink() -> Result<Netlink, BandwidthError> {
    Netlink::open_current().map_err(BandwidthError::OpenHost)
}

pub(crate) fn clock() -> Result<TcClock, BandwidthError> {
    TcClock::read().map_err(BandwidthError::Clock)
}

fn call<'a>(
    args: &'a CmdArgs,
    conf: &'a NetConf<BandwidthConf>,
    failpoint: Option<Step>,
) -> Result<Call<'a>, BandwidthError> {
    Ok(Call {
        args,
        conf,
        limits: Limits::from_netconf(conf)?,
        failpoint,
    })
}

impl Plugin for Bandwidth {
    type Conf = BandwidthConf;

    fn add(&self, args: &CmdArgs, conf: &NetConf<BandwidthConf>) -> Result<CniResult, CniError> {
        let call = call(args, conf, self.failpoint)?;
        add::add(&call).map_err(CniError::from)
    }

    fn del(&self, args: &CmdArgs, conf: &NetConf<BandwidthConf>) -> Result<(), CniError> {
        // DEL does not need valid limits: it removes whatever this attachment has.
        let call = Call {
            args,
            conf,
            limits: Limits::default(),
            failpoint: None,
        };
        del::del(&call).map_err(CniError::from)
    }

    fn check(&self, args: &CmdArgs, conf: &NetConf<BandwidthConf>) -> Result<(), CniError> {
        let call = call(args, conf, None)?;
        check::check(&call).map_err(CniError::from)
    }

    /// Nothing outside the kernel to depend on: a valid configuration and a readable tc clock.
    fn status(&self, _: &NetworkArgs, conf: &NetConf<BandwidthConf>) -> Result<(), CniError> {
        Limits::from_netconf(conf).map_err(BandwidthError::from)?;
        clock()?;
        Ok(())
    }

    /// Deletes this network's ifb devices whose container is not in `valid`, after removing
    /// the shaping of any host end that still redirects to them.
    fn gc(
        &self,
        _: &NetworkArgs,
        conf: &NetConf<BandwidthConf>,
        valid: &[Attachment],
    ) -> Result<(), CniError> {
        del::gc(conf.name.as_str(), valid).map_err(CniError::from)
    }
}
