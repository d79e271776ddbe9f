//! A user's own static, freestanding x86-64 ELF as the workload: built here with the
//! system gcc, passed to `run-program` by path, booted as the kernel's boot module.
#![allow(clippy::unwrap_used)]

mod support;

use support::compile_user_elf;

use scenarios::program::{run, ProgramError, ProgramRun};
use sim_core::loader::BootModule;
use sim_core::{Machine, MachineConfig, MachineProfile, RunEnd, RunResult};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Writes "custom", its argv one per line, and exits with status 3, through raw syscalls.
const SOURCE: &str = r#"
typedef unsigned long u64;

static long sys3(long nr, long a, long b, long c)
{
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "a"(nr), "D"(a), "S"(b), "d"(c)
                     : "rcx", "r11", "memory");
    return r;
}

static u64 len(const char *s)
{
    u64 n = 0;
    while (s[n])
        n++;
    return n;
}

static void put(const char *s) { sys3(1, 1, (long)s, (long)len(s)); }

__attribute__((used)) void cmain(long *sp)
{
    long argc = sp[0];
    char **argv = (char **)(sp + 1);
    sys3(1, 1, (long)"custom\n", 7);
    for (long i = 0; i < argc; i++) {
        put("arg: ");
        put(argv[i]);
        put("\n");
    }
    sys3(60, 3, 0, 0);
    for (;;)
        ;
}

__asm__(".globl _start\n"
        "_start:\n"
        "    mov %rsp, %rdi\n"
        "    call cmain\n"
        "    hlt\n");
"#;

fn work_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("user-elf-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The test program, compiled once per test binary.
fn custom_elf() -> &'static Path {
    static ELF: OnceLock<PathBuf> = OnceLock::new();
    ELF.get_or_init(|| compile_user_elf(&work_dir(), "custom", SOURCE))
}

/// A file in the work directory holding `bytes`.
fn file_with(name: &str, bytes: &[u8]) -> PathBuf {
    let p = work_dir().join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn opts(program: &str, args: &[&str]) -> ProgramRun {
    ProgramRun {
        program: program.into(),
        args: args.iter().map(|s| s.to_string()).collect(),
        profile: "nehalem-x5570".into(),
        mode: "native".into(),
        vcpus: 1,
        memory_mib: 64,
        max_instructions: 50_000_000,
    }
}

fn refused(path: &Path) -> String {
    let p = path.to_str().unwrap();
    let e = run(&opts(p, &[])).expect_err("must be refused before boot");
    let msg = e.to_string();
    assert!(!msg.contains('\n'), "one line: {msg}");
    assert!(msg.contains(p), "names the file: {msg}");
    msg
}

/// Boots the built-in kernel with `module` as the boot module, bypassing the host check.
fn boot_module(bytes: Vec<u8>) -> RunResult {
    let mut cfg = MachineConfig::new(MachineProfile::load("nehalem-x5570").unwrap(), "bad x");
    cfg.mem_bytes = 64 << 20;
    cfg.max_instructions = 50_000_000;
    cfg.module = Some(BootModule {
        name: "bad".into(),
        bytes,
    });
    Machine::new(
        cfg,
        scenarios::guest::kernel_elf(),
        "built-in testbed kernel",
    )
    .unwrap()
    .run()
}

#[test]
fn custom_elf_runs_as_the_first_process_with_its_arguments() {
    let elf = custom_elf();
    let r = run(&opts(elf.to_str().unwrap(), &["alpha", "beta"])).unwrap();
    assert_eq!(
        r.end,
        RunEnd::Exited { code: 3 },
        "{}\n{}",
        r.end_reason,
        r.console
    );
    let lines: Vec<&str> = r.console.lines().collect();
    assert!(lines.contains(&"custom"), "{}", r.console);
    // argv[0] is the file name, then the arguments.
    for want in ["arg: custom", "arg: alpha", "arg: beta"] {
        assert!(lines.contains(&want), "{want:?} missing:\n{}", r.console);
    }
    assert!(r.console.contains("hvsim: workload exited with status 3"));
    assert!(r.user_instructions > 0);
    // The configuration records the module's name and size, not its bytes.
    let json = serde_json::to_value(&r.config).unwrap();
    let size = std::fs::metadata(elf).unwrap().len();
    assert_eq!(json["module"]["size"], size);
    assert_eq!(json["module"]["name"], elf.to_str().unwrap());
    assert_eq!(json["cmdline"], "custom alpha beta");
}

#[test]
fn truncated_elf_is_refused_before_boot() {
    let bytes = std::fs::read(custom_elf()).unwrap();
    for (name, cut) in [
        ("trunc-half", bytes.len() / 2),
        ("trunc-header", 40),
        ("trunc-phdrs", 100),
    ] {
        let p = file_with(name, &bytes[..cut]);
        let msg = refused(&p);
        assert!(msg.contains("truncated"), "{msg}");
    }
}

#[test]
fn non_elf_and_foreign_elf_files_are_refused_before_boot() {
    let p = file_with("not-elf.txt", b"#!/bin/sh\necho hi\n");
    let msg = refused(&p);
    assert!(msg.contains("not an ELF file"), "{msg}");

    let mut bytes = std::fs::read(custom_elf()).unwrap();
    bytes[18..20].copy_from_slice(&183u16.to_le_bytes()); // EM_AARCH64
    let msg = refused(&file_with("aarch64", &bytes));
    assert!(msg.contains("not an x86-64"), "{msg}");

    let mut bytes = std::fs::read(custom_elf()).unwrap();
    bytes[16..18].copy_from_slice(&3u16.to_le_bytes()); // ET_DYN
    let msg = refused(&file_with("pie", &bytes));
    assert!(msg.contains("ET_EXEC"), "{msg}");

    let dir = work_dir().join("a-directory");
    std::fs::create_dir_all(&dir).unwrap();
    let e = run(&opts(dir.to_str().unwrap(), &[])).unwrap_err();
    assert!(matches!(e, ProgramError::ReadProgram { .. }), "{e}");
    assert!(e.to_string().contains(dir.to_str().unwrap()), "{e}");
}

#[test]
fn a_missing_path_is_an_unknown_program() {
    let p = work_dir().join("no-such-program");
    let e = run(&opts(p.to_str().unwrap(), &[])).unwrap_err();
    assert!(matches!(e, ProgramError::UnknownProgram { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("unknown program"), "{msg}");
    assert!(
        msg.contains("null_syscall") && msg.contains("hello"),
        "{msg}"
    );
}

#[test]
fn the_kernel_refuses_a_malformed_module_with_status_127() {
    let good = std::fs::read(custom_elf()).unwrap();
    let mut foreign = good.clone();
    foreign[18..20].copy_from_slice(&183u16.to_le_bytes());
    let mut class32 = good.clone();
    class32[4] = 1;
    let mut dynamic = good.clone();
    dynamic[16..18].copy_from_slice(&3u16.to_le_bytes());
    // Move the first PT_LOAD segment's vaddr into kernel space.
    let mut kernel_space = good.clone();
    let phoff = u64::from_le_bytes(good[32..40].try_into().unwrap()) as usize;
    let load = (0..usize::from(u16::from_le_bytes([good[56], good[57]])))
        .map(|i| phoff + 56 * i)
        .find(|&ph| good[ph..ph + 4] == 1u32.to_le_bytes())
        .unwrap();
    kernel_space[load + 16..load + 24].copy_from_slice(&0xffff_8000_0000_0000u64.to_le_bytes());
    for (bytes, why) in [
        (good[..30].to_vec(), "truncated"),
        (b"hello, not an ELF".to_vec(), "not an ELF file"),
        (class32, "not an ELF64 file"),
        (foreign, "not an x86-64 executable"),
        (dynamic, "need ET_EXEC"),
        (kernel_space, "outside user space"),
    ] {
        let r = boot_module(bytes);
        assert_eq!(
            r.end,
            RunEnd::Exited { code: 127 },
            "{why}: {}\n{}",
            r.end_reason,
            r.console
        );
        assert!(r.guest_panic.is_none(), "{}", r.console);
        let line = r
            .console
            .lines()
            .find(|l| l.starts_with("hvsim-kernel: module: "))
            .unwrap_or_else(|| panic!("no module line:\n{}", r.console));
        assert!(line.contains(why), "{why}: {line}");
    }
}
