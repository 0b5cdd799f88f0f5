//! Links in both of containerlab's forms (docs/manual/topo-def-file.md, "Links"):
//!
//! - brief: `endpoints: ["r1:eth1", "r2:eth1"]`, where `host:IF` is an interface in the
//!   host namespace and `mgmt-net:IF` one on the management bridge;
//! - extended: `type: veth` with `endpoints: [{node, interface, mac}, …]`, or `type: host`
//!   / `type: mgmt-net` with one `endpoint` and a `host-interface`.
//!
//! Both take `mtu`, `labels`, `vars`, and Berth's `impairments`.

use crate::error::ErrorKind;
use crate::impair::Impairments;
use crate::model::LinkKind;
use crate::names::{IfName, MacAddr};
use crate::parse::read::{Cx, get, to_json};
use crate::yaml::{Node, Pos, Value};

const BRIEF_KEYS: &[&str] = &["endpoints", "mtu", "labels", "vars", "impairments"];
const VETH_KEYS: &[&str] = &["type", "endpoints", "mtu", "labels", "vars", "impairments"];
const HOST_KEYS: &[&str] = &[
    "type",
    "endpoint",
    "host-interface",
    "mtu",
    "labels",
    "vars",
    "impairments",
];
const ENDPOINT_KEYS: &[&str] = &["node", "interface", "mac", "impairments"];
const IGNORED_ENDPOINT_KEYS: &[(&str, &str)] = &[(
    "vars",
    "endpoint variables feed containerlab's config engine",
)];

/// What an endpoint names before the nodes are known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawAttach {
    Node(String),
    Host,
    MgmtNet,
}

#[derive(Debug, Clone)]
pub struct RawEndpoint {
    pub attach: RawAttach,
    pub ifname: IfName,
    pub mac: Option<MacAddr>,
    pub impairments: Impairments,
    pub pos: Pos,
}

impl RawEndpoint {
    /// `node:interface`, as a brief endpoint is written.
    pub fn text(&self) -> String {
        let owner = match &self.attach {
            RawAttach::Node(n) => n.as_str(),
            RawAttach::Host => "host",
            RawAttach::MgmtNet => "mgmt-net",
        };
        format!("{owner}:{}", self.ifname)
    }
}

#[derive(Debug, Clone)]
pub struct RawLink {
    pub kind: LinkKind,
    pub endpoints: [RawEndpoint; 2],
    pub mtu: Option<u32>,
    pub labels: std::collections::BTreeMap<String, String>,
    pub vars: serde_json::Map<String, serde_json::Value>,
    pub impairments: Impairments,
    pub pos: Pos,
}

/// Reads `topology.links`.
pub fn read_all(cx: &mut Cx, node: &Node) -> Vec<RawLink> {
    match &node.value {
        Value::Null => Vec::new(),
        Value::Seq(items) => items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| read(cx, item, i))
            .collect(),
        _ => {
            cx.error(
                node.pos,
                ErrorKind::Type {
                    what: "topology.links".to_owned(),
                    expected: "a list of links",
                    found: node.describe(),
                },
            );
            Vec::new()
        }
    }
}

fn read(cx: &mut Cx, node: &Node, index: usize) -> Option<RawLink> {
    let section = format!("link {}", index + 1);
    let entries = cx.map(node, &section)?;
    let kind = match get(entries, "type") {
        None => None,
        Some(t) => Some((
            cx.required(
                t,
                &format!("{section}: type"),
                "a link type (veth, host or mgmt-net)",
            )?,
            t.pos,
        )),
    };
    let (kind, endpoints) = match kind.as_ref().map(|(k, p)| (k.as_str(), *p)) {
        None => {
            cx.check_keys(entries, &section, BRIEF_KEYS, &[]);
            brief(cx, entries, node.pos, &section)?
        }
        Some(("veth", _)) => {
            cx.check_keys(entries, &section, VETH_KEYS, &[]);
            (
                LinkKind::Veth,
                extended_veth(cx, entries, node.pos, &section)?,
            )
        }
        Some((t @ ("host" | "mgmt-net"), _)) => {
            cx.check_keys(entries, &section, HOST_KEYS, &[]);
            let kind = if t == "host" {
                LinkKind::Host
            } else {
                LinkKind::MgmtNet
            };
            (kind, extended_host(cx, entries, node.pos, &section, kind)?)
        }
        Some((other, pos)) => {
            cx.error(
                pos,
                ErrorKind::UnsupportedLinkType {
                    kind: other.to_owned(),
                },
            );
            return None;
        }
    };
    let mut link = RawLink {
        kind,
        endpoints,
        mtu: None,
        labels: Default::default(),
        vars: Default::default(),
        impairments: Impairments::default(),
        pos: node.pos,
    };
    if let Some(mtu) = get(entries, "mtu") {
        let what = format!("{section}: mtu");
        link.mtu = cx.number::<u32>(mtu, &what, "an MTU from 68 to 65535");
        if let Some(m) = link.mtu.filter(|m| !(68..=65535).contains(m)) {
            cx.error(
                mtu.pos,
                ErrorKind::BadValue {
                    what,
                    value: m.to_string(),
                    expected: "an MTU from 68 to 65535",
                },
            );
        }
    }
    if let Some(labels) = get(entries, "labels") {
        link.labels = cx.string_map(labels, &format!("{section}: labels"));
    }
    if let Some(vars) = get(entries, "vars") {
        match to_json(vars) {
            serde_json::Value::Object(map) => link.vars = map,
            serde_json::Value::Null => {}
            _ => cx.error(
                vars.pos,
                ErrorKind::Type {
                    what: format!("{section}: vars"),
                    expected: "a mapping",
                    found: vars.describe(),
                },
            ),
        }
    }
    if let Some(imp) = get(entries, "impairments") {
        link.impairments = cx.impairments(imp, &section);
    }
    Some(link)
}

fn brief(
    cx: &mut Cx,
    entries: &[(Node, Node)],
    pos: Pos,
    section: &str,
) -> Option<(LinkKind, [RawEndpoint; 2])> {
    let Some(list) = get(entries, "endpoints") else {
        cx.error(
            pos,
            ErrorKind::MissingKey {
                key: "endpoints",
                section: section.to_owned(),
            },
        );
        return None;
    };
    let items = match &list.value {
        Value::Seq(items) => items,
        _ => {
            cx.error(
                list.pos,
                ErrorKind::Type {
                    what: format!("{section}: endpoints"),
                    expected: "a list of two \"node:interface\" strings",
                    found: list.describe(),
                },
            );
            return None;
        }
    };
    if items.len() != 2 {
        cx.error(list.pos, ErrorKind::EndpointCount { found: items.len() });
        return None;
    }
    let mut ends = Vec::new();
    for item in items {
        if matches!(item.value, Value::Map(_)) {
            cx.error(
                item.pos,
                ErrorKind::Type {
                    what: format!("{section}: endpoint"),
                    expected: "a \"node:interface\" string (endpoint mappings need `type: veth` on the link)",
                    found: item.describe(),
                },
            );
            continue;
        }
        let Some(text) = cx.required(
            item,
            &format!("{section}: endpoint"),
            "a \"node:interface\" string",
        ) else {
            continue;
        };
        if let Some(end) = brief_endpoint(cx, &text, item.pos) {
            ends.push(end);
        }
    }
    let [a, b]: [RawEndpoint; 2] = ends.try_into().ok()?;
    let kind = match (&a.attach, &b.attach) {
        (RawAttach::Node(_), RawAttach::Node(_)) => LinkKind::Veth,
        (RawAttach::Node(_), RawAttach::Host) | (RawAttach::Host, RawAttach::Node(_)) => {
            LinkKind::Host
        }
        (RawAttach::Node(_), RawAttach::MgmtNet) | (RawAttach::MgmtNet, RawAttach::Node(_)) => {
            LinkKind::MgmtNet
        }
        (x, y) => {
            cx.error(
                list.pos,
                ErrorKind::NoNodeEnd {
                    a: special_name(x),
                    b: special_name(y),
                },
            );
            return None;
        }
    };
    Some((kind, [a, b]))
}

fn special_name(attach: &RawAttach) -> &'static str {
    match attach {
        RawAttach::Host => "host",
        RawAttach::MgmtNet => "mgmt-net",
        RawAttach::Node(_) => "a node",
    }
}

/// Parses `node:interface` with containerlab's special node names.
fn brief_endpoint(cx: &mut Cx, text: &str, pos: Pos) -> Option<RawEndpoint> {
    let Some((owner, ifname)) = text.split_once(':') else {
        cx.error(
            pos,
            ErrorKind::BadEndpoint {
                text: text.to_owned(),
            },
        );
        return None;
    };
    let attach = attach(cx, owner, text, pos)?;
    let ifname = interface(cx, ifname, text, pos)?;
    Some(RawEndpoint {
        attach,
        ifname,
        mac: None,
        impairments: Impairments::default(),
        pos,
    })
}

fn attach(cx: &mut Cx, owner: &str, text: &str, pos: Pos) -> Option<RawAttach> {
    match owner {
        "" => {
            cx.error(
                pos,
                ErrorKind::BadEndpoint {
                    text: text.to_owned(),
                },
            );
            None
        }
        "host" => Some(RawAttach::Host),
        "mgmt-net" => Some(RawAttach::MgmtNet),
        "macvlan" | "macvtap" | "vxlan" | "vxlan-stitch" | "dummy" | "ovs-bridge" => {
            cx.error(
                pos,
                ErrorKind::UnsupportedEndpoint {
                    text: text.to_owned(),
                    what: owner.to_owned(),
                },
            );
            None
        }
        node => Some(RawAttach::Node(node.to_owned())),
    }
}

fn interface(cx: &mut Cx, ifname: &str, text: &str, pos: Pos) -> Option<IfName> {
    match IfName::try_from(ifname) {
        Ok(n) => Some(n),
        Err(error) => {
            cx.error(
                pos,
                ErrorKind::Name {
                    what: format!("endpoint {text:?}"),
                    error,
                },
            );
            None
        }
    }
}

/// One endpoint mapping of the extended form.
fn endpoint_map(cx: &mut Cx, node: &Node, section: &str) -> Option<RawEndpoint> {
    let what = format!("{section}: endpoint");
    let entries = cx.map(node, &what)?;
    cx.check_keys(entries, &what, ENDPOINT_KEYS, IGNORED_ENDPOINT_KEYS);
    let mut missing = false;
    for key in ["node", "interface"] {
        if get(entries, key).is_none() {
            cx.error(
                node.pos,
                ErrorKind::MissingKey {
                    key,
                    section: what.clone(),
                },
            );
            missing = true;
        }
    }
    if missing {
        return None;
    }
    let owner_node = get(entries, "node")?;
    let owner = cx.required(owner_node, &format!("{what}.node"), "a node name")?;
    let if_node = get(entries, "interface")?;
    let ifname = cx.required(if_node, &format!("{what}.interface"), "an interface name")?;
    let text = format!("{owner}:{ifname}");
    let attach = attach(cx, &owner, &text, owner_node.pos)?;
    let ifname = interface(cx, &ifname, &text, if_node.pos)?;
    let mac = match get(entries, "mac") {
        Some(m) => {
            let w = format!("{what}.mac");
            cx.typed(
                m,
                &w,
                |s: &str| MacAddr::try_from(s),
                |what, error| ErrorKind::Name { what, error },
            )
        }
        None => None,
    };
    let impairments = match get(entries, "impairments") {
        Some(i) => cx.impairments(i, &format!("endpoint {text}")),
        None => Impairments::default(),
    };
    Some(RawEndpoint {
        attach,
        ifname,
        mac,
        impairments,
        pos: node.pos,
    })
}

fn extended_veth(
    cx: &mut Cx,
    entries: &[(Node, Node)],
    pos: Pos,
    section: &str,
) -> Option<[RawEndpoint; 2]> {
    let Some(list) = get(entries, "endpoints") else {
        cx.error(
            pos,
            ErrorKind::MissingKey {
                key: "endpoints",
                section: section.to_owned(),
            },
        );
        return None;
    };
    let Value::Seq(items) = &list.value else {
        cx.error(
            list.pos,
            ErrorKind::LinkShape {
                kind: "veth",
                expected: "`endpoints`: a list of two {node, interface, mac} mappings",
            },
        );
        return None;
    };
    if items.len() != 2 {
        cx.error(list.pos, ErrorKind::EndpointCount { found: items.len() });
        return None;
    }
    let ends: Vec<RawEndpoint> = items
        .iter()
        .filter_map(|item| endpoint_map(cx, item, section))
        .collect();
    let [a, b]: [RawEndpoint; 2] = ends.try_into().ok()?;
    if !matches!(a.attach, RawAttach::Node(_)) || !matches!(b.attach, RawAttach::Node(_)) {
        cx.error(
            list.pos,
            ErrorKind::LinkShape {
                kind: "veth",
                expected: "two node endpoints (use type: host or type: mgmt-net for the others)",
            },
        );
        return None;
    }
    Some([a, b])
}

fn extended_host(
    cx: &mut Cx,
    entries: &[(Node, Node)],
    pos: Pos,
    section: &str,
    kind: LinkKind,
) -> Option<[RawEndpoint; 2]> {
    let expected = "`endpoint` (one {node, interface, mac} mapping) and `host-interface`";
    let (Some(end), Some(host_if)) = (get(entries, "endpoint"), get(entries, "host-interface"))
    else {
        cx.error(
            pos,
            ErrorKind::LinkShape {
                kind: kind.as_str(),
                expected,
            },
        );
        return None;
    };
    let end = endpoint_map(cx, end, section)?;
    if !matches!(end.attach, RawAttach::Node(_)) {
        cx.error(
            end.pos,
            ErrorKind::LinkShape {
                kind: kind.as_str(),
                expected: "a node in `endpoint`",
            },
        );
        return None;
    }
    let text = cx.required(
        host_if,
        &format!("{section}: host-interface"),
        "an interface name",
    )?;
    let owner = if kind == LinkKind::Host {
        RawAttach::Host
    } else {
        RawAttach::MgmtNet
    };
    let ifname = interface(cx, &text, &format!("{}:{text}", kind.as_str()), host_if.pos)?;
    let other = RawEndpoint {
        attach: owner,
        ifname,
        mac: None,
        impairments: Impairments::default(),
        pos: host_if.pos,
    };
    Some([end, other])
}
