//! The nf_tables side of an impairment: one `netdev` table per impaired interface, named
//! `berth-impair-<ifname>`, whose base chain hooks the interface's *egress* and holds, in
//! order:
//!
//! 1. `meta mark <MARK> accept` — frames the delay line writes back (they carry its socket
//!    mark) have already been through this chain once;
//! 2. `numgen random mod 1000000 < <ppm> drop` — loss, the same rule `nft` writes for
//!    `numgen random mod 1000000 < N drop`;
//! 3. `fwd to <tap>` — every other frame goes to the delay line's TAP device.
//!
//! Written in-process over nfnetlink (one atomic batch), with the expression encodings `nft
//! --debug=netlink` shows for those rules. Deleting the table deletes everything in it.
//!
//! Why the egress hook of the netdev family: it sees every frame the interface sends
//! (ARP, IPv6 neighbour discovery, any EtherType), before the root qdisc, which is where
//! netem works too. It needs `CONFIG_NETFILTER_EGRESS` (Linux 5.16+).

use std::io;

use berth_firewall::nfnetlink::{
    Attrs, NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END, NLM_F_ACK, NLM_F_CREATE, NLM_F_REQUEST,
    NfGenMsg, NfnlError, NfnlSocket, Writer, msg_type,
};

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;
const NFPROTO_NETDEV: u8 = 5;
/// `NLM_F_APPEND`: a new rule goes after the others, as `nft add rule` does.
const NLM_F_APPEND: u16 = 0x800;
const AF_UNSPEC: u8 = 0;
/// `NF_NETDEV_EGRESS`.
const HOOK_EGRESS: u32 = 1;

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_HOOK_DEV: u16 = 3;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;
/// `NFT_REG_VERDICT` and the first general register (`NFT_REG_1`, as nft uses).
const REG_VERDICT: u32 = 0;
const REG_1: u32 = 1;

/// The chain's name inside the table.
pub const CHAIN: &str = "egress";
/// The table owned by Berth for `ifname`.
pub fn table_name(ifname: &str) -> String {
    format!("berth-impair-{ifname}")
}

/// What the chain does, besides existing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressRules {
    /// Drop this many frames in a million.
    pub loss_ppm: Option<u32>,
    /// Send frames to this TAP (by index), letting through those with `mark`.
    pub delay_line: Option<(u32, u32)>,
}

/// Failures of the table writer; the caller names the table and namespace.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("nf_tables netlink socket")]
    Socket(#[source] io::Error),
    #[error("nf_tables refused {step}")]
    Refused {
        step: &'static str,
        #[source]
        source: io::Error,
    },
}

impl NftError {
    pub fn errno(&self) -> Option<i32> {
        match self {
            NftError::Refused { source, .. } | NftError::Socket(source) => source.raw_os_error(),
        }
    }
}

fn be32(v: u32) -> [u8; 4] {
    v.to_be_bytes()
}

/// One expression: `{NAME, DATA{...}}` inside a list element.
fn expr(list: &mut Attrs<'_>, name: &str, data: impl FnOnce(&mut Attrs<'_>)) {
    list.nest(NFTA_LIST_ELEM, |e| {
        e.put_strz(NFTA_EXPR_NAME, name);
        e.nest(NFTA_EXPR_DATA, data);
    });
}

/// `immediate reg 0 <verdict>`.
fn verdict(list: &mut Attrs<'_>, code: u32) {
    expr(list, "immediate", |d| {
        d.put(1, &be32(REG_VERDICT)); // NFTA_IMMEDIATE_DREG
        d.nest(2, |data| {
            // NFTA_IMMEDIATE_DATA
            data.nest(NFTA_DATA_VERDICT, |v| {
                v.put(NFTA_VERDICT_CODE, &be32(code));
            });
        });
    });
}

/// `cmp <op> reg 1 <value>`.
fn cmp(list: &mut Attrs<'_>, op: u32, value: &[u8]) {
    expr(list, "cmp", |d| {
        d.put(1, &be32(REG_1)); // NFTA_CMP_SREG
        d.put(2, &be32(op)); // NFTA_CMP_OP
        d.nest(3, |data| {
            // NFTA_CMP_DATA
            data.put(NFTA_DATA_VALUE, value);
        });
    });
}

const NFT_CMP_EQ: u32 = 0;
const NFT_CMP_LT: u32 = 2;

/// One rule of the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// `meta mark <mark> accept`.
    PassMarked(u32),
    /// `numgen random mod 1000000 < <ppm> drop`.
    Loss(u32),
    /// `fwd to <ifindex>`.
    Forward(u32),
}

/// The rules of the chain, in order.
fn rules(r: &EgressRules) -> Vec<Rule> {
    let mut out = Vec::new();
    if let Some((_, mark)) = r.delay_line {
        out.push(Rule::PassMarked(mark));
    }
    if let Some(ppm) = r.loss_ppm {
        out.push(Rule::Loss(ppm));
    }
    if let Some((tap, _)) = r.delay_line {
        out.push(Rule::Forward(tap));
    }
    out
}

/// A rule's expression list.
fn encode_rule(rule: Rule, l: &mut Attrs<'_>) {
    match rule {
        Rule::PassMarked(mark) => {
            expr(l, "meta", |d| {
                d.put(2, &be32(3)); // NFTA_META_KEY = NFT_META_MARK
                d.put(1, &be32(REG_1)); // NFTA_META_DREG
            });
            // The mark is host order in the register, as `meta mark` loads it.
            cmp(l, NFT_CMP_EQ, &mark.to_ne_bytes());
            verdict(l, NF_ACCEPT);
        }
        Rule::Loss(ppm) => {
            expr(l, "numgen", |d| {
                d.put(1, &be32(REG_1)); // NFTA_NG_DREG
                d.put(2, &be32(1_000_000)); // NFTA_NG_MODULUS
                d.put(3, &be32(1)); // NFTA_NG_TYPE = NFT_NG_RANDOM
                d.put(4, &be32(0)); // NFTA_NG_OFFSET
            });
            // numgen yields host order; nft turns it to network order to compare bytes.
            expr(l, "byteorder", |d| {
                d.put(1, &be32(REG_1)); // NFTA_BYTEORDER_SREG
                d.put(2, &be32(REG_1)); // NFTA_BYTEORDER_DREG
                d.put(3, &be32(1)); // NFTA_BYTEORDER_OP = NFT_BYTEORDER_HTON
                d.put(4, &be32(4)); // NFTA_BYTEORDER_LEN
                d.put(5, &be32(4)); // NFTA_BYTEORDER_SIZE
            });
            cmp(l, NFT_CMP_LT, &be32(ppm));
            verdict(l, NF_DROP);
        }
        Rule::Forward(tap) => {
            expr(l, "immediate", |d| {
                d.put(1, &be32(REG_1)); // NFTA_IMMEDIATE_DREG
                d.nest(2, |data| {
                    data.put(NFTA_DATA_VALUE, &tap.to_ne_bytes());
                });
            });
            expr(l, "fwd", |d| {
                d.put(1, &be32(REG_1)); // NFTA_FWD_SREG_DEV
            });
        }
    }
}

/// A `NETLINK_NETFILTER` socket in the calling thread's namespace: open it inside
/// `Netns::run`, use it from anywhere.
pub struct Tables {
    socket: NfnlSocket,
}

impl Tables {
    pub fn open() -> Result<Tables, NftError> {
        let socket = NfnlSocket::open().map_err(|e| NftError::Socket(e.into_io()))?;
        Ok(Tables { socket })
    }

    /// Replaces table `name` with one whose egress chain on `device` holds `rules`, in one
    /// transaction: the old table (if any) and the new one are never both in force, and a
    /// refused rule leaves the old one as it was.
    pub fn replace(
        &mut self,
        name: &str,
        device: &str,
        rules_of: &EgressRules,
    ) -> Result<(), NftError> {
        // A DELTABLE of a missing table fails the whole batch: ask first.
        let exists = self.exists(name)?;
        let mut w = Writer::new();
        let mut steps: Vec<(u32, &'static str)> = Vec::new();
        let begin = self.socket.next_seq();
        w.message(
            batch_header(NFNL_MSG_BATCH_BEGIN, begin),
            batch_nfgen(),
            |_| {},
        );
        if exists {
            let seq = self.socket.next_seq();
            steps.push((seq, "delete the old table"));
            w.message(
                nft_header(NFT_MSG_DELTABLE, NLM_F_ACK, seq),
                NfGenMsg::family(NFPROTO_NETDEV),
                |a| {
                    a.put_strz(NFTA_TABLE_NAME, name);
                },
            );
        }
        let seq = self.socket.next_seq();
        steps.push((seq, "create the table"));
        w.message(
            nft_header(NFT_MSG_NEWTABLE, NLM_F_ACK | NLM_F_CREATE, seq),
            NfGenMsg::family(NFPROTO_NETDEV),
            |a| {
                a.put_strz(NFTA_TABLE_NAME, name);
            },
        );
        let seq = self.socket.next_seq();
        steps.push((
            seq,
            "create the egress chain (needs CONFIG_NETFILTER_EGRESS)",
        ));
        w.message(
            nft_header(NFT_MSG_NEWCHAIN, NLM_F_ACK | NLM_F_CREATE, seq),
            NfGenMsg::family(NFPROTO_NETDEV),
            |a| {
                a.put_strz(NFTA_CHAIN_TABLE, name);
                a.put_strz(NFTA_CHAIN_NAME, CHAIN);
                a.nest(NFTA_CHAIN_HOOK, |h| {
                    h.put(NFTA_HOOK_HOOKNUM, &be32(HOOK_EGRESS));
                    h.put(NFTA_HOOK_PRIORITY, &be32(0));
                    h.put_strz(NFTA_HOOK_DEV, device);
                });
                a.put(NFTA_CHAIN_POLICY, &be32(NF_ACCEPT));
                a.put_strz(NFTA_CHAIN_TYPE, "filter");
            },
        );
        for rule in rules(rules_of) {
            let seq = self.socket.next_seq();
            steps.push((
                seq,
                "add a rule (numgen, fwd, meta, cmp, byteorder, immediate)",
            ));
            w.message(
                nft_header(
                    NFT_MSG_NEWRULE,
                    NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND,
                    seq,
                ),
                NfGenMsg::family(NFPROTO_NETDEV),
                |a| {
                    a.put_strz(NFTA_RULE_TABLE, name);
                    a.put_strz(NFTA_RULE_CHAIN, CHAIN);
                    a.nest(NFTA_RULE_EXPRESSIONS, |l| encode_rule(rule, l));
                },
            );
        }
        let end = self.socket.next_seq();
        w.message(batch_header(NFNL_MSG_BATCH_END, end), batch_nfgen(), |_| {});
        let buf = w
            .finish()
            .map_err(|e| NftError::Socket(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
        self.socket
            .send(&buf)
            .map_err(|e| NftError::Socket(e.into_io()))?;
        let seqs: Vec<u32> = steps.iter().map(|s| s.0).collect();
        match self.socket.batch_acks(&seqs, &[begin, end]) {
            Ok(()) => Ok(()),
            Err(NfnlError::Kernel { seq, source }) => Err(NftError::Refused {
                step: steps
                    .iter()
                    .find(|s| s.0 == seq)
                    .map_or("the transaction (is nf_tables there?)", |s| s.1),
                source,
            }),
            Err(e) => Err(NftError::Socket(e.into_io())),
        }
    }

    /// Whether table `name` exists.
    pub fn exists(&mut self, name: &str) -> Result<bool, NftError> {
        let seq = self.socket.next_seq();
        let mut w = Writer::new();
        w.message(
            nft_header(NFT_MSG_GETTABLE, NLM_F_ACK, seq),
            NfGenMsg::family(NFPROTO_NETDEV),
            |a| {
                a.put_strz(NFTA_TABLE_NAME, name);
            },
        );
        let buf = w
            .finish()
            .map_err(|e| NftError::Socket(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
        self.socket
            .send(&buf)
            .map_err(|e| NftError::Socket(e.into_io()))?;
        match self.socket.answer(seq, |_| Ok(())) {
            Ok(()) => Ok(true),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(false),
            Err(NfnlError::Kernel { source, .. }) => Err(NftError::Refused {
                step: "look the table up",
                source,
            }),
            Err(e) => Err(NftError::Socket(e.into_io())),
        }
    }

    /// Deletes table `name`; `Ok(false)` when it was not there.
    pub fn delete(&mut self, name: &str) -> Result<bool, NftError> {
        let mut w = Writer::new();
        let begin = self.socket.next_seq();
        let seq = self.socket.next_seq();
        let end = self.socket.next_seq();
        w.message(
            batch_header(NFNL_MSG_BATCH_BEGIN, begin),
            batch_nfgen(),
            |_| {},
        );
        w.message(
            nft_header(NFT_MSG_DELTABLE, NLM_F_ACK, seq),
            NfGenMsg::family(NFPROTO_NETDEV),
            |a| {
                a.put_strz(NFTA_TABLE_NAME, name);
            },
        );
        w.message(batch_header(NFNL_MSG_BATCH_END, end), batch_nfgen(), |_| {});
        let buf = w
            .finish()
            .map_err(|e| NftError::Socket(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
        self.socket
            .send(&buf)
            .map_err(|e| NftError::Socket(e.into_io()))?;
        match self.socket.batch_acks(&[seq], &[begin, end]) {
            Ok(()) => Ok(true),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(false),
            Err(NfnlError::Kernel { source, .. }) => Err(NftError::Refused {
                step: "delete the table",
                source,
            }),
            Err(e) => Err(NftError::Socket(e.into_io())),
        }
    }
}

fn nft_header(msg: u16, flags: u16, seq: u32) -> berth_firewall::nfnetlink::Header {
    berth_firewall::nfnetlink::Header::request(
        msg_type(NFNL_SUBSYS_NFTABLES, msg),
        NLM_F_REQUEST | flags,
        seq,
    )
}

fn batch_header(kind: u16, seq: u32) -> berth_firewall::nfnetlink::Header {
    berth_firewall::nfnetlink::Header::request(kind, NLM_F_REQUEST, seq)
}

fn batch_nfgen() -> NfGenMsg {
    NfGenMsg {
        family: AF_UNSPEC,
        version: 0,
        res_id: NFNL_SUBSYS_NFTABLES,
    }
}
