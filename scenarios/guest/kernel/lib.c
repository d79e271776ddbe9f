/* Kernel library: memory and string helpers, formatted console output, panic, power-off. */
#include "kernel.h"

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
    u8 *dp = d;
    const u8 *sp = s;
    if (dp <= sp || dp >= sp + n)
        return memcpy(d, s, n);
    while (n--)
        dp[n] = sp[n];
    return d;
}

int memcmp(const void *a, const void *b, size_t n)
{
    const u8 *x = a, *y = b;
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
    return (u8)*a - (u8)*b;
}

void strlcpy_k(char *d, const char *s, size_t n)
{
    size_t i = 0;
    if (n == 0)
        return;
    for (; i + 1 < n && s[i]; i++)
        d[i] = s[i];
    d[i] = 0;
}

void zero_page(void *p)
{
    u64 n = PAGE_SIZE / 8;
    __asm__ volatile("rep stosq" : "+D"(p), "+c"(n) : "a"(0UL) : "memory");
}

void copy_page(void *d, const void *s)
{
    u64 n = PAGE_SIZE / 8;
    __asm__ volatile("rep movsq" : "+D"(d), "+S"(s), "+c"(n)::"memory");
}

/* ---- formatted output (the source shared with the user libc) ---- */

#include "../common/format.h"

int kvsnprintf(char *buf, size_t cap, const char *fmt, va_list ap)
{
    return format_v(buf, cap, fmt, ap);
}

int ksnprintf(char *buf, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = kvsnprintf(buf, n, fmt, ap);
    va_end(ap);
    return r;
}

void kputs(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        pv.io_out(PORT_CONSOLE, (u8)s[i], 1);
}

void kprintf(const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = kvsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof buf - 1)
        n = sizeof buf - 1;
    kputs(buf, (size_t)n);
}

NORETURN void poweroff(u32 status)
{
    pv.io_out(PORT_EXIT, status, 4);
    for (;;)
        pv.halt();
}

NORETURN void panic(const char *fmt, ...)
{
    char buf[400];
    va_list ap;
    va_start(ap, fmt);
    kvsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    kprintf("hvsim-kernel panic: %s\n", buf);
    poweroff(255);
}
