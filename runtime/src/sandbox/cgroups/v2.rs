//! The cgroup v2 manager: one directory, `<mount>/<parent>/<id>`.
//!
//! v2's "no internal processes" rule means controllers are enabled top-down through
//! `cgroup.subtree_control` of every ancestor that has no processes of its own: the mount's
//! root (exempt from the rule) and `<parent>`, which only ever holds container cgroups.

use std::collections::BTreeSet;
use std::path::PathBuf;

use super::{
    Cgroup, CgroupError, CgroupErrors, CgroupVersion, Resources, kill_and_remove, make_dir,
    read_procs, remove_parent_if_empty, write_file,
};
use crate::names::ContainerId;

#[derive(Debug)]
pub struct V2Manager {
    mount: PathBuf,
    parent: PathBuf,
    dir: PathBuf,
    /// The controllers this manager enables and writes (on a hybrid host, only those not on v1).
    controllers: BTreeSet<String>,
}

impl V2Manager {
    pub fn new(
        mount: PathBuf,
        parent: &str,
        id: &ContainerId,
        controllers: BTreeSet<String>,
    ) -> V2Manager {
        let parent = mount.join(parent);
        let dir = parent.join(id.as_str());
        V2Manager {
            mount,
            parent,
            dir,
            controllers,
        }
    }

    fn has(&self, controller: &'static str, limit: &'static str) -> Result<(), CgroupError> {
        if self.controllers.contains(controller) {
            Ok(())
        } else {
            Err(CgroupError::MissingController { controller, limit })
        }
    }

    /// `+memory`, `+cpu`, … for `cgroup.subtree_control`, one write per controller so a
    /// failure names the controller.
    fn enable_in(&self, dir: &std::path::Path) -> Result<(), CgroupError> {
        for controller in ["memory", "cpu", "pids"] {
            if self.controllers.contains(controller) {
                write_file(
                    &dir.join("cgroup.subtree_control"),
                    &format!("+{controller}"),
                )?;
            }
        }
        Ok(())
    }
}

impl Cgroup for V2Manager {
    fn version(&self) -> CgroupVersion {
        CgroupVersion::V2
    }

    fn paths(&self) -> Vec<PathBuf> {
        vec![self.dir.clone()]
    }

    fn has_controller(&self, controller: &str) -> bool {
        self.controllers.contains(controller)
    }

    fn create(&self, resources: &Resources) -> Result<(), CgroupError> {
        self.enable_in(&self.mount)?;
        std::fs::create_dir_all(&self.parent).map_err(|source| CgroupError::CreateDir {
            path: self.parent.clone(),
            source,
        })?;
        self.enable_in(&self.parent)?;
        make_dir(&self.dir)?;
        if let Some(bytes) = resources.memory_bytes {
            self.has("memory", "--memory")?;
            write_file(&self.dir.join("memory.max"), &bytes.to_string())?;
            // No swap on top of the limit (absent without swap accounting).
            let swap = self.dir.join("memory.swap.max");
            if swap.exists() {
                write_file(&swap, "0")?;
            }
        }
        if let Some(cpu) = resources.cpu {
            self.has("cpu", "--cpus")?;
            write_file(
                &self.dir.join("cpu.max"),
                &format!("{} {}", cpu.quota_us, cpu.period_us),
            )?;
        }
        if let Some(max) = resources.pids_max {
            self.has("pids", "--pids-limit")?;
            write_file(&self.dir.join("pids.max"), &max.to_string())?;
        }
        Ok(())
    }

    fn add_process(&self, pid: i32) -> Result<(), CgroupError> {
        write_file(&self.dir.join("cgroup.procs"), &pid.to_string())
    }

    fn processes(&self) -> Result<Vec<i32>, CgroupError> {
        read_procs(&self.dir)
    }

    fn restricts_devices(&self) -> bool {
        false
    }

    fn destroy(&self) -> Result<(), CgroupErrors> {
        let mut errors = Vec::new();
        // cgroup.kill (5.14+) kills the whole subtree without racing forks.
        kill_and_remove(&self.dir, Some(&self.dir.join("cgroup.kill")), &mut errors);
        remove_parent_if_empty(&self.dir);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(CgroupErrors(errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::cgroups::CpuQuota;
    use std::fs;

    fn manager(root: &std::path::Path, controllers: &[&str]) -> (V2Manager, ContainerId) {
        let id = ContainerId::try_from("ef".repeat(32).as_str()).unwrap();
        let controllers = controllers.iter().map(|c| (*c).to_owned()).collect();
        (
            V2Manager::new(root.to_path_buf(), "berth", &id, controllers),
            id,
        )
    }

    /// A fake v2 tree in a tempdir: the control files become plain files holding the last
    /// value written, enough to check paths and formats.
    #[test]
    fn paths_and_values() {
        let tmp = tempfile::tempdir().unwrap();
        let (cg, id) = manager(tmp.path(), &["cpu", "memory", "pids"]);
        let dir = tmp.path().join("berth").join(id.as_str());
        assert_eq!(cg.paths(), vec![dir.clone()]);
        cg.create(&Resources {
            memory_bytes: Some(1 << 30),
            cpu: Some(CpuQuota {
                quota_us: 150_000,
                period_us: 100_000,
            }),
            pids_max: Some(64),
        })
        .unwrap();
        let read = |p: PathBuf| fs::read_to_string(p).unwrap();
        assert_eq!(read(dir.join("memory.max")), "1073741824");
        assert_eq!(read(dir.join("cpu.max")), "150000 100000");
        assert_eq!(read(dir.join("pids.max")), "64");
        // Enabled in the root and in the parent; the last write was "+pids" in both.
        assert_eq!(read(tmp.path().join("cgroup.subtree_control")), "+pids");
        assert_eq!(
            read(tmp.path().join("berth/cgroup.subtree_control")),
            "+pids"
        );
        cg.add_process(7).unwrap();
        assert_eq!(cg.processes().unwrap(), vec![7]);
    }

    #[test]
    fn missing_controller_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let (cg, _) = manager(tmp.path(), &["memory"]);
        let err = cg
            .create(&Resources {
                pids_max: Some(1),
                ..Resources::default()
            })
            .unwrap_err();
        assert!(matches!(
            err,
            CgroupError::MissingController {
                controller: "pids",
                ..
            }
        ));
    }

    #[test]
    fn destroying_a_missing_cgroup_is_success() {
        let tmp = tempfile::tempdir().unwrap();
        let (cg, _) = manager(tmp.path(), &["memory"]);
        cg.destroy().unwrap();
    }
}
