//! What a container sees: its own PID 1, hostname, filesystem, capabilities, seccomp and
//! limits. Every test runs `berth` inside a throwaway netns playing the host, with temporary
//! state roots, and checks that nothing is left afterwards.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;

use common::Env;

#[test]
fn exit_code_passes_through() {
    let env = Env::new();
    let out = env.run(&["--rm", "busybox", "sh", "-c", "exit 7"]);
    assert_eq!(out.code, 7, "{out:?}");
    let out = env.run(&["--rm", "busybox", "true"]);
    assert_eq!(out.code, 0, "{out:?}");
    env.assert_clean();
}

#[test]
fn pid1_is_the_command_and_host_processes_are_invisible() {
    let env = Env::new();
    let out = env.run(&[
        "--rm",
        "busybox",
        "sh",
        "-c",
        "echo $$; ls /proc | grep -E '^[0-9]+$' | wc -l; ps -o pid,comm",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "1", "{out:?}");
    // sh, ls, grep and wc: nothing of the host.
    let pids: usize = lines[1].trim().parse().unwrap();
    assert!(pids <= 4, "{out:?}");
    assert!(lines[2..].iter().all(|l| !l.contains("berth")), "{out:?}");
    env.assert_clean();
}

#[test]
fn hostname_is_the_short_id_or_the_flag() {
    let env = Env::new();
    let out = env.run(&["--rm", "busybox", "hostname"]);
    let name = out.stdout.trim();
    assert_eq!(name.len(), 12, "{out:?}");
    assert!(name.bytes().all(|b| b.is_ascii_hexdigit()), "{out:?}");
    let out = env.run(&[
        "--rm",
        "--hostname",
        "web-1",
        "busybox",
        "sh",
        "-c",
        "hostname; echo $HOSTNAME",
    ]);
    assert_eq!(out.stdout, "web-1\nweb-1\n", "{out:?}");
    env.assert_clean();
}

#[test]
fn root_is_the_image_and_host_files_are_unreachable() {
    let env = Env::new();
    let marker = env.tmp.path().join("host-marker");
    fs::write(&marker, "secret").unwrap();
    let script = format!(
        "test -e {m} && echo visible || echo hidden; readlink /bin/sh; cat /etc/passwd | head -1; ls /",
        m = marker.display()
    );
    let out = env.run(&["--rm", "busybox", "sh", "-c", &script]);
    assert_eq!(out.code, 0, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "hidden");
    assert_eq!(lines[1], "/bin/busybox");
    assert_eq!(lines[2], "root:x:0:0:root:/root:/bin/sh");
    let listing: Vec<&str> = lines[3..].to_vec();
    for dir in ["bin", "dev", "etc", "proc", "root", "sys", "tmp"] {
        assert!(listing.contains(&dir), "{dir} missing in / : {listing:?}");
    }
    env.assert_clean();
}

#[test]
fn volumes_are_visible_and_ro_is_read_only() {
    let env = Env::new();
    let vol = env.tmp.path().join("vol");
    fs::create_dir(&vol).unwrap();
    fs::write(vol.join("in"), "from host\n").unwrap();
    let ro = format!("{}:/data:ro", vol.display());
    let rw = format!("{}:/srv/rw", vol.display());
    let out = env.run(&[
        "--rm",
        "-v",
        &ro,
        "-v",
        &rw,
        "busybox",
        "sh",
        "-c",
        "cat /data/in; touch /data/x && echo ro-writable; echo out > /srv/rw/out && echo rw-ok",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, "from host\nrw-ok\n", "{out:?}");
    assert!(out.stderr.contains("Read-only file system"), "{out:?}");
    assert_eq!(fs::read_to_string(vol.join("out")).unwrap(), "out\n");
    assert!(!vol.join("x").exists());
    env.assert_clean();
}

#[test]
fn volume_target_symlink_stays_inside_the_rootfs() {
    // An image symlink pointing at an absolute host path must resolve inside the rootfs.
    let env = Env::new();
    let out = env.run(&["--rm", "busybox", "true"]);
    assert_eq!(out.code, 0, "{out:?}");
    let rootfs = env.only_layer();
    let escape = env.tmp.path().join("escape-target");
    fs::create_dir(&escape).unwrap();
    // The image is immutable to containers, but its owner (root on the host) may craft it.
    std::os::unix::fs::symlink(&escape, rootfs.join("evil")).unwrap();
    let vol = env.tmp.path().join("vol");
    fs::create_dir(&vol).unwrap();
    let spec = format!("{}:/evil/mnt", vol.display());
    let out = env.run(&[
        "--rm",
        "-v",
        &spec,
        "busybox",
        "sh",
        "-c",
        "ls -d /evil/mnt",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    // The mount point was created inside the container's layer, not in the host directory.
    assert!(!escape.join("mnt").exists());
    fs::remove_file(rootfs.join("evil")).unwrap();
    env.assert_clean();
}

#[test]
fn capabilities_are_the_docker_default() {
    let env = Env::new();
    let out = env.run(&[
        "--rm",
        "busybox",
        "sh",
        "-c",
        "grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status; mount -t tmpfs x /mnt; echo mount=$?",
    ]);
    assert_eq!(
        out.stdout,
        "CapInh:\t0000000000000000\nCapPrm:\t00000000a80425fb\nCapEff:\t00000000a80425fb\n\
         CapBnd:\t00000000a80425fb\nCapAmb:\t0000000000000000\nmount=1\n",
        "{out:?}"
    );
    assert!(out.stderr.contains("permission denied"), "{out:?}");
    let out = env.run(&[
        "--rm",
        "--cap-add",
        "NET_ADMIN",
        "--cap-drop",
        "CAP_CHOWN",
        "busybox",
        "grep",
        "CapEff",
        "/proc/self/status",
    ]);
    // + NET_ADMIN (bit 12), - CHOWN (bit 0).
    assert_eq!(out.stdout, "CapEff:\t00000000a80435fa\n", "{out:?}");
    env.assert_clean();
}

#[test]
fn no_new_privs_seccomp_and_raw_sockets() {
    let env = Env::new();
    let out = env.run(&[
        "--rm",
        "busybox",
        "sh",
        "-c",
        "grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status; \
         unshare -n true 2>/dev/null; echo unshare=$?; \
         ping -c 1 -W 2 127.0.0.1 >/dev/null; echo ping=$?; \
         ip -o link show lo | grep -q UP; echo lo=$?",
    ]);
    assert_eq!(
        out.stdout, "NoNewPrivs:\t1\nSeccomp:\t2\nunshare=1\nping=0\nlo=0\n",
        "{out:?}"
    );
    env.assert_clean();
}

#[test]
fn memory_hog_is_oom_killed() {
    let env = Env::new();
    // tail buffers its whole (newline-free) input: it grows until the OOM killer stops it.
    let out = env.run(&[
        "--rm",
        "--memory",
        "32m",
        "busybox",
        "sh",
        "-c",
        "head -c 200m /dev/zero | tail",
    ]);
    assert_eq!(out.code, 137, "{out:?}");
    env.assert_clean();
}

#[test]
fn pids_limit_stops_a_fork_bomb() {
    let env = Env::new();
    let out = env.run(&[
        "--rm",
        "--pids-limit",
        "20",
        "busybox",
        "sh",
        "-c",
        "for i in $(seq 1 60); do sleep 5 & done; wait",
    ]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("can't fork"), "{out:?}");
    env.assert_clean();
}

#[test]
fn limits_reach_the_cgroup() {
    let env = Env::new();
    let mut child = env.spawn_run(&[
        "--name",
        "limited",
        "--memory",
        "64m",
        "--cpus",
        "0.5",
        "--pids-limit",
        "50",
        "busybox",
        "sleep",
        "30",
    ]);
    let id = env.wait_running("limited");
    let dirs = env.cgroup_dirs(&id);
    assert!(!dirs.is_empty());
    let read = |file: &str| {
        dirs.iter()
            .map(|d| d.join(file))
            .find(|p| p.exists())
            .map(|p| fs::read_to_string(p).unwrap().trim().to_owned())
    };
    // cgroup v1 names first, v2 second.
    if let Some(mem) = read("memory.limit_in_bytes") {
        assert_eq!(mem, "67108864");
        assert_eq!(read("cpu.cfs_quota_us").unwrap(), "50000");
        assert_eq!(read("cpu.cfs_period_us").unwrap(), "100000");
    } else {
        assert_eq!(read("memory.max").unwrap(), "67108864");
        assert_eq!(read("cpu.max").unwrap(), "50000 100000");
    }
    assert_eq!(read("pids.max").unwrap(), "50");
    // PID 1 of the container is in the cgroup.
    let procs = read("cgroup.procs").unwrap();
    assert_eq!(procs.lines().count(), 1, "{procs}");

    let out = env.berth(&["rm", "-f", "limited"]);
    assert_eq!(out.code, 0, "{out:?}");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(137));
    env.assert_clean();
}

#[test]
fn read_only_root() {
    let env = Env::new();
    let out = env.run(&[
        "--rm",
        "--read-only",
        "busybox",
        "sh",
        "-c",
        "touch /x 2>/dev/null; echo root=$?; touch /tmp/x 2>/dev/null; echo tmp=$?; touch /dev/shm/x; echo shm=$?",
    ]);
    assert_eq!(out.stdout, "root=1\ntmp=1\nshm=0\n", "{out:?}");
    env.assert_clean();
}

#[test]
fn writes_vanish_and_the_image_is_unchanged() {
    let env = Env::new();
    let out = env.run(&[
        "--rm",
        "busybox",
        "sh",
        "-c",
        "echo new > /bin/newfile && rm /etc/passwd && echo done",
    ]);
    assert_eq!(out.stdout, "done\n", "{out:?}");
    let rootfs = env.only_layer();
    assert!(rootfs.join("etc/passwd").exists());
    assert!(!rootfs.join("bin/newfile").exists());
    let out = env.run(&[
        "--rm",
        "busybox",
        "sh",
        "-c",
        "test -e /bin/newfile; echo $?; head -1 /etc/passwd",
    ]);
    assert_eq!(out.stdout, "1\nroot:x:0:0:root:/root:/bin/sh\n", "{out:?}");
    env.assert_clean();
}

#[test]
fn env_and_workdir() {
    let env = Env::new();
    let out = env.run(&[
        "--rm",
        "-e",
        "GREETING=hello world",
        "-w",
        "/srv/app",
        "busybox",
        "sh",
        "-c",
        "echo $GREETING; pwd; echo $HOME",
    ]);
    assert_eq!(out.stdout, "hello world\n/srv/app\n/root\n", "{out:?}");
    env.assert_clean();
}

#[test]
fn tty_is_a_pty_of_the_container() {
    let env = Env::new();
    let out = env.run(&[
        "--rm",
        "-t",
        "busybox",
        "sh",
        "-c",
        "tty; stty size; echo $TERM",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    // The pty turns "\n" into "\r\n".
    assert_eq!(out.stdout, "/dev/pts/0\r\n24 80\r\nxterm\r\n", "{out:?}");
    env.assert_clean();
}

#[test]
fn stdin_is_passed_only_with_i() {
    let env = Env::new();
    let mut cmd = env.command(&[
        "run",
        "--rm",
        "--cgroup-parent",
        &env.cgroup_parent,
        "-i",
        "busybox",
        "tr",
        "a-z",
        "A-Z",
    ]);
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = env.host.spawn(&mut cmd).unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"hello\n").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "HELLO\n");
    // Without -i: /dev/null, so cat ends at once.
    let out = env.run(&["--rm", "busybox", "cat"]);
    assert_eq!((out.code, out.stdout.as_str()), (0, ""), "{out:?}");
    env.assert_clean();
}
