/* Constants shared between the kernel's C and assembly sources. */
#ifndef HVSIM_ASM_DEFS_H
#define HVSIM_ASM_DEFS_H

/* GDT selectors (the loader's layout, extended with a per-CPU TSS). */
#define KERNEL_CS 0x08
#define KERNEL_DS 0x10
#define USER_DS 0x23 /* 0x20 | RPL 3 */
#define USER_CS 0x2b /* 0x28 | RPL 3 */
#define TSS_SEL 0x30

/* Offsets into struct percpu used by the entry code (checked in C). */
#define PC_SELF 0
#define PC_KSTACK_TOP 8
#define PC_USER_RSP 16

/* The event-channel upcall's vector in trap frames (kernel.h: VEC_UPCALL). */
#define VEC_UPCALL_ASM 0xF3

/* Pseudo vector recorded in the trap frame of a syscall. */
#define SYSCALL_VECTOR 256

/* Size of struct trapframe in bytes. */
#define TRAPFRAME_SIZE 176

#endif
