/*
 * The socket-like interface to the machine's one network interface (docs/io.md section 4)
 * and the glue between it and the driver boot_info.net_kind names.
 *
 * socket(AF_PACKET, SOCK_RAW, _) gives a descriptor; sendto copies one whole frame from
 * user memory into a driver transmit buffer and hands it to the driver (sleeping while the
 * ring is full); recvfrom takes the next frame from the receive queue the driver fills
 * from its interrupt or event handler (sleeping while it is empty). Drivers, syscalls and
 * handlers all run under the kernel lock, so the queue needs no lock of its own.
 */
#include "kernel.h"

#define AF_PACKET 17
#define SOCK_RAW 3
#define MSG_DONTWAIT 0x40

/* The receive queue: RXQ_LEN buffers of NET_BUF_BYTES, two per frame, allocated only when
 * there is an interface. When it is full a received frame is dropped and counted. */
#define RXQ_LEN 512
static u8 *rxq_buf[RXQ_LEN];
static u32 rxq_bytes[RXQ_LEN];
static u32 rxq_head, rxq_tail; /* free-running: taken, added */
static struct waitq rx_wait, tx_wait;

static const struct net_driver *drv;
static u64 net_kind;
struct net_stats net_stats;

void net_init(void)
{
    net_kind = boot_info->net_kind;
    if (net_kind == NET_KIND_NONE)
        return;
    if (net_kind == NET_KIND_E1000)
        drv = e1000_init();
    else if (net_kind == NET_KIND_NETFRONT)
        drv = netfront_init();
    else
        panic("net: unknown boot_info.net_kind %lu", net_kind);
    for (u32 i = 0; i < RXQ_LEN; i += PAGE_SIZE / NET_BUF_BYTES) {
        u64 pa = frame_alloc();
        if (!pa)
            panic("net: out of memory for the receive queue");
        for (u32 j = 0; j < PAGE_SIZE / NET_BUF_BYTES; j++)
            rxq_buf[i + j] = (u8 *)P2V(pa) + j * NET_BUF_BYTES;
    }
    /* The counters describe the run, not the set-up. */
    net_stats = (struct net_stats){0};
    kprintf("hvsim-kernel: net: %s\n", drv->name);
}

void net_rx(const void *frame, u32 len)
{
    net_stats.rx_frames++;
    if (rxq_tail - rxq_head == RXQ_LEN) {
        net_stats.rx_queue_drops++;
        return;
    }
    if (len > NET_BUF_BYTES)
        panic("net: driver delivered a %u-byte frame", len);
    u32 i = rxq_tail % RXQ_LEN;
    memcpy(rxq_buf[i], frame, len);
    rxq_bytes[i] = len;
    rxq_tail++;
    wake_all(&rx_wait);
}

void net_tx_done(void) { wake_all(&tx_wait); }

i64 sys_socket(u64 domain, u64 type, u64 protocol)
{
    (void)protocol; /* every frame goes to the one socket layer, whatever its protocol */
    if (domain != AF_PACKET)
        return -EAFNOSUPPORT;
    if (type != SOCK_RAW)
        return -EINVAL;
    if (!drv)
        return -ENODEV;
    return fd_open(FILE_NET);
}

static int is_socket(u64 fd)
{
    struct file *f = fd_file(fd);
    return f && f->type == FILE_NET;
}

/* sendto(fd, buf, len, flags, addr, addrlen): the address is ignored (one interface, the
 * frame carries its own header). */
i64 sys_sendto(u64 fd, u64 ubuf, u64 len, u64 flags)
{
    if (!fd_file(fd))
        return -EBADF;
    if (!is_socket(fd))
        return -ENOTSOCK;
    if (len > NET_FRAME_MAX)
        return -EMSGSIZE;
    if (len < NET_FRAME_MIN)
        return -EINVAL;
    if (!user_access_ok(current_task()->mm, ubuf, len, 0))
        return -EFAULT;
    void *buf;
    while (!(buf = drv->tx_buffer())) {
        if (flags & MSG_DONTWAIT)
            return -EAGAIN;
        net_stats.tx_full_sleeps++;
        sleep_on(&tx_wait);
    }
    /* Checked above; a fault here is a demand fault the kernel resolves. */
    memcpy(buf, (const void *)ubuf, len);
    drv->tx_send((u32)len);
    net_stats.tx_frames++;
    return (i64)len;
}

/* recvfrom(fd, buf, len, flags, addr, addrlen): returns the bytes copied (the frame
 * truncated to len, as Linux without MSG_TRUNC); no source address is written. */
i64 sys_recvfrom(u64 fd, u64 ubuf, u64 len, u64 flags)
{
    if (!fd_file(fd))
        return -EBADF;
    if (!is_socket(fd))
        return -ENOTSOCK;
    if (!user_access_ok(current_task()->mm, ubuf, len, 1))
        return -EFAULT;
    while (rxq_tail == rxq_head) {
        if (flags & MSG_DONTWAIT)
            return -EAGAIN;
        sleep_on(&rx_wait);
    }
    u32 i = rxq_head % RXQ_LEN;
    u64 n = rxq_bytes[i] < len ? rxq_bytes[i] : len;
    memcpy((void *)ubuf, rxq_buf[i], n);
    rxq_head++;
    return (i64)n;
}

/*
 * hvsim_net(what, arg): the driver's counters.
 * what: 0 interface kind (0 none, 1 e1000, 2 netfront), 1 frames sent, 2 frames received,
 * 3 interrupts/events, 4 receive-queue drops, 5 receive errors, 6 transmit errors,
 * 7 sendto sleeps on a full ring, 8 kicks (e1000 TDT writes, netfront EVTCHNOP_send),
 * 9 device operations after init (e1000 register accesses, netfront hypercalls),
 * 10 empty interrupts/events, 11 frames waiting in the receive queue;
 * 100: set the interrupt throttling interval to arg (e1000 ITR, 256 ns units): 1 when
 * applied, 0 when the driver has none.
 */
i64 sys_hvsim_net(u64 what, u64 arg)
{
    if (what == 0)
        return (i64)net_kind;
    if (!drv)
        return -ENODEV;
    switch (what) {
    case 1:
        return (i64)net_stats.tx_frames;
    case 2:
        return (i64)net_stats.rx_frames;
    case 3:
        return (i64)net_stats.interrupts;
    case 4:
        return (i64)net_stats.rx_queue_drops;
    case 5:
        return (i64)net_stats.rx_errors;
    case 6:
        return (i64)net_stats.tx_errors;
    case 7:
        return (i64)net_stats.tx_full_sleeps;
    case 8:
        return (i64)net_stats.kicks;
    case 9:
        return (i64)net_stats.dev_ops;
    case 10:
        return (i64)net_stats.empty;
    case 11:
        return (i64)(rxq_tail - rxq_head);
    case 100:
        if (arg > 0xFFFF)
            return -EINVAL;
        return drv->set_itr((u32)arg);
    }
    return -EINVAL;
}
