//! Sweep expansion and the parallel runner: a scenario becomes a list of fully resolved
//! [`RunSpec`]s in a stable order; they run on a dedicated rayon pool, each result is
//! written to the output directory the moment it finishes, and a run that fails is
//! recorded with its reason while the others go on.

use crate::params::{self, apply_override, build_profile, value_text};
use crate::results::{self, RunRecord};
use crate::schema::{arg_text, Scenario};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sim_core::{Machine, MachineConfig, MachineProfile, RunEnd};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// One run, every value resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSpec {
    /// Position in the expanded scenario (0-based; the order is stable).
    pub index: usize,
    /// Guest name.
    pub guest: String,
    /// Workload.
    pub workload: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Virtualization mode.
    pub mode: String,
    /// Profile name or file, as the scenario gives it.
    pub profile: String,
    /// Profile overrides: the scenario's `[machine] overrides` plus this sweep point's.
    pub overrides: BTreeMap<String, toml::Value>,
    /// vCPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Instruction budget.
    pub max_instructions: u64,
    /// Seed.
    pub seed: u64,
    /// The sweep point: each swept parameter path and its value here.
    pub params: BTreeMap<String, toml::Value>,
    /// The NIC interrupt source (absent: no NIC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interrupts: Option<sim_core::irq_path::InterruptConfig>,
    /// The network path (absent: no network).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<sim_core::net::NetConfig>,
    /// The disk and its path (absent: no disk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blk: Option<sim_core::blk::BlkConfig>,
    /// The other domain of a two-domain host (absent: the guest runs alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partner: Option<crate::schema::PartnerSpec>,
    /// More domains on the host, unlinked (absent: none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub neighbours: Vec<crate::schema::PartnerSpec>,
    /// How the host's physical CPUs are shared (with a partner).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<sim_core::host::HostConfig>,
}

impl RunSpec {
    /// "guest / mode / path=value ...".
    pub fn label(&self) -> String {
        let mut s = format!("{} / {}", self.guest, self.mode);
        for (p, v) in &self.params {
            s.push_str(&format!(" / {p}={}", value_text(v)));
        }
        s
    }

    /// The sweep point as text (`path=value, ...`; empty without a sweep).
    pub fn point(&self) -> String {
        self.params
            .iter()
            .map(|(p, v)| format!("{p}={}", value_text(v)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The sweep points: grid product (first path slowest) crossed with the zip lists.
fn points(s: &Scenario) -> Vec<BTreeMap<String, toml::Value>> {
    let mut out = vec![BTreeMap::new()];
    for (p, values) in &s.sweep.grid {
        let mut next = Vec::with_capacity(out.len() * values.len());
        for pt in &out {
            for v in values {
                let mut q = pt.clone();
                q.insert(p.clone(), v.clone());
                next.push(q);
            }
        }
        out = next;
    }
    if let Some(n) = s.sweep.zip.values().next().map(Vec::len) {
        let mut next = Vec::with_capacity(out.len() * n);
        for pt in &out {
            for i in 0..n {
                let mut q = pt.clone();
                for (p, values) in &s.sweep.zip {
                    if let Some(v) = values.get(i) {
                        q.insert(p.clone(), v.clone());
                    }
                }
                next.push(q);
            }
        }
        out = next;
    }
    out
}

/// Expands a resolved scenario into its runs: for each sweep point, each guest, each
/// mode (in that nesting), numbered from 0.
pub fn expand(s: &Scenario) -> Vec<RunSpec> {
    let mut specs = Vec::new();
    for pt in points(s) {
        for g in &s.guests {
            for mode in &s.modes {
                if g.modes.as_ref().is_some_and(|ms| !ms.contains(mode)) {
                    continue;
                }
                let mut spec = RunSpec {
                    index: specs.len(),
                    guest: g.name.clone(),
                    workload: g.workload.clone(),
                    args: g.args.clone(),
                    mode: mode.clone(),
                    profile: s.machine.profile.clone(),
                    overrides: s.machine.overrides.clone(),
                    vcpus: g.vcpus,
                    memory_mib: g.memory_mib,
                    max_instructions: s.budget.max_instructions,
                    seed: s.seed,
                    params: pt.clone(),
                    interrupts: s.machine.interrupts,
                    net: g.net.clone().or_else(|| s.machine.net.clone()),
                    blk: g.blk.clone().or_else(|| s.machine.blk.clone()),
                    partner: g.partner.clone(),
                    neighbours: g.neighbours.clone(),
                    host: s.machine.host.clone(),
                };
                for (p, v) in &pt {
                    apply_param(&mut spec, p, v);
                }
                specs.push(spec);
            }
        }
    }
    specs
}

/// Sets one sweep parameter in a spec (values were validated before).
fn apply_param(spec: &mut RunSpec, path: &str, v: &toml::Value) {
    let int = |v: &toml::Value| v.as_integer().unwrap_or(0);
    match path {
        "machine.profile" => spec.profile = value_text(v),
        "guest.workload" => spec.workload = value_text(v),
        "guest.args" => {
            spec.args = v
                .as_array()
                .map(|a| a.iter().filter_map(|x| arg_text(x).ok()).collect())
                .unwrap_or_default()
        }
        "guest.vcpus" => spec.vcpus = u32::try_from(int(v)).unwrap_or(0),
        "machine.interrupts.rate" | "machine.interrupts.itr" => {
            let n = u64::try_from(int(v)).unwrap_or(0);
            let c = spec
                .interrupts
                .get_or_insert(sim_core::irq_path::InterruptConfig { rate: 0, itr: 0 });
            if path.ends_with("rate") {
                c.rate = n;
            } else {
                c.itr = n;
            }
        }
        "machine.net.peer.rate_pps" => {
            let n = u64::try_from(int(v)).unwrap_or(0);
            if let Some(sim_core::net::PeerMode::Source { rate_pps, .. }) = spec
                .net
                .as_mut()
                .and_then(|c| c.peer.as_mut())
                .map(|p| &mut p.mode)
            {
                *rate_pps = n;
            }
        }
        "machine.net.path" => {
            let path: Option<sim_core::net::NetPath> = v.clone().try_into().ok();
            if let (Some(c), Some(p)) = (spec.net.as_mut(), path) {
                c.path = p;
            }
        }
        "machine.net.rx" => {
            let rx: Option<sim_core::net::NetRx> = v.clone().try_into().ok();
            if let (Some(c), Some(r)) = (spec.net.as_mut(), rx) {
                c.rx = r;
            }
        }
        "machine.blk.path" => {
            let path: Option<sim_core::blk::BlkPath> = v.clone().try_into().ok();
            if let (Some(c), Some(p)) = (spec.blk.as_mut(), path) {
                c.path = p;
            }
        }
        "machine.blk.access_ns" | "machine.blk.mb_per_s" => {
            let n = u64::try_from(int(v)).unwrap_or(0);
            if let Some(c) = spec.blk.as_mut() {
                if path.ends_with("access_ns") {
                    c.access_ns = n;
                } else {
                    c.mb_per_s = n;
                }
            }
        }
        "guest.memory_mib" => spec.memory_mib = u64::try_from(int(v)).unwrap_or(0),
        "budget.max_instructions" => spec.max_instructions = u64::try_from(int(v)).unwrap_or(0),
        "seed" => spec.seed = u64::try_from(int(v)).unwrap_or(0),
        p => {
            if let Some(i) = p
                .strip_prefix("guest.args.")
                .and_then(|i| i.parse::<usize>().ok())
            {
                let a = arg_text(v).unwrap_or_default();
                if spec.args.len() <= i {
                    spec.args.resize(i + 1, "0".into());
                }
                spec.args[i] = a;
            } else {
                spec.overrides.insert(p.to_string(), v.clone());
            }
        }
    }
}

/// The machine profile of a run: the profile's TOML tree with the overrides applied.
pub fn profile_for(spec: &RunSpec, base_dir: &Path) -> Result<MachineProfile, String> {
    let (origin, text) = params::profile_text(&spec.profile, base_dir)?;
    let mut tree = params::profile_tree(&text, &origin)?;
    for (p, v) in &spec.overrides {
        apply_override(&mut tree, p, v)?;
    }
    build_profile(&tree, &origin)
}

/// Runs one spec to completion: Ok(result) or Err(reason the run could not start).
pub fn run_spec(spec: &RunSpec, base_dir: &Path) -> RunRecord {
    let outcome = std::panic::catch_unwind(|| -> Result<sim_core::RunResult, String> {
        let policy = match sim_core::Policy::from_name(&spec.mode) {
            Some(p) if crate::modes::is_known(&spec.mode) => p,
            _ => return Err(format!("unknown mode '{}'", spec.mode)),
        };
        let profile = profile_for(spec, base_dir)?;
        let mut cmdline = spec.workload.clone();
        for a in &spec.args {
            cmdline.push(' ');
            cmdline.push_str(a);
        }
        let mut cfg = MachineConfig::new(profile, cmdline);
        cfg.vcpus = spec.vcpus;
        cfg.mem_bytes = spec.memory_mib << 20;
        cfg.max_instructions = spec.max_instructions;
        cfg.interrupts = spec.interrupts.filter(|c| c.rate > 0);
        cfg.net = spec.net.clone();
        cfg.blk = spec.blk.clone();
        // The other domains of the host: the partner (linked: the guest's network
        // settings), then the neighbours (no network).
        let other = |p: &crate::schema::PartnerSpec, net| {
            let mut c = cfg.clone();
            c.cmdline = std::iter::once(p.workload.clone())
                .chain(p.args.iter().cloned())
                .collect::<Vec<_>>()
                .join(" ");
            c.vcpus = p.vcpus;
            c.mem_bytes = p.memory_mib << 20;
            c.net = net;
            c
        };
        let others: Vec<MachineConfig> = spec
            .partner
            .iter()
            .map(|p| other(p, cfg.net.clone()))
            .chain(spec.neighbours.iter().map(|p| other(p, None)))
            .collect();
        let build = |cfg| {
            Machine::with_policy(
                cfg,
                policy,
                crate::guest::kernel_elf(),
                "built-in testbed kernel",
            )
            .map_err(|e| e.to_string())
        };
        let m = build(cfg)?;
        if others.is_empty() {
            return Ok(m.run());
        }
        let mut doms = vec![m];
        for c in others {
            doms.push(build(c)?);
        }
        let host =
            sim_core::host::Host::with_cpus(doms, spec.host.as_ref()).map_err(|e| e.to_string())?;
        Ok(host.run())
    });
    match outcome {
        Ok(Ok(r)) => {
            let ok = matches!(r.end, RunEnd::Exited { code: 0 });
            RunRecord::from_result(spec.clone(), &r, ok)
        }
        Ok(Err(reason)) => RunRecord::failed(spec.clone(), reason),
        Err(_) => RunRecord::failed(spec.clone(), "the simulator panicked".into()),
    }
}

/// How to run a scenario.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Worker threads (0: one per core).
    pub jobs: usize,
    /// `(k, n)`: run only indices with `index % n == k`.
    pub shard: Option<(usize, usize)>,
    /// Keep runs already recorded in the output directory.
    pub resume: bool,
    /// No progress bar.
    pub quiet: bool,
    /// Where results go (default: the scenario's `output`).
    pub output: Option<PathBuf>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            jobs: 0,
            shard: None,
            resume: false,
            quiet: true,
            output: None,
        }
    }
}

/// What a scenario run produced.
#[derive(Debug)]
pub struct RunSummary {
    /// Output directory.
    pub dir: PathBuf,
    /// All records of this shard, sorted by index.
    pub records: Vec<RunRecord>,
    /// Runs executed now (not resumed).
    pub executed: usize,
    /// Instructions simulated now.
    pub instructions: u64,
    /// Host wall-clock seconds.
    pub host_seconds: f64,
}

impl RunSummary {
    /// Runs that failed.
    pub fn failed(&self) -> usize {
        self.records.iter().filter(|r| !r.ok()).count()
    }
}

/// Parses `K/N` (0 <= K < N).
pub fn parse_shard(s: &str) -> Result<(usize, usize), String> {
    let bad = || format!("--shard {s}: expected K/N with 0 <= K < N, e.g. 0/4");
    let (a, b) = s.split_once('/').ok_or_else(bad)?;
    let k: usize = a.trim().parse().map_err(|_| bad())?;
    let n: usize = b.trim().parse().map_err(|_| bad())?;
    if n == 0 || k >= n {
        return Err(bad());
    }
    Ok((k, n))
}

/// Runs a loaded scenario and writes its results directory.
pub fn run(loaded: &crate::schema::Loaded, opts: &RunOptions) -> Result<RunSummary, String> {
    let s = &loaded.scenario;
    let dir = opts
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(&s.output));
    let mut specs = expand(s);
    if let Some((k, n)) = opts.shard {
        specs.retain(|r| r.index % n == k);
    }
    results::prepare_dir(&dir, s, opts.resume)?;
    let mut done: BTreeMap<usize, RunRecord> = BTreeMap::new();
    if opts.resume {
        for r in results::read_run_records(&dir)? {
            if specs.contains(&r.spec) {
                done.insert(r.spec.index, r);
            }
        }
    }
    let todo: Vec<&RunSpec> = specs
        .iter()
        .filter(|sp| !done.contains_key(&sp.index))
        .collect();
    let jobs = if opts.jobs == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        opts.jobs
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(jobs)
        .build()
        .map_err(|e| format!("cannot start {jobs} worker threads: {e}"))?;
    let bar = if opts.quiet {
        ProgressBar::hidden()
    } else {
        let b =
            ProgressBar::with_draw_target(Some(todo.len() as u64), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} runs, ETA {eta} {wide_msg}",
        ) {
            b.set_style(style);
        }
        b
    };
    let t = Instant::now();
    let base = loaded.base_dir.clone();
    let new: Vec<Result<RunRecord, String>> = pool.install(|| {
        todo.par_iter()
            .map(|spec| {
                let rec = run_spec(spec, &base);
                let w = results::write_run_record(&dir, &rec);
                bar.set_message(spec.label());
                bar.inc(1);
                w.map(|_| rec)
            })
            .collect()
    });
    bar.finish_and_clear();
    let host_seconds = t.elapsed().as_secs_f64();
    let executed = new.len();
    let mut instructions = 0;
    for r in new {
        let r = r?;
        instructions += r.metrics.as_ref().map_or(0, |m| m.instructions);
        done.insert(r.spec.index, r);
    }
    let records: Vec<RunRecord> = done.into_values().collect();
    results::write_outputs(&dir, s, &records)?;
    Ok(RunSummary {
        dir,
        records,
        executed,
        instructions,
        host_seconds,
    })
}
