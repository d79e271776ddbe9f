//! The timing model's core part: turns each retired instruction's report into cycles
//! from the profile's class costs. Memory stalls come from the translation path (walks
//! and cache accesses charged through the cache model); idle time from halted periods.

use crate::profile::ClassCosts;
use cpu_model::{InstrClass, Retired};
use serde::Serialize;

/// Where a vCPU's cycles went (the native categories; virtualization adds its own).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CycleBreakdown {
    /// Instruction-class cycles of code at CPL 3.
    pub guest_user: u64,
    /// Instruction-class cycles of code at CPL 0..2.
    pub guest_kernel: u64,
    /// Page-walk references charged through the cache hierarchy.
    pub walk_stall: u64,
    /// Data accesses and instruction fetches charged through the cache hierarchy.
    pub cache_stall: u64,
    /// Halted, waiting for an interrupt.
    pub idle: u64,
    /// EPT-dimension references of 2D walks charged through the cache hierarchy (the
    /// guest-dimension ones are in `walk_stall`); virtualized modes only.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ept_walk_stall: u64,
    /// VM exit and VM entry hardware transitions; virtualized modes only.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub exit_transitions: u64,
    /// Hypervisor exit handlers; virtualized modes only.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub exit_handling: u64,
    /// Shadow-table and guest-table references the shadow engine and the hypervisor's
    /// emulator make (fills, write-protection, emulated page-table writes, resyncs),
    /// charged through the cache hierarchy; hvm-shadow only.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub shadow_maintenance: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl CycleBreakdown {
    /// Sum of all categories.
    pub fn total(&self) -> u64 {
        self.guest_user
            + self.guest_kernel
            + self.walk_stall
            + self.cache_stall
            + self.idle
            + self.ept_walk_stall
            + self.exit_transitions
            + self.exit_handling
            + self.shadow_maintenance
    }

    /// Adds another breakdown.
    pub fn add(&mut self, o: &CycleBreakdown) {
        self.guest_user += o.guest_user;
        self.guest_kernel += o.guest_kernel;
        self.walk_stall += o.walk_stall;
        self.cache_stall += o.cache_stall;
        self.idle += o.idle;
        self.ept_walk_stall += o.ept_walk_stall;
        self.exit_transitions += o.exit_transitions;
        self.exit_handling += o.exit_handling;
        self.shadow_maintenance += o.shadow_maintenance;
    }
}

/// Per-class charge of retired instructions.
#[derive(Debug, Clone)]
pub struct CoreTiming {
    costs: ClassCosts,
    /// Cycles at CPL 3.
    pub user: u64,
    /// Cycles at CPL 0..2.
    pub kernel: u64,
}

impl CoreTiming {
    /// A timing model with the profile's costs.
    pub fn new(costs: ClassCosts) -> Self {
        CoreTiming {
            costs,
            user: 0,
            kernel: 0,
        }
    }

    /// Cycles of one retired instruction, before memory stalls.
    #[inline(always)]
    pub fn cost(&self, r: &Retired) -> u64 {
        let c = &self.costs;
        (match r.class {
            InstrClass::Alu => c.alu,
            InstrClass::Mul => c.mul,
            InstrClass::Div => c.div,
            InstrClass::Load => c.load,
            InstrClass::Store => c.store,
            InstrClass::Branch => {
                if r.taken {
                    c.branch_taken
                } else {
                    c.branch_not_taken
                }
            }
            InstrClass::CallRet => c.call_ret,
            InstrClass::String => {
                return c.string_setup as u64 + c.string_per_element as u64 * r.elements;
            }
            InstrClass::Serializing => c.serializing,
            InstrClass::System => c.system,
            InstrClass::Nop => c.nop,
        }) as u64
    }

    /// Charges one retired instruction.
    #[inline(always)]
    pub fn charge(&mut self, r: &Retired) {
        let c = self.cost(r);
        if r.cpl == 3 {
            self.user += c;
        } else {
            self.kernel += c;
        }
    }
}
