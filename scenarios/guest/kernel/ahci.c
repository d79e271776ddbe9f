/*
 * Driver of the AHCI-like disk controller (docs/io.md section 7a): native or emulated
 * (HVM, or a hybrid guest given the emulated path). One port, 32 command slots. Each
 * register access is a volatile 32-bit access, and when emulated each one is an exit
 * handled by the device model, so the driver touches only the registers it needs:
 *
 *   request:    the command header and table are built in memory, then one write of P0CI
 *               (the doorbell: 1 access); at most 32 pages (PRD entries) per command
 *   interrupt:  read IS, read P0IS, write P0IS (clearing the bits read), read P0CI, write
 *               IS (clearing the bit read): exactly 5 accesses, then the EOI (pv_ops';
 *               under hybrid pv_ops, whose events need none, the x2APIC EOI write the
 *               MSI's vector needs)
 *
 * Completion comes from P0CI: every slot the driver issued whose bit no longer reads 1 is
 * done. Whether it failed is read from memory, not from P0TFD: the controller writes the
 * header's PRDBC at completion, the full byte count for a command that succeeded and 0
 * for one that failed (TFES); a short count fails the request. A completion that lands
 * between the reads sets P0IS again after the write-1-to-clear and raises a new interrupt
 * (which may then find nothing to do: counted as empty).
 *
 * Memory: the command list (32 headers of 32 bytes, 1 KiB aligned) in one frame, the
 * received-FIS area (kept by the controller, never written) in another, and one command
 * table per slot (640 bytes, 128-byte aligned: the FIS at 0, the PRD table of up to 32
 * entries at 0x80), six to a frame. The data pages are the block layer's pool; one PRD
 * entry per page. The MSI vector is the platform's (boot_info.blk_vector, boot CPU); the
 * handler takes the kernel lock because it wakes tasks.
 */
#include "kernel.h"

#define AHCI_BAR_BYTES 0x1000UL
#define REG_CAP 0x00
#define CAP_NCS(c) (((c) >> 8) & 31)
#define REG_GHC 0x04
#define GHC_HR (1U << 0)
#define GHC_IE (1U << 1)
#define REG_IS 0x08
#define REG_P0CLB 0x100
#define REG_P0CLBU 0x104
#define REG_P0FB 0x108
#define REG_P0FBU 0x10C
#define REG_P0IS 0x110
#define REG_P0IE 0x114
#define REG_P0CMD 0x118
#define REG_P0CI 0x138
#define PXIS_DHRS (1U << 0)
#define PXIS_TFES (1U << 30)
#define PXCMD_ST (1U << 0)
#define PXCMD_FRE (1U << 4)

#define NSLOTS 32
#define PRDT_MAX 32
#define FIS_REG_H2D 0x27
#define ATA_READ_DMA_EXT 0x25
#define ATA_WRITE_DMA_EXT 0x35
#define CFL_DWORDS 5
#define HDR_WRITE (1U << 6)

struct cmd_header {
    u32 dw0; /* CFL 4:0, W 6, PRDTL 31:16 */
    u32 prdbc;
    u32 ctba;
    u32 ctbau;
    u32 reserved[4];
};

struct prd {
    u32 dba;
    u32 dbau;
    u32 reserved;
    u32 dbc; /* bytes - 1 in 21:0, I in 31 */
};

struct cmd_table {
    u8 cfis[64];
    u8 acmd[16];
    u8 reserved[48];
    struct prd prdt[PRDT_MAX];
};

_Static_assert(sizeof(struct cmd_header) == 32, "command header layout");
_Static_assert(sizeof(struct prd) == 16, "PRD layout");
_Static_assert(offsetof(struct cmd_table, prdt) == 0x80, "command table layout");
_Static_assert(sizeof(struct cmd_table) % 128 == 0, "command tables are 128-byte aligned");
_Static_assert(NSLOTS * sizeof(struct cmd_header) == 1024, "command list is 1 KiB");
_Static_assert(BLK_REQ_MAX_PAGES <= PRDT_MAX, "a request fits a PRD table");
#define TABLES_PER_FRAME (PAGE_SIZE / sizeof(struct cmd_table)) /* 6 */

u32 ahci_vector;
static int eoi_by_msr; /* hybrid: pv_ops has no EOI (its events need none); an MSI does */
static u8 *regs;
static volatile struct cmd_header *clist;
static volatile struct cmd_table *ctable[NSLOTS];
static u32 issued;                     /* slots holding a request not yet completed */
static struct blk_req *slot_req[NSLOTS];

static inline u32 rd(u32 off)
{
    blk_stats.dev_ops++;
    return *(volatile u32 *)(regs + off);
}

static inline void wr(u32 off, u32 v)
{
    blk_stats.dev_ops++;
    *(volatile u32 *)(regs + off) = v;
}

static u64 alloc_frame(const char *what)
{
    u64 pa = frame_alloc();
    if (!pa)
        panic("ahci: out of memory for %s", what);
    return pa;
}

static void ahci_submit(struct blk_req *req)
{
    if (req->npages == 0 || req->npages > PRDT_MAX || req->nsect == 0 ||
        req->nsect > req->npages * (PAGE_SIZE / BLK_SECTOR) ||
        req->nsect <= (req->npages - 1) * (PAGE_SIZE / BLK_SECTOR))
        panic("ahci: malformed request (%u sectors in %u pages)", req->nsect, req->npages);
    if (issued == 0xFFFFFFFFU)
        panic("ahci: every command slot is busy");
    u32 slot = (u32)__builtin_ctz(~issued);

    /* Command table: a register host-to-device FIS, then one PRD entry per page. */
    volatile struct cmd_table *t = ctable[slot];
    u64 lba = req->sector;
    u8 fis[20] = {
        FIS_REG_H2D,
        0x80, /* C: a command */
        req->write ? ATA_WRITE_DMA_EXT : ATA_READ_DMA_EXT,
        0,
        (u8)lba,
        (u8)(lba >> 8),
        (u8)(lba >> 16),
        0x40, /* device: LBA mode */
        (u8)(lba >> 24),
        (u8)(lba >> 32),
        (u8)(lba >> 40),
        0,
        (u8)req->nsect,
        (u8)(req->nsect >> 8),
    };
    for (u32 i = 0; i < sizeof fis; i++)
        t->cfis[i] = fis[i];
    u32 left = req->nsect * BLK_SECTOR;
    for (u32 i = 0; i < req->npages; i++) {
        u32 bytes = left < PAGE_SIZE ? left : (u32)PAGE_SIZE;
        u64 pa = req->page_pa[i];
        t->prdt[i].dba = (u32)pa;
        t->prdt[i].dbau = (u32)(pa >> 32);
        t->prdt[i].reserved = 0;
        t->prdt[i].dbc = bytes - 1;
        left -= bytes;
    }

    /* Header: the table was set at init, the rest is per command. */
    volatile struct cmd_header *h = &clist[slot];
    h->prdbc = 0;
    h->dw0 = CFL_DWORDS | (req->write ? HDR_WRITE : 0) | (req->npages << 16);

    slot_req[slot] = req;
    issued |= 1U << slot;
    /* Header and table are in memory before the doorbell: x86 keeps stores in order, the
     * compiler is told not to move them. */
    barrier();
    wr(REG_P0CI, 1U << slot);
    blk_stats.kicks++;
}

void ahci_irq(struct trapframe *tf)
{
    int from_user = (tf->cs & 3) != 0;
    bkl_lock();
    blk_stats.interrupts++;
    u32 is = rd(REG_IS);
    u32 pis = rd(REG_P0IS);
    wr(REG_P0IS, pis);
    u32 ci = rd(REG_P0CI);
    wr(REG_IS, is);
    u32 done = issued & ~ci;
    if (!done)
        blk_stats.empty++;
    issued &= ~done;
    barrier(); /* PRDBC is read after P0CI showed the slot done */
    while (done) {
        u32 slot = (u32)__builtin_ctz(done);
        done &= done - 1;
        struct blk_req *req = slot_req[slot];
        slot_req[slot] = NULL;
        req->status = clist[slot].prdbc == req->nsect * BLK_SECTOR ? 0 : -EIO;
        blk_complete(req);
    }
    if (eoi_by_msr)
        pv.write_msr(X2APIC_EOI, 0);
    else
        pv.eoi();
    if (!from_user) {
        /* Taken in the idle loop's halt: it schedules whatever became runnable. */
        bkl_unlock();
        return;
    }
    /* A task woken here runs now rather than at the next tick. */
    if (this_cpu()->rq_len > 0)
        this_cpu()->need_resched = 1;
    user_return(tf);
}

const struct blk_driver *ahci_init(void)
{
    static const struct blk_driver ops = {
        .name = "ahci",
        .max_pages = PRDT_MAX,
        .submit = ahci_submit,
        .commit = NULL,
    };
    if (pv.paravirt)
        panic("ahci: offered under %s pv_ops (its block path is blkfront, blk_kind 2)",
              pv.name);
    u64 pa = boot_info->blk_mmio;
    u64 vec = boot_info->blk_vector;
    if (!pa || (pa & (PAGE_SIZE - 1)))
        panic("ahci: bad BAR address %#lx", pa);
    if (vec < 32 || vec >= 256 || vec == VEC_TIMER || vec == VEC_RESCHED || vec == VEC_TLB ||
        vec == VEC_UPCALL || vec == VEC_SPURIOUS || (vec == VEC_NIC && boot_info->nic_mmio) ||
        (vec == e1000_vector && e1000_vector))
        panic("ahci: MSI vector %#lx is not free", vec);
    regs = kmap_io(pa, AHCI_BAR_BYTES);
    if (!regs)
        panic("ahci: cannot map its registers at %#lx", pa);

    wr(REG_GHC, GHC_HR);
    u64 start = rdtsc();
    while (rd(REG_GHC) & GHC_HR)
        if (rdtsc() - start > tsc_hz / 10)
            panic("ahci: reset did not complete");
    u32 cap = rd(REG_CAP);
    if (CAP_NCS(cap) != NSLOTS - 1)
        panic("ahci: %u command slots, not %u (CAP %#x)", CAP_NCS(cap) + 1, NSLOTS, cap);

    u64 cl_pa = alloc_frame("the command list"), fis_pa = alloc_frame("the received FIS");
    clist = P2V(cl_pa);
    u64 ct_pa = 0;
    for (u32 i = 0; i < NSLOTS; i++) {
        if (i % TABLES_PER_FRAME == 0)
            ct_pa = alloc_frame("command tables");
        u64 t = ct_pa + (i % TABLES_PER_FRAME) * sizeof(struct cmd_table);
        ctable[i] = P2V(t);
        clist[i].ctba = (u32)t; /* the rest is zero: fresh frame */
        clist[i].ctbau = (u32)(t >> 32);
    }
    issued = 0;
    barrier();
    wr(REG_P0CLB, (u32)cl_pa);
    wr(REG_P0CLBU, (u32)(cl_pa >> 32));
    wr(REG_P0FB, (u32)fis_pa);
    wr(REG_P0FBU, (u32)(fis_pa >> 32));
    wr(REG_P0IS, 0xFFFFFFFFU);
    wr(REG_IS, 0xFFFFFFFFU);
    eoi_by_msr = strcmp(pv.name, "hybrid") == 0;
    ahci_vector = (u32)vec; /* before the first interrupt can be sent */
    wr(REG_P0IE, PXIS_DHRS | PXIS_TFES);
    wr(REG_P0CMD, PXCMD_FRE | PXCMD_ST);
    wr(REG_GHC, GHC_IE);
    kprintf("hvsim-kernel: ahci at %#lx, vector %#lx, %u command slots\n", pa, vec, NSLOTS);
    return &ops;
}
