//! DEL: release the IPAM reservation and delete the macvlan, both always attempted, at once.
//! Idempotent: a missing netns (or none given), link or reservation is success; failures are
//! collected and reported together after every step ran.

use berth_cni::CmdArgs;

use crate::error::{DelError, MacvlanError};
use crate::{ipam, ns};

pub fn del(args: &CmdArgs, ipam_kind: Option<&str>) -> Result<(), MacvlanError> {
    let mut errors = Vec::new();
    std::thread::scope(|s| {
        // The IPAM plugin is another process: it releases while the link is deleted.
        let ipam = ipam_kind.map(|kind| s.spawn(move || ipam::del(kind, args)));
        if let Err(e) = del_link(args) {
            errors.push(e);
        }
        if let Some(thread) = ipam {
            match thread.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => errors.push(e.into()),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    });
    MacvlanError::teardown(errors)
}

/// Deleting the macvlan removes its addresses and routes with it. A namespace that is gone
/// took the link with it: a macvlan never outlives its namespace.
fn del_link(args: &CmdArgs) -> Result<(), MacvlanError> {
    let Some(path) = args.netns_opt() else {
        return Ok(());
    };
    let ctr = match ns::open(path) {
        Ok(ctr) => ctr,
        Err(e) if e.is_gone() => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let ifname = args.ifname.as_str();
    ctr.nl
        .del_link_by_name_if_exists(ifname)
        .map(drop)
        .map_err(|source| {
            DelError::Link {
                ifname: ifname.to_owned(),
                netns: path.display().to_string(),
                source: Box::new(source),
            }
            .into()
        })
}
