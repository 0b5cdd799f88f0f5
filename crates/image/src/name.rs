//! Image names. Parse, don't validate: past the CLI edge an image is an [`ImageName`], so the
//! store can use it as a directory name and the runtime in overlayfs' `lowerdir=` option.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Errors of the `name` module.
#[derive(Debug, thiserror::Error)]
pub enum NameError {
    #[error(
        "invalid image name {name:?}: use [a-z0-9][a-z0-9_.-]*, at most {MAX_NAME} characters (tags other than :latest arrive with registry support)"
    )]
    ImageName { name: String },
}

/// Longest image name accepted.
pub const MAX_NAME: usize = 128;

/// A local image name: `[a-z0-9][a-z0-9_.-]*`. A `:latest` suffix is accepted and dropped;
/// other tags and registry paths arrive with registry support. The name is a directory under
/// `<root>/images` and part of overlayfs' `lowerdir=` option, so it can contain neither `/`
/// nor `:` nor `,`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ImageName(String);

impl ImageName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for ImageName {
    type Error = NameError;
    fn try_from(name: &str) -> Result<Self, NameError> {
        let bare = name.strip_suffix(":latest").unwrap_or(name);
        let mut bytes = bare.bytes();
        let valid = bare.len() <= MAX_NAME
            && bytes
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && bytes.all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
            });
        if valid {
            Ok(ImageName(bare.to_owned()))
        } else {
            Err(NameError::ImageName {
                name: name.to_owned(),
            })
        }
    }
}

impl TryFrom<String> for ImageName {
    type Error = NameError;
    fn try_from(name: String) -> Result<Self, NameError> {
        ImageName::try_from(name.as_str())
    }
}

impl From<ImageName> for String {
    fn from(name: ImageName) -> String {
        name.0
    }
}

impl fmt::Display for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names_are_safe_path_and_overlay_components() {
        assert_eq!(
            ImageName::try_from("busybox:latest").unwrap().as_str(),
            "busybox"
        );
        for ok in ["busybox", "alpine3.20", "my-image_1"] {
            assert!(ImageName::try_from(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Busybox",
            "a/b",
            "..",
            ".x",
            "a:b",
            "a,b",
            "alpine:3",
            "docker.io/x",
        ] {
            assert!(ImageName::try_from(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn serde_validates() {
        assert!(serde_json::from_str::<ImageName>("\"a/b\"").is_err());
        let name: ImageName = serde_json::from_str("\"busybox\"").unwrap();
        assert_eq!(serde_json::to_string(&name).unwrap(), "\"busybox\"");
    }
}
