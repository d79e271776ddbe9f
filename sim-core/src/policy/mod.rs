//! Virtualization policies, chosen by name: how the machine runs the guest kernel. One
//! file per policy; `native` is the machine's own path in `machine.rs`.

pub mod hvm_ept;
pub mod hybrid;
pub mod hypercall;
pub mod native;

use serde::Serialize;

/// A virtualization policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Policy {
    /// The guest kernel runs on bare hardware.
    Native,
    /// Hardware-assisted: VMX non-root operation with EPT and VPID.
    HvmEpt,
    /// A PV kernel in an HVM container: `HvmEpt` plus hypercalls, event channels and the
    /// PV timer.
    Hybrid,
}

impl Policy {
    /// Every policy, in report order.
    pub const ALL: &'static [Policy] = &[Policy::Native, Policy::HvmEpt, Policy::Hybrid];

    /// The mode name.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Native => native::NAME,
            Policy::HvmEpt => hvm_ept::NAME,
            Policy::Hybrid => hybrid::NAME,
        }
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
        assert_eq!(Policy::from_name("pv"), None);
    }
}
