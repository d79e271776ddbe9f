//! Xen-style event channels (the 2-level ABI of x86-64 Xen): one domain's port table and
//! the pending/mask bitmaps it drives in the domain's shared_info page.
//!
//! A port is bound to something that raises it — a virtual IRQ of one vCPU
//! ([`VIRQ_TIMER`]), an IPI aimed at one vCPU, a physical IRQ, or the other end of an
//! inter-domain channel — and notifies one vCPU. Raising a port ([`EventChannels::send`],
//! [`EventChannels::raise`]) is the hypervisor's side of Xen's `evtchn_2l_set_pending`:
//!
//! 1. set the port's bit in `evtchn_pending`; if it was already set, stop (coalesced);
//! 2. if the port's bit in `evtchn_mask` is set, stop (the guest will see it on unmask);
//! 3. set the port's word bit in the vCPU's `evtchn_pending_sel`; if it was already set,
//!    stop (the guest has not scanned that word yet);
//! 4. set the vCPU's `evtchn_upcall_pending`; an upcall must be delivered unless it was
//!    already pending or the vCPU's `evtchn_upcall_mask` is set.
//!
//! The bitmaps are not kept here but in guest memory, at the layout of Xen's x86-64
//! `struct shared_info` ([`layout`]), reached through the consumer-side trait
//! [`GuestMemory`]: the guest's upcall handler clears the bits it consumes with atomic
//! instructions on the same words, with no trap.
//!
//! Simplification: one shared_info page per domain holds every vCPU's `vcpu_info` (Xen's
//! legacy placement, so at most [`MAX_VCPUS`] vCPUs); Xen's per-vCPU relocation of
//! `vcpu_info` is not modelled.

use crate::error::DeviceError;
use serde::Serialize;

/// An event-channel port number (0 is never allocated, as in Xen).
pub type Port = u32;

/// The per-vCPU timer virtual IRQ.
pub const VIRQ_TIMER: u32 = 0;
/// Virtual IRQs that can be bound (Xen's `NR_VIRQS`).
pub const NR_VIRQS: u32 = 24;
/// vCPUs whose `vcpu_info` lives in the shared_info page (Xen's legacy `MAX_VIRT_CPUS`).
pub const MAX_VCPUS: u32 = 32;
/// 64-bit words in each of the pending and mask bitmaps.
pub const WORDS: u32 = 64;
/// Ports the 2-level ABI can address (`WORDS` words of 64 bits).
pub const MAX_PORTS: u32 = WORDS * 64;

/// Byte offsets in the shared_info page (Xen's x86-64 `struct shared_info`).
pub mod layout {
    /// Size of one `vcpu_info`; `vcpu_info[i]` is at `i * VCPU_INFO_SIZE`.
    pub const VCPU_INFO_SIZE: u64 = 64;
    /// `vcpu_info.evtchn_upcall_pending` (u8).
    pub const UPCALL_PENDING: u64 = 0;
    /// `vcpu_info.evtchn_upcall_mask` (u8).
    pub const UPCALL_MASK: u64 = 1;
    /// `vcpu_info.evtchn_pending_sel` (u64): one bit per word of `evtchn_pending`.
    pub const PENDING_SEL: u64 = 8;
    /// `shared_info.evtchn_pending[64]` (u64 each).
    pub const EVTCHN_PENDING: u64 = 2048;
    /// `shared_info.evtchn_mask[64]` (u64 each).
    pub const EVTCHN_MASK: u64 = 2560;
    /// The page size the structure fits in.
    pub const PAGE_SIZE: u64 = 4096;
}

/// A guest-physical address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct GuestPhys(pub u64);

/// What the event channels need from guest memory: aligned 64-bit words at guest-physical
/// addresses (the hypervisor's view; no translation, no faults).
pub trait GuestMemory {
    /// Reads the 64-bit little-endian word at `gpa`.
    fn read_u64(&mut self, gpa: GuestPhys) -> u64;
    /// Writes the 64-bit little-endian word at `gpa`.
    fn write_u64(&mut self, gpa: GuestPhys, value: u64);
}

/// The far end of an inter-domain channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RemotePort {
    /// The other domain.
    pub domain: u32,
    /// Its port.
    pub port: Port,
}

/// What raises a port, and which vCPU it notifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Binding {
    /// A virtual IRQ of one vCPU (raised by the hypervisor, e.g. the PV timer).
    Virq {
        /// The virtual IRQ number.
        virq: u32,
        /// The vCPU it belongs to and notifies.
        vcpu: u32,
    },
    /// An inter-processor event: a send on the port notifies `vcpu`.
    Ipi {
        /// The vCPU notified.
        vcpu: u32,
    },
    /// A physical IRQ routed to the domain.
    Pirq {
        /// The physical IRQ number.
        pirq: u32,
        /// The vCPU notified.
        vcpu: u32,
    },
    /// One end of a channel between two domains: a send raises the other end.
    Interdomain {
        /// The vCPU notified when the other end sends.
        vcpu: u32,
        /// The other end, once connected.
        remote: Option<RemotePort>,
    },
}

impl Binding {
    /// The vCPU this port notifies.
    pub fn vcpu(&self) -> u32 {
        match *self {
            Binding::Virq { vcpu, .. }
            | Binding::Ipi { vcpu }
            | Binding::Pirq { vcpu, .. }
            | Binding::Interdomain { vcpu, .. } => vcpu,
        }
    }
}

/// The effect of raising a port on its vCPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Notify {
    /// The vCPU the port notifies.
    pub vcpu: u32,
    /// Whether an upcall must be delivered to it (its `evtchn_upcall_pending` was newly
    /// set and its `evtchn_upcall_mask` is clear).
    pub upcall: bool,
}

/// Where a send went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Sent {
    /// A port of this domain was raised.
    Local(Notify),
    /// The send is for the other end of an inter-domain channel: the caller raises
    /// `port` in `domain`'s table ([`EventChannels::raise`]).
    Remote(RemotePort),
}

/// Counters of one domain's event channels.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct EvtchnStats {
    /// Ports bound (VIRQ, IPI, PIRQ, inter-domain).
    pub binds: u64,
    /// Sends on a bound port (by the guest or the hypervisor), including those forwarded
    /// to another domain.
    pub sends: u64,
    /// Ports raised in this domain (local sends, VIRQs, sends arriving from another domain).
    pub raises: u64,
    /// Raises whose vCPU must get an upcall (upcall_pending newly set, upcall_mask clear).
    pub upcalls: u64,
    /// Raises that found the port already pending (coalesced).
    pub suppressed_already_pending: u64,
    /// Raises of a masked port (pending bit set, no selector or upcall).
    pub suppressed_masked: u64,
    /// Raises whose selector bit or upcall_pending was already set (the guest has yet to
    /// scan), or whose vCPU had its upcall_mask set.
    pub suppressed_upcall: u64,
    /// Unmask operations.
    pub unmasks: u64,
    /// Unmasks that found the port pending and raised an upcall.
    pub unmask_upcalls: u64,
}

/// One domain's event channels: port bindings and the shared_info page they act on.
#[derive(Debug, Clone)]
pub struct EventChannels {
    vcpus: u32,
    ports: Vec<Option<Binding>>,
    shared_info: Option<GuestPhys>,
    stats: EvtchnStats,
}

/// Word index and bit of a port in the bitmaps.
fn word_bit(port: Port) -> (u64, u64) {
    (u64::from(port / 64), 1u64 << (port % 64))
}

impl EventChannels {
    /// The event channels of a domain with `vcpus` vCPUs (1..=[`MAX_VCPUS`]).
    pub fn new(vcpus: u32) -> Result<Self, DeviceError> {
        if vcpus == 0 || vcpus > MAX_VCPUS {
            return Err(DeviceError::EvtchnBadVcpu { vcpu: vcpus });
        }
        Ok(EventChannels {
            vcpus,
            // Port 0 is reserved.
            ports: vec![None],
            shared_info: None,
            stats: EvtchnStats::default(),
        })
    }

    /// Counters.
    pub fn stats(&self) -> &EvtchnStats {
        &self.stats
    }

    /// The registered shared_info page.
    pub fn shared_info(&self) -> Option<GuestPhys> {
        self.shared_info
    }

    /// Registers the domain's shared_info page (page-aligned). Registering the same page
    /// again is accepted (every vCPU names it); a different page is refused.
    pub fn set_shared_info(&mut self, gpa: GuestPhys) -> Result<(), DeviceError> {
        if !gpa.0.is_multiple_of(layout::PAGE_SIZE) {
            return Err(DeviceError::EvtchnBadSharedInfo { gpa: gpa.0 });
        }
        match self.shared_info {
            Some(p) if p != gpa => Err(DeviceError::EvtchnBadSharedInfo { gpa: gpa.0 }),
            _ => {
                self.shared_info = Some(gpa);
                Ok(())
            }
        }
    }

    /// The binding of `port`, if bound.
    pub fn binding(&self, port: Port) -> Option<Binding> {
        self.ports.get(port as usize).copied().flatten()
    }

    /// The port bound to `virq` of `vcpu`.
    pub fn virq_port(&self, virq: u32, vcpu: u32) -> Option<Port> {
        self.ports.iter().enumerate().find_map(|(p, b)| match b {
            Some(Binding::Virq { virq: q, vcpu: c }) if *q == virq && *c == vcpu => Some(p as Port),
            _ => None,
        })
    }

    fn check_vcpu(&self, vcpu: u32) -> Result<(), DeviceError> {
        if vcpu < self.vcpus {
            Ok(())
        } else {
            Err(DeviceError::EvtchnBadVcpu { vcpu })
        }
    }

    /// Binds the lowest free port.
    fn alloc(&mut self, b: Binding) -> Result<Port, DeviceError> {
        let port = match self.ports.iter().skip(1).position(Option::is_none) {
            Some(i) => i + 1,
            None if (self.ports.len() as u32) < MAX_PORTS => {
                self.ports.push(None);
                self.ports.len() - 1
            }
            None => return Err(DeviceError::EvtchnNoFreePort),
        };
        self.ports[port] = Some(b);
        self.stats.binds += 1;
        Ok(port as Port)
    }

    /// Binds virtual IRQ `virq` of `vcpu` to a new port (one port per VIRQ and vCPU).
    pub fn bind_virq(&mut self, virq: u32, vcpu: u32) -> Result<Port, DeviceError> {
        if virq >= NR_VIRQS {
            return Err(DeviceError::EvtchnBadVirq { virq });
        }
        self.check_vcpu(vcpu)?;
        if self.virq_port(virq, vcpu).is_some() {
            return Err(DeviceError::EvtchnVirqBound { virq, vcpu });
        }
        self.alloc(Binding::Virq { virq, vcpu })
    }

    /// Binds a new IPI port notifying `vcpu`.
    pub fn bind_ipi(&mut self, vcpu: u32) -> Result<Port, DeviceError> {
        self.check_vcpu(vcpu)?;
        self.alloc(Binding::Ipi { vcpu })
    }

    /// Binds physical IRQ `pirq` to a new port notifying `vcpu`.
    pub fn bind_pirq(&mut self, pirq: u32, vcpu: u32) -> Result<Port, DeviceError> {
        self.check_vcpu(vcpu)?;
        self.alloc(Binding::Pirq { pirq, vcpu })
    }

    /// Allocates an unconnected inter-domain port notifying `vcpu`.
    pub fn bind_interdomain(&mut self, vcpu: u32) -> Result<Port, DeviceError> {
        self.check_vcpu(vcpu)?;
        self.alloc(Binding::Interdomain { vcpu, remote: None })
    }

    /// Connects inter-domain port `port` to `remote` (the caller connects the other end
    /// the other way).
    pub fn connect(&mut self, port: Port, remote: RemotePort) -> Result<(), DeviceError> {
        match self.ports.get_mut(port as usize) {
            Some(Some(Binding::Interdomain { remote: r, .. })) => {
                *r = Some(remote);
                Ok(())
            }
            _ => Err(DeviceError::EvtchnBadPort { port }),
        }
    }

    /// A send on `port`: raises it here, or names the remote port to raise for an
    /// inter-domain channel.
    pub fn send(&mut self, mem: &mut dyn GuestMemory, port: Port) -> Result<Sent, DeviceError> {
        let b = self
            .binding(port)
            .ok_or(DeviceError::EvtchnBadPort { port })?;
        if self.shared_info.is_none() {
            return Err(DeviceError::EvtchnNoSharedInfo);
        }
        if let Binding::Interdomain { remote, .. } = b {
            let r = remote.ok_or(DeviceError::EvtchnNotConnected { port })?;
            self.stats.sends += 1;
            return Ok(Sent::Remote(r));
        }
        self.stats.sends += 1;
        self.raise(mem, port).map(Sent::Local)
    }

    /// Raises bound `port` (steps 1-4 of the module documentation).
    pub fn raise(&mut self, mem: &mut dyn GuestMemory, port: Port) -> Result<Notify, DeviceError> {
        let b = self
            .binding(port)
            .ok_or(DeviceError::EvtchnBadPort { port })?;
        let si = self.shared_info.ok_or(DeviceError::EvtchnNoSharedInfo)?;
        self.stats.raises += 1;
        let vcpu = b.vcpu();
        let (w, bit) = word_bit(port);
        let pending = GuestPhys(si.0 + layout::EVTCHN_PENDING + 8 * w);
        let old = mem.read_u64(pending);
        if old & bit != 0 {
            self.stats.suppressed_already_pending += 1;
            return Ok(Notify {
                vcpu,
                upcall: false,
            });
        }
        mem.write_u64(pending, old | bit);
        let mask = mem.read_u64(GuestPhys(si.0 + layout::EVTCHN_MASK + 8 * w));
        if mask & bit != 0 {
            self.stats.suppressed_masked += 1;
            return Ok(Notify {
                vcpu,
                upcall: false,
            });
        }
        let upcall = self.mark(mem, si, vcpu, w);
        if upcall {
            self.stats.upcalls += 1;
        } else {
            self.stats.suppressed_upcall += 1;
        }
        Ok(Notify { vcpu, upcall })
    }

    /// Sets word `w`'s selector bit and upcall_pending for `vcpu`; whether an upcall is due.
    fn mark(&mut self, mem: &mut dyn GuestMemory, si: GuestPhys, vcpu: u32, w: u64) -> bool {
        let vi = si.0 + u64::from(vcpu) * layout::VCPU_INFO_SIZE;
        let sel_addr = GuestPhys(vi + layout::PENDING_SEL);
        let sel = mem.read_u64(sel_addr);
        if sel & (1 << w) != 0 {
            return false;
        }
        mem.write_u64(sel_addr, sel | 1 << w);
        let head_addr = GuestPhys(vi + layout::UPCALL_PENDING);
        let head = mem.read_u64(head_addr);
        let pending_byte = 0xff << (8 * layout::UPCALL_PENDING);
        if head & pending_byte != 0 {
            return false;
        }
        mem.write_u64(head_addr, head | 1 << (8 * layout::UPCALL_PENDING));
        head & (0xff << (8 * layout::UPCALL_MASK)) == 0
    }

    /// EVTCHNOP_unmask: clears the port's mask bit; a port found pending then notifies
    /// its vCPU as a raise would (selector bit, upcall_pending).
    pub fn unmask(&mut self, mem: &mut dyn GuestMemory, port: Port) -> Result<Notify, DeviceError> {
        let b = self
            .binding(port)
            .ok_or(DeviceError::EvtchnBadPort { port })?;
        let si = self.shared_info.ok_or(DeviceError::EvtchnNoSharedInfo)?;
        self.stats.unmasks += 1;
        let vcpu = b.vcpu();
        let (w, bit) = word_bit(port);
        let mask_addr = GuestPhys(si.0 + layout::EVTCHN_MASK + 8 * w);
        let mask = mem.read_u64(mask_addr);
        mem.write_u64(mask_addr, mask & !bit);
        let pending = mem.read_u64(GuestPhys(si.0 + layout::EVTCHN_PENDING + 8 * w));
        let upcall = mask & bit != 0 && pending & bit != 0 && self.mark(mem, si, vcpu, w);
        if upcall {
            self.stats.unmask_upcalls += 1;
        }
        Ok(Notify { vcpu, upcall })
    }

    /// Whether `vcpu`'s `evtchn_upcall_pending` is set (false before registration).
    pub fn upcall_pending(&self, mem: &mut dyn GuestMemory, vcpu: u32) -> bool {
        let Some(si) = self.shared_info else {
            return false;
        };
        if vcpu >= self.vcpus {
            return false;
        }
        let vi = si.0 + u64::from(vcpu) * layout::VCPU_INFO_SIZE;
        mem.read_u64(GuestPhys(vi + layout::UPCALL_PENDING))
            & (0xff << (8 * layout::UPCALL_PENDING))
            != 0
    }

    /// The errno value (positive) a hypercall returns for an event-channel error.
    pub fn errno(e: &DeviceError) -> i64 {
        match e {
            DeviceError::EvtchnVirqBound { .. } => 17,     // EEXIST
            DeviceError::EvtchnBadVcpu { .. } => 2,        // ENOENT
            DeviceError::EvtchnNoFreePort => 28,           // ENOSPC
            DeviceError::EvtchnNotConnected { .. } => 107, // ENOTCONN
            _ => 22,                                       // EINVAL
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::collections::BTreeMap;

    /// Sparse guest memory of 64-bit words.
    #[derive(Default)]
    struct Words(BTreeMap<u64, u64>);

    impl GuestMemory for Words {
        fn read_u64(&mut self, gpa: GuestPhys) -> u64 {
            assert_eq!(gpa.0 % 8, 0, "unaligned access {gpa:?}");
            self.0.get(&gpa.0).copied().unwrap_or(0)
        }
        fn write_u64(&mut self, gpa: GuestPhys, value: u64) {
            assert_eq!(gpa.0 % 8, 0, "unaligned access {gpa:?}");
            self.0.insert(gpa.0, value);
        }
    }

    const SI: u64 = 0x5000;

    fn setup(vcpus: u32) -> (EventChannels, Words) {
        let mut e = EventChannels::new(vcpus).unwrap();
        e.set_shared_info(GuestPhys(SI)).unwrap();
        (e, Words::default())
    }

    fn word(m: &mut Words, off: u64) -> u64 {
        m.read_u64(GuestPhys(SI + off))
    }

    #[test]
    fn ports_start_at_one_and_reuse_nothing_bound_twice() {
        let (mut e, _) = setup(2);
        assert_eq!(e.bind_virq(VIRQ_TIMER, 0).unwrap(), 1);
        assert_eq!(e.bind_virq(VIRQ_TIMER, 1).unwrap(), 2);
        assert_eq!(e.bind_ipi(1).unwrap(), 3);
        assert_eq!(e.bind_pirq(9, 0).unwrap(), 4);
        assert_eq!(e.virq_port(VIRQ_TIMER, 1), Some(2));
        assert_eq!(e.binding(3), Some(Binding::Ipi { vcpu: 1 }));
        assert_eq!(e.binding(0), None);
        assert_eq!(
            e.bind_virq(VIRQ_TIMER, 0),
            Err(DeviceError::EvtchnVirqBound { virq: 0, vcpu: 0 })
        );
        assert_eq!(e.bind_ipi(2), Err(DeviceError::EvtchnBadVcpu { vcpu: 2 }));
        assert_eq!(
            e.bind_virq(NR_VIRQS, 0),
            Err(DeviceError::EvtchnBadVirq { virq: NR_VIRQS })
        );
        assert_eq!(e.stats().binds, 4);
    }

    #[test]
    fn send_sets_pending_selector_and_upcall_bits_exactly() {
        let (mut e, mut m) = setup(2);
        for _ in 0..70 {
            e.bind_ipi(1).unwrap();
        }
        // Port 69: word 1, bit 5; vCPU 1's vcpu_info at 64.
        let n = e.send(&mut m, 69).unwrap();
        assert_eq!(
            n,
            Sent::Local(Notify {
                vcpu: 1,
                upcall: true
            })
        );
        assert_eq!(word(&mut m, layout::EVTCHN_PENDING + 8), 1 << 5);
        assert_eq!(word(&mut m, layout::EVTCHN_PENDING), 0);
        assert_eq!(word(&mut m, 64 + layout::PENDING_SEL), 1 << 1);
        assert_eq!(word(&mut m, 64), 1, "upcall_pending byte");
        assert_eq!(word(&mut m, 0), 0, "vCPU 0 untouched");
        assert_eq!(word(&mut m, layout::PENDING_SEL), 0);
        assert!(e.upcall_pending(&mut m, 1));
        assert!(!e.upcall_pending(&mut m, 0));
        // Again: the port is already pending, nothing more.
        let n = e.send(&mut m, 69).unwrap();
        assert_eq!(
            n,
            Sent::Local(Notify {
                vcpu: 1,
                upcall: false
            })
        );
        // Another port in the same word: pending bit set, selector already set.
        e.send(&mut m, 70).unwrap();
        assert_eq!(
            word(&mut m, layout::EVTCHN_PENDING + 8),
            (1 << 5) | (1 << 6)
        );
        let s = e.stats();
        assert_eq!(
            (
                s.sends,
                s.raises,
                s.upcalls,
                s.suppressed_already_pending,
                s.suppressed_upcall
            ),
            (3, 3, 1, 1, 1)
        );
    }

    #[test]
    fn selector_set_but_upcall_cleared_raises_no_upcall_and_new_word_does() {
        let (mut e, mut m) = setup(1);
        for _ in 0..130 {
            e.bind_ipi(0).unwrap();
        }
        assert_eq!(
            e.send(&mut m, 1).unwrap(),
            Sent::Local(Notify {
                vcpu: 0,
                upcall: true
            })
        );
        // The guest clears upcall_pending but has not scanned the selector yet.
        m.write_u64(GuestPhys(SI), 0);
        assert_eq!(
            e.send(&mut m, 2).unwrap(),
            Sent::Local(Notify {
                vcpu: 0,
                upcall: false
            })
        );
        assert_eq!(word(&mut m, 0), 0);
        // A port in word 2 sets its selector bit and upcall_pending again.
        assert_eq!(
            e.send(&mut m, 129).unwrap(),
            Sent::Local(Notify {
                vcpu: 0,
                upcall: true
            })
        );
        assert_eq!(word(&mut m, layout::PENDING_SEL), 0b101);
        assert_eq!(word(&mut m, layout::EVTCHN_PENDING + 16), 0b10);
        assert_eq!(word(&mut m, 0), 1);
    }

    #[test]
    fn masked_port_stays_pending_until_unmask() {
        let (mut e, mut m) = setup(1);
        let p = e.bind_virq(VIRQ_TIMER, 0).unwrap();
        m.write_u64(GuestPhys(SI + layout::EVTCHN_MASK), 1 << p);
        assert_eq!(
            e.send(&mut m, p).unwrap(),
            Sent::Local(Notify {
                vcpu: 0,
                upcall: false
            })
        );
        assert_eq!(word(&mut m, layout::EVTCHN_PENDING), 1 << p);
        assert_eq!(word(&mut m, layout::PENDING_SEL), 0);
        assert_eq!(word(&mut m, 0), 0);
        assert_eq!(e.stats().suppressed_masked, 1);
        assert_eq!(
            e.unmask(&mut m, p).unwrap(),
            Notify {
                vcpu: 0,
                upcall: true
            }
        );
        assert_eq!(word(&mut m, layout::EVTCHN_MASK), 0);
        assert_eq!(word(&mut m, layout::PENDING_SEL), 1);
        assert_eq!(word(&mut m, 0), 1);
        // Unmasking a port that is not masked changes nothing.
        assert_eq!(
            e.unmask(&mut m, p).unwrap(),
            Notify {
                vcpu: 0,
                upcall: false
            }
        );
        assert_eq!((e.stats().unmasks, e.stats().unmask_upcalls), (2, 1));
    }

    #[test]
    fn upcall_mask_suppresses_the_upcall_but_not_the_bits() {
        let (mut e, mut m) = setup(1);
        let p = e.bind_ipi(0).unwrap();
        m.write_u64(GuestPhys(SI), 1 << (8 * layout::UPCALL_MASK));
        assert_eq!(
            e.send(&mut m, p).unwrap(),
            Sent::Local(Notify {
                vcpu: 0,
                upcall: false
            })
        );
        assert_eq!(word(&mut m, 0), 0x0101, "pending set beside the mask");
        assert_eq!(word(&mut m, layout::PENDING_SEL), 1);
    }

    #[test]
    fn interdomain_sends_name_the_remote_end() {
        let (mut a, mut ma) = setup(1);
        let (mut b, mut mb) = setup(1);
        let pa = a.bind_interdomain(0).unwrap();
        let pb = b.bind_interdomain(0).unwrap();
        assert_eq!(
            a.send(&mut ma, pa),
            Err(DeviceError::EvtchnNotConnected { port: pa })
        );
        a.connect(
            pa,
            RemotePort {
                domain: 1,
                port: pb,
            },
        )
        .unwrap();
        b.connect(
            pb,
            RemotePort {
                domain: 0,
                port: pa,
            },
        )
        .unwrap();
        let Sent::Remote(r) = a.send(&mut ma, pa).unwrap() else {
            panic!("not remote");
        };
        assert_eq!(
            r,
            RemotePort {
                domain: 1,
                port: pb
            }
        );
        assert_eq!(
            b.raise(&mut mb, r.port).unwrap(),
            Notify {
                vcpu: 0,
                upcall: true
            }
        );
        assert_eq!(
            ma.0.values().filter(|v| **v != 0).count(),
            0,
            "sender's page untouched"
        );
        assert_eq!(word(&mut mb, layout::EVTCHN_PENDING), 1 << pb);
    }

    #[test]
    fn errors_for_unbound_ports_and_missing_or_moved_shared_info() {
        let mut e = EventChannels::new(1).unwrap();
        let mut m = Words::default();
        let p = e.bind_ipi(0).unwrap();
        assert_eq!(e.send(&mut m, p), Err(DeviceError::EvtchnNoSharedInfo));
        assert!(!e.upcall_pending(&mut m, 0));
        assert_eq!(
            e.set_shared_info(GuestPhys(0x1234)),
            Err(DeviceError::EvtchnBadSharedInfo { gpa: 0x1234 })
        );
        e.set_shared_info(GuestPhys(SI)).unwrap();
        e.set_shared_info(GuestPhys(SI)).unwrap();
        assert!(e.set_shared_info(GuestPhys(SI + 4096)).is_err());
        assert_eq!(
            e.send(&mut m, 7),
            Err(DeviceError::EvtchnBadPort { port: 7 })
        );
        assert_eq!(
            e.send(&mut m, 0),
            Err(DeviceError::EvtchnBadPort { port: 0 })
        );
        assert_eq!(
            EventChannels::errno(&DeviceError::EvtchnBadPort { port: 7 }),
            22
        );
        assert!(EventChannels::new(MAX_VCPUS + 1).is_err());
        assert!(m.0.is_empty(), "failed operations write nothing");
    }
}
