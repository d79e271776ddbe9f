//! Tables and charts from hvsim run results: the summary metrics of a run, CSV and
//! Markdown tables, a self-contained HTML report, and SVG charts (normalised performance, cycle breakdown, sweep lines).
//!
//! This crate only formats: it knows `sim-core`'s result types and a plain description of
//! each run ([`RunRow`]); the scenario layer decides what ran.

pub mod charts;
pub mod html;
pub mod metrics;
pub mod palette;
pub mod png;
pub mod tables;

pub use metrics::Metrics;

use std::collections::BTreeMap;

/// One run as the reports see it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    /// Index in the scenario.
    pub index: usize,
    /// Whether the run completed with exit status 0.
    pub ok: bool,
    /// Why it ended (or could not start).
    pub reason: String,
    /// Guest name.
    pub guest: String,
    /// Workload.
    pub workload: String,
    /// Arguments joined by spaces.
    pub args: String,
    /// Virtualization mode.
    pub mode: String,
    /// Profile name or file.
    pub profile: String,
    /// vCPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Instruction budget.
    pub max_instructions: u64,
    /// Seed.
    pub seed: u64,
    /// Sweep point: parameter path -> value text (every path of [`Report::params`]).
    pub params: BTreeMap<String, String>,
    /// Summary metrics (absent when the run could not start).
    pub metrics: Option<Metrics>,
}

impl RunRow {
    /// The sweep point as `path=value, ...`.
    pub fn point(&self) -> String {
        self.params
            .iter()
            .map(|(p, v)| format!("{p}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Everything a report is drawn from.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Scenario name.
    pub name: String,
    /// Scenario description.
    pub description: String,
    /// Modes in scenario order.
    pub modes: Vec<String>,
    /// The mode others are normalised to.
    pub baseline: String,
    /// Swept parameter paths, sorted.
    pub params: Vec<String>,
    /// Runs sorted by index.
    pub rows: Vec<RunRow>,
}

impl Report {
    /// Performance of each row relative to the baseline mode's run of the same guest at
    /// the same sweep point: baseline cycles / cycles (1.0 = as fast as the baseline;
    /// `None` when either run failed or there is no baseline run).
    pub fn normalized(&self) -> Vec<Option<f64>> {
        let mut base: BTreeMap<(String, String), u64> = BTreeMap::new();
        for r in &self.rows {
            if r.mode == self.baseline && r.ok {
                if let Some(m) = &r.metrics {
                    base.insert((r.guest.clone(), r.point()), m.cycles);
                }
            }
        }
        self.rows
            .iter()
            .map(|r| {
                let m = r.metrics.as_ref().filter(|_| r.ok)?;
                let b = base.get(&(r.guest.clone(), r.point()))?;
                if m.cycles == 0 {
                    return None;
                }
                Some(*b as f64 / m.cycles as f64)
            })
            .collect()
    }

    /// Guest names in order of first appearance.
    pub fn guests(&self) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for r in &self.rows {
            if !v.contains(&r.guest) {
                v.push(r.guest.clone());
            }
        }
        v
    }
}
