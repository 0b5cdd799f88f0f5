//! Crash injection, briefly: SIGKILL `berth-cnitool add` and each plugin at a random point of
//! ADD (0–30 ms after it starts), then DEL and GC, and check that nothing is left. A fixed
//! seed in the test command; `scripts/fuzz.sh` runs it at length (see fuzz/README.md).

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod harness;

use harness::crash::{report, run};
use harness::fuzzer::parse_u64;

/// The test command's share: 32 landed kills, about two per target (5 lists, 11 plugins).
const DEFAULT_KILLS: u64 = 32;
const DEFAULT_SEED: u64 = 0x00b3_27f0_c0de;

#[test]
fn killed_adds_leave_nothing_after_del_and_gc() {
    netns_fixtures::require_root();
    let var = |k: &str| std::env::var(k).ok().and_then(|v| parse_u64(&v));
    let seed = var("BERTH_CRASH_SEED").unwrap_or(DEFAULT_SEED);
    let kills = var("BERTH_CRASH_KILLS").unwrap_or(DEFAULT_KILLS);
    let workers = var("BERTH_FUZZ_WORKERS").unwrap_or(2) as usize;
    let outcome = run(seed, kills, var("BERTH_CRASH_KILL"), workers);
    println!("{}", report(seed, &outcome));
    assert!(
        outcome.findings.is_empty(),
        "crash injection found leftovers or failing cleanups (report above)"
    );
}
