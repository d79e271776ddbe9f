/*
 * The domain's one grant table (docs/io.md sections 3 and 7b), shared by the PV split
 * drivers under the hybrid and pv pv_ops.
 *
 * Two guest-supplied, physically contiguous frames (1,024 v1 entries) handed to the
 * hypervisor once with GNTTABOP_setup_table (RDI = 2, RSI = gPA of the first frame, RDX =
 * 2): one hypercall for the life of the kernel, made by whichever driver starts first.
 * Every other operation is a memory access to an entry:
 *
 *   grant:  domid and frame written, then flags (GTF_permit_access, | GTF_readonly), so
 *           the backend never sees a usable entry that is incomplete
 *           (Xen's gnttab_grant_foreign_access_ref);
 *   end:    flags cleared with a compare-and-exchange that refuses while the backend has
 *           the entry in use (GTF_reading / GTF_writing), as gnttab_end_foreign_access_ref;
 *   accept a transfer (netfront's page flipping): domid and the frame given up written,
 *           then flags = GTF_accept_transfer (gnttab_grant_foreign_transfer_ref, except
 *           that Xen's guest names the frame in its own list, not in the entry);
 *   end a transfer: once the hypervisor set GTF_transfer_completed, the frame received is
 *           read from the entry and the entry freed (gnttab_end_foreign_transfer_ref).
 *
 * Reference ranges: 0 never used (a zeroed request names it and is refused), 1..=511
 * netfront, 512..=1023 blkfront.
 */
#include "kernel.h"

#define HC_GRANT_TABLE_OP 20
#define GNTTABOP_setup_table 2
#define DOMID_BACKEND 0

#define GTF_permit_access 1
#define GTF_accept_transfer 2
#define GTF_type_mask 3
#define GTF_readonly 4
#define GTF_transfer_completed 8
#define GTF_reading 8
#define GTF_writing 16

struct grant_entry_v1 {
    u16 flags;
    u16 domid;
    u32 frame;
};
_Static_assert(sizeof(struct grant_entry_v1) == 8, "grant entry layout");
_Static_assert(GNTTAB_FRAMES * PAGE_SIZE / sizeof(struct grant_entry_v1) == GNTTAB_ENTRIES,
               "grant table size");

static volatile struct grant_entry_v1 *gnttab;

/* Two physically contiguous zeroed frames; the frames tried on the way are given back. */
static u64 alloc_pair(void)
{
    u64 tried[64];
    u32 n = 0;
    u64 first = 0;
    while (n < sizeof tried / sizeof tried[0]) {
        u64 pa = frame_alloc();
        if (!pa)
            break;
        for (u32 i = 0; i < n && !first; i++) {
            if (tried[i] == pa + PAGE_SIZE)
                first = pa;
            else if (tried[i] + PAGE_SIZE == pa)
                first = tried[i];
        }
        tried[n++] = pa;
        if (first)
            break;
    }
    if (!first)
        panic("gnttab: no two contiguous frames for the grant table");
    for (u32 i = 0; i < n; i++)
        if (tried[i] != first && tried[i] != first + PAGE_SIZE)
            frame_put(tried[i]);
    return first;
}

i64 gnttab_init(void)
{
    if (gnttab)
        return 0;
    u64 pa = alloc_pair();
    i64 r = pv_hypercall(HC_GRANT_TABLE_OP, GNTTABOP_setup_table, pa, GNTTAB_FRAMES);
    if (r < 0)
        panic("gnttab: GNTTABOP_setup_table of %u frames at %#lx: %ld", GNTTAB_FRAMES, pa, r);
    gnttab = P2V(pa);
    return 1;
}

void gnttab_grant(u32 ref, u64 pa, int readonly)
{
    if (!gnttab)
        panic("gnttab: grant of reference %u before set-up", ref);
    volatile struct grant_entry_v1 *e = &gnttab[ref];
    if (ref == 0 || ref >= GNTTAB_ENTRIES || e->flags)
        panic("gnttab: grant reference %u is not free", ref);
    e->domid = DOMID_BACKEND;
    e->frame = (u32)(pa >> 12);
    barrier();
    e->flags = GTF_permit_access | (readonly ? GTF_readonly : 0);
}

int gnttab_end(u32 ref)
{
    if (!gnttab || ref == 0 || ref >= GNTTAB_ENTRIES)
        panic("gnttab: end of bad grant reference %u", ref);
    u16 *flags = (u16 *)&gnttab[ref].flags;
    u16 old = __atomic_load_n(flags, __ATOMIC_SEQ_CST);
    do {
        if (old & (GTF_reading | GTF_writing))
            return -1;
    } while (!__atomic_compare_exchange_n(flags, &old, 0, 0, __ATOMIC_SEQ_CST,
                                          __ATOMIC_SEQ_CST));
    return 0;
}

void gnttab_grant_transfer(u32 ref, u64 pa)
{
    if (!gnttab)
        panic("gnttab: transfer entry %u before set-up", ref);
    volatile struct grant_entry_v1 *e = &gnttab[ref];
    if (ref == 0 || ref >= GNTTAB_ENTRIES ||
        (e->flags && (e->flags & GTF_type_mask) != GTF_accept_transfer))
        panic("gnttab: grant reference %u is not free for a transfer", ref);
    e->flags = 0;
    barrier();
    e->domid = DOMID_BACKEND;
    e->frame = (u32)(pa >> 12);
    barrier();
    e->flags = GTF_accept_transfer;
}

u64 gnttab_end_transfer(u32 ref)
{
    if (!gnttab || ref == 0 || ref >= GNTTAB_ENTRIES)
        panic("gnttab: end of bad transfer reference %u", ref);
    volatile struct grant_entry_v1 *e = &gnttab[ref];
    u16 flags = e->flags;
    if ((flags & GTF_type_mask) != GTF_accept_transfer || !(flags & GTF_transfer_completed))
        return 0;
    barrier(); /* the frame is written before the flags */
    u64 pa = (u64)e->frame << 12;
    e->flags = 0;
    return pa;
}
