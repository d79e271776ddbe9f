/* Process entry: rsp -> argc, argv[], NULL, envp[], NULL, auxv (as Linux sets it up). */
    .text
    .globl _start
_start:
    xorl %ebp, %ebp
    movq %rsp, %rdi
    andq $-16, %rsp
    call __libc_start
1:  jmp 1b

    .section .note.GNU-stack, "", @progbits
