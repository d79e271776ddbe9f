//! Network frames as they cross the modelled wire: a length, a sequence number and a kind,
//! carried in a 32-byte header at the start of the frame in guest memory (see the frame
//! table in `docs/io.md`). Devices and backends write the header and zero the payload when a
//! frame enters a guest, and parse the header when a guest sends one, so the peer can match
//! responses to requests. Payload contents are not modelled (zeros): no cost in the model
//! depends on them.

use crate::dma::Dma;
use serde::Serialize;

/// Bytes of the hvsim frame header.
pub const HEADER_BYTES: usize = 32;
/// Smallest frame (an Ethernet minimum without the FCS).
pub const MIN_LEN: u32 = 60;
/// Largest frame (a 1500-byte MTU plus the Ethernet header).
pub const MAX_LEN: u32 = 1514;
/// The header's ethertype (IEEE 802 local experimental ethertype 1).
pub const ETHERTYPE: u16 = 0x88b5;
/// The peer's MAC address.
pub const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
/// The guest's MAC address.
pub const GUEST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FrameKind {
    /// Bulk data (stream tests).
    Data,
    /// A request expecting a response with the same sequence number.
    Request,
    /// A response to the request with the same sequence number.
    Response,
}

impl FrameKind {
    fn code(self) -> u32 {
        match self {
            FrameKind::Data => 0,
            FrameKind::Request => 1,
            FrameKind::Response => 2,
        }
    }

    fn from_code(c: u32) -> Option<Self> {
        match c {
            0 => Some(FrameKind::Data),
            1 => Some(FrameKind::Request),
            2 => Some(FrameKind::Response),
            _ => None,
        }
    }
}

/// One frame on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Frame {
    /// Bytes, header included ([`MIN_LEN`]..=[`MAX_LEN`] for a well-formed frame).
    pub len: u32,
    /// Sequence number (requests and their responses share one).
    pub seq: u64,
    /// What it carries.
    pub kind: FrameKind,
}

impl Frame {
    /// The frame's header bytes, addressed from `src` to `dst`.
    pub fn header(&self, dst: [u8; 6], src: [u8; 6]) -> [u8; HEADER_BYTES] {
        let mut h = [0u8; HEADER_BYTES];
        h[0..6].copy_from_slice(&dst);
        h[6..12].copy_from_slice(&src);
        h[12..14].copy_from_slice(&ETHERTYPE.to_be_bytes());
        h[16..24].copy_from_slice(&self.seq.to_le_bytes());
        h[24..28].copy_from_slice(&self.len.to_le_bytes());
        h[28..32].copy_from_slice(&self.kind.code().to_le_bytes());
        h
    }

    /// Parses a frame of `len` bytes from its header; `None` when the header is not an
    /// hvsim frame (wrong ethertype or kind), which the caller counts as malformed. The
    /// length is the one the sender gave (descriptor or request), not the header's field.
    pub fn parse(header: &[u8; HEADER_BYTES], len: u32) -> Option<Frame> {
        if u16::from_be_bytes([header[12], header[13]]) != ETHERTYPE {
            return None;
        }
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&header[16..24]);
        let mut kind = [0u8; 4];
        kind.copy_from_slice(&header[28..32]);
        Some(Frame {
            len,
            seq: u64::from_le_bytes(seq),
            kind: FrameKind::from_code(u32::from_le_bytes(kind))?,
        })
    }

    /// Reads and parses the frame of `len` bytes at `gpa`; `None` if the header is out of
    /// memory or malformed, or `len` is out of range.
    pub fn read_from(dma: &mut dyn Dma, gpa: u64, len: u32) -> Option<Frame> {
        if !(MIN_LEN..=MAX_LEN).contains(&len) {
            return None;
        }
        let mut h = [0u8; HEADER_BYTES];
        if !dma.read(gpa, &mut h) {
            return None;
        }
        Frame::parse(&h, len)
    }

    /// Writes the frame (header addressed to the guest, zero payload) at `gpa`, at most
    /// `room` bytes; returns the bytes written, or `None` if they do not fit in memory.
    pub fn write_to(&self, dma: &mut dyn Dma, gpa: u64, room: u32) -> Option<u32> {
        let n = self.len.min(room).min(MAX_LEN) as usize;
        let h = self.header(GUEST_MAC, PEER_MAC);
        let mut buf = [0u8; MAX_LEN as usize];
        let hn = n.min(HEADER_BYTES);
        buf[..hn].copy_from_slice(&h[..hn]);
        dma.write(gpa, &buf[..n]).then_some(n as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_frame_parses_back() {
        let mut m = vec![0xffu8; 4096];
        let f = Frame {
            len: 100,
            seq: 0x1234_5678_9abc,
            kind: FrameKind::Request,
        };
        assert_eq!(f.write_to(&mut m, 64, 2048), Some(100));
        assert_eq!(Frame::read_from(&mut m, 64, 100), Some(f));
        // The payload is zeroed, the byte after the frame untouched.
        assert_eq!(m[64 + 99], 0);
        assert_eq!(m[64 + 100], 0xff);
        assert_eq!(&m[64..70], &GUEST_MAC);
    }

    #[test]
    fn malformed_frames_are_refused() {
        let mut m = vec![0u8; 4096];
        // Zero ethertype.
        assert_eq!(Frame::read_from(&mut m, 0, 100), None);
        let f = Frame {
            len: 60,
            seq: 1,
            kind: FrameKind::Data,
        };
        f.write_to(&mut m, 0, 60);
        assert!(Frame::read_from(&mut m, 0, 60).is_some());
        assert_eq!(Frame::read_from(&mut m, 0, 59), None);
        assert_eq!(Frame::read_from(&mut m, 0, 1515), None);
        assert_eq!(Frame::read_from(&mut m, 4090, 60), None);
        m[28] = 7;
        assert_eq!(Frame::read_from(&mut m, 0, 60), None);
        // Truncated to the room given.
        assert_eq!(f.write_to(&mut m, 0, 20), Some(20));
    }
}
