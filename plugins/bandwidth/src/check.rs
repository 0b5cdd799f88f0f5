//! CHECK: the qdiscs, classes and filters on the host end and the ifb are what ADD would
//! program for this configuration, and a direction the configuration does not limit carries
//! none of this plugin's shaping. Every difference is reported, not just the first.

use berth_netlink::{Handle, HtbClass, Link, Netlink, Qdisc, U32Filter};

use crate::Call;
use crate::error::BandwidthError;
use crate::host::{self, Container};
use crate::plan::{Plan, Shaper};
use crate::shape::{HtbLayout, ROOT_HANDLE};

pub(crate) fn check(call: &Call<'_>) -> Result<(), BandwidthError> {
    let prev = call.prev_result()?;
    let ctr = Container::open(call.args.netns()?)?;
    let host = crate::host_netlink()?;
    let link = host::find(&host, &ctr, call.args.ifname.as_str(), prev)?;
    let plan = Plan::new(&call.limits, &link, &crate::clock()?)?;
    let mut problems = Vec::new();

    check_root(
        &host,
        &link,
        plan.ingress.as_ref(),
        "ingress",
        &mut problems,
    )?;

    let name = call.ifb_name();
    let ifb = host
        .link_by_name(&name)
        .map_err(|source| BandwidthError::InspectLink {
            link: name.clone(),
            source,
        })?;
    match (&plan.egress, ifb) {
        (Some(shaper), Some(ifb)) => {
            if !ifb.up {
                problems.push(format!("ifb {name} is down"));
            }
            if ifb.mtu != link.mtu {
                problems.push(format!(
                    "ifb {name} has MTU {}, {} has {}",
                    ifb.mtu, link.name, link.mtu
                ));
            }
            let filters = host
                .filters(link.index, Handle::INGRESS_QDISC)
                .map_err(|source| inspect(&link, source))?;
            if !filters
                .iter()
                .any(|f| f.rule.redirect_to == Some(ifb.index))
            {
                problems.push(format!(
                    "no filter on {} redirects the container's traffic to {name}",
                    link.name
                ));
            }
            check_root(&host, &ifb, Some(shaper), "egress", &mut problems)?;
        }
        (Some(_), None) => problems.push(format!("egress is limited, but ifb {name} is missing")),
        (None, Some(_)) => problems.push(format!("egress is not limited, but ifb {name} exists")),
        (None, None) => {}
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(BandwidthError::Check(problems))
    }
}

fn inspect(link: &Link, source: berth_netlink::TcError) -> BandwidthError {
    BandwidthError::InspectTc {
        link: link.name.clone(),
        source,
    }
}

/// Compares the root qdisc of `link` with `want` (`None`: none of ours may be there).
fn check_root(
    host: &Netlink,
    link: &Link,
    want: Option<&Shaper>,
    direction: &str,
    problems: &mut Vec<String>,
) -> Result<(), BandwidthError> {
    let qdiscs = host
        .qdiscs(link.index)
        .map_err(|source| inspect(link, source))?;
    let root = qdiscs.iter().find(|q| q.parent == Handle::ROOT);
    let ours = |q: &&Qdisc| q.handle == ROOT_HANDLE && matches!(q.kind.as_str(), "tbf" | "htb");
    let Some(want) = want else {
        if let Some(q) = root.filter(ours) {
            problems.push(format!(
                "{direction} is not limited, but {} has a {} qdisc {} at its root",
                link.name, q.kind, q.handle
            ));
        }
        return Ok(());
    };
    let Some(q) = root.filter(|q| q.handle == ROOT_HANDLE && q.kind == want.kind()) else {
        problems.push(format!(
            "{direction}: expected a {} qdisc {ROOT_HANDLE} at the root of {}, found {}",
            want.kind(),
            link.name,
            root.map_or_else(|| "none".to_owned(), |q| format!("{} {}", q.kind, q.handle))
        ));
        return Ok(());
    };
    match want {
        Shaper::Tbf(want) => match q.tbf {
            Some(have) => {
                let mut differ = |what: &str, have: u64, want: u64| {
                    if have != want {
                        problems.push(format!(
                            "{direction}: tbf on {} has {what} {have}, expected {want}",
                            link.name
                        ));
                    }
                };
                differ("rate (bytes/s)", have.rate, want.rate);
                differ(
                    "buffer (ticks)",
                    u64::from(have.buffer),
                    u64::from(want.buffer),
                );
                differ(
                    "limit (bytes)",
                    u64::from(have.limit),
                    u64::from(want.limit),
                );
            }
            None => problems.push(format!(
                "{direction}: the kernel reported no parameters for the tbf on {}",
                link.name
            )),
        },
        Shaper::Htb(layout) => check_htb(host, link, q, layout, direction, problems)?,
    }
    Ok(())
}

fn check_htb(
    host: &Netlink,
    link: &Link,
    qdisc: &Qdisc,
    want: &HtbLayout,
    direction: &str,
    problems: &mut Vec<String>,
) -> Result<(), BandwidthError> {
    let at = format!("{direction}: htb on {}", link.name);
    match qdisc.htb {
        Some(htb) if htb.default_class == want.qdisc.default_class => {}
        Some(htb) => problems.push(format!(
            "{at} sends unclassified traffic to class {:x}, expected {:x}",
            htb.default_class, want.qdisc.default_class
        )),
        None => problems.push(format!("{at}: the kernel reported no parameters")),
    }
    let classes = host
        .htb_classes(link.index)
        .map_err(|source| inspect(link, source))?;
    // The kernel reports classes right under the qdisc with parent `root`, whatever the request
    // said: compare without the parent.
    let key = |c: &HtbClass| (c.classid, c.rate, c.ceil, c.buffer);
    for class in &want.classes {
        match classes.iter().find(|c| c.classid == class.classid) {
            Some(have) if key(have) == key(class) => {}
            Some(have) => problems.push(format!(
                "{at}: class {} has rate {} ceil {} buffer {}, expected {} {} {}",
                class.classid,
                have.rate,
                have.ceil,
                have.buffer,
                class.rate,
                class.ceil,
                class.buffer
            )),
            None => problems.push(format!("{at}: class {} is missing", class.classid)),
        }
    }
    if classes.len() != want.classes.len() {
        problems.push(format!(
            "{at} has {} classes, expected {}",
            classes.len(),
            want.classes.len()
        ));
    }
    let filters = host
        .filters(link.index, ROOT_HANDLE)
        .map_err(|source| inspect(link, source))?;
    let normalize = |f: &U32Filter| {
        let mut keys = f.keys.clone();
        keys.sort();
        (f.priority, f.protocol, f.classid, keys)
    };
    let mut have: Vec<_> = filters.iter().map(|f| normalize(&f.rule)).collect();
    let mut expected: Vec<_> = want.filters.iter().map(normalize).collect();
    have.sort();
    expected.sort();
    if have != expected {
        problems.push(format!(
            "{at} has {} subnet filters that differ from the {} configured",
            have.len(),
            expected.len()
        ));
    }
    Ok(())
}
