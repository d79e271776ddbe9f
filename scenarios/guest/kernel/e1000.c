/*
 * Driver of the e1000-like NIC (docs/io.md section 2): native, emulated (HVM) or passed
 * through. Each register access is a volatile 32-bit access, and under HVM each one is an
 * exit handled by the device model, so the driver touches only the registers it needs:
 *
 *   transmit, per frame:   one write of TDT (the doorbell; no batching across sendto)
 *   interrupt:             one read of ICR, one write of RDT when receive descriptors
 *                          were consumed (once per batch), then the EOI through pv_ops
 *
 * Descriptor state (DD) is read from memory, never through TDH/RDH. RS is set on every
 * transmit descriptor, so each one is written back and its buffer reclaimed by DD; the
 * device sets TXDW for them, so a transmit costs an interrupt unless ITR or a busy device
 * coalesces them. Transmit buffers are reclaimed in the interrupt handler and, when the
 * ring is full, by sendto itself.
 *
 * Rings: 256 descriptors each, one 4 KiB frame each. The receive ring keeps one
 * descriptor back (RDT = RDH means empty), so RDT is always one behind the next
 * descriptor the driver will look at; the transmit ring holds at most 255 frames in flight
 * (TDT = TDH means empty). The MSI vector is the platform's (boot_info.net_vector, boot
 * CPU); the handler takes the kernel lock because it wakes tasks.
 */
#include "kernel.h"

#define E1000_BAR_BYTES 0x20000UL
#define REG_CTRL 0x0000
#define CTRL_RST (1U << 26)
#define REG_ICR 0x00C0
#define ICR_TXDW (1U << 0)
#define ICR_RXO (1U << 6)
#define ICR_RXT0 (1U << 7)
#define REG_ITR 0x00C4
#define REG_IMS 0x00D0
#define REG_RCTL 0x0100
#define RCTL_EN (1U << 1)
#define REG_TCTL 0x0400
#define TCTL_EN (1U << 1)
#define REG_RDBAL 0x2800
#define REG_RDBAH 0x2804
#define REG_RDLEN 0x2808
#define REG_RDH 0x2810
#define REG_RDT 0x2818
#define REG_TDBAL 0x3800
#define REG_TDBAH 0x3804
#define REG_TDLEN 0x3808
#define REG_TDH 0x3810
#define REG_TDT 0x3818

#define TXD_CMD_EOP (1U << 0)
#define TXD_CMD_RS (1U << 3)
#define TXD_STAT_DD (1U << 0)
#define RXD_STAT_DD (1U << 0)
#define RXD_STAT_EOP (1U << 1)

#define RING 256 /* descriptors per ring: 256 * 16 bytes = one frame */

struct tx_desc {
    u64 addr;
    u16 length;
    u8 cso;
    u8 cmd;
    u8 status;
    u8 css;
    u16 special;
};

struct rx_desc {
    u64 addr;
    u16 length;
    u16 csum;
    u8 status;
    u8 errors;
    u16 special;
};

_Static_assert(sizeof(struct tx_desc) == 16, "transmit descriptor layout");
_Static_assert(sizeof(struct rx_desc) == 16, "receive descriptor layout");
_Static_assert(RING * sizeof(struct tx_desc) == PAGE_SIZE, "one frame per ring");
_Static_assert(NET_BUF_BYTES == 2048, "receive buffers are 2048 bytes (RCTL.BSIZE 0)");

u32 e1000_vector;
static u8 *regs;
static volatile struct tx_desc *tx_ring;
static volatile struct rx_desc *rx_ring;
static u8 *tx_buf[RING], *rx_buf[RING];
static u32 tx_prod, tx_cons; /* free-running: descriptors given to the device, reclaimed */
static u32 rx_next;          /* the next receive descriptor to look at (0..RING-1) */

static inline u32 rd(u32 off)
{
    net_stats.dev_ops++;
    return *(volatile u32 *)(regs + off);
}

static inline void wr(u32 off, u32 v)
{
    net_stats.dev_ops++;
    *(volatile u32 *)(regs + off) = v;
}

/* Two NET_BUF_BYTES buffers out of each fresh frame; returns the physical addresses. */
static void alloc_buffers(u8 **va, u64 *pa, u32 n)
{
    for (u32 i = 0; i < n; i += 2) {
        u64 f = frame_alloc();
        if (!f)
            panic("e1000: out of memory for buffers");
        for (u32 j = 0; j < 2; j++) {
            va[i + j] = (u8 *)P2V(f) + j * NET_BUF_BYTES;
            pa[i + j] = f + j * NET_BUF_BYTES;
        }
    }
}

static u64 alloc_ring(void)
{
    u64 pa = frame_alloc();
    if (!pa)
        panic("e1000: out of memory for a descriptor ring");
    return pa;
}

/* Buffers of the descriptors the device has written back; wakes senders if any. */
static void tx_reclaim(void)
{
    u32 freed = 0;
    while (tx_cons != tx_prod) {
        volatile struct tx_desc *d = &tx_ring[tx_cons % RING];
        if (!(d->status & TXD_STAT_DD))
            break;
        d->status = 0;
        tx_cons++;
        freed++;
    }
    if (freed)
        net_tx_done();
}

static void *e1000_tx_buffer(void)
{
    if (tx_prod - tx_cons >= RING - 1)
        tx_reclaim();
    if (tx_prod - tx_cons >= RING - 1)
        return NULL;
    return tx_buf[tx_prod % RING];
}

static void e1000_tx_send(u32 len)
{
    volatile struct tx_desc *d = &tx_ring[tx_prod % RING];
    d->length = (u16)len;
    d->cso = 0;
    d->css = 0;
    d->special = 0;
    d->status = 0;
    d->cmd = TXD_CMD_EOP | TXD_CMD_RS;
    tx_prod++;
    /* The frame and descriptor are in memory before the doorbell: x86 keeps stores in
     * order, the compiler is told not to move them. */
    barrier();
    wr(REG_TDT, tx_prod % RING);
    net_stats.kicks++;
}

static int e1000_set_itr(u32 itr)
{
    wr(REG_ITR, itr);
    return 1;
}

static void rx_poll(void)
{
    u32 n = 0;
    while (n < RING) {
        volatile struct rx_desc *d = &rx_ring[rx_next];
        u8 st = d->status;
        if (!(st & RXD_STAT_DD))
            break;
        barrier(); /* length and data are read after DD */
        u32 len = d->length;
        if ((st & RXD_STAT_EOP) && len > 0 && len <= NET_BUF_BYTES)
            net_rx(rx_buf[rx_next], len);
        else
            net_stats.rx_errors++;
        d->status = 0;
        d->length = 0;
        rx_next = (rx_next + 1) % RING;
        n++;
    }
    /* The consumed descriptors go back to the device in one write: RDT is the last one. */
    if (n) {
        barrier();
        wr(REG_RDT, (rx_next + RING - 1) % RING);
    }
}

void e1000_irq(struct trapframe *tf)
{
    int from_user = (tf->cs & 3) != 0;
    bkl_lock();
    u32 icr = rd(REG_ICR);
    net_stats.interrupts++;
    if (icr == 0)
        net_stats.empty++;
    if (icr & ICR_RXO)
        net_stats.rx_errors++;
    /* Both rings are looked at whatever the cause: their state is in memory, and a cause
     * raised after the read above brings another interrupt. */
    tx_reclaim();
    rx_poll();
    pv.eoi();
    if (!from_user) {
        /* Taken in the idle loop's halt: it schedules whatever became runnable. */
        bkl_unlock();
        return;
    }
    /* A receiver woken here runs now rather than at the next tick. */
    if (this_cpu()->rq_len > 0)
        this_cpu()->need_resched = 1;
    user_return(tf);
}

const struct net_driver *e1000_init(void)
{
    static const struct net_driver ops = {
        .name = "e1000",
        .tx_buffer = e1000_tx_buffer,
        .tx_send = e1000_tx_send,
        .set_itr = e1000_set_itr,
    };
    if (pv.paravirt || strcmp(pv.name, "native") != 0)
        panic("e1000: offered under %s pv_ops (its network path is netfront, net_kind 2)",
              pv.name);
    u64 pa = boot_info->net_mmio;
    u64 vec = boot_info->net_vector;
    if (!pa || (pa & (PAGE_SIZE - 1)))
        panic("e1000: bad BAR address %#lx", pa);
    if (vec < 32 || vec >= 256 || vec == VEC_TIMER || vec == VEC_RESCHED || vec == VEC_TLB ||
        vec == VEC_UPCALL || vec == VEC_SPURIOUS || (vec == VEC_NIC && boot_info->nic_mmio))
        panic("e1000: MSI vector %#lx is not free", vec);
    regs = kmap_io(pa, E1000_BAR_BYTES);
    if (!regs)
        panic("e1000: cannot map its registers at %#lx", pa);

    wr(REG_CTRL, CTRL_RST);
    u64 start = rdtsc();
    while (rd(REG_CTRL) & CTRL_RST)
        if (rdtsc() - start > tsc_hz / 10)
            panic("e1000: reset did not complete");

    u64 rx_pa = alloc_ring(), tx_pa = alloc_ring();
    rx_ring = P2V(rx_pa);
    tx_ring = P2V(tx_pa);
    static u64 rx_buf_pa[RING], tx_buf_pa[RING];
    alloc_buffers(rx_buf, rx_buf_pa, RING);
    alloc_buffers(tx_buf, tx_buf_pa, RING);
    for (u32 i = 0; i < RING; i++) {
        rx_ring[i].addr = rx_buf_pa[i]; /* the rest is zero: fresh frame */
        tx_ring[i].addr = tx_buf_pa[i];
    }
    barrier();
    wr(REG_RDBAL, (u32)rx_pa);
    wr(REG_RDBAH, (u32)(rx_pa >> 32));
    wr(REG_RDLEN, RING * sizeof(struct rx_desc));
    wr(REG_RDH, 0);
    wr(REG_RDT, RING - 1);
    wr(REG_TDBAL, (u32)tx_pa);
    wr(REG_TDBAH, (u32)(tx_pa >> 32));
    wr(REG_TDLEN, RING * sizeof(struct tx_desc));
    wr(REG_TDH, 0);
    wr(REG_TDT, 0);
    rx_next = 0;
    tx_prod = tx_cons = 0;
    e1000_vector = (u32)vec; /* before the first interrupt can be sent */
    wr(REG_IMS, ICR_TXDW | ICR_RXT0 | ICR_RXO);
    wr(REG_RCTL, RCTL_EN);
    wr(REG_TCTL, TCTL_EN);
    kprintf("hvsim-kernel: e1000 at %#lx, vector %#lx, %u-descriptor rings\n", pa, vec, RING);
    return &ops;
}
