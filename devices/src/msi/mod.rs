//! Message-signalled interrupts: the MSI capability and the MSI-X table and pending-bit
//! array of a PCI function, and the x86 message format both use.
//!
//! A device model raises one of its vectors with `signal`; what comes back is an
//! [`InterruptMessage`](crate::irq_message::InterruptMessage) for the simulator core to
//! route, or nothing if the vector is masked (its pending bit is then set, and the message
//! goes out when the guest unmasks it), the function is disabled, or the guest programmed
//! an address outside the interrupt window.
//!
//! - [`MsiCapability`]: the MSI capability in configuration space (64-bit address,
//!   per-vector mask and pending bits, 1 to 32 vectors), accessed by offset.
//! - [`MsixTable`]: the MSI-X table and PBA in a BAR, accessed by offset, and the
//!   capability's message-control word.
//! - [`decode_message`]: address and data to destination, vector, delivery and trigger.
//! - [`MsiStats`]: mask and unmask writes, deliveries, deliveries held by a mask, table
//!   accesses: the traffic that makes mask/unmask a large share of interrupt handling in
//!   an HVM guest with emulated devices.
//!
//! Like the IOAPIC and the local APIC these are not [`crate::bus::MmioDevice`]s: an unmask
//! write can send a message, which a bus write would drop.

mod capability;
mod decode;
mod msix;
mod stats;

pub use capability::{MsiCapability, MSI_CAP_ID, MSI_CAP_LEN};
pub use decode::{decode_message, MSI_ADDRESS_BASE};
pub use msix::{MsixEntry, MsixTable, MSIX_CAP_ID, MSIX_ENTRY_SIZE, MSIX_MAX_ENTRIES};
pub use stats::MsiStats;

use crate::error::DeviceError;

/// The width of an access a register model took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Four bytes at a multiple of four.
    Dword,
    /// Eight bytes at a multiple of eight.
    Qword,
}

/// Accepts an aligned dword or qword wholly inside `0..limit`; anything else is the error
/// naming `device`.
fn check_access(
    device: &'static str,
    offset: u64,
    size: u8,
    limit: u64,
) -> Result<Access, DeviceError> {
    let bad = || DeviceError::BadRegisterAccess {
        device,
        offset,
        size,
    };
    let access = match size {
        4 => Access::Dword,
        8 => Access::Qword,
        _ => return Err(bad()),
    };
    let fits = offset
        .checked_add(u64::from(size))
        .is_some_and(|end| end <= limit);
    if !offset.is_multiple_of(u64::from(size)) || !fits {
        return Err(bad());
    }
    Ok(access)
}
