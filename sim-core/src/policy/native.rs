//! The native policy: no hypervisor. The machine's own run loop, translation path
//! (`native_mmu`) and platform are the native mode; this file only names it.

/// Mode name.
pub const NAME: &str = "native";
