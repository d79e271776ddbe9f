//! Helpers shared by the whole-system test files: boot the testbed kernel in a mode, run a
//! workload to a clean exit, and read counts out of the result.
#![allow(dead_code, clippy::unwrap_used)]

use scenarios::program::{run, ProgramRun};
use sim_core::machine::VcpuResult;
use sim_core::{RunEnd, RunResult};

/// What runs `program` with `args` in `mode` on the Nehalem profile: one vCPU, `memory_mib`
/// of memory, at most `max_instructions`.
pub fn program(
    mode: &str,
    program: &str,
    args: &[&str],
    memory_mib: u64,
    max_instructions: u64,
) -> ProgramRun {
    ProgramRun {
        program: program.into(),
        args: args.iter().map(|s| s.to_string()).collect(),
        profile: "nehalem-x5570".into(),
        mode: mode.into(),
        vcpus: 1,
        memory_mib,
        max_instructions,
    }
}

/// Runs `program` with `args` in `mode` on the Nehalem profile (128 MiB) and asserts the
/// guest exited with status 0.
pub fn go(mode: &str, program_name: &str, args: &[&str], vcpus: u32) -> RunResult {
    let r = run(&ProgramRun {
        vcpus,
        ..program(mode, program_name, args, 128, 400_000_000)
    })
    .unwrap();
    assert_eq!(
        r.end,
        RunEnd::Exited { code: 0 },
        "{mode} {program_name}: {}\n{}",
        r.end_reason,
        r.console
    );
    r
}

/// A per-vCPU count summed over the vCPUs.
pub fn total(r: &RunResult, f: impl Fn(&VcpuResult) -> u64) -> u64 {
    r.per_vcpu.iter().map(f).sum()
}

/// VM exits of every reason.
pub fn exits(r: &RunResult) -> u64 {
    r.vm_exits.values().map(|e| e.count).sum()
}

/// Exits of one basic reason (names start with the two-digit SDM number).
pub fn exits_of(r: &RunResult, reason: u16) -> u64 {
    let prefix = format!("{reason:02}_");
    r.vm_exits
        .iter()
        .filter(|(k, _)| k.starts_with(&prefix))
        .map(|(_, e)| e.count)
        .sum()
}

/// Exits other than the console's port I/O (whose count follows the printed text).
pub fn non_io_exits(r: &RunResult) -> u64 {
    exits(r) - exits_of(r, 30)
}

/// Compiles the freestanding C `source` into a static x86-64 ELF named `name` under
/// `dir` with the system gcc (or `HVSIM_GUEST_CC`), as a user would build their own
/// program for `hvsim run-program`; returns its path.
pub fn compile_user_elf(dir: &std::path::Path, name: &str, source: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let src = dir.join(format!("{name}.c"));
    let out = dir.join(name);
    std::fs::write(&src, source).unwrap();
    let cc = std::env::var("HVSIM_GUEST_CC").unwrap_or_else(|_| "gcc".into());
    let o = std::process::Command::new(&cc)
        .args([
            "-static",
            "-nostdlib",
            "-ffreestanding",
            "-fno-pic",
            "-no-pie",
            "-fno-stack-protector",
            "-mgeneral-regs-only",
            "-O2",
            "-Wl,--build-id=none",
            "-Wl,-Ttext-segment=0x400000",
            "-o",
        ])
        .arg(&out)
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cc}: {e}"));
    assert!(
        o.status.success(),
        "{cc} failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}
