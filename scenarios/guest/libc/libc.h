/*
 * A tiny libc for hvsim guest programs: raw Linux x86-64 system calls, formatted output,
 * strings, a brk-based malloc and number parsing.
 *
 * System call wrappers return the kernel's raw result: a negative errno on failure.
 */
#ifndef HVSIM_LIBC_H
#define HVSIM_LIBC_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

typedef long ssize_t;
typedef int pid_t;

struct timespec {
    long tv_sec;
    long tv_nsec;
};

struct utsname {
    char sysname[65], nodename[65], release[65], version[65], machine[65], domainname[65];
};

#define PROT_NONE 0
#define PROT_READ 1
#define PROT_WRITE 2
#define PROT_EXEC 4
#define MAP_PRIVATE 0x02
#define MAP_FIXED 0x10
#define MAP_ANONYMOUS 0x20
#define MAP_FAILED ((void *)-1)
#define CLOCK_REALTIME 0
#define CLOCK_MONOTONIC 1
#define WNOHANG 1
#define ARCH_SET_FS 0x1002
#define ARCH_GET_FS 0x1003
#define WIFEXITED(s) (((s)&0x7f) == 0)
#define WEXITSTATUS(s) (((s) >> 8) & 0xff)
#define WIFSIGNALED(s) (((s)&0x7f) != 0)
#define WTERMSIG(s) ((s)&0x7f)
#define PAGE_SIZE 4096
#define AF_PACKET 17
#define SOCK_RAW 3
#define MSG_DONTWAIT 0x40
#define ENODEV 19
#define EAGAIN 11
#define ENOENT 2
#define EIO 5
#define EBADF 9
#define EINVAL 22
#define O_RDONLY 0
#define O_WRONLY 1
#define O_RDWR 2

/* raw system calls */
long syscall0(long n);
long syscall1(long n, long a);
long syscall2(long n, long a, long b);
long syscall3(long n, long a, long b, long c);
long syscall4(long n, long a, long b, long c, long d);
long syscall6(long n, long a, long b, long c, long d, long e, long f);

ssize_t read(int fd, void *buf, size_t n);
int open(const char *path, int flags);
ssize_t pread64(int fd, void *buf, size_t count, long offset);
ssize_t pwrite64(int fd, const void *buf, size_t count, long offset);
ssize_t write(int fd, const void *buf, size_t n);
int close(int fd);
void *mmap(void *addr, size_t len, int prot, int flags, int fd, long off); /* MAP_FAILED on error */
int munmap(void *addr, size_t len);
long brk(void *addr);
int sched_yield(void);
int pipe(int fds[2]);
int nanosleep(const struct timespec *req, struct timespec *rem);
pid_t getpid(void);
pid_t fork(void);
int execve(const char *path, char *const argv[], char *const envp[]);
pid_t wait4(pid_t pid, int *status, int options, void *rusage);
pid_t waitpid(pid_t pid, int *status, int options);
int uname(struct utsname *u);
int arch_prctl(int code, unsigned long addr);
int clock_gettime(int clk, struct timespec *ts);
int socket(int domain, int type, int protocol);
ssize_t sendto(int fd, const void *buf, size_t len, int flags, const void *addr, int addrlen);
ssize_t recvfrom(int fd, void *buf, size_t len, int flags, void *addr, int *addrlen);
__attribute__((noreturn)) void _exit(int status);
__attribute__((noreturn)) void exit(int status); /* flushes stdout first */

/* time */
static inline uint64_t rdtsc(void)
{
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}
uint64_t now_ns(void); /* CLOCK_MONOTONIC in nanoseconds */

/* output */
int printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int snprintf(char *buf, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int vsnprintf(char *buf, size_t n, const char *fmt, va_list ap);
int puts(const char *s);
void fflush_stdout(void);

/* strings and memory */
void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
void *memmove(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strcmp(const char *a, const char *b);
int strncmp(const char *a, const char *b, size_t n);
char *strcpy(char *d, const char *s);
char *strchr(const char *s, int c);

/* numbers */
int atoi(const char *s);
long atol(const char *s);
unsigned long strtoul(const char *s, char **end, int base);

/* heap */
void *malloc(size_t n);
void *calloc(size_t n, size_t m);
void free(void *p);

/* argument helper: argv[i] as a number, or def when absent */
unsigned long arg_ul(int argc, char **argv, int i, unsigned long def);

int main(int argc, char **argv);

#endif
