/*
 * Shared by the network workloads: the frame header of docs/io.md section 1, the socket
 * and the driver counters (the hvsim_net syscall).
 *
 * Header: dst MAC 02:00:00:00:00:01, src MAC 02:00:00:00:00:02, ethertype 0x88B5
 * (big-endian), two zero bytes, seq u64 LE at 16, frame length u32 at 24, kind u32 at 28.
 */
#ifndef HVSIM_NET_COMMON_H
#define HVSIM_NET_COMMON_H

#include "libc.h"

#define NR_HVSIM_NET 501
#define NET_HDR 32
#define NET_MIN 60
#define NET_MAX 1514
#define NET_PAYLOAD_MAX (NET_MAX - NET_HDR) /* 1482 */
#define KIND_DATA 0
#define KIND_REQUEST 1
#define KIND_RESPONSE 2
#define NET_SET_ITR 100

static inline long net_stat(long what) { return syscall2(NR_HVSIM_NET, what, 0); }

/* A header for a frame of `len` bytes; the payload after it is left as it is. */
static inline void frame_header(unsigned char *f, uint64_t seq, uint32_t len, uint32_t kind)
{
    static const unsigned char macs[12] = {2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2};
    memcpy(f, macs, sizeof macs);
    f[12] = 0x88;
    f[13] = 0xB5;
    f[14] = 0;
    f[15] = 0;
    memcpy(f + 16, &seq, 8);
    memcpy(f + 24, &len, 4);
    memcpy(f + 28, &kind, 4);
}

/* 1 when the n bytes received are one of ours (long enough, our ethertype). */
static inline int frame_ours(const unsigned char *f, long n)
{
    return n >= NET_HDR && f[12] == 0x88 && f[13] == 0xB5;
}

static inline uint64_t frame_seq(const unsigned char *f)
{
    uint64_t s;
    memcpy(&s, f + 16, 8);
    return s;
}

static inline uint32_t frame_kind(const unsigned char *f)
{
    uint32_t k;
    memcpy(&k, f + 28, 4);
    return k;
}

/* The packet socket, or the program ends: `error=no_net` without an interface. */
static inline int net_open(const char *prog)
{
    int fd = socket(AF_PACKET, SOCK_RAW, 0);
    if (fd == -ENODEV) {
        printf("%s error=no_net\n", prog);
        exit(1);
    }
    if (fd < 0) {
        printf("%s error=socket(%d)\n", prog, fd);
        exit(1);
    }
    return fd;
}

/* The optional interrupt-throttling argument argv[i] (e1000 ITR, 256 ns units). */
static inline void net_itr_arg(int argc, char **argv, int i)
{
    if (i < argc)
        syscall2(NR_HVSIM_NET, NET_SET_ITR, (long)arg_ul(argc, argv, i, 0));
}

static inline void net_print_stats(void)
{
    static const char *const kinds[] = {"none", "e1000", "netfront"};
    long k = net_stat(0);
    printf("net_stats kind=%s sent=%ld received=%ld interrupts=%ld queue_drops=%ld "
           "rx_errors=%ld tx_errors=%ld tx_full_sleeps=%ld kicks=%ld dev_ops=%ld empty=%ld\n",
           k >= 0 && k < 3 ? kinds[k] : "?", net_stat(1), net_stat(2), net_stat(3), net_stat(4),
           net_stat(5), net_stat(6), net_stat(7), net_stat(8), net_stat(9), net_stat(10));
}

#endif
