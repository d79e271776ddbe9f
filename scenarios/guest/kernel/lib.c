/* Kernel library: memory and string helpers, formatted console output, panic, power-off. */
#include "kernel.h"

void *memset(void *d, int c, size_t n)
{
    void *r = d;
    __asm__ volatile("rep stosb" : "+D"(d), "+c"(n) : "a"(c) : "memory");
    return r;
}

void *memcpy(void *d, const void *s, size_t n)
{
    void *r = d;
    __asm__ volatile("rep movsb" : "+D"(d), "+S"(s), "+c"(n)::"memory");
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

/* ---- formatted output: %d %i %u %x %X %p %s %c %% with l/ll/z, width, 0 - # flags ---- */

struct out {
    char *buf;
    size_t cap, len;
};

static void out_c(struct out *o, char c)
{
    if (o->len + 1 < o->cap)
        o->buf[o->len] = c;
    o->len++;
}

static void out_num(struct out *o, u64 v, int base, int neg, int width, int zero, int left, int upper)
{
    char tmp[24];
    int n = 0;
    const char *dig = upper ? "0123456789ABCDEF" : "0123456789abcdef";
    do {
        tmp[n++] = dig[v % (u64)base];
        v /= (u64)base;
    } while (v);
    int len = n + (neg ? 1 : 0);
    if (!left && !zero)
        for (; width > len; width--)
            out_c(o, ' ');
    if (neg)
        out_c(o, '-');
    if (!left && zero)
        for (; width > len; width--)
            out_c(o, '0');
    while (n)
        out_c(o, tmp[--n]);
    if (left)
        for (; width > len; width--)
            out_c(o, ' ');
}

int kvsnprintf(char *buf, size_t cap, const char *fmt, va_list ap)
{
    struct out o = {buf, cap, 0};
    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            out_c(&o, *fmt);
            continue;
        }
        fmt++;
        int zero = 0, left = 0, width = 0, lng = 0, alt = 0;
        for (;; fmt++) {
            if (*fmt == '0')
                zero = 1;
            else if (*fmt == '-')
                left = 1;
            else if (*fmt == '#')
                alt = 1;
            else
                break;
        }
        while (*fmt >= '0' && *fmt <= '9')
            width = width * 10 + (*fmt++ - '0');
        while (*fmt == 'l' || *fmt == 'z') {
            lng++;
            fmt++;
        }
        switch (*fmt) {
        case 'd':
        case 'i': {
            i64 v = lng ? va_arg(ap, i64) : va_arg(ap, int);
            u64 mag = v < 0 ? (u64)0 - (u64)v : (u64)v;
            out_num(&o, mag, 10, v < 0, width, zero, left, 0);
            break;
        }
        case 'u':
            out_num(&o, lng ? va_arg(ap, u64) : va_arg(ap, unsigned), 10, 0, width, zero, left, 0);
            break;
        case 'x':
        case 'X':
            if (alt) {
                out_c(&o, '0');
                out_c(&o, 'x');
            }
            out_num(&o, lng ? va_arg(ap, u64) : va_arg(ap, unsigned), 16, 0, width, zero, left,
                    *fmt == 'X');
            break;
        case 'p':
            out_c(&o, '0');
            out_c(&o, 'x');
            out_num(&o, (u64)va_arg(ap, void *), 16, 0, width, zero, left, 0);
            break;
        case 's': {
            const char *s = va_arg(ap, const char *);
            if (!s)
                s = "(null)";
            int n = (int)strlen(s);
            if (!left)
                for (; width > n; width--)
                    out_c(&o, ' ');
            while (*s)
                out_c(&o, *s++);
            if (left)
                for (; width > n; width--)
                    out_c(&o, ' ');
            break;
        }
        case 'c':
            out_c(&o, (char)va_arg(ap, int));
            break;
        case '%':
            out_c(&o, '%');
            break;
        case 0:
            fmt--;
            break;
        default:
            out_c(&o, '%');
            out_c(&o, *fmt);
        }
    }
    if (cap)
        buf[o.len < cap ? o.len : cap - 1] = 0;
    return (int)o.len;
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
