//! `results.csv` and `report.md`.

use crate::{Metrics, Report};
use std::fmt::Write as _;

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The fixed leading columns of `results.csv`.
pub const CSV_LEADING: &[&str] = &[
    "index",
    "status",
    "guest",
    "workload",
    "args",
    "mode",
    "profile",
    "vcpus",
    "memory_mib",
    "max_instructions",
    "seed",
];

/// `results.csv`: one row per run. Columns: [`CSV_LEADING`], one column per swept
/// parameter (named by its path), the [`Metrics`] columns (empty when the run could not
/// start), `normalized_perf`, `reason`.
pub fn csv(report: &Report) -> String {
    let mut header: Vec<String> = CSV_LEADING.iter().map(|s| s.to_string()).collect();
    header.extend(report.params.iter().cloned());
    header.extend(Metrics::column_names().iter().map(|s| s.to_string()));
    header.push("normalized_perf".into());
    header.push("reason".into());
    let mut out = String::new();
    let line = |fields: Vec<String>| -> String {
        let mut l = fields
            .iter()
            .map(|f| csv_field(f))
            .collect::<Vec<_>>()
            .join(",");
        l.push('\n');
        l
    };
    out.push_str(&line(header));
    let norm = report.normalized();
    for (r, n) in report.rows.iter().zip(norm) {
        let mut f = vec![
            r.index.to_string(),
            if r.ok { "ok" } else { "failed" }.to_string(),
            r.guest.clone(),
            r.workload.clone(),
            r.args.clone(),
            r.mode.clone(),
            r.profile.clone(),
            r.vcpus.to_string(),
            r.memory_mib.to_string(),
            r.max_instructions.to_string(),
            r.seed.to_string(),
        ];
        for p in &report.params {
            f.push(r.params.get(p).cloned().unwrap_or_default());
        }
        match &r.metrics {
            Some(m) => f.extend(m.columns().into_iter().map(|(_, v)| v)),
            None => f.extend(Metrics::column_names().iter().map(|_| String::new())),
        }
        f.push(n.map(|x| format!("{x:.4}")).unwrap_or_default());
        f.push(r.reason.clone());
        out.push_str(&line(f));
    }
    out
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// The table of every run shared by `report.md` and `report.html`: the header and one
/// row per run, cells as plain text (each format escapes them its own way).
pub fn run_table(report: &Report) -> (Vec<String>, Vec<Vec<String>>) {
    let mut head: Vec<String> = vec!["#".into(), "guest".into(), "mode".into()];
    head.extend(report.params.iter().cloned());
    head.extend(
        [
            "status",
            "instructions",
            "cycles",
            "IPC",
            "simulated ms",
            "syscalls",
            "page faults",
            "STLB misses",
            "walk refs",
            "LLC misses",
            "VM exits",
            "hypercalls",
            "normalized perf",
        ]
        .map(String::from),
    );
    let norm = report.normalized();
    let rows = report
        .rows
        .iter()
        .zip(norm)
        .map(|(r, n)| {
            let mut f = vec![r.index.to_string(), r.guest.clone(), r.mode.clone()];
            for p in &report.params {
                f.push(r.params.get(p).cloned().unwrap_or_default());
            }
            f.push(if r.ok { "ok" } else { "FAILED" }.to_string());
            match &r.metrics {
                Some(m) => f.extend([
                    m.instructions.to_string(),
                    m.cycles.to_string(),
                    format!("{:.3}", m.ipc),
                    format!("{:.3}", m.simulated_seconds * 1e3),
                    m.syscalls.to_string(),
                    m.page_faults.to_string(),
                    m.stlb_misses.to_string(),
                    m.walk_refs.to_string(),
                    m.llc_misses.to_string(),
                    m.vm_exits.to_string(),
                    m.hypercalls.to_string(),
                ]),
                None => f.extend((0..11).map(|_| "-".to_string())),
            }
            f.push(n.map_or("-".into(), |x| format!("{x:.3}")));
            f
        })
        .collect();
    (head, rows)
}

/// The VM-exit table shared by `report.md` and `report.html`: per run with exits, the
/// count of each exit-reason group and the exits' share of the run's cycles. `None` when
/// no run exited.
pub fn exits_table(report: &Report) -> Option<(Vec<String>, Vec<Vec<String>>)> {
    let with_exits: Vec<_> = report
        .rows
        .iter()
        .filter_map(|r| {
            r.metrics
                .as_ref()
                .filter(|m| m.vm_exits > 0)
                .map(|m| (r, m))
        })
        .collect();
    if with_exits.is_empty() {
        return None;
    }
    let mut head: Vec<String> = vec!["#".into(), "guest".into(), "mode".into()];
    head.extend(crate::metrics::EXIT_GROUPS.iter().map(|g| g.1.to_string()));
    head.extend(["all", "% of cycles"].map(String::from));
    let rows = with_exits
        .into_iter()
        .map(|(r, m)| {
            let mut f = vec![r.index.to_string(), r.guest.clone(), r.mode.clone()];
            f.extend(m.exits().iter().map(|(_, c)| c.to_string()));
            f.push(m.vm_exits.to_string());
            f.push(format!(
                "{:.1}",
                m.vm_exit_cycles as f64 * 100.0 / m.cycles.max(1) as f64
            ));
            f
        })
        .collect();
    Some((head, rows))
}

fn md_table(o: &mut String, head: &[String], rows: Vec<Vec<String>>) {
    let _ = writeln!(
        o,
        "| {} |",
        head.iter()
            .map(|h| md_cell(h))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let _ = writeln!(o, "|{}", "---|".repeat(head.len()));
    for row in rows {
        let _ = writeln!(
            o,
            "| {} |",
            row.iter()
                .map(|c| md_cell(c))
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
}

/// The summary sentence under the title: runs, failures, modes, normalisation.
pub fn summary(report: &Report) -> String {
    let failed = report.rows.iter().filter(|r| !r.ok).count();
    format!(
        "{} runs, {} failed. Modes: {}. Performance is normalised to `{}` (its cycles / the run's cycles, same guest and sweep point).",
        report.rows.len(),
        failed,
        report.modes.join(", "),
        report.baseline
    )
}

/// `report.md`: what ran, a table of every run, the failures, and the charts.
pub fn markdown(report: &Report, charts: &[String]) -> String {
    let mut o = String::new();
    let failed = report.rows.iter().filter(|r| !r.ok).count();
    let _ = writeln!(o, "# {}\n", md_cell(&report.name));
    if !report.description.is_empty() {
        let _ = writeln!(o, "{}\n", report.description.trim());
    }
    let _ = writeln!(o, "{}\n", summary(report));
    let _ = writeln!(o, "## Runs\n");
    let (head, rows) = run_table(report);
    md_table(&mut o, &head, rows);
    if let Some((head, rows)) = exits_table(report) {
        let _ = writeln!(o, "\n## VM exits by reason\n");
        md_table(&mut o, &head, rows);
    }
    if failed > 0 {
        let _ = writeln!(o, "\n## Failed runs\n");
        for r in report.rows.iter().filter(|r| !r.ok) {
            let _ = writeln!(
                o,
                "- run {} ({} / {}{}): {}",
                r.index,
                md_cell(&r.guest),
                md_cell(&r.mode),
                if r.params.is_empty() {
                    String::new()
                } else {
                    format!(" / {}", md_cell(&r.point()))
                },
                md_cell(&r.reason)
            );
        }
    }
    if !charts.is_empty() {
        let _ = writeln!(o, "\n## Charts\n");
        for c in charts {
            let _ = writeln!(o, "![{c}](charts/{c})\n");
        }
    }
    o
}
