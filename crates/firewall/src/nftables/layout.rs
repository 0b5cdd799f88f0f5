//! What Berth's rules look like in nftables: one `inet berth` table whose chains and rules
//! are fixed ("skeleton"), and whose per-attachment state is nothing but map elements.
//!
//! ```text
//! table inet berth {
//!   map hostports4 { type inet_proto . inet_service : ipv4_addr . inet_service }   tcp . 8080 : 10.88.0.5 . 80
//!   map hostip4    { type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service }   (hostIP given)
//!   map hostports4-owner, hostip4-owner { … : mark }       key → owner id (who may delete it)
//!   map snat4-13   { type ipv4_addr : mark }                container → owner id (hairpin/localhost SNAT)
//!   map masqall4   { type ipv4_addr : mark }                container → owner id (masqAll)
//!   map masq4      { type ipv4_addr : mark }                source → owner id (ipMasq)
//!   map masq-exempt4-24 { type ipv4_addr . ipv4_addr : mark }               source . its /24 subnet
//!   map masq-index4  { type mark . mark : ipv4_addr . ipv4_addr . mark }     owner id . n → source . subnet . prefix
//!   (and the same for IPv6)
//!   chain prerouting  { type nat hook prerouting priority dstnat;  fib daddr type local jump hostports }
//!   chain output      { type nat hook output priority -100;        fib daddr type local jump hostports }
//!   chain hostports   { meta l4proto . th dport vmap @hostports-cond;
//!                       dnat ip to ip daddr . meta l4proto . th dport map @hostip4; …
//!                       meta nfproto ipv4 dnat ip to meta l4proto . th dport map @hostports4; … }
//!   chain hairpin     { type filter hook prerouting priority dstnat + 10;
//!                       ct state new ct status dnat ip daddr @snat4-13 fib daddr . iif oif exists meta mark set meta mark | 0x00002000 }
//!   chain postrouting { type nat hook postrouting priority srcnat;
//!                       meta mark & 0x00002000 == 0x00002000 masquerade
//!                       ct status dnat ip saddr 127.0.0.0/8 ip daddr @snat4-13 masquerade
//!                       ct status dnat ip daddr @masqall4 masquerade
//!                       ip saddr . ip daddr & 255.255.255.0 @masq-exempt4-24 return; ip daddr 224.0.0.0/4 return
//!                       ip saddr @masq4 masquerade }
//!   map hostports-cond { type inet_proto . inet_service : verdict }    tcp . 8080 : jump hpc-<owner>   (conditionsV4/V6)
//!   chain hpc-<owner> { ip saddr 10.0.0.0/8 … tcp dport 8080 dnat ip to 10.88.0.5:80 comment "berth-rule <digest>" }
//!   set isolated { type ifname }  map isolation_in { type ifname : verdict }
//!   chain forward     { type filter hook forward priority filter; ct state established,related accept;
//!                       ct status dnat accept; iifname vmap @isolation_in }
//!   chain iso-<network> { oifname != "br0" oifname @isolated drop }
//! }
//! ```
//!
//! **Why elements only.** In this kernel every transaction that adds a rule (or a verdict
//! map element) re-validates the whole table: about 7 µs per rule at 1000 attachments,
//! measured (`nf_tables_validate` → `nft_chain_validate`). Adding a data map element does
//! not. So an ADD or DEL of an attachment touches elements only, and costs the same with 1 or
//! 1000 attachments; rules are added only when the skeleton is created (or a new mark bit,
//! or a new isolated network, appears).
//!
//! **Hairpin** needs no rule per container: a connection that was DNAT'ed to one of our
//! containers (`snat4-<bit>`) and whose new destination is reachable through the interface
//! it came in on (`fib daddr . iif oif exists`) is marked after the DNAT, and marked
//! connections are masqueraded, so the reply comes back through the host. **Localhost**
//! connections (127/8, IPv4 only: `::1` cannot leave the host) to our containers are
//! masqueraded too; `route_localnet` (set by portmap) lets them out.
//!
//! **Only traffic to the host's own addresses is DNAT'ed** (`fib daddr type local`):
//! packets merely routed through the host never are.
//!
//! **Conditions** (`conditionsV4`/`conditionsV6`, nft expressions) are the one per-attachment
//! thing that cannot be map data: such an attachment gets its own chain of DNAT rules behind
//! the conditions, reached through `hostports-cond` by host port (its other elements, the
//! owner and SNAT maps, are as usual). nft prints a rule in its own canonical form, not the
//! way the user wrote the conditions, so these rules are recognised by a digest of their
//! wanted text in the comment (`berth-rule <digest>`), not by their text.
//!
//! **Ownership.** Every element carries its owner's comment, and the owner id (a hash of the
//! owner) is the data of every membership map and of a companion map per DNAT map. A DEL
//! first re-adds each element with its own owner id: the kernel refuses that (EBUSY) if
//! another owner holds the key, so a DEL never removes someone else's mapping.

use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::netlink::{Elem, Field, encode};
use crate::isolation::IsoPlan;
use crate::model::{Family, FamilyMasq, Tag};
use crate::ports::{FamilyPorts, Mapping};

pub const TABLE: &str = "berth";
pub const ISOLATED: &str = "isolated";
pub const ISOLATION_IN: &str = "isolation_in";
pub const ISO_PREFIX: &str = "iso-";
/// The verdict map from host port to the chain of an attachment with conditions.
pub const COND_MAP: &str = "hostports-cond";
pub const COND_PREFIX: &str = "hpc-";
/// First word of the comment of a rule recognised by digest.
const RULE_DIGEST_WORD: &str = "berth-rule";

/// The maps holding per-owner elements: GC and snapshots look for owners in these.
pub const OWNER_MAPS: [&str; 15] = [
    "ports-index",
    "hostports4",
    "hostports6",
    "hostip4",
    "hostip6",
    "hostports4-owner",
    "hostports6-owner",
    "hostip4-owner",
    "hostip6-owner",
    "masqall4",
    "masqall6",
    "masq4",
    "masq6",
    "masq-index4",
    "masq-index6",
];

/// The maps of port mappings (for GC by kind); `snat*` maps are added per bit.
pub const PORT_MAPS: [&str; 12] = [
    "ports-index",
    COND_MAP,
    "hostports4",
    "hostports6",
    "hostip4",
    "hostip6",
    "hostports4-owner",
    "hostports6-owner",
    "hostip4-owner",
    "hostip6-owner",
    "masqall4",
    "masqall6",
];

/// The fixed maps of masquerading; `masq-exempt<fam>-<prefix>` maps come per prefix length.
pub const MASQ_MAPS: [&str; 4] = ["masq4", "masq6", "masq-index4", "masq-index6"];

/// `masq-exempt4-24`: the exemption map for sources with a /24 subnet.
pub fn exempt_map(family: Family, prefix: u8) -> String {
    format!("{}-{prefix}", fam(family, "masq-exempt4", "masq-exempt6"))
}

/// `ip saddr . ip daddr & 255.255.255.0 @masq-exempt4-24 return`: traffic from a source to
/// its own subnet is not masqueraded. One exact-match map per prefix length: an interval
/// map (pipapo) rebuilds its lookup tables on every change, which showed in profiles at
/// 1000 attachments.
fn exempt_rule(family: Family, prefix: u8) -> String {
    let p = match family {
        Family::V4 => "ip",
        Family::V6 => "ip6",
    };
    let map = exempt_map(family, prefix);
    let mask = match family {
        Family::V4 if prefix < 32 => Some(
            std::net::Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0))
                .to_string(),
        ),
        Family::V6 if prefix < 128 => Some(
            std::net::Ipv6Addr::from(u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0))
                .to_string(),
        ),
        _ => None,
    };
    match mask {
        // nft prints a full-length mask as no mask at all.
        None => format!("{p} saddr . {p} daddr @{map} return"),
        Some(mask) => format!("{p} saddr . {p} daddr & {mask} @{map} return"),
    }
}

fn fam(family: Family, v4: &'static str, v6: &'static str) -> &'static str {
    match family {
        Family::V4 => v4,
        Family::V6 => v6,
    }
}

/// `snat4-<bit>` / `snat6-<bit>`.
pub fn snat_map(family: Family, bit: u8) -> String {
    format!("{}-{bit}", fam(family, "snat4", "snat6"))
}

/// A shared object: created once, never flushed or deleted (deleting costs a grace period,
/// and a concurrent call may just have put something into it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shared {
    /// `(kind "map"/"set", name, definition)`.
    Map(&'static str, String, &'static str),
    /// `(name, base chain spec)`; `None` for a regular chain.
    Chain(String, Option<&'static str>),
    /// `(chain, rule text as nft prints it)`.
    Rule(String, String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Skeleton {
    pub items: Vec<Shared>,
}

impl Skeleton {
    fn push(&mut self, item: Shared) {
        if !self.items.contains(&item) {
            self.items.push(item);
        }
    }

    pub fn merge(&mut self, other: Skeleton) {
        for item in other.items {
            self.push(item);
        }
    }

    fn map(&mut self, name: &str, def: &'static str) {
        self.push(Shared::Map("map", name.to_owned(), def));
    }

    fn chain(&mut self, name: &str, base: Option<&'static str>) {
        self.push(Shared::Chain(name.to_owned(), base));
    }

    fn rule(&mut self, chain: &str, text: impl Into<String>) {
        self.push(Shared::Rule(chain.to_owned(), text.into()));
    }

    /// Everything of port mappings and masquerading, with hairpin/localhost SNAT for the
    /// mark `bits`. The rule order in `postrouting` matters: marked and localhost
    /// connections are masqueraded before the masquerade exemption returns.
    pub fn nat(bits: &[u8], exempt: &[(Family, u8)]) -> Skeleton {
        let mut s = Skeleton::default();
        s.map(
            "hostports4",
            "type inet_proto . inet_service : ipv4_addr . inet_service;",
        );
        s.map(
            "hostports6",
            "type inet_proto . inet_service : ipv6_addr . inet_service;",
        );
        s.map(
            "hostip4",
            "type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service;",
        );
        s.map(
            "hostip6",
            "type ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service;",
        );
        s.map("hostports4-owner", "type inet_proto . inet_service : mark;");
        s.map("hostports6-owner", "type inet_proto . inet_service : mark;");
        s.map(
            "hostip4-owner",
            "type ipv4_addr . inet_proto . inet_service : mark;",
        );
        s.map(
            "hostip6-owner",
            "type ipv6_addr . inet_proto . inet_service : mark;",
        );
        s.map("ports-index", "type mark : mark;");
        s.map("masqall4", "type ipv4_addr : mark;");
        s.map("masqall6", "type ipv6_addr : mark;");
        s.map("masq4", "type ipv4_addr : mark;");
        s.map("masq6", "type ipv6_addr : mark;");
        s.map(
            "masq-index4",
            "type mark . mark : ipv4_addr . ipv4_addr . mark;",
        );
        s.map(
            "masq-index6",
            "type mark . mark : ipv6_addr . ipv6_addr . mark;",
        );
        s.push(Shared::Map(
            "map",
            COND_MAP.to_owned(),
            "type inet_proto . inet_service : verdict;",
        ));
        s.chain("hostports", None);
        s.chain(
            "prerouting",
            Some("type nat hook prerouting priority dstnat; policy accept;"),
        );
        s.chain(
            "output",
            Some("type nat hook output priority -100; policy accept;"),
        );
        s.chain(
            "hairpin",
            Some("type filter hook prerouting priority dstnat + 10; policy accept;"),
        );
        s.chain(
            "postrouting",
            Some("type nat hook postrouting priority srcnat; policy accept;"),
        );
        // First: a port with conditions is DNAT'ed by its owner's chain or not at all (its
        // key is in none of the maps below).
        s.rule(
            "hostports",
            format!("meta l4proto . th dport vmap @{COND_MAP}"),
        );
        s.rule(
            "hostports",
            "dnat ip to ip daddr . meta l4proto . th dport map @hostip4",
        );
        s.rule(
            "hostports",
            "dnat ip6 to ip6 daddr . meta l4proto . th dport map @hostip6",
        );
        s.rule(
            "hostports",
            "meta nfproto ipv4 dnat ip to meta l4proto . th dport map @hostports4",
        );
        s.rule(
            "hostports",
            "meta nfproto ipv6 dnat ip6 to meta l4proto . th dport map @hostports6",
        );
        s.rule("prerouting", "fib daddr type local jump hostports");
        s.rule("output", "fib daddr type local jump hostports");
        for &bit in bits {
            let mark = format!("0x{:08x}", 1u32 << bit);
            let (v4, v6) = (snat_map(Family::V4, bit), snat_map(Family::V6, bit));
            s.map(&v4, "type ipv4_addr : mark;");
            s.map(&v6, "type ipv6_addr : mark;");
            s.rule(
                "hairpin",
                format!("ct state new ct status dnat ip daddr @{v4} fib daddr . iif oif exists meta mark set meta mark | {mark}"),
            );
            s.rule(
                "hairpin",
                format!("ct state new ct status dnat ip6 daddr @{v6} fib daddr . iif oif exists meta mark set meta mark | {mark}"),
            );
            s.rule(
                "postrouting",
                format!("meta mark & {mark} == {mark} masquerade"),
            );
            s.rule(
                "postrouting",
                format!("ct status dnat ip saddr 127.0.0.0/8 ip daddr @{v4} masquerade"),
            );
        }
        for text in [
            "ct status dnat ip daddr @masqall4 masquerade",
            "ct status dnat ip6 daddr @masqall6 masquerade",
        ] {
            s.rule("postrouting", text);
        }
        for &(family, prefix) in exempt {
            let def = match family {
                Family::V4 => "type ipv4_addr . ipv4_addr : mark;",
                Family::V6 => "type ipv6_addr . ipv6_addr : mark;",
            };
            s.map(&exempt_map(family, prefix), def);
            s.rule("postrouting", exempt_rule(family, prefix));
        }
        for text in [
            "ip daddr 224.0.0.0/4 return",
            "ip6 daddr ff00::/8 return",
            "ip saddr @masq4 masquerade",
            "ip6 saddr @masq6 masquerade",
        ] {
            s.rule("postrouting", text);
        }
        s
    }

    /// Isolation.
    pub fn filter() -> Skeleton {
        let mut s = Skeleton::default();
        s.push(Shared::Map("set", ISOLATED.to_owned(), "type ifname;"));
        s.map(ISOLATION_IN, "type ifname : verdict;");
        s.chain(
            "forward",
            Some("type filter hook forward priority filter; policy accept;"),
        );
        for text in [
            "ct state established,related accept",
            "ct status dnat accept",
            "iifname vmap @isolation_in",
        ] {
            s.rule("forward", text);
        }
        s
    }
}

/// One element an owner holds: how nft prints it (snapshots, CLI transactions) and, for
/// elements ADD and DEL handle over netlink, its encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub set: &'static str,
    /// The set's name when it is built at run time (`snat4-13`); `set` is then "".
    pub dyn_set: Option<String>,
    pub key: String,
    /// `None` for a plain set member.
    pub data: Option<String>,
    pub nl: Option<Elem>,
    /// Carries the owner's comment (so GC and DEL find it); always so with `nl`.
    pub commented: bool,
}

impl Entry {
    pub fn set(&self) -> &str {
        self.dyn_set.as_deref().unwrap_or(self.set)
    }

    /// The owner's comment goes with the element.
    pub fn commented(&self) -> bool {
        self.commented || self.nl.is_some()
    }
}

/// Whether a listed rule is the wanted one: the same text, or, for a rule recognised by
/// digest, the same digest comment.
pub fn same_rule(listed_text: &str, listed_comment: Option<&str>, wanted: &str) -> bool {
    if listed_text == wanted {
        return true;
    }
    match (digest_comment(wanted), listed_comment) {
        (Some(want), Some(got)) => want == got,
        _ => false,
    }
}

/// The `berth-rule <digest>` comment at the end of `rule`, if it has one.
fn digest_comment(rule: &str) -> Option<&str> {
    let start = rule.rfind(" comment \"")? + " comment \"".len();
    let comment = rule[start..].strip_suffix('"')?;
    comment.starts_with(RULE_DIGEST_WORD).then_some(comment)
}

/// `rule` (without comment) with its digest comment appended.
fn with_digest(rule: String) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in rule.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{rule} comment \"{RULE_DIGEST_WORD} {h:016x}\"")
}

/// One owner's elements (and, for isolation, its chain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owned {
    pub what: String,
    pub comment: String,
    pub id: u32,
    /// Isolation only: the network's chain and its rules.
    pub chain: Option<(String, Vec<String>)>,
    pub entries: Vec<Entry>,
}

fn mark_text(v: u32) -> String {
    format!("0x{v:08x}")
}

impl Owned {
    fn new(what: String, comment: &str, id: u32) -> Owned {
        Owned {
            what,
            comment: comment.to_owned(),
            id,
            chain: None,
            entries: Vec::new(),
        }
    }

    /// An element whose data is the owner id.
    fn member(
        &mut self,
        set: &'static str,
        dyn_set: Option<String>,
        key: Vec<Field>,
        key_text: String,
    ) {
        self.push(
            set,
            dyn_set,
            key,
            None,
            key_text,
            vec![Field::Mark(self.id)],
            mark_text(self.id),
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        set: &'static str,
        dyn_set: Option<String>,
        key: Vec<Field>,
        key_end: Option<Vec<Field>>,
        key_text: String,
        data: Vec<Field>,
        data_text: String,
    ) {
        let set_name = dyn_set.clone().unwrap_or_else(|| set.to_owned());
        if self
            .entries
            .iter()
            .any(|e| e.set() == set_name && e.key == key_text)
        {
            return;
        }
        self.entries.push(Entry {
            set,
            dyn_set,
            key: key_text,
            data: Some(data_text),
            nl: Some(Elem {
                key: encode(&key),
                key_end: key_end.map(|k| encode(&k)),
                data: Some(encode(&data)),
                comment: Some(self.comment.clone()),
            }),
            commented: true,
        });
    }

    /// The elements that go through netlink, grouped per set, in order.
    pub fn by_set(&self) -> Vec<(String, Vec<Elem>)> {
        let mut out: Vec<(String, Vec<Elem>)> = Vec::new();
        for e in &self.entries {
            let Some(nl) = &e.nl else { continue };
            match out.iter_mut().find(|(s, _)| s == e.set()) {
                Some((_, v)) => v.push(nl.clone()),
                None => out.push((e.set().to_owned(), vec![nl.clone()])),
            }
        }
        out
    }
}

/// Masquerade: per (source, subnet) an exemption, per source a `masq` member, and an index
/// entry from which DEL (which only knows the owner) recovers them.
pub fn masq_owned(families: &[FamilyMasq], tag: &Tag) -> Owned {
    let mut o = Owned::new(tag.to_string(), tag.comment(), tag.id());
    let mut n: u32 = 0;
    for fm in families {
        let f = fm.family;
        for ip in &fm.sources {
            o.member(
                fam(f, "masq4", "masq6"),
                None,
                vec![Field::Ip(*ip)],
                ip.to_string(),
            );
            for net in &fm.subnets {
                let start = net.network();
                o.push(
                    "",
                    Some(exempt_map(f, net.prefix())),
                    vec![Field::Ip(*ip), Field::Ip(start)],
                    None,
                    format!("{ip} . {start}"),
                    vec![Field::Mark(o.id)],
                    mark_text(o.id),
                );
                o.push(
                    fam(f, "masq-index4", "masq-index6"),
                    None,
                    vec![Field::Mark(o.id), Field::Mark(n)],
                    None,
                    format!("{} . {}", mark_text(o.id), mark_text(n)),
                    vec![
                        Field::Ip(*ip),
                        Field::Ip(start),
                        Field::Mark(u32::from(net.prefix())),
                    ],
                    format!("{ip} . {start} . {}", mark_text(u32::from(net.prefix()))),
                );
                n += 1;
            }
        }
    }
    o
}

/// The `(family, prefix length)` exemption maps masquerading `families` needs.
pub fn exempt_prefixes<'a>(
    families: impl IntoIterator<Item = &'a FamilyMasq>,
) -> Vec<(Family, u8)> {
    let mut out: Vec<(Family, u8)> = Vec::new();
    for fm in families {
        for net in &fm.subnets {
            if !out.contains(&(fm.family, net.prefix())) {
                out.push((fm.family, net.prefix()));
            }
        }
    }
    out.sort_unstable();
    out
}

/// The index key of entry `n` of an owner, and how to read its data back.
pub fn masq_index_key(id: u32, n: u32) -> Vec<u8> {
    encode(&[Field::Mark(id), Field::Mark(n)])
}

/// Decodes a masquerade index entry's data: `(source, subnet)`.
pub fn masq_index_decode(family: Family, data: &[u8]) -> Option<(IpAddr, IpNetwork)> {
    let len = match family {
        Family::V4 => 4,
        Family::V6 => 16,
    };
    let ip = |b: &[u8]| -> Option<IpAddr> {
        match b.len() {
            4 => Some(IpAddr::from(<[u8; 4]>::try_from(b).ok()?)),
            16 => Some(IpAddr::from(<[u8; 16]>::try_from(b).ok()?)),
            _ => None,
        }
    };
    if data.len() < 2 * len + 4 {
        return None;
    }
    let src = ip(&data[..len])?;
    let start = ip(&data[len..2 * len])?;
    let p = &data[2 * len..2 * len + 4];
    let prefix = u8::try_from(u32::from_ne_bytes([p[0], p[1], p[2], p[3]])).ok()?;
    Some((src, IpNetwork::new(start, prefix).ok()?))
}

fn ip_text(ip: IpAddr) -> String {
    ip.to_string()
}

/// Port mappings: one DNAT element per host port (ranges expanded: ports map one to one)
/// and its owner element; the container in `snat<fam>-<bit>` (or `masqall`).
pub fn ports_owned(families: &[FamilyPorts], tag: &Tag, bit: u8) -> Owned {
    let mut o = Owned::new(tag.to_string(), tag.comment(), tag.id());
    let cond_chain = tag.chain_name(COND_PREFIX);
    let mut cond_rules = Vec::new();
    for fp in families {
        let f = fp.family;
        for m in &fp.mappings {
            if fp.conditions.is_empty() {
                for port in m.host.ports() {
                    dnat_entry(&mut o, f, fp.container_ip, m, port);
                }
            } else {
                cond_rules.extend(conditional_rules(fp, m));
                for port in m.host.ports() {
                    conditional_entry(&mut o, f, m, port, &cond_chain);
                }
            }
        }
        if let Some(src) = fp.masq_sources.first() {
            let ip = fp.container_ip;
            if src.prefix() == 0 {
                o.member(
                    fam(f, "masqall4", "masqall6"),
                    None,
                    vec![Field::Ip(ip)],
                    ip_text(ip),
                );
            } else {
                o.member("", Some(snat_map(f, bit)), vec![Field::Ip(ip)], ip_text(ip));
            }
        }
    }
    if !cond_rules.is_empty() {
        o.chain = Some((cond_chain, cond_rules));
    }
    // The manifest: a digest of everything above. A DEL re-adds it with the digest of the
    // request it got; the kernel refuses that if ADD wrote another one (the mappings
    // changed), and the DEL then lists the table instead of leaving elements behind.
    let digest = manifest(&o.entries);
    o.push(
        "ports-index",
        None,
        vec![Field::Mark(o.id)],
        None,
        mark_text(o.id),
        vec![Field::Mark(digest)],
        mark_text(digest),
    );
    o
}

/// FNV-1a over the entries' sets, keys and data.
fn manifest(entries: &[Entry]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for e in entries {
        for part in [e.set(), e.key.as_str(), e.data.as_deref().unwrap_or("")] {
            for b in part.bytes().chain([0]) {
                h ^= u32::from(b);
                h = h.wrapping_mul(0x0100_0193);
            }
        }
    }
    h
}

fn dnat_entry(o: &mut Owned, f: Family, ctr: IpAddr, m: &Mapping, port: u16) {
    let proto = m.protocol;
    let cport = m.container_port(port);
    let data = vec![Field::Ip(ctr), Field::Port(cport)];
    let data_text = format!("{ctr} . {cport}");
    let (map, owner_map, key, key_text) = match m.host_ip {
        Some(h) => (
            fam(f, "hostip4", "hostip6"),
            fam(f, "hostip4-owner", "hostip6-owner"),
            vec![
                Field::Ip(h),
                Field::Proto(proto.number()),
                Field::Port(port),
            ],
            format!("{h} . {proto} . {port}"),
        ),
        None => (
            fam(f, "hostports4", "hostports6"),
            fam(f, "hostports4-owner", "hostports6-owner"),
            vec![Field::Proto(proto.number()), Field::Port(port)],
            format!("{proto} . {port}"),
        ),
    };
    o.push(
        map,
        None,
        key.clone(),
        None,
        key_text.clone(),
        data,
        data_text,
    );
    o.member(owner_map, None, key, key_text);
}

/// An attachment with conditions: its DNAT rules for mapping `m`, in its own chain. One rule
/// for a range that keeps its port numbers, else one per port.
fn conditional_rules(fp: &FamilyPorts, m: &Mapping) -> Vec<String> {
    let (nfproto, p) = match fp.family {
        Family::V4 => ("ipv4", "ip"),
        Family::V6 => ("ipv6", "ip6"),
    };
    let mut head = format!("meta nfproto {nfproto} {}", fp.conditions.join(" "));
    if let Some(h) = m.host_ip {
        head.push_str(&format!(" {p} daddr {h}"));
    }
    let target = match fp.container_ip {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("[{ip}]"),
    };
    let proto = m.protocol;
    if m.host == m.container {
        let ports = match (m.host.first(), m.host.last()) {
            (a, b) if a == b => a.to_string(),
            (a, b) => format!("{a}-{b}"),
        };
        return vec![with_digest(format!(
            "{head} meta l4proto {proto} th dport {ports} dnat {p} to {target}"
        ))];
    }
    m.host
        .ports()
        .map(|port| {
            with_digest(format!(
                "{head} meta l4proto {proto} th dport {port} dnat {p} to {target}:{}",
                m.container_port(port)
            ))
        })
        .collect()
}

/// The dispatch element of a conditional host port, and its owner element (so ports stay
/// exclusive across attachments, with conditions or without).
fn conditional_entry(o: &mut Owned, f: Family, m: &Mapping, port: u16, chain: &str) {
    let proto = m.protocol;
    let key_text = format!("{proto} . {port}");
    if !o
        .entries
        .iter()
        .any(|e| e.set() == COND_MAP && e.key == key_text)
    {
        o.entries.push(Entry {
            set: COND_MAP,
            dyn_set: None,
            key: key_text,
            data: Some(format!("jump {chain}")),
            nl: None,
            commented: true,
        });
    }
    let (owner_map, key, key_text) = match m.host_ip {
        Some(h) => (
            fam(f, "hostip4-owner", "hostip6-owner"),
            vec![
                Field::Ip(h),
                Field::Proto(proto.number()),
                Field::Port(port),
            ],
            format!("{h} . {proto} . {port}"),
        ),
        None => (
            fam(f, "hostports4-owner", "hostports6-owner"),
            vec![Field::Proto(proto.number()), Field::Port(port)],
            format!("{proto} . {port}"),
        ),
    };
    o.member(owner_map, None, key, key_text);
}

/// Isolation of one network: its chain (one rule), the bridge in `isolated` and the
/// dispatch element. Rules: this is the only per-network (not per-attachment) state.
pub fn iso_owned(plan: &IsoPlan) -> Owned {
    let mut o = Owned::new(plan.to_string(), plan.comment(), 0);
    let chain = plan.chain_name(ISO_PREFIX);
    let bridge = format!("\"{}\"", plan.bridge());
    o.chain = Some((
        chain.clone(),
        vec![format!(
            "oifname != {bridge} oifname @{ISOLATED} drop comment \"{}\"",
            plan.comment()
        )],
    ));
    o.entries.push(Entry {
        set: ISOLATION_IN,
        dyn_set: None,
        key: bridge.clone(),
        data: Some(format!("jump {chain}")),
        nl: None,
        commented: false,
    });
    o.entries.push(Entry {
        set: ISOLATED,
        dyn_set: None,
        key: bridge,
        data: None,
        nl: None,
        commented: false,
    });
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::{MarkSpec, PortMap, PortMapping, PortPlan};
    use crate::{Masquerade, Owner, model::MasqPlan};

    fn owner() -> Owner {
        Owner {
            network: "n".into(),
            container_id: "c".into(),
            ifname: "eth0".into(),
        }
    }

    #[test]
    fn masquerade_elements_and_index() {
        let plan = MasqPlan::new(&Masquerade {
            owner: owner(),
            sources: vec![
                "198.18.0.5/24".parse().unwrap(),
                "fd42:b347::5/64".parse().unwrap(),
            ],
        })
        .unwrap();
        let o = masq_owned(&plan.families, &plan.tag);
        let id = mark_text(plan.tag.id());
        let texts: Vec<String> = o
            .entries
            .iter()
            .map(|e| format!("{} {} : {}", e.set(), e.key, e.data.clone().unwrap()))
            .collect();
        assert_eq!(
            texts,
            [
                format!("masq4 198.18.0.5 : {id}"),
                format!("masq-exempt4-24 198.18.0.5 . 198.18.0.0 : {id}"),
                format!("masq-index4 {id} . 0x00000000 : 198.18.0.5 . 198.18.0.0 . 0x00000018"),
                format!("masq6 fd42:b347::5 : {id}"),
                format!("masq-exempt6-64 fd42:b347::5 . fd42:b347:: : {id}"),
                format!("masq-index6 {id} . 0x00000001 : fd42:b347::5 . fd42:b347:: . 0x00000040"),
            ]
        );
        let index = o.entries[2].nl.as_ref().unwrap().data.clone().unwrap();
        assert_eq!(
            masq_index_decode(Family::V4, &index),
            Some((
                "198.18.0.5".parse().unwrap(),
                "198.18.0.0/24".parse().unwrap()
            ))
        );
        assert_eq!(
            exempt_rule(Family::V4, 24),
            "ip saddr . ip daddr & 255.255.255.0 @masq-exempt4-24 return"
        );
        assert_eq!(
            exempt_rule(Family::V6, 64),
            "ip6 saddr . ip6 daddr & ffff:ffff:ffff:ffff:: @masq-exempt6-64 return"
        );
        assert_eq!(
            exempt_rule(Family::V4, 32),
            "ip saddr . ip daddr @masq-exempt4-32 return"
        );
    }

    #[test]
    fn port_mapping_elements() {
        let mut range = PortMapping {
            protocol: "udp".into(),
            host_port: 9000,
            container_port: 5000,
            range: Some(2),
            host_port_end: None,
            host_ip: None,
        };
        let with_ip = PortMapping {
            protocol: "tcp".into(),
            host_port: 8080,
            container_port: 80,
            range: None,
            host_port_end: None,
            host_ip: Some("198.18.0.1".parse().unwrap()),
        };
        range.range = Some(2);
        let plan = PortPlan::new(&PortMap {
            owner: owner(),
            mappings: vec![with_ip, range],
            container_ips: vec!["198.18.0.5/24".parse().unwrap()],
            snat: true,
            masq_all: false,
            mark: MarkSpec::Bit(13),
            conditions_v4: vec![],
            conditions_v6: vec![],
        })
        .unwrap();
        let o = ports_owned(&plan.families, &plan.tag, 13);
        let id = mark_text(plan.tag.id());
        let texts: Vec<String> = o
            .entries
            .iter()
            .map(|e| format!("{} {} : {}", e.set(), e.key, e.data.clone().unwrap()))
            .collect();
        assert_eq!(
            texts,
            [
                "hostip4 198.18.0.1 . tcp . 8080 : 198.18.0.5 . 80".to_string(),
                format!("hostip4-owner 198.18.0.1 . tcp . 8080 : {id}"),
                "hostports4 udp . 9000 : 198.18.0.5 . 5000".to_string(),
                format!("hostports4-owner udp . 9000 : {id}"),
                "hostports4 udp . 9001 : 198.18.0.5 . 5001".to_string(),
                format!("hostports4-owner udp . 9001 : {id}"),
                format!("snat4-13 198.18.0.5 : {id}"),
                format!("ports-index {id} : {}", o.entries[7].data.clone().unwrap()),
            ]
        );
        let sets: Vec<String> = o.by_set().into_iter().map(|(s, _)| s).collect();
        assert_eq!(
            sets,
            [
                "hostip4",
                "hostip4-owner",
                "hostports4",
                "hostports4-owner",
                "snat4-13",
                "ports-index"
            ]
        );
    }

    #[test]
    fn skeleton_has_marks_per_bit() {
        let s = Skeleton::nat(&[14], &[]);
        assert!(s.items.contains(&Shared::Rule(
            "postrouting".into(),
            "meta mark & 0x00004000 == 0x00004000 masquerade".into(),
        )));
        assert!(
            s.items
                .iter()
                .any(|i| matches!(i, Shared::Map(_, n, _) if n == "snat6-14"))
        );
    }
}
