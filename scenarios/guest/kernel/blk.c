/*
 * The block layer: the guest's interface to the machine's one disk (docs/io.md section
 * 7c) and the glue between it and the driver boot_info.blk_kind names (1 ahci.c, 2
 * blkfront.c; 0 no disk: nothing is set up and open gives -ENODEV).
 *
 * open("/dev/vda", O_RDONLY | O_WRONLY | O_RDWR) gives a descriptor; pread64/pwrite64 move
 * `count` bytes at byte `offset` (both multiples of 512, count at most 256 KiB, within
 * the disk). The data goes through a fixed pool of 64 kernel pages (one copy, as a page
 * cache would make), which is also the drivers' DMA and grant target: page i of the pool
 * holds bytes [4096 i, 4096 (i + 1)) of the I/O. One I/O at a time uses the pool (others
 * sleep until it is free); it is split into the driver's requests (AHCI up to 32 pages,
 * blkfront up to 11), all of them issued (then the driver's commit: blkfront's single
 * push and notify), and the caller sleeps until the last completes. A failed request
 * gives -EIO. Drivers, syscalls and handlers all run under the kernel lock.
 *
 * hvsim_blk(0) (syscall 502) prints the driver's counters on the console.
 */
#include "kernel.h"

#define O_ACCMODE 3
#define O_RDONLY 0
#define O_WRONLY 1
#define O_RDWR 2
#define SECTS_PER_PAGE (PAGE_SIZE / BLK_SECTOR)
#define MAX_REQS ((BLK_POOL_PAGES + 10) / 11) /* the most requests one I/O needs: 6 */

static const struct blk_driver *drv;
static u64 blk_kind;
static u64 capacity; /* sectors */
static u64 pool_pa[BLK_POOL_PAGES];
static u8 *pool_va[BLK_POOL_PAGES];
static struct blk_req reqs[MAX_REQS];
static int busy;          /* an I/O owns the pool */
static u32 pending;       /* its requests not yet completed */
static int failed;        /* one of them failed */
static struct waitq idle_wait, done_wait;
struct blk_stats blk_stats;

void blk_init(void)
{
    blk_kind = boot_info->blk_kind;
    if (blk_kind == BLK_KIND_NONE)
        return;
    capacity = boot_info->blk_sectors;
    if (blk_kind == BLK_KIND_AHCI)
        drv = ahci_init();
    else if (blk_kind == BLK_KIND_BLKFRONT)
        drv = blkfront_init();
    else
        panic("blk: unknown boot_info.blk_kind %lu", blk_kind);
    if (drv->max_pages == 0 || drv->max_pages > BLK_REQ_MAX_PAGES ||
        (BLK_POOL_PAGES + drv->max_pages - 1) / drv->max_pages > MAX_REQS)
        panic("blk: %s takes %u pages per request", drv->name, drv->max_pages);
    for (u32 i = 0; i < BLK_POOL_PAGES; i++) {
        u64 pa = frame_alloc();
        if (!pa)
            panic("blk: out of memory for the buffer pool");
        pool_pa[i] = pa;
        pool_va[i] = P2V(pa);
    }
    /* The counters describe the run, not the set-up. */
    blk_stats = (struct blk_stats){0};
    kprintf("hvsim-kernel: blk: %s, %lu sectors\n", drv->name, capacity);
}

void blk_complete(struct blk_req *req)
{
    if (pending == 0)
        panic("blk: a completion with no request in flight");
    if (req->status == 0) {
        if (req->write)
            blk_stats.sectors_written += req->nsect;
        else
            blk_stats.sectors_read += req->nsect;
    } else {
        blk_stats.errors++;
        failed = 1;
    }
    if (--pending == 0)
        wake_all(&done_wait);
}

i64 sys_open(u64 upath, u64 flags, u64 mode)
{
    (void)mode; /* nothing is created */
    char path[32];
    int n = copy_string_from_user(path, upath, sizeof path);
    if (n == -E2BIG)
        return -ENOENT;
    if (n < 0)
        return n;
    if (strcmp(path, "/dev/vda") != 0)
        return -ENOENT;
    if (!drv)
        return -ENODEV;
    u32 acc = (u32)(flags & O_ACCMODE);
    if (acc != O_RDONLY && acc != O_WRONLY && acc != O_RDWR)
        return -EINVAL;
    int fd = fd_open(FILE_BLK);
    if (fd >= 0)
        fd_file((u64)fd)->mode = (int)acc;
    return fd;
}

static i64 blk_io(u64 fd, u64 ubuf, u64 count, u64 offset, int write)
{
    struct file *f = fd_file(fd);
    if (!f || f->type != FILE_BLK || f->mode == (write ? O_RDONLY : O_WRONLY))
        return -EBADF;
    if (count % BLK_SECTOR || offset % BLK_SECTOR || count > BLK_MAX_IO)
        return -EINVAL;
    u64 sector = offset / BLK_SECTOR, nsect = count / BLK_SECTOR;
    if (sector > capacity || nsect > capacity - sector)
        return -EINVAL;
    if (!user_access_ok(current_task()->mm, ubuf, count, !write))
        return -EFAULT;
    if (count == 0)
        return 0;

    while (busy)
        sleep_on(&idle_wait);
    busy = 1;
    u32 npages = (u32)(PAGE_UP(count) / PAGE_SIZE);
    if (write) /* checked above; a fault here is a demand fault the kernel resolves */
        for (u32 i = 0; i < npages; i++) {
            u64 n = count - (u64)i * PAGE_SIZE;
            memcpy(pool_va[i], (const void *)(ubuf + (u64)i * PAGE_SIZE),
                   n < PAGE_SIZE ? n : PAGE_SIZE);
        }

    /* The requests: consecutive runs of at most max_pages pool pages. */
    u32 nreq = 0;
    for (u32 p = 0; p < npages; p += drv->max_pages, nreq++) {
        struct blk_req *r = &reqs[nreq];
        u32 np = npages - p < drv->max_pages ? npages - p : drv->max_pages;
        u64 first = (u64)p * SECTS_PER_PAGE;
        u64 last = first + (u64)np * SECTS_PER_PAGE;
        if (last > nsect)
            last = nsect;
        r->sector = sector + first;
        r->nsect = (u32)(last - first);
        r->npages = np;
        r->write = write;
        r->status = 0;
        for (u32 i = 0; i < np; i++)
            r->page_pa[i] = pool_pa[p + i];
    }
    pending = nreq;
    failed = 0;
    blk_stats.ios++;
    for (u32 i = 0; i < nreq; i++) {
        blk_stats.requests++;
        drv->submit(&reqs[i]);
    }
    if (drv->commit)
        drv->commit();
    while (pending)
        sleep_on(&done_wait);

    i64 ret = failed ? -EIO : (i64)count;
    if (ret > 0 && !write)
        for (u32 i = 0; i < npages; i++) {
            u64 n = count - (u64)i * PAGE_SIZE;
            if (copy_to_user(ubuf + (u64)i * PAGE_SIZE, pool_va[i],
                             n < PAGE_SIZE ? n : PAGE_SIZE) < 0) {
                ret = -EFAULT;
                break;
            }
        }
    busy = 0;
    wake_all(&idle_wait);
    return ret;
}

i64 sys_pread64(u64 fd, u64 ubuf, u64 count, u64 offset)
{
    return blk_io(fd, ubuf, count, offset, 0);
}

i64 sys_pwrite64(u64 fd, u64 ubuf, u64 count, u64 offset)
{
    return blk_io(fd, ubuf, count, offset, 1);
}

/*
 * hvsim_blk(what): what 0 prints the driver's counters on the console (one line,
 * `blk_stats kind=K sectors=S ios=.. requests=.. sectors_read=.. sectors_written=..
 * interrupts=.. kicks=.. dev_ops=.. errors=.. empty=.. grants=..`) and returns 0;
 * 1 the disk's kind (0 none, 1 AHCI, 2 blkfront), 2 its size in sectors, 3 I/Os,
 * 4 requests, 5 sectors read, 6 sectors written, 7 interrupts/events, 8 kicks (AHCI P0CI
 * writes, blkfront EVTCHNOP_send), 9 device operations after init (AHCI register
 * accesses, blkfront hypercalls), 10 failed requests, 11 empty interrupts/events,
 * 12 data-page grants (blkfront). Without a disk: what 1 gives 0, the others -ENODEV.
 */
i64 sys_hvsim_blk(u64 what)
{
    if (what == 1)
        return (i64)blk_kind;
    if (!drv)
        return -ENODEV;
    const struct blk_stats *s = &blk_stats;
    switch (what) {
    case 0:
        kprintf("blk_stats kind=%s sectors=%lu ios=%lu requests=%lu sectors_read=%lu "
                "sectors_written=%lu interrupts=%lu kicks=%lu dev_ops=%lu errors=%lu empty=%lu "
                "grants=%lu\n",
                drv->name, capacity, s->ios, s->requests, s->sectors_read, s->sectors_written,
                s->interrupts, s->kicks, s->dev_ops, s->errors, s->empty, s->grants);
        return 0;
    case 2:
        return (i64)capacity;
    case 3:
        return (i64)s->ios;
    case 4:
        return (i64)s->requests;
    case 5:
        return (i64)s->sectors_read;
    case 6:
        return (i64)s->sectors_written;
    case 7:
        return (i64)s->interrupts;
    case 8:
        return (i64)s->kicks;
    case 9:
        return (i64)s->dev_ops;
    case 10:
        return (i64)s->errors;
    case 11:
        return (i64)s->empty;
    case 12:
        return (i64)s->grants;
    }
    return -EINVAL;
}
