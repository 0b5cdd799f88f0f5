//! MAC spoofing protection of bridge ports (`macspoofchk` of `bridge`): frames a container
//! sends with any source MAC but its own are dropped on the bridge, before they can poison
//! the bridge's forwarding table or reach a neighbour.
//!
//! Always nftables, whatever the host's iptables backend (the reference does the same: the
//! bridge family has no iptables equivalent short of ebtables). One table, two sets, one
//! fixed rule; an attachment is two set elements, so the rule set does not grow with ports:
//!
//! ```text
//! table bridge berth-macspoof {
//!   set guarded { type ifname; }                  "vethb1a2…"                  comment "berth net ctr eth0"
//!   set allowed { type ifname . ether_addr; }     "vethb1a2…" . 02:42:0a:…     comment "berth net ctr eth0"
//!   chain prerouting { type filter hook prerouting priority -300; policy accept;
//!                      iifname @guarded iifname . ether saddr != @allowed drop }
//! }
//! ```
//!
//! Elements carry their owner's comment: DEL and GC find an attachment's elements by owner
//! (the MAC may be unknown to DEL), and re-adding an element that exists is a no-op, so ADD
//! is idempotent.

use std::collections::HashSet;
use std::fmt;

use super::listing::Table;
use super::{NftError, Nftables};
use crate::model::{Tag, check_network, check_word};
use crate::runner::RunError;
use crate::{FirewallError, Owner};

const TABLE: &str = "berth-macspoof";
const GUARDED: &str = "guarded";
const ALLOWED: &str = "allowed";
const CHAIN: &str = "prerouting";
/// The rule as `nft list` prints it back (so CHECK compares text).
const RULE: &str = "iifname @guarded iifname . ether saddr != @allowed drop";

/// A unicast MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// One guarded bridge port: frames arriving on `port` must come from `mac`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MacSpoofGuard {
    pub owner: Owner,
    /// The host end of the container's veth (the bridge port).
    pub port: String,
    /// The container interface's MAC.
    pub mac: MacAddr,
}

/// The `bridge berth-macspoof` table.
#[derive(Debug)]
pub struct MacSpoof {
    nft: Nftables,
}

fn apply_error(owner: &str, source: RunError) -> FirewallError {
    NftError::Apply {
        owner: owner.to_owned(),
        source,
    }
    .into()
}

impl MacSpoof {
    /// Needs `nft`, whatever backend the rest of the plugin uses.
    pub fn detect() -> Result<MacSpoof, FirewallError> {
        Ok(MacSpoof {
            nft: Nftables::detect()?,
        })
    }

    fn snapshot(&self) -> Result<Table, FirewallError> {
        match self
            .nft
            .nft
            .run(&["-a", "list", "table", "bridge", TABLE], None)
        {
            Ok(text) => Ok(Table::parse(&text)),
            Err(e) if e.is_enoent() => Ok(Table::default()),
            Err(e) => Err(NftError::List(e).into()),
        }
    }

    fn elements(tag: &Tag, g: &MacSpoofGuard) -> [String; 2] {
        let comment = tag.comment();
        [
            format!(
                "add element bridge {TABLE} {GUARDED} {{ \"{}\" comment \"{comment}\" }}",
                g.port
            ),
            format!(
                "add element bridge {TABLE} {ALLOWED} {{ \"{}\" . {} comment \"{comment}\" }}",
                g.port, g.mac
            ),
        ]
    }

    fn skeleton() -> [String; 6] {
        [
            format!("add table bridge {TABLE}"),
            format!("add set bridge {TABLE} {GUARDED} {{ type ifname; }}"),
            format!("add set bridge {TABLE} {ALLOWED} {{ type ifname . ether_addr; }}"),
            format!(
                "add chain bridge {TABLE} {CHAIN} {{ type filter hook prerouting priority -300; policy accept; }}"
            ),
            // Flushed and re-added in the same transaction: exactly one copy of the rule,
            // whoever else is repairing the skeleton concurrently.
            format!("flush chain bridge {TABLE} {CHAIN}"),
            format!("add rule bridge {TABLE} {CHAIN} {RULE}"),
        ]
    }

    fn run(&self, lines: &[String], owner: &str) -> Result<(), FirewallError> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut text = lines.join("\n");
        text.push('\n');
        self.nft
            .nft
            .run(&["-f", "-"], Some(&text))
            .map(drop)
            .map_err(|e| apply_error(owner, e))
    }

    /// Guards the port. Idempotent. The common path is one transaction of two elements; the
    /// first ADD on a host (no table yet) creates the skeleton with them.
    pub fn add(&self, g: &MacSpoofGuard) -> Result<(), FirewallError> {
        let tag = validate(g)?;
        let owner = tag.to_string();
        let elements = Self::elements(&tag, g);
        match self.run(&elements, &owner) {
            Err(FirewallError::Nftables(NftError::Apply { source, .. })) if source.is_enoent() => {
                let mut lines: Vec<String> = Self::skeleton().into();
                lines.extend(elements);
                self.run(&lines, &owner)
            }
            other => other,
        }
    }

    /// Removes the owner's elements, found by comment (the MAC of a container that is gone
    /// may be unknown). Idempotent; without elements, nothing is written.
    pub fn del(&self, owner: &Owner) -> Result<(), FirewallError> {
        let Some(tag) = Tag::for_teardown(owner) else {
            return Ok(());
        };
        let table = self.snapshot()?;
        self.delete_where(&table, &tag.to_string(), |t| t == &tag)
            .map(drop)
    }

    /// Error naming what is missing unless the skeleton and both elements are present.
    pub fn check(&self, g: &MacSpoofGuard) -> Result<(), FirewallError> {
        let tag = validate(g)?;
        let table = self.snapshot()?;
        let mut missing = Vec::new();
        if !table.present {
            missing.push(format!("table bridge {TABLE}"));
        } else if !table.rules(CHAIN).iter().any(|r| r.text == RULE) {
            missing.push(format!("rule \"{RULE}\" in chain {CHAIN}"));
        }
        let has = |set: &str, key: &str| {
            table
                .elements(set)
                .iter()
                .any(|e| e.key == key && e.comment.as_deref() == Some(tag.comment()))
        };
        let port_key = format!("\"{}\"", g.port);
        if !has(GUARDED, &port_key) {
            missing.push(format!("element {port_key} of set {GUARDED}"));
        }
        let allowed_key = format!("{port_key} . {}", g.mac);
        if !has(ALLOWED, &allowed_key) {
            missing.push(format!("element {allowed_key} of set {ALLOWED}"));
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

    /// Removes the elements of every owner of `network` not in `keep`; returns those owners.
    pub fn gc(&self, network: &str, keep: &[Owner]) -> Result<Vec<Owner>, FirewallError> {
        check_network(network)?;
        let keep: HashSet<Tag> = keep.iter().filter_map(Tag::for_teardown).collect();
        let table = self.snapshot()?;
        self.delete_where(&table, &format!("network {network}"), |t| {
            t.network() == network && !keep.contains(t)
        })
    }

    /// Deletes, in one transaction, every element whose owner matches; returns the owners.
    fn delete_where(
        &self,
        table: &Table,
        what: &str,
        matches: impl Fn(&Tag) -> bool,
    ) -> Result<Vec<Owner>, FirewallError> {
        let mut lines = Vec::new();
        let mut owners: Vec<Owner> = Vec::new();
        for set in [GUARDED, ALLOWED] {
            for e in table.elements(set) {
                let Some(tag) = e.comment.as_deref().and_then(Tag::parse) else {
                    continue;
                };
                if matches(&tag) {
                    lines.push(format!(
                        "delete element bridge {TABLE} {set} {{ {} }}",
                        e.key
                    ));
                    if !owners.contains(tag.owner()) {
                        owners.push(tag.owner().clone());
                    }
                }
            }
        }
        self.run(&lines, what)?;
        Ok(owners)
    }
}

fn validate(g: &MacSpoofGuard) -> Result<Tag, FirewallError> {
    check_word("bridge port", &g.port)?;
    Ok(Tag::new(&g.owner)?)
}
