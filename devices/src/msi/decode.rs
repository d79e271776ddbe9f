//! The Intel (x86) MSI message format: what the address and data of an MSI or MSI-X write
//! say (Intel SDM vol. 3, "Message Signalled Interrupts").
//!
//! Address: bits 31..20 are 0xFEE (the interrupt window; the upper 32 bits are zero),
//! 19..12 the destination APIC ID, bit 3 the redirection hint (RH), bit 2 the destination
//! mode (DM: 1 = logical). Data: bits 7..0 the vector, 10..8 the delivery mode, 14 the level
//! (assert) bit, 15 the trigger mode (1 = level).
//!
//! As KVM and QEMU do, DM selects physical or logical destinations whatever RH says; RH is
//! passed on for the router. A write outside the interrupt window is a plain memory write on
//! real hardware (a DMA to wherever the guest pointed it); the models here drop it and
//! count it, since they have no memory to write.

use crate::irq_message::{InterruptMessage, MessageDelivery, MessageDestination};
use crate::lapic::TriggerMode;

/// The base of the interrupt window an MSI address must fall in.
pub const MSI_ADDRESS_BASE: u64 = 0xFEE0_0000;
/// Address bits that must equal [`MSI_ADDRESS_BASE`] (63..20).
const WINDOW_MASK: u64 = !0xF_FFFF;
const DEST_SHIFT: u32 = 12;
const ADDR_RH: u64 = 1 << 3;
const ADDR_DM_LOGICAL: u64 = 1 << 2;
const DATA_DELIVERY_SHIFT: u32 = 8;
const DATA_TRIGGER_LEVEL: u32 = 1 << 15;

/// The interrupt an MSI write of `data` to `address` asks for, or `None` if it is not one:
/// the address is outside 0xFEE0_0000..=0xFEEF_FFFF, or the delivery mode is reserved
/// (011 or 110). A vector below 16 decodes; the receiving local APIC refuses it.
pub fn decode_message(address: u64, data: u32) -> Option<InterruptMessage> {
    if address & WINDOW_MASK != MSI_ADDRESS_BASE {
        return None;
    }
    let delivery = MessageDelivery::from_bits(data >> DATA_DELIVERY_SHIFT)?;
    let dest_id = ((address >> DEST_SHIFT) & 0xFF) as u32;
    Some(InterruptMessage {
        dest: if address & ADDR_DM_LOGICAL != 0 {
            MessageDestination::Logical(dest_id)
        } else {
            MessageDestination::Physical(dest_id)
        },
        vector: (data & 0xFF) as u8,
        delivery,
        trigger: if data & DATA_TRIGGER_LEVEL != 0 {
            TriggerMode::Level
        } else {
            TriggerMode::Edge
        },
        redirection_hint: address & ADDR_RH != 0,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn known_message_decodes() {
        // What Linux writes for vector 0x41 to APIC 5, fixed, edge, physical.
        assert_eq!(
            decode_message(0xFEE0_5000, 0x0000_0041),
            Some(InterruptMessage {
                dest: MessageDestination::Physical(5),
                vector: 0x41,
                delivery: MessageDelivery::Fixed,
                trigger: TriggerMode::Edge,
                redirection_hint: false,
            })
        );
        // Logical destination 0x0C with RH, lowest priority, level-triggered assert.
        assert_eq!(
            decode_message(0xFEE0_C00C, 0x0000_C1A7),
            Some(InterruptMessage {
                dest: MessageDestination::Logical(0x0C),
                vector: 0xA7,
                delivery: MessageDelivery::LowestPriority,
                trigger: TriggerMode::Level,
                redirection_hint: true,
            })
        );
        // Destination 0xFF, NMI.
        let nmi = decode_message(0xFEEF_F000, 0x400).unwrap();
        assert_eq!(
            (nmi.dest, nmi.delivery),
            (MessageDestination::Physical(0xFF), MessageDelivery::Nmi)
        );
    }

    #[test]
    fn writes_outside_the_window_or_with_reserved_modes_are_not_interrupts() {
        assert_eq!(decode_message(0xFED0_5000, 0x41), None);
        assert_eq!(decode_message(0x1_FEE0_5000, 0x41), None);
        assert_eq!(decode_message(0, 0), None);
        assert_eq!(decode_message(0xFEE0_5000, 0x341), None);
        assert_eq!(decode_message(0xFEE0_5000, 0x641), None);
    }
}
