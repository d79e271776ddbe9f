/*
 * The formatter behind the kernel's kprintf family and the user libc's printf family (two
 * separate binaries, one source): %d %i %u %x %X %p %s %c %% with l/ll/z, a width, and
 * the 0 - # flags. Included by each after its own definitions of size_t, va_list and
 * strlen; `format_v` is the vsnprintf both wrap.
 */

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

static void out_num(struct out *o, unsigned long v, int base, int neg, int width, int zero,
                    int left, int upper)
{
    char tmp[24];
    int n = 0;
    const char *dig = upper ? "0123456789ABCDEF" : "0123456789abcdef";
    do {
        tmp[n++] = dig[v % (unsigned long)base];
        v /= (unsigned long)base;
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

static int format_v(char *buf, size_t cap, const char *fmt, va_list ap)
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
            long v = lng ? va_arg(ap, long) : va_arg(ap, int);
            unsigned long mag = v < 0 ? 0UL - (unsigned long)v : (unsigned long)v;
            out_num(&o, mag, 10, v < 0, width, zero, left, 0);
            break;
        }
        case 'u':
            out_num(&o, lng ? va_arg(ap, unsigned long) : va_arg(ap, unsigned), 10, 0, width, zero, left, 0);
            break;
        case 'x':
        case 'X':
            if (alt) {
                out_c(&o, '0');
                out_c(&o, 'x');
            }
            out_num(&o, lng ? va_arg(ap, unsigned long) : va_arg(ap, unsigned), 16, 0, width, zero, left,
                    *fmt == 'X');
            break;
        case 'p':
            out_c(&o, '0');
            out_c(&o, 'x');
            out_num(&o, (unsigned long)va_arg(ap, void *), 16, 0, width, zero, left, 0);
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

