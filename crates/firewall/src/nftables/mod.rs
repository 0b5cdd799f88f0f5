//! The nftables backend: the layout of [`layout`] in one table of our own.
//!
//! # Per-call cost
//! - **ADD** creates the owner's map elements in one netlink batch ([`netlink`], no `nft`
//!   process): `create` fails if a key exists, so success proves there was nothing to
//!   replace. On failure (a repeated ADD, a key another owner holds, missing shared
//!   objects) the table is listed once and put right with one `nft -f -` transaction,
//!   taking keys over from their previous owner (the last ADD wins, as in the reference).
//! - **DEL** re-adds each element with its own data (the owner id), which the kernel
//!   refuses for a key another owner holds, then deletes them, in one batch. Port mappings
//!   know their keys from the request; masquerade reads its index entries back by key.
//! - CHECK, GC and reconcile list the whole table with `nft`.
//!
//! A transaction that fails in the kernel costs a grace period (the abort path waits for
//! one), and so does one that deletes (when its netlink socket closes): each call deletes in
//! at most one transaction, and the common paths never fail.
//!
//! Shared chains, maps and rules are never deleted or flushed: a concurrent call may just
//! have added something to them, and re-adding an existing chain is an update that costs a
//! grace period too.

mod layout;
mod listing;
pub mod macspoof;
mod netlink;

use std::collections::HashSet;

use layout::{Owned, Shared, Skeleton, TABLE};
use listing::Table;
use netlink::{Nfnl, NlError, Op};

use crate::forward::ForwardPlan;
use crate::isolation::IsoPlan;
use crate::model::{Family, FamilyMasq, MasqPlan, Tag};
use crate::ports::{MarkSpec, PortPlan};
use crate::runner::{Program, RunError};
use crate::{
    Backend, BackendKind, FirewallError, IptablesVariant, Owner, Plan, ReconcileReport, RuleKind,
    Target,
};

/// Listings + transactions per call before giving up on a table that keeps changing.
const ATTEMPTS: usize = 3;

/// Errors of the `nftables` module.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("find nft (searched PATH, /usr/sbin, /sbin, /usr/bin, /bin)")]
    NotFound,
    #[error("list nftables table inet {TABLE}")]
    List(#[source] RunError),
    #[error("apply nftables transaction for {owner}")]
    Apply {
        owner: String,
        #[source]
        source: RunError,
    },
    #[error("change nftables elements for {owner}")]
    Netlink {
        owner: String,
        #[source]
        source: NlError,
    },
    #[error("apply nftables transaction removing stale rules of network {network}")]
    Gc {
        network: String,
        #[source]
        source: RunError,
    },
    #[error("rules of {owner} missing: {}", .missing.join("; "))]
    Missing { owner: String, missing: Vec<String> },
    #[error("{what} is not supported by the nftables backend")]
    Unsupported { what: String },
    #[error("conditions of {owner} are not valid nft expressions")]
    Conditions {
        owner: String,
        #[source]
        source: RunError,
    },
}

#[derive(Debug)]
pub struct Nftables {
    nft: Program,
}

/// An `nft -f -` transaction.
#[derive(Debug, Default)]
struct Tx {
    lines: Vec<String>,
}

impl Tx {
    fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    fn push(&mut self, line: String) {
        self.lines.push(line);
    }

    fn extend(&mut self, other: Tx) {
        self.lines.extend(other.lines);
    }

    fn text(&self) -> String {
        let mut text = self.lines.join("\n");
        text.push('\n');
        text
    }

    fn add_element(&mut self, set: &str, key: &str, comment: &str, data: Option<&str>) {
        let comment = if comment.is_empty() {
            String::new()
        } else {
            format!(" comment \"{comment}\"")
        };
        let data = data.map(|d| format!(" : {d}")).unwrap_or_default();
        self.push(format!(
            "add element inet {TABLE} {set} {{ {key}{comment}{data} }}"
        ));
    }

    fn delete_element(&mut self, set: &str, key: &str) {
        self.push(format!("delete element inet {TABLE} {set} {{ {key} }}"));
    }
}

impl Nftables {
    pub fn detect() -> Result<Nftables, NftError> {
        Program::find("nft")
            .map(|nft| Nftables { nft })
            .ok_or(NftError::NotFound)
    }

    /// The whole table; a missing table is an empty listing.
    fn snapshot(&self) -> Result<Table, NftError> {
        match self.nft.run(&["-a", "list", "table", "inet", TABLE], None) {
            Ok(text) => Ok(Table::parse(&text)),
            Err(e) if e.is_enoent() => Ok(Table::default()),
            Err(e) => Err(NftError::List(e)),
        }
    }

    fn run(&self, tx: &Tx) -> Result<(), RunError> {
        if tx.is_empty() {
            return Ok(());
        }
        self.nft.run(&["-f", "-"], Some(&tx.text())).map(drop)
    }

    /// Read, plan, apply; on a failed transaction read again.
    fn converge<T>(
        &self,
        mut plan: impl FnMut(&Table) -> (Tx, T),
        err: impl Fn(RunError) -> NftError,
    ) -> Result<T, NftError> {
        let mut attempt = 1;
        loop {
            let table = self.snapshot()?;
            let (tx, value) = plan(&table);
            match self.run(&tx) {
                Ok(()) => return Ok(value),
                Err(_) if attempt < ATTEMPTS => attempt += 1,
                Err(e) => return Err(err(e)),
            }
        }
    }

    /// ADD: create every element in one netlink batch; else list and put right. `scope`
    /// names the maps whose elements of this owner the new state replaces.
    fn add(
        &self,
        owned: &Owned,
        skeleton: &Skeleton,
        scope: &dyn Fn(&str) -> bool,
    ) -> Result<(), NftError> {
        let fast = || -> Result<(), NlError> {
            let ops: Vec<Op> = owned
                .by_set()
                .into_iter()
                .map(|(set, elems)| Op::Create(leak_name(set), elems))
                .collect();
            let mut nl = Nfnl::open()?;
            let result = nl.batch(TABLE, &ops);
            // An earlier DEL's grace period may still be running: closing now would wait
            // for it (see `release_later`).
            nl.release_later();
            result
        };
        // Chains and verdict elements (conditions) go through `nft` only.
        let all_netlink = owned.chain.is_none() && owned.entries.iter().all(|e| e.nl.is_some());
        if all_netlink {
            match fast() {
                Ok(()) => return Ok(()),
                // ENOENT: shared objects missing; EEXIST: a repeated ADD or a taken key;
                // EBUSY: the same with other data. All are put right from a listing.
                Err(NlError::Refused { .. }) => {}
                Err(source) => {
                    return Err(NftError::Netlink {
                        owner: owned.what.clone(),
                        source,
                    });
                }
            }
        }
        self.converge(
            |table| {
                let mut tx = skeleton_tx(table, skeleton);
                tx.extend(replace_tx(table, owned, scope));
                (tx, ())
            },
            apply_err(&owned.what),
        )
    }

    /// DEL of elements known from the request: probe ownership, delete, in one batch on
    /// `nl`; on any failure, list the table and remove the owner's elements found there.
    fn del(
        &self,
        mut nl: Nfnl,
        owned: &Owned,
        scope: &dyn Fn(&str) -> bool,
    ) -> Result<(), NftError> {
        if owned.chain.is_some() {
            // An attachment with conditions has a chain to delete: from a listing.
            nl.release_later();
            return self.del_by_listing(&owned.comment, &owned.what, scope);
        }
        let sets = owned.by_set();
        let mut ops: Vec<Op> = sets
            .iter()
            .map(|(set, elems)| Op::Add(leak_name(set.clone()), elems.clone()))
            .collect();
        ops.extend(
            sets.into_iter()
                .map(|(set, elems)| Op::Delete(leak_name(set), elems)),
        );
        let done = nl.batch(TABLE, &ops).is_ok();
        nl.release_later();
        if done {
            return Ok(());
        }
        self.del_by_listing(&owned.comment, &owned.what, scope)
    }

    fn del_by_listing(
        &self,
        comment: &str,
        what: &str,
        scope: &dyn Fn(&str) -> bool,
    ) -> Result<(), NftError> {
        self.converge(
            |table| (remove_tx(table, comment, scope), ()),
            apply_err(what),
        )
    }
}

/// Netlink ops name their set with a `&'static str`; names built at run time (`snat4-13`)
/// are few (one per mark bit) and live as long as the process anyway.
fn leak_name(name: String) -> &'static str {
    for known in layout::OWNER_MAPS {
        if known == name {
            return known;
        }
    }
    Box::leak(name.into_boxed_str())
}

fn apply_err(what: &str) -> impl Fn(RunError) -> NftError + '_ {
    move |source| NftError::Apply {
        owner: what.to_owned(),
        source,
    }
}

/// What the skeleton lacks in `table`.
fn skeleton_tx(table: &Table, skeleton: &Skeleton) -> Tx {
    let mut tx = Tx::default();
    if !table.present {
        tx.push(format!("add table inet {TABLE}"));
    }
    for item in &skeleton.items {
        match item {
            Shared::Map(kind, name, def) if !table.has_map(name) => {
                tx.push(format!("add {kind} inet {TABLE} {name} {{ {def} }}"));
            }
            Shared::Chain(name, base) if !table.has_chain(name) => match base {
                Some(spec) => tx.push(format!("add chain inet {TABLE} {name} {{ {spec} }}")),
                None => tx.push(format!("add chain inet {TABLE} {name}")),
            },
            _ => {}
        }
    }
    // Missing rules go in skeleton order: before the next wanted rule that is present (by
    // its handle), else at the end. Nothing is flushed: rules of other mark bits stay.
    let mut chains: Vec<&str> = Vec::new();
    for item in &skeleton.items {
        if let Shared::Rule(chain, _) = item {
            if !chains.contains(&chain.as_str()) {
                chains.push(chain);
            }
        }
    }
    for chain in chains {
        let wanted: Vec<&str> = skeleton
            .items
            .iter()
            .filter_map(|i| match i {
                Shared::Rule(c, text) if c == chain => Some(text.as_str()),
                _ => None,
            })
            .collect();
        let listed = table.rules(chain);
        let handle_of = |text: &str| listed.iter().find(|r| r.text == text).map(|r| r.handle);
        for (i, w) in wanted.iter().enumerate() {
            if handle_of(w).is_some() {
                continue;
            }
            match wanted[i + 1..].iter().find_map(|next| handle_of(next)) {
                Some(handle) => tx.push(format!(
                    "insert rule inet {TABLE} {chain} position {handle} {w}"
                )),
                None => tx.push(format!("add rule inet {TABLE} {chain} {w}")),
            }
        }
    }
    tx
}

/// The owner's state as `owned` says, from whatever `table` has: elements of this owner in
/// `scope` maps that are not wanted go, keys held by another owner are taken over.
fn replace_tx(table: &Table, owned: &Owned, scope: &dyn Fn(&str) -> bool) -> Tx {
    let mut tx = Tx::default();
    if let Some((chain, rules)) = &owned.chain {
        let listed = table.rules(chain);
        let same = listed.len() == rules.len()
            && listed
                .iter()
                .zip(rules)
                .all(|(l, r)| layout::same_rule(&l.text, l.comment.as_deref(), r));
        if !table.has_chain(chain) {
            tx.push(format!("add chain inet {TABLE} {chain}"));
        } else if !same {
            tx.push(format!("flush chain inet {TABLE} {chain}"));
        }
        if !table.has_chain(chain) || !same {
            for r in rules {
                tx.push(format!("add rule inet {TABLE} {chain} {r}"));
            }
        }
    }
    let mut deletes = Tx::default();
    let mut adds = Tx::default();
    for e in &owned.entries {
        let comment = if e.commented() {
            owned.comment.as_str()
        } else {
            ""
        };
        match table.elements(e.set()).iter().find(|l| l.key == e.key) {
            Some(l)
                if l.data == e.data
                    && (comment.is_empty() || l.comment.as_deref() == Some(comment)) => {}
            Some(_) => {
                deletes.delete_element(e.set(), &e.key);
                adds.add_element(e.set(), &e.key, comment, e.data.as_deref());
            }
            None => adds.add_element(e.set(), &e.key, comment, e.data.as_deref()),
        }
    }
    for (map, elements) in &table.maps {
        if !scope(map) {
            continue;
        }
        for l in elements {
            let ours = l.comment.as_deref() == Some(owned.comment.as_str());
            let wanted = owned
                .entries
                .iter()
                .any(|e| e.set() == map && e.key == l.key);
            if ours && !wanted {
                deletes.delete_element(map, &l.key);
            }
        }
    }
    // A chain for conditions the owner no longer has: after its dispatch elements.
    let wanted_chain = owned.chain.as_ref().map(|(c, _)| c.as_str());
    let stale_chains = cond_chains(table, &owned.comment)
        .into_iter()
        .filter(|c| Some(c.as_str()) != wanted_chain);
    for chain in stale_chains {
        deletes.push(format!("delete chain inet {TABLE} {chain}"));
    }
    tx.extend(deletes);
    tx.extend(adds);
    tx
}

/// The conditions chains that elements of the owner with `comment` jump to.
fn cond_chains(table: &Table, comment: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for e in table.elements(layout::COND_MAP) {
        if e.comment.as_deref() != Some(comment) {
            continue;
        }
        if let Some(chain) = e.jump() {
            if chain.starts_with(layout::COND_PREFIX) && !out.iter().any(|c| c == chain) {
                out.push(chain.to_owned());
            }
        }
    }
    out
}

/// Every element in `scope` maps carrying `comment`, and the conditions chain they jump to.
fn remove_tx(table: &Table, comment: &str, scope: &dyn Fn(&str) -> bool) -> Tx {
    let mut tx = Tx::default();
    for (map, elements) in &table.maps {
        if !scope(map) {
            continue;
        }
        for l in elements {
            if l.comment.as_deref() == Some(comment) {
                tx.delete_element(map, &l.key);
            }
        }
    }
    if scope(layout::COND_MAP) {
        for chain in cond_chains(table, comment) {
            tx.push(format!("delete chain inet {TABLE} {chain}"));
        }
    }
    tx
}

fn missing(table: &Table, owned: &Owned, skeleton: &Skeleton) -> Vec<String> {
    let mut missing = Vec::new();
    if !table.present {
        missing.push(format!("nftables table inet {TABLE}"));
        return missing;
    }
    for item in &skeleton.items {
        match item {
            Shared::Map(_, name, _) if !table.has_map(name) => {
                missing.push(format!("nftables map {name}"));
            }
            Shared::Chain(name, _) if !table.has_chain(name) => {
                missing.push(format!("nftables chain {name}"));
            }
            Shared::Rule(chain, text) if !table.rules(chain).iter().any(|r| r.text == *text) => {
                missing.push(format!("nftables rule in {chain}: {text}"));
            }
            _ => {}
        }
    }
    if let Some((chain, rules)) = &owned.chain {
        for r in rules {
            let present = table
                .rules(chain)
                .iter()
                .any(|l| layout::same_rule(&l.text, l.comment.as_deref(), r));
            if !present {
                missing.push(format!("nftables rule in {chain}: {r}"));
            }
        }
    }
    for e in &owned.entries {
        let ok = table
            .elements(e.set())
            .iter()
            .any(|l| l.key == e.key && l.data == e.data);
        if !ok {
            let data = e
                .data
                .as_deref()
                .map(|d| format!(" : {d}"))
                .unwrap_or_default();
            missing.push(format!(
                "nftables element {} {{ {}{data} }}",
                e.set(),
                e.key
            ));
        }
    }
    missing
}

fn missing_result(owner: &str, missing: Vec<String>) -> Result<(), FirewallError> {
    if missing.is_empty() {
        Ok(())
    } else {
        Err(NftError::Missing {
            owner: owner.to_owned(),
            missing,
        }
        .into())
    }
}

fn mark_bit(plan: &PortPlan) -> Result<u8, NftError> {
    match &plan.mark {
        MarkSpec::Bit(bit) => Ok(*bit),
        MarkSpec::ExternalChain(chain) => Err(NftError::Unsupported {
            what: format!("externalSetMarkChain {chain:?}"),
        }),
    }
}

fn ports_skeleton(plans: &[&PortPlan]) -> Result<Skeleton, NftError> {
    let mut bits = Vec::new();
    for plan in plans {
        bits.push(mark_bit(plan)?);
    }
    bits.sort_unstable();
    bits.dedup();
    Ok(Skeleton::nat(&bits, &[]))
}

fn ports_owned(plan: &PortPlan) -> Result<Owned, NftError> {
    Ok(layout::ports_owned(
        &plan.families,
        &plan.tag,
        mark_bit(plan)?,
    ))
}

fn is_port_map(name: &str) -> bool {
    layout::PORT_MAPS.contains(&name) || name.starts_with("snat4-") || name.starts_with("snat6-")
}

fn is_masq_map(name: &str) -> bool {
    layout::MASQ_MAPS.contains(&name) || name.starts_with("masq-exempt")
}

/// Owners of elements in `scope` maps whose comment `parse` accepts and `stale` condemns.
fn stale_owners(
    table: &Table,
    scope: &dyn Fn(&str) -> bool,
    stale: impl Fn(&Tag) -> bool,
) -> Vec<Tag> {
    let mut out: Vec<Tag> = Vec::new();
    for (map, elements) in &table.maps {
        if !scope(map) {
            continue;
        }
        for l in elements {
            if let Some(tag) = l.comment.as_deref().and_then(Tag::parse) {
                if stale(&tag) && !out.contains(&tag) {
                    out.push(tag);
                }
            }
        }
    }
    out
}

impl Backend for Nftables {
    fn kind(&self) -> BackendKind {
        BackendKind::Nftables
    }

    fn iptables_variant(&self) -> Option<IptablesVariant> {
        None
    }

    /// nf_tables answers over netlink (a lookup in our table; missing is fine).
    fn status(&self) -> Result<(), FirewallError> {
        let probe = || -> Result<(), NlError> {
            Nfnl::open()?.get(TABLE, "masq4", &[0, 0, 0, 0]).map(drop)
        };
        probe().map_err(|source| NftError::Netlink {
            owner: "status".into(),
            source,
        })?;
        Ok(())
    }

    fn apply(&self, plan: &Plan) -> Result<(), FirewallError> {
        match plan {
            Plan::Masquerade(p) => self.add_masquerade(p),
            Plan::Ports(p) => self.add_ports(p),
            Plan::Isolation(p) => self.add_isolation(p),
            Plan::Forward(p) => self.add_forward(p),
        }
    }

    fn check(&self, plan: &Plan) -> Result<(), FirewallError> {
        match plan {
            Plan::Masquerade(p) => self.check_masquerade(p),
            Plan::Ports(p) => self.check_ports(p),
            Plan::Isolation(p) => self.check_isolation(p),
            Plan::Forward(p) => self.check_forward(p),
        }
    }

    fn remove(&self, target: &Target<'_>) -> Result<(), FirewallError> {
        match target {
            Target::Masquerade(tag) => self.del_masquerade(tag),
            Target::Ports(tag, known) => self.del_ports(tag, known.as_ref()),
            Target::Forward(tag, known) => self.del_forward(tag, known.as_ref()),
            Target::Isolation(network) => self.gc_isolation(network, true).map(drop),
        }
    }

    fn gc(
        &self,
        kind: RuleKind,
        network: &str,
        keep: &HashSet<Tag>,
    ) -> Result<Vec<Owner>, FirewallError> {
        match kind {
            RuleKind::Masquerade => self.gc_masquerade(network, keep),
            RuleKind::Ports => self.gc_ports(network, keep),
            RuleKind::Forward => self.gc_forward(network, keep),
        }
    }

    fn reconcile(&self, desired: &[Plan]) -> Result<ReconcileReport, FirewallError> {
        let ports: Vec<&PortPlan> = desired
            .iter()
            .filter_map(|d| match d {
                Plan::Ports(p) => Some(p),
                _ => None,
            })
            .collect();
        let mut skeleton = ports_skeleton(&ports)?;
        let masq: Vec<&FamilyMasq> = desired
            .iter()
            .filter_map(|d| match d {
                Plan::Masquerade(m) => Some(&m.families),
                _ => None,
            })
            .flatten()
            .collect();
        skeleton.merge(Skeleton::nat(&[], &layout::exempt_prefixes(masq)));
        if desired.iter().any(|d| matches!(d, Plan::Isolation(_))) {
            skeleton.merge(Skeleton::filter());
        }
        let mut owned = Vec::new();
        for d in desired {
            owned.push(match d {
                Plan::Masquerade(m) => layout::masq_owned(&m.families, &m.tag),
                Plan::Ports(p) => ports_owned(p)?,
                Plan::Isolation(i) => layout::iso_owned(i),
                Plan::Forward(_) => continue,
            });
        }
        let report = self.converge(
            |table| {
                let mut tx = skeleton_tx(table, &skeleton);
                let mut report = ReconcileReport {
                    skeleton_repaired: !tx.is_empty(),
                    ..ReconcileReport::default()
                };
                for o in &owned {
                    // Only what is missing or wrong: stale elements are GC's business.
                    let t = replace_tx(table, o, &|_| false);
                    if !t.is_empty() {
                        report.repaired.push(o.what.clone());
                        tx.extend(t);
                    }
                }
                (tx, report)
            },
            apply_err("reconcile"),
        )?;
        Ok(report)
    }
}

impl Nftables {
    fn add_masquerade(&self, plan: &MasqPlan) -> Result<(), FirewallError> {
        let owned = layout::masq_owned(&plan.families, &plan.tag);
        // ADD replaces the owner's sources in the families it mentions; those of other
        // families stay, as with iptables (one table per family there).
        let families: Vec<Family> = plan.families.iter().map(|f| f.family).collect();
        let scope = |map: &str| {
            is_masq_map(map)
                && families.iter().any(|f| match f {
                    Family::V4 => map.ends_with('4'),
                    Family::V6 => map.ends_with('6'),
                })
        };
        let skeleton = Skeleton::nat(&[], &layout::exempt_prefixes(&plan.families));
        Ok(self.add(&owned, &skeleton, &scope)?)
    }

    fn del_masquerade(&self, tag: &Tag) -> Result<(), FirewallError> {
        let scope = |m: &str| is_masq_map(m);
        let listing = || self.del_by_listing(tag.comment(), &tag.to_string(), &scope);
        let Ok(mut nl) = Nfnl::open() else {
            return Ok(listing()?);
        };
        // The sources come back from the owner's index entries, read by key. Indexes run
        // across families: IPv6 entries follow the IPv4 ones.
        let mut read = || -> Result<Vec<FamilyMasq>, NlError> {
            let mut families = Vec::new();
            let mut n = 0u32;
            for family in Family::ALL {
                let map = match family {
                    Family::V4 => "masq-index4",
                    Family::V6 => "masq-index6",
                };
                let mut fm = FamilyMasq {
                    family,
                    sources: Vec::new(),
                    subnets: Vec::new(),
                };
                while let Some(data) = nl.get(TABLE, map, &layout::masq_index_key(tag.id(), n))? {
                    if let Some((src, net)) = layout::masq_index_decode(family, &data) {
                        if !fm.sources.contains(&src) {
                            fm.sources.push(src);
                        }
                        if !fm.subnets.contains(&net) {
                            fm.subnets.push(net);
                        }
                    }
                    n += 1;
                }
                if !fm.sources.is_empty() {
                    families.push(fm);
                }
            }
            Ok(families)
        };
        match read() {
            Ok(families) if families.is_empty() => Ok(()),
            Ok(families) => {
                let owned = layout::masq_owned(&families, tag);
                Ok(self.del(nl, &owned, &scope)?)
            }
            Err(_) => Ok(listing()?),
        }
    }

    fn check_masquerade(&self, plan: &MasqPlan) -> Result<(), FirewallError> {
        let table = self.snapshot()?;
        let owned = layout::masq_owned(&plan.families, &plan.tag);
        let skeleton = Skeleton::nat(&[], &layout::exempt_prefixes(&plan.families));
        let mut found = missing(&table, &owned, &skeleton);
        // Index numbering depends on the ADD that wrote it: compare the sources, not it.
        found.retain(|m| !m.contains("masq-index"));
        missing_result(&plan.tag.to_string(), found)
    }

    fn gc_masquerade(
        &self,
        network: &str,
        keep: &HashSet<Tag>,
    ) -> Result<Vec<Owner>, FirewallError> {
        self.gc_scope(&is_masq_map, network, keep)
    }

    fn add_ports(&self, plan: &PortPlan) -> Result<(), FirewallError> {
        let owned = ports_owned(plan)?;
        self.check_conditions(&owned)?;
        Ok(self.add(&owned, &ports_skeleton(&[plan])?, &is_port_map)?)
    }

    fn del_ports(&self, tag: &Tag, plan: Option<&PortPlan>) -> Result<(), FirewallError> {
        match plan.map(ports_owned) {
            Some(Ok(owned)) => match Nfnl::open() {
                Ok(nl) => Ok(self.del(nl, &owned, &is_port_map)?),
                Err(_) => Ok(self.del_by_listing(tag.comment(), &tag.to_string(), &is_port_map)?),
            },
            _ => {
                // Without the request: the owner's manifest says, by key, whether there is
                // anything at all (the usual answer for a repeated DEL).
                let probe = || -> Result<Option<Vec<u8>>, NlError> {
                    Nfnl::open()?.get(
                        TABLE,
                        "ports-index",
                        &netlink::encode(&[netlink::Field::Mark(tag.id())]),
                    )
                };
                if let Ok(None) = probe() {
                    return Ok(());
                }
                Ok(self.del_by_listing(tag.comment(), &tag.to_string(), &is_port_map)?)
            }
        }
    }

    fn check_ports(&self, plan: &PortPlan) -> Result<(), FirewallError> {
        let table = self.snapshot()?;
        let owned = ports_owned(plan)?;
        missing_result(
            &plan.tag.to_string(),
            missing(&table, &owned, &ports_skeleton(&[plan])?),
        )
    }

    fn gc_ports(&self, network: &str, keep: &HashSet<Tag>) -> Result<Vec<Owner>, FirewallError> {
        self.gc_scope(&is_port_map, network, keep)
    }

    fn add_isolation(&self, plan: &IsoPlan) -> Result<(), FirewallError> {
        let owned = layout::iso_owned(plan);
        let skeleton = Skeleton::filter();
        Ok(self.converge(
            |table| {
                let mut tx = skeleton_tx(table, &skeleton);
                tx.extend(replace_tx(table, &owned, &|_| false));
                (tx, ())
            },
            apply_err(&owned.what),
        )?)
    }

    fn check_isolation(&self, plan: &IsoPlan) -> Result<(), FirewallError> {
        let table = self.snapshot()?;
        let owned = layout::iso_owned(plan);
        missing_result(
            &plan.to_string(),
            missing(&table, &owned, &Skeleton::filter()),
        )
    }

    fn gc_isolation(&self, network: &str, remove: bool) -> Result<bool, FirewallError> {
        if !remove {
            return Ok(false);
        }
        Ok(self.converge(
            |table| {
                let mut tx = Tx::default();
                let mut removed = false;
                for (chain, rules) in &table.chains {
                    if !chain.starts_with(layout::ISO_PREFIX) {
                        continue;
                    }
                    let Some(plan) = rules
                        .iter()
                        .find_map(|r| r.comment.as_deref().and_then(IsoPlan::parse))
                    else {
                        continue;
                    };
                    if plan.network() != network {
                        continue;
                    }
                    removed = true;
                    let bridge = format!("\"{}\"", plan.bridge());
                    for (map, e) in table.elements_to(chain) {
                        tx.delete_element(map, &e.key);
                    }
                    let shared = table
                        .elements(layout::ISOLATION_IN)
                        .iter()
                        .any(|e| e.key == bridge && e.jump() != Some(chain.as_str()));
                    if !shared
                        && table
                            .elements(layout::ISOLATED)
                            .iter()
                            .any(|e| e.key == bridge)
                    {
                        tx.delete_element(layout::ISOLATED, &bridge);
                    }
                    tx.push(format!("delete chain inet {TABLE} {chain}"));
                }
                (tx, removed)
            },
            |source| NftError::Gc {
                network: network.to_owned(),
                source,
            },
        )?)
    }

    /// Nothing to do: an accept in this table cannot override a drop in another one, and
    /// this table drops nothing but isolated traffic (see `forward`).
    fn add_forward(&self, _: &ForwardPlan) -> Result<(), FirewallError> {
        Ok(())
    }

    fn del_forward(&self, _: &Tag, _: Option<&ForwardPlan>) -> Result<(), FirewallError> {
        Ok(())
    }

    fn check_forward(&self, _: &ForwardPlan) -> Result<(), FirewallError> {
        Ok(())
    }

    fn gc_forward(&self, _: &str, _: &HashSet<Tag>) -> Result<Vec<Owner>, FirewallError> {
        Ok(Vec::new())
    }
}

impl Nftables {
    /// User conditions end up inside our rules: `nft --check` them in a scratch table first
    /// (nothing is committed), so a typo is the caller's error (code 7) rather than a failed
    /// transaction of ours.
    fn check_conditions(&self, owned: &Owned) -> Result<(), NftError> {
        let Some((_, rules)) = &owned.chain else {
            return Ok(());
        };
        let mut tx = Tx::default();
        tx.push("add table inet berth-check".into());
        tx.push("add chain inet berth-check c".into());
        for r in rules {
            tx.push(format!("add rule inet berth-check c {r}"));
        }
        self.nft
            .run(&["--check", "-f", "-"], Some(&tx.text()))
            .map(drop)
            .map_err(|source| NftError::Conditions {
                owner: owned.what.clone(),
                source,
            })
    }

    fn gc_scope(
        &self,
        scope: &dyn Fn(&str) -> bool,
        network: &str,
        keep: &HashSet<Tag>,
    ) -> Result<Vec<Owner>, FirewallError> {
        Ok(self.converge(
            |table| {
                let stale = stale_owners(table, scope, |t| {
                    t.network() == network && !keep.contains(t)
                });
                let mut tx = Tx::default();
                for tag in &stale {
                    tx.extend(remove_tx(table, tag.comment(), scope));
                }
                (tx, stale.iter().map(|t| t.owner().clone()).collect())
            },
            |source| NftError::Gc {
                network: network.to_owned(),
                source,
            },
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Masquerade, Owner};

    fn owned() -> Owned {
        let plan = MasqPlan::new(&Masquerade {
            owner: Owner {
                network: "n".into(),
                container_id: "c".into(),
                ifname: "eth0".into(),
            },
            sources: vec!["198.18.0.5/24".parse().unwrap()],
        })
        .unwrap();
        layout::masq_owned(&plan.families, &plan.tag)
    }

    fn listed(o: &Owned, other: bool) -> Table {
        let mut text = String::from("table inet berth { # handle 1\n");
        for e in &o.entries {
            let (comment, data) = if other && e.set() == "masq4" {
                ("berth n other eth0".to_string(), "0x00000001".to_string())
            } else {
                (o.comment.clone(), e.data.clone().unwrap())
            };
            text.push_str(&format!(
                "\tmap {} {{ # handle 2\n\t\ttype x : y\n\t\telements = {{ {} comment \"{comment}\" : {data} }}\n\t}}\n",
                e.set(),
                e.key
            ));
        }
        text.push_str("}\n");
        Table::parse(&text)
    }

    #[test]
    fn replace_is_empty_when_in_place_and_takes_keys_over() {
        let o = owned();
        assert!(replace_tx(&listed(&o, false), &o, &is_masq_map).is_empty());
        let tx = replace_tx(&listed(&o, true), &o, &is_masq_map).text();
        assert_eq!(
            tx,
            format!(
                "delete element inet berth masq4 {{ 198.18.0.5 }}\nadd element inet berth masq4 {{ 198.18.0.5 comment \"{}\" : 0x{:08x} }}\n",
                o.comment, o.id
            )
        );
    }

    #[test]
    fn removal_takes_the_owners_elements() {
        let o = owned();
        let tx = remove_tx(&listed(&o, false), &o.comment, &is_masq_map).text();
        assert_eq!(tx.matches("delete element").count(), 3, "{tx}");
    }

    #[test]
    fn a_new_mark_bit_is_inserted_before_the_exemptions() {
        let text = "table inet berth { # handle 1\n\tchain postrouting { # handle 2\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\t\tmeta mark & 0x00002000 == 0x00002000 masquerade # handle 3\n\t\tct status dnat ip saddr 127.0.0.0/8 ip daddr @snat4-13 masquerade # handle 4\n\t\tct status dnat ip daddr @masqall4 masquerade # handle 5\n\t}\n}\n";
        let tx = skeleton_tx(&Table::parse(text), &Skeleton::nat(&[14], &[])).text();
        assert!(
            tx.contains("insert rule inet berth postrouting position 5 meta mark & 0x00004000 == 0x00004000 masquerade"),
            "{tx}"
        );
        assert!(!tx.contains("flush"), "{tx}");
    }

    #[test]
    fn skeleton_tx_on_an_empty_table_creates_everything_in_order() {
        let tx = skeleton_tx(
            &Table::default(),
            &Skeleton::nat(&[13], &[(Family::V4, 24)]),
        )
        .text();
        assert!(tx.starts_with("add table inet berth\n"), "{tx}");
        let mark = tx
            .find("meta mark & 0x00002000 == 0x00002000 masquerade")
            .unwrap();
        let exempt = tx.find("@masq-exempt4-24 return").unwrap();
        assert!(mark < exempt, "{tx}");
        assert!(tx.contains("add map inet berth masq4 { type ipv4_addr : mark; }"));
    }
}
