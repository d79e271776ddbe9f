/*
 * dd read|write BLOCK_KIB COUNT [seq|rand [SEED]]: COUNT I/Os of BLOCK_KIB KiB (1..256)
 * on /dev/vda (docs/io.md section 7c) with pread64/pwrite64.
 *
 * seq (the default): from offset 0, each I/O after the previous one, back to 0 when the
 * next would pass the disk's end. rand: at block-aligned offsets drawn from a fixed LCG
 * (Knuth's MMIX constants, the high bits), seeded with SEED (default 1): the same
 * arguments give the same offsets.
 *
 * read checks every sector it reads: a sector never written holds its LBA (u64,
 * little-endian) in its first 8 bytes and zeros after; a sector holding the pattern
 * `dd write` puts there is counted as written; anything else is a mismatch.
 * write fills each sector with that pattern: bytes 0..7 the LBA xor 0xDDDD000000000000,
 * bytes 8..15 "hvsim-dd", the rest 0xDD.
 *
 * Prints `dd op=O pattern=P block_kib=K ios=N bytes=B errors=E mismatches=M written=W
 * elapsed_ns=T io_ns=I` (T: CLOCK_MONOTONIC over the whole loop, I: inside the system
 * calls only), then the driver's counters (hvsim_blk(0), on the console). Exits 1 on a
 * failed I/O or a mismatch.
 */
#include "libc.h"

#define NR_HVSIM_BLK 502
#define SECTOR 512
#define MAX_KIB 256
#define WRITE_MAGIC 0xDDDD000000000000UL

static unsigned char buf[MAX_KIB * 1024] __attribute__((aligned(4096)));

static void fill_written(unsigned char *s, uint64_t lba)
{
    uint64_t w = lba ^ WRITE_MAGIC;
    memcpy(s, &w, 8);
    memcpy(s + 8, "hvsim-dd", 8);
    memset(s + 16, 0xDD, SECTOR - 16);
}

static int is_fresh(const unsigned char *s, uint64_t lba)
{
    uint64_t w;
    memcpy(&w, s, 8);
    if (w != lba)
        return 0;
    for (int i = 8; i < SECTOR; i++)
        if (s[i])
            return 0;
    return 1;
}

static int is_written(const unsigned char *s, uint64_t lba)
{
    static unsigned char want[SECTOR];
    fill_written(want, lba);
    return memcmp(s, want, SECTOR) == 0;
}

int main(int argc, char **argv)
{
    int wr = argc > 1 && strcmp(argv[1], "write") == 0;
    if (argc < 4 || (!wr && strcmp(argv[1], "read") != 0)) {
        printf("dd error=args (read|write BLOCK_KIB COUNT [seq|rand [SEED]])\n");
        return 1;
    }
    unsigned long kib = arg_ul(argc, argv, 2, 0);
    unsigned long count = arg_ul(argc, argv, 3, 0);
    int rnd = argc > 4 && strcmp(argv[4], "rand") == 0;
    if (argc > 4 && !rnd && strcmp(argv[4], "seq") != 0) {
        printf("dd error=pattern (seq|rand)\n");
        return 1;
    }
    uint64_t seed = arg_ul(argc, argv, 5, 1);
    if (kib < 1 || kib > MAX_KIB) {
        printf("dd error=block_kib (1..%d)\n", MAX_KIB);
        return 1;
    }
    int fd = open("/dev/vda", wr ? O_WRONLY : O_RDONLY);
    if (fd == -ENODEV) {
        printf("dd error=no_disk\n");
        return 1;
    }
    if (fd < 0) {
        printf("dd error=open(%d)\n", fd);
        return 1;
    }
    long sectors = syscall1(NR_HVSIM_BLK, 2);
    uint64_t block = kib * 1024;
    uint64_t disk = sectors > 0 ? (uint64_t)sectors * SECTOR : 0;
    if (disk < block) {
        printf("dd error=disk_too_small (%ld sectors)\n", sectors);
        return 1;
    }
    uint64_t nblocks = disk / block;

    uint64_t off = 0, bytes = 0, io_ns = 0, errors = 0, mismatches = 0, written = 0;
    uint64_t t0 = now_ns();
    for (unsigned long i = 0; i < count; i++) {
        if (rnd) {
            seed = seed * 6364136223846793005UL + 1442695040888963407UL;
            off = ((seed >> 33) % nblocks) * block;
        } else if (off + block > disk) {
            off = 0;
        }
        uint64_t lba = off / SECTOR;
        if (wr)
            for (uint64_t s = 0; s < block / SECTOR; s++)
                fill_written(buf + s * SECTOR, lba + s);
        uint64_t a = now_ns();
        long n = wr ? pwrite64(fd, buf, block, (long)off) : pread64(fd, buf, block, (long)off);
        io_ns += now_ns() - a;
        if (n != (long)block) {
            if (errors++ == 0)
                printf("dd error=%s(%ld) io=%lu offset=%lu\n", wr ? "pwrite64" : "pread64", n,
                       i, off);
        } else {
            bytes += block;
            if (!wr)
                for (uint64_t s = 0; s < block / SECTOR; s++) {
                    const unsigned char *p = buf + s * SECTOR;
                    if (is_fresh(p, lba + s))
                        continue;
                    if (is_written(p, lba + s)) {
                        written++;
                        continue;
                    }
                    if (mismatches++ == 0)
                        printf("dd mismatch lba=%lu\n", lba + s);
                }
        }
        if (!rnd)
            off += block;
    }
    uint64_t elapsed = now_ns() - t0;
    printf("dd op=%s pattern=%s block_kib=%lu ios=%lu bytes=%lu errors=%lu mismatches=%lu "
           "written=%lu elapsed_ns=%lu io_ns=%lu\n",
           wr ? "write" : "read", rnd ? "rand" : "seq", kib, count, bytes, errors, mismatches,
           written, elapsed, io_ns);
    fflush_stdout();
    syscall1(NR_HVSIM_BLK, 0);
    close(fd);
    return errors || mismatches ? 1 : 0;
}
