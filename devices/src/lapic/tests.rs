//! Behaviour of the local APIC, one property per test, exact values.

#![allow(clippy::unwrap_used)]

use super::*;

const SVR: u64 = 0x0F0;
const TPR: u64 = 0x080;
const PPR: u64 = 0x0A0;
const EOI: u64 = 0x0B0;
const ESR: u64 = 0x280;
const ICR_LO: u64 = 0x300;
const ICR_HI: u64 = 0x310;
const LVT_TIMER: u64 = 0x320;
const LVT_ERROR: u64 = 0x370;
const TIMER_INITIAL: u64 = 0x380;
const TIMER_CURRENT: u64 = 0x390;
const TIMER_DIVIDE: u64 = 0x3E0;
const PERIODIC: u64 = 1 << 17;
const TSC_DEADLINE: u64 = 2 << 17;
const MASKED: u64 = 1 << 16;

/// APIC `id`, 4 core ticks per timer-clock tick, software-enabled in xAPIC mode.
fn apic_with_id(id: u32) -> Lapic {
    let mut a = Lapic::new(LapicConfig {
        apic_id: id,
        bsp: id == 0,
        core_ticks_per_timer_tick: 4,
    })
    .unwrap();
    assert_eq!(a.mmio_write(SVR, 4, 0x1FF, 0), WriteEffect::None);
    a
}

fn apic() -> Lapic {
    apic_with_id(0)
}

/// Switches `a` to x2APIC mode through APIC_BASE.
fn to_x2apic(a: &mut Lapic) {
    let base = a.read_msr(MSR_APIC_BASE, 0).unwrap();
    a.write_msr(MSR_APIC_BASE, base | BASE_EXTD, 0).unwrap();
    assert_eq!(a.mode(), ApicMode::X2Apic);
}

fn r32(a: &mut Lapic, offset: u64, now: u64) -> u64 {
    a.mmio_read(offset, 4, now)
}

#[test]
fn zero_timer_rate_is_refused() {
    let cfg = LapicConfig {
        apic_id: 0,
        bsp: true,
        core_ticks_per_timer_tick: 0,
    };
    assert_eq!(Lapic::new(cfg).unwrap_err(), DeviceError::ZeroTimerRate);
}

#[test]
fn power_on_registers() {
    let mut a = Lapic::new(LapicConfig {
        apic_id: 3,
        bsp: false,
        core_ticks_per_timer_tick: 1,
    })
    .unwrap();
    assert_eq!(a.mode(), ApicMode::XApic);
    assert_eq!(a.read_msr(MSR_APIC_BASE, 0).unwrap(), 0xFEE0_0800);
    assert_eq!(a.mmio_base(), 0xFEE0_0000);
    assert_eq!(r32(&mut a, 0x020, 0), 3 << 24);
    assert_eq!(r32(&mut a, 0x030, 0), 0x0005_0014);
    assert_eq!(r32(&mut a, SVR, 0), 0xFF);
    assert_eq!(r32(&mut a, 0x0E0, 0), 0xFFFF_FFFF);
    assert_eq!(r32(&mut a, LVT_TIMER, 0), 0x1_0000);
    assert_eq!(r32(&mut a, 0x360, 0), 0x1_0000);
}

#[test]
fn software_disabled_apic_refuses_interrupts() {
    let mut a = Lapic::new(LapicConfig {
        apic_id: 0,
        bsp: true,
        core_ticks_per_timer_tick: 1,
    })
    .unwrap();
    assert_eq!(a.accept(0x40, TriggerMode::Edge), Acceptance::Disabled);
    a.mmio_write(SVR, 4, 0x1FF, 0);
    assert_eq!(a.accept(0x40, TriggerMode::Edge), Acceptance::Accepted);
    a.mmio_write(LVT_TIMER, 4, 0xEF, 0);
    assert_eq!(r32(&mut a, LVT_TIMER, 0), 0xEF);
    // Software disable: acceptance stops and every LVT entry is forced masked.
    a.mmio_write(SVR, 4, 0x0FF, 0);
    assert_eq!(a.accept(0x41, TriggerMode::Edge), Acceptance::Disabled);
    assert_eq!(r32(&mut a, LVT_TIMER, 0), 0x1_00EF);
    a.mmio_write(LVT_TIMER, 4, 0xEF, 0);
    assert_eq!(r32(&mut a, LVT_TIMER, 0), 0x1_00EF);
    assert_eq!(a.stats().interrupts_rejected, 2);
    assert_eq!(a.stats().interrupts_accepted, 1);
}

#[test]
fn tpr_masks_priority_classes() {
    let mut a = apic();
    a.accept(0x45, TriggerMode::Edge);
    a.mmio_write(TPR, 4, 0x40, 0);
    assert_eq!(
        a.highest_pending(),
        None,
        "class 4 is not above TPR class 4"
    );
    a.mmio_write(TPR, 4, 0x3F, 0);
    assert_eq!(a.highest_pending(), Some(0x45));
    a.set_tpr(0x50);
    assert_eq!(a.highest_pending(), None);
    a.accept(0x61, TriggerMode::Edge);
    assert_eq!(a.highest_pending(), Some(0x61));
    assert_eq!(r32(&mut a, PPR, 0), 0x50);
    assert_eq!(a.stats().tpr_writes, 3);
}

#[test]
fn irr_isr_eoi_with_nested_priorities() {
    let mut a = apic();
    a.accept(0x30, TriggerMode::Edge);
    assert_eq!(a.ack(), Some(0x30));
    assert_eq!(
        r32(&mut a, 0x100 + 0x10, 0),
        1 << 0x10,
        "ISR register 1 has vector 0x30"
    );
    assert_eq!(a.ppr(), 0x30);
    // Same class as the one in service: held back. Higher class: nests.
    a.accept(0x35, TriggerMode::Edge);
    assert_eq!(a.highest_pending(), None);
    a.accept(0x80, TriggerMode::Edge);
    assert_eq!(a.highest_pending(), Some(0x80));
    assert_eq!(a.ack(), Some(0x80));
    assert_eq!(a.ppr(), 0x80);
    assert_eq!(a.ack(), None);
    // EOI retires the highest in-service vector first.
    assert_eq!(
        a.mmio_write(EOI, 4, 0, 0),
        WriteEffect::Eoi(Eoi {
            vector: 0x80,
            trigger: TriggerMode::Edge
        })
    );
    assert_eq!(a.highest_pending(), None, "0x30 still in service");
    assert_eq!(
        a.mmio_write(EOI, 4, 0, 0),
        WriteEffect::Eoi(Eoi {
            vector: 0x30,
            trigger: TriggerMode::Edge
        })
    );
    assert_eq!(a.ack(), Some(0x35));
    assert_eq!(a.stats().interrupts_delivered, 3);
    assert_eq!(a.stats().eoi_writes, 2);
    assert_eq!(a.stats().eois, 2);
}

#[test]
fn eoi_reports_level_triggered_vector() {
    let mut a = apic();
    a.accept(0x51, TriggerMode::Level);
    assert_eq!(
        r32(&mut a, 0x180 + 0x20, 0),
        1 << 0x11,
        "TMR register 2 has vector 0x51"
    );
    a.ack();
    assert_eq!(
        a.mmio_write(EOI, 4, 0, 0),
        WriteEffect::Eoi(Eoi {
            vector: 0x51,
            trigger: TriggerMode::Level
        })
    );
    assert_eq!(a.stats().level_eois, 1);
    // EOI with nothing in service does nothing but is still counted as a write.
    assert_eq!(a.mmio_write(EOI, 4, 0, 0), WriteEffect::None);
    assert_eq!(a.stats().eoi_writes, 2);
}

#[test]
fn repeated_vector_coalesces_in_irr() {
    let mut a = apic();
    assert_eq!(a.accept(0x40, TriggerMode::Edge), Acceptance::Accepted);
    assert_eq!(a.accept(0x40, TriggerMode::Edge), Acceptance::Coalesced);
    assert_eq!(r32(&mut a, 0x200 + 0x20, 0), 1);
    assert_eq!(a.stats().interrupts_coalesced, 1);
}

#[test]
fn illegal_vector_is_refused_and_latched_in_esr() {
    let mut a = apic();
    a.mmio_write(LVT_ERROR, 4, 0xFE, 0);
    assert_eq!(a.accept(0x0E, TriggerMode::Edge), Acceptance::IllegalVector);
    assert_eq!(a.highest_pending(), Some(0xFE), "LVT error vector raised");
    assert_eq!(
        r32(&mut a, ESR, 0),
        0,
        "ESR shows errors only after a write"
    );
    a.mmio_write(ESR, 4, 0, 0);
    assert_eq!(r32(&mut a, ESR, 0), 0x40);
    a.mmio_write(ESR, 4, 0, 0);
    assert_eq!(r32(&mut a, ESR, 0), 0);
}

/// LVT timer vector 0xEF; divide by 2 (encoding 0); 4 core ticks per timer tick.
fn start_timer(a: &mut Lapic, lvt_extra: u64, start: u64) {
    assert_eq!(
        a.mmio_write(LVT_TIMER, 4, 0xEF | lvt_extra, start),
        WriteEffect::TimerChanged
    );
    a.mmio_write(TIMER_DIVIDE, 4, 0b0000, start);
    assert_eq!(
        a.mmio_write(TIMER_INITIAL, 4, 1000, start),
        WriteEffect::TimerChanged
    );
}

#[test]
fn one_shot_fires_exactly_once_at_count_times_divide_times_rate() {
    let mut a = apic();
    start_timer(&mut a, 0, 100);
    // 1000 counts x divide 2 x 4 core ticks = 8000.
    assert_eq!(a.next_event(100), Some(8100));
    assert_eq!(a.advance(8099), None);
    assert!(!a.is_pending(0xEF));
    assert_eq!(a.advance(8100), Some(0xEF));
    assert!(a.is_pending(0xEF));
    assert_eq!(a.next_event(8100), None);
    assert_eq!(a.advance(20_000), None);
    assert_eq!(r32(&mut a, TIMER_CURRENT, 20_000), 0);
    assert_eq!(a.stats().timer_fires, 1);
    assert_eq!(a.stats().timer_writes, 3);
}

#[test]
fn current_count_read_mid_way() {
    let mut a = apic();
    start_timer(&mut a, 0, 100);
    assert_eq!(r32(&mut a, TIMER_CURRENT, 100), 1000);
    assert_eq!(r32(&mut a, TIMER_CURRENT, 4100), 500);
    assert_eq!(r32(&mut a, TIMER_CURRENT, 4107), 500);
    assert_eq!(r32(&mut a, TIMER_CURRENT, 4108), 499);
    assert_eq!(r32(&mut a, TIMER_CURRENT, 8100), 0);
    assert_eq!(r32(&mut a, TIMER_INITIAL, 8100), 1000);
}

#[test]
fn periodic_reloads_and_fires_every_period() {
    let mut a = apic();
    start_timer(&mut a, PERIODIC, 100);
    assert_eq!(a.advance(8100), Some(0xEF));
    assert_eq!(a.next_event(8100), Some(16_100));
    assert_eq!(r32(&mut a, TIMER_CURRENT, 8900), 900);
    assert_eq!(a.ack(), Some(0xEF));
    a.eoi();
    assert_eq!(a.advance(16_100), Some(0xEF));
    assert_eq!(a.next_event(16_100), Some(24_100));
    assert_eq!(a.stats().timer_fires, 2);
}

#[test]
fn masked_periodic_timer_reloads_without_raising() {
    let mut a = apic();
    start_timer(&mut a, PERIODIC | MASKED, 100);
    assert_eq!(a.advance(8100), None);
    assert_eq!(a.highest_pending(), None);
    assert_eq!(a.next_event(8100), Some(16_100));
    assert_eq!(a.stats().timer_fires, 1);
    assert_eq!(a.stats().timer_fires_masked, 1);
    // Unmasking lets the next period through.
    a.mmio_write(LVT_TIMER, 4, 0xEF | PERIODIC, 9000);
    assert_eq!(a.advance(16_100), Some(0xEF));
}

#[test]
fn zero_initial_count_stops_the_timer() {
    let mut a = apic();
    start_timer(&mut a, 0, 100);
    a.mmio_write(TIMER_INITIAL, 4, 0, 200);
    assert_eq!(a.next_event(200), None);
    assert_eq!(a.advance(9000), None);
}

#[test]
fn tsc_deadline_fires_when_tsc_reaches_it_and_disarms() {
    let mut a = apic();
    a.mmio_write(LVT_TIMER, 4, 0xEF | TSC_DEADLINE, 0);
    assert_eq!(
        a.write_msr(MSR_TSC_DEADLINE, 5000, 0).unwrap(),
        WriteEffect::TimerChanged
    );
    assert_eq!(a.read_msr(MSR_TSC_DEADLINE, 0).unwrap(), 5000);
    assert_eq!(a.next_event(0), Some(5000));
    assert_eq!(a.advance(4999), None);
    assert_eq!(a.advance(5000), Some(0xEF));
    assert_eq!(a.read_msr(MSR_TSC_DEADLINE, 5000).unwrap(), 0);
    assert_eq!(a.next_event(5000), None);
    // Initial-count writes are ignored and the current count reads 0 in this mode.
    a.mmio_write(TIMER_INITIAL, 4, 1000, 5000);
    assert_eq!(r32(&mut a, TIMER_INITIAL, 5000), 0);
    assert_eq!(a.next_event(5000), None);
}

#[test]
fn tsc_deadline_write_of_zero_disarms() {
    let mut a = apic();
    a.mmio_write(LVT_TIMER, 4, 0xEF | TSC_DEADLINE, 0);
    a.write_msr(MSR_TSC_DEADLINE, 7000, 0).unwrap();
    a.write_msr(MSR_TSC_DEADLINE, 0, 10).unwrap();
    assert_eq!(a.next_event(10), None);
    assert_eq!(a.advance(7000), None);
}

#[test]
fn tsc_deadline_in_the_past_is_due_now() {
    let mut a = apic();
    a.mmio_write(LVT_TIMER, 4, 0xEF | TSC_DEADLINE, 0);
    a.write_msr(MSR_TSC_DEADLINE, 50, 100).unwrap();
    assert_eq!(a.next_event(100), Some(100));
    assert_eq!(a.advance(100), Some(0xEF));
}

#[test]
fn tsc_deadline_msr_is_inert_outside_deadline_mode() {
    let mut a = apic();
    a.mmio_write(LVT_TIMER, 4, 0xEF, 0);
    a.write_msr(MSR_TSC_DEADLINE, 5000, 0).unwrap();
    assert_eq!(a.read_msr(MSR_TSC_DEADLINE, 0).unwrap(), 0);
    assert_eq!(a.next_event(0), None);
}

#[test]
fn switching_into_deadline_mode_disarms_a_running_count() {
    let mut a = apic();
    start_timer(&mut a, 0, 100);
    a.mmio_write(LVT_TIMER, 4, 0xEF | TSC_DEADLINE, 200);
    assert_eq!(a.next_event(200), None);
}

#[test]
fn xapic_and_x2apic_icr_produce_the_same_ipi() {
    let expected = Ipi {
        source: 1,
        dest: Destination::Physical(3),
        vector: 0x41,
        delivery: DeliveryMode::Fixed,
        level: true,
        trigger: TriggerMode::Edge,
    };
    let mut x = apic_with_id(1);
    assert_eq!(x.mmio_write(ICR_HI, 4, 3 << 24, 0), WriteEffect::None);
    assert_eq!(
        x.mmio_write(ICR_LO, 4, 0x4041, 0),
        WriteEffect::Ipi(expected)
    );
    let mut x2 = apic_with_id(1);
    to_x2apic(&mut x2);
    assert_eq!(
        x2.write_msr(0x830, (3 << 32) | 0x4041, 0).unwrap(),
        WriteEffect::Ipi(expected)
    );
    assert_eq!(x2.read_msr(0x830, 0).unwrap(), (3 << 32) | 0x4041);
    assert_eq!(x.stats().icr_writes, 1);
    assert_eq!(x2.stats().ipis_fixed, 1);
}

#[test]
fn init_sipi_sequence_is_counted_by_kind() {
    let mut a = apic();
    a.mmio_write(ICR_HI, 4, 1 << 24, 0);
    let init = a.mmio_write(ICR_LO, 4, 0x4500, 0);
    let sipi = a.mmio_write(ICR_LO, 4, 0x4698, 0);
    assert!(matches!(
        init,
        WriteEffect::Ipi(Ipi {
            delivery: DeliveryMode::Init,
            ..
        })
    ));
    assert!(matches!(
        sipi,
        WriteEffect::Ipi(Ipi {
            delivery: DeliveryMode::StartUp,
            vector: 0x98,
            dest: Destination::Physical(1),
            ..
        })
    ));
    assert_eq!(
        r32(&mut a, ICR_LO, 0) & (1 << 12),
        0,
        "delivery status idle"
    );
    assert_eq!((a.stats().ipis_init, a.stats().ipis_sipi), (1, 1));
}

#[test]
fn illegal_ipi_vector_sends_nothing_and_sets_send_error() {
    let mut a = apic();
    assert_eq!(a.mmio_write(ICR_LO, 4, 0x000C_0005, 0), WriteEffect::None);
    a.mmio_write(ESR, 4, 0, 0);
    assert_eq!(r32(&mut a, ESR, 0), 0x20);
    assert_eq!(a.stats().ipis_rejected, 1);
}

#[test]
fn x2apic_self_ipi_msr() {
    let mut a = apic_with_id(5);
    to_x2apic(&mut a);
    let eff = a.write_msr(0x83F, 0xD0, 0).unwrap();
    assert_eq!(
        eff,
        WriteEffect::Ipi(Ipi {
            source: 5,
            dest: Destination::SelfOnly,
            vector: 0xD0,
            delivery: DeliveryMode::Fixed,
            level: true,
            trigger: TriggerMode::Edge,
        })
    );
    assert_eq!(a.stats().ipis_self, 1);
    assert_eq!(
        a.read_msr(0x83F, 0),
        Err(DeviceError::WriteOnlyMsr { msr: 0x83F })
    );
    assert!(matches!(
        a.write_msr(0x83F, 0x100, 0),
        Err(DeviceError::ReservedBits { .. })
    ));
}

#[test]
fn x2apic_mode_rejects_mmio() {
    let mut a = apic();
    to_x2apic(&mut a);
    assert_eq!(a.mmio_read(0x020, 4, 0), 0xFFFF_FFFF);
    assert_eq!(a.mmio_read(0x020, 1, 0), 0xFF);
    assert_eq!(a.mmio_write(ICR_LO, 4, 0x4041, 0), WriteEffect::None);
    assert_eq!(a.stats().mmio_rejected, 3);
    assert_eq!(a.stats().icr_writes, 0);
}

#[test]
fn xapic_mode_rejects_x2apic_msrs() {
    let mut a = apic();
    assert_eq!(
        a.read_msr(0x802, 0),
        Err(DeviceError::X2ApicDisabled { msr: 0x802 })
    );
    assert_eq!(
        a.write_msr(0x80B, 0, 0),
        Err(DeviceError::X2ApicDisabled { msr: 0x80B })
    );
    assert_eq!(a.stats().msr_faults, 2);
    assert!(Lapic::handles_msr(0x830));
    assert!(!Lapic::handles_msr(0x10));
    assert_eq!(
        a.read_msr(0x10, 0),
        Err(DeviceError::NoSuchMsr { msr: 0x10 })
    );
}

#[test]
fn x2apic_eoi_must_write_zero() {
    let mut a = apic();
    to_x2apic(&mut a);
    a.accept(0x40, TriggerMode::Edge);
    a.ack();
    assert_eq!(
        a.write_msr(0x80B, 1, 0),
        Err(DeviceError::ReservedBits {
            msr: 0x80B,
            value: 1
        })
    );
    assert!(a.is_in_service(0x40));
    assert_eq!(
        a.write_msr(0x80B, 0, 0).unwrap(),
        WriteEffect::Eoi(Eoi {
            vector: 0x40,
            trigger: TriggerMode::Edge
        })
    );
    assert_eq!(
        a.read_msr(0x80B, 0),
        Err(DeviceError::WriteOnlyMsr { msr: 0x80B })
    );
}

#[test]
fn x2apic_id_ldr_and_read_only_registers() {
    let mut a = apic_with_id(0x23);
    to_x2apic(&mut a);
    assert_eq!(a.read_msr(0x802, 0).unwrap(), 0x23);
    assert_eq!(a.read_msr(0x80D, 0).unwrap(), (2 << 16) | (1 << 3));
    assert_eq!(
        a.write_msr(0x802, 0, 0),
        Err(DeviceError::ReadOnlyMsr { msr: 0x802 })
    );
    assert_eq!(
        a.read_msr(0x80E, 0),
        Err(DeviceError::NoSuchMsr { msr: 0x80E })
    );
    assert_eq!(
        a.read_msr(0x831, 0),
        Err(DeviceError::NoSuchMsr { msr: 0x831 })
    );
    assert!(a.accepts_logical((2 << 16) | 0b1000));
    assert!(!a.accepts_logical((3 << 16) | 0b1000));
    assert!(a.accepts_physical(0x23));
    assert!(!a.accepts_physical(0x24));
}

#[test]
fn x2apic_timer_through_msrs() {
    let mut a = apic();
    to_x2apic(&mut a);
    a.write_msr(0x832, 0xEF, 100).unwrap();
    a.write_msr(0x83E, 0, 100).unwrap();
    a.write_msr(0x838, 1000, 100).unwrap();
    assert_eq!(a.next_event(100), Some(8100));
    assert_eq!(a.read_msr(0x839, 4100).unwrap(), 500);
    assert!(matches!(
        a.write_msr(0x838, 1 << 32, 0),
        Err(DeviceError::ReservedBits { .. })
    ));
}

#[test]
fn apic_base_mode_transitions() {
    let mut a = apic();
    let base = a.read_msr(MSR_APIC_BASE, 0).unwrap();
    // Reserved bit 9, and x2APIC enable without global enable.
    assert!(matches!(
        a.write_msr(MSR_APIC_BASE, base | 1 << 9, 0),
        Err(DeviceError::ReservedBits { .. })
    ));
    assert!(matches!(
        a.write_msr(MSR_APIC_BASE, (base & !BASE_EN) | BASE_EXTD, 0),
        Err(DeviceError::InvalidModeTransition { .. })
    ));
    to_x2apic(&mut a);
    // x2APIC straight back to xAPIC is refused.
    assert!(a.write_msr(MSR_APIC_BASE, base, 0).is_err());
    assert_eq!(a.mode(), ApicMode::X2Apic);
    // Via disabled it works, and disabling resets the registers.
    a.write_msr(MSR_APIC_BASE, base & !BASE_EN, 0).unwrap();
    assert_eq!(a.mode(), ApicMode::Disabled);
    assert_eq!(a.mmio_read(SVR, 4, 0), 0xFFFF_FFFF);
    // Disabled straight to x2APIC is refused.
    assert!(a.write_msr(MSR_APIC_BASE, base | BASE_EXTD, 0).is_err());
    a.write_msr(MSR_APIC_BASE, base, 0).unwrap();
    assert_eq!(r32(&mut a, SVR, 0), 0xFF);
}

#[test]
fn relocated_base_moves_the_page() {
    let mut a = apic();
    a.write_msr(MSR_APIC_BASE, 0xFED0_0000 | BASE_EN | BASE_BSP, 0)
        .unwrap();
    assert_eq!(a.mmio_base(), 0xFED0_0000);
}

#[test]
fn disabled_apic_refuses_interrupts_and_has_no_timer() {
    let mut a = apic();
    start_timer(&mut a, 0, 0);
    a.write_msr(MSR_APIC_BASE, DEFAULT_APIC_BASE, 0).unwrap();
    assert_eq!(a.accept(0x40, TriggerMode::Edge), Acceptance::Disabled);
    assert_eq!(a.next_event(0), None);
    assert_eq!(a.advance(100_000), None);
}

#[test]
fn mmio_narrow_and_misaligned_accesses() {
    let mut a = apic();
    a.mmio_write(TPR, 4, 0x20, 0);
    assert_eq!(a.mmio_read(TPR, 1, 0), 0x20);
    assert_eq!(
        a.mmio_read(0x030 + 2, 1, 0),
        0x05,
        "byte 2 of the version register"
    );
    assert_eq!(a.mmio_read(TPR + 4, 4, 0), 0);
    assert_eq!(a.mmio_write(TPR, 1, 0x30, 0), WriteEffect::None);
    assert_eq!(a.mmio_write(TPR + 4, 4, 0x30, 0), WriteEffect::None);
    assert_eq!(a.tpr(), 0x20);
    assert_eq!(a.stats().mmio_misaligned_writes, 2);
    assert_eq!(a.mmio_read(0x1000, 4, 0), 0xFFFF_FFFF);
}

#[test]
fn xapic_logical_destination_flat_and_cluster() {
    let mut a = apic();
    a.mmio_write(0x0D0, 4, 0x0400_0000, 0); // LDR: bit 2
    assert!(a.accepts_logical(0x04));
    assert!(a.accepts_logical(0x06));
    assert!(!a.accepts_logical(0x01));
    a.mmio_write(0x0E0, 4, 0x0FFF_FFFF, 0); // DFR: cluster model
    a.mmio_write(0x0D0, 4, 0x1200_0000, 0); // cluster 1, member bit 1
    assert!(a.accepts_logical(0x12));
    assert!(!a.accepts_logical(0x22));
    assert!(a.accepts_logical(0xFF));
    assert!(a.accepts_physical(0));
    assert!(a.accepts_physical(0xFF));
}

#[test]
fn init_reset_keeps_id_and_base() {
    let mut a = apic_with_id(2);
    a.accept(0x40, TriggerMode::Edge);
    a.init_reset();
    assert_eq!(a.id(), 2);
    assert_eq!(a.mode(), ApicMode::XApic);
    assert!(!a.software_enabled());
    assert!(!a.is_pending(0x40));
}
