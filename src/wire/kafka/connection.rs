//! A Kafka connection's life: TLS (when on), the frame reader, the in-order answer queue, and
//! the clean-up when it ends.
//!
//! Runs on the shard that accepted the connection; the connection never moves. Frames are a
//! 4-byte big-endian size then the request. The reader checks each size against
//! `--max-frame-bytes` and the connection's memory bound, decodes the request (`frame`) and hands
//! it to `dispatch`, which starts one task per request (at most `--max-in-flight` at a time).
//! Kafka answers a connection's requests in the order they came: each request gets a slot in
//! the answer queue when it is read, and the queue writes the slots' answers in that order,
//! whichever task finishes first.
//!
//! Invariants: a bad frame (size, unknown key, undecodable header) closes this connection only;
//! a served key at an unsupported version, or an undecodable body, is answered with Kafka's
//! error code when the key has an answer for it; the limits, watchdog and writer are the native
//! listener's (`crate::server::connection`); a connection counts against `--max-connections`
//! from accept until it ends, and its producer leases end with it.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;

use async_lock::Semaphore;
use bytes::{Bytes, BytesMut};
use futures::channel::{mpsc, oneshot};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use glommio::net::TcpStream;

use super::frame::{self, FrameError};
use super::state::Conn;
use crate::metrics::WIRE_KAFKA;
use crate::server::connection::{
    end_session, session_id, start_watchdog, write_counted, Flow, Response, Session,
};
use crate::server::tls::Acceptor;
use crate::shard::Shard;

/// One answer slot: the request's frame size (its reserved memory, freed once answered) and
/// where its encoded response frame comes from (`None`: close the connection there).
pub(crate) type Slot = (usize, oneshot::Receiver<Option<Vec<u8>>>);

/// Where a request task puts its answer.
pub(crate) type Answer = oneshot::Sender<Option<Vec<u8>>>;

/// Serves one accepted TCP connection of the Kafka listener.
pub async fn serve_tcp(shard: Rc<Shard>, stream: TcpStream, tls: Option<Acceptor>) {
    let counters = shard.counters.clone();
    let open = counters.connections.fetch_add(1, Ordering::Relaxed) + 1;
    let over_limit = open as usize > shard.config.max_connections;
    let peer = stream.peer_addr().ok();
    let _ = stream.set_nodelay(true);
    match tls {
        None => serve(shard, stream, peer, over_limit).await,
        Some(acceptor) => match acceptor.accept(stream, shard.config.frame_read_timeout).await {
            Ok(stream) => serve(shard, stream, peer, over_limit).await,
            Err(reason) => tracing::debug!(shard = shard.id, ?peer, %reason, "kafka connection closed"),
        },
    }
    counters.connections.fetch_sub(1, Ordering::Relaxed);
}

async fn serve<S>(shard: Rc<Shard>, mut stream: S, peer: Option<SocketAddr>, over_limit: bool)
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    if over_limit {
        // Kafka has no frame to refuse a connection with: close it.
        let _ = stream.close().await;
        return;
    }
    let wire = shard.metrics.wire(WIRE_KAFKA);
    let _open = wire.connection();
    let flow = Rc::new(Flow::default());
    let watchdog = start_watchdog(&shard, &flow);
    let (reader, writer) = futures::AsyncReadExt::split(stream);
    let (sender, receiver) = mpsc::unbounded::<Response>();
    let writing = glommio::spawn_local(write_counted(writer, receiver, Some(wire.clone())));
    let (slots, queue) = mpsc::unbounded::<Slot>();
    let answering = glommio::spawn_local(answer_in_order(queue, sender, flow.clone()));
    let id = session_id(shard.id);
    let session = Rc::new(Session { peer: peer.map(|a| a.ip()), id, address: peer, ..Session::default() });
    let implicit = implicit_root(&shard);
    if let Some(user) = &implicit {
        session.user.replace(Some(user.clone()));
    }
    let conn = Rc::new(Conn {
        shard: shard.clone(),
        session: session.clone(),
        authenticated: Cell::new(implicit.is_some()),
        handshaken: Cell::new(false),
        raw_sasl_next: Cell::new(false),
        producers: Default::default(),
        scratch: Default::default(),
    });
    let renewing = glommio::spawn_local(super::produce::keep_alive(conn.clone(), flow.clone()));
    if let Err(reason) = read_frames(&conn, &flow, reader, slots, &wire).await {
        tracing::debug!(shard = shard.id, ?peer, %reason, "kafka connection closed");
    }
    end_session(&shard, &session, None).await;
    flow.closed.set(true);
    drop(watchdog);
    drop(renewing);
    drop(conn);
    let _ = answering.await;
    let _ = writing.await;
}

/// The user a connection runs as without SASL: root, when the Kafka listener is on loopback and
/// no root password was set (the native listener's rule: such a broker's only user is root with
/// the well-known default password).
fn implicit_root(shard: &Shard) -> Option<String> {
    let config = &shard.config;
    let loopback = config.kafka_listen.is_some_and(|a| a.ip().is_loopback());
    (loopback && config.root_password.is_none()).then(|| {
        config.root_user.clone().unwrap_or_else(|| crate::server::config::DEFAULT_ROOT_USER.to_string())
    })
}

/// Writes the answers in request order; a `None` answer (or a dropped slot) closes the
/// connection after the answers before it.
async fn answer_in_order(
    mut queue: mpsc::UnboundedReceiver<Slot>,
    sender: mpsc::UnboundedSender<Response>,
    flow: Rc<Flow>,
) {
    while let Some((length, slot)) = queue.next().await {
        match slot.await {
            Ok(Some(frame)) if frame.is_empty() => flow.answered(length),
            Ok(Some(frame)) => {
                if sender
                    .unbounded_send(Response { head: frame, payload: Vec::new(), release: None })
                    .is_err()
                {
                    break;
                }
                flow.answered(length);
            }
            _ => {
                flow.kill("the connection closes after a refused request".to_string());
                break;
            }
        }
    }
}

/// Reads frames until the peer closes, a frame is bad, a timeout fires or shutdown.
async fn read_frames<R: AsyncRead + Unpin>(
    conn: &Rc<Conn>,
    flow: &Rc<Flow>,
    mut reader: R,
    slots: mpsc::UnboundedSender<Slot>,
    wire: &crate::metrics::WireMetrics,
) -> Result<(), String> {
    let shard = &conn.shard;
    let in_flight = std::sync::Arc::new(Semaphore::new(shard.config.max_in_flight));
    let memory_limit = shard.config.max_connection_memory;
    let frame_limit = shard.config.max_frame_bytes;
    let mut size = [0_u8; frame::LENGTH_BYTES];
    loop {
        if shard.shutting_down() {
            return Err("shutting down".to_string());
        }
        if let Err(error) = flow.unless_killed(reader.read_exact(&mut size)).await? {
            return Err(format!("read: {error}"));
        }
        let length = frame::frame_length(&size).unwrap_or(usize::MAX);
        if length > frame_limit {
            return Err(format!("frame of {length} bytes; --max-frame-bytes is {frame_limit}"));
        }
        flow.unless_killed(flow.reserve(length, memory_limit)).await?;
        flow.reading_body.set(true);
        let mut body = BytesMut::zeroed(length);
        if let Err(error) = flow.unless_killed(reader.read_exact(&mut body[..])).await? {
            return Err(format!("read body: {error}"));
        }
        flow.reading_body.set(false);
        wire.bytes_in((length + frame::LENGTH_BYTES) as u64);
        flow.frames_read.set(flow.frames_read.get() + 1);
        flow.outstanding_requests.set(flow.outstanding_requests.get() + 1);
        let body: Bytes = body.freeze();
        let (answer, slot) = oneshot::channel();
        slots.unbounded_send((length, slot)).map_err(|_| "answer queue closed".to_string())?;
        if conn.raw_sasl_next.replace(false) {
            super::sasl::raw_token(conn, body, answer).await;
            continue;
        }
        match frame::decode_request(body) {
            Ok(request) => super::dispatch::request(conn, &in_flight, request, answer).await?,
            Err(error) => {
                let closing = super::dispatch::refused(&conn.shard, &error, answer);
                if closing {
                    return Err(describe(&error));
                }
            }
        }
    }
}

fn describe(error: &FrameError) -> String {
    match error {
        FrameError::Truncated => "a frame shorter than a request header".to_string(),
        FrameError::UnknownKey { api_key, correlation_id } => {
            format!("request {correlation_id}: API key {api_key} is not served")
        }
        FrameError::UnsupportedVersion { api_key, version, correlation_id } => {
            format!("request {correlation_id}: {api_key:?} v{version} is not served")
        }
        FrameError::Malformed { api_key, version, correlation_id, reason } => {
            format!("request {correlation_id}: {api_key:?} v{version} did not decode: {reason}")
        }
    }
}
