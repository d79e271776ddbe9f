/* Entry points: boot, AP start, context switch, syscall and interrupt entry/exit. */
#include "asm_defs.h"

    .section .text.boot, "ax"
    .globl _start
_start:
    /* rdi = boot_info (direct map), rsi = cpu index, rsp = boot stack */
    cld
    xorl %ebp, %ebp
    andq $-16, %rsp
    call kernel_main
    jmp halt_forever

    .globl ap_start
ap_start:
    cld
    xorl %ebp, %ebp
    andq $-16, %rsp
    call ap_main
halt_forever:
    cli
1:  hlt
    jmp 1b

    .text

/* void swtch(u64 *save_ksp, u64 next_ksp): callee-saved registers on the stack. */
    .globl swtch
swtch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret

.macro PUSH_REGS
    pushq %rax
    pushq %rbx
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %rbp
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
.endm

.macro POP_REGS
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %r11
    popq %r10
    popq %r9
    popq %r8
    popq %rbp
    popq %rdi
    popq %rsi
    popq %rdx
    popq %rcx
    popq %rbx
    popq %rax
.endm

/* syscall: RCX = user RIP, R11 = user RFLAGS, IF/DF/TF cleared by SFMASK. */
    .globl syscall_entry
syscall_entry:
    swapgs
    movq %rsp, %gs:PC_USER_RSP
    movq %gs:PC_KSTACK_TOP, %rsp
    pushq $USER_DS
    pushq %gs:PC_USER_RSP
    pushq %r11
    pushq $USER_CS
    pushq %rcx
    pushq $0
    pushq $SYSCALL_VECTOR
    PUSH_REGS
    movq %rsp, %rdi
    call syscall_handler
    .globl syscall_restore
syscall_restore:
    POP_REGS
    /* rsp -> vector, err, rip, cs, rflags, rsp, ss */
    movq 16(%rsp), %rcx
    movq 32(%rsp), %r11
    movq 40(%rsp), %rsp
    swapgs
    sysretq

/* First run of a new task: the stack holds its trap frame (syscall layout). */
    .globl fork_child_entry
fork_child_entry:
    movq %rsp, %rdi
    call user_return
    cmpb $0, pv_paravirt(%rip)
    jne pv_syscall_restore
    jmp syscall_restore

/*
 * PV entry points. The hypervisor's bounce frame is RCX, R11, [error code,] RIP, CS,
 * RFLAGS, RSP, SS on the kernel stack (Xen's x86-64 layout); every return is the iret
 * hypercall with RAX, R11, RCX, flags pushed on top of the RIP..SS frame. No SWAPGS: the
 * hypervisor switches GS bases with the guest's kernel/user mode.
 */
    .globl pv_syscall_entry
pv_syscall_entry:
    popq %rcx
    popq %r11
    pushq $0
    pushq $SYSCALL_VECTOR
    PUSH_REGS
    movq %rsp, %rdi
    call syscall_handler
    .globl pv_syscall_restore
pv_syscall_restore:
    POP_REGS
    addq $16, %rsp
pv_iret:
    pushq $0
    pushq %rcx
    pushq %r11
    pushq %rax
    movl $23, %eax
    syscall
    ud2

    .globl pv_upcall_entry
pv_upcall_entry:
    popq %rcx
    popq %r11
    pushq $0
    pushq $VEC_UPCALL_ASM
    jmp pv_intr_common

/* Exception entries from the trap table, 32 bytes apart: pv_trap_stubs + 32 * vector. */
    .balign 32
    .globl pv_trap_stubs
pv_trap_stubs:
    .set vec, 0
    .rept 32
    .balign 32
    popq %rcx
    popq %r11
    .if (vec == 8) || (vec == 10) || (vec == 11) || (vec == 12) || (vec == 13) || (vec == 14) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
    .else
    pushq $0
    .endif
    pushq $vec
    jmp pv_intr_common
    .set vec, vec + 1
    .endr

pv_intr_common:
    PUSH_REGS
    movq %rsp, %rdi
    call trap_handler
    POP_REGS
    addq $16, %rsp
    jmp pv_iret

/* Interrupt and exception stubs, 16 bytes apart: isr_stubs + 16 * vector. */
    .balign 16
    .globl isr_stubs
isr_stubs:
    .set vec, 0
    .rept 256
    .balign 16
    .if (vec == 8) || (vec == 10) || (vec == 11) || (vec == 12) || (vec == 13) || (vec == 14) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
    .else
    pushq $0
    .endif
    pushq $vec
    jmp intr_common
    .set vec, vec + 1
    .endr

intr_common:
    /* rsp -> vector, err, rip, cs, ... */
    testb $3, 24(%rsp)
    jz 1f
    swapgs
1:  PUSH_REGS
    movq %rsp, %rdi
    call trap_handler
    POP_REGS
    addq $16, %rsp
    testb $3, 8(%rsp)
    jz 2f
    swapgs
2:  iretq

    .section .note.GNU-stack, "", @progbits
