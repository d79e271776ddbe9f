/*
 * blkfront: the guest half of the PV split block driver (docs/io.md section 7b), under
 * the hybrid (VMCALL) and pv (syscall) backends alike, through pv_hypercall.
 *
 * Set-up: the domain's grant table (gnttab.c, shared with netfront; blkfront owns
 * references 512..1023), one shared ring page (32 slots of 112 bytes: blkif_request /
 * blkif_response) granted writable under reference 512, an unbound event-channel port for
 * domain 0 on vCPU 0 (EVTCHNOP_alloc_unbound) and hvsim_blkif_connect (hypercall 49, RDI =
 * ring gref, RSI = port). The capacity is boot_info.blk_sectors.
 *
 * Grants: as classic blkfront, each data page is granted for one request (a read's
 * writable, a write's read-only) under a reference taken from the free references
 * 513..1023, and the grant is ended (flags cleared) when the request's response arrives.
 * A request carries at most 11 segments (pages) of the block layer's pool; its request id
 * is an index into a table of the 32 requests in flight.
 *
 * Persistent grants (Linux's feature-persistent): when hvsim_blkif_connect answers with
 * bit 0 set, the backend keeps what it maps. Each pool page is then granted writable the
 * first time a request uses it, under a reference it keeps for the life of the kernel,
 * and no grant is ended: the backend maps each page once and copies the data between it
 * and its own buffers instead of mapping and unmapping per request.
 *
 * Hypercalls per operation (all others are memory accesses):
 *   I/O:    every request of the I/O is written to the ring, then one push, then one
 *           EVTCHNOP_send only when RING_PUSH_REQUESTS_AND_CHECK_NOTIFY says the backend
 *           asked (its req_event lies in the newly pushed range), else none;
 *   event:  consumes the responses (ends the grants, completes the requests) and ends
 *           with RING_FINAL_CHECK_FOR_RESPONSES (rsp_event = rsp_cons + 1, then a second
 *           look); no hypercall.
 */
#include "kernel.h"
#include "ring.h"

#define HC_EVENT_CHANNEL_OP 32
#define EVTCHNOP_send 4
#define EVTCHNOP_alloc_unbound 6
#define HC_BLKIF_CONNECT 49
#define DOMID_BACKEND 0

#define BLKIF_OP_READ 0
#define BLKIF_OP_WRITE 1
#define BLKIF_RSP_OKAY 0
#define BLKIF_MAX_SEGS 11

struct blkif_segment {
    u32 gref;
    u8 first_sect;
    u8 last_sect;
    u16 pad;
};
struct blkif_request {
    u8 operation;
    u8 nr_segments;
    u16 handle;
    u32 pad;
    u64 id;
    u64 sector_number;
    struct blkif_segment seg[BLKIF_MAX_SEGS];
};
struct blkif_response {
    u64 id;
    u8 operation;
    u8 pad;
    i16 status;
    u32 pad2;
};
_Static_assert(sizeof(struct blkif_segment) == 8, "segment layout");
_Static_assert(offsetof(struct blkif_request, id) == 8, "request layout");
_Static_assert(offsetof(struct blkif_request, sector_number) == 16, "request layout");
_Static_assert(offsetof(struct blkif_request, seg) == 24, "request layout");
_Static_assert(sizeof(struct blkif_request) == 112, "request layout");
_Static_assert(offsetof(struct blkif_response, status) == 10, "response layout");
_Static_assert(sizeof(struct blkif_response) == 16, "response layout");
#define SLOT 112 /* a slot holds a request or a response */
#define RING_ENTRIES 32

#define GREF_RING GNTTAB_BLKFRONT_FIRST
#define GREF_DATA_FIRST (GNTTAB_BLKFRONT_FIRST + 1)
#define NR_DATA_GREFS (GNTTAB_ENTRIES - GREF_DATA_FIRST) /* 511 */
#define SECTS_PER_PAGE (PAGE_SIZE / BLK_SECTOR)

/* A request in flight (Xen's shadow): what to complete and which grants to end. */
struct shadow {
    struct blk_req *req;
    u16 gref[BLKIF_MAX_SEGS];
    u8 nseg;
};

static struct front_ring ring;
static u32 port;
static struct shadow shadow[RING_ENTRIES];
static u16 shadow_free[RING_ENTRIES]; /* stack of free request ids */
static u32 shadow_nfree;
static u16 gref_free[NR_DATA_GREFS]; /* stack of free data references */
static u32 gref_nfree;
static u64 grants_stuck; /* grants the backend still held at their response (never reused) */
static int persistent;    /* the backend keeps its mappings (connect answered bit 0) */
/* Persistent grants: pool page -> its reference (0: not granted yet). */
#define MAX_PERSISTENT 64
static u64 persistent_pa[MAX_PERSISTENT];
static u16 persistent_ref[MAX_PERSISTENT];
static u32 npersistent;

/* The persistent reference of page `pa`, granting it (writable) on first use. */
static u16 persistent_grant(u64 pa)
{
    for (u32 i = 0; i < npersistent; i++)
        if (persistent_pa[i] == pa)
            return persistent_ref[i];
    if (npersistent == MAX_PERSISTENT || gref_nfree == 0)
        panic("blkfront: more than %u persistently granted pages", MAX_PERSISTENT);
    u16 ref = gref_free[--gref_nfree];
    gnttab_grant(ref, pa, 0);
    blk_stats.grants++;
    persistent_pa[npersistent] = pa;
    persistent_ref[npersistent++] = ref;
    return ref;
}

static i64 hc(u64 nr, u64 a1, u64 a2, u64 a3)
{
    blk_stats.dev_ops++;
    return pv_hypercall(nr, a1, a2, a3);
}

static void notify(void)
{
    blk_stats.kicks++;
    i64 r = hc(HC_EVENT_CHANNEL_OP, EVTCHNOP_send, port, 0);
    if (r < 0)
        panic("blkfront: EVTCHNOP_send on port %u: %ld", port, r);
}

/* Writes one request at the private producer index (published by blkfront_commit). */
static void blkfront_submit(struct blk_req *req)
{
    if (req->npages == 0 || req->npages > BLKIF_MAX_SEGS || req->nsect == 0 ||
        req->nsect > req->npages * SECTS_PER_PAGE ||
        req->nsect <= (req->npages - 1) * SECTS_PER_PAGE)
        panic("blkfront: malformed request (%u sectors in %u pages)", req->nsect, req->npages);
    if (ring_free_requests(&ring) == 0 || shadow_nfree == 0)
        panic("blkfront: ring full");
    if (!persistent && gref_nfree < req->npages)
        panic("blkfront: out of grant references");
    u16 id = shadow_free[--shadow_nfree];
    struct shadow *s = &shadow[id];
    volatile struct blkif_request *r = ring_slot(&ring, ring.req_prod_pvt);
    r->operation = req->write ? BLKIF_OP_WRITE : BLKIF_OP_READ;
    r->nr_segments = (u8)req->npages;
    r->handle = 0;
    r->pad = 0;
    r->id = id;
    r->sector_number = req->sector;
    u32 left = req->nsect;
    for (u32 i = 0; i < req->npages; i++) {
        u32 n = left < SECTS_PER_PAGE ? left : (u32)SECTS_PER_PAGE;
        u16 ref;
        if (persistent) {
            ref = persistent_grant(req->page_pa[i]);
        } else {
            ref = gref_free[--gref_nfree];
            /* A read's page is written by the backend, a write's only read. */
            gnttab_grant(ref, req->page_pa[i], req->write);
            blk_stats.grants++;
        }
        s->gref[i] = ref;
        r->seg[i].gref = ref;
        r->seg[i].first_sect = 0;
        r->seg[i].last_sect = (u8)(n - 1);
        r->seg[i].pad = 0;
        left -= n;
    }
    s->req = req;
    s->nseg = (u8)req->npages;
    ring.req_prod_pvt++;
}

static void blkfront_commit(void)
{
    if (ring_push_requests_check_notify(&ring))
        notify();
}

/* Ends the grants of a finished request; 0, or -1 when the backend still held one.
 * Persistent grants are kept. */
static int end_grants(struct shadow *s)
{
    int stuck = 0;
    if (persistent)
        return 0;
    for (u32 i = 0; i < s->nseg; i++) {
        if (gnttab_end(s->gref[i]) < 0) {
            grants_stuck++;
            stuck = 1;
            continue; /* never reused: the backend may still write to the page */
        }
        gref_free[gref_nfree++] = s->gref[i];
    }
    return stuck ? -1 : 0;
}

void blkfront_event(void)
{
    u32 n = 0;
    blk_stats.interrupts++;
    do {
        u32 prod = ring.sring->rsp_prod;
        ring_rmb();
        if (prod - ring.rsp_cons > ring.req_prod_pvt - ring.rsp_cons)
            panic("blkfront: rsp_prod %u beyond the requests (cons %u, prod %u)", prod,
                  ring.rsp_cons, ring.req_prod_pvt);
        for (; ring.rsp_cons != prod; ring.rsp_cons++) {
            volatile struct blkif_response *rsp = ring_slot(&ring, ring.rsp_cons);
            u64 id = rsp->id;
            i16 status = rsp->status;
            if (id >= RING_ENTRIES || !shadow[id].req)
                panic("blkfront: response %u for request %lu not in flight", ring.rsp_cons,
                      id);
            struct shadow *s = &shadow[id];
            struct blk_req *req = s->req;
            int stuck = end_grants(s);
            s->req = NULL;
            shadow_free[shadow_nfree++] = (u16)id;
            req->status = status == BLKIF_RSP_OKAY && stuck == 0 ? 0 : -EIO;
            blk_complete(req);
            n++;
        }
    } while (ring_final_check_for_responses(&ring));
    if (n == 0)
        blk_stats.empty++;
}

const struct blk_driver *blkfront_init(void)
{
    static const struct blk_driver ops = {
        .name = "blkfront",
        .max_pages = BLKIF_MAX_SEGS,
        .submit = blkfront_submit,
        .commit = blkfront_commit,
    };
    if (strcmp(pv.name, "hybrid") != 0 && strcmp(pv.name, "pv") != 0)
        panic("blkfront: needs a hypervisor's event channels and grants, not %s pv_ops",
              pv.name);

    gnttab_init(); /* the domain's grant table, unless netfront set it up */

    u64 ring_pa = frame_alloc();
    if (!ring_pa)
        panic("blkfront: out of memory for the ring");
    ring_init(&ring, P2V(ring_pa), SLOT);
    if (ring.size != RING_ENTRIES)
        panic("blkfront: a ring of %u entries, not %u", ring.size, RING_ENTRIES);
    gnttab_grant(GREF_RING, ring_pa, 0);

    for (u32 i = 0; i < RING_ENTRIES; i++)
        shadow_free[i] = (u16)(RING_ENTRIES - 1 - i); /* id 0 on top */
    shadow_nfree = RING_ENTRIES;
    for (u32 i = 0; i < NR_DATA_GREFS; i++)
        gref_free[i] = (u16)(GNTTAB_ENTRIES - 1 - i); /* 513 on top */
    gref_nfree = NR_DATA_GREFS;

    /* The event channel, then the connection (Xenstore's part, in one hypercall). */
    port = pv_port_bind(hc(HC_EVENT_CHANNEL_OP, EVTCHNOP_alloc_unbound, DOMID_BACKEND, 0), 0,
                        EV_BLK, "blkfront: alloc_unbound");
    i64 r = hc(HC_BLKIF_CONNECT, GREF_RING, port, 0);
    if (r < 0)
        panic("blkfront: hvsim_blkif_connect: %ld", r);
    persistent = (r & 1) != 0;
    kprintf("hvsim-kernel: blkfront: port %u, %u-entry ring%s\n", port, RING_ENTRIES,
            persistent ? ", persistent grants" : "");
    return &ops;
}
