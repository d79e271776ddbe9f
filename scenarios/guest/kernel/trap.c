/* Descriptor tables, per-CPU setup, interrupt/exception dispatch and the tick. */
#include "kernel.h"

struct idt_entry {
    u16 off_lo;
    u16 sel;
    u8 ist;
    u8 type;
    u16 off_mid;
    u32 off_hi;
    u32 zero;
} PACKED;

static struct idt_entry idt[256] ALIGNED(16);
static u8 ist_stacks[MAX_CPUS][IST_STACK_SIZE] ALIGNED(16);
static u64 tick_tsc;

void idt_init(void)
{
    for (int v = 0; v < 256; v++) {
        u64 h = (u64)isr_stubs + 16 * (u64)v;
        idt[v] = (struct idt_entry){
            .off_lo = (u16)h,
            .sel = KERNEL_CS,
            .ist = v == VEC_DF ? 1 : 0,
            .type = 0x8E, /* present, DPL 0, 64-bit interrupt gate */
            .off_mid = (u16)(h >> 16),
            .off_hi = (u32)(h >> 32),
            .zero = 0,
        };
    }
    tick_tsc = tsc_hz / TICK_HZ;
}

static u64 tss_desc_lo(u64 base, u32 limit)
{
    return (limit & 0xFFFFUL) | ((base & 0xFFFFFFUL) << 16) | (0x89UL << 40) |
           ((u64)(limit >> 16 & 0xF) << 48) | (((base >> 24) & 0xFF) << 56);
}

void cpu_init(u64 cpu)
{
    struct percpu *c = &percpus[cpu];
    c->self = c;
    c->id = cpu;
    c->idle.is_idle = 1;
    c->idle.state = T_RUNNING;
    c->idle.cpu = (int)cpu;
    c->idle.pid = 0;
    strlcpy_k(c->idle.name, "idle", sizeof c->idle.name);
    c->current = &c->idle;

    c->gdt[0] = 0;
    c->gdt[1] = 0x00AF9A000000FFFFUL; /* 0x08 kernel code, 64-bit */
    c->gdt[2] = 0x00CF92000000FFFFUL; /* 0x10 kernel data */
    c->gdt[3] = 0;                    /* 0x18 unused (sysret base) */
    c->gdt[4] = 0x00CFF2000000FFFFUL; /* 0x20 user data, DPL 3 */
    c->gdt[5] = 0x00AFFA000000FFFFUL; /* 0x28 user code, 64-bit, DPL 3 */
    memset(&c->tss, 0, sizeof c->tss);
    c->tss.ist[0] = (u64)&ist_stacks[cpu][IST_STACK_SIZE];
    c->tss.iomap_base = sizeof(struct tss);
    c->gdt[6] = tss_desc_lo((u64)&c->tss, sizeof(struct tss) - 1);
    c->gdt[7] = (u64)&c->tss >> 32;

    pv.load_gdt(c->gdt, sizeof c->gdt - 1);
    pv.load_tr(TSS_SEL);
    pv.load_idt(idt, sizeof idt - 1);

    pv.write_msr(MSR_GS_BASE, (u64)c);
    pv.write_msr(MSR_KERNEL_GS_BASE, 0);
    pv.write_msr(MSR_FS_BASE, 0);
    c->fs_loaded = 0;
    pv.write_msr(MSR_STAR, ((u64)(USER_DS - 8 - 3) << 48) | ((u64)KERNEL_CS << 32));
    pv.write_msr(MSR_LSTAR, (u64)syscall_entry);
    pv.write_msr(MSR_SFMASK, (1u << 8) | (1u << 9) | (1u << 10)); /* TF, IF, DF */

    pv.lapic_init();
    c->apic_id = pv.cpu_hw_id();
    c->timer_deadline = 0;
    timer_rearm(c);
}

/* Arms the next tick, or an earlier sleeper's deadline. */
void timer_rearm(struct percpu *c)
{
    u64 now = rdtsc();
    u64 d = now + tick_tsc;
    u64 s = next_sleep_deadline;
    if (s && s < d)
        d = s > now ? s : now + 1;
    c->timer_deadline = d;
    pv.set_timer(d);
}

/* Makes sure this CPU's timer fires no later than `deadline`. */
void timer_request(struct percpu *c, u64 deadline)
{
    if (deadline < c->timer_deadline) {
        c->timer_deadline = deadline;
        pv.set_timer(deadline);
    }
}

static const char *exc_name(u64 v)
{
    static const char *const names[] = {"#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM",
                                        "#DF", "#CSO", "#TS", "#NP", "#SS", "#GP", "#PF", "#15",
                                        "#MF", "#AC", "#MC", "#XM", "#VE", "#CP"};
    return v < sizeof names / sizeof names[0] ? names[v] : "exception";
}

static int exc_signal(u64 v)
{
    switch (v) {
    case 0:
    case 16:
    case 19:
        return 8; /* SIGFPE */
    case 6:
        return 4; /* SIGILL */
    case 1:
    case 3:
        return 5; /* SIGTRAP */
    case 17:
        return 7; /* SIGBUS */
    default:
        return 11; /* SIGSEGV */
    }
}

/* Trap from kernel mode: the idle loop's halt, or a fault on user memory in a syscall. */
static void kernel_trap(struct trapframe *tf, u64 cr2)
{
    struct percpu *c = this_cpu();
    switch (tf->vector) {
    case VEC_TIMER:
        timer_rearm(c);
        pv.eoi();
        return;
    case VEC_RESCHED:
        c->need_resched = 1;
        pv.eoi();
        return;
    case VEC_PF:
        if (cr2 < USER_TOP && handle_user_fault(cr2, tf->err) == 0)
            return;
        break;
    default:
        if (tf->vector >= 32) {
            kprintf("hvsim-kernel: unexpected interrupt vector %lu in kernel mode\n", tf->vector);
            pv.eoi();
            return;
        }
    }
    panic("%s (vector %lu) in kernel mode: err %#lx rip %#lx cr2 %#lx rsp %#lx cpu %lu",
          exc_name(tf->vector), tf->vector, tf->err, tf->rip, cr2, tf->rsp, c->id);
}

/*
 * Hybrid: the event-channel upcall. Each event gets the work its native vector gets, with
 * no EOI (the pending bits were consumed in shared memory).
 */
static void upcall(struct trapframe *tf)
{
    u32 ev = pv_upcall_events();
    if (ev & EV_NIC)
        nic_upcall();
    if (ev & EV_TLB)
        tlb_service();
    if (!(ev & (EV_TIMER | EV_RESCHED | EV_NET | EV_BLK)))
        return;
    struct percpu *c = this_cpu();
    if (!(tf->cs & 3)) {
        if (ev & EV_TIMER)
            timer_rearm(c);
        if (ev & EV_RESCHED)
            c->need_resched = 1;
        if (ev & (EV_NET | EV_BLK)) {
            /* In the idle loop's halt, which dropped the lock: the drivers wake tasks. */
            bkl_lock();
            if (ev & EV_NET)
                netfront_event();
            if (ev & EV_BLK)
                blkfront_event();
            bkl_unlock();
        }
        return;
    }
    bkl_lock();
    if (ev & (EV_NET | EV_BLK)) {
        if (ev & EV_NET)
            netfront_event();
        if (ev & EV_BLK)
            blkfront_event();
        if (c->rq_len > 0)
            c->need_resched = 1; /* a woken receiver runs now, not at the next tick */
    }
    if (ev & EV_TIMER) {
        timer_rearm(c);
        timers_check();
        if (c->rq_len > 0)
            c->need_resched = 1;
    }
    if (ev & EV_RESCHED)
        c->need_resched = 1;
    user_return(tf);
}

void trap_handler(struct trapframe *tf)
{
    u64 v = tf->vector;
    u64 cr2 = v == VEC_PF ? pv.read_cr2() : 0;
    if (v == VEC_UPCALL) {
        upcall(tf);
        return;
    }
    if (v == e1000_vector && v) {
        e1000_irq(tf);
        return;
    }
    if (v == ahci_vector && v) {
        ahci_irq(tf);
        return;
    }
    if (v == VEC_NIC) {
        nic_irq();
        return;
    }
    if (v == VEC_TLB) {
        tlb_service();
        pv.eoi();
        return;
    }
    if (v == VEC_SPURIOUS)
        return;
    if (!(tf->cs & 3)) {
        kernel_trap(tf, cr2);
        return;
    }

    bkl_lock();
    struct percpu *c = this_cpu();
    switch (v) {
    case VEC_TIMER:
        timer_rearm(c);
        pv.eoi();
        timers_check();
        if (c->rq_len > 0)
            c->need_resched = 1;
        break;
    case VEC_RESCHED:
        pv.eoi();
        c->need_resched = 1;
        break;
    case VEC_PF: {
        int r = handle_user_fault(cr2, tf->err);
        if (r == -ENOMEM)
            kill_current(9, "out of memory", tf, cr2);
        else if (r < 0)
            kill_current(11, "page fault", tf, cr2);
        break;
    }
    default:
        if (v < 32) {
            kill_current(exc_signal(v), exc_name(v), tf, cr2);
        } else {
            kprintf("hvsim-kernel: unexpected interrupt vector %lu\n", v);
            pv.eoi();
        }
    }
    user_return(tf);
}
