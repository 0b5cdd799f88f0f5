//! iptables text: rule specs rendered the way `iptables-save` prints them, saved tables and
//! `-S` listings parsed back, and `iptables-restore --noflush` batches.
//!
//! Rules are compared as text. Berth renders every rule in `iptables-save`'s canonical
//! order (`-s -d -i -o -p`, then the matches in the order given, then `-j`), so a rule it
//! wrote reads back identically; the tests below and the netns tests hold it to that.

use std::collections::HashSet;
use std::fmt::{self, Write as _};

use ipnetwork::IpNetwork;

/// A rule spec under construction. `Display` renders it canonically.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spec {
    src: Option<(bool, IpNetwork)>,
    dst: Option<(bool, IpNetwork)>,
    iif: Option<(bool, String)>,
    oif: Option<(bool, String)>,
    proto: Option<String>,
    /// Everything between `-p` and `-j`, already in the order iptables prints it.
    matches: Vec<String>,
    target: String,
}

impl Spec {
    pub fn jump(target: impl Into<String>) -> Spec {
        Spec {
            target: target.into(),
            ..Spec::default()
        }
    }

    pub fn src(mut self, net: IpNetwork) -> Spec {
        self.src = Some((false, net));
        self
    }

    pub fn dst(mut self, net: IpNetwork) -> Spec {
        self.dst = Some((false, net));
        self
    }

    pub fn not_dst(mut self, net: IpNetwork) -> Spec {
        self.dst = Some((true, net));
        self
    }

    pub fn iif(mut self, name: &str) -> Spec {
        self.iif = Some((false, name.to_owned()));
        self
    }

    pub fn oif(mut self, name: &str) -> Spec {
        self.oif = Some((false, name.to_owned()));
        self
    }

    /// `-p <proto> -m <proto> --dport <ports>`.
    pub fn dport(mut self, proto: &str, ports: &str) -> Spec {
        self.proto = Some(proto.to_owned());
        self.matches.push(format!("-m {proto} --dport {ports}"));
        self
    }

    /// `-p <proto> -m multiport --dports <list>`.
    pub fn dports(mut self, proto: &str, list: &str) -> Spec {
        self.proto = Some(proto.to_owned());
        self.matches.push(format!("-m multiport --dports {list}"));
        self
    }

    /// Any further match, verbatim (`-m addrtype --dst-type LOCAL`, user conditions).
    pub fn with(mut self, text: impl Into<String>) -> Spec {
        self.matches.push(text.into());
        self
    }

    /// Quoted the way iptables-save quotes (only when there is anything but
    /// `[A-Za-z0-9_-]`). Our comments contain no quotes or backslashes (see `model::Tag`).
    pub fn comment(self, comment: &str) -> Spec {
        let plain = !comment.is_empty()
            && comment
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if plain {
            self.with(format!("-m comment --comment {comment}"))
        } else {
            self.with(format!("-m comment --comment \"{comment}\""))
        }
    }
}

impl fmt::Display for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        let neg = |n: bool| if n { "! " } else { "" };
        if let Some((n, net)) = &self.src {
            parts.push(format!("{}-s {net}", neg(*n)));
        }
        if let Some((n, net)) = &self.dst {
            parts.push(format!("{}-d {net}", neg(*n)));
        }
        if let Some((n, name)) = &self.iif {
            parts.push(format!("{}-i {name}", neg(*n)));
        }
        if let Some((n, name)) = &self.oif {
            parts.push(format!("{}-o {name}", neg(*n)));
        }
        if let Some(proto) = &self.proto {
            parts.push(format!("-p {proto}"));
        }
        parts.extend(self.matches.iter().cloned());
        parts.push(format!("-j {}", self.target));
        f.write_str(&parts.join(" "))
    }
}

/// One `-A <chain> <spec>` line of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedRule {
    pub chain: String,
    /// Exactly as printed after `-A <chain> `: deleting by this text cannot miss.
    pub spec: String,
    pub comment: Option<String>,
    /// The `-j` target (a chain name for jumps).
    pub target: Option<String>,
}

impl SavedRule {
    fn parse(line: &str) -> Option<SavedRule> {
        let rest = line.strip_prefix("-A ")?;
        let (chain, spec) = rest.split_once(' ').unwrap_or((rest, ""));
        let tokens = tokenize(spec);
        let after = |flag: &str| {
            tokens
                .iter()
                .position(|t| t == flag)
                .and_then(|i| tokens.get(i + 1).cloned())
        };
        Some(SavedRule {
            chain: chain.to_owned(),
            spec: spec.to_owned(),
            comment: after("--comment"),
            target: after("-j"),
        })
    }
}

/// A table (or one chain of it) as `iptables-save -t T` or `iptables -t T -S C` printed it.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    pub chains: HashSet<String>,
    pub rules: Vec<SavedRule>,
}

impl Listing {
    /// Accepts both formats: `:CHAIN POLICY [..]` and `-N CHAIN` / `-P CHAIN POLICY`
    /// declarations, `-A` rules.
    pub fn parse(text: &str) -> Listing {
        let mut listing = Listing::default();
        for line in text.lines().map(str::trim) {
            if let Some(decl) = line.strip_prefix(':') {
                let name = decl.split(' ').next().unwrap_or(decl);
                listing.chains.insert(name.to_owned());
            } else if let Some(decl) = line
                .strip_prefix("-N ")
                .or_else(|| line.strip_prefix("-P "))
            {
                let name = decl.split(' ').next().unwrap_or(decl);
                listing.chains.insert(name.to_owned());
            } else if let Some(rule) = SavedRule::parse(line) {
                listing.rules.push(rule);
            }
        }
        listing
    }

    pub fn has_chain(&self, chain: &str) -> bool {
        self.chains.contains(chain)
    }

    pub fn rules_in<'a>(&'a self, chain: &'a str) -> impl Iterator<Item = &'a SavedRule> + 'a {
        self.rules.iter().filter(move |r| r.chain == chain)
    }

    /// Every rule, in any chain, that jumps to `target`.
    pub fn jumps_to<'a>(&'a self, target: &'a str) -> impl Iterator<Item = &'a SavedRule> + 'a {
        self.rules
            .iter()
            .filter(move |r| r.target.as_deref() == Some(target))
    }

    /// The specs of `chain`'s rules, in order.
    pub fn body<'a>(&'a self, chain: &'a str) -> Vec<&'a str> {
        self.rules_in(chain).map(|r| r.spec.as_str()).collect()
    }
}

/// An `iptables-restore --noflush` batch for one table.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    lines: Vec<String>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Creates `chain`; the batch fails if it exists (the "is this new?" test of ADD).
    pub fn new_chain(&mut self, chain: &str) {
        self.lines.push(format!("-N {chain}"));
    }

    /// Creates `chain`, or flushes it if it exists.
    pub fn declare(&mut self, chain: &str) {
        self.lines.push(format!(":{chain} - [0:0]"));
    }

    pub fn append(&mut self, chain: &str, spec: &str) {
        self.lines.push(format!("-A {chain} {spec}"));
    }

    /// `-I <chain> <position> <spec>`; positions count from 1.
    pub fn insert_at(&mut self, chain: &str, position: usize, spec: &str) {
        self.lines.push(format!("-I {chain} {position} {spec}"));
    }

    /// Deletes the first rule matching `spec` (by meaning for a spec we render, by exact
    /// text for one iptables printed).
    pub fn delete(&mut self, chain: &str, spec: &str) {
        self.lines.push(format!("-D {chain} {spec}"));
    }

    pub fn flush(&mut self, chain: &str) {
        self.lines.push(format!("-F {chain}"));
    }

    pub fn delete_chain(&mut self, chain: &str) {
        self.lines.push(format!("-X {chain}"));
    }

    pub fn extend(&mut self, other: Batch) {
        self.lines.extend(other.lines);
    }

    pub fn text(&self, table: &str) -> String {
        let mut text = format!("*{table}\n");
        for line in &self.lines {
            let _ = writeln!(text, "{line}");
        }
        text.push_str("COMMIT\n");
        text
    }
}

/// Splits a saved rule into words: iptables-save double-quotes values with spaces and
/// escapes `"` and `\` inside them with a backslash.
pub fn tokenize(spec: &str) -> Vec<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    const SAVED: &str = r#"# Generated by iptables-nft-save v1.8.9 (nf_tables) on Sun Nov 22 20:34:47 2026
*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:BERTH-MASQ-0123456789ab - [0:0]
-A POSTROUTING -s 198.18.0.5/32 -m comment --comment "berth net1 ctr1 eth0" -j BERTH-MASQ-0123456789ab
-A POSTROUTING -o eth0 -j MASQUERADE
-A POSTROUTING ! -s 10.0.0.0/8 -m comment --comment "a \"quoted\" one" -j RETURN
-A BERTH-MASQ-0123456789ab -d 198.18.0.0/24 -m comment --comment "berth net1 ctr1 eth0" -j ACCEPT
COMMIT
"#;

    #[test]
    fn parses_save_output() {
        let l = Listing::parse(SAVED);
        assert_eq!(l.chains.len(), 3);
        assert_eq!(l.rules.len(), 4);
        let jump = &l.rules[0];
        assert_eq!(jump.comment.as_deref(), Some("berth net1 ctr1 eth0"));
        assert_eq!(jump.target.as_deref(), Some("BERTH-MASQ-0123456789ab"));
        assert_eq!(l.rules[2].comment.as_deref(), Some("a \"quoted\" one"));
        assert_eq!(l.jumps_to("BERTH-MASQ-0123456789ab").count(), 1);
        assert_eq!(l.body("BERTH-MASQ-0123456789ab").len(), 1);
    }

    #[test]
    fn parses_dash_s_output() {
        let text = "-N BERTH-HP-3\n-A BERTH-HP-3 -p tcp -m multiport --dports 8080 -m comment --comment \"berth n c eth0\" -j BERTH-DN-0123456789ab\n";
        let l = Listing::parse(text);
        assert!(l.has_chain("BERTH-HP-3"));
        assert_eq!(
            l.rules[0].spec,
            "-p tcp -m multiport --dports 8080 -m comment --comment \"berth n c eth0\" -j BERTH-DN-0123456789ab"
        );
        let builtin = Listing::parse("-P POSTROUTING ACCEPT\n");
        assert!(builtin.has_chain("POSTROUTING"));
    }

    #[test]
    fn specs_render_in_save_order() {
        let spec = Spec::jump("BERTH-MARK-13")
            .dport("tcp", "8080")
            .dst("192.0.2.1/32".parse().unwrap())
            .src("10.88.0.0/16".parse().unwrap())
            .comment("berth n c i");
        assert_eq!(
            spec.to_string(),
            "-s 10.88.0.0/16 -d 192.0.2.1/32 -p tcp -m tcp --dport 8080 -m comment --comment \"berth n c i\" -j BERTH-MARK-13"
        );
        let spec = Spec::jump("MASQUERADE").not_dst("ff00::/8".parse().unwrap());
        assert_eq!(spec.to_string(), "! -d ff00::/8 -j MASQUERADE");
        let spec = Spec::jump("BERTH-ISO-x").iif("br0").oif("br1");
        assert_eq!(spec.to_string(), "-i br0 -o br1 -j BERTH-ISO-x");
    }

    #[test]
    fn batches_read_as_restore_input() {
        let mut b = Batch::default();
        b.new_chain("A");
        b.declare("B");
        b.append("A", "-j B");
        b.insert_at("POSTROUTING", 1, "-j A");
        b.delete("A", "-j B");
        b.flush("A");
        b.delete_chain("A");
        assert_eq!(
            b.text("nat"),
            "*nat\n-N A\n:B - [0:0]\n-A A -j B\n-I POSTROUTING 1 -j A\n-D A -j B\n-F A\n-X A\nCOMMIT\n"
        );
    }
}
