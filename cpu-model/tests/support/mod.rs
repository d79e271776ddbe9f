//! Shared helpers for the `cpu-model` integration tests.
//!
//! Each test file that needs them declares `mod support;`. Not every test uses every helper, so
//! dead-code warnings are silenced for this module tree.
#![allow(dead_code)]

pub mod host_exec;
pub mod vmx_flat;
