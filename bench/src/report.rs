//! The benchmark report: rows of "ours against theirs", one markdown table for people and the
//! same data as JSON for scripts, plus the goals with a verdict each.

use std::fmt::Write as _;

use serde::Serialize;

use crate::stats::Stats;

/// What a figure measures; decides formatting and the direction of "better".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    /// Milliseconds (latency): lower is better.
    Ms,
    /// Seconds (a total wall time): lower is better.
    S,
    /// Gbit/s (throughput): higher is better.
    Gbps,
    /// MiB (memory, size): lower is better.
    Mib,
    /// A count (errors, leftovers): lower is better.
    Count,
}

impl Unit {
    pub fn label(self) -> &'static str {
        match self {
            Unit::Ms => "ms",
            Unit::S => "s",
            Unit::Gbps => "Gbit/s",
            Unit::Mib => "MiB",
            Unit::Count => "",
        }
    }
}

/// One side of a row: repeated samples, a single value, or why there is no figure.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Cell {
    Samples(Stats),
    Value { value: f64 },
    Na { reason: String },
}

impl Cell {
    /// Samples, or "n/a (no successful run)" when there are none.
    pub fn samples(samples: &[f64]) -> Cell {
        Stats::of(samples).map_or_else(|| Cell::na("no successful run"), Cell::Samples)
    }

    pub fn value(value: f64) -> Cell {
        Cell::Value { value }
    }

    pub fn na(reason: impl Into<String>) -> Cell {
        Cell::Na {
            reason: reason.into(),
        }
    }

    /// The median of samples or the single value.
    pub fn central(&self) -> Option<f64> {
        match self {
            Cell::Samples(s) => Some(s.median),
            Cell::Value { value } => Some(*value),
            Cell::Na { .. } => None,
        }
    }
}

/// "Ours against theirs" for one metric.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// Stable key for scripts and goals, e.g. `chain.bridge.add`.
    pub id: String,
    pub metric: String,
    pub unit: Unit,
    pub ours: Cell,
    /// What `theirs` is: `reference`, `crun`, `loopback ceiling`, ...
    pub vs: String,
    pub theirs: Cell,
    /// ours / theirs of the central values, when both exist.
    pub ratio: Option<f64>,
}

impl Row {
    pub fn new(
        id: impl Into<String>,
        metric: impl Into<String>,
        unit: Unit,
        ours: Cell,
        vs: impl Into<String>,
        theirs: Cell,
    ) -> Row {
        let ratio = match (ours.central(), theirs.central()) {
            (Some(o), Some(t)) if t > 0.0 => Some(o / t),
            _ => None,
        };
        Row {
            id: id.into(),
            metric: metric.into(),
            unit,
            ours,
            vs: vs.into(),
            theirs,
            ratio,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Section {
    pub id: String,
    pub title: String,
    pub rows: Vec<Row>,
    /// Caveats and observations, printed under the table.
    pub notes: Vec<String>,
}

impl Section {
    pub fn new(id: impl Into<String>, title: impl Into<String>) -> Section {
        Section {
            id: id.into(),
            title: title.into(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", content = "reason", rename_all = "lowercase")]
pub enum Verdict {
    Met,
    Missed,
    /// Not measurable in this run (a section skipped, a competitor or feature missing).
    Unknown(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GoalResult {
    pub goal: String,
    pub measured: String,
    pub verdict: Verdict,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// `full` or `quick`.
    pub mode: String,
    pub sections: Vec<Section>,
    pub goals: Vec<GoalResult>,
    pub elapsed_s: f64,
}

impl Report {
    pub fn row(&self, id: &str) -> Option<&Row> {
        self.sections
            .iter()
            .flat_map(|s| &s.rows)
            .find(|r| r.id == id)
    }

    /// Goal "ours / theirs of row `id` at most `max`".
    pub fn goal_ratio(&self, goal: &str, id: &str, max: f64) -> GoalResult {
        let verdict_of = |ratio: f64| {
            if ratio <= max {
                Verdict::Met
            } else {
                Verdict::Missed
            }
        };
        match self.row(id) {
            None => unknown(goal, format!("{id} not measured in this run")),
            Some(row) => match row.ratio {
                Some(ratio) => GoalResult {
                    goal: goal.to_owned(),
                    measured: format!(
                        "{}: {} vs {} {}: {}",
                        row.metric,
                        cell_central(&row.ours, row.unit),
                        row.vs,
                        cell_central(&row.theirs, row.unit),
                        fmt_ratio(ratio)
                    ),
                    verdict: verdict_of(ratio),
                },
                None => unknown(goal, format!("{}: {}", row.metric, why_missing(row))),
            },
        }
    }

    /// Goal "ours (the central value) of row `id` at most `max`", e.g. zero leftovers.
    pub fn goal_ours_at_most(&self, goal: &str, id: &str, max: f64) -> GoalResult {
        match self.row(id).map(|r| (r, r.ours.central())) {
            Some((row, Some(v))) => GoalResult {
                goal: goal.to_owned(),
                measured: format!("{}: {}", row.metric, cell_central(&row.ours, row.unit)),
                verdict: if v <= max {
                    Verdict::Met
                } else {
                    Verdict::Missed
                },
            },
            Some((row, None)) => unknown(goal, format!("{}: {}", row.metric, why_missing(row))),
            None => unknown(goal, format!("{id} not measured in this run")),
        }
    }

    /// Goal "ours at `last` at most `max_growth` × ours at `first`" (a flat curve).
    pub fn goal_flat(&self, goal: &str, first: &str, last: &str, max_growth: f64) -> GoalResult {
        let ours = |id: &str| self.row(id).and_then(|r| r.ours.central());
        match (ours(first), ours(last)) {
            (Some(a), Some(b)) if a > 0.0 => GoalResult {
                goal: goal.to_owned(),
                measured: format!("{b:.2} ms / {a:.2} ms = {}", fmt_ratio(b / a)),
                verdict: if b / a <= max_growth {
                    Verdict::Met
                } else {
                    Verdict::Missed
                },
            },
            _ => unknown(goal, format!("{first} or {last} not measured for ours")),
        }
    }

    /// The whole report as markdown: one table, the notes, then the goals.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "| metric | ours: median | p95 | min–max | n | vs | theirs: median | p95 | min–max | n | ours/theirs |\n",
        );
        out.push_str("|---|--:|--:|--:|--:|---|--:|--:|--:|--:|--:|\n");
        for section in &self.sections {
            let _ = writeln!(out, "| **{}** | | | | | | | | | | |", section.title);
            for row in &section.rows {
                let unit = row.unit.label();
                let metric = if unit.is_empty() {
                    escape(&row.metric)
                } else {
                    format!("{} ({unit})", escape(&row.metric))
                };
                let _ = writeln!(
                    out,
                    "| {metric} | {} | {} | {} | {} |",
                    cell_columns(&row.ours),
                    escape(&row.vs),
                    cell_columns(&row.theirs),
                    row.ratio.map(fmt_ratio).unwrap_or_default()
                );
            }
        }
        let notes: Vec<_> = self
            .sections
            .iter()
            .flat_map(|s| s.notes.iter().map(move |n| (&s.title, n)))
            .collect();
        if !notes.is_empty() {
            out.push_str("\nNotes:\n");
            for (title, note) in notes {
                let _ = writeln!(out, "- *{title}*: {note}");
            }
        }
        if !self.goals.is_empty() {
            out.push_str("\n| goal | measured | verdict |\n|---|---|---|\n");
            for g in &self.goals {
                let verdict = match &g.verdict {
                    Verdict::Met => "met".to_owned(),
                    Verdict::Missed => "**missed**".to_owned(),
                    Verdict::Unknown(why) => format!("unknown ({why})"),
                };
                let _ = writeln!(
                    out,
                    "| {} | {} | {verdict} |",
                    escape(&g.goal),
                    escape(&g.measured)
                );
            }
        }
        out
    }
}

fn unknown(goal: &str, why: String) -> GoalResult {
    GoalResult {
        goal: goal.to_owned(),
        measured: String::new(),
        verdict: Verdict::Unknown(why),
    }
}

fn why_missing(row: &Row) -> String {
    match (&row.ours, &row.theirs) {
        (Cell::Na { reason }, _) => format!("ours n/a ({reason})"),
        (_, Cell::Na { reason }) => format!("{} n/a ({reason})", row.vs),
        _ => "no ratio".to_owned(),
    }
}

/// `median | p95 | min–max | n` of one side.
fn cell_columns(cell: &Cell) -> String {
    match cell {
        Cell::Samples(s) => format!(
            "{} | {} | {}–{} | {}",
            fmt_num(s.median),
            fmt_num(s.p95),
            fmt_num(s.min),
            fmt_num(s.max),
            s.n
        ),
        Cell::Value { value } => format!("{} | | | 1", fmt_num(*value)),
        Cell::Na { reason } => format!("n/a ({}) | | |", escape(reason)),
    }
}

fn cell_central(cell: &Cell, unit: Unit) -> String {
    match cell.central() {
        Some(v) => format!("{} {}", fmt_num(v), unit.label())
            .trim_end()
            .to_owned(),
        None => "n/a".to_owned(),
    }
}

/// Three significant digits or so, without scientific notation.
pub fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 || a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

pub fn fmt_ratio(r: f64) -> String {
    if r >= 10.0 {
        format!("{r:.0}×")
    } else {
        format!("{r:.2}×")
    }
}

/// Markdown table cells cannot hold `|` or newlines.
fn escape(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        let mut s = Section::new("chain", "1. CNI chain latency");
        s.rows.push(Row::new(
            "chain.bridge.add",
            "bridge chain ADD",
            Unit::Ms,
            Cell::samples(&[2.0, 2.0, 3.0]),
            "reference",
            Cell::samples(&[20.0, 21.0, 19.0]),
        ));
        s.rows.push(Row::new(
            "chain.bridge.del",
            "bridge chain DEL",
            Unit::Ms,
            Cell::samples(&[9.0]),
            "reference",
            Cell::samples(&[10.0]),
        ));
        s.rows.push(Row::new(
            "start.berth.bridge",
            "berth run | bridge",
            Unit::Ms,
            Cell::na("no networking yet"),
            "crun",
            Cell::value(30.0),
        ));
        s.notes.push("a note".into());
        Report {
            mode: "quick".into(),
            sections: vec![s],
            goals: Vec::new(),
            elapsed_s: 1.0,
        }
    }

    #[test]
    fn ratio_is_ours_over_theirs_of_medians() {
        let r = report();
        let row = r.row("chain.bridge.add").expect("row");
        assert!((row.ratio.expect("ratio") - 0.1).abs() < 1e-12);
        assert_eq!(r.row("start.berth.bridge").expect("row").ratio, None);
    }

    #[test]
    fn goals_met_missed_unknown() {
        let r = report();
        assert_eq!(
            r.goal_ratio("ADD ≤ 1/5", "chain.bridge.add", 0.2).verdict,
            Verdict::Met
        );
        assert_eq!(
            r.goal_ratio("DEL ≤ 1/4", "chain.bridge.del", 0.25).verdict,
            Verdict::Missed
        );
        let u = r.goal_ratio("start", "start.berth.bridge", 1.0);
        assert_eq!(
            u.verdict,
            Verdict::Unknown("berth run | bridge: ours n/a (no networking yet)".into())
        );
        assert_eq!(
            r.goal_ours_at_most("zero", "chain.bridge.add", 0.0).verdict,
            Verdict::Missed
        );
        assert_eq!(
            r.goal_ours_at_most("small", "chain.bridge.add", 2.0)
                .verdict,
            Verdict::Met
        );
        let u = r.goal_ratio("x", "nope", 1.0);
        assert!(matches!(u.verdict, Verdict::Unknown(_)));
        assert_eq!(
            r.goal_flat("flat", "chain.bridge.add", "chain.bridge.del", 1.5)
                .verdict,
            Verdict::Missed
        );
    }

    #[test]
    fn markdown_has_one_row_per_metric_and_escapes_pipes() {
        let md = report().to_markdown();
        assert!(md.contains("| **1. CNI chain latency** |"));
        assert!(md.contains(
            "| bridge chain ADD (ms) | 2.00 | 2.90 | 2.00–3.00 | 3 | reference | 20.0 |"
        ));
        assert!(md.contains("berth run \\| bridge"));
        assert!(md.contains("n/a (no networking yet) | | |"));
        assert!(md.contains("- *1. CNI chain latency*: a note"));
        // Every table line has the same number of columns.
        let widths: Vec<usize> = md
            .lines()
            .take_while(|l| l.starts_with('|'))
            .map(|l| l.replace("\\|", "").matches('|').count())
            .collect();
        assert!(widths.iter().all(|w| *w == widths[0]), "{widths:?}");
    }

    #[test]
    fn json_keeps_kinds_apart() {
        let v = serde_json::to_value(report()).expect("json");
        let row = &v["sections"][0]["rows"][0];
        assert_eq!(row["ours"]["kind"], "samples");
        assert_eq!(row["ours"]["median"], 2.0);
        assert_eq!(v["sections"][0]["rows"][2]["ours"]["kind"], "na");
    }

    #[test]
    fn numbers_keep_about_three_digits() {
        assert_eq!(fmt_num(1234.5), "1234");
        assert_eq!(fmt_num(12.345), "12.3");
        assert_eq!(fmt_num(1.2345), "1.23");
        assert_eq!(fmt_num(0.12345), "0.123");
        assert_eq!(fmt_ratio(0.123), "0.12×");
        assert_eq!(fmt_ratio(12.3), "12×");
    }
}
