//! Rendering: saved files parse back to the same lab; pictures and data show what matters.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use berth_topology::render::{NodeState, RuntimeState, dot, json, mermaid, save};
use berth_topology::{Impairments, NodeName, Rate, Topology, parse_str};

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            name.ends_with(".clab.yml") && !name.starts_with("bad-")
        })
        .collect();
    files.sort();
    assert!(files.len() >= 7, "{files:?}");
    files
}

fn env(k: &str) -> Option<String> {
    (k == "IMAGE").then(|| "busybox:1.36".to_owned())
}

fn load(path: &Path) -> Topology {
    let text = std::fs::read_to_string(path).unwrap();
    parse_str(&text, Some(path), &env)
        .unwrap_or_else(|e| panic!("{e}"))
        .topology
}

fn reparse(text: &str) -> Topology {
    match parse_str(text, None, &|_| None) {
        Ok(p) => p.topology,
        Err(e) => panic!("saved file does not parse: {e}\n{text}"),
    }
}

#[test]
fn saved_files_parse_back_to_the_same_lab() {
    for path in fixtures() {
        let t = load(&path);
        let saved = save(&t, &RuntimeState::default());
        let back = reparse(&saved);
        assert_eq!(back, t, "{}:\n{saved}", path.display());
        // Saving is stable: a saved file saves to itself.
        assert_eq!(save(&back, &RuntimeState::default()), saved);
    }
}

#[test]
fn saved_file_carries_runtime_state() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/impair.clab.yml");
    let t = load(&path);
    let b = NodeName::try_from("b").unwrap();
    let mut state = RuntimeState::default();
    let mut impairments = BTreeMap::new();
    // b:eth1 had the link's impairments; at run time it was cleared.
    impairments.insert("eth1".try_into().unwrap(), Impairments::default());
    // b:eth2 got a new rate.
    impairments.insert(
        "eth2".try_into().unwrap(),
        Impairments {
            rate: Some(Rate::try_from("5mbit").unwrap()),
            ..Impairments::default()
        },
    );
    state.nodes.insert(
        b.clone(),
        NodeState {
            mgmt_ipv4: Some("198.18.100.7".parse().unwrap()),
            impairments,
            ..NodeState::default()
        },
    );
    let saved = save(&t, &state);
    let back = reparse(&saved);
    assert_eq!(
        back.nodes[&b].mgmt_ipv4.unwrap().to_string(),
        "198.18.100.7"
    );
    assert!(back.mgmt.is_some(), "an address turns management on");
    // a:eth1 keeps the link's impairments, b:eth1 has none left.
    assert_eq!(
        back.links[0].impairments_of(0),
        t.links[0].impairments_of(0)
    );
    assert!(back.links[0].impairments_of(1).is_empty(), "{saved}");
    assert_eq!(back.links[1].impairments_of(0).to_string(), "rate 5mbit");
    assert_eq!(back.links[1].impairments_of(1).to_string(), "rate 1gbit");
}

#[test]
fn dollars_survive_saving() {
    let text = "name: d\ntopology:\n  nodes:\n    n:\n      kind: linux\n      image: busybox\n      exec: [\"sh -c 'echo $HOME $$ ${HOME}'\"]\n      env: {A: \"$${X}\"}\n";
    let home = |k: &str| (k == "HOME").then(|| "/root".to_owned());
    let t = parse_str(text, None, &home).unwrap().topology;
    let n = &t.nodes[&NodeName::try_from("n").unwrap()];
    assert_eq!(n.exec, ["sh -c 'echo /root $ /root'"]);
    assert_eq!(n.env["A"], "${X}");
    let saved = save(&t, &RuntimeState::default());
    let back = parse_str(&saved, None, &home).unwrap().topology;
    assert_eq!(back, t, "{saved}");
}

fn triangle() -> Topology {
    load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/triangle-extended.clab.yml"))
}

#[test]
fn dot_shows_nodes_interfaces_and_impairments() {
    let d = dot(&triangle());
    assert!(d.starts_with("graph \"tri\" {\n"), "{d}");
    assert!(d.contains("\"r1\" [shape=box"), "{d}");
    assert!(
        d.contains("\"r1\" -- \"r2\" [taillabel=\"eth1\", headlabel=\"eth1\"];"),
        "{d}"
    );
    assert!(
        d.contains(
            "\"r2\" -- \"r3\" [taillabel=\"eth2\", headlabel=\"eth1\", label=\"delay 10ms\""
        ),
        "{d}"
    );
    assert!(d.contains("label=\"r3:eth2 loss 5%\""), "{d}");
    assert!(d.ends_with("}\n"));

    let bridge =
        load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bridge.clab.yml"));
    let d = dot(&bridge);
    assert!(d.contains("\"br0\" [shape=hexagon"), "{d}");
    assert!(d.contains("\"host\" [shape=house"), "{d}");
    assert!(
        d.contains("\"h1\" -- \"host\" [taillabel=\"eth2\", headlabel=\"h1-uplink\"]"),
        "{d}"
    );
}

#[test]
fn mermaid_flowchart() {
    let m = mermaid(&triangle());
    let lines: Vec<&str> = m.lines().collect();
    assert_eq!(lines[0], "graph LR");
    assert_eq!(lines[1], "  n0[\"r1<br/>busybox:1.36\"]");
    assert!(lines.contains(&"  n0 ---|\"eth1 – eth1\"| n1"), "{m}");
    assert!(
        lines.contains(&"  n1 ---|\"eth2 – eth1<br/>delay 10ms\"| n2"),
        "{m}"
    );
}

#[test]
fn json_like_containerlab_topology_data() {
    let j = json(&triangle());
    assert_eq!(j["name"], "tri");
    assert_eq!(j["prefix"], "lab");
    assert_eq!(j["nodes"]["r2"]["longname"], "lab-tri-r2");
    assert_eq!(j["nodes"]["r3"]["labels"]["role"], "edge");
    assert_eq!(j["links"][0]["a"]["node"], "r1");
    assert_eq!(j["links"][0]["a"]["mac"], "02:00:00:00:01:01");
    assert_eq!(j["links"][0]["z"]["peer"], "a");
    assert_eq!(j["links"][0]["mtu"], 1500);
    assert_eq!(j["links"][1]["mtu"], 9500);
    assert_eq!(j["links"][2]["a"]["impairments"]["loss"], "5%");
    assert_eq!(j["links"][0]["vars"]["cost"], 10);
}

/// Graphviz reads what `dot` writes (the CLI renders SVG and PNG with it). Needs Debian's
/// `graphviz`; without it this test fails and says so.
#[test]
fn graphviz_accepts_the_dot_text() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    for path in fixtures() {
        let text = dot(&load(&path));
        let mut child = match Command::new("dot")
            .arg("-Tsvg")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => panic!("needs Graphviz's dot (apt-get install graphviz): {e}"),
        };
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}: {}\n{text}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let svg = String::from_utf8(out.stdout).unwrap();
        assert!(svg.contains("<svg"), "{svg}");
        let t = load(&path);
        for name in t.nodes.keys() {
            assert!(
                svg.contains(&format!(">{name}<")),
                "{name} missing in {}",
                path.display()
            );
        }
    }
}
