/*
 * Memory management: physical frames (free list + reference counts), kernel page tables,
 * per-process address spaces (4-level, kernel half shared), VMAs, demand-zero and
 * copy-on-write faults, mmap/munmap/brk, and TLB shootdown.
 */
#include "kernel.h"

#define mb() __asm__ volatile("lock; addl $0, (%%rsp)" ::: "memory", "cc")

/* ---------------- physical frames ---------------- */

static u64 frames_base; /* physical address of the first managed frame */
static u64 frames_bump; /* next never-used frame */
static u64 frames_end;
static u64 free_head; /* physical address of the first free frame (0: none) */
static u64 nfree;
static u16 *frame_refs; /* one count per managed frame */

void frames_init(u64 first_free, u64 mem_bytes, u64 image_end_phys)
{
    u64 start = PAGE_UP(first_free > image_end_phys ? first_free : image_end_phys);
    u64 end = PAGE_DOWN(mem_bytes);
    if (start + 64 * PAGE_SIZE > end)
        panic("not enough memory: first free %#lx, end %#lx", start, end);
    u64 nframes = (end - start) / PAGE_SIZE;
    u64 refs_bytes = PAGE_UP(nframes * sizeof(u16));
    frame_refs = P2V(start);
    memset(frame_refs, 0, refs_bytes);
    frames_base = start;
    frames_end = end;
    frames_bump = start + refs_bytes;
    for (u64 pa = start; pa < frames_bump; pa += PAGE_SIZE)
        frame_refs[(pa - start) / PAGE_SIZE] = 1; /* the array itself, never freed */
    free_head = 0;
    nfree = 0;
}

static u16 *frame_ref(u64 pa)
{
    if (pa < frames_base || pa >= frames_end)
        panic("frame %#lx outside the managed range", pa);
    return &frame_refs[(pa - frames_base) / PAGE_SIZE];
}

u64 frame_alloc(void)
{
    u64 pa;
    if (free_head) {
        pa = free_head;
        free_head = *(u64 *)P2V(pa);
        nfree--;
    } else if (frames_bump < frames_end) {
        pa = frames_bump;
        frames_bump += PAGE_SIZE;
    } else {
        return 0;
    }
    zero_page(P2V(pa));
    *frame_ref(pa) = 1;
    return pa;
}

void frame_get(u64 pa)
{
    u16 *r = frame_ref(pa);
    if (*r == 0 || *r == 0xFFFF)
        panic("frame_get: bad count %u for %#lx", *r, pa);
    (*r)++;
}

void frame_put(u64 pa)
{
    u16 *r = frame_ref(pa);
    if (*r == 0)
        panic("frame_put: frame %#lx is already free", pa);
    if (--(*r) == 0) {
        *(u64 *)P2V(pa) = free_head;
        free_head = pa;
        nfree++;
    }
}

u64 frames_free_count(void) { return nfree + (frames_end - frames_bump) / PAGE_SIZE; }

/* ---------------- page tables ---------------- */

u64 kernel_pml4_pa;

static inline unsigned pt_index(u64 va, int level) { return (va >> (12 + 9 * (level - 1))) & 511; }

/*
 * Returns the entry for va at `level` (1: PTE, 2: PDE), creating intermediate tables
 * with `flags` when `create`. NULL if a table is missing (and !create), allocation fails,
 * or a large page is in the way. A new top-level entry is also set in `user_root` (PV:
 * the user-only twin of the root), when there is one.
 */
static u64 *pt_entry(u64 root, u64 user_root, u64 va, int level, int create, u64 flags)
{
    u64 table = root;
    for (int l = 4; l > level; l--) {
        u64 *e = (u64 *)P2V(table) + pt_index(va, l);
        if (!(*e & PTE_P)) {
            if (!create)
                return NULL;
            u64 n = frame_alloc();
            if (!n)
                return NULL;
            pv.alloc_pt(n, l - 1);
            pv.set_pte(e, n | flags);
            if (l == 4 && user_root)
                pv.set_pte((u64 *)P2V(user_root) + pt_index(va, 4), n | flags);
            pv.mmu_flush(); /* the walk below reads the new entry */
        } else if (*e & PTE_PS) {
            return NULL;
        }
        table = *e & PTE_ADDR;
    }
    return (u64 *)P2V(table) + pt_index(va, level);
}

static u64 *user_pte(struct mm *mm, u64 va, int create)
{
    return pt_entry(mm->pml4_pa, mm->user_pml4_pa, va, 1, create, PTE_P | PTE_W | PTE_U);
}

/* Kernel page tables: direct map of all memory and the kernel map of [0, 1 GiB), 2 MiB pages. */
void paging_init(u64 mem_bytes)
{
    if (pv.paravirt) {
        /* PV: the domain builder's tables (direct map in 4 KiB pages, page-table frames
         * read-only, kernel image map) are already validated and pinned: keep them. The
         * CR3 read is emulated by the hypervisor. */
        __asm__ volatile("movq %%cr3, %0" : "=r"(kernel_pml4_pa));
        return;
    }
    kernel_pml4_pa = frame_alloc();
    if (!kernel_pml4_pa)
        panic("no memory for the kernel page tables");
    u64 top = (mem_bytes + LARGE_PAGE - 1) & ~(LARGE_PAGE - 1);
    for (u64 pa = 0; pa < top; pa += LARGE_PAGE) {
        u64 *e = pt_entry(kernel_pml4_pa, 0, DIRECT_MAP + pa, 2, 1, PTE_P | PTE_W);
        if (!e)
            panic("no memory for the direct map");
        pv.set_pte(e, pa | PTE_P | PTE_W | PTE_PS | PTE_G | PTE_NX);
    }
    for (u64 pa = 0; pa < (1UL << 30); pa += LARGE_PAGE) {
        u64 *e = pt_entry(kernel_pml4_pa, 0, KERNEL_VMA + pa, 2, 1, PTE_P | PTE_W);
        if (!e)
            panic("no memory for the kernel map");
        pv.set_pte(e, pa | PTE_P | PTE_W | PTE_PS | PTE_G);
    }
    pv.load_cr3(kernel_pml4_pa);
}

/* ---------------- address spaces ---------------- */

static struct mm mm_pool[MAX_MMS];

struct mm *mm_create(void)
{
    struct mm *mm = NULL;
    for (int i = 0; i < MAX_MMS; i++) {
        if (!mm_pool[i].used) {
            mm = &mm_pool[i];
            break;
        }
    }
    if (!mm)
        return NULL;
    u64 pml4 = frame_alloc();
    if (!pml4)
        return NULL;
    u64 user_pml4 = 0;
    if (pv.paravirt) {
        user_pml4 = frame_alloc();
        if (!user_pml4) {
            frame_put(pml4);
            return NULL;
        }
        pv.alloc_pt(pml4, 4);
        pv.alloc_pt(user_pml4, 4);
    }
    memset(mm, 0, sizeof *mm);
    mm->used = 1;
    mm->pml4_pa = pml4;
    mm->user_pml4_pa = user_pml4;
    u64 *src = P2V(kernel_pml4_pa), *dst = P2V(pml4);
    for (int i = 256; i < 512; i++)
        if (src[i])
            pv.set_pte(&dst[i], src[i]);
    return mm;
}

static void free_table(u64 table, int level)
{
    u64 *t = P2V(table);
    int n = level == 4 ? 256 : 512; /* the PML4's upper half is the shared kernel */
    for (int i = 0; i < n; i++) {
        if (!(t[i] & PTE_P))
            continue;
        if (level > 1)
            free_table(t[i] & PTE_ADDR, level - 1);
        else
            frame_put(t[i] & PTE_ADDR);
    }
    if (level < 4)
        pv.release_pt(table, level);
    frame_put(table);
}

void mm_destroy(struct mm *mm)
{
    struct percpu *c = this_cpu();
    /* Other CPUs that still hold it lazily in CR3 drop it; then this CPU. */
    tlb_shootdown(mm, 0, 1, 1);
    if (c->cur_mm == mm)
        switch_mm(c, NULL);
    /* PV: unpinning both roots drops the types of the tables below them. */
    if (mm->user_pml4_pa) {
        pv.release_pt(mm->user_pml4_pa, 4);
        frame_put(mm->user_pml4_pa);
    }
    pv.release_pt(mm->pml4_pa, 4);
    free_table(mm->pml4_pa, 4);
    mm->used = 0;
}

/* Copy-on-write duplicate of the user half. */
struct mm *mm_fork(struct mm *parent)
{
    struct mm *child = mm_create();
    if (!child)
        return NULL;
    child->nvma = parent->nvma;
    memcpy(child->vma, parent->vma, sizeof parent->vma);
    child->brk_start = parent->brk_start;
    child->brk = parent->brk;
    int failed = 0;
    pv.lazy_mmu(1); /* the copies and the parent's write-protections go in batches */
    u64 *l4 = P2V(parent->pml4_pa);
    for (int i4 = 0; i4 < 256 && !failed; i4++) {
        if (!(l4[i4] & PTE_P))
            continue;
        u64 *l3 = P2V(l4[i4] & PTE_ADDR);
        for (int i3 = 0; i3 < 512 && !failed; i3++) {
            if (!(l3[i3] & PTE_P))
                continue;
            u64 *l2 = P2V(l3[i3] & PTE_ADDR);
            for (int i2 = 0; i2 < 512 && !failed; i2++) {
                if (!(l2[i2] & PTE_P))
                    continue;
                u64 *l1 = P2V(l2[i2] & PTE_ADDR);
                for (int i1 = 0; i1 < 512; i1++) {
                    u64 pte = l1[i1];
                    if (!(pte & PTE_P))
                        continue;
                    u64 va = ((u64)i4 << 39) | ((u64)i3 << 30) | ((u64)i2 << 21) | ((u64)i1 << 12);
                    u64 *cpte = user_pte(child, va, 1);
                    if (!cpte) {
                        failed = 1;
                        break;
                    }
                    if (pte & PTE_W) {
                        pte = (pte & ~PTE_W) | PTE_COW;
                        pv.set_pte(&l1[i1], pte);
                    }
                    frame_get(pte & PTE_ADDR);
                    pv.set_pte(cpte, pte);
                }
            }
        }
    }
    pv.lazy_mmu(0);
    /* The parent's writable pages became read-only: flush its translations everywhere. */
    struct percpu *c = this_cpu();
    if (c->cur_mm == parent)
        pv.flush_tlb_local();
    tlb_shootdown(parent, 0, 1, 0);
    if (failed) {
        mm_destroy(child);
        return NULL;
    }
    return child;
}

/* ---------------- VMAs ---------------- */

struct vma *vma_find(struct mm *mm, u64 va)
{
    for (int i = 0; i < mm->nvma; i++)
        if (va >= mm->vma[i].start && va < mm->vma[i].end)
            return &mm->vma[i];
    return NULL;
}

static int vma_overlaps(struct mm *mm, u64 start, u64 end)
{
    for (int i = 0; i < mm->nvma; i++)
        if (start < mm->vma[i].end && mm->vma[i].start < end)
            return 1;
    return 0;
}

static void vma_delete(struct mm *mm, int i)
{
    memmove(&mm->vma[i], &mm->vma[i + 1], (size_t)(mm->nvma - i - 1) * sizeof(struct vma));
    mm->nvma--;
}

int vma_add(struct mm *mm, u64 start, u64 end, u32 prot, u32 kind)
{
    if (start >= end || (start & ~PAGE_MASK) || (end & ~PAGE_MASK) || end > USER_TOP)
        return -EINVAL;
    if (vma_overlaps(mm, start, end))
        return -EINVAL;
    int i = 0;
    while (i < mm->nvma && mm->vma[i].start < start)
        i++;
    /* Merge with an adjacent anonymous neighbour of the same protection. */
    if (kind == VMA_ANON) {
        if (i > 0 && mm->vma[i - 1].kind == kind && mm->vma[i - 1].prot == prot &&
            mm->vma[i - 1].end == start) {
            mm->vma[i - 1].end = end;
            if (i < mm->nvma && mm->vma[i].kind == kind && mm->vma[i].prot == prot &&
                mm->vma[i].start == end) {
                mm->vma[i - 1].end = mm->vma[i].end;
                vma_delete(mm, i);
            }
            return 0;
        }
        if (i < mm->nvma && mm->vma[i].kind == kind && mm->vma[i].prot == prot &&
            mm->vma[i].start == end) {
            mm->vma[i].start = start;
            return 0;
        }
    }
    if (mm->nvma >= MAX_VMAS)
        return -ENOMEM;
    memmove(&mm->vma[i + 1], &mm->vma[i], (size_t)(mm->nvma - i) * sizeof(struct vma));
    mm->vma[i] = (struct vma){start, end, prot, kind};
    mm->nvma++;
    return 0;
}

/* Removes [start, end) from the VMA list, splitting where needed. */
static int vma_remove_range(struct mm *mm, u64 start, u64 end)
{
    for (int i = 0; i < mm->nvma; i++) {
        struct vma *v = &mm->vma[i];
        if (v->end <= start || v->start >= end)
            continue;
        if (v->start < start && v->end > end) {
            if (mm->nvma >= MAX_VMAS)
                return -ENOMEM;
            memmove(&mm->vma[i + 1], &mm->vma[i], (size_t)(mm->nvma - i) * sizeof(struct vma));
            mm->nvma++;
            mm->vma[i].end = start;
            mm->vma[i + 1].start = end;
            return 0;
        }
        if (v->start < start) {
            v->end = start;
        } else if (v->end > end) {
            v->start = end;
        } else {
            vma_delete(mm, i);
            i--;
        }
    }
    return 0;
}

static u64 vma_pte_flags(u32 prot)
{
    u64 f = PTE_P | PTE_U;
    if (prot & PROT_WRITE)
        f |= PTE_W;
    if (!(prot & PROT_EXEC))
        f |= PTE_NX;
    return f;
}

/* ---------------- TLB maintenance ---------------- */

static struct {
    struct mm *mm;
    u64 va;
    int all;
    int drop;
} tlb_req;

/* Runs on a target CPU: from the TLB IPI, or while spinning for the kernel lock. */
void tlb_service(void)
{
    struct percpu *c = this_cpu();
    if (!c->tlb_pending)
        return;
    if (c->cur_mm == tlb_req.mm) {
        if (tlb_req.drop) {
            if (c->current->is_idle || c->current->mm != tlb_req.mm) {
                pv.load_cr3(kernel_pml4_pa);
                c->cur_mm = NULL;
            }
        } else if (tlb_req.all) {
            pv.flush_tlb_local();
        } else {
            pv.invlpg(tlb_req.va);
        }
    }
    mb();
    c->tlb_pending = 0;
}

/*
 * Makes every other CPU whose CR3 holds `mm` flush `va` (or everything), or, with `drop`,
 * stop using `mm` altogether. Waits for all of them. Called with the kernel lock held.
 */
void tlb_shootdown(struct mm *mm, u64 va, int all, int drop)
{
    struct percpu *c = this_cpu();
    u64 self = 1UL << c->id;
    u64 targets = mm->active_mask & ~self;
    if (!targets)
        return;
    /* PV: the hypervisor flushes the other vCPUs' TLBs itself, no IPI. */
    if (!drop && pv.flush_tlb_others && pv.flush_tlb_others(targets, va, all))
        return;
    tlb_req.mm = mm;
    tlb_req.va = va;
    tlb_req.all = all;
    tlb_req.drop = drop;
    for (int i = 0; i < MAX_CPUS; i++)
        if (targets & (1UL << i))
            percpus[i].tlb_pending = 1;
    mb();
    for (int i = 0; i < MAX_CPUS; i++)
        if (targets & (1UL << i))
            pv.send_ipi((u32)i, VEC_TLB);
    u64 start = rdtsc();
    for (int i = 0; i < MAX_CPUS; i++) {
        if (!(targets & (1UL << i)))
            continue;
        while (percpus[i].tlb_pending) {
            if (rdtsc() - start > 4 * tsc_hz)
                panic("TLB shootdown: cpu %d does not answer", i);
        }
    }
    if (drop)
        __atomic_and_fetch(&mm->active_mask, self, __ATOMIC_SEQ_CST);
}

static void tlb_flush_range(struct mm *mm, u64 start, u64 end)
{
    struct percpu *c = this_cpu();
    u64 n = (end - start) / PAGE_SIZE;
    if (n == 0)
        return;
    if (c->cur_mm == mm) {
        if (n <= 32)
            for (u64 va = start; va < end; va += PAGE_SIZE)
                pv.invlpg(va);
        else
            pv.flush_tlb_local();
    }
    tlb_shootdown(mm, start, n != 1, 0);
}

void switch_mm(struct percpu *c, struct mm *mm)
{
    if (c->cur_mm == mm)
        return;
    u64 bit = 1UL << c->id;
    if (c->cur_mm)
        __atomic_and_fetch(&c->cur_mm->active_mask, ~bit, __ATOMIC_SEQ_CST);
    if (mm) {
        __atomic_or_fetch(&mm->active_mask, bit, __ATOMIC_SEQ_CST);
        pv.load_cr3_pair(mm->pml4_pa, mm->user_pml4_pa);
    } else {
        pv.load_cr3(kernel_pml4_pa);
    }
    c->cur_mm = mm;
}

/* Unmaps [start, end); returns the number of pages that were mapped. */
static u64 unmap_range(struct mm *mm, u64 start, u64 end)
{
    u64 n = 0;
    pv.lazy_mmu(1);
    for (u64 va = start; va < end;) {
        u64 *pte = user_pte(mm, va, 0);
        if (!pte) {
            va = (va + LARGE_PAGE) & ~(LARGE_PAGE - 1);
            continue;
        }
        if (*pte & PTE_P) {
            u64 pa = *pte & PTE_ADDR;
            pv.set_pte(pte, 0);
            frame_put(pa);
            n++;
        }
        va += PAGE_SIZE;
    }
    pv.lazy_mmu(0);
    return n;
}

/* ---------------- populating an address space that is not loaded (exec) ---------------- */

int mm_map_data(struct mm *mm, u64 va, const void *src, u64 len, u32 prot)
{
    u64 end = va + len;
    for (u64 page = PAGE_DOWN(va); page < end; page += PAGE_SIZE) {
        u64 *pte = user_pte(mm, page, 1);
        if (!pte)
            return -ENOMEM;
        if (!(*pte & PTE_P)) {
            u64 pa = frame_alloc();
            if (!pa)
                return -ENOMEM;
            pv.set_pte(pte, pa | vma_pte_flags(prot));
        } else {
            /* A page shared by two segments gets the union of their permissions. */
            u64 v = *pte;
            if (prot & PROT_WRITE)
                v |= PTE_W;
            if (prot & PROT_EXEC)
                v &= ~PTE_NX;
            if (v != *pte)
                pv.set_pte(pte, v);
        }
        if (src) {
            u64 from = page > va ? page : va;
            u64 to = page + PAGE_SIZE < end ? page + PAGE_SIZE : end;
            u8 *dst = (u8 *)P2V(*pte & PTE_ADDR) + (from - page);
            memcpy(dst, (const u8 *)src + (from - va), to - from);
        }
    }
    return 0;
}

/* ---------------- page faults ---------------- */

#define PF_WRITE 2
#define PF_FETCH 16

/* Demand-zero and copy-on-write. 0 when resolved, negative errno when the access is bad. */
int handle_user_fault(u64 addr, u64 err)
{
    struct task *t = current_task();
    struct mm *mm = t->mm;
    if (t->is_idle || !mm || addr >= USER_TOP)
        return -EFAULT;
    struct vma *v = vma_find(mm, addr);
    if (!v || !(v->prot & (PROT_READ | PROT_WRITE | PROT_EXEC)))
        return -EFAULT;
    int write = (err & PF_WRITE) != 0;
    if (write && !(v->prot & PROT_WRITE))
        return -EFAULT;
    if ((err & PF_FETCH) && !(v->prot & PROT_EXEC))
        return -EFAULT;
    u64 va = PAGE_DOWN(addr);
    u64 *pte = user_pte(mm, va, 1);
    if (!pte)
        return -ENOMEM;
    u64 old = *pte;
    if (!(old & PTE_P)) {
        u64 pa = frame_alloc();
        if (!pa)
            return -ENOMEM;
        pv.set_pte(pte, pa | vma_pte_flags(v->prot));
        return 0;
    }
    if (write && (old & PTE_COW)) {
        u64 pa = old & PTE_ADDR;
        u64 flags = (old & ~PTE_ADDR & ~PTE_COW) | PTE_W;
        if (*frame_ref(pa) == 1) {
            pv.set_pte(pte, pa | flags);
        } else {
            u64 npa = frame_alloc();
            if (!npa)
                return -ENOMEM;
            copy_page(P2V(npa), P2V(pa));
            pv.set_pte(pte, npa | flags);
            frame_put(pa);
        }
        pv.invlpg(va);
        tlb_shootdown(mm, va, 0, 0);
        return 0;
    }
    if (write && !(old & PTE_W))
        pv.set_pte(pte, old | PTE_W);
    /* Otherwise a stale translation: drop it and retry. */
    pv.invlpg(va);
    return 0;
}

/* ---------------- user memory access from system calls ---------------- */

int user_access_ok(struct mm *mm, u64 va, u64 len, int write)
{
    if (len == 0)
        return 1;
    if (!mm || va >= USER_TOP || len > USER_TOP - va)
        return 0;
    u64 end = va + len;
    while (va < end) {
        struct vma *v = vma_find(mm, va);
        if (!v)
            return 0;
        if (write ? !(v->prot & PROT_WRITE) : !(v->prot & (PROT_READ | PROT_WRITE | PROT_EXEC)))
            return 0;
        va = v->end;
    }
    return 1;
}

int copy_from_user(void *dst, u64 usrc, u64 len)
{
    if (!user_access_ok(current_task()->mm, usrc, len, 0))
        return -EFAULT;
    memcpy(dst, (const void *)usrc, len);
    return 0;
}

int copy_to_user(u64 udst, const void *src, u64 len)
{
    if (!user_access_ok(current_task()->mm, udst, len, 1))
        return -EFAULT;
    memcpy((void *)udst, src, len);
    return 0;
}

/* Copies a NUL-terminated string; returns its length or a negative errno. */
int copy_string_from_user(char *dst, u64 usrc, u64 max)
{
    struct mm *mm = current_task()->mm;
    for (u64 i = 0; i < max; i++) {
        u64 a = usrc + i;
        if ((i == 0 || (a & ~PAGE_MASK) == 0) && !user_access_ok(mm, a, 1, 0))
            return -EFAULT;
        dst[i] = *(const volatile char *)a;
        if (!dst[i])
            return (int)i;
    }
    return -E2BIG;
}

/* ---------------- mmap / munmap / brk ---------------- */

#define MAP_SHARED 0x01
#define MAP_PRIVATE 0x02
#define MAP_FIXED 0x10
#define MAP_ANONYMOUS 0x20

static u64 find_free_range(struct mm *mm, u64 len)
{
    u64 cur = MMAP_BASE;
    for (int i = 0; i < mm->nvma; i++) {
        struct vma *v = &mm->vma[i];
        if (v->end <= cur)
            continue;
        if (v->start >= cur + len)
            break;
        cur = v->end;
    }
    if (cur + len > USER_STACK_TOP - USER_STACK_SIZE)
        return 0;
    return cur;
}

i64 sys_mmap(u64 addr, u64 len, u64 prot, u64 flags, u64 fd, u64 off)
{
    struct mm *mm = current_task()->mm;
    (void)fd;
    (void)off;
    if (!(flags & MAP_ANONYMOUS) || (flags & (MAP_SHARED | MAP_PRIVATE)) != MAP_PRIVATE)
        return -EINVAL;
    if (len == 0 || len > USER_TOP)
        return -EINVAL;
    len = PAGE_UP(len);
    u64 start;
    if (flags & MAP_FIXED) {
        if ((addr & ~PAGE_MASK) || addr < USER_MIN || addr >= USER_TOP || len > USER_TOP - addr)
            return -EINVAL;
        i64 r = sys_munmap(addr, len);
        if (r < 0)
            return r;
        start = addr;
    } else {
        start = find_free_range(mm, len);
        if (!start)
            return -ENOMEM;
    }
    int r = vma_add(mm, start, start + len, (u32)prot & 7, VMA_ANON);
    if (r < 0)
        return r;
    return (i64)start;
}

i64 sys_munmap(u64 addr, u64 len)
{
    struct mm *mm = current_task()->mm;
    if ((addr & ~PAGE_MASK) || len == 0 || addr >= USER_TOP || len > USER_TOP - addr)
        return -EINVAL;
    u64 end = PAGE_UP(addr + len);
    int r = vma_remove_range(mm, addr, end);
    if (r < 0)
        return r;
    if (unmap_range(mm, addr, end))
        tlb_flush_range(mm, addr, end);
    return 0;
}

i64 sys_brk(u64 addr)
{
    struct mm *mm = current_task()->mm;
    if (addr < mm->brk_start || addr >= USER_STACK_TOP - USER_STACK_SIZE)
        return (i64)mm->brk;
    u64 old_end = PAGE_UP(mm->brk), new_end = PAGE_UP(addr);
    struct vma *heap = NULL;
    for (int i = 0; i < mm->nvma; i++)
        if (mm->vma[i].kind == VMA_HEAP)
            heap = &mm->vma[i];
    if (new_end > old_end) {
        if (vma_overlaps(mm, old_end, new_end))
            return (i64)mm->brk;
        if (heap) {
            heap->end = new_end;
        } else if (vma_add(mm, mm->brk_start, new_end, PROT_READ | PROT_WRITE, VMA_HEAP) < 0) {
            return (i64)mm->brk;
        }
    } else if (new_end < old_end) {
        if (vma_remove_range(mm, new_end, old_end) < 0)
            return (i64)mm->brk;
        if (unmap_range(mm, new_end, old_end))
            tlb_flush_range(mm, new_end, old_end);
    }
    mm->brk = addr;
    return (i64)addr;
}

/* ---------------- device registers ---------------- */

/* Maps [pa, pa + len) (a device's registers, above memory) uncached at DIRECT_MAP + pa in
 * 4 KiB pages of the shared kernel half; returns its virtual address (NULL on failure). */
void *kmap_io(u64 pa, u64 len)
{
    for (u64 off = 0; off < len; off += PAGE_SIZE) {
        u64 *e = pt_entry(kernel_pml4_pa, 0, DIRECT_MAP + pa + off, 1, 1, PTE_P | PTE_W);
        if (!e)
            return NULL;
        /* PCD (bit 4) | PWT (bit 3): uncached. */
        pv.set_pte(e, (pa + off) | PTE_P | PTE_W | PTE_G | PTE_NX | (1UL << 4) | (1UL << 3));
    }
    pv.flush_tlb_local();
    return P2V(pa);
}
