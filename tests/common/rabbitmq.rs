//! RabbitMQ Streams test harness: a server to test against (a ringbroker started with its
//! RabbitMQ listener, or an external server such as a real RabbitMQ named by `RMQ_EXTERNAL`),
//! and a blocking hand-written client of the RabbitMQ Streams protocol for hostile tests.
//!
//! Test files include it with `#[path = "common/rabbitmq.rs"] mod rabbitmq;` next to
//! `mod common;` (it uses `common::Broker`). Everything runs on the test's thread with plain
//! blocking sockets; every read is bounded by [`READ_TIMEOUT`] and every loop by a deadline.
//!
//! Framing (RabbitMQ's PROTOCOL.adoc): `u32` big-endian size of what follows, `u16` key,
//! `u16` version, then the command's fields; strings are `i16` length + UTF-8, byte blobs `i32`
//! length + bytes, arrays and maps `i32` count + items. Responses set the key's top bit.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::common::Broker;

/// Socket read timeout of raw test connections.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest frame the raw client accepts from a server (a test guard, not a protocol limit).
const FRAME_BYTES_MAX: u32 = 16 << 20;
/// How long a server may take before its RabbitMQ listener answers.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Command keys used here (PROTOCOL.adoc).
pub mod key {
    pub const DECLARE_PUBLISHER: u16 = 1;
    pub const PUBLISH: u16 = 2;
    pub const PUBLISH_CONFIRM: u16 = 3;
    pub const PUBLISH_ERROR: u16 = 4;
    pub const CREATE: u16 = 13;
    pub const DELETE: u16 = 14;
    pub const PEER_PROPERTIES: u16 = 17;
    pub const SASL_HANDSHAKE: u16 = 18;
    pub const SASL_AUTHENTICATE: u16 = 19;
    pub const TUNE: u16 = 20;
    pub const OPEN: u16 = 21;
    pub const CLOSE: u16 = 22;
    pub const HEARTBEAT: u16 = 23;
    /// The bit a response sets on its request's key.
    pub const RESPONSE: u16 = 0x8000;
}

/// Response codes used here (PROTOCOL.adoc).
pub mod code {
    pub const OK: u16 = 1;
    pub const STREAM_ALREADY_EXISTS: u16 = 5;
    pub const AUTHENTICATION_FAILURE: u16 = 8;
    pub const VIRTUAL_HOST_ACCESS_FAILURE: u16 = 12;
    pub const UNKNOWN_FRAME: u16 = 13;
    pub const FRAME_TOO_LARGE: u16 = 14;
    pub const PUBLISHER_DOES_NOT_EXIST: u16 = 18;
}

/// Where a RabbitMQ Streams server listens and who may log in.
pub struct Server {
    /// The ringbroker process, when the test started one (None for an external server).
    pub broker: Option<Broker>,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    /// Features the server lacks (`RMQ_SKIP`, only for an external server).
    pub skip: Vec<String>,
}

impl Server {
    pub fn addr(&self) -> SocketAddr {
        format!("{}:{}", self.host, self.port).parse().expect("server address")
    }

    /// Whether the server has `feature` (`superstream`, `sac`, `filter`); prints why a part of a
    /// test is left out when it does not.
    pub fn has(&self, feature: &str) -> bool {
        let has = !self.skip.iter().any(|skipped| skipped == feature);
        if !has {
            eprintln!("SKIP part: the external server lacks {feature} (RMQ_SKIP)");
        }
        has
    }

    /// A broker that must still be running (a panic there kills it); no-op for external ones.
    pub fn assert_running(&mut self) {
        if let Some(broker) = self.broker.as_mut() {
            assert!(broker.is_running(), "ringbroker exited: {:?}", broker.exit_status());
        }
    }
}

/// `count` consecutive free loopback ports, found by binding.
pub fn free_port_run(count: u16) -> u16 {
    for _ in 0..200 {
        let probe = TcpListener::bind("127.0.0.1:0").expect("bind probe");
        let base = probe.local_addr().expect("probe address").port();
        drop(probe);
        if base > 65000 - count {
            continue;
        }
        if (0..count).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
    panic!("no {count} consecutive free loopback ports");
}

/// The RabbitMQ listener flags for a broker of `shards` shards on free ports: the main port and
/// the per-shard port base. Returns (flags, main port).
pub fn listener_flags(shards: u16) -> (Vec<String>, u16) {
    let base = free_port_run(shards + 1);
    let flags = vec![
        "--rabbitmq-listen".to_string(),
        format!("127.0.0.1:{base}"),
        "--rabbitmq-shard-port-base".to_string(),
        (base + 1).to_string(),
    ];
    (flags, base)
}

/// The server to test against: `RMQ_EXTERNAL=host:port` (with `RMQ_USER`, `RMQ_PASSWORD`,
/// default guest/guest, and `RMQ_SKIP`) names a running one, for validating the tests against
/// a real RabbitMQ; otherwise a ringbroker with `shards` shards and `extra` flags is started with
/// its RabbitMQ listener, logging in as the loopback root user.
pub fn server(shards: u16, extra: &[&str]) -> Server {
    if let Ok(external) = std::env::var("RMQ_EXTERNAL") {
        let (host, port) = external.rsplit_once(':').expect("RMQ_EXTERNAL is host:port");
        let env = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_string());
        let skip = env("RMQ_SKIP", "");
        return Server {
            broker: None,
            host: host.to_string(),
            port: port.parse().expect("RMQ_EXTERNAL port"),
            user: env("RMQ_USER", "guest"),
            password: env("RMQ_PASSWORD", "guest"),
            skip: skip.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect(),
        };
    }
    let (flags, port) = listener_flags(shards);
    let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
    args.extend_from_slice(extra);
    let broker = Broker::start(shards, &args);
    let server = Server {
        broker: Some(broker),
        host: "127.0.0.1".to_string(),
        port,
        user: "ringbroker".to_string(),
        password: "ringbroker".to_string(),
        skip: Vec::new(),
    };
    wait_for_listener(server.addr(), Instant::now() + READY_TIMEOUT);
    server
}

/// Waits until a PeerProperties exchange on `addr` succeeds.
pub fn wait_for_listener(addr: SocketAddr, deadline: Instant) {
    loop {
        let answered = RawClient::connect(addr).and_then(|mut client| client.peer_properties()).is_ok();
        if answered {
            return;
        }
        assert!(Instant::now() < deadline, "the RabbitMQ listener on {addr} did not answer in time");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Builds a command's fields.
#[derive(Default)]
pub struct Fields(pub Vec<u8>);

impl Fields {
    pub fn new() -> Fields {
        Fields(Vec::new())
    }
    pub fn u8(mut self, value: u8) -> Fields {
        self.0.push(value);
        self
    }
    pub fn u16(mut self, value: u16) -> Fields {
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }
    pub fn u32(mut self, value: u32) -> Fields {
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }
    pub fn u64(mut self, value: u64) -> Fields {
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }
    pub fn string(mut self, value: &str) -> Fields {
        let length = i16::try_from(value.len()).expect("test string fits an i16 length");
        self.0.extend_from_slice(&length.to_be_bytes());
        self.0.extend_from_slice(value.as_bytes());
        self
    }
    pub fn bytes(mut self, value: &[u8]) -> Fields {
        let length = i32::try_from(value.len()).expect("test blob fits an i32 length");
        self.0.extend_from_slice(&length.to_be_bytes());
        self.0.extend_from_slice(value);
        self
    }
    pub fn map(mut self, entries: &[(&str, &str)]) -> Fields {
        self = self.u32(entries.len() as u32);
        for (name, value) in entries {
            self = self.string(name).string(value);
        }
        self
    }
}

/// A whole frame: size prefix, key, version, fields.
pub fn frame(key: u16, version: u16, fields: &[u8]) -> Vec<u8> {
    let size = u32::try_from(4 + fields.len()).expect("test frame fits a u32 size");
    let mut out = Vec::with_capacity(4 + size as usize);
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(&key.to_be_bytes());
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(fields);
    out
}

/// A frame read from the server: key, version and the fields after them.
#[derive(Debug, Clone)]
pub struct Frame {
    pub key: u16,
    pub version: u16,
    pub fields: Vec<u8>,
}

impl Frame {
    /// A reader over the fields.
    pub fn reader(&self) -> Reader<'_> {
        Reader { bytes: &self.fields, at: 0 }
    }
}

/// Reads a server frame's fields; `None` when they end too soon (a server bug to report).
pub struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, count: usize) -> Option<&[u8]> {
        let end = self.at.checked_add(count)?;
        let slice = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(slice)
    }
    pub fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    pub fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    pub fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub fn u64(&mut self) -> Option<u64> {
        self.take(8).map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
    }
    pub fn string(&mut self) -> Option<String> {
        let length = self.u16()? as i16;
        if length < 0 {
            return Some(String::new());
        }
        self.take(length as usize).map(|b| String::from_utf8_lossy(b).into_owned())
    }
}

/// What became of published messages: confirmed publishing ids, and (id, code) errors.
pub type Outcomes = (Vec<u64>, Vec<(u64, u16)>);

/// How a connection ended, as a hostile test sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The server sent Close with this code (the client answered it).
    Close(u16),
    /// The server closed or reset the connection without a Close command.
    Eof,
}

/// A blocking RabbitMQ Streams client written frame by frame.
pub struct RawClient {
    pub stream: TcpStream,
    correlation: u32,
    /// Frames read while waiting for something else (Tune, confirmations), oldest first.
    unsolicited: Vec<Frame>,
    /// The frame max and heartbeat the server proposed in Tune (0 before Tune).
    pub frame_max: u32,
    pub heartbeat: u32,
}

impl RawClient {
    pub fn connect(addr: SocketAddr) -> std::io::Result<RawClient> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(READ_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(RawClient { stream, correlation: 0, unsolicited: Vec::new(), frame_max: 0, heartbeat: 0 })
    }

    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads one frame off the socket (never from the unsolicited queue).
    pub fn read_frame(&mut self) -> std::io::Result<Frame> {
        let mut size = [0_u8; 4];
        self.stream.read_exact(&mut size)?;
        let size = u32::from_be_bytes(size);
        if !(4..=FRAME_BYTES_MAX).contains(&size) {
            let message = format!("server frame of size {size}");
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, message));
        }
        let mut rest = vec![0_u8; size as usize];
        self.stream.read_exact(&mut rest)?;
        Ok(Frame {
            key: u16::from_be_bytes([rest[0], rest[1]]),
            version: u16::from_be_bytes([rest[2], rest[3]]),
            fields: rest[4..].to_vec(),
        })
    }

    /// The next frame: a queued unsolicited one first, else off the socket; heartbeats dropped.
    fn next_frame(&mut self) -> std::io::Result<Frame> {
        loop {
            let frame =
                if self.unsolicited.is_empty() { self.read_frame()? } else { self.unsolicited.remove(0) };
            if frame.key != key::HEARTBEAT {
                return Ok(frame);
            }
        }
    }

    /// Sends request `key` (version 1) with a fresh correlation id before `fields`, and returns
    /// its response's fields after the correlation id (they start with the response code).
    /// Other frames read meanwhile are queued.
    pub fn request(&mut self, key: u16, fields: Fields) -> std::io::Result<Frame> {
        self.correlation += 1;
        let correlation = self.correlation;
        let mut body = correlation.to_be_bytes().to_vec();
        body.extend_from_slice(&fields.0);
        self.send(&frame(key, 1, &body))?;
        let deadline = Instant::now() + READ_TIMEOUT;
        loop {
            let frame = self.read_frame()?;
            let is_response = frame.key == key | key::RESPONSE
                && frame.fields.get(..4) == Some(&correlation.to_be_bytes()[..]);
            if is_response {
                return Ok(Frame {
                    key: frame.key,
                    version: frame.version,
                    fields: frame.fields[4..].to_vec(),
                });
            }
            if frame.key == key::CLOSE {
                let mut reader = frame.reader();
                let code = reader.u32().and(reader.u16());
                let message =
                    format!("server sent Close while awaiting response to key {key}: {frame:?} {code:?}");
                return Err(std::io::Error::new(std::io::ErrorKind::ConnectionAborted, message));
            }
            if frame.key != key::HEARTBEAT {
                self.unsolicited.push(frame);
            }
            if Instant::now() >= deadline {
                return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no response in time"));
            }
        }
    }

    /// A request whose response is only a code; the code.
    pub fn request_code(&mut self, key: u16, fields: Fields) -> std::io::Result<u16> {
        let response = self.request(key, fields)?;
        response.reader().u16().ok_or_else(|| short(key, &response))
    }

    pub fn peer_properties(&mut self) -> std::io::Result<u16> {
        self.request_code(
            key::PEER_PROPERTIES,
            Fields::new().map(&[("product", "ringbroker raw test client")]),
        )
    }

    /// SaslHandshake, then SaslAuthenticate with PLAIN; the authentication's code.
    pub fn authenticate(&mut self, user: &str, password: &str) -> std::io::Result<u16> {
        let mechanisms = self.request(key::SASL_HANDSHAKE, Fields::new())?;
        let mut reader = mechanisms.reader();
        let code = reader.u16().ok_or_else(|| short(key::SASL_HANDSHAKE, &mechanisms))?;
        assert_eq!(code, code::OK, "SaslHandshake answered {code}");
        let count = reader.u32().ok_or_else(|| short(key::SASL_HANDSHAKE, &mechanisms))?;
        let offered: Vec<String> = (0..count.min(64)).filter_map(|_| reader.string()).collect();
        assert!(offered.iter().any(|m| m == "PLAIN"), "PLAIN is not offered: {offered:?}");
        let plain = format!("\0{user}\0{password}");
        let fields = Fields::new().string("PLAIN").bytes(plain.as_bytes());
        self.request_code(key::SASL_AUTHENTICATE, fields)
    }

    /// Reads the server's Tune and answers it with the same values.
    pub fn tune(&mut self) -> std::io::Result<()> {
        let deadline = Instant::now() + READ_TIMEOUT;
        let position = loop {
            if let Some(position) = self.unsolicited.iter().position(|f| f.key == key::TUNE) {
                break position;
            }
            let frame = self.read_frame()?;
            self.unsolicited.push(frame);
            if Instant::now() >= deadline {
                return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no Tune in time"));
            }
        };
        let tune = self.unsolicited.remove(position);
        let mut reader = tune.reader();
        self.frame_max = reader.u32().ok_or_else(|| short(key::TUNE, &tune))?;
        self.heartbeat = reader.u32().ok_or_else(|| short(key::TUNE, &tune))?;
        let answer = Fields::new().u32(self.frame_max).u32(self.heartbeat);
        self.send(&frame(key::TUNE, 1, &answer.0))
    }

    pub fn open(&mut self, virtual_host: &str) -> std::io::Result<u16> {
        self.request_code(key::OPEN, Fields::new().string(virtual_host))
    }

    /// A fully set-up connection (PeerProperties, SASL PLAIN, Tune, Open `/`); panics if any
    /// step fails.
    pub fn login(server: &Server) -> RawClient {
        let mut client = RawClient::connect(server.addr()).expect("connect to the RabbitMQ listener");
        assert_eq!(client.peer_properties().expect("PeerProperties"), code::OK);
        assert_eq!(client.authenticate(&server.user, &server.password).expect("SASL"), code::OK);
        client.tune().expect("Tune");
        assert_eq!(client.open("/").expect("Open"), code::OK);
        client
    }

    pub fn create_stream(&mut self, stream: &str) -> std::io::Result<u16> {
        self.request_code(key::CREATE, Fields::new().string(stream).map(&[]))
    }

    pub fn delete_stream(&mut self, stream: &str) -> std::io::Result<u16> {
        self.request_code(key::DELETE, Fields::new().string(stream))
    }

    pub fn declare_publisher(
        &mut self,
        publisher: u8,
        reference: &str,
        stream: &str,
    ) -> std::io::Result<u16> {
        let fields = Fields::new().u8(publisher).string(reference).string(stream);
        self.request_code(key::DECLARE_PUBLISHER, fields)
    }

    /// Publish v1: `(publishing id, message)` pairs (no response; see [`Self::outcomes`]).
    pub fn publish(&mut self, publisher: u8, messages: &[(u64, &[u8])]) -> std::io::Result<()> {
        let mut fields = Fields::new().u8(publisher).u32(messages.len() as u32);
        for (id, message) in messages {
            fields = fields.u64(*id).bytes(message);
        }
        self.send(&frame(key::PUBLISH, 1, &fields.0))
    }

    /// Reads PublishConfirm and PublishError frames for `publisher` until `count` publishing ids
    /// are accounted for.
    pub fn outcomes(&mut self, publisher: u8, count: usize) -> std::io::Result<Outcomes> {
        let (mut confirmed, mut errors) = (Vec::new(), Vec::new());
        let deadline = Instant::now() + READ_TIMEOUT;
        while confirmed.len() + errors.len() < count {
            assert!(Instant::now() < deadline, "publish outcomes did not arrive: {confirmed:?} {errors:?}");
            let frame = self.next_frame()?;
            let mut reader = frame.reader();
            let is_ours = matches!(frame.key, key::PUBLISH_CONFIRM | key::PUBLISH_ERROR)
                && reader.u8() == Some(publisher);
            if !is_ours {
                panic!("unexpected frame while awaiting publish outcomes: {frame:?}");
            }
            let items = reader.u32().ok_or_else(|| short(frame.key, &frame))?;
            for _ in 0..items.min(1 << 16) {
                let id = reader.u64().ok_or_else(|| short(frame.key, &frame))?;
                if frame.key == key::PUBLISH_CONFIRM {
                    confirmed.push(id);
                } else {
                    errors.push((id, reader.u16().ok_or_else(|| short(frame.key, &frame))?));
                }
            }
        }
        Ok((confirmed, errors))
    }

    /// Reads until the server closes the connection: with a Close command (answered) or not.
    /// Other frames are ignored; panics if neither happens within [`READ_TIMEOUT`] and a moment.
    pub fn ending(&mut self) -> Ending {
        let deadline = Instant::now() + READ_TIMEOUT + Duration::from_secs(2);
        loop {
            assert!(Instant::now() < deadline, "the server neither closed nor sent Close in time");
            match self.next_frame() {
                Ok(close) if close.key == key::CLOSE => {
                    let mut reader = close.reader();
                    let correlation = reader.u32().unwrap_or(0);
                    let code = reader.u16().unwrap_or(0);
                    let answer = Fields::new().u32(correlation).u16(code::OK);
                    let _ = self.send(&frame(key::CLOSE | key::RESPONSE, 1, &answer.0));
                    return Ending::Close(code);
                }
                Ok(_) => continue,
                Err(error)
                    if error.kind() == std::io::ErrorKind::WouldBlock
                        || error.kind() == std::io::ErrorKind::TimedOut =>
                {
                    panic!("the server neither closed nor sent Close within {READ_TIMEOUT:?}")
                }
                Err(_) => return Ending::Eof,
            }
        }
    }
}

fn short(key: u16, frame: &Frame) -> std::io::Error {
    let message = format!("response to key {key} ends too soon: {frame:?}");
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}

/// A well-behaved client's whole round trip on a fresh connection: log in, create `stream`
/// (or find it), declare a publisher, publish three messages and get each confirmed.
pub fn round_trip(server: &Server, stream: &str) {
    let mut client = RawClient::login(server);
    round_trip_on(&mut client, stream);
}

/// The same round trip on an already logged-in connection (publisher id 9 is left declared).
pub fn round_trip_on(client: &mut RawClient, stream: &str) {
    let created = client.create_stream(stream).expect("Create");
    assert!(matches!(created, code::OK | code::STREAM_ALREADY_EXISTS), "Create answered {created}");
    assert_eq!(client.declare_publisher(9, "", stream).expect("DeclarePublisher"), code::OK);
    let messages: [(u64, &[u8]); 3] = [(1, b"one"), (2, b"two"), (3, b"three")];
    client.publish(9, &messages).expect("Publish");
    let (mut confirmed, errors) = client.outcomes(9, 3).expect("outcomes");
    confirmed.sort_unstable();
    assert_eq!((confirmed, errors), (vec![1, 2, 3], vec![]), "the well-behaved client's publish");
    let deleted = client.request_code(6, Fields::new().u8(9)).expect("DeletePublisher");
    assert_eq!(deleted, code::OK, "DeletePublisher answered {deleted}");
}
