/*
 * net_rr COUNT SIZE [ITR]: COUNT request/response transactions with the echo peer: send
 * a request frame (seq i, SIZE bytes, 60..1514), wait for the response with seq i; other
 * frames are discarded and counted. ITR, when given, sets the e1000's interrupt
 * throttling interval (256 ns units) first.
 * Prints `net_rr transactions=N tsc=T mean_tsc=M discarded=D` and the driver's counters.
 */
#include "net_common.h"

static unsigned char req[2048], rsp[2048];

int main(int argc, char **argv)
{
    unsigned long count = arg_ul(argc, argv, 1, 1000);
    unsigned long size = arg_ul(argc, argv, 2, NET_MIN);
    if (size < NET_MIN || size > NET_MAX) {
        printf("net_rr error=size (%d..%d)\n", NET_MIN, NET_MAX);
        return 1;
    }
    int fd = net_open("net_rr");
    net_itr_arg(argc, argv, 3);
    unsigned long discarded = 0;
    uint64_t t0 = rdtsc();
    for (unsigned long i = 0; i < count; i++) {
        frame_header(req, i, (uint32_t)size, KIND_REQUEST);
        long n = sendto(fd, req, size, 0, NULL, 0);
        if (n < 0) {
            printf("net_rr error=sendto(%ld) transactions=%lu\n", n, i);
            return 1;
        }
        for (;;) {
            n = recvfrom(fd, rsp, sizeof rsp, 0, NULL, NULL);
            if (n < 0) {
                printf("net_rr error=recvfrom(%ld) transactions=%lu\n", n, i);
                return 1;
            }
            if (frame_ours(rsp, n) && frame_kind(rsp) == KIND_RESPONSE && frame_seq(rsp) == i)
                break;
            discarded++;
        }
    }
    uint64_t t = rdtsc() - t0;
    printf("net_rr transactions=%lu tsc=%lu mean_tsc=%lu discarded=%lu\n", count,
           (unsigned long)t, count ? (unsigned long)(t / count) : 0UL, discarded);
    net_print_stats();
    return 0;
}
