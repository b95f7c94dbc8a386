//! Kafka classic consumer groups over the wire: two raw Kafka clients (requests encoded with the
//! `kafka-protocol` crate) against a real broker started with `--kafka-listen`. One member talks
//! to the group's coordinator shard (its per-shard port), the other to the other shard, whose
//! group requests travel to the coordinator over the mesh.
//!
//! Two members split four partitions (the leader's assignment relayed to the follower), commit
//! offsets, one leaves and the other takes every partition over, reading the committed offsets
//! back. Loopback only; every socket read is bounded; the test takes a few seconds.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use ringbroker::protocol::messages::Partitioning;

use common::{batch_of, Broker};

const STREAM: &str = "kafka";
const TOPIC: &str = "orders";
const ILLEGAL_GENERATION: i16 = 22;
const UNKNOWN_MEMBER_ID: i16 = 25;
const REBALANCE_IN_PROGRESS: i16 = 27;
const MEMBER_ID_REQUIRED: i16 = 79;

/// A blocking Kafka client connection.
struct Kafka {
    socket: TcpStream,
    correlation: i32,
}

impl Kafka {
    fn connect(addr: SocketAddr) -> Kafka {
        // The Kafka listener may start a moment after the native one answers.
        let deadline = Instant::now() + Duration::from_secs(10);
        let socket = loop {
            match TcpStream::connect(addr) {
                Ok(socket) => break socket,
                Err(error) if Instant::now() > deadline => panic!("connect to the Kafka listener: {error}"),
                Err(_) => thread::sleep(Duration::from_millis(50)),
            }
        };
        socket.set_read_timeout(Some(Duration::from_secs(15))).expect("timeout");
        Kafka { socket, correlation: 0 }
    }

    fn call(&mut self, api_key: ApiKey, version: i16, request: RequestKind) -> ResponseKind {
        self.correlation += 1;
        let mut out = BytesMut::new();
        out.put_u32(0);
        RequestHeader::default()
            .with_request_api_key(api_key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("groups-test")))
            .encode(&mut out, api_key.request_header_version(version))
            .expect("header");
        request.encode(&mut out, version).expect("request");
        let size = (out.len() - 4) as u32;
        out[..4].copy_from_slice(&size.to_be_bytes());
        self.socket.write_all(&out).expect("send");
        let mut size = [0_u8; 4];
        self.socket.read_exact(&mut size).expect("response size");
        let mut body = vec![0_u8; u32::from_be_bytes(size) as usize];
        self.socket.read_exact(&mut body).expect("response");
        let mut body = Bytes::from(body);
        let header =
            ResponseHeader::decode(&mut body, api_key.response_header_version(version)).expect("header");
        assert_eq!(header.correlation_id, self.correlation);
        let response = ResponseKind::decode(api_key, &mut body, version).expect("response body");
        assert_eq!(body.remaining(), 0, "{api_key:?} v{version}: trailing bytes");
        response
    }

    fn join(&mut self, group: &str, member_id: &str, metadata: &'static [u8]) -> JoinGroupResponse {
        let request = JoinGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
            .with_session_timeout_ms(6000)
            .with_rebalance_timeout_ms(10_000)
            .with_member_id(StrBytes::from_string(member_id.to_string()))
            .with_protocol_type(StrBytes::from_static_str("consumer"))
            .with_protocols(vec![JoinGroupRequestProtocol::default()
                .with_name(StrBytes::from_static_str("range"))
                .with_metadata(Bytes::from_static(metadata))]);
        match self.call(ApiKey::JoinGroup, 7, RequestKind::JoinGroup(request)) {
            ResponseKind::JoinGroup(response) => response,
            other => panic!("{other:?}"),
        }
    }

    /// JoinGroup through MEMBER_ID_REQUIRED.
    fn join_new(&mut self, group: &str, metadata: &'static [u8]) -> JoinGroupResponse {
        let first = self.join(group, "", metadata);
        assert_eq!(first.error_code, MEMBER_ID_REQUIRED);
        assert!(!first.member_id.is_empty());
        self.join(group, &first.member_id.to_string(), metadata)
    }

    fn sync(
        &mut self,
        group: &str,
        generation: i32,
        member_id: &str,
        assignments: &[(&str, &[u8])],
    ) -> SyncGroupResponse {
        let request = SyncGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
            .with_generation_id(generation)
            .with_member_id(StrBytes::from_string(member_id.to_string()))
            .with_protocol_type(Some(StrBytes::from_static_str("consumer")))
            .with_protocol_name(Some(StrBytes::from_static_str("range")))
            .with_assignments(
                assignments
                    .iter()
                    .map(|(id, assignment)| {
                        SyncGroupRequestAssignment::default()
                            .with_member_id(StrBytes::from_string(id.to_string()))
                            .with_assignment(Bytes::copy_from_slice(assignment))
                    })
                    .collect(),
            );
        match self.call(ApiKey::SyncGroup, 5, RequestKind::SyncGroup(request)) {
            ResponseKind::SyncGroup(response) => response,
            other => panic!("{other:?}"),
        }
    }

    fn heartbeat(&mut self, group: &str, generation: i32, member_id: &str) -> i16 {
        let request = HeartbeatRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
            .with_generation_id(generation)
            .with_member_id(StrBytes::from_string(member_id.to_string()));
        match self.call(ApiKey::Heartbeat, 4, RequestKind::Heartbeat(request)) {
            ResponseKind::Heartbeat(response) => response.error_code,
            other => panic!("{other:?}"),
        }
    }

    fn leave(&mut self, group: &str, member_id: &str) -> i16 {
        let request = LeaveGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
            .with_members(vec![
                MemberIdentity::default().with_member_id(StrBytes::from_string(member_id.to_string()))
            ]);
        match self.call(ApiKey::LeaveGroup, 4, RequestKind::LeaveGroup(request)) {
            ResponseKind::LeaveGroup(response) => {
                assert_eq!(response.error_code, 0);
                response.members.first().expect("one member answer").error_code
            }
            other => panic!("{other:?}"),
        }
    }

    /// Commits `offsets` (partition, next offset); returns each partition's code.
    fn commit(&mut self, group: &str, generation: i32, member_id: &str, offsets: &[(i32, i64)]) -> Vec<i16> {
        let partitions = offsets
            .iter()
            .map(|&(p, o)| {
                OffsetCommitRequestPartition::default().with_partition_index(p).with_committed_offset(o)
            })
            .collect();
        let request = OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
            .with_generation_id_or_member_epoch(generation)
            .with_member_id(StrBytes::from_string(member_id.to_string()))
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                .with_partitions(partitions)]);
        match self.call(ApiKey::OffsetCommit, 8, RequestKind::OffsetCommit(request)) {
            ResponseKind::OffsetCommit(response) => {
                response.topics.iter().flat_map(|t| t.partitions.iter().map(|p| p.error_code)).collect()
            }
            other => panic!("{other:?}"),
        }
    }

    /// Committed offsets of `partitions` (all stored ones when `None`), sorted by partition.
    fn fetch(&mut self, group: &str, version: i16, partitions: Option<&[i32]>) -> Vec<(i32, i64)> {
        let topics = partitions.map(|p| {
            vec![OffsetFetchRequestTopic::default()
                .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                .with_partition_indexes(p.to_vec())]
        });
        let request = OffsetFetchRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
            .with_topics(topics)
            .with_require_stable(version >= 7);
        match self.call(ApiKey::OffsetFetch, version, RequestKind::OffsetFetch(request)) {
            ResponseKind::OffsetFetch(response) => {
                assert_eq!(response.error_code, 0);
                let mut offsets: Vec<(i32, i64)> = response
                    .topics
                    .iter()
                    .flat_map(|t| t.partitions.iter())
                    .inspect(|p| assert_eq!(p.error_code, 0))
                    .map(|p| (p.partition_index, p.committed_offset))
                    .collect();
                offsets.sort_unstable();
                offsets
            }
            other => panic!("{other:?}"),
        }
    }
}

/// `count` consecutive free loopback ports.
fn free_ports(count: u16) -> u16 {
    for _ in 0..200 {
        let base = TcpListener::bind("127.0.0.1:0").expect("probe").local_addr().expect("addr").port();
        if base < 65000 && (0..count).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
    panic!("no free loopback ports");
}

/// Heartbeats until the coordinator asks for a rejoin.
fn until_rebalance(client: &mut Kafka, group: &str, generation: i32, member_id: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let code = client.heartbeat(group, generation, member_id);
        if code == REBALANCE_IN_PROGRESS {
            return;
        }
        assert_eq!(code, 0);
        assert!(Instant::now() < deadline, "no rebalance");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Two members split the partitions, commit, one leaves, the other takes over from the commits.
fn two_members_then_one(kafka: SocketAddr, elsewhere: SocketAddr, group: &str) {
    let mut a = Kafka::connect(kafka);
    let joined = a.join_new(group, b"meta-a");
    assert_eq!(joined.error_code, 0);
    let a_id = joined.member_id.to_string();
    assert_eq!(joined.leader.as_str(), a_id, "the first member leads");
    let generation = joined.generation_id;
    let alone = a.sync(group, generation, &a_id, &[(&a_id, b"0,1,2,3")]);
    assert_eq!((alone.error_code, alone.assignment.as_ref()), (0, &b"0,1,2,3"[..]));

    let group_name = group.to_string();
    let follower = thread::spawn(move || {
        let mut b = Kafka::connect(elsewhere);
        let joined = b.join_new(&group_name, b"meta-b");
        assert_eq!(joined.error_code, 0);
        assert!(joined.members.is_empty(), "followers get no member list");
        let b_id = joined.member_id.to_string();
        let synced = b.sync(&group_name, joined.generation_id, &b_id, &[]);
        assert_eq!(synced.error_code, 0);
        assert_eq!(synced.protocol_name.as_deref(), Some("range"));
        (b, b_id, joined.generation_id, synced.assignment)
    });
    until_rebalance(&mut a, group, generation, &a_id);
    let rejoined = a.join(group, &a_id, b"meta-a");
    assert_eq!(rejoined.error_code, 0);
    assert_eq!(rejoined.generation_id, generation + 1);
    assert_eq!(rejoined.leader.as_str(), a_id);
    let members: Vec<(String, &[u8])> =
        rejoined.members.iter().map(|m| (m.member_id.to_string(), m.metadata.as_ref())).collect();
    assert_eq!(members.len(), 2);
    assert_eq!(members.first().map(|m| m.1), Some(&b"meta-a"[..]));
    let b_id = members.get(1).map(|m| m.0.clone()).expect("the follower");
    assert_eq!(members.get(1).map(|m| m.1), Some(&b"meta-b"[..]));
    let generation = rejoined.generation_id;
    let mine = a.sync(group, generation, &a_id, &[(&a_id, b"0,1"), (&b_id, b"2,3")]);
    assert_eq!(mine.assignment.as_ref(), b"0,1");
    let (mut b, follower_id, follower_generation, assignment) = follower.join().expect("follower");
    assert_eq!((follower_id.as_str(), follower_generation), (b_id.as_str(), generation));
    assert_eq!(assignment.as_ref(), b"2,3");

    assert_eq!(a.commit(group, generation, &a_id, &[(0, 3), (1, 4)]), vec![0, 0]);
    assert_eq!(b.commit(group, generation, &b_id, &[(2, 5), (3, 6)]), vec![0, 0]);
    assert_eq!(b.commit(group, generation - 1, &b_id, &[(2, 9)]), vec![ILLEGAL_GENERATION]);
    assert_eq!(b.commit(group, generation, "stranger", &[(2, 9)]), vec![UNKNOWN_MEMBER_ID]);
    assert_eq!(a.fetch(group, 7, None), vec![(0, 3), (1, 4), (2, 5), (3, 6)]);

    assert_eq!(a.leave(group, &a_id), 0);
    until_rebalance(&mut b, group, generation, &b_id);
    let alone = b.join(group, &b_id, b"meta-b");
    assert_eq!((alone.error_code, alone.generation_id), (0, generation + 1));
    assert_eq!(alone.leader.as_str(), b_id, "the remaining member leads");
    assert_eq!(alone.members.len(), 1);
    let all = b.sync(group, alone.generation_id, &b_id, &[(&b_id, b"0,1,2,3")]);
    assert_eq!(all.assignment.as_ref(), b"0,1,2,3");
    assert_eq!(b.fetch(group, 1, Some(&[0, 1, 2, 3])), vec![(0, 3), (1, 4), (2, 5), (3, 6)]);
    assert_eq!(b.heartbeat(group, alone.generation_id, &b_id), 0);
    assert_eq!(b.leave(group, &b_id), 0);
    assert_eq!(b.heartbeat(group, alone.generation_id, &b_id), UNKNOWN_MEMBER_ID);
}

#[test]
fn kafka_groups_split_commit_and_take_over() {
    // The listener, then one port per shard.
    let base = free_ports(3);
    let listen = format!("127.0.0.1:{base}");
    let shard_ports = (base + 1).to_string();
    let mut broker = Broker::start(2, &["--kafka-listen", &listen, "--kafka-shard-port-base", &shard_ports]);
    let mut root = broker.root();
    root.create_stream(STREAM);
    root.create_topic(STREAM, TOPIC, 4);
    for partition in 0..4 {
        root.produce(STREAM, TOPIC, Partitioning::Partition(partition), &[batch_of("m", 10)])
            .expect("produce");
    }
    let kafka: SocketAddr = listen.parse().expect("address");
    let shard_port = |shard: u64| SocketAddr::from(([127, 0, 0, 1], base + 1 + shard as u16));
    // Group names coordinated by each of the two shards (FindCoordinator's hash).
    let shard_of = |name: &str| ringbroker::server::data::key_hash(name.as_bytes()) % 2;
    let names: Vec<String> = (0..20).map(|i| format!("group-{i}")).collect();
    let on_zero = names.iter().find(|n| shard_of(n) == 0).expect("a group on shard 0");
    let on_one = names.iter().find(|n| shard_of(n) == 1).expect("a group on shard 1");
    for group in [on_zero, on_one] {
        let coordinator = shard_of(group);
        two_members_then_one(shard_port(coordinator), shard_port(1 - coordinator), group);
    }
    // A client assigning partitions itself commits with generation -1 and reads it back.
    let mut solo = Kafka::connect(kafka);
    assert_eq!(solo.commit("solo", -1, "", &[(1, 7)]), vec![0]);
    assert_eq!(solo.fetch("solo", 5, Some(&[0, 1])), vec![(0, -1), (1, 7)]);
    assert_eq!(solo.commit("solo", 3, "", &[(1, 8)]), vec![ILLEGAL_GENERATION]);
    broker.stop();
}
