/*
 * netfront: the guest half of the PV split network driver (docs/io.md section 3), under
 * the hybrid (VMCALL) and pv (syscall) backends alike, through pv_hypercall.
 *
 * Set-up: the domain's grant table (gnttab.c: two frames, 1,024 v1 entries, of which
 * netfront owns 1..=511), a tx and an rx shared ring (one page each, 256 entries), 256 rx
 * buffer pages and 253 tx buffer pages, each granted to domain 0 once for the life of the
 * kernel (never revoked, so no GTF_reading/GTF_writing dance). Grant references:
 *
 *   0          unused (a zeroed request names it and is refused by the backend)
 *   1, 2       tx ring, rx ring
 *   3..258     rx buffers 0..255 (writable)
 *   259..511   tx buffers 0..252 (read-only)
 *   512..1023  not netfront's (blkfront's)
 *
 * The tx buffers run out before the tx ring does (253 < 256), so "no free buffer" is the
 * only full condition. One event channel (an unbound port for domain 0 on vCPU 0) carries
 * both directions.
 *
 * Hypercalls per operation (all others are memory accesses):
 *   sendto: one EVTCHNOP_send when RING_PUSH_REQUESTS_AND_CHECK_NOTIFY says the backend
 *           asked (its req_event lies in the newly pushed range), else none;
 *   event:  consumes tx responses (frees buffers by id) and rx responses (hands the frames
 *           to the socket layer, re-posts their buffers in one batch), then one
 *           EVTCHNOP_send only if the rx push says so, else none.
 * Both consumers end with RING_FINAL_CHECK_FOR_RESPONSES (rsp_event = rsp_cons + 1, then
 * a second look), as Xen's netfront does.
 *
 * Page flipping (boot_info.net_rx_flip = 1, [machine.net] rx = "flip"; early Xen's
 * receive path): the rx buffers' entries are accept-transfer entries (GTF_accept_transfer,
 * frame = the page given up) instead of writable grants. For each batch of rx responses
 * (one pass up to rsp_prod) netfront reads the frame received from each completed entry
 * (GTF_transfer_completed), frees the entry, makes the frame the buffer, and remaps all
 * of them (a list of frame numbers) with one hvsim_netif_rx_remap hypercall (Xen: one
 * multicall of update_va_mapping and MMU_MACHPHYS_UPDATE); then it hands the frames to
 * the socket layer and re-posts each buffer with a fresh accept-transfer entry. So per
 * batch one hypercall more than the copy path.
 */
#include "kernel.h"
#include "ring.h"

#define HC_EVENT_CHANNEL_OP 32
#define EVTCHNOP_send 4
#define EVTCHNOP_alloc_unbound 6
#define HC_NETIF_CONNECT 48
#define HC_NETIF_RX_REMAP 50
#define DOMID_BACKEND 0

#define NR_GRANTS GNTTAB_NETFRONT_END /* netfront's references: 1..511 */
#define GREF_TX_RING 1
#define GREF_RX_RING 2
#define RX_BUFS 256
#define GREF_RX_BUF(id) (3 + (u32)(id))
#define GREF_TX_BUF(id) (3 + RX_BUFS + (u32)(id))
#define TX_BUFS (NR_GRANTS - 3 - RX_BUFS) /* 253 */

struct netif_tx_request {
    u32 gref;
    u16 offset;
    u16 flags;
    u16 id;
    u16 size;
};
struct netif_tx_response {
    u16 id;
    i16 status;
};
struct netif_rx_request {
    u16 id;
    u16 pad;
    u32 gref;
};
struct netif_rx_response {
    u16 id;
    u16 offset;
    u16 flags;
    i16 status;
};
_Static_assert(sizeof(struct netif_tx_request) == 12, "tx request layout");
_Static_assert(offsetof(struct netif_tx_request, offset) == 4, "tx request layout");
_Static_assert(offsetof(struct netif_tx_request, id) == 8, "tx request layout");
_Static_assert(offsetof(struct netif_tx_request, size) == 10, "tx request layout");
_Static_assert(sizeof(struct netif_rx_request) == 8, "rx request layout");
_Static_assert(offsetof(struct netif_rx_request, gref) == 4, "rx request layout");
_Static_assert(sizeof(struct netif_rx_response) == 8, "rx response layout");
_Static_assert(offsetof(struct netif_rx_response, status) == 6, "rx response layout");
#define TX_SLOT 12 /* a tx slot holds a request or a response */
#define RX_SLOT 8
#define RING_ENTRIES 256

static struct front_ring tx, rx;
static u32 port;
static u8 *rx_buf[RX_BUFS];
static u8 *tx_buf[TX_BUFS];
static u8 rx_posted[RX_BUFS]; /* the buffer is in an rx request the backend has not answered */
static u8 tx_busy[TX_BUFS];   /* the buffer is in a tx request the backend has not answered */
static u16 tx_free[TX_BUFS];  /* stack of free tx buffer ids */
static u32 tx_nfree;
static int flip;             /* receive by page flipping (boot_info.net_rx_flip) */
static u32 *remap_list;      /* flipping: the frames of one batch to remap */
static u64 remap_list_pa;

static i64 hc(u64 nr, u64 a1, u64 a2, u64 a3)
{
    net_stats.dev_ops++;
    return pv_hypercall(nr, a1, a2, a3);
}

static void notify(void)
{
    net_stats.kicks++;
    i64 r = hc(HC_EVENT_CHANNEL_OP, EVTCHNOP_send, port, 0);
    if (r < 0)
        panic("netfront: EVTCHNOP_send on port %u: %ld", port, r);
}

static u64 alloc_page(const char *what)
{
    u64 pa = frame_alloc();
    if (!pa)
        panic("netfront: out of memory for %s", what);
    return pa;
}

/* Grants frame `pa` to domain 0 under `ref`, one of netfront's references. */
static void grant(u32 ref, u64 pa, int readonly)
{
    if (ref == 0 || ref >= NR_GRANTS)
        panic("netfront: grant reference %u is not netfront's", ref);
    gnttab_grant(ref, pa, readonly);
}

/* Posts rx buffer `id` at the private producer index (published by the caller's push). */
static void rx_post(u16 id)
{
    if (ring_free_requests(&rx) == 0)
        panic("netfront: rx ring full posting buffer %u", id);
    if (rx_posted[id])
        panic("netfront: rx buffer %u posted twice", id);
    volatile struct netif_rx_request *req = ring_slot(&rx, rx.req_prod_pvt);
    req->id = id;
    req->pad = 0;
    req->gref = GREF_RX_BUF(id);
    rx.req_prod_pvt++;
    rx_posted[id] = 1;
}

/* Consumes tx responses: frees their buffers by id and wakes senders. */
static void tx_gc(void)
{
    u32 freed = 0;
    do {
        u32 prod = tx.sring->rsp_prod;
        ring_rmb();
        if (prod - tx.rsp_cons > tx.req_prod_pvt - tx.rsp_cons)
            panic("netfront: tx rsp_prod %u beyond the requests (cons %u, prod %u)", prod,
                  tx.rsp_cons, tx.req_prod_pvt);
        for (; tx.rsp_cons != prod; tx.rsp_cons++) {
            volatile struct netif_tx_response *rsp = ring_slot(&tx, tx.rsp_cons);
            u16 id = rsp->id;
            i16 status = rsp->status;
            if (id >= TX_BUFS || !tx_busy[id])
                panic("netfront: tx response %u for buffer %u not in flight", tx.rsp_cons, id);
            tx_busy[id] = 0;
            tx_free[tx_nfree++] = id;
            if (status < 0)
                net_stats.tx_errors++;
            freed++;
        }
    } while (ring_final_check_for_responses(&tx));
    if (freed)
        net_tx_done();
}

/* Consumes rx responses: hands each frame to the socket layer and re-posts its buffer;
 * the re-posted requests are pushed in one batch. Returns the responses consumed. */
static u32 rx_poll(void)
{
    u32 n = 0;
    do {
        u32 prod = rx.sring->rsp_prod;
        ring_rmb();
        if (prod - rx.rsp_cons > rx.req_prod_pvt - rx.rsp_cons)
            panic("netfront: rx rsp_prod %u beyond the requests (cons %u, prod %u)", prod,
                  rx.rsp_cons, rx.req_prod_pvt);
        while (rx.rsp_cons != prod) {
            volatile struct netif_rx_response *rsp = ring_slot(&rx, rx.rsp_cons);
            u16 id = rsp->id;
            u32 off = rsp->offset;
            i16 status = rsp->status;
            if (id >= RX_BUFS || !rx_posted[id])
                panic("netfront: rx response %u for buffer %u not posted", rx.rsp_cons, id);
            /* The slot is free once read: the re-post below may reuse it. */
            rx.rsp_cons++;
            rx_posted[id] = 0;
            if (status > 0 && off + (u32)status <= PAGE_SIZE && status <= NET_BUF_BYTES)
                net_rx(rx_buf[id] + off, (u32)status);
            else
                net_stats.rx_errors++;
            rx_post(id);
            n++;
        }
    } while (ring_final_check_for_responses(&rx));
    if (n && ring_push_requests_check_notify(&rx))
        notify();
    return n;
}

/* rx_poll with page flipping: per batch, every completed transfer becomes its buffer's
 * page, one remap hypercall covers the batch, then the frames go up and the buffers are
 * re-posted as accept-transfer entries. Returns the responses consumed. */
static u32 rx_poll_flip(void)
{
    static u16 batch_id[RX_BUFS];
    static i16 batch_status[RX_BUFS];
    static u16 batch_off[RX_BUFS];
    u32 n = 0;
    do {
        u32 prod = rx.sring->rsp_prod;
        ring_rmb();
        if (prod - rx.rsp_cons > rx.req_prod_pvt - rx.rsp_cons)
            panic("netfront: rx rsp_prod %u beyond the requests (cons %u, prod %u)", prod,
                  rx.rsp_cons, rx.req_prod_pvt);
        u32 nb = 0, nremap = 0;
        while (rx.rsp_cons != prod) {
            volatile struct netif_rx_response *rsp = ring_slot(&rx, rx.rsp_cons);
            u16 id = rsp->id;
            u32 off = rsp->offset;
            i16 status = rsp->status;
            if (id >= RX_BUFS || !rx_posted[id])
                panic("netfront: rx response %u for buffer %u not posted", rx.rsp_cons, id);
            rx.rsp_cons++;
            rx_posted[id] = 0;
            if (status > 0) {
                u64 pa = gnttab_end_transfer(GREF_RX_BUF(id));
                if (!pa)
                    panic("netfront: rx response for buffer %u without a transferred page", id);
                rx_buf[id] = P2V(pa);
                remap_list[nremap++] = (u32)(pa >> 12);
            }
            batch_id[nb] = id;
            batch_status[nb] = status;
            batch_off[nb] = (u16)off;
            nb++;
        }
        if (nremap) {
            i64 r = hc(HC_NETIF_RX_REMAP, remap_list_pa, nremap, 0);
            if (r != (i64)nremap)
                panic("netfront: hvsim_netif_rx_remap of %u pages: %ld", nremap, r);
        }
        for (u32 k = 0; k < nb; k++) {
            u16 id = batch_id[k];
            i16 status = batch_status[k];
            u32 off = batch_off[k];
            if (status > 0 && off + (u32)status <= PAGE_SIZE && status <= NET_BUF_BYTES)
                net_rx(rx_buf[id] + off, (u32)status);
            else
                net_stats.rx_errors++;
            gnttab_grant_transfer(GREF_RX_BUF(id), (u64)rx_buf[id] - DIRECT_MAP);
            rx_post(id);
            n++;
        }
    } while (ring_final_check_for_responses(&rx));
    if (n && ring_push_requests_check_notify(&rx))
        notify();
    return n;
}

void netfront_event(void)
{
    u32 tx_before = tx_nfree;
    net_stats.interrupts++;
    tx_gc();
    if ((flip ? rx_poll_flip() : rx_poll()) == 0 && tx_nfree == tx_before)
        net_stats.empty++;
}

static void *netfront_tx_buffer(void)
{
    if (tx_nfree == 0)
        tx_gc();
    if (tx_nfree == 0)
        return NULL;
    return tx_buf[tx_free[tx_nfree - 1]];
}

static void netfront_tx_send(u32 len)
{
    if (tx_nfree == 0 || ring_free_requests(&tx) == 0)
        panic("netfront: transmit without a free buffer or slot");
    u16 id = tx_free[--tx_nfree];
    tx_busy[id] = 1;
    volatile struct netif_tx_request *req = ring_slot(&tx, tx.req_prod_pvt);
    req->gref = GREF_TX_BUF(id);
    req->offset = 0;
    req->flags = 0;
    req->id = id;
    req->size = (u16)len;
    tx.req_prod_pvt++;
    if (ring_push_requests_check_notify(&tx))
        notify();
}

static int netfront_set_itr(u32 itr)
{
    (void)itr;
    return 0; /* no interrupt throttling on an event channel */
}

const struct net_driver *netfront_init(void)
{
    static const struct net_driver ops = {
        .name = "netfront",
        .tx_buffer = netfront_tx_buffer,
        .tx_send = netfront_tx_send,
        .set_itr = netfront_set_itr,
    };
    if (strcmp(pv.name, "hybrid") != 0 && strcmp(pv.name, "pv") != 0)
        panic("netfront: needs a hypervisor's event channels and grants, not %s pv_ops",
              pv.name);

    /* The domain's grant table (set up here unless another driver did). */
    gnttab_init();

    /* Shared rings. */
    u64 tx_pa = alloc_page("the tx ring"), rx_pa = alloc_page("the rx ring");
    ring_init(&tx, P2V(tx_pa), TX_SLOT);
    ring_init(&rx, P2V(rx_pa), RX_SLOT);
    if (tx.size != RING_ENTRIES || rx.size != RING_ENTRIES)
        panic("netfront: rings of %u/%u entries, not %u", tx.size, rx.size, RING_ENTRIES);
    grant(GREF_TX_RING, tx_pa, 0);
    grant(GREF_RX_RING, rx_pa, 0);

    /* Buffers, one page each, granted once (flipping: offered for transfer). */
    flip = boot_info->net_rx_flip != 0;
    if (flip) {
        remap_list_pa = alloc_page("the remap list");
        remap_list = P2V(remap_list_pa);
    }
    for (u32 i = 0; i < RX_BUFS; i++) {
        u64 pa = alloc_page("rx buffers");
        rx_buf[i] = P2V(pa);
        if (flip)
            gnttab_grant_transfer(GREF_RX_BUF(i), pa);
        else
            grant(GREF_RX_BUF(i), pa, 0);
    }
    for (u32 i = 0; i < TX_BUFS; i++) {
        u64 pa = alloc_page("tx buffers");
        tx_buf[i] = P2V(pa);
        grant(GREF_TX_BUF(i), pa, 1);
        tx_free[i] = (u16)(TX_BUFS - 1 - i); /* id 0 on top */
    }
    tx_nfree = TX_BUFS;

    /* The event channel, then the connection (Xenstore's part, in one hypercall). */
    port = pv_port_bind(hc(HC_EVENT_CHANNEL_OP, EVTCHNOP_alloc_unbound, DOMID_BACKEND, 0), 0,
                        EV_NET, "netfront: alloc_unbound");
    i64 r = hc(HC_NETIF_CONNECT, GREF_TX_RING, GREF_RX_RING, port);
    if (r < 0)
        panic("netfront: hvsim_netif_connect: %ld", r);

    /* Every rx buffer posted. */
    for (u32 i = 0; i < RX_BUFS; i++)
        rx_post((u16)i);
    if (ring_push_requests_check_notify(&rx))
        notify();
    kprintf("hvsim-kernel: netfront: port %u, %u rx and %u tx buffers\n", port, RX_BUFS,
            (u32)TX_BUFS);
    if (flip)
        kprintf("hvsim-kernel: netfront: receive by page flipping\n");
    return &ops;
}
