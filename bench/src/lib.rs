//! `berth-bench`: Berth side by side with the tools people would pick instead.
//!
//! The library holds what needs no privileges and is unit-tested: [`stats`] (median, p95,
//! range) and [`report`] (rows of ours against theirs, the markdown table, JSON, the goals).
//! The measurements live in the `compare` bench target (`benches/compare/`), which needs root
//! and runs everything inside throwaway network namespaces; `scripts/bench.sh` drives it.

pub mod report;
pub mod stats;

pub use report::{Cell, GoalResult, Report, Row, Section, Unit, Verdict};
pub use stats::Stats;
