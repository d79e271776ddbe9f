/* Boot: checks boot_info, sets up memory, this CPU, the other CPUs and the first process. */
#include "kernel.h"

struct boot_info *boot_info;
u64 tsc_hz;

_Static_assert(offsetof(struct percpu, self) == PC_SELF, "percpu layout");
_Static_assert(offsetof(struct percpu, kstack_top) == PC_KSTACK_TOP, "percpu layout");
_Static_assert(offsetof(struct percpu, user_rsp) == PC_USER_RSP, "percpu layout");
_Static_assert(sizeof(struct trapframe) == TRAPFRAME_SIZE, "trap frame layout");
_Static_assert(sizeof(struct tss) == 104, "tss layout");
_Static_assert(offsetof(struct boot_info, cmdline) == 80, "boot_info layout");
_Static_assert(offsetof(struct boot_info, module_phys) == 336, "boot_info layout");
_Static_assert(offsetof(struct boot_info, module_size) == 344, "boot_info layout");
_Static_assert(offsetof(struct boot_info, nic_mmio) == 352, "boot_info layout");
_Static_assert(offsetof(struct boot_info, net_kind) == 360, "boot_info layout");
_Static_assert(offsetof(struct boot_info, net_mmio) == 368, "boot_info layout");
_Static_assert(offsetof(struct boot_info, net_vector) == 376, "boot_info layout");
_Static_assert(offsetof(struct boot_info, blk_kind) == 384, "boot_info layout");
_Static_assert(offsetof(struct boot_info, blk_mmio) == 392, "boot_info layout");
_Static_assert(offsetof(struct boot_info, blk_vector) == 400, "boot_info layout");
_Static_assert(offsetof(struct boot_info, blk_sectors) == 408, "boot_info layout");
_Static_assert(offsetof(struct boot_info, net_rx_flip) == 416, "boot_info layout");
_Static_assert(sizeof(struct boot_info) == 424, "boot_info layout");

void kernel_main(struct boot_info *bi, u64 cpu)
{
    (void)cpu;
    pv_select(bi); /* first: everything below may use pv_ops */
    boot_info = bi;
    if (bi->magic != BOOT_INFO_MAGIC)
        panic("bad boot_info magic %#lx", bi->magic);
    if (bi->version != BOOT_INFO_VERSION)
        panic("unsupported boot_info version %lu", bi->version);
    if (bi->tsc_hz == 0)
        panic("boot_info.tsc_hz is 0");
    bi->cmdline[sizeof bi->cmdline - 1] = 0;
    tsc_hz = bi->tsc_hz;
    kprintf("hvsim-kernel: cpus=%lu mem_mib=%lu tsc_hz=%lu pv_ops=%s cmdline=\"%s\"\n", bi->ncpus,
            bi->mem_bytes >> 20, bi->tsc_hz, pv.name, bi->cmdline);
    if (bi->module_size)
        kprintf("hvsim-kernel: module at %#lx, %lu bytes\n", bi->module_phys, bi->module_size);

    frames_init(bi->first_free_phys, bi->mem_bytes, (u64)_kernel_end - KERNEL_VMA);
    paging_init(bi->mem_bytes);
    idt_init();
    sched_init();
    files_init();
    cpu_init(0);
    percpus[0].online = 1;

    bkl_lock();
    smp_boot();
    nic_init();
    net_init();
    blk_init();
    start_init(bi->cmdline);
    idle_loop();
}
