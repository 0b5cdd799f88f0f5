//! CNI specification versions this library speaks, and what each one allows.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A CNI specification version this library can read and emit.
///
/// The pre-0.3.0 result formats (`ip4`/`ip6` objects) are not supported: no maintained runtime
/// asks for them any more, and the spec keeps them only for compatibility.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum CniVersion {
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

impl CniVersion {
    /// Every version, oldest first: the `supportedVersions` a plugin reports.
    pub const ALL: [CniVersion; 5] = [
        CniVersion::V0_3_0,
        CniVersion::V0_3_1,
        CniVersion::V0_4_0,
        CniVersion::V1_0_0,
        CniVersion::V1_1_0,
    ];

    pub const LATEST: CniVersion = CniVersion::V1_1_0;

    pub fn as_str(self) -> &'static str {
        match self {
            CniVersion::V0_3_0 => "0.3.0",
            CniVersion::V0_3_1 => "0.3.1",
            CniVersion::V0_4_0 => "0.4.0",
            CniVersion::V1_0_0 => "1.0.0",
            CniVersion::V1_1_0 => "1.1.0",
        }
    }

    /// CHECK arrived with 0.4.0.
    pub fn allows_check(self) -> bool {
        self >= CniVersion::V0_4_0
    }

    /// STATUS and GC arrived with 1.1.0.
    pub fn allows_status_and_gc(self) -> bool {
        self >= CniVersion::V1_1_0
    }

    /// Results before 1.0.0 carry a `version` ("4"/"6") on each IP.
    pub(crate) fn ip_has_version_field(self) -> bool {
        self < CniVersion::V1_0_0
    }

    /// 1.1.0 added interface `mtu`/`socketPath`/`pciID` and route `mtu`/`advmss`/…
    pub(crate) fn has_1_1_fields(self) -> bool {
        self >= CniVersion::V1_1_0
    }
}

impl fmt::Display for CniVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unsupported CNI version {0:?} (supported: 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0)")]
pub struct UnsupportedVersion(pub String);

impl TryFrom<&str> for CniVersion {
    type Error = UnsupportedVersion;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        CniVersion::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnsupportedVersion(s.to_owned()))
    }
}

impl TryFrom<String> for CniVersion {
    type Error = UnsupportedVersion;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        CniVersion::try_from(s.as_str())
    }
}

impl From<CniVersion> for String {
    fn from(v: CniVersion) -> String {
        v.as_str().to_owned()
    }
}

/// Picks the newest version this library supports out of a list's `cniVersions` (spec 1.1),
/// ignoring versions it does not know, as libcni does.
pub fn newest_supported<'a>(candidates: impl IntoIterator<Item = &'a str>) -> Option<CniVersion> {
    candidates
        .into_iter()
        .filter_map(|s| CniVersion::try_from(s).ok())
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_supported_version_and_rejects_others() {
        for v in CniVersion::ALL {
            assert_eq!(CniVersion::try_from(v.as_str()), Ok(v));
        }
        for bad in ["0.2.0", "1.2.0", "", "1.0", "v1.0.0"] {
            assert!(CniVersion::try_from(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn gates_follow_the_spec() {
        assert!(!CniVersion::V0_3_1.allows_check());
        assert!(CniVersion::V0_4_0.allows_check());
        assert!(!CniVersion::V1_0_0.allows_status_and_gc());
        assert!(CniVersion::V1_1_0.allows_status_and_gc());
    }

    #[test]
    fn newest_supported_ignores_unknown() {
        assert_eq!(
            newest_supported(["0.4.0", "1.1.0", "9.9.9"]),
            Some(CniVersion::V1_1_0)
        );
        assert_eq!(newest_supported(["9.9.9"]), None);
    }
}
