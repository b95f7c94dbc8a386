//! Hostile input: every truncation of every seed frame, trailing bytes, negative and huge
//! counts and lengths, nulls where the protocol requires a string, bad UTF-8, unknown keys and
//! versions, unknown offset types, and the errors' codes and messages. Then proptest: arbitrary
//! bytes and mutated seeds never panic, and whatever decodes re-encodes to a frame that decodes
//! to the same value, with every byte accounted for.

use proptest::prelude::*;

use super::seed_frames::seed_frames;
use super::test_bytes::Bytes;
use super::*;

fn refused(frame: &[u8]) -> DecodeError {
    match decode(&frame[4..]) {
        Ok(decoded) => panic!("decoded {decoded:?}"),
        Err(error) => error,
    }
}

fn is_malformed(error: &DecodeError) -> bool {
    matches!(error.kind, DecodeErrorKind::Malformed(_))
}

#[test]
fn every_truncation_of_every_command_is_refused() {
    for (name, frame) in seed_frames() {
        let body = &frame[4..];
        let whole = decode(body).unwrap_or_else(|error| panic!("{name}: {error}"));
        for len in 0..body.len() {
            let result = decode(&body[..len]);
            // A Subscribe cut right after its credit is a Subscribe without properties, which
            // the Java client sends: valid, and the only prefix that is.
            if let (
                Ok(Frame { command: Command::Subscribe { properties, .. }, .. }),
                Command::Subscribe { .. },
            ) = (&result, &whole.command)
            {
                assert!(properties.is_empty(), "{name} cut at {len}");
                continue;
            }
            // rstream's ConsumerUpdate answer cut before its unused offset value is the Java
            // client's.
            if let (
                Ok(Frame { command: Command::ConsumerUpdateResponse { offset, .. }, .. }),
                Command::ConsumerUpdateResponse { offset: whole_offset, .. },
            ) = (&result, &whole.command)
            {
                assert_eq!((offset, len), (whole_offset, body.len() - 8), "{name} cut at {len}");
                continue;
            }
            let error = result.expect_err(&format!("{name} cut at {len} decoded"));
            if name == "consumer-update-response-rstream" && len > body.len() - 8 {
                // Part of the unused offset value: neither the Java form nor rstream's.
                assert_eq!(error.kind, DecodeErrorKind::Malformed("trailing bytes after the command"));
                continue;
            }
            assert_eq!(error.kind, DecodeErrorKind::Truncated, "{name} cut at {len}");
            if len >= 2 {
                assert_eq!(error.key, whole.key, "{name} cut at {len}");
            }
            if len >= 8 {
                assert_eq!(error.correlation, whole.command.correlation(), "{name} cut at {len}");
            }
        }
    }
}

#[test]
fn trailing_bytes_are_refused() {
    for (name, frame) in seed_frames() {
        let mut longer = frame[4..].to_vec();
        longer.push(0);
        let error = decode(&longer).expect_err(name);
        // A Subscribe without properties reads the extra byte as the start of a property count.
        let expected = if name == "subscribe-no-properties" {
            DecodeErrorKind::Truncated
        } else {
            DecodeErrorKind::Malformed("trailing bytes after the command")
        };
        assert_eq!(error.kind, expected, "{name}");
    }
}

#[test]
fn negative_and_huge_counts() {
    let frames = [
        Bytes::frame(keys::PEER_PROPERTIES, 1).u32(1),
        Bytes::frame(keys::METADATA, 1).u32(1),
        Bytes::frame(keys::EXCHANGE_COMMAND_VERSIONS, 1).u32(1),
        Bytes::frame(keys::CREATE, 1).u32(1).string("s"),
        Bytes::frame(keys::CREATE_SUPER_STREAM, 1).u32(1).string("s"),
        Bytes::frame(keys::CREATE_SUPER_STREAM, 1).u32(1).string("s").i32(0),
        Bytes::frame(keys::CREATE_SUPER_STREAM, 1).u32(1).string("s").i32(0).i32(0),
        Bytes::frame(keys::SUBSCRIBE, 1).u32(1).u8(1).string("s").u16(1).u16(1),
    ];
    for frame in frames {
        for (count, kind) in [
            (-1, DecodeErrorKind::Malformed("negative array count")),
            (i32::MIN, DecodeErrorKind::Malformed("negative array count")),
            (i32::MAX, DecodeErrorKind::Truncated),
            (1, DecodeErrorKind::Truncated),
        ] {
            let bytes = Bytes(frame.0.clone()).i32(count).done();
            let error = refused(&bytes);
            assert_eq!((error.kind, error.correlation), (kind, Some(1)), "{error}");
        }
    }
    for version in [1, 2] {
        for (count, kind) in [
            (-1, DecodeErrorKind::Malformed("negative array count")),
            (i32::MAX, DecodeErrorKind::Truncated),
            (2, DecodeErrorKind::Truncated),
        ] {
            let frame = Bytes::frame(keys::PUBLISH, version).u8(1).i32(count).u64(1).i16(-1).i32(0).done();
            assert_eq!(refused(&frame).kind, kind, "version {version} count {count}");
        }
    }
}

#[test]
fn negative_and_huge_lengths() {
    let cases = [
        Bytes::frame(keys::OPEN, 1).u32(1).i16(-2).done(),
        Bytes::frame(keys::OPEN, 1).u32(1).i16(i16::MIN).done(),
        Bytes::frame(keys::SASL_AUTHENTICATE, 1).u32(1).string("PLAIN").i32(-2).done(),
    ];
    for frame in cases {
        assert!(is_malformed(&refused(&frame)));
    }
    let cases = [
        Bytes::frame(keys::OPEN, 1).u32(1).i16(i16::MAX).raw(b"/").done(),
        Bytes::frame(keys::SASL_AUTHENTICATE, 1).u32(1).string("PLAIN").i32(i32::MAX).raw(b"x").done(),
        Bytes::frame(keys::PUBLISH, 1).u8(1).i32(1).u64(1).u32(i32::MAX as u32).raw(&[0; 8]).done(),
        Bytes::frame(keys::PUBLISH, 1)
            .u8(1)
            .i32(1)
            .u64(1)
            .u8(0x80)
            .u16(1)
            .u32(1)
            .u32(u32::MAX)
            .raw(&[0; 8])
            .done(),
    ];
    for frame in cases {
        assert_eq!(refused(&frame).kind, DecodeErrorKind::Truncated);
    }
}

#[test]
fn null_strings_only_where_allowed() {
    // Two nulls, so that a map's count (4 bytes an entry at least) fits the bytes left.
    let null = |frame: Bytes| refused(&frame.i16(-1).i16(-1).done());
    let errors = [
        null(Bytes::frame(keys::OPEN, 1).u32(1)),
        null(Bytes::frame(keys::CLOSE, 1).u32(1).u16(1)),
        null(Bytes::frame(keys::SASL_AUTHENTICATE, 1).u32(1)),
        null(Bytes::frame(keys::PEER_PROPERTIES, 1).u32(1).i32(1)),
        null(Bytes::frame(keys::PEER_PROPERTIES, 1).u32(1).i32(1).string("k")),
        null(Bytes::frame(keys::CREATE, 1).u32(1)),
        null(Bytes::frame(keys::DELETE, 1).u32(1)),
        null(Bytes::frame(keys::METADATA, 1).u32(1).i32(1)),
        null(Bytes::frame(keys::STREAM_STATS, 1).u32(1)),
        null(Bytes::frame(keys::DECLARE_PUBLISHER, 1).u32(1).u8(1).string("ref")),
        null(Bytes::frame(keys::QUERY_PUBLISHER_SEQUENCE, 1).u32(1)),
        null(Bytes::frame(keys::SUBSCRIBE, 1).u32(1).u8(1)),
        null(Bytes::frame(keys::QUERY_OFFSET, 1).u32(1).string("ref")),
        null(Bytes::frame(keys::CREATE_SUPER_STREAM, 1).u32(1)),
        null(Bytes::frame(keys::CREATE_SUPER_STREAM, 1).u32(1).string("s").i32(1)),
        null(Bytes::frame(keys::DELETE_SUPER_STREAM, 1).u32(1)),
        null(Bytes::frame(keys::ROUTE, 1).u32(1)),
        null(Bytes::frame(keys::PARTITIONS, 1).u32(1)),
    ];
    for error in errors {
        assert_eq!(error.kind, DecodeErrorKind::Malformed("null string where one is required"), "{error}");
        assert_eq!(error.correlation, Some(1), "{error}");
    }
    let store = Bytes::frame(keys::STORE_OFFSET, 1).i16(-1).done();
    assert_eq!(
        (refused(&store).kind, refused(&store).correlation),
        (DecodeErrorKind::Malformed("null string where one is required"), None)
    );
}

#[test]
fn bad_utf8_and_unknown_offset_types() {
    let frame = Bytes::frame(keys::OPEN, 1).u32(1).u16(2).raw(&[0xc3, 0x28]).done();
    assert_eq!(refused(&frame).kind, DecodeErrorKind::Malformed("string is not UTF-8"));
    let frame = Bytes::frame(keys::PUBLISH, 2).u8(1).i32(1).u64(1).u16(1).raw(&[0xff]).i32(0).done();
    assert_eq!(refused(&frame).kind, DecodeErrorKind::Malformed("string is not UTF-8"));

    for offset_type in [0, 6, u16::MAX] {
        let frame =
            Bytes::frame(keys::SUBSCRIBE, 1).u32(9).u8(1).string("s").u16(offset_type).u16(1).i32(0).done();
        let error = refused(&frame);
        assert!(is_malformed(&error) && error.correlation == Some(9), "{offset_type}: {error}");
    }
    let frame = Bytes::frame(keys::CONSUMER_UPDATE_RESPONSE, 1).u32(9).u16(1).u16(6).done();
    assert!(is_malformed(&refused(&frame)));
}

#[test]
fn sub_entries_in_version_2_are_refused() {
    let frame =
        Bytes::frame(keys::PUBLISH, 2).u8(1).i32(1).u64(1).i16(-1).u8(0x80).u16(1).u32(0).u32(0).done();
    assert_eq!(refused(&frame).kind, DecodeErrorKind::Malformed("sub-entry batch in a version 2 publish"));
}

#[test]
fn unknown_keys_and_versions() {
    for key in [
        0,
        keys::PUBLISH_CONFIRM,
        keys::DELIVER,
        keys::METADATA_UPDATE,
        keys::CONSUMER_UPDATE,
        31,
        0x7fff,
        0x8001,
        0x8017,
        0xffff,
    ] {
        let error = refused(&Bytes::frame(key, 1).u32(1).done());
        assert_eq!((error.key, error.correlation, error.kind), (key, None, DecodeErrorKind::UnknownKey));
        assert_eq!(error.response_code(), codes::UNKNOWN_FRAME);
    }
    let error = refused(&Bytes::frame(keys::PUBLISH, 3).u8(1).i32(0).done());
    assert_eq!((error.correlation, error.kind), (None, DecodeErrorKind::UnsupportedVersion(3)));
    assert_eq!(error.response_code(), codes::UNKNOWN_FRAME);
    let error = refused(&Bytes::frame(keys::PUBLISH, 0).u8(1).i32(0).done());
    assert_eq!(error.kind, DecodeErrorKind::UnsupportedVersion(0));
    // The correlation id of a request in a version we do not know is still given.
    let error = refused(&Bytes::frame(keys::SUBSCRIBE, 2).u32(77).done());
    assert_eq!((error.correlation, error.kind), (Some(77), DecodeErrorKind::UnsupportedVersion(2)));
    assert_eq!(decode(&[]).map_err(|e| (e.key, e.kind)), Err((0, DecodeErrorKind::Truncated)));
    assert_eq!(decode(&[0, 7, 0]).map_err(|e| (e.key, e.kind)), Err((7, DecodeErrorKind::Truncated)));
}

#[test]
fn error_codes_and_messages() {
    let error = refused(&Bytes::frame(keys::SUBSCRIBE, 1).u32(12).u8(1).i16(-1).done());
    assert_eq!(error.response_code(), codes::PRECONDITION_FAILED);
    assert_eq!(
        error.to_string(),
        "RabbitMQ Streams frame Subscribe (key 0x0007), correlation 12: malformed: null string where one is required"
    );
    let truncated =
        DecodeError { key: keys::CLOSE_RESPONSE, correlation: None, kind: DecodeErrorKind::Truncated };
    assert_eq!(truncated.response_code(), codes::PRECONDITION_FAILED);
    assert_eq!(
        truncated.to_string(),
        "RabbitMQ Streams frame Close (key 0x8016): the frame ends before the data it declares"
    );
}

/// Whatever decodes must re-encode (client side) to a frame that decodes to the same value and
/// has the same length: every byte accounted for. Two exceptions: a Subscribe without
/// properties re-encodes with the 4-byte count, and rstream's ConsumerUpdate answer with an
/// unused offset value after a valueless type re-encodes without those 8 bytes.
fn check_round_trip(body: &[u8]) {
    let Ok(frame) = decode(body) else { return };
    let again = encode_client_frame(&frame);
    assert_eq!(decode(&again[4..]).as_ref(), Ok(&frame));
    let extra = again.len() as i64 - 4 - body.len() as i64;
    match (&frame.command, extra) {
        (_, 0) => {}
        (Command::Subscribe { properties, .. }, 4) if properties.is_empty() => {}
        (
            Command::ConsumerUpdateResponse {
                offset: None | Some(OffsetSpec::First | OffsetSpec::Last | OffsetSpec::Next),
                ..
            },
            -8,
        ) => {}
        _ => panic!("{extra} more bytes re-encoding {frame:?}"),
    }
}

fn seed_bodies() -> Vec<Vec<u8>> {
    seed_frames().into_iter().map(|(_, frame)| frame[4..].to_vec()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        check_round_trip(&body);
    }

    #[test]
    fn arbitrary_bodies_behind_valid_headers_never_panic(
        key in prop_oneof![1u16..=31, Just(keys::CLOSE_RESPONSE), Just(keys::TUNE_RESPONSE), Just(keys::CONSUMER_UPDATE_RESPONSE)],
        version in prop_oneof![Just(1u16), Just(2u16)],
        rest in proptest::collection::vec(any::<u8>(), 0..128),
    ) {
        let mut body = key.to_be_bytes().to_vec();
        body.extend_from_slice(&version.to_be_bytes());
        body.extend_from_slice(&rest);
        check_round_trip(&body);
    }

    #[test]
    fn mutated_seeds_never_panic(
        seed in any::<prop::sample::Index>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..6),
    ) {
        let bodies = seed_bodies();
        let mut body = bodies[seed.index(bodies.len())].clone();
        for (at, byte, action) in edits {
            let at = at.index(body.len() + 1);
            match action {
                0 if at < body.len() => body[at] = byte,
                1 => body.insert(at, byte),
                2 if at < body.len() => { body.remove(at); }
                _ => body.truncate(at),
            }
        }
        check_round_trip(&body);
    }
}

#[test]
fn seeds_round_trip() {
    for body in seed_bodies() {
        check_round_trip(&body);
    }
}
