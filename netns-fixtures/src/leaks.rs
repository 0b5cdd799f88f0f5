//! [`LeakAudit`]: what test objects (named `bt…`) appeared between two points in time.
//!
//! It looks at three places a broken teardown leaves things: namespace files under
//! `/run/netns`, their mounts, and links in the test process's own namespace (the real host,
//! which tests must never touch). Only names starting with [`PREFIX`](crate::names::PREFIX)
//! count, so unrelated activity on a shared machine does not matter. Other threads of the same
//! test binary do create `bt` names, though: audit in a test binary of its own, or at the end.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use berth_netlink::Netlink;

use crate::names::PREFIX;
use crate::netns::RUN_NETNS;

/// A snapshot of the test objects currently present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeakAudit {
    netns: BTreeSet<String>,
    mounts: BTreeSet<String>,
    host_links: BTreeSet<String>,
}

impl LeakAudit {
    /// Records the current state.
    ///
    /// # Panics
    /// If `/run/netns`, the mount table or the host's links cannot be read.
    pub fn snapshot() -> LeakAudit {
        LeakAudit {
            netns: netns_files(),
            mounts: netns_mounts(),
            host_links: host_links(),
        }
    }

    /// What appeared since this snapshot, one line per object (`netns bt…`, `mount …`,
    /// `host link bt…`).
    pub fn leaks(&self) -> Vec<String> {
        let now = LeakAudit::snapshot();
        let appeared = |before: &BTreeSet<String>, after: &BTreeSet<String>, what: &str| {
            after
                .difference(before)
                .map(|name| format!("{what} {name}"))
                .collect::<Vec<_>>()
        };
        let mut leaks = appeared(&self.netns, &now.netns, "netns");
        leaks.extend(appeared(&self.mounts, &now.mounts, "mount"));
        leaks.extend(appeared(&self.host_links, &now.host_links, "host link"));
        leaks
    }

    /// Panics, listing them, if test objects appeared since this snapshot.
    pub fn assert_no_leaks(&self) {
        let leaks = self.leaks();
        assert!(
            leaks.is_empty(),
            "test objects leaked:\n  {}",
            leaks.join("\n  ")
        );
    }
}

fn is_ours(name: &str) -> bool {
    name.starts_with(PREFIX)
}

fn netns_files() -> BTreeSet<String> {
    let entries = match fs::read_dir(RUN_NETNS) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return BTreeSet::new(),
        Err(e) => panic!("leak audit: list {RUN_NETNS}: {e}"),
    };
    entries
        .filter_map(|entry| {
            let entry = entry.unwrap_or_else(|e| panic!("leak audit: list {RUN_NETNS}: {e}"));
            entry.file_name().into_string().ok()
        })
        .filter(|name| is_ours(name))
        .collect()
}

/// Mount points under `/run/netns` from this process's mount table.
fn netns_mounts() -> BTreeSet<String> {
    let table = fs::read_to_string("/proc/thread-self/mountinfo")
        .unwrap_or_else(|e| panic!("leak audit: read mountinfo: {e}"));
    parse_netns_mounts(&table)
}

fn parse_netns_mounts(mountinfo: &str) -> BTreeSet<String> {
    mountinfo
        .lines()
        // Field 5 is the mount point (octal escapes only for whitespace, absent in our names).
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|point| {
            let point = Path::new(point);
            point.parent() == Some(Path::new(RUN_NETNS))
                && point
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(is_ours)
        })
        .map(str::to_owned)
        .collect()
}

/// Links of the calling thread's namespace: the test process's own, i.e. the real host
/// (test threads never switch; `Netns::run` uses helper threads). Read-only.
fn host_links() -> BTreeSet<String> {
    let netlink =
        Netlink::open_current().unwrap_or_else(|e| panic!("leak audit: open rtnetlink: {e}"));
    netlink
        .links()
        .unwrap_or_else(|e| panic!("leak audit: list host links: {e}"))
        .into_iter()
        .map(|link| link.name)
        .filter(|name| is_ours(name))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_netns_mounts_are_picked() {
        let table = "\
36 25 0:4 net:[4026532281] /run/netns/bt001z41-h rw shared:5 - nsfs nsfs rw
37 25 0:4 net:[4026532282] /run/netns/other rw shared:5 - nsfs nsfs rw
38 25 0:4 net:[4026532283] /run/netns/sub/bt1 rw shared:5 - nsfs nsfs rw
24 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw
";
        let mounts = parse_netns_mounts(table);
        assert_eq!(
            mounts.into_iter().collect::<Vec<_>>(),
            vec!["/run/netns/bt001z41-h".to_owned()]
        );
    }
}
