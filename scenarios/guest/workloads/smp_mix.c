/*
 * smp_mix WORKERS ROUNDS [PAGES]: a multiprocessor kernel mix that scales with the machine
 * (run it with WORKERS = vCPUs: the same work per vCPU at every size). WORKERS processes
 * run at once; on every round each maps PAGES anonymous pages (default 4), touches them,
 * unmaps them, and every fourth round forks a child that exits at once and waits for it.
 *
 * Why: the costs that grow with the number of vCPUs come from the kernel's cross-CPU
 * traffic and its one big lock, and this mix makes both. A process that has run on
 * several vCPUs is still lazily loaded in their CR3s, so its munmap, fork and exit shoot
 * down every one of them (a TLB IPI each, and their acknowledgements; under HVM every IPI
 * costs the sender an ICR-write exit and every target an interrupt and an EOI exit); a
 * wake-up on another vCPU is a reschedule IPI; and every exit taken while holding the
 * kernel lock lengthens the time the other vCPUs spin for it.
 */
#include "libc.h"

#define MAX_WORKERS 64

static int fail(const char *what, unsigned long i)
{
    printf("smp_mix error=%s round=%lu\n", what, i);
    return 1;
}

static int worker(unsigned long rounds, unsigned long pages)
{
    for (unsigned long i = 0; i < rounds; i++) {
        char *p = mmap(NULL, pages * PAGE_SIZE, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            return fail("mmap", i);
        for (unsigned long j = 0; j < pages; j++)
            p[j * PAGE_SIZE] = (char)i;
        if (munmap(p, pages * PAGE_SIZE) != 0)
            return fail("munmap", i);
        if (i % 4 == 3) {
            pid_t pid = fork();
            if (pid < 0)
                return fail("fork", i);
            if (pid == 0)
                _exit(0);
            int st = 0;
            if (waitpid(pid, &st, 0) != pid || st != 0)
                return fail("wait", i);
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    unsigned long workers = arg_ul(argc, argv, 1, 2);
    unsigned long rounds = arg_ul(argc, argv, 2, 100);
    unsigned long pages = arg_ul(argc, argv, 3, 4);
    if (workers < 1 || workers > MAX_WORKERS || pages < 1) {
        printf("smp_mix error=args workers=%lu pages=%lu\n", workers, pages);
        return 1;
    }
    uint64_t t0 = rdtsc();
    pid_t pids[MAX_WORKERS];
    for (unsigned long w = 0; w < workers; w++) {
        pid_t pid = fork();
        if (pid < 0)
            return fail("fork_worker", w);
        if (pid == 0)
            _exit(worker(rounds, pages));
        pids[w] = pid;
    }
    int bad = 0;
    for (unsigned long w = 0; w < workers; w++) {
        int st = 0;
        if (waitpid(pids[w], &st, 0) != pids[w] || st != 0)
            bad++;
    }
    uint64_t t1 = rdtsc();
    printf("smp_mix workers=%lu rounds=%lu pages=%lu failed=%d tsc=%lu\n", workers, rounds, pages,
           bad, t1 - t0);
    return bad ? 1 : 0;
}
