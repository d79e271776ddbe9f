//! `[[expect]]` evaluation: each expectation against every run it selects.

use crate::results::RunRecord;
use crate::schema::{Expect, Op, Scenario};
use crate::suggest::did_you_mean;
use serde_json::Value;
use std::fmt::Write as _;

/// One expectation checked against one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Index of the expectation in the file.
    pub expect: usize,
    /// Run index (None when the expectation selected no run).
    pub run: Option<usize>,
    /// Run label.
    pub label: String,
    /// What was measured (a ratio with `ratio_to`).
    pub measured: Option<f64>,
    /// Whether it held.
    pub pass: bool,
    /// How far from the bound, or why it could not be measured.
    pub note: String,
}

/// The metric at `path` of a record: a dotted path into the run result, else a summary
/// metric name.
pub fn metric(r: &RunRecord, path: &str) -> Result<f64, String> {
    if let Some(result) = &r.result {
        let mut v = result;
        let mut found = true;
        for part in path.split('.') {
            let next = match v {
                Value::Object(m) => m.get(part),
                Value::Array(a) => part.parse::<usize>().ok().and_then(|i| a.get(i)),
                _ => None,
            };
            match next {
                Some(n) => v = n,
                None => {
                    found = false;
                    break;
                }
            }
        }
        if found {
            if let Some(x) = v.as_f64() {
                return Ok(x);
            }
        }
    }
    let metrics = r
        .metrics
        .as_ref()
        .ok_or_else(|| format!("run {} has no results ({})", r.spec.index, r.reason))?;
    let cols = metrics.columns();
    if let Some((_, v)) = cols.iter().find(|(n, _)| *n == path) {
        return v.parse::<f64>().map_err(|e| e.to_string());
    }
    Err(format!(
        "unknown metric '{path}'{} (summary metrics: {}; or a dotted path into the result such as cycles.guest_kernel or per_vcpu.0.cpu.syscalls)",
        did_you_mean(path, cols.iter().map(|(n, _)| *n)),
        cols.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
    ))
}

fn holds(op: Op, m: f64, v: f64, tol: f64) -> bool {
    match op {
        Op::Lt => m < v,
        Op::Le => m <= v,
        Op::Gt => m > v,
        Op::Ge => m >= v,
        Op::Eq => m == v,
        Op::Within => (m - v).abs() <= tol * v.abs(),
    }
}

fn selects(e: &Expect, r: &RunRecord) -> bool {
    e.mode.as_ref().is_none_or(|m| *m == r.spec.mode)
        && e.guest.as_ref().is_none_or(|g| *g == r.spec.guest)
        && e.workload.as_ref().is_none_or(|w| *w == r.spec.workload)
}

/// Evaluates every expectation against the records.
pub fn evaluate(s: &Scenario, records: &[RunRecord]) -> Vec<Outcome> {
    let mut out = Vec::new();
    for (i, e) in s.expect.iter().enumerate() {
        let mut any = false;
        for r in records.iter().filter(|r| selects(e, r)) {
            any = true;
            let measured = metric(r, &e.metric).and_then(|m| match &e.ratio_to {
                None => Ok(m),
                Some(rt) => {
                    let mode = rt.mode.as_ref().unwrap_or(&r.spec.mode);
                    let guest = rt.guest.as_ref().unwrap_or(&r.spec.guest);
                    let base = records
                        .iter()
                        .find(|b| {
                            b.spec.mode == *mode
                                && b.spec.guest == *guest
                                && b.spec.params == r.spec.params
                        })
                        .ok_or_else(|| format!("no {guest} run in {mode} at the same point"))?;
                    let d = metric(base, &e.metric)?;
                    if d == 0.0 {
                        return Err(format!("the {guest} run in {mode} has {} = 0", e.metric));
                    }
                    Ok(m / d)
                }
            });
            let tol = e.tolerance.unwrap_or(0.0);
            let (pass, note, measured) = match measured {
                Ok(m) => {
                    let pass = holds(e.op, m, e.value, tol);
                    let diff = m - e.value;
                    let rel = if e.value != 0.0 {
                        format!(" ({:+.2}%)", diff / e.value.abs() * 100.0)
                    } else {
                        String::new()
                    };
                    (pass, format!("{diff:+}{rel}"), Some(m))
                }
                Err(why) => (false, why, None),
            };
            out.push(Outcome {
                expect: i,
                run: Some(r.spec.index),
                label: r.spec.label(),
                measured,
                pass,
                note,
            });
        }
        if !any {
            out.push(Outcome {
                expect: i,
                run: None,
                label: "-".into(),
                measured: None,
                pass: false,
                note: "no run matches this expectation".into(),
            });
        }
    }
    out
}

/// A table of outcomes for the terminal.
pub fn table(s: &Scenario, outcomes: &[Outcome]) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "| # | run | metric | measured | expected | difference | result |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|---|");
    for x in outcomes {
        let Some(e) = s.expect.get(x.expect) else {
            continue;
        };
        let metric = match &e.ratio_to {
            Some(rt) => format!("{} / {}", e.metric, rt.describe()),
            None => e.metric.clone(),
        };
        let expected = match e.op {
            Op::Within => format!("{} ± {}%", e.value, e.tolerance.unwrap_or(0.0) * 100.0),
            op => format!("{op} {}", e.value),
        };
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} |",
            x.expect,
            x.label,
            metric,
            x.measured.map_or("-".into(), |m| format!("{m}")),
            expected,
            x.note,
            if x.pass { "pass" } else { "FAIL" }
        );
    }
    let failed = outcomes.iter().filter(|x| !x.pass).count();
    let _ = writeln!(
        o,
        "\n{} checks, {} passed, {} failed",
        outcomes.len(),
        outcomes.len() - failed,
        failed
    );
    o
}
