/*
 * pointer_chase N WSKIB: follow N links of a random cyclic permutation of 64-byte nodes
 * filling a WSKIB working set (every load depends on the previous one).
 */
#include "libc.h"

struct node {
    struct node *next;
    unsigned long pad[7];
};

int main(int argc, char **argv)
{
    unsigned long n = arg_ul(argc, argv, 1, 100000);
    unsigned long wskib = arg_ul(argc, argv, 2, 1024);
    unsigned long count = wskib * 1024 / sizeof(struct node);
    if (count < 2) {
        printf("pointer_chase error=working_set_too_small\n");
        return 1;
    }
    struct node *nodes =
        mmap(NULL, count * sizeof(struct node), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    unsigned long *perm =
        mmap(NULL, count * sizeof(unsigned long), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (nodes == MAP_FAILED || perm == MAP_FAILED) {
        printf("pointer_chase error=mmap\n");
        return 1;
    }
    /* Sattolo's algorithm: a single cycle through all nodes. */
    for (unsigned long i = 0; i < count; i++)
        perm[i] = i;
    uint64_t x = 0x2545F4914F6CDD1DUL;
    for (unsigned long i = count - 1; i > 0; i--) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        unsigned long j = x % i;
        unsigned long tmp = perm[i];
        perm[i] = perm[j];
        perm[j] = tmp;
    }
    for (unsigned long i = 0; i < count; i++)
        nodes[perm[i]].next = &nodes[perm[(i + 1) % count]];
    munmap(perm, count * sizeof(unsigned long));

    struct node *p = &nodes[0];
    uint64_t t0 = rdtsc();
    for (unsigned long i = 0; i < n; i++)
        p = p->next;
    uint64_t t1 = rdtsc();
    printf("pointer_chase steps=%lu wskib=%lu nodes=%lu final=%lu tsc=%lu\n", n, wskib, count,
           (unsigned long)(p - nodes), t1 - t0);
    return 0;
}
