//! [`TestNetns`]: a named, throwaway network namespace that plays a host or a container.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::Mutex;
use std::thread;

use berth_netlink::{LinkError, Netlink, Netns, NetnsError, OpenError};
use nix::errno::Errno as NixErrno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};

use crate::names::unique_name;
use crate::root::require_root;

/// Where iproute2 keeps named network namespaces.
pub const RUN_NETNS: &str = "/run/netns";

/// The names in [`RUN_NETNS`] that start with `prefix` (`berth lab` names its nodes'
/// namespaces `clab-<lab>-<node>` there); none when the directory is missing.
pub fn run_netns_names(prefix: &str) -> Vec<String> {
    fs::read_dir(RUN_NETNS)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// Errors of the `netns` module.
#[derive(Debug, thiserror::Error)]
pub enum TestNetnsError {
    #[error("create {RUN_NETNS}")]
    CreateRunDir(#[source] io::Error),
    #[error("make {RUN_NETNS} a shared mount point")]
    ShareRunDir(#[source] io::Error),
    #[error("create mount point {path}")]
    CreateFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("spawn the helper thread creating netns {name}")]
    SpawnThread {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("unshare a new network namespace for {name}")]
    Unshare {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("bind-mount the new network namespace on {path}")]
    BindMount {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("open netns {name}")]
    Open {
        name: String,
        #[source]
        source: NetnsError,
    },
    #[error("open rtnetlink in netns {name}")]
    Netlink {
        name: String,
        #[source]
        source: OpenError,
    },
    #[error("bring lo up in netns {name}")]
    LoopbackUp {
        name: String,
        #[source]
        source: LinkError,
    },
    #[error("netns {name} has no lo")]
    NoLoopback { name: String },
    #[error("run {program} in netns {name}")]
    Enter {
        program: String,
        name: String,
        #[source]
        source: NetnsError,
    },
    #[error("spawn {program} in netns {name}")]
    Spawn {
        program: String,
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("{program} in netns {name} failed ({status}): {stderr}")]
    Failed {
        program: String,
        name: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

/// Makes `/run/netns` a shared mount point, exactly as `ip netns add` does, so that unmounting
/// a namespace file in one mount namespace unmounts it in all of them (letting the namespace be
/// freed). iproute2 warns that racing `ip` processes can stack the bind mount; within this
/// process the mutex serializes it.
fn prepare_run_dir() -> Result<(), TestNetnsError> {
    static PREPARED: Mutex<bool> = Mutex::new(false);
    let mut prepared = PREPARED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if *prepared {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(RUN_NETNS)
        .map_err(TestNetnsError::CreateRunDir)?;
    let mut made_mount = false;
    loop {
        match mount(
            None::<&str>,
            RUN_NETNS,
            Some("none"),
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        ) {
            Ok(()) => break,
            // EINVAL: not a mount point yet. Upgrade it to one (a bind mount onto itself),
            // once, then retry making it shared.
            Err(NixErrno::EINVAL) if !made_mount => {
                mount(
                    Some(RUN_NETNS),
                    RUN_NETNS,
                    Some("none"),
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .map_err(|e| TestNetnsError::ShareRunDir(e.into()))?;
                made_mount = true;
            }
            Err(e) => return Err(TestNetnsError::ShareRunDir(e.into())),
        }
    }
    *prepared = true;
    Ok(())
}

/// The `/run/netns/<name>` file and its bind mount; removing both on drop releases the
/// namespace (once no descriptor or process holds it any more).
#[derive(Debug)]
struct NsMount {
    path: PathBuf,
    mounted: bool,
}

impl Drop for NsMount {
    fn drop(&mut self) {
        if self.mounted {
            // MNT_DETACH as `ip netns delete`: succeeds even while something still uses it.
            if let Err(e) = umount2(&self.path, MntFlags::MNT_DETACH) {
                eprintln!("netns-fixtures: unmount {}: {e}", self.path.display());
            }
        }
        if let Err(e) = fs::remove_file(&self.path) {
            if e.kind() != io::ErrorKind::NotFound {
                eprintln!("netns-fixtures: remove {}: {e}", self.path.display());
            }
        }
    }
}

/// A named network namespace under `/run/netns`, created the way `ip netns add` does it, with
/// `lo` up. Dropping it (also during a panic) unmounts and removes it.
///
/// Nothing here touches the host's own network: every link, address and route a test makes
/// lives inside such namespaces.
#[derive(Debug)]
pub struct TestNetns {
    name: String,
    path: PathBuf,
    netlink: Netlink,
    netns: Netns,
    // Last: unmount once the handles above are closed.
    _mount: NsMount,
}

impl TestNetns {
    /// Creates a namespace with a unique name (tag `ns`).
    ///
    /// # Panics
    /// Without root (see [`require_root`]).
    pub fn new() -> Result<TestNetns, TestNetnsError> {
        Self::with_tag("ns")
    }

    /// Creates a namespace named [`unique_name(tag)`](unique_name), e.g. `bt001z41-h`.
    pub fn with_tag(tag: &str) -> Result<TestNetns, TestNetnsError> {
        require_root();
        let name = unique_name(tag);
        prepare_run_dir()?;
        let path = Path::new(RUN_NETNS).join(&name);

        // The mount point. create_new: a leftover of the same name is a bug, not something to
        // reuse.
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o000)
            .open(&path)
            .map_err(|source| TestNetnsError::CreateFile {
                path: path.clone(),
                source,
            })?;
        let mut mount_guard = NsMount {
            path: path.clone(),
            mounted: false,
        };

        bind_new_netns(&name, &path)?;
        mount_guard.mounted = true;

        let netns = Netns::open(&path).map_err(|source| TestNetnsError::Open {
            name: name.clone(),
            source,
        })?;
        let netlink = Netlink::open_in(&netns).map_err(|source| TestNetnsError::Netlink {
            name: name.clone(),
            source,
        })?;
        let lo_err = |source| TestNetnsError::LoopbackUp {
            name: name.clone(),
            source,
        };
        let lo = netlink
            .link_by_name("lo")
            .map_err(lo_err)?
            .ok_or_else(|| TestNetnsError::NoLoopback { name: name.clone() })?;
        netlink.set_up(lo.index).map_err(lo_err)?;

        Ok(TestNetns {
            name,
            path,
            netlink,
            netns,
            _mount: mount_guard,
        })
    }

    /// The name under `/run/netns` (also usable with `ip netns exec`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`: what a runtime passes as CNI_NETNS.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    /// An rtnetlink handle bound to this namespace, usable from any thread.
    pub fn netlink(&self) -> &Netlink {
        &self.netlink
    }

    /// Runs `f` inside the namespace (see [`Netns::run`]).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
        self.netns.run(f)
    }

    /// Spawns `cmd` inside the namespace. The spawn happens on a helper thread that joined the
    /// namespace; the child inherits it and keeps it after the thread is gone.
    pub fn spawn(&self, cmd: &mut Command) -> Result<Child, TestNetnsError> {
        let program = program_name(cmd);
        self.run(|| cmd.spawn())
            .map_err(|source| TestNetnsError::Enter {
                program: program.clone(),
                name: self.name.clone(),
                source,
            })?
            .map_err(|source| TestNetnsError::Spawn {
                program,
                name: self.name.clone(),
                source,
            })
    }

    /// Runs `cmd` inside the namespace to completion, capturing its output (whatever its exit
    /// status).
    pub fn output(&self, cmd: &mut Command) -> Result<Output, TestNetnsError> {
        let program = program_name(cmd);
        self.run(|| cmd.output())
            .map_err(|source| TestNetnsError::Enter {
                program: program.clone(),
                name: self.name.clone(),
                source,
            })?
            .map_err(|source| TestNetnsError::Spawn {
                program,
                name: self.name.clone(),
                source,
            })
    }

    /// Runs `ip <args>` inside the namespace and returns its stdout; a non-zero exit is an
    /// error carrying stderr. Handy to cross-check Berth's netlink code with iproute2.
    pub fn ip(&self, args: &[&str]) -> Result<String, TestNetnsError> {
        let out = self.output(Command::new("ip").args(args))?;
        if !out.status.success() {
            return Err(TestNetnsError::Failed {
                program: format!("ip {}", args.join(" ")),
                name: self.name.clone(),
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

fn program_name(cmd: &Command) -> String {
    cmd.get_program().to_string_lossy().into_owned()
}

/// On a helper thread: unshare a new network namespace and bind-mount it onto `path`. The
/// thread then exits; the mount keeps the namespace alive. (`ip netns add` does the same in a
/// single-threaded process with `/proc/self`; here it must be `/proc/thread-self`.)
fn bind_new_netns(name: &str, path: &Path) -> Result<(), TestNetnsError> {
    thread::scope(|scope| {
        let helper = thread::Builder::new()
            .name("netns-fixtures-add".into())
            .spawn_scoped(scope, || -> Result<(), TestNetnsError> {
                // Only this thread moves: it exits right after the mount.
                unshare(CloneFlags::CLONE_NEWNET).map_err(|e| TestNetnsError::Unshare {
                    name: name.to_owned(),
                    source: e.into(),
                })?;
                mount(
                    Some("/proc/thread-self/ns/net"),
                    path,
                    Some("none"),
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(|e| TestNetnsError::BindMount {
                    path: path.to_path_buf(),
                    source: e.into(),
                })
            })
            .map_err(|source| TestNetnsError::SpawnThread {
                name: name.to_owned(),
                source,
            })?;
        match helper.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}
