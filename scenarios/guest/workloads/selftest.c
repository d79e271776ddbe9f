/*
 * selftest: exercises every system call the kernel implements and checks the results.
 * Prints one `selftest check=<name> ok|FAIL` line per check, then
 * `selftest passed=P failed=F` (exit status 0 only when F is 0). It also makes one
 * unknown system call on purpose (the kernel reports unknown=1 at power-off).
 */
#include "libc.h"

static int passed, failed;

static void check(const char *name, int ok)
{
    printf("selftest check=%s %s\n", name, ok ? "ok" : "FAIL");
    if (ok)
        passed++;
    else
        failed++;
}

static int child_status(void (*fn)(void))
{
    pid_t pid = fork();
    if (pid == 0) {
        fn();
        _exit(0);
    }
    int st = -1;
    if (waitpid(pid, &st, 0) != pid)
        return -1;
    return st;
}

static volatile char *ro_page;
static void write_ro(void) { ro_page[0] = 1; }
static volatile unsigned long bad_addr = 16;
static void bad_pointer(void) { *(volatile int *)bad_addr = 1; }

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    struct utsname u;
    check("uname", uname(&u) == 0 && strcmp(u.sysname, "hvsim") == 0 && strcmp(u.machine, "x86_64") == 0);

    static unsigned long tls[4] = {0, 0x1234};
    unsigned long fs = 0, v;
    arch_prctl(ARCH_SET_FS, (unsigned long)tls);
    arch_prctl(ARCH_GET_FS, (unsigned long)&fs);
    __asm__ volatile("movq %%fs:8, %0" : "=r"(v));
    check("arch_prctl", fs == (unsigned long)tls && v == 0x1234);

    uint64_t a = now_ns(), b = now_ns();
    check("clock_gettime", a > 0 && b >= a);

    struct timespec ts = {0, 2000000};
    uint64_t t0 = now_ns();
    int r = nanosleep(&ts, NULL);
    uint64_t t1 = now_ns();
    check("nanosleep", r == 0 && t1 - t0 >= 2000000);

    check("sched_yield", sched_yield() == 0);

    /* A child spinning 10 ms must be preempted by the tick (4 ms) so that we run again. */
    uint64_t spin_until = now_ns() + 10000000;
    pid_t spinner = fork();
    if (spinner == 0) {
        while (now_ns() < spin_until)
            ;
        _exit(0);
    }
    sched_yield();
    int early = waitpid(spinner, NULL, WNOHANG);
    int st0 = -1;
    check("preemption", early == 0 && waitpid(spinner, &st0, 0) == spinner && st0 == 0);
    check("unknown_syscall", syscall0(400) == -38);

    char *m = malloc(100000);
    memset(m, 7, 100000);
    free(m);
    char *m2 = malloc(50000);
    long cur = brk(NULL);
    check("brk_malloc", m && m2 == m && cur >= (long)(m + 100000) && brk((void *)(cur + 8192)) == cur + 8192);

    char *p = mmap(NULL, 4 * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    for (int i = 0; i < 4; i++)
        p[i * PAGE_SIZE] = (char)(i + 1);
    int ok = munmap(p + PAGE_SIZE, PAGE_SIZE) == 0 && p[0] == 1 && p[2 * PAGE_SIZE] == 3;
    char *q = mmap(p + PAGE_SIZE, PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    check("mmap_munmap_split_fixed", ok && q == p + PAGE_SIZE && q[0] == 0 && p[3 * PAGE_SIZE] == 4);
    munmap(p, 4 * PAGE_SIZE);

    static int shared = 5;
    pid_t pid = fork();
    if (pid == 0) {
        shared = 6;
        _exit(shared == 6 ? 9 : 1);
    }
    int st = 0;
    check("fork_cow", waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 9 && shared == 5);

    ro_page = mmap(NULL, PAGE_SIZE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    st = child_status(write_ro);
    int st2 = child_status(bad_pointer);
    check("segv_kills", WIFSIGNALED(st) && WTERMSIG(st) == 11 && WIFSIGNALED(st2) && WTERMSIG(st2) == 11);

    int fds[2];
    char buf[8];
    r = pipe(fds);
    write(fds[1], "abc", 3);
    close(fds[1]);
    ssize_t n1 = read(fds[0], buf, sizeof buf), n2 = read(fds[0], buf, sizeof buf);
    close(fds[0]);
    check("pipe_eof", r == 0 && n1 == 3 && n2 == 0 && memcmp(buf, "abc", 3) == 0);

    check("wait_nochild", waitpid(-1, &st, WNOHANG) == -10);
    char *eargv[] = {"nonexistent", NULL};
    check("execve_enoent", execve("nonexistent", eargv, NULL) == -2);
    check("bad_fd", write(9, "x", 1) == -9 && close(9) == -9);
    check("efault", write(1, (void *)16, 4) == -14);

    printf("selftest passed=%d failed=%d\n", passed, failed);
    return failed ? 1 : 0;
}
