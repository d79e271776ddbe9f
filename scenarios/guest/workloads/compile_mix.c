/*
 * compile_mix N: N rounds of a compiler-like mix: fork+exec of a short tool (true_),
 * a producer child piping generated "source" text to the parent which tokenizes and
 * hashes it, fresh anonymous memory for a symbol table (page faults), and a sort.
 */
#include "libc.h"

#define SOURCE_BYTES 8192
#define TABLE_PAGES 16
#define SORT_N 256

static uint64_t xs(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

static void produce(int fd, unsigned long round)
{
    static const char *const words[] = {"int", "x", "=", "y", "+", "1", ";", "return", "(", ")",
                                        "{", "}", "while", "if", "else", "foo", "bar", "42"};
    char buf[512];
    uint64_t x = 0x1234567ULL + round;
    unsigned long sent = 0;
    while (sent < SOURCE_BYTES) {
        size_t len = 0;
        while (len < sizeof buf - 16) {
            const char *w = words[xs(&x) % (sizeof words / sizeof words[0])];
            size_t l = strlen(w);
            memcpy(buf + len, w, l);
            len += l;
            buf[len++] = (xs(&x) & 7) ? ' ' : '\n';
        }
        if (len > SOURCE_BYTES - sent)
            len = SOURCE_BYTES - sent;
        if (write(fd, buf, len) != (ssize_t)len)
            _exit(2);
        sent += len;
    }
}

int main(int argc, char **argv)
{
    unsigned long rounds = arg_ul(argc, argv, 1, 10);
    unsigned long execs = 0, pipe_bytes = 0, tokens = 0, faults = 0;
    uint64_t hash = 1469598103934665603ULL;
    uint64_t t0 = rdtsc();
    for (unsigned long r = 0; r < rounds; r++) {
        /* 1. run a tool */
        pid_t pid = fork();
        if (pid < 0) {
            printf("compile_mix error=fork\n");
            return 1;
        }
        if (pid == 0) {
            char *cargv[] = {"true_", NULL};
            execve("true_", cargv, NULL);
            _exit(127);
        }
        int status = 0;
        if (waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0)
            execs++;

        /* 2. read generated source from a pipe and tokenize it */
        int fds[2];
        if (pipe(fds) < 0) {
            printf("compile_mix error=pipe\n");
            return 1;
        }
        pid = fork();
        if (pid < 0) {
            printf("compile_mix error=fork\n");
            return 1;
        }
        if (pid == 0) {
            close(fds[0]);
            produce(fds[1], r);
            _exit(0);
        }
        close(fds[1]);
        char buf[1024];
        int in_word = 0;
        for (;;) {
            ssize_t n = read(fds[0], buf, sizeof buf);
            if (n <= 0)
                break;
            pipe_bytes += (unsigned long)n;
            for (ssize_t i = 0; i < n; i++) {
                int sep = buf[i] == ' ' || buf[i] == '\n';
                if (!sep) {
                    hash = (hash ^ (unsigned char)buf[i]) * 1099511628211ULL;
                    if (!in_word)
                        tokens++;
                }
                in_word = !sep;
            }
        }
        close(fds[0]);
        waitpid(pid, &status, 0);

        /* 3. a fresh symbol table: one page fault per page */
        uint64_t *table = mmap(NULL, TABLE_PAGES * PAGE_SIZE, PROT_READ | PROT_WRITE,
                               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (table == MAP_FAILED) {
            printf("compile_mix error=mmap\n");
            return 1;
        }
        for (unsigned long p = 0; p < TABLE_PAGES; p++) {
            table[p * (PAGE_SIZE / 8)] = hash + p;
            faults++;
        }

        /* 4. compute: insertion sort of pseudo-random keys stored in the table */
        uint64_t x = hash | 1;
        for (int i = 0; i < SORT_N; i++)
            table[i] = xs(&x) % 100000;
        for (int i = 1; i < SORT_N; i++) {
            uint64_t k = table[i];
            int j = i - 1;
            while (j >= 0 && table[j] > k) {
                table[j + 1] = table[j];
                j--;
            }
            table[j + 1] = k;
        }
        for (int i = 0; i < SORT_N; i += 16)
            hash = (hash ^ table[i]) * 1099511628211ULL;
        munmap(table, TABLE_PAGES * PAGE_SIZE);
    }
    uint64_t t1 = rdtsc();
    printf("compile_mix rounds=%lu execs=%lu pipe_bytes=%lu tokens=%lu faults=%lu checksum=%lx tsc=%lu\n",
           rounds, execs, pipe_bytes, tokens, faults, hash, t1 - t0);
    return execs == rounds ? 0 : 1;
}
