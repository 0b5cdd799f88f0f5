//! The example labs under examples/labs/ parse without warnings, have the shape their
//! READMEs describe, and their exec lines only address interfaces the links create.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use berth_topology::command::split;
use berth_topology::{Kind, NodeName, Topology, parse_str};

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/labs")
        .join(name)
        .join("topology.clab.yml")
}

fn load_with(name: &str, env: &dyn Fn(&str) -> Option<String>) -> Topology {
    let path = example(name);
    let text = std::fs::read_to_string(&path).unwrap();
    let parsed = parse_str(&text, Some(&path), env).unwrap_or_else(|e| panic!("{e}"));
    assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
    parsed.topology
}

fn load(name: &str) -> Topology {
    load_with(name, &|_| None)
}

/// Every `dev IF` in a node's exec lines names an interface the node has.
fn exec_uses_existing_interfaces(t: &Topology) {
    for node in t.nodes.values() {
        let mut have: BTreeSet<String> = t
            .interfaces(&node.name)
            .iter()
            .map(|i| i.name.to_string())
            .collect();
        have.insert("lo".to_owned());
        for line in &node.exec {
            let words = split(line).unwrap();
            for pair in words.windows(2) {
                if pair[0] == "dev" {
                    assert!(
                        have.contains(&pair[1]),
                        "{}: {line:?} uses {} but has {have:?}",
                        node.name,
                        pair[1]
                    );
                }
            }
        }
    }
}

fn shape(t: &Topology) -> (usize, usize) {
    (t.nodes.len(), t.links.len())
}

#[test]
fn triangle() {
    let t = load("triangle");
    assert_eq!(shape(&t), (3, 3));
    for node in t.nodes.values() {
        assert_eq!(t.interfaces(&node.name).len(), 2);
        assert_eq!(node.exec[0], "sysctl -w net.ipv4.ip_forward=1");
        assert_eq!(node.labels["role"], "router");
    }
    assert_eq!(
        t.container_name(&NodeName::try_from("r1").unwrap())
            .unwrap()
            .as_str(),
        "clab-triangle-r1"
    );
    exec_uses_existing_interfaces(&t);
}

#[test]
fn clos() {
    let t = load("clos");
    assert_eq!(shape(&t), (10, 12));
    let count = |role: &str| t.nodes_with_label("role", role).count();
    assert_eq!((count("spine"), count("leaf"), count("host")), (2, 4, 4));
    for spine in t.nodes_with_label("role", "spine") {
        assert_eq!(t.interfaces(&spine.name).len(), 4);
    }
    for leaf in t.nodes_with_label("role", "leaf") {
        assert_eq!(t.interfaces(&leaf.name).len(), 3);
    }
    assert!(t.links.iter().all(|l| l.mtu == 9500));
    exec_uses_existing_interfaces(&t);
}

#[test]
fn bridge_segment() {
    let t = load("bridge-segment");
    assert_eq!(shape(&t), (4, 3));
    let br = &t.nodes[&NodeName::try_from("br-seg").unwrap()];
    assert_eq!(br.kind, Kind::Bridge);
    assert_eq!(br.image, None);
    assert_eq!(t.interfaces(&br.name).len(), 3);
    assert_eq!(t.nodes_with_label("role", "host").count(), 3);
    exec_uses_existing_interfaces(&t);
}

#[test]
fn registry_image() {
    let t = load("registry-image");
    assert_eq!(shape(&t), (2, 1));
    let client = &t.nodes[&NodeName::try_from("client").unwrap()];
    assert_eq!(
        client.image.as_deref(),
        Some("docker.io/library/alpine:3.20")
    );
    let local = load_with("registry-image", &|k| {
        (k == "BERTH_LAB_IMAGE").then(|| "127.0.0.1:5000/library/alpine:3.20".to_owned())
    });
    let server = &local.nodes[&NodeName::try_from("server").unwrap()];
    assert_eq!(
        server.image.as_deref(),
        Some("127.0.0.1:5000/library/alpine:3.20")
    );
    exec_uses_existing_interfaces(&t);
}
