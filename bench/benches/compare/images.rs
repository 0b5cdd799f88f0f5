//! Section 7: images. `berth pull` against `podman pull` and `skopeo copy` from the same local
//! registry (Debian's docker-registry on 127.0.0.1 of a throwaway namespace, images built
//! offline by netns-fixtures and pushed with skopeo): a cold pull of a multi-layer image, a
//! pull whose layers are all present, the peak RSS of pulling one big layer, and the start of
//! a pulled 5-layer image against the offline busybox image.
//!
//! podman keeps all of its state under a temporary directory (see `start`); its store is
//! emptied between cold pulls with `podman rmi -a -f`, berth's with a fresh `--root`,
//! skopeo's with a fresh destination directory — none of that is timed.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use berth_bench::{Cell, Row, Section, Unit};
use netns_fixtures::images::{
    Compression, Format, LayerBuilder, OciLayout, PATH, Remote, SKOPEO_BIN, base_layer, big,
    five_layer, host_arch, media, push,
};
use netns_fixtures::{TestNetns, TestRegistry};
use serde_json::json;

use crate::cni::Impl;
use crate::podman;
use crate::proc::{TIME, max_rss_mib, private_mounts, timed};
use crate::samples::Samples;
use crate::{Opts, progress};

pub fn run(opts: &Opts, s: &mut Section) -> Result<()> {
    let ours = Impl::ours();
    let bin = ours.dir.join("berth");
    if !bin.is_file() {
        bail!(
            "{} missing: cargo build --release --workspace --bins",
            bin.display()
        );
    }
    let runs = if opts.quick { 3 } else { 7 };
    let (layer_mb, big_mb) = if opts.quick { (4, 100) } else { (16, 500) };
    let host = TestNetns::with_tag("h")?;
    let tmp = tempfile::Builder::new().prefix("berth-bench-").tempdir()?;
    let registry = TestRegistry::plain(&host).context("start docker-registry")?;
    let remote = Remote::of(&host, &registry);

    progress(
        "images",
        format!("building and pushing a 5-layer image ({layer_mb} MiB layers)"),
    );
    let mut layout = OciLayout::create(&tmp.path().join("layout"))?;
    multi_layer(&mut layout, layer_mb)?;
    push(layout.dir(), "multi", &remote, "bench/multi:1")?;
    five_layer(&mut layout)?;
    push(layout.dir(), "five", &remote, "bench/five:1")?;
    let multi = format!("{}/bench/multi:1", registry.host());
    let five = format!("{}/bench/five:1", registry.host());

    let berth = Berth {
        bin,
        plugins: ours.dir.clone(),
        tmp: tmp.path().to_path_buf(),
    };
    let podman = Podman::new(tmp.path());

    // Cold and warm pulls, round-robin so that load changes hit every tool alike.
    let mut cold = Samples::default();
    let mut warm = Samples::default();
    let mut podman_cold = Samples::default();
    let mut podman_warm = Samples::default();
    let mut skopeo_cold = Samples::default();
    progress(
        "images",
        format!("{runs} cold and warm pulls each: berth, podman, skopeo"),
    );
    for i in 0..=runs {
        // Run 0 warms the page cache and the registry; it is not counted.
        let keep = i > 0;
        let root = tmp.path().join(format!("berth-root-{i}"));
        cold.push(keep, berth.pull(&host, &root, &multi));
        warm.push(keep, berth.pull(&host, &root, &multi));
        let _ = fs::remove_dir_all(&root);
        match &podman {
            Ok(p) => {
                podman_cold.push(keep, p.pull(&host, &multi));
                podman_warm.push(keep, p.pull(&host, &multi));
                p.clear(&host);
            }
            Err(e) => {
                podman_cold.error = Some(format!("podman cannot run here: {e:#}"));
                podman_warm.error = podman_cold.error.clone();
            }
        }
        let dest = tmp.path().join(format!("skopeo-{i}"));
        skopeo_cold.push(keep, skopeo_copy(&host, &multi, &dest));
        let _ = fs::remove_dir_all(&dest);
    }
    s.rows.push(Row::new(
        "images.pull.cold.podman",
        format!("cold pull, 5 layers, {} MiB", 4 * layer_mb + 1),
        Unit::Ms,
        cold.cell(1.0),
        "podman pull",
        podman_cold.cell(1.0),
    ));
    s.rows.push(Row::new(
        "images.pull.cold.skopeo",
        format!("cold pull, 5 layers, {} MiB", 4 * layer_mb + 1),
        Unit::Ms,
        cold.cell(1.0),
        "skopeo copy (no unpacking)",
        skopeo_cold.cell(1.0),
    ));
    s.rows.push(Row::new(
        "images.pull.warm.podman",
        "pull, every layer present",
        Unit::Ms,
        warm.cell(1.0),
        "podman pull",
        podman_warm.cell(1.0),
    ));

    // Peak RSS of one big layer's pull.
    progress(
        "images",
        format!("building and pushing a {big_mb} MiB layer"),
    );
    let mut big_layout = OciLayout::create(&tmp.path().join("big"))?;
    big(&mut big_layout, big_mb * 1024 * 1024, true)?;
    push(big_layout.dir(), "big", &remote, "bench/big:1")?;
    let big_ref = format!("{}/bench/big:1", registry.host());
    progress("images", format!("pulling the {big_mb} MiB layer"));
    let root = tmp.path().join("berth-root-big");
    let ours_rss = berth
        .pull_rss(&host, &root, &big_ref)
        .map_or_else(|e| Cell::na(format!("{e:#}")), Cell::value);
    let _ = fs::remove_dir_all(&root);
    let theirs_rss = match &podman {
        Ok(p) => {
            let rss = p
                .pull_rss(&host, &big_ref)
                .map_or_else(|e| Cell::na(format!("{e:#}")), Cell::value);
            p.clear(&host);
            rss
        }
        Err(e) => Cell::na(format!("podman cannot run here: {e:#}")),
    };
    s.rows.push(Row::new(
        "images.pull.rss",
        format!("peak RSS pulling one {big_mb} MiB gzip layer"),
        Unit::Mib,
        ours_rss,
        "podman pull",
        theirs_rss,
    ));

    // Start of a pulled 5-layer image against the offline busybox image.
    progress(
        "images",
        format!("{runs} runs each: pulled 5-layer image, busybox"),
    );
    let root = tmp.path().join("berth-root-run");
    let mut layered = Samples::default();
    let mut busybox = Samples::default();
    match berth
        .pull(&host, &root, &five)
        .and_then(|_| berth.run(&host, &root, "busybox", &["true"]))
    {
        Ok(_) => {
            for i in 0..=runs {
                let keep = i > 0;
                layered.push(keep, berth.run(&host, &root, &five, &[]));
                busybox.push(keep, berth.run(&host, &root, "busybox", &["true"]));
            }
        }
        Err(e) => layered.error = Some(format!("{e:#}")),
    }
    let _ = fs::remove_dir_all(&root);
    s.rows.push(Row::new(
        "images.run.five",
        "run --rm of a pulled 5-layer image (no network)",
        Unit::Ms,
        layered.cell(1.0),
        "offline busybox image",
        busybox.cell(1.0),
    ));
    s.notes.push(format!(
        "registry: Debian's docker-registry on 127.0.0.1 in a throwaway namespace (plain http), images built offline and pushed with skopeo; {runs} runs each after one warm-up, round-robin; cold = empty store (berth: fresh --root; podman: `rmi -a -f`, overlay driver when it works, else vfs — see below; skopeo: fresh oci: directory, blobs only, nothing unpacked); peak RSS from GNU time %M; podman: {}",
        podman.as_ref().map_or_else(|e| format!("unavailable ({e:#})"), |p| format!("{} storage driver", p.driver))
    ));
    Ok(())
}

/// The multi-layer image of the pull benchmark: the base layer and four layers of
/// `layer_mb` MiB of incompressible data, gzip-compressed (tag `multi`).
fn multi_layer(layout: &mut OciLayout, layer_mb: u64) -> Result<()> {
    let mut builders = vec![base_layer()];
    for i in 1..=4u64 {
        builders.push(LayerBuilder::new().random_file(
            &format!("data{i}.bin"),
            0o644,
            layer_mb * 1024 * 1024,
            i,
        ));
    }
    let mut layers = Vec::new();
    for b in &builders {
        layers.push(b.write(layout, Compression::Gzip)?);
    }
    let config = json!({
        "architecture": host_arch(),
        "os": "linux",
        "config": {"Env": [PATH], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()},
    });
    let config = layout.put_json(media::OCI_CONFIG, &config)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": config.to_json(),
        "layers": layers.iter().map(|l| l.descriptor(Format::Oci).to_json()).collect::<Vec<_>>(),
    });
    let manifest = layout.put_json(media::OCI_MANIFEST, &manifest)?;
    layout.tag("multi", &manifest)?;
    Ok(())
}

struct Berth {
    bin: PathBuf,
    plugins: PathBuf,
    tmp: PathBuf,
}

impl Berth {
    fn cmd(&self, root: &Path) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--root")
            .arg(root)
            .arg("--runroot")
            .arg(self.tmp.join("berth-run"))
            .arg("--cni-plugin-dir")
            .arg(&self.plugins);
        c
    }

    fn pull(&self, host: &TestNetns, root: &Path, reference: &str) -> Result<f64> {
        timed(
            host,
            self.cmd(root)
                .args(["pull", "-q", "--tls-verify=false", reference]),
        )
    }

    fn pull_rss(&self, host: &TestNetns, root: &Path, reference: &str) -> Result<f64> {
        let out = self.tmp.join("berth.maxrss");
        let mut c = Command::new(TIME);
        c.arg("-o").arg(&out).args(["-f", "%M"]).arg(&self.bin);
        c.arg("--root")
            .arg(root)
            .arg("--runroot")
            .arg(self.tmp.join("berth-run"))
            .args(["pull", "-q", "--tls-verify=false", reference]);
        timed(host, &mut c)?;
        max_rss_mib(&out)
    }

    fn run(&self, host: &TestNetns, root: &Path, image: &str, cmd: &[&str]) -> Result<f64> {
        let mut c = self.cmd(root);
        c.args(["run", "--rm", "--network", "none", "--pull", "never", image]);
        c.args(cmd);
        timed(host, &mut c)
    }
}

/// `skopeo copy` of `reference` into a fresh `oci:` directory: download and verify, no
/// unpacking.
fn skopeo_copy(host: &TestNetns, reference: &str, dest: &Path) -> Result<f64> {
    timed(
        host,
        Command::new(SKOPEO_BIN)
            .args(["copy", "--quiet", "--src-tls-verify=false"])
            .arg(format!("docker://{reference}"))
            .arg(format!("oci:{}:bench", dest.display())),
    )
}

/// podman with every piece of state under one temporary directory; the overlay storage
/// driver when it works here, else vfs.
struct Podman {
    dir: PathBuf,
    driver: &'static str,
}

impl Podman {
    fn new(tmp: &Path) -> Result<Podman> {
        let dir = tmp.join("podman-images");
        podman::state_dir(&dir, &[])?;
        fs::write(
            dir.join("containers.conf"),
            podman::containers_conf(&dir, ""),
        )?;
        let mut p = Podman {
            dir,
            driver: "overlay",
        };
        // The driver is probed with a cheap command; vfs if overlay is refused.
        let probe = p.cmd()?.args(["images", "-q"]).output();
        if !probe.is_ok_and(|o| o.status.success()) {
            p.driver = "vfs";
            p.cmd()?
                .args(["images", "-q"])
                .output()
                .context("podman images")?;
        }
        Ok(p)
    }

    fn cmd(&self) -> Result<Command> {
        self.command(None)
    }

    /// podman, or (`time_to`) GNU time writing podman's peak RSS to that file.
    fn command(&self, time_to: Option<&Path>) -> Result<Command> {
        podman::write_storage_conf(&self.dir, self.driver)?;
        let mut c = podman::command(
            &self.dir,
            &self.dir.join("containers.conf"),
            self.driver,
            time_to,
        );
        private_mounts(&mut c, &["/run", "/dev/shm", "/var/lib"])?;
        Ok(c)
    }

    fn pull(&self, host: &TestNetns, reference: &str) -> Result<f64> {
        timed(
            host,
            self.cmd()?
                .args(["pull", "-q", "--tls-verify=false", reference]),
        )
    }

    fn pull_rss(&self, host: &TestNetns, reference: &str) -> Result<f64> {
        let out = self.dir.join("maxrss");
        let mut c = self.command(Some(&out))?;
        timed(
            host,
            c.args(["pull", "-q", "--tls-verify=false", reference]),
        )?;
        max_rss_mib(&out)
    }

    /// Empties podman's store (not timed).
    fn clear(&self, host: &TestNetns) {
        if let Ok(mut c) = self.cmd() {
            let _ = host.run(|| c.args(["rmi", "-a", "-f"]).output());
        }
    }
}
