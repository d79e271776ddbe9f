/*
 * stream N WSKIB: N passes over a WSKIB working set split into two arrays a and b:
 * each pass sums a sequentially and copies a into b (b[i] = a[i] + pass).
 */
#include "libc.h"

int main(int argc, char **argv)
{
    unsigned long n = arg_ul(argc, argv, 1, 10);
    unsigned long wskib = arg_ul(argc, argv, 2, 1024);
    unsigned long words = wskib * 1024 / 16; /* per array */
    if (words == 0) {
        printf("stream error=empty_working_set\n");
        return 1;
    }
    uint64_t *a = mmap(NULL, words * 16, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (a == MAP_FAILED) {
        printf("stream error=mmap\n");
        return 1;
    }
    uint64_t *b = a + words;
    for (unsigned long i = 0; i < words; i++)
        a[i] = i;
    uint64_t sum = 0;
    uint64_t t0 = rdtsc();
    for (unsigned long pass = 0; pass < n; pass++) {
        for (unsigned long i = 0; i < words; i++)
            sum += a[i];
        for (unsigned long i = 0; i < words; i++)
            b[i] = a[i] + pass;
    }
    uint64_t t1 = rdtsc();
    uint64_t check = 0;
    for (unsigned long i = 0; i < words; i++)
        check += b[i];
    printf("stream iterations=%lu wskib=%lu sum=%lu check=%lu bytes=%lu tsc=%lu\n", n, wskib, sum,
           check, n * words * 8 * 3, t1 - t0);
    return 0;
}
