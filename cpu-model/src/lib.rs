//! Instruction-level x86-64 model.
