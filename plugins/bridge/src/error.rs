//! The one table from this plugin's errors to CNI error codes. Messages are the top-level
//! `Display`; `details` carry the chain of causes (and, for ADD, undo steps that failed).

use berth_cni::{CniError, ErrorCode};
use berth_netlink::error_chain;

use crate::check::CheckError;
use crate::config::ConfigError;
use crate::setup::{AddFailure, SetupError};
use crate::spoof::SpoofError;
use crate::teardown::{TeardownError, TeardownErrors};
use berth_firewall::MasqError;

impl From<ConfigError> for CniError {
    fn from(e: ConfigError) -> CniError {
        let code = match &e {
            ConfigError::Arg { source, .. } => source.code,
            _ => ErrorCode::InvalidConfig,
        };
        CniError::from_error(code, &e)
    }
}

fn setup_code(e: &SetupError) -> ErrorCode {
    match e {
        SetupError::OpenNetns { .. } => ErrorCode::InvalidEnv,
        SetupError::VlanUnsupported { .. } => ErrorCode::UnsupportedField,
        // The IPAM plugin's own code (e.g. 11 "try again later" when a range is full).
        SetupError::Ipam { source, .. } => source.code,
        SetupError::Masq(MasqError::Detect { .. }) => ErrorCode::NotAvailable,
        SetupError::Spoof(SpoofError::Detect(_)) => ErrorCode::NotAvailable,
        _ => ErrorCode::Internal,
    }
}

impl From<AddFailure> for CniError {
    fn from(f: AddFailure) -> CniError {
        let mut err = CniError::from_error(setup_code(&f.error), &*f.error);
        if !f.undo_failures.is_empty() {
            let undo = format!("rollback failed: {}", f.undo_failures.join("; "));
            err.details = if err.details.is_empty() {
                undo
            } else {
                format!("{}; {undo}", err.details)
            };
        }
        err
    }
}

impl From<CheckError> for CniError {
    fn from(e: CheckError) -> CniError {
        let code = match &e {
            CheckError::OpenNetns { .. } => ErrorCode::InvalidEnv,
            _ => ErrorCode::Internal,
        };
        CniError::from_error(code, &e)
    }
}

fn teardown_code(e: &TeardownError) -> ErrorCode {
    match e {
        TeardownError::Ipam { source, .. } => source.code,
        TeardownError::OpenNetns { .. } => ErrorCode::InvalidEnv,
        _ => ErrorCode::Internal,
    }
}

impl From<TeardownErrors> for CniError {
    /// All failures in one message; the code is the failure's own when there is only one.
    fn from(TeardownErrors(errors): TeardownErrors) -> CniError {
        let code = match errors.as_slice() {
            [one] => teardown_code(one),
            _ => ErrorCode::Internal,
        };
        let all: Vec<String> = errors.iter().map(|e| error_chain(e)).collect();
        CniError::new(
            code,
            format!(
                "bridge: {} step(s) failed: {}",
                errors.len(),
                all.join("; ")
            ),
        )
    }
}

/// STATUS: anything that makes the plugin unusable is "not available" (50).
pub fn status_error(e: &(dyn std::error::Error + 'static)) -> CniError {
    CniError::from_error(ErrorCode::NotAvailable, e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::setup::Step;

    #[test]
    fn codes() {
        let e: CniError = ConfigError::HairpinAndPromisc.into();
        assert_eq!(e.code, ErrorCode::InvalidConfig);
        let ipam = CniError::new(ErrorCode::TryAgainLater, "range full");
        let e: CniError = AddFailure::from(SetupError::Ipam {
            ipam: "host-local".into(),
            source: ipam.clone(),
        })
        .into();
        assert_eq!(e.code, ErrorCode::TryAgainLater);
        assert!(e.details.contains("range full"), "{e:?}");
        let e: CniError = AddFailure {
            error: Box::new(SetupError::Failpoint(Step::Veth)),
            undo_failures: vec!["delete veth x: boom".into()],
        }
        .into();
        assert_eq!(e.code, ErrorCode::Internal);
        assert!(e.details.contains("rollback failed: delete veth x: boom"));
        let e: CniError = TeardownErrors(vec![TeardownError::Ipam {
            ipam: "host-local".into(),
            verb: "DEL",
            source: ipam,
        }])
        .into();
        assert_eq!(e.code, ErrorCode::TryAgainLater);
        assert!(e.msg.contains("range full"), "{e:?}");
    }
}
