//! Detached containers and the commands that act on running ones: `run -d` (monitor),
//! `logs [-f]`, `stop`, `kill`, `exec`.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Env, assert_one_line_error};
use serde_json::Value;

fn record<'a>(list: &'a [Value], name: &str) -> &'a Value {
    list.iter().find(|c| c["name"] == name).unwrap()
}

#[test]
fn logs_and_logs_follow() {
    let env = Env::new();
    env.run_detached(&[
        "--name",
        "talker",
        "busybox",
        "sh",
        "-c",
        "echo one; echo two >&2; printf par; sleep 0.3; echo tial; exit 4",
    ]);
    // -f returns once the container exited and its monitor finished.
    let out = env.berth(&["logs", "-f", "talker"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, "one\npartial\n");
    assert_eq!(out.stderr, "two\n");
    let list = env.ps();
    let c = record(&list, "talker");
    assert_eq!(
        (c["status"].as_str(), c["exitCode"].as_i64()),
        (Some("exited"), Some(4))
    );

    let out = env.berth(&["logs", "-t", "talker"]);
    assert!(
        out.stdout
            .lines()
            .all(|l| l.starts_with("20") && l.contains("Z ")),
        "{out:?}"
    );
    assert_eq!(env.berth(&["rm", "talker"]).code, 0);

    // --rm -d: the monitor removes the container when it exits.
    env.run_detached(&["--rm", "busybox", "true"]);
    env.wait_for("the --rm container to go", || env.ps().is_empty());
    // A detached start that fails reports like a foreground one, and leaves nothing.
    let out = env.run(&["-d", "--rm", "busybox", "no-such-command"]);
    assert_eq!(out.code, 127, "{out:?}");
    assert_one_line_error(&out);
    env.assert_clean();
}

#[test]
fn stop_and_kill() {
    let env = Env::new();
    // A PID 1 with a TERM trap exits on stop, with its own code.
    env.run_detached(&[
        "--name",
        "polite",
        "busybox",
        "sh",
        "-c",
        "trap 'exit 3' TERM; echo ready; while true; do sleep 0.05; done",
    ]);
    env.run_detached(&["--name", "deaf", "busybox", "sleep", "60"]);
    env.run_detached(&["--name", "victim", "busybox", "sleep", "60"]);
    env.wait_for("the trap", || {
        env.berth(&["logs", "polite"]).stdout == "ready\n"
    });

    let out = env.berth(&["stop", "polite"]);
    assert_eq!((out.code, out.stdout.as_str()), (0, "polite\n"), "{out:?}");
    // sleep as PID 1 ignores SIGTERM: SIGKILL after -t 1.
    let started = Instant::now();
    let out = env.berth(&["stop", "-t", "1", "deaf"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(started.elapsed() >= Duration::from_secs(1));
    let out = env.berth(&["kill", "victim"]);
    assert_eq!(out.code, 0, "{out:?}");
    env.wait_for("victim to exit", || {
        record(&env.ps(), "victim")["status"] == "exited"
    });
    let list = env.ps();
    for (name, code) in [("polite", 3), ("deaf", 137), ("victim", 137)] {
        assert_eq!(record(&list, name)["exitCode"], code, "{name}: {list:?}");
    }
    // Not running any more: kill fails, stop is a no-op.
    assert_one_line_error(&env.berth(&["kill", "-s", "TERM", "deaf"]));
    assert_eq!(env.berth(&["stop", "deaf"]).code, 0);
    assert_one_line_error(&env.berth(&["kill", "-s", "NOPE", "deaf"]));
    let out = env.berth(&["rm", "polite", "deaf", "victim"]);
    assert_eq!(out.code, 0, "{out:?}");
    env.assert_clean();
}

#[test]
fn exec_joins_every_namespace_and_passes_the_exit_code() {
    let env = Env::new();
    env.run_detached(&[
        "--name",
        "box",
        "-e",
        "FROM_RUN=1",
        "busybox",
        "sleep",
        "60",
    ]);
    let script = "for n in cgroup ipc mnt net pid uts; do \
                    [ \"$(readlink /proc/self/ns/$n)\" = \"$(readlink /proc/1/ns/$n)\" ] || echo differs: $n; \
                  done; \
                  [ \"$(cat /proc/self/cgroup)\" = \"$(cat /proc/1/cgroup)\" ] || echo cgroup differs; \
                  [ \"$(grep Cap /proc/self/status)\" = \"$(grep Cap /proc/1/status)\" ] || echo caps differ; \
                  grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status; \
                  echo $FROM_RUN $EXTRA; pwd; hostname";
    let out = env.berth(&[
        "exec", "-e", "EXTRA=2", "-w", "/tmp", "box", "sh", "-c", script,
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let id = env.inspect("box")["id"].as_str().unwrap().to_owned();
    assert_eq!(
        out.stdout,
        format!("NoNewPrivs:\t1\nSeccomp:\t2\n1 2\n/tmp\n{}\n", &id[..12]),
        "{out:?}"
    );
    // And not the host's.
    let host_pid_ns = env.host_sh("readlink /proc/self/ns/pid");
    let out = env.berth(&["exec", "box", "readlink", "/proc/self/ns/pid"]);
    assert_ne!(out.stdout, host_pid_ns);

    assert_eq!(env.berth(&["exec", "box", "sh", "-c", "exit 42"]).code, 42);
    let out = env.berth(&["exec", "box", "no-such-command"]);
    assert_eq!(out.code, 127, "{out:?}");
    assert_one_line_error(&out);

    // -i passes stdin.
    let mut cmd = env.command(&["exec", "-i", "box", "sh", "-c", "tr a-z A-Z"]);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut child = env.host.spawn(&mut cmd).unwrap();
    child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "HELLO\n");

    assert_eq!(env.berth(&["stop", "-t", "0", "box"]).code, 0);
    let out = env.berth(&["exec", "box", "true"]);
    assert_one_line_error(&out);
    assert!(out.stderr.contains("is not running"), "{out:?}");
    assert_eq!(env.berth(&["rm", "box"]).code, 0);
    env.assert_clean();
}

#[test]
fn interactive_detached_shell_keeps_running() {
    let env = Env::new();
    // -di: stdin held open by the monitor, so `sh` waits instead of exiting on EOF.
    env.run_detached(&["-i", "--name", "sh", "busybox", "sh"]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(record(&env.ps(), "sh")["status"], "running");
    // -dt: the output comes through the pty.
    env.run_detached(&[
        "-t",
        "--name",
        "tty",
        "busybox",
        "sh",
        "-c",
        "tty; sleep 60",
    ]);
    env.wait_for("tty output", || {
        env.berth(&["logs", "tty"]).stdout.contains("/dev/pts/0")
    });
    let out = env.berth(&["rm", "-f", "sh", "tty"]);
    assert_eq!(out.code, 0, "{out:?}");
    env.assert_clean();
}
