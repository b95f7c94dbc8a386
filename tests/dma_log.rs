//! The partition log on real glommio DMA files (O_DIRECT through io_uring) in a temporary
//! directory: round trip across rolls, reopen, group commit under `--fsync always`, and recovery
//! of a torn tail written to a real file.

use std::path::PathBuf;
use std::rc::Rc;

use ringbroker::io::dma::{run_local, DmaIo};
use ringbroker::protocol::batch::{self, BatchBuilder};
use ringbroker::storage::{FsyncPolicy, LogConfig, PartitionLog, Repair};

const IO_MEMORY_BYTES: usize = 4 * 1024 * 1024;

fn make_batch(tag: u32, count: u32, size: usize) -> Vec<u8> {
    let mut builder = BatchBuilder::new(1, u64::from(tag));
    for i in 0..count {
        let mut payload = vec![(tag ^ i) as u8; size];
        payload[..4].copy_from_slice(&tag.to_le_bytes());
        builder.push_payload(&payload).expect("push");
    }
    builder.finish().expect("finish")
}

async fn read_everything(log: &PartitionLog<DmaIo>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut offset = log.offsets().start;
    while let Some(read) = log.read(offset, 256 * 1024).await.expect("read") {
        for found in batch::batches(read.bytes()) {
            let found = found.expect("valid batch");
            assert_eq!(found.header().base_offset, offset);
            offset = found.header().next_offset();
            out.push(found.as_bytes().to_vec());
        }
    }
    out
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("ringbroker-dma-").tempdir_in(std::env::temp_dir()).expect("tempdir")
}

#[test]
fn real_files_round_trip_reopen_and_recover_a_torn_tail() {
    let dir = temp_dir();
    let path: PathBuf = dir.path().join("stream-1/topic-1/0");
    let root = dir.path().to_path_buf();
    run_local("dma-test", IO_MEMORY_BYTES, move || async move {
        let io = DmaIo::new(&root).await.expect("dma io");
        let config = LogConfig {
            segment_bytes: 512 * 1024,
            fsync: FsyncPolicy::Interval(std::time::Duration::from_secs(3600)),
            ..LogConfig::default()
        };
        let (log, repairs) = PartitionLog::open(io.clone(), &path, config.clone()).await.expect("open");
        assert!(repairs.is_empty());
        let mut acked = Vec::new();
        for tag in 0..64 {
            let mut bytes = make_batch(tag, 20, 1000);
            log.append(&mut bytes).await.expect("append");
            acked.push(bytes);
        }
        assert!(log.size().1 > 2, "rolled into several segments");
        assert_eq!(read_everything(&log).await, acked);
        log.close().await.expect("close");

        let (log, repairs) = PartitionLog::open(io.clone(), &path, config.clone()).await.expect("reopen");
        assert!(repairs.is_empty(), "{repairs:?}");
        assert_eq!(read_everything(&log).await, acked);
        log.close().await.expect("close");

        // A crash mid-write: half a batch behind the last one of the active segment.
        let active = std::fs::read_dir(&path)
            .expect("list")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .max()
            .expect("active segment");
        let half = make_batch(999, 20, 1000);
        let mut bytes = std::fs::read(&active).expect("read segment");
        bytes.extend_from_slice(&half[..half.len() / 2]);
        std::fs::write(&active, &bytes).expect("plant torn tail");
        let (log, repairs) = PartitionLog::open(io, &path, config).await.expect("recover");
        assert!(matches!(repairs.as_slice(), [Repair::TruncatedTail { .. }]), "{repairs:?}");
        assert_eq!(read_everything(&log).await, acked);
        let mut next = make_batch(1000, 2, 10);
        assert_eq!(log.append(&mut next).await.expect("append").base_offset, 64 * 20);
    })
    .expect("executor");
}

#[test]
fn concurrent_appenders_share_fsyncs_under_fsync_always() {
    let dir = temp_dir();
    let root = dir.path().to_path_buf();
    run_local("dma-group-commit", IO_MEMORY_BYTES, move || async move {
        let io = DmaIo::new(&root).await.expect("dma io");
        let config = LogConfig { fsync: FsyncPolicy::Always, ..LogConfig::default() };
        let (log, _) = PartitionLog::open(io, &root.join("p"), config).await.expect("open");
        let log = Rc::new(log);
        let tasks: Vec<_> = (0..4_u32)
            .map(|producer| {
                let log = log.clone();
                glommio::spawn_local(async move {
                    for i in 0..25 {
                        let mut bytes = make_batch(producer * 1000 + i, 10, 200);
                        log.append(&mut bytes).await.expect("append");
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await;
        }
        let (fsyncs, appends) = log.counters();
        assert_eq!(appends, 100);
        assert!(fsyncs < appends, "group commit: {fsyncs} fsyncs for {appends} appends");
        assert_eq!(log.offsets().committed_next, 1000);
    })
    .expect("executor");
}
