//! The whole `bridge` + `host-local` + `portmap` chain, ours against the reference binaries
//! in `/usr/lib/cni`, driven identically by the libcni-equivalent invoker in one run: median
//! ADD and DEL of one attachment (one published TCP port, `ipMasq`, `hairpinMode`) with 1
//! and with 1000 live attachments. Each implementation gets its own namespace playing the
//! host.
//!
//! ```text
//! cargo build --release -p bridge -p host-local -p portmap
//! cargo bench -p portmap --bench chain
//! ```
//!
//! `BERTH_BENCH_ROUNDS` (15), `BERTH_BENCH_LIVE` (1000); `BERTH_BENCH_OURS_DIR` and
//! `BERTH_BENCH_REF_DIR` replace the plugin directories (to profile through wrappers);
//! `BERTH_BENCH_ONLY` runs only the implementations whose label contains it.
//!
//! ```text
//! ```
//!
//! Needs root. Not a timed test: it prints a table and asserts nothing.

#![allow(clippy::unwrap_used)] // A benchmark: a panic is the failure report.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_cni::invoke::{CniConfig, RuntimeConf};
use berth_cni::{ContainerId, IfName, NetConfList};
use netns_fixtures::{TestNetns, bin, require_root, unique_name};
use serde_json::json;

const REFERENCE_DIR: &str = "/usr/lib/cni";

struct Impl {
    label: &'static str,
    dir: PathBuf,
    /// `ipMasqBackend` / `backend` for ours; the reference has only iptables.
    backend: Option<&'static str>,
    subnet: &'static str,
}

struct Run {
    host: TestNetns,
    cni: CniConfig,
    list: NetConfList,
    _tmp: tempfile::TempDir,
}

impl Run {
    fn new(im: &Impl) -> Run {
        let host = TestNetns::with_tag("h").unwrap();
        let tmp = tempfile::Builder::new()
            .prefix("berth-bench-")
            .tempdir()
            .unwrap();
        let mut bridge = json!({"type": "bridge", "bridge": unique_name("br"), "isGateway": true,
            "ipMasq": true, "hairpinMode": true,
            // No routes: fill containers hold 100 interfaces each, and one default route.
            "ipam": {"type": "host-local", "subnet": im.subnet, "dataDir": tmp.path().join("data")}});
        let mut portmap = json!({"type": "portmap", "capabilities": {"portMappings": true}});
        if let Some(b) = im.backend {
            bridge["ipMasqBackend"] = b.into();
            portmap["backend"] = b.into();
        }
        let list = json!({"cniVersion": "1.0.0", "name": "bench", "plugins": [bridge, portmap]});
        host.run(|| berth_netlink::sysctl::write("net/ipv4/ip_forward", "1"))
            .unwrap()
            .unwrap();
        Run {
            cni: CniConfig::new(vec![im.dir.clone()], tmp.path().join("cache")),
            list: NetConfList::from_bytes(&serde_json::to_vec(&list).unwrap()).unwrap(),
            host,
            _tmp: tmp,
        }
    }

    fn rt(ctr: &Path, id: &str, ifname: &str, port: u32) -> RuntimeConf {
        let mut rt = RuntimeConf::new(
            ContainerId::try_from(id).unwrap(),
            Some(ctr.to_owned()),
            IfName::try_from(ifname).unwrap(),
        );
        rt.capability_args.insert(
            "portMappings".into(),
            json!([{"hostPort": port, "containerPort": 80, "protocol": "tcp"}]),
        );
        rt
    }

    fn add(&self, rt: &RuntimeConf) -> Duration {
        let start = Instant::now();
        self.host
            .run(|| self.cni.add_network_list(&self.list, rt))
            .unwrap()
            .unwrap_or_else(|e| panic!("ADD: {}", berth_cni::invoke::error_chain(&e)));
        start.elapsed()
    }

    fn del(&self, rt: &RuntimeConf) -> Duration {
        let start = Instant::now();
        self.host
            .run(|| self.cni.del_network_list(&self.list, rt))
            .unwrap()
            .unwrap_or_else(|e| panic!("DEL: {}", berth_cni::invoke::error_chain(&e)));
        start.elapsed()
    }

    /// Median ADD and DEL of a fresh attachment, `rounds` times.
    fn measure(&self, ctr: &TestNetns, rounds: usize, tag: &str) -> (Duration, Duration) {
        let (mut adds, mut dels) = (Vec::new(), Vec::new());
        for i in 0..rounds {
            let rt = Run::rt(
                ctr.path(),
                &format!("m-{tag}-{i}"),
                "eth0",
                30000 + u32::try_from(i).unwrap(),
            );
            adds.push(self.add(&rt));
            dels.push(self.del(&rt));
        }
        adds.sort();
        dels.sort();
        (adds[rounds / 2], dels[rounds / 2])
    }
}

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    require_root();
    let rounds = env_usize("BERTH_BENCH_ROUNDS", 15);
    let live = env_usize("BERTH_BENCH_LIVE", 1000);
    // Overridable to profile, e.g. with wrappers that time each plugin.
    let ours: PathBuf = std::env::var_os("BERTH_BENCH_OURS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| bin("portmap").parent().unwrap().to_path_buf());
    let reference: PathBuf =
        std::env::var_os("BERTH_BENCH_REF_DIR").map_or_else(|| REFERENCE_DIR.into(), PathBuf::from);
    for b in ["bridge", "host-local"] {
        bin(b);
    }
    let impls = [
        Impl {
            label: "reference (iptables)",
            dir: reference,
            backend: None,
            subnet: "198.18.0.0/16",
        },
        Impl {
            label: "berth, iptables",
            dir: ours.clone(),
            backend: Some("iptables"),
            subnet: "198.19.0.0/17",
        },
        Impl {
            label: "berth, nftables",
            dir: ours,
            backend: Some("nftables"),
            subnet: "198.19.128.0/17",
        },
    ];
    // BERTH_BENCH_ONLY=<substring of a label> runs just those (the reference row stays the
    // baseline of the ratios, so keep it unless profiling).
    let only = std::env::var("BERTH_BENCH_ONLY").unwrap_or_default();
    let mut rows = Vec::new();
    for im in impls.iter().filter(|im| im.label.contains(only.as_str())) {
        let run = Run::new(im);
        let measured = TestNetns::with_tag("m").unwrap();
        // Warm-up: shared chains, caches.
        let warm = Run::rt(measured.path(), "warm", "eth0", 29999);
        run.add(&warm);
        run.del(&warm);
        let at_one = run.measure(&measured, rounds, "a");
        // Fill: containers of 100 interfaces each (e0…e99), one published port each.
        let fill_start = Instant::now();
        let mut holders = Vec::new();
        for n in 0..live.saturating_sub(1) {
            if n % 100 == 0 {
                holders.push(TestNetns::with_tag("f").unwrap());
            }
            let ns = holders.last().unwrap();
            let rt = Run::rt(
                ns.path(),
                &format!("fill-{n}"),
                &format!("e{}", n % 100),
                20000 + u32::try_from(n).unwrap(),
            );
            run.add(&rt);
        }
        let fill = fill_start.elapsed();
        // BERTH_BENCH_PERF=<file>: a system-wide `perf record` of the measurement at `live`
        // (report per command: `perf report -i <file> --comm bridge`).
        let perf = std::env::var("BERTH_BENCH_PERF").ok().map(|out| {
            std::process::Command::new("perf")
                .args([
                    "record",
                    "-q",
                    "-a",
                    "-g",
                    "-o",
                    &format!("{out}.{}", im.label.replace([' ', ','], "")),
                    "--",
                    "sleep",
                    "3600",
                ])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        });
        let at_live = run.measure(&measured, rounds, "b");
        if let Some(mut perf) = perf {
            // SIGINT makes perf write its file; the pid is our own child's.
            let pid = perf.id().to_string();
            let _ = std::process::Command::new("kill")
                .args(["-INT", &pid])
                .status();
            let _ = perf.wait();
        }
        eprintln!(
            "{}: ADD {} -> {} ms, DEL {} -> {} ms (fill of {} took {:.1} s)",
            im.label,
            ms(at_one.0),
            ms(at_live.0),
            ms(at_one.1),
            ms(at_live.1),
            live - 1,
            fill.as_secs_f64()
        );
        rows.push((im.label, at_one, at_live));
    }
    let Some(&reference) = rows.first() else {
        return;
    };
    println!();
    println!(
        "median of {rounds} rounds, bridge + host-local + portmap (cniVersion 1.0.0), 1 published port"
    );
    println!(
        "{:<22} {:>9} {:>9} {:>10} {:>10} {:>9} {:>9}",
        "",
        "ADD@1",
        "DEL@1",
        format!("ADD@{live}"),
        format!("DEL@{live}"),
        "ADD x",
        "DEL x"
    );
    for (label, one, many) in &rows {
        let growth = |a: Duration, b: Duration| b.as_secs_f64() / a.as_secs_f64();
        println!(
            "{:<22} {:>9} {:>9} {:>10} {:>10} {:>9.2} {:>9.2}",
            label,
            ms(one.0),
            ms(one.1),
            ms(many.0),
            ms(many.1),
            growth(one.0, many.0),
            growth(one.1, many.1),
        );
    }
    println!("ratio to the reference (ours / reference median):");
    for (label, one, many) in rows.iter().skip(1) {
        let r = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
        println!(
            "{:<22} ADD@1 {:.2}  DEL@1 {:.2}  ADD@{live} {:.2}  DEL@{live} {:.2}",
            label,
            r(one.0, reference.1.0),
            r(one.1, reference.1.1),
            r(many.0, reference.2.0),
            r(many.1, reference.2.1),
        );
    }
}
