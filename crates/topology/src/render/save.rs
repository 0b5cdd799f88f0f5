//! `berth lab save`: a topology, plus what the running lab changed, back to a containerlab
//! file that parses to the same [`Topology`].
//!
//! Nodes are written resolved (inheritance applied, no `defaults` or `kinds`), so the file
//! reads the same in containerlab and needs nothing else. Links keep the brief form unless
//! something only the extended form can say (a MAC, an endpoint's impairments) is set.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::impair::Impairments;
use crate::model::{Attach, Kind, Link, LinkKind, Node, Topology};
use crate::names::{IfName, NodeName};
use crate::render::emit::{Y, document};

/// What a running lab knows that its file may not say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimeState {
    pub nodes: BTreeMap<NodeName, NodeState>,
}

/// One node's run-time state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeState {
    /// The management addresses the node got.
    pub mgmt_ipv4: Option<Ipv4Addr>,
    pub mgmt_ipv6: Option<Ipv6Addr>,
    /// The impairments in force per interface (after `berth lab impair`); an interface
    /// listed with empty impairments was cleared.
    pub impairments: BTreeMap<IfName, Impairments>,
}

/// The topology as containerlab YAML, with the run-time state folded in.
pub fn save(topology: &Topology, state: &RuntimeState) -> String {
    let mut root = vec![("name".to_owned(), Y::Str(topology.name.to_string()))];
    if let Some(prefix) = topology.prefix.as_written() {
        root.push(("prefix".to_owned(), Y::Str(prefix.to_owned())));
    }
    if let Some(m) = &topology.mgmt {
        let mut e = Vec::new();
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                e.push((k.to_owned(), Y::Str(v)));
            }
        };
        put("network", m.network.clone());
        put("bridge", m.bridge.as_ref().map(ToString::to_string));
        put("ipv4-subnet", m.ipv4_subnet.map(|v| v.to_string()));
        put("ipv6-subnet", m.ipv6_subnet.map(|v| v.to_string()));
        put("ipv4-gw", m.ipv4_gw.map(|v| v.to_string()));
        put("ipv6-gw", m.ipv6_gw.map(|v| v.to_string()));
        put("ipv4-range", m.ipv4_range.map(|v| v.to_string()));
        put("ipv6-range", m.ipv6_range.map(|v| v.to_string()));
        if let Some(mtu) = m.mtu {
            e.push(("mtu".to_owned(), Y::Raw(mtu.to_string())));
        }
        if let Some(x) = m.external_access {
            e.push(("external-access".to_owned(), Y::Raw(x.to_string())));
        }
        // A network only implied by addresses or mgmt-net links stays implied.
        if m.declared || !e.is_empty() {
            root.push(("mgmt".to_owned(), Y::Map(e)));
        }
    }
    let nodes = topology
        .nodes
        .values()
        .map(|n| (n.name.to_string(), node(n, state.nodes.get(&n.name))))
        .collect();
    let mut topo = vec![("nodes".to_owned(), Y::Map(nodes))];
    if !topology.links.is_empty() {
        let links = topology.links.iter().map(|l| link(l, state)).collect();
        topo.push(("links".to_owned(), Y::Seq(links)));
    }
    root.push(("topology".to_owned(), Y::Map(topo)));
    document(
        &format!(
            "lab {} saved by berth lab save (containerlab format; `impairments` is Berth's)",
            topology.name
        ),
        &Y::Map(root),
    )
}

fn strings(items: &[String]) -> Y {
    Y::Seq(items.iter().map(|s| Y::Str(s.clone())).collect())
}

fn string_map(map: &BTreeMap<String, String>) -> Y {
    Y::Map(
        map.iter()
            .map(|(k, v)| (k.clone(), Y::Str(v.clone())))
            .collect(),
    )
}

fn node(n: &Node, state: Option<&NodeState>) -> Y {
    let mut e = vec![("kind".to_owned(), Y::Str(n.kind.as_str().to_owned()))];
    let opt = |e: &mut Vec<(String, Y)>, k: &str, v: &Option<String>| {
        if let Some(v) = v {
            e.push((k.to_owned(), Y::Str(v.clone())));
        }
    };
    opt(&mut e, "image", &n.image);
    opt(&mut e, "cmd", &n.cmd);
    opt(&mut e, "entrypoint", &n.entrypoint);
    opt(&mut e, "user", &n.user);
    opt(&mut e, "group", &n.group);
    opt(
        &mut e,
        "network-mode",
        &n.network_mode.as_ref().map(|m| m.as_written()),
    );
    if n.startup_delay > 0 {
        e.push((
            "startup-delay".to_owned(),
            Y::Raw(n.startup_delay.to_string()),
        ));
    }
    if let Some(m) = n.memory {
        // The largest of docker's binary units that divides the size.
        let (size, unit) = [(1u64 << 30, "gb"), (1 << 20, "mb"), (1 << 10, "kb")]
            .into_iter()
            .find(|(unit, _)| m % unit == 0)
            .map_or((m, "b"), |(unit, name)| (m / unit, name));
        e.push(("memory".to_owned(), Y::Str(format!("{size}{unit}"))));
    }
    if let Some(c) = n.cpu_millis {
        let cpu = format!("{}.{:03}", c / 1000, c % 1000);
        let cpu = cpu.trim_end_matches('0').trim_end_matches('.').to_owned();
        e.push(("cpu".to_owned(), Y::Raw(cpu)));
    }
    let v4 = state.and_then(|s| s.mgmt_ipv4).or(n.mgmt_ipv4);
    let v6 = state.and_then(|s| s.mgmt_ipv6).or(n.mgmt_ipv6);
    opt(&mut e, "mgmt-ipv4", &v4.map(|a| a.to_string()));
    opt(&mut e, "mgmt-ipv6", &v6.map(|a| a.to_string()));
    if !n.env.is_empty() {
        e.push(("env".to_owned(), string_map(&n.env)));
    }
    if !n.env_files.is_empty() {
        e.push(("env-files".to_owned(), strings(&n.env_files)));
    }
    if !n.labels.is_empty() {
        e.push(("labels".to_owned(), string_map(&n.labels)));
    }
    if !n.sysctls.is_empty() {
        e.push(("sysctls".to_owned(), string_map(&n.sysctls)));
    }
    if !n.binds.is_empty() {
        let binds: Vec<String> = n.binds.iter().map(|b| b.as_written()).collect();
        e.push(("binds".to_owned(), strings(&binds)));
    }
    if !n.ports.is_empty() {
        let ports: Vec<String> = n.ports.iter().map(|p| p.as_written()).collect();
        e.push(("ports".to_owned(), strings(&ports)));
    }
    if !n.exec.is_empty() {
        e.push(("exec".to_owned(), strings(&n.exec)));
    }
    if n.kind == Kind::Bridge {
        e.retain(|(k, _)| matches!(k.as_str(), "kind" | "labels" | "group"));
    }
    Y::Map(e)
}

fn impairments(i: &Impairments) -> Y {
    Y::Map(
        i.entries()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), Y::Str(v)))
            .collect(),
    )
}

/// The run-time impairments of one end, if the state has any for it.
fn runtime_impairments(end: &crate::model::Endpoint, state: &RuntimeState) -> Option<Impairments> {
    let Attach::Node(n) = &end.attach else {
        return None;
    };
    state.nodes.get(n)?.impairments.get(&end.ifname).cloned()
}

fn link(l: &Link, state: &RuntimeState) -> Y {
    let runtime = [
        runtime_impairments(&l.endpoints[0], state),
        runtime_impairments(&l.endpoints[1], state),
    ];
    // Each end's impairments as they should be after loading the file: with run-time
    // changes, every end says its own and the link says nothing.
    let (link_level, ends): (Impairments, [Impairments; 2]) = if runtime.iter().any(Option::is_some)
    {
        let of = |side: usize| {
            runtime[side]
                .clone()
                .unwrap_or_else(|| l.impairments_of(side))
        };
        (Impairments::default(), [of(0), of(1)])
    } else {
        (
            l.impairments.clone(),
            [
                l.endpoints[0].impairments.clone(),
                l.endpoints[1].impairments.clone(),
            ],
        )
    };
    let extended =
        l.endpoints.iter().any(|e| e.mac.is_some()) || ends.iter().any(|i| !i.is_empty());
    let mut e = Vec::new();
    if !extended {
        let eps = l
            .endpoints
            .iter()
            .map(|end| format!("{}:{}", end.attach.as_str(), end.ifname))
            .collect();
        e.push(("endpoints".to_owned(), Y::FlowStrings(eps)));
    } else {
        e.push(("type".to_owned(), Y::Str(l.kind.as_str().to_owned())));
        let endpoint = |side: usize| {
            let end = &l.endpoints[side];
            let mut m = vec![
                ("node".to_owned(), Y::Str(end.attach.as_str().to_owned())),
                ("interface".to_owned(), Y::Str(end.ifname.to_string())),
            ];
            if let Some(mac) = end.mac {
                m.push(("mac".to_owned(), Y::Str(mac.to_string())));
            }
            if !ends[side].is_empty() {
                m.push(("impairments".to_owned(), impairments(&ends[side])));
            }
            Y::Map(m)
        };
        match l.kind {
            LinkKind::Veth => {
                e.push((
                    "endpoints".to_owned(),
                    Y::Seq(vec![endpoint(0), endpoint(1)]),
                ));
            }
            LinkKind::Host | LinkKind::MgmtNet => {
                // The extended form names the node's end; the other is `host-interface`.
                let node_side = usize::from(!matches!(l.endpoints[0].attach, Attach::Node(_)));
                e.push(("endpoint".to_owned(), endpoint(node_side)));
                e.push((
                    "host-interface".to_owned(),
                    Y::Str(l.endpoints[1 - node_side].ifname.to_string()),
                ));
            }
        }
    }
    if l.mtu_written {
        e.push(("mtu".to_owned(), Y::Raw(l.mtu.to_string())));
    }
    if !l.labels.is_empty() {
        e.push(("labels".to_owned(), string_map(&l.labels)));
    }
    if !l.vars.is_empty() {
        // JSON is YAML's flow style: types survive (a quoted "10" stays a string).
        let json = serde_json::Value::Object(l.vars.clone()).to_string();
        e.push(("vars".to_owned(), Y::Raw(json)));
    }
    if !link_level.is_empty() {
        e.push(("impairments".to_owned(), impairments(&link_level)));
    }
    Y::Map(e)
}
