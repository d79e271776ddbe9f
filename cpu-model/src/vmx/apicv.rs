//! APIC virtualization in VMX non-root operation (SDM vol. 3C, chapter 29 "APIC
//! Virtualization and Virtual Interrupts"), in its x2APIC form: the virtual-APIC page,
//! virtualized RDMSR/WRMSR of the x2APIC MSRs (TPR, EOI and self-IPI virtualization),
//! evaluation and delivery of pending virtual interrupts, and posted-interrupt processing.
//!
//! **Where the state lives.** Like VMCS regions, the virtual-APIC page and the
//! posted-interrupt descriptor are not stored in guest memory: [`VmxCpu`] keeps them,
//! named by the handles in the VMCS's `virtual_apic_page` and `posted_intr_desc` fields
//! (the physical addresses a hypervisor would write there). Two VMCSs naming the same
//! handle share the page, as they would share memory, and a page or descriptor comes into
//! existence zeroed the first time it is touched (what a hypervisor gets from a freshly
//! allocated page). RVI and SVI are the VMCS's guest interrupt-status field itself: the
//! model updates the field while the guest runs, so nothing needs saving on a VM exit.
//! While the guest runs, VTPR bits 7:4 are the guest's CR8 (MOV to/from CR8 execute
//! natively on it); the page's VTPR is brought up to date after every MOV to CR8 when
//! "virtualize x2APIC mode" or "virtual-interrupt delivery" is on (the instruction ends
//! the CPU's run so that this happens before the next instruction) and at every VM exit.
//!
//! **How a virtualized access runs.** RDMSR of an x2APIC MSR is answered by
//! [`super::VmxPlatform`] from the page. A virtualized WRMSR (or a MOV to CR8 under a TPR
//! shadow) is recorded by the adapter as an [`ApicWrite`] and the instruction retires;
//! the CPU then ends its run ([`crate::Platform::stop_after_instruction`]) and
//! [`VmxCpu::run`] applies the write — TPR, EOI or self-IPI virtualization, with a
//! trap-like VM exit or a virtual-interrupt delivery at the next instruction boundary.
//! Nothing of this runs when the controls are off: the run loop tests one flag per chunk.

use super::checks::secondary;
use super::controls::{pin, proc, proc2};
use super::exit_reason::{intr_info, ExitReason, VmExit};
use super::vmcs::Vmcs;
use super::{Entry, InterruptResult, VmxCpu, VmxMode, VmxPlatform};
use crate::cpu::{Cpu, StepOutcome};
use crate::exception::EventType;
use crate::memory::Memory;
use crate::platform::Platform;
use crate::state::CpuState;
use std::collections::HashMap;
use std::fmt;

/// Register offsets on the virtual-APIC page (the xAPIC MMIO offsets, SDM 29.1.1).
pub mod reg {
    /// Virtual task-priority register (VTPR).
    pub const VTPR: usize = 0x80;
    /// Virtual processor-priority register (VPPR).
    pub const VPPR: usize = 0xa0;
    /// Virtual end-of-interrupt register (VEOI).
    pub const VEOI: usize = 0xb0;
    /// Virtual in-service register (VISR): eight 32-bit fields at 0x100, 0x110, ... 0x170.
    pub const VISR: usize = 0x100;
    /// Virtual trigger-mode register: eight 32-bit fields at 0x180 ... 0x1f0.
    pub const VTMR: usize = 0x180;
    /// Virtual interrupt-request register (VIRR): eight 32-bit fields at 0x200 ... 0x270.
    pub const VIRR: usize = 0x200;
    /// Virtual interrupt-command register, low half (VICR_LO).
    pub const VICR_LO: usize = 0x300;
    /// Virtual interrupt-command register, high half (VICR_HI).
    pub const VICR_HI: usize = 0x310;
}

/// x2APIC MSR numbers (SDM vol. 3A, table 11-6) that APIC virtualization treats specially.
pub mod msr {
    /// First x2APIC MSR.
    pub const FIRST: u32 = 0x800;
    /// Last MSR of the range APIC virtualization covers.
    pub const LAST: u32 = 0x8ff;
    /// Local APIC ID.
    pub const APIC_ID: u32 = 0x802;
    /// Task priority (TPR).
    pub const TPR: u32 = 0x808;
    /// Processor priority (PPR).
    pub const PPR: u32 = 0x80a;
    /// End of interrupt (EOI).
    pub const EOI: u32 = 0x80b;
    /// Interrupt command (ICR, 64 bits in x2APIC mode).
    pub const ICR: u32 = 0x830;
    /// Self IPI.
    pub const SELF_IPI: u32 = 0x83f;

    /// The virtual-APIC page offset an x2APIC MSR maps to: `(msr & 0xff) << 4`.
    pub const fn page_offset(msr: u32) -> usize {
        ((msr & 0xff) as usize) << 4
    }
}

/// Size of the virtual-APIC page.
pub const PAGE_SIZE: usize = 4096;

/// RVI, the requesting virtual interrupt: bits 7:0 of the guest interrupt status.
pub const fn rvi(status: u16) -> u8 {
    status as u8
}

/// SVI, the servicing virtual interrupt: bits 15:8 of the guest interrupt status.
pub const fn svi(status: u16) -> u8 {
    (status >> 8) as u8
}

/// A guest interrupt-status value from RVI and SVI.
pub const fn interrupt_status(rvi: u8, svi: u8) -> u16 {
    rvi as u16 | (svi as u16) << 8
}

/// One 4 KiB virtual-APIC page: the registers a guest's APIC accesses see in VMX non-root
/// operation, at their xAPIC offsets ([`reg`]).
#[derive(Clone, PartialEq, Eq)]
pub struct VirtualApicPage {
    bytes: Box<[u8; PAGE_SIZE]>,
}

impl Default for VirtualApicPage {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for VirtualApicPage {
    /// The priority registers and the highest VIRR/VISR bits (not 4 KiB of bytes).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VirtualApicPage")
            .field("vtpr", &self.vtpr())
            .field("vppr", &self.vppr())
            .field("highest_virr", &self.highest_virr())
            .field("highest_visr", &self.highest_visr())
            .finish()
    }
}

impl VirtualApicPage {
    /// A zeroed page.
    pub fn new() -> Self {
        VirtualApicPage {
            bytes: Box::new([0; PAGE_SIZE]),
        }
    }

    /// The raw page.
    pub fn bytes(&self) -> &[u8; PAGE_SIZE] {
        &self.bytes
    }

    /// The raw page, for direct edits by the hypervisor model.
    pub fn bytes_mut(&mut self) -> &mut [u8; PAGE_SIZE] {
        &mut self.bytes
    }

    /// The 32-bit register at `offset` (bits 1:0 of the offset are ignored and it wraps
    /// within the page, so no offset can reach outside it).
    pub fn read(&self, offset: usize) -> u32 {
        let o = offset & 0xffc;
        let b = &self.bytes;
        u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
    }

    /// Writes the 32-bit register at `offset` (aligned and wrapped as in [`Self::read`]).
    pub fn write(&mut self, offset: usize, value: u32) {
        let o = offset & 0xffc;
        self.bytes[o..o + 4].copy_from_slice(&value.to_le_bytes());
    }

    /// The 8 bytes at `offset` (bits 2:0 ignored): what a virtualized RDMSR loads into
    /// EDX:EAX. For every register but the ICR the high half is the reserved word after it.
    pub fn read_u64(&self, offset: usize) -> u64 {
        let o = offset & 0xff8;
        self.read(o) as u64 | (self.read(o + 4) as u64) << 32
    }

    /// VTPR (offset 0x80).
    pub fn vtpr(&self) -> u32 {
        self.read(reg::VTPR)
    }

    /// Writes VTPR.
    pub fn set_vtpr(&mut self, value: u32) {
        self.write(reg::VTPR, value)
    }

    /// VPPR (offset 0xa0).
    pub fn vppr(&self) -> u32 {
        self.read(reg::VPPR)
    }

    /// Offset and bit mask of `vector` in a 256-bit register at `base` (SDM 29.1.1: bit x
    /// is bit x & 0x1f of the field at base | (x & 0xe0) >> 1).
    fn bit(base: usize, vector: u8) -> (usize, u32) {
        (base | ((vector & 0xe0) >> 1) as usize, 1 << (vector & 0x1f))
    }

    fn get_bit(&self, base: usize, vector: u8) -> bool {
        let (o, m) = Self::bit(base, vector);
        self.read(o) & m != 0
    }

    fn put_bit(&mut self, base: usize, vector: u8, on: bool) {
        let (o, m) = Self::bit(base, vector);
        let v = self.read(o);
        self.write(o, if on { v | m } else { v & !m });
    }

    fn highest(&self, base: usize) -> Option<u8> {
        (0..8).rev().find_map(|k| {
            let w = self.read(base + k * 0x10);
            (w != 0).then(|| (k as u32 * 32 + 31 - w.leading_zeros()) as u8)
        })
    }

    /// Whether VIRR bit `vector` is set.
    pub fn virr(&self, vector: u8) -> bool {
        self.get_bit(reg::VIRR, vector)
    }

    /// Sets or clears VIRR bit `vector` (RVI is the VMCS's; see
    /// [`VmxCpu::request_virtual_interrupt`] for setting both).
    pub fn set_virr(&mut self, vector: u8, on: bool) {
        self.put_bit(reg::VIRR, vector, on)
    }

    /// Whether VISR bit `vector` is set.
    pub fn visr(&self, vector: u8) -> bool {
        self.get_bit(reg::VISR, vector)
    }

    /// Sets or clears VISR bit `vector`.
    pub fn set_visr(&mut self, vector: u8, on: bool) {
        self.put_bit(reg::VISR, vector, on)
    }

    /// The highest vector set in VIRR.
    pub fn highest_virr(&self) -> Option<u8> {
        self.highest(reg::VIRR)
    }

    /// The highest vector set in VISR.
    pub fn highest_visr(&self) -> Option<u8> {
        self.highest(reg::VISR)
    }
}

/// A 64-byte posted-interrupt descriptor (SDM 29.6): the posted-interrupt requests (PIR,
/// bits 255:0, one per vector) and the outstanding-notification bit ON (bit 256). The
/// remaining bits are kept but not interpreted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PostedInterruptDesc {
    words: [u64; 8],
}

impl PostedInterruptDesc {
    /// An empty descriptor.
    pub fn new() -> Self {
        Self::default()
    }

    /// Posts `vector` the way a hypervisor (or another CPU) does: sets its PIR bit, then
    /// ON. Returns true when ON was clear, i.e. a notification (an interrupt with the
    /// notification vector) must be sent; false when one is already outstanding.
    pub fn post_interrupt(&mut self, vector: u8) -> bool {
        self.words[(vector >> 6) as usize] |= 1 << (vector & 63);
        let was_on = self.on();
        self.words[4] |= 1;
        !was_on
    }

    /// Whether the PIR bit of `vector` is set.
    pub fn pir(&self, vector: u8) -> bool {
        self.words[(vector >> 6) as usize] & (1 << (vector & 63)) != 0
    }

    /// The outstanding-notification bit.
    pub fn on(&self) -> bool {
        self.words[4] & 1 != 0
    }

    /// The descriptor as eight little-endian quadwords (PIR in 0..4, ON in bit 0 of 4).
    pub fn words(&self) -> &[u64; 8] {
        &self.words
    }

    /// The raw descriptor, for direct edits.
    pub fn words_mut(&mut self) -> &mut [u64; 8] {
        &mut self.words
    }
}

// ---------------------------------------------------------------------------------------
// The SDM's pseudocode, on a page and a guest interrupt status.

/// PPR virtualization (SDM 29.1.3): VPPR is VTPR when VTPR's priority class is at least
/// SVI's, else SVI's class.
pub fn ppr_virtualization(page: &mut VirtualApicPage, status: u16) {
    let vtpr = page.vtpr() & 0xff;
    let svi = svi(status) as u32;
    let vppr = if vtpr >> 4 >= svi >> 4 {
        vtpr
    } else {
        svi & 0xf0
    };
    page.write(reg::VPPR, vppr);
}

/// Evaluation of pending virtual interrupts (SDM 29.2.1): a virtual interrupt is
/// recognised when interrupt-window exiting is off and RVI's priority class is above
/// VPPR's.
pub fn evaluate_pending(page: &VirtualApicPage, status: u16, interrupt_window: bool) -> bool {
    !interrupt_window && (rvi(status) >> 4) as u32 > (page.vppr() >> 4) & 0xf
}

/// EOI virtualization up to its decision (SDM 29.1.4): clears `VISR[SVI]`, moves SVI to
/// the next highest VISR bit, updates VPPR. Returns the vector and whether its
/// EOI-exit-bitmap bit asks for an EOI-induced VM exit (otherwise the caller evaluates
/// pending virtual interrupts).
pub fn eoi_virtualization(
    page: &mut VirtualApicPage,
    status: &mut u16,
    eoi_exit_bitmap: &[u64; 4],
) -> (u8, bool) {
    let vector = svi(*status);
    page.set_visr(vector, false);
    let next = page.highest_visr().unwrap_or(0);
    *status = interrupt_status(rvi(*status), next);
    ppr_virtualization(page, *status);
    let exits = eoi_exit_bitmap[(vector >> 6) as usize] & (1 << (vector & 63)) != 0;
    (vector, exits)
}

/// Self-IPI virtualization (SDM 29.1.5) up to the evaluation: `VIRR[vector]` set and RVI
/// raised to it.
pub fn self_ipi_virtualization(page: &mut VirtualApicPage, status: &mut u16, vector: u8) {
    page.set_virr(vector, true);
    *status = interrupt_status(rvi(*status).max(vector), svi(*status));
}

/// The bookkeeping of virtual-interrupt delivery (SDM 29.2.2) before the vector goes
/// through the guest IDT: `VISR[RVI]` set, SVI = RVI, VPPR updated, `VIRR[RVI]` cleared, RVI
/// = next highest VIRR bit. Returns the vector.
pub fn acknowledge_virtual_interrupt(page: &mut VirtualApicPage, status: &mut u16) -> u8 {
    let vector = rvi(*status);
    page.set_visr(vector, true);
    *status = interrupt_status(vector, vector);
    ppr_virtualization(page, *status);
    page.set_virr(vector, false);
    *status = interrupt_status(page.highest_virr().unwrap_or(0), vector);
    vector
}

/// Posted-interrupt processing (SDM 29.6) after the notification was recognised: ON
/// cleared, PIR ORed into VIRR and cleared, RVI = max(RVI, highest PIR bit). The caller
/// evaluates pending virtual interrupts.
pub fn process_posted(
    page: &mut VirtualApicPage,
    status: &mut u16,
    desc: &mut PostedInterruptDesc,
) {
    desc.words[4] &= !1;
    let mut highest = None;
    for k in 0..4 {
        let w = std::mem::take(&mut desc.words[k]);
        if w == 0 {
            continue;
        }
        for half in 0..2 {
            let bits = (w >> (32 * half)) as u32;
            let o = reg::VIRR + (2 * k + half) * 0x10;
            page.write(o, page.read(o) | bits);
        }
        highest = Some((k as u32 * 64 + 63 - w.leading_zeros()) as u8);
    }
    if let Some(h) = highest {
        *status = interrupt_status(rvi(*status).max(h), svi(*status));
    }
}

// ---------------------------------------------------------------------------------------
// Which accesses are virtualized.

/// An APIC write virtualized by the instruction that just retired, applied by
/// [`VmxCpu::run`] before the next instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApicWrite {
    /// MOV to CR8 under a TPR shadow with this (valid) value: VTPR = value << 4.
    Cr8(u8),
    /// WRMSR to the TPR MSR with this value (bits 7:0; the rest were zero).
    Tpr(u32),
    /// WRMSR of 0 to the EOI MSR.
    Eoi,
    /// WRMSR to the self-IPI MSR with this vector.
    SelfIpi(u8),
}

/// What a WRMSR that the MSR bitmap let through does under the APIC-virtualization
/// controls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsrWrite {
    /// Not virtualized: the MSR is written as outside VMX (the platform's MSR).
    Normal,
    /// Virtualized, but the value has reserved bits set: #GP(0).
    Fault,
    /// Virtualized: the write goes to the virtual-APIC page.
    Virtualized(ApicWrite),
}

/// Whether "virtualize x2APIC mode" is in effect.
pub fn virtualizes_x2apic(vmcs: &Vmcs) -> bool {
    secondary(vmcs) & proc2::VIRTUALIZE_X2APIC_MODE != 0
}

/// Whether "virtual-interrupt delivery" is in effect.
pub fn virtual_interrupt_delivery(vmcs: &Vmcs) -> bool {
    secondary(vmcs) & proc2::VIRTUAL_INTERRUPT_DELIVERY != 0
}

/// Whether a MOV to CR8 must bring the page's VTPR up to date before the next
/// instruction: under a TPR shadow when the page can be read by the guest (virtualized
/// RDMSR) or a TPR change may deliver a virtual interrupt.
pub fn cr8_write_needs_update(vmcs: &Vmcs) -> bool {
    vmcs.exec.proc & proc::USE_TPR_SHADOW != 0
        && secondary(vmcs) & (proc2::VIRTUALIZE_X2APIC_MODE | proc2::VIRTUAL_INTERRUPT_DELIVERY)
            != 0
}

/// The value a non-root RDMSR of `msr` (not intercepted by the MSR bitmap) returns when
/// APIC virtualization serves it (SDM 29.5), `None` when the MSR is read as usual. With
/// "APIC-register virtualization" every MSR 0x800-0x8ff reads the 8 bytes at its page
/// offset; without it only the TPR MSR is virtualized (VTPR, EDX = 0). A missing page
/// reads as zeros.
pub fn virtual_msr_read(vmcs: &Vmcs, page: Option<&VirtualApicPage>, msr: u32) -> Option<u64> {
    if !(msr::FIRST..=msr::LAST).contains(&msr) || !virtualizes_x2apic(vmcs) {
        return None;
    }
    if secondary(vmcs) & proc2::APIC_REGISTER_VIRTUALIZATION != 0 {
        Some(page.map_or(0, |p| p.read_u64(msr::page_offset(msr))))
    } else if msr == msr::TPR {
        Some(page.map_or(0, |p| p.vtpr() as u64))
    } else {
        None
    }
}

/// How a non-root WRMSR of `value` to `msr` (not intercepted by the MSR bitmap) is
/// handled (SDM 29.5): with "virtualize x2APIC mode", the TPR MSR always, and with
/// "virtual-interrupt delivery" also the EOI MSR (value must be 0) and the self-IPI MSR
/// (bits 63:8 must be 0); other MSRs are written as usual.
pub fn virtual_msr_write(vmcs: &Vmcs, msr: u32, value: u64) -> MsrWrite {
    if !(msr::FIRST..=msr::LAST).contains(&msr) || !virtualizes_x2apic(vmcs) {
        return MsrWrite::Normal;
    }
    let vid = virtual_interrupt_delivery(vmcs);
    let checked = |ok: bool, w: ApicWrite| {
        if ok {
            MsrWrite::Virtualized(w)
        } else {
            MsrWrite::Fault
        }
    };
    match msr {
        msr::TPR => checked(value >> 8 == 0, ApicWrite::Tpr(value as u32)),
        msr::EOI if vid => checked(value == 0, ApicWrite::Eoi),
        msr::SELF_IPI if vid => checked(value >> 8 == 0, ApicWrite::SelfIpi(value as u8)),
        _ => MsrWrite::Normal,
    }
}

// ---------------------------------------------------------------------------------------
// The per-processor store and the VmxCpu side.

/// Virtual-APIC pages and posted-interrupt descriptors by handle, and the one piece of
/// processor state APIC virtualization adds: whether a virtual interrupt is recognised.
#[derive(Debug, Default)]
pub(super) struct ApicvStore {
    pages: HashMap<u64, VirtualApicPage>,
    descs: HashMap<u64, PostedInterruptDesc>,
    /// A pending virtual interrupt has been recognised and waits for delivery (cleared by
    /// delivery, by a later evaluation that finds none, and by VM exit).
    recognized: bool,
}

impl ApicvStore {
    /// The page the adapter serves virtualized RDMSR from, when "virtualize x2APIC mode"
    /// is on.
    pub(super) fn page_for(&self, vmcs: &Vmcs) -> Option<&VirtualApicPage> {
        if virtualizes_x2apic(vmcs) {
            self.pages.get(&vmcs.exec.virtual_apic_page)
        } else {
            None
        }
    }

    /// Whether a recognised virtual interrupt waits (blocked so far).
    #[inline(always)]
    pub(super) fn recognized(&self) -> bool {
        self.recognized
    }

    /// VTPR of the page at `handle` (0 for a page never touched).
    pub(super) fn vtpr(&self, handle: u64) -> u8 {
        self.pages.get(&handle).map_or(0, |p| p.vtpr() as u8)
    }
}

/// How an attempt to deliver a recognised virtual interrupt ended.
pub(super) enum VirtualDelivery {
    /// Nothing to deliver, or the guest cannot take it now.
    Blocked,
    /// Delivered through the guest IDT.
    Delivered,
    /// Delivery met a fault that exits; the exit is performed (IDT-vectoring information
    /// holds the virtual interrupt).
    Exited(VmExit),
    /// The memory system aborted delivery; the bookkeeping was undone and the interrupt
    /// is still pending (recognised).
    Aborted(u32),
}

fn can_take(vmcs: &Vmcs, s: &CpuState) -> bool {
    s.interrupts_enabled()
        && s.shutdown.is_none()
        && vmcs.exec.proc & proc::INTERRUPT_WINDOW_EXITING == 0
}

impl VmxCpu {
    /// The virtual-APIC page at `handle`, if it was ever touched.
    pub fn virtual_apic(&self, handle: u64) -> Option<&VirtualApicPage> {
        self.apicv.pages.get(&handle)
    }

    /// The virtual-APIC page at `handle` for the hypervisor model to read and write
    /// (created zeroed on first use).
    pub fn virtual_apic_mut(&mut self, handle: u64) -> &mut VirtualApicPage {
        self.apicv.pages.entry(handle).or_default()
    }

    /// The posted-interrupt descriptor at `handle`, if it was ever touched.
    pub fn posted_intr_desc(&self, handle: u64) -> Option<&PostedInterruptDesc> {
        self.apicv.descs.get(&handle)
    }

    /// The posted-interrupt descriptor at `handle` (created empty on first use).
    pub fn posted_intr_desc_mut(&mut self, handle: u64) -> &mut PostedInterruptDesc {
        self.apicv.descs.entry(handle).or_default()
    }

    /// Posts `vector` into the descriptor the current VMCS names
    /// ([`PostedInterruptDesc::post_interrupt`]): true when the hypervisor must now send
    /// the notification vector (deliver it with [`VmxCpu::external_interrupt`]). Without
    /// a current VMCS there is no descriptor: nothing is posted and the answer is false.
    pub fn post_interrupt(&mut self, vector: u8) -> bool {
        let Some(h) = self.current_vmcs().map(|v| v.exec.posted_intr_desc) else {
            return false;
        };
        self.posted_intr_desc_mut(h).post_interrupt(vector)
    }

    /// Makes `vector` a requested virtual interrupt of the current VMCS, as a hypervisor
    /// does before VM entry: VIRR bit set in its virtual-APIC page and RVI raised to it.
    /// It is evaluated at the next VM entry (or the next TPR, EOI or self-IPI
    /// virtualization or posted-interrupt processing). False without a current VMCS.
    pub fn request_virtual_interrupt(&mut self, vector: u8) -> bool {
        let Some(h) = self.current else {
            return false;
        };
        let Some(v) = self.vmcss.get_mut(&h) else {
            return false;
        };
        let page = self
            .apicv
            .pages
            .entry(v.exec.virtual_apic_page)
            .or_default();
        self_ipi_virtualization(page, &mut v.guest.interrupt_status, vector);
        true
    }

    /// Whether a virtual interrupt is recognised and waiting for the guest to take it.
    pub fn virtual_interrupt_pending(&self) -> bool {
        self.apicv.recognized
    }

    /// VM entry, after guest state is loaded: the guest's CR8 takes `VTPR[7:4]`; with
    /// "virtual-interrupt delivery", PPR virtualization and evaluation of pending virtual
    /// interrupts (SDM 27.3.2.5; RVI and SVI are already the VMCS's field).
    pub(super) fn apicv_entry_load(&mut self, cpu: &mut Cpu) {
        self.apicv.recognized = false;
        let Some(v) = self.current.and_then(|h| self.vmcss.get(&h)) else {
            return;
        };
        if v.exec.proc & proc::USE_TPR_SHADOW == 0 {
            return;
        }
        let page = self
            .apicv
            .pages
            .entry(v.exec.virtual_apic_page)
            .or_default();
        cpu.state.cr8 = ((page.vtpr() >> 4) & 0xf) as u64;
        if virtual_interrupt_delivery(v) {
            let status = v.guest.interrupt_status;
            ppr_virtualization(page, status);
            let iwe = v.exec.proc & proc::INTERRUPT_WINDOW_EXITING != 0;
            self.apicv.recognized = evaluate_pending(page, status, iwe);
        }
    }

    /// The end of a successful VM entry (after any injection): a virtual interrupt
    /// recognised on entry is delivered now if the guest can take it.
    pub(super) fn apicv_entered<M: Memory, P: Platform>(
        &mut self,
        cpu: &mut Cpu,
        m: &mut M,
        p: &mut P,
    ) -> Entry {
        if !self.apicv.recognized {
            return Entry::Entered;
        }
        match self.deliver_virtual_interrupt(cpu, m, p) {
            VirtualDelivery::Blocked | VirtualDelivery::Delivered => Entry::Entered,
            VirtualDelivery::Exited(e) => Entry::Exited(e),
            VirtualDelivery::Aborted(token) => Entry::InjectionAborted(token),
        }
    }

    /// VM exit, before host state is loaded: the page's VTPR takes the guest's CR8 (when
    /// a MOV to CR8 changed it since the page was last updated: bits 3:0 cleared, as MOV
    /// to CR8 does), and recognition of virtual interrupts ends until the next entry.
    pub(super) fn apicv_exit_save(&mut self, s: &CpuState) {
        self.apicv.recognized = false;
        let Some(v) = self.current.and_then(|h| self.vmcss.get(&h)) else {
            return;
        };
        if v.exec.proc & proc::USE_TPR_SHADOW == 0 {
            return;
        }
        let page = self
            .apicv
            .pages
            .entry(v.exec.virtual_apic_page)
            .or_default();
        let cr8 = (s.cr8 & 0xf) as u32;
        if (page.vtpr() >> 4) & 0xf != cr8 {
            page.set_vtpr(cr8 << 4);
        }
    }

    /// Applies an APIC write the instruction that just retired virtualized: TPR, EOI or
    /// self-IPI virtualization. Returns the trap-like VM exit it causes (TPR below
    /// threshold without virtual-interrupt delivery, or an EOI-induced exit), which the
    /// caller performs; otherwise pending virtual interrupts have been evaluated.
    pub(super) fn apply_apic_write(&mut self, cpu: &mut Cpu, w: ApicWrite) -> Option<VmExit> {
        let h = self.current?;
        let v = self.vmcss.get_mut(&h)?;
        let page = self
            .apicv
            .pages
            .entry(v.exec.virtual_apic_page)
            .or_default();
        let vid = virtual_interrupt_delivery(v);
        let status = &mut v.guest.interrupt_status;
        match w {
            ApicWrite::Cr8(value) => page.set_vtpr((value as u32 & 0xf) << 4),
            ApicWrite::Tpr(value) => {
                self.stats.apic_msr_writes += 1;
                page.set_vtpr(value);
                cpu.state.cr8 = ((value >> 4) & 0xf) as u64;
                if !vid {
                    // TPR virtualization without virtual-interrupt delivery: only the
                    // threshold check (SDM 29.1.2).
                    if (value >> 4) & 0xf < v.exec.tpr_threshold & 0xf {
                        return Some(VmExit::new(ExitReason::TprBelowThreshold, 0, 0));
                    }
                    return None;
                }
            }
            ApicWrite::Eoi => {
                self.stats.apic_msr_writes += 1;
                self.stats.virtualized_eois += 1;
                page.write(reg::VEOI, 0);
                let (vector, exits) = eoi_virtualization(page, status, &v.exec.eoi_exit_bitmap);
                if exits {
                    self.apicv.recognized = false;
                    return Some(VmExit::new(ExitReason::VirtualizedEoi, vector as u64, 0));
                }
            }
            ApicWrite::SelfIpi(vector) => {
                self.stats.apic_msr_writes += 1;
                self_ipi_virtualization(page, status, vector);
            }
        }
        if vid {
            ppr_virtualization(page, *status);
            let iwe = v.exec.proc & proc::INTERRUPT_WINDOW_EXITING != 0;
            self.apicv.recognized = evaluate_pending(page, *status, iwe);
        }
        None
    }

    /// Whether [`Self::deliver_virtual_interrupt`] would deliver now: a virtual interrupt
    /// is recognised and the guest can take it.
    pub(super) fn virtual_interrupt_deliverable(&self, s: &CpuState) -> bool {
        self.apicv.recognized
            && self.mode == VmxMode::NonRoot
            && self.current_vmcs().is_some_and(|v| can_take(v, s))
    }

    /// Delivers the recognised virtual interrupt if the guest can take it now (RFLAGS.IF
    /// = 1, no STI/MOV-SS blocking, interrupt-window exiting off): the bookkeeping of SDM
    /// 29.2.2, then the vector through the guest IDT as an external interrupt (never
    /// offered to external-interrupt exiting; a HLT-ed guest wakes up).
    pub(super) fn deliver_virtual_interrupt<M: Memory, P: Platform>(
        &mut self,
        cpu: &mut Cpu,
        m: &mut M,
        p: &mut P,
    ) -> VirtualDelivery {
        if !self.apicv.recognized || self.mode != VmxMode::NonRoot {
            return VirtualDelivery::Blocked;
        }
        let Some(h) = self.current else {
            return VirtualDelivery::Blocked;
        };
        let Some(v) = self.vmcss.get_mut(&h) else {
            return VirtualDelivery::Blocked;
        };
        if !can_take(v, &cpu.state) {
            return VirtualDelivery::Blocked;
        }
        let page = self
            .apicv
            .pages
            .entry(v.exec.virtual_apic_page)
            .or_default();
        let undo = (v.guest.interrupt_status, page.vppr());
        let vector = acknowledge_virtual_interrupt(page, &mut v.guest.interrupt_status);
        self.apicv.recognized = false;
        let (outcome, exit) = {
            let mut ap = VmxPlatform::new(v, p);
            let o = cpu.inject_event(m, &mut ap, vector, EventType::ExternalInterrupt, None, 0);
            (o, ap.exit.take())
        };
        match (outcome, exit) {
            (StepOutcome::MemoryAbort { token, .. }, _) => {
                // Not delivered: back to "requested and recognised".
                if let Some(v) = self.vmcss.get_mut(&h) {
                    v.guest.interrupt_status = undo.0;
                    if let Some(page) = self.apicv.pages.get_mut(&v.exec.virtual_apic_page) {
                        page.set_visr(vector, false);
                        page.set_virr(vector, true);
                        page.write(reg::VPPR, undo.1);
                    }
                }
                self.apicv.recognized = true;
                VirtualDelivery::Aborted(token)
            }
            (StepOutcome::Intercepted { .. }, Some(exit)) => {
                // Not delivered (the hypervisor re-injects it from the IDT-vectoring
                // information), though VISR and SVI already show it in service.
                if let Some(v) = self.vmcss.get_mut(&h) {
                    v.info.idt_vectoring_info =
                        intr_info::make(vector, intr_info::TYPE_EXTERNAL, false);
                    v.info.idt_vectoring_error_code = 0;
                }
                self.perform_exit(cpu, m, &exit, true);
                VirtualDelivery::Exited(exit)
            }
            _ => {
                self.stats.virtual_interrupts += 1;
                VirtualDelivery::Delivered
            }
        }
    }

    /// A posted-interrupt notification (SDM 29.6): no VM exit; the PIR moves into the
    /// VIRR, pending virtual interrupts are evaluated, and one the guest can take now is
    /// delivered.
    pub(super) fn posted_notification<M: Memory, P: Platform>(
        &mut self,
        cpu: &mut Cpu,
        m: &mut M,
        p: &mut P,
    ) -> InterruptResult {
        let Some(v) = self.current.and_then(|h| self.vmcss.get_mut(&h)) else {
            return InterruptResult::Pending;
        };
        let page = self
            .apicv
            .pages
            .entry(v.exec.virtual_apic_page)
            .or_default();
        let desc = self.apicv.descs.entry(v.exec.posted_intr_desc).or_default();
        let status = &mut v.guest.interrupt_status;
        process_posted(page, status, desc);
        let iwe = v.exec.proc & proc::INTERRUPT_WINDOW_EXITING != 0;
        self.apicv.recognized = evaluate_pending(page, *status, iwe);
        self.stats.posted_notifications += 1;
        match self.deliver_virtual_interrupt(cpu, m, p) {
            VirtualDelivery::Exited(e) => InterruptResult::Exited(e),
            _ => InterruptResult::Posted,
        }
    }
}

/// Whether an external interrupt with `vector` is a posted-interrupt notification under
/// `vmcs` ("process posted interrupts" on and the vector is the notification vector).
pub fn is_notification(vmcs: &Vmcs, vector: u8) -> bool {
    vmcs.exec.pin & pin::PROCESS_POSTED_INTERRUPTS != 0
        && vmcs.exec.posted_intr_vector == vector as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_bits_sit_at_the_sdm_offsets() {
        let mut p = VirtualApicPage::new();
        p.set_virr(0x31, true);
        assert_eq!(p.read(0x210), 1 << 0x11);
        p.set_visr(0xff, true);
        assert_eq!(p.read(0x170), 1 << 31);
        assert_eq!(p.highest_virr(), Some(0x31));
        assert_eq!(p.highest_visr(), Some(0xff));
        p.set_virr(0x31, false);
        assert_eq!(p.highest_virr(), None);
        assert_eq!(p.read(0xffd), 0, "offsets wrap within the page");
    }

    #[test]
    fn ppr_is_the_higher_of_tpr_and_the_in_service_class() {
        let mut p = VirtualApicPage::new();
        p.set_vtpr(0x25);
        ppr_virtualization(&mut p, interrupt_status(0, 0x41));
        assert_eq!(p.vppr(), 0x40);
        ppr_virtualization(&mut p, interrupt_status(0, 0x21));
        assert_eq!(p.vppr(), 0x25, "same class: VTPR with its low bits");
    }

    #[test]
    fn evaluation_compares_priority_classes() {
        let mut p = VirtualApicPage::new();
        p.write(reg::VPPR, 0x3f);
        assert!(!evaluate_pending(&p, interrupt_status(0x3f, 0), false));
        assert!(evaluate_pending(&p, interrupt_status(0x40, 0), false));
        assert!(!evaluate_pending(&p, interrupt_status(0x40, 0), true));
    }

    #[test]
    fn eoi_pops_the_in_service_stack() {
        let mut p = VirtualApicPage::new();
        p.set_visr(0x30, true);
        p.set_visr(0x50, true);
        let mut st = interrupt_status(0, 0x50);
        let mut bitmap = [0u64; 4];
        bitmap[1] = 1 << (0x50 - 64);
        assert_eq!(eoi_virtualization(&mut p, &mut st, &bitmap), (0x50, true));
        assert_eq!(svi(st), 0x30);
        assert_eq!(p.vppr(), 0x30);
        assert_eq!(eoi_virtualization(&mut p, &mut st, &bitmap), (0x30, false));
        assert_eq!((svi(st), p.vppr()), (0, 0));
    }

    #[test]
    fn delivery_moves_rvi_from_virr_to_visr() {
        let mut p = VirtualApicPage::new();
        let mut st = 0;
        self_ipi_virtualization(&mut p, &mut st, 0x41);
        self_ipi_virtualization(&mut p, &mut st, 0x62);
        assert_eq!(rvi(st), 0x62);
        assert_eq!(acknowledge_virtual_interrupt(&mut p, &mut st), 0x62);
        assert_eq!((rvi(st), svi(st)), (0x41, 0x62));
        assert!(p.visr(0x62) && !p.virr(0x62) && p.virr(0x41));
        assert_eq!(p.vppr(), 0x60);
    }

    #[test]
    fn posting_and_processing() {
        let mut d = PostedInterruptDesc::new();
        assert!(d.post_interrupt(0x45));
        assert!(
            !d.post_interrupt(0xe1),
            "a notification is already outstanding"
        );
        assert!(d.on() && d.pir(0x45) && d.pir(0xe1));
        let mut p = VirtualApicPage::new();
        let mut st = interrupt_status(0x20, 0);
        process_posted(&mut p, &mut st, &mut d);
        assert!(!d.on() && !d.pir(0x45));
        assert_eq!(d.words(), &[0; 8]);
        assert!(p.virr(0x45) && p.virr(0xe1));
        assert_eq!(rvi(st), 0xe1);
    }
}
