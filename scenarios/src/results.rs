//! The results directory: one record per run in `runs/` (written as each run finishes,
//! so an interrupted sweep keeps them), and, once a sweep or merge completes,
//! `scenario.resolved.toml`, `results.json`, `results.csv`, `report.md`, `report.html` and
//! `charts/`.
//! Nothing in these files depends on the host, the thread count or the shard split.

use crate::runner::RunSpec;
use crate::schema::Scenario;
use reports::{Metrics, Report, RunRow};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Whether a run succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The guest exited with status 0.
    Ok,
    /// The run could not start, or the guest failed, hung or ran out of budget.
    Failed,
}

/// One run's record: what ran and what came out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRecord {
    /// The resolved run.
    pub spec: RunSpec,
    /// Success or failure.
    pub status: Status,
    /// How the run ended (or why it could not start).
    pub reason: String,
    /// Summary metrics (absent when the run could not start).
    pub metrics: Option<Metrics>,
    /// The full `RunResult` (absent when the run could not start).
    pub result: Option<serde_json::Value>,
}

impl RunRecord {
    /// A record of a run that ran.
    pub fn from_result(spec: RunSpec, r: &sim_core::RunResult, ok: bool) -> Self {
        RunRecord {
            spec,
            status: if ok { Status::Ok } else { Status::Failed },
            reason: r.end_reason.clone(),
            metrics: Some(Metrics::from_result(r)),
            result: serde_json::to_value(r).ok(),
        }
    }

    /// A record of a run that could not start.
    pub fn failed(spec: RunSpec, reason: String) -> Self {
        RunRecord {
            spec,
            status: Status::Failed,
            reason,
            metrics: None,
            result: None,
        }
    }

    /// Whether the run succeeded.
    pub fn ok(&self) -> bool {
        self.status == Status::Ok
    }
}

/// The per-run directory.
pub fn runs_dir(dir: &Path) -> PathBuf {
    dir.join("runs")
}

fn io(path: &Path, e: std::io::Error) -> String {
    format!("{}: {e}", path.display())
}

/// Creates the output directory; without `resume`, forgets earlier run records.
pub fn prepare_dir(dir: &Path, s: &Scenario, resume: bool) -> Result<(), String> {
    let runs = runs_dir(dir);
    std::fs::create_dir_all(&runs).map_err(|e| io(&runs, e))?;
    if !resume {
        for entry in std::fs::read_dir(&runs)
            .map_err(|e| io(&runs, e))?
            .flatten()
        {
            let p = entry.path();
            if p.extension().is_some_and(|x| x == "json") {
                std::fs::remove_file(&p).map_err(|e| io(&p, e))?;
            }
        }
    }
    write(&dir.join("scenario.resolved.toml"), &s.to_toml())
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    // Write then rename, so an interrupted write never leaves half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))
}

/// Writes one run's record to `runs/NNNNNN.json`.
pub fn write_run_record(dir: &Path, r: &RunRecord) -> Result<(), String> {
    let text = serde_json::to_string_pretty(r).map_err(|e| e.to_string())?;
    write(
        &runs_dir(dir).join(format!("{:06}.json", r.spec.index)),
        &(text + "\n"),
    )
}

/// Every run record in a results directory (`runs/`, or `results.json` without it).
pub fn read_run_records(dir: &Path) -> Result<Vec<RunRecord>, String> {
    let runs = runs_dir(dir);
    let mut out = Vec::new();
    if runs.is_dir() {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&runs)
            .map_err(|e| io(&runs, e))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        paths.sort();
        for p in paths {
            let text = std::fs::read_to_string(&p).map_err(|e| io(&p, e))?;
            out.push(serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))?);
        }
    } else {
        out = read_results_json(dir)?;
    }
    out.sort_by_key(|r: &RunRecord| r.spec.index);
    Ok(out)
}

/// `results.json` of a results directory.
pub fn read_results_json(dir: &Path) -> Result<Vec<RunRecord>, String> {
    let p = dir.join("results.json");
    let text = std::fs::read_to_string(&p).map_err(|e| io(&p, e))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))
}

/// The report input of a set of records.
pub fn report_of(s: &Scenario, records: &[RunRecord]) -> Report {
    let mut params: Vec<String> = s
        .sweep
        .grid
        .keys()
        .chain(s.sweep.zip.keys())
        .cloned()
        .collect();
    params.sort();
    let rows = records
        .iter()
        .map(|r| RunRow {
            index: r.spec.index,
            ok: r.ok(),
            reason: r.reason.clone(),
            guest: r.spec.guest.clone(),
            workload: r.spec.workload.clone(),
            args: r.spec.args.join(" "),
            mode: r.spec.mode.clone(),
            profile: r.spec.profile.clone(),
            vcpus: r.spec.vcpus,
            memory_mib: r.spec.memory_mib,
            max_instructions: r.spec.max_instructions,
            seed: r.spec.seed,
            params: r
                .spec
                .params
                .iter()
                .map(|(k, v)| (k.clone(), crate::params::value_text(v)))
                .collect::<BTreeMap<_, _>>(),
            metrics: r.metrics.clone(),
        })
        .collect();
    Report {
        name: s.meta.name.clone(),
        description: s.meta.description.clone(),
        modes: s.modes.clone(),
        baseline: crate::modes::BASELINE.to_string(),
        params,
        rows,
    }
}

/// Writes `scenario.resolved.toml`, `results.json`, `results.csv`, `report.md` and the
/// charts for `records` (sorted by index).
pub fn write_outputs(dir: &Path, s: &Scenario, records: &[RunRecord]) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    write(&dir.join("scenario.resolved.toml"), &s.to_toml())?;
    let json = serde_json::to_string_pretty(records).map_err(|e| e.to_string())?;
    write(&dir.join("results.json"), &(json + "\n"))?;
    draw(dir, s, records)
}

/// Writes `results.csv`, `report.md` and the charts (what `hvsim report` redraws).
pub fn draw(dir: &Path, s: &Scenario, records: &[RunRecord]) -> Result<(), String> {
    let report = report_of(s, records);
    write(&dir.join("results.csv"), &reports::tables::csv(&report))?;
    let charts = reports::charts::all(&report)?;
    let cdir = dir.join("charts");
    std::fs::create_dir_all(&cdir).map_err(|e| io(&cdir, e))?;
    for entry in std::fs::read_dir(&cdir)
        .map_err(|e| io(&cdir, e))?
        .flatten()
    {
        let p = entry.path();
        if p.extension().is_some_and(|x| x == "svg" || x == "png") {
            std::fs::remove_file(&p).map_err(|e| io(&p, e))?;
        }
    }
    for (name, svg) in &charts {
        write(&cdir.join(name), svg)?;
        // The same chart as a bitmap, at twice the SVG's pixel size.
        let png = reports::png::render(svg, 2.0)?;
        let p = cdir.join(name).with_extension("png");
        std::fs::write(&p, png).map_err(|e| io(&p, e))?;
    }
    write(
        &dir.join("report.html"),
        &reports::html::html(&report, &charts),
    )?;
    let names: Vec<String> = charts.into_iter().map(|(n, _)| n).collect();
    write(
        &dir.join("report.md"),
        &reports::tables::markdown(&report, &names),
    )
}

/// The resolved scenario stored in a results directory.
pub fn read_scenario(dir: &Path) -> Result<crate::schema::Loaded, String> {
    let p = dir.join("scenario.resolved.toml");
    let text = std::fs::read_to_string(&p).map_err(|e| io(&p, e))?;
    crate::schema::parse_only(&text, &p.display().to_string(), dir).map_err(|e| e.to_string())
}

/// What a merge found.
#[derive(Debug)]
pub struct Merged {
    /// Records written.
    pub records: Vec<RunRecord>,
    /// Indices of the scenario's runs no input held.
    pub missing: Vec<usize>,
}

/// Merges shard directories into `out`: the same scenario in each, the union of their
/// runs (a run present twice must be identical).
pub fn merge(dirs: &[PathBuf], out: &Path) -> Result<Merged, String> {
    let first = dirs.first().ok_or("merge: no input directories")?;
    let loaded = read_scenario(first)?;
    let mut all: BTreeMap<usize, RunRecord> = BTreeMap::new();
    for d in dirs {
        let l = read_scenario(d)?;
        if l.scenario != loaded.scenario {
            return Err(format!(
                "{} holds results of a different scenario than {}",
                d.display(),
                first.display()
            ));
        }
        for r in read_run_records(d)? {
            if let Some(prev) = all.get(&r.spec.index) {
                if *prev != r {
                    return Err(format!(
                        "run {} differs between the inputs ({})",
                        r.spec.index,
                        d.display()
                    ));
                }
            }
            all.insert(r.spec.index, r);
        }
    }
    let specs = crate::runner::expand(&loaded.scenario);
    let missing = specs
        .iter()
        .filter(|s| !matches!(all.get(&s.index), Some(r) if r.spec == **s))
        .map(|s| s.index)
        .collect();
    let records: Vec<RunRecord> = all.into_values().collect();
    prepare_dir(out, &loaded.scenario, false)?;
    for r in &records {
        write_run_record(out, r)?;
    }
    write_outputs(out, &loaded.scenario, &records)?;
    Ok(Merged { records, missing })
}
