//! Section 2: scale. One bridge in one "host" namespace; at each level L the host already has
//! L − 1 live attachments (filled quickly, in parallel, untimed, by the same plugin set), then
//! a sample of ADD/DEL pairs is timed: the curve shows whether a plugin's cost grows with
//! what is already there (links on the bridge, IPAM files, iptables rules).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use berth_bench::{Cell, Row, Section, Stats, Unit};
use berth_cni::invoke::RuntimeConf;
use berth_cni::{Command, NetConfList};
use netns_fixtures::{TestNetns, unique_name};

use crate::cni::{Driver, Impl, bridge_list, runtime_conf};
use crate::{Opts, progress};

/// Carved from 198.18.0.0/15 inside our own throwaway host namespace: 4094 addresses.
const SUBNET: &str = "198.19.0.0/20";
const FILL_WORKERS: usize = 4;
/// How much slower filling to the next level is than the last fill (the curve grows; the
/// reference's fill rate halved between 250 and 500 live here).
const FILL_GROWTH: f64 = 2.0;

struct Point {
    live: usize,
    add: Vec<f64>,
    del: Vec<f64>,
    /// Per plugin and verb: the median of its own execution time at this level.
    plugins: BTreeMap<(String, &'static str), f64>,
}

struct Curve {
    points: Vec<Point>,
    /// Attachments per second while filling.
    fill_rate: f64,
    /// Why the curve stops before the last level.
    skipped: Option<String>,
}

pub fn run(opts: &Opts, s: &mut Section) -> Result<()> {
    let ours = Impl::ours();
    let theirs = Impl::reference()?;
    let (levels, k): (&[usize], usize) = if opts.quick {
        (&[1, 100], 8)
    } else {
        (&[1, 100, 250, 500, 1000], 15)
    };
    let portmap = ours.portmap;
    let label = if portmap {
        "bridge+host-local+portmap"
    } else {
        "bridge+host-local"
    };
    // Per plugin set, so that the whole run stays under 10 minutes on 2 cores.
    let budget =
        Duration::from_secs(
            opts.scale_budget
                .unwrap_or(if opts.quick { 30 } else { 120 }),
        );
    let o = curve(&ours, levels, k, portmap, budget)?;
    let t = curve(&theirs, levels, k, portmap, budget)?;
    let side = |c: &Curve, level: usize, del: bool| -> Cell {
        match c.points.iter().find(|p| p.live == level) {
            Some(p) => Cell::samples(if del { &p.del } else { &p.add }),
            None => Cell::na("not reached in the time budget"),
        }
    };
    for &level in levels {
        for (verb, del) in [("add", false), ("del", true)] {
            s.rows.push(Row::new(
                format!("scale.{level}.{verb}"),
                format!("{label} {} at {level} live", verb.to_uppercase()),
                Unit::Ms,
                side(&o, level, del),
                "reference",
                side(&t, level, del),
            ));
        }
    }
    // Where the growth is: each plugin's own time at the first and the last level reached.
    for (who, c) in [("ours", &o), ("reference", &t)] {
        if let (Some(first), Some(last)) = (c.points.first(), c.points.last()) {
            let parts: Vec<String> =
                last.plugins
                    .iter()
                    .filter_map(|(key, at_last)| {
                        first.plugins.get(key).map(|at_first| {
                            format!("{} {} {at_first:.1} → {at_last:.1}", key.0, key.1)
                        })
                    })
                    .collect();
            s.notes.push(format!(
                "{who}, median ms per plugin at {} → {} live: {}",
                first.live,
                last.live,
                parts.join(", ")
            ));
        }
    }
    for reason in [&o.skipped, &t.skipped].into_iter().flatten() {
        s.notes
            .push(format!("{reason}: the remaining levels are not measured"));
    }
    s.notes.push(format!(
        "{k} timed ADD/DEL pairs per level; the level counts the timed attachment (L − 1 others live); one mapping per attachment when portmap is in the chain; filled at {:.0}/s (ours) and {:.0}/s (reference) with {FILL_WORKERS} workers",
        o.fill_rate, t.fill_rate
    ));
    if !portmap {
        s.notes.push(
            "without our portmap the curve is bridge+host-local for both; the reference's portmap at scale is not measured yet".into(),
        );
    }
    Ok(())
}

fn curve(imp: &Impl, levels: &[usize], k: usize, portmap: bool, budget: Duration) -> Result<Curve> {
    let host = TestNetns::with_tag("h")?;
    let tmp = tempfile::Builder::new().prefix("berth-bench-").tempdir()?;
    let list = bridge_list(
        &unique_name("br"),
        SUBNET,
        &tmp.path().join("data"),
        portmap,
    )?;
    let cache = tmp.path().join("cache");
    let timed = Driver::new(imp, &cache);
    let filler = Driver::quiet(imp, &cache);
    let port = AtomicU16::new(20_000);
    let next_port = || Some(port.fetch_add(1, Ordering::Relaxed));
    let mut live: Vec<(TestNetns, RuntimeConf)> = Vec::new();
    let mut points = Vec::new();
    let mut fill_secs = 0.0;
    let mut skipped = None;
    let mut last_fill_rate: Option<f64> = None;
    let started = Instant::now();
    for &level in levels {
        // Estimate the fill from the last one's rate (or, before any fill, from the timed ADD
        // run serially), growing on the way: stop where that would break the time budget.
        if let Some(last) = points.last().and_then(|p: &Point| Stats::of(&p.add)) {
            let missing = (level - 1).saturating_sub(live.len());
            let rate = last_fill_rate.unwrap_or(1e3 / last.median);
            #[allow(clippy::cast_precision_loss)] // a few thousand at most
            let estimate = missing as f64 / rate * FILL_GROWTH;
            let left = budget.as_secs_f64() - started.elapsed().as_secs_f64();
            if estimate > left {
                skipped = Some(format!(
                    "filling {} from {} to {} live would take about {estimate:.0} s (ADD at {} live: {:.0} ms), {:.0} s of its {} s left",
                    imp.name,
                    live.len(),
                    level - 1,
                    points.last().map_or(0, |p: &Point| p.live),
                    last.median,
                    left.max(0.0),
                    budget.as_secs()
                ));
                progress("scale", skipped.as_deref().unwrap_or_default());
                break;
            }
        }
        let before = live.len();
        let t = Instant::now();
        fill(&host, &filler, &list, &mut live, level - 1, &next_port)?;
        let secs = t.elapsed().as_secs_f64();
        fill_secs += secs;
        if live.len() > before && secs > 0.0 {
            #[allow(clippy::cast_precision_loss)] // a few thousand at most
            let rate = (live.len() - before) as f64 / secs;
            last_fill_rate = Some(rate);
        }
        progress(
            "scale",
            format!("{}: {} live, timing {k} ADD/DEL", imp.name, live.len()),
        );
        let mut p = Point {
            live: level,
            add: Vec::new(),
            del: Vec::new(),
            plugins: BTreeMap::new(),
        };
        for _ in 0..k {
            let ctr = TestNetns::with_tag("c")?;
            let rt = runtime_conf(ctr.path(), next_port())?;
            let (a, _) = timed.add(&host, &list, &rt)?;
            let d = timed.del(&host, &list, &rt)?;
            p.add.push(a);
            p.del.push(d);
        }
        let mut by_plugin: BTreeMap<(String, &'static str), Vec<f64>> = BTreeMap::new();
        for e in timed.take_execs() {
            let verb = if e.verb == Command::Add { "ADD" } else { "DEL" };
            by_plugin.entry((e.plugin, verb)).or_default().push(e.ms);
        }
        p.plugins = by_plugin
            .into_iter()
            .filter_map(|(k, v)| Stats::of(&v).map(|st| (k, st.median)))
            .collect();
        points.push(p);
    }
    let filled = live.len();
    let t = Instant::now();
    // Dropping the namespaces removes every veth with them; the host namespace and its
    // iptables rules go last. No DEL needed: nothing of this exists outside them.
    drop(live);
    drop(host);
    progress(
        "scale",
        format!(
            "{}: {filled} attachments torn down in {:.1}s",
            imp.name,
            t.elapsed().as_secs_f64()
        ),
    );
    #[allow(clippy::cast_precision_loss)] // at most a few thousand
    let fill_rate = if fill_secs > 0.0 {
        filled as f64 / fill_secs
    } else {
        0.0
    };
    Ok(Curve {
        points,
        fill_rate,
        skipped,
    })
}

/// Adds attachments in parallel until `live` holds `target`.
fn fill(
    host: &TestNetns,
    driver: &Driver,
    list: &NetConfList,
    live: &mut Vec<(TestNetns, RuntimeConf)>,
    target: usize,
    next_port: &(dyn Fn() -> Option<u16> + Sync),
) -> Result<()> {
    let missing = target.saturating_sub(live.len());
    if missing == 0 {
        return Ok(());
    }
    let per_worker = missing.div_ceil(FILL_WORKERS);
    let batches = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..FILL_WORKERS)
            .map(|w| {
                let count = per_worker.min(missing.saturating_sub(w * per_worker));
                scope.spawn(move || -> Result<Vec<(TestNetns, RuntimeConf)>> {
                    let mut mine = Vec::with_capacity(count);
                    for _ in 0..count {
                        let ctr = TestNetns::with_tag("c")?;
                        let rt = runtime_conf(ctr.path(), next_port())?;
                        driver.add(host, list, &rt)?;
                        mine.push((ctr, rt));
                    }
                    Ok(mine)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| anyhow!("fill worker panicked"))?)
            .collect::<Result<Vec<_>>>()
    })?;
    live.extend(batches.into_iter().flatten());
    Ok(())
}
