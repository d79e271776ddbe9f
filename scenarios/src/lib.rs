//! Scenario files (strict TOML schema), sweep expansion, the parallel runner and shards,
//! expectations, and the guest software build; home of the `hvsim` command-line tool.

pub mod demo;
pub mod expect;
pub mod guest;
pub mod modes;
pub mod params;
pub mod program;
pub mod results;
pub mod runner;
pub mod schema;
pub mod slurm;
pub mod suggest;
pub mod topology;

/// The built-in default scenario (`hvsim run` without a file).
pub const DEFAULT_SCENARIO: &str = include_str!("../default.toml");
