//! `berth lab` and what it needs from `berth run`: privileged containers, labs deployed from
//! containerlab topology files (nodes, veth links, bridges), their verbs, and nothing left
//! after `destroy`. Every `berth` runs in the test's throwaway host netns (`common::Env`).

mod common;

use common::Env;

/// `run --privileged`: every capability, no seccomp filter, /proc/sys writable (a lab
/// router's `sysctl -w net.ipv4.ip_forward=1`), /sys read-write; without it the same
/// sysctl fails on the read-only /proc/sys.
#[test]
fn privileged_containers_write_sysctls() {
    let env = Env::new();
    let script = "sysctl -w net.ipv4.ip_forward=1 && cat /proc/sys/net/ipv4/ip_forward \
                  && grep -E '^(CapEff|Seccomp):' /proc/self/status \
                  && grep ' /sys ' /proc/mounts";
    let out = env.run(&[
        "--rm",
        "--privileged",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        script,
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("\n1\n"), "{out:?}");
    assert!(out.stdout.contains("Seccomp:\t0"), "{out:?}");
    // Every capability berth holds (41 on a 6.x kernel, fewer in a restricted VM).
    let cap_eff = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:\t"))
        .expect("CapEff line");
    let bits = u64::from_str_radix(cap_eff.trim(), 16).expect("CapEff is hex");
    assert!(bits.count_ones() >= 38, "{cap_eff}");
    assert!(out.stdout.contains("sysfs rw,"), "{out:?}");

    let out = env.run(&[
        "--rm",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "sysctl -w net.ipv4.ip_forward=1",
    ]);
    assert_ne!(out.code, 0, "{out:?}");
    let out = env.run(&[
        "--rm",
        "--privileged",
        "--userns",
        "auto",
        "busybox",
        "true",
    ]);
    assert_eq!(out.code, 125, "{out:?}");
    common::assert_one_line_error(&out);
    env.assert_clean();
}
