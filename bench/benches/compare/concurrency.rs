//! Section 3: concurrency. 8 workers × 200 containers on one bridge and one IPAM store. Every
//! container's netns is created first (untimed); then each worker ADDs its containers in
//! order, keeping up to `WINDOW` of them live and deleting its oldest past that, so ADDs and
//! DELs of different workers interleave and released addresses get reused. A duplicate is an
//! address held by two attachments at once. Afterwards nothing may be left: no links in the
//! host namespace but `lo` and the bridge, no IPAM reservation, no cache entry, no iptables
//! or nftables rule that was not there before the first container.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, anyhow};
use berth_bench::{Cell, Row, Section, Unit};
use berth_cni::invoke::RuntimeConf;
use netns_fixtures::{TestNetns, unique_name};

use crate::cni::{Driver, Impl, bridge_list, first_ip, ms_since, runtime_conf};
use crate::{Opts, progress};

/// A /22 (1022 addresses) for up to 8 × WINDOW = 200 live attachments: host-local wraps
/// around during the run, so addresses released by one worker are handed to another.
const SUBNET: &str = "198.19.16.0/22";
const WORKERS: usize = 8;
/// Live attachments per worker at most. One Linux bridge takes at most 1023 ports
/// (BR_MAX_PORTS; the next attach fails with EXFULL), so 1600 cannot be live at once.
const WINDOW: usize = 25;

#[derive(Debug, Default)]
struct Outcome {
    wall_s: f64,
    add_ms: Vec<f64>,
    del_ms: Vec<f64>,
    errors: usize,
    first_error: Option<String>,
    duplicates: usize,
    leftovers: Vec<String>,
}

pub fn run(opts: &Opts, s: &mut Section) -> Result<()> {
    let ours = Impl::ours();
    let theirs = Impl::reference()?;
    // The reference takes about a second per ADD under 8-way contention here (its iptables
    // calls serialize), so 8×200 of it would not fit the time budget: the side-by-side runs
    // at a small size, and ours alone at the full size.
    let (side_by_side, full) = if opts.quick {
        (10, None)
    } else {
        (10, Some(200))
    };
    let o = storm(&ours, side_by_side)?;
    let t = storm(&theirs, side_by_side)?;
    rows(s, side_by_side, &o, "reference", Some(&t));
    if let Some(per_worker) = full {
        let o = storm(&ours, per_worker)?;
        rows(s, per_worker, &o, "reference (not run at this size)", None);
    }
    Ok(())
}

fn rows(s: &mut Section, per_worker: usize, o: &Outcome, vs: &str, t: Option<&Outcome>) {
    let n = WORKERS * per_worker;
    let label = format!("{WORKERS}×{per_worker}");
    let suffix = if t.is_some() { "" } else { ".full" };
    let na = || Cell::na("too slow for the time budget");
    #[allow(clippy::cast_precision_loss)] // small counts
    let count = |x: usize| Cell::value(x as f64);
    let theirs = |f: &dyn Fn(&Outcome) -> Cell| t.map_or_else(na, f);
    s.rows.push(Row::new(
        format!("concurrency.total{suffix}"),
        format!("{label}: wall time"),
        Unit::S,
        Cell::value(o.wall_s),
        vs,
        theirs(&|t| Cell::value(t.wall_s)),
    ));
    s.rows.push(Row::new(
        format!("concurrency.add{suffix}"),
        format!("{label}: one ADD under contention"),
        Unit::Ms,
        Cell::samples(&o.add_ms),
        vs,
        theirs(&|t| Cell::samples(&t.add_ms)),
    ));
    s.rows.push(Row::new(
        format!("concurrency.del{suffix}"),
        format!("{label}: one DEL under contention"),
        Unit::Ms,
        Cell::samples(&o.del_ms),
        vs,
        theirs(&|t| Cell::samples(&t.del_ms)),
    ));
    type Get = fn(&Outcome) -> usize;
    let counters: [(&str, &str, Get); 3] = [
        ("errors", "errors", |x| x.errors),
        ("duplicates", "duplicate addresses", |x| x.duplicates),
        ("leftovers", "leftovers after DEL", |x| x.leftovers.len()),
    ];
    for (id, what, get) in counters {
        s.rows.push(Row::new(
            format!("concurrency.{id}{suffix}"),
            format!("{label}: {what}"),
            Unit::Count,
            count(get(o)),
            vs,
            theirs(&|t| count(get(t))),
        ));
    }
    let mut sides = vec![("ours", o)];
    sides.extend(t.map(|t| ("reference", t)));
    for (who, out) in sides {
        if let Some(e) = &out.first_error {
            s.notes
                .push(format!("{label}, {who}: {} errors, first: {e}", out.errors));
        }
        if !out.leftovers.is_empty() {
            let shown: Vec<_> = out.leftovers.iter().take(5).cloned().collect();
            s.notes
                .push(format!("{label}, {who} left behind: {}", shown.join(", ")));
        }
    }
    s.notes.push(format!(
        "{label}: {n} containers, up to {} live at once (ours wall {:.1} s{})",
        WORKERS * WINDOW.min(per_worker),
        o.wall_s,
        t.map_or_else(String::new, |t| format!(", reference {:.1} s", t.wall_s))
    ));
}

/// One attachment's life as a worker saw it.
struct Life {
    ip: Option<String>,
    /// ADD returned: from here on the address is certainly the container's...
    added: Instant,
    /// ...until its DEL starts.
    released: Instant,
}

fn storm(imp: &Impl, per_worker: usize) -> Result<Outcome> {
    let host = TestNetns::with_tag("h")?;
    let tmp = tempfile::Builder::new().prefix("berth-bench-").tempdir()?;
    let data = tmp.path().join("data");
    let bridge = unique_name("br");
    let list = bridge_list(&bridge, SUBNET, &data, imp.portmap)?;
    let driver = Driver::quiet(imp, &tmp.path().join("cache"));
    let port = AtomicU16::new(30_000);

    // One container first: creates the bridge and any base chains, which stay by design.
    let warm = TestNetns::with_tag("c")?;
    let rt = runtime_conf(warm.path(), Some(port.fetch_add(1, Ordering::Relaxed)))?;
    driver.add(&host, &list, &rt)?;
    driver.del(&host, &list, &rt)?;
    drop(warm);
    let rules_before = iptables_rules(&host)?;

    progress(
        "concurrency",
        format!("{}: creating {} netns", imp.name, WORKERS * per_worker),
    );
    let mut batches: Vec<Vec<(TestNetns, RuntimeConf)>> = Vec::new();
    for _ in 0..WORKERS {
        let mut batch = Vec::with_capacity(per_worker);
        for _ in 0..per_worker {
            let ctr = TestNetns::with_tag("c")?;
            let rt = runtime_conf(ctr.path(), Some(port.fetch_add(1, Ordering::Relaxed)))?;
            batch.push((ctr, rt));
        }
        batches.push(batch);
    }

    progress(
        "concurrency",
        format!(
            "{}: {WORKERS} workers × {per_worker}, up to {WINDOW} live each",
            imp.name
        ),
    );
    let mut out = Outcome::default();
    let t = Instant::now();
    let results = std::thread::scope(|scope| {
        let handles: Vec<_> = batches
            .iter()
            .map(|batch| {
                let (host, list, driver) = (&host, &list, &driver);
                scope.spawn(move || worker(host, list, driver, batch))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| anyhow!("worker panicked")))
            .collect::<Result<Vec<_>>>()
    })?;
    out.wall_s = t.elapsed().as_secs_f64();
    let mut lives = Vec::new();
    for w in results {
        out.add_ms.extend(w.add_ms);
        out.del_ms.extend(w.del_ms);
        lives.extend(w.lives);
        out.errors += w.errors.len();
        if out.first_error.is_none() {
            out.first_error = w.errors.into_iter().next();
        }
    }
    out.duplicates = duplicates(&lives);

    // Leftovers, looked for while the container namespaces still exist (so a veth that DEL
    // forgot is still there to be seen).
    let links = host
        .netlink()
        .links()
        .context("list host links")?
        .into_iter()
        .map(|l| l.name)
        .filter(|n| n != "lo" && *n != bridge)
        .map(|n| format!("link {n}"));
    out.leftovers.extend(links);
    out.leftovers
        .extend(reservations(&data.join(list.name.as_str()))?);
    let cache = tmp.path().join("cache/results");
    if let Ok(entries) = std::fs::read_dir(&cache) {
        out.leftovers.extend(
            entries
                .filter_map(Result::ok)
                .map(|e| format!("cache {}", e.file_name().to_string_lossy())),
        );
    }
    let rules_after = iptables_rules(&host)?;
    out.leftovers.extend(
        rules_after
            .difference(&rules_before)
            .map(|r| format!("rule {r}")),
    );
    drop(batches);
    Ok(out)
}

#[derive(Default)]
struct WorkerOutcome {
    add_ms: Vec<f64>,
    del_ms: Vec<f64>,
    lives: Vec<Life>,
    errors: Vec<String>,
}

/// ADD the batch's containers in order, keeping at most `WINDOW` live: past that, the oldest
/// is deleted before the next ADD. What is still live at the end is deleted too.
fn worker(
    host: &TestNetns,
    list: &berth_cni::NetConfList,
    driver: &Driver,
    batch: &[(TestNetns, RuntimeConf)],
) -> WorkerOutcome {
    let mut w = WorkerOutcome::default();
    let mut live: VecDeque<(&RuntimeConf, Option<String>, Instant)> = VecDeque::new();
    let del = |w: &mut WorkerOutcome, (rt, ip, added): (&RuntimeConf, Option<String>, Instant)| {
        let released = Instant::now();
        match driver.del(host, list, rt) {
            Ok(_) => w.del_ms.push(ms_since(released)),
            Err(e) => w.errors.push(format!("{e:#}")),
        }
        w.lives.push(Life {
            ip,
            added,
            released,
        });
    };
    for (_, rt) in batch {
        if live.len() == WINDOW {
            if let Some(oldest) = live.pop_front() {
                del(&mut w, oldest);
            }
        }
        let start = Instant::now();
        match driver.add(host, list, rt) {
            Ok((_, result)) => {
                w.add_ms.push(ms_since(start));
                live.push_back((rt, first_ip(&result), Instant::now()));
            }
            Err(e) => {
                w.errors.push(format!("{e:#}"));
                // libcni leaves cleanup of a failed ADD to the caller: DEL it.
                live.push_back((rt, None, Instant::now()));
            }
        }
    }
    while let Some(oldest) = live.pop_front() {
        del(&mut w, oldest);
    }
    w
}

/// Addresses held by two attachments at once: per address, certain-life intervals (ADD
/// returned .. DEL started) that overlap. Reuse after a DEL began is legitimate.
fn duplicates(lives: &[Life]) -> usize {
    let mut by_ip: HashMap<&str, Vec<(Instant, Instant)>> = HashMap::new();
    for l in lives {
        if let Some(ip) = &l.ip {
            by_ip.entry(ip).or_default().push((l.added, l.released));
        }
    }
    let mut dups = 0;
    for spans in by_ip.values_mut() {
        spans.sort();
        let mut busy_until: Option<Instant> = None;
        for &(from, to) in spans.iter() {
            if busy_until.is_some_and(|until| from < until) {
                dups += 1;
            }
            busy_until = Some(busy_until.map_or(to, |u| u.max(to)));
        }
    }
    dups
}

/// IPAM reservation files: everything but the lock and the last-reserved hints.
fn reservations(dir: &Path) -> Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("read {}", dir.display())),
    };
    Ok(entries
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "lock" && !n.starts_with("last_reserved_ip"))
        .map(|n| format!("ipam {n}"))
        .collect())
}

/// The rules and chains of the host namespace (iptables and nftables, whichever the plugins
/// used), one line each, without counters.
fn iptables_rules(host: &TestNetns) -> Result<BTreeSet<String>> {
    let mut lines = BTreeSet::new();
    for (prog, args) in [
        ("iptables-save", &[][..]),
        ("nft", &["list", "ruleset"][..]),
    ] {
        let Ok(out) = host.output(Command::new(prog).args(args)) else {
            continue;
        };
        let text = String::from_utf8_lossy(&out.stdout);
        lines.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| l.starts_with("-A") || l.starts_with(':') || l.starts_with("chain "))
                .map(|l| format!("{prog}: {}", l.split(" [").next().unwrap_or(l))),
        );
    }
    Ok(lines)
}
