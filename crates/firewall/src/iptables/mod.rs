//! The iptables backend: the rule layout of [`layout`], applied with one
//! `iptables-restore --noflush -w` batch per family and call (atomic in the kernel).
//!
//! # Keeping calls flat
//! A call's cost must not grow with the number of attachments, so the common paths never
//! read a whole table:
//!
//! - **ADD** sends `-N <owner chain>`, its body and its entry rules in one batch. `-N` fails
//!   when the chain exists, and the kernel never lets a rule jump to a missing chain, so a
//!   success proves there was nothing of this owner to replace. Otherwise (a repeated ADD,
//!   missing shared chains) the table is read once and the owner's rules replaced.
//! - **DEL** of port mappings derives the entry rules from the request and sends `-D` for
//!   them, `-F` and `-X` for the chain. Masquerade DEL lists its bucket (1/16 of the entries)
//!   and deletes by the printed text. A family without rules costs one `-S` of the owner
//!   chain. Both families run in parallel.
//! - CHECK, GC and reconcile read whole tables: they are not on the per-container path.
//!
//! iptables-nft checks a batch against its cache before sending it, so a batch that would
//! fail (existing chain, missing rule) fails before reaching the kernel, at no extra cost.
//!
//! # Races
//! A batch is atomic; reads and batches are separate commands. A batch that fails is
//! recomputed from a fresh read, up to [`ATTEMPTS`] times. Calls for different owners never
//! touch each other's rules.

mod layout;
mod rules;

use std::collections::HashSet;
use std::fmt;

use layout::{Kind, Located, Owned, Skeleton};
use rules::{Batch, Listing};

use crate::forward::ForwardPlan;
use crate::isolation::IsoPlan;
use crate::model::{Family, MasqPlan, Tag};
use crate::ports::{MarkSpec, PortPlan};
use crate::runner::{Program, RunError};
use crate::{Backend, BackendKind, FirewallError, Owner, Plan, ReconcileReport, RuleKind, Target};

/// Prefix of the per-owner masquerade chains; the owner hash follows.
pub const CHAIN_PREFIX: &str = "BERTH-MASQ-";
/// Reads + batches per family and call before giving up on a table that keeps changing.
const ATTEMPTS: usize = 3;

/// Which iptables implementation the host's `iptables` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IptablesVariant {
    /// iptables-nft: the iptables syntax over nf_tables (`iptables -V` says `(nf_tables)`).
    NfTables,
    /// The x_tables kernel interface (`(legacy)`, or no variant for iptables < 1.8).
    Legacy,
}

impl fmt::Display for IptablesVariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IptablesVariant::NfTables => "nf_tables",
            IptablesVariant::Legacy => "legacy",
        })
    }
}

/// Errors of the `iptables` module.
#[derive(Debug, thiserror::Error)]
pub enum IptablesError {
    #[error("find {program} (searched PATH, /usr/sbin, /sbin, /usr/bin, /bin)")]
    NotFound { program: String },
    #[error("query the iptables variant")]
    Version(#[source] RunError),
    #[error("read the {family} {table} table")]
    Save {
        family: Family,
        table: &'static str,
        #[source]
        source: RunError,
    },
    #[error("list {family} {table} chain {chain}")]
    List {
        family: Family,
        table: &'static str,
        chain: String,
        #[source]
        source: RunError,
    },
    #[error("apply {family} iptables batch for {owner}")]
    Apply {
        owner: String,
        family: Family,
        #[source]
        source: RunError,
    },
    #[error("apply {family} iptables batch removing stale rules of network {network}")]
    Gc {
        network: String,
        family: Family,
        #[source]
        source: RunError,
    },
    #[error("rules of {owner} missing: {}", .missing.join("; "))]
    Missing { owner: String, missing: Vec<String> },
    #[error("a {family} helper thread panicked")]
    Panicked { family: Family },
}

/// The binaries of one family, of the detected variant.
#[derive(Debug)]
struct Tools {
    family: Family,
    /// `iptables` or `ip6tables`, for messages.
    name: &'static str,
    iptables: Program,
    save: Program,
    restore: Program,
}

#[derive(Debug)]
pub struct Iptables {
    variant: IptablesVariant,
    v4: Tools,
    v6: Tools,
}

impl Iptables {
    /// Finds `iptables`, asks it for its variant and picks the binaries of that variant, so
    /// rules never land in the other implementation's tables.
    pub fn detect() -> Result<Iptables, IptablesError> {
        let iptables = find("iptables")?;
        let variant = match variant_from_links(iptables.path()) {
            Some(variant) => variant,
            None => {
                let version = iptables
                    .run(&["-V"], None)
                    .map_err(IptablesError::Version)?;
                if version.contains("(nf_tables)") {
                    IptablesVariant::NfTables
                } else {
                    IptablesVariant::Legacy
                }
            }
        };
        Ok(Iptables {
            variant,
            v4: Tools::find(Family::V4, variant)?,
            v6: Tools::find(Family::V6, variant)?,
        })
    }

    fn tools(&self, family: Family) -> &Tools {
        match family {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }

    /// Runs `f` for both families at once (each on its own thread, which inherits the
    /// calling thread's network namespace) and returns the first error.
    fn both<T: Send>(
        &self,
        f: impl Fn(&Tools) -> Result<T, IptablesError> + Sync,
    ) -> Result<[T; 2], IptablesError> {
        let (v4, v6) = std::thread::scope(|scope| {
            let f = &f;
            let v6 = scope.spawn(move || f(&self.v6));
            let v4 = f(&self.v4);
            (v4, v6.join())
        });
        let v6 = v6.map_err(|_| IptablesError::Panicked { family: Family::V6 })?;
        Ok([v4?, v6?])
    }
}

impl Tools {
    fn find(family: Family, variant: IptablesVariant) -> Result<Tools, IptablesError> {
        let name = match family {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        };
        let pick = |verb: Option<&str>| {
            let verb = verb.map(|v| format!("-{v}")).unwrap_or_default();
            // The variant-suffixed names are unambiguous. iptables < 1.8 has no suffixes
            // and is always legacy; iptables-nft always installs its suffixed names.
            let suffixed = match variant {
                IptablesVariant::NfTables => format!("{name}-nft{verb}"),
                IptablesVariant::Legacy => format!("{name}-legacy{verb}"),
            };
            Program::find(&suffixed)
                .or_else(|| match variant {
                    IptablesVariant::Legacy => Program::find(&format!("{name}{verb}")),
                    IptablesVariant::NfTables => None,
                })
                .ok_or(IptablesError::NotFound { program: suffixed })
        };
        Ok(Tools {
            family,
            name,
            iptables: pick(None)?,
            save: pick(Some("save"))?,
            restore: pick(Some("restore"))?,
        })
    }

    fn save(&self, table: &'static str) -> Result<Listing, IptablesError> {
        self.save
            .run(&["-t", table], None)
            .map(|text| Listing::parse(&text))
            .map_err(|source| IptablesError::Save {
                family: self.family,
                table,
                source,
            })
    }

    /// `-S <chain>`: just that chain (cost independent of the rest of the table), or `None`
    /// if it does not exist.
    fn list(&self, table: &'static str, chain: &str) -> Result<Option<Listing>, IptablesError> {
        match self.iptables.run(&["-w", "-t", table, "-S", chain], None) {
            Ok(text) => Ok(Some(Listing::parse(&text))),
            Err(e) if is_no_chain(&e) => Ok(None),
            Err(source) => Err(IptablesError::List {
                family: self.family,
                table,
                chain: chain.to_owned(),
                source,
            }),
        }
    }

    fn restore(&self, table: &str, batch: &Batch) -> Result<(), RunError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.restore
            .run(&["--noflush", "-w"], Some(&batch.text(table)))
            .map(drop)
    }

    fn apply_err(&self, what: &str) -> impl Fn(RunError) -> IptablesError + '_ {
        let owner = what.to_owned();
        move |source| IptablesError::Apply {
            owner: owner.clone(),
            family: self.family,
            source,
        }
    }

    // ---- per-owner operations ----

    /// ADD: the fast batch, else read the table and replace the owner's rules.
    fn add(&self, owned: &Owned, skeleton: &Skeleton) -> Result<(), IptablesError> {
        let mut fast = Batch::default();
        fast.new_chain(&owned.chain);
        for spec in &owned.body {
            fast.append(&owned.chain, spec);
        }
        for (chain, spec) in &owned.entries {
            fast.append(chain, spec);
        }
        if self.restore(owned.table, &fast).is_ok() {
            return Ok(());
        }
        self.converge(owned.table, |table| {
            let mut batch = skeleton_batch(table, skeleton);
            batch.extend(replace_batch(table, owned));
            (batch, ())
        })
        .map_err(|e| e.apply(self, &owned.what))
    }

    /// DEL: `fast` entries (derived from the request) if given; else, and if that fails,
    /// find the owner's rules by listing its entry chains.
    fn del(&self, loc: &Located, fast: Option<&Owned>) -> Result<(), IptablesError> {
        if let Some(owned) = fast {
            let mut batch = Batch::default();
            for (chain, spec) in &owned.entries {
                batch.delete(chain, spec);
            }
            batch.flush(&owned.chain);
            batch.delete_chain(&owned.chain);
            if self.restore(loc.table, &batch).is_ok() {
                return Ok(());
            }
        }
        for _ in 0..ATTEMPTS {
            // The entries first: when there are some, the chain exists too.
            let mut batch = Batch::default();
            let mut found = false;
            for chain in &loc.entry_chains {
                let Some(listing) = self.list(loc.table, chain)? else {
                    continue;
                };
                for rule in listing.rules_in(chain) {
                    if rule.comment.as_deref() == Some(&loc.comment)
                        || rule.target.as_deref() == Some(&loc.chain)
                    {
                        batch.delete(chain, &rule.spec);
                        found = true;
                    }
                }
            }
            if !found && self.list(loc.table, &loc.chain)?.is_none() {
                // No chain, hence (the kernel keeps references) no rule jumping to it.
                return Ok(());
            }
            batch.flush(&loc.chain);
            batch.delete_chain(&loc.chain);
            if self.restore(loc.table, &batch).is_ok() {
                return Ok(());
            }
        }
        // A jump from outside the expected chains (edited by hand?): read the whole table.
        self.converge(loc.table, |table| (remove_batch(table, loc), ()))
            .map_err(|e| e.apply(self, &loc.what))
    }

    /// Read, plan, apply; on a failed batch read again. Returns what `plan` computed.
    fn converge<T>(
        &self,
        table: &'static str,
        mut plan: impl FnMut(&Listing) -> (Batch, T),
    ) -> Result<T, Converge> {
        let mut attempt = 1;
        loop {
            let listing = self.save(table).map_err(Converge::Read)?;
            let (batch, value) = plan(&listing);
            match self.restore(table, &batch) {
                Ok(()) => return Ok(value),
                Err(_) if attempt < ATTEMPTS => attempt += 1,
                Err(e) => return Err(Converge::Apply(e)),
            }
        }
    }
}

/// Failure of [`Tools::converge`], before the caller names the operation.
enum Converge {
    Read(IptablesError),
    Apply(RunError),
}

impl Converge {
    fn apply(self, tools: &Tools, what: &str) -> IptablesError {
        match self {
            Converge::Read(e) => e,
            Converge::Apply(e) => tools.apply_err(what)(e),
        }
    }
}

/// What the skeleton lacks in `table`: `-N` for missing chains (fails if a concurrent call
/// created them meanwhile: the retry sees them), then missing rules.
fn skeleton_batch(table: &Listing, skeleton: &Skeleton) -> Batch {
    let mut batch = Batch::default();
    for chain in &skeleton.chains {
        if !table.has_chain(chain) {
            batch.new_chain(chain);
        }
    }
    // Rules at the top keep the skeleton's order: a missing one goes right after the last
    // wanted one before it that is there (or was just inserted), else at the very top.
    let mut chains: Vec<&str> = Vec::new();
    for (chain, _, first) in &skeleton.rules {
        if *first && !chains.contains(&chain.as_str()) {
            chains.push(chain);
        }
    }
    for chain in chains {
        let mut current: Vec<&str> = table.rules_in(chain).map(|r| r.spec.as_str()).collect();
        let mut after: usize = 0;
        for (_, spec, _) in skeleton.rules.iter().filter(|r| r.2 && r.0 == chain) {
            match current.iter().position(|c| *c == spec.as_str()) {
                Some(i) => after = after.max(i + 1),
                None => {
                    batch.insert_at(chain, after + 1, spec);
                    current.insert(after, spec);
                    after += 1;
                }
            }
        }
    }
    for (chain, spec, _) in skeleton.rules.iter().filter(|r| !r.2) {
        if !table.rules_in(chain).any(|r| r.spec == *spec) {
            batch.append(chain, spec);
        }
    }
    batch
}

/// The owner's rules as `owned` says, from whatever `table` has: the chain rewritten if its
/// body differs, stale entries deleted, missing ones appended. Empty if all is in place.
fn replace_batch(table: &Listing, owned: &Owned) -> Batch {
    let mut batch = Batch::default();
    let body: Vec<&str> = table.body(&owned.chain);
    if !table.has_chain(&owned.chain)
        || !body
            .iter()
            .copied()
            .eq(owned.body.iter().map(String::as_str))
    {
        batch.declare(&owned.chain);
        for spec in &owned.body {
            batch.append(&owned.chain, spec);
        }
    }
    for chain in owned.entry_chains() {
        let wanted: Vec<&str> = owned
            .entries
            .iter()
            .filter(|(c, _)| c == chain)
            .map(|(_, s)| s.as_str())
            .collect();
        let existing: Vec<&str> = table
            .rules_in(chain)
            .filter(|r| {
                r.comment.as_deref() == Some(&owned.comment)
                    || r.target.as_deref() == Some(&owned.chain)
            })
            .map(|r| r.spec.as_str())
            .collect();
        if owned.exact {
            let mut found = vec![false; wanted.len()];
            for spec in &existing {
                match wanted.iter().position(|w| w == spec) {
                    Some(i) if !found[i] => found[i] = true,
                    _ => batch.delete(chain, spec),
                }
            }
            for (spec, _) in wanted.iter().zip(&found).filter(|(_, f)| !**f) {
                batch.append(chain, spec);
            }
        } else if existing.len() != wanted.len() || !batch.is_empty() {
            for spec in &existing {
                batch.delete(chain, spec);
            }
            for spec in &wanted {
                batch.append(chain, spec);
            }
        }
    }
    // Entries of this owner left in other chains (an older bucket layout) go too.
    for rule in table.jumps_to(&owned.chain) {
        if !owned.entry_chains().contains(&rule.chain.as_str()) {
            batch.delete(&rule.chain, &rule.spec);
        }
    }
    batch
}

/// Everything of `loc` in `table`: its entries anywhere, then its chain.
fn remove_batch(table: &Listing, loc: &Located) -> Batch {
    let mut batch = Batch::default();
    for rule in &table.rules {
        if rule.chain != loc.chain
            && (rule.target.as_deref() == Some(&loc.chain)
                || (rule.comment.as_deref() == Some(&loc.comment)
                    && loc.entry_chains.contains(&rule.chain)))
        {
            batch.delete(&rule.chain, &rule.spec);
        }
    }
    if table.has_chain(&loc.chain) {
        batch.flush(&loc.chain);
        batch.delete_chain(&loc.chain);
    }
    batch
}

/// What of `owned` is missing from `table`, for CHECK's message.
fn missing(tools: &Tools, table: &Listing, owned: &Owned, skeleton: &Skeleton) -> Vec<String> {
    let mut missing = Vec::new();
    let t = owned.table;
    for chain in &skeleton.chains {
        if !table.has_chain(chain) {
            missing.push(format!("{} -t {t} chain {chain}", tools.name));
        }
    }
    for (chain, spec, _) in &skeleton.rules {
        if !table.rules_in(chain).any(|r| r.spec == *spec) {
            missing.push(format!("{} -t {t} -A {chain} {spec}", tools.name));
        }
    }
    if !table.has_chain(&owned.chain) {
        missing.push(format!("{} -t {t} chain {}", tools.name, owned.chain));
    }
    for spec in &owned.body {
        if !table.rules_in(&owned.chain).any(|r| r.spec == *spec) {
            missing.push(format!("{} -t {t} -A {} {spec}", tools.name, owned.chain));
        }
    }
    for (chain, spec) in &owned.entries {
        let present = if owned.exact {
            table.rules_in(chain).any(|r| r.spec == *spec)
        } else {
            table
                .rules_in(chain)
                .filter(|r| r.target.as_deref() == Some(&owned.chain))
                .count()
                >= owned.entries.iter().filter(|(c, _)| c == chain).count()
        };
        if !present {
            missing.push(format!("{} -t {t} -A {chain} {spec}", tools.name));
        }
    }
    missing
}

/// Owners of `kind` in `table` whose comment parses with `parse` and who `stale` says go.
fn stale_chains<T>(
    table: &Listing,
    kind: &Kind,
    parse: impl Fn(&str) -> Option<T>,
    stale: impl Fn(&T) -> bool,
) -> Vec<(String, T)> {
    let mut out: Vec<(String, T)> = Vec::new();
    for rule in &table.rules {
        let Some(owner) = rule.comment.as_deref().and_then(&parse) else {
            continue;
        };
        let chain = if rule.chain.starts_with(kind.chain_prefix) {
            rule.chain.clone()
        } else {
            match rule.target.as_deref() {
                Some(t) if t.starts_with(kind.chain_prefix) => t.to_owned(),
                _ => continue,
            }
        };
        if stale(&owner) && !out.iter().any(|(c, _)| *c == chain) {
            out.push((chain, owner));
        }
    }
    out
}

fn nat_bits(plans: &[&PortPlan]) -> Vec<u8> {
    let mut bits: Vec<u8> = plans
        .iter()
        .filter(|p| p.families.iter().any(|f| !f.masq_sources.is_empty()))
        .filter_map(|p| match p.mark {
            MarkSpec::Bit(bit) => Some(bit),
            MarkSpec::ExternalChain(_) => None,
        })
        .collect();
    bits.sort_unstable();
    bits.dedup();
    bits
}

impl Backend for Iptables {
    fn kind(&self) -> BackendKind {
        BackendKind::Iptables
    }

    fn iptables_variant(&self) -> Option<IptablesVariant> {
        Some(self.variant)
    }

    /// Both families' tables can be listed with the detected variant's tools.
    fn status(&self) -> Result<(), FirewallError> {
        self.both(|t| t.list("nat", "POSTROUTING").map(drop))?;
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
        let mut report = ReconcileReport::default();
        let ports: Vec<&PortPlan> = desired
            .iter()
            .filter_map(|d| match d {
                Plan::Ports(p) => Some(p),
                _ => None,
            })
            .collect();
        let nat_skeleton = layout::nat_skeleton(&nat_bits(&ports));
        let admins = admin_chains(desired);
        for family in Family::ALL {
            let tools = self.tools(family);
            let mut nat_owned = Vec::new();
            let mut filter_owned = Vec::new();
            for d in desired {
                match d {
                    Plan::Masquerade(m) => nat_owned.extend(
                        m.families
                            .iter()
                            .filter(|f| f.family == family)
                            .map(|f| layout::masq_owned(f, &m.tag)),
                    ),
                    Plan::Ports(p) => nat_owned.extend(
                        p.families
                            .iter()
                            .filter(|f| f.family == family)
                            .map(|f| layout::dnat_owned(f, &p.tag, &p.mark)),
                    ),
                    Plan::Isolation(i) => filter_owned.push(layout::iso_owned(i)),
                    Plan::Forward(f) => {
                        let o = layout::forward_owned(family, &f.addresses, &f.tag);
                        if !o.entries.is_empty() {
                            filter_owned.push(o);
                        }
                    }
                }
            }
            let filter_skeleton = layout::filter_skeleton(&admins);
            for (table, owned, skeleton) in [
                ("nat", &nat_owned, &nat_skeleton),
                ("filter", &filter_owned, &filter_skeleton),
            ] {
                if owned.is_empty() {
                    continue;
                }
                let (repaired, skeleton_fixed) = tools
                    .converge(table, |listing| {
                        let mut batch = skeleton_batch(listing, skeleton);
                        let fixed = !batch.is_empty();
                        let mut repaired = Vec::new();
                        for o in owned.iter() {
                            let b = replace_batch(listing, o);
                            if !b.is_empty() {
                                repaired.push(format!("{} ({family})", o.what));
                                batch.extend(b);
                            }
                        }
                        (batch, (repaired, fixed))
                    })
                    .map_err(|e| e.apply(tools, "reconcile"))?;
                report.repaired.extend(repaired);
                report.skeleton_repaired |= skeleton_fixed;
            }
        }
        report.repaired.sort();
        report.repaired.dedup();
        Ok(report)
    }
}

impl Iptables {
    fn add_masquerade(&self, plan: &MasqPlan) -> Result<(), FirewallError> {
        let skeleton = layout::nat_skeleton(&[]);
        for fm in &plan.families {
            let owned = layout::masq_owned(fm, &plan.tag);
            self.tools(fm.family).add(&owned, &skeleton)?;
        }
        Ok(())
    }

    fn del_masquerade(&self, tag: &Tag) -> Result<(), FirewallError> {
        let loc = layout::locate(&layout::MASQ, tag);
        self.both(|t| t.del(&loc, None))?;
        Ok(())
    }

    fn check_masquerade(&self, plan: &MasqPlan) -> Result<(), FirewallError> {
        let skeleton = layout::nat_skeleton(&[]);
        let mut all = Vec::new();
        for fm in &plan.families {
            let tools = self.tools(fm.family);
            let table = tools.save("nat")?;
            let owned = layout::masq_owned(fm, &plan.tag);
            all.extend(missing(tools, &table, &owned, &skeleton));
        }
        missing_result(&plan.tag.to_string(), all)
    }

    fn gc_masquerade(
        &self,
        network: &str,
        keep: &HashSet<Tag>,
    ) -> Result<Vec<Owner>, FirewallError> {
        self.gc_kind(&layout::MASQ, network, keep)
    }

    fn add_ports(&self, plan: &PortPlan) -> Result<(), FirewallError> {
        let skeleton = layout::nat_skeleton(&nat_bits(&[plan]));
        let owned: Vec<(Family, Owned)> = plan
            .families
            .iter()
            .map(|fp| (fp.family, layout::dnat_owned(fp, &plan.tag, &plan.mark)))
            .collect();
        self.both(|t| match owned.iter().find(|(f, _)| *f == t.family) {
            Some((_, o)) => t.add(o, &skeleton),
            None => Ok(()),
        })?;
        Ok(())
    }

    fn del_ports(&self, tag: &Tag, plan: Option<&PortPlan>) -> Result<(), FirewallError> {
        let loc = layout::locate(&layout::DNAT, tag);
        let owned: Vec<(Family, Owned)> = plan
            .map(|p| {
                p.families
                    .iter()
                    .map(|fp| (fp.family, layout::dnat_owned(fp, &p.tag, &p.mark)))
                    .collect()
            })
            .unwrap_or_default();
        self.both(|t| {
            let fast = owned.iter().find(|(f, _)| *f == t.family).map(|(_, o)| o);
            t.del(&loc, fast)
        })?;
        Ok(())
    }

    fn check_ports(&self, plan: &PortPlan) -> Result<(), FirewallError> {
        let skeleton = layout::nat_skeleton(&nat_bits(&[plan]));
        let mut all = Vec::new();
        for fp in &plan.families {
            let tools = self.tools(fp.family);
            let table = tools.save("nat")?;
            let owned = layout::dnat_owned(fp, &plan.tag, &plan.mark);
            all.extend(missing(tools, &table, &owned, &skeleton));
            if let MarkSpec::ExternalChain(chain) = &plan.mark {
                if !fp.masq_sources.is_empty() && !table.has_chain(chain) {
                    all.push(format!("{} -t nat chain {chain}", tools.name));
                }
            }
        }
        missing_result(&plan.tag.to_string(), all)
    }

    fn gc_ports(&self, network: &str, keep: &HashSet<Tag>) -> Result<Vec<Owner>, FirewallError> {
        self.gc_kind(&layout::DNAT, network, keep)
    }

    fn add_isolation(&self, plan: &IsoPlan) -> Result<(), FirewallError> {
        let owned = layout::iso_owned(plan);
        let skeleton = layout::filter_skeleton(&[]);
        self.both(|t| {
            // The common case: the network is already isolated. One `-S` tells.
            if let Some(listing) = t.list("filter", &owned.chain)? {
                if listing.body(&owned.chain) == owned.body {
                    return Ok(());
                }
            }
            t.converge("filter", |table| {
                let mut batch = skeleton_batch(table, &skeleton);
                batch.extend(replace_batch(table, &owned));
                (batch, ())
            })
            .map_err(|e| e.apply(t, &owned.what))
        })?;
        Ok(())
    }

    fn check_isolation(&self, plan: &IsoPlan) -> Result<(), FirewallError> {
        let owned = layout::iso_owned(plan);
        let skeleton = layout::filter_skeleton(&[]);
        let all = self.both(|t| {
            let table = t.save("filter")?;
            Ok(missing(t, &table, &owned, &skeleton))
        })?;
        missing_result(&plan.to_string(), all.concat())
    }

    fn gc_isolation(&self, network: &str, remove: bool) -> Result<bool, FirewallError> {
        if !remove {
            return Ok(false);
        }
        let removed = self.both(|t| {
            t.converge("filter", |table| {
                let stale = stale_chains(table, &layout::ISO, IsoPlan::parse, |p| {
                    p.network() == network
                });
                let mut batch = Batch::default();
                for (chain, plan) in &stale {
                    let mut loc = layout::iso_owned(plan).located();
                    loc.chain.clone_from(chain);
                    batch.extend(remove_batch(table, &loc));
                }
                (batch, !stale.is_empty())
            })
            .map_err(|e| match e {
                Converge::Read(e) => e,
                Converge::Apply(source) => IptablesError::Gc {
                    network: network.to_owned(),
                    family: t.family,
                    source,
                },
            })
        })?;
        Ok(removed.iter().any(|r| *r))
    }

    fn add_forward(&self, plan: &ForwardPlan) -> Result<(), FirewallError> {
        let skeleton = layout::filter_skeleton(&[plan.admin_chain.as_str()]);
        self.both(|t| {
            let owned = layout::forward_owned(t.family, &plan.addresses, &plan.tag);
            if owned.entries.is_empty() {
                return Ok(());
            }
            t.add(&owned, &skeleton)
        })?;
        Ok(())
    }

    fn del_forward(&self, tag: &Tag, plan: Option<&ForwardPlan>) -> Result<(), FirewallError> {
        let loc = layout::locate(&layout::FWD, tag);
        self.both(|t| {
            let fast = plan
                .map(|p| layout::forward_owned(t.family, &p.addresses, &p.tag))
                .filter(|o| !o.entries.is_empty());
            t.del(&loc, fast.as_ref())
        })?;
        Ok(())
    }

    fn check_forward(&self, plan: &ForwardPlan) -> Result<(), FirewallError> {
        let skeleton = layout::filter_skeleton(&[plan.admin_chain.as_str()]);
        let mut all = Vec::new();
        for family in Family::ALL {
            let owned = layout::forward_owned(family, &plan.addresses, &plan.tag);
            if owned.entries.is_empty() {
                continue;
            }
            let tools = self.tools(family);
            let table = tools.save("filter")?;
            all.extend(missing(tools, &table, &owned, &skeleton));
        }
        missing_result(&plan.tag.to_string(), all)
    }

    fn gc_forward(&self, network: &str, keep: &HashSet<Tag>) -> Result<Vec<Owner>, FirewallError> {
        self.gc_kind(&layout::FWD, network, keep)
    }
}

impl Iptables {
    fn gc_kind(
        &self,
        kind: &Kind,
        network: &str,
        keep: &HashSet<Tag>,
    ) -> Result<Vec<Owner>, FirewallError> {
        let removed = self.both(|t| {
            t.converge(kind.table, |table| {
                let stale = stale_chains(table, kind, Tag::parse, |tag| {
                    tag.network() == network && !keep.contains(tag)
                });
                let mut batch = Batch::default();
                for (chain, tag) in &stale {
                    let mut loc = layout::locate(kind, tag);
                    loc.chain.clone_from(chain);
                    batch.extend(remove_batch(table, &loc));
                }
                (batch, stale.into_iter().map(|(_, t)| t).collect::<Vec<_>>())
            })
            .map_err(|e| match e {
                Converge::Read(e) => e,
                Converge::Apply(source) => IptablesError::Gc {
                    network: network.to_owned(),
                    family: t.family,
                    source,
                },
            })
        })?;
        let mut owners: Vec<Owner> = Vec::new();
        for tag in removed.into_iter().flatten() {
            if !owners.contains(tag.owner()) {
                owners.push(tag.owner().clone());
            }
        }
        Ok(owners)
    }
}

/// The admin chains the forward plans among `desired` name, each once.
fn admin_chains(desired: &[Plan]) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for d in desired {
        if let Plan::Forward(f) = d {
            if !out.contains(&f.admin_chain.as_str()) {
                out.push(&f.admin_chain);
            }
        }
    }
    out
}

fn missing_result(owner: &str, missing: Vec<String>) -> Result<(), FirewallError> {
    if missing.is_empty() {
        Ok(())
    } else {
        Err(IptablesError::Missing {
            owner: owner.to_owned(),
            missing,
        }
        .into())
    }
}

/// iptables' message for a chain that does not exist (`-S`). iptables-nft 1.8.9 calls a
/// missing chain "incompatible" (it looks it up in a table cache without it); a chain of ours
/// that nft made genuinely incompatible would have to be edited by hand.
fn is_no_chain(e: &RunError) -> bool {
    matches!(e, RunError::Failed { stderr, .. }
        if stderr.contains("No chain/target/match by that name")
            || stderr.contains("does not exist")
            || stderr.contains("is incompatible, use 'nft' tool"))
}

/// The variant from the name `iptables` resolves to, without running it (a process per
/// plugin call is measurable): Debian-style installs link `iptables` through
/// `/etc/alternatives` to `iptables-nft` or `iptables-legacy` (then to
/// `xtables-{nft,legacy}-multi`). `None` when the links say nothing (a wrapper script, an
/// unsuffixed binary): then ask `iptables -V`.
fn variant_from_links(path: &std::path::Path) -> Option<IptablesVariant> {
    let mut cur = path.to_path_buf();
    for _ in 0..8 {
        let name = cur.file_name()?.to_string_lossy().into_owned();
        if name.contains("-nft") {
            return Some(IptablesVariant::NfTables);
        }
        if name.contains("-legacy") {
            return Some(IptablesVariant::Legacy);
        }
        let target = std::fs::read_link(&cur).ok()?;
        cur = match cur.parent() {
            Some(dir) if target.is_relative() => dir.join(target),
            _ => target,
        };
    }
    None
}

fn find(program: &str) -> Result<Program, IptablesError> {
    Program::find(program).ok_or_else(|| IptablesError::NotFound {
        program: program.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Masquerade, Owner};

    fn tag() -> Tag {
        Tag::new(&Owner {
            network: "net1".into(),
            container_id: "ctr1".into(),
            ifname: "eth0".into(),
        })
        .unwrap()
    }

    fn owned() -> Owned {
        let plan = MasqPlan::new(&Masquerade {
            owner: tag().owner().clone(),
            sources: vec!["198.18.0.5/24".parse().unwrap()],
        })
        .unwrap();
        layout::masq_owned(&plan.families[0], &plan.tag)
    }

    fn listing_with(o: &Owned, extra: &str) -> Listing {
        let mut text = format!(":{} - [0:0]\n", o.chain);
        for (chain, spec) in &o.entries {
            text.push_str(&format!(":{chain} - [0:0]\n-A {chain} {spec}\n"));
        }
        for spec in &o.body {
            text.push_str(&format!("-A {} {spec}\n", o.chain));
        }
        text.push_str(extra);
        Listing::parse(&text)
    }

    /// A rule at the top goes after the skeleton rules before it that are there: the accept
    /// chain lands after the isolation jump whichever came first, above the host's rules.
    #[test]
    fn top_rules_keep_the_skeleton_order() {
        let skeleton = layout::filter_skeleton(&["CNI-ADMIN"]);
        let inserts = |listing: &str| -> Vec<String> {
            skeleton_batch(&Listing::parse(listing), &skeleton)
                .text("filter")
                .lines()
                .filter(|l| l.starts_with("-I FORWARD"))
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(
            inserts(":FORWARD DROP [0:0]\n-A FORWARD -j DOCKER-USER\n"),
            [
                "-I FORWARD 1 -m comment --comment berth -j BERTH-ISOLATION",
                "-I FORWARD 2 -m comment --comment berth -j BERTH-FORWARD",
            ]
        );
        assert_eq!(
            inserts(
                ":FORWARD DROP [0:0]\n-A FORWARD -m comment --comment berth -j BERTH-ISOLATION\n-A FORWARD -j DOCKER-USER\n"
            ),
            ["-I FORWARD 2 -m comment --comment berth -j BERTH-FORWARD"]
        );
    }

    #[test]
    fn variant_from_symlinks() {
        let dir = tempfile_dir();
        let link = |name: &str, to: &str| {
            std::os::unix::fs::symlink(to, dir.join(name)).unwrap();
            dir.join(name)
        };
        std::fs::write(dir.join("xtables-nft-multi"), "").unwrap();
        link("iptables-nft", "xtables-nft-multi");
        let alt = link("alt-iptables", "iptables-nft");
        let top = link("iptables", alt.to_str().unwrap());
        assert_eq!(variant_from_links(&top), Some(IptablesVariant::NfTables));
        std::fs::write(dir.join("plain"), "").unwrap();
        assert_eq!(variant_from_links(&dir.join("plain")), None);
        let legacy = link("iptables2", "xtables-legacy-multi");
        assert_eq!(variant_from_links(&legacy), Some(IptablesVariant::Legacy));
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("berth-fw-links-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn replace_is_empty_when_everything_is_in_place() {
        let o = owned();
        assert!(replace_batch(&listing_with(&o, ""), &o).is_empty());
        assert!(!replace_batch(&Listing::default(), &o).is_empty());
    }

    #[test]
    fn replace_drops_duplicates_and_stale_entries() {
        let o = owned();
        let (bucket, spec) = &o.entries[0];
        let stale = format!(
            "-A {bucket} -s 198.18.0.9/32 -m comment --comment \"{}\" -j {}\n-A {bucket} {spec}\n",
            o.comment, o.chain
        );
        let batch = replace_batch(&listing_with(&o, &stale), &o);
        let text = batch.text("nat");
        assert!(text.contains("-D"), "{text}");
        assert!(text.contains("198.18.0.9/32"), "{text}");
        assert_eq!(text.matches("-D").count(), 2, "{text}");
        assert!(!text.contains("-A"), "{text}");
    }

    #[test]
    fn removal_finds_entries_and_the_chain() {
        let o = owned();
        let batch = remove_batch(&listing_with(&o, ""), &o.located());
        assert_eq!(
            batch.text("nat"),
            format!(
                "*nat\n-D {} {}\n-F {c}\n-X {c}\nCOMMIT\n",
                o.entries[0].0,
                o.entries[0].1,
                c = o.chain
            )
        );
    }

    #[test]
    fn stale_owners_come_from_our_chains_only() {
        let o = owned();
        let l = listing_with(
            &o,
            "-A POSTROUTING -m comment --comment \"berth net1 ctr9 eth0\" -j ACCEPT\n",
        );
        let stale = stale_chains(&l, &layout::MASQ, Tag::parse, |t| t.network() == "net1");
        assert_eq!(stale.len(), 1);
        assert_eq!(stale[0].0, o.chain);
        assert!(stale_chains(&l, &layout::MASQ, Tag::parse, |t| t.network() == "x").is_empty());
    }

    #[test]
    fn skeleton_batch_creates_only_what_is_missing() {
        let sk = layout::nat_skeleton(&[]);
        let full = skeleton_batch(&Listing::default(), &sk);
        let text = full.text("nat");
        assert!(text.contains("-N BERTH-HOSTPORTS"));
        assert!(text.contains("-I POSTROUTING 1 -m comment --comment berth -j BERTH-POSTROUTING"));
        let mut present = String::new();
        for c in &sk.chains {
            present.push_str(&format!(":{c} - [0:0]\n"));
        }
        for (c, s, _) in &sk.rules {
            present.push_str(&format!("-A {c} {s}\n"));
        }
        assert!(skeleton_batch(&Listing::parse(&present), &sk).is_empty());
    }
}
