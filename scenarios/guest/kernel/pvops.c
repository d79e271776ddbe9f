/*
 * pv_ops: the table of privileged operations, chosen once at boot.
 *
 * The native backend executes the privileged instructions and programs the x2APIC through
 * MSRs. The hybrid backend (a PV kernel in an HVM container) is the native table with the
 * timer, interrupts, idle and IPIs replaced by hypercalls and event channels; CPU start-up,
 * the MMU and syscalls stay native. The PV backend (x86-64 Xen-style paravirtualization)
 * runs the kernel at CPL 3: every privileged operation is a hypercall, page tables change
 * only through validated updates, and the entry code is its own (entry.S, pv_*). Port I/O
 * and the segment-base MSRs stay native instructions there and are emulated by the
 * hypervisor. pv_select() is the single place that chooses.
 */
#include "kernel.h"

/* ---------------- native backend ---------------- */

static void native_load_cr3(u64 pa) { __asm__ volatile("movq %0, %%cr3" ::"r"(pa) : "memory"); }

static u64 native_read_cr2(void)
{
    u64 v;
    __asm__ volatile("movq %%cr2, %0" : "=r"(v));
    return v;
}

static void native_invlpg(u64 va) { __asm__ volatile("invlpg (%0)" ::"r"(va) : "memory"); }

static void native_flush_tlb_local(void)
{
    /* Reloading CR3 drops every non-global translation (user mappings are never global). */
    u64 v;
    __asm__ volatile("movq %%cr3, %0\n\tmovq %0, %%cr3" : "=r"(v)::"memory");
}

static void native_set_pte(u64 *ptep, u64 val) { *(volatile u64 *)ptep = val; }

static void native_load_cr3_pair(u64 pa, u64 user_pa)
{
    (void)user_pa;
    native_load_cr3(pa);
}

static void native_pt_noop(u64 pa, int level)
{
    (void)pa;
    (void)level;
}

static void native_lazy_mmu(int on) { (void)on; }
static void native_lazy_cpu(int on) { (void)on; }
static void native_mmu_flush(void) {}

struct PACKED desc_ptr {
    u16 limit;
    u64 base;
};

static void native_load_gdt(const void *base, u16 limit)
{
    struct desc_ptr d = {limit, (u64)base};
    __asm__ volatile("lgdt %0" ::"m"(d) : "memory");
}

static void native_load_idt(const void *base, u16 limit)
{
    struct desc_ptr d = {limit, (u64)base};
    __asm__ volatile("lidt %0" ::"m"(d) : "memory");
}

static void native_load_tr(u16 sel) { __asm__ volatile("ltr %0" ::"r"(sel) : "memory"); }

static void native_set_kernel_stack(u64 rsp0) { this_cpu()->tss.rsp0 = rsp0; }

static void native_irq_enable(void) { __asm__ volatile("sti" ::: "memory"); }
static void native_irq_disable(void) { __asm__ volatile("cli" ::: "memory"); }

static void native_halt(void)
{
    /* STI's one-instruction shadow makes "sti; hlt" atomic against a pending interrupt. */
    __asm__ volatile("sti\n\thlt\n\tcli" ::: "memory");
}

static u64 native_read_msr(u32 msr)
{
    u32 lo, hi;
    __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
    return ((u64)hi << 32) | lo;
}

static void native_write_msr(u32 msr, u64 val)
{
    __asm__ volatile("wrmsr" ::"c"(msr), "a"((u32)val), "d"((u32)(val >> 32)) : "memory");
}

static void native_io_out(u16 port, u32 val, int size)
{
    if (size == 1)
        __asm__ volatile("outb %b0, %w1" ::"a"(val), "Nd"(port));
    else if (size == 2)
        __asm__ volatile("outw %w0, %w1" ::"a"(val), "Nd"(port));
    else
        __asm__ volatile("outl %0, %w1" ::"a"(val), "Nd"(port));
}

static u32 native_io_in(u16 port, int size)
{
    u32 v = 0;
    if (size == 1) {
        u8 b;
        __asm__ volatile("inb %w1, %b0" : "=a"(b) : "Nd"(port));
        v = b;
    } else if (size == 2) {
        u16 w;
        __asm__ volatile("inw %w1, %w0" : "=a"(w) : "Nd"(port));
        v = w;
    } else {
        __asm__ volatile("inl %w1, %0" : "=a"(v) : "Nd"(port));
    }
    return v;
}

static void cpuid(u32 leaf, u32 *a, u32 *b, u32 *c, u32 *d)
{
    __asm__ volatile("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d) : "a"(leaf), "c"(0));
}

/* LAPIC timer: TSC-deadline mode when CPUID says so, else one-shot count mode. */
static int tsc_deadline_mode;
static u64 apic_timer_hz;

#define LVT_MASKED (1u << 16)
#define LVT_ONESHOT (0u << 17)
#define LVT_TSC_DEADLINE (2u << 17)

static void native_lapic_init(void)
{
    u32 a, b, c, d;
    cpuid(1, &a, &b, &c, &d);
    tsc_deadline_mode = (c >> 24) & 1;
    native_write_msr(X2APIC_TPR, 0);
    native_write_msr(X2APIC_SPURIOUS, 0x100 | VEC_SPURIOUS);
    if (tsc_deadline_mode) {
        native_write_msr(X2APIC_LVT_TIMER, LVT_TSC_DEADLINE | VEC_TIMER);
    } else {
        native_write_msr(X2APIC_TIMER_DIV, 0xB); /* divide by 1 */
        native_write_msr(X2APIC_LVT_TIMER, LVT_ONESHOT | VEC_TIMER);
    }
}

static u32 native_cpu_hw_id(void) { return (u32)native_read_msr(X2APIC_ID); }

static void native_eoi(void) { native_write_msr(X2APIC_EOI, 0); }

static void native_set_timer(u64 deadline)
{
    if (tsc_deadline_mode) {
        native_write_msr(MSR_TSC_DEADLINE, deadline);
        return;
    }
    u64 now = rdtsc();
    u64 delta = deadline > now ? deadline - now : 1;
    if (delta > (1UL << 32))
        delta = 1UL << 32;
    /* count = delta * apic_hz / tsc_hz, without 128-bit arithmetic */
    u64 count = (delta / tsc_hz) * apic_timer_hz + ((delta % tsc_hz) * apic_timer_hz) / tsc_hz;
    if (count == 0)
        count = 1;
    if (count > 0xFFFFFFFFUL)
        count = 0xFFFFFFFFUL;
    native_write_msr(X2APIC_TIMER_INIT, count);
}

#define ICR_FIXED (0u << 8)
#define ICR_INIT (5u << 8)
#define ICR_SIPI (6u << 8)
#define ICR_ASSERT (1u << 14)

static void native_send_ipi(u32 cpu, u32 vector)
{
    u64 dest = percpus[cpu].apic_id;
    native_write_msr(X2APIC_ICR, (dest << 32) | ICR_FIXED | ICR_ASSERT | (vector & 0xFF));
}

static void native_start_cpu(u32 cpu)
{
    u64 dest = cpu; /* APIC id n for CPU n (boot contract) */
    native_write_msr(X2APIC_ICR, (dest << 32) | ICR_INIT | ICR_ASSERT);
    native_write_msr(X2APIC_ICR, (dest << 32) | ICR_SIPI | ICR_ASSERT | 0);
}

static const struct pv_ops native_ops = {
    .name = "native",
    .load_cr3 = native_load_cr3,
    .load_cr3_pair = native_load_cr3_pair,
    .alloc_pt = native_pt_noop,
    .release_pt = native_pt_noop,
    .lazy_mmu = native_lazy_mmu,
    .mmu_flush = native_mmu_flush,
    .lazy_cpu = native_lazy_cpu,
    .flush_tlb_others = 0,
    .read_cr2 = native_read_cr2,
    .invlpg = native_invlpg,
    .flush_tlb_local = native_flush_tlb_local,
    .set_pte = native_set_pte,
    .load_gdt = native_load_gdt,
    .load_idt = native_load_idt,
    .load_tr = native_load_tr,
    .set_kernel_stack = native_set_kernel_stack,
    .irq_enable = native_irq_enable,
    .irq_disable = native_irq_disable,
    .halt = native_halt,
    .lapic_init = native_lapic_init,
    .cpu_hw_id = native_cpu_hw_id,
    .eoi = native_eoi,
    .set_timer = native_set_timer,
    .send_ipi = native_send_ipi,
    .start_cpu = native_start_cpu,
    .io_out = native_io_out,
    .io_in = native_io_in,
    .read_msr = native_read_msr,
    .write_msr = native_write_msr,
};

/* ---------------- hybrid backend ----------------
 *
 * Hypercall ABI (the hypervisor's side documents it in full): vmcall at CPL 0, RAX = Xen
 * hypercall number, arguments in RDI, RSI, RDX, result in RAX (>= 0, or -errno).
 * Arguments travel in registers, not in guest-memory structures as in Xen.
 */
#define HC_SET_TIMER_OP 15
#define HC_VCPU_OP 24
#define HC_SCHED_OP 29
#define HC_EVENT_CHANNEL_OP 32
#define HC_HVM_OP 34
#define SCHEDOP_block 1
#define EVTCHNOP_bind_virq 1
#define EVTCHNOP_send 4
#define EVTCHNOP_bind_ipi 7
#define HVMOP_set_param 0
#define HVM_PARAM_CALLBACK_IRQ 0
#define VCPUOP_register_vcpu_info 10
#define VIRQ_TIMER 0

static inline i64 hypercall3(u64 nr, u64 a1, u64 a2, u64 a3)
{
    i64 r;
    __asm__ volatile("vmcall" : "=a"(r) : "a"(nr), "D"(a1), "S"(a2), "d"(a3) : "memory");
    return r;
}

/* Xen's x86-64 shared_info page (the parts event channels use). */
struct vcpu_info {
    volatile u8 evtchn_upcall_pending;
    volatile u8 evtchn_upcall_mask;
    u8 pad0[6];
    volatile u64 evtchn_pending_sel;
    u8 arch_and_time[48];
};

#define SHINFO_VCPUS 32
struct shared_info {
    struct vcpu_info vcpu_info[SHINFO_VCPUS];
    volatile u64 evtchn_pending[64];
    volatile u64 evtchn_mask[64];
    u8 rest[1024];
};
_Static_assert(sizeof(struct vcpu_info) == 64, "vcpu_info layout");
_Static_assert(offsetof(struct shared_info, evtchn_pending) == 2048, "shared_info layout");
_Static_assert(offsetof(struct shared_info, evtchn_mask) == 2560, "shared_info layout");
_Static_assert(sizeof(struct shared_info) == 4096, "shared_info layout");

static struct shared_info shinfo ALIGNED(4096);

/* Ports this kernel binds: 3 per CPU, all below 64 * PORT_WORDS. */
#define PORT_WORDS 4
static u8 port_event[64 * PORT_WORDS];         /* port -> EV_* */
static u64 cpu_ports[MAX_CPUS][PORT_WORDS];    /* ports each CPU owns, as bitmaps */
static u32 resched_port[MAX_CPUS], tlb_port[MAX_CPUS];

static u32 hybrid_bind(i64 port, u64 cpu, u32 event, const char *what)
{
    if (port <= 0 || port >= 64 * PORT_WORDS)
        panic("hybrid: %s for cpu %lu failed: %ld", what, cpu, port);
    port_event[port] = (u8)event;
    cpu_ports[cpu][port / 64] |= 1UL << (port % 64);
    return (u32)port;
}

static void hybrid_lapic_init(void)
{
    u64 cpu = this_cpu()->id;
    if (cpu >= SHINFO_VCPUS)
        panic("hybrid: cpu %lu has no vcpu_info in shared_info", cpu);
    i64 r = hypercall3(HC_VCPU_OP, VCPUOP_register_vcpu_info, cpu, (u64)&shinfo - KERNEL_VMA);
    if (r != 0)
        panic("hybrid: register_vcpu_info: %ld", r);
    if (cpu == 0) {
        r = hypercall3(HC_HVM_OP, HVMOP_set_param, HVM_PARAM_CALLBACK_IRQ, VEC_UPCALL);
        if (r != 0)
            panic("hybrid: set callback vector: %ld", r);
    }
    hybrid_bind(hypercall3(HC_EVENT_CHANNEL_OP, EVTCHNOP_bind_virq, VIRQ_TIMER, cpu), cpu,
                EV_TIMER, "bind_virq");
    resched_port[cpu] = hybrid_bind(hypercall3(HC_EVENT_CHANNEL_OP, EVTCHNOP_bind_ipi, cpu, 0),
                                    cpu, EV_RESCHED, "bind_ipi");
    tlb_port[cpu] = hybrid_bind(hypercall3(HC_EVENT_CHANNEL_OP, EVTCHNOP_bind_ipi, cpu, 0), cpu,
                                EV_TLB, "bind_ipi");
}

/* Nothing to acknowledge: the upcall handler cleared the pending bits it consumed. */
static void hybrid_eoi(void) {}

static void hybrid_set_timer(u64 deadline) { hypercall3(HC_SET_TIMER_OP, deadline, 0, 0); }

static void hybrid_halt(void)
{
    /* STI's shadow covers the VMCALL, and sched_op(block) returns at once when an event is
     * already pending, so no wake-up is lost; the upcall is taken right after it. */
    i64 r;
    __asm__ volatile("sti\n\tvmcall\n\tcli"
                     : "=a"(r)
                     : "a"((u64)HC_SCHED_OP), "D"((u64)SCHEDOP_block), "S"(0UL), "d"(0UL)
                     : "memory");
    (void)r;
}

static void hybrid_send_ipi(u32 cpu, u32 vector)
{
    u32 port = vector == VEC_TLB ? tlb_port[cpu] : resched_port[cpu];
    hypercall3(HC_EVENT_CHANNEL_OP, EVTCHNOP_send, port, 0);
}

/* The upcall's work: consumes this CPU's pending, unmasked ports (2-level scan with atomic
 * clears, as Xen's Linux does) and returns the events they stand for. */
u32 pv_upcall_events(void)
{
    u64 cpu = this_cpu()->id;
    struct vcpu_info *vi = &shinfo.vcpu_info[cpu];
    u32 ev = 0;
    vi->evtchn_upcall_pending = 0;
    u64 sel = __atomic_exchange_n(&vi->evtchn_pending_sel, 0, __ATOMIC_SEQ_CST);
    while (sel) {
        u64 w = (u64)__builtin_ctzl(sel);
        sel &= sel - 1;
        if (w >= PORT_WORDS)
            continue;
        u64 bits = shinfo.evtchn_pending[w] & cpu_ports[cpu][w] & ~shinfo.evtchn_mask[w];
        while (bits) {
            u64 b = (u64)__builtin_ctzl(bits);
            bits &= bits - 1;
            __atomic_and_fetch(&shinfo.evtchn_pending[w], ~(1UL << b), __ATOMIC_SEQ_CST);
            ev |= port_event[w * 64 + b];
        }
    }
    return ev;
}


/* ---------------- PV backend ----------------
 *
 * x86-64 Xen-style paravirtualization: this kernel runs at CPL 3. Hypercalls are
 * `syscall` in kernel mode (the instruction of Xen's x86-64 hypercall page), RAX = number,
 * RDI/RSI/RDX arguments, result in RAX. Page tables change only through validated
 * hypercalls (mmu_update, batched; update_va_mapping; mmuext_op), page-table frames are
 * read-only in the direct map, interrupts are event-channel upcalls to pv_upcall_entry,
 * "cli"/"sti" are the upcall mask in vcpu_info, user syscalls arrive bounced at
 * pv_syscall_entry and every return to the interrupted context is the iret hypercall.
 */
#define HC_SET_TRAP_TABLE 0
#define HC_MMU_UPDATE 1
#define HC_STACK_SWITCH 3
#define HC_SET_CALLBACKS 4
#define HC_MULTICALL 13
#define HC_UPDATE_VA_MAPPING 14
#define HC_XEN_VERSION 17
#define HC_MMUEXT_OP 26
#define VCPUOP_up 1
#define UVMF_INVLPG 2
#define MMUEXT_PIN_L4_TABLE 3
#define MMUEXT_UNPIN_TABLE 4
#define MMUEXT_NEW_BASEPTR 5
#define MMUEXT_TLB_FLUSH_LOCAL 6
#define MMUEXT_INVLPG_LOCAL 7
#define MMUEXT_TLB_FLUSH_MULTI 8
#define MMUEXT_INVLPG_MULTI 9
#define MMUEXT_NEW_USER_BASEPTR 15

u8 pv_paravirt;

static inline i64 pv_hcall(u64 nr, u64 a1, u64 a2, u64 a3)
{
    i64 r;
    __asm__ volatile("syscall"
                     : "=a"(r)
                     : "a"(nr), "D"(a1), "S"(a2), "d"(a3)
                     : "memory", "rcx", "r11");
    return r;
}

struct mmu_update_req {
    u64 ptr, val;
};
struct mmuext_req {
    u32 cmd, pad;
    u64 arg1, arg2;
};
struct multicall_entry {
    u64 op, result, args[6];
};
struct trap_info {
    u8 vector, flags;
    u16 cs;
    u32 pad;
    u64 address;
};

/* The update queue (used under the kernel lock). */
#define MMU_BATCH 2048
static struct mmu_update_req mmu_queue[MMU_BATCH];
static u32 mmu_queued;
static int mmu_lazy;

static void pv_mmu_flush(void)
{
    if (!mmu_queued)
        return;
    u32 n = mmu_queued;
    mmu_queued = 0;
    i64 r = pv_hcall(HC_MMU_UPDATE, (u64)mmu_queue, n, 0);
    if (r != 0)
        panic("pv: mmu_update of %u entries refused: %ld (first ptr %#lx val %#lx)", n, r,
              mmu_queue[0].ptr, mmu_queue[0].val);
}

static void pv_lazy_mmu(int on)
{
    if (!on)
        pv_mmu_flush();
    mmu_lazy = on;
}

static void pv_set_pte(u64 *ptep, u64 val)
{
    mmu_queue[mmu_queued].ptr = (u64)ptep - DIRECT_MAP;
    mmu_queue[mmu_queued].val = val;
    mmu_queued++;
    if (!mmu_lazy || mmu_queued == MMU_BATCH)
        pv_mmu_flush();
}

static void pv_mmuext(u32 cmd, u64 arg1, u64 arg2)
{
    struct mmuext_req op = {cmd, 0, arg1, arg2};
    pv_mmu_flush();
    i64 r = pv_hcall(HC_MMUEXT_OP, (u64)&op, 1, 0);
    if (r != 0)
        panic("pv: mmuext_op %u (%#lx) refused: %ld", cmd, arg1, r);
}

/* The multicall batch of lazy-CPU sections (used under the kernel lock). */
#define MC_BATCH 8
static struct multicall_entry mc_buf[MC_BATCH];
static struct mmuext_req mc_ext[MC_BATCH][2];
static u32 mc_queued;
static int cpu_lazy;

static void pv_mc_flush(void)
{
    if (!mc_queued)
        return;
    u32 n = mc_queued;
    mc_queued = 0;
    i64 r = pv_hcall(HC_MULTICALL, (u64)mc_buf, n, 0);
    for (u32 i = 0; i < n; i++)
        if (r != 0 || mc_buf[i].result != 0)
            panic("pv: multicall entry %u (op %lu) failed: %ld/%ld", i, mc_buf[i].op, r,
                  (i64)mc_buf[i].result);
}

static void pv_lazy_cpu(int on)
{
    if (!on)
        pv_mc_flush();
    cpu_lazy = on;
}

/* Queues a call in the multicall batch; 0 when not in a lazy-CPU section. */
static int pv_mc_queue(u64 op, u64 a1, u64 a2, u64 a3)
{
    if (!cpu_lazy)
        return 0;
    if (mc_queued == MC_BATCH)
        pv_mc_flush();
    mc_buf[mc_queued] = (struct multicall_entry){op, 0, {a1, a2, a3, 0, 0, 0}};
    mc_queued++;
    return 1;
}

static void pv_load_cr3_pair(u64 pa, u64 user_pa)
{
    pv_mmu_flush();
    if (cpu_lazy) {
        if (mc_queued == MC_BATCH)
            pv_mc_flush();
        struct mmuext_req *ops = mc_ext[mc_queued];
        ops[0] = (struct mmuext_req){MMUEXT_NEW_BASEPTR, 0, pa >> 12, 0};
        ops[1] = (struct mmuext_req){MMUEXT_NEW_USER_BASEPTR, 0, user_pa >> 12, 0};
        pv_mc_queue(HC_MMUEXT_OP, (u64)ops, 2, 0);
        return;
    }
    struct mmuext_req ops[2] = {{MMUEXT_NEW_BASEPTR, 0, pa >> 12, 0},
                                {MMUEXT_NEW_USER_BASEPTR, 0, user_pa >> 12, 0}};
    i64 r = pv_hcall(HC_MMUEXT_OP, (u64)ops, 2, 0);
    if (r != 0)
        panic("pv: new base pointers %#lx/%#lx refused: %ld", pa, user_pa, r);
}

static void pv_load_cr3(u64 pa) { pv_load_cr3_pair(pa, 0); }

static void pv_invlpg(u64 va) { pv_mmuext(MMUEXT_INVLPG_LOCAL, va, 0); }
static void pv_flush_tlb_local(void) { pv_mmuext(MMUEXT_TLB_FLUSH_LOCAL, 0, 0); }

static int pv_flush_tlb_others(u64 mask, u64 va, int all)
{
    if (all)
        pv_mmuext(MMUEXT_TLB_FLUSH_MULTI, 0, mask);
    else
        pv_mmuext(MMUEXT_INVLPG_MULTI, va, mask);
    return 1;
}

/* The direct-map entry of a frame, read-only or writable again (Linux's set_page_prot). */
static void pv_set_frame_prot(u64 pa, int writable)
{
    pv_mmu_flush();
    u64 val = pa | PTE_P | PTE_U | PTE_NX | (writable ? PTE_W : 0);
    i64 r = pv_hcall(HC_UPDATE_VA_MAPPING, (u64)P2V(pa), val, UVMF_INVLPG);
    if (r != 0)
        panic("pv: direct map of frame %#lx %s refused: %ld", pa, writable ? "rw" : "ro", r);
}

static void pv_alloc_pt(u64 pa, int level)
{
    pv_set_frame_prot(pa, 0);
    if (level == 4)
        pv_mmuext(MMUEXT_PIN_L4_TABLE, pa >> 12, 0);
}

static void pv_release_pt(u64 pa, int level)
{
    if (level == 4)
        pv_mmuext(MMUEXT_UNPIN_TABLE, pa >> 12, 0);
    pv_set_frame_prot(pa, 1);
}

static u64 pv_read_cr2(void)
{
    u64 cpu = this_cpu()->id;
    return *(volatile u64 *)&shinfo.vcpu_info[cpu].arch_and_time[0];
}

static void pv_irq_disable(void) { shinfo.vcpu_info[this_cpu()->id].evtchn_upcall_mask = 1; }

static void pv_irq_enable(void)
{
    struct vcpu_info *vi = &shinfo.vcpu_info[this_cpu()->id];
    vi->evtchn_upcall_mask = 0;
    barrier();
    /* An event that arrived while masked: any hypercall returns through the upcall. */
    if (vi->evtchn_upcall_pending)
        pv_hcall(HC_XEN_VERSION, 0, 0, 0);
}

static void pv_halt(void)
{
    /* sched_op(block) unmasks events and returns at once if one is pending; the upcall is
     * taken on the way back, then events are masked again. */
    pv_hcall(HC_SCHED_OP, SCHEDOP_block, 0, 0);
    pv_irq_disable();
}

static void pv_noop_gdt(const void *base, u16 limit)
{
    (void)base;
    (void)limit;
}

static void pv_noop_tr(u16 sel) { (void)sel; }

static struct trap_info pv_traps[33];

static void pv_load_idt(const void *base, u16 limit)
{
    (void)base;
    (void)limit;
    for (int v = 0; v < 32; v++)
        pv_traps[v] = (struct trap_info){(u8)v, 0, KERNEL_CS, 0, (u64)pv_trap_stubs + 32 * (u64)v};
    pv_traps[32].address = 0;
    if (pv_hcall(HC_SET_TRAP_TABLE, (u64)pv_traps, 0, 0) != 0)
        panic("pv: set_trap_table refused");
}

static void pv_set_kernel_stack(u64 rsp0)
{
    this_cpu()->tss.rsp0 = rsp0;
    if (!pv_mc_queue(HC_STACK_SWITCH, KERNEL_DS, rsp0, 0))
        pv_hcall(HC_STACK_SWITCH, KERNEL_DS, rsp0, 0);
}

static void pv_lapic_init(void)
{
    u64 cpu = this_cpu()->id;
    if (cpu >= SHINFO_VCPUS)
        panic("pv: cpu %lu has no vcpu_info in shared_info", cpu);
    shinfo.vcpu_info[cpu].evtchn_upcall_mask = 1;
    i64 r = pv_hcall(HC_VCPU_OP, VCPUOP_register_vcpu_info, cpu, (u64)&shinfo - KERNEL_VMA);
    if (r != 0)
        panic("pv: register_vcpu_info: %ld", r);
    r = pv_hcall(HC_SET_CALLBACKS, (u64)pv_upcall_entry, 0, (u64)pv_syscall_entry);
    if (r != 0)
        panic("pv: set_callbacks: %ld", r);
    hybrid_bind(pv_hcall(HC_EVENT_CHANNEL_OP, EVTCHNOP_bind_virq, VIRQ_TIMER, cpu), cpu, EV_TIMER,
                "bind_virq");
    resched_port[cpu] = hybrid_bind(pv_hcall(HC_EVENT_CHANNEL_OP, EVTCHNOP_bind_ipi, cpu, 0), cpu,
                                    EV_RESCHED, "bind_ipi");
    tlb_port[cpu] = hybrid_bind(pv_hcall(HC_EVENT_CHANNEL_OP, EVTCHNOP_bind_ipi, cpu, 0), cpu,
                                EV_TLB, "bind_ipi");
}

static u32 pv_cpu_hw_id(void) { return (u32)this_cpu()->id; }

static void pv_set_timer(u64 deadline) { pv_hcall(HC_SET_TIMER_OP, deadline, 0, 0); }

static void pv_send_ipi(u32 cpu, u32 vector)
{
    u32 port = vector == VEC_TLB ? tlb_port[cpu] : resched_port[cpu];
    pv_hcall(HC_EVENT_CHANNEL_OP, EVTCHNOP_send, port, 0);
}

static void pv_start_cpu(u32 cpu)
{
    /* Entry, stack and index are in boot_info, as for native start-up; the vCPU starts in
     * kernel mode on the kernel page table. Issued through multicall (one entry). */
    struct multicall_entry mc[1] = {{HC_VCPU_OP, 0, {VCPUOP_up, cpu, kernel_pml4_pa, 0, 0, 0}}};
    i64 r = pv_hcall(HC_MULTICALL, (u64)mc, 1, 0);
    if (r != 0 || mc[0].result != 0)
        panic("pv: vcpu_op(up, %u) failed: %ld/%ld", cpu, r, (i64)mc[0].result);
}

/* NIC queues (hybrid): the hypervisor owns the device's MSI-X vectors; the queue's PIRQ
 * is bound to a port the queue's CPU handles, masked and unmasked in shared memory. */
#define HC_PHYSDEV_OP 33
#define PHYSDEVOP_map_pirq 13
#define EVTCHNOP_bind_pirq 2

u32 pv_nic_bind(u32 queue, u64 cpu)
{
    i64 pirq = hypercall3(HC_PHYSDEV_OP, PHYSDEVOP_map_pirq, queue, cpu);
    if (pirq < 0)
        panic("hybrid: map_pirq for queue %u: %ld", queue, pirq);
    return hybrid_bind(hypercall3(HC_EVENT_CHANNEL_OP, EVTCHNOP_bind_pirq, (u64)pirq, cpu), cpu,
                       EV_NIC, "bind_pirq");
}

void pv_port_mask(u32 port)
{
    __atomic_or_fetch(&shinfo.evtchn_mask[port / 64], 1UL << (port % 64), __ATOMIC_SEQ_CST);
}

/* As Linux's unmask_evtchn for a local port: an event that arrived while masked makes the
 * upcall pending again (taken at the next entry). */
void pv_port_unmask(u32 port)
{
    u64 w = port / 64, b = 1UL << (port % 64);
    __atomic_and_fetch(&shinfo.evtchn_mask[w], ~b, __ATOMIC_SEQ_CST);
    if (shinfo.evtchn_pending[w] & b) {
        struct vcpu_info *vi = &shinfo.vcpu_info[this_cpu()->id];
        __atomic_or_fetch(&vi->evtchn_pending_sel, 1UL << w, __ATOMIC_SEQ_CST);
        vi->evtchn_upcall_pending = 1;
    }
}

/* Drivers' hypercalls (netfront): the hybrid backend's VMCALL or the PV backend's
 * syscall, same numbers and argument registers. */
i64 pv_hypercall(u64 nr, u64 a1, u64 a2, u64 a3)
{
    if (pv.paravirt)
        return pv_hcall(nr, a1, a2, a3);
    return hypercall3(nr, a1, a2, a3);
}

u32 pv_port_bind(i64 port, u64 cpu, u32 event, const char *what)
{
    return hybrid_bind(port, cpu, event, what);
}

/* The active table. Filled by pv_select() before anything else runs. */
struct pv_ops pv;

/* Hypervisor signatures (CPUID 0x40000000 EBX:ECX:EDX) of the hvsim backends. */
#define SIG_PV "hvsimPVhvsim"
#define SIG_HYBRID "hvsimHYBRID!"

static int sig_is(const char sig[12], const char *want)
{
    return memcmp(sig, want, 12) == 0;
}

/* Chooses the backend, once, at boot. Must not print before it returns. */
void pv_select(struct boot_info *bi)
{
    u32 a, regs[3];
    char sig[13];
    cpuid(0x40000000, &a, &regs[0], &regs[1], &regs[2]);
    memcpy(sig, regs, 12);
    sig[12] = 0;
    pv = native_ops;
    apic_timer_hz = bi->apic_timer_hz ? bi->apic_timer_hz : bi->tsc_hz;
    if (sig_is(sig, SIG_HYBRID)) {
        pv.name = "hybrid";
        pv.lapic_init = hybrid_lapic_init;
        pv.eoi = hybrid_eoi;
        pv.set_timer = hybrid_set_timer;
        pv.halt = hybrid_halt;
        pv.send_ipi = hybrid_send_ipi;
    } else if (sig_is(sig, SIG_PV)) {
        pv.name = "pv";
        pv.paravirt = 1;
        pv_paravirt = 1;
        pv.load_cr3 = pv_load_cr3;
        pv.load_cr3_pair = pv_load_cr3_pair;
        pv.read_cr2 = pv_read_cr2;
        pv.invlpg = pv_invlpg;
        pv.flush_tlb_local = pv_flush_tlb_local;
        pv.set_pte = pv_set_pte;
        pv.alloc_pt = pv_alloc_pt;
        pv.release_pt = pv_release_pt;
        pv.lazy_mmu = pv_lazy_mmu;
        pv.mmu_flush = pv_mmu_flush;
        pv.lazy_cpu = pv_lazy_cpu;
        pv.flush_tlb_others = pv_flush_tlb_others;
        pv.load_gdt = pv_noop_gdt;
        pv.load_idt = pv_load_idt;
        pv.load_tr = pv_noop_tr;
        pv.set_kernel_stack = pv_set_kernel_stack;
        pv.irq_enable = pv_irq_enable;
        pv.irq_disable = pv_irq_disable;
        pv.halt = pv_halt;
        pv.lapic_init = pv_lapic_init;
        pv.cpu_hw_id = pv_cpu_hw_id;
        pv.eoi = hybrid_eoi;
        pv.set_timer = pv_set_timer;
        pv.send_ipi = pv_send_ipi;
        pv.start_cpu = pv_start_cpu;
    }
}
