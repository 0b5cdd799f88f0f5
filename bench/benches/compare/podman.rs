//! podman with every piece of state under one directory, never in /etc: the state directory,
//! its configuration files and the `podman` command that points at them (shared by the start,
//! images and lab sections). Each caller adds the mount namespace it needs: start and images
//! a private one per command, lab one shared by all of its commands.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::Result;

use crate::proc::TIME;

/// Creates `dir` with `root`, `run`, `tmp` and each of `extra` in it, and an empty
/// registries.conf.
pub fn state_dir(dir: &Path, extra: &[&str]) -> Result<()> {
    for d in ["root", "run", "tmp"].iter().chain(extra) {
        fs::create_dir_all(dir.join(d))?;
    }
    fs::write(dir.join("registries.conf"), "")?;
    Ok(())
}

/// containers.conf: cgroupfs, no events log, crun, podman's paths under `dir`; then `more`
/// (further tables).
pub fn containers_conf(dir: &Path, more: &str) -> String {
    format!(
        "[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"none\"\nruntime = \"crun\"\ntmp_dir = \"{d}/tmp\"\nstatic_dir = \"{d}/root/libpod\"\nvolume_path = \"{d}/root/volumes\"\n{more}",
        d = dir.display()
    )
}

/// storage.conf for `driver`, its store under `dir`.
pub fn write_storage_conf(dir: &Path, driver: &str) -> Result<()> {
    fs::write(
        dir.join("storage.conf"),
        format!(
            "[storage]\ndriver = \"{driver}\"\nrunroot = \"{0}/run\"\ngraphroot = \"{0}/root\"\n",
            dir.display()
        ),
    )?;
    Ok(())
}

/// podman on the state in `dir` with the containers.conf `conf` and the storage `driver`; or
/// (`time_to`) GNU time writing podman's peak RSS to that file.
pub fn command(dir: &Path, conf: &Path, driver: &str, time_to: Option<&Path>) -> Command {
    let mut c = match time_to {
        Some(out) => {
            let mut c = Command::new(TIME);
            c.arg("-o").arg(out).args(["-f", "%M", "podman"]);
            c
        }
        None => Command::new("podman"),
    };
    c.env("CONTAINERS_CONF", conf)
        .env("CONTAINERS_STORAGE_CONF", dir.join("storage.conf"))
        .env("CONTAINERS_REGISTRIES_CONF", dir.join("registries.conf"))
        .arg("--root")
        .arg(dir.join("root"))
        .arg("--runroot")
        .arg(dir.join("run"))
        .args(["--storage-driver", driver, "--cgroup-manager", "cgroupfs"]);
    c
}
