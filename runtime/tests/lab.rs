//! `berth lab` and what it needs from `berth run`: privileged containers, labs deployed from
//! containerlab topology files (nodes, veth links, bridges), their verbs, and nothing left
//! after `destroy`. Every `berth` runs in the test's throwaway host netns (`common::Env`).

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::{Env, Run};
use netns_fixtures::TestRegistry;
use netns_fixtures::images::{self, OciLayout, Remote};
use serde_json::Value;

/// `run --privileged`: every capability, no seccomp filter, /proc/sys writable (a lab
/// router's `sysctl -w net.ipv4.ip_forward=1`), /sys read-write; without it the same
/// sysctl fails on the read-only /proc/sys.
#[test]
fn privileged_containers_write_sysctls() {
    let env = Env::new();
    let script = "sysctl -w net.ipv4.ip_forward=1 && cat /proc/sys/net/ipv4/ip_forward \
                  && grep -E '^(CapEff|Seccomp):' /proc/self/status \
                  && grep ' /sys ' /proc/mounts";
    let out = env.run(&[
        "--rm",
        "--privileged",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        script,
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("\n1\n"), "{out:?}");
    assert!(out.stdout.contains("Seccomp:\t0"), "{out:?}");
    // Every capability berth holds (41 on a 6.x kernel, fewer in a restricted VM).
    let cap_eff = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:\t"))
        .expect("CapEff line");
    let bits = u64::from_str_radix(cap_eff.trim(), 16).expect("CapEff is hex");
    assert!(bits.count_ones() >= 38, "{cap_eff}");
    assert!(out.stdout.contains("sysfs rw,"), "{out:?}");

    let out = env.run(&[
        "--rm",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "sysctl -w net.ipv4.ip_forward=1",
    ]);
    assert_ne!(out.code, 0, "{out:?}");
    let out = env.run(&[
        "--rm",
        "--privileged",
        "--userns",
        "auto",
        "busybox",
        "true",
    ]);
    assert_eq!(out.code, 125, "{out:?}");
    common::assert_one_line_error(&out);
    env.assert_clean();
}

/// A lab of one test: its topology file (an example with a unique lab name, or given text)
/// in the test's temporary directory. Dropped: `lab destroy` and any `/run/netns` name of
/// the lab removed, so a failed test leaves nothing in the real `/run/netns` either.
struct Lab<'a> {
    env: &'a Env,
    name: String,
    file: PathBuf,
}

static LABS: AtomicU32 = AtomicU32::new(0);

impl<'a> Lab<'a> {
    /// `text` with its top-level `name:` replaced by a unique name.
    fn new(env: &'a Env, text: &str) -> Lab<'a> {
        let name = format!(
            "t{}x{}",
            std::process::id() % 100_000,
            LABS.fetch_add(1, Ordering::Relaxed)
        );
        let mut replaced = false;
        let text: String = text
            .lines()
            .map(|l| {
                if !replaced && l.starts_with("name:") {
                    replaced = true;
                    format!("name: {name}\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        let file = env.tmp.path().join(format!("{name}.clab.yml"));
        fs::write(&file, text).expect("write the topology");
        Lab { env, name, file }
    }

    fn example(env: &'a Env, example: &str) -> Lab<'a> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples/labs")
            .join(example)
            .join("topology.clab.yml");
        Lab::new(env, &fs::read_to_string(&path).expect("read the example"))
    }

    fn file(&self) -> &str {
        self.file.to_str().expect("utf-8 path")
    }

    /// `berth lab VERB -t FILE ARGS…`.
    fn lab(&self, verb: &str, args: &[&str]) -> Run {
        let mut all = vec!["lab", verb, "-t", self.file()];
        all.extend_from_slice(args);
        self.env.berth(&all)
    }

    fn deploy(&self) -> Run {
        let out = self.lab("deploy", &["--cgroup-parent", &self.env.cgroup_parent]);
        assert_eq!(out.code, 0, "{out:?}");
        out
    }

    fn container(&self, node: &str) -> String {
        format!("clab-{}-{node}", self.name)
    }

    /// `lab exec --node NODE -- CMD…`.
    fn exec(&self, node: &str, command: &[&str]) -> Run {
        let mut all = vec!["--node", node];
        all.extend_from_slice(command);
        self.lab("exec", &all)
    }

    /// Pings `ip` from `node` (up to 3 tries of one packet: a link just set up may need a
    /// moment for its carrier).
    fn pings(&self, node: &str, ip: &str) -> bool {
        (0..3).any(|_| self.exec(node, &["ping", "-c1", "-W1", ip]).code == 0)
    }

    /// `ip -o link` inside the node, the iproute2 way (`/run/netns/clab-<lab>-<node>`).
    fn links_of(&self, node: &str) -> String {
        self.env.host_sh(&format!(
            "ip netns exec {} ip -o link",
            self.container(node)
        ))
    }

    /// The lab's entries in the real `/run/netns`.
    fn netns_names(&self) -> Vec<String> {
        common::lab_netns_names(&self.name)
    }

    /// `destroy`, then nothing of the lab may remain.
    fn destroy_clean(&self) {
        let out = self.lab("destroy", &[]);
        assert_eq!(out.code, 0, "{out:?}");
        self.assert_gone();
    }

    fn assert_gone(&self) {
        self.env.assert_clean();
        assert!(self.netns_names().is_empty(), "{:?}", self.netns_names());
        assert!(
            !self.env.root.join("labs").join(&self.name).exists(),
            "the lab's state is left"
        );
    }
}

impl Drop for Lab<'_> {
    fn drop(&mut self) {
        common::destroy_lab(self.env, &self.name, &["-t", self.file()]);
    }
}

/// (ICMP echo requests, echo replies) in a classic pcap file of Ethernet frames, checked
/// to be one: magic, link type, records that add up to the file.
fn icmp_in_pcap(bytes: &[u8]) -> (usize, usize) {
    let u32_at = |at: usize| u32::from_ne_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    assert_eq!(u32_at(0), 0xa1b2_c3d4, "pcap magic");
    assert_eq!(u32_at(20), 1, "link type Ethernet");
    let (mut at, mut requests, mut replies) = (24, 0, 0);
    while at < bytes.len() {
        let kept = u32_at(at + 8) as usize;
        let frame = &bytes[at + 16..at + 16 + kept];
        // IPv4 (ethertype 0x0800), protocol 1 (ICMP), type 8 (request) or 0 (reply).
        if frame.len() > 34 && frame[12..14] == [0x08, 0x00] && frame[23] == 1 {
            let ihl = usize::from(frame[14] & 0x0f) * 4;
            match frame.get(14 + ihl) {
                Some(8) => requests += 1,
                Some(0) => replies += 1,
                _ => {}
            }
        }
        at += 16 + kept;
    }
    assert_eq!(at, bytes.len(), "records end with the file");
    (requests, replies)
}

/// `ip -o link` lines: (name, mtu, up).
fn link_line(links: &str, ifname: &str) -> Option<(u32, bool)> {
    links.lines().find_map(|l| {
        let name = l.split(": ").nth(1)?.split('@').next()?;
        if name != ifname {
            return None;
        }
        let mtu = l.split(" mtu ").nth(1)?.split(' ').next()?.parse().ok()?;
        Some((mtu, l.contains(",UP") || l.contains("<UP")))
    })
}

/// The triangle example: each link at both ends with its name and containerlab's MTU,
/// `ip netns exec clab-<lab>-<node>` working, routers forwarding (ip_forward set by
/// `exec:`), pings across the triangle, `inspect --json`, `link down/up` seen by pings,
/// `stop`/`start` of a node (links gone at both ends, then back with the peers' addresses),
/// and nothing left after `destroy`.
#[test]
fn triangle_deploys_routes_and_goes_away() {
    let env = Env::new();
    let lab = Lab::example(&env, "triangle");
    let started = Instant::now();
    lab.deploy();
    eprintln!("triangle: deploy {:?}", started.elapsed());

    for (node, ifs) in [
        ("r1", ["eth1", "eth2"]),
        ("r2", ["eth1", "eth2"]),
        ("r3", ["eth1", "eth2"]),
    ] {
        let links = lab.links_of(node);
        for ifname in ifs {
            assert_eq!(
                link_line(&links, ifname),
                Some((9500, true)),
                "{node}: {links}"
            );
        }
    }
    // r1 reaches r3's loopback directly and r2's over r3 once r1-r2 is down.
    for ip in ["198.18.255.2", "198.18.255.3", "198.18.23.2"] {
        assert!(lab.pings("r1", ip), "r1 -> {ip}");
    }

    let out = lab.lab("inspect", &["--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let view: Value = serde_json::from_str(&out.stdout).expect("inspect --json");
    assert_eq!(view["name"], lab.name.as_str());
    let nodes = view["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 3);
    let r1 = &nodes[0];
    assert_eq!(r1["node"], "r1");
    assert_eq!(r1["name"], lab.container("r1").as_str());
    assert_eq!(r1["kind"], "linux");
    assert_eq!(r1["image"], "busybox:latest");
    assert_eq!(r1["state"], "running");
    assert!(r1["pid"].as_i64().is_some_and(|p| p > 1), "{r1}");
    assert_eq!(r1["interfaces"]["eth1"][0], "198.18.12.1/30");
    assert_eq!(r1["labels"]["role"], "router");
    let table = lab.lab("inspect", &[]);
    assert!(table.stdout.starts_with("NODE"), "{table:?}");
    assert!(table.stdout.contains("eth1:198.18.12.1/30"), "{table:?}");

    // capture: the pings on r2's eth1, as a pcap file, with nothing installed in r2.
    let pcap = env.tmp.path().join("r2-eth1.pcap");
    let mut cmd = env.command(&[
        "lab",
        "capture",
        "-t",
        lab.file(),
        "r2:eth1",
        "-c",
        "4",
        "-w",
        pcap.to_str().expect("utf-8"),
    ]);
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut capture = env.host.spawn(&mut cmd).expect("spawn capture");
    let mut listening = String::new();
    let mut stderr = BufReader::new(capture.stderr.take().expect("stderr"));
    stderr
        .read_line(&mut listening)
        .expect("read capture's stderr");
    assert!(listening.starts_with("listening on r2:eth1"), "{listening}");
    assert!(lab.pings("r1", "198.18.12.2"));
    assert_eq!(lab.exec("r1", &["ping", "-c2", "198.18.12.2"]).code, 0);
    let mut rest = String::new();
    stderr
        .read_to_string(&mut rest)
        .expect("read capture's stderr");
    assert!(
        capture.wait().expect("wait for capture").success(),
        "{rest}"
    );
    assert_eq!(rest, "4 packets captured\n");
    let icmp = icmp_in_pcap(&fs::read(&pcap).expect("read the pcap"));
    assert!(
        icmp.0 >= 1 && icmp.1 >= 1,
        "echo requests/replies: {icmp:?}"
    );

    // link down: the direct path fails (r1 to r2's address on that link); up restores it.
    let down = lab.lab("link", &["r1:eth1", "down"]);
    assert_eq!(down.code, 0, "{down:?}");
    assert_eq!(link_line(&lab.links_of("r2"), "eth1"), Some((9500, false)));
    assert!(!lab.pings("r1", "198.18.12.2"));
    let up = lab.lab("link", &["r2:eth1", "up"]);
    assert_eq!(up.code, 0, "{up:?}");
    assert!(lab.pings("r1", "198.18.12.2"));

    // stop r2: its links go at both ends; start: back, r1 reaches r2 on the direct link.
    let stop = lab.lab("stop", &["r2"]);
    assert_eq!(stop.code, 0, "{stop:?}");
    assert_eq!(link_line(&lab.links_of("r1"), "eth1"), None);
    assert!(lab.exec("r2", &["true"]).code != 0);
    let start = lab.lab("start", &["r2"]);
    assert_eq!(start.code, 0, "{start:?}");
    assert_eq!(link_line(&lab.links_of("r1"), "eth1"), Some((9500, true)));
    assert!(lab.pings("r1", "198.18.12.2"), "r1 -> r2 after start");
    assert!(
        lab.pings("r3", "198.18.255.2"),
        "r3 -> r2's loopback after start"
    );

    let started = Instant::now();
    lab.destroy_clean();
    eprintln!("triangle: destroy {:?}", started.elapsed());
}

/// Three hosts on a bridge node: the bridge is made in the lab's host namespace with the
/// links' ends as ports, the hosts reach each other, and destroy removes the bridge.
#[test]
fn bridge_segment_connects_three_hosts() {
    let env = Env::new();
    let lab = Lab::example(&env, "bridge-segment");
    lab.deploy();
    let bridge = env.host_sh("ip -o link show master br-seg");
    for port in ["br-seg-h1", "br-seg-h2", "br-seg-h3"] {
        assert!(bridge.contains(port), "{bridge}");
    }
    assert!(lab.pings("h1", "198.18.50.3"));
    assert!(lab.pings("h3", "198.18.50.2"));
    let out = lab.lab("exec", &["--label", "role=host", "hostname"]);
    assert_eq!(out.code, 0, "{out:?}");
    for h in ["h1", "h2", "h3"] {
        assert!(out.stdout.contains(&format!("\n{h}\n")), "{out:?}");
    }
    lab.destroy_clean();
    assert!(
        !env.host_sh("ip -o link").contains("br-seg"),
        "the bridge is left"
    );
}

/// The 10-node clos: every host reaches every other through leaves and spines; deploy and
/// destroy timed.
#[test]
fn clos_of_ten_nodes() {
    let env = Env::new();
    let lab = Lab::example(&env, "clos");
    let started = Instant::now();
    lab.deploy();
    let deploy = started.elapsed();
    for (from, to) in [("host1", "198.19.4.10"), ("host3", "198.19.2.10")] {
        assert!(lab.pings(from, to), "{from} -> {to}");
    }
    let started = Instant::now();
    lab.destroy_clean();
    eprintln!(
        "clos (10 nodes): deploy {deploy:?}, destroy {:?}",
        started.elapsed()
    );
}

/// Bad files are refused on one line naming the file and line, exit 125, nothing made.
#[test]
fn bad_topologies_name_the_line_and_create_nothing() {
    let env = Env::new();
    let cases = [
        (
            "name: x\ntopology:\n  nodes:\n    a:\n      kind: ceos\n      image: busybox\n",
            ":5:",
        ),
        (
            "name: x\ntopology:\n  nodes:\n    a:\n      kind: linux\n      image: busybox\n  links:\n    - endpoints: [\"a:eth1\", \"b:eth1\"]\n",
            ":8:",
        ),
        ("name: x\ntopology:\n  nodes: [a\n", ":"),
    ];
    for (text, line) in cases {
        let lab = Lab::new(&env, text);
        let out = lab.lab("deploy", &["--cgroup-parent", &env.cgroup_parent]);
        assert_eq!(out.code, 125, "{out:?}");
        common::assert_one_line_error(&out);
        assert!(
            out.stderr.contains(&format!("{}{line}", lab.file())),
            "{out:?}"
        );
        lab.assert_gone();
    }
    // An image that cannot be had: refused before any node exists (`--pull never`: an
    // unreachable registry would be retried with backoff for half a minute).
    let lab = Lab::new(
        &env,
        "name: x\ntopology:\n  nodes:\n    a:\n      kind: linux\n      image: busybox\n    b:\n      kind: linux\n      image: 127.0.0.1:9/none:1\n  links:\n    - endpoints: [\"a:eth1\", \"b:eth1\"]\n",
    );
    let out = lab.lab(
        "deploy",
        &["--pull", "never", "--cgroup-parent", &env.cgroup_parent],
    );
    assert_eq!(out.code, 125, "{out:?}");
    assert!(out.stderr.contains("node b"), "{out:?}");
    lab.assert_gone();
    // A node that cannot start once others run: the deploy is rolled back whole.
    let lab = Lab::new(
        &env,
        "name: x\ntopology:\n  defaults:\n    kind: linux\n    image: busybox\n  nodes:\n    a: {}\n    b: {}\n    c:\n      cmd: /no/such/command\n  links:\n    - endpoints: [\"a:eth1\", \"c:eth1\"]\n    - endpoints: [\"a:eth2\", \"b:eth1\"]\n",
    );
    let out = lab.lab("deploy", &["--cgroup-parent", &env.cgroup_parent]);
    assert_eq!(out.code, 125, "{out:?}");
    common::assert_one_line_error(&out);
    assert!(
        out.stderr.contains(":9:5: node c: start container"),
        "{out:?}"
    );
    lab.assert_gone();
}

/// A deploy killed (SIGKILL) while its nodes start leaves a plan; `destroy --name` removes
/// everything it had made.
#[test]
fn destroy_after_a_killed_deploy() {
    let env = Env::new();
    let lab = Lab::example(&env, "clos");
    let mut cmd = env.command(&[
        "lab",
        "deploy",
        "-t",
        lab.file(),
        "--cgroup-parent",
        &env.cgroup_parent,
    ]);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = env.host.spawn(&mut cmd).expect("spawn deploy");
    let state = env.root.join("labs").join(&lab.name).join("state.json");
    let deadline = Instant::now() + Duration::from_secs(20);
    // Killed once the plan exists and the first containers do.
    while !(state.exists()
        && env
            .root
            .join("containers")
            .read_dir()
            .is_ok_and(|d| d.count() >= 2))
    {
        assert!(Instant::now() < deadline, "the deploy never started nodes");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().expect("SIGKILL the deploy");
    child.wait().expect("reap the deploy");
    let out = env.berth(&["lab", "destroy", "--name", &lab.name]);
    assert_eq!(out.code, 0, "{out:?}");
    // A monitor the killed deploy had just launched finds its record gone and exits.
    env.wait_for("the killed deploy's monitors to exit", || {
        env.leftovers().is_empty()
    });
    lab.assert_gone();
}

/// A management network (a Berth network named after `mgmt.network`, with the node's
/// `mgmt-ipv4`), a `mgmt-net` link onto its bridge, a `host:IF` end in the lab's host namespace, an extended link with its own
/// MTU, `inspect --all`, a second deploy refused and `--reconfigure`, `save` read back, the
/// graph formats; destroy removes the network too.
#[test]
fn mgmt_host_links_save_and_graph() {
    let env = Env::new();
    let lab = Lab::new(
        &env,
        r#"name: x
mgmt:
  network: labmgmt
  ipv4-subnet: 198.18.200.0/24
topology:
  defaults:
    kind: linux
    image: busybox
  nodes:
    a:
      mgmt-ipv4: 198.18.200.10
      exec:
        - ip addr add 198.18.201.2/24 dev eth1
    b: {}
    c:
      network-mode: none
      exec:
        - ip addr add 198.18.200.60/24 dev eth1
  links:
    - endpoints: ["c:eth1", "mgmt-net:mg-c"]
    - endpoints: ["a:eth1", "host:veth-a"]
    - type: veth
      mtu: 1400
      endpoints:
        - node: a
          interface: eth2
        - node: b
          interface: eth1
"#,
    );
    lab.deploy();
    let out = lab.lab("inspect", &["--json"]);
    let view: Value = serde_json::from_str(&out.stdout).expect("inspect --json");
    assert_eq!(
        view["nodes"][0]["interfaces"]["eth0"][0], "198.18.200.10/24",
        "{view}"
    );
    assert!(
        view["nodes"][1]["ipv4"][0]
            .as_str()
            .is_some_and(|a| a.starts_with("198.18.200.")),
        "{view}"
    );
    assert_eq!(link_line(&lab.links_of("b"), "eth1"), Some((1400, true)));
    assert_eq!(link_line(&lab.links_of("a"), "eth1"), Some((9500, true)));
    // c has no management interface of its own: its mgmt-net link is a port of the bridge.
    assert!(
        lab.pings("c", "198.18.200.10"),
        "c -> a over the mgmt-net link"
    );
    env.host_sh("ip addr add 198.18.201.1/24 dev veth-a");
    assert!(lab.pings("a", "198.18.201.1"));

    let all = env.berth(&["lab", "inspect", "--all", "--json"]);
    let labs: Value = serde_json::from_str(&all.stdout).expect("inspect --all --json");
    assert_eq!(labs[0]["name"], lab.name.as_str(), "{labs}");
    assert_eq!(labs[0]["complete"], true);
    let again = lab.lab("deploy", &["--cgroup-parent", &env.cgroup_parent]);
    assert_eq!(again.code, 125, "{again:?}");
    common::assert_one_line_error(&again);
    assert!(again.stderr.contains("deployed already"), "{again:?}");
    let redo = lab.lab(
        "deploy",
        &["--reconfigure", "--cgroup-parent", &env.cgroup_parent],
    );
    assert_eq!(redo.code, 0, "{redo:?}");

    let saved = env.tmp.path().join("saved.clab.yml");
    let out = lab.lab("save", &["-o", saved.to_str().expect("utf-8")]);
    assert_eq!(out.code, 0, "{out:?}");
    let text = fs::read_to_string(&saved).expect("read the saved file");
    assert!(text.contains("mgmt-ipv4: \"198.18.200.10\""), "{text}");
    let json = env.berth(&[
        "lab",
        "graph",
        "-t",
        saved.to_str().expect("utf-8"),
        "--format",
        "json",
    ]);
    assert_eq!(json.code, 0, "{json:?}");
    serde_json::from_str::<Value>(&json.stdout).expect("graph --format json");
    let dot = lab.lab("graph", &[]);
    assert!(dot.stdout.contains("veth-a"), "{dot:?}");
    let mermaid = lab.lab("graph", &["--format", "mermaid"]);
    assert_eq!(mermaid.code, 0, "{mermaid:?}");
    let svg = lab.lab("graph", &["--format", "svg"]);
    if Path::new("/usr/bin/dot").exists() {
        assert!(svg.stdout.contains("<svg"), "{svg:?}");
    } else {
        assert_eq!(svg.code, 125, "{svg:?}");
        assert!(svg.stderr.contains("graphviz"), "{svg:?}");
    }

    // `--name` finds the kept topology.
    let out = env.berth(&["lab", "destroy", "--name", &lab.name]);
    assert_eq!(out.code, 0, "{out:?}");
    lab.assert_gone();
    assert!(!env.root.join("networks/labmgmt.conflist").exists());
}

/// The median round trip of `count` pings from `node` to `ip`, in milliseconds.
fn median_rtt(lab: &Lab<'_>, node: &str, ip: &str, count: u32) -> f64 {
    let out = lab.exec(node, &["ping", "-c", &count.to_string(), "-i", "0.2", ip]);
    assert_eq!(out.code, 0, "{out:?}");
    let mut times: Vec<f64> = out
        .stdout
        .lines()
        .filter_map(|l| l.split("time=").nth(1)?.split(' ').next()?.parse().ok())
        .collect();
    assert!(!times.is_empty(), "{out:?}");
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// The topology's `impairments` applied at deploy (20 ms each way: a 40 ms round trip),
/// `lab impair` changing and clearing them, kept across `stop`/`start` of a node, and
/// nothing left (no delay line) after destroy.
#[test]
fn impairments_from_the_file_and_at_run_time() {
    let env = Env::new();
    let lab = Lab::new(
        &env,
        r#"name: x
topology:
  defaults:
    kind: linux
    image: busybox
  nodes:
    a:
      exec: ["ip addr add 198.18.210.1/30 dev eth1"]
    b:
      exec: ["ip addr add 198.18.210.2/30 dev eth1"]
  links:
    - endpoints: ["a:eth1", "b:eth1"]
      impairments:
        delay: 20ms
"#,
    );
    lab.deploy();
    assert!(lab.pings("a", "198.18.210.2"));
    let rtt = median_rtt(&lab, "a", "198.18.210.2", 5);
    assert!((32.0..=48.0).contains(&rtt), "20 ms each way: {rtt} ms");

    let view: Value =
        serde_json::from_str(&lab.lab("inspect", &["--json"]).stdout).expect("inspect --json");
    assert_eq!(
        view["nodes"][0]["impairments"]["eth1"], "delay 20ms",
        "{view}"
    );
    let shown = lab.lab("impair", &["a:eth1"]);
    assert_eq!(shown.stdout, "a:eth1: delay 20ms\n", "{shown:?}");
    let cleared = lab.lab("impair", &["b:eth1", "--clear"]);
    assert_eq!(cleared.stdout, "b:eth1: no impairment\n", "{cleared:?}");
    let set = lab.lab("impair", &["a:eth1", "--delay", "50ms"]);
    assert_eq!(set.code, 0, "{set:?}");
    let rtt = median_rtt(&lab, "a", "198.18.210.2", 5);
    assert!((40.0..=60.0).contains(&rtt), "50 ms one way: {rtt} ms");
    // save: a's new delay, b's cleared one (an empty block would drop it: none written).
    let saved = lab.lab("save", &[]);
    assert!(saved.stdout.contains("delay: 50ms"), "{saved:?}");
    let dot = lab.lab("graph", &[]);
    assert!(
        dot.stdout.contains("50ms") && !dot.stdout.contains("20ms"),
        "{dot:?}"
    );
    assert!(!saved.stdout.contains("delay: 20ms"), "{saved:?}");
    let bad = lab.lab("impair", &["a:eth1", "--jitter", "2ms"]);
    assert_eq!(bad.code, 125, "{bad:?}");
    common::assert_one_line_error(&bad);

    // stop b: a's delay line is stopped with the link; start b: it is back.
    assert_eq!(lab.lab("stop", &["b"]).code, 0);
    assert_eq!(link_line(&lab.links_of("a"), "eth1"), None);
    let start = lab.lab("start", &["b"]);
    assert_eq!(start.code, 0, "{start:?}");
    assert!(lab.pings("a", "198.18.210.2"));
    let rtt = median_rtt(&lab, "a", "198.18.210.2", 5);
    assert!((40.0..=60.0).contains(&rtt), "50 ms after start: {rtt} ms");

    lab.destroy_clean();
}

/// The registry-image example: its nodes' image pulled from a registry (a local
/// docker-registry in the test's host netns, named through the file's `${BERTH_LAB_IMAGE}`)
/// at the first deploy, then taken from the store (`--pull never` deploys it again). The
/// test's image (netns-fixtures' `docker`) has no long-running command: the nodes get
/// `cmd: sh` (held open by stdin, as alpine's default `sh` is).
#[test]
fn registry_image_lab_pulls_once() {
    let env = Env::new();
    let registry = TestRegistry::plain(&env.host).expect("start docker-registry");
    let mut layout = OciLayout::temp().expect("an OCI layout");
    images::docker(&mut layout).expect("build the docker image");
    let image = format!("{}/lab/node:1", registry.host());
    images::push(
        layout.dir(),
        "docker",
        &Remote::of(&env.host, &registry),
        "lab/node:1",
    )
    .expect("push the image");
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/labs/registry-image/topology.clab.yml");
    let text = fs::read_to_string(&path)
        .expect("read the example")
        .replace(
            "      image: ${BERTH_LAB_IMAGE",
            "      cmd: sh\n      image: ${BERTH_LAB_IMAGE",
        );
    let lab = Lab::new(&env, &text);
    let config = env.tmp.path().join("registries.toml");
    fs::write(&config, "certs_d = []\n").expect("write the registries config");
    let deploy = |pull: &str| -> Run {
        let mut cmd = env.command(&[
            "--registries-config",
            config.to_str().expect("utf-8"),
            "lab",
            "deploy",
            "-t",
            lab.file(),
            "--pull",
            pull,
            "--cgroup-parent",
            &env.cgroup_parent,
        ]);
        cmd.env("BERTH_LAB_IMAGE", &image);
        env.host.output(&mut cmd).expect("run berth").into()
    };
    let out = deploy("missing");
    assert_eq!(out.code, 0, "{out:?}");
    let view: Value =
        serde_json::from_str(&lab.lab("inspect", &["--json"]).stdout).expect("inspect --json");
    assert_eq!(view["nodes"][0]["image"], image.as_str(), "{view}");
    // The test image links few applets: busybox's own ping.
    assert!((0..3).any(|_| {
        lab.exec("client", &["busybox", "ping", "-c1", "-W1", "198.18.60.2"])
            .code
            == 0
    }));
    assert_eq!(
        lab.exec("server", &["cat", "/docker.txt"])
            .stdout
            .lines()
            .last(),
        Some("docker media types")
    );
    lab.lab("destroy", &[]);
    // The image stays in the store: deployed again without a registry pull.
    drop(registry);
    let out = deploy("never");
    assert_eq!(out.code, 0, "{out:?}");
    lab.destroy_clean();
}

/// `env-files` (relative to the file, under `env`), then `destroy --cleanup` of a lab whose
/// state is gone: the containers and `/run/netns` names the file implies are removed;
/// without `--cleanup` the missing state is one line.
#[test]
fn env_files_and_destroy_cleanup_without_state() {
    let env = Env::new();
    fs::write(env.tmp.path().join("a.env"), "# the node's\nA=1\nB=0\n\n").expect("env file");
    let lab = Lab::new(
        &env,
        "name: x\ntopology:\n  defaults:\n    kind: linux\n    image: busybox\n  nodes:\n    a:\n      env-files: [a.env]\n      env: {B: \"2\"}\n    b: {}\n  links:\n    - endpoints: [\"a:eth1\", \"b:eth1\"]\n",
    );
    lab.deploy();
    let out = lab.exec("a", &["sh", "-c", "echo $A $B"]);
    assert!(out.stdout.ends_with("\n1 2\n"), "{out:?}");
    fs::remove_dir_all(env.root.join("labs").join(&lab.name)).expect("lose the lab's state");
    let out = lab.lab("destroy", &[]);
    assert_eq!(out.code, 125, "{out:?}");
    common::assert_one_line_error(&out);
    assert!(out.stderr.contains("is deployed"), "{out:?}");
    let out = lab.lab("destroy", &["--cleanup"]);
    assert_eq!(out.code, 0, "{out:?}");
    lab.assert_gone();
}

/// Two deploys of one lab at once: one deploys it, the other is refused (it waits for the
/// first, then finds the lab deployed) and removes nothing of it.
#[test]
fn concurrent_deploys_of_one_lab() {
    let env = Env::new();
    let lab = Lab::example(&env, "triangle");
    let spawn = || {
        let mut cmd = env.command(&[
            "lab",
            "deploy",
            "-t",
            lab.file(),
            "--cgroup-parent",
            &env.cgroup_parent,
        ]);
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        env.host.spawn(&mut cmd).expect("spawn deploy")
    };
    let (a, b) = (spawn(), spawn());
    let results: Vec<(bool, String)> = [a, b]
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().expect("wait for deploy");
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        })
        .collect();
    assert_eq!(
        results.iter().filter(|(ok, _)| *ok).count(),
        1,
        "{results:?}"
    );
    assert!(
        results
            .iter()
            .any(|(ok, err)| !ok && err.contains("deployed already")),
        "{results:?}"
    );
    assert!(lab.pings("r1", "198.18.255.2"), "the winner's lab works");
    lab.destroy_clean();
}
