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
//! use berth_firewall::{Firewall, Masquerade, Owner};
//!
//! # fn demo() -> Result<(), berth_firewall::FirewallError> {
//! let fw = Firewall::detect(None)?; // iptables if it works here, else nftables
//! let owner = Owner { network: "mynet".into(), container_id: "abc".into(), ifname: "eth0".into() };
//! fw.add_masquerade(&Masquerade { owner: owner.clone(), sources: vec!["10.88.0.5/16".parse().unwrap()] })?;
//! fw.del_masquerade(&owner)?;
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

/// What each backend does with the rule model.
trait Backend: Send + Sync + std::fmt::Debug {
    fn kind(&self) -> BackendKind;
    fn iptables_variant(&self) -> Option<IptablesVariant>;
    fn status(&self) -> Result<(), FirewallError>;
    fn add_masquerade(&self, plan: &MasqPlan) -> Result<(), FirewallError>;
    fn del_masquerade(&self, tag: &Tag) -> Result<(), FirewallError>;
    fn check_masquerade(&self, plan: &MasqPlan) -> Result<(), FirewallError>;
    fn gc_masquerade(
        &self,
        network: &str,
        keep: &HashSet<Tag>,
    ) -> Result<Vec<Owner>, FirewallError>;
    fn add_ports(&self, plan: &PortPlan) -> Result<(), FirewallError>;
    /// `plan`, when the request is known, lets DEL delete without listing.
    fn del_ports(&self, tag: &Tag, plan: Option<&PortPlan>) -> Result<(), FirewallError>;
    fn check_ports(&self, plan: &PortPlan) -> Result<(), FirewallError>;
    fn gc_ports(&self, network: &str, keep: &HashSet<Tag>) -> Result<Vec<Owner>, FirewallError>;
    fn add_isolation(&self, plan: &IsoPlan) -> Result<(), FirewallError>;
    fn check_isolation(&self, plan: &IsoPlan) -> Result<(), FirewallError>;
    /// Removes the network's isolation when `remove`; true if there was some.
    fn gc_isolation(&self, network: &str, remove: bool) -> Result<bool, FirewallError>;
    fn add_forward(&self, plan: &ForwardPlan) -> Result<(), FirewallError>;
    /// `plan`, when the request is known, lets DEL delete without listing.
    fn del_forward(&self, tag: &Tag, plan: Option<&ForwardPlan>) -> Result<(), FirewallError>;
    fn check_forward(&self, plan: &ForwardPlan) -> Result<(), FirewallError>;
    fn gc_forward(&self, network: &str, keep: &HashSet<Tag>) -> Result<Vec<Owner>, FirewallError>;
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

    /// Idempotent: applying twice leaves one copy of each rule. Replaces the owner's rules
    /// in each family `m` has sources in (an address the owner no longer has loses its rule);
    /// only DEL removes the rules of a family `m` does not mention.
    pub fn add_masquerade(&self, m: &Masquerade) -> Result<(), FirewallError> {
        self.backend.add_masquerade(&MasqPlan::new(m)?)
    }

    /// Idempotent: nothing to delete is success, also for an owner no rule can carry.
    pub fn del_masquerade(&self, owner: &Owner) -> Result<(), FirewallError> {
        match Tag::for_teardown(owner) {
            Some(tag) => self.backend.del_masquerade(&tag),
            None => Ok(()),
        }
    }

    /// Error naming what is missing if the rules for `m` are not all present
    /// ([`FirewallError::is_missing`]).
    pub fn check_masquerade(&self, m: &Masquerade) -> Result<(), FirewallError> {
        self.backend.check_masquerade(&MasqPlan::new(m)?)
    }

    /// Removes the masquerade rules of every owner of `network` not in `keep`; returns the
    /// removed owners. Owners are recovered from the rule comments.
    pub fn gc_masquerade(
        &self,
        network: &str,
        keep: &[Owner],
    ) -> Result<Vec<Owner>, FirewallError> {
        model::check_network(network)?;
        self.backend.gc_masquerade(network, &tags(keep)?)
    }

    /// Checks a port mapping request completely without touching anything: every error
    /// [`Firewall::add_port_mappings`] could report about the input.
    pub fn validate_port_mappings(pm: &PortMap) -> Result<(), FirewallError> {
        PortPlan::new(pm).map(drop)
    }

    /// Publishes `pm`'s ports. Validates everything first (nothing is applied on bad
    /// input), then applies one batch per family. Idempotent; a repeated ADD replaces the
    /// owner's mappings. A host port another owner holds is taken over (last ADD wins).
    pub fn add_port_mappings(&self, pm: &PortMap) -> Result<(), FirewallError> {
        let plan = PortPlan::new(pm)?;
        if plan.is_empty() {
            return Ok(());
        }
        self.backend.add_ports(&plan)
    }

    /// Removes exactly `owner`'s port mappings. `request` (the same request ADD got, when
    /// the runtime passes it again) lets the backend delete without listing anything; an
    /// invalid or stale one only costs a listing. Idempotent.
    pub fn del_port_mappings(
        &self,
        owner: &Owner,
        request: Option<&PortMap>,
    ) -> Result<(), FirewallError> {
        let Some(tag) = Tag::for_teardown(owner) else {
            return Ok(());
        };
        let plan = request
            .filter(|pm| pm.owner == *owner)
            .and_then(|pm| PortPlan::new(pm).ok())
            .filter(|p| !p.is_empty());
        self.backend.del_ports(&tag, plan.as_ref())
    }

    /// Error naming what is missing if `pm`'s rules are not all in place.
    pub fn check_port_mappings(&self, pm: &PortMap) -> Result<(), FirewallError> {
        let plan = PortPlan::new(pm)?;
        if plan.is_empty() {
            return Ok(());
        }
        self.backend.check_ports(&plan)
    }

    /// Removes the port mappings of every owner of `network` not in `keep`.
    pub fn gc_port_mappings(
        &self,
        network: &str,
        keep: &[Owner],
    ) -> Result<Vec<Owner>, FirewallError> {
        model::check_network(network)?;
        self.backend.gc_ports(network, &tags(keep)?)
    }

    /// Isolates the network's bridge from the other isolated bridges (idempotent; usually
    /// one fixed-size read when the network is already isolated).
    pub fn add_isolation(&self, iso: &Isolation) -> Result<(), FirewallError> {
        self.backend.add_isolation(&IsoPlan::new(iso)?)
    }

    pub fn check_isolation(&self, iso: &Isolation) -> Result<(), FirewallError> {
        self.backend.check_isolation(&IsoPlan::new(iso)?)
    }

    /// Isolation belongs to the network, not to one attachment: it goes when GC finds no
    /// attachment left (`attachments_left == false`). Returns whether something was removed.
    pub fn gc_isolation(
        &self,
        network: &str,
        attachments_left: bool,
    ) -> Result<bool, FirewallError> {
        model::check_network(network)?;
        self.backend.gc_isolation(network, !attachments_left)
    }

    /// Accepts the forwarded traffic of `f`'s addresses (replies to them, all they send),
    /// behind its admin chain, ahead of a host `FORWARD` policy of DROP. Idempotent; replaces
    /// the owner's addresses. iptables only: the nftables backend does nothing (see
    /// [`forward`](crate::ForwardAccept)).
    pub fn add_forward(&self, f: &ForwardAccept) -> Result<(), FirewallError> {
        let plan = ForwardPlan::new(f)?;
        if plan.addresses.is_empty() {
            return Ok(());
        }
        self.backend.add_forward(&plan)
    }

    /// Removes exactly `owner`'s accept rules. `request` (what ADD got, e.g. from
    /// `prevResult`) lets the backend delete without listing; a stale one only costs a
    /// listing. Idempotent: nothing to delete is success.
    pub fn del_forward(
        &self,
        owner: &Owner,
        request: Option<&ForwardAccept>,
    ) -> Result<(), FirewallError> {
        let Some(tag) = Tag::for_teardown(owner) else {
            return Ok(());
        };
        let plan = request
            .filter(|f| f.owner == *owner)
            .and_then(|f| ForwardPlan::new(f).ok())
            .filter(|p| !p.addresses.is_empty());
        self.backend.del_forward(&tag, plan.as_ref())
    }

    pub fn check_forward(&self, f: &ForwardAccept) -> Result<(), FirewallError> {
        let plan = ForwardPlan::new(f)?;
        if plan.addresses.is_empty() {
            return Ok(());
        }
        self.backend.check_forward(&plan)
    }

    /// Removes the accept rules of every owner of `network` not in `keep`.
    pub fn gc_forward(&self, network: &str, keep: &[Owner]) -> Result<Vec<Owner>, FirewallError> {
        model::check_network(network)?;
        self.backend.gc_forward(network, &tags(keep)?)
    }

    /// Puts every rule of `desired` back where it is missing or wrong, shared chains
    /// included, in one batch per table and family; touches nothing that is in place. For
    /// the runtime after a firewall flush or reload (`nft flush ruleset`, `firewall-cmd
    /// --reload`). Everything is validated first.
    pub fn reconcile(&self, desired: &[Desired]) -> Result<ReconcileReport, FirewallError> {
        let mut plans = Vec::with_capacity(desired.len());
        for d in desired {
            plans.push(match d {
                Desired::Masquerade(m) => Plan::Masquerade(MasqPlan::new(m)?),
                Desired::PortMap(pm) => {
                    let plan = PortPlan::new(pm)?;
                    if plan.is_empty() {
                        continue;
                    }
                    Plan::Ports(plan)
                }
                Desired::Isolation(i) => Plan::Isolation(IsoPlan::new(i)?),
                Desired::Forward(f) => Plan::Forward(ForwardPlan::new(f)?),
            });
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
fn tags(owners: &[Owner]) -> Result<HashSet<Tag>, FirewallError> {
    Ok(owners.iter().filter_map(Tag::for_teardown).collect())
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
