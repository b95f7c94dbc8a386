//! One client connection: reads frames, runs each request in its own task (bounded per
//! connection), and writes responses back in completion order, coalescing small ones.
//!
//! Runs on the shard whose listener accepted the connection; the connection never moves. A bad
//! frame header (CRC, version, lengths) or an oversized frame gets an error response and closes
//! this connection only. Invariants: at most `--max-in-flight` requests of one connection run at
//! once; every request gets exactly one response frame with its correlation id; a slow reader
//! only slows its own connection (the shard's other tasks keep running while its writes wait).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::Ordering;

use async_lock::Semaphore;
use futures::channel::mpsc;
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use glommio::net::TcpStream;

use super::frame_pool::FrameBuf;
use super::handlers;
use crate::protocol::frame::{encode_frame, FrameError, FrameHeader, FRAME_HEADER_BYTES};
use crate::protocol::messages::{self, ErrorBody, Status};
use crate::shard::partitions::PayloadPart;
use crate::shard::Shard;

/// Responses smaller than this are copied into the write buffer and sent together.
const COALESCE_BYTES_MAX: usize = 64 * 1024;

/// Per-connection login state.
#[derive(Default)]
pub struct Session {
    /// The logged-in user's name.
    pub user: RefCell<Option<String>>,
    /// Failed logins on this connection.
    pub failed_logins: Cell<u32>,
    /// Round-robin cursor for balanced partitioning.
    pub round_robin: Cell<u32>,
}

/// A response ready to be written: header and body in `head`, batches in `payload`.
pub struct Response {
    /// Frame header, body and padding.
    pub head: Vec<u8>,
    /// Raw batch bytes, in parts: large parts (segment read buffers) are written from where
    /// they are, small ones are gathered with neighbouring responses.
    pub payload: Vec<PayloadPart>,
}

impl Response {
    /// An error response.
    pub fn error(kind: u16, correlation: u64, status: Status, message: &str) -> Response {
        let body = messages::encode(&ErrorBody { message: message.to_string() })
            .map(|b| b.to_vec())
            .unwrap_or_default();
        Response { head: encode_frame(kind, correlation, status as u16, &body, &[]), payload: Vec::new() }
    }
}

/// Serves one accepted connection until the peer closes it, a bad frame arrives, or shutdown.
pub async fn serve(shard: Rc<Shard>, stream: TcpStream) {
    let counters = shard.counters.clone();
    let open = counters.connections.fetch_add(1, Ordering::Relaxed) + 1;
    let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    if open as usize > shard.config.max_connections {
        refuse(stream, Status::TooManyConnections, "the server has too many connections").await;
        counters.connections.fetch_sub(1, Ordering::Relaxed);
        return;
    }
    let _ = stream.set_nodelay(true);
    let (reader, writer) = futures::AsyncReadExt::split(stream);
    let (sender, receiver) = mpsc::unbounded::<Response>();
    let writing = glommio::spawn_local(write_responses(writer, receiver));
    if let Err(reason) = read_requests(&shard, reader, sender).await {
        tracing::debug!(shard = shard.id, peer, %reason, "connection closed");
    }
    let _ = writing.await;
    counters.connections.fetch_sub(1, Ordering::Relaxed);
}

async fn refuse(mut stream: TcpStream, status: Status, message: &str) {
    let response = Response::error(0, 0, status, message);
    let _ = stream.write_all(&response.head).await;
    let _ = stream.close().await;
}

/// Reads frames and spawns a task for each; returns why reading stopped.
async fn read_requests(
    shard: &Rc<Shard>,
    mut reader: futures::io::ReadHalf<TcpStream>,
    sender: mpsc::UnboundedSender<Response>,
) -> Result<(), String> {
    let session = Rc::new(Session::default());
    let in_flight = std::sync::Arc::new(Semaphore::new(shard.config.max_in_flight));
    let mut head = [0_u8; FRAME_HEADER_BYTES];
    loop {
        if shard.shutting_down() {
            return Err("shutting down".to_string());
        }
        if let Err(error) = reader.read_exact(&mut head).await {
            return Err(format!("read: {error}"));
        }
        let header = match FrameHeader::decode(&head, shard.config.max_frame_bytes) {
            Ok(header) => header,
            Err(error) => {
                let status = if matches!(error, FrameError::TooLarge { .. }) {
                    Status::FrameTooLarge
                } else {
                    Status::BadFrame
                };
                let correlation = u64::from_le_bytes(head[8..16].try_into().unwrap_or([0; 8]));
                let kind = u16::from_le_bytes([head[6], head[7]]);
                let _ = sender.unbounded_send(Response::error(kind, correlation, status, &error.to_string()));
                return Err(format!("bad frame: {error}"));
            }
        };
        // Pooled: a reused buffer needs neither zero-filling nor fresh pages.
        let mut frame = FrameBuf::take(header.length as usize);
        frame[..FRAME_HEADER_BYTES].copy_from_slice(&head);
        if let Err(error) = reader.read_exact(&mut frame[FRAME_HEADER_BYTES..]).await {
            return Err(format!("read body: {error}"));
        }
        let permit = in_flight.acquire_arc().await;
        let (shard, session, sender) = (shard.clone(), session.clone(), sender.clone());
        glommio::spawn_local(async move {
            let response = handlers::handle(&shard, &session, header, frame).await;
            let _ = sender.unbounded_send(response);
            drop(permit);
        })
        .detach();
    }
}

/// Writes responses as they complete; small ones (and small payload parts) are gathered into one
/// write, large payload parts are written straight from their read buffers.
async fn write_responses(
    mut writer: futures::io::WriteHalf<TcpStream>,
    mut receiver: mpsc::UnboundedReceiver<Response>,
) {
    let mut buffer: Vec<u8> = Vec::with_capacity(COALESCE_BYTES_MAX);
    while let Some(first) = receiver.next().await {
        let mut next = Some(first);
        while let Some(response) = next.take() {
            buffer.extend_from_slice(&response.head);
            for part in &response.payload {
                let bytes = part.bytes();
                if bytes.len() <= COALESCE_BYTES_MAX - buffer.len().min(COALESCE_BYTES_MAX) {
                    buffer.extend_from_slice(bytes);
                    continue;
                }
                if (!buffer.is_empty() && writer.write_all(&buffer).await.is_err())
                    || writer.write_all(bytes).await.is_err()
                {
                    return;
                }
                buffer.clear();
            }
            drop(response);
            if buffer.len() >= COALESCE_BYTES_MAX {
                break;
            }
            next = receiver.try_recv().ok();
        }
        if !buffer.is_empty() {
            if writer.write_all(&buffer).await.is_err() {
                return;
            }
            buffer.clear();
        }
        if writer.flush().await.is_err() {
            return;
        }
    }
    let _ = writer.close().await;
}
