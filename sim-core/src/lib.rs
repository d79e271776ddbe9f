//! The simulated machine: physical memory, domains and vCPUs, the event queue, the
//! hypervisor and its virtualization policies, machine profiles (every cost), the timing
//! model that turns functional reports into cycles, and the serialisable `RunResult`.
//!
//! Wires `cpu-model`, `mmu` and `devices` together; those three know nothing of each other.

pub(crate) mod bar;
pub mod blk;
pub mod error;
pub mod event_queue;
pub mod host;
pub mod irq_path;
pub mod loader;
pub mod machine;
pub mod native_mmu;
pub mod net;
pub mod phys_mem;
pub mod policy;
pub mod profile;
pub mod sched;
pub mod timing;
pub mod wiring;

pub use error::SimError;
pub use machine::{ExitCount, Machine, MachineConfig, RunEnd, RunResult};
pub use policy::Policy;
pub use profile::MachineProfile;
