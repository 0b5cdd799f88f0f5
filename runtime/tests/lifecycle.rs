//! The container lifecycle through the CLI: exit codes of failed starts, bad input, `ps`,
//! `inspect`, `rm [-f]`, signal forwarding, and that nothing is left behind.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Env, assert_one_line_error};
use serde_json::Value;

#[test]
fn command_not_found_is_127_and_not_executable_126() {
    let env = Env::new();
    let out = env.run(&["--rm", "busybox", "no-such-command"]);
    assert_eq!(out.code, 127, "{out:?}");
    assert_one_line_error(&out);
    assert!(out.stderr.contains("executable file not found"), "{out:?}");
    let out = env.run(&["--rm", "busybox", "/etc/passwd"]);
    assert_eq!(out.code, 126, "{out:?}");
    assert_one_line_error(&out);
    env.assert_clean();
}

#[test]
fn bad_input_is_one_line_and_leaves_nothing() {
    let env = Env::new();
    let cases: &[&[&str]] = &[
        &["no-such-image"],
        &["--memory", "lots", "busybox", "true"],
        &["--memory", "1k", "busybox", "true"],
        &["--cpus", "abc", "busybox", "true"],
        &["--cpus", "512", "busybox", "true"],
        &["-v", "relative:/data", "busybox", "true"],
        &["-v", "/tmp:/data/../etc", "busybox", "true"],
        &["-v", "/tmp:/data:rx", "busybox", "true"],
        &["-e", "=value", "busybox", "true"],
        &["--network", "bridge", "busybox", "true"],
        &["--cap-add", "NOT_A_CAP", "busybox", "true"],
        &["--name", "bad/name", "busybox", "true"],
        &["--pids-limit", "-5", "busybox", "true"],
        &["-w", "relative", "busybox", "true"],
    ];
    for args in cases {
        let out = env.run(args);
        assert_eq!(out.code, 125, "{args:?}: {out:?}");
        assert_one_line_error(&out);
        env.assert_clean();
    }
    let out = env.run(&["--network", "bridge", "busybox", "true"]);
    assert!(out.stderr.contains("network bridge not found"), "{out:?}");
}

#[test]
fn name_in_use_is_refused() {
    let env = Env::new();
    let out = env.run(&["--name", "web", "busybox", "true"]);
    assert_eq!(out.code, 0, "{out:?}");
    let out = env.run(&["--name", "web", "busybox", "true"]);
    assert_eq!(out.code, 125, "{out:?}");
    assert_one_line_error(&out);
    assert!(out.stderr.contains("already in use"), "{out:?}");
    assert_eq!(env.ps().len(), 1);
    let out = env.berth(&["rm", "web"]);
    assert_eq!(out.code, 0, "{out:?}");
    env.assert_clean();
}

#[test]
fn ps_inspect_rm() {
    let env = Env::new();
    let out = env.run(&[
        "--name",
        "keep",
        "busybox",
        "sh",
        "-c",
        "echo data > /file; exit 3",
    ]);
    assert_eq!(out.code, 3, "{out:?}");

    // Exited containers appear with -a only.
    let out = env.berth(&["ps", "--json"]);
    assert_eq!(out.stdout.trim(), "[]", "{out:?}");
    let list = env.ps();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["name"], "keep");
    assert_eq!(list[0]["status"], "exited");
    assert_eq!(list[0]["exitCode"], 3);
    let table = env.berth(&["ps", "-a"]);
    assert!(table.stdout.contains("Exited (3)"), "{table:?}");

    // inspect by name and by id prefix.
    let id = list[0]["id"].as_str().unwrap().to_owned();
    let out = env.berth(&["inspect", &id[..8]]);
    assert_eq!(out.code, 0, "{out:?}");
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(doc["name"], "keep");
    assert_eq!(doc["config"]["args"][0], "sh");
    assert_eq!(doc["state"]["exitCode"], 3);
    // The writable layer is kept until rm.
    let upper = doc["paths"]["rootfsUpper"].as_str().unwrap();
    assert!(std::path::Path::new(upper).join("file").exists());

    let out = env.berth(&["rm", "keep"]);
    assert_eq!((out.code, out.stdout.as_str()), (0, "keep\n"), "{out:?}");
    assert!(!std::path::Path::new(upper).exists());
    let out = env.berth(&["rm", "keep"]);
    assert_one_line_error(&out);
    assert!(out.stderr.contains("no such container"), "{out:?}");
    let out = env.berth(&["inspect", "keep"]);
    assert_one_line_error(&out);
    env.assert_clean();
}

#[test]
fn rm_of_a_running_container_needs_force() {
    let env = Env::new();
    let mut child = env.spawn_run(&["--name", "long", "busybox", "sleep", "60"]);
    let id = env.wait_running("long");
    assert!(env.runroot.join("netns").join(&id).exists());
    assert!(!env.cgroup_dirs(&id).is_empty());

    let out = env.berth(&["rm", "long"]);
    assert_one_line_error(&out);
    assert!(out.stderr.contains("is running"), "{out:?}");

    let out = env.berth(&["rm", "-f", "long"]);
    assert_eq!(out.code, 0, "{out:?}");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(137));
    env.assert_clean();
}

#[test]
fn signals_are_forwarded_to_pid1() {
    let env = Env::new();
    let mut child = env.spawn_run(&[
        "--rm",
        "--name",
        "trap",
        "busybox",
        "sh",
        "-c",
        "trap 'echo got TERM; exit 3' TERM; echo ready; while true; do sleep 0.05; done",
    ]);
    env.wait_running("trap");
    // The shell installs its trap right after starting; give it a moment.
    std::thread::sleep(Duration::from_millis(200));
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "berth run did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    assert_eq!(status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ready\ngot TERM\n");
    env.assert_clean();
}

#[test]
fn concurrent_first_use_builds_the_image_once() {
    let env = Env::new();
    let outs: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|_| s.spawn(|| env.run(&["--rm", "busybox", "true"])))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for out in &outs {
        assert_eq!(out.code, 0, "{out:?}");
    }
    // One image record, one layer (`only_layer` checks), one reference.
    let records = std::fs::read_dir(env.root.join("images/records"))
        .unwrap()
        .count();
    assert_eq!(records, 1);
    env.only_layer();
    let out = env.berth(&["image", "ls", "--json"]);
    let list: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{out:?}");
    env.assert_clean();
}

#[test]
fn foreground_output_is_shown_and_logged() {
    let env = Env::new();
    // Interleaved writes to both streams, a partial last line, an exit code: the terminal gets
    // each stream in order, the log records the same, and the code passes through.
    let script = "i=0; while [ $i -lt 300 ]; do echo out$i; echo err$i >&2; i=$((i+1)); done; \
                  printf tail; exit 7";
    let out = env.run(&["--name", "fg", "busybox", "sh", "-c", script]);
    assert_eq!(out.code, 7, "{out:?}");
    let stdout: String = (0..300).map(|i| format!("out{i}\n")).collect::<String>() + "tail";
    let stderr: String = (0..300).map(|i| format!("err{i}\n")).collect();
    assert_eq!(
        (out.stdout.as_str(), out.stderr.as_str()),
        (&*stdout, &*stderr)
    );
    let logs = env.berth(&["logs", "fg"]);
    assert_eq!(logs.code, 0, "{logs:?}");
    assert_eq!(
        (logs.stdout.as_str(), logs.stderr.as_str()),
        (&*stdout, &*stderr)
    );

    // -t: the pty's output (both streams) is shown and logged as stdout, \r\n included.
    let out = env.run(&[
        "-t",
        "--name",
        "tty",
        "busybox",
        "sh",
        "-c",
        "tty; echo e >&2",
    ]);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "/dev/pts/0\r\ne\r\n"),
        "{out:?}"
    );
    let logs = env.berth(&["logs", "tty"]);
    assert_eq!(
        (logs.stdout.as_str(), logs.stderr.as_str()),
        ("/dev/pts/0\r\ne\r\n", "")
    );

    // The reader of berth's stdout goes away (`| head -1`): the container's stdout is closed
    // too, so `yes` dies of SIGPIPE as it would without berth in between (not as PID 1,
    // which ignores signals it has no handler for), and its shell goes on.
    let mut yes = env.spawn_run(&["--rm", "busybox", "sh", "-c", "yes; exit 3"]);
    let mut first = [0u8; 2];
    std::io::Read::read_exact(yes.stdout.as_mut().unwrap(), &mut first).unwrap();
    assert_eq!(&first, b"y\n");
    drop(yes.stdout.take());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = yes.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "yes kept running without a reader"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(3));

    // While a foreground container runs, its output so far is in the log.
    let child = env.spawn_run(&["--name", "live", "busybox", "sh", "-c", "echo up; sleep 60"]);
    env.wait_for("the log of a running foreground container", || {
        env.berth(&["logs", "live"]).stdout == "up\n"
    });
    assert_eq!(env.berth(&["rm", "-f", "live"]).code, 0);
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).as_ref()
        ),
        (Some(137), "up\n")
    );
    assert_eq!(env.berth(&["rm", "fg", "tty"]).code, 0);
    env.assert_clean();
}
