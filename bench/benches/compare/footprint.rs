//! Section 6: footprint. Binary size of each plugin, and the peak RSS and CPU time (user +
//! system, from `wait4`) of one ADD, executed directly with the same environment and stdin for
//! ours and the reference. The peak covers the plugin and the IPAM delegate it waited for.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use berth_bench::{Cell, Row, Section, Unit};
use netns_fixtures::{TestNetns, test_subnet_v4, unique_name};
use serde_json::{Value, json};

use crate::cni::{CNI_VERSION, Impl, container_id};
use crate::proc::{TIME, Usage, max_rss_mib, run_with_usage};
use crate::{Opts, progress};

const PLUGINS: [&str; 5] = ["bridge", "veth", "host-local", "loopback", "portmap"];

/// Per plugin, per implementation: peak RSS (MiB) and CPU (ms) of each ADD.
#[derive(Default)]
struct Costs {
    rss: Vec<f64>,
    cpu: Vec<f64>,
    error: Option<String>,
}

pub fn run(opts: &Opts, s: &mut Section) -> Result<()> {
    let ours = Impl::ours();
    let theirs = Impl::reference()?;
    let runs = if opts.quick { 3 } else { 7 };
    for plugin in PLUGINS {
        let size = |imp: &Impl| -> Cell {
            match std::fs::metadata(imp.bin(plugin)) {
                #[allow(clippy::cast_precision_loss)] // binary sizes
                Ok(m) => Cell::value(m.len() as f64 / (1024.0 * 1024.0)),
                Err(_) => Cell::na("not available yet"),
            }
        };
        s.rows.push(Row::new(
            format!("footprint.{plugin}.size"),
            format!("{plugin} binary size"),
            Unit::Mib,
            size(&ours),
            reference_name(&theirs, plugin),
            size(&theirs),
        ));
    }
    for plugin in PLUGINS {
        progress("footprint", format!("{plugin}: {runs} ADDs each"));
        let o = costs(&ours, plugin, runs);
        let t = costs(&theirs, plugin, runs);
        let cell = |c: &Costs, v: &Vec<f64>| {
            if v.is_empty() {
                Cell::na(c.error.clone().unwrap_or_else(|| "not run".into()))
            } else {
                Cell::samples(v)
            }
        };
        s.rows.push(Row::new(
            format!("footprint.{plugin}.rss"),
            format!("{plugin} ADD peak RSS"),
            Unit::Mib,
            cell(&o, &o.rss),
            reference_name(&theirs, plugin),
            cell(&t, &t.rss),
        ));
        s.rows.push(Row::new(
            format!("footprint.{plugin}.cpu"),
            format!("{plugin} ADD CPU time (user+sys)"),
            Unit::Ms,
            cell(&o, &o.cpu),
            reference_name(&theirs, plugin),
            cell(&t, &t.cpu),
        ));
    }
    let floor = rss_floor().map_or_else(|e| format!("unknown ({e:#})"), |f| format!("{f:.2} MiB"));
    s.notes.push(format!(
        "sizes as installed (ours: release profile, stripped); CPU (wait4 of the plugin) and peak RSS (GNU time %M; floor: static busybox true = {floor}) over {runs} ADDs each, each into a fresh netns; bridge and veth include their host-local delegate"
    ));
    Ok(())
}

fn reference_name(theirs: &Impl, plugin: &str) -> String {
    format!("reference {}", theirs.plugin_name(plugin))
}

fn costs(imp: &Impl, plugin: &str, runs: usize) -> Costs {
    let mut c = Costs::default();
    if !imp.bin(plugin).is_file() {
        c.error = Some("not available yet".into());
        return c;
    }
    if let Err(e) = measure(imp, plugin, runs, &mut c) {
        c.error = Some(format!("{e:#}"));
    }
    c
}

fn measure(imp: &Impl, plugin: &str, runs: usize, c: &mut Costs) -> Result<()> {
    let host = TestNetns::with_tag("h")?;
    let tmp = tempfile::Builder::new().prefix("berth-bench-").tempdir()?;
    let ipam = json!({
        "type": "host-local",
        "ranges": [[{"subnet": test_subnet_v4().to_string()}]],
        "dataDir": tmp.path().join("data"),
        "routes": [{"dst": "0.0.0.0/0"}],
    });
    let bridge = unique_name("br");
    let bridge_conf = json!({
        "cniVersion": CNI_VERSION, "name": "benchfp", "type": "bridge", "bridge": bridge,
        "isGateway": true, "ipMasq": true, "ipam": ipam,
    });
    let rss_file = tmp.path().join("maxrss");
    for run in 0..2 * runs {
        // Even runs: CPU time from wait4 on the plugin itself. Odd runs: peak RSS through GNU
        // time, whose forked child starts from time's small address space: exec keeps the
        // peak of the address space it replaced, and our own process is larger than a plugin.
        let measure_rss = run % 2 == 1;
        let ctr = TestNetns::with_tag("c")?;
        let conf = match plugin {
            "bridge" | "portmap" => bridge_conf.clone(),
            "veth" => json!({
                "cniVersion": CNI_VERSION, "name": "benchfp", "type": imp.p2p,
                "ipMasq": true, "ipam": ipam,
            }),
            "host-local" => json!({
                "cniVersion": CNI_VERSION, "name": "benchfp", "type": "host-local", "ipam": ipam,
            }),
            "loopback" => json!({"cniVersion": CNI_VERSION, "name": "benchfp", "type": "loopback"}),
            other => bail!("no configuration for {other}"),
        };
        let id = container_id();
        let rss = measure_rss.then_some(rss_file.as_path());
        let u = if plugin == "portmap" {
            // portmap works on the previous plugin's result: a bridge ADD first.
            let bridge = add(imp, "bridge", &host, ctr.path(), &id, &bridge_conf, None)?;
            let prev: Value = serde_json::from_slice(&bridge.stdout).context("bridge result")?;
            let pm = json!({
                "cniVersion": CNI_VERSION, "name": "benchfp", "type": "portmap",
                "capabilities": {"portMappings": true},
                "runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]},
                "prevResult": prev,
            });
            add(imp, "portmap", &host, ctr.path(), &id, &pm, rss)?
        } else {
            add(imp, plugin, &host, ctr.path(), &id, &conf, rss)?
        };
        if measure_rss {
            c.rss.push(max_rss_mib(&rss_file)?);
        } else {
            c.cpu.push(u.cpu_ms);
        }
    }
    Ok(())
}

/// The floor of the RSS figures: a static busybox `true` under GNU time.
pub fn rss_floor() -> Result<f64> {
    let tmp = tempfile::Builder::new().prefix("berth-bench-").tempdir()?;
    let file = tmp.path().join("maxrss");
    let out = Command::new(TIME)
        .arg("-o")
        .arg(&file)
        .args(["-f", "%M", "/bin/busybox", "true"])
        .output()
        .context("run GNU time (install the time package)")?;
    if !out.status.success() {
        bail!("{TIME}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    max_rss_mib(&file)
}

/// One ADD of `plugin`, run directly from inside `host` (under GNU time writing `%M` to
/// `rss_file` if given); an error unless it succeeded.
fn add(
    imp: &Impl,
    plugin: &str,
    host: &TestNetns,
    netns: &Path,
    id: &str,
    conf: &Value,
    rss_file: Option<&Path>,
) -> Result<Usage> {
    let mut cmd = match rss_file {
        Some(file) => {
            let mut c = Command::new(TIME);
            c.arg("-o")
                .arg(file)
                .args(["-f", "%M"])
                .arg(imp.bin(plugin));
            c
        }
        None => Command::new(imp.bin(plugin)),
    };
    cmd.env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", &imp.dir);
    let u = run_with_usage(host, &mut cmd, &serde_json::to_vec(conf)?)?;
    if !u.success {
        bail!(
            "{} ADD failed: {}{}",
            imp.plugin_name(plugin),
            String::from_utf8_lossy(&u.stdout).trim(),
            String::from_utf8_lossy(&u.stderr).trim()
        );
    }
    Ok(u)
}
