//! The `hvsim` command-line tool.

use clap::{Parser, Subcommand};
use scenarios::program::{self, ProgramRun};
use std::process::ExitCode;
use std::time::Instant;

/// hvsim: a cycle-level x86-64 virtualization simulator.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the built-in default (today: the component demonstration of the CPU and MMU
    /// models; the scenario runner replaces it).
    Run {
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
        /// Virtualization mode (only `native` so far).
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
        /// Arguments passed to the workload.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// List machine profiles, modes and workloads.
    List,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => run_demo(50_000_000),
        Some(Command::Run { max_instructions }) => run_demo(max_instructions),
        Some(Command::List) => {
            println!("profiles:");
            for n in sim_core::MachineProfile::builtin_names() {
                if let Ok(p) = sim_core::MachineProfile::load(n) {
                    println!("  {n:<18} {}", p.description);
                }
            }
            println!("modes:\n  native");
            println!("workloads:");
            for (n, _) in scenarios::guest::programs() {
                println!("  {n}");
            }
            ExitCode::SUCCESS
        }
        Some(Command::RunProgram {
            program: name,
            profile,
            mode,
            vcpus,
            memory,
            max_instructions,
            json,
            args,
        }) => {
            let opts = ProgramRun {
                program: name,
                args,
                profile,
                mode,
                vcpus,
                memory_mib: memory,
                max_instructions,
            };
            let t = Instant::now();
            let r = match program::run(&opts) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("hvsim: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let secs = t.elapsed().as_secs_f64();
            print!("{}", program::table(&r, secs));
            if let Some(path) = json {
                let text = match serde_json::to_string_pretty(&r) {
                    Ok(t) => t,
                    Err(e) => {
                        eprintln!("hvsim: serialising the result: {e}");
                        return ExitCode::FAILURE;
                    }
                };
                if let Err(e) = std::fs::write(&path, text) {
                    eprintln!("hvsim: writing {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            }
            match r.end {
                sim_core::RunEnd::Exited { code: 0 } => ExitCode::SUCCESS,
                _ => {
                    eprintln!("hvsim: {}", r.end_reason);
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn run_demo(budget: u64) -> ExitCode {
    match scenarios::demo::run(budget) {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("hvsim: {e}");
            ExitCode::FAILURE
        }
    }
}
