//! The built-in component demonstration run by `hvsim run` until the full machine and
//! scenario runner exist: it executes real x86-64 code on the CPU model and real page
//! walks on the MMU model and prints what they did. Every number is a count produced by
//! executing the models; nothing is assumed.

use cpu_model::{BarePlatform, Cpu, CpuState, FlatMemory, StepOutcome};
use iced_x86::code_asm::*;
use mmu::addr::{Access, Gva, PageSize};
use mmu::builder::{TableBuilder, TableFormat};
use mmu::config::{ArrayGeometry, EptCacheConfig, PscConfig};
use mmu::ept_entry::Eptp;
use mmu::mem::SparseMemory;
use mmu::pte::{Cr3, PagingMode, PTE_RW};
use mmu::refs::{Dimension, RefKind, RefList};
use mmu::walk_2d::{EptContext, TwoDWalker};
use mmu::walk_native::{NativeWalker, WalkContext};
use std::fmt::Write as _;
use std::time::Instant;

/// Failure of the demonstration (a model reported something unexpected).
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Assembling a demo program failed.
    #[error("assembling the demo program: {0}")]
    Asm(#[from] iced_x86::IcedError),
    /// The CPU model stopped for an unexpected reason.
    #[error("the CPU model stopped: {0}")]
    Cpu(String),
    /// Building or walking page tables failed.
    #[error("the MMU model: {0}")]
    Mmu(String),
}

const CODE: u64 = 0x40_0000;
const DATA: u64 = 0x100_0000;
const DATA_SIZE: usize = 1 << 20;

fn program(
    f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
) -> Result<Vec<u8>, IcedError> {
    let mut a = CodeAssembler::new(64)?;
    f(&mut a)?;
    a.assemble(CODE)
}

/// A sieve of Eratosthenes over 64 KiB followed by a checksum, repeated: loads, stores,
/// compares, branches and shifts as compiled code produces them.
fn sieve() -> Result<Vec<u8>, IcedError> {
    program(|a| {
        let mut outer = a.create_label();
        let mut clear = a.create_label();
        let mut next_i = a.create_label();
        let mut mark = a.create_label();
        let mut sum = a.create_label();
        let mut done = a.create_label();
        a.set_label(&mut outer)?;
        // clear the array: rep stosb
        a.mov(rdi, DATA)?;
        a.mov(ecx, 0x1_0000)?;
        a.xor(eax, eax)?;
        a.set_label(&mut clear)?;
        a.rep().stosb()?;
        a.mov(ebx, 2)?;
        a.set_label(&mut next_i)?;
        a.mov(rax, rbx)?;
        a.imul_2(rax, rbx)?;
        a.cmp(rax, 0x1_0000)?;
        a.jae(sum)?;
        a.cmp(byte_ptr(rbx + DATA as i32), 0)?;
        a.jne(done)?;
        a.set_label(&mut mark)?;
        a.mov(byte_ptr(rax + DATA as i32), 1)?;
        a.add(rax, rbx)?;
        a.cmp(rax, 0x1_0000)?;
        a.jb(mark)?;
        a.set_label(&mut done)?;
        a.inc(rbx)?;
        a.jmp(next_i)?;
        a.set_label(&mut sum)?;
        // count primes
        a.xor(edx, edx)?;
        a.mov(ecx, 2)?;
        let mut cnt = a.create_label();
        a.set_label(&mut cnt)?;
        a.movzx(eax, byte_ptr(rcx + DATA as i32))?;
        a.xor(eax, 1)?;
        a.add(rdx, rax)?;
        a.inc(rcx)?;
        a.cmp(ecx, 0x1_0000)?;
        a.jb(cnt)?;
        a.mov(r15, rdx)?;
        a.jmp(outer)
    })
}

/// Runs the CPU model on the sieve for `budget` instructions and reports.
fn cpu_part(out: &mut String, budget: u64) -> Result<(), DemoError> {
    let code = sieve()?;
    let mut mem = FlatMemory::new();
    mem.add_region(CODE, 0x1000);
    mem.add_region(DATA, DATA_SIZE);
    mem.write_bytes(CODE, &code);
    let mut st = CpuState::long_mode_flat(3);
    st.rip = CODE;
    let mut cpu = Cpu::new(st);
    let t = Instant::now();
    let r = cpu.run(&mut mem, &mut BarePlatform, budget);
    let secs = t.elapsed().as_secs_f64();
    if r.outcome != StepOutcome::Retired {
        return Err(DemoError::Cpu(format!(
            "{:?} at {:#x}",
            r.outcome, cpu.state.rip
        )));
    }
    let s = &cpu.stats;
    let _ = writeln!(
        out,
        "## CPU model: sieve of Eratosthenes (64 KiB) in user mode\n"
    );
    let _ = writeln!(out, "| metric | value |\n|---|---|");
    let _ = writeln!(out, "| instructions retired | {} |", s.instructions);
    let _ = writeln!(
        out,
        "| at CPL 3 / CPL 0 | {} / {} |",
        s.user_instructions, s.kernel_instructions
    );
    let _ = writeln!(out, "| primes below 65536 (R15) | {} |", cpu.state.gpr[15]);
    let _ = writeln!(
        out,
        "| decoded blocks: hits / misses | {} / {} |",
        s.decode_hits, s.decode_misses
    );
    let _ = writeln!(out, "| instructions decoded | {} |", s.decoded_instructions);
    let _ = writeln!(
        out,
        "| exceptions | {} |",
        s.exceptions.values().sum::<u64>()
    );
    let _ = writeln!(
        out,
        "| simulator speed | {:.1} million instructions/s |\n",
        r.retired as f64 / secs / 1e6
    );
    Ok(())
}

fn mode() -> PagingMode {
    PagingMode {
        maxphyaddr: 46,
        nxe: true,
        wp: true,
        pcide: true,
        pge: true,
    }
}

const VA: u64 = 0x7f00_4020_3000;
const DATA_GPA: u64 = 0x4000_0000;
const HOST_OFF: u64 = 0x1_0000_0000;

fn name(s: PageSize) -> &'static str {
    match s {
        PageSize::Size4K => "4 KiB",
        PageSize::Size2M => "2 MiB",
        PageSize::Size1G => "1 GiB",
    }
}

fn mmu_err<E: std::fmt::Debug>(e: E) -> DemoError {
    DemoError::Mmu(format!("{e:?}"))
}

/// Cold walk references for one guest/EPT page-size pair, and (with walk caches and
/// the nested TLB on) the references of a walk to the neighbouring page afterwards.
fn walk_2d_counts(gsize: PageSize, esize: PageSize) -> Result<(usize, usize, usize), DemoError> {
    let mut counts = [0usize; 2];
    let mut split = (0, 0);
    for (k, caches) in [false, true].into_iter().enumerate() {
        let mut mem = SparseMemory::new();
        let mut gb = TableBuilder::new(TableFormat::X86, 0x20_0000, 0x21_0000, HOST_OFF);
        let groot = gb.alloc_table(&mut mem).map_err(mmu_err)?;
        let va = VA & !(gsize.bytes() - 1);
        gb.map(&mut mem, groot, va, DATA_GPA, gsize, PTE_RW)
            .map_err(mmu_err)?;
        if gsize == PageSize::Size4K {
            gb.map(
                &mut mem,
                groot,
                va + 0x1000,
                DATA_GPA + 0x1000,
                gsize,
                PTE_RW,
            )
            .map_err(mmu_err)?;
        }
        let mut eb = TableBuilder::new(TableFormat::Ept, 0x100_0000, 0x200_0000, 0);
        let eroot = eb.alloc_table(&mut mem).map_err(mmu_err)?;
        let mut mapped = Vec::new();
        let target = if gsize == PageSize::Size4K {
            DATA_GPA
        } else {
            DATA_GPA + (VA & (gsize.bytes() - 1))
        };
        let need = (0..16u64)
            .map(|i| 0x20_0000 + i * 0x1000)
            .chain([target, target + 0x1000]);
        for p in need {
            let base = p & !(esize.bytes() - 1);
            if !mapped.contains(&base) {
                eb.map(&mut mem, eroot, base, base + HOST_OFF, esize, 7)
                    .map_err(mmu_err)?;
                mapped.push(base);
            }
        }
        let g = |entries, ways| ArrayGeometry { entries, ways };
        let psc = if caches {
            PscConfig {
                pml4e: g(2, 2),
                pdpte: g(4, 4),
                pde: g(32, 4),
            }
        } else {
            PscConfig::OFF
        };
        let ept_caches = EptCacheConfig {
            nested_tlb: if caches { g(16, 4) } else { ArrayGeometry::OFF },
            psc,
        };
        let mut w = TwoDWalker::new(&psc, &ept_caches).map_err(mmu_err)?;
        let guest = WalkContext {
            mode: mode(),
            cr3: Cr3::new(groot, 1),
            vpid: 1,
        };
        let ept = EptContext {
            eptp: Eptp::new(eroot, false),
            maxphyaddr: 46,
            exec_only: false,
        };
        let mut refs = RefList::new();
        w.walk(&mut mem, &guest, &ept, Gva(VA), Access::READ, &mut refs)
            .map_err(mmu_err)?;
        if !caches {
            counts[0] = refs.reads();
            split = (
                refs.count(Dimension::Guest, RefKind::Read),
                refs.count(Dimension::Ept, RefKind::Read),
            );
        } else {
            refs.clear();
            w.walk(
                &mut mem,
                &guest,
                &ept,
                Gva(VA + 0x1000),
                Access::READ,
                &mut refs,
            )
            .map_err(mmu_err)?;
            counts[k] = refs.reads();
        }
    }
    let _ = split;
    Ok((counts[0], split.1, counts[1]))
}

fn native_count(size: PageSize) -> Result<usize, DemoError> {
    let mut mem = SparseMemory::new();
    let mut b = TableBuilder::new(TableFormat::X86, 0x10_0000, 0x20_0000, 0);
    let root = b.alloc_table(&mut mem).map_err(mmu_err)?;
    let va = VA & !(size.bytes() - 1);
    b.map(&mut mem, root, va, DATA_GPA, size, PTE_RW)
        .map_err(mmu_err)?;
    let ctx = WalkContext {
        mode: mode(),
        cr3: Cr3::new(root, 1),
        vpid: 1,
    };
    let mut w = NativeWalker::new(&PscConfig::OFF).map_err(mmu_err)?;
    let mut refs = RefList::new();
    w.walk(
        &mut mem,
        &ctx,
        Gva(VA),
        Access::READ,
        Dimension::Native,
        &mut refs,
    )
    .map_err(mmu_err)?;
    Ok(refs.reads())
}

fn mmu_part(out: &mut String) -> Result<(), DemoError> {
    let sizes = [PageSize::Size4K, PageSize::Size2M, PageSize::Size1G];
    let _ = writeln!(out, "## MMU model: page-walk memory references\n");
    let _ = writeln!(out, "Native 1D walk, cold (no walk caches):\n");
    let _ = writeln!(out, "| page size | references |\n|---|---|");
    for s in sizes {
        let _ = writeln!(out, "| {} | {} |", name(s), native_count(s)?);
    }
    let _ = writeln!(
        out,
        "\nTwo-dimensional (guest page table x EPT) walk: cold with every walk cache off, \
         and for the neighbouring page once paging-structure caches and the nested TLB are warm:\n"
    );
    let _ = writeln!(
        out,
        "| guest page | EPT page | cold references | of which EPT | warm, next page |\n|---|---|---|---|---|"
    );
    for gsz in sizes {
        for esz in sizes {
            let (cold, ept, warm) = walk_2d_counts(gsz, esz).map_err(|e| {
                DemoError::Mmu(format!("guest {} EPT {}: {e}", name(gsz), name(esz)))
            })?;
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                name(gsz),
                name(esz),
                cold,
                ept,
                warm
            );
        }
    }
    out.push('\n');
    Ok(())
}

/// Runs the demonstration and returns its report as Markdown.
pub fn run(cpu_budget: u64) -> Result<String, DemoError> {
    let mut out = String::from(
        "# hvsim component run\n\n\
         The machine, the guest kernel and the scenario runner are not built yet; this run \
         exercises the two finished models on real work.\n\n",
    );
    cpu_part(&mut out, cpu_budget)?;
    mmu_part(&mut out)?;
    Ok(out)
}
