//! The `hvsim` command-line tool.

use clap::{Args, Parser, Subcommand};
use scenarios::program::{self, ProgramRun};
use scenarios::runner::{self, RunOptions};
use scenarios::{expect, results, schema, slurm, topology};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

/// hvsim: a cycle-level x86-64 virtualization simulator.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

/// Options of `run` and `sweep`.
#[derive(Args, Clone)]
struct SweepArgs {
    /// Worker threads (default: one per core).
    #[arg(long, short = 'j')]
    jobs: Option<usize>,
    /// Run only the runs whose index modulo N is K (0 <= K < N); results go to
    /// OUTPUT/shard-K-of-N unless --output is given.
    #[arg(long, value_name = "K/N")]
    shard: Option<String>,
    /// Keep the runs already recorded in the output directory.
    #[arg(long)]
    resume: bool,
    /// Accept a sweep of zero or more than 10,000 runs.
    #[arg(long)]
    yes: bool,
    /// No progress bar and no report on the terminal.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Print the results (the content of results.json) on standard output.
    #[arg(long)]
    json: bool,
    /// Results directory (default: the scenario's `output`).
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
    /// Run nothing: write Slurm scripts into DIR (`sweep.sbatch`, an array job of
    /// --shards tasks, and `merge.sbatch`).
    #[arg(long, value_name = "DIR")]
    emit_slurm: Option<PathBuf>,
    /// Shards (array tasks) for --emit-slurm.
    #[arg(long, value_name = "N", default_value_t = 4, requires = "emit_slurm")]
    shards: usize,
}

#[derive(Subcommand)]
enum Command {
    /// Run a scenario (default: the built-in scenario) and write its results directory.
    Run {
        /// Scenario file (default: the built-in `scenarios/default.toml`).
        scenario: Option<PathBuf>,
        #[command(flatten)]
        args: SweepArgs,
    },
    /// Run a scenario's sweep (the same as `run` with a file).
    Sweep {
        /// Scenario file.
        scenario: PathBuf,
        #[command(flatten)]
        args: SweepArgs,
    },
    /// Merge shard results directories into one results set.
    Merge {
        /// Results directories written by `--shard` runs.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// Where the merged results go (default: the scenario's `output`).
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
    },
    /// Redraw results.csv, report.md and the charts of a results directory.
    Report {
        /// Results directory.
        dir: PathBuf,
    },
    /// Evaluate a scenario's [[expect]] entries against its results.
    Check {
        /// Results directory, or a scenario file (whose `output` holds the results).
        target: PathBuf,
    },
    /// The platform of a scenario as a graph (machine, domains, vCPUs, physical CPUs,
    /// devices, interrupt routes) in Graphviz DOT; also SVG when `dot` is installed.
    Topology {
        /// Scenario file.
        scenario: PathBuf,
        /// Write the DOT here (and the SVG next to it, as FILE.svg) instead of printing it.
        #[arg(long, short = 'o', value_name = "FILE.dot")]
        output: Option<PathBuf>,
    },
    /// Check a scenario file without running it.
    Validate {
        /// Scenario file.
        scenario: PathBuf,
        /// Accept a sweep of zero or more than 10,000 runs.
        #[arg(long)]
        yes: bool,
    },
    /// The component demonstration of the CPU and MMU models.
    Demo {
        /// Instructions the CPU part executes.
        #[arg(long, default_value_t = 50_000_000)]
        max_instructions: u64,
    },
    /// Boot the testbed kernel and run one workload, then print what the model counted.
    RunProgram {
        /// Workload name (see `hvsim list`) or path of a static x86-64 ELF executable.
        program: String,
        /// Machine profile: a built-in name or a TOML file.
        #[arg(long, default_value = "nehalem-x5570")]
        profile: String,
        /// Virtualization mode (`native`, `pv`, `hvm-shadow`, `hvm-ept`, `hvm-ept-apicv` or `hybrid`).
        #[arg(long, default_value = "native")]
        mode: String,
        /// Number of vCPUs.
        #[arg(long, default_value_t = 1)]
        vcpus: u32,
        /// Guest memory in MiB.
        #[arg(long, default_value_t = 256)]
        memory: u64,
        /// Stop after this many instructions (all vCPUs).
        #[arg(long, default_value_t = 2_000_000_000)]
        max_instructions: u64,
        /// Also write the full result as JSON to this file.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
        /// Put the NIC on the machine: received events per second, spread over one queue
        /// per vCPU (0 or absent: no NIC).
        #[arg(long, default_value_t = 0)]
        irq_rate: u64,
        /// The NIC's interrupt rate limit per queue (InterruptThresholdRate; 0: one
        /// interrupt per event).
        #[arg(long, default_value_t = 0)]
        irq_itr: u64,
        /// Put the network on the machine, with this peer: the fields of a
        /// `[machine.net.peer]` table, comma-separated (e.g. `mode="echo",response_bytes=64`).
        #[arg(long)]
        net_peer: Option<String>,
        /// The network path: `auto`, `emulated`, `pv` or `passthrough` (with `--net-peer`;
        /// `passthrough` under `hvm-ept` and `hvm-ept-apicv` only).
        #[arg(long, default_value = "auto")]
        net_path: String,
        /// The split driver's receive path: `copy` (grant copy) or `flip` (page flipping;
        /// `pv` and `hybrid` only).
        #[arg(long, default_value = "copy")]
        net_rx: String,
        /// Put a disk on the machine: the fields of a `[machine.blk]` table,
        /// comma-separated (e.g. `path="pv",size_mib=64,access_ns=0`; `""` for the
        /// defaults).
        #[arg(long)]
        disk: Option<String>,
        /// Write the machine's platform graph (devices, their paths, interrupt routes, the
        /// service domain's parts), the one it is wired from, as Graphviz DOT.
        #[arg(long)]
        topology: Option<PathBuf>,
        /// Arguments passed to the workload.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// List machine profiles, modes, workloads and every sweepable parameter path.
    List,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let no_args = SweepArgs {
        jobs: None,
        shard: None,
        resume: false,
        yes: false,
        quiet: false,
        json: false,
        output: None,
        emit_slurm: None,
        shards: 4,
    };
    let r = match cli.command {
        None => run_scenario(None, &no_args),
        Some(Command::Run { scenario, args }) => run_scenario(scenario.as_deref(), &args),
        Some(Command::Sweep { scenario, args }) => run_scenario(Some(&scenario), &args),
        Some(Command::Merge { dirs, output }) => merge(&dirs, output),
        Some(Command::Report { dir }) => report(&dir),
        Some(Command::Check { target }) => check(&target),
        Some(Command::Topology { scenario, output }) => topology(&scenario, output),
        Some(Command::Validate { scenario, yes }) => validate(&scenario, yes),
        Some(Command::Demo { max_instructions }) => run_demo(max_instructions),
        Some(Command::List) => {
            list();
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::RunProgram {
            program: name,
            profile,
            mode,
            vcpus,
            memory,
            max_instructions,
            json,
            irq_rate,
            irq_itr,
            net_peer,
            net_path,
            net_rx,
            disk,
            topology,
            args,
        }) => net_config(net_peer.as_deref(), &net_path, &net_rx).and_then(|net| {
            let blk = blk_config(disk.as_deref())?;
            run_program(
                ProgramRun {
                    program: name,
                    args,
                    profile,
                    mode,
                    vcpus,
                    memory_mib: memory,
                    max_instructions,
                },
                (irq_rate > 0).then_some(sim_core::irq_path::InterruptConfig {
                    rate: irq_rate,
                    itr: irq_itr,
                }),
                net,
                blk,
                json,
                topology,
            )
        }),
    };
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hvsim: {e}");
            ExitCode::FAILURE
        }
    }
}

fn load(scenario: Option<&Path>, yes: bool) -> Result<schema::Loaded, String> {
    match scenario {
        Some(p) => schema::load(p, yes),
        None => schema::load_str(
            scenarios::DEFAULT_SCENARIO,
            "built-in default.toml",
            "default",
            Path::new("."),
            yes,
        ),
    }
    .map_err(|e| e.to_string())
}

fn run_scenario(scenario: Option<&Path>, a: &SweepArgs) -> Result<ExitCode, String> {
    let loaded = load(scenario, a.yes)?;
    if let Some(dir) = &a.emit_slurm {
        return emit_slurm(scenario, &loaded, dir, a.shards);
    }
    let shard = a.shard.as_deref().map(runner::parse_shard).transpose()?;
    let output = a.output.clone().or_else(|| {
        shard.map(|(k, n)| PathBuf::from(&loaded.scenario.output).join(format!("shard-{k}-of-{n}")))
    });
    let opts = RunOptions {
        jobs: a.jobs.unwrap_or(0),
        shard,
        resume: a.resume,
        quiet: a.quiet || a.json,
        output,
    };
    let s = runner::run(&loaded, &opts)?;
    if a.json {
        let text = std::fs::read_to_string(s.dir.join("results.json"))
            .map_err(|e| format!("{}: {e}", s.dir.join("results.json").display()))?;
        print!("{text}");
    } else if !a.quiet {
        if let Ok(md) = std::fs::read_to_string(s.dir.join("report.md")) {
            print!("{md}");
        }
    }
    let failed = s.failed();
    if !a.quiet {
        eprintln!(
            "hvsim: {} runs ({} run now, {} resumed), {} failed; results in {}",
            s.records.len(),
            s.executed,
            s.records.len() - s.executed,
            failed,
            s.dir.display()
        );
        if s.executed > 0 {
            eprintln!(
                "hvsim: simulated {} instructions in {:.2} s host ({:.1} million instructions/s)",
                s.instructions,
                s.host_seconds,
                s.instructions as f64 / s.host_seconds.max(1e-9) / 1e6
            );
        }
    }
    for r in s.records.iter().filter(|r| !r.ok()) {
        eprintln!(
            "hvsim: run {} ({}) failed: {}",
            r.spec.index,
            r.spec.label(),
            r.reason
        );
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn emit_slurm(
    scenario: Option<&Path>,
    loaded: &schema::Loaded,
    dir: &Path,
    shards: usize,
) -> Result<ExitCode, String> {
    let path = scenario.ok_or("--emit-slurm needs a scenario file")?;
    if shards == 0 {
        return Err("--shards must be at least 1".into());
    }
    let runs = schema::run_count(&loaded.scenario);
    if shards as u64 > runs {
        eprintln!("hvsim: note: {shards} shards for {runs} runs; some shards will be empty");
    }
    let cwd = std::env::current_dir().map_err(|e| format!("current directory: {e}"))?;
    let s = slurm::scripts(&loaded.scenario.meta.name, path, dir, shards, &cwd);
    let [sweep, merge] = slurm::write(dir, &s)?;
    println!("wrote {} and {}", sweep.display(), merge.display());
    println!(
        "submit: jid=$(sbatch --parsable {}) && sbatch --dependency=afterany:$jid {}",
        sweep.display(),
        merge.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn merge(dirs: &[PathBuf], output: Option<PathBuf>) -> Result<ExitCode, String> {
    let first = dirs.first().ok_or("merge: no directories")?;
    let out = match output {
        Some(o) => o,
        None => PathBuf::from(results::read_scenario(first)?.scenario.output),
    };
    let m = results::merge(dirs, &out)?;
    eprintln!(
        "hvsim: merged {} runs from {} directories into {}",
        m.records.len(),
        dirs.len(),
        out.display()
    );
    if !m.missing.is_empty() {
        eprintln!(
            "hvsim: {} runs of the scenario are missing: {:?}",
            m.missing.len(),
            m.missing
        );
        return Ok(ExitCode::FAILURE);
    }
    let failed = m.records.iter().filter(|r| !r.ok()).count();
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        eprintln!("hvsim: {failed} runs failed");
        ExitCode::FAILURE
    })
}

fn report(dir: &Path) -> Result<ExitCode, String> {
    let loaded = results::read_scenario(dir)?;
    let records = results::read_results_json(dir)?;
    results::draw(dir, &loaded.scenario, &records)?;
    eprintln!("hvsim: redrew {}", dir.display());
    Ok(ExitCode::SUCCESS)
}

fn check(target: &Path) -> Result<ExitCode, String> {
    let (scenario, dir) = if target.is_dir() {
        (
            results::read_scenario(target)?.scenario,
            target.to_path_buf(),
        )
    } else {
        let l = schema::load(target, true).map_err(|e| e.to_string())?;
        let dir = PathBuf::from(&l.scenario.output);
        (l.scenario, dir)
    };
    let records = results::read_results_json(&dir)?;
    if scenario.expect.is_empty() {
        println!("no [[expect]] entries in the scenario");
        return Ok(ExitCode::SUCCESS);
    }
    let outcomes = expect::evaluate(&scenario, &records);
    print!("{}", expect::table(&scenario, &outcomes));
    Ok(if outcomes.iter().all(|o| o.pass) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn topology(path: &Path, output: Option<PathBuf>) -> Result<ExitCode, String> {
    let l = schema::load(path, true).map_err(|e| e.to_string())?;
    let g = topology::build(&l.scenario);
    let dot = topology::to_dot(&g);
    let Some(out) = output else {
        print!("{dot}");
        eprintln!("hvsim: {}", topology::summary(&g));
        return Ok(ExitCode::SUCCESS);
    };
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    std::fs::write(&out, &dot).map_err(|e| format!("writing {}: {e}", out.display()))?;
    eprintln!("hvsim: {}; wrote {}", topology::summary(&g), out.display());
    let svg = out.with_extension("svg");
    match std::process::Command::new("dot")
        .arg("-Tsvg")
        .arg(&out)
        .arg("-o")
        .arg(&svg)
        .status()
    {
        Ok(st) if st.success() => eprintln!("hvsim: wrote {}", svg.display()),
        Ok(st) => return Err(format!("dot -Tsvg {}: {st}", out.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("hvsim: note: Graphviz `dot` is not on PATH; no SVG written")
        }
        Err(e) => return Err(format!("running dot: {e}")),
    }
    Ok(ExitCode::SUCCESS)
}

fn validate(path: &Path, yes: bool) -> Result<ExitCode, String> {
    let l = schema::load(path, yes).map_err(|e| e.to_string())?;
    println!(
        "{}: valid; {} runs ({} guests x {} modes x {} sweep points), {} expectations",
        path.display(),
        schema::run_count(&l.scenario),
        l.scenario.guests.len(),
        l.scenario.modes.len(),
        schema::run_count(&l.scenario)
            / (l.scenario.guests.len() * l.scenario.modes.len()).max(1) as u64,
        l.scenario.expect.len()
    );
    Ok(ExitCode::SUCCESS)
}

fn list() {
    println!("profiles:");
    for n in sim_core::MachineProfile::builtin_names() {
        if let Ok(p) = sim_core::MachineProfile::load(n) {
            println!("  {n:<18} {}", p.description);
        }
    }
    println!("modes:");
    for m in scenarios::modes::MODES {
        println!("  {m}");
    }
    println!("workloads:");
    for (n, _) in scenarios::guest::programs() {
        println!("  {n}");
    }
    println!(
        "parameters (for [machine] overrides and [sweep]; defaults of {}):",
        schema::DEFAULT_PROFILE
    );
    println!("  {:<34} {:<18} default", "path", "type");
    let scenario_defaults = [
        ("machine.profile", schema::DEFAULT_PROFILE.to_string()),
        ("guest.workload", "(required)".into()),
        ("guest.args", "[]".into()),
        ("guest.args.N", "-".into()),
        ("guest.vcpus", "1".into()),
        ("guest.memory_mib", "256".into()),
        (
            "budget.max_instructions",
            schema::DEFAULT_MAX_INSTRUCTIONS.to_string(),
        ),
        ("seed", "0".into()),
    ];
    for (p, t, _) in scenarios::params::SCENARIO_PARAMS {
        let d = scenario_defaults
            .iter()
            .find(|(q, _)| q == p)
            .map_or(String::new(), |(_, d)| d.clone());
        println!("  {p:<34} {t:<18} {d}");
    }
    if let Ok((o, text)) = scenarios::params::profile_text(schema::DEFAULT_PROFILE, Path::new("."))
    {
        if let Ok(tree) = scenarios::params::profile_tree(&text, &o) {
            for (p, v) in scenarios::params::leaves(&tree) {
                println!(
                    "  {p:<34} {:<18} {}",
                    scenarios::params::type_name(&v),
                    scenarios::params::value_text(&v)
                );
            }
        }
    }
}

/// The network of `run-program`: `--net-peer` fields as a `[machine.net]` table.
fn net_config(
    peer: Option<&str>,
    path: &str,
    rx: &str,
) -> Result<Option<sim_core::net::NetConfig>, String> {
    let Some(peer) = peer else {
        return Ok(None);
    };
    let text = format!("path = \"{path}\"\nrx = \"{rx}\"\npeer = {{ {peer} }}\n");
    toml::from_str(&text)
        .map(Some)
        .map_err(|e| format!("--net-peer / --net-path / --net-rx: {}", e.message()))
}

/// The disk of `run-program`: `--disk` fields as a `[machine.blk]` table.
fn blk_config(disk: Option<&str>) -> Result<Option<sim_core::blk::BlkConfig>, String> {
    let Some(disk) = disk else {
        return Ok(None);
    };
    let text = disk.replace(',', "\n");
    let c: sim_core::blk::BlkConfig =
        toml::from_str(&text).map_err(|e| format!("--disk: {}", e.message()))?;
    c.validate().map_err(|e| format!("--disk: {e}"))?;
    Ok(Some(c))
}

fn run_program(
    opts: ProgramRun,
    interrupts: Option<sim_core::irq_path::InterruptConfig>,
    net: Option<sim_core::net::NetConfig>,
    blk: Option<sim_core::blk::BlkConfig>,
    json: Option<PathBuf>,
    topology: Option<PathBuf>,
) -> Result<ExitCode, String> {
    let t = Instant::now();
    let m = program::build_io(&opts, interrupts, net, blk).map_err(|e| e.to_string())?;
    if let Some(path) = topology {
        std::fs::write(&path, m.wiring().to_dot())
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    let r = m.run();
    let secs = t.elapsed().as_secs_f64();
    print!("{}", program::table(&r, secs));
    if let Some(path) = json {
        let text =
            serde_json::to_string_pretty(&r).map_err(|e| format!("serialising the result: {e}"))?;
        std::fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    match r.end {
        sim_core::RunEnd::Exited { code: 0 } => Ok(ExitCode::SUCCESS),
        _ => Err(r.end_reason),
    }
}

fn run_demo(budget: u64) -> Result<ExitCode, String> {
    let report = scenarios::demo::run(budget).map_err(|e| e.to_string())?;
    print!("{report}");
    Ok(ExitCode::SUCCESS)
}
