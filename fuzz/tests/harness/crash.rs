//! Crash injection: SIGKILL the invoker (`berth-cnitool add`, the libcni equivalent) or a
//! plugin at a random point of ADD, then do what a runtime does after a crash (DEL, and GC
//! where the version has it) and check that nothing is left: no link, address, route, qdisc,
//! firewall rule, IPAM reservation, record, cache entry or temporary file.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use serde_json::{Value, json};

use super::catalog::{PLUGINS, Plugin};
use super::fuzzer::describe_run;
use super::mutate::{case_seed, runner};
use super::proc::{Exit, Kill, Spawn};
use super::verdict::Allowances;
use super::world::{BRIDGE, CONTAINER_ID, DEVICE, IFNAME, MASTER, Ns, SUBNET4, World};

/// What gets killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    /// `berth-cnitool add` of configuration list `n` (see [`lists`]).
    Invoker(usize),
    Plugin(Plugin),
}

impl Target {
    pub fn name(self) -> String {
        match self {
            Target::Invoker(n) => format!("berth-cnitool ({})", LIST_NAMES[n]),
            Target::Plugin(p) => p.bin().to_owned(),
        }
    }

    fn all() -> Vec<Target> {
        (0..LIST_NAMES.len())
            .map(Target::Invoker)
            .chain(PLUGINS.into_iter().map(Target::Plugin))
            .collect()
    }
}

/// One kill, generated from its seed.
#[derive(Debug, Clone)]
pub struct KillSpec {
    /// Where in ADD, in thousandths of the target's ADD time (measured once per worker,
    /// capped at [`MAX_DELAY`]), so that kills land anywhere in ADD however fast it is.
    pub point: u32,
    /// Kill the whole process group (the invoker or plugin with its children) rather than
    /// only the process (its children live on, orphaned, and finish).
    pub group: bool,
    /// Which configuration and version (modulo their numbers).
    pub variant: u64,
    pub version: u64,
}

fn kill_spec() -> impl Strategy<Value = KillSpec> {
    (0u32..1000, any::<bool>(), any::<u64>(), any::<u64>()).prop_map(
        |(point, group, variant, version)| KillSpec {
            point,
            group,
            variant,
            version,
        },
    )
}

/// The latest a kill comes after the start.
pub const MAX_DELAY: Duration = Duration::from_millis(30);

const LIST_NAMES: [&str; 5] = ["fzchain", "fzveth", "fzmacvlan", "fzdevice", "fzlo"];
/// Lists are 0.4.0 or later (the cache and prevResult on DEL matter from there on).
const LIST_VERSIONS: [&str; 3] = ["0.4.0", "1.0.0", "1.1.0"];

/// The configuration lists the invoker runs.
fn lists(w: &World, version: &str) -> Vec<Value> {
    let data = w.data_dir();
    // Each plugin's records in a directory of its own, as their defaults are.
    let (tuning_dir, device_dir) = (data.join("tuning"), data.join("host-device"));
    let host_local =
        |subnet: &str| json!({"type": "host-local", "subnet": subnet, "dataDir": data});
    let plugins = [
        json!([
            {"type": "bridge", "bridge": BRIDGE, "isGateway": true, "ipMasq": true,
             "ipMasqBackend": "iptables", "ipam": host_local(SUBNET4)},
            {"type": "portmap", "backend": "iptables", "capabilities": {"portMappings": true}},
            {"type": "firewall", "backend": "iptables"},
            {"type": "tuning", "mtu": 1400, "dataDir": tuning_dir,
             "sysctl": {"net.ipv4.conf.IFNAME.arp_filter": "1"}},
            {"type": "bandwidth", "ingressRate": 20_000_000, "ingressBurst": 400_000}
        ]),
        json!([
            {"type": "veth", "ipMasq": true, "ipMasqBackend": "nftables",
             "ipam": host_local("198.18.11.0/24")},
            {"type": "portmap", "backend": "nftables", "capabilities": {"portMappings": true}},
            {"type": "bandwidth", "egressRate": 50_000_000, "egressBurst": 800_000}
        ]),
        json!([
            {"type": "macvlan", "master": MASTER, "ipam": host_local("198.18.12.0/24")},
            {"type": "tuning", "mac": "02:42:c6:12:00:31", "dataDir": tuning_dir}
        ]),
        json!([
            {"type": "host-device", "device": DEVICE, "dataDir": device_dir,
             "ipam": {"type": "static", "addresses": [{"address": "198.18.13.5/24"}]}}
        ]),
        json!([{"type": "loopback"}]),
    ];
    plugins
        .into_iter()
        .zip(LIST_NAMES)
        .map(|(plugins, name)| json!({"cniVersion": version, "name": name, "plugins": plugins}))
        .collect()
}

#[derive(Debug, Clone, Default)]
pub struct CrashFigures {
    pub attempts: u64,
    /// Kills that hit a running process (the others came after it had exited).
    pub kills: u64,
    pub del_failures: u64,
    pub gc_failures: u64,
    pub leftovers: u64,
}

#[derive(Debug, Clone)]
pub struct CrashFinding {
    pub target: Target,
    pub index: u64,
    pub spec: KillSpec,
    pub delay: Duration,
    pub version: &'static str,
    pub what: String,
}

#[derive(Default)]
pub struct CrashOutcome {
    pub figures: BTreeMap<Target, CrashFigures>,
    pub findings: Vec<CrashFinding>,
}

impl CrashOutcome {
    pub fn total(&self) -> CrashFigures {
        let mut t = CrashFigures::default();
        for f in self.figures.values() {
            t.attempts += f.attempts;
            t.kills += f.kills;
            t.del_failures += f.del_failures;
            t.gc_failures += f.gc_failures;
            t.leftovers += f.leftovers;
        }
        t
    }
}

/// Attempts kills (round robin over the targets, on `workers` worlds) until `kills` of them
/// landed (at most 4 × `kills` attempts); `only`: just that attempt.
pub fn run(seed: u64, kills: u64, only: Option<u64>, workers: usize) -> CrashOutcome {
    super::proc::become_subreaper();
    let targets = Target::all();
    let outcome = Mutex::new(CrashOutcome::default());
    let next = AtomicU64::new(0);
    let landed_total = AtomicU64::new(0);
    let indexes: Vec<u64> = only.map_or_else(|| (0..kills * 4).collect(), |i| vec![i]);
    let wanted = if only.is_some() { 1 } else { kills };
    std::thread::scope(|scope| {
        for _ in 0..workers.max(1).min(indexes.len().max(1)) {
            scope.spawn(|| {
                let mut budgets = calibrate(&targets);
                let mut world = World::new();
                while landed_total.load(Ordering::Relaxed) < wanted {
                    let n = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(&index) = indexes.get(n) else {
                        break;
                    };
                    let target = targets[(index % targets.len() as u64) as usize];
                    let case = case_seed(seed ^ 0x00c4_a511, index);
                    let spec = kill_spec()
                        .new_tree(&mut runner(case))
                        .unwrap_or_else(|e| panic!("generate kill {index}: {e}"))
                        .current();
                    let budget = budgets.get(&target).copied().unwrap_or(MAX_DELAY);
                    let delay = budget.mul_f64(f64::from(spec.point) / 1000.0);
                    let (took, landed, findings) =
                        kill_once(&world, target, index, &spec, Some(delay));
                    if !landed {
                        // It finished before the kill: ADD is faster than measured (the
                        // first runs pay cold caches). Later kills aim within what it took.
                        budgets.insert(target, took.min(budget));
                    }
                    let dirty = !findings.is_empty();
                    let mut out = outcome.lock().unwrap();
                    let fig = out.figures.entry(target).or_default();
                    fig.attempts += 1;
                    fig.kills += u64::from(landed);
                    landed_total.fetch_add(u64::from(landed), Ordering::Relaxed);
                    for f in findings {
                        let fig = out.figures.entry(target).or_default();
                        if f.what.starts_with("DEL") {
                            fig.del_failures += 1;
                        } else if f.what.starts_with("GC") {
                            fig.gc_failures += 1;
                        } else {
                            fig.leftovers += 1;
                        }
                        out.findings.push(f);
                    }
                    drop(out);
                    if dirty {
                        world = World::new();
                    }
                }
            });
        }
    });
    let mut outcome = outcome.into_inner().unwrap();
    outcome.findings.sort_by_key(|f| (f.target, f.index));
    outcome
}

/// How long each target's ADD takes here (its first variant, CNI 1.1.0 where it has it),
/// capped at [`MAX_DELAY`]: measured on a world of its own, which is then thrown away.
fn calibrate(targets: &[Target]) -> BTreeMap<Target, Duration> {
    let world = World::new();
    let spec = KillSpec {
        point: 0,
        group: true,
        variant: 0,
        // The last version: 1.1.0 for the plugins, and for the lists.
        version: 14,
    };
    targets
        .iter()
        .map(|&t| {
            // The faster of two: the first run of a binary pays for cold caches.
            let took = (0..2)
                .map(|_| kill_once(&world, t, 0, &spec, None).0)
                .min()
                .unwrap_or(MAX_DELAY);
            (t, took.min(MAX_DELAY))
        })
        .collect()
}

/// One kill after `delay` (none: a plain ADD) and the cleanup after it. Returns how long ADD
/// ran, whether the kill hit a running process, and what was wrong.
fn kill_once(
    w: &World,
    target: Target,
    index: u64,
    spec: &KillSpec,
    delay: Option<Duration>,
) -> (Duration, bool, Vec<CrashFinding>) {
    let kill = match delay {
        None => Kill::Never,
        Some(d) if spec.group => Kill::Group(d),
        Some(d) => Kill::Leader(d),
    };
    let took;
    let mut findings = Vec::new();
    let (version, landed) = match target {
        Target::Invoker(n) => {
            let version = LIST_VERSIONS[(spec.version % LIST_VERSIONS.len() as u64) as usize];
            let list = &lists(w, version)[n];
            std::fs::write(
                w.netconf_dir().join(format!("{}.conflist", LIST_NAMES[n])),
                list.to_string(),
            )
            .unwrap();
            let add = w.run(&cnitool(w, "add", LIST_NAMES[n]), kill);
            took = add.elapsed;
            let landed = add.exit == Exit::Injected;
            let del = w.run(&cnitool(w, "del", LIST_NAMES[n]), Kill::Never);
            if del.exit != Exit::Code(0) {
                findings.push((
                    "DEL failed after the kill".to_owned(),
                    describe_run("del", &del),
                ));
            }
            if version == "1.1.0" {
                let gc = w.run(&cnitool(w, "gc", LIST_NAMES[n]), Kill::Never);
                if gc.exit != Exit::Code(0) {
                    findings.push((
                        "GC failed after the kill".to_owned(),
                        describe_run("gc", &gc),
                    ));
                }
            }
            (version, landed)
        }
        Target::Plugin(plugin) => {
            let version = super::catalog::VERSIONS
                [(spec.version % super::catalog::VERSIONS.len() as u64) as usize];
            let confs = plugin.configs(w, version);
            let conf = confs[(spec.variant % confs.len() as u64) as usize]
                .to_string()
                .into_bytes();
            let call = |verb: &str| {
                w.call(plugin.bin(), verb, CONTAINER_ID, plugin.netns(), IFNAME)
                    .stdin(conf.clone())
            };
            let add = w.run(&call("ADD"), kill);
            took = add.elapsed;
            let landed = add.exit == Exit::Injected;
            let del = w.run(&call("DEL"), Kill::Never);
            if del.exit != Exit::Code(0) {
                findings.push((
                    "DEL failed after the kill".to_owned(),
                    describe_run("DEL", &del),
                ));
            }
            if version == "1.1.0" {
                let mut gc_conf: Value = serde_json::from_slice(&conf).unwrap();
                gc_conf["cni.dev/valid-attachments"] =
                    json!([{"containerID": "bystander", "ifname": "by0"}]);
                let gc = w.run(
                    &call("GC").stdin(gc_conf.to_string().into_bytes()),
                    Kill::Never,
                );
                if gc.exit != Exit::Code(0) {
                    findings.push((
                        "GC failed after the kill".to_owned(),
                        describe_run("GC", &gc),
                    ));
                }
            }
            (version, landed)
        }
    };
    if matches!(target, Target::Invoker(0) | Target::Plugin(Plugin::Bridge)) {
        w.remove_created_bridges();
    }
    if matches!(
        target,
        Target::Invoker(4) | Target::Plugin(Plugin::Loopback)
    ) {
        for ns in w.containers() {
            let _ = ns.ip(&["link", "set", "lo", "up"]);
        }
    }
    let allow = Allowances {
        container_id: CONTAINER_ID.to_owned(),
        gc: false,
        loopback: false,
    };
    let diff = w.diff(&|s, l, a| allow.accept(s, l, a));
    if !diff.is_empty() {
        findings.push((
            "left after the kill, DEL and GC".to_owned(),
            format!("{diff}"),
        ));
    }
    let findings = findings
        .into_iter()
        .map(|(what, detail)| CrashFinding {
            target,
            index,
            spec: spec.clone(),
            delay: delay.unwrap_or_default(),
            version,
            what: format!("{what}:\n{detail}"),
        })
        .collect();
    (took, landed, findings)
}

/// `berth-cnitool <verb> <list> <netns> fuzzctr` with the world's directories.
fn cnitool(w: &World, verb: &str, list: &str) -> Spawn {
    let mut spec = Spawn::new(w.bin_dir.join("berth-cnitool"), w.root())
        .arg(verb)
        .arg(list)
        .env("NETCONFPATH", w.netconf_dir().to_str().unwrap())
        .env("CNI_PATH", w.bin_dir.to_str().unwrap())
        .env("CNI_CACHE_DIR", w.cache_dir().to_str().unwrap())
        .env("CNI_IFNAME", IFNAME)
        .env(
            "CAP_ARGS",
            r#"{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}"#,
        );
    if verb != "gc" {
        spec = spec
            .arg(w.ns_path(Ns::Ctr).to_str().unwrap())
            .arg(CONTAINER_ID);
    }
    spec
}

pub fn report(seed: u64, outcome: &CrashOutcome) -> String {
    let mut r = String::new();
    let t = outcome.total();
    let _ = writeln!(
        r,
        "berth-fuzz crash injection: seed {seed:#x}, {} attempts, {} kills landed, {} leftovers, {} DEL failures, {} GC failures",
        t.attempts, t.kills, t.leftovers, t.del_failures, t.gc_failures
    );
    let _ = writeln!(
        r,
        "{:<26} {:>8} {:>6} {:>9} {:>8} {:>7}",
        "target", "attempts", "kills", "leftovers", "DEL fail", "GC fail"
    );
    for (target, f) in &outcome.figures {
        let _ = writeln!(
            r,
            "{:<26} {:>8} {:>6} {:>9} {:>8} {:>7}",
            target.name(),
            f.attempts,
            f.kills,
            f.leftovers,
            f.del_failures,
            f.gc_failures
        );
    }
    for f in outcome.findings.iter().take(20) {
        let _ = writeln!(
            r,
            "\n- kill {} of {} (cniVersion {}, after {:?}, {}): reproduce with\n    BERTH_CRASH_SEED={seed:#x} BERTH_CRASH_KILL={} cargo test -p berth-fuzz --test crash -- --nocapture\n  {}",
            f.index,
            f.target.name(),
            f.version,
            f.delay,
            if f.spec.group {
                "whole process group"
            } else {
                "the process only"
            },
            f.index,
            f.what.trim_end()
        );
    }
    if outcome.findings.len() > 20 {
        let _ = writeln!(r, "\n… {} more findings", outcome.findings.len() - 20);
    }
    r
}
