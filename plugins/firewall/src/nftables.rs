//! The nftables backend.
//!
//! One table of our own for both families, with one NAT chain:
//!
//! ```text
//! table inet berth {
//!     chain postrouting {
//!         type nat hook postrouting priority srcnat; policy accept;
//!         ip saddr 198.18.0.5 ip daddr != 198.18.0.0/24 ip daddr != 224.0.0.0/4 masquerade comment "berth <net> <id> <if>"
//!         ip6 saddr fd42:b347::5 ip6 daddr != fd42:b347::/64 ip6 daddr != ff00::/8 masquerade comment "berth <net> <id> <if>"
//!     }
//! }
//! ```
//!
//! One rule per source address, tagged with the owner's comment. Rules rather than a set
//! lookup: a set element cannot say which owner added it, and two owners may briefly hold the
//! same address (ADD of B before DEL of A), so DEL must remove exactly A's rule.
//!
//! Every call lists the chain once (`nft -j list chain`, JSON) and applies at most one
//! `nft -f -` transaction, which the kernel commits atomically. Rules are deleted by handle,
//! so a transaction that races with another call for the same owner can fail on a handle that
//! is gone; it is then recomputed from a fresh listing, up to [`ATTEMPTS`] times.
//!
//! The table and chain stay when the last rule goes: `nft delete chain` and `delete table`
//! are recursive here (nft 1.0.6 has no `destroy` that refuses a non-empty object), so
//! deleting them could take a concurrent ADD's new rule with them. An empty NAT chain costs
//! one hook call per new connection.

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde::Deserialize as _;
use serde_json::Value;

use crate::model::{Family, MasqPlan, Tag};
use crate::runner::{Program, RunError};
use crate::{Backend, BackendKind, FirewallError, IptablesVariant, Owner};

pub const TABLE: &str = "berth";
pub const CHAIN: &str = "postrouting";
/// Listings + transactions per call before giving up on a chain that keeps changing.
const ATTEMPTS: usize = 3;

/// Errors of the `nftables` module.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("find nft (searched PATH, /usr/sbin, /sbin, /usr/bin, /bin)")]
    NotFound,
    #[error("list nftables chain inet {TABLE} {CHAIN}")]
    List(#[source] RunError),
    #[error("decode the JSON listing of nftables chain inet {TABLE} {CHAIN}")]
    Decode(#[source] serde_json::Error),
    #[error("apply nftables transaction for {owner}")]
    Apply {
        owner: String,
        #[source]
        source: RunError,
    },
    #[error("apply nftables transaction removing stale masquerade rules of network {network}")]
    Gc {
        network: String,
        #[source]
        source: RunError,
    },
    #[error("masquerade rules of {owner} missing: {}", .missing.join("; "))]
    Missing { owner: String, missing: Vec<String> },
}

#[derive(Debug)]
pub struct Nftables {
    nft: Program,
}

impl Nftables {
    pub fn detect() -> Result<Nftables, NftError> {
        Program::find("nft")
            .map(|nft| Nftables { nft })
            .ok_or(NftError::NotFound)
    }

    /// Lists our chain; a missing table or chain is an empty listing.
    fn list(&self) -> Result<Chain, NftError> {
        match self
            .nft
            .run(&["-a", "-j", "list", "chain", "inet", TABLE, CHAIN], None)
        {
            Ok(json) => Chain::parse(&json).map_err(NftError::Decode),
            Err(e) if e.is_enoent() => Ok(Chain::default()),
            Err(e) => Err(NftError::List(e)),
        }
    }

    /// List, plan, apply; on a failed transaction list again and re-plan (see the module
    /// docs). An empty transaction is not applied.
    fn apply<T>(
        &self,
        mut plan: impl FnMut(&Chain) -> (Transaction, T),
        err: impl Fn(RunError) -> NftError,
    ) -> Result<T, FirewallError> {
        let mut attempt = 1;
        loop {
            let chain = self.list()?;
            let (tx, value) = plan(&chain);
            if tx.is_empty() {
                return Ok(value);
            }
            match self.nft.run(&["-f", "-"], Some(&tx.finish())) {
                Ok(_) => return Ok(value),
                Err(_) if attempt < ATTEMPTS => attempt += 1,
                Err(source) => return Err(err(source).into()),
            }
        }
    }
}

impl Backend for Nftables {
    fn kind(&self) -> BackendKind {
        BackendKind::Nftables
    }

    fn iptables_variant(&self) -> Option<IptablesVariant> {
        None
    }

    /// nft runs and our chain can be listed (or is absent).
    fn status(&self) -> Result<(), FirewallError> {
        self.list()?;
        Ok(())
    }

    fn add_masquerade(&self, plan: &MasqPlan) -> Result<(), FirewallError> {
        let tag = &plan.tag;
        let wanted: Vec<MasqRule> = plan
            .families
            .iter()
            .flat_map(|fm| {
                fm.sources.iter().map(|ip| MasqRule {
                    family: fm.family,
                    saddr: *ip,
                    exempt: fm.exempt().collect(),
                })
            })
            .collect();
        self.apply(
            |chain| {
                let ours: Vec<&Listed> = chain.rules_of(tag).collect();
                if chain.present
                    && ours
                        .iter()
                        .map(|r| r.masq.as_ref())
                        .eq(wanted.iter().map(Some))
                {
                    return (Transaction::default(), ());
                }
                // Replace the owner's rules in one go: the new set is in place when the old
                // one disappears.
                let mut tx = Transaction::default();
                if !chain.present {
                    // Only when missing: re-adding an existing base chain is a chain update
                    // that costs the kernel a ~15 ms grace period. Should the chain vanish
                    // before the transaction, it fails and the retry sees it missing.
                    tx.ensure_chain();
                }
                for rule in ours {
                    tx.delete(rule.handle);
                }
                for rule in &wanted {
                    tx.add(rule, tag);
                }
                (tx, ())
            },
            |source| NftError::Apply {
                owner: tag.to_string(),
                source,
            },
        )
    }

    fn del_masquerade(&self, tag: &Tag) -> Result<(), FirewallError> {
        self.apply(
            |chain| {
                let mut tx = Transaction::default();
                for rule in chain.rules_of(tag) {
                    tx.delete(rule.handle);
                }
                (tx, ())
            },
            |source| NftError::Apply {
                owner: tag.to_string(),
                source,
            },
        )
    }

    fn check_masquerade(&self, plan: &MasqPlan) -> Result<(), FirewallError> {
        let tag = &plan.tag;
        let chain = self.list()?;
        let mut missing = Vec::new();
        if !chain.present {
            missing.push(format!("nftables chain inet {TABLE} {CHAIN}"));
        }
        for fm in &plan.families {
            for ip in &fm.sources {
                let rule = MasqRule {
                    family: fm.family,
                    saddr: *ip,
                    exempt: fm.exempt().collect(),
                };
                if !chain.rules_of(tag).any(|r| r.masq.as_ref() == Some(&rule)) {
                    missing.push(format!(
                        "nftables rule in inet {TABLE} {CHAIN}: {rule} comment \"{}\"",
                        tag.comment()
                    ));
                }
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(NftError::Missing {
                owner: tag.to_string(),
                missing,
            }
            .into())
        }
    }

    fn gc_masquerade(
        &self,
        network: &str,
        keep: &HashSet<Tag>,
    ) -> Result<Vec<Owner>, FirewallError> {
        self.apply(
            |chain| {
                let mut tx = Transaction::default();
                let mut removed: Vec<Owner> = Vec::new();
                for rule in &chain.rules {
                    let Some(tag) = rule.comment.as_deref().and_then(Tag::parse) else {
                        continue;
                    };
                    if tag.network() == network && !keep.contains(&tag) {
                        tx.delete(rule.handle);
                        if !removed.contains(tag.owner()) {
                            removed.push(tag.owner().clone());
                        }
                    }
                }
                (tx, removed)
            },
            |source| NftError::Gc {
                network: network.to_owned(),
                source,
            },
        )
    }
}

/// One masquerade rule: from `saddr` to anything outside `exempt`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MasqRule {
    family: Family,
    saddr: IpAddr,
    exempt: Vec<IpNetwork>,
}

impl MasqRule {
    /// Decodes the JSON expressions of a listed rule; `None` unless it is exactly
    /// `<proto> saddr A [<proto> daddr != N]… masquerade`.
    fn from_exprs(exprs: &[Value]) -> Option<MasqRule> {
        let (first, rest) = exprs.split_first()?;
        let (last, middle) = rest.split_last()?;
        if !last.get("masquerade")?.is_null() {
            return None;
        }
        let (family, saddr) = match_payload(first, "==", "saddr")?;
        let saddr = match saddr {
            Addr::Host(ip) if Family::of(ip) == family => ip,
            _ => return None,
        };
        let exempt = middle
            .iter()
            .map(|e| match match_payload(e, "!=", "daddr")? {
                (f, addr) if f == family => addr.network(),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?;
        Some(MasqRule {
            family,
            saddr,
            exempt,
        })
    }
}

/// The rule statement in nft syntax, without the comment.
impl fmt::Display for MasqRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = proto(self.family);
        write!(f, "{proto} saddr {}", self.saddr)?;
        for net in &self.exempt {
            write!(f, " {proto} daddr != {net}")?;
        }
        f.write_str(" masquerade")
    }
}

fn proto(family: Family) -> &'static str {
    match family {
        Family::V4 => "ip",
        Family::V6 => "ip6",
    }
}

/// The right-hand side of an address match in nft JSON: `"10.0.0.1"` or
/// `{"prefix": {"addr": "10.0.0.0", "len": 8}}`.
enum Addr {
    Host(IpAddr),
    Prefix(IpAddr, u8),
}

impl Addr {
    fn network(self) -> Option<IpNetwork> {
        match self {
            Addr::Host(ip) => Some(IpNetwork::from(ip)),
            Addr::Prefix(ip, len) => IpNetwork::new(ip, len).ok(),
        }
    }
}

/// Decodes `{"match": {"op": op, "left": {"payload": {"protocol": p, "field": field}},
/// "right": addr}}`.
fn match_payload(expr: &Value, op: &str, field: &str) -> Option<(Family, Addr)> {
    let m = expr.get("match")?;
    if m.get("op")?.as_str()? != op {
        return None;
    }
    let payload = m.get("left")?.get("payload")?;
    if payload.get("field")?.as_str()? != field {
        return None;
    }
    let family = match payload.get("protocol")?.as_str()? {
        "ip" => Family::V4,
        "ip6" => Family::V6,
        _ => return None,
    };
    let right = m.get("right")?;
    let addr = match right {
        Value::String(s) => Addr::Host(s.parse().ok()?),
        _ => {
            let prefix = right.get("prefix")?;
            let ip = prefix.get("addr")?.as_str()?.parse().ok()?;
            let len = u8::try_from(prefix.get("len")?.as_u64()?).ok()?;
            Addr::Prefix(ip, len)
        }
    };
    Some((family, addr))
}

/// Our chain as listed.
#[derive(Debug, Default)]
struct Chain {
    present: bool,
    rules: Vec<Listed>,
}

#[derive(Debug)]
struct Listed {
    handle: u64,
    comment: Option<String>,
    /// `None` for a rule that is not a masquerade rule of our shape.
    masq: Option<MasqRule>,
}

impl Chain {
    /// Parses `nft -j list chain …`: `{"nftables": [{"metainfo": …}, {"chain": …},
    /// {"rule": {"handle": …, "comment": …, "expr": […]}}, …]}`.
    fn parse(json: &str) -> Result<Chain, serde_json::Error> {
        #[derive(serde::Deserialize)]
        struct Listing {
            nftables: Vec<Value>,
        }
        #[derive(serde::Deserialize)]
        struct RuleJson {
            handle: u64,
            comment: Option<String>,
            #[serde(default)]
            expr: Vec<Value>,
        }
        let listing: Listing = serde_json::from_str(json)?;
        let mut chain = Chain::default();
        for item in listing.nftables {
            if item.get("chain").is_some() {
                chain.present = true;
            } else if let Some(rule) = item.get("rule") {
                let rule = RuleJson::deserialize(rule)?;
                chain.rules.push(Listed {
                    handle: rule.handle,
                    masq: MasqRule::from_exprs(&rule.expr),
                    comment: rule.comment,
                });
            }
        }
        Ok(chain)
    }

    fn rules_of<'a>(&'a self, tag: &'a Tag) -> impl Iterator<Item = &'a Listed> + 'a {
        self.rules
            .iter()
            .filter(move |r| r.comment.as_deref() == Some(tag.comment()))
    }
}

/// An `nft -f -` transaction.
#[derive(Debug, Default)]
struct Transaction {
    lines: Vec<String>,
}

impl Transaction {
    fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// `add` of an existing table or chain is a no-op, so this is safe to repeat.
    fn ensure_chain(&mut self) {
        self.lines.push(format!("add table inet {TABLE}"));
        self.lines.push(format!(
            "add chain inet {TABLE} {CHAIN} {{ type nat hook postrouting priority srcnat; policy accept; }}"
        ));
    }

    fn delete(&mut self, handle: u64) {
        self.lines
            .push(format!("delete rule inet {TABLE} {CHAIN} handle {handle}"));
    }

    fn add(&mut self, rule: &MasqRule, tag: &Tag) {
        // Our comments contain no quotes (see model::Tag).
        self.lines.push(format!(
            "add rule inet {TABLE} {CHAIN} {rule} comment \"{}\"",
            tag.comment()
        ));
    }

    fn finish(&self) -> String {
        let mut text = self.lines.join("\n");
        text.push('\n');
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTING: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}},
 {"chain": {"family": "inet", "table": "berth", "name": "postrouting", "handle": 1, "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}},
 {"rule": {"family": "inet", "table": "berth", "chain": "postrouting", "handle": 2, "comment": "berth net1 ctr1 eth0", "expr": [
   {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "198.18.0.5"}},
   {"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": {"prefix": {"addr": "198.18.0.0", "len": 24}}}},
   {"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": {"prefix": {"addr": "224.0.0.0", "len": 4}}}},
   {"masquerade": null}]}},
 {"rule": {"family": "inet", "table": "berth", "chain": "postrouting", "handle": 4, "comment": "berth net1 ctr2 eth0", "expr": [
   {"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "saddr"}}, "right": "fd42:b347::6"}},
   {"match": {"op": "!=", "left": {"payload": {"protocol": "ip6", "field": "daddr"}}, "right": "fd42:b347::6"}},
   {"masquerade": null}]}},
 {"rule": {"family": "inet", "table": "berth", "chain": "postrouting", "handle": 5, "expr": [
   {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "eth0"}}, {"masquerade": null}]}}
]}"#;

    #[test]
    fn parses_a_listing() {
        let chain = Chain::parse(LISTING).unwrap();
        assert!(chain.present);
        assert_eq!(chain.rules.len(), 3);
        let first = chain.rules[0].masq.as_ref().unwrap();
        assert_eq!(
            first.to_string(),
            "ip saddr 198.18.0.5 ip daddr != 198.18.0.0/24 ip daddr != 224.0.0.0/4 masquerade"
        );
        let second = chain.rules[1].masq.as_ref().unwrap();
        assert_eq!(
            second.to_string(),
            "ip6 saddr fd42:b347::6 ip6 daddr != fd42:b347::6/128 masquerade"
        );
        assert_eq!(chain.rules[2].masq, None);
        assert_eq!(chain.rules[2].comment, None);
        let tag = Tag::parse("berth net1 ctr2 eth0").unwrap();
        assert_eq!(
            chain.rules_of(&tag).map(|r| r.handle).collect::<Vec<_>>(),
            [4]
        );
    }

    #[test]
    fn an_empty_chain_listing_is_present_without_rules() {
        let json = r#"{"nftables": [{"metainfo": {}}, {"chain": {"name": "postrouting"}}]}"#;
        let chain = Chain::parse(json).unwrap();
        assert!(chain.present && chain.rules.is_empty());
    }

    #[test]
    fn transactions_read_as_nft_scripts() {
        let tag = Tag::parse("berth n c eth0").unwrap();
        let mut tx = Transaction::default();
        tx.ensure_chain();
        tx.delete(7);
        tx.add(
            &MasqRule {
                family: Family::V4,
                saddr: "198.18.0.5".parse().unwrap(),
                exempt: vec!["198.18.0.0/24".parse().unwrap(), Family::V4.multicast()],
            },
            &tag,
        );
        assert_eq!(
            tx.finish(),
            "add table inet berth\n\
             add chain inet berth postrouting { type nat hook postrouting priority srcnat; policy accept; }\n\
             delete rule inet berth postrouting handle 7\n\
             add rule inet berth postrouting ip saddr 198.18.0.5 ip daddr != 198.18.0.0/24 ip daddr != 224.0.0.0/4 masquerade comment \"berth n c eth0\"\n"
        );
    }
}
