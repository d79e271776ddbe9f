/* gups N WSKIB: N random read-modify-write updates of 64-bit words in a WSKIB working set. */
#include "libc.h"

int main(int argc, char **argv)
{
    unsigned long n = arg_ul(argc, argv, 1, 100000);
    unsigned long wskib = arg_ul(argc, argv, 2, 1024);
    unsigned long words = wskib * 1024 / 8;
    if (words == 0) {
        printf("gups error=empty_working_set\n");
        return 1;
    }
    uint64_t *t = mmap(NULL, words * 8, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (t == MAP_FAILED) {
        printf("gups error=mmap\n");
        return 1;
    }
    for (unsigned long i = 0; i < words; i++)
        t[i] = i;
    int pow2 = (words & (words - 1)) == 0;
    uint64_t x = 0x9E3779B97F4A7C15UL;
    uint64_t t0 = rdtsc();
    for (unsigned long i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        unsigned long idx = pow2 ? (x & (words - 1)) : (x % words);
        t[idx] ^= x;
    }
    uint64_t t1 = rdtsc();
    uint64_t sum = 0;
    for (unsigned long i = 0; i < words; i++)
        sum ^= t[i];
    printf("gups updates=%lu wskib=%lu checksum=%lx tsc=%lu\n", n, wskib, sum, t1 - t0);
    return 0;
}
