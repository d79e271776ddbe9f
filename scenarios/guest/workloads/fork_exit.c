/* fork_exit N: fork a child that exits at once, wait for it; N times. */
#include "libc.h"

int main(int argc, char **argv)
{
    unsigned long n = arg_ul(argc, argv, 1, 100);
    unsigned long ok = 0;
    uint64_t t0 = rdtsc();
    for (unsigned long i = 0; i < n; i++) {
        pid_t pid = fork();
        if (pid < 0) {
            printf("fork_exit error=fork iteration=%lu errno=%d\n", i, -pid);
            return 1;
        }
        if (pid == 0)
            _exit((int)(i & 0x7f));
        int status = 0;
        if (waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
            WEXITSTATUS(status) == (int)(i & 0x7f))
            ok++;
    }
    uint64_t t1 = rdtsc();
    printf("fork_exit iterations=%lu ok=%lu tsc=%lu\n", n, ok, t1 - t0);
    return ok == n ? 0 : 1;
}
