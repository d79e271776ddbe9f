/* hvsim testbed kernel: shared types, constants and prototypes. */
#ifndef HVSIM_KERNEL_H
#define HVSIM_KERNEL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "asm_defs.h"

typedef uint8_t u8;
typedef uint16_t u16;
typedef uint32_t u32;
typedef uint64_t u64;
typedef int16_t i16;
typedef int64_t i64;

#define NORETURN __attribute__((noreturn))
#define ALIGNED(n) __attribute__((aligned(n)))
#define PACKED __attribute__((packed))
#define barrier() __asm__ volatile("" ::: "memory")

/* ---- limits ---- */
#define MAX_CPUS 64
#define MAX_TASKS 64
#define KSTACK_SIZE 16384
#define IDLE_STACK_SIZE 16384
#define IST_STACK_SIZE 4096
#define NFDS 16
#define MAX_VMAS 32
#define MAX_MMS (2 * MAX_TASKS)
#define MAX_PIPES 64
#define MAX_FILES 256
#define MAX_ARGS 32
#define ARG_BYTES 4096
#define NR_SYSCALLS 512
#define TICK_HZ 250

/* ---- address space layout ---- */
#define PAGE_SIZE 4096UL
#define PAGE_MASK (~(PAGE_SIZE - 1))
#define PAGE_UP(x) (((u64)(x) + PAGE_SIZE - 1) & PAGE_MASK)
#define PAGE_DOWN(x) ((u64)(x) & PAGE_MASK)
#define LARGE_PAGE (2UL << 20)
#define KERNEL_VMA 0xFFFFFFFF80000000UL
#define DIRECT_MAP 0xFFFF800000000000UL
#define P2V(pa) ((void *)((u64)(pa) + DIRECT_MAP))
#define USER_MIN 0x10000UL
#define USER_TOP 0x0000800000000000UL /* exclusive */
#define USER_STACK_TOP 0x00007FFFFFFFF000UL
#define USER_STACK_SIZE (8UL << 20)
#define MMAP_BASE 0x0000100000000000UL

/* ---- page table entries ---- */
#define PTE_P (1UL << 0)
#define PTE_W (1UL << 1)
#define PTE_U (1UL << 2)
#define PTE_PS (1UL << 7)
#define PTE_G (1UL << 8)
#define PTE_COW (1UL << 9) /* software bit: copy-on-write */
#define PTE_NX (1UL << 63)
#define PTE_ADDR 0x000FFFFFFFFFF000UL

/* ---- vectors ---- */
#define VEC_PF 14
#define VEC_DF 8
#define VEC_TIMER 0x20
#define VEC_RESCHED 0xF0
#define VEC_TLB 0xF1
#define VEC_UPCALL 0xF3 /* hybrid: the event-channel callback vector */
#define VEC_NIC 0x40    /* the NIC's MSI-X vector, every CPU */
#define VEC_SPURIOUS 0xFF

/* ---- MSRs ---- */
#define MSR_EFER 0xC0000080
#define MSR_STAR 0xC0000081
#define MSR_LSTAR 0xC0000082
#define MSR_SFMASK 0xC0000084
#define MSR_FS_BASE 0xC0000100
#define MSR_GS_BASE 0xC0000101
#define MSR_KERNEL_GS_BASE 0xC0000102
#define MSR_TSC_DEADLINE 0x6E0
#define X2APIC_ID 0x802
#define X2APIC_TPR 0x808
#define X2APIC_EOI 0x80B
#define X2APIC_SPURIOUS 0x80F
#define X2APIC_ICR 0x830
#define X2APIC_LVT_TIMER 0x832
#define X2APIC_TIMER_INIT 0x838
#define X2APIC_TIMER_CUR 0x839
#define X2APIC_TIMER_DIV 0x83E

/* ---- ports ---- */
#define PORT_CONSOLE 0xE9
#define PORT_EXIT 0xF4

/* ---- errno ---- */
#define EPERM 1
#define ENOENT 2
#define ESRCH 3
#define EINTR 4
#define EIO 5
#define E2BIG 7
#define ENOEXEC 8
#define EBADF 9
#define ECHILD 10
#define EAGAIN 11
#define ENOMEM 12
#define EFAULT 14
#define ENODEV 19
#define EINVAL 22
#define EMFILE 24
#define ENFILE 23
#define EPIPE 32
#define ENOSYS 38
#define ENOTSOCK 88
#define EMSGSIZE 90
#define EAFNOSUPPORT 97

/* ---- boot protocol ----
 * Fields after cmdline were added without a version bump: they are zero when absent.
 * module_phys/module_size: a user's static ELF executable copied by the loader to a
 * page-aligned physical address after the kernel image (below first_free_phys); 0/0 means
 * no module. With a module, the first process runs it, and the first word of cmdline is
 * only the name it reports (argv[0]). */
#define BOOT_INFO_MAGIC 0x4f4f426d69737668UL /* "hvsimBOO" */
#define BOOT_INFO_VERSION 1
#define MODULE_BAD_EXIT_STATUS 127 /* a malformed boot module */

struct boot_info {
    u64 magic;
    u64 version;
    u64 mem_bytes;
    u64 ncpus;
    u64 tsc_hz;
    u64 apic_timer_hz;
    u64 first_free_phys;
    volatile u64 ap_entry;
    volatile u64 ap_stack;
    volatile u64 ap_cpu;
    char cmdline[256];
    u64 module_phys; /* 0: no module */
    u64 module_size; /* 0: no module */
    u64 nic_mmio;    /* physical base of the NIC's registers; 0: no NIC */
    u64 net_kind;    /* network path: 0 none, 1 e1000-like NIC, 2 netfront (docs/io.md) */
    u64 net_mmio;    /* physical base of the e1000-like NIC's BAR (kind 1) */
    u64 net_vector;  /* the vector its MSI is programmed with (kind 1) */
    u64 blk_kind;    /* block path: 0 none, 1 AHCI-like controller, 2 blkfront (docs/io.md) */
    u64 blk_mmio;    /* physical base of the controller's BAR (kind 1) */
    u64 blk_vector;  /* the vector its MSI is programmed with (kind 1) */
    u64 blk_sectors; /* the disk's size in 512-byte sectors (both kinds) */
    u64 net_rx_flip; /* netfront's receive path: 0 grant copy, 1 page flipping (docs/io.md) */
};

/* ---- pv_ops: every privileged operation after early boot goes through here ---- */
struct pv_ops {
    const char *name;
    int paravirt; /* PV: the kernel runs at CPL 3 under a hypervisor (no IDT, no LSTAR) */
    /* MMU */
    void (*load_cr3)(u64 pml4_pa);
    /* An address space's two roots (PV: kernel table and user-only table; native: the
     * first one). */
    void (*load_cr3_pair)(u64 pml4_pa, u64 user_pml4_pa);
    /* A fresh zeroed frame becomes a page table of `level` (PV: remapped read-only in the
     * direct map; an L4 is pinned), and stops being one before it is freed. */
    void (*alloc_pt)(u64 pa, int level);
    void (*release_pt)(u64 pa, int level);
    /* Batched page-table updates: set_pte queues while lazy; flush applies the queue. */
    void (*lazy_mmu)(int on);
    void (*mmu_flush)(void);
    /* Batched CPU-state hypercalls (PV: one multicall for a context switch's page-table
     * bases and kernel stack): queued while lazy, issued when lazy mode ends. */
    void (*lazy_cpu)(int on);
    /* Flush other CPUs' TLBs without an IPI (PV); 0 when not available. */
    int (*flush_tlb_others)(u64 cpu_mask, u64 va, int all);
    u64 (*read_cr2)(void);
    void (*invlpg)(u64 va);
    void (*flush_tlb_local)(void);
    void (*set_pte)(u64 *ptep, u64 val);
    /* CPU tables and stacks */
    void (*load_gdt)(const void *base, u16 limit);
    void (*load_idt)(const void *base, u16 limit);
    void (*load_tr)(u16 sel);
    void (*set_kernel_stack)(u64 rsp0);
    /* interrupts and idle */
    void (*irq_enable)(void);
    void (*irq_disable)(void);
    void (*halt)(void); /* idle: enable interrupts, wait for one, disable again */
    /* interrupt controller and timer */
    void (*lapic_init)(void);
    u32 (*cpu_hw_id)(void);
    void (*eoi)(void);
    void (*set_timer)(u64 tsc_deadline); /* one-shot */
    void (*send_ipi)(u32 cpu, u32 vector);
    void (*start_cpu)(u32 cpu); /* INIT + SIPI */
    /* port I/O and MSRs */
    void (*io_out)(u16 port, u32 val, int size);
    u32 (*io_in)(u16 port, int size);
    u64 (*read_msr)(u32 msr);
    void (*write_msr)(u32 msr, u64 val);
};
extern struct pv_ops pv;
void pv_select(struct boot_info *bi);

/* Events an interrupt vector or an event-channel upcall brings. */
#define EV_TIMER 1u
#define EV_RESCHED 2u
#define EV_TLB 4u
#define EV_NIC 8u
#define EV_NET 16u /* netfront's event channel (docs/io.md section 3) */
#define EV_BLK 32u /* blkfront's event channel (docs/io.md section 7b) */
u32 pv_upcall_events(void); /* hybrid: consume this CPU's pending event channels */
u32 pv_nic_bind(u32 queue, u64 cpu); /* hybrid: map the queue's PIRQ and bind a port */
void pv_port_mask(u32 port);         /* hybrid: event-channel mask in shared memory */
void pv_port_unmask(u32 port);
/* hybrid and pv: a Xen hypercall (VMCALL or the PV syscall), for drivers */
i64 pv_hypercall(u64 nr, u64 a1, u64 a2, u64 a3);
/* hybrid and pv: routes an event-channel port the hypervisor gave to `cpu`'s upcall as
 * `event`; panics (naming `what`) when the result is an error or an unusable port */
u32 pv_port_bind(i64 port, u64 cpu, u32 event, const char *what);

/* ---- trap frame (layout fixed by entry.S) ---- */
struct trapframe {
    u64 r15, r14, r13, r12, r11, r10, r9, r8;
    u64 rbp, rdi, rsi, rdx, rcx, rbx, rax;
    u64 vector, err;
    u64 rip, cs, rflags, rsp, ss;
};

/* ---- memory management ---- */
#define PROT_READ 1
#define PROT_WRITE 2
#define PROT_EXEC 4

enum vma_kind { VMA_ELF = 1, VMA_HEAP, VMA_STACK, VMA_ANON };

struct vma {
    u64 start, end;
    u32 prot;
    u32 kind;
};

struct mm {
    int used;
    u64 pml4_pa;
    u64 user_pml4_pa; /* PV: the user-only twin of pml4_pa (0 natively) */
    volatile u64 active_mask; /* CPUs whose CR3 holds this address space */
    int nvma;
    struct vma vma[MAX_VMAS]; /* sorted, non-overlapping */
    u64 brk_start, brk;
};

/* ---- files and pipes ---- */
enum file_type {
    FILE_FREE = 0,
    FILE_CONSOLE_IN,
    FILE_CONSOLE_OUT,
    FILE_PIPE_R,
    FILE_PIPE_W,
    FILE_NET, /* a packet socket on the machine's one network interface */
    FILE_BLK, /* the machine's disk, /dev/vda (blk.c) */
};

struct task;
struct waitq {
    struct task *head;
};

#define PIPE_BUF_SIZE 4096
struct pipe {
    int used;
    u8 *buf;
    u64 rpos, wpos; /* free-running counters */
    int readers, writers;
    struct waitq rwait, wwait;
};

struct file {
    int type;
    int refs;
    struct pipe *pipe;
    int mode; /* FILE_BLK: the open's access mode (O_RDONLY 0, O_WRONLY 1, O_RDWR 2) */
};

/* ---- tasks ---- */
enum task_state { T_FREE = 0, T_RUNNABLE, T_RUNNING, T_BLOCKED, T_ZOMBIE };

struct task {
    int state;
    int pid;
    int cpu;     /* CPU it last ran on */
    int is_idle; /* per-CPU idle context, not a process */
    u64 ksp;     /* saved stack pointer while switched out */
    u64 kstack_top;
    struct mm *mm;
    struct task *parent;
    struct task *rq_next;
    struct task *wq_next;
    struct task *sleep_next;
    u64 sleep_deadline;
    struct waitq child_wait;
    int exit_status; /* wait status word */
    u64 fs_base;
    struct file *fds[NFDS];
    char name[32];
};

/* ---- per-CPU data (GS base points here in kernel mode) ---- */
struct tss {
    u32 reserved0;
    u64 rsp0, rsp1, rsp2;
    u64 reserved1;
    u64 ist[7];
    u64 reserved2;
    u16 reserved3;
    u16 iomap_base;
} PACKED;

struct percpu {
    struct percpu *self; /* PC_SELF */
    u64 kstack_top;      /* PC_KSTACK_TOP: kernel stack of the current task */
    u64 user_rsp;        /* PC_USER_RSP: scratch for syscall entry */
    u64 id;
    struct task *current;
    struct task idle;
    struct task *rq_head, *rq_tail;
    int rq_len;
    int online;
    volatile int need_resched;
    volatile int tlb_pending;
    struct mm *cur_mm; /* address space in CR3 (NULL: kernel only) */
    u64 fs_loaded;
    u64 timer_deadline;
    u32 apic_id;
    u64 gdt[8] ALIGNED(16);
    struct tss tss ALIGNED(16);
} ALIGNED(64);

extern struct percpu percpus[MAX_CPUS];
extern struct boot_info *boot_info;
extern u64 ncpus_online;
extern u64 tsc_hz;
extern u64 kernel_pml4_pa;

static inline struct percpu *this_cpu(void)
{
    struct percpu *p;
    __asm__ volatile("movq %%gs:0, %0" : "=r"(p));
    return p;
}

static inline struct task *current_task(void) { return this_cpu()->current; }

static inline u64 rdtsc(void)
{
    u32 lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((u64)hi << 32) | lo;
}

/* lib.c */
void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
void *memmove(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strcmp(const char *a, const char *b);
void strlcpy_k(char *d, const char *s, size_t n);
void zero_page(void *p);
void copy_page(void *d, const void *s);
int ksnprintf(char *buf, size_t n, const char *fmt, ...);
int kvsnprintf(char *buf, size_t n, const char *fmt, va_list ap);
void kputs(const char *s, size_t n);
void kprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
NORETURN void panic(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
NORETURN void poweroff(u32 status);

/* mm.c */
void frames_init(u64 first_free, u64 mem_bytes, u64 image_end_phys);
u64 frame_alloc(void); /* zeroed; 0 when out of memory */
void frame_get(u64 pa);
void frame_put(u64 pa);
u64 frames_free_count(void);
void paging_init(u64 mem_bytes);
struct mm *mm_create(void);
void mm_destroy(struct mm *mm);
struct mm *mm_fork(struct mm *parent);
int vma_add(struct mm *mm, u64 start, u64 end, u32 prot, u32 kind);
struct vma *vma_find(struct mm *mm, u64 va);
int mm_map_data(struct mm *mm, u64 va, const void *src, u64 len, u32 prot);
int handle_user_fault(u64 addr, u64 err);
int user_access_ok(struct mm *mm, u64 va, u64 len, int write);
int copy_from_user(void *dst, u64 usrc, u64 len);
int copy_to_user(u64 udst, const void *src, u64 len);
int copy_string_from_user(char *dst, u64 usrc, u64 max);
void switch_mm(struct percpu *c, struct mm *mm);
void tlb_service(void);
i64 sys_mmap(u64 addr, u64 len, u64 prot, u64 flags, u64 fd, u64 off);
i64 sys_munmap(u64 addr, u64 len);
i64 sys_brk(u64 addr);

/* nic.c */
void nic_init(void);
void nic_irq(void);    /* the MSI-X vector's handler */
void nic_upcall(void); /* hybrid: the NIC port's handler */
i64 sys_hvsim_nic(u64 what);

/* mm.c (I/O) */
void *kmap_io(u64 pa, u64 len);

/* ---- network (docs/io.md) ---- */
#define NET_FRAME_MIN 60
#define NET_FRAME_MAX 1514
#define NET_BUF_BYTES 2048 /* every driver buffer holds one frame in this many bytes */
#define NET_KIND_NONE 0
#define NET_KIND_E1000 1
#define NET_KIND_NETFRONT 2

/* What the socket layer needs from a driver. Everything runs under the kernel lock. */
struct net_driver {
    const char *name;
    /* A free transmit buffer (NET_BUF_BYTES), after reclaiming what the device is done
     * with; NULL while the transmit ring is full. Nothing sleeps before tx_send. */
    void *(*tx_buffer)(void);
    /* Transmits the `len` bytes written into the buffer tx_buffer just returned. */
    void (*tx_send)(u32 len);
    /* Interrupt throttling (e1000 ITR, 256 ns units); 0 when the driver has none. */
    int (*set_itr)(u32 itr);
};

/* Driver counters (the hvsim_net syscall reports them). */
struct net_stats {
    u64 tx_frames;      /* frames handed to the driver */
    u64 rx_frames;      /* frames the driver received (queue drops included) */
    u64 interrupts;     /* e1000 interrupts / netfront event upcalls handled */
    u64 rx_queue_drops; /* received frames dropped: the socket's receive queue was full */
    u64 rx_errors;      /* e1000: bad descriptors and RXO causes; netfront: error responses */
    u64 tx_errors;      /* netfront: error tx responses */
    u64 tx_full_sleeps; /* sendto sleeps on a full transmit ring */
    u64 kicks;          /* e1000: TDT doorbells; netfront: EVTCHNOP_send hypercalls */
    u64 dev_ops;        /* after init: e1000 register accesses; netfront hypercalls */
    u64 empty;          /* interrupts or events that found nothing to do */
};
extern struct net_stats net_stats;

/* net.c */
void net_init(void);
void net_rx(const void *frame, u32 len); /* driver: a received frame (copied) */
void net_tx_done(void);                  /* driver: transmit buffers were freed */
i64 sys_socket(u64 domain, u64 type, u64 protocol);
i64 sys_sendto(u64 fd, u64 ubuf, u64 len, u64 flags);
i64 sys_recvfrom(u64 fd, u64 ubuf, u64 len, u64 flags);
i64 sys_hvsim_net(u64 what, u64 arg);

/* e1000.c */
extern u32 e1000_vector; /* the NIC's MSI vector; 0: no e1000 */
const struct net_driver *e1000_init(void);
void e1000_irq(struct trapframe *tf);

/* netfront.c */
const struct net_driver *netfront_init(void);
void netfront_event(void); /* the EV_NET upcall's work, under the kernel lock */

/* ---- grant table (gnttab.c; hybrid and pv) ---- */
#define GNTTAB_FRAMES 2
#define GNTTAB_ENTRIES 1024
#define GNTTAB_NETFRONT_END 512 /* netfront: references 1..511 */
#define GNTTAB_BLKFRONT_FIRST 512 /* blkfront: references 512..1023 */
/* Sets up the domain's grant table once: 1 when this call did, 0 when it was already. */
i64 gnttab_init(void);
/* Grants frame `pa` to domain 0 under `ref` (read-only or writable); the entry must be
 * free. The entry is complete before its flags make it usable. */
void gnttab_grant(u32 ref, u64 pa, int readonly);
/* Ends a grant (flags cleared): 0, or -1 while the backend still has it in use. */
int gnttab_end(u32 ref);
/* Posts `ref` as an accept-transfer entry (page flipping): domain 0 may give the domain a
 * page in exchange for frame `pa`. The entry must be free or a transfer entry (re-post). */
void gnttab_grant_transfer(u32 ref, u64 pa);
/* Ends a transfer entry: the physical address of the frame received and the entry freed,
 * or 0 (entry untouched) when no transfer completed into it. */
u64 gnttab_end_transfer(u32 ref);

/* ---- block devices (docs/io.md section 7) ---- */
#define BLK_KIND_NONE 0
#define BLK_KIND_AHCI 1
#define BLK_KIND_BLKFRONT 2
#define BLK_SECTOR 512
#define BLK_POOL_PAGES 64 /* the block layer's buffer pool: 256 KiB, the largest I/O */
#define BLK_MAX_IO (BLK_POOL_PAGES * PAGE_SIZE)
#define BLK_REQ_MAX_PAGES 32 /* the most any driver takes in one request (AHCI) */

/* One driver request: `nsect` sectors from `sector`, through whole pool pages (the last
 * may be partly used: sectors 8 * (npages - 1) .. nsect - 1 are in it). */
struct blk_req {
    u64 sector;
    u32 nsect;
    u32 npages;
    int write;
    int status; /* 0 ok, -EIO failed (set by the driver before blk_complete) */
    u64 page_pa[BLK_REQ_MAX_PAGES];
};

/* What the block layer needs from a driver. Everything runs under the kernel lock. */
struct blk_driver {
    const char *name;
    u32 max_pages; /* pages per request */
    /* Starts one request (AHCI: issued at once; blkfront: queued on the ring). The driver
     * calls blk_complete(req) once it is done, from its interrupt or event handler. */
    void (*submit)(struct blk_req *req);
    /* After the last submit of an I/O (blkfront: push and notify); may be NULL. */
    void (*commit)(void);
};

/* Driver counters (hvsim_blk reports them). */
struct blk_stats {
    u64 ios;             /* pread64/pwrite64 calls that reached a driver */
    u64 requests;        /* driver requests issued */
    u64 sectors_read;    /* sectors of successful read requests */
    u64 sectors_written; /* sectors of successful write requests */
    u64 interrupts;      /* AHCI interrupts / blkfront event upcalls handled */
    u64 kicks;           /* AHCI P0CI writes / blkfront EVTCHNOP_send hypercalls */
    u64 dev_ops;         /* after init: AHCI register accesses / blkfront hypercalls */
    u64 errors;          /* failed requests */
    u64 empty;           /* interrupts or events that completed nothing */
    u64 grants;          /* blkfront: data-page grants made (and ended) */
};
extern struct blk_stats blk_stats;

/* blk.c */
void blk_init(void);
void blk_complete(struct blk_req *req); /* driver: the request is done (req->status set) */
i64 sys_open(u64 upath, u64 flags, u64 mode);
i64 sys_pread64(u64 fd, u64 ubuf, u64 count, u64 offset);
i64 sys_pwrite64(u64 fd, u64 ubuf, u64 count, u64 offset);
i64 sys_hvsim_blk(u64 what);

/* ahci.c */
extern u32 ahci_vector; /* the controller's MSI vector; 0: no AHCI */
const struct blk_driver *ahci_init(void);
void ahci_irq(struct trapframe *tf);

/* blkfront.c */
const struct blk_driver *blkfront_init(void);
void blkfront_event(void); /* the EV_BLK upcall's work, under the kernel lock */

/* trap.c */
void idt_init(void);
void cpu_init(u64 cpu);
void trap_handler(struct trapframe *tf);
void timer_rearm(struct percpu *c);
void timer_request(struct percpu *c, u64 deadline);

/* sched.c */
void bkl_lock(void);
void bkl_unlock(void);
void sched_init(void);
struct task *task_alloc(void);
void task_free(struct task *t);
struct task *task_by_pid(int pid);
struct task *task_at(int i);
void make_runnable(struct task *t);
void schedule(void);
void sleep_on(struct waitq *wq);
void wake_all(struct waitq *wq);
void sleep_until(u64 deadline);
void timers_check(void);
NORETURN void idle_loop(void);
void user_return(struct trapframe *tf);
void smp_boot(void);
void tlb_shootdown(struct mm *mm, u64 va, int all, int drop);
extern volatile u64 next_sleep_deadline;

/* proc.c */
struct program {
    const char *name;
    const u8 *data;
    u64 size;
};
const struct program *program_find(const char *path);
void list_programs(void);
void start_init(const char *cmdline);
i64 sys_fork(struct trapframe *tf);
i64 sys_execve(struct trapframe *tf, u64 upath, u64 uargv);
NORETURN void do_exit(int wait_status);
i64 sys_wait4(i64 pid, u64 ustatus, u64 options);
void kill_current(int sig, const char *why, struct trapframe *tf, u64 addr);

/* file.c */
void files_init(void);
void fds_init_console(struct task *t);
void fds_fork(struct task *child, struct task *parent);
void fds_close_all(struct task *t);
i64 sys_read(u64 fd, u64 buf, u64 len);
i64 sys_write(u64 fd, u64 buf, u64 len);
i64 sys_close(u64 fd);
i64 sys_pipe(u64 ufds);
int fd_open(int type);          /* a new file in the lowest free descriptor, or -errno */
struct file *fd_file(u64 fd);   /* the current task's file behind fd, or NULL */

/* syscall.c */
void syscall_handler(struct trapframe *tf);
void print_syscall_stats(void);

/* entry.S */
void swtch(u64 *save_ksp, u64 next_ksp);
void syscall_entry(void);
void fork_child_entry(void);
void pv_syscall_entry(void);
void pv_upcall_entry(void);
extern char pv_trap_stubs[];
extern u8 pv_paravirt; /* mirrors pv.paravirt for the entry code */
void ap_start(void);
extern char isr_stubs[];
extern char _kernel_end[];

#endif
