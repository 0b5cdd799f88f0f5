//! Timings of one side of a row, gathered over runs, or why there are none.

use anyhow::Result;
use berth_bench::Cell;

/// Samples of one side in ms, or why there are none.
#[derive(Default)]
pub struct Samples {
    pub values: Vec<f64>,
    pub error: Option<String>,
}

impl Samples {
    /// Records a run: its time when `keep` (not a warm-up), its first error either way.
    pub fn push(&mut self, keep: bool, sample: Result<f64>) {
        match sample {
            Ok(ms) if keep => self.values.push(ms),
            Ok(_) => {}
            Err(e) => {
                self.error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }

    /// The samples times `scale` (1e-3: seconds); not available when no run succeeded.
    pub fn cell(&self, scale: f64) -> Cell {
        match (&self.error, self.values.is_empty()) {
            (Some(e), true) => Cell::na(e.clone()),
            _ => Cell::samples(&self.values.iter().map(|v| v * scale).collect::<Vec<_>>()),
        }
    }
}
