//! Interrupt messages as data: what an IOAPIC redirection entry or an MSI/MSI-X write
//! asks the local APICs to do.
//!
//! On real hardware both reach the local APICs as a message on the system bus (an MSI is
//! literally a memory write to 0xFEEx_xxxx). Here the IOAPIC and the MSI models return an
//! [`InterruptMessage`] and the simulator core routes it, as it routes the local APIC's
//! [`Ipi`](crate::lapic::Ipi)s: for a fixed or lowest-priority message it finds the
//! targets with [`InterruptMessage::is_for`] and calls
//! [`Lapic::accept`](crate::lapic::Lapic::accept) with the vector and trigger; NMI, INIT,
//! SMI and ExtINT go to the CPU model. Whether that costs a VM exit, an event-channel
//! upcall or a posted interrupt is the policy's business.

use crate::lapic::{ApicMode, Lapic, TriggerMode};
use serde::Serialize;

/// Who a message is for, in the sense of the destination-mode bit both the IOAPIC
/// redirection entry (bit 11) and the MSI address (bit 2) carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum MessageDestination {
    /// The APIC whose ID is this (0xFF in xAPIC mode is a broadcast).
    Physical(u32),
    /// Every APIC whose logical destination (LDR, and DFR in xAPIC mode) matches this mask.
    Logical(u32),
}

/// The delivery-mode field (three bits, the same encoding in an IOAPIC redirection entry
/// and in MSI data bits 10..8). 011 and 110 are reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum MessageDelivery {
    /// 000: the vector, into the target's IRR.
    Fixed,
    /// 001: the vector to the lowest-priority APIC of the destination set (the router
    /// picks one).
    LowestPriority,
    /// 010: a system-management interrupt (vector ignored).
    Smi,
    /// 100: a non-maskable interrupt (vector ignored).
    Nmi,
    /// 101: INIT (vector ignored).
    Init,
    /// 111: an interrupt whose vector the target fetches from an external 8259 PIC.
    ExtInt,
}

impl MessageDelivery {
    /// Decodes the three-bit field (bits above the low three are ignored); `None` for the
    /// reserved encodings 011 and 110.
    pub fn from_bits(bits: u32) -> Option<Self> {
        Some(match bits & 7 {
            0 => Self::Fixed,
            1 => Self::LowestPriority,
            2 => Self::Smi,
            4 => Self::Nmi,
            5 => Self::Init,
            7 => Self::ExtInt,
            _ => return None,
        })
    }

    /// The three-bit encoding.
    pub fn bits(self) -> u32 {
        match self {
            Self::Fixed => 0,
            Self::LowestPriority => 1,
            Self::Smi => 2,
            Self::Nmi => 4,
            Self::Init => 5,
            Self::ExtInt => 7,
        }
    }

    /// Whether the message carries a vector for the target's IRR (fixed and
    /// lowest-priority); the other modes go to the CPU model directly.
    pub fn uses_vector(self) -> bool {
        matches!(self, Self::Fixed | Self::LowestPriority)
    }
}

/// One interrupt message for the simulator core to route to local APICs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct InterruptMessage {
    /// Who it is for.
    pub dest: MessageDestination,
    /// The vector (meaningful for fixed and lowest-priority delivery).
    pub vector: u8,
    /// What kind of interrupt it is.
    pub delivery: MessageDelivery,
    /// Edge or level: a level-triggered vector is remembered in the target's TMR so that
    /// its EOI comes back to the IOAPIC ([`crate::ioapic::Ioapic::eoi`]).
    pub trigger: TriggerMode,
    /// The MSI redirection hint (address bit 3): the router may redirect the message to
    /// one APIC of the destination set, as for lowest priority. Always false from an
    /// IOAPIC, whose entries say so with [`MessageDelivery::LowestPriority`] instead.
    pub redirection_hint: bool,
}

impl InterruptMessage {
    /// Whether `apic` is in the message's destination set (by its ID or logical
    /// destination, in its current mode). Lowest-priority and redirectable messages then
    /// go to one of those APICs, which the router chooses.
    pub fn is_for(&self, apic: &Lapic) -> bool {
        if apic.mode() == ApicMode::Disabled {
            return false;
        }
        match self.dest {
            MessageDestination::Physical(id) => apic.accepts_physical(id),
            MessageDestination::Logical(mask) => apic.accepts_logical(mask),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::lapic::LapicConfig;

    #[test]
    fn delivery_field_round_trips_and_rejects_reserved_encodings() {
        for bits in 0..8 {
            match MessageDelivery::from_bits(bits) {
                Some(d) => assert_eq!(d.bits(), bits),
                None => assert!(bits == 3 || bits == 6, "{bits} should decode"),
            }
        }
        assert_eq!(MessageDelivery::from_bits(3), None);
        assert_eq!(MessageDelivery::from_bits(6), None);
    }

    #[test]
    fn physical_message_is_for_the_apic_with_that_id_only() {
        let apic = |id| {
            Lapic::new(LapicConfig {
                apic_id: id,
                bsp: id == 0,
                core_ticks_per_timer_tick: 1,
            })
            .unwrap()
        };
        let msg = InterruptMessage {
            dest: MessageDestination::Physical(2),
            vector: 0x41,
            delivery: MessageDelivery::Fixed,
            trigger: TriggerMode::Edge,
            redirection_hint: false,
        };
        assert!(msg.is_for(&apic(2)));
        assert!(!msg.is_for(&apic(1)));
        let broadcast = InterruptMessage {
            dest: MessageDestination::Physical(0xFF),
            ..msg
        };
        assert!(broadcast.is_for(&apic(1)));
    }
}
