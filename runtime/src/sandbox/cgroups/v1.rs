//! The cgroup v1 manager: one directory per hierarchy, `<mount>/<parent>/<id>`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use super::{
    Cgroup, CgroupError, CgroupErrors, CgroupVersion, Resources, kill_and_remove, make_dir,
    read_procs, remove_parent_if_empty, write_file,
};
use crate::names::ContainerId;

/// Docker's (runc's) default device allowlist: the nodes Berth creates in `/dev`, the pty
/// devices, `/dev/net/tun`, and `mknod` (but not access) for anything else, so images that
/// ship device nodes can still be unpacked by tools inside.
const ALLOWED_DEVICES: [&str; 12] = [
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",    // null
    "c 1:5 rwm",    // zero
    "c 1:7 rwm",    // full
    "c 1:8 rwm",    // random
    "c 1:9 rwm",    // urandom
    "c 5:0 rwm",    // tty
    "c 5:1 rwm",    // console
    "c 5:2 rwm",    // ptmx
    "c 136:* rwm",  // pts
    "c 10:200 rwm", // net/tun
];

#[derive(Debug)]
pub struct V1Manager {
    /// controller → this container's directory in that controller's hierarchy.
    dirs: BTreeMap<String, PathBuf>,
}

impl V1Manager {
    /// `hierarchies`: controller → mount point.
    pub fn new(
        hierarchies: &BTreeMap<String, PathBuf>,
        parent: &str,
        id: &ContainerId,
    ) -> V1Manager {
        let dirs = hierarchies
            .iter()
            .map(|(controller, mount)| (controller.clone(), mount.join(parent).join(id.as_str())))
            .collect();
        V1Manager { dirs }
    }

    /// Each directory once (co-mounted controllers such as `cpu,cpuacct` share one).
    fn unique_dirs(&self) -> BTreeSet<&PathBuf> {
        self.dirs.values().collect()
    }

    fn dir(&self, controller: &'static str, limit: &'static str) -> Result<&PathBuf, CgroupError> {
        self.dirs
            .get(controller)
            .ok_or(CgroupError::MissingController { controller, limit })
    }
}

impl Cgroup for V1Manager {
    fn version(&self) -> CgroupVersion {
        CgroupVersion::V1
    }

    fn paths(&self) -> Vec<PathBuf> {
        self.unique_dirs().into_iter().cloned().collect()
    }

    fn has_controller(&self, controller: &str) -> bool {
        self.dirs.contains_key(controller)
    }

    fn create(&self, resources: &Resources) -> Result<(), CgroupError> {
        for dir in self.unique_dirs() {
            make_dir(dir)?;
        }
        if let Some(bytes) = resources.memory_bytes {
            let dir = self.dir("memory", "--memory")?;
            write_file(&dir.join("memory.limit_in_bytes"), &bytes.to_string())?;
            // memory+swap equal to memory: no swap on top of the limit, so a hog is
            // OOM-killed rather than swapped (absent without swap accounting).
            let memsw = dir.join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                write_file(&memsw, &bytes.to_string())?;
            }
        }
        if let Some(cpu) = resources.cpu {
            let dir = self.dir("cpu", "--cpus")?;
            write_file(&dir.join("cpu.cfs_period_us"), &cpu.period_us.to_string())?;
            write_file(&dir.join("cpu.cfs_quota_us"), &cpu.quota_us.to_string())?;
        }
        if let Some(max) = resources.pids_max {
            let dir = self.dir("pids", "--pids-limit")?;
            write_file(&dir.join("pids.max"), &max.to_string())?;
        }
        if let Some(dir) = self.dirs.get("devices") {
            write_file(&dir.join("devices.deny"), "a")?;
            for rule in ALLOWED_DEVICES {
                write_file(&dir.join("devices.allow"), rule)?;
            }
        }
        Ok(())
    }

    fn add_process(&self, pid: i32) -> Result<(), CgroupError> {
        for dir in self.unique_dirs() {
            write_file(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    fn processes(&self) -> Result<Vec<i32>, CgroupError> {
        let mut pids = Vec::new();
        for dir in self.unique_dirs() {
            pids.extend(read_procs(dir)?);
        }
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }

    fn restricts_devices(&self) -> bool {
        self.dirs.contains_key("devices")
    }

    fn destroy(&self) -> Result<(), CgroupErrors> {
        let mut errors = Vec::new();
        for dir in self.unique_dirs() {
            kill_and_remove(dir, None, &mut errors);
            remove_parent_if_empty(dir);
        }
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

    /// A fake v1 tree in a tempdir: control files are plain files, so what the manager
    /// writes can be read back. (The real kernel path is covered by the integration tests.)
    #[test]
    fn writes_limits_to_the_right_hierarchies() {
        let tmp = tempfile::tempdir().unwrap();
        let mut hierarchies = BTreeMap::new();
        for c in ["memory", "pids", "devices"] {
            hierarchies.insert(c.to_owned(), tmp.path().join(c));
        }
        hierarchies.insert("cpu".into(), tmp.path().join("cpu,cpuacct"));
        hierarchies.insert("cpuacct".into(), tmp.path().join("cpu,cpuacct"));
        let id = ContainerId::try_from("cd".repeat(32).as_str()).unwrap();
        let cg = V1Manager::new(&hierarchies, "berth", &id);
        assert_eq!(cg.paths().len(), 4);

        let res = Resources {
            memory_bytes: Some(64 << 20),
            cpu: Some(CpuQuota {
                quota_us: 50_000,
                period_us: 100_000,
            }),
            pids_max: Some(20),
        };
        cg.create(&res).unwrap();
        let read = |rel: &str| fs::read_to_string(tmp.path().join(rel)).unwrap();
        let base = format!("berth/{id}");
        assert_eq!(
            read(&format!("memory/{base}/memory.limit_in_bytes")),
            "67108864"
        );
        assert_eq!(
            read(&format!("cpu,cpuacct/{base}/cpu.cfs_quota_us")),
            "50000"
        );
        assert_eq!(read(&format!("pids/{base}/pids.max")), "20");
        // Plain files keep only the last write; the kernel appends each rule.
        assert_eq!(read(&format!("devices/{base}/devices.deny")), "a");
        cg.add_process(4242).unwrap();
        assert_eq!(read(&format!("pids/{base}/cgroup.procs")), "4242");
    }
}
