//! The error a plugin reports to its runtime, and the table from library errors to spec codes.

use std::error::Error as StdError;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::names::NameError;
use crate::version::{CniVersion, UnsupportedVersion};

/// Error codes of the CNI specification (1–7, 11, 50, 51) plus the two libcni uses (8, 999).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    IncompatibleVersion,
    UnsupportedField,
    UnknownContainer,
    InvalidEnv,
    Io,
    Decode,
    InvalidConfig,
    /// libcni: "failed to find plugin"; also used by our invoker.
    NotFound,
    TryAgainLater,
    NotAvailable,
    LimitedConnectivity,
    Internal,
    /// A code from another plugin outside this table, passed through unchanged.
    Other(u32),
}

impl ErrorCode {
    pub fn as_u32(self) -> u32 {
        match self {
            ErrorCode::IncompatibleVersion => 1,
            ErrorCode::UnsupportedField => 2,
            ErrorCode::UnknownContainer => 3,
            ErrorCode::InvalidEnv => 4,
            ErrorCode::Io => 5,
            ErrorCode::Decode => 6,
            ErrorCode::InvalidConfig => 7,
            ErrorCode::NotFound => 8,
            ErrorCode::TryAgainLater => 11,
            ErrorCode::NotAvailable => 50,
            ErrorCode::LimitedConnectivity => 51,
            ErrorCode::Internal => 999,
            ErrorCode::Other(n) => n,
        }
    }

    pub fn from_u32(n: u32) -> ErrorCode {
        match n {
            1 => ErrorCode::IncompatibleVersion,
            2 => ErrorCode::UnsupportedField,
            3 => ErrorCode::UnknownContainer,
            4 => ErrorCode::InvalidEnv,
            5 => ErrorCode::Io,
            6 => ErrorCode::Decode,
            7 => ErrorCode::InvalidConfig,
            8 => ErrorCode::NotFound,
            11 => ErrorCode::TryAgainLater,
            50 => ErrorCode::NotAvailable,
            51 => ErrorCode::LimitedConnectivity,
            999 => ErrorCode::Internal,
            n => ErrorCode::Other(n),
        }
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(self.as_u32())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u32::deserialize(d).map(ErrorCode::from_u32)
    }
}

/// The error JSON of the spec: `{"cniVersion", "code", "msg", "details"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniError {
    pub code: ErrorCode,
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    pub fn new(code: ErrorCode, msg: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> CniError {
        self.details = details.into();
        self
    }

    /// Builds an error from a library error: `msg` is its top-level message and `details`
    /// the chain of causes, so the runtime sees what failed and why without parsing.
    pub fn from_error(code: ErrorCode, err: &(dyn StdError + 'static)) -> CniError {
        let mut causes = Vec::new();
        let mut source = err.source();
        while let Some(cause) = source {
            causes.push(cause.to_string());
            source = cause.source();
        }
        CniError {
            code,
            msg: err.to_string(),
            details: causes.join(": "),
        }
    }

    pub fn invalid_config(msg: impl Into<String>) -> CniError {
        CniError::new(ErrorCode::InvalidConfig, msg)
    }

    pub fn internal(msg: impl Into<String>) -> CniError {
        CniError::new(ErrorCode::Internal, msg)
    }

    /// The JSON a plugin prints on stdout before exiting 1.
    pub fn to_json(&self, version: CniVersion) -> serde_json::Value {
        let mut v = serde_json::json!({
            "cniVersion": version.as_str(),
            "code": self.code.as_u32(),
            "msg": self.msg,
        });
        if !self.details.is_empty() {
            v["details"] = self.details.clone().into();
        }
        v
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (code {})", self.msg, self.code.as_u32())?;
        if !self.details.is_empty() {
            write!(f, ": {}", self.details)?;
        }
        Ok(())
    }
}

impl StdError for CniError {}

// The mapping from this crate's error types to spec codes, in one place.

impl From<UnsupportedVersion> for CniError {
    fn from(e: UnsupportedVersion) -> CniError {
        CniError::new(ErrorCode::IncompatibleVersion, "incompatible CNI versions")
            .with_details(e.to_string())
    }
}

impl From<NameError> for CniError {
    fn from(e: NameError) -> CniError {
        let code = match e {
            NameError::EmptyContainerId => ErrorCode::UnknownContainer,
            NameError::BadContainerId(_) | NameError::IfName(_) => ErrorCode::InvalidEnv,
            NameError::EmptyNetworkName | NameError::BadNetworkName(_) => ErrorCode::InvalidConfig,
        };
        CniError::new(code, e.to_string())
    }
}

impl From<serde_json::Error> for CniError {
    fn from(e: serde_json::Error) -> CniError {
        use serde_json::error::Category;
        let code = match e.classify() {
            Category::Io => ErrorCode::Io,
            // Syntax errors and wrong types are both "cannot decode" for the runtime.
            Category::Syntax | Category::Eof | Category::Data => ErrorCode::Decode,
        };
        CniError::new(code, format!("decode network configuration: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for n in [1, 2, 3, 4, 5, 6, 7, 8, 11, 50, 51, 999, 123] {
            assert_eq!(ErrorCode::from_u32(n).as_u32(), n);
        }
    }

    #[test]
    fn json_shape_matches_spec() {
        let e = CniError::new(ErrorCode::TryAgainLater, "busy").with_details("lock held");
        assert_eq!(
            e.to_json(CniVersion::V1_0_0),
            serde_json::json!({"cniVersion": "1.0.0", "code": 11, "msg": "busy", "details": "lock held"})
        );
        let parsed: CniError =
            serde_json::from_str(r#"{"cniVersion":"1.0.0","code":7,"msg":"bad"}"#).unwrap();
        assert_eq!(parsed.code, ErrorCode::InvalidConfig);
    }

    #[test]
    fn name_errors_map_like_libcni() {
        let e: CniError = NameError::BadContainerId("../x".into()).into();
        assert_eq!(e.code, ErrorCode::InvalidEnv);
        let e: CniError = NameError::BadNetworkName("/".into()).into();
        assert_eq!(e.code, ErrorCode::InvalidConfig);
    }

    #[test]
    fn chain_goes_to_details() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        #[derive(Debug, thiserror::Error)]
        #[error("open store")]
        struct Outer(#[source] std::io::Error);
        let e = CniError::from_error(ErrorCode::Io, &Outer(io));
        assert_eq!(e.msg, "open store");
        assert_eq!(e.details, "gone");
    }
}
