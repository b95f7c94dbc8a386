//! Limits and hostile clients against the real `ringbroker` binary on loopback: a storm of 1,000
//! connections, slow and partial frames (frame-read and idle timeouts), random bytes, the
//! in-flight, memory and connection bounds, missing rights, and password guessing. A
//! well-behaved client is served throughout. Every loop is bounded in count and time.

mod common;

use std::io::Read;
use std::net::Shutdown;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use ringbroker::protocol::frame::FRAME_HEADER_BYTES;
use ringbroker::protocol::messages::*;

const STREAM: &str = "hostile";
const TOPIC: &str = "t";

/// Waits (at most `bound`) for the server to close `conn`; returns how long that took. Fails if
/// the connection is still open after `bound`.
fn closed_within(conn: &mut Conn, started: Instant, bound: Duration) -> Duration {
    conn.stream.set_read_timeout(Some(bound)).expect("read timeout");
    let mut rest = Vec::new();
    let end = conn.stream.read_to_end(&mut rest);
    let elapsed = started.elapsed();
    match end {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(error) => panic!("the server did not close the connection within {bound:?}: {error}"),
    }
    elapsed
}

fn poll(partition: u32, max_wait_ms: u32) -> PollRequest {
    PollRequest {
        stream: STREAM.into(),
        topic: TOPIC.into(),
        target: PollTarget::Partition(PartitionTarget { partition, consumer: "hostile".into() }),
        strategy: PollStrategy::Next,
        max_messages: 10,
        max_bytes: 1 << 20,
        max_wait_ms,
        auto_commit: false,
        filter: Vec::new(),
        match_unfiltered: false,
    }
}

fn produce(partition: u32) -> ProduceRequest {
    ProduceRequest {
        stream: STREAM.into(),
        topic: TOPIC.into(),
        partitioning: Partitioning::Partition(partition),
        batch_count: 1,
    }
}

/// xorshift64*: reproducible noise without a dependency.
fn noise(seed: &mut u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|_| {
            *seed ^= *seed >> 12;
            *seed ^= *seed << 25;
            *seed ^= *seed >> 27;
            (seed.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

#[test]
fn a_storm_of_1000_connections_passes_and_a_good_client_is_served_throughout() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 250;
    const HELD_AT_ONCE: usize = 50;
    let broker = Broker::start(2, &["--fsync", "never"]);
    let mut good = broker.root();
    let started = Instant::now();
    let address = broker.addr();
    let stormers: Vec<_> = (0..THREADS)
        .map(|thread_index| {
            thread::spawn(move || {
                let mut pinged = 0;
                for batch in 0..PER_THREAD / HELD_AT_ONCE {
                    let mut held = Vec::with_capacity(HELD_AT_ONCE);
                    for i in 0..HELD_AT_ONCE {
                        let mut conn = Conn::connect(address).expect("storm connect");
                        conn.stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
                        if (thread_index + batch + i) % 2 == 0 {
                            conn.ping().expect("storm ping");
                            pinged += 1;
                        }
                        held.push(conn);
                    }
                    drop(held);
                }
                pinged
            })
        })
        .collect();
    let mut slowest = Duration::ZERO;
    let mut pings = 0;
    while !stormers.iter().all(|s| s.is_finished()) {
        let ping = Instant::now();
        let _: PingResponse = good.call(Kind::Ping, &Empty {}).expect("the good client is served");
        slowest = slowest.max(ping.elapsed());
        pings += 1;
        assert!(started.elapsed() < Duration::from_secs(30), "the storm did not finish within 30 s");
        thread::sleep(Duration::from_millis(10));
    }
    let pinged: usize = stormers.into_iter().map(|s| s.join().expect("storm thread")).sum();
    assert_eq!(pinged, THREADS * PER_THREAD / 2);
    assert!(slowest < Duration::from_secs(2), "a ping took {slowest:?} during the storm ({pings} pings)");
    // Every storm connection is released.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let open = good.stats().server.connections;
        if open <= 1 {
            break;
        }
        assert!(Instant::now() < deadline, "{open} connections still counted after the storm");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn slow_partial_and_idle_connections_are_closed_and_busy_ones_are_not() {
    let broker =
        Broker::start(2, &["--fsync", "never", "--frame-read-timeout", "1s", "--idle-timeout", "2s"]);
    let mut root = broker.root();
    root.create_stream(STREAM);
    root.create_topic(STREAM, TOPIC, 2);
    let address = broker.addr();

    // A header whose body never comes, and half a produce body: closed by the frame-read timeout.
    let login = request_frame(Kind::Login, 1, &LoginRequest { user: "x".into(), password: "y".into() }, &[]);
    let batch = batch_of("slow", 50);
    let body_half = request_frame(Kind::Produce, 2, &produce(0), &batch);
    let header_only = thread::spawn(move || {
        let mut conn = Conn::connect(address).expect("connect");
        conn.send_raw(&login[..FRAME_HEADER_BYTES]).expect("send header");
        closed_within(&mut conn, Instant::now(), Duration::from_secs(5))
    });
    let half_body = thread::spawn(move || {
        let mut conn = Conn::connect(address).expect("connect");
        conn.send_raw(&body_half[..body_half.len() / 2]).expect("send half");
        closed_within(&mut conn, Instant::now(), Duration::from_secs(5))
    });
    // A silent connection and a partial header: closed by the idle timeout.
    let silent = thread::spawn(move || {
        let mut conn = Conn::connect(address).expect("connect");
        closed_within(&mut conn, Instant::now(), Duration::from_secs(6))
    });
    let partial_header = thread::spawn(move || {
        let mut conn = Conn::connect(address).expect("connect");
        conn.send_raw(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]).expect("send");
        closed_within(&mut conn, Instant::now(), Duration::from_secs(6))
    });
    // A long poll outlasting the idle timeout keeps its connection: in flight is not idle.
    let mut waiting = broker.root();
    let polled = Instant::now();
    let (response, _) =
        waiting.request::<_, PollResponse>(Kind::Poll, &poll(1, 3_000), &[]).expect("long poll answered");
    assert!(polled.elapsed() >= Duration::from_millis(2_900), "the poll waited: {:?}", polled.elapsed());
    assert_eq!(response.partitions[0].high_watermark, 0);

    for (name, handle) in [("header only", header_only), ("half a body", half_body)] {
        let elapsed = handle.join().expect("thread");
        assert!(
            elapsed >= Duration::from_millis(900) && elapsed < Duration::from_millis(1_900),
            "{name}: closed after {elapsed:?}, expected the 1 s frame-read timeout"
        );
    }
    for (name, handle) in [("silent", silent), ("partial header", partial_header)] {
        let elapsed = handle.join().expect("thread");
        assert!(
            elapsed >= Duration::from_millis(1_900) && elapsed < Duration::from_millis(3_000),
            "{name}: closed after {elapsed:?}, expected the 2 s idle timeout"
        );
    }
    root = broker.root();
    root.produce(STREAM, TOPIC, Partitioning::Partition(0), &[batch_of("after", 1)]).expect("served");
}

#[test]
fn random_bytes_get_an_error_or_a_close_and_the_server_lives() {
    let broker = Broker::start(2, &["--fsync", "never", "--idle-timeout", "5s"]);
    let mut good = broker.root();
    let mut seed = 0x5EED_0FDE_ADBE_EF00_u64;
    for round in 0..40 {
        let len = [1, 7, 31, 32, 33, 64, 512, 4096, 70_000][round % 9];
        let bytes = noise(&mut seed, len);
        let mut conn = Conn::connect(broker.addr()).expect("connect");
        // The server may close before it read everything (a reset): sending may fail then.
        let _ = conn.send_raw(&bytes);
        // Short noise never makes a header: end it so the server sees EOF.
        let _ = conn.stream.shutdown(Shutdown::Write);
        conn.stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        match conn.read_frame() {
            Ok((header, _)) => {
                let status = Status::from_u16(header.status);
                assert!(
                    matches!(status, Status::BadFrame | Status::FrameTooLarge),
                    "round {round}: noise of {len} bytes got {status:?}"
                );
                closed_within(&mut conn, Instant::now(), Duration::from_secs(5));
            }
            Err(error) => assert!(
                matches!(
                    error.kind(),
                    std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
                ),
                "round {round}: noise of {len} bytes: {error}"
            ),
        }
        let _: PingResponse = good.call(Kind::Ping, &Empty {}).expect("the server lives");
    }
}

#[test]
fn in_flight_memory_and_connection_limits_hold() {
    let broker = Broker::start(
        1,
        &[
            "--fsync",
            "never",
            "--max-in-flight",
            "2",
            "--max-connection-memory",
            "65536",
            "--max-connections",
            "4",
        ],
    );
    let mut root = broker.root();
    root.create_stream(STREAM);
    root.create_topic(STREAM, TOPIC, 2);

    // Two long polls fill the in-flight slots: a ping behind them waits for the first answer.
    let started = Instant::now();
    let mut pipelined = Vec::new();
    pipelined.extend(request_frame(Kind::Poll, 11, &poll(0, 1_000), &[]));
    pipelined.extend(request_frame(Kind::Poll, 12, &poll(1, 1_000), &[]));
    pipelined.extend(request_frame(Kind::Ping, 13, &Empty {}, &[]));
    root.send_raw(&pipelined).expect("send");
    let mut order = Vec::new();
    for _ in 0..3 {
        let (header, _) = root.read_frame().expect("answer");
        order.push((header.correlation, started.elapsed()));
    }
    let ping_at = order.iter().find(|(c, _)| *c == 13).expect("ping answered").1;
    assert!(ping_at >= Duration::from_millis(900), "the ping waited for a slot: {order:?}");

    // A long poll holds a little memory; a produce frame that would go over 64 KiB waits for it.
    let started = Instant::now();
    let big = batch_of(&"m".repeat(1000), 70);
    assert!(big.len() > 65536);
    let mut pipelined = request_frame(Kind::Poll, 21, &poll(1, 1_000), &[]);
    pipelined.extend(request_frame(Kind::Produce, 22, &produce(0), &big));
    root.send_raw(&pipelined).expect("send");
    let (first, _) = root.read_frame().expect("answer");
    let (second, _) = root.read_frame().expect("answer");
    assert_eq!(
        (first.correlation, second.correlation),
        (21, 22),
        "the produce was read only after the poll freed its memory"
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(Status::from_u16(second.status), Status::Ok, "a frame above the bound is served alone");

    // Four connections fit (the root one included); the fifth is refused with a status.
    let mut held: Vec<Conn> = (0..3).map(|_| broker.root()).collect();
    let mut refused = Conn::connect(broker.addr()).expect("connect");
    let (header, _) = refused.read_frame().expect("refusal");
    assert_eq!(Status::from_u16(header.status), Status::TooManyConnections);
    closed_within(&mut refused, Instant::now(), Duration::from_secs(5));
    held.pop();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut again = loop {
        let mut conn = Conn::connect(broker.addr()).expect("connect");
        if conn.ping().is_ok() {
            break conn;
        }
        assert!(Instant::now() < deadline, "a freed connection slot was not reusable");
        thread::sleep(Duration::from_millis(20));
    };
    again.login("ringbroker", "ringbroker").expect("login");
    let _: PingResponse = root.call(Kind::Ping, &Empty {}).expect("root still served");
}

#[test]
fn rights_are_enforced_and_password_guessing_is_cut_off() {
    let broker = Broker::start(1, &["--fsync", "never", "--max-failed-logins", "3"]);
    let mut root = broker.root();
    root.create_stream(STREAM);
    root.create_topic(STREAM, TOPIC, 1);
    root.create_stream("private");
    let reader = read_only_user("reader", "reader-pw", STREAM);
    let _: Empty = root.call(Kind::UserCreate, &reader).expect("create a read-only user");

    let mut user = Conn::connect(broker.addr()).expect("connect");
    user.login("reader", "reader-pw").expect("login");
    user.poll_partition(STREAM, TOPIC, 0, PollStrategy::First, 10).expect("reading is allowed");
    let failure =
        user.produce(STREAM, TOPIC, Partitioning::Partition(0), &[batch_of("w", 1)]).expect_err("no write");
    assert_eq!(failure.status, Status::PermissionDenied);
    let failure = user.poll_partition("private", TOPIC, 0, PollStrategy::First, 1).expect_err("no right");
    assert_eq!(failure.status, Status::PermissionDenied);
    let failure = user
        .call::<_, Empty>(Kind::TopicDelete, &TopicRef { stream: STREAM.into(), topic: TOPIC.into() })
        .expect_err("no manage right");
    assert_eq!(failure.status, Status::PermissionDenied);
    let failure = user.call::<_, UserList>(Kind::UserList, &Empty {}).expect_err("not an administrator");
    assert_eq!(failure.status, Status::PermissionDenied);

    // Guessing: two wrong answers, then the third failure is throttled and the connection closed.
    let mut guesser = Conn::connect(broker.addr()).expect("connect");
    for guess in ["a", "b"] {
        let failure = guesser.login("ringbroker", guess).expect_err("wrong");
        assert_eq!(failure.status, Status::InvalidCredentials);
    }
    let failure = guesser.login("ringbroker", "c").expect_err("throttled");
    assert_eq!(failure.status, Status::LoginThrottled, "{}", failure.message);
    closed_within(&mut guesser, Instant::now(), Duration::from_secs(5));

    // Further guesses from the same address are spaced out: three more take at least 100 +
    // 200 ms of waiting on top of the password checks.
    let mut second = Conn::connect(broker.addr()).expect("connect");
    let started = Instant::now();
    for guess in ["d", "e"] {
        let failure = second.login("ringbroker", guess).expect_err("wrong");
        assert_eq!(failure.status, Status::InvalidCredentials);
    }
    let failure = second.login("ringbroker", "f").expect_err("throttled");
    assert_eq!(failure.status, Status::LoginThrottled);
    assert!(started.elapsed() >= Duration::from_millis(300), "guesses were spaced: {:?}", started.elapsed());

    // The right password still works on a new connection, and other clients were served.
    let mut fresh = Conn::connect(broker.addr()).expect("connect");
    let started = Instant::now();
    fresh.login("ringbroker", "ringbroker").expect("a good login after failures");
    assert!(started.elapsed() < Duration::from_secs(6));
    let _: PingResponse = root.call(Kind::Ping, &Empty {}).expect("root served");
}
