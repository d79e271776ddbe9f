/* page_fault N: touch N fresh pages of an anonymous mapping, one write each. */
#include "libc.h"

int main(int argc, char **argv)
{
    unsigned long n = arg_ul(argc, argv, 1, 256);
    char *p = mmap(NULL, n * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        printf("page_fault error=mmap\n");
        return 1;
    }
    uint64_t t0 = rdtsc();
    for (unsigned long i = 0; i < n; i++)
        p[i * PAGE_SIZE] = (char)(i | 1);
    uint64_t t1 = rdtsc();
    unsigned long ok = 0;
    for (unsigned long i = 0; i < n; i++)
        ok += p[i * PAGE_SIZE] == (char)(i | 1);
    munmap(p, n * PAGE_SIZE);
    if (ok != n) {
        printf("page_fault error=readback ok=%lu\n", ok);
        return 1;
    }
    printf("page_fault pages=%lu tsc=%lu\n", n, t1 - t0);
    return 0;
}
