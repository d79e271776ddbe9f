/* fork_exec N: fork a child that execs true_, wait for it; N times. */
#include "libc.h"

int main(int argc, char **argv)
{
    unsigned long n = arg_ul(argc, argv, 1, 100);
    unsigned long ok = 0;
    uint64_t t0 = rdtsc();
    for (unsigned long i = 0; i < n; i++) {
        pid_t pid = fork();
        if (pid < 0) {
            printf("fork_exec error=fork iteration=%lu errno=%d\n", i, -pid);
            return 1;
        }
        if (pid == 0) {
            char *cargv[] = {"true_", NULL};
            char *envp[] = {NULL};
            execve("true_", cargv, envp);
            _exit(127);
        }
        int status = 0;
        if (waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0)
            ok++;
    }
    uint64_t t1 = rdtsc();
    printf("fork_exec iterations=%lu ok=%lu tsc=%lu\n", n, ok, t1 - t0);
    return ok == n ? 0 : 1;
}
