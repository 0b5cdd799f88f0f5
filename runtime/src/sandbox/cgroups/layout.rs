//! Where the controllers live ([`Layout`]: v1 hierarchies, the cgroup2 mount, decided per
//! controller) and the manager a container gets from it: v1, v2, or [`Hybrid`] (both).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use berth_fs::mounts::unescape_mountinfo;

use super::v1::V1Manager;
use super::v2::V2Manager;
use super::{Cgroup, CgroupError, CgroupErrors, CgroupVersion, Resources};
use crate::names::ContainerId;

/// Where the controllers live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// v1 controller → mount point of its hierarchy.
    pub v1: BTreeMap<String, PathBuf>,
    /// The cgroup2 mount and the controllers enabled on it (possibly none).
    pub v2: Option<(PathBuf, BTreeSet<String>)>,
}

/// The controllers Berth manages (and, on v1, joins: the others only account). `cpuset` is
/// left out: a new v1 cpuset cgroup starts with no CPUs and would need copying from its parent.
pub const CONTROLLERS: [&str; 7] = [
    "memory", "cpu", "cpuacct", "pids", "devices", "freezer", "blkio",
];

impl Layout {
    /// Reads this process's mount table and the v2 root's `cgroup.controllers`.
    pub fn detect() -> Result<Layout, CgroupError> {
        let mountinfo =
            fs::read_to_string("/proc/self/mountinfo").map_err(CgroupError::ReadMountinfo)?;
        Layout::from_mountinfo(&mountinfo, |mount| {
            fs::read_to_string(mount.join("cgroup.controllers")).ok()
        })
    }

    /// Pure: parses `mountinfo`; `controllers_of(mount)` returns a v2 mount's
    /// `cgroup.controllers`.
    pub fn from_mountinfo(
        mountinfo: &str,
        controllers_of: impl Fn(&Path) -> Option<String>,
    ) -> Result<Layout, CgroupError> {
        let mut v1 = BTreeMap::new();
        let mut v2 = None;
        for line in mountinfo.lines() {
            let Some((pre, post)) = line.split_once(" - ") else {
                continue;
            };
            let pre: Vec<&str> = pre.split(' ').collect();
            let post: Vec<&str> = post.split(' ').collect();
            let (Some(root), Some(mount_point), Some(fstype)) =
                (pre.get(3), pre.get(4), post.first())
            else {
                continue;
            };
            // A bind mount of a sub-cgroup (root other than "/") is not a hierarchy's root.
            if *root != "/" {
                continue;
            }
            let mount_point = PathBuf::from(unescape_mountinfo(mount_point));
            match *fstype {
                "cgroup" => {
                    let options = post.get(2).copied().unwrap_or("");
                    for option in options.split(',') {
                        if CONTROLLERS.contains(&option) || option == "cpuset" {
                            v1.entry(option.to_owned())
                                .or_insert_with(|| mount_point.clone());
                        }
                    }
                }
                "cgroup2" if v2.is_none() => {
                    let controllers = controllers_of(&mount_point)
                        .unwrap_or_default()
                        .split_whitespace()
                        .map(str::to_owned)
                        .collect();
                    v2 = Some((mount_point, controllers));
                }
                _ => {}
            }
        }
        if v1.is_empty() && v2.is_none() {
            return Err(CgroupError::NoCgroupFs);
        }
        Ok(Layout { v1, v2 })
    }

    /// The manager for container `id` under `parent`: v1 controllers on v1, the rest (if any)
    /// on v2.
    pub fn manager(&self, parent: &str, id: &ContainerId) -> Box<dyn Cgroup> {
        let v1: BTreeMap<String, PathBuf> = self
            .v1
            .iter()
            .filter(|(c, _)| CONTROLLERS.contains(&c.as_str()))
            .map(|(c, m)| (c.clone(), m.clone()))
            .collect();
        let v2 = self.v2.as_ref().and_then(|(mount, controllers)| {
            let ours: BTreeSet<String> = controllers
                .iter()
                .filter(|c| CONTROLLERS.contains(&c.as_str()) && !v1.contains_key(*c))
                .cloned()
                .collect();
            // On a hybrid host a v2 mount without controllers of ours is only a process
            // tracker (systemd's): nothing to manage there.
            (!ours.is_empty() || v1.is_empty())
                .then(|| V2Manager::new(mount.clone(), parent, id, ours))
        });
        match (v1.is_empty(), v2) {
            (true, Some(v2)) => Box::new(v2),
            (false, None) => Box::new(V1Manager::new(&v1, parent, id)),
            (false, Some(v2)) => Box::new(Hybrid {
                v1: V1Manager::new(&v1, parent, id),
                v2,
            }),
            // from_mountinfo refuses a layout with neither, but a hand-built one could have
            // none: an empty v1 manager then manages nothing, and check_controllers says so.
            (true, None) => Box::new(V1Manager::new(&BTreeMap::new(), parent, id)),
        }
    }

    /// The parents under which some hierarchy has a cgroup named `id`: how to find the cgroup
    /// of a container whose record (and so its `--cgroup-parent`) is lost. Looks at most
    /// [`PARENT_SEARCH_DEPTH`] levels below each hierarchy's root.
    pub fn parents_of(&self, id: &ContainerId) -> BTreeSet<String> {
        let mut roots: BTreeSet<&Path> = self.v1.values().map(PathBuf::as_path).collect();
        if let Some((mount, _)) = &self.v2 {
            roots.insert(mount);
        }
        let mut parents = BTreeSet::new();
        for root in roots {
            find_named(root, root, id.as_str(), PARENT_SEARCH_DEPTH, &mut parents);
        }
        parents
    }
}

/// How deep [`Layout::parents_of`] looks: `--cgroup-parent a/b/c` and the default `berth`.
pub const PARENT_SEARCH_DEPTH: usize = 4;

fn find_named(root: &Path, dir: &Path, name: &str, depth: usize, found: &mut BTreeSet<String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let path = entry.path();
        if entry.file_name() == name {
            if let Ok(parent) = dir.strip_prefix(root) {
                found.insert(parent.to_string_lossy().into_owned());
            }
        } else if depth > 1 {
            find_named(root, &path, name, depth - 1, found);
        }
    }
}

/// v1 controllers on their hierarchies plus controllers only the v2 mount has.
#[derive(Debug)]
pub struct Hybrid {
    v1: V1Manager,
    v2: V2Manager,
}

impl Cgroup for Hybrid {
    fn version(&self) -> CgroupVersion {
        CgroupVersion::Hybrid
    }
    fn paths(&self) -> Vec<PathBuf> {
        let mut paths = self.v1.paths();
        paths.extend(self.v2.paths());
        paths
    }
    fn has_controller(&self, controller: &str) -> bool {
        self.v1.has_controller(controller) || self.v2.has_controller(controller)
    }
    fn create(&self, resources: &Resources) -> Result<(), CgroupError> {
        self.v1.create(resources)?;
        self.v2.create(resources)
    }
    fn add_process(&self, pid: i32) -> Result<(), CgroupError> {
        self.v1.add_process(pid)?;
        self.v2.add_process(pid)
    }
    fn processes(&self) -> Result<Vec<i32>, CgroupError> {
        let mut pids = self.v1.processes()?;
        pids.extend(self.v2.processes()?);
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }
    fn restricts_devices(&self) -> bool {
        self.v1.restricts_devices()
    }
    fn destroy(&self) -> Result<(), CgroupErrors> {
        let mut errors = Vec::new();
        if let Err(CgroupErrors(e)) = self.v1.destroy() {
            errors.extend(e);
        }
        if let Err(CgroupErrors(e)) = self.v2.destroy() {
            errors.extend(e);
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
    use crate::sandbox::cgroups::check_controllers;

    const HYBRID: &str = "\
30 24 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw
33 30 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,cpu,cpuacct
34 30 0:30 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,memory
35 30 0:31 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,pids
36 30 0:32 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
37 30 0:33 /docker/abc /mnt/elsewhere rw - cgroup cgroup rw,freezer
";

    const PURE_V2: &str = "\
29 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate
";

    fn id() -> ContainerId {
        ContainerId::try_from("ab".repeat(32).as_str()).unwrap()
    }

    #[test]
    fn hybrid_with_empty_unified_mount_is_v1() {
        let layout = Layout::from_mountinfo(HYBRID, |_| Some(String::new())).unwrap();
        assert_eq!(
            layout.v1.get("cpuacct"),
            Some(&PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"))
        );
        assert_eq!(
            layout.v1.get("memory"),
            Some(&PathBuf::from("/sys/fs/cgroup/memory"))
        );
        // Bind mounts of sub-cgroups are not hierarchy roots.
        assert!(!layout.v1.contains_key("freezer"));
        let cg = layout.manager("berth", &id());
        assert_eq!(cg.version(), CgroupVersion::V1);
        assert!(cg.has_controller("pids"));
        assert!(!cg.has_controller("blkio"));
        let paths = cg.paths();
        // cpu and cpuacct share one directory.
        assert_eq!(paths.len(), 3);
        assert!(paths.contains(&PathBuf::from(format!(
            "/sys/fs/cgroup/cpu,cpuacct/berth/{}",
            id()
        ))));
    }

    #[test]
    fn controllers_only_on_unified_go_to_v2() {
        let layout = Layout::from_mountinfo(HYBRID, |_| Some("io pids blkio".into())).unwrap();
        let cg = layout.manager("berth", &id());
        assert_eq!(cg.version(), CgroupVersion::Hybrid);
        // pids is on v1 already; blkio only on v2.
        assert!(cg.has_controller("blkio"));
        assert!(cg.paths().contains(&PathBuf::from(format!(
            "/sys/fs/cgroup/unified/berth/{}",
            id()
        ))));
    }

    #[test]
    fn pure_v2() {
        let layout = Layout::from_mountinfo(PURE_V2, |mount| {
            assert_eq!(mount, Path::new("/sys/fs/cgroup"));
            Some("cpuset cpu io memory hugetlb pids rdma misc\n".into())
        })
        .unwrap();
        assert!(layout.v1.is_empty());
        let cg = layout.manager("berth", &id());
        assert_eq!(cg.version(), CgroupVersion::V2);
        assert_eq!(
            cg.paths(),
            vec![PathBuf::from(format!("/sys/fs/cgroup/berth/{}", id()))]
        );
        assert!(cg.has_controller("memory") && !cg.restricts_devices());
    }

    #[test]
    fn missing_controllers_are_named() {
        let layout = Layout::from_mountinfo(PURE_V2, |_| Some("memory".into())).unwrap();
        let cg = layout.manager("berth", &id());
        let res = Resources {
            pids_max: Some(10),
            ..Resources::default()
        };
        let err = check_controllers(cg.as_ref(), &res).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--pids-limit needs the pids cgroup controller, which this host does not provide"
        );
    }

    #[test]
    fn no_cgroupfs_is_an_error() {
        assert!(matches!(
            Layout::from_mountinfo("", |_| None),
            Err(CgroupError::NoCgroupFs)
        ));
    }

    #[test]
    fn mountinfo_octal_escapes() {
        assert_eq!(unescape_mountinfo(r"/a\040b"), "/a b");
        assert_eq!(unescape_mountinfo(r"/plain"), "/plain");
        assert_eq!(unescape_mountinfo(r"/end\04"), r"/end\04");
    }
}
