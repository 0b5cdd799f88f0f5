//! `berth lab save` and `berth lab graph`: the topology rendered by `berth-topology`, with
//! what the running lab knows folded in (`save`), or drawn (`graph`: dot, Mermaid and JSON
//! from the library; SVG and PNG by Graphviz's `dot`, Debian's `graphviz`).

use std::io::{self, Write};
use std::net::IpAddr;
use std::process::{Command, Stdio};

use berth_topology::render::{NodeState, RuntimeState};
use berth_topology::{Attach, Kind, Topology};

use crate::lab::impair::{self, ImpairedEnd};
use crate::state::Store;

/// Errors of `lab save` and `lab graph`.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error(
        "drawing {format} needs Graphviz's dot, which is not installed (Debian: apt-get install graphviz); --format dot, mermaid or json need nothing"
    )]
    NoGraphviz { format: &'static str },
    #[error("run Graphviz's dot -T{format}")]
    Spawn {
        format: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("Graphviz's dot -T{format} failed: {stderr}")]
    Dot {
        format: &'static str,
        stderr: String,
    },
    #[error("serialize the graph as JSON")]
    Json(#[source] serde_json::Error),
}

/// `graph --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum GraphFormat {
    #[default]
    Dot,
    Mermaid,
    Json,
    Svg,
    Png,
}

/// The topology with the management addresses the nodes got and the impairments in force.
pub fn save(store: &Store, t: &Topology) -> String {
    let mut state = RuntimeState::default();
    for node in t.nodes.values().filter(|n| n.kind == Kind::Linux) {
        let Ok(name) = t.container_name(&node.name) else {
            continue;
        };
        let Ok(record) = store.find(name.as_str()) else {
            continue;
        };
        let mut ns = NodeState::default();
        for ip in record.state.attachments.iter().flat_map(|a| a.ips.iter()) {
            match ip.ip() {
                IpAddr::V4(v4) if ns.mgmt_ipv4.is_none() => ns.mgmt_ipv4 = Some(v4),
                IpAddr::V6(v6) if ns.mgmt_ipv6.is_none() => ns.mgmt_ipv6 = Some(v6),
                _ => {}
            }
        }
        state.nodes.insert(node.name.clone(), ns);
    }
    // The impairments in force: what `lab impair` set, and none where the file had some
    // that were cleared.
    if let Some(ends) = impair::in_force(store, t) {
        for link in &t.links {
            for (side, end) in link.endpoints.iter().enumerate() {
                let Attach::Node(node) = &end.attach else {
                    continue;
                };
                let now = ends
                    .iter()
                    .find(|e| e.is_at(node.as_str(), end.ifname.as_str()))
                    .map(ImpairedEnd::impairments);
                if now.is_none() && link.impairments_of(side).is_empty() {
                    continue;
                }
                state
                    .nodes
                    .entry(node.clone())
                    .or_default()
                    .impairments
                    .insert(end.ifname.clone(), now.unwrap_or_default());
            }
        }
    }
    berth_topology::render::save(t, &state)
}

/// `t` with the impairments in force in place of the file's, when the lab is deployed
/// (`lab impair` changes them; what is drawn is what the links do now).
pub fn in_force(store: &Store, t: &Topology) -> Topology {
    let mut t = t.clone();
    let Some(ends) = impair::in_force(store, &t) else {
        return t;
    };
    for link in &mut t.links {
        link.impairments = Default::default();
        for end in &mut link.endpoints {
            end.impairments = match &end.attach {
                Attach::Node(node) => ends
                    .iter()
                    .find(|e| e.is_at(node.as_str(), end.ifname.as_str()))
                    .map(ImpairedEnd::impairments)
                    .unwrap_or_default(),
                _ => Default::default(),
            };
        }
    }
    t
}

/// The picture or its source, as bytes.
pub fn graph(t: &Topology, format: GraphFormat) -> Result<Vec<u8>, RenderError> {
    match format {
        GraphFormat::Dot => Ok(berth_topology::render::dot(t).into_bytes()),
        GraphFormat::Mermaid => Ok(berth_topology::render::mermaid(t).into_bytes()),
        GraphFormat::Json => {
            let mut out = serde_json::to_vec_pretty(&berth_topology::render::json(t))
                .map_err(RenderError::Json)?;
            out.push(b'\n');
            Ok(out)
        }
        GraphFormat::Svg => draw(t, "svg"),
        GraphFormat::Png => draw(t, "png"),
    }
}

/// `dot -T<format>` over the dot source.
fn draw(t: &Topology, format: &'static str) -> Result<Vec<u8>, RenderError> {
    let mut child = match Command::new("dot")
        .arg(format!("-T{format}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(RenderError::NoGraphviz { format });
        }
        Err(source) => return Err(RenderError::Spawn { format, source }),
    };
    let source = berth_topology::render::dot(t);
    if let Some(mut stdin) = child.stdin.take() {
        // A dot that exits early reports why on stderr; that is the error shown.
        let _ = stdin.write_all(source.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|source| RenderError::Spawn { format, source })?;
    if !out.status.success() {
        return Err(RenderError::Dot {
            format,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(out.stdout)
}
