//! User namespaces: `--userns=auto` and `--uidmap`/`--gidmap`. The container's root is an
//! unprivileged host id: `id -u` says 0 inside, `/proc/self/uid_map` shows the host range,
//! what it writes to a volume is owned by that id on the host, host root's private files stay
//! out of reach, the image stays untouched, and networking works as without.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::{Env, assert_one_line_error};

/// A host directory the container's root may write to (its parents are traversable),
/// holding a file only host root may read.
fn shared_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("berth-userns-")
        .tempdir()
        .unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let secret = dir.path().join("secret");
    fs::write(&secret, "host root only\n").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    dir
}

fn uid_map(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

#[test]
fn auto_maps_root_to_a_private_host_range() {
    let env = Env::new();
    let shared = shared_dir();
    let volume = format!("{}:/data", shared.path().display());
    let script = "id -u; id -g; cat /proc/self/uid_map; touch /data/made; \
                  cat /data/secret 2>/dev/null || echo denied; \
                  chown 1000:1000 /etc/passwd && echo chowned; \
                  echo layer > /written; hostname";
    let out = env.run(&[
        "--userns=auto",
        "--name",
        "first",
        "-h",
        "inside",
        "-v",
        &volume,
        "busybox",
        "sh",
        "-c",
        script,
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[..2], ["0", "0"], "{out:?}");
    assert_eq!(uid_map(lines[2]), [["0", "100000", "65536"]], "{out:?}");
    assert_eq!(lines[3..], ["denied", "chowned", "inside"], "{out:?}");
    // On the host: the volume file belongs to the mapped root, the copied-up and new files of
    // the layer to the mapped ids, and the image is untouched.
    let made = fs::metadata(shared.path().join("made")).unwrap();
    assert_eq!((made.uid(), made.gid()), (100_000, 100_000));
    let doc = env.inspect("first");
    let upper = Path::new(doc["paths"]["rootfsUpper"].as_str().unwrap());
    // The image's one layer (busybox).
    let lower = Path::new(doc["paths"]["rootfsLowers"][0].as_str().unwrap());
    assert_eq!(fs::metadata(upper.join("written")).unwrap().uid(), 100_000);
    assert_eq!(
        fs::metadata(upper.join("etc/passwd")).unwrap().uid(),
        101_000
    );
    let image = fs::metadata(lower.join("etc/passwd")).unwrap();
    assert_eq!((image.uid(), image.gid()), (0, 0));
    assert!(!lower.join("written").exists());
    assert_eq!(doc["config"]["userns"]["uidMap"][0]["host"], 100_000);

    // The first container keeps its range while it exists: the next one gets the next.
    env.run_detached(&[
        "--userns=auto",
        "--name",
        "second",
        "busybox",
        "sleep",
        "60",
    ]);
    let out = env.berth(&[
        "exec",
        "second",
        "sh",
        "-c",
        "id -u; cat /proc/self/uid_map",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "0", "{out:?}");
    assert_eq!(uid_map(lines[1]), [["0", "165536", "65536"]], "{out:?}");
    // Networking as without a user namespace: the gateway, and a port below 1024 bound by
    // the container's root (its capabilities are those of its namespaces).
    let out = env.berth(&["exec", "second", "ping", "-c", "1", "-W", "2", "10.210.0.1"]);
    assert_eq!(out.code, 0, "{out:?}");
    let out = env.berth(&[
        "exec",
        "second",
        "sh",
        "-c",
        "nc -l -p 80 </dev/null >/dev/null 2>&1 & sleep 0.2; netstat -ltn; kill $!",
    ]);
    assert!(out.stdout.contains(":80 "), "{out:?}");
    let out = env.berth(&["exec", "-t", "second", "sh", "-c", "tty; id -u"]);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "/dev/pts/0\r\n0\r\n"),
        "{out:?}"
    );
    // Its PID 1 runs as the mapped root on the host.
    let pid = env.inspect("second")["state"]["pid"].as_i64().unwrap();
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status.lines().any(|l| l.starts_with("Uid:\t165536\t")),
        "{status}"
    );

    // A new run of the first keeps its range and its layer.
    let out = env.berth(&["start", "-a", "first"]);
    assert_eq!(out.code, 0, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(uid_map(lines[2]), [["0", "100000", "65536"]], "{out:?}");

    // -t: the pty belongs to the container's root.
    let out = env.run(&[
        "--rm",
        "-t",
        "--userns=auto",
        "busybox",
        "sh",
        "-c",
        "tty; stat -c %u /dev/pts/0",
    ]);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "/dev/pts/0\r\n0\r\n"),
        "{out:?}"
    );

    let out = env.berth(&["rm", "-f", "first", "second"]);
    assert_eq!(out.code, 0, "{out:?}");
    env.assert_clean();
}

#[test]
fn explicit_maps_and_bad_input() {
    let env = Env::new();
    let out = env.run(&[
        "--rm",
        "--uidmap",
        "0:300000:1000",
        "--gidmap",
        "0:400000:1000",
        "busybox",
        "sh",
        "-c",
        "cat /proc/self/uid_map /proc/self/gid_map; id -u",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        uid_map(&out.stdout),
        [
            vec!["0", "300000", "1000"],
            vec!["0", "400000", "1000"],
            vec!["0"]
        ],
        "{out:?}"
    );
    // With --network none and --read-only too.
    let out = env.run(&[
        "--rm",
        "--userns=auto",
        "--network",
        "none",
        "--read-only",
        "busybox",
        "sh",
        "-c",
        "touch /x 2>/dev/null || echo read-only; id -u; ip -o link | wc -l",
    ]);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "read-only\n0\n1\n"),
        "{out:?}"
    );
    let cases: &[&[&str]] = &[
        &["--userns", "private", "busybox", "true"],
        &["--userns=auto", "--uidmap", "0:1:1", "busybox", "true"],
        &["--uidmap", "1:100000:10", "busybox", "true"],
        &["--uidmap", "0:100000", "busybox", "true"],
        &["--gidmap", "0:100000:10", "busybox", "true"],
        &["--userns=auto", "--network", "host", "busybox", "true"],
    ];
    for args in cases {
        let out = env.run(args);
        assert_eq!(out.code, 125, "{args:?}: {out:?}");
        assert_one_line_error(&out);
        env.assert_clean();
    }
    let mut cmd = env.command(&[
        "run",
        "--cgroup-parent",
        &env.cgroup_parent,
        "--userns=auto",
        "busybox",
        "true",
    ]);
    cmd.env("BERTH_USERNS_BASE", "nope");
    let out: common::Run = env.host.output(&mut cmd).unwrap().into();
    assert_eq!(out.code, 125, "{out:?}");
    assert_one_line_error(&out);
    assert!(out.stderr.contains("BERTH_USERNS_BASE"), "{out:?}");
    env.assert_clean();
}
