//! The crate's error type.
//!
//! Two kinds of failure live here: platform descriptions that cannot be built (overlapping
//! bus ranges, a zero timer rate), and guest register accesses the architecture answers with
//! a fault (an x2APIC MSR touched in xAPIC mode, a non-zero EOI write). The second kind is
//! returned to the caller, which turns it into `#GP(0)`: a guest can never panic the host.
//! Event-channel operations a guest asks for by hypercall fail the same way, and the
//! caller turns them into an errno ([`crate::evtchn::EventChannels::errno`]); so do grant
//! operations ([`crate::grant_table::GrantTable::errno`]). A shared ring whose peer
//! breaks the ring protocol is reported here too, for the caller to disconnect. MMIO accesses
//! a register model cannot take (bad size, misaligned, past its registers) come back as
//! errors too; MMIO has no fault, so the caller reads all ones or drops the write.

use crate::bus::DeviceId;
use thiserror::Error;

/// Why a device could not be set up, or why a guest register access faults.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DeviceError {
    /// A bus mapping of zero length: it would claim nothing and is surely a mistake.
    #[error("{bus} bus: empty range at {base:#x}")]
    EmptyRange {
        /// Which bus ("port" or "mmio").
        bus: &'static str,
        /// Requested base.
        base: u64,
    },
    /// A bus mapping whose end runs past the top of the bus's address space.
    #[error("{bus} bus: range {base:#x} + {len:#x} runs past the end of the address space")]
    RangeWraps {
        /// Which bus ("port" or "mmio").
        bus: &'static str,
        /// Requested base.
        base: u64,
        /// Requested length.
        len: u64,
    },
    /// A bus mapping that overlaps one already present; two devices decoding the same
    /// address would make every access ambiguous.
    #[error(
        "{bus} bus: range {base:#x}..={last:#x} for device {device} overlaps \
         {existing_base:#x}..={existing_last:#x} of device {existing}"
    )]
    Overlap {
        /// Which bus ("port" or "mmio").
        bus: &'static str,
        /// First address of the rejected range.
        base: u64,
        /// Last address (inclusive) of the rejected range.
        last: u64,
        /// Device the rejected range was for.
        device: DeviceId,
        /// First address of the range already mapped.
        existing_base: u64,
        /// Last address (inclusive) of the range already mapped.
        existing_last: u64,
        /// Device that owns the existing range.
        existing: DeviceId,
    },
    /// An unmap of a base address that starts no mapping.
    #[error("{bus} bus: nothing mapped at {base:#x}")]
    NotMapped {
        /// Which bus ("port" or "mmio").
        bus: &'static str,
        /// Base that was asked for.
        base: u64,
    },
    /// An access size the bus cannot carry (ports: 1, 2, 4; MMIO: 1, 2, 4, 8). The CPU model
    /// decodes sizes, so this is a caller bug, reported rather than panicking.
    #[error("{bus} bus: access size {size} is not supported")]
    BadAccessSize {
        /// Which bus ("port" or "mmio").
        bus: &'static str,
        /// Offending size in bytes.
        size: u8,
    },
    /// A local APIC timer rate of zero core ticks per timer tick: time would not advance.
    #[error("local APIC: core ticks per timer tick must be at least 1")]
    ZeroTimerRate,
    /// An x2APIC MSR (0x800..=0x8FF) accessed while the APIC is not in x2APIC mode.
    /// Architecturally `#GP(0)`.
    #[error("MSR {msr:#x}: x2APIC mode is not enabled")]
    X2ApicDisabled {
        /// MSR index.
        msr: u32,
    },
    /// An MSR the local APIC does not implement (a hole in the x2APIC range, or an index
    /// outside it). Architecturally `#GP(0)`.
    #[error("MSR {msr:#x}: not implemented by the local APIC")]
    NoSuchMsr {
        /// MSR index.
        msr: u32,
    },
    /// A read of a write-only x2APIC register (EOI, SELF_IPI). Architecturally `#GP(0)`.
    #[error("MSR {msr:#x}: register is write-only")]
    WriteOnlyMsr {
        /// MSR index.
        msr: u32,
    },
    /// A write to a read-only x2APIC register (ID, version, PPR, ISR/TMR/IRR, LDR, current
    /// count). Architecturally `#GP(0)`.
    #[error("MSR {msr:#x}: register is read-only")]
    ReadOnlyMsr {
        /// MSR index.
        msr: u32,
    },
    /// A write that sets bits the register reserves (a non-zero EOI or ESR write in x2APIC
    /// mode, reserved APIC_BASE bits, high bits of a 32-bit x2APIC register).
    /// Architecturally `#GP(0)`.
    #[error("MSR {msr:#x}: value {value:#x} sets reserved bits")]
    ReservedBits {
        /// MSR index.
        msr: u32,
        /// Value the guest tried to write.
        value: u64,
    },
    /// An APIC_BASE write asking for a mode transition the SDM forbids (x2APIC straight to
    /// xAPIC, disabled straight to x2APIC, or x2APIC-enable without global enable).
    /// Architecturally `#GP(0)`.
    #[error("APIC_BASE {from:#x} -> {to:#x}: invalid APIC mode transition")]
    InvalidModeTransition {
        /// APIC_BASE before the write.
        from: u64,
        /// Value the guest tried to write.
        to: u64,
    },
    /// An event-channel port that is not bound (or out of range).
    #[error("event channel: port {port} is not bound")]
    EvtchnBadPort {
        /// The port.
        port: u32,
    },
    /// A vCPU the domain does not have (or, at construction, a vCPU count the shared_info
    /// page cannot hold).
    #[error("event channel: no vCPU {vcpu}")]
    EvtchnBadVcpu {
        /// The vCPU (or count).
        vcpu: u32,
    },
    /// A virtual IRQ number out of range.
    #[error("event channel: no virtual IRQ {virq}")]
    EvtchnBadVirq {
        /// The VIRQ.
        virq: u32,
    },
    /// A virtual IRQ already bound for that vCPU.
    #[error("event channel: VIRQ {virq} of vCPU {vcpu} is already bound")]
    EvtchnVirqBound {
        /// The VIRQ.
        virq: u32,
        /// The vCPU.
        vcpu: u32,
    },
    /// Every port of the 2-level ABI is bound.
    #[error("event channel: no free port")]
    EvtchnNoFreePort,
    /// An operation that needs the shared_info page before the guest registered one.
    #[error("event channel: no shared_info page registered")]
    EvtchnNoSharedInfo,
    /// A shared_info address that is not page-aligned, or differs from the one registered.
    #[error("event channel: shared_info at {gpa:#x} refused")]
    EvtchnBadSharedInfo {
        /// The guest-physical address given.
        gpa: u64,
    },
    /// A send on an inter-domain port whose other end is not connected.
    #[error("event channel: port {port} is not connected")]
    EvtchnNotConnected {
        /// The port.
        port: u32,
    },
    /// A register access a device's MMIO window does not take: a size its registers do not
    /// have, an offset not aligned to the size, or an offset past its registers. MMIO has no
    /// fault to raise, so the caller answers such a read with all ones and drops the write
    /// (what a real chipset does), after counting it.
    #[error("{device}: {size}-byte access at offset {offset:#x} is not supported")]
    BadRegisterAccess {
        /// Which register model ("ioapic", "msi", "msi-x table", "msi-x pba").
        device: &'static str,
        /// Offset inside the device's window.
        offset: u64,
        /// Access size in bytes.
        size: u8,
    },
    /// A write to registers software may only read (the MSI-X pending-bit array). The
    /// caller drops it, as for [`DeviceError::BadRegisterAccess`].
    #[error("{device}: offset {offset:#x} is read-only")]
    ReadOnlyRegister {
        /// Which register model.
        device: &'static str,
        /// Offset inside the device's window.
        offset: u64,
    },
    /// An IOAPIC input pin the IOAPIC does not have: a platform wiring mistake.
    #[error("IOAPIC: no input pin {pin}")]
    NoSuchPin {
        /// The pin asked for.
        pin: u32,
    },
    /// An MSI vector or MSI-X table entry the function does not have: a device-model
    /// mistake, not something a guest can cause.
    #[error("{device}: no vector {vector}")]
    NoSuchMsiVector {
        /// "msi" or "msi-x".
        device: &'static str,
        /// The vector (MSI) or table entry (MSI-X) asked for.
        vector: u32,
    },
    /// A vector count the capability cannot express: MSI needs a power of two from 1 to
    /// 32, MSI-X a table of 1 to 2048 entries.
    #[error("{device}: a function cannot have {count} vectors")]
    BadVectorCount {
        /// "msi" or "msi-x".
        device: &'static str,
        /// The count asked for.
        count: u32,
    },
    /// A grant reference past the end of the grant table (or any reference before the
    /// table is set up).
    #[error("grant table: reference {gref} is out of range")]
    GrantBadRef {
        /// The reference.
        gref: u32,
    },
    /// A grant entry whose type is not the one the use needs: `GTF_permit_access` for a
    /// map or copy (revoked, never granted, or a transfer entry), `GTF_accept_transfer`
    /// for a transfer.
    #[error("grant table: reference {gref} does not permit access (flags {flags:#x})")]
    GrantNotPermitted {
        /// The reference.
        gref: u32,
        /// The entry's flags.
        flags: u16,
    },
    /// A grant entry that grants access to another domain than the one using it.
    #[error("grant table: reference {gref} is granted to domain {granted_to}, not {by}")]
    GrantWrongDomain {
        /// The reference.
        gref: u32,
        /// The domain the entry names.
        granted_to: u16,
        /// The domain that tried to use it.
        by: u16,
    },
    /// A write use (writable map, copy into the frame) of a read-only grant.
    #[error("grant table: reference {gref} is read-only")]
    GrantReadOnly {
        /// The reference.
        gref: u32,
    },
    /// A grant entry naming a frame outside the granting domain's memory (or an entry
    /// whose table frame cannot be read).
    #[error("grant table: reference {gref} names frame {frame:#x}, outside the domain's memory")]
    GrantBadFrame {
        /// The reference.
        gref: u32,
        /// The frame number.
        frame: u64,
    },
    /// A grant copy whose byte range runs past the end of the granted page.
    #[error("grant table: reference {gref}: {len} bytes at offset {offset} run past the page")]
    GrantBadSpan {
        /// The reference.
        gref: u32,
        /// Offset in the page.
        offset: u32,
        /// Length in bytes.
        len: u32,
    },
    /// An unmap of a reference the domain has not mapped, a second map of a mapped
    /// reference, or a table set-up while a reference is mapped.
    #[error("grant table: reference {gref} is busy (or not mapped by the caller)")]
    GrantBusy {
        /// The reference.
        gref: u32,
    },
    /// A transfer into an accept-transfer entry that already received a frame
    /// (`GTF_transfer_committed` or `GTF_transfer_completed` set): the guest has not
    /// re-posted it.
    #[error("grant table: reference {gref} already received a transferred frame")]
    GrantTransferCompleted {
        /// The reference.
        gref: u32,
    },
    /// A grant table set-up the model refuses: frames not page-aligned, a frame count
    /// outside 1..=`MAX_FRAMES`, or frames outside the domain's memory.
    #[error("grant table: {frames} frames at {gpa:#x} refused")]
    GrantBadSetup {
        /// Guest-physical address of the first frame.
        gpa: u64,
        /// Frame count.
        frames: u32,
    },
    /// A shared ring that cannot be used: a page that is not page-aligned, or an entry
    /// size that leaves room for no entry.
    #[error("ring: page {gpa:#x} with {entry_bytes}-byte entries refused")]
    RingBadSetup {
        /// Guest-physical address of the shared page.
        gpa: u64,
        /// Entry size in bytes.
        entry_bytes: u64,
    },
    /// A producer index the peer cannot have written honestly: more entries than the ring
    /// holds, or an index that went backwards (`RING_REQUEST_PROD_OVERFLOW`). The peer is
    /// misbehaving; the caller disconnects it.
    #[error("ring: producer index {prod} impossible with consumer at {cons} (ring of {size})")]
    RingOverflow {
        /// The producer index read from the shared page.
        prod: u32,
        /// This end's consumer index.
        cons: u32,
        /// Entries in the ring.
        size: u32,
    },
    /// A shared-ring header outside the domain's memory.
    #[error("ring: header at {gpa:#x} is outside the domain's memory")]
    RingFault {
        /// Guest-physical address of the field.
        gpa: u64,
    },
    /// An interrupt source description that cannot run (a zero clock, no targets, jitter
    /// above 100%).
    #[error("interrupt source: {field}: {reason}")]
    BadIrqSource {
        /// The configuration field at fault.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A disk description that cannot be served (no sectors, a zero transfer rate, a
    /// size whose bytes do not fit in 64 bits).
    #[error("disk: {field} = {value}: {reason}")]
    BadDisk {
        /// The configuration field at fault.
        field: &'static str,
        /// The value it was given.
        value: u64,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A network peer description that cannot run (a zero rate or link speed, a frame
    /// size the wire cannot carry, a concurrency out of range).
    #[error("peer: {field} = {value}: {reason}")]
    BadPeer {
        /// The configuration field at fault.
        field: &'static str,
        /// The value it was given.
        value: u64,
        /// What is wrong with it.
        reason: &'static str,
    },
}
