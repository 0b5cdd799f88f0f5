//! Real traffic: TCP through the shaped veth, measured with iperf3 (server in the namespace
//! playing the host, client in the container's, test addresses only). The measured rate must
//! be within ±10 % of the configured one in each direction, and far above it once DEL has run.
//! With `unshapedSubnets`, traffic with a listed subnet is not limited while other traffic is.
//!
//! One test, run sequentially: the measurements should not compete with each other for CPU.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use netns_fixtures::{TestNetns, require_root, test_subnet_v4};
use serde_json::{Value, json};

const INGRESS_BPS: f64 = 20e6;
const EGRESS_BPS: f64 = 50e6;
/// A measurement this many times the limit counts as "not limited".
const FREE_FACTOR: f64 = 5.0;

/// 20 and 50 Mbit/s, each with 200 ms worth of bucket. A bucket this deep lets a sender the
/// scheduler held back (two cores, shared with builds) catch up on the tokens it missed, so
/// the average shows the shaper rather than the machine's load.
fn limits() -> Value {
    json!({"ingressRate": INGRESS_BPS as u64, "ingressBurst": (INGRESS_BPS * 0.2) as u64,
           "egressRate": EGRESS_BPS as u64, "egressBurst": (EGRESS_BPS * 0.2) as u64})
}

/// Kills the iperf3 server if the test ends early.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How a run is measured: `secs` counted after `omit` left out.
#[derive(Clone, Copy)]
struct Run {
    secs: u32,
    omit: u32,
}

/// Shaped runs leave out the first second: slow start, and the initial bucket being spent.
const SHAPED: Run = Run { secs: 2, omit: 1 };
/// Unlimited throughput is far above any limit within a second.
const FREE: Run = Run { secs: 1, omit: 0 };

/// The container `ctr` and the host `host` it is wired to.
struct Path<'a> {
    host: &'a TestNetns,
    ctr: &'a TestNetns,
}

impl Path<'_> {
    /// Bits per second into the container from the host's address `from` (the server sends).
    fn inbound(&self, from: Ipv4Addr, run: Run) -> f64 {
        iperf(self.host, from, self.ctr, true, run)
    }

    /// Bits per second out of the container to the host's address `to`.
    fn outbound(&self, to: Ipv4Addr, run: Run) -> f64 {
        iperf(self.host, to, self.ctr, false, run)
    }
}

/// One iperf3 TCP run between a server on `server_ip` in `server_ns` and a client in
/// `client_ns`; `reverse`: the server sends. Returns what the receiver measured.
fn iperf(
    server_ns: &TestNetns,
    server_ip: Ipv4Addr,
    client_ns: &TestNetns,
    reverse: bool,
    run: Run,
) -> f64 {
    let ip = server_ip.to_string();
    let _server = Server(
        server_ns
            .spawn(
                Command::new("iperf3")
                    .args(["-s", "-1", "-B", &ip])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            )
            .unwrap(),
    );
    let (secs, omit) = (run.secs.to_string(), run.omit.to_string());
    let mut args = vec!["-c", &ip, "-t", &secs, "-O", &omit, "-J"];
    if reverse {
        args.push("-R");
    }
    // The server needs a moment to listen; a refused connection does not consume it (iperf3
    // then reports an error, in JSON, instead of the sums).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = client_ns
            .output(Command::new("iperf3").args(&args))
            .unwrap();
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if let Some(bps) = report["end"]["sum_received"]["bits_per_second"].as_f64() {
            return bps;
        }
        assert!(Instant::now() < deadline, "iperf3 {args:?}: {out:?}");
        thread::sleep(Duration::from_millis(100));
    }
}

fn assert_near(what: &str, measured: f64, limit: f64) {
    let ratio = measured / limit;
    eprintln!(
        "{what}: {:.2} Mbit/s, {:.1} % of the limit",
        measured / 1e6,
        ratio * 100.0
    );
    assert!(
        (0.9..=1.1).contains(&ratio),
        "{what}: {measured} bit/s against a limit of {limit}"
    );
}

fn assert_free(what: &str, measured: f64, limit: f64) {
    eprintln!("{what}: {:.2} Mbit/s, not limited", measured / 1e6);
    assert!(
        measured > FREE_FACTOR * limit,
        "{what}: {measured} bit/s is not far above {limit}"
    );
}

#[test]
fn shaping_holds_within_ten_percent_and_goes_with_del() {
    require_root();
    let w = World::new(None, 1500);
    let path = Path {
        host: &w.host,
        ctr: &w.ctr.ns,
    };
    let host_ip = w.ctr.host_ip;
    let conf = bw_conf(
        "1.0.0",
        "bwtraffic",
        limits(),
        Some(w.ctr.prev_result("1.0.0")),
    );
    call_ctr(ours(), &w, "ADD", "t1", &conf).expect_success();

    // Into the container: shaped by the host end's tbf. Out of it: redirected to the ifb and
    // shaped there.
    assert_near(
        "into the container",
        path.inbound(host_ip, SHAPED),
        INGRESS_BPS,
    );
    assert_near(
        "out of the container",
        path.outbound(host_ip, SHAPED),
        EGRESS_BPS,
    );

    call_ctr(ours(), &w, "DEL", "t1", &conf).expect_success();
    w.assert_clean();
    assert_free(
        "into the container after DEL",
        path.inbound(host_ip, FREE),
        INGRESS_BPS,
    );
    assert_free(
        "out of the container after DEL",
        path.outbound(host_ip, FREE),
        EGRESS_BPS,
    );

    // A second host address in another subnet, routed from the container: traffic with the
    // container's own /24 is exempt, traffic with the other subnet is limited (htb).
    let other = test_subnet_v4();
    let other_ip = other.nth(1).unwrap();
    let host_addr = format!("{other_ip}/24");
    w.host
        .ip(&["addr", "add", &host_addr, "dev", &w.ctr.host_if])
        .unwrap();
    let (other, gw) = (other.to_string(), host_ip.to_string());
    path.ctr.ip(&["route", "add", &other, "via", &gw]).unwrap();
    let mut keys = limits();
    keys["unshapedSubnets"] = json!([format!("{host_ip}/24")]);
    let conf = bw_conf("1.0.0", "bwtraffic", keys, Some(w.ctr.prev_result("1.0.0")));
    call_ctr(ours(), &w, "ADD", "t1", &conf).expect_success();
    assert_near(
        "into the container, shaped subnet",
        path.inbound(other_ip, SHAPED),
        INGRESS_BPS,
    );
    assert_near(
        "out of the container, shaped subnet",
        path.outbound(other_ip, SHAPED),
        EGRESS_BPS,
    );
    assert_free(
        "into the container, unshaped subnet",
        path.inbound(host_ip, FREE),
        INGRESS_BPS,
    );
    assert_free(
        "out of the container, unshaped subnet",
        path.outbound(host_ip, FREE),
        EGRESS_BPS,
    );
    call_ctr(ours(), &w, "DEL", "t1", &conf).expect_success();
    w.assert_clean();
}
