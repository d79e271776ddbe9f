/*
 * Tasks, the big kernel lock, per-CPU round-robin run queues, wait queues, sleeping,
 * the idle loop, the return-to-user path and SMP bring-up.
 *
 * Locking: every kernel entry from user mode takes the big kernel lock (BKL) and the
 * return to user mode releases it; the kernel runs with interrupts disabled, so it is
 * never preempted. A context switch hands the lock over to the next task. Interrupts
 * taken in kernel mode (only while the idle loop halts, with the lock dropped) do not touch
 * shared state, except the network drivers' handlers, which take the lock to wake tasks.
 */
#include "kernel.h"

struct percpu percpus[MAX_CPUS];
u64 ncpus_online = 1;

static struct task tasks[MAX_TASKS];
static u8 kstacks[MAX_TASKS][KSTACK_SIZE] ALIGNED(16);
static u8 ap_stacks[MAX_CPUS][IDLE_STACK_SIZE] ALIGNED(16);
static int next_pid = 1;

/* ---------------- big kernel lock ---------------- */

static volatile u32 bkl;
static volatile int bkl_owner = -1;

void bkl_lock(void)
{
    struct percpu *c = this_cpu();
    if (bkl_owner == (int)c->id)
        panic("kernel lock taken twice on cpu %lu", c->id);
    while (__atomic_exchange_n(&bkl, 1, __ATOMIC_ACQUIRE)) {
        while (bkl)
            tlb_service(); /* the holder may be waiting for us to flush */
    }
    bkl_owner = (int)c->id;
}

void bkl_unlock(void)
{
    bkl_owner = -1;
    __atomic_store_n(&bkl, 0, __ATOMIC_RELEASE);
}

/* ---------------- tasks ---------------- */

void sched_init(void)
{
    for (int i = 0; i < MAX_TASKS; i++)
        tasks[i].kstack_top = (u64)&kstacks[i][KSTACK_SIZE];
}

struct task *task_alloc(void)
{
    for (int i = 0; i < MAX_TASKS; i++) {
        struct task *t = &tasks[i];
        /* A zombie without a parent is reaped here: nobody will wait for it. */
        if (t->state == T_FREE || (t->state == T_ZOMBIE && !t->parent)) {
            u64 top = t->kstack_top;
            memset(t, 0, sizeof *t);
            t->kstack_top = top;
            t->pid = next_pid++;
            t->state = T_BLOCKED;
            return t;
        }
    }
    return NULL;
}

void task_free(struct task *t) { t->state = T_FREE; }

struct task *task_by_pid(int pid)
{
    for (int i = 0; i < MAX_TASKS; i++)
        if (tasks[i].state != T_FREE && tasks[i].pid == pid)
            return &tasks[i];
    return NULL;
}

struct task *task_at(int i) { return i < MAX_TASKS ? &tasks[i] : NULL; }

/* ---------------- run queues ---------------- */

static void rq_push(struct percpu *c, struct task *t)
{
    t->rq_next = NULL;
    if (c->rq_tail)
        c->rq_tail->rq_next = t;
    else
        c->rq_head = t;
    c->rq_tail = t;
    c->rq_len++;
}

static struct task *rq_pop(struct percpu *c)
{
    struct task *t = c->rq_head;
    if (!t)
        return NULL;
    c->rq_head = t->rq_next;
    if (!c->rq_head)
        c->rq_tail = NULL;
    c->rq_len--;
    t->rq_next = NULL;
    return t;
}

static int cpu_idle(struct percpu *c) { return c->current->is_idle && c->rq_len == 0; }

/* Where a task that becomes runnable goes: its last CPU if idle, else any idle CPU, else its last CPU. */
static struct percpu *pick_cpu(struct task *t)
{
    struct percpu *last = &percpus[t->cpu < (int)ncpus_online ? t->cpu : 0];
    if (cpu_idle(last))
        return last;
    for (u64 i = 0; i < ncpus_online; i++)
        if (cpu_idle(&percpus[i]))
            return &percpus[i];
    return last;
}

void make_runnable(struct task *t)
{
    struct percpu *self = this_cpu();
    struct percpu *c = pick_cpu(t);
    int was_idle = cpu_idle(c);
    t->state = T_RUNNABLE;
    rq_push(c, t);
    if (c != self && was_idle)
        pv.send_ipi((u32)c->id, VEC_RESCHED);
}

static struct task *steal(struct percpu *self)
{
    for (u64 i = 0; i < ncpus_online; i++) {
        struct percpu *c = &percpus[i];
        if (c != self && c->rq_len > 0)
            return rq_pop(c);
    }
    return NULL;
}

/* Picks the next task on this CPU and switches to it. Called with the BKL held. */
void schedule(void)
{
    struct percpu *c = this_cpu();
    struct task *prev = c->current;
    if (!prev->is_idle && prev->state == T_RUNNING) {
        prev->state = T_RUNNABLE;
        rq_push(c, prev);
    }
    struct task *next = rq_pop(c);
    if (!next)
        next = steal(c);
    if (!next)
        next = &c->idle;
    next->state = T_RUNNING;
    next->cpu = (int)c->id;
    c->current = next;
    c->need_resched = 0;
    if (next == prev)
        return;
    if (!next->is_idle) {
        pv.lazy_cpu(1); /* PV: page-table bases and kernel stack in one multicall */
        switch_mm(c, next->mm); /* the idle context keeps the previous one (lazy) */
        c->kstack_top = next->kstack_top;
        pv.set_kernel_stack(next->kstack_top);
        pv.lazy_cpu(0);
        if (next->fs_base != c->fs_loaded) {
            pv.write_msr(MSR_FS_BASE, next->fs_base);
            c->fs_loaded = next->fs_base;
        }
    }
    swtch(&prev->ksp, next->ksp);
}

/* ---------------- wait queues ---------------- */

void sleep_on(struct waitq *wq)
{
    struct task *t = current_task();
    t->state = T_BLOCKED;
    t->wq_next = wq->head;
    wq->head = t;
    schedule();
}

void wake_all(struct waitq *wq)
{
    struct task *t = wq->head;
    wq->head = NULL;
    while (t) {
        struct task *n = t->wq_next;
        t->wq_next = NULL;
        if (t->state == T_BLOCKED)
            make_runnable(t);
        t = n;
    }
}

/* ---------------- sleeping ---------------- */

static struct task *sleepers; /* sorted by deadline */
volatile u64 next_sleep_deadline;

void sleep_until(u64 deadline)
{
    struct task *t = current_task();
    t->sleep_deadline = deadline;
    struct task **pp = &sleepers;
    while (*pp && (*pp)->sleep_deadline <= deadline)
        pp = &(*pp)->sleep_next;
    t->sleep_next = *pp;
    *pp = t;
    next_sleep_deadline = sleepers->sleep_deadline;
    timer_request(this_cpu(), deadline);
    /* Only timers_check() wakes a sleeper, and only once its deadline has passed. */
    t->state = T_BLOCKED;
    schedule();
}

void timers_check(void)
{
    u64 now = rdtsc();
    while (sleepers && sleepers->sleep_deadline <= now) {
        struct task *t = sleepers;
        sleepers = t->sleep_next;
        t->sleep_next = NULL;
        if (t->state == T_BLOCKED)
            make_runnable(t);
    }
    next_sleep_deadline = sleepers ? sleepers->sleep_deadline : 0;
}

/* ---------------- idle and return to user ---------------- */

NORETURN void idle_loop(void)
{
    for (;;) {
        timers_check();
        schedule();
        bkl_unlock();
        pv.halt();
        bkl_lock();
    }
}

#define RFLAGS_USER_MASK 0xCD5UL /* CF PF AF ZF SF DF OF */
#define RFLAGS_IF 0x200UL

/* Last step of every kernel entry from user mode. */
void user_return(struct trapframe *tf)
{
    while (this_cpu()->need_resched)
        schedule();
    if (tf->vector == SYSCALL_VECTOR) {
        tf->rflags = (tf->rflags & RFLAGS_USER_MASK) | RFLAGS_IF | 2;
        if (tf->rip >= USER_TOP)
            kill_current(11, "non-canonical return address", tf, tf->rip);
    }
    bkl_unlock();
}

/* ---------------- SMP bring-up ---------------- */

static volatile int ap_ready[MAX_CPUS];

void ap_main(struct boot_info *bi, u64 cpu)
{
    (void)bi;
    pv.load_cr3(kernel_pml4_pa);
    cpu_init(cpu);
    percpus[cpu].online = 1;
    ap_ready[cpu] = 1;
    bkl_lock();
    idle_loop();
}

/* Starts the other CPUs one at a time (called by the BSP with the BKL held). */
void smp_boot(void)
{
    u64 want = boot_info->ncpus;
    if (want > MAX_CPUS) {
        kprintf("hvsim-kernel: %lu cpus, using the first %d\n", want, MAX_CPUS);
        want = MAX_CPUS;
    }
    for (u64 n = 1; n < want; n++) {
        boot_info->ap_entry = (u64)ap_start;
        boot_info->ap_stack = (u64)&ap_stacks[n][IDLE_STACK_SIZE];
        boot_info->ap_cpu = n;
        barrier();
        pv.start_cpu((u32)n);
        u64 start = rdtsc();
        while (!ap_ready[n]) {
            if (rdtsc() - start > 2 * tsc_hz)
                panic("cpu %lu did not start", n);
        }
        ncpus_online = n + 1;
    }
}
