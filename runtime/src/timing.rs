//! Opt-in step timings for performance work: with `BERTH_DEBUG_TIMING=1` in the environment,
//! `berth run` and `berth lab deploy` print one line to stderr at the end, e.g.
//! `berth: timing: create 2.1ms, netns 0.4ms, cni add 21.0ms, …`. Without it, [`step`] only
//! runs the closure.

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

fn enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| std::env::var_os("BERTH_DEBUG_TIMING").is_some_and(|v| v == "1"))
}

static STEPS: Mutex<Vec<(&'static str, Duration)>> = Mutex::new(Vec::new());

/// Runs `f`, recording how long it took under `name` when timing is enabled.
pub fn step<T>(name: &'static str, f: impl FnOnce() -> T) -> T {
    if !enabled() {
        return f();
    }
    let start = Instant::now();
    let out = f();
    let elapsed = start.elapsed();
    if let Ok(mut steps) = STEPS.lock() {
        steps.push((name, elapsed));
    }
    out
}

/// The recorded steps as one line (`None` when timing is disabled), in order, repeated
/// steps summed.
pub fn report() -> Option<String> {
    if !enabled() {
        return None;
    }
    let steps = STEPS.lock().ok()?;
    let mut merged: Vec<(&'static str, Duration)> = Vec::new();
    for (name, d) in steps.iter() {
        match merged.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 += *d,
            None => merged.push((name, *d)),
        }
    }
    Some(
        merged
            .iter()
            .map(|(n, d)| format!("{n} {:.1}ms", d.as_secs_f64() * 1000.0))
            .collect::<Vec<_>>()
            .join(", "),
    )
}
