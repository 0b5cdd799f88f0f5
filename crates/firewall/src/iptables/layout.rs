//! What Berth's rules look like in iptables: the shared chains ("skeleton") and the chains
//! each owner gets, rendered as `iptables-save` text.
//!
//! ```text
//! nat   PREROUTING, OUTPUT  -m addrtype --dst-type LOCAL -j BERTH-HOSTPORTS
//!       BERTH-HOSTPORTS     -j BERTH-HP-0 … -j BERTH-HP-f          (16 buckets)
//!       BERTH-HP-<b>        -p tcp -m multiport --dports 8080 [conditions] -j BERTH-DN-<owner>
//!       BERTH-DN-<owner>    -s <subnet> -p tcp -m tcp --dport 8080 -j BERTH-MARK-13     (hairpin)
//!                           -s 127.0.0.0/8 -p tcp -m tcp --dport 8080 -j BERTH-MARK-13 (localhost)
//!                           -p tcp -m tcp --dport 8080 -j DNAT --to-destination <ctr>:80
//!       BERTH-MARK-13       -j MARK --set-xmark 0x2000/0x2000
//!       POSTROUTING (first) -j BERTH-POSTROUTING
//!       BERTH-POSTROUTING   -j BERTH-MARKMASQ; -j BERTH-MQ-0 … -j BERTH-MQ-f
//!       BERTH-MARKMASQ      -m mark --mark 0x2000/0x2000 -j MASQUERADE      (per mark bit)
//!       BERTH-MQ-<b>        -s <ctr>/32 -j BERTH-MASQ-<owner>
//!       BERTH-MASQ-<owner>  -d <subnet> -j ACCEPT; ! -d 224.0.0.0/4 -j MASQUERADE
//! filter FORWARD (first)    -j BERTH-ISOLATION; -j BERTH-FORWARD                 (in this order)
//!       BERTH-FORWARD       -j <admin chain, CNI-ADMIN by default>; -j BERTH-FA-0 … -j BERTH-FA-f
//!       BERTH-FA-<b>        -s <ctr>/32 -j BERTH-FWD-<owner>; -d <ctr>/32 -j BERTH-FWD-<owner>
//!       BERTH-FWD-<owner>   -d <ctr>/32 ctstate RELATED,ESTABLISHED -j ACCEPT; -s <ctr>/32 -j ACCEPT
//!       BERTH-ISOLATION     ctstate RELATED,ESTABLISHED -j RETURN; ctstate DNAT -j RETURN;
//!                           -i <bridge> -j BERTH-ISO-<network>                 (per network)
//!       BERTH-ISO-<network> -o <bridge> -j RETURN; -j BERTH-ISOLATION-2
//!       BERTH-ISOLATION-2   -o <bridge> -j DROP                                (per network)
//! ```
//!
//! Why buckets: an owner's entry rule must live in a shared chain, and deleting it makes
//! iptables list that chain's rules (~7 µs each with iptables-nft). The bucket is derived from
//! the owner, so a DEL lists 1/16 of the entries. Every owner rule carries the owner's
//! comment, from which GC recovers owners.
//!
//! Hairpin and localhost connections are marked in the owner's chain and masqueraded in
//! `BERTH-MARKMASQ`, which runs before the masquerade buckets: a masquerade chain `ACCEPT`s
//! traffic within its subnet, which would end NAT for a hairpin connection before its mark
//! is seen.

use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::rules::Spec;
use crate::isolation::IsoPlan;
use crate::model::{BUCKETS, Family, FamilyMasq, Tag};
use crate::ports::{FamilyPorts, Mapping, MarkSpec};

pub const HOSTPORTS: &str = "BERTH-HOSTPORTS";
pub const POSTROUTING: &str = "BERTH-POSTROUTING";
pub const MARKMASQ: &str = "BERTH-MARKMASQ";
pub const ISOLATION: &str = "BERTH-ISOLATION";
pub const ISOLATION_DROP: &str = "BERTH-ISOLATION-2";
/// Accepts containers' forwarded traffic on hosts whose FORWARD policy is DROP; after the
/// isolation chain, so isolation still wins.
pub const FORWARD: &str = "BERTH-FORWARD";
/// Comment of the skeleton's rules in built-in chains (not an owner: GC ignores it).
pub const SKELETON_COMMENT: &str = "berth";

/// A kind of per-owner chain: where it lives and where its entry rules go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    pub table: &'static str,
    pub chain_prefix: &'static str,
    pub bucket_prefix: &'static str,
}

pub const MASQ: Kind = Kind {
    table: "nat",
    chain_prefix: "BERTH-MASQ-",
    bucket_prefix: "BERTH-MQ-",
};

pub const DNAT: Kind = Kind {
    table: "nat",
    chain_prefix: "BERTH-DN-",
    bucket_prefix: "BERTH-HP-",
};

pub const FWD: Kind = Kind {
    table: "filter",
    chain_prefix: "BERTH-FWD-",
    bucket_prefix: "BERTH-FA-",
};

pub const ISO: Kind = Kind {
    table: "filter",
    chain_prefix: "BERTH-ISO-",
    bucket_prefix: "",
};

pub fn bucket_name(prefix: &str, n: usize) -> String {
    format!("{prefix}{n:x}")
}

/// One owner's rules in one family: its own chain and its entry rules elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owned {
    pub table: &'static str,
    /// Who, for messages: `net/ctr/eth0` or `network n (bridge b)`.
    pub what: String,
    pub comment: String,
    pub chain: String,
    pub body: Vec<String>,
    /// `(chain, spec)`: rules outside the owner's chain (jumps into it, or a DROP).
    pub entries: Vec<(String, String)>,
    /// False when user conditions are part of the entries: iptables may print them in
    /// another order, so listings are compared by count rather than text.
    pub exact: bool,
}

impl Owned {
    /// The distinct chains holding entries.
    pub fn entry_chains(&self) -> Vec<&str> {
        let mut chains: Vec<&str> = Vec::new();
        for (chain, _) in &self.entries {
            if !chains.contains(&chain.as_str()) {
                chains.push(chain);
            }
        }
        chains
    }
}

/// Where an owner's rules are, when only the owner is known (DEL, GC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub table: &'static str,
    pub what: String,
    pub comment: String,
    pub chain: String,
    /// The chains that may hold its entries.
    pub entry_chains: Vec<String>,
}

pub fn locate(kind: &Kind, tag: &Tag) -> Located {
    Located {
        table: kind.table,
        what: tag.to_string(),
        comment: tag.comment().to_owned(),
        chain: tag.chain_name(kind.chain_prefix),
        entry_chains: vec![bucket_name(kind.bucket_prefix, tag.bucket())],
    }
}

impl Owned {
    pub fn located(&self) -> Located {
        Located {
            table: self.table,
            what: self.what.clone(),
            comment: self.comment.clone(),
            chain: self.chain.clone(),
            entry_chains: self.entry_chains().into_iter().map(str::to_owned).collect(),
        }
    }
}

/// Chains and rules shared by all owners of a table. Rules are `(chain, spec, first)`:
/// `first` rules are inserted at the top of their chain, the others appended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Skeleton {
    pub chains: Vec<String>,
    pub rules: Vec<(String, String, bool)>,
}

impl Skeleton {
    fn chain(&mut self, name: impl Into<String>) {
        self.chains.push(name.into());
    }

    fn rule(&mut self, chain: &str, spec: Spec, first: bool) {
        self.rules.push((chain.to_owned(), spec.to_string(), first));
    }
}

pub fn mark_chain(bit: u8) -> String {
    format!("BERTH-MARK-{bit}")
}

fn mark_value(bit: u8) -> String {
    let v = 1u32 << bit;
    format!("{v:#x}/{v:#x}")
}

/// The nat skeleton, with mark chains for `bits`.
pub fn nat_skeleton(bits: &[u8]) -> Skeleton {
    let mut s = Skeleton::default();
    s.chain(HOSTPORTS);
    s.chain(POSTROUTING);
    s.chain(MARKMASQ);
    let local = || {
        Spec::jump(HOSTPORTS)
            .with("-m addrtype --dst-type LOCAL")
            .comment(SKELETON_COMMENT)
    };
    s.rule("PREROUTING", local(), false);
    s.rule("OUTPUT", local(), false);
    s.rule(
        "POSTROUTING",
        Spec::jump(POSTROUTING).comment(SKELETON_COMMENT),
        true,
    );
    s.rule(POSTROUTING, Spec::jump(MARKMASQ), false);
    for n in 0..BUCKETS {
        let hp = bucket_name(DNAT.bucket_prefix, n);
        let mq = bucket_name(MASQ.bucket_prefix, n);
        s.rule(HOSTPORTS, Spec::jump(hp.clone()), false);
        s.rule(POSTROUTING, Spec::jump(mq.clone()), false);
        s.chain(hp);
        s.chain(mq);
    }
    for &bit in bits {
        let chain = mark_chain(bit);
        s.rule(
            &chain,
            Spec::jump(format!("MARK --set-xmark {}", mark_value(bit))),
            false,
        );
        s.rule(
            MARKMASQ,
            Spec::jump("MASQUERADE").with(format!("-m mark --mark {}", mark_value(bit))),
            false,
        );
        s.chain(chain);
    }
    s
}

/// The filter skeleton: isolation, and with `admins` (admin chain names) the accept chains
/// of forwarded container traffic.
pub fn filter_skeleton(admins: &[&str]) -> Skeleton {
    let mut s = Skeleton::default();
    s.chain(ISOLATION);
    s.chain(ISOLATION_DROP);
    s.rule(
        "FORWARD",
        Spec::jump(ISOLATION).comment(SKELETON_COMMENT),
        true,
    );
    // Inserted first in reverse order: replies, then published ports, pass before any
    // per-network rule.
    s.rule(
        ISOLATION,
        Spec::jump("RETURN").with("-m conntrack --ctstate DNAT"),
        true,
    );
    s.rule(
        ISOLATION,
        Spec::jump("RETURN").with("-m conntrack --ctstate RELATED,ESTABLISHED"),
        true,
    );
    if !admins.is_empty() {
        s.chain(FORWARD);
        // A first rule goes right after the first rules before it in this list: after the
        // isolation jump, whichever was there first.
        s.rule(
            "FORWARD",
            Spec::jump(FORWARD).comment(SKELETON_COMMENT),
            true,
        );
        for admin in admins {
            s.chain(*admin);
            s.rule(FORWARD, Spec::jump(*admin), false);
        }
        for n in 0..BUCKETS {
            let fa = bucket_name(FWD.bucket_prefix, n);
            s.rule(FORWARD, Spec::jump(fa.clone()), false);
            s.chain(fa);
        }
    }
    s
}

/// Forwarding of one owner's addresses accepted: replies to it, and all it sends.
pub fn forward_owned(family: Family, addresses: &[IpAddr], tag: &Tag) -> Owned {
    let comment = tag.comment();
    let chain = tag.chain_name(FWD.chain_prefix);
    let bucket = bucket_name(FWD.bucket_prefix, tag.bucket());
    let mut body = Vec::new();
    let mut entries = Vec::new();
    for ip in addresses.iter().filter(|ip| Family::of(**ip) == family) {
        let net = IpNetwork::from(*ip);
        body.push(
            Spec::jump("ACCEPT")
                .dst(net)
                .with("-m conntrack --ctstate RELATED,ESTABLISHED")
                .comment(comment)
                .to_string(),
        );
        body.push(Spec::jump("ACCEPT").src(net).comment(comment).to_string());
        for spec in [
            Spec::jump(chain.clone()).src(net),
            Spec::jump(chain.clone()).dst(net),
        ] {
            entries.push((bucket.clone(), spec.comment(comment).to_string()));
        }
    }
    Owned {
        table: FWD.table,
        what: tag.to_string(),
        comment: comment.to_owned(),
        chain,
        body,
        entries,
        exact: true,
    }
}

/// The existing masquerade shape: per subnet `-d <subnet> -j ACCEPT`, then
/// `! -d <multicast> -j MASQUERADE`; one jump per source in the owner's bucket.
pub fn masq_owned(fm: &FamilyMasq, tag: &Tag) -> Owned {
    let comment = tag.comment();
    let chain = tag.chain_name(MASQ.chain_prefix);
    let mut body: Vec<String> = fm
        .subnets
        .iter()
        .map(|s| Spec::jump("ACCEPT").dst(*s).comment(comment).to_string())
        .collect();
    body.push(
        Spec::jump("MASQUERADE")
            .not_dst(fm.family.multicast())
            .comment(comment)
            .to_string(),
    );
    let bucket = bucket_name(MASQ.bucket_prefix, tag.bucket());
    let entries = fm
        .sources
        .iter()
        .map(|ip| {
            let spec = Spec::jump(chain.clone())
                .src(IpNetwork::from(*ip))
                .comment(comment);
            (bucket.clone(), spec.to_string())
        })
        .collect();
    Owned {
        table: MASQ.table,
        what: tag.to_string(),
        comment: comment.to_owned(),
        chain,
        body,
        entries,
        exact: true,
    }
}

/// `ip:port`, `ip` (a range onto the same ports) or `ip:first-last/base` (a range onto
/// other ports: the kernel maps them one to one with NF_NAT_RANGE_PROTO_OFFSET).
fn to_destination(ip: IpAddr, m: &Mapping) -> String {
    let addr = match ip {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("[{ip}]"),
    };
    if m.host.is_single() {
        format!("{addr}:{}", m.container.first())
    } else if m.host == m.container {
        ip.to_string()
    } else {
        format!(
            "{addr}:{}-{}/{}",
            m.container.first(),
            m.container.last(),
            m.host.first()
        )
    }
}

pub fn mark_target(mark: &MarkSpec) -> String {
    match mark {
        MarkSpec::Bit(bit) => mark_chain(*bit),
        MarkSpec::ExternalChain(chain) => chain.clone(),
    }
}

pub fn dnat_owned(fp: &FamilyPorts, tag: &Tag, mark: &MarkSpec) -> Owned {
    let comment = tag.comment();
    let chain = tag.chain_name(DNAT.chain_prefix);
    let mut body = Vec::new();
    for m in &fp.mappings {
        let base = |spec: Spec| {
            let spec = spec.dport(m.protocol.as_str(), &m.host.iptables());
            match m.host_ip {
                Some(ip) => spec.dst(IpNetwork::from(ip)),
                None => spec,
            }
        };
        for src in &fp.masq_sources {
            let spec = base(Spec::jump(mark_target(mark)));
            // "from anywhere" (masqAll) is no -s at all: iptables omits 0.0.0.0/0.
            let spec = if src.prefix() == 0 {
                spec
            } else {
                spec.src(*src)
            };
            body.push(spec.comment(comment).to_string());
        }
        let dnat = format!(
            "DNAT --to-destination {}",
            to_destination(fp.container_ip, m)
        );
        body.push(base(Spec::jump(dnat)).comment(comment).to_string());
    }
    let bucket = bucket_name(DNAT.bucket_prefix, tag.bucket());
    let conditions = fp.conditions.join(" ");
    let entries = fp
        .multiport_groups()
        .into_iter()
        .map(|(proto, ranges)| {
            let list: Vec<String> = ranges.iter().map(|r| r.iptables()).collect();
            let mut spec = Spec::jump(chain.clone()).dports(proto.as_str(), &list.join(","));
            if !conditions.is_empty() {
                spec = spec.with(conditions.clone());
            }
            (bucket.clone(), spec.comment(comment).to_string())
        })
        .collect();
    Owned {
        table: DNAT.table,
        what: tag.to_string(),
        comment: comment.to_owned(),
        chain,
        body,
        entries,
        exact: fp.conditions.is_empty(),
    }
}

pub fn iso_owned(plan: &IsoPlan) -> Owned {
    let comment = plan.comment();
    let chain = plan.chain_name(ISO.chain_prefix);
    let bridge = plan.bridge();
    Owned {
        table: ISO.table,
        what: plan.to_string(),
        comment: comment.to_owned(),
        chain: chain.clone(),
        body: vec![
            Spec::jump("RETURN")
                .oif(bridge)
                .comment(comment)
                .to_string(),
            Spec::jump(ISOLATION_DROP).comment(comment).to_string(),
        ],
        entries: vec![
            (
                ISOLATION.to_owned(),
                Spec::jump(chain).iif(bridge).comment(comment).to_string(),
            ),
            (
                ISOLATION_DROP.to_owned(),
                Spec::jump("DROP").oif(bridge).comment(comment).to_string(),
            ),
        ],
        exact: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::{PortMap, PortMapping, PortPlan};
    use crate::{Masquerade, Owner, model::MasqPlan};

    fn owner() -> Owner {
        Owner {
            network: "net1".into(),
            container_id: "ctr1".into(),
            ifname: "eth0".into(),
        }
    }

    #[test]
    fn masquerade_keeps_its_shape() {
        let plan = MasqPlan::new(&Masquerade {
            owner: owner(),
            sources: vec!["fd42:b347::5/64".parse().unwrap()],
        })
        .unwrap();
        let o = masq_owned(&plan.families[0], &plan.tag);
        let c = "-m comment --comment \"berth net1 ctr1 eth0\"";
        assert_eq!(
            o.body,
            [
                format!("-d fd42:b347::/64 {c} -j ACCEPT"),
                format!("! -d ff00::/8 {c} -j MASQUERADE")
            ]
        );
        assert_eq!(
            o.entries[0].1,
            format!("-s fd42:b347::5/128 {c} -j {}", o.chain)
        );
        assert!(o.entries[0].0.starts_with("BERTH-MQ-"));
    }

    #[test]
    fn dnat_rules_have_the_documented_shape() {
        let mut range = PortMapping {
            protocol: "udp".into(),
            host_port: 9000,
            container_port: 5000,
            range: Some(3),
            host_port_end: None,
            host_ip: None,
        };
        let single = PortMapping {
            protocol: "tcp".into(),
            host_port: 8080,
            container_port: 80,
            range: None,
            host_port_end: None,
            host_ip: Some("198.18.0.1".parse().unwrap()),
        };
        let same = PortMapping {
            protocol: "sctp".into(),
            host_port: 7000,
            container_port: 7000,
            range: Some(2),
            host_port_end: None,
            host_ip: None,
        };
        range.range = Some(3);
        let plan = PortPlan::new(&PortMap {
            owner: owner(),
            mappings: vec![range, single, same],
            container_ips: vec!["198.18.0.5/24".parse().unwrap()],
            snat: true,
            masq_all: false,
            mark: MarkSpec::Bit(13),
            conditions_v4: vec![],
            conditions_v6: vec![],
        })
        .unwrap();
        let o = dnat_owned(&plan.families[0], &plan.tag, &plan.mark);
        let c = "-m comment --comment \"berth net1 ctr1 eth0\"";
        assert_eq!(
            o.body,
            [
                format!(
                    "-s 198.18.0.0/24 -d 198.18.0.1/32 -p tcp -m tcp --dport 8080 {c} -j BERTH-MARK-13"
                ),
                format!(
                    "-s 127.0.0.0/8 -d 198.18.0.1/32 -p tcp -m tcp --dport 8080 {c} -j BERTH-MARK-13"
                ),
                format!(
                    "-d 198.18.0.1/32 -p tcp -m tcp --dport 8080 {c} -j DNAT --to-destination 198.18.0.5:80"
                ),
                format!("-s 198.18.0.0/24 -p udp -m udp --dport 9000:9002 {c} -j BERTH-MARK-13"),
                format!("-s 127.0.0.0/8 -p udp -m udp --dport 9000:9002 {c} -j BERTH-MARK-13"),
                format!(
                    "-p udp -m udp --dport 9000:9002 {c} -j DNAT --to-destination 198.18.0.5:5000-5002/9000"
                ),
                format!("-s 198.18.0.0/24 -p sctp -m sctp --dport 7000:7001 {c} -j BERTH-MARK-13"),
                format!("-s 127.0.0.0/8 -p sctp -m sctp --dport 7000:7001 {c} -j BERTH-MARK-13"),
                format!(
                    "-p sctp -m sctp --dport 7000:7001 {c} -j DNAT --to-destination 198.18.0.5"
                ),
            ]
        );
        let entries: Vec<&str> = o.entries.iter().map(|(_, s)| s.as_str()).collect();
        assert_eq!(
            entries,
            [
                format!("-p tcp -m multiport --dports 8080 {c} -j {}", o.chain),
                format!("-p udp -m multiport --dports 9000:9002 {c} -j {}", o.chain),
                format!("-p sctp -m multiport --dports 7000:7001 {c} -j {}", o.chain),
            ]
        );
    }

    #[test]
    fn skeleton_lists_every_bucket() {
        let s = nat_skeleton(&[13]);
        assert_eq!(s.chains.len(), 3 + 2 * BUCKETS + 1);
        assert!(s.rules.contains(&(
            "BERTH-MARK-13".into(),
            "-j MARK --set-xmark 0x2000/0x2000".into(),
            false
        )));
        assert!(s.rules.contains(&(
            MARKMASQ.into(),
            "-m mark --mark 0x2000/0x2000 -j MASQUERADE".into(),
            false
        )));
    }
}
