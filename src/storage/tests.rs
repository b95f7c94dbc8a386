//! Tests of the partition log over the fault-injecting I/O: round trips, lookups, reopen,
//! recovery after crashes at every interesting point, poisoning, retention, and a seeded
//! randomised crash test (seed printed; replay with `RINGBROKER_SEED=<seed>`).

use std::path::PathBuf;
use std::time::Duration;

use futures_lite::future::block_on;

use super::*;
use crate::io::fault::FaultIo;
use crate::protocol::batch::{self, BatchBuilder, Message};

const DIR: &str = "/data/stream/topic/0";

fn dir() -> PathBuf {
    PathBuf::from(DIR)
}

fn config(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        write_chunk_bytes: 16 * 1024,
        index_interval_bytes: 4096,
        ..LogConfig::default()
    }
}

/// A batch of `count` records whose payloads encode (tag, record index) and have `size` bytes.
fn make_batch(tag: u64, count: u32, size: usize) -> Vec<u8> {
    let mut builder = BatchBuilder::new(7, tag);
    for i in 0..count {
        let mut payload = vec![(tag as u8) ^ (i as u8); size.max(12)];
        payload[..8].copy_from_slice(&tag.to_le_bytes());
        payload[8..12].copy_from_slice(&i.to_le_bytes());
        let key = tag.to_le_bytes();
        let message = Message { key: Some(&key), ..Message::payload(&payload) };
        builder.push(&message).expect("push");
    }
    builder.finish().expect("finish")
}

fn open(io: &FaultIo, config: LogConfig) -> (PartitionLog<FaultIo>, Vec<Repair>) {
    block_on(PartitionLog::open(io.clone(), &dir(), config)).expect("open log")
}

/// Every visible batch of the log, read in `max_bytes` steps, as (base offset, bytes).
fn read_all(log: &PartitionLog<FaultIo>, max_bytes: usize) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut offset = log.offsets().start;
    while let Some(read) = block_on(log.read(offset, max_bytes)).expect("read") {
        for found in batch::batches(read.bytes()) {
            let found = found.expect("served batches are valid");
            assert_eq!(found.header().base_offset, offset, "offsets are dense");
            offset = found.header().next_offset();
            out.push((found.header().base_offset, found.as_bytes().to_vec()));
        }
        assert_eq!(offset, read.next_offset);
    }
    out
}

/// Asserts two lists of (offset, batch bytes) are equal, naming the first difference briefly.
fn assert_same(actual: &[(u64, Vec<u8>)], expected: &[(u64, Vec<u8>)], context: &str) {
    let offsets = |v: &[(u64, Vec<u8>)]| v.iter().map(|(o, b)| (*o, b.len())).collect::<Vec<_>>();
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            a == e,
            "{context}: batch {i} differs: got offset {} ({} bytes), expected offset {} ({} bytes)",
            a.0,
            a.1.len(),
            e.0,
            e.1.len()
        );
    }
    assert_eq!(offsets(actual), offsets(expected), "{context}: batch lists differ in length");
}

/// Appends `tags` batches and returns what was acknowledged: (base offset, patched bytes).
fn append_all(
    log: &PartitionLog<FaultIo>,
    tags: std::ops::Range<u64>,
    count: u32,
    size: usize,
) -> Vec<(u64, Vec<u8>)> {
    tags.map(|tag| {
        let mut bytes = make_batch(tag, count, size);
        let info = block_on(log.append(&mut bytes)).expect("append");
        (info.base_offset, bytes)
    })
    .collect()
}

#[test]
fn round_trip_across_segment_rolls() {
    let io = FaultIo::new();
    let (log, repairs) = open(&io, config(64 * 1024));
    assert!(repairs.is_empty());
    let acked = append_all(&log, 0..120, 5, 300);
    assert_eq!(acked.last().map(|a| a.0), Some(119 * 5));
    assert!(log.size().1 > 3, "segments rolled: {:?}", log.size());
    for max_bytes in [1, 4096, 1 << 20] {
        assert_eq!(read_all(&log, max_bytes), acked);
    }
    let offsets = log.offsets();
    assert_eq!((offsets.dirty_next, offsets.stable_next, offsets.committed_next), (600, 600, 600));
}

/// Planned reads cut the log into chunks on index entries that can be read in any order (all
/// planned before any is read), hold exactly their batches, and cover every batch once from
/// any starting offset, across segment rolls.
#[test]
fn planned_chunks_cover_the_log_from_any_offset() {
    let io = FaultIo::new();
    let (log, _) = open(&io, config(64 * 1024));
    let acked = append_all(&log, 0..120, 5, 300);
    for (start, chunk_bytes) in [(0, 1), (0, 10_000), (7, 5000), (333, 100_000), (599, 4096)] {
        let mut plans = Vec::new();
        let mut at = start;
        while let Some(chunk) = log.plan_read(at, chunk_bytes) {
            assert!(chunk.first <= at && at < chunk.next && !chunk.is_empty());
            at = chunk.next;
            plans.push(chunk);
        }
        assert_eq!(at, 600, "planned to the end from {start}");
        let mut got = Vec::new();
        for chunk in plans.iter().rev() {
            let read = block_on(log.read_chunk(chunk)).expect("read chunk");
            assert_eq!((read.first_offset, read.next_offset), (chunk.first, chunk.next));
            let batches: Vec<_> = batch::batches(read.bytes())
                .map(|b| b.expect("valid"))
                .map(|b| (b.header().base_offset, b.as_bytes().to_vec()))
                .collect();
            got.splice(0..0, batches);
        }
        let from = acked.iter().position(|(o, _)| o + 5 > start).expect("start inside the log");
        let first_planned = got.first().map(|b| b.0).expect("something planned");
        let skip = got.iter().position(|b| b.0 == acked[from].0).expect("holds the start");
        assert!(first_planned <= acked[from].0);
        assert_same(&got[skip..], &acked[from..], &format!("chunks from {start} of {chunk_bytes}"));
    }
    assert!(log.plan_read(600, 4096).is_none(), "nothing visible past the end");
}

#[test]
fn reads_by_offset_inside_a_batch_and_by_timestamp() {
    let io = FaultIo::new();
    let (log, _) = open(&io, config(32 * 1024));
    let acked = append_all(&log, 0..60, 10, 100);
    for offset in [0, 5, 9, 10, 301, 599] {
        let read = block_on(log.read(offset, 1)).expect("read").expect("some");
        let header = batch::BatchHeader::decode(read.bytes()).expect("header");
        assert!(header.base_offset <= offset && offset <= header.last_offset());
        assert_eq!(read.bytes(), &acked[(offset / 10) as usize].1[..]);
    }
    assert!(block_on(log.read(600, 1)).expect("read").is_none());
    let stamps: Vec<u64> =
        acked.iter().map(|(_, b)| batch::BatchHeader::decode(b).unwrap().append_timestamp_us).collect();
    assert!(stamps.windows(2).all(|w| w[0] <= w[1]));
    for (i, &stamp) in stamps.iter().enumerate() {
        let found = block_on(log.offset_for_timestamp(stamp)).expect("lookup").expect("found");
        let first_with_stamp = stamps.iter().position(|&s| s >= stamp).unwrap_or(i);
        assert_eq!(found, first_with_stamp as u64 * 10);
    }
    assert_eq!(block_on(log.offset_for_timestamp(0)).expect("lookup"), Some(0));
    assert_eq!(block_on(log.offset_for_timestamp(u64::MAX)).expect("lookup"), None);
}

#[test]
fn reopen_after_clean_close_needs_no_repair() {
    let io = FaultIo::new();
    let (log, _) = open(&io, config(48 * 1024));
    let acked = append_all(&log, 0..80, 3, 500);
    block_on(log.close()).expect("close");
    assert!(matches!(block_on(log.append(&mut make_batch(1, 1, 1))), Err(StorageError::Closed)));
    io.crash_clean();
    let (log, repairs) = open(&io, config(48 * 1024));
    assert!(repairs.is_empty(), "{repairs:?}");
    assert_eq!(read_all(&log, 10_000), acked);
    let more = append_all(&log, 80..90, 3, 500);
    assert_eq!(more[0].0, 240);
}

#[test]
fn hostile_batches_are_refused_and_nothing_is_appended() {
    let io = FaultIo::new();
    let (log, _) = open(&io, config(1 << 20));
    let mut good = make_batch(1, 3, 50);
    let mut bad_crc = good.clone();
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 1;
    assert!(matches!(block_on(log.append(&mut bad_crc)), Err(StorageError::Batch(_))));
    let mut truncated = good[..good.len() - 1].to_vec();
    assert!(matches!(block_on(log.append(&mut truncated)), Err(StorageError::Batch(_))));
    let mut two = [good.clone(), good.clone()].concat();
    assert!(matches!(block_on(log.append(&mut two)), Err(StorageError::Batch(_))));
    assert_eq!(log.offsets().dirty_next, 0);
    assert_eq!(block_on(log.append(&mut good)).expect("append").base_offset, 0);
}

/// What `crash_with_tail` leaves: the acknowledged batches, the reopened log, its repairs, the I/O.
type Crashed = (Vec<(u64, Vec<u8>)>, PartitionLog<FaultIo>, Vec<Repair>, FaultIo);

/// Commits `n` batches under fsync always, then replaces the active segment's log file by its
/// durable bytes plus `tail`, and reopens.
fn crash_with_tail(tail: impl Fn(&[u8]) -> Vec<u8>) -> Crashed {
    let io = FaultIo::new();
    let (log, _) = open(&io, config(1 << 20));
    let acked = append_all(&log, 0..20, 4, 200);
    let path = dir().join(format!("{:020}.log", 0));
    let durable = io.durable_bytes(&path).expect("log file");
    let next = make_batch(99, 4, 200);
    io.crash_clean();
    let mut bytes = durable.clone();
    bytes.extend_from_slice(&tail(&next));
    io.set_file_bytes(&path, &bytes);
    let (log, repairs) = open(&io, config(1 << 20));
    (acked, log, repairs, io)
}

fn assert_truncated(repairs: &[Repair]) {
    assert!(repairs.iter().any(|r| matches!(r, Repair::TruncatedTail { .. })), "{repairs:?}");
}

#[test]
fn recovery_truncates_a_torn_header() {
    let (acked, log, repairs, _) = crash_with_tail(|next| next[..50].to_vec());
    assert_truncated(&repairs);
    assert_eq!(read_all(&log, 1 << 20), acked);
}

#[test]
fn recovery_truncates_a_torn_body() {
    let (acked, log, repairs, _) = crash_with_tail(|next| next[..next.len() - 7].to_vec());
    assert_truncated(&repairs);
    assert_eq!(read_all(&log, 1 << 20), acked);
}

#[test]
fn recovery_truncates_a_garbage_tail_and_a_batch_with_a_bad_crc() {
    let (acked, log, repairs, _) = crash_with_tail(|_| (0..5000_u32).map(|i| (i * 7 + 3) as u8).collect());
    assert_truncated(&repairs);
    assert_eq!(read_all(&log, 1 << 20), acked);
    let (acked, log, repairs, _) = crash_with_tail(|next| {
        let mut bytes = next.to_vec();
        bytes[200] ^= 0x10;
        bytes
    });
    assert_truncated(&repairs);
    assert_eq!(read_all(&log, 1 << 20), acked);
}

#[test]
fn recovery_drops_an_out_of_sequence_batch_and_zero_padding() {
    // A whole, valid batch whose base offset does not follow: not served.
    let (acked, log, repairs, _) = crash_with_tail(|next| {
        let mut bytes = next.to_vec();
        batch::patch_server_fields(&mut bytes, 12345, crate::model::now_us());
        bytes
    });
    assert_truncated(&repairs);
    assert_eq!(read_all(&log, 1 << 20), acked);
    let (_, _, repairs, _) = crash_with_tail(|_| vec![0; 3000]);
    assert!(
        repairs.iter().any(|r| matches!(r, Repair::TruncatedTail { zero_padding: true, .. })),
        "{repairs:?}"
    );
}

#[test]
fn recovery_rebuilds_a_missing_or_lying_index() {
    let io = FaultIo::new();
    let (log, _) = open(&io, config(128 * 1024));
    let acked = append_all(&log, 0..200, 2, 900);
    assert!(log.size().1 > 2);
    block_on(log.close()).expect("close");
    // Remove one sealed index, and plant entries past the end in another.
    io.remove_file_now(dir().join(format!("{:020}.index", 0)));
    let second = acked
        .iter()
        .map(|a| a.0)
        .find(|&o| io.file_bytes(dir().join(format!("{o:020}.log"))).is_some() && o > 0)
        .expect("second segment");
    let index_path = dir().join(format!("{second:020}.index"));
    let mut lying = io.file_bytes(&index_path).expect("index");
    lying.extend_from_slice(&[0xFF, 0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0x7F]);
    io.set_file_bytes(&index_path, &lying);
    let (log, repairs) = open(&io, config(128 * 1024));
    let rebuilt = repairs.iter().filter(|r| matches!(r, Repair::RebuiltIndex { .. })).count();
    assert_eq!(rebuilt, 2, "{repairs:?}");
    assert_eq!(read_all(&log, 3000), acked);
    block_on(log.close()).expect("close");
    let (_, repairs) = open(&io, config(128 * 1024));
    assert!(repairs.is_empty(), "index files were rewritten: {repairs:?}");
}

#[test]
fn a_torn_write_fails_the_append_and_a_crash_keeps_every_commit() {
    let io = FaultIo::new();
    let (log, _) = open(&io, config(1 << 20));
    let mut acked = append_all(&log, 0..10, 3, 700);
    io.tear_write_on(".log", 0, 1000);
    let mut torn = make_batch(50, 3, 700);
    assert!(matches!(block_on(log.append(&mut torn)), Err(StorageError::WriteFailed { .. })));
    // The log goes on from the last good offset.
    acked.extend(append_all(&log, 10..15, 3, 700));
    assert_eq!(acked[10].0, 30);
    io.crash(42);
    let (log, _) = open(&io, config(1 << 20));
    assert_eq!(read_all(&log, 1 << 20), acked);
}

#[test]
fn a_failed_fsync_poisons_the_log() {
    let io = FaultIo::new();
    let (log, _) = open(&io, config(1 << 20));
    let acked = append_all(&log, 0..3, 2, 100);
    io.fail_sync_on(".log", 0);
    let first = block_on(log.append(&mut make_batch(3, 2, 100)));
    assert!(matches!(first, Err(StorageError::Poisoned { .. })), "{first:?}");
    let later = block_on(log.append(&mut make_batch(4, 2, 100)));
    assert!(matches!(later, Err(StorageError::Poisoned { .. })), "{later:?}");
    assert!(log.poisoned().is_some());
    assert!(later.unwrap_err().to_string().contains("poisoned"));
    // Readers still see what was committed.
    assert_eq!(read_all(&log, 1 << 20), acked);
}

#[test]
fn out_of_space_fails_the_append_and_writes_resume() {
    let io = FaultIo::new();
    let (log, _) = open(&io, config(1 << 20));
    let mut acked = append_all(&log, 0..5, 2, 1000);
    io.set_space_limit(Some(io.total_bytes()));
    let failed = block_on(log.append(&mut make_batch(5, 30, 1000)));
    match failed {
        Err(StorageError::WriteFailed { reason, .. }) => assert!(reason.contains("No space"), "{reason}"),
        other => panic!("expected a write failure, got {other:?}"),
    }
    assert_eq!(read_all(&log, 1 << 20), acked);
    io.set_space_limit(None);
    acked.extend(append_all(&log, 6..8, 2, 1000));
    assert_eq!(read_all(&log, 1 << 20), acked);
}

#[test]
fn interval_acks_after_the_write_and_never_writes_behind() {
    let io = FaultIo::new();
    let (log, _) =
        open(&io, LogConfig { fsync: FsyncPolicy::Interval(Duration::from_secs(3600)), ..config(1 << 20) });
    let acked = append_all(&log, 0..10, 2, 100);
    let offsets = log.offsets();
    assert_eq!((offsets.stable_next, offsets.committed_next), (20, 0), "written, nothing fsynced yet");
    assert_eq!(read_all(&log, 1 << 20), acked);
    block_on(log.sync()).expect("sync");
    assert_eq!(log.offsets().committed_next, 20);
    block_on(log.close()).expect("close");

    // --fsync never acknowledges once buffered; readers see batches only once the flusher wrote them.
    let io = FaultIo::new();
    let (log, _) = open(&io, LogConfig { fsync: FsyncPolicy::Never, ..config(1 << 20) });
    assert!(log.write_behind());
    let acked = append_all(&log, 0..10, 2, 100);
    let offsets = log.offsets();
    assert_eq!((offsets.dirty_next, offsets.stable_next), (20, 0));
    assert!(read_all(&log, 1 << 20).is_empty(), "unwritten batches are not served");
    block_on(log.wait_dirty());
    block_on(log.flush()).expect("flush");
    assert_eq!(log.offsets().stable_next, 20);
    assert_eq!(read_all(&log, 1 << 20), acked);
    block_on(log.close()).expect("close");
    block_on(log.wait_dirty());
    assert!(log.is_closed());
    let io = FaultIo::new();
    let (log, _) =
        open(&io, LogConfig { fsync: FsyncPolicy::Interval(Duration::from_millis(1)), ..config(1 << 20) });
    append_all(&log, 0..2, 1, 10);
    std::thread::sleep(Duration::from_millis(3));
    block_on(log.sync_if_due()).expect("sync");
    assert_eq!(log.offsets().committed_next, 2);
}

#[test]
fn retention_deletes_whole_sealed_segments() {
    let io = FaultIo::new();
    let cfg = LogConfig { retention_max_bytes: Some(100 * 1024), ..config(32 * 1024) };
    let (log, _) = open(&io, cfg);
    append_all(&log, 0..100, 4, 500);
    let (bytes_before, segments_before) = log.size();
    let deleted = block_on(log.enforce_retention(crate::model::now_us())).expect("retention");
    let (bytes_after, segments_after) = log.size();
    assert!(deleted > 0 && segments_after == segments_before - deleted);
    assert!(bytes_after <= 100 * 1024 && bytes_before > bytes_after);
    let start = log.offsets().start;
    assert!(start > 0);
    assert!(matches!(block_on(log.read(0, 10)), Err(StorageError::OffsetOutOfRange { .. })));
    assert!(block_on(log.read(start, 10)).expect("read").is_some());
    let files = io.list_paths().iter().filter(|p| p.to_string_lossy().ends_with(".log")).count();
    assert_eq!(files, segments_after);

    let cfg = LogConfig { retention_max_age: Some(Duration::from_secs(60)), ..config(32 * 1024) };
    let io = FaultIo::new();
    let (log, _) = open(&io, cfg);
    append_all(&log, 0..40, 4, 500);
    let segments = log.size().1;
    assert_eq!(block_on(log.enforce_retention(crate::model::now_us())).expect("retention"), 0);
    let later = crate::model::now_us() + 120_000_000;
    assert_eq!(block_on(log.enforce_retention(later)).expect("retention"), segments - 1);
}

#[test]
fn segments_roll_by_age() {
    let io = FaultIo::new();
    let cfg = LogConfig { segment_max_age: Some(Duration::from_millis(5)), ..config(1 << 20) };
    let (log, _) = open(&io, cfg);
    append_all(&log, 0..2, 1, 10);
    std::thread::sleep(Duration::from_millis(10));
    append_all(&log, 2..3, 1, 10);
    assert_eq!(log.size().1, 2);
}

/// The seed of a randomised test: `RINGBROKER_SEED` if set, else fresh; printed either way.
fn test_seed(name: &str) -> u64 {
    let seed = match std::env::var("RINGBROKER_SEED") {
        Ok(text) => text.parse().expect("RINGBROKER_SEED must be a u64"),
        Err(_) => crate::model::now_us() ^ 0x9E37_79B9_7F4A_7C15,
    };
    eprintln!("{name}: seed {seed} (replay with RINGBROKER_SEED={seed})");
    seed
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn randomised_crashes_never_lose_a_commit_or_serve_a_corrupt_batch() {
    let seed = test_seed("randomised_crashes");
    let mut rng = Rng(seed | 1);
    let io = FaultIo::new();
    let cfg = |rng: &mut Rng| LogConfig {
        segment_bytes: 16 * 1024 + rng.below(64 * 1024),
        write_chunk_bytes: 4096 * (1 + rng.below(8) as usize),
        index_interval_bytes: 512 + rng.below(4096) as u32,
        ..LogConfig::default()
    };
    let mut acked: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut tag = 0;
    for round in 0..30 {
        let (log, _) = open(&io, cfg(&mut rng));
        assert_same(
            &read_all(&log, 1 + rng.below(20_000) as usize),
            &acked,
            &format!("seed {seed} round {round}"),
        );
        for _ in 0..rng.below(25) {
            if rng.below(10) == 0 {
                io.tear_write_on(".log", rng.below(3), rng.below(6000) as usize);
            }
            let mut bytes = make_batch(tag, 1 + rng.below(6) as u32, rng.below(1500) as usize);
            tag += 1;
            if let Ok(info) = block_on(log.append(&mut bytes)) {
                acked.push((info.base_offset, bytes));
            }
        }
        io.clear_faults();
        match rng.below(3) {
            0 => block_on(log.close()).expect("close"),
            1 => {
                io.crash(rng.next());
            }
            _ => {
                io.crash_clean();
            }
        }
    }
}

#[test]
fn fsync_policy_parses_and_prints() {
    for text in ["always", "never", "interval=250"] {
        assert_eq!(text.parse::<FsyncPolicy>().map(|p| p.to_string()), Ok(text.to_string()));
    }
    assert!("interval=0".parse::<FsyncPolicy>().is_err());
    assert!("sometimes".parse::<FsyncPolicy>().is_err());
}

/// A fixed workload under `--fsync always` with small segments (so it rolls): appends 30
/// batches, ignoring failures, and returns what was acknowledged.
fn fixed_workload(io: &FaultIo) -> Vec<(u64, Vec<u8>)> {
    let (log, _) = open(io, config(24 * 1024));
    let mut acked = Vec::new();
    for tag in 0..30 {
        let mut bytes = make_batch(tag, 1 + (tag % 4) as u32, 300 + (tag as usize * 131) % 2000);
        if let Ok(info) = block_on(log.append(&mut bytes)) {
            acked.push((info.base_offset, bytes));
        }
    }
    acked
}

#[test]
fn a_crash_after_a_torn_write_at_any_point_keeps_every_commit() {
    let io = FaultIo::new();
    fixed_workload(&io);
    let total = io.writes();
    assert!(total > 30, "the workload writes log, index and roll data: {total}");
    for n in 0..total {
        let io = FaultIo::new();
        io.tear_write(n, (n as usize * 977) % 5000);
        let acked = fixed_workload(&io);
        io.clear_faults();
        io.crash(n);
        let (log, _) = open(&io, config(24 * 1024));
        assert_same(&read_all(&log, 1 << 20), &acked, &format!("torn write {n} of {total}"));
    }
}

#[test]
fn a_crash_after_a_failed_fsync_at_any_point_keeps_every_commit() {
    let io = FaultIo::new();
    fixed_workload(&io);
    let total = io.syncs();
    assert!(total >= 30, "one fsync per append at least: {total}");
    for n in 0..total {
        let io = FaultIo::new();
        io.fail_sync(n);
        let acked = fixed_workload(&io);
        io.clear_faults();
        io.crash(n ^ 0x5EED);
        let (log, _) = open(&io, config(24 * 1024));
        assert_same(&read_all(&log, 1 << 20), &acked, &format!("failed fsync {n} of {total}"));
    }
}

#[test]
fn explicit_roll_and_deleting_segments_before_an_offset() {
    let io = FaultIo::new();
    let (log, _) = open(&io, config(1 << 20));
    append_all(&log, 0..3, 2, 10);
    block_on(log.roll()).expect("roll");
    block_on(log.roll()).expect("rolling an empty active segment is a no-op");
    let acked = append_all(&log, 3..5, 2, 10);
    assert_eq!(log.size().1, 2);
    assert_eq!(block_on(log.delete_segments_before(5)).expect("delete"), 0, "segment 0 ends at 6");
    assert_eq!(block_on(log.delete_segments_before(6)).expect("delete"), 1);
    assert_eq!(log.offsets().start, 6);
    assert_eq!(read_all(&log, 1 << 20), acked);
}
