/* nic_rx EVENTS [TICK_MS [AUTOCLEAR]]: waits (sleeping TICK_MS ms at a time, default 1)
 * until the NIC driver has consumed at least EVENTS received events, then prints its
 * counters. AUTOCLEAR 1: the device clears each queue's cause itself when it interrupts
 * (as the 82599 does with MSI-X), and the handler does not read it. */
#include "libc.h"

#define NR_HVSIM_NIC 500

static long nic(long what) { return syscall1(NR_HVSIM_NIC, what); }

int main(int argc, char **argv)
{
    unsigned long want = arg_ul(argc, argv, 1, 1000);
    unsigned long ms = arg_ul(argc, argv, 2, 1);
    unsigned long autoclear = arg_ul(argc, argv, 3, 0);
    if (nic(2) <= 0) {
        printf("nic_rx error=no_nic\n");
        return 1;
    }
    if (autoclear && nic(4) != 0) {
        printf("nic_rx error=autoclear\n");
        return 1;
    }
    struct timespec ts = {0, (long)(ms * 1000000UL)};
    unsigned long sleeps = 0;
    uint64_t t0 = rdtsc();
    while ((unsigned long)nic(0) < want) {
        nanosleep(&ts, 0);
        sleeps++;
    }
    uint64_t t1 = rdtsc();
    printf("nic_rx events=%ld interrupts=%ld empty=%ld queues=%ld sleeps=%lu tsc=%lu\n", nic(0),
           nic(1), nic(3), nic(2), sleeps, t1 - t0);
    return 0;
}
