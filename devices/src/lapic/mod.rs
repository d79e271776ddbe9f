//! The local APIC, one per vCPU: interrupt acceptance and priority, EOI, the timer, and
//! IPIs, behind both architectural access forms (Intel SDM vol. 3, "Advanced Programmable
//! Interrupt Controller").
//!
//! - xAPIC: a 4 KiB MMIO page at the APIC base, 32-bit registers at 16-byte-aligned
//!   offsets ([`Lapic::mmio_read`], [`Lapic::mmio_write`]).
//! - x2APIC: MSRs `0x800 + offset / 16`, a single 64-bit ICR at 0x830, SELF_IPI at 0x83F
//!   ([`Lapic::read_msr`], [`Lapic::write_msr`]), selected by IA32_APIC_BASE bit 10.
//!
//! The APIC knows nothing of other CPUs or of time passing: an ICR write returns an
//! [`Ipi`] for the simulator core to route; the core tells the APIC the TSC on every call,
//! asks [`Lapic::next_event`] when to call [`Lapic::advance`], and drives the CPU side with
//! [`Lapic::highest_pending`] (is there something to take?), [`Lapic::ack`] (take it) and
//! the EOI the guest writes (whose [`Eoi`] tells the core whether to notify an IOAPIC).
//!
//! It is deliberately not a [`crate::bus::MmioDevice`]: its page is per vCPU and relocatable
//! (APIC_BASE), and its writes return a [`WriteEffect`] that a bus write would drop. NMI,
//! INIT and SIPI messages never touch the IRR; the core hands them to the CPU model (an
//! arriving INIT also calls [`Lapic::init_reset`]).

mod ipi;
mod stats;
mod timer;
mod vector_set;

#[cfg(test)]
mod tests;

pub use ipi::{DeliveryMode, Destination, Ipi, TriggerMode};
pub use stats::LapicStats;
pub use timer::{ApicTimer, TimerMode};
pub use vector_set::VectorSet;

use crate::error::DeviceError;
use ipi::{decode_icr, IcrReject};
use serde::Serialize;

/// IA32_APIC_BASE.
pub const MSR_APIC_BASE: u32 = 0x1B;
/// IA32_TSC_DEADLINE.
pub const MSR_TSC_DEADLINE: u32 = 0x6E0;
/// First MSR of the x2APIC register range.
pub const MSR_X2APIC_FIRST: u32 = 0x800;
/// Last MSR of the x2APIC register range.
pub const MSR_X2APIC_LAST: u32 = 0x8FF;
/// Architectural power-on APIC base address.
pub const DEFAULT_APIC_BASE: u64 = 0xFEE0_0000;
/// Size of the xAPIC MMIO page.
pub const APIC_PAGE_SIZE: u64 = 0x1000;

/// APIC_BASE bit 8: this is the bootstrap processor.
const BASE_BSP: u64 = 1 << 8;
/// APIC_BASE bit 10: x2APIC mode.
const BASE_EXTD: u64 = 1 << 10;
/// APIC_BASE bit 11: APIC globally enabled.
const BASE_EN: u64 = 1 << 11;
/// APIC_BASE bits that must be zero: 0..=7, 9 and 52..=63.
const BASE_RESERVED: u64 = 0xFFF0_0000_0000_02FF;
/// APIC_BASE bits holding the page address.
const BASE_ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;

/// Version register: version 0x14 (integrated APIC), max LVT entry 5 (timer, thermal,
/// performance counters, LINT0, LINT1, error), no EOI-broadcast suppression.
const VERSION: u32 = 0x0005_0014;
/// LVT mask bit.
const LVT_MASKED: u32 = 1 << 16;
/// SVR bit 8: APIC software enable.
const SVR_ENABLE: u32 = 1 << 8;
/// ESR bit 5: send illegal vector.
const ESR_SEND_ILLEGAL: u32 = 1 << 5;
/// ESR bit 6: receive illegal vector.
const ESR_RECV_ILLEGAL: u32 = 1 << 6;
/// Reserved bits of the x2APIC 64-bit ICR (13, 16..=17, 20..=31).
const X2APIC_ICR_RESERVED: u64 = 0xFFF3_2000;

/// Register indices (`offset / 16`; x2APIC MSR = 0x800 + index).
mod reg {
    pub const ID: u32 = 0x02;
    pub const VERSION: u32 = 0x03;
    pub const TPR: u32 = 0x08;
    pub const APR: u32 = 0x09;
    pub const PPR: u32 = 0x0A;
    pub const EOI: u32 = 0x0B;
    pub const RRD: u32 = 0x0C;
    pub const LDR: u32 = 0x0D;
    pub const DFR: u32 = 0x0E;
    pub const SVR: u32 = 0x0F;
    pub const ISR0: u32 = 0x10;
    pub const ISR7: u32 = 0x17;
    pub const TMR0: u32 = 0x18;
    pub const TMR7: u32 = 0x1F;
    pub const IRR0: u32 = 0x20;
    pub const IRR7: u32 = 0x27;
    pub const ESR: u32 = 0x28;
    pub const ICR_LO: u32 = 0x30;
    pub const ICR_HI: u32 = 0x31;
    pub const LVT_TIMER: u32 = 0x32;
    pub const LVT_ERROR: u32 = 0x37;
    pub const TIMER_INITIAL: u32 = 0x38;
    pub const TIMER_CURRENT: u32 = 0x39;
    pub const TIMER_DIVIDE: u32 = 0x3E;
    pub const SELF_IPI: u32 = 0x3F;
}

/// LVT slots, in register order from 0x320.
const LVT_TIMER: usize = 0;
const LVT_ERROR: usize = 5;
/// Writable bits per LVT slot: timer, thermal, performance, LINT0, LINT1, error.
const LVT_WRITABLE: [u32; 6] = [
    0x0007_00FF,
    0x0001_07FF,
    0x0001_07FF,
    0x0001_A7FF,
    0x0001_A7FF,
    0x0001_00FF,
];

/// How the APIC is reachable, from IA32_APIC_BASE bits 11 and 10.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ApicMode {
    /// Globally disabled: no MMIO page, no x2APIC MSRs, no interrupts.
    Disabled,
    /// xAPIC: registers in the MMIO page.
    XApic,
    /// x2APIC: registers as MSRs; the MMIO page is gone.
    X2Apic,
}

/// Construction parameters of one local APIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LapicConfig {
    /// Initial APIC ID (the x2APIC ID; its low 8 bits are the xAPIC ID).
    pub apic_id: u32,
    /// Whether this is the bootstrap processor (APIC_BASE bit 8).
    pub bsp: bool,
    /// Core clock (TSC) ticks per tick of the APIC timer's input clock, from the machine
    /// profile (e.g. a 3 GHz TSC over a 100 MHz bus clock is 30). At least 1.
    pub core_ticks_per_timer_tick: u64,
}

/// What a register write asks of the simulator core beyond the APIC itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteEffect {
    /// Nothing to do.
    None,
    /// An IPI to route (ICR or SELF_IPI write).
    Ipi(Ipi),
    /// An EOI retired this vector; a level-triggered one must be forwarded to the IOAPIC.
    Eoi(Eoi),
    /// Timer programming changed: ask [`Lapic::next_event`] again.
    TimerChanged,
}

/// An in-service vector retired by EOI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Eoi {
    /// The vector retired (the highest one in service).
    pub vector: u8,
    /// How it was accepted (from the TMR): `Level` means the IOAPIC needs an EOI.
    pub trigger: TriggerMode,
}

/// What happened to an interrupt offered to [`Lapic::accept`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Acceptance {
    /// Newly pending in the IRR.
    Accepted,
    /// Already pending: merged with the earlier one (the IRR holds one bit per vector).
    Coalesced,
    /// Refused: the APIC is disabled (globally or by software).
    Disabled,
    /// Refused: vectors 0..=15 are illegal; a receive-illegal-vector error was recorded.
    IllegalVector,
}

/// One local APIC: the per-vCPU interrupt state a guest kernel programs directly (or
/// through a policy that intercepts it).
#[derive(Debug, Clone)]
pub struct Lapic {
    id: u32,
    apic_base: u64,
    tpr: u32,
    ldr: u32,
    dfr: u32,
    svr: u32,
    isr: VectorSet,
    tmr: VectorSet,
    irr: VectorSet,
    esr: u32,
    esr_pending: u32,
    icr_low: u32,
    icr_high: u32,
    lvt: [u32; 6],
    timer: ApicTimer,
    stats: LapicStats,
}

impl Lapic {
    /// A local APIC in its power-on state: globally enabled in xAPIC mode at the default
    /// base, software-disabled (SVR = 0xFF) until the guest enables it.
    pub fn new(config: LapicConfig) -> Result<Self, DeviceError> {
        if config.core_ticks_per_timer_tick == 0 {
            return Err(DeviceError::ZeroTimerRate);
        }
        let mut apic = Self {
            id: config.apic_id,
            apic_base: DEFAULT_APIC_BASE | BASE_EN | if config.bsp { BASE_BSP } else { 0 },
            tpr: 0,
            ldr: 0,
            dfr: u32::MAX,
            svr: 0xFF,
            isr: VectorSet::new(),
            tmr: VectorSet::new(),
            irr: VectorSet::new(),
            esr: 0,
            esr_pending: 0,
            icr_low: 0,
            icr_high: 0,
            lvt: [LVT_MASKED; 6],
            timer: ApicTimer::new(config.core_ticks_per_timer_tick),
            stats: LapicStats::default(),
        };
        apic.reset_registers();
        Ok(apic)
    }

    /// The INIT reset (an INIT IPI arrived): every register returns to its power-on value
    /// except the APIC ID and IA32_APIC_BASE.
    pub fn init_reset(&mut self) {
        self.reset_registers();
    }

    fn reset_registers(&mut self) {
        self.tpr = 0;
        self.ldr = 0;
        self.dfr = u32::MAX;
        self.svr = 0xFF;
        self.isr = VectorSet::new();
        self.tmr = VectorSet::new();
        self.irr = VectorSet::new();
        self.esr = 0;
        self.esr_pending = 0;
        self.icr_low = 0;
        self.icr_high = 0;
        self.lvt = [LVT_MASKED; 6];
        self.timer.stop();
        self.timer.write_divide(0, 0);
    }

    /// The APIC ID (full 32 bits; xAPIC mode shows the low 8).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Which access form is active.
    pub fn mode(&self) -> ApicMode {
        match (
            self.apic_base & BASE_EN != 0,
            self.apic_base & BASE_EXTD != 0,
        ) {
            (false, _) => ApicMode::Disabled,
            (true, false) => ApicMode::XApic,
            (true, true) => ApicMode::X2Apic,
        }
    }

    /// Guest-physical address of the xAPIC MMIO page (meaningful in xAPIC mode; the guest
    /// may relocate it through APIC_BASE).
    pub fn mmio_base(&self) -> u64 {
        self.apic_base & BASE_ADDR_MASK
    }

    /// Whether the SVR software-enable bit is set.
    pub fn software_enabled(&self) -> bool {
        self.svr & SVR_ENABLE != 0
    }

    /// Counters so far.
    pub fn stats(&self) -> &LapicStats {
        &self.stats
    }

    // ----- priority, acceptance, delivery -----------------------------------------------

    /// The task-priority register (what CR8 shows as bits 7..4).
    pub fn tpr(&self) -> u8 {
        self.tpr as u8
    }

    /// Sets the TPR: the path for `mov cr8` (pass `cr8 << 4`) and for register writes.
    pub fn set_tpr(&mut self, tpr: u8) {
        self.stats.tpr_writes += 1;
        self.tpr = u32::from(tpr);
    }

    /// The processor-priority register: the higher of the TPR and the class of the
    /// highest in-service vector. Only vectors of a class above PPR's class are delivered.
    pub fn ppr(&self) -> u8 {
        let isrv = self.isr.highest().unwrap_or(0);
        if (self.tpr >> 4) >= u32::from(isrv >> 4) {
            self.tpr as u8
        } else {
            isrv & 0xF0
        }
    }

    /// An interrupt message arrives (IOAPIC, MSI, fixed IPI, or a local source): sets its
    /// IRR bit and remembers its trigger mode in the TMR.
    pub fn accept(&mut self, vector: u8, trigger: TriggerMode) -> Acceptance {
        if self.mode() == ApicMode::Disabled || !self.software_enabled() {
            self.stats.interrupts_rejected += 1;
            return Acceptance::Disabled;
        }
        if vector < 16 {
            self.stats.interrupts_rejected += 1;
            self.record_error(ESR_RECV_ILLEGAL);
            return Acceptance::IllegalVector;
        }
        self.set_pending(vector, trigger)
    }

    fn set_pending(&mut self, vector: u8, trigger: TriggerMode) -> Acceptance {
        match trigger {
            TriggerMode::Level => self.tmr.set(vector),
            TriggerMode::Edge => {
                self.tmr.clear(vector);
                false
            }
        };
        if self.irr.set(vector) {
            self.stats.interrupts_coalesced += 1;
            Acceptance::Coalesced
        } else {
            self.stats.interrupts_accepted += 1;
            Acceptance::Accepted
        }
    }

    /// The vector the CPU should take now, if any: the highest pending one whose priority
    /// class (vector >> 4) is above the PPR's class (so TPR and in-service vectors of the
    /// same or higher class hold it back). Whether the CPU can take it (RFLAGS.IF,
    /// interrupt shadow) is the CPU model's business.
    pub fn highest_pending(&self) -> Option<u8> {
        let v = self.irr.highest()?;
        ((v >> 4) > (self.ppr() >> 4)).then_some(v)
    }

    /// The CPU takes the interrupt [`Lapic::highest_pending`] reported: it moves from the
    /// IRR to the ISR. Returns the vector, or `None` if nothing was deliverable (the caller
    /// should not have asked; a real CPU would get the spurious vector).
    pub fn ack(&mut self) -> Option<u8> {
        let v = self.highest_pending()?;
        self.irr.clear(v);
        self.isr.set(v);
        self.stats.interrupts_delivered += 1;
        Some(v)
    }

    /// End of interrupt: retires the highest in-service vector. Used by EOI register
    /// writes, and callable directly by a policy that virtualizes EOI.
    pub fn eoi(&mut self) -> Option<Eoi> {
        let vector = self.isr.highest()?;
        self.isr.clear(vector);
        let trigger = if self.tmr.contains(vector) {
            self.stats.level_eois += 1;
            TriggerMode::Level
        } else {
            TriggerMode::Edge
        };
        self.stats.eois += 1;
        Some(Eoi { vector, trigger })
    }

    /// The vector the LVT timer entry names (a hypervisor model tells timer expiries
    /// from other interrupts with it; not a register access, so not counted).
    pub fn timer_vector(&self) -> u8 {
        (self.lvt[LVT_TIMER] & 0xFF) as u8
    }

    /// Whether vector `vector` is pending in the IRR.
    pub fn is_pending(&self, vector: u8) -> bool {
        self.irr.contains(vector)
    }

    /// Whether vector `vector` is in service (ISR).
    pub fn is_in_service(&self, vector: u8) -> bool {
        self.isr.contains(vector)
    }

    /// Whether this APIC is a target of a physical destination `dest`.
    pub fn accepts_physical(&self, dest: u32) -> bool {
        match self.mode() {
            ApicMode::Disabled => false,
            ApicMode::XApic => dest & 0xFF == 0xFF || dest & 0xFF == self.id & 0xFF,
            ApicMode::X2Apic => dest == u32::MAX || dest == self.id,
        }
    }

    /// Whether this APIC is a target of a logical destination `mask`, by its LDR and (in
    /// xAPIC mode) the DFR's flat or cluster model.
    pub fn accepts_logical(&self, mask: u32) -> bool {
        match self.mode() {
            ApicMode::Disabled => false,
            ApicMode::X2Apic => {
                let ldr = self.x2apic_ldr();
                mask == u32::MAX || ((mask >> 16) == (ldr >> 16) && mask & ldr & 0xFFFF != 0)
            }
            ApicMode::XApic => {
                let mda = mask & 0xFF;
                let ldr = self.ldr >> 24;
                if mda == 0xFF {
                    true
                } else if self.dfr >> 28 == 0xF {
                    mda & ldr != 0
                } else {
                    (mda >> 4) == (ldr >> 4) && mda & ldr & 0xF != 0
                }
            }
        }
    }

    /// The x2APIC LDR, derived from the ID: cluster (ID >> 4) in bits 31..16, one bit for
    /// ID & 15 in bits 15..0.
    fn x2apic_ldr(&self) -> u32 {
        ((self.id >> 4) << 16) | (1 << (self.id & 0xF))
    }

    /// Latches an error for the ESR and raises the LVT error vector if it is unmasked.
    fn record_error(&mut self, bit: u32) {
        self.stats.errors += 1;
        self.esr_pending |= bit;
        let lvt = self.lvt[LVT_ERROR];
        let vector = (lvt & 0xFF) as u8;
        if lvt & LVT_MASKED == 0 && vector >= 16 && self.software_enabled() {
            self.set_pending(vector, TriggerMode::Edge);
        }
    }

    // ----- timer ------------------------------------------------------------------------

    fn timer_mode(&self) -> TimerMode {
        TimerMode::from_lvt(self.lvt[LVT_TIMER])
    }

    /// When the timer next fires (never before `now`: an expiry already due reads as
    /// `now`), or `None` if it is not armed. The simulator core schedules
    /// [`Lapic::advance`] then.
    pub fn next_event(&self, now: u64) -> Option<u64> {
        if self.mode() == ApicMode::Disabled {
            return None;
        }
        self.timer
            .next_expiry(self.timer_mode())
            .map(|t| t.max(now))
    }

    /// Processes timer expiries up to `now`: a due timer raises the LVT timer vector into
    /// the IRR (unless masked; a periodic timer reloads either way). Returns the vector
    /// made pending, if any.
    pub fn advance(&mut self, now: u64) -> Option<u8> {
        if self.mode() == ApicMode::Disabled {
            return None;
        }
        let fired = self.timer.advance(now, self.timer_mode());
        if fired == 0 {
            return None;
        }
        self.stats.timer_fires += fired;
        let lvt = self.lvt[LVT_TIMER];
        if lvt & LVT_MASKED != 0 {
            self.stats.timer_fires_masked += fired;
            return None;
        }
        let vector = (lvt & 0xFF) as u8;
        match self.accept(vector, TriggerMode::Edge) {
            Acceptance::Accepted | Acceptance::Coalesced => Some(vector),
            Acceptance::Disabled | Acceptance::IllegalVector => None,
        }
    }

    // ----- register file shared by both forms ------------------------------------------

    /// Registers that read the same in both forms; `None` for anything form-specific or
    /// absent.
    fn read_common(&self, index: u32, now: u64) -> Option<u32> {
        let slot = |first: u32| (index - first) as usize;
        Some(match index {
            reg::VERSION => VERSION,
            reg::TPR => self.tpr,
            reg::PPR => u32::from(self.ppr()),
            reg::SVR => self.svr,
            reg::ISR0..=reg::ISR7 => self.isr.register(slot(reg::ISR0)),
            reg::TMR0..=reg::TMR7 => self.tmr.register(slot(reg::TMR0)),
            reg::IRR0..=reg::IRR7 => self.irr.register(slot(reg::IRR0)),
            reg::ESR => self.esr,
            reg::ICR_LO => self.icr_low,
            reg::LVT_TIMER..=reg::LVT_ERROR => self.lvt[slot(reg::LVT_TIMER)],
            reg::TIMER_INITIAL => self.timer.initial_count(),
            reg::TIMER_CURRENT => self.timer.current_count(now, self.timer_mode()),
            reg::TIMER_DIVIDE => self.timer.divide_config(),
            _ => return None,
        })
    }

    /// Registers that write the same in both forms (after form-specific validation);
    /// `None` for anything form-specific or not writable.
    fn write_common(&mut self, index: u32, value: u32, now: u64) -> Option<WriteEffect> {
        Some(match index {
            reg::TPR => {
                self.set_tpr(value as u8);
                WriteEffect::None
            }
            reg::EOI => {
                self.stats.eoi_writes += 1;
                self.eoi().map_or(WriteEffect::None, WriteEffect::Eoi)
            }
            reg::SVR => {
                self.stats.svr_writes += 1;
                self.svr = value & 0x3FF;
                if !self.software_enabled() {
                    for lvt in &mut self.lvt {
                        *lvt |= LVT_MASKED;
                    }
                }
                WriteEffect::None
            }
            reg::ESR => {
                self.esr = self.esr_pending;
                self.esr_pending = 0;
                WriteEffect::None
            }
            reg::LVT_TIMER..=reg::LVT_ERROR => {
                let slot = (index - reg::LVT_TIMER) as usize;
                let mut v = value & LVT_WRITABLE[slot];
                if !self.software_enabled() {
                    v |= LVT_MASKED;
                }
                if slot == LVT_TIMER {
                    self.stats.timer_writes += 1;
                    let old = self.timer_mode();
                    self.lvt[slot] = v;
                    self.timer.mode_changed(old, self.timer_mode());
                    return Some(WriteEffect::TimerChanged);
                }
                // Remote IRR (bit 14) and delivery status (bit 12) are read-only.
                self.stats.lvt_writes += 1;
                self.lvt[slot] = v;
                WriteEffect::None
            }
            reg::TIMER_INITIAL => {
                self.stats.timer_writes += 1;
                self.timer.write_initial(value, now, self.timer_mode());
                WriteEffect::TimerChanged
            }
            reg::TIMER_DIVIDE => {
                self.stats.timer_writes += 1;
                self.timer.write_divide(value, now);
                WriteEffect::TimerChanged
            }
            _ => return None,
        })
    }

    /// Sends what the ICR now says (low 32 bits plus the destination field).
    fn send_ipi(&mut self, low: u32, dest: u32) -> WriteEffect {
        self.stats.icr_writes += 1;
        let x2 = self.mode() == ApicMode::X2Apic;
        match decode_icr(self.id, low, dest, x2) {
            Ok(ipi) => {
                let s = &mut self.stats;
                match ipi.delivery {
                    DeliveryMode::Fixed => s.ipis_fixed += 1,
                    DeliveryMode::LowestPriority => s.ipis_lowest_priority += 1,
                    DeliveryMode::Smi => s.ipis_smi += 1,
                    DeliveryMode::Nmi => s.ipis_nmi += 1,
                    DeliveryMode::Init => s.ipis_init += 1,
                    DeliveryMode::StartUp => s.ipis_sipi += 1,
                }
                WriteEffect::Ipi(ipi)
            }
            Err(IcrReject::IllegalVector) => {
                self.stats.ipis_rejected += 1;
                self.record_error(ESR_SEND_ILLEGAL);
                WriteEffect::None
            }
            Err(IcrReject::ReservedDeliveryMode) => {
                self.stats.ipis_rejected += 1;
                WriteEffect::None
            }
        }
    }

    // ----- xAPIC MMIO -------------------------------------------------------------------

    /// A load of `size` bytes at `offset` in the APIC page. Outside xAPIC mode (or past the
    /// page) the page is not decoded: all ones, counted. Registers are 32-bit at 16-byte
    /// alignment; a narrower read inside a register returns its bytes, bytes 4..15 of each
    /// slot read 0, as do absent registers and write-only EOI.
    pub fn mmio_read(&mut self, offset: u64, size: u8, now: u64) -> u64 {
        let ones = match size {
            8.. => u64::MAX,
            s => (1u64 << (u32::from(s) * 8)) - 1,
        };
        if self.mode() != ApicMode::XApic || offset >= APIC_PAGE_SIZE {
            self.stats.mmio_rejected += 1;
            return ones;
        }
        self.stats.mmio_reads += 1;
        let index = (offset >> 4) as u32;
        let within = offset & 0xF;
        let value = match index {
            reg::ID => (self.id & 0xFF) << 24,
            reg::LDR => self.ldr,
            reg::DFR => self.dfr,
            reg::ICR_HI => self.icr_high,
            _ => self.read_common(index, now).unwrap_or(0),
        };
        if within >= 4 {
            return 0;
        }
        (u64::from(value) >> (within * 8)) & ones
    }

    /// A store of `size` bytes of `value` at `offset` in the APIC page. Outside xAPIC mode
    /// it is dropped and counted; anything but a 32-bit store at a register's offset is
    /// ignored and counted. Returns what the caller must do (route an IPI, forward an EOI,
    /// reschedule the timer).
    pub fn mmio_write(&mut self, offset: u64, size: u8, value: u64, now: u64) -> WriteEffect {
        if self.mode() != ApicMode::XApic || offset >= APIC_PAGE_SIZE {
            self.stats.mmio_rejected += 1;
            return WriteEffect::None;
        }
        if size != 4 || offset & 0xF != 0 {
            self.stats.mmio_misaligned_writes += 1;
            return WriteEffect::None;
        }
        self.stats.mmio_writes += 1;
        let value = value as u32;
        let index = (offset >> 4) as u32;
        match index {
            reg::LDR => {
                self.ldr = value & 0xFF00_0000;
                WriteEffect::None
            }
            reg::DFR => {
                self.dfr = value | 0x0FFF_FFFF;
                WriteEffect::None
            }
            reg::ICR_HI => {
                self.icr_high = value & 0xFF00_0000;
                WriteEffect::None
            }
            reg::ICR_LO => {
                // Delivery status (bit 12) is read-only and always idle: sends are instant.
                self.icr_low = value & !(1 << 12);
                self.send_ipi(self.icr_low, self.icr_high >> 24)
            }
            _ => self
                .write_common(index, value, now)
                .unwrap_or(WriteEffect::None),
        }
    }

    // ----- MSRs -------------------------------------------------------------------------

    /// Whether `msr` belongs to the local APIC (APIC_BASE, TSC_DEADLINE, the x2APIC range),
    /// so the caller knows to route RDMSR/WRMSR here.
    pub fn handles_msr(msr: u32) -> bool {
        matches!(
            msr,
            MSR_APIC_BASE | MSR_TSC_DEADLINE | MSR_X2APIC_FIRST..=MSR_X2APIC_LAST
        )
    }

    /// RDMSR of an APIC MSR. Every error is architecturally `#GP(0)` for the caller to
    /// raise: an x2APIC register outside x2APIC mode, an absent or write-only register.
    pub fn read_msr(&mut self, msr: u32, now: u64) -> Result<u64, DeviceError> {
        let r = self.read_msr_inner(msr, now);
        match r {
            Ok(_) => self.stats.msr_reads += 1,
            Err(_) => self.stats.msr_faults += 1,
        }
        r
    }

    fn read_msr_inner(&self, msr: u32, now: u64) -> Result<u64, DeviceError> {
        match msr {
            MSR_APIC_BASE => return Ok(self.apic_base),
            MSR_TSC_DEADLINE => return Ok(self.timer.deadline(self.timer_mode())),
            MSR_X2APIC_FIRST..=MSR_X2APIC_LAST => {}
            _ => return Err(DeviceError::NoSuchMsr { msr }),
        }
        if self.mode() != ApicMode::X2Apic {
            return Err(DeviceError::X2ApicDisabled { msr });
        }
        let index = msr - MSR_X2APIC_FIRST;
        match index {
            reg::ID => Ok(u64::from(self.id)),
            reg::LDR => Ok(u64::from(self.x2apic_ldr())),
            reg::ICR_LO => Ok((u64::from(self.icr_high) << 32) | u64::from(self.icr_low)),
            reg::EOI | reg::SELF_IPI => Err(DeviceError::WriteOnlyMsr { msr }),
            _ => self
                .read_common(index, now)
                .map(u64::from)
                .ok_or(DeviceError::NoSuchMsr { msr }),
        }
    }

    /// WRMSR of an APIC MSR. Errors are architecturally `#GP(0)`: an x2APIC register
    /// outside x2APIC mode, read-only or absent registers, reserved bits (including any
    /// non-zero EOI write), forbidden APIC_BASE mode transitions.
    pub fn write_msr(
        &mut self,
        msr: u32,
        value: u64,
        now: u64,
    ) -> Result<WriteEffect, DeviceError> {
        let r = self.write_msr_inner(msr, value, now);
        match r {
            Ok(_) => self.stats.msr_writes += 1,
            Err(_) => self.stats.msr_faults += 1,
        }
        r
    }

    fn write_msr_inner(
        &mut self,
        msr: u32,
        value: u64,
        now: u64,
    ) -> Result<WriteEffect, DeviceError> {
        match msr {
            MSR_APIC_BASE => return self.write_apic_base(value),
            MSR_TSC_DEADLINE => {
                self.stats.timer_writes += 1;
                self.timer.write_deadline(value, self.timer_mode());
                return Ok(WriteEffect::TimerChanged);
            }
            MSR_X2APIC_FIRST..=MSR_X2APIC_LAST => {}
            _ => return Err(DeviceError::NoSuchMsr { msr }),
        }
        if self.mode() != ApicMode::X2Apic {
            return Err(DeviceError::X2ApicDisabled { msr });
        }
        let index = msr - MSR_X2APIC_FIRST;
        if index == reg::ICR_LO {
            if value & X2APIC_ICR_RESERVED != 0 {
                return Err(DeviceError::ReservedBits { msr, value });
            }
            self.icr_low = value as u32;
            self.icr_high = (value >> 32) as u32;
            return Ok(self.send_ipi(self.icr_low, self.icr_high));
        }
        let reserved = match index {
            reg::EOI | reg::ESR => u64::MAX,
            reg::TPR | reg::SELF_IPI => !0xFF,
            _ => 0xFFFF_FFFF_0000_0000,
        };
        if value & reserved != 0 {
            return Err(DeviceError::ReservedBits { msr, value });
        }
        let value = value as u32;
        match index {
            reg::ID
            | reg::VERSION
            | reg::PPR
            | reg::LDR
            | reg::ISR0..=reg::IRR7
            | reg::TIMER_CURRENT => Err(DeviceError::ReadOnlyMsr { msr }),
            reg::SELF_IPI => {
                self.stats.ipis_self += 1;
                // A fixed, edge, level-assert IPI to self.
                Ok(self.send_ipi(value | (1 << 14) | (1 << 18), 0))
            }
            reg::APR | reg::RRD | reg::DFR | reg::ICR_HI => Err(DeviceError::NoSuchMsr { msr }),
            _ => self
                .write_common(index, value, now)
                .ok_or(DeviceError::NoSuchMsr { msr }),
        }
    }

    /// IA32_APIC_BASE: relocation and the enable bits, with the SDM's transition rules
    /// (x2APIC -> xAPIC and disabled -> x2APIC are refused; going to disabled resets the
    /// APIC's registers).
    fn write_apic_base(&mut self, value: u64) -> Result<WriteEffect, DeviceError> {
        let msr = MSR_APIC_BASE;
        if value & BASE_RESERVED != 0 {
            return Err(DeviceError::ReservedBits { msr, value });
        }
        let invalid = DeviceError::InvalidModeTransition {
            from: self.apic_base,
            to: value,
        };
        let new_mode = match (value & BASE_EN != 0, value & BASE_EXTD != 0) {
            (false, true) => return Err(invalid),
            (false, false) => ApicMode::Disabled,
            (true, false) => ApicMode::XApic,
            (true, true) => ApicMode::X2Apic,
        };
        let old_mode = self.mode();
        match (old_mode, new_mode) {
            (ApicMode::X2Apic, ApicMode::XApic) | (ApicMode::Disabled, ApicMode::X2Apic) => {
                return Err(invalid)
            }
            _ => {}
        }
        self.apic_base = value;
        if new_mode == ApicMode::Disabled && old_mode != ApicMode::Disabled {
            self.reset_registers();
            return Ok(WriteEffect::TimerChanged);
        }
        Ok(WriteEffect::None)
    }
}
