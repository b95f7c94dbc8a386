//! The `--metrics-listen` endpoint: a small blocking HTTP/1.1 server on its own std threads (not
//! a shard core, not glommio) answering `GET /metrics` with the exposition of
//! [`super::exposition`].
//!
//! One acceptor thread; each connection is served by a short-lived thread of its own, at most
//! [`SCRAPES_MAX`] at once (a connection beyond that gets `503` at once), so a slow or hostile
//! client cannot hold up other scrapes. Every connection answers one request and closes.
//! Invariants: a request is read within [`REQUEST_TIMEOUT`] and [`REQUEST_BYTES_MAX`] bytes or
//! the connection is closed (`408` / `431`); writes time out after [`WRITE_TIMEOUT`]; nothing
//! read from a client is allocated beyond that bound; the endpoint only reads shard metrics,
//! so a scrape never waits on a shard.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;

use super::exposition::{render, CONTENT_TYPE};

/// Bytes of a request line plus headers we read at most.
pub const REQUEST_BYTES_MAX: usize = 8 * 1024;
/// A request must be complete this long after its connection was accepted.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Writing a response may take this long at most.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once.
pub const SCRAPES_MAX: usize = 8;

/// A running endpoint; stops (and joins its acceptor) when dropped.
#[derive(Debug)]
pub struct Endpoint {
    address: SocketAddr,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl Endpoint {
    /// Binds `listen` (errors are the caller's: the broker refuses to start) and serves
    /// `registry` from a new thread.
    pub fn start(listen: SocketAddr, registry: Registry) -> std::io::Result<Endpoint> {
        let listener = TcpListener::bind(listen)?;
        let address = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let acceptor = std::thread::Builder::new()
            .name("ringbroker-metrics".to_string())
            .spawn(move || accept(listener, Arc::new(registry), &stopping))?;
        Ok(Endpoint { address, stop, acceptor: Some(acceptor) })
    }

    /// Where it listens (the bound port when `listen` asked for port 0).
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the blocking accept; the acceptor then sees the flag.
        let _ = TcpStream::connect_timeout(&self.address, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept(listener: TcpListener, registry: Arc<Registry>, stop: &AtomicBool) {
    let busy = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok(stream) = stream else {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        if busy.fetch_add(1, Ordering::AcqRel) >= SCRAPES_MAX {
            busy.fetch_sub(1, Ordering::AcqRel);
            let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
            let _ = respond(&stream, "503 Service Unavailable", "text/plain", b"too many scrapes at once\n");
            continue;
        }
        let (registry, done) = (registry.clone(), busy.clone());
        let spawned = std::thread::Builder::new().name("ringbroker-scrape".to_string()).spawn(move || {
            serve(stream, &registry);
            done.fetch_sub(1, Ordering::AcqRel);
        });
        if let Err(error) = spawned {
            tracing::warn!(%error, "metrics endpoint: could not start a scrape thread");
            busy.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// What a request asked for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Request {
    /// `GET /metrics` (a query string is ignored).
    Metrics,
    /// A GET of another path.
    NotFound,
    /// Another method.
    MethodNotAllowed,
    /// Not an HTTP/1.x request line.
    Bad,
}

/// Parses the request line of a complete request head.
pub(crate) fn parse(head: &[u8]) -> Request {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Request::Bad;
    };
    if !version.starts_with(b"HTTP/1.") || target.is_empty() {
        return Request::Bad;
    }
    if method != b"GET" {
        return Request::MethodNotAllowed;
    }
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    if path == b"/metrics" {
        Request::Metrics
    } else {
        Request::NotFound
    }
}

/// Where the request head ends (after the blank line), if it is all in `bytes`.
pub(crate) fn head_end(bytes: &[u8]) -> Option<usize> {
    bytes.windows(4).position(|w| w == b"\r\n\r\n").map(|at| at + 4).or_else(|| {
        // Lenient: bare LF line ends.
        bytes.windows(2).position(|w| w == b"\n\n").map(|at| at + 2)
    })
}

/// How reading a request head ended.
enum Head {
    Complete(Vec<u8>),
    TooLarge,
    TimedOut,
    Closed,
}

fn read_head(mut stream: &TcpStream) -> Head {
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0_u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return Head::TimedOut;
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Head::Closed,
            Ok(read) => {
                let room = REQUEST_BYTES_MAX.saturating_sub(head.len());
                head.extend_from_slice(chunk.get(..read.min(room)).unwrap_or_default());
                if head_end(&head).is_some() {
                    return Head::Complete(head);
                }
                if read > room || head.len() >= REQUEST_BYTES_MAX {
                    return Head::TooLarge;
                }
            }
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Head::TimedOut
            }
            Err(error) if error.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return Head::Closed,
        }
    }
}

fn serve(stream: TcpStream, registry: &Registry) {
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let head = match read_head(&stream) {
        Head::Complete(head) => head,
        Head::TooLarge => {
            let _ =
                respond(&stream, "431 Request Header Fields Too Large", "text/plain", b"request too large\n");
            return;
        }
        Head::TimedOut => {
            let _ = respond(&stream, "408 Request Timeout", "text/plain", b"request not complete in time\n");
            return;
        }
        Head::Closed => return,
    };
    let _ = match parse(&head) {
        Request::Metrics => match render(registry) {
            Ok(text) => respond(&stream, "200 OK", CONTENT_TYPE, text.as_bytes()),
            Err(_) => respond(&stream, "500 Internal Server Error", "text/plain", b"encoding failed\n"),
        },
        Request::NotFound => respond(&stream, "404 Not Found", "text/plain", b"only /metrics is served\n"),
        Request::MethodNotAllowed => respond(&stream, "405 Method Not Allowed", "text/plain", b"GET only\n"),
        Request::Bad => respond(&stream, "400 Bad Request", "text/plain", b"not an HTTP/1.x request\n"),
    };
}

fn respond(mut stream: &TcpStream, status: &str, content_type: &str, body: &[u8]) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()?;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines() {
        assert_eq!(parse(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), Request::Metrics);
        assert_eq!(parse(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"), Request::Metrics);
        assert_eq!(parse(b"GET / HTTP/1.1\r\n\r\n"), Request::NotFound);
        assert_eq!(parse(b"GET /metricsx HTTP/1.1\r\n\r\n"), Request::NotFound);
        assert_eq!(parse(b"POST /metrics HTTP/1.1\r\n\r\n"), Request::MethodNotAllowed);
        assert_eq!(parse(b"GET /metrics\r\n\r\n"), Request::Bad);
        assert_eq!(parse(b"GET /metrics HTTP/2 extra\r\n\r\n"), Request::Bad);
        assert_eq!(parse(b"\x00\xff garbage"), Request::Bad);
        assert_eq!(parse(b""), Request::Bad);
    }

    #[test]
    fn head_ends() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nrest"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\n"), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
    }

    fn get(address: SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(address).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        stream.write_all(request).expect("write");
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    }

    #[test]
    fn serves_scrapes_past_hostile_clients() {
        let shards: Arc<[Arc<super::super::ShardMetrics>]> =
            Arc::from(vec![super::super::ShardMetrics::new(0)]);
        let registry = super::super::exposition::registry(shards, None);
        let endpoint = Endpoint::start("127.0.0.1:0".parse().expect("address"), registry).expect("start");
        let address = endpoint.address();
        // A client that never finishes its request, and one that sends garbage forever.
        let mut stalled = TcpStream::connect(address).expect("connect");
        stalled.write_all(b"GET /metr").expect("write");
        let mut flood = TcpStream::connect(address).expect("connect");
        let _ = flood.write_all(&[b'x'; REQUEST_BYTES_MAX]);
        let answer = get(address, b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n");
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.contains(CONTENT_TYPE));
        assert!(answer.contains("ringbroker_requests_total"));
        assert!(get(address, b"GET /other HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(get(address, b"DELETE /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        assert!(get(address, b"\x16\x03\x01 tls?\r\n\r\n").starts_with("HTTP/1.1 400"));
        let mut answer = String::new();
        let _ = flood.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
        drop(endpoint);
        assert!(TcpStream::connect(address).is_err(), "the listener closes when the endpoint drops");
    }
}
