/*
 * net_stream tx COUNT SIZE [WINDOW [ITR]]: sends COUNT data frames of SIZE bytes (60..1514)
 * as fast as sendto takes them. With WINDOW > 0 the stream is flow-controlled as a
 * window protocol: after every WINDOW frames the sender waits for the receiver's
 * acknowledgement (a response frame), so a slower receiver loses nothing; the far end must
 * then be another guest running `net_stream rx COUNT WINDOW`. WINDOW 0 (the default):
 * no acknowledgements (a sink peer).
 * net_stream rx COUNT [WINDOW [ITR]]: receives COUNT frames (from a source peer, or a
 * sender guest, acknowledging every WINDOW frames when WINDOW > 0).
 * ITR, when given, sets the e1000's interrupt throttling interval (256 ns units) first.
 * Prints `net_stream dir=D frames=N bytes=B tsc=T acks=A` (T: rdtsc delta of the loop)
 * and the driver's counters.
 */
#include "net_common.h"

static unsigned char frame[2048];

/* Waits for an acknowledgement frame; other frames are counted as discarded. */
static long wait_ack(int fd, unsigned long *discarded)
{
    for (;;) {
        long n = recvfrom(fd, frame, sizeof frame, 0, NULL, NULL);
        if (n < 0)
            return n;
        if (frame_ours(frame, n) && frame_kind(frame) == KIND_RESPONSE)
            return 0;
        (*discarded)++;
    }
}

int main(int argc, char **argv)
{
    int tx = argc > 1 && strcmp(argv[1], "tx") == 0;
    if (argc < 3 || (!tx && strcmp(argv[1], "rx") != 0)) {
        printf("net_stream error=args (tx COUNT SIZE [WINDOW [ITR]] | rx COUNT [WINDOW [ITR]])\n");
        return 1;
    }
    unsigned long count = arg_ul(argc, argv, 2, 0);
    unsigned long size = tx ? arg_ul(argc, argv, 3, NET_MAX) : 0;
    if (tx && (size < NET_MIN || size > NET_MAX)) {
        printf("net_stream error=size (%d..%d)\n", NET_MIN, NET_MAX);
        return 1;
    }
    unsigned long window = arg_ul(argc, argv, tx ? 4 : 3, 0);
    int fd = net_open("net_stream");
    net_itr_arg(argc, argv, tx ? 5 : 4);
    unsigned long bytes = 0, acks = 0, discarded = 0;
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
        if (window && ((i + 1) % window == 0 || i + 1 == count)) {
            long r;
            if (tx) {
                r = wait_ack(fd, &discarded);
            } else {
                frame_header(frame, i, NET_MIN, KIND_RESPONSE);
                r = sendto(fd, frame, NET_MIN, 0, NULL, 0);
            }
            if (r < 0) {
                printf("net_stream error=ack(%ld) frames=%lu\n", r, i);
                return 1;
            }
            acks++;
        }
    }
    uint64_t t1 = rdtsc();
    printf("net_stream dir=%s frames=%lu bytes=%lu tsc=%lu acks=%lu discarded=%lu\n",
           tx ? "tx" : "rx", count, bytes, (unsigned long)(t1 - t0), acks, discarded);
    net_print_stats();
    return 0;
}
