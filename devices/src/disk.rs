//! The disk behind both block paths (the AHCI-like controller and blkback), as
//! `docs/io.md` section 7 specifies it: a sparse image of 512-byte sectors behind a timing
//! model.
//!
//! Why one model for both paths: a block benchmark compares what the paths add on top of
//! the same device, so the disk must cost the same whoever drives it. It knows no
//! controller, ring or guest; its callers hand it requests with the time they arrive
//! ([`Disk::schedule`]) and move the data separately ([`Disk::read`], [`Disk::write`]), so
//! the data a command moves and the time it takes are independent.
//!
//! # Timing
//!
//! Requests are served one at a time, in arrival order: a request starts when it arrives
//! or when the disk finishes the work before it, whichever is later (the difference is
//! counted as queue wait). A read or write costs `access_ns` (the seek and rotation of a
//! random access) unless it starts at the sector where the previous read or write ended
//! (sequential; the very first request is random), plus its bytes at `mb_per_s`
//! (10^6 bytes per second): `ceil(bytes * 1000 / mb_per_s)` ns. A flush costs nothing of
//! its own and moves no head: it completes when the disk is idle, at the end of the work
//! queued before it. Times are integer nanoseconds, so the same requests give the same
//! completions on every host.
//!
//! # Data
//!
//! Storage is sparse: 4 KiB chunks (eight sectors), allocated on the first write that
//! touches them, so a disk of many GiB costs nothing until written. A sector never written
//! reads as its own LBA (u64, little-endian) in its first eight bytes and zeros after, so a
//! read can be checked without writing first; a chunk allocated by a write starts from
//! that pattern, so its other sectors still read as never written.

use crate::error::DeviceError;
use serde::Serialize;
use std::collections::BTreeMap;

/// Bytes of one sector.
pub const SECTOR_BYTES: u64 = 512;

/// Sectors of one storage chunk (4 KiB).
const CHUNK_SECTORS: u64 = 8;
/// Bytes of one storage chunk.
const CHUNK_BYTES: usize = (CHUNK_SECTORS * SECTOR_BYTES) as usize;
/// [`SECTOR_BYTES`] as an index.
const SECTOR: usize = SECTOR_BYTES as usize;

/// A disk's size and speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskConfig {
    /// Size in 512-byte sectors (at least 1).
    pub sectors: u64,
    /// Cost of a random access (seek and rotation) in nanoseconds.
    pub access_ns: u64,
    /// Transfer rate in 10^6 bytes per second (at least 1).
    pub mb_per_s: u64,
}

/// What a request asks of the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DiskOp {
    /// Sectors from the disk.
    Read,
    /// Sectors to the disk.
    Write,
    /// Completes once everything before it has (no data).
    Flush,
}

/// Counters of the disk's timing model (what [`Disk::schedule`] was asked for; the
/// functional [`Disk::read`] and [`Disk::write`] count nothing).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DiskStats {
    /// Read requests.
    pub reads: u64,
    /// Write requests.
    pub writes: u64,
    /// Flush requests.
    pub flushes: u64,
    /// Sectors of the read requests.
    pub sectors_read: u64,
    /// Sectors of the write requests.
    pub sectors_written: u64,
    /// Reads and writes that started where the previous one ended (no access cost).
    pub sequential: u64,
    /// Reads and writes that paid the access cost.
    pub random: u64,
    /// Nanoseconds the disk spent serving requests (access plus transfer).
    pub busy_ns: u64,
    /// Nanoseconds requests waited behind earlier ones (start minus arrival, summed).
    pub queue_wait_ns: u64,
}

/// The disk: sparse contents and the timing state.
#[derive(Debug, Clone)]
pub struct Disk {
    cfg: DiskConfig,
    /// Written chunks by chunk index (LBA / 8).
    chunks: BTreeMap<u64, Box<[u8; CHUNK_BYTES]>>,
    /// When the disk finishes the work queued so far.
    free_at: u64,
    /// The sector after the last read or write (`None` before any): where a sequential
    /// request starts.
    head: Option<u64>,
    stats: DiskStats,
}

impl Disk {
    /// An idle disk with nothing written. Refuses a disk without sectors, one whose bytes
    /// do not fit in 64 bits, and a zero transfer rate.
    pub fn new(cfg: DiskConfig) -> Result<Self, DeviceError> {
        if cfg.sectors == 0 {
            return Err(DeviceError::BadDisk {
                field: "sectors",
                value: 0,
                reason: "a disk needs at least one sector",
            });
        }
        if cfg.sectors.checked_mul(SECTOR_BYTES).is_none() {
            return Err(DeviceError::BadDisk {
                field: "sectors",
                value: cfg.sectors,
                reason: "the disk's size in bytes does not fit in 64 bits",
            });
        }
        if cfg.mb_per_s == 0 {
            return Err(DeviceError::BadDisk {
                field: "mb_per_s",
                value: 0,
                reason: "the transfer rate must be at least 1 MB/s",
            });
        }
        Ok(Self {
            cfg,
            chunks: BTreeMap::new(),
            free_at: 0,
            head: None,
            stats: DiskStats::default(),
        })
    }

    /// Size in sectors.
    pub fn sectors(&self) -> u64 {
        self.cfg.sectors
    }

    /// A request arriving at `now_ns`: served after every earlier one (one at a time,
    /// arrival order). A read or write costs `access_ns` unless it starts at the sector
    /// where the previous one ended (sequential), plus `count * 512` bytes at `mb_per_s`;
    /// a flush costs nothing of its own and completes when the disk is idle. Returns the
    /// completion time in nanoseconds. The range is not checked against the disk's size
    /// (the caller refuses such commands before they get here); `lba` and `count` of a
    /// flush are ignored.
    pub fn schedule(&mut self, now_ns: u64, op: DiskOp, lba: u64, count: u64) -> u64 {
        let start = now_ns.max(self.free_at);
        self.stats.queue_wait_ns += start - now_ns;
        match op {
            DiskOp::Flush => {
                self.stats.flushes += 1;
                return start;
            }
            DiskOp::Read => {
                self.stats.reads += 1;
                self.stats.sectors_read += count;
            }
            DiskOp::Write => {
                self.stats.writes += 1;
                self.stats.sectors_written += count;
            }
        }
        let access = if self.head == Some(lba) {
            self.stats.sequential += 1;
            0
        } else {
            self.stats.random += 1;
            self.cfg.access_ns
        };
        let cost = access.saturating_add(self.transfer_ns(count));
        let done = start.saturating_add(cost);
        self.stats.busy_ns = self.stats.busy_ns.saturating_add(cost);
        self.free_at = done;
        self.head = Some(lba.saturating_add(count));
        done
    }

    /// Reads the sectors from `lba` into `buf` (no timing). False, and nothing read, if
    /// `buf.len()` is not a multiple of 512 or a sector lies beyond the disk.
    pub fn read(&self, lba: u64, buf: &mut [u8]) -> bool {
        if !self.fits(lba, buf.len()) {
            return false;
        }
        for (sector, out) in (lba..).zip(buf.chunks_exact_mut(SECTOR)) {
            match self.chunks.get(&(sector / CHUNK_SECTORS)) {
                Some(chunk) => {
                    let at = chunk_offset(sector);
                    out.copy_from_slice(&chunk[at..at + SECTOR]);
                }
                None => fill_unwritten(out, sector),
            }
        }
        true
    }

    /// Writes `data` to the sectors from `lba` (no timing). False, and nothing written, if
    /// `data.len()` is not a multiple of 512 or a sector lies beyond the disk.
    pub fn write(&mut self, lba: u64, data: &[u8]) -> bool {
        if !self.fits(lba, data.len()) {
            return false;
        }
        for (sector, bytes) in (lba..).zip(data.chunks_exact(SECTOR)) {
            let index = sector / CHUNK_SECTORS;
            let chunk = self.chunks.entry(index).or_insert_with(|| new_chunk(index));
            let at = chunk_offset(sector);
            chunk[at..at + SECTOR].copy_from_slice(bytes);
        }
        true
    }

    /// Counters so far.
    pub fn stats(&self) -> &DiskStats {
        &self.stats
    }

    /// Chunks allocated so far (each 4 KiB of written storage).
    pub fn allocated_chunks(&self) -> usize {
        self.chunks.len()
    }

    /// Whether `len` bytes from `lba` are whole sectors on the disk.
    fn fits(&self, lba: u64, len: usize) -> bool {
        let len = len as u64;
        len.is_multiple_of(SECTOR_BYTES)
            && lba
                .checked_add(len / SECTOR_BYTES)
                .is_some_and(|end| end <= self.cfg.sectors)
    }

    /// Nanoseconds to transfer `count` sectors: `ceil(bytes * 1000 / mb_per_s)`.
    fn transfer_ns(&self, count: u64) -> u64 {
        let scaled = u128::from(count) * u128::from(SECTOR_BYTES) * 1000;
        let ns = scaled.div_ceil(u128::from(self.cfg.mb_per_s));
        u64::try_from(ns).unwrap_or(u64::MAX)
    }
}

/// Byte offset of `sector` in its chunk.
fn chunk_offset(sector: u64) -> usize {
    (sector % CHUNK_SECTORS) as usize * SECTOR
}

/// The contents of a never-written sector: its LBA, little-endian, then zeros.
fn fill_unwritten(out: &mut [u8], sector: u64) {
    out[..8].copy_from_slice(&sector.to_le_bytes());
    out[8..].fill(0);
}

/// A chunk as never written: every sector holds its own LBA.
fn new_chunk(index: u64) -> Box<[u8; CHUNK_BYTES]> {
    let mut chunk = Box::new([0u8; CHUNK_BYTES]);
    let first = index * CHUNK_SECTORS;
    for (sector, out) in (first..).zip(chunk.chunks_exact_mut(SECTOR)) {
        fill_unwritten(out, sector);
    }
    chunk
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(access_ns: u64, mb_per_s: u64) -> Disk {
        Disk::new(DiskConfig {
            sectors: 1 << 24, // 8 GiB
            access_ns,
            mb_per_s,
        })
        .expect("valid disk")
    }

    fn lba_of(sector: &[u8]) -> u64 {
        u64::from_le_bytes(sector[..8].try_into().expect("8 bytes"))
    }

    #[test]
    fn bad_configurations_name_their_field() {
        let good = DiskConfig {
            sectors: 8,
            access_ns: 0,
            mb_per_s: 1,
        };
        assert!(Disk::new(good).is_ok());
        let no_sectors = Disk::new(DiskConfig { sectors: 0, ..good });
        assert!(matches!(
            no_sectors,
            Err(DeviceError::BadDisk {
                field: "sectors",
                ..
            })
        ));
        let huge = Disk::new(DiskConfig {
            sectors: u64::MAX / 512 + 1,
            ..good
        });
        assert!(matches!(
            huge,
            Err(DeviceError::BadDisk {
                field: "sectors",
                ..
            })
        ));
        let still = Disk::new(DiskConfig {
            mb_per_s: 0,
            ..good
        });
        let err = still.expect_err("zero rate");
        assert_eq!(
            err.to_string(),
            "disk: mb_per_s = 0: the transfer rate must be at least 1 MB/s"
        );
    }

    #[test]
    fn random_then_sequential_requests_cost_access_only_once() {
        // 100 us access, 500 MB/s: 4 KiB = 4096 * 1000 / 500 = 8192 ns.
        let mut d = disk(100_000, 500);
        assert_eq!(
            d.schedule(1_000, DiskOp::Read, 100, 8),
            1_000 + 100_000 + 8_192
        );
        // Arrives after the first finished, starts at its end sector: transfer only.
        assert_eq!(d.schedule(200_000, DiskOp::Read, 108, 8), 200_000 + 8_192);
        // A write elsewhere pays the access again; one right after it does not.
        assert_eq!(
            d.schedule(300_000, DiskOp::Write, 5_000, 16),
            300_000 + 100_000 + 16_384
        );
        assert_eq!(d.schedule(500_000, DiskOp::Read, 5_016, 1), 500_000 + 1_024);
        // Going back to where an earlier request started is random.
        assert_eq!(
            d.schedule(600_000, DiskOp::Read, 5_000, 1),
            600_000 + 100_000 + 1_024
        );
        let s = d.stats();
        assert_eq!((s.reads, s.writes, s.flushes), (4, 1, 0));
        assert_eq!((s.sectors_read, s.sectors_written), (18, 16));
        assert_eq!((s.sequential, s.random), (2, 3));
        assert_eq!(s.busy_ns, 3 * 100_000 + 8_192 * 2 + 16_384 + 1_024 * 2);
        assert_eq!(s.queue_wait_ns, 0);
    }

    #[test]
    fn requests_queue_behind_earlier_work_in_arrival_order() {
        let mut d = disk(50_000, 1_000);
        // 8 sectors at 1000 MB/s: 4096 ns.
        let first = d.schedule(0, DiskOp::Read, 0, 8);
        assert_eq!(first, 54_096);
        // Arrives while the first is served: starts at its end; sequential.
        let second = d.schedule(10_000, DiskOp::Read, 8, 8);
        assert_eq!(second, 54_096 + 4_096);
        // Random, arriving while both are queued.
        let third = d.schedule(20_000, DiskOp::Write, 1_000, 8);
        assert_eq!(third, second + 50_000 + 4_096);
        let s = d.stats();
        assert_eq!(s.queue_wait_ns, (54_096 - 10_000) + (second - 20_000));
        assert_eq!(s.busy_ns, third);
    }

    #[test]
    fn a_flush_completes_when_the_disk_is_idle_and_costs_nothing() {
        let mut d = disk(100_000, 500);
        // On an idle disk: at once.
        assert_eq!(d.schedule(7, DiskOp::Flush, 0, 0), 7);
        let write = d.schedule(1_000, DiskOp::Write, 64, 8);
        assert_eq!(write, 1_000 + 100_000 + 8_192);
        // Behind the write: at its end, adding nothing.
        assert_eq!(d.schedule(2_000, DiskOp::Flush, 0, 0), write);
        // The flush moved no head and took no time: the next write is sequential and
        // starts where the first ended.
        assert_eq!(d.schedule(3_000, DiskOp::Write, 72, 8), write + 8_192);
        let s = d.stats();
        assert_eq!(s.flushes, 2);
        assert_eq!((s.sequential, s.random), (1, 1));
        assert_eq!(s.busy_ns, 100_000 + 2 * 8_192);
        assert_eq!(s.queue_wait_ns, (write - 2_000) + (write - 3_000));
    }

    #[test]
    fn transfer_time_rounds_up_to_the_next_nanosecond() {
        // 4096 bytes at 300 MB/s: 13653.33 ns -> 13654.
        let mut d = disk(0, 300);
        assert_eq!(d.schedule(0, DiskOp::Read, 0, 8), 13_654);
        // 512 bytes at 3 MB/s: 170666.67 -> 170667, sequential.
        let mut slow = disk(10, 3);
        assert_eq!(slow.schedule(0, DiskOp::Read, 0, 1), 10 + 170_667);
        assert_eq!(slow.schedule(0, DiskOp::Read, 1, 1), 10 + 2 * 170_667);
        // 1 MiB at 1000 MB/s: exactly 1048576 ns.
        let mut fast = disk(0, 1_000);
        assert_eq!(fast.schedule(5, DiskOp::Write, 0, 2_048), 5 + 1_048_576);
        // A zero-sector read costs only the access.
        let mut z = disk(42, 1);
        assert_eq!(z.schedule(0, DiskOp::Read, 9, 0), 42);
    }

    #[test]
    fn an_unwritten_sector_reads_as_its_lba() {
        let d = disk(0, 1);
        let mut buf = vec![0xffu8; 3 * 512];
        assert!(d.read(0x0012_3456, &mut buf));
        for (i, sector) in buf.chunks_exact(512).enumerate() {
            assert_eq!(lba_of(sector), 0x0012_3456 + i as u64);
            assert!(sector[8..].iter().all(|&b| b == 0), "sector {i}");
        }
        // The last sector of the disk is readable, the one after it is not.
        let last = d.sectors() - 1;
        assert!(d.read(last, &mut buf[..512]));
        assert_eq!(lba_of(&buf), last);
        assert!(!d.read(last, &mut buf[..1024]));
        assert!(!d.read(u64::MAX, &mut buf[..512]));
        // Partial sectors are refused.
        assert!(!d.read(0, &mut buf[..100]));
        assert_eq!(d.allocated_chunks(), 0);
    }

    #[test]
    fn writes_round_trip_across_chunk_boundaries() {
        let mut d = disk(0, 1);
        // Sectors 6..=17: the end of chunk 0, all of chunk 1, the start of chunk 2.
        let data: Vec<u8> = (0..12 * 512).map(|i| (i * 7 % 251) as u8).collect();
        assert!(d.write(6, &data));
        assert_eq!(d.allocated_chunks(), 3);
        let mut back = vec![0u8; data.len()];
        assert!(d.read(6, &mut back));
        assert_eq!(back, data);
        // The untouched sectors of the allocated chunks still read as their LBAs.
        let mut s = vec![0u8; 512];
        for lba in [0, 5, 18, 23] {
            assert!(d.read(lba, &mut s));
            assert_eq!(lba_of(&s), lba, "sector {lba}");
            assert!(s[8..].iter().all(|&b| b == 0));
        }
        // A read spanning written and unwritten sectors gets both.
        let mut span = vec![0u8; 4 * 512];
        assert!(d.read(4, &mut span));
        assert_eq!(lba_of(&span[..512]), 4);
        assert_eq!(lba_of(&span[512..]), 5);
        assert_eq!(&span[1024..], &data[..1024]);
        // Rewriting one sector changes only that one.
        assert!(d.write(10, &[0xaa; 512]));
        assert!(d.read(6, &mut back));
        assert_eq!(&back[..4 * 512], &data[..4 * 512]);
        assert!(back[4 * 512..5 * 512].iter().all(|&b| b == 0xaa));
        assert_eq!(&back[5 * 512..], &data[5 * 512..]);
        // Refused writes change nothing.
        assert!(!d.write(d.sectors(), &[1; 512]));
        assert!(!d.write(0, &[1; 511]));
        assert_eq!(d.allocated_chunks(), 3);
        // Functional access counts nothing in the timing model.
        assert_eq!(d.stats(), &DiskStats::default());
    }
}
