//! Firewall rules for Berth's plugins: one rule model, an iptables and an nftables backend.
//!
//! - Masquerading of container addresses (`ipMasq` of `bridge` and `veth`).
//! - Port mappings (`portmap`): DNAT of published host ports, hairpin and localhost SNAT,
//!   port ranges, only for traffic to the host's own addresses.
//! - Isolation between networks (the `firewall` plugin).
//! - MAC spoofing protection of bridge ports (`macspoofchk` of `bridge`, always nftables).
//! - Reconcile: every rule re-applied after a firewall flush or reload.
//!
//! Every rule carries its owner (the CNI attachment) in a comment, and every owner has its
//! own chain named after a hash of it, so DEL and GC find an owner's rules without scanning
//! everything. See the backends' module docs for the layouts.
//!
//! ```no_run
//! use berth_firewall::{Desired, Firewall, Masquerade, Owner, Removal};
//!
//! # fn demo() -> Result<(), berth_firewall::FirewallError> {
//! let fw = Firewall::detect(None)?; // iptables if it works here, else nftables
//! let owner = Owner::new("mynet", "abc", "eth0");
//! let sources = vec!["10.88.0.5/16".parse().unwrap()];
//! fw.apply(&Desired::Masquerade(Masquerade { owner: owner.clone(), sources }))?;
//! fw.remove(Removal::Masquerade(&owner))?;
//! # Ok(())
//! # }
//! ```
//!
//! # Which namespace
//! Every method acts on the **network namespace of the calling thread**: the rules are
//! written by `iptables-restore` or `nft` child processes, and a child inherits the namespace
//! of the thread that spawns it (so do threads this crate starts). For the host's NAT
//! (masquerade, portmap) call these from the plugin's own thread, not inside `Netns::run` of
//! the container.
//!
//! # Concurrency and cost
//! Each call applies one atomic batch per family (iptables) or one transaction (nftables),
//! and on the per-container paths (ADD, DEL) reads nothing or a fixed-size part of the
//! ruleset, so its cost does not grow with the number of attachments. Calls for different
//! owners never touch each other's rules; a batch that fails because a concurrent call
//! changed the rules in between is recomputed from a fresh read, a few times.

pub mod conntrack;
mod forward;
mod iptables;
mod isolation;
mod keys;
mod masquerading;
mod model;
/// The nfnetlink wire format and socket, public for other nf_tables and nfqueue speakers
/// (berth-impair's netdev tables).
pub mod nfnetlink;
mod nftables;
mod ports;
mod runner;

use std::collections::HashSet;

pub use forward::{DEFAULT_ADMIN_CHAIN, ForwardAccept, check_admin_chain};
pub use iptables::{CHAIN_PREFIX, IptablesError, IptablesVariant};
pub use isolation::Isolation;
pub use keys::{FirewallKeys, KeyError, MasqKeys, PortmapKeys, WirePortMapping};
pub use masquerading::{MasqError, Masquerading};
pub use model::{Family, InputError, MAX_COMMENT};
pub use nftables::NftError;
pub use nftables::macspoof::{MacAddr, MacSpoof, MacSpoofGuard};
pub use ports::{
    DEFAULT_MARK_BIT, MAX_MARK_BIT, MarkSpec, PortError, PortMap, PortMapping, PortRange, Protocol,
    conditions_look_like_iptables,
};
pub use runner::RunError;

use forward::ForwardPlan;
use isolation::IsoPlan;
use model::{MasqPlan, Tag};
use ports::PortPlan;

/// A firewall implementation, as named by the `ipMasqBackend` or `backend` config key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Iptables,
    Nftables,
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendKind::Iptables => "iptables",
            BackendKind::Nftables => "nftables",
        })
    }
}

/// Who a rule belongs to: the CNI attachment (network name, container id, interface). It is
/// written into every rule as the comment `berth <network> <container_id> <ifname>`, so the
/// fields must not contain whitespace, quotes or backslashes, and the comment must fit in
/// [`MAX_COMMENT`] bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    pub network: String,
    pub container_id: String,
    pub ifname: String,
}

impl Owner {
    pub fn new(network: &str, container_id: &str, ifname: &str) -> Owner {
        Owner {
            network: network.to_owned(),
            container_id: container_id.to_owned(),
            ifname: ifname.to_owned(),
        }
    }

    /// The owners of `network`'s attachments `(container id, ifname)`: a GC's valid list.
    pub fn of_network<'a>(
        network: &str,
        attachments: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Vec<Owner> {
        attachments
            .into_iter()
            .map(|(id, ifname)| Owner::new(network, id, ifname))
            .collect()
    }
}

/// Masquerading of one attachment's addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Masquerade {
    pub owner: Owner,
    /// Container addresses with their subnet prefix, e.g. 10.88.0.5/16: traffic from the
    /// address to destinations outside the subnet (and not multicast) is masqueraded.
    pub sources: Vec<ipnetwork::IpNetwork>,
}

/// One owner's rules as they should be, for [`Firewall::reconcile`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Desired {
    Masquerade(Masquerade),
    PortMap(PortMap),
    Isolation(Isolation),
    Forward(ForwardAccept),
}

/// What [`Firewall::reconcile`] had to put back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Shared chains, maps or rules were missing (typically: the ruleset was flushed).
    pub skeleton_repaired: bool,
    /// Owners (`net/ctr/eth0`, or `network n (bridge b)`) whose rules were missing or wrong.
    pub repaired: Vec<String>,
}

/// Errors of the firewall layer: invalid input or a failure of the chosen backend.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Ports(#[from] PortError),
    #[error(transparent)]
    Iptables(#[from] IptablesError),
    #[error(transparent)]
    Nftables(#[from] NftError),
    #[error("no usable firewall backend: iptables: {iptables}; nftables")]
    NoBackend {
        iptables: Box<IptablesError>,
        #[source]
        nftables: Box<NftError>,
    },
}

impl FirewallError {
    /// A check found rules missing (as opposed to failing to look).
    pub fn is_missing(&self) -> bool {
        matches!(
            self,
            FirewallError::Iptables(IptablesError::Missing { .. })
                | FirewallError::Nftables(NftError::Missing { .. })
        )
    }

    /// The request itself is wrong (bad owner, port, address, option): nothing was applied.
    pub fn is_input(&self) -> bool {
        matches!(
            self,
            FirewallError::Input(_)
                | FirewallError::Ports(_)
                | FirewallError::Nftables(NftError::Unsupported { .. })
                | FirewallError::Nftables(NftError::Conditions { .. })
        )
    }
}

/// A validated [`Desired`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Plan {
    Masquerade(MasqPlan),
    Ports(PortPlan),
    Isolation(IsoPlan),
    Forward(ForwardPlan),
}

impl Plan {
    /// Validates `d`; `None` when it asks for no rule at all (no port mapping, no address).
    fn new(d: &Desired) -> Result<Option<Plan>, FirewallError> {
        Ok(match d {
            Desired::Masquerade(m) => Some(Plan::Masquerade(MasqPlan::new(m)?)),
            Desired::PortMap(pm) => Some(PortPlan::new(pm)?)
                .filter(|p| !p.is_empty())
                .map(Plan::Ports),
            Desired::Isolation(i) => Some(Plan::Isolation(IsoPlan::new(i)?)),
            Desired::Forward(f) => Some(ForwardPlan::new(f)?)
                .filter(|p| !p.addresses.is_empty())
                .map(Plan::Forward),
        })
    }
}

/// What [`Firewall::remove`] removes: one owner's rules of one kind, or a network's
/// isolation (which belongs to the network: its GC removes it once no attachment is left).
#[derive(Debug, Clone, Copy)]
pub enum Removal<'a> {
    Masquerade(&'a Owner),
    /// `request`, the request ADD got (the runtime passes it again), lets the backend delete
    /// without listing; an invalid or stale one only costs a listing.
    Ports {
        owner: &'a Owner,
        request: Option<&'a PortMap>,
    },
    /// `request` as for [`Removal::Ports`] (from `prevResult`).
    Forward {
        owner: &'a Owner,
        request: Option<&'a ForwardAccept>,
    },
    Isolation {
        network: &'a str,
    },
}

/// The kinds of per-owner rules [`Firewall::gc`] collects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleKind {
    Masquerade,
    Ports,
    Forward,
}

/// A validated [`Removal`].
#[derive(Debug)]
enum Target<'a> {
    Masquerade(Tag),
    Ports(Tag, Option<PortPlan>),
    Forward(Tag, Option<ForwardPlan>),
    Isolation(&'a str),
}

impl<'a> Target<'a> {
    /// `None` for an owner no rule can carry: ADD refuses such an owner before writing
    /// anything, so there is nothing to remove (and DEL must not fail on what ADD accepted).
    fn new(r: Removal<'a>) -> Result<Option<Target<'a>>, FirewallError> {
        Ok(match r {
            Removal::Masquerade(owner) => Tag::for_teardown(owner).map(Target::Masquerade),
            Removal::Ports { owner, request } => Tag::for_teardown(owner).map(|tag| {
                let known = request
                    .filter(|pm| pm.owner == *owner)
                    .and_then(|pm| PortPlan::new(pm).ok())
                    .filter(|p| !p.is_empty());
                Target::Ports(tag, known)
            }),
            Removal::Forward { owner, request } => Tag::for_teardown(owner).map(|tag| {
                let known = request
                    .filter(|f| f.owner == *owner)
                    .and_then(|f| ForwardPlan::new(f).ok())
                    .filter(|p| !p.addresses.is_empty());
                Target::Forward(tag, known)
            }),
            Removal::Isolation { network } => {
                model::check_network(network)?;
                Some(Target::Isolation(network))
            }
        })
    }
}

/// What each backend does with the rule model: a few verbs over validated plans.
trait Backend: Send + Sync + std::fmt::Debug {
    fn kind(&self) -> BackendKind;
    fn iptables_variant(&self) -> Option<IptablesVariant>;
    fn status(&self) -> Result<(), FirewallError>;
    /// Writes the plan's rules; idempotent, an owner's rules of that kind are replaced.
    fn apply(&self, plan: &Plan) -> Result<(), FirewallError>;
    /// Error naming what is missing unless the plan's rules are all in place.
    fn check(&self, plan: &Plan) -> Result<(), FirewallError>;
    /// Idempotent: nothing to remove is success.
    fn remove(&self, target: &Target<'_>) -> Result<(), FirewallError>;
    /// Removes the `kind` rules of every owner of `network` not in `keep`; returns them.
    fn gc(
        &self,
        kind: RuleKind,
        network: &str,
        keep: &HashSet<Tag>,
    ) -> Result<Vec<Owner>, FirewallError>;
    fn reconcile(&self, desired: &[Plan]) -> Result<ReconcileReport, FirewallError>;
}

/// The chosen firewall backend. All methods act on the network namespace of the calling
/// thread (see the [crate docs](crate#which-namespace)).
#[derive(Debug)]
pub struct Firewall {
    backend: Box<dyn Backend>,
}

impl Firewall {
    /// `requested` (from the plugin's config) or, when None, iptables if the host uses it
    /// (an `iptables` binary that works), else nftables. Detects the iptables variant
    /// (nf_tables vs legacy) and always uses the matching binaries.
    ///
    /// Only looks for binaries and runs `iptables -V`: the namespace does not matter here.
    pub fn detect(requested: Option<BackendKind>) -> Result<Firewall, FirewallError> {
        let backend: Box<dyn Backend> = match requested {
            Some(BackendKind::Iptables) => Box::new(iptables::Iptables::detect()?),
            Some(BackendKind::Nftables) => Box::new(nftables::Nftables::detect()?),
            None => match iptables::Iptables::detect() {
                Ok(ipt) => Box::new(ipt),
                Err(iptables) => match nftables::Nftables::detect() {
                    Ok(nft) => Box::new(nft),
                    Err(nftables) => {
                        return Err(FirewallError::NoBackend {
                            iptables: Box::new(iptables),
                            nftables: Box::new(nftables),
                        });
                    }
                },
            },
        };
        Ok(Firewall { backend })
    }

    pub fn kind(&self) -> BackendKind {
        self.backend.kind()
    }

    /// For the iptables backend, the variant whose binaries are used.
    pub fn iptables_variant(&self) -> Option<IptablesVariant> {
        self.backend.iptables_variant()
    }

    /// Checks `d` completely without touching anything: every error [`Firewall::apply`]
    /// could report about the input.
    pub fn validate(d: &Desired) -> Result<(), FirewallError> {
        Plan::new(d).map(drop)
    }

    /// Writes `d`'s rules. Validates everything first (nothing is applied on bad input), then
    /// applies one batch per family (iptables) or one transaction (nftables). Idempotent: a
    /// repeated call replaces the owner's rules of that kind — a masquerade source or a port
    /// the owner no longer has loses its rule; a host port another owner holds is taken over
    /// (last ADD wins).
    pub fn apply(&self, d: &Desired) -> Result<(), FirewallError> {
        match Plan::new(d)? {
            Some(plan) => self.backend.apply(&plan),
            None => Ok(()),
        }
    }

    /// Error naming what is missing if `d`'s rules are not all in place
    /// ([`FirewallError::is_missing`]).
    pub fn check(&self, d: &Desired) -> Result<(), FirewallError> {
        match Plan::new(d)? {
            Some(plan) => self.backend.check(&plan),
            None => Ok(()),
        }
    }

    /// Removes exactly what `r` names. Idempotent: nothing to remove is success, also for an
    /// owner no rule can carry.
    pub fn remove(&self, r: Removal<'_>) -> Result<(), FirewallError> {
        match Target::new(r)? {
            Some(target) => self.backend.remove(&target),
            None => Ok(()),
        }
    }

    /// Removes the `kind` rules of every owner of `network` not in `keep`; returns the
    /// removed owners, recovered from the rule comments.
    pub fn gc(
        &self,
        kind: RuleKind,
        network: &str,
        keep: &[Owner],
    ) -> Result<Vec<Owner>, FirewallError> {
        model::check_network(network)?;
        self.backend.gc(kind, network, &tags(keep))
    }

    /// Puts every rule of `desired` back where it is missing or wrong, shared chains
    /// included, in one batch per table and family; touches nothing that is in place. For
    /// the runtime after a firewall flush or reload (`nft flush ruleset`, `firewall-cmd
    /// --reload`). Everything is validated first.
    pub fn reconcile(&self, desired: &[Desired]) -> Result<ReconcileReport, FirewallError> {
        let mut plans = Vec::with_capacity(desired.len());
        for d in desired {
            plans.extend(Plan::new(d)?);
        }
        if plans.is_empty() {
            return Ok(ReconcileReport::default());
        }
        self.backend.reconcile(&plans)
    }

    /// Err when the backend cannot be used (binary missing, table not listable) — callers
    /// report CNI code 50.
    pub fn status(&self) -> Result<(), FirewallError> {
        self.backend.status()
    }
}

/// The UDP host ports of `pm` per family: after ADD, their stale conntrack entries go
/// ([`conntrack::delete_udp_entries`]).
pub fn udp_ports(pm: &PortMap) -> Result<Vec<(Family, PortRange)>, FirewallError> {
    Ok(PortPlan::new(pm)?.udp_ports())
}

/// The tags of the owners GC keeps; an owner no rule can carry has nothing to keep.
fn tags(owners: &[Owner]) -> HashSet<Tag> {
    owners.iter().filter_map(Tag::for_teardown).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plugins wrap these in their own errors; clippy's `result_large_err` fires at 128 bytes.
    #[test]
    fn errors_stay_small() {
        for (name, size) in [
            ("FirewallError", size_of::<FirewallError>()),
            ("IptablesError", size_of::<IptablesError>()),
            ("NftError", size_of::<NftError>()),
            ("RunError", size_of::<RunError>()),
            ("PortError", size_of::<PortError>()),
        ] {
            eprintln!("{name}: {size} bytes");
            assert!(size <= 128, "{name} is {size} bytes");
        }
    }

    #[test]
    fn backend_kind_is_lowercase_in_json() {
        let kinds: Vec<BackendKind> = serde_json::from_str(r#"["iptables", "nftables"]"#).unwrap();
        assert_eq!(kinds, [BackendKind::Iptables, BackendKind::Nftables]);
        assert_eq!(
            serde_json::to_string(&BackendKind::Nftables).unwrap(),
            r#""nftables""#
        );
    }
}
