//! What a plugin can leave behind, as text: the fake host's links, addresses, routes, qdiscs
//! and firewall rules, the container namespaces' links, addresses and routes, and the files
//! under the world's directory (IPAM store, tuning and host-device records, the invoker's
//! cache, and the stand-ins of the default directories). Two snapshots are compared as
//! multisets of lines, after removing what changes by itself (counters, lifetimes, DAD).

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::Duration;

use netns_fixtures::TestNetns;

/// Snapshot sections, in report order.
pub const HOST_IP: &str = "host links/addresses/routes";
pub const HOST_TC: &str = "host qdiscs";
pub const FIREWALL: &str = "host firewall";
pub const CONTAINERS: &str = "container namespaces";
pub const FILES: &str = "files";

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    sections: BTreeMap<&'static str, Vec<String>>,
}

/// Lines that appeared and disappeared, per section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    pub sections: BTreeMap<&'static str, (Vec<String>, Vec<String>)>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.sections.is_empty()
    }

    /// Keeps only the changes `keep(section, line, added)` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &str, bool) -> bool) {
        for (section, (added, removed)) in &mut self.sections {
            added.retain(|l| keep(section, l, true));
            removed.retain(|l| keep(section, l, false));
        }
        self.sections
            .retain(|_, (a, r)| !a.is_empty() || !r.is_empty());
    }
}

impl fmt::Display for Diff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (section, (added, removed)) in &self.sections {
            writeln!(f, "    {section}:")?;
            for l in added.iter().take(12) {
                writeln!(f, "      + {}", clip(l, 200))?;
            }
            for l in removed.iter().take(12) {
                writeln!(f, "      - {}", clip(l, 200))?;
            }
            let more = (added.len() + removed.len()).saturating_sub(24);
            if more > 0 {
                writeln!(f, "      … {more} more")?;
            }
        }
        Ok(())
    }
}

pub fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &s[..end], s.len())
}

/// The places a snapshot looks at.
pub struct Scope<'a> {
    pub host: &'a TestNetns,
    pub containers: Vec<&'a TestNetns>,
    /// Walked recursively; `skip` names (relative) are left out.
    pub dir: &'a Path,
    pub skip: &'a [&'a str],
}

impl Snapshot {
    pub fn take(scope: &Scope<'_>) -> Snapshot {
        let mut s = Snapshot::default();
        s.sections.insert(HOST_IP, ip_lines(scope.host, ""));
        s.sections.insert(
            HOST_TC,
            lines(&output(scope.host, "tc", &["qdisc", "show"])),
        );
        let mut fw = Vec::new();
        for tool in ["iptables-save", "ip6tables-save"] {
            fw.extend(
                iptables_lines(&output(scope.host, tool, &[]))
                    .into_iter()
                    .map(|l| format!("{tool}: {l}")),
            );
        }
        fw.extend(nft_lines(&output(scope.host, "nft", &["list", "ruleset"])));
        s.sections.insert(FIREWALL, fw);
        let mut ctr = Vec::new();
        for ns in &scope.containers {
            let tag = ns.name().rsplit('-').next().unwrap_or("").to_owned();
            ctr.extend(ip_lines(ns, &tag));
        }
        s.sections.insert(CONTAINERS, ctr);
        let mut files = Vec::new();
        walk(scope.dir, scope.dir, scope.skip, &mut files);
        s.sections.insert(FILES, files);
        for lines in s.sections.values_mut() {
            lines.sort();
        }
        s
    }

    pub fn diff(&self, after: &Snapshot) -> Diff {
        let mut d = Diff::default();
        let empty = Vec::new();
        for (section, before) in &self.sections {
            let now = after.sections.get(section).unwrap_or(&empty);
            let (added, removed) = multiset_diff(before, now);
            if !added.is_empty() || !removed.is_empty() {
                d.sections.insert(section, (added, removed));
            }
        }
        d
    }

    pub fn section(&self, name: &str) -> &[String] {
        self.sections.get(name).map_or(&[], Vec::as_slice)
    }
}

/// Compares with `baseline`; while they differ, waits a little and looks again, so that what
/// the kernel finishes asynchronously (link-local addresses, operstate, a link deleted with
/// its namespace) is not taken for a leak. `accept` filters changes that are not findings.
pub fn settled_diff(
    baseline: &Snapshot,
    scope: &Scope<'_>,
    accept: &dyn Fn(&str, &str, bool) -> bool,
) -> Diff {
    let mut diff = Diff::default();
    for attempt in 0..6 {
        if attempt > 0 {
            thread::sleep(Duration::from_millis(60 * attempt));
        }
        diff = baseline.diff(&Snapshot::take(scope));
        diff.retain(|s, l, added| !accept(s, l, added));
        if diff.is_empty() {
            break;
        }
    }
    diff
}

fn multiset_diff(before: &[String], after: &[String]) -> (Vec<String>, Vec<String>) {
    // Both sorted.
    let (mut added, mut removed) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < before.len() || j < after.len() {
        match (before.get(i), after.get(j)) {
            (Some(b), Some(a)) if a == b => {
                i += 1;
                j += 1;
            }
            (Some(b), Some(a)) if b < a => {
                removed.push(b.clone());
                i += 1;
            }
            (Some(_), Some(a)) | (None, Some(a)) => {
                added.push(a.clone());
                j += 1;
            }
            (Some(b), None) => {
                removed.push(b.clone());
                i += 1;
            }
            (None, None) => break,
        }
    }
    (added, removed)
}

fn output(ns: &TestNetns, program: &str, args: &[&str]) -> String {
    let out = ns
        .output(Command::new(program).args(args))
        .unwrap_or_else(|e| panic!("{program} in {}: {e}", ns.name()));
    assert!(
        out.status.success(),
        "{program} {args:?} in {}: {}",
        ns.name(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Links, addresses and routes (both families, every table) in one `ip -batch`.
fn ip_lines(ns: &TestNetns, tag: &str) -> Vec<String> {
    let mut cmd = Command::new("ip");
    cmd.args(["-o", "-batch", "-"]);
    let text = {
        use std::io::Write;
        use std::process::Stdio;
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = ns.spawn(&mut cmd).unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"link show\naddr show\nroute show table all\n")
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "ip -batch in {}: {out:?}", ns.name());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        // The local route of a link-local address, and (on a forwarding host) the router
        // anycast address of its subnet, appear when its duplicate address detection ends,
        // a second or two after the link comes up: derived from the address, and late.
        .filter(|l| !l.starts_with("local fe80:") && !l.starts_with("anycast fe80:"))
        .map(|l| {
            let mut l = l
                .replace("\\    ", " ")
                .replace(" tentative", "")
                .replace(" linkdown", "");
            // Address lifetimes count down for some addresses; what matters is the address.
            if let Some(at) = l.find("\\       valid_lft") {
                l.truncate(at);
            }
            // Operational state follows carrier asynchronously.
            for state in ["UP", "DOWN", "UNKNOWN", "LOWERLAYERDOWN", "DORMANT"] {
                l = l.replace(&format!(" state {state} "), " ");
            }
            let l = l.replace("NO-CARRIER,", "").replace(",LOWER_UP", "");
            if tag.is_empty() {
                l.trim_end().to_owned()
            } else {
                format!("{tag}: {}", l.trim_end())
            }
        })
        .collect()
}

/// iptables-save without comments (timestamps) and packet counters.
fn iptables_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| match (l.starts_with(':'), l.rfind(" [")) {
            (true, Some(at)) => l[..at].to_owned(),
            _ => l.to_owned(),
        })
        .collect()
}

/// `nft list ruleset` without counters, with each line prefixed by its table and chain or
/// set, so a moved line is a changed line.
fn nft_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut table, mut block) = (String::new(), String::new());
    for raw in text.lines() {
        let line = strip_counters(raw.trim());
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(t) = line.strip_prefix("table ") {
            table = t.trim_end_matches(" {").to_owned();
            block.clear();
            out.push(format!("nft: table {table}"));
            continue;
        }
        for kw in ["chain ", "set ", "map ", "flowtable "] {
            if let Some(b) = line.strip_prefix(kw) {
                block = format!("{kw}{}", b.trim_end_matches(" {"));
            }
        }
        if line == "}" {
            continue;
        }
        out.push(format!("nft: {table} / {block}: {line}"));
    }
    out
}

fn strip_counters(line: &str) -> String {
    let mut words: Vec<&str> = line.split_whitespace().collect();
    let mut i = 0;
    while i < words.len() {
        if words[i] == "counter" && words.get(i + 1) == Some(&"packets") {
            words.drain(i..(i + 5).min(words.len()));
        } else {
            i += 1;
        }
    }
    words.join(" ")
}

/// Every file and symlink below `dir`, with content digests. Empty lock files are left out:
/// `flock` needs the file, and it holds nothing.
fn walk(root: &Path, dir: &Path, skip: &[&str], out: &mut Vec<String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let rel = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .to_string_lossy()
            .into_owned();
        if skip.iter().any(|s| rel == *s) {
            continue;
        }
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        let name = entry.file_name();
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&path).unwrap_or_default();
            out.push(format!("{rel} -> {}", target.display()));
        } else if meta.is_dir() {
            // Directories themselves are not listed: an empty one (a network's directory
            // after its last DEL) holds nothing.
            walk(root, &path, skip, out);
        } else if name == "lock" && meta.len() == 0 {
            continue;
        } else if meta.is_file() {
            let content = fs::read(&path).unwrap_or_default();
            out.push(format!(
                "{rel} ({} bytes, {:016x})",
                meta.len(),
                fnv(&content)
            ));
        } else {
            out.push(format!("{rel} (mode {:o})", meta.mode()));
        }
    }
}

fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiset_diff_counts_duplicates() {
        let b = vec!["a".to_owned(), "b".to_owned(), "b".to_owned()];
        let a = vec!["b".to_owned(), "c".to_owned()];
        let (added, removed) = multiset_diff(&b, &a);
        assert_eq!(added, vec!["c"]);
        assert_eq!(removed, vec!["a", "b"]);
    }

    #[test]
    fn nft_counters_are_dropped() {
        assert_eq!(
            strip_counters("ct state new counter packets 3 bytes 180 accept"),
            "ct state new accept"
        );
    }
}
