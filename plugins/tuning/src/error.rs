//! The plugin's error, and the one mapping from it to CNI error codes.

use std::path::PathBuf;

use berth_cni::{CniError, ErrorCode};
use berth_netlink::{LinkError, NetnsError, OpenError, error_chain};

use crate::attrs::{Mismatch, RestoreError};
use crate::config::ConfigError;
use crate::state::StateError;
use crate::sysctl::SysctlStepError;

/// Everything a verb can fail with.
#[derive(Debug, thiserror::Error)]
pub enum TuningError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The reference's wording: tuning only ever runs chained after a plugin that made the
    /// interface.
    #[error("Required prevResult missing")]
    NoPrevResult,
    #[error("open the container's network namespace {path}")]
    Netns {
        path: PathBuf,
        #[source]
        source: NetnsError,
    },
    #[error("open rtnetlink in {netns}")]
    Netlink {
        netns: String,
        #[source]
        source: OpenError,
    },
    #[error(transparent)]
    Sysctl(#[from] SysctlStepError),
    #[error("interface {ifname} not found in {netns}")]
    LinkMissing { ifname: String, netns: String },
    /// The kernel let ADD replace such an address (`lo`'s all zeros) but would refuse it back,
    /// so DEL could never restore it.
    #[error(
        "mac of {ifname} in {netns} cannot be changed: its address {mac} could not be put back"
    )]
    MacNotRestorable {
        ifname: String,
        netns: String,
        mac: String,
    },
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Check(#[from] Mismatch),
    #[error("restore the original values")]
    Restore(#[from] RestoreError),
    /// DEL or GC tried everything; these failed.
    #[error("{}", .0.iter().map(|e| error_chain(e)).collect::<Vec<_>>().join("; "))]
    Teardown(Vec<TuningError>),
}

impl TuningError {
    /// The outcome of a best-effort teardown.
    pub fn teardown(mut errors: Vec<TuningError>) -> Result<(), TuningError> {
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(TuningError::Teardown(errors)),
        }
    }

    /// The reference reports every failure of this plugin as a plain Go error, which its skel
    /// turns into code 999. Ours says what the spec's codes say where it can: a configuration
    /// the plugin refuses (bad keys, values, a missing prevResult) is 7, a wrongly typed
    /// `args.cni`/`runtimeConfig` value keeps berth-cni's decode code (6); what the kernel or
    /// the system refused (a missing interface, a sysctl write, a MAC the driver rejects) stays
    /// 999, like the reference's.
    fn code(&self) -> ErrorCode {
        match self {
            TuningError::Config(ConfigError::Arg { source, .. }) => source.code,
            TuningError::Config(_) | TuningError::NoPrevResult => ErrorCode::InvalidConfig,
            TuningError::Teardown(errors) => errors.first().map_or(ErrorCode::Internal, Self::code),
            _ => ErrorCode::Internal,
        }
    }
}

impl From<TuningError> for CniError {
    fn from(err: TuningError) -> CniError {
        CniError::from_error(err.code(), &err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_name_the_configuration_or_the_system() {
        let e = CniError::from(TuningError::NoPrevResult);
        assert_eq!(e.code, ErrorCode::InvalidConfig);
        assert_eq!(e.msg, "Required prevResult missing");
        let arg = TuningError::Config(ConfigError::Arg {
            key: "args.cni.mtu",
            source: CniError::new(ErrorCode::Decode, "bad"),
        });
        assert_eq!(CniError::from(arg).code, ErrorCode::Decode);
        let many = TuningError::Teardown(vec![
            TuningError::NoPrevResult,
            TuningError::LinkMissing {
                ifname: "eth0".into(),
                netns: "/run/netns/x".into(),
            },
        ]);
        let e = CniError::from(many);
        assert_eq!(e.code, ErrorCode::InvalidConfig);
        assert!(
            e.msg.contains("prevResult") && e.msg.contains("eth0"),
            "{e}"
        );
    }
}
