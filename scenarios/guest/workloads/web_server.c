/*
 * web_server COUNT RESPONSE_BYTES WORK [ITR]: serves COUNT requests from the client peer:
 * receive a request frame (other frames are discarded and counted), do WORK units of
 * computation (one unit: a hash pass over a 16 KiB buffer, writing one word per cache
 * line back), then send the response as ceil(RESPONSE_BYTES / 1482) response frames
 * carrying the request's seq: full 1514-byte frames, the last one the remainder plus the
 * 32-byte header (at least 60 bytes; one 60-byte frame when RESPONSE_BYTES is 0). ITR,
 * when given, sets the e1000's interrupt throttling interval (256 ns units) first.
 * Prints `web_server requests=N tsc=T responses=F discarded=D` and the driver's counters.
 */
#include "net_common.h"

#define WORK_WORDS (16384 / 8)

static unsigned char req[2048], rsp[2048];
static uint64_t work_buf[WORK_WORDS];
static volatile uint64_t work_sink;

static uint64_t work(unsigned long units, uint64_t h)
{
    for (unsigned long u = 0; u < units; u++) {
        for (unsigned long i = 0; i < WORK_WORDS; i++) {
            h = (h ^ work_buf[i]) * 0x100000001b3UL; /* FNV-1a step on words */
            if ((i & 7) == 7)
                work_buf[i] = h;
        }
    }
    return h;
}

int main(int argc, char **argv)
{
    unsigned long count = arg_ul(argc, argv, 1, 100);
    unsigned long resp_bytes = arg_ul(argc, argv, 2, 1024);
    unsigned long units = arg_ul(argc, argv, 3, 1);
    int fd = net_open("web_server");
    net_itr_arg(argc, argv, 4);
    unsigned long nframes = resp_bytes ? (resp_bytes + NET_PAYLOAD_MAX - 1) / NET_PAYLOAD_MAX : 1;
    unsigned long last = resp_bytes - (nframes - 1) * NET_PAYLOAD_MAX + NET_HDR;
    if (last < NET_MIN)
        last = NET_MIN;
    for (unsigned long i = 0; i < WORK_WORDS; i++)
        work_buf[i] = i * 0x9E3779B97F4A7C15UL;
    unsigned long discarded = 0, responses = 0;
    uint64_t h = 0xcbf29ce484222325UL;
    uint64_t t0 = rdtsc();
    for (unsigned long r = 0; r < count; r++) {
        long n;
        for (;;) {
            n = recvfrom(fd, req, sizeof req, 0, NULL, NULL);
            if (n < 0) {
                printf("web_server error=recvfrom(%ld) requests=%lu\n", n, r);
                return 1;
            }
            if (frame_ours(req, n) && frame_kind(req) == KIND_REQUEST)
                break;
            discarded++;
        }
        uint64_t seq = frame_seq(req);
        h = work(units, h ^ seq);
        for (unsigned long k = 0; k < nframes; k++) {
            unsigned long size = k + 1 < nframes ? NET_MAX : last;
            frame_header(rsp, seq, (uint32_t)size, KIND_RESPONSE);
            n = sendto(fd, rsp, size, 0, NULL, 0);
            if (n < 0) {
                printf("web_server error=sendto(%ld) requests=%lu\n", n, r);
                return 1;
            }
            responses++;
        }
    }
    uint64_t t1 = rdtsc();
    work_sink = h;
    printf("web_server requests=%lu tsc=%lu responses=%lu discarded=%lu\n", count,
           (unsigned long)(t1 - t0), responses, discarded);
    net_print_stats();
    return 0;
}
