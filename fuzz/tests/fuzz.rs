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
