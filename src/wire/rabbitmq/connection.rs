//! A RabbitMQ connection's life: TLS (when on), the frame reader, the writer, the heartbeat task,
//! and the clean-up when it ends.
//!
//! Runs on the shard that accepted the connection; the connection never moves. Frames are a
//! 4-byte big-endian size then the command. The reader checks each size against the negotiated
//! frame size (`--max-frame-bytes` before Tune) and the connection's memory bound, reads the
//! frame into a pooled buffer and hands it to [`super::dispatch`]. Control commands run one at a
//! time in arrival order; a Publish is turned into batches at once (so batches keep the order
//! their frames came in) and stored by its own task, at most `--max-in-flight` at a time.
//!
//! Invariants: a bad frame (size, decoding) closes this connection only, after a Close frame
//! with the protocol's code; the limits, watchdog and writer are the native listener's
//! (`crate::server::connection`); a connection counts against `--max-connections` from accept
//! until it ends; its subscriptions and producer leases end with it.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_lock::Semaphore;
use futures::channel::mpsc;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;

use super::codec::codes;
use super::encode;
use super::push::RabbitFrames;
use super::state::{Conn, Shared};
use crate::metrics::WIRE_RABBITMQ;
use crate::server::connection::{
    end_session, session_id, start_watchdog, write_counted, Flow, Response, Session,
};
use crate::server::frame_pool::FrameBuf;
use crate::server::subscriptions::Push;
use crate::server::tls::Acceptor;
use crate::shard::Shard;

/// Serves one accepted TCP connection of the RabbitMQ listener.
pub async fn serve_tcp(shard: Rc<Shard>, stream: TcpStream, tls: Option<Acceptor>) {
    let counters = shard.counters.clone();
    let open = counters.connections.fetch_add(1, Ordering::Relaxed) + 1;
    let over_limit = open as usize > shard.config.max_connections;
    let peer = stream.peer_addr().ok();
    let local_port = stream.local_addr().map(|address| address.port()).unwrap_or(0);
    let _ = stream.set_nodelay(true);
    match tls {
        None => serve(shard, stream, peer, local_port, over_limit).await,
        Some(acceptor) => match acceptor.accept(stream, shard.config.frame_read_timeout).await {
            Ok(stream) => serve(shard, stream, peer, local_port, over_limit).await,
            Err(reason) => tracing::debug!(shard = shard.id, ?peer, %reason, "rabbitmq connection closed"),
        },
    }
    counters.connections.fetch_sub(1, Ordering::Relaxed);
}

async fn serve<S>(
    shard: Rc<Shard>,
    mut stream: S,
    peer: Option<SocketAddr>,
    local_port: u16,
    over_limit: bool,
) where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    if over_limit {
        // No command came yet: a Close is the only frame the client can take.
        let _ = stream
            .write_all(&encode::close(0, codes::INTERNAL_ERROR, "the server has too many connections"))
            .await;
        let _ = stream.close().await;
        return;
    }
    let wire = shard.metrics.wire(WIRE_RABBITMQ);
    let _open = wire.connection();
    let flow = Rc::new(Flow::default());
    let config = &shard.config;
    let watchdog = start_watchdog(&shard, &flow);
    let (reader, writer) = futures::AsyncReadExt::split(stream);
    let (sender, receiver) = mpsc::unbounded::<Response>();
    let writing = glommio::spawn_local(write_counted(writer, receiver, Some(wire.clone())));
    let id = session_id(shard.id);
    let shared =
        Rc::new(Shared { deliver_version: std::cell::Cell::new(1), subscriptions: Default::default() });
    let frames = RabbitFrames { shared: shared.clone() };
    let push = Push::with_frames(shard.clone(), id, sender.clone(), Box::new(frames));
    let session = Rc::new(Session {
        peer: peer.map(|address| address.ip()),
        id,
        address: peer,
        push: Some(push.clone()),
        ..Session::default()
    });
    let conn = Rc::new(Conn {
        shard: shard.clone(),
        session: session.clone(),
        sender,
        shared,
        authenticated: Default::default(),
        opened: Default::default(),
        frame_max: std::cell::Cell::new(u32::try_from(config.max_frame_bytes).unwrap_or(u32::MAX)),
        heartbeat: Default::default(),
        publishers: Default::default(),
        scratch: Default::default(),
        local_port,
    });
    let beating = glommio::spawn_local(super::publish::keep_alive(conn.clone(), flow.clone()));
    if let Err(reason) = read_frames(&conn, &flow, reader, &wire).await {
        tracing::debug!(shard = shard.id, ?peer, %reason, "rabbitmq connection closed");
    }
    end_session(&shard, &session, Some(&push)).await;
    flow.closed.set(true);
    drop(beating);
    drop(watchdog);
    conn.publishers.borrow_mut().clear();
    // The writer ends once every sender is gone: the connection's own and the push side's.
    drop(conn);
    let _ = writing.await;
}

/// Reads frames until the peer closes, a frame is bad, a timeout fires or shutdown.
async fn read_frames<R: AsyncRead + Unpin>(
    conn: &Rc<Conn>,
    flow: &Rc<Flow>,
    mut reader: R,
    wire: &crate::metrics::WireMetrics,
) -> Result<(), String> {
    let shard = &conn.shard;
    let in_flight = std::sync::Arc::new(Semaphore::new(shard.config.max_in_flight));
    let memory_limit = shard.config.max_connection_memory;
    let mut size = [0_u8; 4];
    loop {
        if shard.shutting_down() {
            conn.send(encode::close(0, codes::OK, "the broker is shutting down"));
            return Err("shutting down".to_string());
        }
        if let Err(error) = flow.unless_killed(reader.read_exact(&mut size)).await? {
            return Err(format!("read: {error}"));
        }
        let length = u32::from_be_bytes(size);
        if length == 0 || length > conn.frame_max.get() {
            let reason =
                format!("frame of {length} bytes; the negotiated frame size is {}", conn.frame_max.get());
            conn.send(encode::close(0, codes::FRAME_TOO_LARGE, &reason));
            return Err(reason);
        }
        let length = length as usize;
        flow.unless_killed(flow.reserve(length, memory_limit)).await?;
        flow.reading_body.set(true);
        let mut frame = FrameBuf::take(length);
        if let Err(error) = flow.unless_killed(reader.read_exact(&mut frame[..])).await? {
            return Err(format!("read body: {error}"));
        }
        flow.reading_body.set(false);
        wire.bytes_in(length as u64 + 4);
        flow.frames_read.set(flow.frames_read.get() + 1);
        flow.outstanding_requests.set(flow.outstanding_requests.get() + 1);
        super::dispatch::frame(conn, flow, &in_flight, frame, length).await?;
    }
}

/// Sends heartbeats at the negotiated interval (the client closes a silent connection).
pub(super) fn heartbeat_interval(conn: &Conn) -> Option<Duration> {
    match conn.heartbeat.get() {
        0 => None,
        seconds => Some(Duration::from_secs(u64::from(seconds))),
    }
}
