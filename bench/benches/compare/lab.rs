//! Section 8: network labs. `berth lab deploy` and `destroy` of the 10-node clos example and
//! of a generated 50-node chain, against the same topology scripted with podman the way a
//! person does it without containerlab: `podman run` per node, then per link a veth pair
//! created straight into the two containers' namespaces (`ip link add … netns PID … type veth
//! peer … netns PID`), MTU 9500, up; destroy is one `podman rm -f -t 0` of every node (the
//! links vanish with the namespaces).
//!
//! Both sides build the same thing: privileged busybox nodes with no other network, and veth
//! links with containerlab's MTU. The clos example's `exec:` lines (addresses and routes) are
//! left out, since the podman side has no equivalent; what is measured is nodes plus links.
//! After every deploy, each node's interfaces are checked (present, MTU 9500, up) on both
//! sides, so the figures are those of working labs.
//!
//! Everything runs from inside a throwaway "host" namespace. podman keeps all its state under
//! a temporary directory and runs in one private mount namespace shared by all its commands
//! (held open by a `sleep` process): its `/run`, `/dev/shm` and `/var/lib` are tmpfs there,
//! so detached containers, their conmon, locks and mounts never reach the host's.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, Write as _};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use berth_bench::{Row, Section, Unit};
use berth_topology::{Attach, Kind, LinkKind};
use netns_fixtures::TestNetns;

use crate::cni::{Impl, ms_since};
use crate::podman;
use crate::proc::{private_mounts, timed};
use crate::samples::Samples;
use crate::start::{Berth, busybox_rootfs, remove_cgroup_dirs};
use crate::{Opts, progress};

const PODMAN_IMAGE: &str = "localhost/berth-bench-busybox";
/// containerlab's default MTU, which `berth lab` gives every link of these files.
const MTU: u32 = 9500;
/// Nodes started at once by the parallel podman variant: berth lab's default `--max-workers`.
const PODMAN_WORKERS: usize = 8;
/// Nodes of the generated chain.
const CHAIN_NODES: usize = 50;

pub fn run(opts: &Opts, s: &mut Section) -> Result<()> {
    let ours = Impl::ours();
    // The chain's podman side takes tens of seconds a run: fewer runs of it.
    let (clos_runs, chain_runs) = if opts.quick { (2, 2) } else { (5, 3) };
    let host = TestNetns::with_tag("h")?;
    let tmp = tempfile::Builder::new().prefix("berth-bench-").tempdir()?;
    let tag = std::process::id() % 100_000;
    let labs = [
        Lab::clos(tmp.path(), &format!("bc{tag}"))?,
        Lab::chain(tmp.path(), &format!("bn{tag}"), CHAIN_NODES)?,
    ];
    let berth = Berth::new(
        &ours,
        tmp.path(),
        format!("berth-bench-lab-{}", std::process::id()),
    )?;
    let podman = Podman::new(tmp.path(), &host);
    let podman_note = match &podman {
        Ok(p) => format!("{} storage driver", p.driver),
        Err(e) => format!("podman cannot run here: {e:#}"),
    };

    for (l, lab) in labs.iter().enumerate() {
        // One warm-up round, before the first lab only (berth imports its busybox image
        // on first use; podman's store and the page cache warm up), so that the chain's
        // long runs all count.
        let warmup = usize::from(l == 0);
        let runs = if l == 0 { clos_runs } else { chain_runs };
        let mut ours_deploy = Samples::default();
        let mut ours_destroy = Samples::default();
        let mut seq_deploy = Samples::default();
        let mut par_deploy = Samples::default();
        let mut pm_destroy = Samples::default();
        progress(
            "lab",
            format!(
                "{}: {} nodes, {} links; {runs} runs each ({warmup} warm-up): berth, podman one at a time, podman {PODMAN_WORKERS} at a time",
                lab.id,
                lab.nodes.len(),
                lab.links.len()
            ),
        );
        // Round-robin, so that load changes on this shared machine hit every side alike.
        for i in 0..runs + warmup {
            let keep = i >= warmup;
            let (deploy, destroy) = berth.cycle(&host, lab);
            ours_deploy.push(keep, deploy);
            ours_destroy.push(keep, destroy);
            match &podman {
                Ok(p) => {
                    for (workers, deploy_samples) in
                        [(1, &mut seq_deploy), (PODMAN_WORKERS, &mut par_deploy)]
                    {
                        let (deploy, destroy) = p.cycle(&host, lab, workers);
                        deploy_samples.push(keep, deploy);
                        pm_destroy.push(keep, destroy);
                    }
                }
                Err(e) => {
                    let why = format!("podman cannot run here: {e:#}");
                    seq_deploy.error.get_or_insert_with(|| why.clone());
                    par_deploy.error.get_or_insert_with(|| why.clone());
                    pm_destroy.error.get_or_insert(why);
                }
            }
            progress(
                "lab",
                format!("{}: round {}/{}", lab.id, i + 1, runs + warmup),
            );
        }
        let what = format!("{} ({} veth links)", lab.title, lab.links.len());
        // The chain's figures run into seconds.
        let (unit, scale) = if lab.nodes.len() > 20 {
            (Unit::S, 1e-3)
        } else {
            (Unit::Ms, 1.0)
        };
        let n = lab.nodes.len();
        let l = lab.links.len();
        s.rows.push(Row::new(
            format!("lab.{}.deploy", lab.id),
            format!("lab deploy: {what}"),
            unit,
            ours_deploy.cell(scale),
            format!("podman run ×{n} one at a time + ip link add ×{l}"),
            seq_deploy.cell(scale),
        ));
        s.rows.push(Row::new(
            format!("lab.{}.deploy.parallel", lab.id),
            format!("lab deploy: {what}"),
            unit,
            ours_deploy.cell(scale),
            format!("podman run ×{n}, {PODMAN_WORKERS} at a time + ip link add ×{l}"),
            par_deploy.cell(scale),
        ));
        s.rows.push(Row::new(
            format!("lab.{}.destroy", lab.id),
            format!("lab destroy: {what}"),
            unit,
            ours_destroy.cell(scale),
            format!("podman rm -f -t 0 of the {n} nodes (one command)"),
            pm_destroy.cell(scale),
        ));
    }
    berth.cleanup_labs(&host, &labs);
    drop(podman);

    s.notes.push(format!(
        "berth: `berth lab deploy -t FILE` (privileged busybox nodes started {PODMAN_WORKERS} at a time, its default; veth links with MTU {MTU}; /run/netns names) and `berth lab destroy -t FILE`, release binaries; the clos is examples/labs/clos without its `exec:` lines (addresses, routes), the chain n1—n2—…—n{CHAIN_NODES} (eth1 towards n1, eth2 towards n{CHAIN_NODES})"
    ));
    s.notes.push(format!(
        "podman, as a script would do it: `podman run -d --privileged --network none --cgroups=disabled IMAGE sleep infinity` per node (one at a time, or {PODMAN_WORKERS} at a time as `xargs -P{PODMAN_WORKERS}` would), one `podman inspect` for every pid, one `ip link add A netns PID_A mtu {MTU} type veth peer name B netns PID_B mtu {MTU}` per link, one `nsenter -t PID -n ip -batch` per node setting its interfaces up; destroy: one `podman rm -f -t 0` naming every node (destroy figures pooled over both deploy variants); crun, cgroupfs, {podman_note}, state under a temporary root, in a private mount namespace"
    ));
    s.notes.push(format!(
        "after every deploy each node's interfaces are checked on both sides (present, MTU {MTU}, up) and a run that fails the check counts as failed; runs round-robin: clos {clos_runs} each after one warm-up round, chain {chain_runs} each"
    ));
    Ok(())
}

/// A lab as both sides build it: nodes and veth links, written as a containerlab file.
struct Lab {
    /// The row key: `clos`, `chain50`.
    id: String,
    title: String,
    /// The lab's `name:`; berth names the nodes `clab-<name>-<node>`, podman too.
    name: String,
    nodes: Vec<String>,
    /// Each link's two ends: (node, interface).
    links: Vec<[(String, String); 2]>,
    file: PathBuf,
}

impl Lab {
    /// examples/labs/clos read by berth-topology, written back with nodes and links only.
    fn clos(tmp: &Path, name: &str) -> Result<Lab> {
        let example =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/labs/clos/topology.clab.yml");
        let parsed = berth_topology::parse_file(&example)
            .with_context(|| format!("read {}", example.display()))?;
        let topo = parsed.topology;
        let mut nodes = Vec::new();
        for (node_name, node) in &topo.nodes {
            if node.kind != Kind::Linux {
                bail!(
                    "{}: node {node_name} is not of kind linux",
                    example.display()
                );
            }
            nodes.push(node_name.as_str().to_owned());
        }
        let mut links = Vec::new();
        for link in &topo.links {
            let end = |i: usize| match (&link.endpoints[i].attach, link.kind) {
                (Attach::Node(n), LinkKind::Veth) => Ok((
                    n.as_str().to_owned(),
                    link.endpoints[i].ifname.as_str().to_owned(),
                )),
                _ => bail!(
                    "{}: only veth links between nodes are benchmarked",
                    example.display()
                ),
            };
            links.push([end(0)?, end(1)?]);
        }
        Lab::write(
            tmp,
            "clos",
            "10-node clos: 2 spines, 4 leaves, 4 hosts",
            name,
            nodes,
            links,
        )
    }

    /// n1—n2—…—nN: node i's eth2 to node i+1's eth1.
    fn chain(tmp: &Path, name: &str, n: usize) -> Result<Lab> {
        let nodes: Vec<String> = (1..=n).map(|i| format!("n{i}")).collect();
        let links = (1..n)
            .map(|i| {
                [
                    (format!("n{i}"), "eth2".to_owned()),
                    (format!("n{}", i + 1), "eth1".to_owned()),
                ]
            })
            .collect();
        Lab::write(
            tmp,
            &format!("chain{n}"),
            &format!("{n}-node chain n1—n2—…—n{n}"),
            name,
            nodes,
            links,
        )
    }

    /// Writes the containerlab file (busybox nodes, brief links) and checks that it parses.
    fn write(
        tmp: &Path,
        id: &str,
        title: &str,
        name: &str,
        nodes: Vec<String>,
        links: Vec<[(String, String); 2]>,
    ) -> Result<Lab> {
        let mut text =
            format!("name: {name}\ntopology:\n  defaults:\n    kind: linux\n    image: busybox\n");
        text.push_str("  nodes:\n");
        for n in &nodes {
            writeln!(text, "    {n}: {{}}")?;
        }
        text.push_str("  links:\n");
        for [(a, ai), (b, bi)] in &links {
            writeln!(text, "    - endpoints: [\"{a}:{ai}\", \"{b}:{bi}\"]")?;
        }
        let file = tmp.join(format!("{id}.clab.yml"));
        fs::write(&file, &text).with_context(|| format!("write {}", file.display()))?;
        berth_topology::parse_file(&file)
            .with_context(|| format!("the generated {}", file.display()))?;
        Ok(Lab {
            id: id.to_owned(),
            title: title.to_owned(),
            name: name.to_owned(),
            nodes,
            links,
            file,
        })
    }

    fn container(&self, node: &str) -> String {
        format!("clab-{}-{node}", self.name)
    }

    /// Each node's interfaces: the link ends it holds.
    fn interfaces_of(&self, node: &str) -> Vec<&str> {
        self.links
            .iter()
            .flatten()
            .filter(|(n, _)| n == node)
            .map(|(_, i)| i.as_str())
            .collect()
    }

    /// Every node's interfaces present, with MTU 9500 and up, read with `ip -o link` inside
    /// the namespace `netns(node)` names (a path for `nsenter --net=`).
    fn check(&self, host: &TestNetns, netns: &dyn Fn(&str) -> Result<String>) -> Result<()> {
        for node in &self.nodes {
            let ns = netns(node)?;
            let out = host.output(
                Command::new("nsenter")
                    .arg(format!("--net={ns}"))
                    .args(["ip", "-o", "link"]),
            )?;
            if !out.status.success() {
                bail!(
                    "nsenter --net={ns} ip -o link: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            let links = String::from_utf8_lossy(&out.stdout);
            for ifname in self.interfaces_of(node) {
                match link_line(&links, ifname) {
                    Some((mtu, true)) if mtu == MTU => {}
                    found => bail!(
                        "check after deploy: {node} {ifname}: expected MTU {MTU} and up, found {found:?} in\n{links}"
                    ),
                }
            }
        }
        Ok(())
    }
}

/// In `ip -o link` output, the line of `ifname`: (MTU, administratively up).
fn link_line(links: &str, ifname: &str) -> Option<(u32, bool)> {
    links.lines().find_map(|l| {
        let name = l.split(": ").nth(1)?.split('@').next()?;
        if name != ifname {
            return None;
        }
        let mtu = l.split(" mtu ").nth(1)?.split(' ').next()?.parse().ok()?;
        let flags = l.split('<').nth(1)?.split('>').next()?;
        Some((mtu, flags.split(',').any(|f| f == "UP")))
    })
}

/// A command's failure as an error naming it, with its stderr.
fn check_status(what: &str, out: &std::process::Output) -> Result<()> {
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The lab section's verbs.
impl Berth {
    fn lab(&self, verb: &str, lab: &Lab) -> Command {
        let mut c = self.cmd();
        c.args(["lab", verb, "-t"])
            .arg(&lab.file)
            .stdin(Stdio::null());
        c
    }

    /// One deploy (checked) and one destroy, each timed; on any failure the lab is destroyed
    /// with `--cleanup` so that the next run starts from nothing.
    fn cycle(&self, host: &TestNetns, lab: &Lab) -> (Result<f64>, Result<f64>) {
        let deploy = timed(
            host,
            self.lab("deploy", lab)
                .args(["--cgroup-parent", &self.cgroup_parent]),
        )
        .and_then(|ms| {
            lab.check(host, &|node| {
                Ok(format!("/run/netns/{}", lab.container(node)))
            })?;
            Ok(ms)
        });
        let destroy = timed(host, &mut self.lab("destroy", lab)).and_then(|ms| {
            let left = self.netns_names(lab);
            if !left.is_empty() {
                bail!("after destroy: /run/netns entries left: {left:?}");
            }
            Ok(ms)
        });
        if deploy.is_err() || destroy.is_err() {
            self.destroy_quietly(host, lab);
        }
        (deploy, destroy)
    }

    /// The lab's entries in `/run/netns` (berth names each node's namespace there).
    fn netns_names(&self, lab: &Lab) -> Vec<String> {
        netns_fixtures::run_netns_names(&format!("clab-{}-", lab.name))
    }

    /// `lab destroy --cleanup` (also without the lab's state), then any `/run/netns` name
    /// of the lab that is still there.
    fn destroy_quietly(&self, host: &TestNetns, lab: &Lab) {
        let _ = host.output(self.lab("destroy", lab).arg("--cleanup"));
        for name in self.netns_names(lab) {
            let path = Path::new("/run/netns").join(&name);
            // The name is a bind mount of the namespace: unmount, then remove the file.
            let _ = nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH);
            if let Err(e) = fs::remove_file(&path) {
                eprintln!("compare: remove {}: {e}", path.display());
            }
        }
    }

    fn cleanup_labs(&self, host: &TestNetns, labs: &[Lab]) {
        // Normally a no-op: every cycle ends with its lab destroyed.
        for lab in labs {
            if !self.netns_names(lab).is_empty() {
                self.destroy_quietly(host, lab);
            }
        }
        remove_cgroup_dirs(&self.cgroup_parent);
    }
}

/// A private mount namespace that every podman command of this section joins, held open by
/// a `sleep` that lives as long as this value: detached containers, their conmon and
/// podman's lock memory (`/dev/shm`) must be seen by the later `inspect` and `rm`.
struct MountNs {
    holder: Child,
    ns: File,
}

impl MountNs {
    fn new() -> Result<MountNs> {
        let mut c = Command::new("sleep");
        c.arg("infinity")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        private_mounts(&mut c, &["/run", "/dev/shm", "/var/lib"])?;
        // spawn returns once the child has exec'd, so its namespace is set up by now.
        let mut holder = c.spawn().context("spawn the mount namespace's holder")?;
        let path = format!("/proc/{}/ns/mnt", holder.id());
        match File::open(&path) {
            Ok(ns) => Ok(MountNs { holder, ns }),
            Err(e) => {
                let _ = holder.kill();
                let _ = holder.wait();
                Err(e).with_context(|| format!("open {path}"))
            }
        }
    }

    /// Makes `cmd` start inside this mount namespace.
    fn enter(&self, cmd: &mut Command) {
        let fd = self.ns.as_raw_fd();
        // SAFETY: runs in the forked child before exec: one setns syscall on an fd that is
        // open in the child (inherited; only exec closes it), no allocation. The child is
        // single-threaded, which joining a mount namespace requires.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNS) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
}

impl Drop for MountNs {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// podman with every piece of state under one temporary directory, in one private mount
/// namespace; the overlay storage driver when it works here, else vfs.
struct Podman {
    dir: PathBuf,
    driver: &'static str,
    mnt: MountNs,
}

impl Podman {
    fn new(tmp: &Path, host: &TestNetns) -> Result<Podman> {
        let dir = tmp.join("podman");
        podman::state_dir(&dir, &["cni"])?;
        fs::write(
            dir.join("containers.conf"),
            podman::containers_conf(
                &dir,
                &format!(
                    "[network]\nnetwork_backend = \"cni\"\nnetwork_config_dir = \"{}/cni\"\n",
                    dir.display()
                ),
            ),
        )?;
        let rootfs = busybox_rootfs(&dir)?;
        let tarball = dir.join("busybox.tar");
        let out = Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tarball)
            .arg(".")
            .output()
            .context("tar")?;
        check_status("tar", &out)?;
        let mut p = Podman {
            dir,
            driver: "overlay",
            mnt: MountNs::new()?,
        };
        // overlay when podman can use it here (a probe that creates nothing), else vfs.
        p.write_storage_conf()?;
        if p.output(host, p.cmd().args(["images", "-q"])).is_err() {
            p.driver = "vfs";
            p.write_storage_conf()?;
        }
        p.output(
            host,
            p.cmd()
                .arg("import")
                .arg(&tarball)
                .arg(PODMAN_IMAGE)
                .stdout(Stdio::null()),
        )
        .context("podman import")?;
        Ok(p)
    }

    /// podman's storage.conf for `self.driver`; written before the commands run, never
    /// while they do (parallel `podman run`s read it).
    fn write_storage_conf(&self) -> Result<()> {
        podman::write_storage_conf(&self.dir, self.driver)
    }

    fn cmd(&self) -> Command {
        let mut c = podman::command(
            &self.dir,
            &self.dir.join("containers.conf"),
            self.driver,
            None,
        );
        c.stdin(Stdio::null());
        self.mnt.enter(&mut c);
        c
    }

    /// Runs `cmd` in `host`; its stdout, or an error with its stderr.
    fn output(&self, host: &TestNetns, cmd: &mut Command) -> Result<String> {
        let what = format!("{:?}", cmd.get_args().collect::<Vec<_>>());
        let out = host.output(cmd).with_context(|| format!("run {what}"))?;
        check_status(&format!("podman {what}"), &out)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn run_node(&self, lab: &Lab, node: &str) -> Command {
        let mut c = self.cmd();
        c.args([
            "run",
            "-d",
            "--name",
            &lab.container(node),
            "--network",
            "none",
            "--privileged",
            "--cgroups=disabled",
            // Within this machine's hard limits (podman's defaults exceed them).
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
            PODMAN_IMAGE,
            "/bin/busybox",
            "sleep",
            "infinity",
        ])
        .stdout(Stdio::null());
        c
    }

    /// Deploys the lab: nodes (`workers` at a time), their pids, links, interfaces up.
    fn deploy(&self, host: &TestNetns, lab: &Lab, workers: usize) -> Result<()> {
        if workers <= 1 {
            for node in &lab.nodes {
                self.output(host, &mut self.run_node(lab, node))?;
            }
        } else {
            // A pool of `workers` threads taking the next node, as `xargs -P` does.
            let next = AtomicUsize::new(0);
            std::thread::scope(|scope| {
                let handles: Vec<_> = (0..workers)
                    .map(|_| {
                        scope.spawn(|| -> Result<()> {
                            loop {
                                let i = next.fetch_add(1, Ordering::Relaxed);
                                let Some(node) = lab.nodes.get(i) else {
                                    return Ok(());
                                };
                                self.output(host, &mut self.run_node(lab, node))?;
                            }
                        })
                    })
                    .collect();
                handles.into_iter().try_for_each(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("a podman run thread panicked")))
                })
            })?;
        }
        let names: Vec<String> = lab.nodes.iter().map(|n| lab.container(n)).collect();
        let pids = self.output(
            host,
            self.cmd()
                .args(["inspect", "-f", "{{.State.Pid}}"])
                .args(&names),
        )?;
        let pids: Vec<&str> = pids.split_whitespace().collect();
        if pids.len() != names.len() || pids.iter().any(|p| p.parse::<u32>().is_err()) {
            bail!(
                "podman inspect: expected {} pids, got {pids:?}",
                names.len()
            );
        }
        let by_node: BTreeMap<&str, &str> = lab
            .nodes
            .iter()
            .map(String::as_str)
            .zip(pids.iter().copied())
            .collect();
        let pid_of = |node: &str| -> Result<&str> {
            by_node
                .get(node)
                .copied()
                .with_context(|| format!("a link names {node}, not a node of lab {}", lab.name))
        };
        let mtu = MTU.to_string();
        for [(a, ai), (b, bi)] in &lab.links {
            let out = host.output(Command::new("ip").args([
                "link",
                "add",
                ai,
                "netns",
                pid_of(a)?,
                "mtu",
                &mtu,
                "type",
                "veth",
                "peer",
                "name",
                bi,
                "netns",
                pid_of(b)?,
                "mtu",
                &mtu,
            ]))?;
            check_status(&format!("ip link add {a}:{ai} <-> {b}:{bi}"), &out)?;
        }
        for node in &lab.nodes {
            let batch: String = lab
                .interfaces_of(node)
                .iter()
                .map(|i| format!("link set {i} up\n"))
                .collect();
            if batch.is_empty() {
                continue;
            }
            let pid = pid_of(node)?;
            let mut child = host.run(|| {
                Command::new("nsenter")
                    .args(["-t", pid, "-n", "ip", "-batch", "-"])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
            })??;
            if let Some(mut stdin) = child.stdin.take() {
                stdin.write_all(batch.as_bytes())?;
            }
            let out = child.wait_with_output()?;
            check_status(
                &format!("nsenter -t {pid} -n ip -batch (node {node})"),
                &out,
            )?;
        }
        Ok(())
    }

    /// One deploy (checked) and one destroy, each timed; on any failure every container is
    /// removed so that the next run starts from nothing.
    fn cycle(&self, host: &TestNetns, lab: &Lab, workers: usize) -> (Result<f64>, Result<f64>) {
        let start = Instant::now();
        let deploy = self.deploy(host, lab, workers).and_then(|()| {
            let ms = ms_since(start);
            let pids = self.output(
                host,
                self.cmd()
                    .args(["inspect", "-f", "{{.Name}} {{.State.Pid}}"])
                    .args(lab.nodes.iter().map(|n| lab.container(n))),
            )?;
            lab.check(host, &|node| {
                let name = lab.container(node);
                pids.lines()
                    .find_map(|l| l.strip_prefix(&format!("{name} ")))
                    .map(|pid| format!("/proc/{pid}/ns/net"))
                    .with_context(|| format!("no pid of {name} in {pids:?}"))
            })?;
            Ok(ms)
        });
        let destroy = self.destroy(host, lab);
        if deploy.is_err() || destroy.is_err() {
            self.sweep(host);
        }
        (deploy, destroy)
    }

    /// One `podman rm -f -t 0` naming every node, timed; then no container may be left.
    fn destroy(&self, host: &TestNetns, lab: &Lab) -> Result<f64> {
        let mut c = self.cmd();
        c.args(["rm", "-f", "-t", "0"])
            .args(lab.nodes.iter().map(|n| lab.container(n)))
            .stdout(Stdio::null());
        let ms = timed(host, &mut c)?;
        let left = self.output(host, self.cmd().args(["ps", "-aq"]))?;
        if !left.trim().is_empty() {
            bail!("after podman rm: containers left: {}", left.trim());
        }
        Ok(ms)
    }

    /// Every container removed (not timed).
    fn sweep(&self, host: &TestNetns) {
        let _ = host.output(self.cmd().args(["rm", "-a", "-f", "-t", "0"]));
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Normally nothing is left; after a failure, conmon and the containers would
        // otherwise outlive the mount namespace's holder.
        match TestNetns::with_tag("p") {
            Ok(host) => self.sweep(&host),
            Err(e) => eprintln!("compare: podman's final sweep: {e}"),
        }
    }
}
