//! The rule model both backends render: who owns a rule ([`Tag`]: an [`Owner`] written into
//! every rule as a comment, plus the hash that names its iptables chain) and what masquerading
//! means ([`MasqPlan`]), independent of iptables or nft syntax.
//!
//! Port mappings and isolation will add their own plans next to [`MasqPlan`]; the owner tag,
//! the comment format and the address families are shared.

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use sha2::{Digest, Sha256};

use crate::{Masquerade, Owner};

/// First word of every rule comment; `berth <network> <container_id> <ifname>`.
const COMMENT_WORD: &str = "berth";

/// Longest comment both backends store: nft limits comments to 128 bytes (iptables to 255).
pub const MAX_COMMENT: usize = 128;

/// Hex digits of the owner hash in chain names. 48 bits: `BERTH-MASQ-` + 12 = 23 bytes, within
/// the 28 iptables allows.
const HASH_HEX: usize = 12;

/// Errors of the `model` module: input that cannot be turned into rules.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("invalid {field} {value:?}: {reason}")]
    Field {
        field: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error(
        "owner {owner} is too long: its rule comment has {len} bytes, at most {MAX_COMMENT} fit"
    )]
    CommentTooLong { owner: String, len: usize },
    #[error("masquerade for {owner} has no source addresses")]
    NoSources { owner: String },
}

/// An IP address family; each has its own iptables binaries and nft payload protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    pub fn of(ip: IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// Multicast destinations are never masqueraded: containers must be able to talk to
    /// each other on the local network via multicast.
    pub fn multicast(self) -> IpNetwork {
        let (ip, prefix) = match self {
            Family::V4 => (IpAddr::from([224, 0, 0, 0]), 4),
            Family::V6 => (IpAddr::from([0xff00, 0, 0, 0, 0, 0, 0, 0]), 8),
        };
        // INVARIANT: both prefixes are within their family's length.
        IpNetwork::new(ip, prefix).expect("valid multicast prefix")
    }

    /// `0.0.0.0/0` or `::/0`.
    pub fn any(self) -> IpNetwork {
        let ip = match self {
            Family::V4 => IpAddr::from([0, 0, 0, 0]),
            Family::V6 => IpAddr::from([0u16; 8]),
        };
        // INVARIANT: a zero prefix is valid for both families.
        IpNetwork::new(ip, 0).expect("valid zero prefix")
    }

    /// `127.0.0.0/8` or `::1/128`.
    pub fn loopback(self) -> IpNetwork {
        let (ip, prefix) = match self {
            Family::V4 => (IpAddr::from([127, 0, 0, 0]), 8),
            Family::V6 => (IpAddr::from([0, 0, 0, 0, 0, 0, 0, 1u16]), 128),
        };
        // INVARIANT: both prefixes are within their family's length.
        IpNetwork::new(ip, prefix).expect("valid loopback prefix")
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.network, self.container_id, self.ifname)
    }
}

/// A validated owner with its comment. The comment is the owner's only record in the
/// ruleset: GC recovers owners from it, so it must parse back ([`Tag::parse`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tag {
    owner: Owner,
    comment: String,
}

impl Tag {
    pub fn new(owner: &Owner) -> Result<Tag, InputError> {
        check_word("network", &owner.network)?;
        check_word("container id", &owner.container_id)?;
        // Any name the kernel takes (berth-netlink's check_ifname) has a comment: what a
        // comment cannot hold is %-escaped (`%` itself is never in an interface name).
        let ifname = escape_word(&owner.ifname);
        check_word("ifname", &ifname)?;
        let comment = format!(
            "{COMMENT_WORD} {} {} {ifname}",
            owner.network, owner.container_id
        );
        if comment.len() > MAX_COMMENT {
            return Err(InputError::CommentTooLong {
                owner: owner.to_string(),
                len: comment.len(),
            });
        }
        Ok(Tag {
            owner: owner.clone(),
            comment,
        })
    }

    /// The tag `owner`'s rules would carry, for teardown: `None` when no rule can carry it (a
    /// name with a character comments cannot hold, or a comment too long), because ADD refuses
    /// such an owner before writing anything. DEL and GC then have nothing to find, rather than
    /// failing on input its ADD accepted (an ADD with nothing to publish never builds a tag).
    pub fn for_teardown(owner: &Owner) -> Option<Tag> {
        Tag::new(owner).ok()
    }

    /// The inverse of [`Tag::comment`]; `None` for anything that is not one of our comments.
    pub fn parse(comment: &str) -> Option<Tag> {
        let mut words = comment.split(' ');
        if words.next() != Some(COMMENT_WORD) {
            return None;
        }
        let (network, container_id, ifname) = (words.next()?, words.next()?, words.next()?);
        if words.next().is_some() {
            return None;
        }
        let tag = Tag::new(&Owner {
            network: network.to_owned(),
            container_id: container_id.to_owned(),
            ifname: unescape_word(ifname)?,
        })
        .ok()?;
        // Round trip: rejects anything our own formatting would not produce.
        (tag.comment == comment).then_some(tag)
    }

    pub fn owner(&self) -> &Owner {
        &self.owner
    }

    pub fn network(&self) -> &str {
        &self.owner.network
    }

    /// `berth <network> <container_id> <ifname>`.
    pub fn comment(&self) -> &str {
        &self.comment
    }

    /// `<prefix><12 hex>`: the first 48 bits of SHA-256 over the owner's three fields
    /// (NUL-separated, so field boundaries count). Deterministic, so DEL finds the chain
    /// from the owner alone.
    pub fn chain_name(&self, prefix: &str) -> String {
        hashed_name(
            prefix,
            &[
                &self.owner.network,
                &self.owner.container_id,
                &self.owner.ifname,
            ],
        )
    }

    /// A 32-bit owner id (the first bytes of the same hash as [`Tag::chain_name`]): the data
    /// of the owner's nftables map elements, so a DEL can tell its elements from another
    /// owner's with the same key.
    pub fn id(&self) -> u32 {
        let name = self.chain_name("");
        u32::from_str_radix(&name[..8], 16).unwrap_or(0)
    }

    /// Which of [`BUCKETS`] dispatch chains holds this owner's entry rules: derived from the
    /// owner alone, so DEL finds them without listing the others.
    pub fn bucket(&self) -> usize {
        let digest = Sha256::digest(self.chain_name("").as_bytes());
        usize::from(digest[0]) % BUCKETS
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.owner.fmt(f)
    }
}

/// Number of dispatch chains the iptables backend spreads owners over. A DEL lists one of
/// them, so its cost stays flat as attachments grow (a `-D` scans its chain's rules).
pub const BUCKETS: usize = 16;

/// `<prefix><12 hex>`: the first 48 bits of SHA-256 over `fields`, each followed by a NUL
/// (so field boundaries count).
pub fn hashed_name(prefix: &str, fields: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for field in fields {
        hasher.update(field.as_bytes());
        hasher.update([0]);
    }
    let digest = hasher.finalize();
    let mut name = String::with_capacity(prefix.len() + HASH_HEX);
    name.push_str(prefix);
    for byte in digest.iter().take(HASH_HEX / 2) {
        name.push_str(&format!("{byte:02x}"));
    }
    name
}

/// Owner fields come from CNI-validated names, but they end up inside quoted comments of
/// two different parsers (iptables-restore, nft), so check anyway: printable ASCII without
/// whitespace, quotes or backslashes.
/// `value` with every byte a rule comment cannot carry (anything but printable ASCII other
/// than quotes, backslash and `%`) written `%XX`.
fn escape_word(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_graphic() && !matches!(b, b'"' | b'\'' | b'`' | b'\\' | b'%') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The inverse of [`escape_word`]; `None` for a malformed escape or bytes that are not UTF-8.
fn unescape_word(word: &str) -> Option<String> {
    let b = word.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

pub fn check_word(field: &'static str, value: &str) -> Result<(), InputError> {
    let err = |reason| InputError::Field {
        field,
        value: value.to_owned(),
        reason,
    };
    if value.is_empty() {
        return Err(err("empty"));
    }
    if let Some(c) = value.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(err(if c.is_whitespace() {
            "contains whitespace"
        } else {
            "contains a non-printable or non-ASCII character"
        }));
    }
    if value.contains(['"', '\'', '`', '\\']) {
        return Err(err("contains a quote or backslash"));
    }
    Ok(())
}

/// Why `chain` cannot be a chain name in our restore batches (`None`: it can): 1–28
/// printable characters, no quotes, not an option.
pub fn chain_name_problem(chain: &str) -> Option<&'static str> {
    if chain.is_empty() || chain.len() > 28 {
        return Some("must have 1 to 28 characters");
    }
    if chain.starts_with('-') || chain.starts_with('!') {
        return Some("must not start with - or !");
    }
    if !chain.chars().all(|c| c.is_ascii_graphic()) || chain.contains(['"', '\'', '\\']) {
        return Some("must be printable ASCII without quotes");
    }
    None
}

/// Checks a network name on its own (GC gets no full owner).
pub fn check_network(network: &str) -> Result<(), InputError> {
    check_word("network", network)
}

/// What masquerading one owner means in one family: traffic from any of `sources` to a
/// destination outside all of `subnets` and outside multicast gets the outgoing interface's
/// address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilyMasq {
    pub family: Family,
    /// Container addresses, deduplicated, in input order.
    pub sources: Vec<IpAddr>,
    /// Their subnets (host bits cleared), deduplicated, in input order.
    pub subnets: Vec<IpNetwork>,
}

/// A validated [`Masquerade`]: its tag and one [`FamilyMasq`] per family that has sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasqPlan {
    pub tag: Tag,
    pub families: Vec<FamilyMasq>,
}

impl MasqPlan {
    pub fn new(m: &Masquerade) -> Result<MasqPlan, InputError> {
        let tag = Tag::new(&m.owner)?;
        if m.sources.is_empty() {
            return Err(InputError::NoSources {
                owner: tag.to_string(),
            });
        }
        let mut families = Vec::new();
        for family in Family::ALL {
            let mut fm = FamilyMasq {
                family,
                sources: Vec::new(),
                subnets: Vec::new(),
            };
            let (mut seen_ip, mut seen_net) = (HashSet::new(), HashSet::new());
            for src in m.sources.iter().filter(|s| Family::of(s.ip()) == family) {
                // INVARIANT: the prefix comes from a valid network of the same family.
                let subnet = IpNetwork::new(src.network(), src.prefix()).expect("same prefix");
                if seen_ip.insert(src.ip()) {
                    fm.sources.push(src.ip());
                }
                if seen_net.insert(subnet) {
                    fm.subnets.push(subnet);
                }
            }
            if !fm.sources.is_empty() {
                families.push(fm);
            }
        }
        Ok(MasqPlan { tag, families })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(network: &str, id: &str, ifname: &str) -> Owner {
        Owner {
            network: network.into(),
            container_id: id.into(),
            ifname: ifname.into(),
        }
    }

    #[test]
    fn comment_round_trips() {
        let tag = Tag::new(&owner("net-1", "abc.def_0", "eth0")).unwrap();
        assert_eq!(tag.comment(), "berth net-1 abc.def_0 eth0");
        assert_eq!(Tag::parse(tag.comment()), Some(tag));
    }

    /// Every name the kernel takes for an interface has a comment: found by berth-fuzz, an
    /// ifname with a zero-width space passed berth-cni and the kernel but not the firewall.
    #[test]
    fn odd_interface_names_are_escaped_and_round_trip() {
        for ifname in ["eth0\u{200b}", "é", "a\"b", "a'b`c\\d", "tab\there"] {
            let tag = Tag::new(&owner("n", "c", ifname)).unwrap();
            assert!(tag.comment().is_ascii(), "{:?}", tag.comment());
            let word = tag.comment().strip_prefix("berth n c ").unwrap();
            assert!(!word.contains(['"', '\'', '`', '\\', ' ']), "{word:?}");
            assert_eq!(Tag::parse(tag.comment()), Some(tag.clone()), "{ifname:?}");
            assert_eq!(tag.owner().ifname, ifname);
        }
        assert_eq!(
            Tag::new(&owner("n", "c", "eth0\u{200b}"))
                .unwrap()
                .comment(),
            "berth n c eth0%E2%80%8B"
        );
        for bad in ["berth n c %ZZ", "berth n c %E2", "berth n c %FF"] {
            assert_eq!(Tag::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn foreign_comments_do_not_parse() {
        for c in [
            "",
            "berth",
            "berth a b",
            "berth a b c d",
            "berth a  b c",
            "cni a b c",
            "berth a b \"c",
        ] {
            assert_eq!(Tag::parse(c), None, "{c:?}");
        }
    }

    #[test]
    fn invalid_owner_fields_are_refused() {
        for (o, field) in [
            (owner("", "c", "eth0"), "network"),
            (owner("a b", "c", "eth0"), "network"),
            (owner("n", "c\"x", "eth0"), "container id"),
            (owner("n", "c", ""), "ifname"),
        ] {
            let err = Tag::new(&o).unwrap_err();
            assert!(
                matches!(&err, InputError::Field { field: f, .. } if *f == field),
                "{o:?}: {err}"
            );
        }
        let long = owner(&"n".repeat(60), &"c".repeat(64), "eth0");
        assert!(matches!(
            Tag::new(&long),
            Err(InputError::CommentTooLong { len: 136, .. })
        ));
    }

    #[test]
    fn chain_names_are_short_stable_and_distinct() {
        let a = Tag::new(&owner("net", "ctr", "eth0")).unwrap();
        let name = a.chain_name("BERTH-MASQ-");
        assert_eq!(name.len(), 23);
        assert!(name.len() <= 28);
        assert_eq!(name, a.chain_name("BERTH-MASQ-"));
        // Field boundaries matter.
        let b = Tag::new(&owner("ne", "tctr", "eth0")).unwrap();
        assert_ne!(name, b.chain_name("BERTH-MASQ-"));
        assert!(name[11..].chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn plan_splits_families_and_dedups() {
        let m = Masquerade {
            owner: owner("n", "c", "eth0"),
            sources: vec![
                "198.18.0.5/24".parse().unwrap(),
                "fd42:b347::5/64".parse().unwrap(),
                "198.18.0.6/24".parse().unwrap(),
                "198.18.0.5/24".parse().unwrap(),
            ],
        };
        let plan = MasqPlan::new(&m).unwrap();
        assert_eq!(plan.families.len(), 2);
        let v4 = &plan.families[0];
        assert_eq!(v4.family, Family::V4);
        assert_eq!(
            v4.sources,
            [
                "198.18.0.5".parse::<IpAddr>().unwrap(),
                "198.18.0.6".parse().unwrap()
            ]
        );
        let subnets: Vec<String> = v4.subnets.iter().map(|n| n.to_string()).collect();
        assert_eq!(subnets, ["198.18.0.0/24"]);
        let v6: Vec<String> = plan.families[1]
            .subnets
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(v6, ["fd42:b347::/64"]);
    }

    #[test]
    fn plan_needs_sources() {
        let m = Masquerade {
            owner: owner("n", "c", "eth0"),
            sources: vec![],
        };
        assert!(matches!(
            MasqPlan::new(&m),
            Err(InputError::NoSources { .. })
        ));
    }
}
