//! Machine profiles: every cost and geometry the model uses, loaded from TOML. Two real
//! generations are embedded in the binary; any other profile is read from a file. Code
//! holds no cost constants: if a number matters, it is here, with its source in the TOML.

use crate::error::SimError;
use mmu::config::MmuConfig;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The embedded profiles: (name, TOML text).
pub const BUILTIN: &[(&str, &str)] = &[
    (
        "nehalem-x5570",
        include_str!("../profiles/nehalem-x5570.toml"),
    ),
    (
        "skylake-sp-6148",
        include_str!("../profiles/skylake-sp-6148.toml"),
    ),
];

/// A machine profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineProfile {
    /// Short name (what scenarios refer to).
    pub name: String,
    /// One line describing the machine.
    pub description: String,
    /// Core clock and per-class instruction costs.
    pub core: CoreProfile,
    /// Platform clocks.
    pub platform: PlatformProfile,
    /// TLB, walk-cache and cache geometry and latencies.
    pub mmu: MmuConfig,
    /// VMX transition and exit-handler costs (the virtualized modes need it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vmx: Option<VmxProfile>,
    /// PV hypervisor costs (the `pv` mode needs it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pv: Option<PvProfile>,
    /// Service-domain (dom0) I/O costs (a machine with a network path needs it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io: Option<IoProfile>,
    /// The IOMMU an assigned device DMAs through (the `passthrough` network path needs it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iommu: Option<devices::iommu::IommuConfig>,
}

/// What the service domain's I/O work costs, in core cycles of the service domain's own
/// physical CPU (device models, backends, the bridge and the physical NIC's driver), and
/// the latency of getting it to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IoProfile {
    /// From an event for the service domain (an ioreq, an event-channel send, a physical
    /// NIC interrupt) to its handler running: notification, wake-up, scheduling. A latency:
    /// the service domain's CPU is not busy during it.
    pub dom0_wakeup: u64,
    /// A device-model round trip for one emulated register access, beyond the VM exit:
    /// the hypervisor forwards the access (ioreq) and resumes the vCPU with the answer.
    /// The vCPU waits for it and for the device model's work.
    pub device_model_dispatch: u64,
    /// The device model's work for one emulated register access (decode, register model).
    pub device_model_access: u64,
    /// The device model's work per transmitted frame (descriptor fetch, frame copy out of
    /// guest memory, hand-off to the bridge).
    pub device_model_tx_frame: u64,
    /// The device model's work per received frame (frame copy into guest memory,
    /// descriptor write-back, interrupt).
    pub device_model_rx_frame: u64,
    /// Netback's work per transmitted frame, grant copy excluded.
    pub netback_tx_frame: u64,
    /// Netback's work per received frame, grant copy excluded.
    pub netback_rx_frame: u64,
    /// One grant-copy operation (validation, mapping the granted frame), bytes excluded.
    pub grant_copy_op: u64,
    /// Grant-copy bytes per KiB copied.
    pub grant_copy_per_kib: u64,
    /// One grant map or unmap (ring set-up).
    pub grant_map_op: u64,
    /// One page flip on the receive path (`rx = "flip"`), per frame: the transfer
    /// operation (the page's ownership changed to the guest, the P2M and M2P entries
    /// updated), dom0's mapping of the page removed and its TLB flushed. No per-byte
    /// cost: the frame's bytes are not copied.
    pub grant_transfer_op: u64,
    /// The hypervisor's work per page in the guest's remap hypercall after flipped
    /// frames arrive (the buffer's page-table entry and the M2P entry updated), beyond
    /// the hypercall itself. Charged to the guest's vCPU, not the service domain.
    pub netfront_remap_page: u64,
    /// An event-channel send by the service domain (a hypercall in dom0).
    pub evtchn_send: u64,
    /// The bridge and the physical NIC's driver, per frame either way.
    pub bridge_frame: u64,
    /// The device model's work per emulated disk command, inside the doorbell's exit:
    /// fetching the command header, table and PRDs, and submitting the I/O to the service
    /// domain's disk driver.
    pub device_model_blk_command: u64,
    /// The device model's work per completed disk command: the I/O's completion, status
    /// and PRD byte count written back, the interrupt raised.
    pub device_model_blk_complete: u64,
    /// Blkback's work per request, grant maps excluded: parsing, building and submitting
    /// the I/O to the service domain's disk driver.
    pub blkback_request: u64,
    /// Blkback's work per completed request, grant unmaps excluded: the I/O's completion,
    /// the response pushed.
    pub blkback_response: u64,
}

/// Costs of the PV hypervisor's transitions and handlers, in core cycles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PvProfile {
    /// One trip from the guest into the hypervisor and back: the privilege transition in
    /// (SYSCALL/exception into ring 0, register save) and out (SYSRET/IRET).
    pub transition_cycles: u64,
    /// Hypercall dispatch and a trivial operation, beyond the transition.
    pub handler_hypercall: u64,
    /// Syscall bounce: building the syscall frame on the guest kernel stack.
    pub handler_syscall_bounce: u64,
    /// Exception bounce: trap-table lookup and frame.
    pub handler_exception_bounce: u64,
    /// Event-channel upcall: frame and jump to the event callback.
    pub handler_upcall: u64,
    /// A physical interrupt the hypervisor takes (timer, event check).
    pub handler_interrupt: u64,
    /// Privileged-operation (or CPUID) emulation: fetch, decode, execute.
    pub handler_emulation: u64,
    /// Per page-table update in `mmu_update` (the validation's references are charged
    /// through the cache model on top).
    pub handler_mmu_update_entry: u64,
    /// Per `mmuext_op` operation (validation references charged on top).
    pub handler_mmuext_op: u64,
    /// The MOV-to-CR3 instruction the hypervisor executes on a page-table switch (the
    /// TLB refills that follow are modelled by the TLB and walk caches).
    pub cr3_load_cycles: u64,
}

/// Costs of VMX transitions and of the hypervisor's exit handlers, in core cycles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmxProfile {
    /// Hardware VM exit (guest state saved, host state loaded).
    pub exit_cycles: u64,
    /// Hardware VM entry (VMRESUME, guest state loaded).
    pub entry_cycles: u64,
    /// CPUID emulation.
    pub handler_cpuid: u64,
    /// RDMSR/WRMSR emulation (decode, local APIC model).
    pub handler_msr: u64,
    /// HLT: block the vCPU until an interrupt.
    pub handler_hlt: u64,
    /// Port I/O emulation.
    pub handler_io: u64,
    /// EPT violation: find and map the page.
    pub handler_ept_violation: u64,
    /// External-interrupt or interrupt-window exit and the injection on the next entry.
    pub handler_interrupt: u64,
    /// Shadow paging: a #PF exit's decode and shadow lookup (the walks and fills the
    /// engine makes are charged through the cache model on top).
    pub handler_page_fault: u64,
    /// Shadow paging: a CR3 load/store exit's decode and root switch (the root build or
    /// resynchronisation references are charged on top).
    pub handler_cr_access: u64,
    /// Shadow paging: an INVLPG exit's decode and shadow-entry drop.
    pub handler_invlpg: u64,
    /// Fetching, decoding and executing one guest instruction in the hypervisor's
    /// emulator (a trapped page-table write), on top of the exit's handler.
    pub handler_emulation: u64,
    /// Any other exit reason.
    pub handler_other: u64,
    /// VMCALL (exit 18) under a policy with hypercalls: the dispatcher and the operation's
    /// own work, beyond the transition (`exit_cycles + entry_cycles`).
    pub handler_hypercall: u64,
    /// When the hypervisor maps guest RAM in EPT: on the first EPT violation of each page
    /// (KVM) or all of it when the domain is built (Xen builds the p2m up front). A
    /// software policy, not hardware; reported in the resolved configuration.
    pub ept_populate: EptPopulate,
    /// EPT leaf size for guest RAM in KiB: 4 or 2048 (2 MiB superpages where a whole
    /// aligned 2 MiB of guest RAM exists; a 2D walk with 2 MiB EPT pages is shorter).
    pub ept_page_kib: u32,
}

/// When the hypervisor maps guest RAM in EPT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EptPopulate {
    /// Each page on its first EPT violation (an exit, 48).
    OnViolation,
    /// Everything when the domain is built (no violations for RAM).
    AtBuild,
}

/// The core: clock and instruction costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoreProfile {
    /// Core clock in MHz (cycles are converted to time with it).
    pub freq_mhz: u32,
    /// Cycles per retired instruction by timing class.
    pub cost: ClassCosts,
}

/// Cycles charged per retired instruction of each timing class, before memory stalls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassCosts {
    /// Simple integer operations and moves.
    pub alu: u32,
    /// Integer multiply.
    pub mul: u32,
    /// Integer divide.
    pub div: u32,
    /// Load (issue; the cache model adds the access latency).
    pub load: u32,
    /// Store (issue).
    pub store: u32,
    /// Branch not taken.
    pub branch_not_taken: u32,
    /// Branch taken.
    pub branch_taken: u32,
    /// CALL/RET.
    pub call_ret: u32,
    /// Start-up of a string instruction.
    pub string_setup: u32,
    /// Per element of a string instruction.
    pub string_per_element: u32,
    /// Serializing/fencing instructions.
    pub serializing: u32,
    /// System instructions (SYSCALL, SYSRET, IRETQ, MOV CR, WRMSR, ...).
    pub system: u32,
    /// NOP, PAUSE, ENDBR64.
    pub nop: u32,
}

/// Platform clocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformProfile {
    /// Time-stamp counter frequency.
    pub tsc_hz: u64,
    /// Local APIC timer input frequency (before the divide configuration).
    pub apic_timer_hz: u64,
}

impl MachineProfile {
    /// Names of the embedded profiles.
    pub fn builtin_names() -> impl Iterator<Item = &'static str> {
        BUILTIN.iter().map(|(n, _)| *n)
    }

    /// Parses a profile from TOML text; `origin` names the file in error messages.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, SimError> {
        let p: MachineProfile = toml::from_str(text).map_err(|e| SimError::Profile {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        p.validate(origin)?;
        Ok(p)
    }

    /// An embedded profile by name, or a profile file by path.
    pub fn load(name_or_path: &str) -> Result<Self, SimError> {
        if let Some((n, text)) = BUILTIN.iter().find(|(n, _)| *n == name_or_path) {
            return Self::from_toml(text, &format!("built-in profile {n}"));
        }
        let path = Path::new(name_or_path);
        if path.exists() {
            let text = std::fs::read_to_string(path).map_err(|e| SimError::Profile {
                origin: name_or_path.to_string(),
                message: e.to_string(),
            })?;
            return Self::from_toml(&text, name_or_path);
        }
        Err(SimError::UnknownProfile {
            name: name_or_path.to_string(),
            known: Self::builtin_names().collect::<Vec<_>>().join(", "),
        })
    }

    fn validate(&self, origin: &str) -> Result<(), SimError> {
        let bad = |field: &str, why: &str| SimError::Profile {
            origin: origin.to_string(),
            message: format!("{field}: {why}"),
        };
        if self.core.freq_mhz == 0 {
            return Err(bad("core.freq_mhz", "must be positive"));
        }
        if self.platform.tsc_hz == 0 || self.platform.apic_timer_hz == 0 {
            return Err(bad("platform", "clock frequencies must be positive"));
        }
        if let Some(v) = &self.vmx {
            if !matches!(v.ept_page_kib, 4 | 2048) {
                return Err(bad("vmx.ept_page_kib", "must be 4 or 2048"));
            }
        }
        if let Some(i) = &self.iommu {
            i.validate().map_err(|e| bad("iommu", &e.to_string()))?;
        }
        self.mmu.validate().map_err(|e| bad("mmu", &e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn builtin_profiles_parse_and_validate() {
        for name in MachineProfile::builtin_names() {
            let p = MachineProfile::load(name).unwrap();
            assert_eq!(p.name, name);
        }
    }

    #[test]
    fn unknown_field_is_rejected_with_its_name() {
        let text = BUILTIN[0].1.replace("nop = 1", "nop = 1\nbogus = 2");
        let e = MachineProfile::from_toml(&text, "x.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.toml") && e.contains("bogus"), "{e}");
    }

    #[test]
    fn unknown_profile_lists_choices() {
        let e = MachineProfile::load("pentium-4").unwrap_err().to_string();
        assert!(
            e.contains("nehalem-x5570") && e.contains("skylake-sp-6148"),
            "{e}"
        );
    }
}
