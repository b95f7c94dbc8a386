//! One client connection: reads frames, runs each request in its own task (bounded per
//! connection), and writes responses back in completion order, coalescing small ones.
//!
//! Runs on the shard whose listener accepted the connection; the connection never moves. The
//! code is generic over the stream, so a plain TCP connection runs exactly as before and a TLS
//! one (handshake first, in [`serve_tcp`]) runs the same loop over the rustls stream. A bad
//! frame header (CRC, version, lengths) or an oversized frame gets an error response and closes
//! this connection only. A watchdog task closes a connection that stays idle (no complete frame
//! and nothing in flight) for `--idle-timeout`, or whose frame, once its header arrived, is not
//! complete within `--frame-read-timeout`.
//!
//! Invariants: at most `--max-in-flight` requests of one connection run at once; the request
//! frames read and not yet answered hold at most `--max-connection-memory` bytes, except for a
//! single larger frame read while nothing else is outstanding; every request gets exactly one
//! response frame with its correlation id, except a successful `Credit`, which gets none (as in
//! RabbitMQ Streams); subscriptions push `Deliver` frames through the same writer, within
//! `--subscription-queue-bytes` (module `subscriptions`); a slow reader only slows its own connection (the
//! shard's other tasks keep running while its writes wait); a connection counts against
//! `--max-connections` from accept (before any TLS handshake) until it is closed.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use async_lock::Semaphore;
use futures::channel::mpsc;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use glommio::net::TcpStream;

use super::frame_pool::FrameBuf;
use super::handlers;
use super::subscriptions::{Push, Release};
use super::tls::Acceptor;
use crate::metrics::{WireMetrics, WIRE_NATIVE};
use crate::protocol::frame::{encode_frame, FrameError, FrameHeader, FRAME_HEADER_BYTES};
use crate::protocol::messages::{self, ErrorBody, Status};
use crate::shard::partitions::PayloadPart;
use crate::shard::Shard;

/// Responses smaller than this are copied into the write buffer and sent together.
const COALESCE_BYTES_MAX: usize = 64 * 1024;

/// The watchdog checks a connection this often at most (a quarter of the shorter timeout).
const WATCHDOG_TICK_MAX: Duration = Duration::from_secs(1);
/// The watchdog checks a connection this often at least.
const WATCHDOG_TICK_MIN: Duration = Duration::from_millis(5);

/// Per-connection login state.
#[derive(Default)]
pub struct Session {
    /// The logged-in user's name.
    pub user: RefCell<Option<String>>,
    /// Failed logins on this connection.
    pub failed_logins: Cell<u32>,
    /// Round-robin cursor for balanced partitioning.
    pub round_robin: Cell<u32>,
    /// The peer's address (login throttling by address), when known.
    pub peer: Option<IpAddr>,
    /// Set by a handler: close the connection once this request's response is queued (the
    /// response is still written).
    pub close_after_reply: Cell<bool>,
    /// Unique over the broker's shards and life: the holder of this connection's producer
    /// leases.
    pub id: u64,
    /// The peer's address and port, when known.
    pub address: Option<SocketAddr>,
    /// Coordinator shards holding producer leases of this session (told when it closes).
    pub producer_coordinators: RefCell<std::collections::BTreeSet<u16>>,
    /// The connection's push subscriptions (none on connections that cannot push).
    pub push: Option<Rc<Push>>,
}

thread_local! {
    static SESSIONS: Cell<u64> = const { Cell::new(0) };
}

/// A new session id: the shard in the top 16 bits, a per-shard counter below.
pub(crate) fn session_id(shard: u16) -> u64 {
    let counter = SESSIONS.with(|sessions| {
        let next = sessions.get() + 1;
        sessions.set(next);
        next
    });
    (u64::from(shard) << 48) | (counter & ((1 << 48) - 1))
}

/// A response ready to be written: header and body in `head`, batches in `payload`.
pub struct Response {
    /// Frame header, body and padding.
    pub head: Vec<u8>,
    /// Raw batch bytes, in parts: large parts (segment read buffers) are written from where
    /// they are, small ones are gathered with neighbouring responses.
    pub payload: Vec<PayloadPart>,
    /// A delivery's share of its connection's queue budget, returned when this is dropped.
    pub release: Option<Release>,
}

impl Response {
    /// An error response.
    pub fn error(kind: u16, correlation: u64, status: Status, message: &str) -> Response {
        let body = messages::encode(&ErrorBody { message: message.to_string() })
            .map(|b| b.to_vec())
            .unwrap_or_default();
        Response {
            head: encode_frame(kind, correlation, status as u16, &body, &[]),
            payload: Vec::new(),
            release: None,
        }
    }
}

/// Serves one accepted TCP connection: counts it, runs the TLS handshake when TLS is on, then
/// serves it until the peer closes it, a bad frame arrives, a timeout fires, or shutdown.
pub async fn serve_tcp(shard: Rc<Shard>, stream: TcpStream, tls: Option<Acceptor>) {
    let counters = shard.counters.clone();
    let open = counters.connections.fetch_add(1, Ordering::Relaxed) + 1;
    let _open = shard.metrics.wire(WIRE_NATIVE).connection();
    let over_limit = open as usize > shard.config.max_connections;
    let peer = stream.peer_addr().ok();
    let _ = stream.set_nodelay(true);
    match tls {
        None => serve(shard, stream, peer, over_limit).await,
        Some(acceptor) => match acceptor.accept(stream, shard.config.frame_read_timeout).await {
            Ok(stream) => serve(shard, stream, peer, over_limit).await,
            Err(reason) => tracing::debug!(shard = shard.id, ?peer, %reason, "connection closed"),
        },
    }
    counters.connections.fetch_sub(1, Ordering::Relaxed);
}

/// Serves one connection (plain or TLS) until it ends; refuses it when the server is full.
async fn serve<S>(shard: Rc<Shard>, stream: S, peer: Option<SocketAddr>, over_limit: bool)
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    if over_limit {
        refuse(stream, Status::TooManyConnections, "the server has too many connections").await;
        return;
    }
    let flow = Rc::new(Flow::default());
    let watchdog = start_watchdog(&shard, &flow);
    let (reader, writer) = futures::AsyncReadExt::split(stream);
    let (sender, receiver) = mpsc::unbounded::<Response>();
    let writing =
        glommio::spawn_local(write_counted(writer, receiver, Some(shard.metrics.wire(WIRE_NATIVE))));
    let id = session_id(shard.id);
    let push = Push::new(shard.clone(), id, sender.clone());
    let session = Rc::new(Session {
        peer: peer.map(|address| address.ip()),
        id,
        address: peer,
        push: Some(push.clone()),
        ..Session::default()
    });
    if let Err(reason) = read_requests(&shard, &flow, session.clone(), reader, sender).await {
        tracing::debug!(shard = shard.id, ?peer, %reason, "connection closed");
    }
    end_session(&shard, &session, Some(&push)).await;
    flow.closed.set(true);
    drop(watchdog);
    let _ = writing.await;
}

/// Starts the watchdog of a connection (none when both timeouts are off).
pub(crate) fn start_watchdog(shard: &Shard, flow: &Rc<Flow>) -> Option<glommio::Task<()>> {
    let config = &shard.config;
    watchdog_tick(config.idle_timeout, config.frame_read_timeout).map(|tick| {
        let watched = Watched { idle: config.idle_timeout, frame_read: config.frame_read_timeout, tick };
        glommio::spawn_local(watch(flow.clone(), watched))
    })
}

/// A connection ended: its subscriptions end and let go of the writer's channel, and its
/// producer leases end (their coordinators are told).
pub(crate) async fn end_session(shard: &Shard, session: &Session, push: Option<&Push>) {
    if let Some(push) = push {
        push.close();
    }
    let coordinators: Vec<u16> = session.producer_coordinators.borrow().iter().copied().collect();
    for coordinator in coordinators {
        let op = crate::shard::mesh::ProducerOp::SessionEnded { session: session.id };
        let _ = shard.producer_op(coordinator, op).await;
    }
}

async fn refuse<S: AsyncWrite + Unpin>(mut stream: S, status: Status, message: &str) {
    let response = Response::error(0, 0, status, message);
    let _ = stream.write_all(&response.head).await;
    let _ = stream.close().await;
}

/// What the reader, the request tasks and the watchdog of one connection share (one thread).
#[derive(Default)]
pub(crate) struct Flow {
    /// Frames read completely.
    pub(crate) frames_read: Cell<u64>,
    /// A frame's header arrived and the rest of it is being read.
    pub(crate) reading_body: Cell<bool>,
    /// Requests answered (response queued).
    answered: Cell<u64>,
    /// Requests read and not yet answered.
    pub(crate) outstanding_requests: Cell<usize>,
    /// Bytes of request frames read (or being read) and not yet answered.
    outstanding_bytes: Cell<usize>,
    /// The reader, waiting for room under `--max-connection-memory`.
    room_waker: Cell<Option<Waker>>,
    /// Why the connection must close, once decided.
    kill_reason: RefCell<Option<String>>,
    /// The reader, waiting for a frame while the connection may be killed.
    kill_waker: Cell<Option<Waker>>,
    /// The reader has stopped.
    pub(crate) closed: Cell<bool>,
}

impl Flow {
    /// Asks the reader to stop (the first reason wins).
    pub(crate) fn kill(&self, reason: String) {
        self.kill_reason.borrow_mut().get_or_insert(reason);
        if let Some(waker) = self.kill_waker.take() {
            waker.wake();
        }
    }

    /// Completes with the kill reason once [`kill`](Self::kill) was called.
    fn killed(&self) -> impl Future<Output = String> + '_ {
        futures::future::poll_fn(move |cx| {
            if let Some(reason) = self.kill_reason.borrow().as_ref() {
                return Poll::Ready(reason.clone());
            }
            let waker = match self.kill_waker.take() {
                Some(waker) if waker.will_wake(cx.waker()) => waker,
                _ => cx.waker().clone(),
            };
            self.kill_waker.set(Some(waker));
            Poll::Pending
        })
    }

    /// Runs `future` unless the connection is killed first.
    pub(crate) async fn unless_killed<F: Future>(&self, future: F) -> Result<F::Output, String> {
        let killed = self.killed();
        futures::pin_mut!(future, killed);
        match futures::future::select(future, killed).await {
            futures::future::Either::Left((output, _)) => Ok(output),
            futures::future::Either::Right((reason, _)) => Err(reason),
        }
    }

    /// Reserves `bytes` for a frame, waiting while they would push the connection over `limit`
    /// (a frame is always admitted when nothing else is outstanding).
    pub(crate) fn reserve(&self, bytes: usize, limit: usize) -> impl Future<Output = ()> + '_ {
        futures::future::poll_fn(move |cx| {
            let used = self.outstanding_bytes.get();
            if used == 0 || used.saturating_add(bytes) <= limit {
                self.outstanding_bytes.set(used + bytes);
                return Poll::Ready(());
            }
            self.room_waker.set(Some(cx.waker().clone()));
            Poll::Pending
        })
    }

    /// A request of `bytes` was answered: frees its room and wakes a waiting reader.
    pub(crate) fn answered(&self, bytes: usize) {
        debug_assert!(self.outstanding_bytes.get() >= bytes && self.outstanding_requests.get() > 0);
        self.outstanding_bytes.set(self.outstanding_bytes.get().saturating_sub(bytes));
        self.outstanding_requests.set(self.outstanding_requests.get().saturating_sub(1));
        self.answered.set(self.answered.get().wrapping_add(1));
        if let Some(waker) = self.room_waker.take() {
            waker.wake();
        }
    }
}

/// The watchdog's settings.
#[derive(Debug, Clone, Copy)]
struct Watched {
    idle: Duration,
    frame_read: Duration,
    tick: Duration,
}

/// How often the watchdog looks; `None` when both timeouts are off.
fn watchdog_tick(idle: Duration, frame_read: Duration) -> Option<Duration> {
    let shortest = [idle, frame_read].into_iter().filter(|timeout| !timeout.is_zero()).min()?;
    Some((shortest / 4).clamp(WATCHDOG_TICK_MIN, WATCHDOG_TICK_MAX))
}

/// Closes the connection when a frame stalls after its header or nothing happens for the idle
/// timeout. Looks every tick and only at counters the reader bumps, so the read path pays no
/// clock reads; a timeout fires between its bound and two ticks later.
async fn watch(flow: Rc<Flow>, watched: Watched) {
    let now = Instant::now();
    let (mut frame_mark, mut frame_since) = ((flow.frames_read.get(), flow.reading_body.get()), now);
    let (mut idle_mark, mut idle_since) = ((flow.frames_read.get(), flow.answered.get()), now);
    while !flow.closed.get() {
        glommio::timer::sleep(watched.tick).await;
        let now = Instant::now();
        let frame_now = (flow.frames_read.get(), flow.reading_body.get());
        if frame_now != frame_mark {
            (frame_mark, frame_since) = (frame_now, now);
        } else if frame_now.1 && !watched.frame_read.is_zero() && now - frame_since >= watched.frame_read {
            flow.kill(format!(
                "a frame was not complete within --frame-read-timeout {:?}",
                watched.frame_read
            ));
            return;
        }
        let idle_now = (flow.frames_read.get(), flow.answered.get());
        let busy = flow.reading_body.get() || flow.outstanding_requests.get() > 0;
        if idle_now != idle_mark || busy {
            (idle_mark, idle_since) = (idle_now, now);
        } else if !watched.idle.is_zero() && now - idle_since >= watched.idle {
            flow.kill(format!("idle for --idle-timeout {:?}", watched.idle));
            return;
        }
    }
}

/// Reads frames and spawns a task for each; returns why reading stopped.
async fn read_requests<R: AsyncRead + Unpin>(
    shard: &Rc<Shard>,
    flow: &Rc<Flow>,
    session: Rc<Session>,
    mut reader: R,
    sender: mpsc::UnboundedSender<Response>,
) -> Result<(), String> {
    let in_flight = std::sync::Arc::new(Semaphore::new(shard.config.max_in_flight));
    let memory_limit = shard.config.max_connection_memory;
    let wire = shard.metrics.wire(WIRE_NATIVE);
    let mut head = [0_u8; FRAME_HEADER_BYTES];
    loop {
        if shard.shutting_down() {
            return Err("shutting down".to_string());
        }
        if let Err(error) = flow.unless_killed(reader.read_exact(&mut head)).await? {
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
        let length = header.length as usize;
        flow.unless_killed(flow.reserve(length, memory_limit)).await?;
        flow.reading_body.set(true);
        // Pooled: a reused buffer needs neither zero-filling nor fresh pages.
        let mut frame = FrameBuf::take(length);
        frame[..FRAME_HEADER_BYTES].copy_from_slice(&head);
        if let Err(error) = flow.unless_killed(reader.read_exact(&mut frame[FRAME_HEADER_BYTES..])).await? {
            return Err(format!("read body: {error}"));
        }
        flow.reading_body.set(false);
        wire.bytes_in(length as u64);
        flow.frames_read.set(flow.frames_read.get() + 1);
        let permit = flow.unless_killed(in_flight.acquire_arc()).await?;
        flow.outstanding_requests.set(flow.outstanding_requests.get() + 1);
        let (shard, session, sender, flow) = (shard.clone(), session.clone(), sender.clone(), flow.clone());
        glommio::spawn_local(async move {
            let in_flight = shard.metrics.in_flight();
            if let Some(response) = handlers::handle(&shard, &session, header, frame).await {
                let _ = sender.unbounded_send(response);
            }
            flow.answered(length);
            drop((permit, in_flight));
            if session.close_after_reply.get() {
                flow.kill("the request's handler closed the connection".to_string());
            }
        })
        .detach();
    }
}

/// Writes responses as they complete; small ones (and small payload parts) are gathered into one
/// write, large payload parts are written straight from their read buffers. Counts the bytes
/// written into `wire`'s `sent_bytes` when given.
pub(crate) async fn write_counted<W: AsyncWrite + Unpin>(
    mut writer: W,
    mut receiver: mpsc::UnboundedReceiver<Response>,
    wire: Option<WireMetrics>,
) {
    let sent = |bytes: usize| {
        if let Some(wire) = &wire {
            wire.bytes_out(bytes as u64);
        }
    };
    let mut buffer: Vec<u8> = Vec::with_capacity(COALESCE_BYTES_MAX);
    while let Some(first) = receiver.next().await {
        let mut next = Some(first);
        while let Some(response) = next.take() {
            buffer.extend_from_slice(&response.head);
            for part in &response.payload {
                let bytes = part.bytes();
                if buffer.len() + bytes.len() <= COALESCE_BYTES_MAX {
                    buffer.extend_from_slice(bytes);
                    continue;
                }
                if (!buffer.is_empty() && writer.write_all(&buffer).await.is_err())
                    || writer.write_all(bytes).await.is_err()
                {
                    return;
                }
                sent(buffer.len() + bytes.len());
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
            sent(buffer.len());
            buffer.clear();
        }
        if writer.flush().await.is_err() {
            return;
        }
    }
    let _ = writer.close().await;
}
