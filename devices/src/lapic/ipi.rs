//! Inter-processor interrupts as data: what an ICR write asks for.
//!
//! The local APIC decodes the ICR into an [`Ipi`] and hands it back; it does not know the
//! other CPUs. The simulator core routes it (matching destinations with
//! [`Lapic::accepts_physical`](super::Lapic::accepts_physical) /
//! [`Lapic::accepts_logical`](super::Lapic::accepts_logical)) and charges the policy's
//! cost: a VM exit, an event-channel hypercall, or IPI virtualization.

use serde::Serialize;

/// Who an IPI is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Destination {
    /// The APIC whose ID equals this (8-bit in xAPIC mode, 32-bit in x2APIC mode).
    Physical(u32),
    /// Every APIC whose logical destination (LDR/DFR) matches this mask.
    Logical(u32),
    /// The sending APIC only (shorthand 01, or the x2APIC SELF_IPI register).
    SelfOnly,
    /// Every APIC including the sender (shorthand 10, or the physical broadcast ID).
    AllIncludingSelf,
    /// Every APIC except the sender (shorthand 11).
    AllExcludingSelf,
}

/// The ICR delivery mode (bits 10..8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum DeliveryMode {
    /// 000: the vector, into the target's IRR.
    Fixed,
    /// 001: the vector to the lowest-priority target of the set (the router picks one).
    LowestPriority,
    /// 010: a system-management interrupt.
    Smi,
    /// 100: a non-maskable interrupt (vector ignored).
    Nmi,
    /// 101: INIT (reset the target into wait-for-SIPI; a level de-assert when `level` is
    /// false and the trigger is level, which modern CPUs ignore).
    Init,
    /// 110: start-up IPI; the target starts in real mode at `vector << 12`.
    StartUp,
}

/// Edge or level triggering, as carried by an interrupt message and remembered in the TMR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TriggerMode {
    /// Edge-triggered: nothing to tell the source at EOI.
    Edge,
    /// Level-triggered: the source (an IOAPIC pin) must be told at EOI.
    Level,
}

/// One IPI an ICR (or SELF_IPI) write produced, for the simulator core to route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Ipi {
    /// APIC ID of the sender, so the router can resolve `SelfOnly` and `AllExcludingSelf`.
    pub source: u32,
    /// Who it is for.
    pub dest: Destination,
    /// Vector (the start page for a SIPI; ignored for NMI and INIT).
    pub vector: u8,
    /// What kind of interrupt it is.
    pub delivery: DeliveryMode,
    /// The ICR level bit (14): false only for an INIT level de-assert.
    pub level: bool,
    /// The ICR trigger-mode bit (15).
    pub trigger: TriggerMode,
}

/// Why an ICR write sent nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IcrReject {
    /// Delivery mode 011 or 111.
    ReservedDeliveryMode,
    /// A fixed or lowest-priority vector below 16 (the APIC records a send-illegal-vector
    /// error instead).
    IllegalVector,
}

/// Decodes the low 32 ICR bits plus the already-extracted destination field. `x2apic`
/// selects which all-ones destination means broadcast.
pub(crate) fn decode_icr(source: u32, low: u32, dest: u32, x2apic: bool) -> Result<Ipi, IcrReject> {
    let vector = (low & 0xFF) as u8;
    let delivery = match (low >> 8) & 7 {
        0 => DeliveryMode::Fixed,
        1 => DeliveryMode::LowestPriority,
        2 => DeliveryMode::Smi,
        4 => DeliveryMode::Nmi,
        5 => DeliveryMode::Init,
        6 => DeliveryMode::StartUp,
        _ => return Err(IcrReject::ReservedDeliveryMode),
    };
    if matches!(delivery, DeliveryMode::Fixed | DeliveryMode::LowestPriority) && vector < 16 {
        return Err(IcrReject::IllegalVector);
    }
    let logical = low & (1 << 11) != 0;
    let broadcast = if x2apic { u32::MAX } else { 0xFF };
    let dest = match (low >> 18) & 3 {
        1 => Destination::SelfOnly,
        2 => Destination::AllIncludingSelf,
        3 => Destination::AllExcludingSelf,
        _ if !logical && dest == broadcast => Destination::AllIncludingSelf,
        _ if logical => Destination::Logical(dest),
        _ => Destination::Physical(dest),
    };
    Ok(Ipi {
        source,
        dest,
        vector,
        delivery,
        level: low & (1 << 14) != 0,
        trigger: if low & (1 << 15) != 0 {
            TriggerMode::Level
        } else {
            TriggerMode::Edge
        },
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sipi_to_physical_id() {
        let ipi = decode_icr(0, 0x0000_4698, 2, false).unwrap();
        assert_eq!(
            ipi,
            Ipi {
                source: 0,
                dest: Destination::Physical(2),
                vector: 0x98,
                delivery: DeliveryMode::StartUp,
                level: true,
                trigger: TriggerMode::Edge,
            }
        );
    }

    #[test]
    fn shorthands_and_broadcast() {
        assert_eq!(
            decode_icr(1, 0x000C_00F0, 7, false).unwrap().dest,
            Destination::AllExcludingSelf
        );
        assert_eq!(
            decode_icr(1, 0x0004_00F0, 7, true).unwrap().dest,
            Destination::SelfOnly
        );
        assert_eq!(
            decode_icr(1, 0x0000_00F0, 0xFF, false).unwrap().dest,
            Destination::AllIncludingSelf
        );
        // 0xFF is an ordinary ID in x2APIC mode.
        assert_eq!(
            decode_icr(1, 0x0000_00F0, 0xFF, true).unwrap().dest,
            Destination::Physical(0xFF)
        );
        assert_eq!(
            decode_icr(1, 0x0000_08F0, 0x3, false).unwrap().dest,
            Destination::Logical(3)
        );
    }

    #[test]
    fn init_deassert_and_rejections() {
        let ipi = decode_icr(0, 0x0000_8500, 1, false).unwrap();
        assert_eq!(
            (ipi.delivery, ipi.level, ipi.trigger),
            (DeliveryMode::Init, false, TriggerMode::Level)
        );
        assert_eq!(
            decode_icr(0, 0x0000_0300, 1, false),
            Err(IcrReject::ReservedDeliveryMode)
        );
        assert_eq!(
            decode_icr(0, 0x0000_000F, 1, false),
            Err(IcrReject::IllegalVector)
        );
        // NMI ignores the vector, so a zero vector is fine.
        assert_eq!(
            decode_icr(0, 0x0000_0400, 1, false).unwrap().delivery,
            DeliveryMode::Nmi
        );
    }
}
