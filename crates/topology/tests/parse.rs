//! Topology files in, resolved labs or errors with their exact places out.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use berth_topology::{
    Attach, DEFAULT_MTU, ErrorKind, Errors, IfName, Kind, LinkKind, NetworkMode, NodeName, Parsed,
    Prefix, WarningKind, parse_str,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn parse_with(name: &str, env: &[(&str, &str)]) -> Result<Parsed, Errors> {
    let path = fixture(name);
    let text = std::fs::read_to_string(&path).unwrap();
    let env: BTreeMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    parse_str(&text, Some(Path::new(name)), &|k| env.get(k).cloned())
}

fn parse(name: &str) -> Parsed {
    match parse_with(name, &[]) {
        Ok(p) => p,
        Err(e) => panic!("{name}: {e}"),
    }
}

fn errors(name: &str) -> Errors {
    match parse_with(name, &[]) {
        Ok(_) => panic!("{name} parsed"),
        Err(e) => e,
    }
}

fn node(s: &str) -> NodeName {
    NodeName::try_from(s).unwrap()
}

fn ifname(s: &str) -> IfName {
    IfName::try_from(s).unwrap()
}

#[test]
fn two_nodes() {
    let p = parse("two-nodes.clab.yml");
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    let t = p.topology;
    assert_eq!(t.name.as_str(), "two");
    assert_eq!(t.prefix, Prefix::Default);
    assert_eq!(t.mgmt, None, "no management network unless the file asks");
    assert_eq!(t.nodes.len(), 2);
    assert_eq!(
        t.container_name(&node("n1")).unwrap().as_str(),
        "clab-two-n1"
    );
    assert_eq!(t.links.len(), 1);
    let link = &t.links[0];
    assert_eq!(link.kind, LinkKind::Veth);
    assert_eq!(link.mtu, DEFAULT_MTU);
    assert_eq!(link.endpoints[0].attach, Attach::Node(node("n1")));
    assert_eq!(link.endpoints[1].ifname, ifname("eth1"));
    let ifs = t.interfaces(&node("n2"));
    assert_eq!(ifs.len(), 1);
    assert_eq!(ifs[0].peer.attach, Attach::Node(node("n1")));
    assert_eq!(t.source.nodes[&node("n2")].line, 9);
    assert_eq!(t.source.links[0].line, 14);
}

#[test]
fn triangle_in_the_extended_form() {
    let t = parse("triangle-extended.clab.yml").topology;
    assert_eq!(
        t.container_name(&node("r2")).unwrap().as_str(),
        "lab-tri-r2"
    );
    let r1 = &t.nodes[&node("r1")];
    assert_eq!(
        r1.image.as_deref(),
        Some("busybox:1.36"),
        "from topology.kinds.linux"
    );
    assert_eq!(r1.sysctls["net.ipv4.ip_forward"], "1");
    let l0 = &t.links[0];
    assert_eq!(l0.mtu, 1500);
    assert_eq!(
        l0.endpoints[0].mac.unwrap().to_string(),
        "02:00:00:00:01:01"
    );
    assert_eq!(l0.vars["cost"], serde_json::json!(10));
    assert_eq!(l0.vars["ospf"], serde_json::json!(true));
    assert_eq!(l0.vars["subnet"], serde_json::json!("198.18.12.0/30"));
    assert_eq!(l0.labels["segment"], "core");
    // Link-level impairments reach both ends; endpoint-level ones only theirs.
    assert_eq!(t.links[1].impairments_of(0).to_string(), "delay 10ms");
    assert_eq!(t.links[1].impairments_of(1).to_string(), "delay 10ms");
    assert_eq!(t.links[2].impairments_of(0).to_string(), "loss 5%");
    assert!(t.links[2].impairments_of(1).is_empty());
    let r3: Vec<_> = t
        .interfaces(&node("r3"))
        .iter()
        .map(|i| i.name.to_string())
        .collect();
    assert_eq!(r3, ["eth1", "eth2"]);
    assert_eq!(t.nodes_with_label("role", "router").count(), 2);
    assert_eq!(t.select("role=router").count(), 2);
    assert_eq!(t.select("role").count(), 3);
    assert_eq!(t.select("nope").count(), 0);
    let at = berth_topology::NodeInterface::try_from("r3:eth2").unwrap();
    assert_eq!(t.find(&at), Some((2, 0)));
    let at = berth_topology::NodeInterface::try_from("r3:eth9").unwrap();
    assert_eq!(t.find(&at), None);
}

#[test]
fn bridge_segment_and_host_links() {
    let p = parse("bridge.clab.yml");
    let t = p.topology;
    assert_eq!(t.prefix, Prefix::Empty);
    assert_eq!(t.container_name(&node("h1")).unwrap().as_str(), "h1");
    assert_eq!(t.nodes[&node("br0")].kind, Kind::Bridge);
    assert_eq!(t.nodes[&node("h3")].image.as_deref(), Some("busybox"));
    assert_eq!(t.links[3].kind, LinkKind::Host);
    assert_eq!(t.links[3].endpoints[1].attach, Attach::Host);
    assert_eq!(t.links[4].kind, LinkKind::Host);
    assert_eq!(t.links[4].endpoints[1].ifname, ifname("h2-uplink"));
    assert_eq!(t.interfaces(&node("br0")).len(), 3);
}

#[test]
fn defaults_kinds_and_node_inherit_as_in_containerlab() {
    let t = parse("inherit.clab.yml").topology;
    assert_eq!(
        t.container_name(&node("plain")).unwrap().as_str(),
        "inherit-plain"
    );
    let plain = &t.nodes[&node("plain")];
    assert_eq!(plain.image.as_deref(), Some("busybox:kind"));
    assert_eq!(plain.env["LEVEL"], "kind");
    assert_eq!(plain.env["FROM_DEFAULTS"], "1");
    assert_eq!(plain.exec, ["echo defaults", "echo kind"]);
    let binds: Vec<_> = plain.binds.iter().map(|b| b.as_written()).collect();
    assert_eq!(binds, ["/srv/a:/a:ro", "/srv/kind-shared:/shared"]);
    assert_eq!(plain.startup_delay, 2);
    assert_eq!(plain.ports[0].as_written(), "8080:80");
    assert_eq!(plain.labels["team"], "net");

    let special = &t.nodes[&node("special")];
    assert_eq!(special.image.as_deref(), Some("busybox:node"));
    assert_eq!(special.env["LEVEL"], "node");
    assert_eq!(special.env["FROM_KIND"], "1");
    assert_eq!(special.exec, ["echo defaults", "echo kind", "echo node"]);
    let binds: Vec<_> = special.binds.iter().map(|b| b.as_written()).collect();
    assert_eq!(
        binds,
        ["/srv/a:/a:ro", "/srv/kind-shared:/shared", "./files:/files"]
    );
    assert_eq!(
        special.binds[2].source_path(Path::new("/labs/x")),
        Path::new("/labs/x/./files")
    );
    let ports: Vec<_> = special.ports.iter().map(|p| p.as_written()).collect();
    assert_eq!(ports, ["127.0.0.1:2222:22", "5353:53/udp"]);
    assert_eq!(special.memory, Some(256 << 20));
    assert_eq!(special.cpu_millis, Some(500));
    assert_eq!(special.user.as_deref(), Some("1000"));
    assert_eq!(special.network_mode, Some(NetworkMode::None));
    // startup-delay: 0 on the node is "not set", as in containerlab.
    assert_eq!(special.startup_delay, 0);
    assert_eq!(
        berth_topology::command::split(special.cmd.as_deref().unwrap()).unwrap(),
        ["sleep", "infinity"]
    );
}

#[test]
fn environment_variables_expand() {
    let p = parse_with("env.clab.yml", &[("IMAGE", "busybox:1.36"), ("IF", "e1")]).unwrap();
    let t = p.topology;
    assert_eq!(t.name.as_str(), "envlab");
    let n1 = &t.nodes[&node("n1")];
    assert_eq!(n1.image.as_deref(), Some("busybox:1.36"));
    assert_eq!(n1.env["GREETING"], "hello");
    assert_eq!(
        n1.env["UNSET"], "${NOT_SET}",
        "left as written, as containerlab"
    );
    assert_eq!(
        n1.exec,
        ["sh -c 'echo $HOSTNAME'"],
        "bare $VAR is the node's"
    );
    assert_eq!(t.links[0].endpoints[0].ifname, ifname("e1"));
    let unset: Vec<_> = p
        .warnings
        .iter()
        .map(|w| (w.at.pos.line, w.kind.clone()))
        .collect();
    assert_eq!(
        unset,
        [(
            11,
            WarningKind::UnsetVariable {
                name: "NOT_SET".into()
            }
        )]
    );

    // Without IMAGE, `${IMAGE}` stays as written (as in containerlab) and each place is
    // reported with its line.
    let p = parse_with("env.clab.yml", &[]).unwrap();
    assert_eq!(
        p.topology.nodes[&node("n2")].image.as_deref(),
        Some("${IMAGE}")
    );
    let lines: Vec<_> = p.warnings.iter().map(|w| w.at.pos.line).collect();
    assert_eq!(lines, [8, 11, 16]);
    assert_eq!(
        p.warnings[0].to_string(),
        "env.clab.yml:8:14: warning: ${IMAGE} is not set and has no default: left as written"
    );
}

#[test]
fn impairments_are_typed() {
    let t = parse("impair.clab.yml").topology;
    let a = &t.links[0].impairments_of(0);
    assert_eq!(a.delay.unwrap().duration().as_millis(), 20);
    assert_eq!(a.jitter.unwrap().duration().as_millis(), 2);
    assert_eq!(a.loss.unwrap().ppm(), 5_000);
    assert_eq!(a.rate.unwrap().bits_per_second(), 10_000_000);
    assert_eq!(a.corrupt.unwrap().to_string(), "0.1%");
    assert_eq!(t.links[0].impairments_of(1), *a);
    let b = t.links[1].impairments_of(0);
    assert_eq!(b.to_string(), "delay 50ms rate 100kbit");
    assert_eq!(t.links[1].impairments_of(1).to_string(), "rate 1gbit");
}

#[test]
fn management_network() {
    let t = parse("mgmt.clab.yml").topology;
    let m = t.mgmt.as_ref().unwrap();
    assert!(m.declared);
    assert_eq!(m.bridge.as_ref().unwrap().as_str(), "brmgmt");
    assert_eq!(m.ipv4_subnet.unwrap().to_string(), "198.18.100.0/24");
    assert_eq!(m.mtu, Some(1500));
    assert_eq!(
        t.nodes[&node("n1")].mgmt_ipv4.unwrap().to_string(),
        "198.18.100.11"
    );
    assert_eq!(t.links[1].kind, LinkKind::MgmtNet);
    assert_eq!(t.links[1].endpoints[1].attach, Attach::MgmtNet);
}

/// The single error of a bad fixture, as "line:column: message".
fn only_error(name: &str) -> (usize, usize, ErrorKind, String) {
    let e = errors(name);
    assert_eq!(e.0.len(), 1, "{e}");
    let err = &e.0[0];
    assert_eq!(err.at.file.as_deref(), Some(Path::new(name)));
    (
        err.at.pos.line,
        err.at.pos.column,
        err.kind.clone(),
        err.to_string(),
    )
}

#[test]
fn unknown_kind_names_its_line_and_the_supported_kinds() {
    let (line, col, kind, text) = only_error("bad-unknown-kind.clab.yml");
    assert_eq!((line, col), (8, 13));
    assert!(matches!(kind, ErrorKind::UnsupportedKind { .. }));
    assert_eq!(
        text,
        "bad-unknown-kind.clab.yml:8:13: node srl: unsupported kind \"nokia_srlinux\": Berth deploys linux and bridge"
    );
}

#[test]
fn unknown_top_level_key() {
    let e = errors("bad-top-key.clab.yml");
    let text = e.to_string();
    assert_eq!(
        text,
        "bad-top-key.clab.yml:1:1: the file: `topology` is required; \
         bad-top-key.clab.yml:2:1: unknown key \"topolgy\" in the file: did you mean \"topology\"? expected one of name, prefix, mgmt, topology"
    );
}

#[test]
fn unknown_node_key_is_an_error_and_a_harmless_one_a_warning() {
    let e = errors("bad-node-key.clab.yml");
    let lines: Vec<_> = e.iter().map(|e| (e.at.pos.line, e.at.pos.column)).collect();
    // The typo, and then the image it left missing.
    assert_eq!(lines, [(4, 5), (6, 7)], "{e}");
    assert!(matches!(&e.0[1].kind, ErrorKind::UnknownKey { key, .. } if key == "imgae"));

    let ok = "name: ok\ntopology:\n  nodes:\n    r1:\n      kind: linux\n      image: busybox\n      startup-config: r1.cfg\n";
    let p = parse_str(ok, None, &|_| None).unwrap();
    assert_eq!(p.warnings.len(), 1);
    assert_eq!(p.warnings[0].at.pos.line, 7);
    assert!(
        p.warnings[0]
            .to_string()
            .starts_with("line 7, column 7: warning: key \"startup-config\" in node r1 is ignored"),
        "{}",
        p.warnings[0]
    );
}

#[test]
fn endpoint_to_a_missing_node() {
    let (line, col, _, text) = only_error("bad-missing-node.clab.yml");
    assert_eq!((line, col), (11, 30));
    assert!(
        text.ends_with("endpoint r3:eth1: there is no node \"r3\" in topology.nodes"),
        "{text}"
    );
}

#[test]
fn interface_used_twice() {
    let (line, col, _, text) = only_error("bad-interface-twice.clab.yml");
    assert_eq!((line, col), (12, 19));
    assert!(
        text.ends_with("interface eth1 of node r1 is used twice (first on line 11): each interface belongs to one link"),
        "{text}"
    );
}

#[test]
fn malformed_yaml_names_the_line() {
    let (line, _, kind, text) = only_error("bad-yaml.clab.yml");
    assert!(matches!(kind, ErrorKind::Yaml(_)));
    assert_eq!(line, 9, "{text}");
    assert!(
        text.ends_with("(the '[' at line 8, column 18 is never closed)"),
        "{text}"
    );
}

#[test]
fn duplicate_node_name() {
    let (line, col, _, text) = only_error("bad-duplicate-node.clab.yml");
    assert_eq!((line, col), (9, 5));
    assert!(
        text.ends_with("duplicate key \"r1\" (first at line 7)"),
        "{text}"
    );
}

#[test]
fn bad_rate_and_loss() {
    let e = errors("bad-rate.clab.yml");
    let got: Vec<_> = e.iter().map(|e| (e.at.pos.line, e.at.pos.column)).collect();
    assert_eq!(got, [(12, 15), (13, 15)], "{e}");
    assert!(e.0[0].to_string().contains("invalid rate \"10mb\""), "{e}");
    assert!(
        e.0[1].to_string().contains("invalid percentage \"150%\""),
        "{e}"
    );
}

#[test]
fn interface_name_too_long() {
    let (line, col, _, text) = only_error("bad-long-ifname.clab.yml");
    assert_eq!((line, col), (10, 19));
    assert!(text.contains("longer than 15 bytes"), "{text}");
}

#[test]
fn unsupported_link_types() {
    let e = errors("bad-link-type.clab.yml");
    let got: Vec<_> = e.iter().map(|e| e.at.pos.line).collect();
    assert_eq!(got, [9, 14], "{e}");
    assert!(matches!(e.0[0].kind, ErrorKind::UnsupportedLinkType { .. }));
    assert!(matches!(e.0[1].kind, ErrorKind::UnsupportedEndpoint { .. }));
}

#[test]
fn more_checks_across_the_lab() {
    let base = "name: x\ntopology:\n  defaults: {kind: linux, image: busybox}\n  nodes:\n";
    let check = |rest: &str| parse_str(&format!("{base}{rest}"), None, &|_| None);
    // A node name that is reserved for endpoints.
    let e = check("    host:\n").unwrap_err();
    assert_eq!(e.0[0].at.pos.line, 5);
    // lo is every namespace's.
    let e =
        check("    a:\n    b:\n  links:\n    - endpoints: [\"a:lo\", \"b:eth1\"]\n").unwrap_err();
    assert!(e.to_string().contains("loopback"), "{e}");
    // Two bridges' ports share the host namespace.
    let e = check(
        "    b1: {kind: bridge}\n    b2: {kind: bridge}\n    a:\n  links:\n    - endpoints: [\"a:eth1\", \"b1:p1\"]\n    - endpoints: [\"a:eth2\", \"b2:p1\"]\n",
    )
    .unwrap_err();
    assert!(e.to_string().contains("the lab's host namespace"), "{e}");
    // A bridge with no links is only a warning.
    let p = check("    b1: {kind: bridge}\n").unwrap();
    assert!(matches!(
        p.warnings[0].kind,
        WarningKind::BridgeWithoutLinks { .. }
    ));
    // A bridge name must be an interface name.
    let e = check("    a-very-long-bridge-name: {kind: bridge}\n").unwrap_err();
    assert!(
        e.to_string().contains("bridge a-very-long-bridge-name"),
        "{e}"
    );
    // Jitter without delay.
    let e = check("    a:\n    b:\n  links:\n    - endpoints: [\"a:eth1\", \"b:eth1\"]\n      impairments: {jitter: 1ms}\n").unwrap_err();
    assert!(e.to_string().contains("needs a delay"), "{e}");
    // Management addresses outside the subnet, and eth0 taken by management.
    let e = parse_str(
        "name: x\nmgmt: {ipv4-subnet: 198.18.0.0/24}\ntopology:\n  defaults: {kind: linux, image: busybox}\n  nodes:\n    a: {mgmt-ipv4: 198.19.0.1}\n    b:\n  links:\n    - endpoints: [\"a:eth0\", \"b:eth1\"]\n",
        None,
        &|_| None,
    )
    .unwrap_err();
    let lines: Vec<_> = e.iter().map(|e| e.at.pos.line).collect();
    assert_eq!(lines, [6, 9], "{e}");
    // A host-side interface may not take the management bridge's name.
    let e = parse_str(
        "name: x\nmgmt: {bridge: brm}\ntopology:\n  defaults: {kind: linux, image: busybox}\n  nodes:\n    a:\n  links:\n    - endpoints: [\"a:eth1\", \"host:brm\"]\n",
        None,
        &|_| None,
    )
    .unwrap_err();
    assert!(e.to_string().contains("management bridge"), "{e}");
    assert_eq!(e.0[0].at.pos.line, 8);
    // mgmt-ipv4 in defaults would give every node one address.
    let e = parse_str(
        "name: x\ntopology:\n  defaults: {kind: linux, image: busybox, mgmt-ipv4: 198.18.0.2}\n  nodes:\n    a:\n",
        None,
        &|_| None,
    )
    .unwrap_err();
    assert!(matches!(e.0[0].kind, ErrorKind::NodeOnly { .. }), "{e}");
    // No kind anywhere.
    let e = parse_str(
        "name: x\ntopology:\n  nodes:\n    a: {image: busybox}\n",
        None,
        &|_| None,
    )
    .unwrap_err();
    assert!(matches!(e.0[0].kind, ErrorKind::NoKind { .. }), "{e}");
    // A command line that cannot be split, named at its line.
    let e = check("    a:\n      exec:\n        - ip addr add 198.18.0.1/24 dev eth1\n        - sh -c 'echo unterminated\n").unwrap_err();
    assert_eq!(e.0[0].at.pos.line, 8, "{e}");
    assert!(e.to_string().contains("unterminated single quote"), "{e}");
    // Empty file.
    let e = parse_str("# nothing\n", None, &|_| None).unwrap_err();
    assert!(matches!(e.0[0].kind, ErrorKind::Empty), "{e}");
}

#[test]
fn warnings_for_what_berth_ignores() {
    let text = "name: w
settings:
  certificate-authority: {}
topology:
  defaults: {kind: linux, image: busybox}
  kinds:
    nokia_srlinux: {type: ixrd2}
    linux: {kind: bridge, cap-add: [NET_ADMIN]}
  nodes:
    a:
    br: {kind: bridge, image: busybox, exec: [\"true\"]}
  links:
    - endpoints: [\"a:eth1\", \"br:p1\"]
";
    let p = parse_str(text, None, &|_| None).unwrap();
    let got: Vec<_> = p
        .warnings
        .iter()
        .map(|w| (w.at.pos.line, w.kind.to_string()))
        .collect();
    let want: Vec<(usize, String)> = vec![
        (2, "key \"settings\" in the file is ignored: it configures containerlab's certificate authority".into()),
        (7, "kind \"nokia_srlinux\" in topology.kinds is not one Berth deploys and no node uses it: ignored".into()),
        (7, "key \"type\" in topology.kinds.nokia_srlinux is ignored: it selects a hardware variant of network OS kinds".into()),
        (8, "key \"kind\" in topology.kinds.linux is ignored: a kind's settings cannot change its kind".into()),
        (8, "key \"cap-add\" in topology.kinds.linux is ignored: linux nodes run privileged, with every capability".into()),
        (11, "node br: `image` has no effect on a bridge node".into()),
        (11, "node br: `exec` has no effect on a bridge node".into()),
    ];
    assert_eq!(got, want);
    // The bridge took nothing from defaults.
    let br = &p.topology.nodes[&node("br")];
    assert_eq!((br.image.as_ref(), br.exec.len()), (None, 0));
}

#[test]
fn management_addresses_are_unique() {
    let e = parse_str(
        "name: m\ntopology:\n  defaults: {kind: linux, image: busybox}\n  nodes:\n    a: {mgmt-ipv4: 198.18.0.5}\n    b: {mgmt-ipv4: 198.18.0.5}\n",
        None,
        &|_| None,
    )
    .unwrap_err();
    assert_eq!(e.0.len(), 1, "{e}");
    assert_eq!(e.0[0].at.pos.line, 6);
    assert!(e.to_string().contains("already node a's"), "{e}");
}

#[test]
fn a_large_lab_parses_quickly() {
    // A 500-node chain: every node in one mapping, 499 links.
    let mut text = String::from(
        "name: chain\ntopology:\n  defaults: {kind: linux, image: busybox}\n  nodes:\n",
    );
    for i in 0..500 {
        text.push_str(&format!("    n{i}:\n"));
    }
    text.push_str("  links:\n");
    for i in 1..500 {
        text.push_str(&format!(
            "    - endpoints: [\"n{}:eth2\", \"n{i}:eth1\"]\n",
            i - 1
        ));
    }
    let start = std::time::Instant::now();
    let t = parse_str(&text, None, &|_| None).unwrap().topology;
    assert_eq!((t.nodes.len(), t.links.len()), (500, 499));
    // Generous even for a debug build on a loaded machine; a quadratic slip shows here.
    assert!(
        start.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn shared_network_namespaces() {
    let base = "name: s\ntopology:\n  defaults: {kind: linux, image: busybox}\n  nodes:\n";
    let t = parse_str(
        &format!("{base}    a:\n    b: {{network-mode: \"container:a\"}}\n    c: {{network-mode: \"container:b\"}}\n    d: {{network-mode: \"container:outside\"}}\n  links:\n    - endpoints: [\"a:eth1\", \"d:eth1\"]\n"),
        None,
        &|_| None,
    )
    .unwrap()
    .topology;
    assert_eq!(t.netns_owner(&node("c")), Some(&node("a")));
    assert_eq!(t.netns_owner(&node("b")), Some(&node("a")));
    assert_eq!(t.netns_owner(&node("a")), None);
    assert_eq!(t.netns_owner(&node("d")), None);
    let order: Vec<_> = t.start_order().iter().map(|n| n.to_string()).collect();
    assert_eq!(order, ["a", "d", "b", "c"]);
    // c's eth1 is a's eth1: one namespace.
    let e = parse_str(
        &format!("{base}    a:\n    b:\n    c: {{network-mode: \"container:a\"}}\n  links:\n    - endpoints: [\"a:eth1\", \"b:eth1\"]\n    - endpoints: [\"c:eth1\", \"b:eth2\"]\n"),
        None,
        &|_| None,
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("interface eth1 of node a is used twice"),
        "{e}"
    );
    // A loop.
    let e = parse_str(
        &format!("{base}    a: {{network-mode: \"container:b\"}}\n    b: {{network-mode: \"container:a\"}}\n"),
        None,
        &|_| None,
    )
    .unwrap_err();
    let got: Vec<_> = e
        .iter()
        .map(|e| (e.at.pos.line, e.kind.to_string()))
        .collect();
    assert_eq!(
        got,
        [
            (
                5,
                "node a: network-mode container: makes a loop (a -> b -> a)".to_owned()
            ),
            (
                6,
                "node b: network-mode container: makes a loop (b -> a -> b)".to_owned()
            ),
        ]
    );
}

#[test]
fn groups_sit_between_node_and_kind() {
    let p = parse("groups.clab.yml");
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    let t = p.topology;
    let r1 = &t.nodes[&node("r1")];
    assert_eq!(
        r1.image.as_deref(),
        Some("frr:10"),
        "the group's image over defaults'"
    );
    assert_eq!(r1.group.as_deref(), Some("routers"));
    assert_eq!(r1.labels["role"], "router");
    // defaults', the kind's, the group's, the node's; each line once.
    assert_eq!(
        r1.exec,
        [
            "ip link set lo up",
            "echo kind",
            "sysctl -w net.ipv4.ip_forward=1",
            "echo r1"
        ]
    );
    // h1 takes its group from its kind; no group `hosts` is defined, so nothing more.
    let h1 = &t.nodes[&node("h1")];
    assert_eq!(h1.group.as_deref(), Some("hosts"));
    assert_eq!(h1.image.as_deref(), Some("busybox"));
    // A group can set the kind.
    assert_eq!(t.nodes[&node("sw1")].kind, Kind::Bridge);
}
