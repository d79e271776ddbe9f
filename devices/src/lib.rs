//! Platform devices seen by guests: interrupt controllers (LAPIC, IOAPIC, MSI), Xen event
//! channels and grant tables, shared rings, timers, and NIC/disk models. Devices see only
//! register offsets behind a bus; they know nothing of CPUs or memory translation.
