/* A tiny libc for hvsim guest programs. */
#include "libc.h"

/* ---------------- system calls ---------------- */

long syscall0(long n)
{
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "a"(n) : "rcx", "r11", "memory");
    return r;
}

long syscall1(long n, long a)
{
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a) : "rcx", "r11", "memory");
    return r;
}

long syscall2(long n, long a, long b)
{
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b) : "rcx", "r11", "memory");
    return r;
}

long syscall3(long n, long a, long b, long c)
{
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
    return r;
}

long syscall4(long n, long a, long b, long c, long d)
{
    long r;
    register long r10 __asm__("r10") = d;
    __asm__ volatile("syscall"
                     : "=a"(r)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10)
                     : "rcx", "r11", "memory");
    return r;
}

long syscall6(long n, long a, long b, long c, long d, long e, long f)
{
    long r;
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    __asm__ volatile("syscall"
                     : "=a"(r)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return r;
}

ssize_t read(int fd, void *buf, size_t n) { return syscall3(0, fd, (long)buf, (long)n); }
ssize_t write(int fd, const void *buf, size_t n) { return syscall3(1, fd, (long)buf, (long)n); }
int close(int fd) { return (int)syscall1(3, fd); }
int open(const char *path, int flags) { return (int)syscall3(2, (long)path, flags, 0); }
ssize_t pread64(int fd, void *buf, size_t count, long offset)
{
    return syscall4(17, fd, (long)buf, (long)count, offset);
}
ssize_t pwrite64(int fd, const void *buf, size_t count, long offset)
{
    return syscall4(18, fd, (long)buf, (long)count, offset);
}

void *mmap(void *addr, size_t len, int prot, int flags, int fd, long off)
{
    long r = syscall6(9, (long)addr, (long)len, prot, flags, fd, off);
    return (r < 0 && r > -4096) ? MAP_FAILED : (void *)r;
}

int munmap(void *addr, size_t len) { return (int)syscall2(11, (long)addr, (long)len); }
long brk(void *addr) { return syscall1(12, (long)addr); }
int pipe(int fds[2]) { return (int)syscall1(22, (long)fds); }
int sched_yield(void) { return (int)syscall0(24); }
int nanosleep(const struct timespec *req, struct timespec *rem)
{
    return (int)syscall2(35, (long)req, (long)rem);
}
pid_t getpid(void) { return (pid_t)syscall0(39); }
pid_t fork(void) { return (pid_t)syscall0(57); }
int execve(const char *path, char *const argv[], char *const envp[])
{
    return (int)syscall3(59, (long)path, (long)argv, (long)envp);
}
pid_t wait4(pid_t pid, int *status, int options, void *rusage)
{
    return (pid_t)syscall4(61, pid, (long)status, options, (long)rusage);
}
pid_t waitpid(pid_t pid, int *status, int options) { return wait4(pid, status, options, NULL); }
int uname(struct utsname *u) { return (int)syscall1(63, (long)u); }
int arch_prctl(int code, unsigned long addr) { return (int)syscall2(158, code, (long)addr); }
int clock_gettime(int clk, struct timespec *ts) { return (int)syscall2(228, clk, (long)ts); }
int socket(int domain, int type, int protocol) { return (int)syscall3(41, domain, type, protocol); }
ssize_t sendto(int fd, const void *buf, size_t len, int flags, const void *addr, int addrlen)
{
    return syscall6(44, fd, (long)buf, (long)len, flags, (long)addr, addrlen);
}
ssize_t recvfrom(int fd, void *buf, size_t len, int flags, void *addr, int *addrlen)
{
    return syscall6(45, fd, (long)buf, (long)len, flags, (long)addr, (long)addrlen);
}

void _exit(int status)
{
    for (;;)
        syscall1(231, status);
}

void exit(int status)
{
    fflush_stdout();
    _exit(status);
}

uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000UL + (uint64_t)ts.tv_nsec;
}

/* ---------------- strings ---------------- */

void *memset(void *d, int c, size_t n)
{
    void *r = d;
    __asm__ volatile("rep stosb" : "+D"(d), "+c"(n) : "a"(c) : "memory");
    return r;
}

/* Quadwords, then the tail bytes: the string unit moves eight bytes per element, as a
 * memcpy without fast-string microcode does (a byte loop would make every byte an access). */
void *memcpy(void *d, const void *s, size_t n)
{
    void *r = d;
    size_t q = n / 8, b = n % 8;
    __asm__ volatile("rep movsq" : "+D"(d), "+S"(s), "+c"(q)::"memory");
    __asm__ volatile("rep movsb" : "+D"(d), "+S"(s), "+c"(b)::"memory");
    return r;
}

void *memmove(void *d, const void *s, size_t n)
{
    unsigned char *dp = d;
    const unsigned char *sp = s;
    if (dp <= sp || dp >= sp + n)
        return memcpy(d, s, n);
    while (n--)
        dp[n] = sp[n];
    return d;
}

int memcmp(const void *a, const void *b, size_t n)
{
    const unsigned char *x = a, *y = b;
    for (size_t i = 0; i < n; i++)
        if (x[i] != y[i])
            return x[i] < y[i] ? -1 : 1;
    return 0;
}

size_t strlen(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

int strcmp(const char *a, const char *b)
{
    while (*a && *a == *b) {
        a++;
        b++;
    }
    return (unsigned char)*a - (unsigned char)*b;
}

int strncmp(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (a[i] != b[i] || !a[i])
            return (unsigned char)a[i] - (unsigned char)b[i];
    }
    return 0;
}

char *strcpy(char *d, const char *s)
{
    char *r = d;
    while ((*d++ = *s++))
        ;
    return r;
}

char *strchr(const char *s, int c)
{
    for (;; s++) {
        if (*s == (char)c)
            return (char *)s;
        if (!*s)
            return NULL;
    }
}

/* ---------------- numbers ---------------- */

unsigned long strtoul(const char *s, char **end, int base)
{
    unsigned long v = 0;
    while (*s == ' ' || *s == '\t')
        s++;
    if (*s == '+')
        s++;
    if ((base == 0 || base == 16) && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        s += 2;
        base = 16;
    } else if (base == 0) {
        base = (s[0] == '0' && s[1]) ? 8 : 10;
    }
    for (;; s++) {
        int d;
        if (*s >= '0' && *s <= '9')
            d = *s - '0';
        else if (*s >= 'a' && *s <= 'z')
            d = *s - 'a' + 10;
        else if (*s >= 'A' && *s <= 'Z')
            d = *s - 'A' + 10;
        else
            break;
        if (d >= base)
            break;
        v = v * (unsigned long)base + (unsigned long)d;
    }
    if (end)
        *end = (char *)s;
    return v;
}

long atol(const char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    int neg = *s == '-';
    if (neg)
        s++;
    long v = (long)strtoul(s, NULL, 10);
    return neg ? -v : v;
}

int atoi(const char *s) { return (int)atol(s); }

unsigned long arg_ul(int argc, char **argv, int i, unsigned long def)
{
    return i < argc ? strtoul(argv[i], NULL, 0) : def;
}

/* ---------------- formatted output (the source shared with the kernel) ---------------- */

#include "../common/format.h"

int vsnprintf(char *buf, size_t cap, const char *fmt, va_list ap)
{
    return format_v(buf, cap, fmt, ap);
}

int snprintf(char *buf, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = vsnprintf(buf, n, fmt, ap);
    va_end(ap);
    return r;
}

static char outbuf[1024];
static size_t outlen;

void fflush_stdout(void)
{
    size_t done = 0;
    while (done < outlen) {
        ssize_t r = write(1, outbuf + done, outlen - done);
        if (r <= 0)
            break;
        done += (size_t)r;
    }
    outlen = 0;
}

static void out_bytes(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (outlen == sizeof outbuf)
            fflush_stdout();
        outbuf[outlen++] = s[i];
    }
}

/* stdout is line buffered: every printf ending a line costs one write(). */
int printf(const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    size_t len = n < (int)sizeof buf ? (size_t)n : sizeof buf - 1;
    out_bytes(buf, len);
    if (len && buf[len - 1] == '\n')
        fflush_stdout();
    return n;
}

int puts(const char *s)
{
    out_bytes(s, strlen(s));
    out_bytes("\n", 1);
    fflush_stdout();
    return 0;
}

/* ---------------- heap: first-fit free list over brk ---------------- */

struct block {
    size_t size; /* payload bytes */
    struct block *next;
};

static char *heap_end;
static struct block *free_list;

static void *sbrk(size_t n)
{
    if (!heap_end)
        heap_end = (char *)brk(NULL);
    char *old = heap_end;
    char *want = old + n;
    if ((char *)brk(want) != want)
        return NULL;
    heap_end = want;
    return old;
}

void *malloc(size_t n)
{
    if (n == 0)
        n = 1;
    n = (n + 15) & ~(size_t)15;
    for (struct block **pp = &free_list; *pp; pp = &(*pp)->next) {
        struct block *b = *pp;
        if (b->size >= n) {
            *pp = b->next;
            return b + 1;
        }
    }
    struct block *b = sbrk(sizeof(struct block) + n);
    if (!b)
        return NULL;
    b->size = n;
    return b + 1;
}

void *calloc(size_t n, size_t m)
{
    if (m && n > (size_t)-1 / m)
        return NULL;
    void *p = malloc(n * m);
    if (p)
        memset(p, 0, n * m);
    return p;
}

void free(void *p)
{
    if (!p)
        return;
    struct block *b = (struct block *)p - 1;
    b->next = free_list;
    free_list = b;
}

/* ---------------- start ---------------- */

void __libc_start(long *sp);

void __libc_start(long *sp)
{
    int argc = (int)sp[0];
    char **argv = (char **)(sp + 1);
    exit(main(argc, argv));
}
