//! The world of a runtime test: a throwaway network namespace playing the host (the `berth`
//! binary runs inside it, so nothing touches the real host network), temporary `--root` and
//! `--runroot`, and a cgroup parent of its own, so leak checks see only this test's objects.

#![allow(dead_code)] // each test binary uses its own subset

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use netns_fixtures::{TestNetns, require_root};
use serde_json::Value;
use tempfile::TempDir;

pub const BERTH: &str = env!("CARGO_BIN_EXE_berth");

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub struct Env {
    pub host: TestNetns,
    pub tmp: TempDir,
    pub root: PathBuf,
    pub runroot: PathBuf,
    /// `--cgroup-parent` of every container of this test: `berth-t<pid>-<n>`.
    pub cgroup_parent: String,
}

/// What a `berth` invocation did.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl Env {
    pub fn new() -> Env {
        require_root();
        // The plugins berth finds next to itself (plugin dir default): build them first.
        for plugin in ["loopback", "bridge", "host-local", "veth"] {
            netns_fixtures::bin(plugin);
        }
        let host = TestNetns::with_tag("rt").expect("create the test's host netns");
        let tmp = tempfile::Builder::new()
            .prefix("berth-rt-")
            .tempdir()
            .expect("create a temporary directory");
        let root = tmp.path().join("root");
        let runroot = tmp.path().join("run");
        let cgroup_parent = format!(
            "berth-t{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        Env {
            host,
            tmp,
            root,
            runroot,
            cgroup_parent,
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BERTH);
        cmd.arg("--root")
            .arg(&self.root)
            .arg("--runroot")
            .arg(&self.runroot)
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// `berth <args>`, run inside the test's host netns.
    pub fn berth(&self, args: &[&str]) -> Run {
        self.host
            .output(&mut self.command(args))
            .expect("run berth")
            .into()
    }

    /// `berth run --cgroup-parent <ours> <args>`.
    pub fn run(&self, args: &[&str]) -> Run {
        self.berth(&self.run_args(args))
    }

    fn run_args<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut all = vec!["run", "--cgroup-parent", self.cgroup_parent.as_str()];
        all.extend_from_slice(args);
        all
    }

    /// Starts `berth run …` in the background (stdout/stderr piped).
    pub fn spawn_run(&self, args: &[&str]) -> Child {
        let mut cmd = self.command(&self.run_args(args));
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        self.host.spawn(&mut cmd).expect("spawn berth run")
    }

    /// `berth ps -a --json`.
    pub fn ps(&self) -> Vec<Value> {
        let out = self.berth(&["ps", "-a", "--json"]);
        assert_eq!(out.code, 0, "{out:?}");
        serde_json::from_str::<Value>(&out.stdout)
            .expect("ps --json is JSON")
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until container `name` is running; returns its full id.
    pub fn wait_running(&self, name: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = self
                .ps()
                .into_iter()
                .find(|c| c["name"] == name && c["status"] == "running");
            if let Some(c) = found {
                return c["id"].as_str().unwrap_or_default().to_owned();
            }
            assert!(Instant::now() < deadline, "container {name} never ran");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The directories a container of this test has (or had) in each cgroup hierarchy.
    pub fn cgroup_dirs(&self, id: &str) -> Vec<PathBuf> {
        hierarchies()
            .into_iter()
            .map(|h| h.join(&self.cgroup_parent).join(id))
            .filter(|p| p.exists())
            .collect()
    }

    /// `berth run -d --cgroup-parent <ours> <args>`: the container's full id.
    pub fn run_detached(&self, args: &[&str]) -> String {
        let mut all = vec!["-d"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        assert_eq!(out.code, 0, "{out:?}");
        let id = out.stdout.trim().to_owned();
        assert_eq!(id.len(), 64, "{out:?}");
        id
    }

    /// `berth inspect <query>` as JSON.
    pub fn inspect(&self, query: &str) -> Value {
        let out = self.berth(&["inspect", query]);
        assert_eq!(out.code, 0, "{out:?}");
        serde_json::from_str(&out.stdout).expect("inspect prints JSON")
    }

    /// The addresses of container `query` on `network` (from inspect).
    pub fn ips(&self, query: &str, network: &str) -> Vec<String> {
        let doc = self.inspect(query);
        doc["state"]["attachments"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["network"] == network)
            .flat_map(|a| a["ips"].as_array().cloned().unwrap_or_default())
            .filter_map(|ip| {
                ip.as_str()
                    .map(|s| s.split('/').next().unwrap_or(s).to_owned())
            })
            .collect()
    }

    /// Runs `cmd` inside the test's host netns; its stdout, or a panic with its stderr.
    pub fn host_sh(&self, script: &str) -> String {
        let out = self
            .host
            .output(Command::new("sh").args(["-c", script]))
            .expect("run sh in the host netns");
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until `check` holds (polling), or panics with `what`.
    pub fn wait_for(&self, what: &str, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !check() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Nothing of this test may remain: no container record, no netns file, no mount under
    /// the temporary roots, no cgroup directory under this test's parent; and on the network
    /// side (inside the test's host netns): no veth (bridges may stay, as with docker), no
    /// per-container iptables chain or rule, no IPAM reservation (only `lock`), no cached CNI
    /// result; and no process of ours (monitors, plugins).
    /// The files of the one layer in the image store (the busybox image's, in tests that
    /// use only it): `<root>/images/layers/<chain id>/diff`.
    pub fn only_layer(&self) -> PathBuf {
        let layers: Vec<PathBuf> = fs::read_dir(self.root.join("images/layers"))
            .expect("list the image layers")
            .filter_map(Result::ok)
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| e.path().join("diff"))
            .collect();
        assert_eq!(layers.len(), 1, "{layers:?}");
        layers.into_iter().next().unwrap_or_default()
    }

    pub fn assert_clean(&self) {
        self.assert_clean_containers();
        let left = self.leftovers();
        assert!(left.is_empty(), "left behind: {left:#?}");
    }

    /// What [`Env::assert_clean`] checks, as a list of what is left (empty: clean). Also the
    /// content of `<root>/containers` itself: no container directory, staging or doomed
    /// directory of any kind.
    pub fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        match self.ps_all() {
            Ok(list) => left.extend(list.iter().map(|c| format!("container {c}"))),
            Err(e) => left.push(format!("ps -a: {e}")),
        }
        if let Ok(entries) = fs::read_dir(self.root.join("containers")) {
            left.extend(
                entries
                    .filter_map(Result::ok)
                    .map(|e| format!("containers/{}", e.file_name().to_string_lossy())),
            );
        }
        if let Ok(entries) = fs::read_dir(self.runroot.join("netns")) {
            left.extend(
                entries
                    .filter_map(Result::ok)
                    .map(|e| format!("netns file {}", e.path().display())),
            );
        }
        left.extend(
            mounts_under(self.tmp.path())
                .into_iter()
                .map(|m| format!("mount {m}")),
        );
        left.extend(
            hierarchies()
                .into_iter()
                .map(|h| h.join(&self.cgroup_parent))
                .filter(|p| p.exists())
                .map(|p| format!("cgroup {}", p.display())),
        );
        match self.host.netlink().links() {
            Ok(links) => left.extend(
                links
                    .into_iter()
                    .filter(|l| l.name != "lo" && l.kind.as_deref() != Some("bridge"))
                    .map(|l| format!("link {} ({:?})", l.name, l.kind)),
            ),
            Err(e) => left.push(format!("list links: {e}")),
        }
        for tool in ["iptables-save", "ip6tables-save"] {
            let rules = self.host_sh(tool);
            left.extend(
                rules
                    .lines()
                    .filter(|l| is_owned_rule(l))
                    .map(|l| format!("{tool}: {l}")),
            );
        }
        let ipam = self.root.join("cni").join("networks");
        if let Ok(networks) = fs::read_dir(&ipam) {
            for network in networks.filter_map(Result::ok) {
                if let Ok(files) = fs::read_dir(network.path()) {
                    left.extend(
                        files
                            .filter_map(Result::ok)
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .filter(|n| n != "lock")
                            .map(|n| format!("IPAM {}/{n}", network.path().display())),
                    );
                }
            }
        }
        let cache = self.root.join("cni").join("cache").join("results");
        if let Ok(entries) = fs::read_dir(&cache) {
            left.extend(
                entries
                    .filter_map(Result::ok)
                    .map(|e| format!("CNI cache {}", e.file_name().to_string_lossy())),
            );
        }
        left.extend(
            processes_mentioning(self.tmp.path())
                .into_iter()
                .map(|pid| format!("process {pid}: {}", cmdline(pid))),
        );
        left
    }

    /// `berth ps -a --json`, or what went wrong.
    fn ps_all(&self) -> Result<Vec<Value>, String> {
        let out = self.berth(&["ps", "-a", "--json"]);
        if out.code != 0 {
            return Err(format!("{out:?}"));
        }
        serde_json::from_str::<Value>(&out.stdout)
            .map(|v| v.as_array().cloned().unwrap_or_default())
            .map_err(|e| format!("{e}: {out:?}"))
    }

    /// The container part of [`Env::assert_clean`].
    pub fn assert_clean_containers(&self) {
        let records = self.ps();
        assert!(records.is_empty(), "containers left: {records:?}");
        let netns_dir = self.runroot.join("netns");
        if netns_dir.exists() {
            let left: Vec<_> = fs::read_dir(&netns_dir)
                .expect("list netns dir")
                .filter_map(Result::ok)
                .map(|e| e.path())
                .collect();
            assert!(left.is_empty(), "netns files left: {left:?}");
        }
        let mounts = mounts_under(self.tmp.path());
        assert!(mounts.is_empty(), "mounts left: {mounts:?}");
        let cgroups: Vec<_> = hierarchies()
            .into_iter()
            .map(|h| h.join(&self.cgroup_parent))
            .filter(|p| p.exists())
            .collect();
        assert!(cgroups.is_empty(), "cgroups left: {cgroups:?}");
    }
}

/// A process's command line, for messages.
pub fn cmdline(pid: i32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .unwrap_or_default()
}

impl Drop for Env {
    fn drop(&mut self) {
        // Best effort, also after a failed assertion: remove whatever the test left (inside
        // the test's host netns, where the CNI DELs must run).
        if let Ok(out) = self.host.output(&mut self.command(&["ps", "-a", "--json"])) {
            if let Ok(Value::Array(list)) = serde_json::from_slice::<Value>(&out.stdout) {
                for c in list {
                    if let Some(id) = c["id"].as_str() {
                        let _ = self.host.output(&mut self.command(&["rm", "-f", id]));
                    }
                }
            }
        }
        let _ = self.host.output(&mut self.command(&["system", "prune"]));
        for pid in processes_mentioning(self.tmp.path()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        for h in hierarchies() {
            let _ = fs::remove_dir(h.join(&self.cgroup_parent));
        }
    }
}

/// Every cgroup hierarchy root: the v1 controller mounts under /sys/fs/cgroup, and
/// /sys/fs/cgroup itself (a v2 host).
pub fn hierarchies() -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from("/sys/fs/cgroup")];
    if let Ok(entries) = fs::read_dir("/sys/fs/cgroup") {
        dirs.extend(
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_dir()),
        );
    }
    dirs
}

/// Mount points under `dir` in this process's mount table.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let table = fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    let prefix = dir.to_string_lossy().into_owned();
    table
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&prefix))
        .map(str::to_owned)
        .collect()
}

/// An iptables-save line that belongs to a container: a per-owner chain (`BERTH-MASQ-…`,
/// `BERTH-DN-…`, `BERTH-ISO-…`) or a rule whose comment names an owner (`berth <network>
/// <id> <ifname>`). The shared skeleton (chains like `BERTH-POSTROUTING`, rules commented
/// just `berth`) is created once per host and stays, like docker's `DOCKER` chains.
pub fn is_owned_rule(line: &str) -> bool {
    let owner_chain = ["BERTH-MASQ-", "BERTH-DN-", "BERTH-ISO-"]
        .iter()
        .any(|p| line.contains(&format!(":{p}")) || line.contains(&format!("-j {p}")));
    let owner_comment = line.contains("--comment \"berth ") || line.contains("--comment berth-");
    owner_chain || owner_comment
}

/// Processes (other than this test binary) whose command line mentions `path`: monitors and
/// `berth` commands of a test, by their `--root`.
pub fn processes_mentioning(path: &Path) -> Vec<i32> {
    let needle = path.to_string_lossy().into_owned();
    let me = std::process::id();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| u32::try_from(*pid).ok() != Some(me))
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
        })
        .collect()
}

/// Whether the portmap plugin is built next to berth (until it lands, `-p` must fail
/// with a one-line error naming it).
pub fn have_portmap() -> bool {
    Path::new(BERTH)
        .parent()
        .is_some_and(|d| d.join("portmap").is_file())
}

/// Asserts a failed command printed exactly one line starting with `berth: `.
pub fn assert_one_line_error(out: &Run) {
    assert_ne!(out.code, 0, "{out:?}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{out:?}");
    assert!(lines[0].starts_with("berth: "), "{out:?}");
}

/// Lab `lab`'s entries in the real `/run/netns`: `clab-<lab>-<node>`, berth's names for its
/// nodes' namespaces.
pub fn lab_netns_names(lab: &str) -> Vec<String> {
    netns_fixtures::run_netns_names(&format!("clab-{lab}-"))
}

/// A test lab's cleanup when the test did not get to destroy it: `lab destroy --name LAB`
/// (with `more` arguments), then whatever `/run/netns` names of it are still there.
pub fn destroy_lab(env: &Env, lab: &str, more: &[&str]) {
    let mut args = vec!["lab", "destroy", "--name", lab];
    args.extend_from_slice(more);
    let _ = env.berth(&args);
    for name in lab_netns_names(lab) {
        let _ = fs::remove_file(Path::new("/run/netns").join(name));
    }
}
