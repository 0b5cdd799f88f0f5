//! The `sysctl` key: which files under `/proc/sys` a configuration may write, and writing them
//! in the container's namespace with the old values kept for a rollback.
//!
//! `/proc/sys/net` is per network namespace, and a `/proc/sys` file belongs to the namespace of
//! the thread that opens it, so all reads and writes happen inside [`Netns::run`].

use berth_netlink::{Errno, Netns, NetnsError, SysctlError, error_chain, sysctl};

/// One sysctl to write: the key as configured, the path under `/proc/sys` it resolved to (dots
/// turned into `/`, `IFNAME` substituted, checked to stay under `net/`), and the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sysctl {
    pub key: String,
    pub path: String,
    pub value: String,
}

/// Errors of resolving a configured key (nothing has been touched yet).
#[derive(Debug, thiserror::Error)]
pub enum SysctlKeyError {
    /// Same wording as the reference's "invalid net sysctl key".
    #[error("invalid net sysctl key: {key:?}: {reason}")]
    NotNet { key: String, reason: &'static str },
    #[error("invalid net sysctl key: {key:?}")]
    Path {
        key: String,
        #[source]
        source: SysctlError,
    },
}

/// Errors of writing or reading sysctls in the container's namespace.
#[derive(Debug, thiserror::Error)]
pub enum SysctlStepError {
    #[error("enter {netns} for its sysctls")]
    Enter {
        netns: String,
        #[source]
        source: NetnsError,
    },
    #[error("sysctl {key:?}")]
    Access {
        key: String,
        #[source]
        source: SysctlError,
    },
    /// Rollback: some old values could not be written back.
    #[error("put sysctls back: {}", .0.iter().map(|e| error_chain(e)).collect::<Vec<_>>().join("; "))]
    PutBack(Vec<SysctlError>),
    /// CHECK: the value in the kernel is not the configured one.
    #[error("sysctl {key:?} ({path}) is {got:?}, configured {want:?}")]
    Differs {
        key: String,
        path: String,
        want: String,
        got: String,
    },
}

/// Turns a configured key into a path relative to `/proc/sys`, as the reference does: every
/// `.` becomes `/` (so `net.ipv4.ip_forward` and `net/ipv4/ip_forward` are the same key), then
/// the first `IFNAME` becomes the interface name. The interface name is substituted *after* the
/// dots are converted, so a name such as `eth0.100` stays one path component.
///
/// The result must stay inside `/proc/sys/net/`. The reference joins and cleans the path and
/// checks the prefix; here any component that is empty, `.` or `..` and any leading `/` is
/// refused outright, so no spelling reaches a file outside `net/` or a different file than the
/// one written (see README: `net..core` and `/net/core/x` are refused, the reference cleans
/// them).
pub fn resolve(key: &str, ifname: &str) -> Result<String, SysctlKeyError> {
    let path = key.replace('.', "/").replacen("IFNAME", ifname, 1);
    sysctl::key_path(&path).map_err(|source| SysctlKeyError::Path {
        key: key.to_owned(),
        source,
    })?;
    let mut parts = path.split('/');
    if parts.next() != Some("net") {
        return Err(SysctlKeyError::NotNet {
            key: key.to_owned(),
            reason: "only keys under net. (the network namespace's) can be set",
        });
    }
    if parts.next().is_none() {
        return Err(SysctlKeyError::NotNet {
            key: key.to_owned(),
            reason: "names a directory, not a key",
        });
    }
    Ok(path)
}

/// A sysctl that was written, and its value before (when it could be read).
#[derive(Debug, Clone)]
pub struct Written {
    pub path: String,
    pub old: Option<String>,
}

/// Writes `sysctls` in order inside `ns`. On failure the ones already written are put back
/// before returning, so the caller only has to undo a *successful* call (with [`restore`]).
pub fn apply(ns: &Netns, sysctls: &[Sysctl]) -> Result<Vec<Written>, SysctlStepError> {
    ns.run(|| {
        let mut written = Vec::with_capacity(sysctls.len());
        for s in sysctls {
            match write_one(s) {
                Ok(old) => written.push(Written {
                    path: s.path.clone(),
                    old,
                }),
                Err(e) => {
                    for failure in restore_here(&written) {
                        eprintln!("tuning: rollback: {}", error_chain(&failure));
                    }
                    return Err(e);
                }
            }
        }
        Ok(written)
    })
    .map_err(|source| SysctlStepError::Enter {
        netns: ns.to_string(),
        source,
    })?
}

/// Reads the old value, then writes the new one. Write-only keys (`net.ipv4.route.flush`,
/// mode 0200: even root gets EACCES on read) are written without an old value: they are
/// triggers, there is nothing to put back.
fn write_one(s: &Sysctl) -> Result<Option<String>, SysctlStepError> {
    let access = |source| SysctlStepError::Access {
        key: s.key.clone(),
        source,
    };
    let old = match sysctl::read(&s.path) {
        Ok(v) => Some(v),
        Err(e) if matches!(e.errno(), Some(libc::EACCES | libc::EPERM)) => None,
        Err(e) => return Err(access(e)),
    };
    sysctl::write(&s.path, &s.value).map_err(access)?;
    Ok(old)
}

/// Puts the old values back, last written first, inside `ns` (ADD's rollback).
pub fn restore(ns: &Netns, written: &[Written]) -> Result<(), SysctlStepError> {
    let failures = ns
        .run(|| restore_here(written))
        .map_err(|source| SysctlStepError::Enter {
            netns: ns.to_string(),
            source,
        })?;
    if failures.is_empty() {
        Ok(())
    } else {
        Err(SysctlStepError::PutBack(failures))
    }
}

/// [`restore`] on the calling thread, which must already be in the namespace. Keeps going
/// after a failure; returns every failure.
fn restore_here(written: &[Written]) -> Vec<SysctlError> {
    written
        .iter()
        .rev()
        .filter_map(|w| sysctl::write(&w.path, w.old.as_deref()?).err())
        .collect()
}

/// CHECK: every configured value is what the kernel holds now. Values are compared as
/// whitespace-separated words: the kernel prints multi-value keys (`tcp_rmem`) with tabs,
/// whatever separator was written.
pub fn check(ns: &Netns, sysctls: &[Sysctl]) -> Result<(), SysctlStepError> {
    ns.run(|| {
        for s in sysctls {
            let got = sysctl::read(&s.path).map_err(|source| SysctlStepError::Access {
                key: s.key.clone(),
                source,
            })?;
            if !got.split_whitespace().eq(s.value.split_whitespace()) {
                return Err(SysctlStepError::Differs {
                    key: s.key.clone(),
                    path: format!("/proc/sys/{}", s.path),
                    want: s.value.clone(),
                    got,
                });
            }
        }
        Ok(())
    })
    .map_err(|source| SysctlStepError::Enter {
        netns: ns.to_string(),
        source,
    })?
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn dots_and_ifname_resolve_like_the_reference() {
        let ok = |key: &str, ifname: &str| resolve(key, ifname).unwrap();
        assert_eq!(ok("net.core.somaxconn", "eth0"), "net/core/somaxconn");
        assert_eq!(ok("net/ipv4/ip_forward", "eth0"), "net/ipv4/ip_forward");
        assert_eq!(
            ok("net.ipv4.conf.IFNAME.arp_filter", "eth0.100"),
            "net/ipv4/conf/eth0.100/arp_filter"
        );
        // Only the first IFNAME is substituted, as in the reference.
        assert_eq!(
            ok("net.ipv4.conf.IFNAME.IFNAME", "eth0"),
            "net/ipv4/conf/eth0/IFNAME"
        );
    }

    #[test]
    fn keys_outside_net_or_with_path_tricks_are_refused() {
        for key in [
            "kernel.hostname",
            "kernel/hostname",
            "net",
            "net.",
            "network.x",
            "/net/core/somaxconn",
            "/proc/sys/net/core/somaxconn",
            "net/../kernel/hostname",
            "net/core/../../kernel/hostname",
            "net..core.somaxconn",
            "net/./core/somaxconn",
            "net/core/somaxconn/",
            "",
            "net/core/\0",
        ] {
            assert!(resolve(key, "eth0").is_err(), "{key:?} was accepted");
        }
    }
}
