//! State survives a crash of `berth` itself: a foreground `berth run` or a monitor killed
//! with SIGKILL in the middle. `ps` must tell the truth right away, and `rm -f` and
//! `system prune` must release everything the dead process held (netns, CNI attachment,
//! IPAM reservation, masquerade rules, cgroup), while a running container is left alone.
#![allow(clippy::unwrap_used)]

mod common;

use common::Env;

fn status(env: &Env, name: &str) -> String {
    env.ps()
        .into_iter()
        .find(|c| c["name"] == name)
        .map(|c| c["status"].as_str().unwrap_or_default().to_owned())
        .unwrap_or_default()
}

/// Something is left to clean: the netns file and the IPAM reservation of `id`.
fn assert_leftovers(env: &Env, id: &str) {
    assert!(env.runroot.join("netns").join(id).exists());
    let ipam = env.root.join("cni/networks/berth");
    let reservations = std::fs::read_dir(ipam)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("10.210."))
        .count();
    assert_eq!(reservations, 1);
}

#[test]
fn sigkill_of_a_foreground_run_then_rm_f() {
    let env = Env::new();
    let mut child = env.spawn_run(&["--name", "victim", "busybox", "sleep", "60"]);
    let id = env.wait_running("victim");
    child.kill().unwrap();
    child.wait().unwrap();
    // PID 1 dies with its parent (PDEATHSIG); the record still says "running", ps knows better.
    env.wait_for("ps to show victim exited", || {
        status(&env, "victim") == "exited"
    });
    assert_leftovers(&env, &id);
    let out = env.berth(&["rm", "-f", "victim"]);
    assert_eq!(out.code, 0, "{out:?}");
    env.assert_clean();
}

#[test]
fn system_prune_cleans_what_crashes_left_and_keeps_running_containers() {
    let env = Env::new();
    // A detached container whose monitor is killed.
    let orphan = env.run_detached(&["--name", "orphan", "busybox", "sleep", "60"]);
    let monitor = env.inspect("orphan")["state"]["supervisor"]["pid"]
        .as_i64()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(monitor).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // A foreground run killed too.
    let mut child = env.spawn_run(&["--name", "victim", "busybox", "sleep", "60"]);
    env.wait_running("victim");
    child.kill().unwrap();
    child.wait().unwrap();
    // And one that keeps running.
    env.run_detached(&["--name", "keeper", "busybox", "sleep", "60"]);
    env.wait_for("both to show as exited", || {
        status(&env, "orphan") == "exited" && status(&env, "victim") == "exited"
    });
    assert!(env.runroot.join("netns").join(&orphan).exists());

    let out = env.berth(&["system", "prune"]);
    assert_eq!(out.code, 0, "{out:?}");
    let mut removed: Vec<&str> = out.stdout.lines().collect();
    removed.sort_unstable();
    assert_eq!(removed, ["orphan", "victim"], "{out:?}");
    let list = env.ps();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["name"], "keeper");
    assert_eq!(list[0]["status"], "running");
    // The survivor still has its network.
    let gateway = env.berth(&["exec", "keeper", "ping", "-c", "1", "-W", "2", "10.210.0.1"]);
    assert_eq!(gateway.code, 0, "{gateway:?}");

    let out = env.berth(&["rm", "-f", "keeper"]);
    assert_eq!(out.code, 0, "{out:?}");
    // Prune on a clean state is a no-op.
    let out = env.berth(&["system", "prune"]);
    assert_eq!((out.code, out.stdout.as_str()), (0, ""), "{out:?}");
    env.assert_clean();
}
