/* null_syscall N: getpid N times. */
#include "libc.h"

int main(int argc, char **argv)
{
    unsigned long n = arg_ul(argc, argv, 1, 1000);
    pid_t me = getpid();
    unsigned long bad = 0;
    uint64_t t0 = rdtsc();
    for (unsigned long i = 0; i < n; i++)
        if (getpid() != me)
            bad++;
    uint64_t t1 = rdtsc();
    if (bad) {
        printf("null_syscall error=getpid_mismatch count=%lu\n", bad);
        return 1;
    }
    printf("null_syscall iterations=%lu tsc=%lu\n", n, t1 - t0);
    return 0;
}
