//! ADD: shape traffic into the container on the host end of its veth, and traffic out of it on
//! an ifb device that the host end's received traffic is redirected to.
//!
//! Traffic control only shapes what a link *sends*. Traffic into the container is sent by the
//! host end, so its root qdisc shapes it directly. Traffic out of the container is *received*
//! by the host end: an `ingress` qdisc there catches it, and a u32 filter with a `mirred`
//! action hands every frame to the ifb device, whose root qdisc shapes it as the ifb sends it
//! back into the host's stack.

use berth_cni::{CniResult, Interface};
use berth_netlink::{Handle, Rollback, U32Filter, format_mac};

use crate::Call;
use crate::error::BandwidthError;
use crate::host::{self, Container};
use crate::plan::Plan;
use crate::shape::{ROOT_HANDLE, UNSHAPED_CLASS};
use crate::step::Step;

/// The ifb's queue length when the host end's is lower (the newer reference's floor): an htb
/// class's default queue is as long as the device's.
const MIN_IFB_TXQLEN: u32 = 1000;

pub(crate) fn add(call: &Call<'_>) -> Result<CniResult, BandwidthError> {
    if call.limits.is_zero() {
        return Ok(call.prev_result()?.clone());
    }
    let prev = call.prev_result()?;
    let ctr = Container::open(call.args.netns()?)?;
    let host = &crate::host_netlink()?;
    let ifname = call.args.ifname.as_str();
    let link = &host::find(host, &ctr, ifname, prev)?;
    let plan = Plan::new(&call.limits, link, &crate::clock()?)?;
    let mut result = prev.clone();

    let mut rollback = Rollback::new();
    if let Some(shaper) = &plan.ingress {
        shaper
            .install(host, link.index, || {
                rollback.push(
                    format!("delete the {} qdisc on {}", shaper.kind(), link.name),
                    move || {
                        host.del_qdisc(link.index, Handle::ROOT, ROOT_HANDLE)
                            .map(drop)
                    },
                );
            })
            .map_err(|source| BandwidthError::IngressShaper {
                link: link.name.clone(),
                source,
            })?;
        call.reached(Step::IngressShaper)?;
    }

    if let Some(shaper) = &plan.egress {
        let name = call.ifb_name();
        let ifb =
            host.add_ifb(&name, Some(link.mtu))
                .map_err(|source| BandwidthError::CreateIfb {
                    name: name.clone(),
                    source,
                })?;
        let ifb_index = ifb.index;
        rollback.push(format!("delete ifb {name}"), move || {
            host.del_link(ifb_index)
        });
        let configure = |source| BandwidthError::ConfigureIfb {
            name: name.clone(),
            source,
        };
        host.set_txqlen(ifb.index, link.txqlen.max(MIN_IFB_TXQLEN))
            .map_err(configure)?;
        host.set_alias(ifb.index, &crate::ifb::owner_alias(call.conf.name.as_str()))
            .map_err(configure)?;
        host.set_up(ifb.index).map_err(configure)?;
        call.reached(Step::Ifb)?;

        host.add_ingress_qdisc(link.index)
            .map_err(|source| BandwidthError::IngressHook {
                link: link.name.clone(),
                source,
            })?;
        rollback.push(
            format!("delete the ingress qdisc on {}", link.name),
            move || {
                host.del_qdisc(link.index, Handle::INGRESS, Handle::INGRESS_QDISC)
                    .map(drop)
            },
        );
        call.reached(Step::IngressHook)?;

        // Every frame, any protocol. The class id means nothing to the ingress qdisc; the
        // reference sets it, and `tc filter show` then reads the same for both.
        let redirect = U32Filter {
            parent: Handle::INGRESS_QDISC,
            priority: 1,
            protocol: berth_netlink::ETH_P_ALL,
            classid: Some(UNSHAPED_CLASS),
            keys: Vec::new(),
            redirect_to: Some(ifb.index),
        };
        host.add_u32_filter(link.index, &redirect)
            .map_err(|source| BandwidthError::Redirect {
                link: link.name.clone(),
                ifb: name.clone(),
                source: Box::new(source),
            })?;
        call.reached(Step::Redirect)?;

        shaper
            .install(host, ifb.index, || {}) // deleting the ifb undoes it
            .map_err(|source| BandwidthError::EgressShaper {
                ifb: name.clone(),
                source,
            })?;
        call.reached(Step::EgressShaper)?;

        result.interfaces.push(Interface {
            name: name.clone(),
            mac: ifb.mac.as_ref().map(format_mac),
            ..Interface::default()
        });
    }
    rollback.commit();
    Ok(result)
}
