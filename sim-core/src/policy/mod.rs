//! Virtualization policies, chosen by name: how the machine runs the guest kernel. One
//! file per policy; `native` is the machine's own path in `machine.rs`.

pub(crate) mod emulate;
pub mod hvm_ept;
pub mod hvm_shadow;
pub mod hybrid;
pub mod hypercall;
pub mod native;
pub mod pirq;
pub mod pv;

use serde::Serialize;

/// A virtualization policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Policy {
    /// The guest kernel runs on bare hardware.
    Native,
    /// x86-64 Xen-style paravirtualization: the kernel at CPL 3, hypercalls, bounces,
    /// validated direct paging, event channels; no VMX.
    Pv,
    /// Hardware-assisted: VMX non-root operation with EPT and VPID.
    HvmEpt,
    /// Hardware-assisted: VMX non-root operation with shadow page tables and VPID.
    HvmShadow,
    /// Hardware-assisted with EPT, VPID, APIC virtualization and posted interrupts.
    HvmEptApicv,
    /// A PV kernel in an HVM container: `HvmEpt` plus hypercalls, event channels and the
    /// PV timer.
    Hybrid,
}

impl Policy {
    /// Every policy, in report order.
    pub const ALL: &'static [Policy] = &[
        Policy::Native,
        Policy::Pv,
        Policy::HvmShadow,
        Policy::HvmEpt,
        Policy::HvmEptApicv,
        Policy::Hybrid,
    ];

    /// The mode name.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Native => native::NAME,
            Policy::Pv => pv::NAME,
            Policy::HvmEpt => hvm_ept::NAME,
            Policy::HvmShadow => hvm_shadow::NAME,
            Policy::HvmEptApicv => hvm_ept::APICV_NAME,
            Policy::Hybrid => hybrid::NAME,
        }
    }

    /// True for the policies that run the guest in VMX non-root operation.
    pub fn is_hvm(self) -> bool {
        matches!(
            self,
            Policy::HvmEpt | Policy::HvmShadow | Policy::HvmEptApicv | Policy::Hybrid
        )
    }

    /// The policy of a mode name.
    pub fn from_name(name: &str) -> Option<Policy> {
        Self::ALL.iter().copied().find(|p| p.name() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_round_trip_by_name() {
        for p in Policy::ALL {
            assert_eq!(Policy::from_name(p.name()), Some(*p));
        }
        assert_eq!(Policy::from_name("hvm-ept"), Some(Policy::HvmEpt));
        assert_eq!(Policy::from_name("hybrid"), Some(Policy::Hybrid));
        assert_eq!(Policy::from_name("pv"), Some(Policy::Pv));
        assert_eq!(Policy::from_name("xen"), None);
    }
}
