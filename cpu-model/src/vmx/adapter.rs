//! A [`Platform`] wrapper that puts a CPU in VMX non-root operation: sensitive events are
//! checked against the VMCS controls, CR0/CR4 reads see the read shadows, and x2APIC MSR
//! accesses are virtualized under the APIC-virtualization controls.

use super::apicv::{self, ApicWrite, MsrWrite, VirtualApicPage};
use super::exit_reason::VmExit;
use super::nonroot::exit_for;
use super::vmcs::Vmcs;
use crate::cpu::StepOutcome;
use crate::platform::{Disposition, Platform, Sensitive};
use crate::state::CpuState;
use crate::timing::Retired;

/// The machine's platform seen through a VMCS. [`Cpu::run`](crate::Cpu::run) with this
/// platform stops with [`StepOutcome::Intercepted`] exactly when the VMCS says "exit";
/// the exit is recorded in `exit`. Events that do not exit are offered to the inner
/// platform's own intercept hook.
pub struct VmxPlatform<'a, P: Platform> {
    /// The current VMCS.
    pub vmcs: &'a Vmcs,
    /// The machine's platform (CPUID values, MSRs, ports, time).
    pub inner: &'a mut P,
    /// The last VM exit decided by the intercept hook (its instruction length is filled
    /// in by [`VmxPlatform::take_exit`]).
    pub exit: Option<VmExit>,
    /// The virtual-APIC page virtualized RDMSR reads (with "virtualize x2APIC mode");
    /// `None` reads as a zeroed page.
    pub apic: Option<&'a VirtualApicPage>,
    /// An APIC write virtualized by the instruction now retiring. The CPU ends its run
    /// after that instruction ([`Platform::stop_after_instruction`]) and the caller
    /// applies the write before the next one ([`super::VmxCpu::run`] does).
    pub apic_write: Option<ApicWrite>,
    /// x2APIC MSR reads served from the virtual-APIC page.
    pub apic_reads: u64,
}

impl<'a, P: Platform> VmxPlatform<'a, P> {
    /// Wraps `inner` under `vmcs`.
    pub fn new(vmcs: &'a Vmcs, inner: &'a mut P) -> Self {
        VmxPlatform {
            vmcs,
            inner,
            exit: None,
            apic: None,
            apic_write: None,
            apic_reads: 0,
        }
    }

    /// The recorded exit, with the instruction length taken from the run's outcome
    /// (instruction exits; exception and interrupt exits keep 0).
    pub fn take_exit(&mut self, outcome: &StepOutcome) -> Option<VmExit> {
        let mut e = self.exit.take()?;
        if let StepOutcome::Intercepted { len, event, .. } = outcome {
            if !matches!(
                event,
                Sensitive::Exception { .. }
                    | Sensitive::ExternalInterrupt { .. }
                    | Sensitive::TripleFault
            ) {
                e.instruction_len = *len;
            }
        }
        Some(e)
    }
}

impl<P: Platform> Platform for VmxPlatform<'_, P> {
    fn cpuid(&mut self, leaf: u32, subleaf: u32) -> [u32; 4] {
        self.inner.cpuid(leaf, subleaf)
    }
    fn rdmsr(&mut self, msr: u32) -> Option<u64> {
        if let Some(v) = apicv::virtual_msr_read(self.vmcs, self.apic, msr) {
            self.apic_reads += 1;
            return Some(v);
        }
        self.inner.rdmsr(msr)
    }
    fn wrmsr(&mut self, msr: u32, value: u64) -> bool {
        match apicv::virtual_msr_write(self.vmcs, msr, value) {
            MsrWrite::Normal => self.inner.wrmsr(msr, value),
            MsrWrite::Fault => false,
            MsrWrite::Virtualized(w) => {
                self.apic_write = Some(w);
                true
            }
        }
    }
    fn io_in(&mut self, port: u16, size: u8) -> u32 {
        self.inner.io_in(port, size)
    }
    fn io_out(&mut self, port: u16, size: u8, value: u32) {
        self.inner.io_out(port, size, value)
    }
    fn tsc(&mut self) -> u64 {
        self.inner.tsc()
    }
    fn intercept(&mut self, state: &CpuState, event: &Sensitive) -> Disposition {
        match exit_for(self.vmcs, state, event, 0) {
            Some(e) => {
                self.exit = Some(e);
                Disposition::Exit
            }
            None => {
                let d = self.inner.intercept(state, event);
                if let (Disposition::Proceed, Sensitive::CrWrite { cr: 8, value, .. }) = (d, event)
                {
                    // The write goes to the TPR shadow; reserved bits fault instead.
                    if *value & !0xf == 0 && apicv::cr8_write_needs_update(self.vmcs) {
                        self.apic_write = Some(ApicWrite::Cr8(*value as u8));
                    }
                }
                d
            }
        }
    }
    #[inline(always)]
    fn stop_after_instruction(&mut self) -> bool {
        self.apic_write.is_some()
    }
    fn cr_read_shadow(&mut self, cr: u8, value: u64) -> u64 {
        let (mask, shadow) = match cr {
            0 => (self.vmcs.exec.cr0_mask, self.vmcs.exec.cr0_shadow),
            4 => (self.vmcs.exec.cr4_mask, self.vmcs.exec.cr4_shadow),
            _ => return value,
        };
        (value & !mask) | (shadow & mask)
    }
    const OBSERVES_RETIREMENT: bool = P::OBSERVES_RETIREMENT;
    #[inline(always)]
    fn retired(&mut self, info: &Retired) {
        self.inner.retired(info)
    }
    fn code_written(&mut self, frame: u64) {
        self.inner.code_written(frame)
    }
}
