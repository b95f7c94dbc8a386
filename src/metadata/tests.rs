//! Tests of the catalog (every op, every refusal, limits, lookups, wire conversions) and of the
//! metadata log over the fault-injecting I/O (replay after a crash, refused ops leave no trace,
//! corrupt or foreign ops stop replay, failed writes and fsyncs).

use std::path::{Path, PathBuf};

use futures_lite::future::block_on;

use super::catalog::*;
use super::log::{METADATA_DIR, METADATA_OP_FORMAT_VERSION};
use super::*;
use crate::constants::SEGMENT_BYTES_MAX;
use crate::io::fault::FaultIo;
use crate::protocol::batch::BatchBuilder;
use crate::protocol::messages::{StreamPermission, TopicConfig};
use crate::protocol::super_stream::SuperStreamLayout;
use crate::storage::{LogConfig, PartitionLog};

/// `hash_password("test-password")`, precomputed: hashing costs about half a second in debug.
const TEST_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$AA8i5kZekz73Ubiz4ZUQAw$HuCUX0e+Ux9gXAXmVorCEFfPegI4PTbbCeTNqrCdDWk";

const DATA_DIR: &str = "/data";

fn data_dir() -> PathBuf {
    PathBuf::from(DATA_DIR)
}

fn create_stream(name: &str) -> MetadataOp {
    MetadataOp::CreateStream(CreateStreamOp { name: name.into(), created_us: 1_000 })
}

fn config(partitions: u32) -> TopicConfig {
    TopicConfig { partitions, ..TopicConfig::default() }
}

fn create_topic(stream: &str, name: &str, partitions: u32) -> MetadataOp {
    let (stream, name) = (stream.into(), name.into());
    MetadataOp::CreateTopic(CreateTopicOp { stream, name, config: config(partitions), created_us: 2_000 })
}

fn delete_stream(name: &str) -> MetadataOp {
    MetadataOp::DeleteStream(NameOp { name: name.into() })
}

fn delete_topic(stream: &str, topic: &str) -> MetadataOp {
    MetadataOp::DeleteTopic(TopicOp { stream: stream.into(), topic: topic.into() })
}

fn add_partitions(stream: &str, topic: &str, count: u32) -> MetadataOp {
    MetadataOp::AddPartitions(PartitionsOp { stream: stream.into(), topic: topic.into(), count })
}

fn permission(stream: &str, read: bool, write: bool, manage: bool) -> StreamPermission {
    StreamPermission { stream: stream.into(), read, write, manage }
}

fn create_user(name: &str, admin: bool, permissions: Vec<StreamPermission>) -> MetadataOp {
    let password_hash = TEST_HASH.to_string();
    MetadataOp::CreateUser(CreateUserOp { name: name.into(), password_hash, admin, permissions })
}

fn delete_user(name: &str) -> MetadataOp {
    MetadataOp::DeleteUser(NameOp { name: name.into() })
}

fn set_permissions(user: &str, permissions: Vec<StreamPermission>) -> MetadataOp {
    MetadataOp::SetPermissions(SetPermissionsOp { user: user.into(), permissions })
}

fn group(stream: &str, topic: &str, group: &str) -> GroupOp {
    GroupOp { stream: stream.into(), topic: topic.into(), group: group.into() }
}

/// Applies `op`, which must succeed and bump the revision by one.
fn apply_ok(catalog: &mut Catalog, op: MetadataOp) {
    let revision = catalog.revision;
    if let Err(error) = catalog.apply(&op) {
        panic!("{op:?} refused: {error}");
    }
    assert_eq!(catalog.revision, revision + 1, "{op:?}");
}

/// Applies `op`, which must be refused with `status`, leaving the catalog unchanged.
fn apply_err(catalog: &mut Catalog, op: MetadataOp, status: Status) -> MetadataError {
    let before = catalog.clone();
    let error = match catalog.apply(&op) {
        Ok(()) => panic!("{op:?} was accepted"),
        Err(error) => error,
    };
    assert_eq!(error.status(), status, "{op:?}: {error}");
    assert_eq!(*catalog, before, "a refused op changed the catalog: {op:?}");
    error
}

/// A catalog exercising every op: what the log tests commit.
fn every_op() -> Vec<MetadataOp> {
    vec![
        create_user("root", true, vec![]),
        create_stream("orders"),
        create_topic("orders", "created", 3),
        add_partitions("orders", "created", 2),
        MetadataOp::CreateGroup(group("orders", "created", "billing")),
        MetadataOp::CreateGroup(group("orders", "created", "audit")),
        MetadataOp::DeleteGroup(group("orders", "created", "audit")),
        create_topic("orders", "cancelled", 1),
        delete_topic("orders", "cancelled"),
        create_topic("orders", "cancelled", 2),
        create_stream("scratch"),
        delete_stream("scratch"),
        create_stream("scratch"),
        create_user("alice", false, vec![permission("orders", true, false, false)]),
        set_permissions(
            "alice",
            vec![permission("*", true, false, false), permission("orders", true, true, false)],
        ),
        create_user("bob", false, vec![]),
        delete_user("bob"),
        super_stream("invoices", SuperStreamLayout::BindingKeys(vec!["amer".into(), "emea".into()])),
        super_stream("events", SuperStreamLayout::Partitions(3)),
        MetadataOp::DeleteSuperStream(TopicOp { stream: "scratch".into(), topic: "events".into() }),
    ]
}

fn super_stream(name: &str, layout: SuperStreamLayout) -> MetadataOp {
    let op = super::super_stream::CreateSuperStreamOp::from_layout(
        "scratch",
        name,
        layout,
        false,
        TopicConfig::default(),
        3_000,
    );
    MetadataOp::CreateSuperStream(Box::new(op.expect("a valid super stream")))
}

fn catalog_of(ops: &[MetadataOp]) -> Catalog {
    let mut catalog = Catalog::new();
    for op in ops {
        apply_ok(&mut catalog, op.clone());
    }
    catalog
}

#[test]
fn every_op_applies() {
    let ops = every_op();
    let catalog = catalog_of(&ops);
    assert_eq!(catalog.revision, ops.len() as u64);
    let (stream, topic) = catalog.topic("orders", "created").expect("topic");
    assert_eq!((stream.id, topic.id, topic.partitions, topic.config.partitions), (1, 1, 5, 5));
    assert_eq!(topic.groups.iter().collect::<Vec<_>>(), ["billing"]);
    assert_eq!(topic.created_us, 2_000);
    let (_, cancelled) = catalog.topic("orders", "cancelled").expect("topic");
    assert_eq!((cancelled.id, cancelled.partitions), (3, 2), "topic ids are never reused");
    assert_eq!(catalog.stream("orders").map(|s| s.next_topic_id).ok(), Some(4));
    assert_eq!(catalog.stream("scratch").map(|s| s.id).ok(), Some(3), "stream ids are never reused");
    assert_eq!(catalog.next_stream_id, 4);
    let alice = catalog.user("alice").expect("alice");
    assert_eq!((alice.id, alice.admin, alice.permissions.len()), (2, false, 2));
    assert!(catalog.user("bob").is_err());
    assert_eq!(catalog.next_user_id, 4);
    assert!(catalog.user("root").is_ok_and(|root| root.admin && root.id == 1));
}

#[test]
fn streams_and_topics_are_refused_correctly() {
    let mut catalog = catalog_of(&every_op());
    apply_err(&mut catalog, create_stream("orders"), Status::AlreadyExists);
    apply_err(&mut catalog, create_stream("a/b"), Status::InvalidName);
    apply_err(&mut catalog, create_stream(""), Status::InvalidName);
    apply_err(&mut catalog, create_stream(".."), Status::InvalidName);
    apply_err(&mut catalog, delete_stream("missing"), Status::UnknownStream);
    apply_err(&mut catalog, create_topic("missing", "t", 1), Status::UnknownStream);
    let error = apply_err(&mut catalog, create_topic("orders", "created", 1), Status::AlreadyExists);
    assert_eq!(error.to_string(), "topic `orders/created` already exists");
    apply_err(&mut catalog, create_topic("orders", "bad name", 1), Status::InvalidName);
    apply_err(&mut catalog, create_topic("orders", "t", 0), Status::InvalidArgument);
    apply_err(
        &mut catalog,
        create_topic("orders", "t", PARTITIONS_PER_TOPIC_MAX + 1),
        Status::InvalidArgument,
    );
    let bad_configs = [
        TopicConfig { segment_bytes: Some(100), ..config(1) },
        TopicConfig { segment_bytes: Some(SEGMENT_BYTES_MAX + 1), ..config(1) },
        TopicConfig { retention_max_age_us: Some(0), ..config(1) },
        TopicConfig { retention_max_bytes: Some(0), ..config(1) },
    ];
    for config in bad_configs {
        let op = CreateTopicOp { stream: "orders".into(), name: "t".into(), config, created_us: 0 };
        apply_err(&mut catalog, MetadataOp::CreateTopic(op), Status::InvalidArgument);
    }
    let good = TopicConfig {
        segment_bytes: Some(1 << 20),
        retention_max_age_us: Some(1),
        retention_max_bytes: Some(1),
        ..config(1)
    };
    let op = CreateTopicOp { stream: "orders".into(), name: "t".into(), config: good.clone(), created_us: 0 };
    apply_ok(&mut catalog, MetadataOp::CreateTopic(op));
    assert_eq!(catalog.topic("orders", "t").map(|(_, t)| t.config.clone()).ok(), Some(good));
    apply_err(&mut catalog, delete_topic("orders", "missing"), Status::UnknownTopic);
    apply_err(&mut catalog, delete_topic("missing", "t"), Status::UnknownStream);
    apply_err(&mut catalog, add_partitions("orders", "created", 0), Status::InvalidArgument);
    apply_err(
        &mut catalog,
        add_partitions("orders", "created", PARTITIONS_PER_TOPIC_MAX - 4),
        Status::InvalidArgument,
    );
    apply_err(&mut catalog, add_partitions("orders", "created", u32::MAX), Status::InvalidArgument);
    apply_err(&mut catalog, add_partitions("orders", "missing", 1), Status::UnknownTopic);
    apply_ok(&mut catalog, add_partitions("orders", "created", PARTITIONS_PER_TOPIC_MAX - 5));
    assert_eq!(
        catalog.topic("orders", "created").map(|(_, t)| t.partitions).ok(),
        Some(PARTITIONS_PER_TOPIC_MAX)
    );
    apply_err(&mut catalog, add_partitions("orders", "created", 1), Status::InvalidArgument);
}

#[test]
fn groups_are_refused_correctly() {
    let mut catalog = catalog_of(&every_op());
    let create = |g: &str| MetadataOp::CreateGroup(group("orders", "created", g));
    let delete = |g: &str| MetadataOp::DeleteGroup(group("orders", "created", g));
    apply_err(&mut catalog, create("billing"), Status::AlreadyExists);
    apply_err(&mut catalog, create("a b"), Status::InvalidName);
    apply_err(&mut catalog, delete("audit"), Status::UnknownGroup);
    apply_err(&mut catalog, MetadataOp::CreateGroup(group("orders", "missing", "g")), Status::UnknownTopic);
    apply_err(&mut catalog, MetadataOp::CreateGroup(group("missing", "created", "g")), Status::UnknownStream);
    apply_err(&mut catalog, MetadataOp::DeleteGroup(group("orders", "missing", "g")), Status::UnknownTopic);
    assert!(catalog.group("orders", "created", "billing").is_ok());
    assert_eq!(
        catalog.group("orders", "created", "audit").map_err(|e| e.status()).err(),
        Some(Status::UnknownGroup)
    );
    for i in 1..GROUPS_PER_TOPIC_MAX {
        apply_ok(&mut catalog, create(&format!("g{i}")));
    }
    apply_err(&mut catalog, create("one-too-many"), Status::InvalidArgument);
    apply_ok(&mut catalog, delete("billing"));
    apply_ok(&mut catalog, create("one-too-many"));
}

#[test]
fn users_are_refused_correctly() {
    let mut catalog = catalog_of(&every_op());
    apply_err(&mut catalog, create_user("alice", false, vec![]), Status::AlreadyExists);
    apply_err(&mut catalog, create_user("al ice", false, vec![]), Status::InvalidName);
    let plain = CreateUserOp {
        name: "carol".into(),
        password_hash: "hunter2".into(),
        admin: false,
        permissions: vec![],
    };
    apply_err(&mut catalog, MetadataOp::CreateUser(plain), Status::InvalidArgument);
    let bad_stream = vec![permission("a/b", true, false, false)];
    apply_err(&mut catalog, create_user("carol", false, bad_stream.clone()), Status::InvalidName);
    apply_err(&mut catalog, set_permissions("alice", bad_stream), Status::InvalidName);
    let twice = vec![permission("orders", true, false, false), permission("orders", false, true, false)];
    apply_err(&mut catalog, create_user("carol", false, twice.clone()), Status::InvalidArgument);
    apply_err(&mut catalog, set_permissions("alice", twice), Status::InvalidArgument);
    let many: Vec<_> =
        (0..=PERMISSIONS_PER_USER_MAX).map(|i| permission(&format!("s{i}"), true, false, false)).collect();
    apply_ok(&mut catalog, set_permissions("alice", many[1..].to_vec()));
    apply_err(&mut catalog, set_permissions("alice", many), Status::InvalidArgument);
    apply_err(&mut catalog, set_permissions("nobody", vec![]), Status::UnknownUser);
    apply_err(&mut catalog, delete_user("nobody"), Status::UnknownUser);
    apply_ok(&mut catalog, set_permissions("alice", vec![]));
    assert!(catalog.user("alice").is_ok_and(|alice| alice.permissions.is_empty()));
}

#[test]
fn the_last_admin_cannot_be_deleted() {
    let mut catalog = catalog_of(&[create_user("root", true, vec![]), create_user("alice", false, vec![])]);
    let error = apply_err(&mut catalog, delete_user("root"), Status::InvalidArgument);
    assert!(error.to_string().contains("last admin"), "{error}");
    apply_ok(&mut catalog, create_user("admin2", true, vec![]));
    apply_ok(&mut catalog, delete_user("root"));
    apply_err(&mut catalog, delete_user("admin2"), Status::InvalidArgument);
    apply_ok(&mut catalog, delete_user("alice"));
    apply_ok(&mut catalog, create_user("root", true, vec![]));
    assert_eq!(catalog.user("root").map(|u| u.id).ok(), Some(4), "user ids are never reused");
}

#[test]
fn limits_are_enforced() {
    let mut catalog = Catalog::new();
    for i in 0..STREAMS_MAX {
        apply_ok(&mut catalog, create_stream(&format!("s{i}")));
    }
    apply_err(&mut catalog, create_stream("one-too-many"), Status::InvalidArgument);
    for i in 0..TOPICS_PER_STREAM_MAX {
        apply_ok(&mut catalog, create_topic("s0", &format!("t{i}"), 1));
    }
    apply_err(&mut catalog, create_topic("s0", "one-too-many", 1), Status::InvalidArgument);
    let rest = PARTITIONS_MAX - TOPICS_PER_STREAM_MAX as u64;
    let per_topic = u64::from(PARTITIONS_PER_TOPIC_MAX);
    for i in 0..rest / per_topic {
        apply_ok(&mut catalog, create_topic("s1", &format!("t{i}"), PARTITIONS_PER_TOPIC_MAX));
    }
    apply_ok(&mut catalog, create_topic("s2", "rest", (rest % per_topic) as u32));
    assert_eq!(catalog.partitions().count() as u64, PARTITIONS_MAX);
    apply_err(&mut catalog, create_topic("s2", "one-too-many", 1), Status::InvalidArgument);
    apply_err(&mut catalog, add_partitions("s0", "t0", 1), Status::InvalidArgument);
    apply_ok(&mut catalog, delete_stream("s1"));
    apply_ok(&mut catalog, add_partitions("s0", "t0", 1));
    for i in 0..USERS_MAX {
        apply_ok(&mut catalog, create_user(&format!("u{i}"), i == 0, vec![]));
    }
    apply_err(&mut catalog, create_user("one-too-many", false, vec![]), Status::InvalidArgument);
}

#[test]
fn ids_are_never_reused_even_at_the_end() {
    let mut catalog = Catalog::new();
    catalog.next_stream_id = u32::MAX;
    apply_err(&mut catalog, create_stream("s"), Status::InvalidArgument);
    catalog.next_stream_id = u32::MAX - 1;
    apply_ok(&mut catalog, create_stream("s"));
    apply_err(&mut catalog, create_stream("t"), Status::InvalidArgument);
    apply_ok(&mut catalog, delete_stream("s"));
    apply_err(&mut catalog, create_stream("s"), Status::InvalidArgument);
}

#[test]
fn lookups_name_what_is_missing() {
    let catalog = catalog_of(&every_op());
    let status = |r: Result<(), MetadataError>| r.map_err(|e| e.status()).err();
    assert_eq!(status(catalog.stream("nope").map(drop)), Some(Status::UnknownStream));
    assert_eq!(status(catalog.topic("nope", "created").map(drop)), Some(Status::UnknownStream));
    assert_eq!(status(catalog.topic("orders", "nope").map(drop)), Some(Status::UnknownTopic));
    assert_eq!(status(catalog.partition("orders", "created", 4).map(drop)), None);
    let error = catalog.partition("orders", "created", 5).map(drop).err().map(|e| e.to_string());
    assert_eq!(error.as_deref(), Some("partition 5 does not exist in topic `orders/created`"));
    assert_eq!(status(catalog.user("nope").map(drop)), Some(Status::UnknownUser));
    assert_eq!(status(catalog.group("orders", "nope", "billing").map(drop)), Some(Status::UnknownTopic));
    let partitions: Vec<_> = catalog.partitions().map(|(s, t, p)| (s.id, t.id, p)).collect();
    let expected = [(1, 3, 0), (1, 3, 1), (1, 1, 0), (1, 1, 1), (1, 1, 2), (1, 1, 3), (1, 1, 4)];
    // The super stream scratch/invoices (two binding keys); scratch/events was deleted.
    let expected: Vec<_> = expected.into_iter().chain([(3, 1, 0), (3, 1, 1)]).collect();
    assert_eq!(partitions, expected);
    let dir = Catalog::partition_dir(Path::new("/var/lib/rb"), 3, 17, 2);
    assert_eq!(dir, Path::new("/var/lib/rb/streams/3/17/2"));
}

#[test]
fn wire_conversions() {
    let catalog = catalog_of(&every_op());
    let table = ShardTable::new(catalog.revision, 2);
    let stream = catalog.stream("orders").expect("stream");
    let info = catalog.stream_info(stream, &table);
    assert_eq!((info.id, info.name.as_str(), info.created_us), (1, "orders", 1_000));
    let names: Vec<_> = info.topics.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["cancelled", "created"]);
    let created = &info.topics[1];
    assert_eq!((created.id, created.config.partitions), (1, 5));
    assert_eq!(created.groups, ["billing"]);
    let owners: Vec<_> = created.partitions.iter().map(|p| (p.id, p.shard)).collect();
    let expected: Vec<_> = (0..5).map(|p| (p, table.owner(1, 1, p))).collect();
    assert_eq!(owners, expected);
    let (_, topic) = catalog.topic("orders", "created").expect("topic");
    assert_eq!(&catalog.topic_info(stream, topic, &table), created);
    let alice = catalog.user("alice").expect("alice");
    let user = catalog.user_info(alice);
    assert_eq!((user.id, user.name.as_str(), user.admin), (2, "alice", false));
    assert_eq!(user.permissions, alice.permissions);
    let debug = format!("{alice:?} {:?}", create_user("x", false, vec![]));
    assert!(!debug.contains("argon2") && debug.contains("<redacted>"), "{debug}");
}

#[test]
fn ops_archive_and_decode_from_any_alignment() {
    for op in every_op() {
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&op).expect("archive");
        let mut shifted = vec![0u8; 3];
        shifted.extend_from_slice(&bytes);
        let mut aligned = rkyv::util::AlignedVec::<16>::new();
        aligned.extend_from_slice(&shifted[3..]);
        let decoded = rkyv::from_bytes::<MetadataOp, rkyv::rancor::Error>(&aligned).expect("decode");
        assert_eq!(decoded, op);
    }
}

// ---- the metadata log ----

fn open_log(io: &FaultIo) -> (MetadataLog<FaultIo>, Catalog) {
    match block_on(MetadataLog::open(io.clone(), &data_dir())) {
        Ok(opened) => opened,
        Err(error) => panic!("open metadata log: {error}"),
    }
}

fn commit(log: &MetadataLog<FaultIo>, catalog: &mut Catalog, op: MetadataOp) {
    if let Err(error) = block_on(log.commit(catalog, op.clone())) {
        panic!("commit {op:?}: {error}");
    }
}

#[test]
fn replay_after_a_crash_restores_the_catalog() {
    let io = FaultIo::new();
    let (log, mut catalog) = open_log(&io);
    assert_eq!(catalog, Catalog::new());
    assert_eq!(log.dir(), data_dir().join(METADATA_DIR));
    let ops = every_op();
    for op in &ops {
        commit(&log, &mut catalog, op.clone());
    }
    assert_eq!(catalog, catalog_of(&ops));
    drop(log);
    io.crash_clean();
    let (log, mut replayed) = open_log(&io);
    assert_eq!(replayed, catalog, "every acknowledged op survives a crash");
    commit(&log, &mut replayed, create_stream("after-crash"));
    block_on(log.close()).expect("close");
    let closed = block_on(log.commit(&mut replayed.clone(), create_stream("x"))).err();
    assert_eq!(closed.map(|e| e.status()), Some(Status::ShuttingDown));
    io.crash_clean();
    let (_log, again) = open_log(&io);
    assert_eq!(again, replayed);
    assert_eq!(again.revision, ops.len() as u64 + 1);
    assert_eq!(again.stream("after-crash").map(|s| s.id).ok(), Some(4));
}

#[test]
fn a_refused_op_leaves_log_and_catalog_untouched() {
    let io = FaultIo::new();
    let (log, mut catalog) = open_log(&io);
    commit(&log, &mut catalog, create_user("root", true, vec![]));
    commit(&log, &mut catalog, create_stream("orders"));
    let (before, writes, syncs) = (catalog.clone(), io.writes(), io.syncs());
    for op in
        [create_stream("orders"), create_topic("nope", "t", 1), delete_user("root"), create_stream("a b")]
    {
        assert!(block_on(log.commit(&mut catalog, op)).is_err());
    }
    assert_eq!((io.writes(), io.syncs()), (writes, syncs), "nothing was written");
    assert_eq!(catalog, before);
    commit(&log, &mut catalog, create_stream("next"));
    assert_eq!(catalog.revision, 3);
    drop(log);
    io.crash_clean();
    assert_eq!(open_log(&io).1, catalog);
}

#[test]
fn failed_writes_and_fsyncs_leave_the_catalog_unchanged() {
    let io = FaultIo::new();
    let (log, mut catalog) = open_log(&io);
    commit(&log, &mut catalog, create_stream("orders"));
    let before = catalog.clone();
    io.fail_writes_with_enospc(true);
    let error = block_on(log.commit(&mut catalog, create_stream("full"))).err();
    assert_eq!(error.map(|e| e.status()), Some(Status::StorageFailed));
    assert_eq!(catalog, before);
    io.fail_writes_with_enospc(false);
    commit(&log, &mut catalog, create_stream("roomy"));
    assert_eq!(catalog.revision, 2, "the rolled-back offset is reused");
    let before = catalog.clone();
    io.fail_sync(0);
    let error = block_on(log.commit(&mut catalog, create_stream("lost"))).err();
    assert_eq!(error.map(|e| e.status()), Some(Status::PartitionPoisoned));
    assert_eq!(catalog, before);
    let error = block_on(log.commit(&mut catalog, create_stream("later"))).err();
    assert_eq!(error.map(|e| e.status()), Some(Status::PartitionPoisoned), "poisoned until reopened");
    drop(log);
    io.crash_clean();
    let (log, mut replayed) = open_log(&io);
    assert_eq!(replayed, catalog);
    commit(&log, &mut replayed, create_stream("later"));
    assert_eq!(replayed.revision, 3);
}

#[test]
fn a_crash_during_a_commit_keeps_the_acknowledged_ops() {
    let ops = every_op();
    for seed in 0..64u64 {
        let io = FaultIo::new();
        let (log, mut catalog) = open_log(&io);
        let split = 1 + (seed as usize * 7) % (ops.len() - 1);
        for op in &ops[..split] {
            commit(&log, &mut catalog, op.clone());
        }
        let acknowledged = catalog.clone();
        if seed % 2 == 0 {
            io.tear_write(0, 1 + (seed as usize * 331) % 4095);
        } else {
            io.fail_sync(0);
        }
        assert!(block_on(log.commit(&mut catalog, ops[split].clone())).is_err(), "seed {seed}");
        assert_eq!(catalog, acknowledged, "seed {seed}");
        drop(log);
        io.crash(seed);
        let (log, mut replayed) = open_log(&io);
        let with_op = catalog_of(&ops[..=split]);
        assert!(replayed == acknowledged || replayed == with_op, "seed {seed}: {replayed:?}");
        for op in &ops[replayed.revision as usize..] {
            commit(&log, &mut replayed, op.clone());
        }
        assert_eq!(replayed, catalog_of(&ops), "seed {seed}");
    }
}

/// Appends one batch of producer `version` holding `payloads` straight to the metadata log.
fn append_raw(io: &FaultIo, version: u64, payloads: &[&[u8]]) {
    let dir = data_dir().join(METADATA_DIR);
    let (log, _) = block_on(PartitionLog::open(io.clone(), &dir, LogConfig::default())).expect("open");
    let mut builder = BatchBuilder::new(version, 0);
    for payload in payloads {
        builder.push_payload(payload).expect("push");
    }
    let mut batch = builder.finish().expect("finish");
    block_on(log.append(&mut batch)).expect("append");
    block_on(log.close()).expect("close");
}

fn replay_error(io: &FaultIo) -> (u64, String) {
    match block_on(MetadataLog::open(io.clone(), &data_dir())) {
        Err(MetadataError::Replay { offset, reason }) => (offset, reason),
        Err(other) => panic!("expected a replay error, got {other}"),
        Ok(_) => panic!("replay accepted a bad op"),
    }
}

/// A closed metadata log holding two good ops.
fn two_good_ops() -> FaultIo {
    let io = FaultIo::new();
    let (log, mut catalog) = open_log(&io);
    commit(&log, &mut catalog, create_stream("orders"));
    commit(&log, &mut catalog, create_topic("orders", "created", 1));
    block_on(log.close()).expect("close");
    io
}

#[test]
fn replay_refuses_ops_that_do_not_decode_or_apply() {
    let io = two_good_ops();
    append_raw(&io, METADATA_OP_FORMAT_VERSION, &[b"not an archived op"]);
    assert_eq!(replay_error(&io).0, 2);

    let io = two_good_ops();
    let archived = rkyv::to_bytes::<rkyv::rancor::Error>(&delete_stream("missing")).expect("archive");
    append_raw(&io, METADATA_OP_FORMAT_VERSION, &[&archived]);
    let (offset, reason) = replay_error(&io);
    assert_eq!(offset, 2);
    assert!(reason.contains("stream `missing` does not exist"), "{reason}");
    assert_eq!(MetadataError::Replay { offset, reason }.status(), Status::Internal);

    let io = two_good_ops();
    let archived = rkyv::to_bytes::<rkyv::rancor::Error>(&create_stream("new")).expect("archive");
    append_raw(&io, METADATA_OP_FORMAT_VERSION + 1, &[&archived]);
    let (offset, reason) = replay_error(&io);
    assert_eq!(offset, 2);
    assert!(reason.contains("format version 2"), "{reason}");

    let io = two_good_ops();
    append_raw(&io, METADATA_OP_FORMAT_VERSION, &[&archived, &archived]);
    let (offset, reason) = replay_error(&io);
    assert_eq!(offset, 2);
    assert!(reason.contains("2 records"), "{reason}");

    let io = two_good_ops();
    append_raw(&io, METADATA_OP_FORMAT_VERSION, &[&archived]);
    let (_log, catalog) = open_log(&io);
    assert_eq!(catalog.revision, 3, "a well-formed op appended from outside replays");
    assert!(catalog.stream("new").is_ok());
}

#[test]
fn names_are_validated() {
    for good in ["a", "orders", "Orders-2024_v1.0", "...", "-", &"x".repeat(255)] {
        assert!(validate_name(good).is_ok(), "{good}");
    }
    for bad in ["", ".", "..", "a/b", "a b", "é", "a\0", "x\n", &"x".repeat(256)] {
        let error = validate_name(bad).expect_err(bad);
        assert_eq!(error.status(), Status::InvalidName);
        assert!(matches!(error, MetadataError::InvalidName { .. }));
    }
    let long = "é".repeat(200);
    match validate_name(&long) {
        Err(MetadataError::InvalidName { name, .. }) => assert!(name.len() <= NAME_BYTES_MAX),
        other => panic!("{other:?}"),
    }
}

#[test]
fn errors_map_to_statuses_and_read_well() {
    let cases = [
        (MetadataError::UnknownStream("s".into()), Status::UnknownStream, "stream `s` does not exist"),
        (
            MetadataError::UnknownPartition { stream: "s".into(), topic: "t".into(), partition: 3 },
            Status::UnknownPartition,
            "partition 3 does not exist in topic `s/t`",
        ),
        (
            MetadataError::AlreadyExists { what: "topic", name: "t".into() },
            Status::AlreadyExists,
            "topic `t` already exists",
        ),
        (
            MetadataError::Storage(StorageError::Closed),
            Status::ShuttingDown,
            "metadata log: the log is closed",
        ),
        (
            MetadataError::Replay { offset: 7, reason: "bad".into() },
            Status::Internal,
            "metadata log op at offset 7 cannot be replayed: bad",
        ),
    ];
    for (error, status, text) in cases {
        assert_eq!(error.status(), status);
        assert_eq!(error.to_string(), text);
    }
}
