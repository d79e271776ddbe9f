/* System call dispatch (Linux x86-64 numbers) and the simple calls. */
#include "kernel.h"

enum {
    NR_read = 0,
    NR_write = 1,
    NR_open = 2,
    NR_close = 3,
    NR_mmap = 9,
    NR_munmap = 11,
    NR_brk = 12,
    NR_pread64 = 17,
    NR_pwrite64 = 18,
    NR_pipe = 22,
    NR_sched_yield = 24,
    NR_nanosleep = 35,
    NR_getpid = 39,
    NR_socket = 41,
    NR_sendto = 44,
    NR_recvfrom = 45,
    NR_fork = 57,
    NR_execve = 59,
    NR_exit = 60,
    NR_wait4 = 61,
    NR_uname = 63,
    NR_arch_prctl = 158,
    NR_clock_gettime = 228,
    NR_exit_group = 231,
    NR_hvsim_nic = 500, /* hvsim: NIC driver counters (not Linux) */
    NR_hvsim_net = 501, /* hvsim: network driver counters (not Linux) */
    NR_hvsim_blk = 502, /* hvsim: block driver counters (not Linux) */
};

static u64 syscall_counts[NR_SYSCALLS + 1]; /* the last slot counts numbers >= NR_SYSCALLS */
static u64 unknown_counts[NR_SYSCALLS + 1];
static u64 unknown_total;

struct timespec_k {
    i64 sec, nsec;
};

static u64 tsc_to_ns(u64 t) { return (t / tsc_hz) * 1000000000UL + ((t % tsc_hz) * 1000000000UL) / tsc_hz; }

static i64 sys_nanosleep(u64 ureq)
{
    struct timespec_k ts;
    if (copy_from_user(&ts, ureq, sizeof ts) < 0)
        return -EFAULT;
    if (ts.sec < 0 || ts.nsec < 0 || ts.nsec >= 1000000000L)
        return -EINVAL;
    if (ts.sec > (i64)(1UL << 32))
        ts.sec = (i64)(1UL << 32);
    u64 ticks = (u64)ts.sec * tsc_hz + ((u64)ts.nsec * tsc_hz) / 1000000000UL;
    if (ticks)
        sleep_until(rdtsc() + ticks);
    return 0;
}

static i64 sys_clock_gettime(u64 clk, u64 uts)
{
    if (clk != 0 && clk != 1 && clk != 4 && clk != 7) /* REALTIME MONOTONIC MONOTONIC_RAW BOOTTIME */
        return -EINVAL;
    u64 ns = tsc_to_ns(rdtsc());
    struct timespec_k ts = {(i64)(ns / 1000000000UL), (i64)(ns % 1000000000UL)};
    return copy_to_user(uts, &ts, sizeof ts);
}

static i64 sys_uname(u64 ubuf)
{
    static const char *const fields[6] = {"hvsim", "hvsim", "1.0.0", "hvsim testbed kernel",
                                          "x86_64", "(none)"};
    char buf[6 * 65];
    memset(buf, 0, sizeof buf);
    for (int i = 0; i < 6; i++)
        strlcpy_k(buf + 65 * i, fields[i], 65);
    return copy_to_user(ubuf, buf, sizeof buf);
}

#define ARCH_SET_FS 0x1002
#define ARCH_GET_FS 0x1003

static i64 sys_arch_prctl(u64 code, u64 addr)
{
    struct task *t = current_task();
    if (code == ARCH_SET_FS) {
        if (addr >= USER_TOP)
            return -EPERM;
        t->fs_base = addr;
        pv.write_msr(MSR_FS_BASE, addr);
        this_cpu()->fs_loaded = addr;
        return 0;
    }
    if (code == ARCH_GET_FS)
        return copy_to_user(addr, &t->fs_base, 8);
    return -EINVAL;
}

void syscall_handler(struct trapframe *tf)
{
    bkl_lock();
    u64 nr = tf->rax;
    u64 a0 = tf->rdi, a1 = tf->rsi, a2 = tf->rdx, a3 = tf->r10, a4 = tf->r8, a5 = tf->r9;
    syscall_counts[nr < NR_SYSCALLS ? nr : NR_SYSCALLS]++;
    i64 ret;
    switch (nr) {
    case NR_read:
        ret = sys_read(a0, a1, a2);
        break;
    case NR_write:
        ret = sys_write(a0, a1, a2);
        break;
    case NR_open:
        ret = sys_open(a0, a1, a2);
        break;
    case NR_close:
        ret = sys_close(a0);
        break;
    case NR_mmap:
        ret = sys_mmap(a0, a1, a2, a3, a4, a5);
        break;
    case NR_munmap:
        ret = sys_munmap(a0, a1);
        break;
    case NR_brk:
        ret = sys_brk(a0);
        break;
    case NR_pread64:
        ret = sys_pread64(a0, a1, a2, a3);
        break;
    case NR_pwrite64:
        ret = sys_pwrite64(a0, a1, a2, a3);
        break;
    case NR_pipe:
        ret = sys_pipe(a0);
        break;
    case NR_sched_yield:
        this_cpu()->need_resched = 1;
        ret = 0;
        break;
    case NR_nanosleep:
        ret = sys_nanosleep(a0);
        break;
    case NR_getpid:
        ret = current_task()->pid;
        break;
    case NR_socket:
        ret = sys_socket(a0, a1, a2);
        break;
    case NR_sendto: /* the address (a4, a5) is ignored: one interface */
        ret = sys_sendto(a0, a1, a2, a3);
        break;
    case NR_recvfrom: /* no source address is written (a4, a5) */
        ret = sys_recvfrom(a0, a1, a2, a3);
        break;
    case NR_fork:
        ret = sys_fork(tf);
        break;
    case NR_execve:
        ret = sys_execve(tf, a0, a1);
        break;
    case NR_exit:
    case NR_exit_group:
        do_exit((int)((a0 & 0xFF) << 8));
    case NR_wait4:
        ret = sys_wait4((i64)a0, a1, a2);
        break;
    case NR_uname:
        ret = sys_uname(a0);
        break;
    case NR_arch_prctl:
        ret = sys_arch_prctl(a0, a1);
        break;
    case NR_hvsim_nic:
        ret = sys_hvsim_nic(a0);
        break;
    case NR_hvsim_net:
        ret = sys_hvsim_net(a0, a1);
        break;
    case NR_hvsim_blk:
        ret = sys_hvsim_blk(a0);
        break;
    case NR_clock_gettime:
        ret = sys_clock_gettime(a0, a1);
        break;
    default:
        unknown_counts[nr < NR_SYSCALLS ? nr : NR_SYSCALLS]++;
        unknown_total++;
        ret = -ENOSYS;
    }
    tf->rax = (u64)ret;
    user_return(tf);
}

void print_syscall_stats(void)
{
    u64 total = 0;
    for (int i = 0; i <= NR_SYSCALLS; i++)
        total += syscall_counts[i];
    kprintf("hvsim: syscalls total=%lu unknown=%lu\n", total, unknown_total);
    for (int i = 0; i <= NR_SYSCALLS; i++)
        if (unknown_counts[i])
            kprintf("hvsim: unknown syscall nr=%s%d count=%lu\n", i == NR_SYSCALLS ? ">=" : "",
                    i, unknown_counts[i]);
}
