//! The `hvsim` command-line tool.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let budget = match cli.command {
        Some(Command::Run { max_instructions }) => max_instructions,
        None => 50_000_000,
    };
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
