//! The iptables backend.
//!
//! Per owner, in the `nat` table of each family it has sources in:
//!
//! ```text
//! :BERTH-MASQ-<hash> - [0:0]
//! -A BERTH-MASQ-<hash> -d 198.18.0.0/24 -m comment --comment "berth <net> <id> <if>" -j ACCEPT
//! -A BERTH-MASQ-<hash> ! -d 224.0.0.0/4 -m comment --comment "berth <net> <id> <if>" -j MASQUERADE
//! -A POSTROUTING -s 198.18.0.5/32 -m comment --comment "berth <net> <id> <if>" -j BERTH-MASQ-<hash>
//! ```
//!
//! Every call reads the table once (`iptables-save -t nat`) and applies at most one batch per
//! family (`iptables-restore --noflush -w`), which the kernel commits atomically. Built-in
//! chains are only ever appended to or deleted from by exact rule; their policies are never
//! written. Declaring our chain in a `--noflush` batch (`:CHAIN - [0:0]`) creates it or, if it
//! exists, flushes it, so ADD rewrites the chain body without a window where it is empty.
//!
//! The read and the write are two commands, so a concurrent call for the same owner can
//! change the table in between; a batch that then fails (e.g. deleting a rule that is gone)
//! is recomputed from a fresh read, up to [`ATTEMPTS`] times.

use std::collections::HashSet;
use std::fmt;

use ipnetwork::IpNetwork;

use crate::model::{Family, FamilyMasq, MasqPlan, Tag};
use crate::runner::{Program, RunError};
use crate::{Backend, BackendKind, FirewallError, Owner};

/// Prefix of the per-owner masquerade chains; the owner hash follows.
pub const CHAIN_PREFIX: &str = "BERTH-MASQ-";
const POSTROUTING: &str = "POSTROUTING";
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
    #[error("read the {family} nat table")]
    Save {
        family: Family,
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
    #[error("apply {family} iptables batch removing stale masquerade rules of network {network}")]
    Gc {
        network: String,
        family: Family,
        #[source]
        source: RunError,
    },
    #[error("masquerade rules of {owner} missing: {}", .missing.join("; "))]
    Missing { owner: String, missing: Vec<String> },
}

/// The save/restore pair of one family, of the detected variant.
#[derive(Debug)]
struct Tools {
    family: Family,
    /// `iptables` or `ip6tables`, for messages.
    name: &'static str,
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
    /// Finds `iptables`, asks it for its variant and picks the save/restore binaries of that
    /// variant, so rules never land in the other implementation's tables.
    pub fn detect() -> Result<Iptables, IptablesError> {
        let iptables = find("iptables")?;
        let version = iptables
            .run(&["-V"], None)
            .map_err(IptablesError::Version)?;
        let variant = if version.contains("(nf_tables)") {
            IptablesVariant::NfTables
        } else {
            IptablesVariant::Legacy
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
}

impl Backend for Iptables {
    fn kind(&self) -> BackendKind {
        BackendKind::Iptables
    }

    fn iptables_variant(&self) -> Option<IptablesVariant> {
        Some(self.variant)
    }

    /// Both families' nat tables can be read with the detected variant's tools.
    fn status(&self) -> Result<(), FirewallError> {
        for tools in [&self.v4, &self.v6] {
            tools.save()?;
        }
        Ok(())
    }

    fn add_masquerade(&self, plan: &MasqPlan) -> Result<(), FirewallError> {
        let tag = &plan.tag;
        let chain = tag.chain_name(CHAIN_PREFIX);
        for fm in &plan.families {
            let tools = self.tools(fm.family);
            let body = chain_body(fm, tag);
            let jumps = jump_rules(fm, tag, &chain);
            tools.apply(
                |nat| {
                    // Keep the first copy of each wanted jump; any other jump to our chain
                    // (an old address, a duplicate) goes.
                    let mut found = vec![false; jumps.len()];
                    let mut stale = Vec::new();
                    for saved in nat.jumps_to(&chain) {
                        match jumps.iter().position(|j| *j == saved.rule) {
                            Some(i) if !found[i] => found[i] = true,
                            _ => stale.push(saved),
                        }
                    }
                    let body_ok = nat.chains.contains(&chain)
                        && nat.rules_in(&chain).map(|s| &s.rule).eq(body.iter());
                    let mut batch = Batch::default();
                    if body_ok && stale.is_empty() && found.iter().all(|f| *f) {
                        return (batch, ());
                    }
                    batch.declare(&chain);
                    for rule in &body {
                        batch.append(&chain, rule);
                    }
                    for saved in stale {
                        batch.delete(POSTROUTING, &saved.spec);
                    }
                    for (jump, _) in jumps.iter().zip(&found).filter(|(_, f)| !**f) {
                        batch.append(POSTROUTING, jump);
                    }
                    (batch, ())
                },
                |source| IptablesError::Apply {
                    owner: tag.to_string(),
                    family: fm.family,
                    source,
                },
            )?;
        }
        Ok(())
    }

    fn del_masquerade(&self, tag: &Tag) -> Result<(), FirewallError> {
        // The sources are unknown here: look in both families.
        for tools in [&self.v4, &self.v6] {
            tools.apply(
                |nat| {
                    let mut batch = Batch::default();
                    batch.remove_owner(nat, tag);
                    (batch, ())
                },
                |source| IptablesError::Apply {
                    owner: tag.to_string(),
                    family: tools.family,
                    source,
                },
            )?;
        }
        Ok(())
    }

    fn check_masquerade(&self, plan: &MasqPlan) -> Result<(), FirewallError> {
        let tag = &plan.tag;
        let chain = tag.chain_name(CHAIN_PREFIX);
        let mut missing = Vec::new();
        for fm in &plan.families {
            let tools = self.tools(fm.family);
            let nat = tools.save()?;
            if !nat.chains.contains(&chain) {
                missing.push(format!("{} -t nat chain {chain}", tools.name));
            }
            let body = chain_body(fm, tag).into_iter().map(|r| (chain.as_str(), r));
            let jumps = jump_rules(fm, tag, &chain)
                .into_iter()
                .map(|r| (POSTROUTING, r));
            for (in_chain, rule) in body.chain(jumps) {
                if !nat.rules_in(in_chain).any(|s| s.rule == rule) {
                    missing.push(format!("{} -t nat -A {in_chain} {rule}", tools.name));
                }
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(IptablesError::Missing {
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
        let mut removed: Vec<Owner> = Vec::new();
        for tools in [&self.v4, &self.v6] {
            let stale = tools.apply(
                |nat| {
                    let stale = stale_owners(nat, network, keep);
                    let mut batch = Batch::default();
                    for tag in &stale {
                        batch.remove_owner(nat, tag);
                    }
                    (batch, stale)
                },
                |source| IptablesError::Gc {
                    network: network.to_owned(),
                    family: tools.family,
                    source,
                },
            )?;
            for tag in stale {
                if !removed.contains(tag.owner()) {
                    removed.push(tag.owner().clone());
                }
            }
        }
        Ok(removed)
    }
}

impl Tools {
    fn find(family: Family, variant: IptablesVariant) -> Result<Tools, IptablesError> {
        let name = match family {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        };
        let pick = |verb: &str| {
            // The variant-suffixed names are unambiguous. iptables < 1.8 has no suffixes
            // and is always legacy; iptables-nft always installs its suffixed names.
            let suffixed = match variant {
                IptablesVariant::NfTables => format!("{name}-nft-{verb}"),
                IptablesVariant::Legacy => format!("{name}-legacy-{verb}"),
            };
            Program::find(&suffixed)
                .or_else(|| match variant {
                    IptablesVariant::Legacy => Program::find(&format!("{name}-{verb}")),
                    IptablesVariant::NfTables => None,
                })
                .ok_or(IptablesError::NotFound { program: suffixed })
        };
        Ok(Tools {
            family,
            name,
            save: pick("save")?,
            restore: pick("restore")?,
        })
    }

    fn save(&self) -> Result<NatTable, IptablesError> {
        self.save
            .run(&["-t", "nat"], None)
            .map(|text| NatTable::parse(&text))
            .map_err(|source| IptablesError::Save {
                family: self.family,
                source,
            })
    }

    /// Read, plan, apply; on a failed batch read again and re-plan (see the module docs).
    /// An empty batch is not applied. Returns what `plan` computed alongside the applied batch.
    fn apply<T>(
        &self,
        mut plan: impl FnMut(&NatTable) -> (Batch, T),
        err: impl Fn(RunError) -> IptablesError,
    ) -> Result<T, IptablesError> {
        let mut attempt = 1;
        loop {
            let nat = self.save()?;
            let (batch, value) = plan(&nat);
            if batch.is_empty() {
                return Ok(value);
            }
            match self
                .restore
                .run(&["--noflush", "-w"], Some(&batch.finish()))
            {
                Ok(_) => return Ok(value),
                Err(_) if attempt < ATTEMPTS => attempt += 1,
                Err(source) => return Err(err(source)),
            }
        }
    }
}

/// `-d <subnet> -j ACCEPT` per subnet, then `! -d <multicast> -j MASQUERADE`.
fn chain_body(fm: &FamilyMasq, tag: &Tag) -> Vec<Rule> {
    let comment = Some(tag.comment().to_owned());
    let mut rules: Vec<Rule> = fm
        .subnets
        .iter()
        .map(|subnet| Rule {
            dst: Some(*subnet),
            comment: comment.clone(),
            target: Some("ACCEPT".into()),
            ..Rule::default()
        })
        .collect();
    rules.push(Rule {
        dst: Some(fm.family.multicast()),
        not_dst: true,
        comment,
        target: Some("MASQUERADE".into()),
        ..Rule::default()
    });
    rules
}

/// `-s <ip> -j <chain>` in POSTROUTING per source.
fn jump_rules(fm: &FamilyMasq, tag: &Tag, chain: &str) -> Vec<Rule> {
    fm.sources
        .iter()
        .map(|ip| Rule {
            src: Some(IpNetwork::from(*ip)),
            comment: Some(tag.comment().to_owned()),
            target: Some(chain.to_owned()),
            ..Rule::default()
        })
        .collect()
}

/// Owners of `network`, not in `keep`, that have a chain or a jump in this table: found by the
/// comments on their rules, and only where the rule is one we make (inside the owner's chain,
/// or a POSTROUTING jump to it).
fn stale_owners(nat: &NatTable, network: &str, keep: &HashSet<Tag>) -> Vec<Tag> {
    let mut stale: Vec<Tag> = Vec::new();
    for saved in &nat.rules {
        let Some(tag) = saved.rule.comment.as_deref().and_then(Tag::parse) else {
            continue;
        };
        if tag.network() != network || keep.contains(&tag) || stale.contains(&tag) {
            continue;
        }
        let chain = tag.chain_name(CHAIN_PREFIX);
        if saved.chain == chain
            || (saved.chain == POSTROUTING && saved.rule.target.as_deref() == Some(&chain))
        {
            stale.push(tag);
        }
    }
    stale
}

/// An `iptables-restore --noflush` batch for the nat table.
#[derive(Debug, Default)]
struct Batch {
    lines: Vec<String>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Creates `chain`, or flushes it if it exists (`--noflush` semantics of a declaration).
    fn declare(&mut self, chain: &str) {
        self.lines.push(format!(":{chain} - [0:0]"));
    }

    fn append(&mut self, chain: &str, rule: &Rule) {
        self.lines.push(format!("-A {chain} {rule}"));
    }

    /// Deletes by the exact text iptables-save printed, so foreign formatting cannot make
    /// the spec miss.
    fn delete(&mut self, chain: &str, spec: &str) {
        self.lines.push(format!("-D {chain} {spec}"));
    }

    /// Deletes every jump to the owner's chain, then flushes and deletes the chain, as far
    /// as they exist.
    fn remove_owner(&mut self, nat: &NatTable, tag: &Tag) {
        let chain = tag.chain_name(CHAIN_PREFIX);
        for saved in nat.jumps_to(&chain) {
            self.delete(POSTROUTING, &saved.spec);
        }
        if nat.chains.contains(&chain) {
            self.lines.push(format!("-F {chain}"));
            self.lines.push(format!("-X {chain}"));
        }
    }

    fn finish(&self) -> String {
        let mut text = String::from("*nat\n");
        for line in &self.lines {
            text.push_str(line);
            text.push('\n');
        }
        text.push_str("COMMIT\n");
        text
    }
}

/// What `iptables-save -t nat` printed: chain names and `-A` rules in order.
#[derive(Debug, Default)]
struct NatTable {
    chains: HashSet<String>,
    rules: Vec<SavedRule>,
}

#[derive(Debug)]
struct SavedRule {
    chain: String,
    /// The rule as printed after `-A <chain> `.
    spec: String,
    rule: Rule,
}

impl NatTable {
    fn parse(text: &str) -> NatTable {
        let mut nat = NatTable::default();
        for line in text.lines().map(str::trim) {
            if let Some(decl) = line.strip_prefix(':') {
                let name = decl.split(' ').next().unwrap_or(decl);
                nat.chains.insert(name.to_owned());
            } else if let Some(rest) = line.strip_prefix("-A ") {
                let (chain, spec) = rest.split_once(' ').unwrap_or((rest, ""));
                nat.rules.push(SavedRule {
                    chain: chain.to_owned(),
                    spec: spec.to_owned(),
                    rule: Rule::parse(spec),
                });
            }
        }
        nat
    }

    fn rules_in<'a>(&'a self, chain: &'a str) -> impl Iterator<Item = &'a SavedRule> + 'a {
        self.rules.iter().filter(move |r| r.chain == chain)
    }

    fn jumps_to<'a>(&'a self, target: &'a str) -> impl Iterator<Item = &'a SavedRule> + 'a {
        self.rules_in(POSTROUTING)
            .filter(move |r| r.rule.target.as_deref() == Some(target))
    }
}

/// The parts of an iptables rule Berth writes; anything else a rule has lands in `other`, so
/// a rule with extra matches never equals one of ours.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Rule {
    src: Option<IpNetwork>,
    dst: Option<IpNetwork>,
    not_dst: bool,
    comment: Option<String>,
    target: Option<String>,
    other: Vec<String>,
}

impl Rule {
    /// Parses a rule spec as iptables-save prints it.
    fn parse(spec: &str) -> Rule {
        let mut rule = Rule::default();
        let mut tokens = tokenize(spec).into_iter();
        let mut negate = false;
        while let Some(token) = tokens.next() {
            if token == "!" {
                negate = true;
                continue;
            }
            let known = match (token.as_str(), negate) {
                ("-s" | "--source", false) => tokens
                    .next()
                    .and_then(|v| v.parse().ok())
                    .map(|net| rule.src = Some(net)),
                ("-d" | "--destination", neg) => {
                    tokens.next().and_then(|v| v.parse().ok()).map(|net| {
                        rule.dst = Some(net);
                        rule.not_dst = neg;
                    })
                }
                ("-m" | "--match", false) => match tokens.next() {
                    Some(module) if module == "comment" => Some(()),
                    Some(module) => {
                        rule.other.push(format!("-m {module}"));
                        Some(())
                    }
                    None => None,
                },
                ("--comment", false) => tokens.next().map(|c| rule.comment = Some(c)),
                ("-j" | "--jump", false) => tokens.next().map(|t| rule.target = Some(t)),
                _ => None,
            };
            if known.is_none() {
                rule.other
                    .push(if negate { format!("! {token}") } else { token });
            }
            negate = false;
        }
        rule
    }
}

/// The rule spec, in the order iptables-save prints it (so a written rule reads back
/// identically).
impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        let mut part = |f: &mut fmt::Formatter<'_>, text: fmt::Arguments<'_>| {
            let r = write!(f, "{sep}{text}");
            sep = " ";
            r
        };
        if let Some(src) = &self.src {
            part(f, format_args!("-s {src}"))?;
        }
        if let Some(dst) = &self.dst {
            let not = if self.not_dst { "! " } else { "" };
            part(f, format_args!("{not}-d {dst}"))?;
        }
        for other in &self.other {
            part(f, format_args!("{other}"))?;
        }
        if let Some(comment) = &self.comment {
            // Our comments contain no quotes or backslashes (see model::Tag).
            part(f, format_args!("-m comment --comment \"{comment}\""))?;
        }
        if let Some(target) = &self.target {
            part(f, format_args!("-j {target}"))?;
        }
        Ok(())
    }
}

/// Splits a saved rule into words: iptables-save double-quotes values with spaces and
/// escapes `"` and `\` inside them with a backslash.
fn tokenize(spec: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut cur = String::new();
    let (mut in_word, mut quoted) = (false, false);
    let mut chars = spec.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            '\\' if quoted => {
                if let Some(next) = chars.next() {
                    cur.push(next);
                }
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    tokens.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        tokens.push(cur);
    }
    tokens
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

    const SAVED: &str = r#"# Generated by iptables-nft-save v1.8.9 (nf_tables) on Sun Nov 22 20:34:47 2026
*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:BERTH-MASQ-0123456789ab - [0:0]
-A POSTROUTING -s 198.18.0.5/32 -m comment --comment "berth net1 ctr1 eth0" -j BERTH-MASQ-0123456789ab
-A POSTROUTING -o eth0 -j MASQUERADE
-A POSTROUTING ! -s 10.0.0.0/8 -m comment --comment "a \"quoted\" one" -j RETURN
-A BERTH-MASQ-0123456789ab -d 198.18.0.0/24 -m comment --comment "berth net1 ctr1 eth0" -j ACCEPT
-A BERTH-MASQ-0123456789ab ! -d 224.0.0.0/4 -m comment --comment "berth net1 ctr1 eth0" -j MASQUERADE
COMMIT
"#;

    #[test]
    fn parses_save_output() {
        let nat = NatTable::parse(SAVED);
        assert_eq!(nat.chains.len(), 3);
        assert_eq!(nat.rules.len(), 5);
        let jump = &nat.rules[0].rule;
        assert_eq!(jump.src, Some("198.18.0.5/32".parse().unwrap()));
        assert_eq!(jump.comment.as_deref(), Some("berth net1 ctr1 eth0"));
        assert_eq!(jump.target.as_deref(), Some("BERTH-MASQ-0123456789ab"));
        assert!(jump.other.is_empty());
        assert_eq!(nat.rules[1].rule.other, ["-o", "eth0"]);
        let foreign = &nat.rules[2].rule;
        assert_eq!(foreign.other, ["! -s", "10.0.0.0/8"]);
        assert_eq!(foreign.comment.as_deref(), Some("a \"quoted\" one"));
        let masq = &nat.rules[4].rule;
        assert!(masq.not_dst);
        assert_eq!(masq.dst, Some("224.0.0.0/4".parse().unwrap()));
    }

    #[test]
    fn rendered_rules_read_back_identically() {
        let nat = NatTable::parse(SAVED);
        for saved in nat.rules.iter().filter(|s| s.rule.other.is_empty()) {
            assert_eq!(saved.rule.to_string(), saved.spec);
            assert_eq!(Rule::parse(&saved.rule.to_string()), saved.rule);
        }
    }

    #[test]
    fn expected_rules_have_the_documented_shape() {
        let m = Masquerade {
            owner: Owner {
                network: "net1".into(),
                container_id: "ctr1".into(),
                ifname: "eth0".into(),
            },
            sources: vec!["fd42:b347::5/64".parse().unwrap()],
        };
        let plan = MasqPlan::new(&m).unwrap();
        let fm = &plan.families[0];
        let body: Vec<String> = chain_body(fm, &plan.tag)
            .iter()
            .map(ToString::to_string)
            .collect();
        let c = "-m comment --comment \"berth net1 ctr1 eth0\"";
        assert_eq!(
            body,
            [
                format!("-d fd42:b347::/64 {c} -j ACCEPT"),
                format!("! -d ff00::/8 {c} -j MASQUERADE")
            ]
        );
        let jumps = jump_rules(fm, &plan.tag, "BERTH-MASQ-x");
        assert_eq!(
            jumps[0].to_string(),
            format!("-s fd42:b347::5/128 {c} -j BERTH-MASQ-x")
        );
    }

    #[test]
    fn stale_owners_come_from_our_rules_only() {
        let tag = Tag::parse("berth net1 ctr1 eth0").unwrap();
        let chain = tag.chain_name(CHAIN_PREFIX);
        let text = SAVED.replace("BERTH-MASQ-0123456789ab", &chain);
        let nat = NatTable::parse(&text);
        assert_eq!(
            stale_owners(&nat, "net1", &HashSet::new()),
            std::slice::from_ref(&tag)
        );
        assert!(stale_owners(&nat, "net2", &HashSet::new()).is_empty());
        assert!(stale_owners(&nat, "net1", &HashSet::from([tag])).is_empty());
        // A comment of ours on a rule that is not ours (wrong chain) is ignored.
        assert!(stale_owners(&NatTable::parse(SAVED), "net1", &HashSet::new()).is_empty());
    }

    #[test]
    fn batches_delete_jumps_before_the_chain() {
        let tag = Tag::parse("berth net1 ctr1 eth0").unwrap();
        let chain = tag.chain_name(CHAIN_PREFIX);
        let nat = NatTable::parse(&SAVED.replace("BERTH-MASQ-0123456789ab", &chain));
        let mut batch = Batch::default();
        batch.remove_owner(&nat, &tag);
        assert_eq!(
            batch.finish(),
            format!(
                "*nat\n-D POSTROUTING -s 198.18.0.5/32 -m comment --comment \"berth net1 ctr1 eth0\" -j {chain}\n-F {chain}\n-X {chain}\nCOMMIT\n"
            )
        );
    }
}
