//! Frames on the client side: encoding requests, reading responses off the socket into aligned
//! buffers, and turning a response frame into a typed body and its payload.
//!
//! Runs on the connection's reader task (reading) and on calling tasks (encoding, decoding).
//!
//! Invariants: a [`Frame`] holds exactly one whole frame whose header passed
//! [`FrameHeader::decode`], in an [`AlignedVec`] so the body at offset 32 is 16-byte aligned, as
//! rkyv's validating access needs. Encoding never hands [`FrameHeader::new`] a length it would
//! assert on: oversized requests are refused with [`ClientError::InvalidRequest`] first.

use bytes::Bytes;
use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor::Error as RkyvError;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::error::ClientError;
use crate::protocol::frame::{pad16, FrameHeader, FRAME_ALIGNMENT, FRAME_HEADER_BYTES};
use crate::protocol::messages::{self, ErrorBody, Kind, Status};

/// A body the client can send: any type [`messages::encode`] accepts (every request type in
/// [`messages`]).
pub trait RequestBody: for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, RkyvError>> {}

impl<T> RequestBody for T where T: for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, RkyvError>> {}

/// A body the client can receive: any type [`messages::decode`] accepts (every response type in
/// [`messages`]).
pub trait ResponseBody:
    Archive<
        Archived: for<'a> CheckBytes<HighValidator<'a, RkyvError>>
                      + Deserialize<Self, HighDeserializer<RkyvError>>,
    > + Sized
{
}

impl<T> ResponseBody for T
where
    T: Archive,
    T::Archived:
        for<'a> CheckBytes<HighValidator<'a, RkyvError>> + Deserialize<T, HighDeserializer<RkyvError>>,
{
}

/// Encodes a request frame: header, body, padding to 16 bytes, then the payload parts back to
/// back (the same bytes [`crate::protocol::frame::encode_frame`] makes from their concatenation,
/// without building the concatenation first).
pub(crate) fn encode_request(
    kind: Kind,
    correlation: u64,
    body: &[u8],
    payload: &[&[u8]],
) -> Result<Vec<u8>, ClientError> {
    let payload_bytes: usize = payload.iter().map(|part| part.len()).sum();
    let length = FRAME_HEADER_BYTES as u64 + pad16(body.len()) as u64 + payload_bytes as u64;
    if length > u64::from(u32::MAX) {
        return Err(ClientError::InvalidRequest(format!(
            "a {kind:?} frame of {length} bytes exceeds the format's limit of {} bytes",
            u32::MAX
        )));
    }
    let header = FrameHeader::new(kind as u16, correlation, Status::Ok as u16, body.len(), payload_bytes);
    let mut frame = take_buffer(header.length as usize);
    frame.extend_from_slice(&header.encode());
    frame.extend_from_slice(body);
    frame.resize(FRAME_HEADER_BYTES + pad16(body.len()), 0);
    for part in payload {
        frame.extend_from_slice(part);
    }
    debug_assert_eq!(frame.len(), header.length as usize);
    Ok(frame)
}

/// Request buffers smaller than this are allocated plainly; larger ones come from the pool.
const POOLED_BYTES_MIN: usize = 64 * 1024;
/// Request buffers larger than this are never pooled.
const POOLED_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Most buffers the pool keeps, and most bytes of capacity.
const POOL_BUFFERS_MAX: usize = 16;
const POOL_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Written request frames, kept for the next large request. A fresh megabyte per produce cost
/// the client more in page faults and page clearing than the copy itself (`perf` under
/// ringbench: about 10% of the machine); a reused buffer is already mapped. Process-wide,
/// bounded; shared by every connection (one short lock per large request).
static REQUEST_POOL: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());

/// An empty buffer with room for `len` bytes, reused when the pool has one that fits.
fn take_buffer(len: usize) -> Vec<u8> {
    if (POOLED_BYTES_MIN..=POOLED_BYTES_MAX).contains(&len) {
        let mut pool = REQUEST_POOL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(index) = pool.iter().position(|buffer| buffer.capacity() >= len) {
            let mut buffer = pool.swap_remove(index);
            buffer.clear();
            return buffer;
        }
    }
    Vec::with_capacity(len)
}

/// Gives a written request frame back for reuse (dropped when the pool is full or it is small).
pub(crate) fn recycle_buffer(buffer: Vec<u8>) {
    if !(POOLED_BYTES_MIN..=POOLED_BYTES_MAX).contains(&buffer.capacity()) {
        return;
    }
    let mut pool = REQUEST_POOL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let held: usize = pool.iter().map(Vec::capacity).sum();
    if pool.len() < POOL_BUFFERS_MAX && held + buffer.capacity() <= POOL_BYTES_MAX {
        pool.push(buffer);
    }
}

/// One whole response frame, read into an aligned buffer.
pub struct Frame {
    header: FrameHeader,
    bytes: AlignedVec<FRAME_ALIGNMENT>,
}

impl Frame {
    /// Checks a whole frame held in `bytes` (header included) against `max_frame_bytes`.
    pub fn from_bytes(
        bytes: AlignedVec<FRAME_ALIGNMENT>,
        max_frame_bytes: usize,
    ) -> Result<Self, ClientError> {
        let header = FrameHeader::decode(&bytes, max_frame_bytes)
            .map_err(|error| ClientError::Protocol(format!("bad response frame header: {error}")))?;
        if header.length as usize != bytes.len() {
            return Err(ClientError::Protocol(format!(
                "frame header says {} bytes, the buffer holds {}",
                header.length,
                bytes.len()
            )));
        }
        Ok(Self { header, bytes })
    }

    /// The decoded header.
    pub fn header(&self) -> &FrameHeader {
        &self.header
    }

    /// The response status (unknown codes read as [`Status::Internal`]).
    pub fn status(&self) -> Status {
        Status::from_u16(self.header.status)
    }

    /// The rkyv body, 16-byte aligned.
    pub fn body(&self) -> &[u8] {
        // In range: `from_bytes` checked the lengths add up to the buffer.
        &self.bytes[self.header.body_range()]
    }

    /// The raw payload (whole batches), copied out of nothing: the frame buffer is shared.
    pub fn into_payload(self) -> Bytes {
        let range = self.header.payload_range();
        if range.is_empty() {
            return Bytes::new();
        }
        Bytes::from_owner(self.bytes).slice(range)
    }

    /// Checks the kind echo and status, then validates and decodes the body as `Resp`; returns
    /// it with the payload. An error status becomes [`ClientError::Server`].
    pub fn into_response<Resp: ResponseBody>(self, kind: Kind) -> Result<(Resp, Bytes), ClientError> {
        let status = self.status();
        if status != Status::Ok {
            let message = match messages::decode::<ErrorBody>(self.body()) {
                Ok(body) => body.message,
                Err(error) => format!("(the error body could not be read: {error})"),
            };
            return Err(ClientError::Server { status, message });
        }
        if self.header.kind != kind as u16 {
            return Err(ClientError::Protocol(format!(
                "a {kind:?} request was answered with kind {}",
                self.header.kind
            )));
        }
        let response = messages::decode::<Resp>(self.body())
            .map_err(|error| ClientError::Protocol(format!("{kind:?} response: {error}")))?;
        Ok((response, self.into_payload()))
    }
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frame").field("header", &self.header).finish_non_exhaustive()
    }
}

/// Reads one frame: the 32-byte header first (checked against `max_frame_bytes` before anything
/// is allocated), then body and payload into the same aligned buffer. `Ok(None)` on a clean end
/// of stream between frames.
pub(crate) async fn read_frame<R>(
    reader: &mut R,
    max_frame_bytes: usize,
) -> Result<Option<Frame>, ClientError>
where
    R: AsyncRead + Unpin,
{
    let mut head = [0_u8; FRAME_HEADER_BYTES];
    let mut filled = 0;
    while filled < FRAME_HEADER_BYTES {
        let read =
            reader.read(&mut head[filled..]).await.map_err(|e| ClientError::io("reading a frame", e))?;
        if read == 0 {
            if filled == 0 {
                return Ok(None);
            }
            return Err(ClientError::Protocol(format!(
                "the stream ended inside a frame header ({filled} bytes)"
            )));
        }
        filled += read;
    }
    let header = FrameHeader::decode(&head, max_frame_bytes)
        .map_err(|error| ClientError::Protocol(format!("bad response frame header: {error}")))?;
    let length = header.length as usize;
    let mut bytes = AlignedVec::<FRAME_ALIGNMENT>::with_capacity(length);
    bytes.extend_from_slice(&head);
    bytes.resize(length, 0);
    reader
        .read_exact(&mut bytes[FRAME_HEADER_BYTES..])
        .await
        .map_err(|e| ClientError::io(format_args!("reading a {length}-byte frame"), e))?;
    Frame::from_bytes(bytes, max_frame_bytes).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::encode_frame;
    use crate::protocol::messages::{CreateTopic, PingResponse, TopicConfig};

    fn aligned(bytes: &[u8]) -> AlignedVec<FRAME_ALIGNMENT> {
        let mut out = AlignedVec::new();
        out.extend_from_slice(bytes);
        out
    }

    #[test]
    fn request_frames_match_encode_frame_and_decode_back() {
        let request = CreateTopic {
            stream: "orders".into(),
            name: "created".into(),
            config: TopicConfig { partitions: 3, retention_max_age_us: Some(7), ..Default::default() },
            policy: Default::default(),
            if_missing: true,
        };
        let body = messages::encode(&request).expect("encode");
        let payload: [&[u8]; 2] = [b"first-", b"second"];
        let frame = encode_request(Kind::TopicCreate, 42, &body, &payload).expect("frame");
        assert_eq!(frame, encode_frame(Kind::TopicCreate as u16, 42, 0, &body, b"first-second"));
        // What the server does with it: header first, then the aligned body.
        let frame = Frame::from_bytes(aligned(&frame), 1 << 20).expect("decode");
        assert_eq!((frame.header().kind, frame.header().correlation), (Kind::TopicCreate as u16, 42));
        assert_eq!(frame.body().as_ptr() as usize % FRAME_ALIGNMENT, 0);
        assert_eq!(messages::decode::<CreateTopic>(frame.body()).expect("body"), request);
        assert_eq!(&frame.into_payload()[..], b"first-second");
    }

    #[test]
    fn responses_become_values_or_server_errors() {
        let ok = messages::encode(&PingResponse { version: "0.1.0".into(), shard: 1 }).expect("encode");
        let bytes = encode_frame(Kind::Ping as u16, 1, 0, &ok, b"xyz");
        let (pong, payload) = Frame::from_bytes(aligned(&bytes), 1 << 20)
            .expect("frame")
            .into_response::<PingResponse>(Kind::Ping)
            .expect("ok");
        assert_eq!((pong.shard, &payload[..]), (1, &b"xyz"[..]));

        let wrong_kind = Frame::from_bytes(aligned(&bytes), 1 << 20)
            .expect("frame")
            .into_response::<PingResponse>(Kind::Stats);
        assert!(matches!(wrong_kind, Err(ClientError::Protocol(_))));

        let error =
            messages::encode(&ErrorBody { message: "stream \"x\" does not exist".into() }).expect("encode");
        let bytes = encode_frame(Kind::StreamGet as u16, 2, Status::UnknownStream as u16, &error, &[]);
        let error = Frame::from_bytes(aligned(&bytes), 1 << 20)
            .expect("frame")
            .into_response::<PingResponse>(Kind::StreamGet)
            .expect_err("error status");
        assert_eq!(error.to_string(), "UnknownStream(20): stream \"x\" does not exist");
    }

    #[tokio::test]
    async fn frames_are_read_whole_from_a_stream() {
        let body = messages::encode(&PingResponse { version: "v".into(), shard: 0 }).expect("encode");
        let mut stream = encode_frame(Kind::Ping as u16, 7, 0, &body, &[1, 2, 3]);
        stream.extend_from_slice(&encode_frame(Kind::Ping as u16, 8, 0, &body, &[]));
        let mut reader = &stream[..];
        let first = read_frame(&mut reader, 1 << 20).await.expect("read").expect("frame");
        let second = read_frame(&mut reader, 1 << 20).await.expect("read").expect("frame");
        assert_eq!((first.header().correlation, second.header().correlation), (7, 8));
        assert_eq!(&first.into_payload()[..], &[1, 2, 3]);
        assert!(read_frame(&mut reader, 1 << 20).await.expect("eof").is_none());

        let mut short = &stream[..10];
        assert!(matches!(read_frame(&mut short, 1 << 20).await, Err(ClientError::Protocol(_))));
        let mut big = &stream[..];
        assert!(matches!(read_frame(&mut big, 40).await, Err(ClientError::Protocol(_))));
        let mut cut = &stream[..40];
        assert!(matches!(read_frame(&mut cut, 1 << 20).await, Err(ClientError::Io(_))));
    }
}
