//! Issue 11, finding 5: what a `berth` killed while creating or removing a container leaves
//! on disk must be visible to `ps -a` and removed by `rm -f` and `system prune`.
//!
//! Before the fix, `berth run -d` wrote the record after creating the container's directory
//! and `rm -f` deleted the directory in no particular order, so a kill could leave
//! `<root>/containers/<id>/` empty, with `container.json.tmp`, or with `work`, `hostname`,
//! `ctr.log`, `resolv.conf` and no record: invisible to `ps -a`, unknown to `rm -f`, skipped by
//! `system prune`. The states are planted here exactly as those kills left them (the crash
//! injection in `crash_injection.rs` produces them the hard way), plus one whose container
//! still held its netns, IPAM reservation, CNI cache entry and cgroup when its record went.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::path::PathBuf;

use common::Env;
use serde_json::Value;

/// A container id no real container has.
fn fake_id(n: u32) -> String {
    format!("{n:02x}{}", "d".repeat(62))
}

fn ps_entry(env: &Env, id: &str) -> Option<Value> {
    env.ps().into_iter().find(|c| c["id"] == id)
}

fn containers_dir(env: &Env) -> PathBuf {
    env.root.join("containers")
}

/// Everything under `<root>/containers`, dot entries included.
fn container_entries(env: &Env) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(containers_dir(env))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn leftovers_of_killed_creations_and_removals_are_listed_and_removed() {
    let env = Env::new();
    // Something real first: the store exists, the default network too.
    let victim = env.run_detached(&["--name", "victim", "busybox", "sleep", "600"]);
    let dir = containers_dir(&env);

    // 1. Creation killed between mkdir and the record's rename (berth before the fix).
    let empty = fake_id(1);
    fs::create_dir(dir.join(&empty)).unwrap();
    let half_written = fake_id(2);
    fs::create_dir(dir.join(&half_written)).unwrap();
    fs::write(
        dir.join(&half_written).join("container.json.tmp"),
        b"{\"id\": \"",
    )
    .unwrap();
    // 2. Removal killed after the record went, before the rest.
    let half_removed = fake_id(3);
    let d = dir.join(&half_removed);
    fs::create_dir_all(d.join("work").join("work")).unwrap();
    for f in ["hostname", "ctr.log", "resolv.conf"] {
        fs::write(d.join(f), b"x").unwrap();
    }
    // 3. A record that no longer parses.
    let damaged = fake_id(4);
    fs::create_dir(dir.join(&damaged)).unwrap();
    fs::write(dir.join(&damaged).join("container.json"), b"{\"id\":").unwrap();
    // 4. A container that still holds its netns, IPAM reservation, CNI cache entry and
    // cgroup when its record goes (its monitor killed, then the record deleted).
    let monitor = env.inspect("victim")["state"]["supervisor"]["pid"]
        .as_i64()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(monitor).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    env.wait_for("the victim to stop", || {
        ps_entry(&env, &victim).is_some_and(|c| c["status"] == "exited")
    });
    fs::remove_file(dir.join(&victim).join("container.json")).unwrap();
    assert!(env.runroot.join("netns").join(&victim).exists());
    // 5. What the new code may leave: a staging directory, a doomed one, a stale temporary.
    fs::create_dir(dir.join(format!(".new-{}", fake_id(5)))).unwrap();
    fs::write(
        dir.join(format!(".new-{}", fake_id(5)))
            .join("container.json"),
        b"{",
    )
    .unwrap();
    fs::create_dir_all(dir.join(format!(".rm-{}", fake_id(6))).join("upper/etc")).unwrap();

    // ps -a shows every container directory, with a status saying what it is.
    for id in [&empty, &half_written, &half_removed, &damaged, &victim] {
        let entry = ps_entry(&env, id).unwrap_or_else(|| panic!("ps -a does not list {id}"));
        assert_eq!(entry["status"], "removing", "{entry}");
    }
    // rm -f takes a remnant by id or by unique prefix.
    let out = env.berth(&["rm", "-f", &empty]);
    assert_eq!(out.code, 0, "{out:?}");
    let out = env.berth(&["rm", "-f", &half_written[..12]]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(ps_entry(&env, &empty).is_none() && ps_entry(&env, &half_written).is_none());
    // system prune the rest, releasing the victim's network and cgroup by its id.
    let out = env.berth(&["system", "prune"]);
    assert_eq!(out.code, 0, "{out:?}");
    let mut pruned: Vec<&str> = out.stdout.lines().collect();
    pruned.sort_unstable();
    let mut expected = vec![half_removed.as_str(), damaged.as_str(), victim.as_str()];
    expected.sort_unstable();
    assert_eq!(pruned, expected, "{out:?}");
    assert_eq!(container_entries(&env), Vec::<String>::new());
    env.assert_clean();
}

#[test]
fn an_interrupted_removal_shows_as_removing_and_rm_f_finishes_it() {
    let env = Env::new();
    let id = env.run_detached(&["--name", "half", "busybox", "sleep", "600"]);
    // Record temporaries of writers killed before their rename (the new name carries the
    // writer's pid; the old one did not): the next write of the record sweeps them.
    let dir = containers_dir(&env).join(&id);
    for stale in [".container.json.999999999.tmp", "container.json.tmp"] {
        fs::write(dir.join(stale), b"{").unwrap();
    }
    let out = env.berth(&["stop", "-t", "0", "half"]);
    assert_eq!(out.code, 0, "{out:?}");
    let mut left: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("tmp"))
        .collect();
    left.sort();
    assert_eq!(left, Vec::<String>::new());
    // What `rm` writes first, by a remover that then died (no such process).
    let path = dir.join("container.json");
    let mut record: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    record["state"]["status"] = "removing".into();
    record["state"]["supervisor"] = serde_json::json!({"pid": i32::MAX, "startTime": 1});
    fs::write(&path, serde_json::to_vec(&record).unwrap()).unwrap();

    let entry = ps_entry(&env, &id).unwrap();
    assert_eq!(entry["status"], "removing", "{entry}");
    assert!(
        entry["statusText"]
            .as_str()
            .unwrap()
            .contains("interrupted"),
        "{entry}"
    );
    let out = env.berth(&["start", "half"]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("being removed"), "{out:?}");
    let out = env.berth(&["rm", "-f", "half"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(container_entries(&env), Vec::<String>::new());
    env.assert_clean();
}
