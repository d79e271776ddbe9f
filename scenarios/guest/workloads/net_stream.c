/*
 * net_stream tx COUNT SIZE [ITR]: sends COUNT data frames of SIZE bytes (60..1514) as fast
 * as sendto takes them (the peer is a sink).
 * net_stream rx COUNT [ITR]: receives COUNT frames (the peer is a source).
 * ITR, when given, sets the e1000's interrupt throttling interval (256 ns units) first.
 * Prints `net_stream dir=D frames=N bytes=B tsc=T` (T: rdtsc delta of the loop) and the
 * driver's counters.
 */
#include "net_common.h"

static unsigned char frame[2048];

int main(int argc, char **argv)
{
    int tx = argc > 1 && strcmp(argv[1], "tx") == 0;
    if (argc < 3 || (!tx && strcmp(argv[1], "rx") != 0)) {
        printf("net_stream error=args (tx COUNT SIZE [ITR] | rx COUNT [ITR])\n");
        return 1;
    }
    unsigned long count = arg_ul(argc, argv, 2, 0);
    unsigned long size = tx ? arg_ul(argc, argv, 3, NET_MAX) : 0;
    if (tx && (size < NET_MIN || size > NET_MAX)) {
        printf("net_stream error=size (%d..%d)\n", NET_MIN, NET_MAX);
        return 1;
    }
    int fd = net_open("net_stream");
    net_itr_arg(argc, argv, tx ? 4 : 3);
    unsigned long bytes = 0;
    uint64_t t0 = rdtsc();
    for (unsigned long i = 0; i < count; i++) {
        long n;
        if (tx) {
            frame_header(frame, i, (uint32_t)size, KIND_DATA);
            n = sendto(fd, frame, size, 0, NULL, 0);
        } else {
            n = recvfrom(fd, frame, sizeof frame, 0, NULL, NULL);
        }
        if (n < 0) {
            printf("net_stream error=%s(%ld) frames=%lu\n", tx ? "sendto" : "recvfrom", n, i);
            return 1;
        }
        bytes += (unsigned long)n;
    }
    uint64_t t1 = rdtsc();
    printf("net_stream dir=%s frames=%lu bytes=%lu tsc=%lu\n", tx ? "tx" : "rx", count, bytes,
           (unsigned long)(t1 - t0));
    net_print_stats();
    return 0;
}
