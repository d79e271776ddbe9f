/*
 * ctx_switch N KIB: two processes pass a byte back and forth over two pipes N times;
 * each touches its own KIB working set (one write per 64-byte line) before passing it on.
 */
#include "libc.h"

static unsigned long touch(volatile unsigned char *ws, unsigned long bytes, unsigned char v)
{
    unsigned long sum = 0;
    for (unsigned long i = 0; i < bytes; i += 64) {
        ws[i] = (unsigned char)(ws[i] + v);
        sum += ws[i];
    }
    return sum;
}

int main(int argc, char **argv)
{
    unsigned long n = arg_ul(argc, argv, 1, 1000);
    unsigned long kib = arg_ul(argc, argv, 2, 0);
    unsigned long bytes = kib * 1024;
    unsigned char *ws = bytes ? calloc(1, bytes) : NULL;
    int ab[2], ba[2];
    if ((bytes && !ws) || pipe(ab) < 0 || pipe(ba) < 0) {
        printf("ctx_switch error=setup\n");
        return 1;
    }
    pid_t child = fork();
    if (child < 0) {
        printf("ctx_switch error=fork\n");
        return 1;
    }
    if (child == 0) {
        unsigned char c;
        for (unsigned long i = 0; i < n; i++) {
            if (read(ab[0], &c, 1) != 1)
                _exit(2);
            if (bytes)
                touch(ws, bytes, c);
            c++;
            if (write(ba[1], &c, 1) != 1)
                _exit(3);
        }
        _exit(0);
    }
    unsigned char c = 0;
    unsigned long bad = 0;
    uint64_t t0 = rdtsc();
    for (unsigned long i = 0; i < n; i++) {
        if (bytes)
            touch(ws, bytes, c);
        unsigned char sent = c;
        if (write(ab[1], &c, 1) != 1 || read(ba[0], &c, 1) != 1) {
            printf("ctx_switch error=pipe iteration=%lu\n", i);
            return 1;
        }
        if (c != (unsigned char)(sent + 1))
            bad++;
    }
    uint64_t t1 = rdtsc();
    int status = 0;
    waitpid(child, &status, 0);
    if (bad || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        printf("ctx_switch error=protocol bad=%lu child_status=%d\n", bad, status);
        return 1;
    }
    printf("ctx_switch iterations=%lu kib=%lu switches=%lu tsc=%lu\n", n, kib, 2 * n, t1 - t0);
    return 0;
}
