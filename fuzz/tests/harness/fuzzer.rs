//! The fuzz loop: generate a case from the seed, run it against the real plugin binary in a
//! world, check the invariants, keep the figures and the findings.
//!
//! Invariants, after every call: the plugin exits 0 with a valid result (or empty output for
//! DEL/CHECK/STATUS/GC), or exits 1 with a CNI error object on stdout; never a signal, a panic
//! or a hang over 5 s. A failed ADD (and any other verb on a world without an attachment)
//! changes nothing in the host's links, addresses, routes, qdiscs and firewall rules, in the
//! containers, or in the files (IPAM store, records, defaults). After a successful ADD, DEL
//! of the same configuration in the same environment succeeds and leaves everything as it
//! was.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::json;

use super::catalog::{PLUGINS, Plugin, VERSIONS};
use super::mutate::{CaseSpec, Rendered, Verb, case_seed};
use super::proc::{Exit, Kill, Run, Spawn};
use super::snapshot::clip;
use super::verdict::{Allowances, Protocol, judge};
use super::world::{CONTAINER_ID, IFNAME, World};

/// What a run is asked to do, from the environment (see README).
#[derive(Debug, Clone)]
pub struct Settings {
    pub seed: u64,
    pub cases: u64,
    /// Only this case (verbose): reproduces a finding.
    pub only: Option<u64>,
    pub plugins: Vec<Plugin>,
    pub workers: usize,
}

pub fn parse_u64(s: &str) -> Option<u64> {
    let s = s.trim().replace('_', "");
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

impl Settings {
    pub fn from_env(default_cases: u64, default_seed: u64) -> Settings {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let plugins = match var("BERTH_FUZZ_PLUGINS") {
            Some(list) => list
                .split(',')
                .map(|p| Plugin::from_bin(p.trim()).unwrap_or_else(|| panic!("unknown plugin {p}")))
                .collect(),
            None => PLUGINS.to_vec(),
        };
        Settings {
            seed: var("BERTH_FUZZ_SEED")
                .and_then(|s| parse_u64(&s))
                .unwrap_or(default_seed),
            cases: var("BERTH_FUZZ_CASES")
                .and_then(|s| parse_u64(&s))
                .unwrap_or(default_cases),
            only: var("BERTH_FUZZ_CASE").and_then(|s| parse_u64(&s)),
            plugins,
            workers: var("BERTH_FUZZ_WORKERS")
                .and_then(|s| s.parse().ok())
                .unwrap_or(2),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Crash,
    Hang,
    BadOutput,
    Escape,
    /// A failed ADD (or another verb on an empty world) changed something.
    Leak,
    /// DEL after a successful ADD failed.
    DelFailure,
    /// Something stayed after a successful ADD and its DEL.
    DelLeak,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Crash => "crash",
            Kind::Hang => "hang",
            Kind::BadOutput => "bad output",
            Kind::Escape => "write outside its directories",
            Kind::Leak => "leak after a failed call",
            Kind::DelFailure => "DEL failed after a successful ADD",
            Kind::DelLeak => "leak after ADD + DEL",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Finding {
    pub kind: Kind,
    pub plugin: Plugin,
    pub index: u64,
    pub verb: &'static str,
    pub version: &'static str,
    pub spec: String,
    pub stdin: Vec<u8>,
    pub env: Vec<(String, Option<String>)>,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Figures {
    pub cases: u64,
    pub adds_ok: u64,
    pub crashes: u64,
    pub hangs: u64,
    pub bad_output: u64,
    pub escapes: u64,
    pub leaks: u64,
    pub del_failures: u64,
    pub del_leaks: u64,
}

#[derive(Default)]
pub struct Outcome {
    pub figures: BTreeMap<Plugin, Figures>,
    pub findings: Vec<Finding>,
    pub world_resets: u64,
}

impl Outcome {
    fn count(&mut self, plugin: Plugin, kind: Kind) {
        let f = self.figures.entry(plugin).or_default();
        match kind {
            Kind::Crash => f.crashes += 1,
            Kind::Hang => f.hangs += 1,
            Kind::BadOutput => f.bad_output += 1,
            Kind::Escape => f.escapes += 1,
            Kind::Leak => f.leaks += 1,
            Kind::DelFailure => f.del_failures += 1,
            Kind::DelLeak => f.del_leaks += 1,
        }
    }

    pub fn total(&self) -> Figures {
        let mut t = Figures::default();
        for f in self.figures.values() {
            t.cases += f.cases;
            t.adds_ok += f.adds_ok;
            t.crashes += f.crashes;
            t.hangs += f.hangs;
            t.bad_output += f.bad_output;
            t.escapes += f.escapes;
            t.leaks += f.leaks;
            t.del_failures += f.del_failures;
            t.del_leaks += f.del_leaks;
        }
        t
    }

    pub fn failed(&self) -> bool {
        !self.findings.is_empty()
    }
}

/// Runs the cases of `settings` on `settings.workers` worlds.
pub fn run(settings: &Settings) -> Outcome {
    super::proc::become_subreaper();
    let outcome = Mutex::new(Outcome::default());
    let next = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let started = std::time::Instant::now();
    let indexes: Vec<u64> = match settings.only {
        Some(i) => vec![i],
        None => (0..settings.cases).collect(),
    };
    let verbose = settings.only.is_some();
    std::thread::scope(|scope| {
        for _ in 0..settings.workers.max(1).min(indexes.len().max(1)) {
            scope.spawn(|| {
                let mut world = World::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(&index) = indexes.get(n) else {
                        break;
                    };
                    let plugin = settings.plugins[(index % settings.plugins.len() as u64) as usize];
                    let seed = case_seed(settings.seed, index);
                    let result = run_case(&world, plugin, index, seed, verbose);
                    let finished = done.fetch_add(1, Ordering::Relaxed) + 1;
                    if indexes.len() >= 1000 && finished % 500 == 0 {
                        eprintln!(
                            "berth-fuzz: {finished}/{} cases, {:.0?}",
                            indexes.len(),
                            started.elapsed()
                        );
                    }
                    let mut out = outcome.lock().unwrap();
                    let fig = out.figures.entry(plugin).or_default();
                    fig.cases += 1;
                    fig.adds_ok += u64::from(result.add_ok);
                    for f in result.findings {
                        out.count(plugin, f.kind);
                        out.findings.push(f);
                    }
                    if result.dirty {
                        out.world_resets += 1;
                        drop(out);
                        world = World::new();
                    }
                }
            });
        }
    });
    let mut outcome = outcome.into_inner().unwrap();
    outcome
        .findings
        .sort_by_key(|f| (f.plugin, f.index, f.kind));
    outcome
}

struct CaseResult {
    add_ok: bool,
    findings: Vec<Finding>,
    /// The world differs from its baseline: build a new one.
    dirty: bool,
}

/// The case's call with `verb`; the follow-up DEL keeps the case's variables but not a
/// broken CNI_COMMAND.
fn call(world: &World, plugin: Plugin, verb: &str, r: &Rendered, first: bool) -> Spawn {
    let mut spec = world.call(plugin.bin(), verb, CONTAINER_ID, plugin.netns(), IFNAME);
    for (k, v) in &r.env {
        if k == "CNI_COMMAND" && !first {
            continue;
        }
        match v {
            Some(v) => spec = spec.env(k, v),
            None => spec.env.retain(|(key, _)| key != k),
        }
    }
    spec.stdin(r.stdin.clone())
}

fn run_case(world: &World, plugin: Plugin, index: u64, seed: u64, verbose: bool) -> CaseResult {
    let spec = CaseSpec::generate(seed);
    let version = VERSIONS[spec.version.index(VERSIONS.len())];
    let configs = plugin.configs(world, version);
    let mut base = configs[spec.variant.index(configs.len())].clone();
    if spec.verb == Verb::Gc {
        base["cni.dev/valid-attachments"] = json!([{"containerID": "bystander", "ifname": "by0"}]);
    }
    let rendered = spec.render(world, &base);
    let verb = spec.verb.as_str();
    let first = call(world, plugin, verb, &rendered, true);
    let command = first
        .env
        .iter()
        .find(|(k, _)| k == "CNI_COMMAND")
        .map(|(_, v)| v.clone());
    let container_id = first
        .env
        .iter()
        .find(|(k, _)| k == "CNI_CONTAINERID")
        .map_or(String::new(), |(_, v)| v.clone());
    let allow = Allowances {
        container_id,
        gc: spec.verb == Verb::Gc,
        loopback: plugin == Plugin::Loopback,
    };
    let mut findings = Vec::new();
    let mut finding = |kind: Kind, detail: String| {
        findings.push(Finding {
            kind,
            plugin,
            index,
            verb,
            version,
            spec: format!("{spec:?}"),
            stdin: rendered.stdin.clone(),
            env: rendered.env.clone(),
            detail,
        });
    };
    let out = world.run(&first, Kill::Never);
    if verbose {
        eprintln!("{}", describe_run("first call", &out));
    }
    protocol(&out, command.as_deref(), &mut finding);
    let add_ok = command.as_deref() == Some("ADD") && out.exit == Exit::Code(0);
    let mut dirty = false;
    if add_ok {
        let del = call(world, plugin, "DEL", &rendered, false);
        let del_out = world.run(&del, Kill::Never);
        if verbose {
            eprintln!("{}", describe_run("DEL", &del_out));
        }
        protocol(&del_out, Some("DEL"), &mut finding);
        if del_out.exit != Exit::Code(0) && del_out.exit != Exit::Hung {
            finding(Kind::DelFailure, describe_run("DEL", &del_out));
        }
        tidy(world, plugin);
        let diff = world.diff(&|s, l, a| allow.accept(s, l, a));
        if !diff.is_empty() {
            finding(Kind::DelLeak, format!("left after ADD + DEL:\n{diff}"));
            dirty = true;
        }
    } else {
        let diff = world.diff(&|s, l, a| allow.accept(s, l, a));
        if !diff.is_empty() {
            finding(
                Kind::Leak,
                format!("{verb} failed ({}), and changed:\n{diff}", exit_text(&out)),
            );
            dirty = true;
        }
        // The runtime's DEL after a failed ADD: must not damage what the world holds.
        let del = call(world, plugin, "DEL", &rendered, false);
        let del_out = world.run(&del, Kill::Never);
        protocol(&del_out, Some("DEL"), &mut finding);
        tidy(world, plugin);
        // (After GC, what it legitimately removed is still gone: its allowance stays.)
        if !dirty {
            let diff = world.diff(&|s, l, a| allow.accept(s, l, a));
            if !diff.is_empty() {
                finding(
                    Kind::Leak,
                    format!("DEL after the failed call changed:\n{diff}"),
                );
                dirty = true;
            }
        }
    }
    if !dirty && (allow.gc || allow.loopback) {
        // What this case's allowances let through may not pile up into the next case's world.
        let strict = Allowances::default();
        dirty = !world.diff(&|s, l, a| strict.accept(s, l, a)).is_empty();
    }
    CaseResult {
        add_ok,
        findings,
        dirty,
    }
}

/// Undoes what a plugin's DEL keeps on purpose, so the next case starts from the same world.
fn tidy(world: &World, plugin: Plugin) {
    if plugin.keeps_bridge() {
        world.remove_created_bridges();
    }
    if plugin == Plugin::Loopback {
        for ns in world.containers().into_iter().chain([&world.host]) {
            let _ = ns.ip(&["link", "set", "lo", "up"]);
        }
    }
}

fn protocol(out: &Run, command: Option<&str>, finding: &mut impl FnMut(Kind, String)) {
    match judge(out, command) {
        Protocol::Ok => {}
        Protocol::Crash(why) => {
            finding(Kind::Crash, format!("{why}\n{}", describe_run("call", out)))
        }
        Protocol::Hang => finding(
            Kind::Hang,
            format!("no exit after 5 s\n{}", describe_run("call", out)),
        ),
        Protocol::BadOutput(why) => finding(
            Kind::BadOutput,
            format!("{why}\n{}", describe_run("call", out)),
        ),
        Protocol::Escape(why) => finding(Kind::Escape, why),
    }
}

fn exit_text(out: &Run) -> String {
    match out.exit {
        Exit::Code(c) => format!("exit {c}"),
        Exit::Signal(s) => format!("signal {s}"),
        Exit::Hung => "hung".into(),
        Exit::Injected => "killed".into(),
    }
}

pub fn describe_run(what: &str, out: &Run) -> String {
    format!(
        "    {what}: {} after {:?}\n    stdout: {}\n    stderr: {}",
        exit_text(out),
        out.elapsed,
        clip(out.stdout_text().trim(), 400),
        clip(out.stderr_text().trim(), 400)
    )
}

/// Bytes for a report: UTF-8 as is (clipped), anything else escaped.
pub fn show_bytes(bytes: &[u8], max: usize) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => clip(s, max),
        Err(_) => {
            let escaped: String = bytes.escape_ascii().to_string();
            clip(&escaped, max)
        }
    }
}

/// The figures table, the findings grouped, and the first findings of each group in full.
pub fn report(settings: &Settings, outcome: &Outcome, test_name: &str) -> String {
    let mut r = String::new();
    let t = outcome.total();
    let _ = writeln!(
        r,
        "berth-fuzz: seed {:#x}, {} cases on {} plugins ({} world rebuilds)",
        settings.seed,
        t.cases,
        outcome.figures.len(),
        outcome.world_resets
    );
    let _ = writeln!(
        r,
        "{:<12} {:>6} {:>7} {:>8} {:>6} {:>8} {:>7} {:>6} {:>9} {:>10}",
        "plugin",
        "cases",
        "ADD ok",
        "crashes",
        "hangs",
        "bad out",
        "escapes",
        "leaks",
        "DEL fail",
        "DEL leaks"
    );
    let mut rows: Vec<(String, Figures)> = outcome
        .figures
        .iter()
        .map(|(p, f)| (p.bin().to_owned(), *f))
        .collect();
    rows.push(("total".into(), t));
    for (name, f) in rows {
        let _ = writeln!(
            r,
            "{:<12} {:>6} {:>7} {:>8} {:>6} {:>8} {:>7} {:>6} {:>9} {:>10}",
            name,
            f.cases,
            f.adds_ok,
            f.crashes,
            f.hangs,
            f.bad_output,
            f.escapes,
            f.leaks,
            f.del_failures,
            f.del_leaks
        );
    }
    if outcome.findings.is_empty() {
        return r;
    }
    let mut groups: BTreeMap<(Plugin, Kind), Vec<&Finding>> = BTreeMap::new();
    for f in &outcome.findings {
        groups.entry((f.plugin, f.kind)).or_default().push(f);
    }
    let _ = writeln!(r, "\nfindings ({}):", outcome.findings.len());
    for ((plugin, kind), list) in &groups {
        let _ = writeln!(
            r,
            "  {} {}: {} case(s)",
            plugin.bin(),
            kind.label(),
            list.len()
        );
        for f in list.iter().take(3) {
            let _ = writeln!(
                r,
                "  - case {} ({} {}, cniVersion {}): reproduce with\n      BERTH_FUZZ_SEED={:#x} BERTH_FUZZ_CASE={} BERTH_FUZZ_PLUGINS={} cargo test -p berth-fuzz --test {test_name} -- --nocapture",
                f.index,
                f.plugin.bin(),
                f.verb,
                f.version,
                settings.seed,
                f.index,
                settings
                    .plugins
                    .iter()
                    .map(|p| p.bin())
                    .collect::<Vec<_>>()
                    .join(","),
            );
            let env: Vec<String> = f
                .env
                .iter()
                .map(|(k, v)| match v {
                    Some(v) => format!("{k}={}", show_bytes(v.as_bytes(), 80)),
                    None => format!("{k} unset"),
                })
                .collect();
            if !env.is_empty() {
                let _ = writeln!(r, "    env: {}", env.join(" "));
            }
            let _ = writeln!(r, "    stdin: {}", show_bytes(&f.stdin, 600));
            let _ = writeln!(r, "    case: {}", clip(&f.spec, 400));
            let _ = writeln!(r, "{}", f.detail.trim_end());
        }
    }
    r
}
