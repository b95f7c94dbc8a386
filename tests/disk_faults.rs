//! Disk faults end to end, against the real `ringbroker` binary on real ext4 file systems (loop
//! images mounted by the test, so it needs root; without root, or when mounting fails, each test
//! prints a `SKIP` line and passes):
//!
//! * **ENOSPC**: the whole data directory on a small ext4; a filler file takes the last free
//!   block. Producers get `OutOfSpace` naming the partition and "no space left on device", every
//!   acknowledged batch is still served byte for byte, nothing is poisoned, and writes resume
//!   (offsets dense, nothing of the failed appends left) once the filler is deleted.
//! * **Failed fdatasync** (`--fsync interval`): one partition's directory on its own ext4, shut
//!   down with `FS_IOC_SHUTDOWN` (every later operation on it fails with EIO, as on a dead disk)
//!   while a written batch awaits its interval fsync. The fsync fails, the partition is poisoned
//!   (stats, `PartitionPoisoned` errors, one error line in the broker's log), the other
//!   partitions keep working, and after a remount and a restart recovery serves everything
//!   acknowledged and the partition takes writes again.
//! * **EIO on write** (`--fsync always`): the same dead disk under a produce: the append fails
//!   with `StorageFailed`, the rollback cannot be made durable so the partition is poisoned, and
//!   after a remount and a restart nothing acknowledged is lost and the failed batch is gone.
//!
//! Device-mapper (`dmsetup` with an `error` target) is not available on this kernel, so a fsync
//! that fails while writes succeed is not reproduced here; the file-system shutdown fails the
//! real `fdatasync` call of the interval timer instead.

mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{records, Conn, Failure};
use ringbroker::protocol::batch::BatchBuilder;
use ringbroker::protocol::messages::*;

const STREAM: &str = "disk";
const TOPIC: &str = "faults";
/// How long a broker may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long an unmount keeps retrying while the killed broker's files are still being released.
const UNMOUNT_TIMEOUT: Duration = Duration::from_secs(10);
/// `FS_IOC_SHUTDOWN` (`_IOR('X', 125, __u32)`): ext4 and xfs refuse every later operation with EIO.
const FS_IOC_SHUTDOWN: libc::c_ulong = 0x8004_587D;
/// Shutdown flag: commit the journal first (what was written and acknowledged stays on disk).
const SHUTDOWN_FLAGS_LOGFLUSH: u32 = 1;

// ---------------------------------------------------------------------------------------------
// ext4 loop images

/// An ext4 image file mounted (through a loop device) on a directory; unmounted on drop, also
/// when the test panics.
struct Ext4 {
    image: PathBuf,
    mount_point: PathBuf,
    mounted: bool,
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let output =
        Command::new(program).args(args).output().map_err(|e| format!("{program}: cannot run it: {e}"))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    Err(format!("{program} {}: {} {}", args.join(" "), output.status, stderr.trim()))
}

impl Ext4 {
    /// Creates a `size_mib` MiB ext4 image at `image` (no reserved blocks) and mounts it on
    /// `mount_point` (created if missing).
    fn create(image: &Path, mount_point: &Path, size_mib: u64) -> Result<Ext4, String> {
        let file = File::create(image).map_err(|e| format!("create {}: {e}", image.display()))?;
        file.set_len(size_mib << 20).map_err(|e| format!("size {}: {e}", image.display()))?;
        drop(file);
        run("mkfs.ext4", &["-q", "-F", "-m", "0", &image.to_string_lossy()])?;
        std::fs::create_dir_all(mount_point).map_err(|e| format!("mkdir {}: {e}", mount_point.display()))?;
        let mut ext4 =
            Ext4 { image: image.to_path_buf(), mount_point: mount_point.to_path_buf(), mounted: false };
        ext4.mount()?;
        Ok(ext4)
    }

    fn mount(&mut self) -> Result<(), String> {
        let (image, point) = (self.image.to_string_lossy(), self.mount_point.to_string_lossy());
        // commit=60: the journal commits when the broker fsyncs, not on a 5 s timer of its own.
        run("mount", &["-t", "ext4", "-o", "loop,commit=60", &image, &point])?;
        self.mounted = true;
        Ok(())
    }

    /// Unmounts, retrying while a just-killed broker still holds files open (its io_uring is
    /// torn down asynchronously); lazily after [`UNMOUNT_TIMEOUT`].
    fn unmount(&mut self) -> Result<(), String> {
        if !self.mounted {
            return Ok(());
        }
        let point = self.mount_point.to_string_lossy().into_owned();
        let deadline = Instant::now() + UNMOUNT_TIMEOUT;
        loop {
            match run("umount", &[&point]) {
                Ok(()) => break,
                Err(error) if Instant::now() >= deadline => {
                    let _ = run("umount", &["-l", &point]);
                    self.mounted = false;
                    return Err(error);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        self.mounted = false;
        Ok(())
    }

    /// Shuts the file system down: from now on every read, write and fsync on it fails with EIO.
    fn shutdown(&self) {
        let dir = File::open(&self.mount_point).expect("open the mount point");
        let flags = SHUTDOWN_FLAGS_LOGFLUSH;
        // SAFETY: FS_IOC_SHUTDOWN reads one u32 from the pointer, which lives across the call.
        let result = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&dir), FS_IOC_SHUTDOWN, &flags) };
        assert_eq!(result, 0, "FS_IOC_SHUTDOWN: {}", std::io::Error::last_os_error());
    }
}

impl Drop for Ext4 {
    fn drop(&mut self) {
        if let Err(error) = self.unmount() {
            eprintln!("disk_faults: unmounting {}: {error}", self.mount_point.display());
        }
    }
}

/// Whether the tests can mount file systems here; prints the SKIP line when not.
fn can_mount(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIP {test}: not root, cannot mount the small file systems this test needs");
        return false;
    }
    true
}

fn skip(test: &str, error: &str) {
    println!("SKIP {test}: cannot set up an ext4 loop mount: {error}");
}

// ---------------------------------------------------------------------------------------------
// the broker process (its own harness: the data directory is ours, the log is captured)

/// A `ringbroker` process on a data directory we chose, its stderr (the log) in a file.
struct BrokerProcess {
    child: Option<Child>,
    data_dir: PathBuf,
    log: PathBuf,
    port: u16,
    args: Vec<String>,
}

/// Three consecutive free loopback ports (listener and two shard listeners).
fn free_ports() -> u16 {
    for _ in 0..200 {
        let probe = TcpListener::bind("127.0.0.1:0").expect("bind probe");
        let base = probe.local_addr().expect("addr").port();
        drop(probe);
        if base < 64000 && (0..3).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
    panic!("no free loopback ports");
}

impl BrokerProcess {
    /// Starts a 2-shard broker on `data_dir`, logging to `log`.
    fn start(data_dir: &Path, log: &Path, args: &[&str]) -> BrokerProcess {
        let mut broker = BrokerProcess {
            child: None,
            data_dir: data_dir.to_path_buf(),
            log: log.to_path_buf(),
            port: free_ports(),
            args: args.iter().map(|s| s.to_string()).collect(),
        };
        broker.spawn();
        broker
    }

    fn spawn(&mut self) {
        let log = File::options().create(true).append(true).open(&self.log).expect("open the broker log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_ringbroker"));
        command
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .args(["--shards", "2", "--io-memory", "2097152"])
            .args(&self.args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        self.child = Some(command.spawn().expect("spawn ringbroker"));
        let (addr, child) = (self.addr(), &mut self.child);
        let started = common::wait_ready(
            addr,
            Instant::now() + START_TIMEOUT,
            common::PINGS_IN_A_ROW,
            &common::pings,
            &mut || common::exit_status(child),
        );
        if let Err(why) = started {
            panic!("ringbroker {why}; log:\n{}", self.log_text());
        }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn root(&self) -> Conn {
        let mut conn = Conn::connect(self.addr()).expect("connect");
        conn.login("ringbroker", "ringbroker").expect("root login");
        conn
    }

    fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// SIGTERM (graceful: flush, fsync, close) and wait.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                assert!(status.success(), "ringbroker exited with {status}; log:\n{}", self.log_text());
                return;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("ringbroker did not stop within 20 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL and wait.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------------
// helpers

/// A batch of `count` messages of `size` bytes; payloads start with `"{tag}-{i}:"`.
fn batch(tag: &str, count: u32, size: usize) -> Vec<u8> {
    let mut builder = BatchBuilder::new(0, 0);
    for i in 0..count {
        let mut payload = format!("{tag}-{i}:").into_bytes();
        payload.resize(size.max(payload.len()), b'x');
        builder.push_payload(&payload).expect("push");
    }
    builder.finish().expect("finish")
}

fn produce(conn: &mut Conn, partition: u32, batch: Vec<u8>) -> Result<ProduceResponse, Failure> {
    conn.produce(STREAM, TOPIC, Partitioning::Partition(partition), &[batch])
}

/// Every batch byte a partition serves, from offset 0 to its end.
fn partition_bytes(conn: &mut Conn, partition: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut offset = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (response, payload) = conn
            .poll_partition(STREAM, TOPIC, partition, PollStrategy::Offset(offset), 100_000)
            .expect("poll");
        let polled = &response.partitions[0];
        assert_eq!(polled.start_offset, offset);
        out.extend_from_slice(&payload);
        if payload.is_empty() || polled.next_offset >= polled.high_watermark {
            return out;
        }
        offset = polled.next_offset;
        assert!(Instant::now() < deadline, "reading partition {partition} did not finish");
    }
}

/// Every record a partition serves, as (offset, payload prefix before the `:`).
fn partition_records(conn: &mut Conn, partition: u32) -> Vec<(u64, String)> {
    records(&partition_bytes(conn, partition), 0)
        .into_iter()
        .map(|(offset, payload)| (offset, payload.split(':').next().unwrap_or_default().to_string()))
        .collect()
}

fn partition_stats(conn: &mut Conn, partition: u32) -> PartitionStats {
    let stats = conn.stats();
    let topic = stats.streams.iter().flat_map(|s| &s.topics).find(|t| t.name == TOPIC).expect("topic stats");
    topic.partitions.iter().find(|p| p.id == partition).cloned().expect("partition stats")
}

/// Records acknowledged per partition, to compare with what the broker serves.
#[derive(Default)]
struct Acked(BTreeMap<u32, Vec<(u64, String)>>);

impl Acked {
    fn produce(&mut self, conn: &mut Conn, partition: u32, tag: &str, count: u32, size: usize) {
        let response = produce(conn, partition, batch(tag, count, size)).expect("produce");
        self.record(partition, tag, count, &response);
    }

    fn record(&mut self, partition: u32, tag: &str, count: u32, response: &ProduceResponse) {
        let ack = response.acks[0];
        let entries = self.0.entry(partition).or_default();
        assert_eq!(ack.base_offset, entries.len() as u64, "offsets are dense on partition {partition}");
        entries.extend((0..count).map(|i| (ack.base_offset + u64::from(i), format!("{tag}-{i}"))));
    }

    fn check(&self, conn: &mut Conn, context: &str) {
        for (&partition, expected) in &self.0 {
            let served = partition_records(conn, partition);
            assert!(
                served == *expected,
                "{context}: partition {partition} serves {} records, {} acknowledged (or different ones)",
                served.len(),
                expected.len()
            );
        }
    }
}

/// Writes `dir/name` in `chunk`-byte pieces until ENOSPC (less than `chunk` bytes stay free), and
/// makes it durable.
fn fill_up(dir: &Path, name: &str, chunk: usize) -> PathBuf {
    let path = dir.join(name);
    let mut file = File::create(&path).expect("create filler");
    let bytes = vec![0xEE_u8; chunk];
    loop {
        match file.write_all(&bytes) {
            Ok(()) => {}
            Err(error) if error.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(error) => panic!("filling the disk: {error}"),
        }
    }
    let _ = file.sync_all();
    path
}

fn contains_ci(haystack: &str, needle: &str) -> bool {
    haystack.to_lowercase().contains(&needle.to_lowercase())
}

// ---------------------------------------------------------------------------------------------
// ENOSPC

#[test]
fn out_of_space_fails_produces_clearly_keeps_data_readable_and_writes_resume() {
    const TEST: &str = "out_of_space";
    if !can_mount(TEST) {
        return;
    }
    let started = Instant::now();
    let root = tempfile::Builder::new().prefix("ringbroker-enospc-").tempdir().expect("tempdir");
    let data = root.path().join("data");
    let disk = match Ext4::create(&root.path().join("disk.img"), &data, 32) {
        Ok(disk) => disk,
        Err(error) => return skip(TEST, &error),
    };
    let mut broker = BrokerProcess::start(&data, &root.path().join("broker.log"), &["--fsync", "always"]);
    let mut conn = broker.root();
    conn.create_stream(STREAM);
    conn.create_topic(STREAM, TOPIC, 2);
    let mut acked = Acked::default();
    for round in 0..8 {
        for partition in 0..2 {
            acked.produce(&mut conn, partition, &format!("p{partition}-r{round}"), 20, 1000);
        }
    }
    // Nearly full (under 1 MiB free): produces go on until the disk is full; each one either is
    // acknowledged and stored whole, or fails and leaves nothing.
    let nearly = fill_up(&data, "filler-1m", 1 << 20);
    let mut filled = false;
    for attempt in 0..60 {
        let partition = attempt % 2;
        let tag = format!("p{partition}-filling-{attempt}");
        match produce(&mut conn, partition, batch(&tag, 64, 1000)) {
            Ok(response) => acked.record(partition, &tag, 64, &response),
            Err(failure) => {
                assert_eq!(failure.status, Status::OutOfSpace, "{failure:?}");
                filled = true;
                break;
            }
        }
    }
    assert!(filled, "the disk filled up");
    acked.check(&mut conn, "after the disk filled up");
    // Full: not one free block.
    let full = fill_up(&data, "filler-4k", 4096);
    let before: Vec<Vec<u8>> = (0..2).map(|p| partition_bytes(&mut conn, p)).collect();
    for attempt in 0..4 {
        for partition in 0..2 {
            let failure = produce(&mut conn, partition, batch(&format!("full-{attempt}"), 64, 1000))
                .expect_err("a produce on a full disk fails");
            assert_eq!(failure.status, Status::OutOfSpace, "{failure:?}");
            assert!(contains_ci(&failure.message, "no space left on device"), "{failure:?}");
            assert!(failure.message.contains(&format!("partition {partition}")), "{failure:?}");
        }
    }
    assert!(broker.running(), "the broker stays up on a full disk");
    for partition in 0..2 {
        assert_eq!(partition_bytes(&mut conn, partition), before[partition as usize], "served byte for byte");
        let stats = partition_stats(&mut conn, partition);
        assert_eq!(stats.poisoned, None, "ENOSPC does not poison");
        assert_eq!(stats.next_offset, acked.0[&partition].len() as u64, "failed appends left no trace");
    }

    // Space returns: writes resume where the log stood.
    std::fs::remove_file(&nearly).expect("remove filler");
    std::fs::remove_file(&full).expect("remove filler");
    // SAFETY: sync(2) has no preconditions; it commits the journal so the freed blocks are reusable.
    unsafe { libc::sync() };
    for partition in 0..2 {
        acked.produce(&mut conn, partition, &format!("p{partition}-after"), 20, 1000);
        let now = partition_bytes(&mut conn, partition);
        assert!(now.starts_with(&before[partition as usize]), "earlier batches are untouched");
    }
    acked.check(&mut conn, "after space returned");

    // And everything acknowledged survives a restart on that disk.
    drop(conn);
    broker.stop();
    broker.spawn();
    let mut conn = broker.root();
    acked.check(&mut conn, "after a restart");
    let log = broker.log_text();
    assert!(log.contains("write failed; rolling back"), "the broker logged the failed writes:\n{log}");
    assert!(!log.contains("poisoned"), "nothing was poisoned:\n{log}");
    drop(conn);
    drop(broker);
    drop(disk);
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------------
// a dead disk under one partition: failed fsync, EIO on write

/// A broker whose partition 0 (of 3) lives on its own ext4, the rest on the test's disk.
struct DeadDiskRig {
    // Field order is drop order: the broker dies before its disk is unmounted.
    broker: BrokerProcess,
    disk: Ext4,
    conn: Conn,
    _root: tempfile::TempDir,
}

impl DeadDiskRig {
    /// Also produces a first round to every partition (returned), before partition 0 moves.
    fn new(test: &str, fsync: &str) -> Option<(DeadDiskRig, Acked)> {
        if !can_mount(test) {
            return None;
        }
        let root = tempfile::Builder::new().prefix("ringbroker-deaddisk-").tempdir().expect("tempdir");
        let data = root.path().join("data");
        let mut broker = BrokerProcess::start(&data, &root.path().join("broker.log"), &["--fsync", fsync]);
        let mut conn = broker.root();
        let stream = conn.create_stream(STREAM);
        let topic = conn.create_topic(STREAM, TOPIC, 3);
        let dir = data.join("streams").join(stream.id.to_string()).join(topic.id.to_string()).join("0");
        assert!(dir.is_dir(), "partition 0 lives in {}", dir.display());
        // Data first: glommio probes a new block device's polled-I/O support by reading the first
        // file opened on it, and wrongly concludes "pollable" from an empty one (every later read
        // there then fails with EOPNOTSUPP); the partition's segment is the first file opened.
        let mut acked = Acked::default();
        fill_all(&mut conn, &mut acked, 0..2);
        drop(conn);
        broker.stop();
        // Move partition 0's files onto a file system of its own.
        let moved = root.path().join("partition-0");
        std::fs::rename(&dir, &moved).expect("move the partition directory");
        let disk = match Ext4::create(&root.path().join("disk.img"), &dir, 16) {
            Ok(disk) => disk,
            Err(error) => {
                skip(test, &error);
                return None;
            }
        };
        let (from, to) = (format!("{}/.", moved.display()), dir.to_string_lossy().into_owned());
        run("cp", &["-a", &from, &to]).expect("copy the partition files");
        // SAFETY: sync(2) has no preconditions.
        unsafe { libc::sync() };
        broker.spawn();
        let conn = broker.root();
        Some((DeadDiskRig { broker, disk, conn, _root: root }, acked))
    }

    /// Kills the broker, remounts the dead disk (ext4 replays its journal) and starts again.
    fn remount_and_restart(&mut self) {
        self.broker.kill();
        self.disk.unmount().expect("unmount the dead disk");
        self.disk.mount().expect("mount it again");
        self.broker.spawn();
        self.conn = self.broker.root();
    }

    /// The other partitions keep taking writes and serving reads.
    fn others_work(&mut self, acked: &mut Acked, tag: &str) {
        for partition in 1..3 {
            acked.produce(&mut self.conn, partition, &format!("p{partition}-{tag}"), 10, 200);
            assert_eq!(partition_records(&mut self.conn, partition), acked.0[&partition]);
        }
    }
}

fn fill_all(conn: &mut Conn, acked: &mut Acked, rounds: std::ops::Range<u32>) {
    for round in rounds {
        for partition in 0..3 {
            acked.produce(conn, partition, &format!("p{partition}-r{round}"), 10, 200);
        }
    }
}

/// Waits until partition 0 is poisoned in `Stats`; returns the reason.
fn wait_poisoned(rig: &mut DeadDiskRig, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        if let Some(reason) = partition_stats(&mut rig.conn, 0).poisoned {
            return reason;
        }
        assert!(Instant::now() < deadline, "partition 0 was not poisoned within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Checks what must hold while partition 0 is poisoned, and after recovery.
fn poisoned_then_recovered(rig: &mut DeadDiskRig, acked: &mut Acked) {
    let failure =
        produce(&mut rig.conn, 0, batch("refused", 5, 200)).expect_err("a poisoned partition refuses writes");
    assert_eq!(failure.status, Status::PartitionPoisoned, "{failure:?}");
    assert!(failure.message.contains("partition 0"), "{failure:?}");
    assert!(failure.message.contains("poisoned"), "{failure:?}");
    assert!(failure.message.contains("refuses writes until restarted"), "{failure:?}");
    for partition in 1..3 {
        assert_eq!(partition_stats(&mut rig.conn, partition).poisoned, None);
    }
    rig.others_work(acked, "while-poisoned");
    // Give the maintenance timer (every 50 ms) time to misbehave, then check the log.
    std::thread::sleep(Duration::from_millis(500));
    assert!(rig.broker.running(), "the broker stays up");
    let log = rig.broker.log_text();
    let poisoned_lines = log.lines().filter(|l| l.contains("ERROR") && l.contains("poisoned")).count();
    assert_eq!(poisoned_lines, 1, "one error line says the partition is poisoned:\n{log}");
    let error_lines = log.lines().filter(|l| l.contains("ERROR")).count();
    assert!(
        error_lines <= 3,
        "the poisoned partition does not flood the log ({error_lines} error lines):\n{log}"
    );

    rig.remount_and_restart();
    acked.check(&mut rig.conn, "after remount and restart");
    assert_eq!(partition_stats(&mut rig.conn, 0).poisoned, None, "recovery clears the poison");
    acked.produce(&mut rig.conn, 0, "p0-recovered", 10, 200);
    rig.others_work(acked, "recovered");
    acked.check(&mut rig.conn, "after writing again");
}

#[test]
fn a_failed_fsync_poisons_only_its_partition_and_a_restart_recovers_it() {
    const TEST: &str = "failed_fsync";
    let started = Instant::now();
    let Some((mut rig, mut acked)) = DeadDiskRig::new(TEST, "interval=1500") else { return };
    fill_all(&mut rig.conn, &mut acked, 2..5);
    // A batch written (acknowledged under `interval`) but not fsynced yet, then the disk dies.
    let mut round = 0;
    loop {
        acked.produce(&mut rig.conn, 0, &format!("p0-unsynced-{round}"), 10, 200);
        let stats = partition_stats(&mut rig.conn, 0);
        if stats.committed_offset < stats.next_offset {
            break;
        }
        round += 1;
        assert!(round < 20, "every produce was fsynced at once under --fsync interval");
    }
    rig.disk.shutdown();
    let reason = wait_poisoned(&mut rig, Duration::from_secs(6));
    assert!(reason.contains("fdatasync"), "{reason}");
    assert!(reason.contains("Input/output error"), "{reason}");
    let log = rig.broker.log_text();
    assert!(log.contains("fdatasync failed: partition poisoned"), "{log}");
    poisoned_then_recovered(&mut rig, &mut acked);
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());
}

#[test]
fn eio_on_write_fails_the_append_poisons_and_loses_nothing_acknowledged() {
    const TEST: &str = "eio_on_write";
    let started = Instant::now();
    let Some((mut rig, mut acked)) = DeadDiskRig::new(TEST, "always") else { return };
    fill_all(&mut rig.conn, &mut acked, 2..5);
    rig.disk.shutdown();
    let failure =
        produce(&mut rig.conn, 0, batch("lost", 10, 200)).expect_err("a write on a dead disk fails");
    assert_eq!(failure.status, Status::StorageFailed, "{failure:?}");
    assert!(failure.message.contains("partition 0"), "{failure:?}");
    assert!(failure.message.contains("append not stored"), "{failure:?}");
    assert!(failure.message.contains("Input/output error"), "{failure:?}");
    // The failed write could not be rolled back durably on a dead disk, so the partition is
    // poisoned rather than guessing what the file holds.
    let reason = wait_poisoned(&mut rig, Duration::from_secs(2));
    assert!(reason.contains("rollback failed"), "{reason}");
    poisoned_then_recovered(&mut rig, &mut acked);
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());
}
