/*
 * Xen's shared I/O rings (io/ring.h), front end only, as functions over a ring of any
 * entry size (docs/io.md section 3).
 *
 * A shared ring is one page: `u32 req_prod, req_event, rsp_prod, rsp_event; u8 pad[48];`
 * then the entries from offset 64, a power of two of them. Requests and responses share
 * the slots. All indices are free-running u32 and wrap; a slot is `index & (size - 1)`,
 * and every comparison is a difference of two indices, so the wrap at 2^32 is harmless.
 *
 * Ordering (x86: stores are not reordered with stores, loads not with loads): the
 * entries are written before the producer index is published (a compiler barrier, Xen's
 * wmb), the producer index is read before the entries it covers (a compiler barrier, Xen's
 * rmb); between publishing our own producer index (or event index) and reading the other
 * side's event index (or producer index) a store-load order is needed: a full barrier
 * (Xen's mb; a locked operation on x86).
 */
#ifndef HVSIM_RING_H
#define HVSIM_RING_H

#include "kernel.h"

#define ring_wmb() barrier()
#define ring_rmb() barrier()
#define ring_mb() __asm__ volatile("lock; addl $0, (%%rsp)" ::: "memory", "cc")

struct sring {
    volatile u32 req_prod, req_event;
    volatile u32 rsp_prod, rsp_event;
    u8 pad[48];
    u8 entries[]; /* from offset 64 */
};
_Static_assert(offsetof(struct sring, req_prod) == 0, "shared ring layout");
_Static_assert(offsetof(struct sring, req_event) == 4, "shared ring layout");
_Static_assert(offsetof(struct sring, rsp_prod) == 8, "shared ring layout");
_Static_assert(offsetof(struct sring, rsp_event) == 12, "shared ring layout");
_Static_assert(offsetof(struct sring, entries) == 64, "shared ring layout");

/* The front end's private view of a ring (Xen's struct *_front_ring). */
struct front_ring {
    struct sring *sring;
    u32 req_prod_pvt; /* requests produced, not necessarily published */
    u32 rsp_cons;     /* responses consumed */
    u32 size;         /* entries, a power of two */
    u32 slot_bytes;   /* bytes per entry */
};

/* The largest power of two of `slot_bytes` entries that fits a page after the header. */
static inline u32 ring_entries_per_page(u32 slot_bytes)
{
    u32 n = 1;
    while (64 + 2 * n * slot_bytes <= PAGE_SIZE)
        n *= 2;
    return n;
}

/* SHARED_RING_INIT + FRONT_RING_INIT: the page is fresh (zeroed) memory. */
static inline void ring_init(struct front_ring *r, void *page, u32 slot_bytes)
{
    struct sring *s = page;
    s->req_prod = 0;
    s->rsp_prod = 0;
    s->req_event = 1;
    s->rsp_event = 1;
    r->sring = s;
    r->req_prod_pvt = 0;
    r->rsp_cons = 0;
    r->slot_bytes = slot_bytes;
    r->size = ring_entries_per_page(slot_bytes);
}

/* The slot of ring index `idx` (RING_GET_REQUEST / RING_GET_RESPONSE). */
static inline void *ring_slot(struct front_ring *r, u32 idx)
{
    return r->sring->entries + (u64)(idx & (r->size - 1)) * r->slot_bytes;
}

/* RING_FREE_REQUESTS: slots neither holding an unanswered request nor an unconsumed
 * response. */
static inline u32 ring_free_requests(const struct front_ring *r)
{
    return r->size - (r->req_prod_pvt - r->rsp_cons);
}

/* RING_HAS_UNCONSUMED_RESPONSES: published responses not yet consumed. The caller reads
 * the entries only after this (ring_rmb orders the index read before them). */
static inline u32 ring_unconsumed_responses(const struct front_ring *r)
{
    u32 n = r->sring->rsp_prod - r->rsp_cons;
    ring_rmb();
    return n;
}

/* RING_PUSH_REQUESTS_AND_CHECK_NOTIFY: publishes the private producer index; returns 1 when
 * the back end asked to be told (its req_event lies in the newly published range). */
static inline int ring_push_requests_check_notify(struct front_ring *r)
{
    u32 old = r->sring->req_prod;
    u32 new = r->req_prod_pvt;
    ring_wmb(); /* the back end sees the requests before the index */
    r->sring->req_prod = new;
    ring_mb(); /* ... and the index before we read its event index */
    return (u32)(new - r->sring->req_event) < (u32)(new - old);
}

/* RING_FINAL_CHECK_FOR_RESPONSES: 1 when responses are waiting; otherwise asks to be
 * notified of the next one (rsp_event = rsp_cons + 1) and checks again, so a response
 * published in between is not missed. */
static inline int ring_final_check_for_responses(struct front_ring *r)
{
    if (r->sring->rsp_prod != r->rsp_cons)
        return 1;
    r->sring->rsp_event = r->rsp_cons + 1;
    ring_mb(); /* the event index is visible before we read the producer index again */
    return r->sring->rsp_prod != r->rsp_cons;
}

#endif
