//! Section 5: data plane. TCP throughput (iperf3, short runs) container↔container and
//! container↔host over a bridge and over point-to-point veths set up by each plugin set,
//! against the loopback ceiling inside one namespace. The kernel forwards the packets in every
//! case; what a plugin decides (MTU, offloads, routes through the host, hairpin) shows here.

use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use berth_bench::{Cell, Row, Section, Unit};
use netns_fixtures::{TestNetns, test_subnet_v4, unique_name};
use serde_json::Value;
use tempfile::TempDir;

use crate::cni::{Driver, Impl, bridge_list, p2p_list, runtime_conf};
use crate::{Opts, progress};

const PORT: &str = "5201";

/// A host namespace with two containers attached by one plugin set.
struct Pair {
    host: TestNetns,
    a: TestNetns,
    b: TestNetns,
    b_ip: IpAddr,
    /// The address of the host side as seen from container a (its gateway).
    gateway: IpAddr,
    _tmp: TempDir,
}

impl Pair {
    fn new(imp: &Impl, p2p: bool) -> Result<Pair> {
        let host = TestNetns::with_tag("h")?;
        let tmp = tempfile::Builder::new().prefix("berth-bench-").tempdir()?;
        let subnet = test_subnet_v4().to_string();
        let data = tmp.path().join("data");
        let list = if p2p {
            p2p_list(imp, &subnet, &data)?
        } else {
            bridge_list(&unique_name("br"), &subnet, &data, false)?
        };
        let driver = Driver::quiet(imp, &tmp.path().join("cache"));
        let a = TestNetns::with_tag("c")?;
        let b = TestNetns::with_tag("c")?;
        let (_, ra) = driver.add(&host, &list, &runtime_conf(a.path(), None)?)?;
        let (_, rb) = driver.add(&host, &list, &runtime_conf(b.path(), None)?)?;
        let gateway = ra
            .ips
            .first()
            .and_then(|ip| ip.gateway)
            .ok_or_else(|| anyhow!("{}: no gateway in the result", imp.name))?;
        let b_ip = rb
            .ips
            .first()
            .map(|ip| ip.address.ip())
            .ok_or_else(|| anyhow!("{}: no address in the result", imp.name))?;
        // Everything goes with the namespaces; no DEL needed.
        Ok(Pair {
            host,
            a,
            b,
            b_ip,
            gateway,
            _tmp: tmp,
        })
    }
}

/// One iperf3 run: server in `server_ns` on `addr`, client in `client_ns`; Gbit/s received.
fn iperf(server_ns: &TestNetns, client_ns: &TestNetns, addr: &str, secs: u32) -> Result<f64> {
    let mut server: Child = server_ns.spawn(
        Command::new("iperf3")
            .args(["-s", "-1", "-p", PORT, "-B", addr])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )?;
    let result = (|| {
        // The server needs a moment to listen; a refused client exits at once.
        for _ in 0..50 {
            let out = client_ns.output(Command::new("iperf3").args([
                "-c",
                addr,
                "-p",
                PORT,
                "-t",
                &secs.to_string(),
                "-J",
            ]))?;
            let json: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            // With -J, iperf3 3.12 exits 0 even when it could not connect: the JSON says so.
            match json["error"].as_str() {
                Some(e) if e.contains("unable to connect") => {}
                Some(e) => bail!("iperf3 client to {addr}: {e}"),
                None if out.status.success() => {
                    let bps = json["end"]["sum_received"]["bits_per_second"]
                        .as_f64()
                        .ok_or_else(|| anyhow!("iperf3 -J without end.sum_received"))?;
                    return Ok(bps / 1e9);
                }
                None => bail!(
                    "iperf3 client to {addr} failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("iperf3 server on {addr} never listened")
    })();
    // -1: the server exits after its one client; make sure it is gone either way.
    let _ = server.kill();
    let _ = server.wait();
    result
}

pub fn run(opts: &Opts, s: &mut Section) -> Result<()> {
    if Command::new("iperf3").arg("--version").output().is_err() {
        s.notes
            .push("iperf3 not installed (scripts/bench.sh installs it)".into());
        return Ok(());
    }
    let ours = Impl::ours();
    let theirs = Impl::reference()?;
    let (secs, reps) = if opts.quick { (1, 1) } else { (2, 3) };
    let lo = TestNetns::with_tag("lo")?;
    let pairs = [
        (Pair::new(&ours, false)?, Pair::new(&theirs, false)?),
        (Pair::new(&ours, true)?, Pair::new(&theirs, true)?),
    ];
    // [bridge c2c, bridge c2h, veth c2c, veth c2h] × [ours, reference]
    let mut samples = vec![[Vec::new(), Vec::new()]; 4];
    let mut ceiling = Vec::new();
    for rep in 0..reps {
        ceiling.push(iperf(&lo, &lo, "127.0.0.1", secs).context("loopback")?);
        for (k, (o, t)) in pairs.iter().enumerate() {
            for (side, p) in [o, t].into_iter().enumerate() {
                samples[2 * k][side].push(iperf(&p.b, &p.a, &p.b_ip.to_string(), secs)?);
                samples[2 * k + 1][side].push(iperf(&p.host, &p.a, &p.gateway.to_string(), secs)?);
            }
        }
        progress("dataplane", format!("round {}/{reps}", rep + 1));
    }
    let names = [
        ("bridge.c2c", "bridge: container → container"),
        ("bridge.c2h", "bridge: container → host"),
        (
            "veth.c2c",
            "veth: container → container (routed by the host)",
        ),
        ("veth.c2h", "veth: container → host"),
    ];
    let ceiling_cell = Cell::samples(&ceiling);
    let ceiling_median = ceiling_cell.central();
    for ((id, metric), [o, t]) in names.iter().zip(&samples) {
        let vs = if id.starts_with("veth") {
            "reference ptp"
        } else {
            "reference bridge"
        };
        s.rows.push(Row::new(
            format!("dataplane.{id}"),
            *metric,
            Unit::Gbps,
            Cell::samples(o),
            vs,
            Cell::samples(t),
        ));
    }
    s.rows.push(Row::new(
        "dataplane.ceiling",
        "loopback in one namespace (the ceiling)",
        Unit::Gbps,
        ceiling_cell,
        "",
        Cell::na("—"),
    ));
    if let Some(c) = ceiling_median {
        let pct: Vec<String> = names
            .iter()
            .zip(&samples)
            .filter_map(|((id, _), [o, _])| {
                Cell::samples(o)
                    .central()
                    .map(|m| format!("{id} {:.0}%", 100.0 * m / c))
            })
            .collect();
        s.notes.push(format!(
            "ours as a share of the loopback ceiling: {}; iperf3 -t {secs}, {reps} runs per path, one stream",
            pct.join(", ")
        ));
    }
    Ok(())
}
