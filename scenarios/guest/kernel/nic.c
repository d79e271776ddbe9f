/*
 * Driver of the NIC-like receive device (one queue and one MSI-X entry per CPU).
 *
 * Native and HVM: each queue's MSI-X entry sends VEC_NIC to its CPU. The handler follows
 * the usual masked-poll flow: mask the entry (MMIO write of its vector control), read the
 * queue's cause (read clears), consume the received events (read of the counter), unmask
 * the entry, EOI. Hybrid: the hypervisor owns the vectors; each queue's PIRQ is bound to an
 * event channel of its CPU; the handler masks and unmasks the port in shared memory and
 * writes no EOI. The cause and counter reads are device registers in every mode.
 */
#include "kernel.h"

#define NIC_ID 0x7643494eU
#define NIC_BAR_BYTES 0x4000UL
#define REG_ID 0x000
#define REG_QUEUES 0x004
#define REG_MSIX_CTL 0x010
#define REG_CTRL 0x014
#define CTRL_AUTOCLEAR 1U
#define REG_QUEUE(q) (0x100UL + 16UL * (q))
#define Q_CAUSE 0x0
#define Q_RXCNT 0x4
#define MSIX_ENTRY(q) (0x1000UL + 16UL * (q))
#define MSIX_ADDR_LO 0x0
#define MSIX_ADDR_HI 0x4
#define MSIX_DATA 0x8
#define MSIX_VCTRL 0xC
#define MSIX_ENABLE (1U << 15)

static u8 *nic_base;
static u32 nic_queues;
static int nic_pv;
static int nic_autoclear; /* the device clears the cause itself: the handler skips its read */
static u32 nic_port[MAX_CPUS];

struct nic_counts {
    volatile u64 interrupts;
    volatile u64 events;
    volatile u64 empty; /* interrupts that found the cause clear */
} ALIGNED(64);
static struct nic_counts counts[MAX_CPUS];

static inline u32 rd(u64 off) { return *(volatile u32 *)(nic_base + off); }
static inline void wr(u64 off, u32 v) { *(volatile u32 *)(nic_base + off) = v; }

void nic_init(void)
{
    u64 pa = boot_info->nic_mmio;
    if (!pa)
        return;
    nic_base = kmap_io(pa, NIC_BAR_BYTES);
    if (!nic_base)
        panic("nic: cannot map its registers at %#lx", pa);
    if (rd(REG_ID) != NIC_ID)
        panic("nic: no device at %#lx (id %#x)", pa, rd(REG_ID));
    u32 n = rd(REG_QUEUES);
    if (n > ncpus_online)
        n = (u32)ncpus_online;
    nic_pv = strcmp(pv.name, "hybrid") == 0;
    for (u32 q = 0; q < n; q++) {
        if (nic_pv) {
            nic_port[q] = pv_nic_bind(q, q);
            continue;
        }
        u64 e = MSIX_ENTRY(q);
        wr(e + MSIX_ADDR_LO, 0xFEE00000U | (percpus[q].apic_id << 12));
        wr(e + MSIX_ADDR_HI, 0);
        wr(e + MSIX_DATA, VEC_NIC);
        wr(e + MSIX_VCTRL, 0);
    }
    nic_queues = n;
    if (!nic_pv)
        wr(REG_MSIX_CTL, MSIX_ENABLE);
    kprintf("hvsim-kernel: nic at %#lx, %u queues, %s interrupts\n", pa, n,
            nic_pv ? "event-channel" : "MSI-X");
}

static void nic_poll(u32 q)
{
    u32 cause = nic_autoclear ? 1 : rd(REG_QUEUE(q) + Q_CAUSE);
    u32 got = rd(REG_QUEUE(q) + Q_RXCNT);
    counts[q].interrupts++;
    counts[q].events += got;
    if (!(cause & 1))
        counts[q].empty++;
}

void nic_irq(void)
{
    u32 q = (u32)this_cpu()->id;
    if (q >= nic_queues) {
        pv.eoi();
        return;
    }
    u64 vctrl = MSIX_ENTRY(q) + MSIX_VCTRL;
    wr(vctrl, 1);
    nic_poll(q);
    wr(vctrl, 0);
    pv.eoi();
}

void nic_upcall(void)
{
    u32 q = (u32)this_cpu()->id;
    if (q >= nic_queues)
        return;
    pv_port_mask(nic_port[q]);
    nic_poll(q);
    pv_port_unmask(nic_port[q]);
}

/* what: 0 events consumed, 1 interrupts handled, 2 queues (0: no NIC), 3 empty interrupts,
 * 4 switch the device and driver to auto-clear (the 82599's EIAC with MSI-X). */
i64 sys_hvsim_nic(u64 what)
{
    u64 sum = 0;
    if (what == 2)
        return nic_queues;
    if (what == 4) {
        if (!nic_queues)
            return -ENOENT;
        wr(REG_CTRL, CTRL_AUTOCLEAR);
        nic_autoclear = 1;
        return 0;
    }
    for (u32 q = 0; q < nic_queues; q++)
        sum += what == 0 ? counts[q].events : what == 1 ? counts[q].interrupts : counts[q].empty;
    return (i64)sum;
}
