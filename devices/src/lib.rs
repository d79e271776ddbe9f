//! Platform devices seen by guests, as register models behind a bus. Devices see only
//! register offsets (or MSR indices) and the time the caller gives them in TSC ticks; they
//! know nothing of CPUs, memory translation or the event queue. The simulator core owns the
//! clock, routes what devices produce (IPIs, interrupt messages, EOIs) and charges each
//! access per policy.
//!
//! This crate depends on no other hvsim crate.
//!
//! - [`bus`]: port-I/O and MMIO buses mapping address ranges to [`bus::DeviceId`]s,
//!   refusing overlaps; the [`bus::PortDevice`] / [`bus::MmioDevice`] traits devices
//!   implement; unclaimed accesses read all ones and are counted.
//! - [`console`]: the port-0xE9 debug console the guest kernel prints through.
//! - [`lapic`]: the local APIC (one per vCPU): xAPIC MMIO and x2APIC MSR forms, IRR/ISR/TMR
//!   and priority, EOI, the one-shot/periodic/TSC-deadline timer, ICR writes as
//!   [`lapic::Ipi`] values for the core to route.
//! - [`ioapic`]: the I/O APIC: 24 pins, redirection entries programmed through
//!   IOREGSEL/IOWIN, remote IRR and EOI for level-triggered pins.
//! - [`msi`]: the MSI capability and the MSI-X table and pending-bit array, with
//!   per-vector masking ("pending while masked") and the x86 address/data format.
//! - [`nic`]: a NIC-like receive device: per-queue cause and counter registers, an
//!   interrupt mask, one MSI-X entry per queue.
//! - [`irq_message`]: what the IOAPIC and MSI produce: [`irq_message::InterruptMessage`]
//!   values (destination, vector, delivery mode, trigger) for the core to route to local
//!   APICs.
//! - [`irq_source`]: a deterministic NIC receive-interrupt source: an event rate spread
//!   over per-vCPU queues, an interrupt-rate limit that coalesces events, optional seeded
//!   jitter, driven by the core's clock.
//! - [`evtchn`]: Xen-style event channels (2-level ABI): a domain's port table (VIRQ, IPI,
//!   PIRQ and inter-domain bindings) acting on the pending/mask bitmaps of a shared_info
//!   page in guest memory, reached through the [`evtchn::GuestMemory`] trait.
//! - [`grant_table`]: Xen grant tables (v1): a domain's table of grants in frames it
//!   supplies, checked on every map, unmap and copy by another domain, each kind of
//!   refusal counted.
//! - [`ring`]: Xen's shared I/O ring (`io/ring.h`): the back end's and the front end's
//!   indices over a page in guest memory, with Xen's notification suppression.
//! - [`error`]: [`DeviceError`], for platform descriptions that cannot be built and for
//!   guest accesses the architecture answers with `#GP`.
//!
//! - [`dma`]: the [`dma::Dma`] trait: byte access to a domain's guest-physical memory, as
//!   bus-master DMA and a backend's grant copies see it.
//! - [`frame`]: network frames on the modelled wire and their 32-byte header in guest memory.
//! - [`histogram`]: a log-linear (HDR-style) latency histogram in nanoseconds: fixed
//!   buckets, allocation-free recording, percentiles, CDF and merging.
//! - [`peer`]: the host at the other end of the wire (sink, constant-rate source, echo
//!   server, request/response client), with the wire's serialization and latency timing.
//! - [`e1000`]: an e1000-like (8254x) NIC: registers, descriptor rings over DMA, ITR, one MSI.
//! - [`disk`]: the disk behind both block paths: sparse 512-byte sectors (a sector never
//!   written reads as its LBA), requests served one at a time with an access cost for
//!   non-sequential ones and a transfer rate.
//! - [`ahci`]: an AHCI-like block controller: one port, 32 command slots, command lists,
//!   tables and PRDs over DMA, write-1-to-clear causes, one MSI.
//! - [`iommu`]: a VT-d-style IOMMU for one assigned device: DMA remapping through an IOTLB
//!   and a counted 4-level walk (DMA outside the domain blocked and counted), interrupt
//!   remapping (remapped or posted).

pub mod ahci;
pub mod bus;
pub mod console;
pub mod disk;
pub mod dma;
pub mod e1000;
pub mod error;
pub mod evtchn;
pub mod frame;
pub mod grant_table;
pub mod histogram;
pub mod ioapic;
pub mod iommu;
pub mod irq_message;
pub mod irq_source;
pub mod lapic;
pub mod msi;
pub mod nic;
pub mod peer;
pub mod ring;

pub use error::DeviceError;
