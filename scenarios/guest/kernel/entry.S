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
    jmp syscall_restore

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
