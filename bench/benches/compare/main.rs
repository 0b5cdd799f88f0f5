//! `compare`: Berth side by side with the reference CNI plugins, crun, runc and podman, in one
//! run on one machine, as ratios (see docs/benchmarks.md).
//!
//! ```text
//! cargo bench -p berth-bench --bench compare -- [--quick] [--json FILE] [--only SECTION[,SECTION…]]
//!     [--scale-budget SECS]
//! ```
//!
//! Sections: chain, scale, concurrency, start, dataplane, footprint, images, lab. Needs root;
//! everything happens in throwaway network namespaces that play the host, so the machine's own
//! network is never touched. Progress goes to stderr, the table to stdout. It never fails on
//! speed: a section that cannot run reports why and the others go on.

mod chain;
mod cni;
mod concurrency;
mod dataplane;
mod footprint;
mod images;
mod lab;
mod podman;
mod proc;
mod samples;
mod scale;
mod start;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::Instant;

use anyhow::{Result, bail};
use berth_bench::{Report, Section, Verdict};

pub const SECTIONS: [&str; 8] = [
    "chain",
    "scale",
    "concurrency",
    "start",
    "dataplane",
    "footprint",
    "images",
    "lab",
];

#[derive(Debug, Clone)]
pub struct Opts {
    pub quick: bool,
    pub json: Option<PathBuf>,
    pub only: Vec<String>,
    /// Seconds each plugin set may spend on the scale curve (default 120, quick 30).
    pub scale_budget: Option<u64>,
}

fn parse_args() -> Result<Opts> {
    let mut opts = Opts {
        quick: false,
        json: None,
        only: Vec::new(),
        scale_budget: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => opts.quick = true,
            "--json" => match args.next() {
                Some(f) => opts.json = Some(f.into()),
                None => bail!("--json needs a file"),
            },
            "--only" => match args.next() {
                Some(s) => {
                    for name in s.split(',').filter(|s| !s.is_empty()) {
                        if !SECTIONS.contains(&name) {
                            bail!(
                                "unknown section {name:?} (sections: {})",
                                SECTIONS.join(", ")
                            );
                        }
                        opts.only.push(name.to_owned());
                    }
                }
                None => bail!("--only needs a section"),
            },
            "--scale-budget" => match args.next().and_then(|v| v.parse().ok()) {
                Some(secs) => opts.scale_budget = Some(secs),
                None => bail!("--scale-budget needs a number of seconds"),
            },
            // cargo bench passes --bench to harness=false targets.
            "--bench" => {}
            "-h" | "--help" => {
                println!(
                    "usage: cargo bench -p berth-bench --bench compare -- [--quick] [--json FILE] [--only SECTION[,SECTION...]] [--scale-budget SECS]\nsections: {}",
                    SECTIONS.join(", ")
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    Ok(opts)
}

fn started() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// A progress line on stderr: `[  12.3s] [scale] ours: 250 live`.
pub fn progress(section: &str, msg: impl AsRef<str>) {
    eprintln!(
        "[{:>6.1}s] [{section}] {}",
        started().elapsed().as_secs_f64(),
        msg.as_ref()
    );
}

fn main() -> ExitCode {
    started();
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("compare: {e:#}");
            return ExitCode::from(2);
        }
    };
    netns_fixtures::require_root();
    let mut report = Report {
        mode: if opts.quick { "quick" } else { "full" }.to_owned(),
        sections: Vec::new(),
        goals: Vec::new(),
        elapsed_s: 0.0,
    };
    for name in SECTIONS {
        if !opts.only.is_empty() && !opts.only.iter().any(|o| o == name) {
            continue;
        }
        let t = Instant::now();
        progress(name, "start");
        let section = match run_section(name, &opts) {
            Ok(s) => s,
            Err(e) => {
                let mut s = Section::new(name, title(name));
                s.notes.push(format!("section failed: {e:#}"));
                s
            }
        };
        progress(name, format!("done in {:.1}s", t.elapsed().as_secs_f64()));
        report.sections.push(section);
    }
    report.goals = goals(&report);
    if !opts.only.is_empty() {
        // Goals of sections not selected are noise in a partial run.
        report.goals.retain(
            |g| !matches!(&g.verdict, Verdict::Unknown(why) if why.contains("not measured")),
        );
    }
    report.elapsed_s = started().elapsed().as_secs_f64();
    println!("{}", report.to_markdown());
    println!("Mode: {}; total {:.0} s.", report.mode, report.elapsed_s);
    if let Some(path) = &opts.json {
        let written = serde_json::to_vec_pretty(&report)
            .map_err(anyhow::Error::from)
            .and_then(|b| std::fs::write(path, b).map_err(anyhow::Error::from));
        if let Err(e) = written {
            eprintln!("compare: write {}: {e:#}", path.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

pub fn title(name: &str) -> &'static str {
    match name {
        "chain" => "1. CNI chain latency (per container, sequential)",
        "scale" => "2. Scale: ADD/DEL at N live attachments on one bridge",
        "concurrency" => "3. Concurrency",
        "start" => "4. Container start (run --rm busybox true)",
        "dataplane" => "5. Data plane (iperf3 TCP)",
        "footprint" => "6. Footprint",
        "images" => "7. Images: pull from a local registry, start of a pulled image",
        "lab" => {
            "8. Network labs: deploy and destroy against the same topology scripted with podman"
        }
        _ => "?",
    }
}

fn run_section(name: &str, opts: &Opts) -> Result<Section> {
    let mut s = Section::new(name, title(name));
    match name {
        "chain" => chain::run(opts, &mut s)?,
        "scale" => scale::run(opts, &mut s)?,
        "concurrency" => concurrency::run(opts, &mut s)?,
        "start" => start::run(opts, &mut s)?,
        "dataplane" => dataplane::run(opts, &mut s)?,
        "footprint" => footprint::run(opts, &mut s)?,
        "images" => images::run(opts, &mut s)?,
        "lab" => lab::run(opts, &mut s)?,
        _ => bail!("unknown section {name}"),
    }
    Ok(s)
}

/// The issue's goals, judged on this run's figures.
fn goals(r: &Report) -> Vec<berth_bench::GoalResult> {
    let mut g = vec![
        r.goal_ratio(
            "bridge chain ADD ≤ 1/5 of the reference",
            "chain.bridge.add",
            0.2,
        ),
        r.goal_ratio(
            "bridge chain DEL ≤ 1/4 of the reference",
            "chain.bridge.del",
            0.25,
        ),
        r.goal_ratio(
            "veth chain ADD ≤ 1/5 of the reference (ptp)",
            "chain.veth.add",
            0.2,
        ),
        r.goal_ratio(
            "veth chain DEL ≤ 1/4 of the reference (ptp)",
            "chain.veth.del",
            0.25,
        ),
    ];
    for row in r.sections.iter().flat_map(|s| &s.rows) {
        if row.id.starts_with("plugin.") {
            g.push(r.goal_ratio(
                &format!("{} ≤ 1/3 of the reference", row.metric),
                &row.id,
                1.0 / 3.0,
            ));
        }
    }
    g.push(r.goal_flat(
        "cost flat from 1 to 1000 live attachments: ADD at 1000 ≤ 1.5 × ADD at 1",
        "scale.1.add",
        "scale.1000.add",
        1.5,
    ));
    g.push(r.goal_flat(
        "cost flat from 1 to 1000 live attachments: DEL at 1000 ≤ 1.5 × DEL at 1",
        "scale.1.del",
        "scale.1000.del",
        1.5,
    ));
    for (what, id) in [
        ("no duplicate address", "concurrency.duplicates"),
        ("no leftovers after DEL", "concurrency.leftovers"),
        ("no errors", "concurrency.errors"),
    ] {
        // The full-size run (ours alone) when there is one, else the side-by-side one.
        let full = format!("{id}.full");
        let id = if r.row(&full).is_some() {
            full.as_str()
        } else {
            id
        };
        g.push(r.goal_ours_at_most(&format!("concurrency 8×200: {what}"), id, 0.0));
    }
    // (goal, row id, limit, judged on the ratio or on our own figure)
    let tail: [(&str, &str, f64, bool); 9] = [
        (
            "berth run --rm busybox true on a bridge faster than crun run + reference ADD+DEL",
            "start.bridge.crun",
            1.0,
            true,
        ),
        (
            "berth run --rm busybox true on a bridge ≥ 5× faster than podman run (CNI bridge)",
            "start.bridge.podman",
            0.2,
            true,
        ),
        (
            "(interim, no network) berth run ≥ 5× faster than podman run --network none",
            "start.none.podman",
            0.2,
            true,
        ),
        (
            "cold pull of a multi-layer image ≤ 0.5 × podman pull",
            "images.pull.cold.podman",
            0.5,
            true,
        ),
        (
            "pull with every layer present ≤ 0.2 × podman pull",
            "images.pull.warm.podman",
            0.2,
            true,
        ),
        (
            "peak RSS pulling a 500 MB layer below 64 MB",
            "images.pull.rss",
            64.0,
            false,
        ),
        (
            "run --rm of a pulled 5-layer image ≤ 1.2 × the offline busybox image",
            "images.run.five",
            1.2,
            true,
        ),
        (
            "lab deploy of the 10-node clos ≤ 1/10 of podman (a script: podman run per node, one at a time, + ip link add per link)",
            "lab.clos.deploy",
            0.1,
            true,
        ),
        (
            "(informational) lab deploy of the 10-node clos ≤ 1/10 of podman starting 8 nodes at a time",
            "lab.clos.deploy.parallel",
            0.1,
            true,
        ),
    ];
    for (goal, id, max, ratio) in tail {
        g.push(if ratio {
            r.goal_ratio(goal, id, max)
        } else {
            r.goal_ours_at_most(goal, id, max)
        });
    }
    g
}
