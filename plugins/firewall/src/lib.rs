//! Firewall rules for Berth's plugins: one rule model, an iptables and an nftables backend.
//!
//! Today: masquerading of container addresses (`ipMasq` of `bridge` and `veth`). Port
//! mappings (`portmap`) and isolation will use the same [`Owner`] tags, comment format and
//! backend trait.
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
//! of the thread that spawns it. For the host's NAT (masquerade, portmap) call these from the
//! plugin's own thread, not inside `Netns::run` of the container.
//!
//! # Concurrency
//! Each call reads the current rules once and then applies one atomic batch per family
//! (iptables) or one transaction (nftables). Calls for different owners never touch each
//! other's rules; a batch that fails because a concurrent call for the same owner changed the
//! rules in between is recomputed from a fresh read, a few times.

mod iptables;
mod model;
mod nftables;
mod runner;

use std::collections::HashSet;

pub use iptables::{CHAIN_PREFIX, IptablesError, IptablesVariant};
pub use model::{Family, InputError, MAX_COMMENT};
pub use nftables::NftError;
pub use runner::RunError;

use model::{MasqPlan, Tag};

/// A firewall implementation, as named by the `ipMasqBackend` config key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Iptables,
    Nftables,
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

/// Masquerading of one attachment's addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Masquerade {
    pub owner: Owner,
    /// Container addresses with their subnet prefix, e.g. 10.88.0.5/16: traffic from the
    /// address to destinations outside the subnet (and not multicast) is masqueraded.
    pub sources: Vec<ipnetwork::IpNetwork>,
}

/// Errors of the firewall layer: invalid input or a failure of the chosen backend.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error(transparent)]
    Input(#[from] InputError),
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
    /// `check_masquerade` found rules missing (as opposed to failing to look).
    pub fn is_missing(&self) -> bool {
        matches!(
            self,
            FirewallError::Iptables(IptablesError::Missing { .. })
                | FirewallError::Nftables(NftError::Missing { .. })
        )
    }
}

/// What each backend does with the rule model. New rule kinds (port mappings, isolation)
/// become new methods here, implemented by both backends.
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
}

/// The chosen firewall backend. All methods act on the network namespace of the calling
/// thread (see the [crate docs](crate#which-namespace)).
#[derive(Debug)]
pub struct Firewall {
    backend: Box<dyn Backend>,
}

impl Firewall {
    /// `requested` (from the plugin's `ipMasqBackend`) or, when None, iptables if the host
    /// uses it (an `iptables` binary that works), else nftables. Detects the iptables variant
    /// (nf_tables vs legacy) and always uses the matching `iptables-restore`/`ip6tables-restore`.
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

    /// Idempotent: nothing to delete is success.
    pub fn del_masquerade(&self, owner: &Owner) -> Result<(), FirewallError> {
        self.backend.del_masquerade(&Tag::new(owner)?)
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
        let keep = keep
            .iter()
            .map(Tag::new)
            .collect::<Result<HashSet<_>, _>>()?;
        self.backend.gc_masquerade(network, &keep)
    }

    /// Err when the backend cannot be used (binary missing, table not listable) — callers
    /// report CNI code 50.
    pub fn status(&self) -> Result<(), FirewallError> {
        self.backend.status()
    }
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
