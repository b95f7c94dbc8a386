//! Test harness: starts the real `ringbroker` binary on free loopback ports with a temporary data
//! directory, and talks the real wire protocol to it over plain blocking sockets (so hostile
//! frames can be sent byte by byte). Every wait is bounded.

#![allow(dead_code)]

pub mod proxy;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor::Error as RkyvError;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::Archive;

use ringbroker::protocol::batch::BatchBuilder;
use ringbroker::protocol::frame::{encode_frame, FrameHeader, FRAME_HEADER_BYTES};
use ringbroker::protocol::messages::{self, *};

/// How long a broker may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Successful pings in a row that make a started broker ready. After a SIGKILL the dead
/// process's listening sockets can outlive it for a moment (io_uring tears down its pending
/// accepts asynchronously) and reset connections that land on them, so one ping is not enough.
pub const PINGS_IN_A_ROW: u32 = 5;
/// Socket read timeout of test connections.
pub const READ_TIMEOUT: Duration = Duration::from_secs(20);

/// A running broker process.
pub struct Broker {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub shards: u16,
    pub args: Vec<String>,
}

/// Three consecutive free loopback ports (main listener + 2 shard listeners), found by binding.
fn free_ports(count: u16) -> u16 {
    for _ in 0..200 {
        let probe = TcpListener::bind("127.0.0.1:0").expect("bind probe");
        let base = probe.local_addr().expect("addr").port();
        drop(probe);
        if base > 65000 - count {
            continue;
        }
        let all_free = (0..=count).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no free loopback ports");
}

/// Whether a fresh connection to `addr` answers a ping.
pub fn pings(addr: SocketAddr) -> bool {
    Conn::connect(addr).is_ok_and(|mut conn| conn.ping().is_ok())
}

/// How a child process exited, if it has.
pub fn exit_status(child: &mut Option<Child>) -> Option<String> {
    child.as_mut().and_then(|c| c.try_wait().ok().flatten()).map(|status| status.to_string())
}

/// Probes a starting broker at `addr` every 50 ms until `ready` holds `in_a_row` times in a row.
/// Fails when `exited` reports that the process ended, or at `deadline`.
pub fn wait_ready(
    addr: SocketAddr,
    deadline: Instant,
    in_a_row: u32,
    ready: &dyn Fn(SocketAddr) -> bool,
    exited: &mut dyn FnMut() -> Option<String>,
) -> Result<(), String> {
    let mut good = 0;
    loop {
        good = if ready(addr) { good + 1 } else { 0 };
        if good >= in_a_row {
            return Ok(());
        }
        if let Some(status) = exited() {
            return Err(format!("exited during start-up: {status}"));
        }
        if Instant::now() >= deadline {
            return Err("was not ready in time".to_string());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A whole request frame of `kind` carrying `request` and `payload`, encoded.
pub fn request_frame<Req>(kind: Kind, correlation: u64, request: &Req, payload: &[u8]) -> Vec<u8>
where
    Req: for<'a> rkyv::Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, RkyvError>>,
{
    let body = messages::encode(request).expect("encode");
    encode_frame(kind as u16, correlation, 0, &body, payload)
}

/// A user who may only read `stream`.
pub fn read_only_user(name: &str, password: &str, stream: &str) -> CreateUser {
    CreateUser {
        name: name.into(),
        password: password.into(),
        admin: false,
        permissions: vec![StreamPermission {
            stream: stream.into(),
            read: true,
            write: false,
            manage: false,
        }],
    }
}

impl Broker {
    /// Starts a broker with `shards` shards and extra flags.
    pub fn start(shards: u16, extra: &[&str]) -> Broker {
        let dir = tempfile::Builder::new().prefix("ringbroker-it-").tempdir().expect("tempdir");
        let port = free_ports(shards);
        let args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let mut broker = Broker { child: None, dir, port, shards, args };
        broker.spawn();
        broker
    }

    fn spawn(&mut self) {
        self.child = Some(self.command("warn").spawn().expect("spawn ringbroker"));
        let (addr, child) = (self.addr(), &mut self.child);
        wait_ready(addr, Instant::now() + START_TIMEOUT, PINGS_IN_A_ROW, &pings, &mut || exit_status(child))
            .unwrap_or_else(|why| panic!("ringbroker {why}"));
    }

    /// The shared listener.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Shard `shard`'s direct listener.
    pub fn shard_addr(&self, shard: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port + 1 + shard))
    }

    /// A logged-in root connection.
    pub fn root(&self) -> Conn {
        let mut conn = Conn::connect(self.addr()).expect("connect");
        conn.login("ringbroker", "ringbroker").expect("root login");
        conn
    }

    /// SIGTERM and wait (graceful: flush, fsync, close).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    assert!(status.success(), "ringbroker exited with {status}");
                    return;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    panic!("ringbroker did not stop within 30 s of SIGTERM");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// SIGKILL (a crash) and wait.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same data directory and ports.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Starts again after a kill.
    pub fn start_again(&mut self) {
        self.spawn();
    }

    /// The broker's resident set size in KiB (`VmRSS`), while it runs.
    pub fn rss_kib(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A server error: status and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub status: Status,
    pub message: String,
}

/// A blocking test connection.
pub struct Conn {
    pub stream: TcpStream,
    correlation: u64,
}

impl Conn {
    pub fn connect(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(READ_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Conn { stream, correlation: 0 })
    }

    /// A ping that reports I/O failures instead of panicking.
    pub fn ping(&mut self) -> std::io::Result<()> {
        self.correlation += 1;
        let body = messages::encode(&Empty {}).expect("encode");
        self.stream.write_all(&encode_frame(Kind::Ping as u16, self.correlation, 0, &body, &[]))?;
        let (header, _) = self.read_frame()?;
        if header.status != 0 {
            return Err(std::io::Error::other("ping failed"));
        }
        Ok(())
    }

    /// Sends raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads one whole frame: header and the aligned frame bytes.
    pub fn read_frame(&mut self) -> std::io::Result<(FrameHeader, AlignedVec<16>)> {
        let mut head = [0_u8; FRAME_HEADER_BYTES];
        self.stream.read_exact(&mut head)?;
        let header = FrameHeader::decode(&head, usize::MAX)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
        let mut frame = AlignedVec::<16>::with_capacity(header.length as usize);
        frame.extend_from_slice(&head);
        frame.resize(header.length as usize, 0);
        self.stream.read_exact(&mut frame[FRAME_HEADER_BYTES..])?;
        Ok((header, frame))
    }

    /// One request and its response (body and payload), or the server's failure.
    pub fn request<Req, Resp>(
        &mut self,
        kind: Kind,
        request: &Req,
        payload: &[u8],
    ) -> Result<(Resp, Vec<u8>), Failure>
    where
        Req: for<'a> rkyv::Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, RkyvError>>,
        Resp: Archive,
        Resp::Archived: for<'a> CheckBytes<HighValidator<'a, RkyvError>>
            + rkyv::Deserialize<Resp, HighDeserializer<RkyvError>>,
    {
        self.correlation += 1;
        let frame = request_frame(kind, self.correlation, request, payload);
        self.stream.write_all(&frame).expect("send request");
        let (header, frame) = self.read_frame().expect("read response");
        assert_eq!(header.correlation, self.correlation, "responses are matched by correlation id");
        let body = &frame[header.body_range()];
        if header.status != 0 {
            let error: ErrorBody = messages::decode(body).expect("error body");
            return Err(Failure { status: Status::from_u16(header.status), message: error.message });
        }
        let response = messages::decode(body).expect("response body");
        Ok((response, frame[header.payload_range()].to_vec()))
    }

    pub fn call<Req, Resp>(&mut self, kind: Kind, request: &Req) -> Result<Resp, Failure>
    where
        Req: for<'a> rkyv::Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, RkyvError>>,
        Resp: Archive,
        Resp::Archived: for<'a> CheckBytes<HighValidator<'a, RkyvError>>
            + rkyv::Deserialize<Resp, HighDeserializer<RkyvError>>,
    {
        self.request(kind, request, &[]).map(|(r, _)| r)
    }

    pub fn login(&mut self, user: &str, password: &str) -> Result<LoginResponse, Failure> {
        self.call(Kind::Login, &LoginRequest { user: user.into(), password: password.into() })
    }

    pub fn create_stream(&mut self, name: &str) -> StreamInfo {
        self.call(Kind::StreamCreate, &CreateStream { name: name.into(), if_missing: false })
            .expect("create stream")
    }

    pub fn create_topic(&mut self, stream: &str, topic: &str, partitions: u32) -> TopicInfo {
        let config = TopicConfig { partitions, ..TopicConfig::default() };
        let request = CreateTopic {
            stream: stream.into(),
            name: topic.into(),
            config,
            policy: Default::default(),
            if_missing: false,
        };
        self.call(Kind::TopicCreate, &request).expect("create topic")
    }

    pub fn produce(
        &mut self,
        stream: &str,
        topic: &str,
        partitioning: Partitioning,
        batches: &[Vec<u8>],
    ) -> Result<ProduceResponse, Failure> {
        let request = ProduceRequest {
            stream: stream.into(),
            topic: topic.into(),
            partitioning,
            batch_count: batches.len() as u32,
        };
        self.request(Kind::Produce, &request, &batches.concat()).map(|(r, _)| r)
    }

    /// Polls one partition as a named consumer.
    pub fn poll_partition(
        &mut self,
        stream: &str,
        topic: &str,
        partition: u32,
        strategy: PollStrategy,
        max_messages: u32,
    ) -> Result<(PollResponse, Vec<u8>), Failure> {
        self.poll_partition_bytes(stream, topic, partition, strategy, max_messages, 4 << 20)
    }

    /// [`Conn::poll_partition`] with a byte budget (at least one batch is returned whatever it is).
    pub fn poll_partition_bytes(
        &mut self,
        stream: &str,
        topic: &str,
        partition: u32,
        strategy: PollStrategy,
        max_messages: u32,
        max_bytes: u32,
    ) -> Result<(PollResponse, Vec<u8>), Failure> {
        let target = PollTarget::Partition(PartitionTarget { partition, consumer: "tests".into() });
        let request = PollRequest {
            stream: stream.into(),
            topic: topic.into(),
            target,
            strategy,
            max_messages,
            max_bytes,
            max_wait_ms: 0,
            auto_commit: false,
            filter: Vec::new(),
            match_unfiltered: false,
        };
        self.request(Kind::Poll, &request, &[])
    }

    pub fn stats(&mut self) -> StatsResponse {
        self.call(Kind::Stats, &StatsRequest { stream: None }).expect("stats")
    }
}

/// A batch of `count` messages whose payloads are `"{tag}-{i}"`.
pub fn batch_of(tag: &str, count: u32) -> Vec<u8> {
    let mut builder = BatchBuilder::new(0, 0);
    for i in 0..count {
        builder.push_payload(format!("{tag}-{i}").as_bytes()).expect("push");
    }
    builder.finish().expect("finish")
}

/// Every record payload in a poll payload at or after `start_offset`, with its offset.
pub fn records(payload: &[u8], start_offset: u64) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    for batch in ringbroker::protocol::batch::batches(payload) {
        let batch = batch.expect("served batches are valid");
        for record in batch.records() {
            if record.offset >= start_offset {
                out.push((record.offset, String::from_utf8_lossy(record.payload).into_owned()));
            }
        }
    }
    out
}

/// Reads a whole partition from `from` to its end as (offset, payload).
pub fn read_partition(conn: &mut Conn, stream: &str, topic: &str, partition: u32) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut offset = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (response, payload) =
            conn.poll_partition(stream, topic, partition, PollStrategy::Offset(offset), 1000).expect("poll");
        let polled = &response.partitions[0];
        out.extend(records(&payload, offset));
        if polled.next_offset >= polled.high_watermark || payload.is_empty() {
            return out;
        }
        offset = polled.next_offset;
        assert!(Instant::now() < deadline, "reading partition {partition} did not finish");
    }
}

/// How many times [`Broker::start_again_retrying`] tries before it gives up.
const RESTART_ATTEMPTS_MAX: u32 = 8;

impl Broker {
    /// Starts again after a kill, tolerating what a SIGKILLed broker leaves behind for a
    /// moment (listening sockets the dead process's io_uring has not torn down yet): an attempt
    /// whose process exits during start-up, or that is not ready within `timeout`, is killed and
    /// retried after a short pause; from the third attempt on, on fresh ports. Returns the number
    /// of attempts it took; panics after [`RESTART_ATTEMPTS_MAX`]. The broker logs at
    /// `log_default` unless `RUST_LOG` says otherwise.
    pub fn start_again_retrying(&mut self, timeout: Duration, log_default: &str) -> u32 {
        let mut failures = Vec::new();
        for attempt in 1..=RESTART_ATTEMPTS_MAX {
            if attempt >= 3 {
                self.port = free_ports(self.shards);
            }
            match self.try_spawn(timeout, log_default) {
                Ok(()) => return attempt,
                Err(error) => {
                    self.kill();
                    failures.push(format!("attempt {attempt} (port {}): {error}", self.port));
                    std::thread::sleep(Duration::from_millis(100 * u64::from(attempt)));
                }
            }
        }
        panic!("ringbroker did not restart: {}", failures.join("; "));
    }

    /// Like `spawn`, but reports a start-up failure instead of panicking (the process, if any,
    /// is left for the caller to kill).
    fn try_spawn(&mut self, timeout: Duration, log_default: &str) -> Result<(), String> {
        let mut command = self.command(log_default);
        self.child = Some(command.spawn().map_err(|e| format!("spawn ringbroker: {e}"))?);
        let (addr, child) = (self.addr(), &mut self.child);
        wait_ready(addr, Instant::now() + timeout, PINGS_IN_A_ROW, &pings, &mut || {
            let status = exit_status(child);
            if status.is_some() {
                *child = None;
            }
            status
        })
    }

    /// The command `spawn` runs, logging at `log_default` unless `RUST_LOG` is set.
    fn command(&self, log_default: &str) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ringbroker"));
        command
            .arg("--data-dir")
            .arg(self.dir.path())
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--shards")
            .arg(self.shards.to_string())
            .arg("--io-memory")
            .arg("2097152")
            .args(&self.args)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| log_default.into()))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        command
    }

    /// The broker's exit status if it has exited on its own (None while it runs or when it was
    /// never started or already reaped).
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|child| child.try_wait().ok().flatten())
    }

    /// Kills the broker and keeps its data directory (it is no longer removed on drop); returns
    /// its path, for a post-mortem after a failed check.
    pub fn keep_data_dir(&mut self) -> PathBuf {
        self.kill();
        let fresh = tempfile::Builder::new().prefix("ringbroker-it-").tempdir().expect("tempdir");
        std::mem::replace(&mut self.dir, fresh).keep()
    }

    /// Starts the broker on its data directory and SIGKILLs it `after` later, ready or not (a
    /// crash during recovery or start-up). Returns whether it was still running when killed.
    pub fn start_and_kill_after(&mut self, after: Duration, log_default: &str) -> bool {
        assert!(self.child.is_none(), "the broker is already running");
        let mut child = self.command(log_default).spawn().expect("spawn ringbroker");
        std::thread::sleep(after);
        let running = matches!(child.try_wait(), Ok(None));
        let _ = child.kill();
        let _ = child.wait();
        running
    }
}

/// Consecutive successful readiness probes [`Broker::start_ready_when`] waits for.
const READY_PROBES_IN_A_ROW: u32 = 3;

impl Broker {
    /// Starts a broker like [`Broker::start`], but judges readiness with `ready` (called with the
    /// shared listener's address every 50 ms until it succeeds 3 times in a row), for listeners
    /// a plain ping cannot reach (TLS). Panics if the broker exits or is not ready within the
    /// start timeout.
    pub fn start_ready_when(shards: u16, extra: &[&str], ready: &dyn Fn(SocketAddr) -> bool) -> Broker {
        let dir = tempfile::Builder::new().prefix("ringbroker-it-").tempdir().expect("tempdir");
        let port = free_ports(shards);
        let args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let mut broker = Broker { child: None, dir, port, shards, args };
        broker.child = Some(broker.command("warn").spawn().expect("spawn ringbroker"));
        let (addr, child) = (broker.addr(), &mut broker.child);
        wait_ready(addr, Instant::now() + START_TIMEOUT, READY_PROBES_IN_A_ROW, ready, &mut || {
            exit_status(child)
        })
        .unwrap_or_else(|why| panic!("ringbroker {why}"));
        broker
    }

    /// Whether the broker process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }
}

impl Broker {
    /// Starts a broker on a copy of the data directory `fixture` (for format-compatibility
    /// tests: the fixture is never written to).
    pub fn start_from(shards: u16, extra: &[&str], fixture: &std::path::Path) -> Broker {
        let dir = tempfile::Builder::new().prefix("ringbroker-it-").tempdir().expect("tempdir");
        copy_tree(fixture, dir.path());
        let port = free_ports(shards);
        let args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let mut broker = Broker { child: None, dir, port, shards, args };
        broker.spawn();
        broker
    }
}

/// Copies the directory tree `from` into `to` (which exists).
fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    for entry in std::fs::read_dir(from).expect("read fixture dir") {
        let entry = entry.expect("fixture entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            std::fs::create_dir_all(&target).expect("create dir");
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy fixture file");
        }
    }
}

/// Runs `ringctl --server ADDR ARGS` with `stdin`; (exit success, stdout, stderr).
pub fn ringctl(broker: &Broker, args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringctl"))
        .arg("--server")
        .arg(broker.addr().to_string())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ringctl");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write stdin");
    // Outputs are small (well under a pipe buffer), so waiting before reading cannot block.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("try_wait").is_none() {
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            panic!("ringctl {args:?} did not finish within 30 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let output = child.wait_with_output().expect("ringctl output");
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (output.status.success(), text(&output.stdout), text(&output.stderr))
}
