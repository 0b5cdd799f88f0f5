//! Existing containers run again: `start [-a]`, `restart`, and `attach` to a running one.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Env, assert_one_line_error};
use serde_json::Value;

fn status(env: &Env, name: &str) -> (String, Option<i64>) {
    let list = env.ps();
    let c = list.iter().find(|c| c["name"] == name).unwrap();
    (
        c["status"].as_str().unwrap().to_owned(),
        c["exitCode"].as_i64(),
    )
}

fn wait_exited(env: &Env, name: &str) -> i64 {
    env.wait_for(&format!("{name} to exit"), || {
        status(env, name).0 == "exited"
    });
    status(env, name).1.unwrap()
}

#[test]
fn start_runs_a_stopped_container_again_with_its_layer_and_log() {
    let env = Env::new();
    // Each run appends to a file of its writable layer and exits with the number of runs.
    let script = "echo x >> /runs; n=$(wc -l < /runs); echo run $n; echo err $n >&2; exit $n";
    let first = env.run(&["--name", "again", "busybox", "sh", "-c", script]);
    assert_eq!(
        (first.code, first.stdout.as_str()),
        (1, "run 1\n"),
        "{first:?}"
    );
    let id = env.inspect("again")["id"].as_str().unwrap().to_owned();

    // start: under a monitor, like -d; prints the name once the command runs.
    let out = env.berth(&["start", "again"]);
    assert_eq!((out.code, out.stdout.as_str()), (0, "again\n"), "{out:?}");
    assert_eq!(wait_exited(&env, "again"), 2);
    // start -a: this run's output only, and its exit code.
    let out = env.berth(&["start", "-a", "again"]);
    assert_eq!(
        (out.code, out.stdout.as_str(), out.stderr.as_str()),
        (3, "run 3\n", "err 3\n"),
        "{out:?}"
    );
    assert_eq!(status(&env, "again"), ("exited".to_owned(), Some(3)));
    // Same container: id, and one log with every run in order.
    assert_eq!(env.inspect("again")["id"], id.as_str());
    let logs = env.berth(&["logs", "again"]);
    assert_eq!(logs.stdout, "run 1\nrun 2\nrun 3\n", "{logs:?}");
    assert_eq!(logs.stderr, "err 1\nerr 2\nerr 3\n", "{logs:?}");
    // The image was not written.
    let lower = env.inspect("again")["paths"]["rootfsLowers"][0]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!std::path::Path::new(&lower).join("runs").exists());

    // Bad input: one line, nothing changed.
    let out = env.berth(&["start", "no-such"]);
    assert_one_line_error(&out);
    assert!(out.stderr.contains("no such container"), "{out:?}");
    let out = env.berth(&["start", "-a", "again", "again"]);
    assert_one_line_error(&out);
    let out = env.berth(&["attach", "again"]);
    assert_one_line_error(&out);
    assert!(out.stderr.contains("is not running"), "{out:?}");
    assert_eq!(status(&env, "again"), ("exited".to_owned(), Some(3)));

    assert_eq!(env.berth(&["rm", "again"]).code, 0);
    env.assert_clean();
}

#[test]
fn restart_reattaches_the_network_and_start_refuses_a_running_container() {
    let env = Env::new();
    env.run_detached(&["--name", "srv", "busybox", "sleep", "60"]);
    env.run_detached(&["--name", "peer", "busybox", "sleep", "60"]);
    let before = env.inspect("srv");
    let pid = before["state"]["pid"].as_i64().unwrap();

    let out = env.berth(&["start", "srv"]);
    assert_one_line_error(&out);
    assert!(out.stderr.contains("is already running"), "{out:?}");

    let out = env.berth(&["restart", "-t", "0", "srv"]);
    assert_eq!((out.code, out.stdout.as_str()), (0, "srv\n"), "{out:?}");
    let after = env.inspect("srv");
    assert_eq!(after["id"], before["id"]);
    assert_eq!(after["status"], "running");
    assert_ne!(after["state"]["pid"].as_i64().unwrap(), pid);
    // Attached again through CNI: the cache has a fresh result for eth0, the container
    // reaches its gateway and its peer by name, and both hosts files know its address.
    let id = after["id"].as_str().unwrap();
    let ip = &env.ips("srv", "berth")[0];
    let cached =
        std::fs::read_to_string(env.root.join(format!("cni/cache/results/berth-{id}-eth0")))
            .unwrap();
    assert!(cached.contains(ip.as_str()), "{cached}");
    for target in ["10.210.0.1", "peer"] {
        let out = env.berth(&["exec", "srv", "ping", "-c", "1", "-W", "2", target]);
        assert_eq!(out.code, 0, "{target}: {out:?}");
    }
    let hosts = env.berth(&["exec", "peer", "cat", "/etc/hosts"]).stdout;
    assert!(hosts.contains(&format!("{ip}\tsrv")), "{hosts}");

    // A stopped container is restarted too.
    assert_eq!(env.berth(&["stop", "-t", "0", "peer"]).code, 0);
    assert_eq!(status(&env, "peer").0, "exited");
    let out = env.berth(&["restart", "peer"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(status(&env, "peer").0, "running");

    // --rm containers are removed when they stop: restart says so and changes nothing.
    env.run_detached(&["--rm", "--name", "gone", "busybox", "sleep", "60"]);
    let out = env.berth(&["restart", "gone"]);
    assert_one_line_error(&out);
    assert!(out.stderr.contains("--rm"), "{out:?}");
    assert_eq!(status(&env, "gone").0, "running");

    {
        // A stopped container whose host port another one took meanwhile does not start.
        netns_fixtures::bin("portmap");
        let out = env.run(&["--name", "old", "-p", "18080:80", "busybox", "true"]);
        assert_eq!(out.code, 0, "{out:?}");
        env.run_detached(&["--name", "new", "-p", "18080:80", "busybox", "sleep", "60"]);
        let out = env.berth(&["start", "old"]);
        assert_one_line_error(&out);
        assert!(
            out.stderr.contains("already published by container new"),
            "{out:?}"
        );
        assert_eq!(status(&env, "old").0, "exited");
    }
    let out = env.berth(&["rm", "-f", "srv", "peer", "gone"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(env.berth(&["rm", "-f", "old", "new"]).code, 0);
    env.assert_clean();
}

#[test]
fn attach_follows_output_feeds_stdin_and_detaches_on_ctrl_c() {
    let env = Env::new();
    // -i under a monitor: attach writes to its stdin; the reply and the exit code come back.
    env.run_detached(&[
        "-i",
        "--name",
        "echo",
        "busybox",
        "sh",
        "-c",
        "echo before; read line; echo got $line; echo bye >&2; exit 5",
    ]);
    env.wait_for("the first line", || {
        env.berth(&["logs", "echo"]).stdout == "before\n"
    });
    let mut cmd = env.command(&["attach", "echo"]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = env.host.spawn(&mut cmd).unwrap();
    child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let out = child.wait_with_output().unwrap();
    // Only what came after the attach began; the exit code passes through.
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).as_ref(),
            String::from_utf8_lossy(&out.stderr).as_ref()
        ),
        (Some(5), "got hello\n", "bye\n")
    );

    // -it: what attach writes reaches the pty (which echoes it), the output comes back.
    env.run_detached(&[
        "-i",
        "-t",
        "--name",
        "tty",
        "busybox",
        "sh",
        "-c",
        "read line; echo got $line; exit 6",
    ]);
    let mut cmd = env.command(&["attach", "tty"]);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut child = env.host.spawn(&mut cmd).unwrap();
    child.stdin.take().unwrap().write_all(b"there\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(6));
    assert!(
        String::from_utf8_lossy(&out.stdout).ends_with("got there\r\n"),
        "{out:?}"
    );

    // Ctrl-C detaches; the container keeps running.
    env.run_detached(&[
        "--name",
        "long",
        "busybox",
        "sh",
        "-c",
        "while true; do echo tick; sleep 0.1; done",
    ]);
    let mut cmd = env.command(&["attach", "long"]);
    cmd.stdout(Stdio::piped());
    let child = env.host.spawn(&mut cmd).unwrap();
    std::thread::sleep(Duration::from_millis(600));
    let started = Instant::now();
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(started.elapsed() < Duration::from_secs(2));
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        !printed.is_empty() && printed.lines().all(|l| l == "tick"),
        "{printed:?}"
    );
    let list = env.ps();
    let long: &Value = list.iter().find(|c| c["name"] == "long").unwrap();
    assert_eq!(long["status"], "running");

    let out = env.berth(&["rm", "-f", "echo", "tty", "long"]);
    assert_eq!(out.code, 0, "{out:?}");
    env.assert_clean();
}
