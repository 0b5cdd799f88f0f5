//! User namespaces: `--userns=auto`, `--uidmap`/`--gidmap`, the id ranges, and the process
//! that holds a container's user namespace while its init joins it.
//!
//! **Why the namespaces are arranged as they are.** The root of a container with a user
//! namespace is an unprivileged host id (e.g. 100000), and everything the kernel lets it do
//! is decided by which user namespace owns each of its other namespaces:
//! - network, UTS and IPC namespaces are created *in* the container's user namespace, so its
//!   root has its capabilities there (ports below 1024, raw sockets, hostname). They are
//!   made by a **holder**: a child cloned with `CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWUTS |
//!   CLONE_NEWIPC` that does nothing but wait. The runtime writes its `uid_map`/`gid_map`
//!   (a privileged writer may map any range), bind-mounts its network namespace on the
//!   netns file exactly where an ordinary container's is (CNI configures it as before), and
//!   kills it once the init has joined everything.
//! - the init stays host root until its filesystem is ready: it joins those namespaces,
//!   unshares a mount namespace (owned by the host's user namespace), and assembles the root
//!   filesystem as usual, with host privileges, because host root is needed to idmap the
//!   image, to traverse the runtime's 0700 state directories and to create device nodes;
//!   then it enters the user namespace (`setns`, then uid and gid 0 inside), unshares its
//!   cgroup namespace there, and execs the command. The mount and pid namespaces therefore
//!   belong to the host's user namespace: the container's root cannot mount filesystems or
//!   make pid namespaces even with `--cap-add SYS_ADMIN` (seccomp refuses both by default).
//! - the image stays shared and unmodified: the init mounts it **idmapped** with the
//!   container's user namespace (`open_tree` + `mount_setattr(MOUNT_ATTR_IDMAP)`), inside its
//!   own mount namespace only, and uses that as the overlay's lower layer, so the image's
//!   root-owned files belong to the container's root. Files the container writes land in its
//!   upper layer (and in volumes) owned by the mapped ids, which is what the host sees.
//!
//! **Ranges.** `--userns=auto` takes the first range of [`AUTO_SIZE`] ids at or above the
//! base (`BERTH_USERNS_BASE`, default [`DEFAULT_BASE`]) that no other container's map
//! touches on the host, the same range for uids and gids; the choice is made under the store
//! lock and recorded in the container's configuration, so two containers never share one
//! and a restarted container keeps its own. `--uidmap`/`--gidmap` are taken as given.

use std::fmt;
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;

use nix::fcntl::OFlag;
use nix::sys::wait::waitpid;
use nix::unistd::{Pid, pipe2};
use serde::{Deserialize, Serialize};

use crate::sandbox::fork::{Forked, clone_fork};
use crate::sandbox::pid::{self, ProcessRef, process_start_time};

/// Ids per container with `--userns=auto` (podman's and docker's usual size).
pub const AUTO_SIZE: u32 = 65536;
/// Where `--userns=auto` ranges start unless `BERTH_USERNS_BASE` says otherwise (the usual
/// first `/etc/subuid` range).
pub const DEFAULT_BASE: u32 = 100_000;
/// The kernel's limit of lines per map.
const MAX_LINES: usize = 340;

/// Errors of the `userns` module: each names the flag or the step, and its input.
#[derive(Debug, thiserror::Error)]
pub enum UsernsError {
    #[error("invalid --userns {input:?}: use host or auto")]
    Mode { input: String },
    #[error("--userns={mode} cannot be combined with --uidmap or --gidmap")]
    Conflict { mode: String },
    #[error("--gidmap needs --uidmap (or use --userns=auto)")]
    GidWithoutUid,
    #[error(
        "invalid {flag} {input:?}: expected CONTAINER_ID:HOST_ID:COUNT with a positive COUNT (e.g. 0:100000:65536)"
    )]
    Syntax { flag: &'static str, input: String },
    #[error("invalid {flag} {input:?}: the range goes past the largest id (4294967295)")]
    Overflow { flag: &'static str, input: String },
    #[error("{flag}: {first} and {second} overlap {side}")]
    Overlap {
        flag: &'static str,
        first: IdRange,
        second: IdRange,
        side: &'static str,
    },
    #[error("{flag} must map id 0 (the container's root)")]
    NoRoot { flag: &'static str },
    #[error("{flag}: at most {MAX_LINES} ranges")]
    TooMany { flag: &'static str },
    #[error(
        "invalid BERTH_USERNS_BASE {input:?}: expected a number from 1 to {}",
        u32::MAX - AUTO_SIZE
    )]
    Base { input: String },
    #[error(
        "no free range of {AUTO_SIZE} ids at or above {base} (BERTH_USERNS_BASE): remove containers or choose another base"
    )]
    Exhausted { base: u32 },
    #[error("create a pipe for the user namespace holder")]
    Pipe(#[source] nix::Error),
    #[error("clone the user namespace holder (new user, network, uts and ipc namespaces)")]
    Clone(#[source] io::Error),
    #[error("write {path} ({map})")]
    WriteMap {
        path: PathBuf,
        map: String,
        #[source]
        source: io::Error,
    },
    #[error("the user namespace holder (pid {pid}) exited")]
    HolderGone { pid: i32 },
}

/// One line of a uid or gid map: ids `inside..inside+count` of the container are
/// `host..host+count` on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdRange {
    pub inside: u32,
    pub host: u32,
    pub count: u32,
}

impl IdRange {
    fn inside_span(&self) -> (u64, u64) {
        let start = u64::from(self.inside);
        (start, start + u64::from(self.count))
    }

    fn host_span(&self) -> (u64, u64) {
        let start = u64::from(self.host);
        (start, start + u64::from(self.count))
    }

    /// `CONTAINER:HOST:COUNT`, as podman's `--uidmap`.
    fn parse(flag: &'static str, input: &str) -> Result<IdRange, UsernsError> {
        let syntax = || UsernsError::Syntax {
            flag,
            input: input.to_owned(),
        };
        let numbers: Vec<u32> = input
            .split(':')
            .map(|part| part.parse::<u32>().map_err(|_| syntax()))
            .collect::<Result<_, _>>()?;
        let [inside, host, count] = numbers[..] else {
            return Err(syntax());
        };
        if count == 0 {
            return Err(syntax());
        }
        let range = IdRange {
            inside,
            host,
            count,
        };
        // Both ends must stay ids: the last one is start + count - 1.
        let limit = u64::from(u32::MAX) + 1;
        if range.inside_span().1 > limit || range.host_span().1 > limit {
            return Err(UsernsError::Overflow {
                flag,
                input: input.to_owned(),
            });
        }
        Ok(range)
    }
}

impl fmt::Display for IdRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.inside, self.host, self.count)
    }
}

fn overlap(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

/// A validated uid or gid map: 1 to 340 lines, none overlapping another inside the
/// container or on the host, and the container's id 0 mapped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<IdRange>", into = "Vec<IdRange>")]
pub struct IdMap {
    lines: Vec<IdRange>,
    /// The host id of the container's id 0.
    root: u32,
}

impl IdMap {
    fn new(flag: &'static str, lines: Vec<IdRange>) -> Result<IdMap, UsernsError> {
        if lines.len() > MAX_LINES {
            return Err(UsernsError::TooMany { flag });
        }
        for (i, a) in lines.iter().enumerate() {
            for b in &lines[i + 1..] {
                for (side, hit) in [
                    (
                        "in the container",
                        overlap(a.inside_span(), b.inside_span()),
                    ),
                    ("on the host", overlap(a.host_span(), b.host_span())),
                ] {
                    if hit {
                        return Err(UsernsError::Overlap {
                            flag,
                            first: *a,
                            second: *b,
                            side,
                        });
                    }
                }
            }
        }
        let root = lines
            .iter()
            .find(|l| l.inside == 0)
            .map(|l| l.host)
            .ok_or(UsernsError::NoRoot { flag })?;
        Ok(IdMap { lines, root })
    }

    /// One range of `count` ids from `host`, container id 0 first.
    fn single(host: u32, count: u32) -> IdMap {
        IdMap {
            lines: vec![IdRange {
                inside: 0,
                host,
                count,
            }],
            root: host,
        }
    }

    pub fn lines(&self) -> &[IdRange] {
        &self.lines
    }

    /// The host id of container id `inside`, if mapped.
    pub fn to_host(&self, inside: u32) -> Option<u32> {
        self.lines.iter().find_map(|l| {
            let offset = inside.checked_sub(l.inside)?;
            (offset < l.count).then(|| l.host + offset)
        })
    }

    /// The host id of the container's root.
    pub fn root(&self) -> u32 {
        self.root
    }

    /// The map as `/proc/<pid>/uid_map` takes it (all lines in one write).
    pub fn proc_format(&self) -> String {
        self.lines
            .iter()
            .map(|l| format!("{} {} {}\n", l.inside, l.host, l.count))
            .collect()
    }
}

impl TryFrom<Vec<IdRange>> for IdMap {
    type Error = UsernsError;
    fn try_from(lines: Vec<IdRange>) -> Result<IdMap, UsernsError> {
        IdMap::new("the stored id map", lines)
    }
}

impl From<IdMap> for Vec<IdRange> {
    fn from(map: IdMap) -> Vec<IdRange> {
        map.lines
    }
}

/// A container's user namespace: its uid and gid maps (stored in its configuration).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserNamespace {
    pub uid_map: IdMap,
    pub gid_map: IdMap,
    /// Chosen by `--userns=auto` (rather than given with `--uidmap`).
    pub auto: bool,
}

impl UserNamespace {
    /// The host's ids of the container's root: what files the runtime makes for it belong to.
    pub fn root(&self) -> (u32, u32) {
        (self.uid_map.root(), self.gid_map.root())
    }

    /// Whether any host id of `self` is one of `other`'s.
    fn overlaps(&self, other: &UserNamespace) -> bool {
        let spans = |ns: &UserNamespace| -> Vec<(u64, u64)> {
            ns.uid_map
                .lines
                .iter()
                .chain(&ns.gid_map.lines)
                .map(IdRange::host_span)
                .collect()
        };
        let theirs = spans(other);
        spans(self)
            .iter()
            .any(|a| theirs.iter().any(|b| overlap(*a, *b)))
    }
}

/// What `--userns`, `--uidmap` and `--gidmap` ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsernsRequest {
    /// The host's user namespace (the default): the container's root is host root.
    Host,
    /// A free range, chosen when the container is created.
    Auto,
    /// These maps.
    Maps(UserNamespace),
}

impl UsernsRequest {
    pub fn is_private(&self) -> bool {
        !matches!(self, UsernsRequest::Host)
    }

    /// Validates the three flags together.
    pub fn parse(
        mode: Option<&str>,
        uidmap: &[String],
        gidmap: &[String],
    ) -> Result<UsernsRequest, UsernsError> {
        let maps = !uidmap.is_empty() || !gidmap.is_empty();
        match mode {
            None | Some("") if !maps => return Ok(UsernsRequest::Host),
            None | Some("") => {}
            Some(m @ ("host" | "auto")) if maps => {
                return Err(UsernsError::Conflict { mode: m.to_owned() });
            }
            Some("host") => return Ok(UsernsRequest::Host),
            Some("auto") => return Ok(UsernsRequest::Auto),
            Some(other) => {
                return Err(UsernsError::Mode {
                    input: other.to_owned(),
                });
            }
        }
        if uidmap.is_empty() {
            return Err(UsernsError::GidWithoutUid);
        }
        let parse = |flag, inputs: &[String]| -> Result<IdMap, UsernsError> {
            let lines = inputs
                .iter()
                .map(|i| IdRange::parse(flag, i))
                .collect::<Result<Vec<_>, _>>()?;
            IdMap::new(flag, lines)
        };
        let uid_map = parse("--uidmap", uidmap)?;
        // As podman: without --gidmap, gids are mapped like uids.
        let gid_map = if gidmap.is_empty() {
            uid_map.clone()
        } else {
            parse("--gidmap", gidmap)?
        };
        Ok(UsernsRequest::Maps(UserNamespace {
            uid_map,
            gid_map,
            auto: false,
        }))
    }
}

/// `BERTH_USERNS_BASE` (unset or empty: [`DEFAULT_BASE`]).
pub fn base_from_env(value: Option<String>) -> Result<u32, UsernsError> {
    match value.filter(|v| !v.is_empty()) {
        None => Ok(DEFAULT_BASE),
        Some(input) => input
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|b| *b >= 1 && *b <= u32::MAX - AUTO_SIZE)
            .ok_or(UsernsError::Base { input }),
    }
}

/// `--userns=auto`: the first [`AUTO_SIZE`]-aligned range at or above `base` whose host ids
/// no namespace of `taken` uses. Call with the store lock held.
pub fn allocate<'a>(
    base: u32,
    taken: impl IntoIterator<Item = &'a UserNamespace>,
) -> Result<UserNamespace, UsernsError> {
    let taken: Vec<&UserNamespace> = taken.into_iter().collect();
    let mut start = u64::from(base);
    while start + u64::from(AUTO_SIZE) <= u64::from(u32::MAX) + 1 {
        // In range: checked by the loop condition.
        let host = u32::try_from(start).map_err(|_| UsernsError::Exhausted { base })?;
        let candidate = UserNamespace {
            uid_map: IdMap::single(host, AUTO_SIZE),
            gid_map: IdMap::single(host, AUTO_SIZE),
            auto: true,
        };
        if !taken.iter().any(|t| candidate.overlaps(t)) {
            return Ok(candidate);
        }
        start += u64::from(AUTO_SIZE);
    }
    Err(UsernsError::Exhausted { base })
}

/// The holder of a container's user namespace (see the module doc): a child in new user,
/// network, UTS and IPC namespaces that waits until it is dropped (killed and reaped), or
/// until this process dies (its pipe reaches end of file).
#[derive(Debug)]
pub struct Holder {
    pid: Pid,
    pidfd: OwnedFd,
    /// Closing it ends the holder even if this process is killed.
    _release: OwnedFd,
    reaped: bool,
}

impl Holder {
    /// Clones the holder and writes its maps.
    pub fn spawn(ns: &UserNamespace) -> Result<Holder, UsernsError> {
        let (wait_r, wait_w) = pipe2(OFlag::O_CLOEXEC).map_err(UsernsError::Pipe)?;
        let (read_fd, write_fd) = (wait_r.as_raw_fd(), wait_w.as_raw_fd());
        let flags =
            libc::CLONE_NEWUSER | libc::CLONE_NEWNET | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;
        // SAFETY: the child branch runs only async-signal-safe syscalls (close, read, _exit)
        // on values prepared before the clone, and never returns.
        let forked = unsafe { clone_fork(flags) }.map_err(UsernsError::Clone)?;
        let (pid, pidfd) = match forked {
            Forked::Child => {
                // --- child: async-signal-safe only ---
                // SAFETY: plain syscalls on descriptor numbers and a stack byte.
                unsafe {
                    // Our copy of the write end would keep the pipe from ever reaching EOF.
                    libc::close(write_fd);
                    let mut byte = 0u8;
                    loop {
                        let n = libc::read(read_fd, (&raw mut byte).cast(), 1);
                        if n < 0 && *libc::__errno_location() == libc::EINTR {
                            continue;
                        }
                        libc::_exit(0);
                    }
                }
            }
            Forked::Parent { pid, pidfd } => (pid, pidfd),
        };
        drop(wait_r);
        let holder = Holder {
            pid,
            pidfd,
            _release: wait_w,
            reaped: false,
        };
        for (file, map) in [("uid_map", &ns.uid_map), ("gid_map", &ns.gid_map)] {
            let path = PathBuf::from(format!("/proc/{}/{file}", pid.as_raw()));
            let text = map.proc_format();
            // One write: the kernel takes a map only whole.
            fs::write(&path, &text).map_err(|source| UsernsError::WriteMap {
                path,
                map: text.trim_end().replace('\n', ", "),
                source,
            })?;
        }
        Ok(holder)
    }

    /// `/proc/<pid>/ns/<kind>` of the holder.
    pub fn ns_path(&self, kind: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/{kind}", self.pid.as_raw()))
    }

    /// The holder, named for the init (which checks the start time before joining).
    pub fn process(&self) -> Result<ProcessRef, UsernsError> {
        let pid = self.pid.as_raw();
        process_start_time(pid)
            .map(|start_time| ProcessRef { pid, start_time })
            .ok_or(UsernsError::HolderGone { pid })
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = pid::send_signal(self.pidfd.as_fd(), libc::SIGKILL);
            let _ = waitpid(self.pid, None);
            self.reaped = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn flags() {
        assert_eq!(
            UsernsRequest::parse(None, &[], &[]).unwrap(),
            UsernsRequest::Host
        );
        assert_eq!(
            UsernsRequest::parse(Some("auto"), &[], &[]).unwrap(),
            UsernsRequest::Auto
        );
        let UsernsRequest::Maps(ns) =
            UsernsRequest::parse(None, &strings(&["0:300000:1000", "1000:500:1"]), &[]).unwrap()
        else {
            panic!("maps expected");
        };
        assert_eq!(ns.root(), (300_000, 300_000));
        assert_eq!(ns.uid_map.to_host(999), Some(300_999));
        assert_eq!(ns.uid_map.to_host(1000), Some(500));
        assert_eq!(ns.uid_map.to_host(1001), None);
        assert_eq!(ns.uid_map.proc_format(), "0 300000 1000\n1000 500 1\n");
        assert_eq!(ns.gid_map, ns.uid_map);

        for (mode, uid, gid, message) in [
            (
                Some("private"),
                &[][..],
                &[][..],
                "invalid --userns \"private\"",
            ),
            (
                Some("auto"),
                &["0:1:1"][..],
                &[][..],
                "--userns=auto cannot",
            ),
            (None, &[][..], &["0:1:1"][..], "--gidmap needs --uidmap"),
            (None, &["0:1"][..], &[][..], "invalid --uidmap \"0:1\""),
            (None, &["0:1:0"][..], &[][..], "invalid --uidmap \"0:1:0\""),
            (None, &["0:x:1"][..], &[][..], "invalid --uidmap \"0:x:1\""),
            (
                None,
                &["0:4294967295:2"][..],
                &[][..],
                "past the largest id",
            ),
            (None, &["1:100000:10"][..], &[][..], "must map id 0"),
            (
                None,
                &["0:100000:10", "5:200000:10"][..],
                &[][..],
                "overlap in the container",
            ),
            (
                None,
                &["0:100000:10", "10:100005:10"][..],
                &[][..],
                "overlap on the host",
            ),
            (
                None,
                &["0:1:1"][..],
                &["7:1:1"][..],
                "--gidmap must map id 0",
            ),
        ] {
            let err = UsernsRequest::parse(mode, &strings(uid), &strings(gid)).unwrap_err();
            assert!(err.to_string().contains(message), "{err} vs {message}");
        }
    }

    #[test]
    fn auto_takes_the_first_free_range() {
        let first = allocate(DEFAULT_BASE, []).unwrap();
        assert_eq!(first.root(), (100_000, 100_000));
        let second = allocate(DEFAULT_BASE, [&first]).unwrap();
        assert_eq!(second.root(), (165_536, 165_536));
        // A manual map in the middle of the next slot pushes auto past it.
        let UsernsRequest::Maps(manual) =
            UsernsRequest::parse(None, &strings(&["0:240000:10"]), &[]).unwrap()
        else {
            panic!("maps expected");
        };
        let third = allocate(DEFAULT_BASE, [&first, &second, &manual]).unwrap();
        assert_eq!(third.root().0, 100_000 + 3 * AUTO_SIZE);
        // A freed range is reused.
        assert_eq!(allocate(DEFAULT_BASE, [&second]).unwrap().root().0, 100_000);
        let top = u32::MAX - AUTO_SIZE + 1;
        let last = allocate(top, []).unwrap();
        assert!(matches!(
            allocate(top, [&last]),
            Err(UsernsError::Exhausted { .. })
        ));
        assert_eq!(base_from_env(None).unwrap(), DEFAULT_BASE);
        assert_eq!(base_from_env(Some("200000".into())).unwrap(), 200_000);
        assert!(base_from_env(Some("0".into())).is_err());
        assert!(base_from_env(Some("x".into())).is_err());
    }

    #[test]
    fn maps_round_trip_and_are_checked_when_read() {
        let ns = allocate(DEFAULT_BASE, []).unwrap();
        let json = serde_json::to_string(&ns).unwrap();
        assert_eq!(serde_json::from_str::<UserNamespace>(&json).unwrap(), ns);
        let bad = r#"{"uidMap":[{"inside":1,"host":5,"count":1}],"gidMap":[],"auto":false}"#;
        assert!(serde_json::from_str::<UserNamespace>(bad).is_err());
    }
}
