//! The frame: how every request and response travels on a connection.
//!
//! Pure byte handling, no I/O; runs on whichever core owns the connection (and, for forwarded
//! requests, the core the frame buffer was moved to). A frame is a 32-byte little-endian header,
//! an rkyv-archived body at offset 32 (16-byte aligned when the frame buffer is), and an optional
//! raw payload of whole message batches after the body, padded to 16 bytes:
//!
//! ```text
//! 0   u32 length        total frame bytes: 32 + pad16(body_bytes) + payload_bytes
//! 4   u16 version       FRAME_VERSION
//! 6   u16 kind          request kind (responses echo it)
//! 8   u64 correlation   chosen by the client, echoed in the response
//! 16  u16 status        0 in requests; a status code in responses
//! 18  u16 flags         reserved, 0
//! 20  u32 body_bytes    rkyv bytes
//! 24  u32 payload_bytes raw batch bytes after the (padded) body
//! 28  u32 header_crc    CRC32 of bytes 0..28
//! ```
//!
//! Invariants: [`FrameHeader::decode`] accepts only headers whose lengths add up, whose version
//! and reserved bits are known and whose CRC matches, and whose length is within the limit the
//! caller passes; nothing here panics on untrusted bytes.

use std::fmt;

/// Bytes of the frame header.
pub const FRAME_HEADER_BYTES: usize = 32;
/// The frame format version.
pub const FRAME_VERSION: u16 = 1;
/// Alignment of the body and payload inside a frame.
pub const FRAME_ALIGNMENT: usize = 16;

const _: () = assert!(FRAME_HEADER_BYTES % FRAME_ALIGNMENT == 0);
const _: () = assert!(4 + 2 + 2 + 8 + 2 + 2 + 4 + 4 + 4 == FRAME_HEADER_BYTES);

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Total frame bytes.
    pub length: u32,
    /// Request kind (a [`crate::protocol::messages::Kind`] value).
    pub kind: u16,
    /// Correlation id chosen by the client.
    pub correlation: u64,
    /// Status code (0 = ok; see [`crate::protocol::messages::Status`]).
    pub status: u16,
    /// Bytes of the rkyv body.
    pub body_bytes: u32,
    /// Bytes of the raw payload.
    pub payload_bytes: u32,
}

/// Why a frame header was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer than 32 bytes.
    Short(usize),
    /// The header CRC does not match: not a ringbroker frame, or corrupted.
    BadCrc {
        /// CRC in the header.
        stored: u32,
        /// CRC of the bytes.
        computed: u32,
    },
    /// Unknown frame version.
    UnsupportedVersion(u16),
    /// Reserved flag bits set.
    ReservedFlags(u16),
    /// The declared lengths do not add up.
    LengthMismatch {
        /// Declared total.
        length: u32,
        /// Header + padded body + payload.
        computed: u64,
    },
    /// The frame is larger than allowed.
    TooLarge {
        /// Declared total.
        length: u32,
        /// The limit in force.
        max: usize,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Short(n) => write!(f, "frame header needs {FRAME_HEADER_BYTES} bytes, got {n}"),
            FrameError::BadCrc { stored, computed } => {
                write!(f, "frame header CRC mismatch (stored {stored:#010x}, computed {computed:#010x})")
            }
            FrameError::UnsupportedVersion(v) => {
                write!(f, "unsupported frame version {v} (expected {FRAME_VERSION})")
            }
            FrameError::ReservedFlags(flags) => write!(f, "reserved frame flags set: {flags:#06x}"),
            FrameError::LengthMismatch { length, computed } => {
                write!(f, "frame length {length} does not match header + body + payload = {computed}")
            }
            FrameError::TooLarge { length, max } => {
                write!(f, "frame of {length} bytes exceeds the limit of {max}")
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// Rounds up to the frame alignment.
pub const fn pad16(n: usize) -> usize {
    (n + FRAME_ALIGNMENT - 1) & !(FRAME_ALIGNMENT - 1)
}

impl FrameHeader {
    /// A header for a frame with these parts.
    pub fn new(kind: u16, correlation: u64, status: u16, body_bytes: usize, payload_bytes: usize) -> Self {
        let length = FRAME_HEADER_BYTES + pad16(body_bytes) + payload_bytes;
        assert!(length <= u32::MAX as usize, "frame of {length} bytes");
        Self {
            length: length as u32,
            kind,
            correlation,
            status,
            body_bytes: body_bytes as u32,
            payload_bytes: payload_bytes as u32,
        }
    }

    /// Encodes the header (with its CRC).
    pub fn encode(&self) -> [u8; FRAME_HEADER_BYTES] {
        let mut out = [0_u8; FRAME_HEADER_BYTES];
        out[0..4].copy_from_slice(&self.length.to_le_bytes());
        out[4..6].copy_from_slice(&FRAME_VERSION.to_le_bytes());
        out[6..8].copy_from_slice(&self.kind.to_le_bytes());
        out[8..16].copy_from_slice(&self.correlation.to_le_bytes());
        out[16..18].copy_from_slice(&self.status.to_le_bytes());
        out[20..24].copy_from_slice(&self.body_bytes.to_le_bytes());
        out[24..28].copy_from_slice(&self.payload_bytes.to_le_bytes());
        let crc = crc32fast::hash(&out[0..28]);
        out[28..32].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes and checks a header from untrusted bytes; `max_frame_bytes` bounds the total.
    pub fn decode(bytes: &[u8], max_frame_bytes: usize) -> Result<Self, FrameError> {
        let Some(bytes) = bytes.get(..FRAME_HEADER_BYTES) else {
            return Err(FrameError::Short(bytes.len()));
        };
        let u16_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
        let u32_at = |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        let stored = u32_at(28);
        let computed = crc32fast::hash(&bytes[0..28]);
        if stored != computed {
            return Err(FrameError::BadCrc { stored, computed });
        }
        let version = u16_at(4);
        if version != FRAME_VERSION {
            return Err(FrameError::UnsupportedVersion(version));
        }
        let flags = u16_at(18);
        if flags != 0 {
            return Err(FrameError::ReservedFlags(flags));
        }
        let mut correlation = [0_u8; 8];
        correlation.copy_from_slice(&bytes[8..16]);
        let header = Self {
            length: u32_at(0),
            kind: u16_at(6),
            correlation: u64::from_le_bytes(correlation),
            status: u16_at(16),
            body_bytes: u32_at(20),
            payload_bytes: u32_at(24),
        };
        let computed = FRAME_HEADER_BYTES as u64
            + pad16(header.body_bytes as usize) as u64
            + u64::from(header.payload_bytes);
        if computed != u64::from(header.length) {
            return Err(FrameError::LengthMismatch { length: header.length, computed });
        }
        if header.length as usize > max_frame_bytes {
            return Err(FrameError::TooLarge { length: header.length, max: max_frame_bytes });
        }
        Ok(header)
    }

    /// Byte range of the body inside the frame.
    pub fn body_range(&self) -> std::ops::Range<usize> {
        FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + self.body_bytes as usize
    }

    /// Byte range of the payload inside the frame.
    pub fn payload_range(&self) -> std::ops::Range<usize> {
        let start = FRAME_HEADER_BYTES + pad16(self.body_bytes as usize);
        start..start + self.payload_bytes as usize
    }
}

/// Builds the header, body and padding of a frame whose payload (`payload_bytes` long) is sent
/// separately after it.
pub fn encode_head(kind: u16, correlation: u64, status: u16, body: &[u8], payload_bytes: usize) -> Vec<u8> {
    let header = FrameHeader::new(kind, correlation, status, body.len(), payload_bytes);
    let mut out = Vec::with_capacity(FRAME_HEADER_BYTES + pad16(body.len()));
    out.extend_from_slice(&header.encode());
    out.extend_from_slice(body);
    out.resize(FRAME_HEADER_BYTES + pad16(body.len()), 0);
    out
}

/// Builds a whole frame into one vector: header, body, padding, payload.
pub fn encode_frame(kind: u16, correlation: u64, status: u16, body: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = encode_head(kind, correlation, status, body, payload.len());
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_ranges() {
        let frame = encode_frame(40, 77, 0, &[1, 2, 3], &[9; 20]);
        let header = FrameHeader::decode(&frame, 1 << 20).expect("decode");
        assert_eq!(header.length as usize, frame.len());
        assert_eq!((header.kind, header.correlation, header.status), (40, 77, 0));
        assert_eq!(&frame[header.body_range()], &[1, 2, 3]);
        assert_eq!(&frame[header.payload_range()], &[9; 20]);
    }

    #[test]
    fn hostile_headers_are_refused() {
        let frame = encode_frame(1, 1, 0, &[0; 16], &[]);
        assert!(matches!(FrameHeader::decode(&frame[..10], 1 << 20), Err(FrameError::Short(10))));
        assert!(matches!(FrameHeader::decode(&frame, 40), Err(FrameError::TooLarge { .. })));
        for at in 0..FRAME_HEADER_BYTES {
            let mut bad = frame.clone();
            bad[at] ^= 0x40;
            assert!(FrameHeader::decode(&bad, 1 << 20).is_err(), "flip at {at}");
        }
        // A consistent CRC over inconsistent lengths is still refused.
        let mut header = FrameHeader::new(1, 1, 0, 16, 0);
        header.payload_bytes = 5;
        assert!(matches!(
            FrameHeader::decode(&header.encode(), 1 << 20),
            Err(FrameError::LengthMismatch { .. })
        ));
        let mut random = 0x1234_5678_9ABC_DEF0_u64;
        for _ in 0..10_000 {
            let mut bytes = [0_u8; FRAME_HEADER_BYTES];
            for b in bytes.iter_mut() {
                random ^= random << 13;
                random ^= random >> 7;
                random ^= random << 17;
                *b = random as u8;
            }
            let _ = FrameHeader::decode(&bytes, usize::MAX);
        }
    }
}
