//! Section 4: container start. `berth run --rm busybox true` against `crun run` and `runc run`
//! of an OCI bundle holding the same busybox, and `podman run --rm` of an image imported from
//! that rootfs; with networking, the OCI runtimes get the reference plugins' ADD before and
//! DEL after (what a runtime on top of them does), podman its CNI backend.
//!
//! Everything runs from inside a throwaway "host" namespace. crun and podman run in a private
//! mount namespace (see `proc::private_mounts`); podman's configuration is entirely in a
//! temporary directory (`CONTAINERS_CONF`, `--root`, `--runroot`), never in /etc.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use berth_bench::{Cell, Row, Section, Unit};
use berth_cni::NetConfList;
use netns_fixtures::{TestNetns, test_subnet_v4, unique_name};
use serde_json::{Value, json};

use crate::cni::{CNI_VERSION, Driver, Impl, bridge_list, ms_since, runtime_conf};
use crate::podman;
use crate::proc::{private_mounts, timed};
use crate::{Opts, progress};

const BUSYBOX: &str = "/bin/busybox";
const PODMAN_IMAGE: &str = "localhost/berth-bench-busybox";
/// The network's name for berth and podman.
const NETWORK: &str = "benchnet";

fn has_portmap(plugins: &Value) -> bool {
    plugins
        .as_array()
        .is_some_and(|ps| ps.iter().any(|p| p["type"] == "portmap"))
}

/// `loopback+bridge+host-local`: the plugin types in order, with the IPAM type after its
/// plugin.
fn chain_label(plugins: &Value) -> String {
    let mut names = Vec::new();
    for p in plugins.as_array().into_iter().flatten() {
        names.extend(p["type"].as_str().map(str::to_owned));
        names.extend(p["ipam"]["type"].as_str().map(str::to_owned));
    }
    names.join("+")
}

/// The runtime network's plugins as a list of our own (cniVersion 1.0.0 for the reference),
/// with its own bridge name and IPAM state, on a fresh test subnet.
fn runtime_list(plugins: &Value, bridge: &str, data_dir: &Path) -> Result<NetConfList> {
    let mut plugins = plugins.clone();
    let subnet = test_subnet_v4().to_string();
    for p in plugins.as_array_mut().into_iter().flatten() {
        if p["type"] == "bridge" {
            p["bridge"] = json!(bridge);
        }
        if p.get("ipam").is_some() {
            p["ipam"] = json!({
                "type": "host-local",
                "ranges": [[{"subnet": subnet}]],
                "dataDir": data_dir,
                "routes": [{"dst": "0.0.0.0/0"}],
            });
        }
    }
    let bytes = serde_json::to_vec(&json!({
        "cniVersion": CNI_VERSION, "name": NETWORK, "plugins": plugins,
    }))?;
    NetConfList::from_bytes(&bytes).map_err(|e| anyhow::anyhow!("runtime conflist: {e}"))
}

/// One way of starting a container, measured `n` times.
struct Variant {
    name: &'static str,
    n: usize,
    samples: Vec<f64>,
    error: Option<String>,
}

pub fn run(opts: &Opts, s: &mut Section) -> Result<()> {
    let ours = Impl::ours();
    let theirs = Impl::reference()?;
    let (fast_n, slow_n) = if opts.quick { (5, 3) } else { (20, 8) };
    let host = TestNetns::with_tag("h")?;
    let tmp = tempfile::Builder::new().prefix("berth-bench-").tempdir()?;
    let rootfs = busybox_rootfs(tmp.path())?;
    let berth = Berth::new(
        &ours,
        tmp.path(),
        format!("berth-bench-{}", std::process::id()),
    )?;
    // The network every runtime gets is the one `berth network create` generates, read back
    // from its conflist, so the comparison follows berth's choices; without berth networks,
    // the bridge chain of section 1.
    let berth_net = berth.create_network(&host);
    let plugins = match &berth_net {
        Ok(conflist) => conflist["plugins"].clone(),
        Err(_) => serde_json::from_slice::<Value>(
            &bridge_list(
                "unused",
                "198.18.0.0/24",
                Path::new("/unused"),
                ours.portmap,
            )?
            .bytes,
        )?["plugins"]
            .clone(),
    };
    let portmap = has_portmap(&plugins);
    let chain = chain_label(&plugins);
    let bundle = Bundle::new(tmp.path(), &rootfs)?;
    let cni_ref = {
        let list = runtime_list(&plugins, &unique_name("br"), &tmp.path().join("ipam"))?;
        (Driver::quiet(&theirs, &tmp.path().join("cache")), list)
    };
    let podman = Podman::new(tmp.path(), &rootfs, &host, &ours, &theirs, &plugins);
    let podman_note = match &podman {
        Ok(_) => None,
        Err(e) => Some(format!("podman cannot run here: {e:#}")),
    };

    let mut variants = vec![
        Variant::new("berth", fast_n),
        Variant::new("berth+net", fast_n),
        Variant::new("crun", fast_n),
        Variant::new("runc", fast_n),
        Variant::new("crun+cni", fast_n),
        Variant::new("podman", slow_n),
        Variant::new("podman+cni-ref", slow_n),
        Variant::new("podman+cni-ours", slow_n),
    ];
    let rounds = fast_n.max(slow_n) + 1;
    let mut port: u16 = 8080;
    // Round-robin over the variants, one warm-up round first, so that every tool sees the
    // same background noise.
    for round in 0..rounds {
        for v in &mut variants {
            if round > v.n || v.error.is_some() {
                continue;
            }
            port += 1;
            let result = match v.name {
                "berth" => berth.run(&host, None),
                "berth+net" => match &berth_net {
                    Ok(_) => berth.run(&host, Some(portmap.then_some(port))),
                    Err(e) => Err(anyhow::anyhow!("{e:#}")),
                },
                "crun" => bundle.run(&host, Oci::Crun, None),
                "runc" => bundle.run(&host, Oci::Runc, None),
                "crun+cni" => {
                    let (driver, list) = &cni_ref;
                    let start = Instant::now();
                    TestNetns::with_tag("c")
                        .map_err(anyhow::Error::from)
                        .and_then(|ctr| {
                            let rt = runtime_conf(ctr.path(), portmap.then_some(port))?;
                            driver.add(&host, list, &rt)?;
                            bundle.run(&host, Oci::Crun, Some(ctr.path()))?;
                            driver.del(&host, list, &rt)?;
                            Ok(ms_since(start))
                        })
                }
                "podman" | "podman+cni-ref" | "podman+cni-ours" => match &podman {
                    Ok(p) => p.run(&host, v.name, port),
                    Err(_) => Err(anyhow::anyhow!("podman not available")),
                },
                _ => bail!("unknown variant {}", v.name),
            };
            match result {
                Ok(ms) if round > 0 => v.samples.push(ms),
                Ok(_) => {}
                Err(e) => v.error = Some(format!("{e:#}")),
            }
        }
        progress("start", format!("round {}/{rounds}", round + 1));
    }
    berth.cleanup();

    let cell = |name: &str| -> Cell {
        let v = variants.iter().find(|v| v.name == name);
        match v {
            Some(v) if v.samples.is_empty() => {
                Cell::na(v.error.clone().unwrap_or_else(|| "not run".into()))
            }
            Some(v) => Cell::samples(&v.samples),
            None => Cell::na("not run"),
        }
    };
    let none = "run --rm busybox true, no network";
    s.rows.push(Row::new(
        "start.none.crun",
        none,
        Unit::Ms,
        cell("berth"),
        "crun run",
        cell("crun"),
    ));
    s.rows.push(Row::new(
        "start.none.runc",
        none,
        Unit::Ms,
        cell("berth"),
        "runc run",
        cell("runc"),
    ));
    s.rows.push(Row::new(
        "start.none.podman",
        none,
        Unit::Ms,
        cell("berth"),
        "podman run --network none",
        cell("podman"),
    ));
    s.rows.push(Row::new(
        "start.bridge.crun",
        format!("run --rm busybox true on a {chain} network"),
        Unit::Ms,
        cell("berth+net"),
        "netns + reference ADD + crun run + DEL",
        cell("crun+cni"),
    ));
    s.rows.push(Row::new(
        "start.bridge.podman",
        format!("run --rm busybox true on a {chain} network"),
        Unit::Ms,
        cell("berth+net"),
        "podman run (CNI, reference plugins)",
        cell("podman+cni-ref"),
    ));
    s.rows.push(Row::new(
        "start.podman.plugins",
        format!("podman run --rm on a {chain} network: our plugins"),
        Unit::Ms,
        cell("podman+cni-ours"),
        "podman with the reference plugins",
        cell("podman+cni-ref"),
    ));
    if let Some(n) = podman_note {
        s.notes.push(n);
    }
    for v in &variants {
        if let (Some(e), false) = (&v.error, v.samples.is_empty()) {
            s.notes.push(format!(
                "{} failed after {} runs: {e}",
                v.name,
                v.samples.len()
            ));
        }
    }
    s.notes.push(format!(
        "the network is what `berth network create` generates ({chain}, cniVersion set to 1.0.0 for the reference), the same list for crun + reference plugins and for podman{}",
        if portmap { ", with one port mapping" } else { "" }
    ));
    s.notes.push(format!(
        "crun runs with the cgroup2 mount hidden in a private mount namespace (it refuses this kernel's hybrid v1+v2 layout otherwise); podman: {} backend, crun, --cgroups=disabled, vfs storage, state under a temporary root, ulimits within this machine's hard limits; {fast_n} runs each ({slow_n} for podman) after one warm-up, round-robin",
        "CNI"
    ));
    Ok(())
}

impl Variant {
    fn new(name: &'static str, n: usize) -> Variant {
        Variant {
            name,
            n,
            samples: Vec::new(),
            error: None,
        }
    }
}

/// `rootfs/bin/busybox` with `sh` and `true` linked to it.
pub fn busybox_rootfs(dir: &Path) -> Result<PathBuf> {
    let rootfs = dir.join("rootfs");
    let bin = rootfs.join("bin");
    fs::create_dir_all(&bin)?;
    fs::copy(BUSYBOX, bin.join("busybox"))
        .with_context(|| format!("copy {BUSYBOX} (install busybox-static)"))?;
    for applet in ["sh", "true"] {
        symlink("busybox", bin.join(applet))?;
    }
    for d in ["proc", "sys", "dev", "tmp", "etc"] {
        fs::create_dir_all(rootfs.join(d))?;
    }
    Ok(rootfs)
}

/// The `berth` binary with its own state directories (also the lab section's).
pub struct Berth {
    pub bin: PathBuf,
    pub plugins: PathBuf,
    pub root: PathBuf,
    pub runroot: PathBuf,
    pub cgroup_parent: String,
}

impl Berth {
    /// Ours, with state under `tmp` and its containers under `cgroup_parent`.
    pub fn new(ours: &Impl, tmp: &Path, cgroup_parent: String) -> Result<Berth> {
        let bin = ours.dir.join("berth");
        if !bin.is_file() {
            bail!(
                "{} missing: cargo build --release --workspace --bins",
                bin.display()
            );
        }
        Ok(Berth {
            bin,
            plugins: ours.dir.clone(),
            root: tmp.join("berth-root"),
            runroot: tmp.join("berth-run"),
            cgroup_parent,
        })
    }

    /// `berth` with these roots and plugins.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--root")
            .arg(&self.root)
            .arg("--runroot")
            .arg(&self.runroot)
            .arg("--cni-plugin-dir")
            .arg(&self.plugins);
        c
    }

    /// `berth run --rm busybox true`, without a network or (`Some(port)`) on the network
    /// made by `create_network`, with a port mapping if `port` is set.
    fn run(&self, host: &TestNetns, network: Option<Option<u16>>) -> Result<f64> {
        let mut cmd = self.cmd();
        cmd.args(["run", "--rm", "--cgroup-parent", &self.cgroup_parent]);
        match network {
            None => cmd.args(["--network", "none"]),
            Some(port) => {
                cmd.args(["--network", NETWORK]);
                if let Some(port) = port {
                    cmd.args(["-p", &format!("{port}:80")]);
                }
                &mut cmd
            }
        };
        timed(host, cmd.args(["busybox", "true"]))
    }

    /// `berth network create` on a test subnet and bridge name; its conflist.
    fn create_network(&self, host: &TestNetns) -> Result<Value> {
        let subnet = test_subnet_v4().to_string();
        let bridge = unique_name("br");
        let out = host.output(self.cmd().args([
            "network", "create", NETWORK, "--subnet", &subnet, "--bridge", &bridge,
        ]))?;
        if !out.status.success() {
            bail!(
                "berth network create: {}",
                String::from_utf8_lossy(&out.stderr)
                    .trim()
                    .trim_start_matches("berth: ")
            );
        }
        let path = self.root.join(format!("networks/{NETWORK}.conflist"));
        let bytes = fs::read(&path).with_context(|| format!("read {}", path.display()))?;
        Ok(serde_json::from_slice(&bytes)?)
    }

    /// The per-run cgroups go with their containers; the parent directories stay.
    fn cleanup(&self) {
        remove_cgroup_dirs(&self.cgroup_parent);
    }
}

/// Removes `/sys/fs/cgroup/<controller>/<name>` (and the cgroup2 one) where it exists and is
/// empty.
pub fn remove_cgroup_dirs(name: &str) {
    let Ok(controllers) = fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for c in controllers.filter_map(Result::ok) {
        let dir = c.path().join(name);
        if dir.is_dir() {
            if let Err(e) = fs::remove_dir(&dir) {
                eprintln!("compare: remove {}: {e}", dir.display());
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Oci {
    Crun,
    Runc,
}

/// An OCI bundle for `/bin/true` in the busybox rootfs, from `crun spec`.
struct Bundle {
    dir: PathBuf,
    spec: Value,
    crun_root: PathBuf,
    runc_root: PathBuf,
}

impl Bundle {
    fn new(tmp: &Path, rootfs: &Path) -> Result<Bundle> {
        let dir = tmp.join("bundle");
        fs::create_dir_all(&dir)?;
        let out = Command::new("crun")
            .arg("spec")
            .current_dir(&dir)
            .output()
            .context("crun spec (install crun)")?;
        if !out.status.success() {
            bail!("crun spec: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        let mut spec: Value = serde_json::from_slice(&fs::read(dir.join("config.json"))?)?;
        spec["process"]["terminal"] = json!(false);
        spec["process"]["args"] = json!(["/bin/true"]);
        spec["root"] = json!({"path": rootfs, "readonly": true});
        Ok(Bundle {
            dir,
            spec,
            crun_root: tmp.join("crun-state"),
            runc_root: tmp.join("runc-state"),
        })
    }

    /// Writes config.json (with `netns` as the network namespace, else a new one) and runs
    /// it to completion.
    fn run(&self, host: &TestNetns, oci: Oci, netns: Option<&Path>) -> Result<f64> {
        let mut spec = self.spec.clone();
        if let Some(ns) = netns {
            if let Some(list) = spec["linux"]["namespaces"].as_array_mut() {
                for n in list.iter_mut().filter(|n| n["type"] == "network") {
                    n["path"] = json!(ns);
                }
            }
        }
        fs::write(self.dir.join("config.json"), serde_json::to_vec(&spec)?)?;
        let id = unique_name("");
        let mut cmd = match oci {
            Oci::Crun => {
                let mut c = Command::new("crun");
                c.arg("--root").arg(&self.crun_root);
                private_mounts(&mut c, &[])?;
                c
            }
            Oci::Runc => {
                let mut c = Command::new("runc");
                c.arg("--root").arg(&self.runc_root);
                c
            }
        };
        cmd.args(["run", "--bundle"]).arg(&self.dir).arg(&id);
        timed(host, &mut cmd)
    }
}

/// podman with every piece of state under one temporary directory.
struct Podman {
    dir: PathBuf,
}

impl Podman {
    fn new(
        tmp: &Path,
        rootfs: &Path,
        host: &TestNetns,
        ours: &Impl,
        theirs: &Impl,
        plugins: &Value,
    ) -> Result<Podman> {
        let dir = tmp.join("podman");
        podman::state_dir(&dir, &["cni-ref", "cni-ours", "ipam-ref", "ipam-ours"])?;
        podman::write_storage_conf(&dir, "vfs")?;
        for (tag, imp) in [("ref", theirs), ("ours", ours)] {
            let conf = podman::containers_conf(
                &dir,
                &format!(
                    "[network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{plugins}\"]\nnetwork_config_dir = \"{d}/cni-{tag}\"\n",
                    d = dir.display(),
                    plugins = imp.dir.display()
                ),
            );
            fs::write(dir.join(format!("containers-{tag}.conf")), conf)?;
            let list = runtime_list(
                plugins,
                &unique_name("pm"),
                &dir.join(format!("ipam-{tag}")),
            )?;
            fs::write(
                dir.join(format!("cni-{tag}/{NETWORK}.conflist")),
                &list.bytes,
            )?;
        }
        let tarball = dir.join("busybox.tar");
        let out = Command::new("tar")
            .arg("-C")
            .arg(rootfs)
            .arg("-cf")
            .arg(&tarball)
            .arg(".")
            .output()?;
        if !out.status.success() {
            bail!("tar: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        let p = Podman { dir };
        let mut import = p.cmd("ref")?;
        import.arg("import").arg(&tarball).arg(PODMAN_IMAGE);
        timed(host, &mut import).context("podman import")?;
        Ok(p)
    }

    fn cmd(&self, tag: &str) -> Result<Command> {
        let conf = self.dir.join(format!("containers-{tag}.conf"));
        let mut c = podman::command(&self.dir, &conf, "vfs", None);
        // /var/lib: libcni's cache directory (/var/lib/cni) is hard-coded in podman.
        private_mounts(&mut c, &["/run", "/dev/shm", "/var/lib"])?;
        Ok(c)
    }

    fn run(&self, host: &TestNetns, variant: &str, port: u16) -> Result<f64> {
        let tag = if variant == "podman+cni-ours" {
            "ours"
        } else {
            "ref"
        };
        let mut c = self.cmd(tag)?;
        c.args([
            "run",
            "--rm",
            "--cgroups=disabled",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ]);
        if variant == "podman" {
            c.args(["--network", "none"]);
        } else {
            c.args(["--network", NETWORK]);
            if self.has_portmap(tag) {
                c.args(["-p", &format!("{port}:80")]);
            }
        }
        c.args([PODMAN_IMAGE, "/bin/true"]);
        timed(host, &mut c)
    }

    fn has_portmap(&self, tag: &str) -> bool {
        fs::read_to_string(self.dir.join(format!("cni-{tag}/{NETWORK}.conflist")))
            .is_ok_and(|s| s.contains("portmap"))
    }
}
