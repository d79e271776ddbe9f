//! Running scenarios: identical results whatever the thread count or shard split,
//! failures recorded, resume, expectations, charts, and the built-in default end to end.
#![allow(clippy::unwrap_used)]

use scenarios::runner::{self, RunOptions};
use scenarios::schema::{load_str, Loaded};
use scenarios::{expect, results};
use std::path::{Path, PathBuf};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hvsim-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// A small sweep: two guests x a two-value grid x a two-value zip = 8 runs.
const SMALL: &str = r#"
modes = ["native"]
[meta]
name = "small"
[[guests]]
name = "sys"
workload = "null_syscall"
args = [300]
memory_mib = 32
[[guests]]
name = "mem"
workload = "gups"
args = [3000, 256]
memory_mib = 32
[sweep]
grid = { "mmu.tlb.stlb.entries" = [256, 1024] }
zip = { "core.cost.div" = [20, 40], "core.cost.mul" = [3, 5] }
[budget]
max_instructions = 20000000
[[expect]]
metric = "syscalls"
guest = "sys"
op = "within"
value = 303
tolerance = 0.001
[[expect]]
metric = "cycles"
ratio_to = { mode = "native" }
op = "eq"
value = 1
"#;

fn small() -> Loaded {
    load_str(SMALL, "small.toml", "small", Path::new("."), false).unwrap()
}

fn run(l: &Loaded, dir: &Path, jobs: usize, shard: Option<(usize, usize)>) -> runner::RunSummary {
    runner::run(
        l,
        &RunOptions {
            jobs,
            shard,
            output: Some(dir.to_path_buf()),
            ..RunOptions::default()
        },
    )
    .unwrap()
}

fn read(dir: &Path, f: &str) -> String {
    std::fs::read_to_string(dir.join(f)).unwrap()
}

const FILES: &[&str] = &[
    "results.json",
    "results.csv",
    "report.md",
    "report.html",
    "scenario.resolved.toml",
    "charts/normalized.svg",
    "charts/cycle-breakdown.svg",
    "charts/sweep-mmu_tlb_stlb_entries-mem.svg",
];

#[test]
fn thread_count_and_shards_do_not_change_the_results() {
    let l = small();
    let (a, b) = (tmp("jobs1"), tmp("jobs2"));
    let ra = run(&l, &a, 1, None);
    assert_eq!(ra.records.len(), 8);
    assert_eq!(
        ra.failed(),
        0,
        "{:?}",
        ra.records.iter().map(|r| &r.reason).collect::<Vec<_>>()
    );
    run(&l, &b, 2, None);
    let (s0, s1, m) = (tmp("shard0"), tmp("shard1"), tmp("merged"));
    assert_eq!(run(&l, &s0, 2, Some((0, 2))).records.len(), 4);
    assert_eq!(run(&l, &s1, 1, Some((1, 2))).records.len(), 4);
    let merged = results::merge(&[s1.clone(), s0.clone()], &m).unwrap();
    assert!(merged.missing.is_empty());
    for f in FILES {
        let x = read(&a, f);
        assert_eq!(x, read(&b, f), "{f} differs between --jobs 1 and 2");
        assert_eq!(
            x,
            read(&m, f),
            "{f} differs between a single run and merged shards"
        );
    }
    // report.html stands alone: the charts inlined as SVG markup, nothing fetched.
    let html = read(&a, "report.html");
    assert!(html.starts_with("<!DOCTYPE html>") && html.trim_end().ends_with("</html>"));
    let charts = std::fs::read_dir(a.join("charts")).unwrap().count();
    assert!(charts >= 3);
    assert_eq!(
        html.matches("<svg ").count(),
        charts,
        "one inline SVG per chart"
    );
    assert_eq!(
        html.matches("<svg ").count(),
        html.matches("</svg>").count()
    );
    for external in ["<script", "src=", "href=", "@import", "url("] {
        assert!(!html.contains(external), "report.html contains {external}");
    }
    assert!(html.contains("<td class=\"t\">sys</td>") && html.contains("<h2>Runs</h2>"));
    // A merge of one shard alone reports what is missing.
    let part = results::merge(std::slice::from_ref(&s0), &tmp("part")).unwrap();
    assert_eq!(part.missing, vec![1, 3, 5, 7]);
    // CSV: a header and one row per run, sweep parameters as columns.
    let csv = read(&a, "results.csv");
    let header = csv.lines().next().unwrap();
    assert!(header.starts_with("index,status,guest,workload,args,mode,profile,vcpus"));
    assert!(header.contains(",core.cost.div,core.cost.mul,mmu.tlb.stlb.entries,instructions,"));
    assert!(header.ends_with(",normalized_perf,reason"));
    assert_eq!(csv.lines().count(), 9);
    // Expectations hold on these results; a crafted one fails.
    let recs = results::read_results_json(&a).unwrap();
    let out = expect::evaluate(&l.scenario, &recs);
    assert_eq!(out.len(), 4 + 8, "{out:?}");
    assert!(
        out.iter().all(|o| o.pass),
        "{}",
        expect::table(&l.scenario, &out)
    );
    let mut bad = l.scenario.clone();
    bad.expect[0].value = 400.0;
    bad.expect[1].metric = "cycels".into();
    let mut nobody = bad.expect[0].clone();
    nobody.guest = Some("nobody".into());
    bad.expect.push(nobody);
    let out = expect::evaluate(&bad, &recs);
    assert!(out.iter().all(|o| !o.pass));
    let table = expect::table(&bad, &out);
    assert!(
        table.contains("FAIL") && table.contains("-97 (-24.25%)"),
        "{table}"
    );
    assert!(
        table.contains("no run matches")
            && table.contains("unknown metric 'cycels' (did you mean 'cycles'?)"),
        "{table}"
    );
    for d in [a, b, s0, s1, m] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// Crude well-formedness: the root element, and every opened element closed.
fn assert_svg(svg: &str, names: &[&str]) {
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    let opened = svg.matches('<').count() - svg.matches("</").count();
    let self_closed = svg.matches("/>").count();
    assert_eq!(
        opened,
        svg.matches("</").count() + self_closed,
        "unbalanced elements"
    );
    for n in names {
        assert!(
            svg.contains(&format!("\n{n}\n</text>")),
            "no text {n:?} in the chart"
        );
    }
}

#[test]
fn failed_runs_are_recorded_resume_skips_finished_runs_and_charts_name_series() {
    let text = r#"
[[guests]]
workload = "null_syscall"
args = [200]
memory_mib = 32
[[guests]]
workload = "null_syscall"
args = [100000]
memory_mib = 32
[sweep]
grid = { "core.cost.div" = [10, 30] }
[budget]
max_instructions = 2000000
"#;
    let l = load_str(text, "f.toml", "f", Path::new("."), false).unwrap();
    let d = tmp("fail");
    let s = run(&l, &d, 2, None);
    assert_eq!(s.records.len(), 4);
    assert_eq!(s.failed(), 2);
    let failed: Vec<&str> = s
        .records
        .iter()
        .filter(|r| !r.ok())
        .map(|r| r.reason.as_str())
        .collect();
    assert!(failed.iter().all(|r| r.contains("budget")), "{failed:?}");
    let report = read(&d, "report.md");
    assert!(report.contains("## Failed runs") && report.contains("instruction budget"));
    // Resume: only the runs without a record run again.
    std::fs::remove_file(d.join("runs/000002.json")).unwrap();
    let before = read(&d, "results.json");
    let again = runner::run(
        &l,
        &RunOptions {
            jobs: 1,
            resume: true,
            output: Some(d.clone()),
            ..RunOptions::default()
        },
    )
    .unwrap();
    assert_eq!(again.executed, 1);
    assert_eq!(read(&d, "results.json"), before);
    // Charts: valid SVG with the series names.
    assert_svg(
        &read(&d, "charts/normalized.svg"),
        &["native", "null_syscall 200"],
    );
    assert_svg(
        &read(&d, "charts/cycle-breakdown.svg"),
        &[
            "guest user",
            "guest kernel",
            "walk stall (guest/1D)",
            "cache stall",
            "idle",
        ],
    );
    assert_svg(
        &read(&d, "charts/sweep-core_cost_div-null_syscall_200.svg"),
        &["native", "core.cost.div"],
    );
    // `hvsim report` redraws identical files.
    let csv = read(&d, "results.csv");
    std::fs::remove_file(d.join("results.csv")).unwrap();
    let l2 = results::read_scenario(&d).unwrap();
    results::draw(&d, &l2.scenario, &results::read_results_json(&d).unwrap()).unwrap();
    assert_eq!(read(&d, "results.csv"), csv);
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn cli_runs_the_default_scenario_and_checks_it() {
    let d = tmp("default");
    let exe = env!("CARGO_BIN_EXE_hvsim");
    let st = std::process::Command::new(exe)
        .args(["run", "-q", "-j", "2", "-o"])
        .arg(&d)
        .status()
        .unwrap();
    assert!(st.success());
    let recs = results::read_results_json(&d).unwrap();
    assert!(recs.len() >= 5 && recs.iter().all(|r| r.ok()));
    let st = std::process::Command::new(exe)
        .arg("check")
        .arg(&d)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stdout)
    );
    assert!(String::from_utf8_lossy(&st.stdout).contains("pass"));
    // A scenario whose expectation fails makes `check` fail.
    let f = d.join("bad.toml");
    std::fs::write(
        &f,
        format!(
            "output = {:?}\n[guest]\nworkload = \"hello\"\n[[expect]]\nmetric = \"syscalls\"\nop = \"lt\"\nvalue = 1\n",
            d.join("bad").display().to_string()
        ),
    )
    .unwrap();
    let st = std::process::Command::new(exe)
        .args(["run", "-q"])
        .arg(&f)
        .status()
        .unwrap();
    assert!(st.success());
    let out = std::process::Command::new(exe)
        .arg("check")
        .arg(&f)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAIL"));
    // validate reports the located error and fails.
    std::fs::write(&f, "modes = [\"natve\"]\n[guest]\nworkload = \"hello\"\n").unwrap();
    let out = std::process::Command::new(exe)
        .arg("validate")
        .arg(&f)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:1:10: modes[0]") && err.contains("did you mean 'native'"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(d);
}
