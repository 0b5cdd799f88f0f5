//! Unique names for namespaces and links.

use std::sync::atomic::{AtomicU32, Ordering};

/// Every test object's name starts with this, so leak audits can tell ours apart.
pub const PREFIX: &str = "bt";
/// Linux interface names hold at most 15 bytes (IFNAMSIZ - 1).
pub const MAX_NAME: usize = 15;
/// Width of the base-36 pid field: 36^5 > 2^22, the largest `pid_max`.
const PID_WIDTH: usize = 5;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique across processes (the pid) and threads (an atomic counter), usable both as a
/// netns name and as a link name: `bt` + pid (5 base-36 digits) + counter (base 36) + `-tag`
/// when `tag` is not empty, e.g. `bt001z41-h`. At most 15 bytes for tags of up to 3 bytes.
///
/// # Panics
/// If `tag` has characters other than `[a-z0-9]`, or the name would exceed 15 bytes.
pub fn unique_name(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    compose(std::process::id(), n, tag)
}

fn compose(pid: u32, n: u32, tag: &str) -> String {
    assert!(
        tag.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
        "unique_name: tag {tag:?} must be [a-z0-9]"
    );
    let pid = base36(pid);
    let mut name = format!("{PREFIX}{pid:0>PID_WIDTH$}{}", base36(n));
    // The separator keeps counter and tag apart: without it, counter "1" + tag "a" would
    // equal counter "1a" + no tag.
    if !tag.is_empty() {
        name.push('-');
        name.push_str(tag);
    }
    assert!(
        name.len() <= MAX_NAME,
        "unique_name: {name} is longer than {MAX_NAME} bytes (tag {tag:?} too long)"
    );
    name
}

fn base36(mut n: u32) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.iter().rev().map(|&b| char::from(b)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn base36_digits() {
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36), "10");
        assert_eq!(base36(4_194_304), "2hwcg"); // pid_max on 64-bit
    }

    #[test]
    fn worst_case_fits_in_ifnamsiz() {
        // Largest pid, a counter of 4 base-36 digits (1.6 million names), 3-byte tag.
        let name = compose(4_194_304, 36u32.pow(4) - 1, "abc");
        assert_eq!(name, "bt2hwcgzzzz-abc");
        assert!(name.len() <= MAX_NAME);
    }

    #[test]
    fn names_are_unique_across_threads() {
        let names: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| (0..200).map(|_| unique_name("h")).collect::<Vec<_>>()))
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("thread"))
                .collect()
        });
        let distinct: HashSet<_> = names.iter().collect();
        assert_eq!(distinct.len(), names.len());
        assert!(names.iter().all(|n| n.starts_with(PREFIX)));
    }

    #[test]
    fn different_processes_never_collide() {
        // Fixed-width pids: pid 1 counter 23 vs pid 12 counter 3.
        assert_ne!(compose(1, 75, ""), compose(46, 3, ""));
        assert_ne!(compose(1, 1, "a"), compose(1, 46, ""));
    }

    #[test]
    #[should_panic(expected = "must be [a-z0-9]")]
    fn tag_with_slash_is_refused() {
        unique_name("a/b");
    }
}
