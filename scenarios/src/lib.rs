//! Scenario files (strict TOML schema), sweep expansion, the parallel runner and shards,
//! expectations, and the guest software build; home of the `hvsim` command-line tool.

pub mod demo;
pub mod guest;
pub mod program;
