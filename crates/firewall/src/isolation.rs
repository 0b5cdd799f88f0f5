//! Isolation between networks (the `firewall` plugin's `ingressPolicy: same-bridge`, alias
//! `isolation: strict`): what it means independent of iptables or nft syntax.
//!
//! Isolation belongs to a *network* (its bridge), not to one attachment: every isolated
//! bridge refuses forwarded traffic from every other isolated bridge, except replies
//! (conntrack `ESTABLISHED,RELATED`) and connections to published ports (DNAT'ed). Traffic
//! to and from the outside world and non-isolated networks is not touched, as in the
//! reference's `same-bridge` policy.

use std::fmt;

use crate::model::{InputError, MAX_COMMENT, check_word, hashed_name};

/// First word of the comment on per-network isolation rules:
/// `berth-isolation <network> <bridge>`.
const COMMENT_WORD: &str = "berth-isolation";

/// Isolation of one network's bridge (a [`crate::Desired`] of [`crate::Firewall::apply`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Isolation {
    pub network: String,
    /// The bridge the network's containers hang off (the previous result's first
    /// interface, as the reference reads it).
    pub bridge: String,
}

/// A validated [`Isolation`] with its comment and chain hash.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IsoPlan {
    network: String,
    bridge: String,
    comment: String,
}

impl IsoPlan {
    pub fn new(iso: &Isolation) -> Result<IsoPlan, InputError> {
        check_word("network", &iso.network)?;
        check_word("bridge", &iso.bridge)?;
        if iso.bridge.len() > 15 {
            return Err(InputError::Field {
                field: "bridge",
                value: iso.bridge.clone(),
                reason: "longer than 15 bytes",
            });
        }
        let comment = format!("{COMMENT_WORD} {} {}", iso.network, iso.bridge);
        if comment.len() > MAX_COMMENT {
            return Err(InputError::CommentTooLong {
                owner: iso.network.clone(),
                len: comment.len(),
            });
        }
        Ok(IsoPlan {
            network: iso.network.clone(),
            bridge: iso.bridge.clone(),
            comment,
        })
    }

    /// The inverse of [`IsoPlan::comment`].
    pub fn parse(comment: &str) -> Option<IsoPlan> {
        let mut words = comment.split(' ');
        if words.next() != Some(COMMENT_WORD) {
            return None;
        }
        let (network, bridge) = (words.next()?, words.next()?);
        if words.next().is_some() {
            return None;
        }
        let plan = IsoPlan::new(&Isolation {
            network: network.to_owned(),
            bridge: bridge.to_owned(),
        })
        .ok()?;
        (plan.comment == comment).then_some(plan)
    }

    pub fn network(&self) -> &str {
        &self.network
    }

    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    pub fn comment(&self) -> &str {
        &self.comment
    }

    /// `<prefix><12 hex>` from the network name: one chain per isolated network.
    pub fn chain_name(&self, prefix: &str) -> String {
        hashed_name(prefix, &[&self.network])
    }
}

impl fmt::Display for IsoPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "network {} (bridge {})", self.network, self.bridge)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comment_round_trips_and_names_are_per_network() {
        let a = IsoPlan::new(&Isolation {
            network: "net-a".into(),
            bridge: "br-a".into(),
        })
        .unwrap();
        assert_eq!(a.comment(), "berth-isolation net-a br-a");
        assert_eq!(IsoPlan::parse(a.comment()), Some(a.clone()));
        assert_eq!(IsoPlan::parse("berth net-a c eth0"), None);
        let b = IsoPlan::new(&Isolation {
            network: "net-a".into(),
            bridge: "br-other".into(),
        })
        .unwrap();
        assert_eq!(a.chain_name("BERTH-ISO-"), b.chain_name("BERTH-ISO-"));
    }

    #[test]
    fn bad_names_are_refused() {
        for (network, bridge) in [("a b", "br0"), ("n", "br\"0"), ("n", "a-very-long-bridge0")] {
            let iso = Isolation {
                network: network.into(),
                bridge: bridge.into(),
            };
            assert!(IsoPlan::new(&iso).is_err(), "{iso:?}");
        }
    }
}
