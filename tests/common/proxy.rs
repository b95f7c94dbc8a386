//! A loopback TCP proxy between a client and the broker that can lose answers: it forwards
//! requests untouched and reads the broker's answers frame by frame, and when told to, it
//! swallows the next answer of a given kind and cuts the connection, after the broker has done
//! the work. That is the "lost answer" a retrying producer must survive without storing twice.
//!
//! Plain threads and blocking sockets (no runtime), two per proxied connection; everything
//! stops when the proxy is dropped (the listener is woken with a connection of its own).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use ringbroker::protocol::frame::{FrameHeader, FRAME_HEADER_BYTES};

/// What the proxy's threads share.
struct Shared {
    upstream: SocketAddr,
    /// Answers of this kind still to swallow (one per connection cut).
    drop_kind: AtomicU32,
    drops_left: AtomicU32,
    dropped: AtomicU32,
    stopping: AtomicBool,
}

/// A running proxy; [`Proxy::addr`] is where clients connect.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl Proxy {
    /// A proxy on a free loopback port in front of `upstream`.
    pub fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let shared = Arc::new(Shared {
            upstream,
            drop_kind: AtomicU32::new(0),
            drops_left: AtomicU32::new(0),
            dropped: AtomicU32::new(0),
            stopping: AtomicBool::new(false),
        });
        let accept_shared = shared.clone();
        let acceptor = std::thread::spawn(move || accept_loop(listener, accept_shared));
        Proxy { addr, shared, acceptor: Some(acceptor) }
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Swallows the next `count` answers of `kind` (a `Kind` value), cutting the connection
    /// each one was on.
    pub fn lose_answers(&self, kind: u16, count: u32) {
        self.shared.drop_kind.store(u32::from(kind), Ordering::SeqCst);
        self.shared.drops_left.store(count, Ordering::SeqCst);
    }

    /// Answers swallowed so far.
    pub fn lost(&self) -> u32 {
        self.shared.dropped.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for client in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        let Ok(broker) = TcpStream::connect(shared.upstream) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let (Ok(client_read), Ok(broker_write)) = (client.try_clone(), broker.try_clone()) else { continue };
        std::thread::spawn(move || requests(client_read, broker_write));
        let answers_shared = shared.clone();
        std::thread::spawn(move || answers(broker, client, &answers_shared));
    }
}

/// Client to broker, byte for byte.
fn requests(mut client: TcpStream, mut broker: TcpStream) {
    let _ = std::io::copy(&mut client, &mut broker);
    let _ = broker.shutdown(Shutdown::Both);
}

/// Broker to client, frame by frame, swallowing the answers it was told to.
fn answers(mut broker: TcpStream, mut client: TcpStream, shared: &Shared) {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    loop {
        if broker.read_exact(&mut header).is_err() {
            break;
        }
        let Ok(decoded) = FrameHeader::decode(&header, usize::MAX) else { break };
        let mut rest = vec![0u8; decoded.length as usize - FRAME_HEADER_BYTES];
        if broker.read_exact(&mut rest).is_err() {
            break;
        }
        let lose = u32::from(decoded.kind) == shared.drop_kind.load(Ordering::SeqCst)
            && shared
                .drops_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        if lose {
            shared.dropped.fetch_add(1, Ordering::SeqCst);
            break;
        }
        if client.write_all(&header).and_then(|()| client.write_all(&rest)).is_err() {
            break;
        }
    }
    let _ = client.shutdown(Shutdown::Both);
    let _ = broker.shutdown(Shutdown::Both);
}
