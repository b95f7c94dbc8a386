//! cargo-fuzz target `rabbitmq_frame`: the RabbitMQ Streams client-frame decoder
//! (`ringbroker::wire::rabbitmq::codec::decode`) and the server-frame encoders, as the
//! `--rabbitmq-listen` listener uses them. Kept in this file (not in `ringbroker_fuzz`) so the
//! RabbitMQ targets stay apart from the native ones; docs/fuzzing.md says how to run it.
//!
//! Input layout: the bytes are one frame body, without its 4-byte size prefix (what the
//! listener hands `decode` after reading a frame of the announced size). Seeds:
//! `fuzz/corpus/rabbitmq_frame/seed-*`, one per client command and variant, written by
//! `RINGBROKER_WRITE_SEEDS=1 cargo test --lib wire::rabbitmq::codec::seed_frames`.
//!
//! Properties checked (a failure panics, which libFuzzer reports as a crash):
//! * `decode` never panics, overflows or runs out of memory on any input;
//! * a decoded frame re-encodes (`encode_client_frame`) to a frame that decodes to the same
//!   value and has the input's length: every byte is accounted for (the exceptions: a
//!   Subscribe without properties re-encodes with its 4-byte property count, and rstream's
//!   ConsumerUpdate answer without the unused 8-byte offset after a valueless type);
//! * Close, Tune, Heartbeat and CloseResponse re-encoded with the server encoders decode to the
//!   same command; the other encoders run on the decoded fields (the answer the listener would
//!   build) and write a size prefix equal to the bytes after it;
//! * an error's response code is 13 or 17, and its message and error answer are built.

#![no_main]

use ringbroker::wire::rabbitmq::codec::OffsetSpec::{First, Last, Next};
use ringbroker::wire::rabbitmq::codec::{self, codes, keys, Command, Frame};
use ringbroker::wire::rabbitmq::encode;

libfuzzer_sys::fuzz_target!(|data: &[u8]| run(data));

fn run(body: &[u8]) {
    match codec::decode(body) {
        Ok(frame) => {
            check_client_round_trip(body, &frame);
            check_server_encoders(&frame);
        }
        Err(error) => {
            let code = error.response_code();
            assert!(code == codes::UNKNOWN_FRAME || code == codes::PRECONDITION_FAILED);
            let _ = error.to_string();
            let answer = encode::generic_response(error.key, error.correlation.unwrap_or(0), code);
            check_prefix(&answer);
        }
    }
}

fn check_prefix(frame: &[u8]) {
    assert!(frame.len() >= 8, "a frame has a header");
    let size = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
    assert_eq!(size, frame.len() - 4, "size prefix");
}

fn check_client_round_trip(body: &[u8], frame: &Frame<'_>) {
    let again = codec::encode_client_frame(frame);
    check_prefix(&again);
    assert_eq!(codec::decode(&again[4..]).as_ref(), Ok(frame), "re-encoded frame decodes the same");
    let extra = again.len() as i64 - 4 - body.len() as i64;
    match (&frame.command, extra) {
        (_, 0) => {}
        (Command::Subscribe { properties, .. }, 4) if properties.is_empty() => {}
        (Command::ConsumerUpdateResponse { offset: None | Some(First | Last | Next), .. }, -8) => {}
        _ => panic!("{extra} bytes more re-encoding {frame:?}"),
    }
}

/// The server encoder of `command`'s wire layout, where one exists, decodes back to it.
fn same_command(server_frame: &[u8], command: &Command<'_>) {
    check_prefix(server_frame);
    let decoded = codec::decode(&server_frame[4..]).map(|frame| frame.command);
    assert_eq!(decoded.as_ref(), Ok(command), "server encoding decodes the same");
}

fn check_server_encoders(frame: &Frame<'_>) {
    let frames = match &frame.command {
        Command::Close { correlation, code, reason } => {
            same_command(&encode::close(*correlation, *code, reason), &frame.command);
            vec![encode::close_response(*correlation, codes::OK)]
        }
        Command::CloseResponse { correlation, code } => {
            same_command(&encode::close_response(*correlation, *code), &frame.command);
            vec![]
        }
        Command::Tune { frame_max, heartbeat } => {
            same_command(&encode::tune(*frame_max, *heartbeat), &frame.command);
            vec![]
        }
        Command::Heartbeat => {
            same_command(&encode::heartbeat(), &frame.command);
            vec![]
        }
        Command::PeerProperties { correlation, properties } => {
            vec![encode::peer_properties_response(*correlation, codes::OK, properties)]
        }
        Command::SaslHandshake { correlation } => {
            vec![encode::sasl_handshake_response(*correlation, codes::OK, &["PLAIN"])]
        }
        Command::SaslAuthenticate { correlation, response, .. } => {
            vec![encode::sasl_authenticate_response(*correlation, codes::SASL_CHALLENGE, Some(*response))]
        }
        Command::Open { correlation, virtual_host } => {
            vec![encode::open_response(*correlation, codes::OK, &[("advertised_host", *virtual_host)])]
        }
        Command::ExchangeCommandVersions { correlation, versions } => vec![
            encode::exchange_command_versions_response(*correlation, codes::OK, versions),
            encode::exchange_command_versions_response(
                *correlation,
                codes::OK,
                encode::SERVER_COMMAND_VERSIONS,
            ),
        ],
        Command::Metadata { correlation, streams } => {
            let replicas: Vec<u16> = (0..streams.len()).map(|i| i as u16).collect();
            let metadata: Vec<_> = streams
                .iter()
                .enumerate()
                .map(|(i, name)| encode::StreamMetadata {
                    name,
                    code: codes::OK,
                    leader: i as u16,
                    replicas: &replicas[..i],
                })
                .collect();
            let brokers: Vec<_> =
                streams.iter().enumerate().map(|(i, host)| (i as u16, *host, 5552)).collect();
            vec![encode::metadata_response(*correlation, &brokers, &metadata)]
        }
        Command::Delete { stream, .. } => vec![encode::metadata_update(codes::STREAM_NOT_AVAILABLE, stream)],
        Command::StreamStats { correlation, stream } => {
            vec![encode::stream_stats_response(
                *correlation,
                codes::OK,
                &[(*stream, -1), ("committed_chunk_id", 0)],
            )]
        }
        Command::Publish { publisher_id, entries } => {
            let ids: Vec<u64> = entries
                .iter()
                .map(|entry| match entry {
                    codec::Entry::Simple { publishing_id, .. }
                    | codec::Entry::SubEntry { publishing_id, .. } => *publishing_id,
                })
                .collect();
            let errors: Vec<(u64, u16)> =
                ids.iter().map(|&id| (id, codes::PUBLISHER_DOES_NOT_EXIST)).collect();
            let mut confirms = Vec::new();
            encode::publish_confirm_into(&mut confirms, *publisher_id, &ids);
            vec![confirms, encode::publish_error(*publisher_id, &errors)]
        }
        Command::QueryPublisherSequence { correlation, .. } => {
            vec![encode::query_publisher_sequence_response(*correlation, codes::OK, u64::MAX)]
        }
        Command::QueryOffset { correlation, .. } => {
            vec![encode::query_offset_response(*correlation, codes::OFFSET_NOT_FOUND, 0)]
        }
        Command::Credit { subscription_id, .. } => {
            vec![encode::credit_response(codes::SUBSCRIPTION_ID_DOES_NOT_EXIST, *subscription_id)]
        }
        Command::Subscribe { correlation, subscription_id, .. } => vec![
            encode::generic_response(keys::SUBSCRIBE, *correlation, codes::OK),
            encode::consumer_update(*correlation, *subscription_id, true),
        ],
        Command::Route { correlation, routing_key, super_stream } => {
            vec![encode::route_response(*correlation, codes::OK, &[*routing_key, *super_stream])]
        }
        Command::CreateSuperStream { correlation, partitions, binding_keys, .. } => vec![
            encode::partitions_response(*correlation, codes::OK, partitions),
            encode::route_response(*correlation, codes::OK, binding_keys),
        ],
        other => {
            let correlation = other.correlation().unwrap_or(0);
            vec![encode::generic_response(frame.key & !keys::RESPONSE, correlation, codes::OK)]
        }
    };
    for server_frame in &frames {
        check_prefix(server_frame);
    }
}
