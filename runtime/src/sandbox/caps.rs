//! Linux capabilities: names, the docker default set, `--cap-add`/`--cap-drop`, and applying a
//! set to the calling (single-threaded, still root) init process.
//!
//! Applying uses the raw syscalls (`prctl(PR_CAPBSET_DROP)`, `capset(2)` v3,
//! `prctl(PR_CAP_AMBIENT)`) rather than a crate: it is a few lines, and the order matters.
//! After the bounding set is reduced, an `execve` by uid 0 gets permitted = effective =
//! bounding set (the kernel treats root's file capabilities as all ones, intersected with the
//! bounding set), so the bounding set is what the container ends up with; capset makes the
//! current sets agree, and inheritable and ambient are cleared (CVE-2022-24769: a non-empty
//! inheritable set lets file capabilities grant more than the bounding set suggests).
//! A non-root user (see [`crate::sandbox::user`]) keeps the bounding set but gets empty
//! current sets, as in docker; with `no_new_privs` no file capability or setuid bit can
//! raise them again.

use std::fmt;
use std::fs;
use std::io;

use serde::{Deserialize, Serialize};

/// Errors of the `caps` module.
#[derive(Debug, thiserror::Error)]
pub enum CapsError {
    #[error("unknown capability {name:?} (use names like NET_ADMIN or CAP_NET_ADMIN, or ALL)")]
    Unknown { name: String },
    #[error("drop {cap} from the bounding set")]
    DropBounding {
        cap: Capability,
        #[source]
        source: io::Error,
    },
    #[error("set the capability sets to {set}")]
    Capset {
        set: CapSet,
        #[source]
        source: io::Error,
    },
    #[error("clear the ambient capability set")]
    ClearAmbient(#[source] io::Error),
}

/// Capability names by number (`include/uapi/linux/capability.h`), without the `CAP_` prefix.
const NAMES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// One capability, by number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Capability(u8);

impl Capability {
    pub const CHOWN: Capability = Capability(0);
    pub const DAC_OVERRIDE: Capability = Capability(1);
    pub const FOWNER: Capability = Capability(3);
    pub const FSETID: Capability = Capability(4);
    pub const KILL: Capability = Capability(5);
    pub const SETGID: Capability = Capability(6);
    pub const SETUID: Capability = Capability(7);
    pub const SETPCAP: Capability = Capability(8);
    pub const NET_BIND_SERVICE: Capability = Capability(10);
    pub const NET_ADMIN: Capability = Capability(12);
    pub const NET_RAW: Capability = Capability(13);
    pub const SYS_MODULE: Capability = Capability(16);
    pub const SYS_RAWIO: Capability = Capability(17);
    pub const SYS_CHROOT: Capability = Capability(18);
    pub const SYS_PACCT: Capability = Capability(20);
    pub const SYS_ADMIN: Capability = Capability(21);
    pub const SYS_BOOT: Capability = Capability(22);
    pub const SYS_TIME: Capability = Capability(25);
    pub const SYS_TTY_CONFIG: Capability = Capability(26);
    pub const MKNOD: Capability = Capability(27);
    pub const AUDIT_WRITE: Capability = Capability(29);
    pub const SETFCAP: Capability = Capability(31);
    pub const SYSLOG: Capability = Capability(34);
    pub const BPF: Capability = Capability(39);

    pub fn number(self) -> u8 {
        self.0
    }

    /// `CAP_NET_ADMIN`, `net_admin` and `NET_ADMIN` all name the same capability.
    pub fn parse(name: &str) -> Result<Capability, CapsError> {
        let upper = name.to_ascii_uppercase();
        let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
        NAMES
            .iter()
            .position(|n| *n == bare)
            .and_then(|i| u8::try_from(i).ok())
            .map(Capability)
            .ok_or_else(|| CapsError::Unknown {
                name: name.to_owned(),
            })
    }

    pub fn name(self) -> &'static str {
        NAMES.get(usize::from(self.0)).copied().unwrap_or("UNKNOWN")
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CAP_{}", self.name())
    }
}

/// A set of capabilities as the kernel's 64-bit mask. Serialized as a list of `CAP_*` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct CapSet(u64);

impl CapSet {
    pub const EMPTY: CapSet = CapSet(0);

    /// Docker's (and podman's) default set.
    pub fn docker_default() -> CapSet {
        [
            Capability::CHOWN,
            Capability::DAC_OVERRIDE,
            Capability::FSETID,
            Capability::FOWNER,
            Capability::MKNOD,
            Capability::NET_RAW,
            Capability::SETGID,
            Capability::SETUID,
            Capability::SETFCAP,
            Capability::SETPCAP,
            Capability::NET_BIND_SERVICE,
            Capability::SYS_CHROOT,
            Capability::KILL,
            Capability::AUDIT_WRITE,
        ]
        .into_iter()
        .collect()
    }

    /// Every capability this build knows about.
    pub fn all() -> CapSet {
        (0..NAMES.len())
            .filter_map(|i| u8::try_from(i).ok())
            .map(Capability)
            .collect()
    }

    /// A privileged container's set: every capability this build knows that `berth` itself
    /// holds (its permitted set: where the runtime runs with some removed, as in a
    /// restricted VM or a container, asking for more would fail at start).
    pub fn privileged() -> CapSet {
        let held = fs::read_to_string("/proc/thread-self/status")
            .ok()
            .and_then(|status| {
                status.lines().find_map(|l| {
                    l.strip_prefix("CapPrm:")
                        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
                })
            })
            .unwrap_or(u64::MAX);
        CapSet(CapSet::all().0 & held)
    }

    /// Docker's `TweakCapabilities`: `--cap-add ALL` grants everything but the drops;
    /// `--cap-drop ALL` keeps only the adds; otherwise default − drops + adds (an add wins
    /// over a drop of the same capability).
    pub fn from_flags(add: &[String], drop: &[String]) -> Result<CapSet, CapsError> {
        let is_all =
            |s: &String| s.eq_ignore_ascii_case("ALL") || s.eq_ignore_ascii_case("CAP_ALL");
        let parse = |list: &[String]| -> Result<CapSet, CapsError> {
            list.iter()
                .filter(|s| !is_all(s))
                .map(|s| Capability::parse(s))
                .collect()
        };
        let adds = parse(add)?;
        let drops = parse(drop)?;
        Ok(if add.iter().any(is_all) {
            CapSet(CapSet::all().0 & !drops.0)
        } else if drop.iter().any(is_all) {
            adds
        } else {
            CapSet((CapSet::docker_default().0 & !drops.0) | adds.0)
        })
    }

    pub fn contains(self, cap: Capability) -> bool {
        self.0 & (1 << cap.0) != 0
    }

    pub fn bits(self) -> u64 {
        self.0
    }

    pub fn iter(self) -> impl Iterator<Item = Capability> {
        (0..64u8).map(Capability).filter(move |c| self.contains(*c))
    }
}

impl FromIterator<Capability> for CapSet {
    fn from_iter<I: IntoIterator<Item = Capability>>(iter: I) -> CapSet {
        CapSet(iter.into_iter().fold(0, |acc, c| acc | 1 << c.0))
    }
}

impl TryFrom<Vec<String>> for CapSet {
    type Error = CapsError;
    fn try_from(names: Vec<String>) -> Result<CapSet, CapsError> {
        names.iter().map(|n| Capability::parse(n)).collect()
    }
}

impl From<CapSet> for Vec<String> {
    fn from(set: CapSet) -> Vec<String> {
        set.iter().map(|c| c.to_string()).collect()
    }
}

impl fmt::Display for CapSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#018x}", self.0)
    }
}

/// The highest capability the running kernel knows (`/proc/sys/kernel/cap_last_cap`); the
/// bounding set must be cleared up to it, including capabilities newer than this build.
fn last_cap() -> u8 {
    fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// `struct __user_cap_header_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct`; version 3 takes two of them (low and high 32 bits).
#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Reducing the calling thread to `set` takes two calls, with the change of user between
/// them. Call both in the single-threaded init, after every privileged setup step and before
/// installing seccomp (so the filter need not allow capset).
///
/// First, the bounding set becomes `set`. The current sets are left as they are, so the
/// caller keeps CAP_SETUID/CAP_SETGID to change user afterwards; a non-root user then gets
/// the empty set from [`set_process`], as in docker, where a non-root user has the bounding
/// set only.
pub fn limit_bounding(set: CapSet) -> Result<(), CapsError> {
    // The bounding set first: dropping from it needs CAP_SETPCAP, which capset below may
    // remove. EINVAL means the kernel does not know that capability: nothing to drop.
    for n in 0..=last_cap() {
        let cap = Capability(n);
        if set.contains(cap) {
            continue;
        }
        // SAFETY: PR_CAPBSET_DROP takes a capability number and no pointers.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(n), 0, 0, 0) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EINVAL) {
                return Err(CapsError::DropBounding { cap, source: err });
            }
        }
    }
    Ok(())
}

/// Second (see [`limit_bounding`]): effective and permitted become `set` (which may only
/// lower them), inheritable and ambient become empty.
pub fn set_process(set: CapSet) -> Result<(), CapsError> {
    // Truncation intended: the mask is split into its low and high 32 bits.
    let low = (set.0 & 0xffff_ffff) as u32;
    let high = (set.0 >> 32) as u32;
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [
        CapData {
            effective: low,
            permitted: low,
            inheritable: 0,
        },
        CapData {
            effective: high,
            permitted: high,
            inheritable: 0,
        },
    ];
    // SAFETY: capset reads one header and, for version 3, exactly two data structs; both
    // outlive the call and have the kernel's layout (repr(C), u32/int fields).
    let rc = unsafe { libc::syscall(libc::SYS_capset, &raw mut header, data.as_ptr()) };
    if rc != 0 {
        return Err(CapsError::Capset {
            set,
            source: io::Error::last_os_error(),
        });
    }

    // SAFETY: PR_CAP_AMBIENT_CLEAR_ALL takes no pointers.
    let rc = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    if rc != 0 {
        return Err(CapsError::ClearAmbient(io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn names_parse_with_or_without_prefix() {
        assert_eq!(
            Capability::parse("NET_ADMIN").unwrap(),
            Capability::NET_ADMIN
        );
        assert_eq!(
            Capability::parse("cap_net_admin").unwrap(),
            Capability::NET_ADMIN
        );
        assert_eq!(Capability::parse("CAP_BPF").unwrap().number(), 39);
        assert!(Capability::parse("NET_ADMINX").is_err());
        assert_eq!(Capability::SYS_ADMIN.to_string(), "CAP_SYS_ADMIN");
    }

    #[test]
    fn docker_default_matches_proc_status_mask() {
        // What `grep CapEff /proc/self/status` shows in a default docker container.
        assert_eq!(CapSet::docker_default().bits(), 0x00000000a80425fb);
    }

    #[test]
    fn flags_follow_docker_semantics() {
        let set = CapSet::from_flags(&strings(&["NET_ADMIN"]), &strings(&["chown"])).unwrap();
        assert!(set.contains(Capability::NET_ADMIN));
        assert!(!set.contains(Capability::CHOWN));
        assert!(set.contains(Capability::KILL));

        let only = CapSet::from_flags(&strings(&["NET_RAW"]), &strings(&["ALL"])).unwrap();
        assert_eq!(only.iter().collect::<Vec<_>>(), vec![Capability::NET_RAW]);

        let all = CapSet::from_flags(&strings(&["all"]), &strings(&["SYS_ADMIN"])).unwrap();
        assert!(!all.contains(Capability::SYS_ADMIN) && all.contains(Capability::BPF));

        // An add wins over a drop of the same capability.
        let both = CapSet::from_flags(&strings(&["KILL"]), &strings(&["KILL"])).unwrap();
        assert!(both.contains(Capability::KILL));

        assert!(CapSet::from_flags(&strings(&["NOPE"]), &[]).is_err());
    }

    #[test]
    fn serializes_as_names() {
        let set: CapSet = [Capability::CHOWN, Capability::NET_RAW]
            .into_iter()
            .collect();
        let json = serde_json::to_string(&set).unwrap();
        assert_eq!(json, r#"["CAP_CHOWN","CAP_NET_RAW"]"#);
        assert_eq!(serde_json::from_str::<CapSet>(&json).unwrap(), set);
    }
}
