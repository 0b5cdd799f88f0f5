//! `berth lab graph`: the lab as Graphviz dot (the caller renders SVG or PNG with `dot`),
//! as a Mermaid flowchart, and as JSON in the shape of containerlab's topology data.
//!
//! Edges carry the interface names at their ends and the impairments in force; bridges,
//! the host namespace and the management network are drawn with shapes of their own.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use crate::impair::Impairments;
use crate::model::{Attach, Kind, Link, Topology};

/// Vertices: the nodes, plus `host` and `mgmt-net` when a link uses them.
fn specials(t: &Topology) -> BTreeSet<Attach> {
    t.links
        .iter()
        .flat_map(|l| l.endpoints.iter())
        .filter(|e| !matches!(e.attach, Attach::Node(_)))
        .map(|e| e.attach.clone())
        .collect()
}

/// The impairments of a link in one line: one text when both ends have the same.
fn link_impairments(l: &Link) -> String {
    let (a, z) = (l.impairments_of(0), l.impairments_of(1));
    let end = |side: usize, i: &Impairments| {
        let e = &l.endpoints[side];
        format!("{}:{} {i}", e.attach.as_str(), e.ifname)
    };
    match (a.is_empty(), z.is_empty()) {
        (true, true) => String::new(),
        _ if a == z => a.to_string(),
        (false, true) => end(0, &a),
        (true, false) => end(1, &z),
        (false, false) => format!("{}\n{}", end(0, &a), end(1, &z)),
    }
}

/// A dot string literal.
fn dot_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The lab as an undirected Graphviz graph.
pub fn dot(t: &Topology) -> String {
    let mut out = String::new();
    out.push_str(&format!("graph {} {{\n", dot_str(t.name.as_str())));
    out.push_str(&format!(
        "  graph [label={}, labelloc=t, fontname=\"Helvetica\", nodesep=0.8, ranksep=1.2];\n",
        dot_str(&format!("lab {}", t.name))
    ));
    out.push_str("  node [fontname=\"Helvetica\", fontsize=11];\n");
    // Interface names sit at the ends of the edges, away from the line and in their own
    // colour, so that a busy node stays readable.
    out.push_str(
        "  edge [fontname=\"Helvetica\", fontsize=9, labelfontsize=8, labeldistance=2.2, labelfontcolor=\"#1a5fb4\"];\n",
    );
    for n in t.nodes.values() {
        let mut label = n.name.to_string();
        let attrs = match n.kind {
            Kind::Linux => {
                if let Some(image) = &n.image {
                    label.push('\n');
                    label.push_str(image);
                }
                if let Some(v4) = n.mgmt_ipv4 {
                    label.push('\n');
                    label.push_str(&v4.to_string());
                }
                "shape=box, style=\"rounded,filled\", fillcolor=\"#e8f0fe\""
            }
            Kind::Bridge => {
                label.push_str("\nbridge");
                "shape=hexagon, style=filled, fillcolor=\"#fff4d6\""
            }
        };
        out.push_str(&format!(
            "  {} [{attrs}, label={}];\n",
            dot_str(n.name.as_str()),
            dot_str(&label)
        ));
    }
    // Nodes of one `group` (spines, leaves…) side by side, as containerlab's graph does.
    let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for n in t.nodes.values() {
        if let Some(g) = &n.group {
            groups.entry(g).or_default().push(n.name.as_str());
        }
    }
    for members in groups.values().filter(|m| m.len() > 1) {
        let members: Vec<String> = members.iter().map(|m| dot_str(m)).collect();
        out.push_str(&format!("  {{ rank=same; {}; }}\n", members.join("; ")));
    }
    for s in specials(t) {
        let attrs = match s {
            Attach::Host => "shape=house, style=filled, fillcolor=\"#eeeeee\"",
            _ => "shape=cylinder, style=filled, fillcolor=\"#eeeeee\"",
        };
        out.push_str(&format!(
            "  {} [{attrs}, label={}];\n",
            dot_str(s.as_str()),
            dot_str(s.as_str())
        ));
    }
    for l in &t.links {
        let [a, z] = &l.endpoints;
        let mut attrs = format!(
            "taillabel={}, headlabel={}",
            dot_str(a.ifname.as_str()),
            dot_str(z.ifname.as_str())
        );
        let imp = link_impairments(l);
        if !imp.is_empty() {
            attrs.push_str(&format!(", label={}, color=\"#c0392b\"", dot_str(&imp)));
        }
        out.push_str(&format!(
            "  {} -- {} [{attrs}];\n",
            dot_str(a.attach.as_str()),
            dot_str(z.attach.as_str())
        ));
    }
    out.push_str("}\n");
    out
}

/// Text inside a Mermaid `"…"` label.
fn mermaid_text(s: &str) -> String {
    s.replace('"', "#quot;").replace('\n', "<br/>")
}

/// The lab as a Mermaid flowchart (vertices get ids `n0`, `n1`… since node names may hold
/// characters Mermaid ids cannot).
pub fn mermaid(t: &Topology) -> String {
    let mut out = String::from("graph LR\n");
    let mut ids: Vec<(Attach, String)> = Vec::new();
    let id_of = |attach: &Attach, ids: &mut Vec<(Attach, String)>| -> String {
        if let Some((_, id)) = ids.iter().find(|(a, _)| a == attach) {
            return id.clone();
        }
        let id = format!("n{}", ids.len());
        ids.push((attach.clone(), id.clone()));
        id
    };
    for n in t.nodes.values() {
        let id = id_of(&Attach::Node(n.name.clone()), &mut ids);
        let text = match (&n.kind, &n.image) {
            (Kind::Linux, Some(image)) => format!("{}\n{image}", n.name),
            (Kind::Linux, None) => n.name.to_string(),
            (Kind::Bridge, _) => format!("{}\nbridge", n.name),
        };
        let text = mermaid_text(&text);
        match n.kind {
            Kind::Linux => out.push_str(&format!("  {id}[\"{text}\"]\n")),
            Kind::Bridge => out.push_str(&format!("  {id}{{{{\"{text}\"}}}}\n")),
        }
    }
    for s in specials(t) {
        let id = id_of(&s, &mut ids);
        out.push_str(&format!("  {id}[(\"{}\")]\n", s.as_str()));
    }
    for l in &t.links {
        let [a, z] = &l.endpoints;
        let (ia, iz) = (id_of(&a.attach, &mut ids), id_of(&z.attach, &mut ids));
        let mut text = format!("{} – {}", a.ifname, z.ifname);
        let imp = link_impairments(l);
        if !imp.is_empty() {
            text.push('\n');
            text.push_str(&imp);
        }
        out.push_str(&format!("  {ia} ---|\"{}\"| {iz}\n", mermaid_text(&text)));
    }
    out
}

fn impairments_json(i: &Impairments) -> Value {
    Value::Object(
        i.entries()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), Value::String(v)))
            .collect(),
    )
}

/// The lab as JSON, shaped like containerlab's `topology-data.json`: `nodes` by name with
/// their container (`longname`) names, `links` with an `a` and a `z` end.
pub fn json(t: &Topology) -> Value {
    let mut nodes = Map::new();
    for (index, n) in t.nodes.values().enumerate() {
        let longname = t
            .container_name(&n.name)
            .map(|c| c.to_string())
            .unwrap_or_default();
        nodes.insert(
            n.name.to_string(),
            json!({
                "index": index.to_string(),
                "shortname": n.name.as_str(),
                "longname": longname,
                "kind": n.kind.as_str(),
                "image": n.image.clone().unwrap_or_default(),
                "group": n.group.clone().unwrap_or_default(),
                "labels": n.labels,
                "mgmt-ipv4-address": n.mgmt_ipv4.map(|a| a.to_string()).unwrap_or_default(),
                "mgmt-ipv6-address": n.mgmt_ipv6.map(|a| a.to_string()).unwrap_or_default(),
            }),
        );
    }
    let links: Vec<Value> = t
        .links
        .iter()
        .map(|l| {
            let end = |side: usize| {
                let e = &l.endpoints[side];
                json!({
                    "node": e.attach.as_str(),
                    "interface": e.ifname.as_str(),
                    "mac": e.mac.map(|m| m.to_string()).unwrap_or_default(),
                    "peer": if side == 0 { "z" } else { "a" },
                    "impairments": impairments_json(&l.impairments_of(side)),
                })
            };
            json!({
                "type": l.kind.as_str(),
                "a": end(0),
                "z": end(1),
                "mtu": l.mtu,
                "labels": l.labels,
                "vars": Value::Object(l.vars.clone()),
            })
        })
        .collect();
    json!({
        "name": t.name.as_str(),
        "type": "clab",
        "prefix": t.prefix.as_written().unwrap_or("clab"),
        "nodes": nodes,
        "links": links,
    })
}
