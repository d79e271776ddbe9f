/*
 * net_echo COUNT [SIZE [ITR]]: the server side of net_rr when the far end is another
 * guest: answers COUNT requests, each with a response frame of SIZE bytes (0 or absent:
 * the request's size) carrying the request's seq; other frames are discarded and counted.
 * Prints `net_echo requests=N tsc=T discarded=D` and the driver's counters.
 */
#include "net_common.h"

static unsigned char req[2048], rsp[2048];

int main(int argc, char **argv)
{
    unsigned long count = arg_ul(argc, argv, 1, 1000);
    unsigned long size = arg_ul(argc, argv, 2, 0);
    if (size && (size < NET_MIN || size > NET_MAX)) {
        printf("net_echo error=size (%d..%d)\n", NET_MIN, NET_MAX);
        return 1;
    }
    int fd = net_open("net_echo");
    net_itr_arg(argc, argv, 3);
    unsigned long discarded = 0;
    uint64_t t0 = rdtsc();
    for (unsigned long i = 0; i < count;) {
        long n = recvfrom(fd, req, sizeof req, 0, NULL, NULL);
        if (n < 0) {
            printf("net_echo error=recvfrom(%ld) requests=%lu\n", n, i);
            return 1;
        }
        if (!frame_ours(req, n) || frame_kind(req) != KIND_REQUEST) {
            discarded++;
            continue;
        }
        unsigned long len = size ? size : (unsigned long)n;
        if (len < NET_MIN)
            len = NET_MIN;
        frame_header(rsp, frame_seq(req), (uint32_t)len, KIND_RESPONSE);
        n = sendto(fd, rsp, len, 0, NULL, 0);
        if (n < 0) {
            printf("net_echo error=sendto(%ld) requests=%lu\n", n, i);
            return 1;
        }
        i++;
    }
    uint64_t t = rdtsc() - t0;
    printf("net_echo requests=%lu tsc=%lu discarded=%lu\n", count, (unsigned long)t, discarded);
    net_print_stats();
    return 0;
}
