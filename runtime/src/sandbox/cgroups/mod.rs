//! Cgroups: one [`Cgroup`] trait, a v1 and a v2 manager, and detection of where each
//! controller lives.
//!
//! Hosts come in three shapes, and this one is the awkward middle:
//! - **pure v2**: one `cgroup2` mount (usually `/sys/fs/cgroup`) whose `cgroup.controllers`
//!   lists memory, cpu, pids, …;
//! - **pure v1**: one `cgroup` mount per controller (or per co-mounted group such as
//!   `cpu,cpuacct`);
//! - **hybrid**: v1 controller mounts *plus* a `cgroup2` mount (`/sys/fs/cgroup/unified`)
//!   that may hold no controllers at all (crun refuses this layout).
//!
//! Detection therefore works per controller ([`Layout::detect`] reads
//! `/proc/self/mountinfo`): a controller mounted on a v1 hierarchy is managed there, one only
//! enabled on the v2 mount is managed there, and a v2 mount without controllers is ignored.
//! [`Layout::manager`] returns the v1 manager, the v2 manager, or both behind [`Hybrid`].
//!
//! A container's cgroup is `<hierarchy>/<parent>/<id>` (parent `berth` by default,
//! `--cgroup-parent` otherwise), the same in every hierarchy, like runc's cgroupfs driver.

mod layout;
pub mod v1;
pub mod v2;

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

pub use layout::{CONTROLLERS, Hybrid, Layout, PARENT_SEARCH_DEPTH};
pub use v1::V1Manager;
pub use v2::V2Manager;

/// Errors of the `cgroups` module.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("read /proc/self/mountinfo")]
    ReadMountinfo(#[source] io::Error),
    #[error("no cgroup filesystem is mounted")]
    NoCgroupFs,
    #[error("{limit} needs the {controller} cgroup controller, which this host does not provide")]
    MissingController {
        controller: &'static str,
        limit: &'static str,
    },
    #[error("create cgroup {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("write {value:?} to {path}")]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: io::Error,
    },
    #[error("read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("kill process {pid} left in cgroup {path}")]
    Kill {
        pid: i32,
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("remove cgroup {path}")]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Every failure of a teardown that kept going (see STYLE §3).
#[derive(Debug)]
pub struct CgroupErrors(pub Vec<CgroupError>);

impl fmt::Display for CgroupErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for err in &self.0 {
            if !first {
                f.write_str("; ")?;
            }
            first = false;
            write!(f, "{err}")?;
            let mut source = std::error::Error::source(err);
            while let Some(s) = source {
                write!(f, ": {s}")?;
                source = s.source();
            }
        }
        Ok(())
    }
}

impl std::error::Error for CgroupErrors {}

/// CFS bandwidth: `quota_us` of CPU time every `period_us` (`--cpus 0.5` = 50000/100000).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CpuQuota {
    pub quota_us: u64,
    pub period_us: u64,
}

/// The limits a container asks for; `None` leaves the kernel default (unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    /// `--memory`; swap is not granted on top (memsw / `memory.swap.max` set accordingly).
    pub memory_bytes: Option<u64>,
    pub cpu: Option<CpuQuota>,
    pub pids_max: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupVersion {
    V1,
    V2,
    Hybrid,
}

/// A container's cgroup, whatever the host's layout.
pub trait Cgroup: fmt::Debug {
    fn version(&self) -> CgroupVersion;
    /// The cgroup's directories (one per v1 hierarchy, one for v2).
    fn paths(&self) -> Vec<PathBuf>;
    /// Whether `controller` is available to this manager.
    fn has_controller(&self, controller: &str) -> bool;
    /// Creates the directories and writes the limits. On error the caller calls
    /// [`destroy`](Cgroup::destroy), which copes with a half-made cgroup.
    fn create(&self, resources: &Resources) -> Result<(), CgroupError>;
    /// Moves process `pid` (and its future children) into the cgroup.
    fn add_process(&self, pid: i32) -> Result<(), CgroupError>;
    /// The processes currently in the cgroup.
    fn processes(&self) -> Result<Vec<i32>, CgroupError>;
    /// Whether device access is restricted (v1 `devices` controller). On v2 that needs an
    /// eBPF program (phase 2); until then seccomp refuses device-node creation instead.
    fn restricts_devices(&self) -> bool;
    /// Kills what is left, removes the directories and, when empty, the parent. Idempotent:
    /// a cgroup already gone is success. Keeps going and reports every failure.
    fn destroy(&self) -> Result<(), CgroupErrors>;
}

/// Checks that `resources` only asks for controllers `cgroup` has, before anything is created.
pub fn check_controllers(cgroup: &dyn Cgroup, resources: &Resources) -> Result<(), CgroupError> {
    let wanted = [
        (resources.memory_bytes.is_some(), "memory", "--memory"),
        (resources.cpu.is_some(), "cpu", "--cpus"),
        (resources.pids_max.is_some(), "pids", "--pids-limit"),
    ];
    for (asked, controller, limit) in wanted {
        if asked && !cgroup.has_controller(controller) {
            return Err(CgroupError::MissingController { controller, limit });
        }
    }
    Ok(())
}

/// Writes `value` to the control file `path`.
pub(crate) fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::write(path, value).map_err(|source| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_owned(),
        source,
    })
}

/// The pids listed in `<dir>/cgroup.procs`; a missing cgroup has none.
pub(crate) fn read_procs(dir: &Path) -> Result<Vec<i32>, CgroupError> {
    let path = dir.join("cgroup.procs");
    match fs::read_to_string(&path) {
        Ok(text) => Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect()),
        // ENODEV: the cgroup was removed (by a concurrent teardown) after we opened it.
        Err(e) if is_gone(&e) => Ok(Vec::new()),
        Err(source) => Err(CgroupError::Read { path, source }),
    }
}

/// A cgroup that vanished under us (ENOENT, or ENODEV from a file of a removed cgroup).
fn is_gone(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENODEV)
}

/// Creates `parent/<id>`, making the parent first if needed. A concurrent teardown may remove
/// the shared parent between the two steps (see [`remove_parent_if_empty`]): then try again.
pub(crate) fn make_dir(dir: &Path) -> Result<(), CgroupError> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        if let Some(parent) = dir.parent() {
            fs::create_dir_all(parent).map_err(|source| CgroupError::CreateDir {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        match fs::create_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound && attempts < 5 => continue,
            Err(source) => {
                return Err(CgroupError::CreateDir {
                    path: dir.to_path_buf(),
                    source,
                });
            }
        }
    }
}

/// Kills every process in `dir` and removes it, retrying while the kernel still counts dying
/// tasks (rmdir returns EBUSY until they are reaped). `kill_file` (v2's `cgroup.kill`) kills
/// the whole subtree atomically where present.
pub(crate) fn kill_and_remove(dir: &Path, kill_file: Option<&Path>, errors: &mut Vec<CgroupError>) {
    const DEADLINE: Duration = Duration::from_secs(5);
    let start = Instant::now();
    loop {
        if !dir.exists() {
            return;
        }
        match kill_file {
            Some(file) if file.exists() => {
                if let Err(e) = write_file(file, "1") {
                    errors.push(e);
                    return;
                }
            }
            _ => match read_procs(dir) {
                Ok(pids) => {
                    for pid in pids {
                        match kill(Pid::from_raw(pid), Signal::SIGKILL) {
                            Ok(()) | Err(nix::Error::ESRCH) => {}
                            Err(source) => errors.push(CgroupError::Kill {
                                pid,
                                path: dir.to_path_buf(),
                                source,
                            }),
                        }
                    }
                }
                Err(e) => {
                    errors.push(e);
                    return;
                }
            },
        }
        match fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if is_gone(&e) => return,
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && start.elapsed() < DEADLINE => {
                thread::sleep(Duration::from_millis(10));
            }
            Err(source) => {
                errors.push(CgroupError::Remove {
                    path: dir.to_path_buf(),
                    source,
                });
                return;
            }
        }
    }
}

/// Removes the shared parent (`<hierarchy>/berth`) once the last container is gone; another
/// container still in it (EBUSY/ENOTEMPTY) or a concurrent removal (ENOENT) is fine.
pub(crate) fn remove_parent_if_empty(dir: &Path) {
    if let Some(parent) = dir.parent() {
        let _ = fs::remove_dir(parent);
    }
}
