//! Reading and writing `/proc/sys` keys.
//!
//! `/proc/sys/net/...` resolves against the network namespace of the thread that *opens* the
//! file. These functions therefore act on the calling thread's namespace: to change a sysctl
//! of another namespace, call them inside [`crate::Netns::run`]:
//!
//! ```no_run
//! # fn demo(ns: &berth_netlink::Netns) -> Result<(), Box<dyn std::error::Error>> {
//! ns.run(|| berth_netlink::sysctl::write("net/ipv4/ip_forward", "1"))??;
//! # Ok(())
//! # }
//! ```

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::socket::Errno;

const PROC_SYS: &str = "/proc/sys";

/// Errors of the `sysctl` module.
#[derive(Debug, thiserror::Error)]
pub enum SysctlError {
    #[error("invalid sysctl key {key:?}: {reason}")]
    InvalidKey { key: String, reason: &'static str },
    #[error("read sysctl {key}")]
    Read {
        key: String,
        #[source]
        source: io::Error,
    },
    #[error("write {value:?} to sysctl {key}")]
    Write {
        key: String,
        value: String,
        #[source]
        source: io::Error,
    },
}

impl Errno for SysctlError {
    fn errno(&self) -> Option<i32> {
        match self {
            Self::InvalidKey { .. } => None,
            Self::Read { source, .. } | Self::Write { source, .. } => source.raw_os_error(),
        }
    }
}

/// Maps a key such as `net/ipv4/conf/eth0/forwarding` to its file under `/proc/sys`.
///
/// Keys use `/` separators: dots are legal in interface names (`eth0.100`), so the dotted
/// `sysctl` notation is ambiguous. Absolute paths, `.`/`..` components and empty components
/// are refused, so a key cannot escape `/proc/sys`.
pub fn key_path(key: &str) -> Result<PathBuf, SysctlError> {
    let invalid = |reason| SysctlError::InvalidKey {
        key: key.to_owned(),
        reason,
    };
    if key.is_empty() {
        return Err(invalid("empty"));
    }
    if key.contains('\0') {
        return Err(invalid("contains a NUL byte"));
    }
    if key.starts_with('/') {
        return Err(invalid("must be relative to /proc/sys"));
    }
    if key.split('/').any(str::is_empty) {
        return Err(invalid("has an empty component"));
    }
    // Checked on the raw text: `Path::components` silently drops inner `.` components.
    if key.split('/').any(|c| c == "." || c == "..") {
        return Err(invalid("must not contain . or .. components"));
    }
    Ok(Path::new(PROC_SYS).join(key))
}

/// Reads a sysctl of the calling thread's namespace, without the trailing newline.
pub fn read(key: &str) -> Result<String, SysctlError> {
    let path = key_path(key)?;
    let text = fs::read_to_string(path).map_err(|source| SysctlError::Read {
        key: key.to_owned(),
        source,
    })?;
    Ok(text.trim_end_matches('\n').to_owned())
}

/// Writes a sysctl of the calling thread's namespace.
pub fn write(key: &str, value: &str) -> Result<(), SysctlError> {
    let path = key_path(key)?;
    // No O_CREAT (unlike fs::write): a missing key is ENOENT, not an attempt to create it.
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut file| file.write_all(value.as_bytes()))
        .map_err(|source| SysctlError::Write {
            key: key.to_owned(),
            value: value.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_under_proc_sys() {
        assert_eq!(
            key_path("net/ipv4/conf/eth0.100/forwarding").expect("valid"),
            Path::new("/proc/sys/net/ipv4/conf/eth0.100/forwarding")
        );
    }

    #[test]
    fn escaping_keys_are_refused() {
        for key in [
            "",
            "/etc/passwd",
            "net/../../etc/passwd",
            "..",
            "net/./ipv4",
            "net//ipv4",
            "net/ipv4/",
            "a\0b",
        ] {
            let err = key_path(key).expect_err(key);
            assert!(matches!(err, SysctlError::InvalidKey { .. }), "{key:?}");
        }
    }

    #[test]
    fn reading_a_world_readable_key_works() {
        let value = read("kernel/ostype").expect("read kernel/ostype");
        assert_eq!(value, "Linux");
    }

    #[test]
    fn missing_key_reports_not_found() {
        let err = read("net/berth/does-not-exist").expect_err("missing");
        assert!(err.is_not_found(), "{err:?}");
    }
}
