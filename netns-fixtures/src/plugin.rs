//! Running CNI plugin binaries inside a test namespace.

use std::collections::BTreeMap;
use std::env;
use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;

use berth_netlink::NetnsError;

use crate::netns::TestNetns;

/// Used when the test process itself has no PATH.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Errors of the `plugin` module.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("enter netns {netns} to run {bin}")]
    Enter {
        bin: PathBuf,
        netns: String,
        #[source]
        source: NetnsError,
    },
    #[error("spawn {bin} in netns {netns}")]
    Spawn {
        bin: PathBuf,
        netns: String,
        #[source]
        source: io::Error,
    },
    #[error("write stdin of {bin}")]
    Stdin {
        bin: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("wait for {bin}")]
    Wait {
        bin: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What a plugin run produced.
#[derive(Clone, PartialEq, Eq)]
pub struct PluginOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl PluginOutput {
    /// stdout parsed as JSON (the result, or the CNI error object).
    pub fn json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_str(&self.stdout)
    }

    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Panics with the whole output unless the plugin exited 0; returns stdout as JSON
    /// (`Value::Null` when stdout is empty, as for DEL).
    pub fn expect_success(&self) -> serde_json::Value {
        assert!(self.success(), "plugin failed: {self:?}");
        if self.stdout.trim().is_empty() {
            return serde_json::Value::Null;
        }
        self.json()
            .unwrap_or_else(|e| panic!("plugin stdout is not JSON ({e}): {self:?}"))
    }
}

impl fmt::Debug for PluginOutput {
    /// Multi-line, so a failed assertion shows the plugin's stderr readably.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// A CNI invocation, built up and then run inside a namespace that plays the host:
///
/// ```no_run
/// # use netns_fixtures::{CniCall, HostAndContainer, bin};
/// # fn demo(env: &HostAndContainer, conf: &str) -> Result<(), Box<dyn std::error::Error>> {
/// let out = CniCall::new(bin("bridge"))
///     .command("ADD")
///     .container_id("ctr1")
///     .netns(env.ctr.path())
///     .ifname("eth0")
///     .stdin(conf)
///     .run_in(&env.host)?;
/// let result = out.expect_success();
/// # Ok(())
/// # }
/// ```
///
/// The child starts from an empty environment plus `PATH` and the CNI_* variables set here:
/// tests never mutate the test process's environment.
#[derive(Debug, Clone)]
pub struct CniCall {
    bin: PathBuf,
    env: BTreeMap<String, String>,
    stdin: Vec<u8>,
}

impl CniCall {
    pub fn new(bin: impl Into<PathBuf>) -> CniCall {
        let path = env::var("PATH").unwrap_or_else(|_| DEFAULT_PATH.to_owned());
        CniCall {
            bin: bin.into(),
            env: BTreeMap::from([("PATH".to_owned(), path)]),
            stdin: Vec::new(),
        }
    }

    /// Sets any variable (also to override PATH or set a CNI_* one deliberately wrong).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> CniCall {
        self.env.insert(key.into(), value.into());
        self
    }

    /// Removes a variable, e.g. to test a missing CNI_* variable.
    pub fn env_remove(mut self, key: &str) -> CniCall {
        self.env.remove(key);
        self
    }

    /// `CNI_COMMAND`: ADD, DEL, CHECK, STATUS, GC, VERSION.
    pub fn command(self, command: &str) -> CniCall {
        self.env("CNI_COMMAND", command)
    }

    /// `CNI_CONTAINERID`.
    pub fn container_id(self, id: &str) -> CniCall {
        self.env("CNI_CONTAINERID", id)
    }

    /// `CNI_NETNS`.
    pub fn netns(self, path: impl AsRef<Path>) -> CniCall {
        let path = path.as_ref().to_string_lossy().into_owned();
        self.env("CNI_NETNS", path)
    }

    /// `CNI_IFNAME`.
    pub fn ifname(self, ifname: &str) -> CniCall {
        self.env("CNI_IFNAME", ifname)
    }

    /// `CNI_ARGS` (`K=V;K2=V2`).
    pub fn args(self, args: &str) -> CniCall {
        self.env("CNI_ARGS", args)
    }

    /// `CNI_PATH`: where the plugin finds delegates (IPAM plugins).
    pub fn path(self, dirs: &[&Path]) -> CniCall {
        let joined = dirs
            .iter()
            .map(|d| d.to_string_lossy())
            .collect::<Vec<_>>()
            .join(":");
        self.env("CNI_PATH", joined)
    }

    /// The network configuration on stdin.
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> CniCall {
        self.stdin = bytes.into();
        self
    }

    pub fn stdin_json(self, conf: &serde_json::Value) -> CniCall {
        self.stdin(conf.to_string())
    }

    /// Runs the plugin inside `host` and waits for it.
    pub fn run_in(&self, host: &TestNetns) -> Result<PluginOutput, PluginError> {
        run_plugin(host, &self.bin, &self.env, &self.stdin)
    }
}

/// Runs `bin` inside `host` with exactly `env` as its environment and `stdin` as its input.
pub fn run_plugin(
    host: &TestNetns,
    bin: &Path,
    env: &BTreeMap<String, String>,
    stdin: &[u8],
) -> Result<PluginOutput, PluginError> {
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .envs(env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Spawned from a thread inside the namespace: the child inherits it.
    let mut child = host
        .run(|| cmd.spawn())
        .map_err(|source| PluginError::Enter {
            bin: bin.to_path_buf(),
            netns: host.name().to_owned(),
            source,
        })?
        .map_err(|source| PluginError::Spawn {
            bin: bin.to_path_buf(),
            netns: host.name().to_owned(),
            source,
        })?;
    let input = child.stdin.take();
    // Feed stdin on its own thread while this one drains stdout and stderr, so neither side
    // can block on a full pipe.
    let (written, output) = thread::scope(|scope| {
        let writer = scope.spawn(move || -> io::Result<()> {
            if let Some(mut input) = input {
                match input.write_all(stdin) {
                    // A plugin may exit without reading stdin (VERSION, early errors).
                    Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
                    other => other?,
                }
            }
            Ok(())
        });
        let output = child.wait_with_output();
        let written = writer
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (written, output)
    });
    let output = output.map_err(|source| PluginError::Wait {
        bin: bin.to_path_buf(),
        source,
    })?;
    written.map_err(|source| PluginError::Stdin {
        bin: bin.to_path_buf(),
        source,
    })?;
    Ok(PluginOutput {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}
