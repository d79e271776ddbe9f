/* mmap_cycle N PAGES: N times map PAGES anonymous pages, touch each, unmap. */
#include "libc.h"

int main(int argc, char **argv)
{
    unsigned long n = arg_ul(argc, argv, 1, 100);
    unsigned long pages = arg_ul(argc, argv, 2, 16);
    unsigned long touched = 0;
    uint64_t t0 = rdtsc();
    for (unsigned long i = 0; i < n; i++) {
        char *p = mmap(NULL, pages * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                       -1, 0);
        if (p == MAP_FAILED) {
            printf("mmap_cycle error=mmap iteration=%lu\n", i);
            return 1;
        }
        for (unsigned long j = 0; j < pages; j++) {
            p[j * PAGE_SIZE] = 1;
            touched++;
        }
        if (munmap(p, pages * PAGE_SIZE) != 0) {
            printf("mmap_cycle error=munmap iteration=%lu\n", i);
            return 1;
        }
    }
    uint64_t t1 = rdtsc();
    printf("mmap_cycle iterations=%lu pages=%lu touched=%lu tsc=%lu\n", n, pages, touched, t1 - t0);
    return 0;
}
