//! Hostile bytes against the RabbitMQ Streams listener, written frame by frame over std
//! sockets: unknown command keys, truncated and oversized frames, garbage, a wrong SASL
//! password, Publish before DeclarePublisher, another virtual host, commands before logging in.
//! Each gets the protocol's error code or a close, and afterwards the broker still runs, a
//! connection opened before the attack still works, and a fresh one completes a whole round
//! trip (log in, create, declare, publish, every message confirmed).
//!
//! Runs against a ringbroker started per test; `RMQ_EXTERNAL=host:port` (see
//! `common/rabbitmq.rs`) points it at a running server instead, which is how it was checked
//! against RabbitMQ 3.10.

mod common;
#[path = "common/rabbitmq.rs"]
mod rabbitmq;

use std::net::Shutdown;

use rabbitmq::{code, frame, key, round_trip, round_trip_on, Ending, Fields, RawClient, Server};

/// A well-behaved connection, logged in before the attack, used again after it.
fn bystander(server: &Server, tag: &str) -> RawClient {
    let mut client = RawClient::login(server);
    round_trip_on(&mut client, &format!("{tag}-bystander"));
    client
}

/// After an attack: the broker runs, the bystander still works, a fresh client too.
fn still_serves(server: &mut Server, bystander: &mut RawClient, tag: &str) {
    server.assert_running();
    round_trip_on(bystander, &format!("{tag}-bystander"));
    round_trip(server, &format!("{tag}-fresh"));
    server.assert_running();
}

/// The attacked connection ended with one of `codes` in a Close, or without one.
fn assert_refused(ending: Ending, codes: &[u16], what: &str) {
    eprintln!("{what}: {ending:?}");
    match ending {
        Ending::Eof => {}
        Ending::Close(got) => {
            assert!(codes.contains(&got), "{what}: Close with code {got}, expected one of {codes:?}")
        }
    }
}

/// A connection through PeerProperties only (not logged in).
fn greeted(server: &Server) -> RawClient {
    let mut client = RawClient::connect(server.addr()).expect("connect");
    assert_eq!(client.peer_properties().expect("PeerProperties"), code::OK);
    client
}

#[test]
fn unknown_command_keys_are_refused() {
    let mut server = rabbitmq::server(2, &[]);
    let mut other = bystander(&server, "unknown");
    for unknown in [0x0000_u16, 0x00ff, 0x7777, 0xffff] {
        let mut client = RawClient::login(&server);
        client.send(&frame(unknown, 1, &Fields::new().u32(1).u64(42).0)).expect("send");
        assert_refused(client.ending(), &[code::UNKNOWN_FRAME], &format!("key {unknown:#06x}"));
        // Before logging in, too.
        let mut client = RawClient::connect(server.addr()).expect("connect");
        client.send(&frame(unknown, 1, &Fields::new().u32(1).0)).expect("send");
        assert_refused(client.ending(), &[code::UNKNOWN_FRAME], &format!("key {unknown:#06x} first"));
    }
    still_serves(&mut server, &mut other, "unknown");
}

#[test]
fn truncated_frames_are_dropped() {
    let mut server = rabbitmq::server(2, &[]);
    let mut other = bystander(&server, "truncated");
    let partial = |logged_in: bool, bytes: &[u8]| {
        let mut client = if logged_in {
            RawClient::login(&server)
        } else {
            RawClient::connect(server.addr()).expect("connect")
        };
        client.send(bytes).expect("send");
        client.stream.shutdown(Shutdown::Write).expect("shutdown");
        assert_eq!(client.ending(), Ending::Eof, "a truncated frame then end of input: {bytes:?}");
    };
    // The size prefix promises 100 bytes, 10 come; half a size prefix; a header cut short.
    let promised = [&100_u32.to_be_bytes()[..], &[0, 13, 0, 1, 0, 0, 0, 1, 0, 5]].concat();
    for logged_in in [false, true] {
        partial(logged_in, &promised);
        partial(logged_in, &[0, 0]);
        partial(logged_in, &frame(key::CREATE, 1, &Fields::new().u32(1).0)[..7]);
    }
    // A connection that stops mid-frame and stays open holds nothing up.
    let mut stalled = RawClient::login(&server);
    stalled.send(&promised).expect("send");
    still_serves(&mut server, &mut other, "truncated");
    drop(stalled);
    still_serves(&mut server, &mut other, "truncated");
}

#[test]
fn oversized_frames_are_refused() {
    let mut server = rabbitmq::server(2, &[]);
    let mut other = bystander(&server, "oversized");
    // Logged in: a Publish one byte over the negotiated frame max. The server may refuse on
    // the size prefix (ringbroker) or once the frame is in (RabbitMQ 3.10): either way the
    // connection ends, with FRAME_TOO_LARGE if it says why.
    let mut client = RawClient::login(&server);
    assert!(client.frame_max > 0, "Tune proposed no frame max");
    let over = client.frame_max + 1;
    let mut oversized = vec![0_u8; over as usize + 4];
    oversized[..4].copy_from_slice(&over.to_be_bytes());
    oversized[4..6].copy_from_slice(&key::PUBLISH.to_be_bytes());
    oversized[6..8].copy_from_slice(&1_u16.to_be_bytes());
    let _ = client.send(&oversized); // a server that closes early fails the rest of the write
    assert_refused(client.ending(), &[code::FRAME_TOO_LARGE], "a frame over the frame max");
    // Before Tune, with sizes no server accepts (only the header is sent: the server must
    // refuse on the size prefix, neither waiting for nor allocating the body).
    for size in [u32::MAX, i32::MAX as u32, 64 << 20] {
        let mut client = RawClient::connect(server.addr()).expect("connect");
        client
            .send(&[&size.to_be_bytes()[..], &key::PEER_PROPERTIES.to_be_bytes(), &[0, 1]].concat())
            .expect("send");
        assert_refused(client.ending(), &[code::FRAME_TOO_LARGE], &format!("first frame of size {size}"));
    }
    still_serves(&mut server, &mut other, "oversized");
}

/// A small seeded generator (xorshift64*), so a failing case can be replayed.
fn noise(seed: u64, length: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..length)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

#[test]
fn garbage_ends_the_connection_only() {
    let mut server = rabbitmq::server(2, &[]);
    let mut other = bystander(&server, "garbage");
    for seed in 1..=12_u64 {
        let logged_in = seed % 2 == 0;
        let mut client = if logged_in {
            RawClient::login(&server)
        } else {
            RawClient::connect(server.addr()).expect("connect")
        };
        let mut bytes = noise(seed, 2048);
        if seed % 3 == 0 {
            // A plausible size prefix, so the garbage reaches a command decoder.
            bytes[..4].copy_from_slice(&2044_u32.to_be_bytes());
            bytes[4..6].copy_from_slice(&(1 + (seed as u16 % 30)).to_be_bytes());
        }
        // The server may close before reading it all: a failed write is fine.
        let _ = client.send(&bytes);
        let _ = client.stream.shutdown(Shutdown::Write);
        let ending = client.ending();
        eprintln!("garbage seed {seed} (logged in: {logged_in}): {ending:?}");
    }
    still_serves(&mut server, &mut other, "garbage");
}

#[test]
fn wrong_credentials_are_authentication_failures() {
    let mut server = rabbitmq::server(2, &[]);
    let mut other = bystander(&server, "sasl");
    let user = server.user.clone();
    let mut client = greeted(&server);
    assert_eq!(client.authenticate(&user, "not the password").expect("SASL"), code::AUTHENTICATION_FAILURE);
    let mut client = greeted(&server);
    assert_eq!(client.authenticate("nobody-at-all", "whatever").expect("SASL"), code::AUTHENTICATION_FAILURE);
    // A mechanism the server does not offer.
    let mut client = greeted(&server);
    let _ = client.request(key::SASL_HANDSHAKE, Fields::new()).expect("SaslHandshake");
    let unsupported =
        client.request_code(key::SASL_AUTHENTICATE, Fields::new().string("NOT-A-MECHANISM").bytes(b"x"));
    assert_eq!(unsupported.expect("SaslAuthenticate"), 7, "SASL_MECHANISM_NOT_SUPPORTED");
    still_serves(&mut server, &mut other, "sasl");
}

#[test]
fn publish_before_declaring_is_a_publish_error() {
    let mut server = rabbitmq::server(2, &[]);
    let mut other = bystander(&server, "undeclared");
    let mut client = RawClient::login(&server);
    let created = client.create_stream("undeclared").expect("Create");
    assert!(matches!(created, code::OK | code::STREAM_ALREADY_EXISTS), "Create answered {created}");
    client.publish(7, &[(1, b"a"), (2, b"b"), (3, b"c")]).expect("Publish");
    let (confirmed, errors) = client.outcomes(7, 3).expect("PublishError");
    assert!(confirmed.is_empty(), "confirmed {confirmed:?} for an undeclared publisher");
    let codes: Vec<(u64, u16)> = (1..=3).map(|id| (id, code::PUBLISHER_DOES_NOT_EXIST)).collect();
    assert_eq!(errors, codes);
    // The connection itself is still good.
    round_trip_on(&mut client, "undeclared");
    still_serves(&mut server, &mut other, "undeclared");
}

#[test]
fn other_virtual_hosts_are_refused() {
    let mut server = rabbitmq::server(2, &[]);
    let mut other = bystander(&server, "vhost");
    for virtual_host in ["other", "/other", ""] {
        let mut client = greeted(&server);
        assert_eq!(client.authenticate(&server.user, &server.password).expect("SASL"), code::OK);
        client.tune().expect("Tune");
        let opened = client.open(virtual_host).expect("Open");
        assert_eq!(opened, code::VIRTUAL_HOST_ACCESS_FAILURE, "Open of virtual host {virtual_host:?}");
    }
    still_serves(&mut server, &mut other, "vhost");
}

#[test]
fn commands_before_logging_in_do_nothing() {
    let mut server = rabbitmq::server(2, &[]);
    let mut other = bystander(&server, "early");
    let mut client = greeted(&server);
    // An error answer or a closed connection are both fine; success is not.
    if let Ok(answer) = client.request_code(key::CREATE, Fields::new().string("early-created").map(&[])) {
        assert_ne!(answer, code::OK, "Create before SASL succeeded");
    }
    // The stream was not created: a logged-in client creates it now.
    let mut admin = RawClient::login(&server);
    assert_eq!(admin.create_stream("early-created").expect("Create"), code::OK);
    assert_eq!(admin.delete_stream("early-created").expect("Delete"), code::OK);
    still_serves(&mut server, &mut other, "early");
}
