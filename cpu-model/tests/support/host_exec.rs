//! Host-CPU execution harness for differential testing of instruction semantics.
//!
//! A snippet of raw x86-64 machine code is copied to the fixed address [`CODE_BASE`] and run
//! natively on the host CPU, starting from a caller-chosen register file (all 16 GPRs including
//! `rsp`, plus the arithmetic flags and DF) and a caller-chosen 64 KiB data region mapped at the
//! fixed address [`DATA_BASE`]. When execution falls through past the last byte of the snippet, the
//! harness captures all GPRs and RFLAGS and the final data region. The model under test places the
//! same bytes at the same addresses, so results can be compared one to one.
//!
//! # Layout of the fixed mappings
//!
//! * `CODE_BASE .. CODE_BASE + CODE_SIZE`: the snippet, followed immediately by a 5-byte
//!   `jmp rel32` into the harness epilogue; every other byte of the region is `0xCC` (`int3`).
//!   The region is writable only while a snippet is being copied in and is read/execute while the
//!   snippet runs.
//! * `DATA_BASE .. DATA_BASE + DATA_SIZE`: read/write data, loaded from and written back to the
//!   caller's buffer on every run.
//! * `GLUE_BASE` (private, 64 KiB above the end of the code region, with an unmapped gap in
//!   between): one read/write page holding the save, input and output areas, followed by one
//!   read/execute page holding the prologue and epilogue.
//!
//! # Contract for snippets (the caller's responsibility)
//!
//! The harness does not catch faults: a snippet that faults (`#DE`, `#UD`, `#GP`, a privileged
//! instruction, an access outside the mapped regions, a stack pointer leaving the data region, a
//! write to the code region, ...) kills the whole test process with a signal. In particular a
//! snippet must
//!
//! * reach its end, i.e. execution must eventually fall through to `CODE_BASE + code.len()`
//!   (not jump past it or `ret` out of the snippet; the harness appends the exit itself);
//! * only touch memory in the data region (or read its own code);
//! * not change segment registers, FS/GS bases, or issue system calls;
//! * not rely on the bytes of the code region beyond its own end (the harness's exit `jmp`
//!   lives there, the model will typically see zeros or nothing);
//! * not rely on vector/x87 register contents: XMM/YMM/x87 registers start with whatever the host
//!   had and are not compared. The harness restores the host's MXCSR and x87 control word and
//!   resets the x87 state after each run, so snippets may use them without harming the host.
//!
//! Asynchronous signals are blocked on the running thread for the duration of a run, because the
//! snippet's `rsp` is arbitrary and a signal frame would otherwise be pushed into the data region
//! (or onto a wild address). Synchronous fault signals stay unblocked so a faulting snippet is
//! reported by its signal name.

use std::mem::MaybeUninit;
use std::ptr;
use std::sync::atomic::{compiler_fence, AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use iced_x86::code_asm::CodeAssembler;
use iced_x86::{BlockEncoderOptions, IcedError};

/// Address at which snippets are placed and executed (page-aligned). Shared by host and model,
/// so RIP-relative and absolute code addresses mean the same thing in both.
pub const CODE_BASE: u64 = 0x0000_5a00_0000_0000;
/// Size in bytes of the code region starting at [`CODE_BASE`].
pub const CODE_SIZE: usize = 0x1_0000;
/// Address of the read/write data region (page-aligned). Shared by host and model.
pub const DATA_BASE: u64 = 0x0000_5b00_0000_0000;
/// Size in bytes of the data region starting at [`DATA_BASE`].
pub const DATA_SIZE: usize = 0x1_0000;

/// Length of the exit `jmp rel32` the harness appends after each snippet.
const EXIT_JMP_LEN: usize = 5;
/// Longest snippet [`HostRunner::run`] accepts (room is needed for the appended exit `jmp`).
pub const MAX_CODE_LEN: usize = CODE_SIZE - EXIT_JMP_LEN;

/// Carry flag (bit 0).
pub const FLAG_CF: u64 = 1 << 0;
/// Reserved bit 1 of RFLAGS, always reads as 1.
pub const FLAG_RESERVED1: u64 = 1 << 1;
/// Parity flag (bit 2).
pub const FLAG_PF: u64 = 1 << 2;
/// Auxiliary-carry flag (bit 4).
pub const FLAG_AF: u64 = 1 << 4;
/// Zero flag (bit 6).
pub const FLAG_ZF: u64 = 1 << 6;
/// Sign flag (bit 7).
pub const FLAG_SF: u64 = 1 << 7;
/// Direction flag (bit 10).
pub const FLAG_DF: u64 = 1 << 10;
/// Overflow flag (bit 11).
pub const FLAG_OF: u64 = 1 << 11;

/// The RFLAGS bits the harness passes in and reports back: CF PF AF ZF SF DF OF and the
/// always-set bit 1. Input bits outside this mask are ignored (in particular TF and AC are never
/// set and IF/IOPL are left as the host has them); output bits outside it are cleared.
pub const RFLAGS_MASK: u64 =
    FLAG_CF | FLAG_RESERVED1 | FLAG_PF | FLAG_AF | FLAG_ZF | FLAG_SF | FLAG_DF | FLAG_OF;

/// Architectural register state exchanged with the host CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RegFile {
    /// General-purpose registers in encoding order:
    /// rax rcx rdx rbx rsp rbp rsi rdi r8 r9 r10 r11 r12 r13 r14 r15.
    pub gpr: [u64; 16],
    /// RFLAGS. On input only the bits in [`RFLAGS_MASK`] are used (bit 1 is forced set); on output
    /// it is masked with [`RFLAGS_MASK`].
    pub rflags: u64,
}

/// Index of `rsp` in [`RegFile::gpr`].
const RSP: usize = 4;

const PAGE: usize = 0x1000;
/// Base of the harness's private glue mapping: data page, then code page.
const GLUE_BASE: u64 = CODE_BASE + CODE_SIZE as u64 + 0x1_0000;
const GLUE_SIZE: usize = 2 * PAGE;

// Offsets inside the glue data page (first page of the glue mapping).
const OFF_HOST_RSP: usize = 0;
const OFF_FCW: usize = 8;
const OFF_MXCSR: usize = 16;
/// Input area: 16 GPR slots in encoding order, then RFLAGS (popped in this order).
const OFF_IN: usize = 64;
/// Output area: same layout as the input area (filled by pushes from the top down).
const OFF_OUT: usize = 256;
/// Number of 8-byte slots in the input and output areas.
const SLOTS: usize = 17;

/// Set while a [`HostRunner`] exists; the fixed mappings can only exist once per process.
static RUNNER_EXISTS: AtomicBool = AtomicBool::new(false);
/// The process-wide runner used by [`with_host_runner`].
static SHARED_RUNNER: Mutex<Option<HostRunner>> = Mutex::new(None);

/// Runs `f` with the single process-wide [`HostRunner`], creating it on first use.
///
/// Calls from different threads (tests run in parallel) are serialised by a global mutex; the
/// runner is kept for the remaining lifetime of the process. A panic inside `f` (e.g. a failed
/// assertion) does not make the runner unusable for other tests.
///
/// # Panics
///
/// Panics if the fixed mappings cannot be created (see [`HostRunner::new`]). Must not be called
/// re-entrantly from inside `f` (that would deadlock or panic).
pub fn with_host_runner<R>(f: impl FnOnce(&mut HostRunner) -> R) -> R {
    let mut guard = SHARED_RUNNER.lock().unwrap_or_else(PoisonError::into_inner);
    let runner = guard.get_or_insert_with(HostRunner::new);
    f(runner)
}

/// Assembles the code produced by `f` for 64-bit mode at address [`CODE_BASE`] and returns the
/// bytes, ready for [`HostRunner::run`]. The snippet must not end in a `ret`: execution has to
/// fall through past its last byte. A label that should mark the end of the snippet must be
/// followed by an instruction (e.g. a `nop`).
///
/// # Panics
///
/// Panics if `f` or the assembler reports an error.
pub fn assemble(f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> Vec<u8> {
    let mut a = CodeAssembler::new(64).expect("64 is a valid bitness");
    f(&mut a).expect("building the snippet failed");
    a.assemble(CODE_BASE)
        .expect("assembling the snippet failed")
}

/// Owner of the fixed code, data and glue mappings; runs snippets on the host CPU.
///
/// Only one may exist per process at a time; prefer [`with_host_runner`], which shares one
/// runner safely between test threads.
pub struct HostRunner {
    /// Start of the code region (`CODE_BASE`).
    code: *mut u8,
    /// Start of the data region (`DATA_BASE`).
    data: *mut u8,
    /// Start of the glue mapping (`GLUE_BASE`): data page then code page.
    glue: *mut u8,
    /// Address of the prologue (entry point called from Rust).
    entry: *const u8,
    /// Address of the epilogue (target of the exit `jmp` appended to each snippet).
    exit: u64,
    /// Number of leading bytes of the code region that may differ from the `0xCC` filler.
    code_dirty: usize,
}

// SAFETY: the raw pointers refer to process-wide mappings owned exclusively by this value (only
// one `HostRunner` exists at a time, enforced by `RUNNER_EXISTS`); nothing in it is tied to the
// thread that created it, and all access goes through `&mut self`.
unsafe impl Send for HostRunner {}

impl Default for HostRunner {
    fn default() -> Self {
        Self::new()
    }
}

impl HostRunner {
    /// Maps the code region at [`CODE_BASE`], the data region at [`DATA_BASE`] and the harness
    /// glue with `MAP_FIXED_NOREPLACE`, and generates the prologue/epilogue.
    ///
    /// # Panics
    ///
    /// Panics if another `HostRunner` currently exists in this process (including the shared
    /// one behind [`with_host_runner`]), or if a fixed address is already in use or cannot be
    /// mapped.
    pub fn new() -> Self {
        assert!(
            !RUNNER_EXISTS.swap(true, Ordering::SeqCst),
            "only one HostRunner may exist per process; use with_host_runner"
        );
        let code = map_fixed(CODE_BASE, CODE_SIZE);
        let data = map_fixed(DATA_BASE, DATA_SIZE);
        let glue = map_fixed(GLUE_BASE, GLUE_SIZE);

        let (glue_bytes, entry_off, exit_off) = build_glue();
        assert!(glue_bytes.len() <= GLUE_SIZE, "glue code does not fit");

        // SAFETY: `code` is a fresh RW mapping of CODE_SIZE bytes; `glue` is a fresh RW mapping
        // of GLUE_SIZE bytes and `glue_bytes` fits (checked above); the source is a Vec that does
        // not overlap either mapping.
        unsafe {
            ptr::write_bytes(code, 0xCC, CODE_SIZE);
            ptr::copy_nonoverlapping(glue_bytes.as_ptr(), glue, glue_bytes.len());
        }
        // SAFETY: `glue + PAGE` is page-aligned and inside the glue mapping, which has GLUE_SIZE
        // = 2 pages.
        let glue_code = unsafe { glue.add(PAGE) };
        protect(glue_code, PAGE, libc::PROT_READ | libc::PROT_EXEC);

        // SAFETY: `entry_off` is an offset inside the glue code page (checked by build_glue).
        let entry = unsafe { glue.add(entry_off) }.cast_const();
        HostRunner {
            code,
            data,
            glue,
            entry,
            exit: GLUE_BASE + exit_off as u64,
            code_dirty: 0,
        }
    }

    /// Runs `code` on the host CPU and returns the final register state.
    ///
    /// `code` is raw x86-64 machine code assembled for address [`CODE_BASE`] (see [`assemble`])
    /// and must not contain a final `ret`: it is placed at exactly `CODE_BASE`, and the run ends
    /// when execution falls through to `CODE_BASE + code.len()`. All 16 GPRs (including `rsp`)
    /// and RFLAGS (bits in [`RFLAGS_MASK`]; bit 1 forced set) are loaded from `input`, and the
    /// data region is loaded from `data`. On return, `data` holds the final data region and the
    /// result holds all 16 GPRs and RFLAGS masked with [`RFLAGS_MASK`].
    ///
    /// The snippet must not fault; see the module documentation for the full contract.
    ///
    /// # Panics
    ///
    /// Panics if `code.len() > MAX_CODE_LEN` or `data.len() != DATA_SIZE`, or if changing the
    /// code region's protection fails.
    pub fn run(&mut self, code: &[u8], input: &RegFile, data: &mut [u8]) -> RegFile {
        assert!(
            code.len() <= MAX_CODE_LEN,
            "snippet of {} bytes exceeds MAX_CODE_LEN ({MAX_CODE_LEN})",
            code.len()
        );
        assert_eq!(data.len(), DATA_SIZE, "data buffer must be DATA_SIZE bytes");

        self.load_code(code);

        // SAFETY: the data region is a RW mapping of DATA_SIZE bytes owned by `self`, `data` has
        // exactly DATA_SIZE bytes; `ptr::copy` tolerates overlap.
        unsafe { ptr::copy(data.as_ptr(), self.data, DATA_SIZE) };

        let mut slots = [0u64; SLOTS];
        slots[..16].copy_from_slice(&input.gpr);
        slots[16] = (input.rflags & RFLAGS_MASK) | FLAG_RESERVED1;
        // SAFETY: the input area lies inside the RW glue data page (OFF_IN + SLOTS * 8 <= PAGE)
        // and is 8-byte aligned; `slots` is a local array.
        unsafe {
            ptr::copy_nonoverlapping(slots.as_ptr(), self.glue.add(OFF_IN).cast::<u64>(), SLOTS);
        }

        let saved_mask = block_async_signals();
        compiler_fence(Ordering::SeqCst);
        // SAFETY: `entry` points at the prologue generated by `build_glue` in the RX glue page.
        // It follows the sysv64 ABI for a `fn()`: it preserves rbx, rbp, r12-r15 and rsp, returns
        // with DF clear, an empty x87 stack and the caller's MXCSR and x87 control word. The
        // memory it writes (glue data page, data region) is accessed from Rust only through raw
        // pointers after the call. The snippet itself must not fault (caller's contract); it
        // runs on its own stack pointer with asynchronous signals blocked.
        unsafe {
            let entry: unsafe extern "sysv64" fn() =
                std::mem::transmute::<*const u8, unsafe extern "sysv64" fn()>(self.entry);
            entry();
        }
        compiler_fence(Ordering::SeqCst);
        restore_signal_mask(&saved_mask);

        let mut out = [0u64; SLOTS];
        // SAFETY: the output area lies inside the RW glue data page (OFF_OUT + SLOTS * 8 <= PAGE)
        // and is 8-byte aligned; `out` is a local array.
        unsafe {
            ptr::copy_nonoverlapping(
                self.glue.add(OFF_OUT).cast::<u64>().cast_const(),
                out.as_mut_ptr(),
                SLOTS,
            );
        }
        // SAFETY: as for the copy-in above, in the other direction.
        unsafe { ptr::copy(self.data.cast_const(), data.as_mut_ptr(), DATA_SIZE) };

        let mut result = RegFile::default();
        result.gpr.copy_from_slice(&out[..16]);
        result.rflags = out[16] & RFLAGS_MASK;
        result
    }

    /// Copies `code` to `CODE_BASE`, appends the exit `jmp` and re-fills stale bytes of earlier
    /// snippets with `int3`, leaving the region read/execute.
    fn load_code(&mut self, code: &[u8]) {
        protect(self.code, CODE_SIZE, libc::PROT_READ | libc::PROT_WRITE);
        let end = code.len() + EXIT_JMP_LEN;
        let jmp_from = CODE_BASE + end as u64;
        let rel = i32::try_from(self.exit.wrapping_sub(jmp_from) as i64)
            .expect("epilogue is within rel32 reach of the code region");
        let mut jmp = [0u8; EXIT_JMP_LEN];
        jmp[0] = 0xE9;
        jmp[1..].copy_from_slice(&rel.to_le_bytes());
        // SAFETY: the code region is a RW mapping (just made so) of CODE_SIZE bytes and
        // `end <= CODE_SIZE` because `code.len() <= MAX_CODE_LEN`; the stale range
        // `end..code_dirty` is inside the region since `code_dirty <= CODE_SIZE`.
        unsafe {
            ptr::copy_nonoverlapping(code.as_ptr(), self.code, code.len());
            ptr::copy_nonoverlapping(jmp.as_ptr(), self.code.add(code.len()), EXIT_JMP_LEN);
            if self.code_dirty > end {
                ptr::write_bytes(self.code.add(end), 0xCC, self.code_dirty - end);
            }
        }
        self.code_dirty = end;
        protect(self.code, CODE_SIZE, libc::PROT_READ | libc::PROT_EXEC);
    }
}

impl Drop for HostRunner {
    fn drop(&mut self) {
        for (p, len) in [
            (self.code, CODE_SIZE),
            (self.data, DATA_SIZE),
            (self.glue, GLUE_SIZE),
        ] {
            // SAFETY: each pointer/length pair is a mapping created by `map_fixed` and owned by
            // `self`; nothing refers to it after the runner is gone.
            unsafe { libc::munmap(p.cast(), len) };
        }
        RUNNER_EXISTS.store(false, Ordering::SeqCst);
    }
}

/// Maps `len` bytes of anonymous private RW memory at exactly `addr`, refusing to replace any
/// existing mapping.
fn map_fixed(addr: u64, len: usize) -> *mut u8 {
    // SAFETY: an anonymous mapping with MAP_FIXED_NOREPLACE never replaces existing memory; the
    // result is checked below.
    let p = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    assert!(
        p != libc::MAP_FAILED,
        "mmap of {len:#x} bytes at {addr:#x} failed: {}",
        std::io::Error::last_os_error()
    );
    if p as u64 != addr {
        // Kernels before 4.17 treat MAP_FIXED_NOREPLACE as a mere hint.
        // SAFETY: `p` is the mapping just created above, of `len` bytes.
        unsafe { libc::munmap(p, len) };
        panic!("mmap at {addr:#x} returned a different address {p:p}");
    }
    p.cast()
}

/// Changes the protection of `len` bytes at the page-aligned `p`, which lie in one of our
/// mappings.
fn protect(p: *mut u8, len: usize, prot: libc::c_int) {
    // SAFETY: callers pass page-aligned ranges inside mappings owned by the runner; no Rust
    // reference points into them while the protection changes.
    let rc = unsafe { libc::mprotect(p.cast(), len, prot) };
    assert_eq!(
        rc,
        0,
        "mprotect failed: {}",
        std::io::Error::last_os_error()
    );
}

/// Blocks every signal except the synchronous fault signals on this thread; returns the previous
/// mask.
fn block_async_signals() -> libc::sigset_t {
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    let mut old = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: `sigfillset` initialises `set` completely; `sigdelset` only modifies it;
    // `pthread_sigmask` reads `set` and initialises `old` on success (checked).
    unsafe {
        libc::sigfillset(set.as_mut_ptr());
        for sig in [
            libc::SIGSEGV,
            libc::SIGBUS,
            libc::SIGILL,
            libc::SIGFPE,
            libc::SIGTRAP,
        ] {
            libc::sigdelset(set.as_mut_ptr(), sig);
        }
        let rc = libc::pthread_sigmask(libc::SIG_SETMASK, set.as_ptr(), old.as_mut_ptr());
        assert_eq!(rc, 0, "pthread_sigmask failed");
        old.assume_init()
    }
}

/// Restores a signal mask returned by [`block_async_signals`].
fn restore_signal_mask(mask: &libc::sigset_t) {
    // SAFETY: `mask` is a valid signal set obtained from `pthread_sigmask`.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, mask, ptr::null_mut()) };
    assert_eq!(rc, 0, "pthread_sigmask failed");
}

/// Generates the glue mapping's contents: the data page (save, input and output areas) followed
/// by the prologue and epilogue. Returns the bytes and the offsets of prologue and epilogue
/// from `GLUE_BASE`.
fn build_glue() -> (Vec<u8>, usize, usize) {
    let (bytes, entry, exit) = assemble_glue().expect("assembling the harness glue failed");
    let entry_off = usize::try_from(entry - GLUE_BASE).expect("offset fits usize");
    let exit_off = usize::try_from(exit - GLUE_BASE).expect("offset fits usize");
    assert_eq!(entry_off, PAGE, "prologue must start the glue code page");
    assert!(exit_off > entry_off && exit_off < GLUE_SIZE);
    (bytes, entry_off, exit_off)
}

fn assemble_glue() -> Result<(Vec<u8>, u64, u64), IcedError> {
    use iced_x86::code_asm::{
        dword_ptr, ptr, qword_ptr, r10, r11, r12, r13, r14, r15, r8, r9, rax, rbp, rbx, rcx, rdi,
        rdx, rsi, rsp, word_ptr,
    };

    let mut a = CodeAssembler::new(64)?;
    let mut host_rsp = a.create_label();
    let mut fcw = a.create_label();
    let mut mxcsr = a.create_label();
    let mut in_area = a.create_label();
    let mut in_rsp = a.create_label();
    let mut out_area = a.create_label();
    let mut out_rsp = a.create_label();
    let mut out_end = a.create_label();
    let mut entry = a.create_label();
    let mut exit = a.create_label();

    // ---- Data page (RW at run time). Offsets must match the OFF_* constants; checked below.
    a.set_label(&mut host_rsp)?;
    a.dq(&[0])?; // OFF_HOST_RSP
    a.set_label(&mut fcw)?;
    a.dq(&[0])?; // OFF_FCW
    a.set_label(&mut mxcsr)?;
    a.dq(&[0])?; // OFF_MXCSR
    a.db(&[0; OFF_IN - 24])?;
    a.set_label(&mut in_area)?;
    a.dq(&[0; RSP])?;
    a.set_label(&mut in_rsp)?;
    a.dq(&[0; SLOTS - RSP])?;
    a.db(&[0; OFF_OUT - OFF_IN - SLOTS * 8])?;
    a.set_label(&mut out_area)?;
    a.dq(&[0; RSP])?;
    a.set_label(&mut out_rsp)?;
    a.dq(&[0; SLOTS - RSP])?;
    a.set_label(&mut out_end)?;
    a.db(&[0; PAGE - OFF_OUT - SLOTS * 8])?;

    // ---- Prologue: `extern "sysv64" fn()` entry point.
    a.set_label(&mut entry)?;
    for r in [rbx, rbp, r12, r13, r14, r15] {
        a.push(r)?;
    }
    a.mov(qword_ptr(host_rsp), rsp)?;
    a.fnstcw(word_ptr(fcw))?;
    a.stmxcsr(dword_ptr(mxcsr))?;
    // Load the GPRs by popping the input area (rsp slot skipped), then RFLAGS, then the test rsp
    // with a flag-neutral `mov`, and enter the snippet.
    a.lea(rsp, ptr(in_area))?;
    for r in [rax, rcx, rdx, rbx] {
        a.pop(r)?;
    }
    a.lea(rsp, ptr(rsp + 8))?;
    for r in [rbp, rsi, rdi, r8, r9, r10, r11, r12, r13, r14, r15] {
        a.pop(r)?;
    }
    a.popfq()?;
    a.mov(rsp, qword_ptr(in_rsp))?;
    a.jmp(CODE_BASE)?;

    // ---- Epilogue: reached by the `jmp` appended after the snippet. Nothing before the last
    // push alters a GPR other than rsp (saved first) or any flag.
    a.set_label(&mut exit)?;
    a.mov(qword_ptr(out_rsp), rsp)?;
    a.lea(rsp, ptr(out_end))?;
    a.pushfq()?;
    for r in [r15, r14, r13, r12, r11, r10, r9, r8, rdi, rsi, rbp] {
        a.push(r)?;
    }
    a.lea(rsp, ptr(rsp - 8))?;
    for r in [rbx, rdx, rcx, rax] {
        a.push(r)?;
    }
    // Restore what the Rust ABI requires: DF clear, empty x87 stack, saved control words, the
    // host stack and the callee-saved registers.
    a.cld()?;
    a.fninit()?;
    a.fldcw(word_ptr(fcw))?;
    a.ldmxcsr(dword_ptr(mxcsr))?;
    a.mov(rsp, qword_ptr(host_rsp))?;
    for r in [r15, r14, r13, r12, rbp, rbx] {
        a.pop(r)?;
    }
    a.ret()?;

    let result = a.assemble_options(
        GLUE_BASE,
        BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS,
    )?;
    for (label, off) in [
        (&host_rsp, OFF_HOST_RSP),
        (&fcw, OFF_FCW),
        (&mxcsr, OFF_MXCSR),
        (&in_area, OFF_IN),
        (&in_rsp, OFF_IN + RSP * 8),
        (&out_area, OFF_OUT),
        (&out_rsp, OFF_OUT + RSP * 8),
        (&out_end, OFF_OUT + SLOTS * 8),
    ] {
        assert_eq!(
            result.label_ip(label)?,
            GLUE_BASE + off as u64,
            "glue data layout mismatch"
        );
    }
    let entry_ip = result.label_ip(&entry)?;
    let exit_ip = result.label_ip(&exit)?;
    Ok((result.inner.code_buffer, entry_ip, exit_ip))
}
