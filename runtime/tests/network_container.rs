//! `--network container:NAME|ID`, docker's shared network namespace, end to end: two
//! containers in one namespace (same links and addresses, a server on 127.0.0.1 in one
//! answering the other, the target's hostname and name files), docker's refusals (flags that
//! configure a namespace the container does not own, a missing or stopped target), what
//! `stop`, `start` and `rm` of either side do (docker's behaviour: the target may go, the
//! dependent keeps a namespace with only `lo` until it is started again), `ps`/`inspect`, and
//! the same mode in a lab (`network-mode: container:X`). Every test runs `berth` in its own
//! throwaway host netns and ends with `Env::assert_clean`.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Env, assert_one_line_error};

/// `readlink /proc/self/ns/net` inside container `name` (through exec).
fn netns_of(env: &Env, name: &str) -> String {
    let out = env.berth(&["exec", name, "readlink", "/proc/self/ns/net"]);
    assert_eq!(out.code, 0, "{out:?}");
    out.stdout.trim().to_owned()
}

/// The links and addresses of a namespace, without counters that change between two looks.
fn addrs(out: &str) -> Vec<String> {
    out.lines()
        .map(|l| l.split_whitespace().take(4).collect::<Vec<_>>().join(" "))
        .collect()
}

#[test]
fn a_container_joins_another_ones_network_namespace() {
    let env = Env::new();
    let web = env.run_detached(&[
        "--name",
        "web",
        "busybox",
        "httpd",
        "-f",
        "-p",
        "127.0.0.1:8080",
        "-h",
        "/etc",
    ]);
    let web_addrs = env.berth(&["exec", "web", "ip", "-o", "addr"]);
    assert!(web_addrs.stdout.contains("eth0"), "{web_addrs:?}");

    // By name: the same links and addresses, and web's server on 127.0.0.1 answers; what it
    // serves (web's /etc/hostname) is also the joining container's hostname.
    let out = env.run(&[
        "--rm",
        "--network",
        "container:web",
        "busybox",
        "sh",
        "-c",
        "ip -o addr; echo ---; wget -qO- http://127.0.0.1:8080/hostname; hostname; \
         readlink /proc/self/ns/net; cat /etc/hosts",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let (ip, rest) = out.stdout.split_once("---\n").unwrap();
    assert_eq!(addrs(ip), addrs(&web_addrs.stdout));
    let lines: Vec<&str> = rest.lines().collect();
    assert_eq!(lines[0], &web[..12], "{out:?}");
    assert_eq!(
        lines[1],
        &web[..12],
        "docker: the target's hostname: {out:?}"
    );
    assert_eq!(lines[2], netns_of(&env, "web"));
    let web_hosts = env.berth(&["exec", "web", "cat", "/etc/hosts"]).stdout;
    assert_eq!(
        lines[3..].join("\n") + "\n",
        web_hosts,
        "the target's /etc/hosts"
    );

    // By id prefix, detached: inspect and ps show the mode; no attachment of its own.
    let dep = env.run_detached(&[
        "--name",
        "dep",
        "--network",
        &format!("container:{}", &web[..8]),
        "busybox",
        "sleep",
        "60",
    ]);
    assert_eq!(netns_of(&env, "dep"), netns_of(&env, "web"));
    // A chain (docker allows it): dep's namespace is web's.
    let out = env.run(&[
        "--rm",
        "--network",
        "container:dep",
        "busybox",
        "readlink",
        "/proc/self/ns/net",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout.trim(), netns_of(&env, "web"));
    let doc = env.inspect("dep");
    assert_eq!(doc["config"]["network"]["mode"], "container", "{doc:#}");
    assert_eq!(
        doc["config"]["network"]["networks"],
        web.as_str(),
        "{doc:#}"
    );
    assert_eq!(doc["config"]["hostname"], &web[..12]);
    assert!(doc["state"]["attachments"].is_null(), "{doc:#}");
    assert_eq!(doc["paths"]["netns"], env.inspect("web")["paths"]["netns"]);
    let ps = env.ps();
    let row = ps.iter().find(|c| c["id"] == dep.as_str()).unwrap();
    assert_eq!(row["networkMode"], format!("container:{web}"));
    assert_eq!(row["networks"], serde_json::json!({}));
    let row = ps.iter().find(|c| c["id"] == web.as_str()).unwrap();
    assert_eq!(row["networkMode"], "cni");

    assert_eq!(env.berth(&["rm", "-f", "dep", "web"]).code, 0);
    env.assert_clean();
}

#[test]
fn flags_for_a_namespace_of_its_own_and_bad_targets_are_refused() {
    let env = Env::new();
    env.run_detached(&["--name", "web", "busybox", "sleep", "60"]);
    assert_eq!(env.run(&["--name", "done", "busybox", "true"]).code, 0);

    let refused = [
        (
            &["--hostname", "x"][..],
            "conflicting options: hostname and the network mode",
        ),
        (
            &["-p", "8080:80"],
            "conflicting options: port publishing and the network mode",
        ),
        (
            &["-P"],
            "conflicting options: port publishing and the network mode",
        ),
        (
            &["--mac-address", "02:42:ac:11:00:02"],
            "conflicting options: mac-address and the network mode",
        ),
        (
            &["--ip", "10.210.0.9"],
            "conflicting options: ip address and the network mode",
        ),
        (
            &["--network", "berth"],
            "--network container: cannot be combined with other networks",
        ),
        (
            &["--userns", "auto"],
            "a user namespace (--userns, --uidmap) of its own cannot own",
        ),
    ];
    for (flags, message) in refused {
        let mut args = vec!["--rm", "--network", "container:web"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["busybox", "true"]);
        let out = env.run(&args);
        assert_one_line_error(&out);
        assert_eq!(out.code, 125, "{out:?}");
        assert!(out.stderr.contains(message), "{flags:?}: {out:?}");
    }
    for (target, message) in [
        ("container:", "invalid container format container:<name|id>"),
        ("container:nope", "no such container: nope"),
        (
            "container:done",
            "cannot join network of a non running container: done",
        ),
    ] {
        let out = env.run(&["--rm", "--network", target, "busybox", "true"]);
        assert_one_line_error(&out);
        assert_eq!(out.code, 125, "{out:?}");
        assert!(out.stderr.contains(message), "{target}: {out:?}");
    }
    // Nothing was created by the refusals.
    let names: Vec<String> = env
        .ps()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");

    assert_eq!(env.berth(&["rm", "-f", "web", "done"]).code, 0);
    env.assert_clean();
}

#[test]
fn stop_start_and_rm_of_either_side_as_docker() {
    let env = Env::new();
    env.run_detached(&["--name", "web", "busybox", "sleep", "600"]);
    env.run_detached(&[
        "--name",
        "dep",
        "--network",
        "container:web",
        "busybox",
        "sleep",
        "600",
    ]);
    let shared = netns_of(&env, "web");
    assert_eq!(netns_of(&env, "dep"), shared);

    // The target stops: its attachment goes (CNI DEL in the namespace), the dependent keeps
    // running in the namespace, which has only `lo` left (docker: it loses its network).
    assert_eq!(env.berth(&["stop", "-t", "0", "web"]).code, 0);
    assert_eq!(netns_of(&env, "dep"), shared);
    let links = env.berth(&["exec", "dep", "ip", "-o", "link"]);
    assert_eq!(links.code, 0, "{links:?}");
    assert_eq!(links.stdout.lines().count(), 1, "only lo: {links:?}");
    assert!(links.stdout.contains(": lo:"), "{links:?}");

    // Started again, the target has a new namespace; the dependent stays in the old one
    // until it is started again itself, and then joins the new one.
    assert_eq!(env.berth(&["start", "web"]).code, 0);
    env.wait_running("web");
    let renewed = netns_of(&env, "web");
    assert_ne!(renewed, shared);
    assert_eq!(netns_of(&env, "dep"), shared);
    assert_eq!(env.berth(&["stop", "-t", "0", "dep"]).code, 0);
    assert_eq!(env.berth(&["start", "dep"]).code, 0);
    env.wait_running("dep");
    assert_eq!(netns_of(&env, "dep"), renewed);
    let links = env.berth(&["exec", "dep", "ip", "-o", "link"]);
    assert!(links.stdout.contains("eth0"), "{links:?}");

    // A stopped target: the dependent cannot start.
    assert_eq!(env.berth(&["stop", "-t", "0", "dep", "web"]).code, 0);
    let out = env.berth(&["start", "dep"]);
    assert_one_line_error(&out); // exit 1, as any failed `start` (docker's too)
    assert!(
        out.stderr
            .contains("cannot join network of a non running container: web"),
        "{out:?}"
    );

    // docker removes a target whose namespace a running container shares; the dependent
    // runs on (with `lo` only), and once the target is gone it cannot start again.
    assert_eq!(env.berth(&["start", "web"]).code, 0);
    env.wait_running("web");
    assert_eq!(env.berth(&["start", "dep"]).code, 0);
    env.wait_running("dep");
    assert_eq!(env.berth(&["rm", "-f", "web"]).code, 0);
    let links = env.berth(&["exec", "dep", "ip", "-o", "link"]);
    assert_eq!(links.stdout.lines().count(), 1, "only lo: {links:?}");
    assert_eq!(env.berth(&["stop", "-t", "0", "dep"]).code, 0);
    let out = env.berth(&["start", "dep"]);
    assert_one_line_error(&out);
    assert!(out.stderr.contains("which is gone"), "{out:?}");

    assert_eq!(env.berth(&["rm", "-f", "dep"]).code, 0);
    env.assert_clean();
}

/// A lab in the test's temporary directory, destroyed (and its `/run/netns` names removed)
/// when dropped, so that a failing test leaves nothing in the real `/run/netns`.
struct Lab<'a> {
    env: &'a Env,
    name: String,
    file: String,
}

impl<'a> Lab<'a> {
    fn new(env: &'a Env, body: &str) -> Lab<'a> {
        let name = format!("nc{}", std::process::id() % 100_000);
        let path = env.tmp.path().join(format!("{name}.clab.yml"));
        std::fs::write(&path, format!("name: {name}\n{body}")).unwrap();
        let file = path.to_str().unwrap().to_owned();
        Lab { env, name, file }
    }

    fn lab(&self, verb: &str, args: &[&str]) -> common::Run {
        let mut all = vec!["lab", verb, "-t", self.file.as_str()];
        all.extend_from_slice(args);
        self.env.berth(&all)
    }

    fn exec(&self, node: &str, command: &[&str]) -> common::Run {
        let mut all = vec!["--node", node];
        all.extend_from_slice(command);
        self.lab("exec", &all)
    }

    /// The lab's entries in the real `/run/netns`.
    fn netns_names(&self) -> Vec<String> {
        common::lab_netns_names(&self.name)
    }
}

impl Drop for Lab<'_> {
    fn drop(&mut self) {
        common::destroy_lab(self.env, &self.name, &[]);
    }
}

/// containerlab's `network-mode: container:r1`: r1b starts after r1 in r1's namespace, with
/// r1's hostname; its link lands there (no `/run/netns` name of its own), and traffic over
/// it works from either node; destroy leaves nothing.
#[test]
fn lab_node_in_another_nodes_namespace() {
    let env = Env::new();
    let lab = Lab::new(
        &env,
        "topology:\n  nodes:\n    r1b:\n      kind: linux\n      image: busybox\n      \
         network-mode: container:r1\n    r1:\n      kind: linux\n      image: busybox\n    \
         r2:\n      kind: linux\n      image: busybox\n  links:\n    \
         - endpoints: [\"r1b:e1\", \"r2:e1\"]\n",
    );
    let out = lab.lab("deploy", &["--cgroup-parent", &env.cgroup_parent]);
    assert_eq!(out.code, 0, "{out:?}");

    let r1 = format!("clab-{}-r1", lab.name);
    let r1b = format!("clab-{}-r1b", lab.name);
    assert_eq!(netns_of(&env, &r1b), netns_of(&env, &r1));
    let links = env.host_sh(&format!("ip netns exec {r1} ip -o link"));
    assert!(
        links.contains(" e1@"),
        "r1b's link in r1's namespace: {links}"
    );
    let mut names = lab.netns_names();
    names.sort();
    assert_eq!(
        names,
        [r1.clone(), format!("clab-{}-r2", lab.name)],
        "no name of r1b's own"
    );
    let out = lab.exec("r1b", &["hostname"]);
    assert!(out.stdout.contains("\nr1\n"), "r1's hostname: {out:?}");
    assert_eq!(env.inspect(&r1b)["config"]["network"]["mode"], "container");

    // Addressed from r1b, answered in r1: one namespace.
    for (node, addr) in [("r1b", "198.18.77.1/24"), ("r2", "198.18.77.2/24")] {
        let out = lab.exec(node, &["ip", "addr", "add", addr, "dev", "e1"]);
        assert_eq!(out.code, 0, "{out:?}");
    }
    let ping = |node: &str, ip: &str| {
        (0..3).any(|_| lab.exec(node, &["ping", "-c1", "-W1", ip]).code == 0)
    };
    assert!(ping("r1", "198.18.77.2"));
    assert!(ping("r2", "198.18.77.1"));

    // The verbs find r1b's interfaces in the namespace it shares: inspect, link down/up.
    let out = lab.lab("inspect", &["--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let view: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let r1b_view = view["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == "r1b")
        .unwrap();
    assert_eq!(r1b_view["interfaces"]["e1"][0], "198.18.77.1/24", "{view}");
    let e1_up = || {
        env.host_sh(&format!("ip netns exec {r1} ip -o link show e1"))
            .contains(",UP")
    };
    assert_eq!(lab.lab("link", &["r1b:e1", "down"]).code, 0);
    assert!(!e1_up());
    assert_eq!(lab.lab("link", &["r1b:e1", "up"]).code, 0);
    assert!(e1_up());
    // stop/start re-create a node's links with its namespace: refused for a shared one.
    for node in ["r1", "r1b"] {
        let out = lab.lab("stop", &[node]);
        assert_one_line_error(&out);
        assert!(
            out.stderr.contains("shares its network namespace"),
            "{out:?}"
        );
    }

    let out = lab.lab("destroy", &[]);
    assert_eq!(out.code, 0, "{out:?}");
    env.assert_clean();
    assert!(lab.netns_names().is_empty(), "{:?}", lab.netns_names());
    assert!(!env.root.join("labs").join(&lab.name).exists());
}

/// A target in a user namespace of its own (`--userns=auto`): its network namespace belongs
/// to that user namespace, and a container of the host's joins it all the same (root of the
/// host owns every user namespace), with its name files.
#[test]
fn joining_a_target_in_a_user_namespace() {
    let env = Env::new();
    env.run_detached(&["--name", "u", "--userns", "auto", "busybox", "sleep", "60"]);
    let out = env.run(&[
        "--rm",
        "--network",
        "container:u",
        "busybox",
        "sh",
        "-c",
        "readlink /proc/self/ns/net; ip -o link | grep -c eth0; cat /proc/self/uid_map",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], netns_of(&env, "u"), "{out:?}");
    assert_eq!(lines[1], "1", "{out:?}");
    assert!(
        lines[2].split_whitespace().eq(["0", "0", "4294967295"]),
        "{out:?}"
    );
    assert_eq!(env.berth(&["rm", "-f", "u"]).code, 0);
    env.assert_clean();
}
