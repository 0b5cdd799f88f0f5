//! The fuzz harness, briefly: a few hundred generated cases over every plugin, with a fixed
//! seed (so the test command is reproducible). `scripts/fuzz.sh N` runs it at length with a
//! fresh seed; the variables are in fuzz/README.md.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod harness;

use harness::fuzzer::{Settings, report, run};

/// The test command's share: 20 cases per plugin.
const DEFAULT_CASES: u64 = 220;
const DEFAULT_SEED: u64 = 0x00b3_27f0_0011;

#[test]
fn plugins_survive_hostile_configurations_and_environments() {
    netns_fixtures::require_root();
    let settings = Settings::from_env(DEFAULT_CASES, DEFAULT_SEED);
    let outcome = run(&settings);
    let text = report(&settings, &outcome, "fuzz");
    println!("{text}");
    assert!(
        !outcome.failed(),
        "the fuzzer found problems (report above)"
    );
}

/// The harness itself: fake plugins that hang on a FIFO (finding 1's mechanism), crash,
/// panic, print garbage, write outside their directories, or leave a link, a firewall rule
/// and a temporary file behind are each caught, as what they are.
#[test]
fn the_harness_catches_each_kind_of_failure() {
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    use harness::proc::{Kill, Spawn};
    use harness::verdict::{Allowances, Protocol, judge};
    use harness::world::World;

    netns_fixtures::require_root();
    harness::proc::become_subreaper();
    let world = World::new();
    let dir = world.hostile("evil").join("selftest");
    std::fs::create_dir_all(&dir).unwrap();
    let fake = |name: &str, body: &str| -> Spawn {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\ncat >/dev/null\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut spec = Spawn::new(&path, world.root())
            .env("CNI_COMMAND", "ADD")
            .env("CNI_NETNS", world.hostile("fifo").to_str().unwrap())
            .stdin(b"{}".to_vec());
        spec.limit = Duration::from_millis(300);
        spec
    };
    let verdict = |spec: &Spawn| judge(&world.run(spec, Kill::Never), Some("ADD"));
    let error = r#"echo '{"code": 999, "msg": "failed"}'; exit 1"#;

    assert_eq!(
        verdict(&fake("fifo", r#"exec cat "$CNI_NETNS""#)),
        Protocol::Hang
    );
    assert!(matches!(
        verdict(&fake("segv", "kill -SEGV $$")),
        Protocol::Crash(_)
    ));
    assert!(matches!(
        verdict(&fake("panic", "exit 101")),
        Protocol::Crash(_)
    ));
    assert!(matches!(
        verdict(&fake("garbage", "echo hello; exit 1")),
        Protocol::BadOutput(_)
    ));
    assert!(matches!(
        verdict(&fake("nores", "echo '{}'")),
        Protocol::BadOutput(_)
    ));
    let escape = fake("escape", &format!("touch /berth-fuzz-escape; {error}"));
    assert!(matches!(verdict(&escape), Protocol::Escape(_)));
    assert!(!std::path::Path::new("/berth-fuzz-escape").exists());
    assert_eq!(verdict(&fake("fails", error)), Protocol::Ok);
    assert!(world.diff(&|_, _, _| false).is_empty(), "no leak yet");

    let leaky = fake(
        "leaky",
        &format!(
            "ip link add fz-leak type veth peer name fz-leak2
             iptables -w -t nat -A POSTROUTING -s 198.18.10.77 -j MASQUERADE \
               -m comment --comment 'berth fuzznet fuzzctr eth0'
             touch data/198.18.10.77.tmp
             {error}"
        ),
    );
    let out = world.run(&leaky, Kill::Never);
    assert_eq!(
        judge(&out, Some("ADD")),
        Protocol::Ok,
        "{}",
        out.stderr_text()
    );
    let allow = Allowances {
        container_id: "fuzzctr".into(),
        ..Allowances::default()
    };
    let diff = world.diff(&|s, l, a| allow.accept(s, l, a)).to_string();
    for leak in ["fz-leak", "198.18.10.77/32", "198.18.10.77.tmp"] {
        assert!(diff.contains(leak), "{leak} not seen in:\n{diff}");
    }
}
