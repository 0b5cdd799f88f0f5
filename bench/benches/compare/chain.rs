//! Section 1: CNI chain latency. N sequential containers, each a fresh netns: ADD, then DEL,
//! through the invoker. Ours and the reference alternate container by container (each in its
//! own "host" namespace), so both see the same background noise.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use berth_bench::{Cell, Row, Section, Stats, Unit};
use berth_cni::{Command, NetConfList};
use netns_fixtures::{TestNetns, test_subnet_v4, unique_name};
use tempfile::TempDir;

use crate::cni::{
    Driver, Impl, bandwidth_list, bridge_list, host_local_list, loopback_list, macvlan_list,
    p2p_list, runtime_conf, static_list, tuning_list,
};
use crate::{Opts, progress};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bridge { portmap: bool },
    P2p,
    HostLocal,
    Loopback,
    Tuning,
    Bandwidth,
    Static,
    Macvlan,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Bridge { portmap: true } => "bridge+host-local+portmap",
            Kind::Bridge { portmap: false } => "bridge+host-local",
            Kind::P2p => "veth+host-local",
            Kind::HostLocal => "host-local",
            Kind::Loopback => "loopback",
            Kind::Tuning => "bridge+host-local+tuning",
            Kind::Bandwidth => "veth+host-local+bandwidth",
            Kind::Static => "static",
            Kind::Macvlan => "macvlan+host-local",
        }
    }
}

/// A "host" namespace with its own state directories and a conflist for one plugin set.
pub struct World {
    pub imp: Impl,
    pub host: TestNetns,
    pub _tmp: TempDir,
    pub driver: Driver,
    pub list: NetConfList,
}

impl World {
    pub fn new(imp: &Impl, kind: Kind, subnet: &str) -> Result<World> {
        let host = TestNetns::with_tag("h")?;
        let tmp = tempfile::Builder::new().prefix("berth-bench-").tempdir()?;
        let data = tmp.path().join("data");
        let bridge = unique_name("br");
        let list = match kind {
            Kind::Bridge { portmap } => bridge_list(&bridge, subnet, &data, portmap)?,
            Kind::P2p => p2p_list(imp, subnet, &data)?,
            Kind::HostLocal => host_local_list(subnet, &data)?,
            Kind::Loopback => loopback_list()?,
            Kind::Tuning => tuning_list(&bridge, subnet, &data)?,
            Kind::Bandwidth => bandwidth_list(imp, subnet, &data)?,
            Kind::Static => static_list()?,
            Kind::Macvlan => {
                // The master: one end of a veth pair in the "host", up.
                let master = unique_name("mv");
                let peer = unique_name("mp");
                host.ip(&[
                    "link", "add", &master, "type", "veth", "peer", "name", &peer,
                ])?;
                host.ip(&["link", "set", &master, "up"])?;
                host.ip(&["link", "set", &peer, "up"])?;
                macvlan_list(&master, subnet, &data)?
            }
        };
        let driver = Driver::new(imp, &tmp.path().join("cache"));
        Ok(World {
            imp: imp.clone(),
            host,
            _tmp: tmp,
            driver,
            list,
        })
    }
}

/// What one plugin set gave over N containers.
#[derive(Debug, Default)]
pub struct Samples {
    pub add: Vec<f64>,
    pub del: Vec<f64>,
    /// Per plugin type and verb: the plugin's own execution time.
    pub plugin: BTreeMap<(String, &'static str), Vec<f64>>,
    /// Chain time minus the plugins' execution: the invoker's own work (JSON, result cache).
    pub overhead: Vec<f64>,
}

fn verb_key(v: Command) -> &'static str {
    match v {
        Command::Add => "add",
        Command::Del => "del",
        _ => "other",
    }
}

/// `n` measured containers (after `warm` unmeasured ones) of `kind` for every plugin set,
/// alternating between the sets.
pub fn measure(kind: Kind, imps: &[&Impl], n: usize, warm: usize) -> Result<Vec<Samples>> {
    let subnet = test_subnet_v4().to_string();
    let worlds = imps
        .iter()
        .map(|imp| World::new(imp, kind, &subnet))
        .collect::<Result<Vec<_>>>()?;
    let mut out: Vec<Samples> = imps.iter().map(|_| Samples::default()).collect();
    for i in 0..warm + n {
        for (w, samples) in worlds.iter().zip(out.iter_mut()) {
            let ctr = TestNetns::with_tag("c")?;
            let port = u16::try_from(10_000 + i).unwrap_or(10_000);
            let rt = runtime_conf(ctr.path(), Some(port))?;
            let (t_add, _) = w
                .driver
                .add(&w.host, &w.list, &rt)
                .with_context(|| format!("{} {}", w.imp.name, kind.label()))?;
            let ex_add = w.driver.take_execs();
            let t_del = w.driver.del(&w.host, &w.list, &rt)?;
            let ex_del = w.driver.take_execs();
            drop(ctr);
            if i < warm {
                continue;
            }
            samples.add.push(t_add);
            samples.del.push(t_del);
            samples
                .overhead
                .push(t_add - ex_add.iter().map(|e| e.ms).sum::<f64>());
            for e in ex_add.iter().chain(&ex_del) {
                samples
                    .plugin
                    .entry((e.plugin.clone(), verb_key(e.verb)))
                    .or_default()
                    .push(e.ms);
            }
        }
        if (i + 1) % 20 == 0 {
            progress("chain", format!("{}: {}/{}", kind.label(), i + 1, warm + n));
        }
    }
    Ok(out)
}

fn plugin_cell(s: &Samples, plugin: &str, verb: &str) -> Cell {
    s.plugin
        .get(&(plugin.to_owned(), verb))
        .map_or_else(|| Cell::na("not in this chain"), |v| Cell::samples(v))
}

pub fn run(opts: &Opts, s: &mut Section) -> Result<()> {
    let ours = Impl::ours();
    let theirs = Impl::reference()?;
    let (n, warm) = if opts.quick { (15, 2) } else { (60, 3) };
    let both = [&ours, &theirs];

    let bridge_kind = Kind::Bridge {
        portmap: ours.portmap,
    };
    progress(
        "chain",
        format!("{}: {n} containers each", bridge_kind.label()),
    );
    let br = measure(bridge_kind, &both, n, warm)?;
    progress("chain", format!("veth vs ptp: {n} containers each"));
    let p2p = measure(Kind::P2p, &both, n, warm)?;
    let ipam = measure(Kind::HostLocal, &both, n, warm)?;
    let lo = measure(Kind::Loopback, &both, n, warm)?;
    progress(
        "chain",
        format!("tuning, bandwidth, static, macvlan: {n} containers each"),
    );
    let tuning = measure(Kind::Tuning, &both, n, warm)?;
    let bandwidth = measure(Kind::Bandwidth, &both, n, warm)?;
    let stat = measure(Kind::Static, &both, n, warm)?;
    let macvlan = measure(Kind::Macvlan, &both, n, warm)?;

    for verb in ["add", "del"] {
        let pick = |x: &Samples| Cell::samples(if verb == "add" { &x.add } else { &x.del });
        let v = verb.to_uppercase();
        s.rows.push(Row::new(
            format!("chain.bridge.{verb}"),
            format!("{} chain {v}", bridge_kind.label()),
            Unit::Ms,
            pick(&br[0]),
            "reference",
            pick(&br[1]),
        ));
        s.rows.push(Row::new(
            format!("chain.veth.{verb}"),
            format!("veth+host-local chain {v}"),
            Unit::Ms,
            pick(&p2p[0]),
            "reference ptp+host-local",
            pick(&p2p[1]),
        ));
    }

    // Without our portmap, the reference's bridge+portmap chain still runs, so its portmap
    // figures are in the table waiting for ours.
    let portmap_ref = if ours.portmap {
        None
    } else {
        progress(
            "chain",
            "bridge+host-local+portmap: reference only (ours not built)",
        );
        let only = measure(Kind::Bridge { portmap: true }, &[&theirs], n, warm)?;
        only.into_iter().next()
    };
    if let Some(r) = &portmap_ref {
        for (verb, samples) in [("add", &r.add), ("del", &r.del)] {
            s.rows.push(Row::new(
                format!("chain.bridge-portmap.{verb}"),
                format!("bridge+host-local+portmap chain {}", verb.to_uppercase()),
                Unit::Ms,
                Cell::na("portmap not available yet"),
                "reference",
                Cell::samples(samples),
            ));
        }
    }

    // Per plugin: its own execution inside the chain (bridge and veth include their
    // host-local delegate, as a runtime sees them).
    for verb in ["add", "del"] {
        let v = verb.to_uppercase();
        s.rows.push(Row::new(
            format!("plugin.bridge.{verb}"),
            format!("bridge {v} (with host-local delegate)"),
            Unit::Ms,
            plugin_cell(&br[0], "bridge", verb),
            "reference",
            plugin_cell(&br[1], "bridge", verb),
        ));
        let theirs_portmap = match &portmap_ref {
            Some(r) => plugin_cell(r, "portmap", verb),
            None => plugin_cell(&br[1], "portmap", verb),
        };
        let ours_portmap = if ours.portmap {
            plugin_cell(&br[0], "portmap", verb)
        } else {
            Cell::na("portmap not available yet")
        };
        s.rows.push(Row::new(
            format!("plugin.portmap.{verb}"),
            format!("portmap {v} (1 mapping)"),
            Unit::Ms,
            ours_portmap,
            "reference",
            theirs_portmap,
        ));
        s.rows.push(Row::new(
            format!("plugin.veth.{verb}"),
            format!("veth {v} (with host-local delegate)"),
            Unit::Ms,
            plugin_cell(&p2p[0], "veth", verb),
            "reference ptp",
            plugin_cell(&p2p[1], "ptp", verb),
        ));
        s.rows.push(Row::new(
            format!("plugin.host-local.{verb}"),
            format!("host-local {v} (alone)"),
            Unit::Ms,
            plugin_cell(&ipam[0], "host-local", verb),
            "reference",
            plugin_cell(&ipam[1], "host-local", verb),
        ));
        s.rows.push(Row::new(
            format!("plugin.loopback.{verb}"),
            format!("loopback {v}"),
            Unit::Ms,
            plugin_cell(&lo[0], "loopback", verb),
            "reference",
            plugin_cell(&lo[1], "loopback", verb),
        ));
        for (samples, plugin, what) in [
            (&tuning, "tuning", "sysctl, mtu, promisc"),
            (&bandwidth, "bandwidth", "ingress tbf, egress ifb"),
            (&stat, "static", "alone"),
            (&macvlan, "macvlan", "with host-local delegate"),
        ] {
            s.rows.push(Row::new(
                format!("plugin.{plugin}.{verb}"),
                format!("{plugin} {v} ({what})"),
                Unit::Ms,
                plugin_cell(&samples[0], plugin, verb),
                "reference",
                plugin_cell(&samples[1], plugin, verb),
            ));
        }
    }
    if let (Some(o), Some(t)) = (Stats::of(&br[0].overhead), Stats::of(&br[1].overhead)) {
        s.notes.push(format!(
            "chain times include the invoker's own work (config JSON, result cache written with fsync): median {:.2} ms per ADD with ours, {:.2} ms with the reference; plugin rows are the plugin processes alone",
            o.median, t.median
        ));
    }
    s.notes.push(format!(
        "N = {n} sequential containers per chain and plugin set (after {warm} warm-up), each in a fresh netns; ours and the reference alternate container by container; cniVersion 1.0.0"
    ));
    Ok(())
}
