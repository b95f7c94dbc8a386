//! [`FaultIo`]: an in-memory file system for crash and fault tests.
//!
//! What it owns: a namespace of files and directories held in memory, the fault plan (which write
//! to tear, which sync to fail, how much space there is), and the counters tests read back. It
//! implements [`Io`] so storage code runs on it unchanged.
//!
//! Which core: the test's. Everything lives behind one `Rc<RefCell<_>>`; [`FaultIo`] clones share
//! it, and nothing here is `Send`. Every future completes on its first poll, so the trait methods
//! run inside a glommio executor or under `futures_lite::future::block_on` without a reactor.
//!
//! # The durability model
//!
//! Each file keeps three things: `current` (what reads see), `durable` (what survives a crash)
//! and `pending`, the writes and truncates completed since the last successful sync, in order.
//! `sync` applies the pending operations to `durable` and clears them; with no failed sync in
//! between that leaves `durable == current`, which is asserted. A crash turns every file into its
//! durable image plus a seeded random subset of its pending operations, applied in order: each
//! write is dropped, kept whole, or torn (only a prefix lands, cut at any byte, not only at sector
//! boundaries); each truncate is dropped or kept.
//!
//! A failed sync behaves like Linux after an fsync error: the error is reported once, the dirty
//! state is dropped (the pending operations are forgotten, so no later sync makes them durable)
//! while `current` still shows them. Only a crash or [`FaultIo::set_file_bytes`] brings `current`
//! and `durable` back together.
//!
//! Simplifications, on purpose: directory operations (create, rename, remove, and creating a file
//! through `open`) are durable at once, as if every directory were fsynced after each change; an
//! unlinked file stays usable through the handles still open on it, as on Linux, until a crash.
//!
//! # Faults
//!
//! * [`FaultIo::tear_write`]: the nth write from now lands only a prefix and returns EIO.
//! * [`FaultIo::fail_sync`]: the nth sync from now returns EIO and makes nothing durable.
//! * [`FaultIo::set_space_limit`] and [`FaultIo::fail_writes_with_enospc`]: ENOSPC.
//! * [`FaultIo::crash`] and [`FaultIo::crash_clean`]: power loss. Handles opened before a crash
//!   refuse every operation afterwards ("stale handle after crash"); reopen the files.
//!
//! Invariants: write positions and lengths are multiples of the alignment (checked, EINVAL
//! otherwise, nothing written); a write that fails with ENOSPC changes nothing; a torn write
//! changes only the bytes of its prefix; a crash leaves no pending operation behind.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::ErrorKind;
use std::ops::Deref;
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use super::{Io, IoBuffer, IoError, IoFile, IoResult};
use crate::constants::IO_ALIGNMENT_BYTES;

/// Default largest size of one file, so a bad position fails with EFBIG instead of allocating
/// without bound. Covers `SEGMENT_BYTES_MAX`.
pub const FAULT_FILE_BYTES_MAX_DEFAULT: u64 = 1 << 32;

/// Default fill byte of freshly allocated buffers: not zero, so code that relies on zeroed buffers
/// (which real DMA buffers are not) shows up in tests.
pub const FAULT_ALLOC_FILL_BYTE_DEFAULT: u8 = 0xA5;

const ENOENT: i32 = 2;
const EIO: i32 = 5;
const ENOTDIR: i32 = 20;
const EISDIR: i32 = 21;
const EINVAL: i32 = 22;
const EFBIG: i32 = 27;
const ENOSPC: i32 = 28;

/// Settings of a [`FaultIo`], fixed at creation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultConfig {
    /// Alignment of write positions and lengths (a power of two); [`IoFile::alignment`].
    pub alignment: usize,
    /// Largest size of one file; writes and truncates beyond it fail with EFBIG.
    pub file_bytes_max: u64,
    /// When set, creating a file or renaming onto a path needs its parent directory to exist.
    pub require_parent_dir: bool,
    /// Byte that [`IoFile::alloc`] fills new buffers with.
    pub alloc_fill_byte: u8,
}

impl Default for FaultConfig {
    fn default() -> Self {
        Self {
            alignment: IO_ALIGNMENT_BYTES,
            file_bytes_max: FAULT_FILE_BYTES_MAX_DEFAULT,
            require_parent_dir: true,
            alloc_fill_byte: FAULT_ALLOC_FILL_BYTE_DEFAULT,
        }
    }
}

/// What a crash did, for logging a failing seed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CrashReport {
    /// Files in the namespace at the crash.
    pub files: usize,
    /// Pending writes that survived whole.
    pub writes_kept: usize,
    /// Pending writes of which only a prefix survived.
    pub writes_torn: usize,
    /// Pending writes that were lost.
    pub writes_dropped: usize,
    /// Pending truncates that survived.
    pub truncates_kept: usize,
    /// Pending truncates that were lost.
    pub truncates_dropped: usize,
}

impl fmt::Display for CrashReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "crash: {} files, writes kept {} torn {} dropped {}, truncates kept {} dropped {}",
            self.files,
            self.writes_kept,
            self.writes_torn,
            self.writes_dropped,
            self.truncates_kept,
            self.truncates_dropped
        )
    }
}

/// An in-memory file system with durability tracking and fault injection; see the module docs.
/// Clones share the same files, faults and counters.
#[derive(Clone)]
pub struct FaultIo {
    state: Rc<RefCell<State>>,
}

/// A file opened on a [`FaultIo`]. Refuses every operation after a crash of its [`FaultIo`].
pub struct FaultFile {
    io: FaultIo,
    node: Rc<RefCell<FileNode>>,
    path: PathBuf,
    generation: u64,
    alignment: usize,
    alloc_fill_byte: u8,
}

/// The write buffer of a [`FaultFile`]: a plain `Vec<u8>`. Only the alignment of lengths and
/// positions is checked, not the memory address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultBuffer {
    bytes: Vec<u8>,
}

/// The bytes a [`FaultFile`] read returns: a shared, cheaply cloned slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultReadBuf {
    bytes: Rc<[u8]>,
}

struct State {
    config: FaultConfig,
    files: BTreeMap<PathBuf, Rc<RefCell<FileNode>>>,
    dirs: BTreeSet<PathBuf>,
    /// Bumped by every crash; handles from an older generation are stale.
    generation: u64,
    writes: u64,
    syncs: u64,
    tear: Option<Armed<usize>>,
    sync_failure: Option<Armed<()>>,
    space_limit_bytes: Option<u64>,
    enospc_always: bool,
}

#[derive(Default)]
struct FileNode {
    current: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<PendingOp>,
    /// Set by a failed sync: some completed writes will never become durable.
    durability_lost: bool,
}

enum PendingOp {
    Write { position: usize, bytes: Vec<u8> },
    Truncate { len: usize },
}

/// A fault that fires on the `remaining`th matching operation from when it was armed.
struct Armed<T> {
    path_suffix: Option<String>,
    remaining: u64,
    payload: T,
}

/// What a crash does with one pending operation.
enum Fate {
    Drop,
    Keep,
    /// Only this many leading bytes of a write land.
    Tear(usize),
}

impl FaultIo {
    /// An empty file system with the default [`FaultConfig`].
    pub fn new() -> Self {
        Self::with_config(FaultConfig::default())
    }

    /// An empty file system with `config`.
    pub fn with_config(config: FaultConfig) -> Self {
        assert!(config.alignment.is_power_of_two(), "alignment must be a power of two");
        assert!(config.file_bytes_max <= usize::MAX as u64);
        let state = State {
            config,
            files: BTreeMap::new(),
            dirs: BTreeSet::new(),
            generation: 0,
            writes: 0,
            syncs: 0,
            tear: None,
            sync_failure: None,
            space_limit_bytes: None,
            enospc_always: false,
        };
        Self { state: Rc::new(RefCell::new(state)) }
    }

    /// The configuration this file system was created with.
    pub fn config(&self) -> FaultConfig {
        self.state.borrow().config.clone()
    }

    /// Tears the `nth` write (0 = the next one) issued from now on, on any file: its first
    /// `at_byte` bytes land (all of them if `at_byte` is larger) and it returns EIO. Counts the
    /// writes that [`FaultIo::writes`] counts. Replaces any tear armed before; fires once.
    pub fn tear_write(&self, nth: u64, at_byte: usize) {
        self.state.borrow_mut().tear = Some(Armed { path_suffix: None, remaining: nth, payload: at_byte });
    }

    /// Like [`FaultIo::tear_write`], counting only writes to files whose path (as opened) ends
    /// with `path_suffix`, e.g. `".log"`.
    pub fn tear_write_on(&self, path_suffix: &str, nth: u64, at_byte: usize) {
        let path_suffix = Some(path_suffix.to_owned());
        self.state.borrow_mut().tear = Some(Armed { path_suffix, remaining: nth, payload: at_byte });
    }

    /// Fails the `nth` sync (0 = the next one) issued from now on, on any file, with EIO. That
    /// sync makes nothing durable and forgets the file's pending writes (see the module docs).
    /// Replaces any sync failure armed before; fires once.
    pub fn fail_sync(&self, nth: u64) {
        self.state.borrow_mut().sync_failure = Some(Armed { path_suffix: None, remaining: nth, payload: () });
    }

    /// Like [`FaultIo::fail_sync`], counting only syncs of files whose path ends with `path_suffix`.
    pub fn fail_sync_on(&self, path_suffix: &str, nth: u64) {
        let path_suffix = Some(path_suffix.to_owned());
        self.state.borrow_mut().sync_failure = Some(Armed { path_suffix, remaining: nth, payload: () });
    }

    /// While `enabled`, every write fails with ENOSPC and changes nothing.
    pub fn fail_writes_with_enospc(&self, enabled: bool) {
        self.state.borrow_mut().enospc_always = enabled;
    }

    /// Caps the total size of all files: a write that would grow the total beyond `limit_bytes`
    /// fails with ENOSPC and changes nothing. `None` removes the cap.
    pub fn set_space_limit(&self, limit_bytes: Option<u64>) {
        self.state.borrow_mut().space_limit_bytes = limit_bytes;
    }

    /// Disarms every fault: tears, sync failures, ENOSPC and the space limit.
    pub fn clear_faults(&self) {
        let mut state = self.state.borrow_mut();
        state.tear = None;
        state.sync_failure = None;
        state.enospc_always = false;
        state.space_limit_bytes = None;
    }

    /// Power loss: every file becomes its durable image plus, in order, each pending operation
    /// independently dropped, kept or (writes only) torn at a random byte, chosen by a PRNG seeded
    /// with `seed`. Same seed and same history, same result. Invalidates every open handle.
    /// Armed faults stay armed.
    pub fn crash(&self, seed: u64) -> CrashReport {
        let mut random = Xorshift64Star::new(seed);
        self.crash_with(|op| match op {
            PendingOp::Truncate { .. } if random.below(2) == 0 => Fate::Drop,
            PendingOp::Truncate { .. } => Fate::Keep,
            PendingOp::Write { bytes, .. } => {
                let choices = if bytes.len() >= 2 { 3 } else { 2 };
                match random.below(choices) {
                    0 => Fate::Drop,
                    1 => Fate::Keep,
                    _ => Fate::Tear(1 + random.below(bytes.len() as u64 - 1) as usize),
                }
            }
        })
    }

    /// Power loss where no pending operation survives: every file becomes its durable image.
    /// Invalidates every open handle.
    pub fn crash_clean(&self) -> CrashReport {
        self.crash_with(|_| Fate::Drop)
    }

    fn crash_with(&self, mut choose: impl FnMut(&PendingOp) -> Fate) -> CrashReport {
        let mut state = self.state.borrow_mut();
        state.generation += 1;
        let mut report = CrashReport { files: state.files.len(), ..CrashReport::default() };
        for node in state.files.values() {
            let mut node = node.borrow_mut();
            let pending = std::mem::take(&mut node.pending);
            let mut image = std::mem::take(&mut node.durable);
            for op in &pending {
                match (op, choose(op)) {
                    (PendingOp::Write { .. }, Fate::Drop) => report.writes_dropped += 1,
                    (PendingOp::Truncate { .. }, Fate::Drop) => report.truncates_dropped += 1,
                    (PendingOp::Write { position, bytes }, Fate::Keep) => {
                        report.writes_kept += 1;
                        apply_write(&mut image, *position, bytes);
                    }
                    (PendingOp::Write { position, bytes }, Fate::Tear(landed)) => {
                        assert!(landed > 0 && landed < bytes.len());
                        report.writes_torn += 1;
                        apply_write(&mut image, *position, &bytes[..landed]);
                    }
                    (PendingOp::Truncate { len }, _) => {
                        report.truncates_kept += 1;
                        image.resize(*len, 0);
                    }
                }
            }
            node.current = image.clone();
            node.durable = image;
            node.durability_lost = false;
        }
        report
    }

    /// The bytes reads of `path` see now, or `None` when there is no such file.
    pub fn file_bytes(&self, path: impl AsRef<Path>) -> Option<Vec<u8>> {
        self.node(path.as_ref()).map(|node| node.borrow().current.clone())
    }

    /// The bytes of `path` that a clean crash would leave, or `None` when there is no such file.
    pub fn durable_bytes(&self, path: impl AsRef<Path>) -> Option<Vec<u8>> {
        self.node(path.as_ref()).map(|node| node.borrow().durable.clone())
    }

    /// How many writes and truncates of `path` are not durable yet (0 when there is no such file).
    pub fn pending_ops(&self, path: impl AsRef<Path>) -> usize {
        self.node(path.as_ref()).map_or(0, |node| node.borrow().pending.len())
    }

    /// Makes `bytes` both the current and the durable contents of `path`, creating the file and
    /// its parent directories as needed and forgetting its pending operations. For planting
    /// garbage tails, truncated or corrupt files in tests. Counts as no write.
    pub fn set_file_bytes(&self, path: impl AsRef<Path>, bytes: &[u8]) {
        let key = normalize(path.as_ref());
        assert!(key.file_name().is_some(), "set_file_bytes needs a file path: {}", key.display());
        let mut state = self.state.borrow_mut();
        assert!(!state.dirs.contains(&key), "set_file_bytes on a directory: {}", key.display());
        for dir in key.ancestors().skip(1).filter(|dir| !is_root(dir)) {
            assert!(!state.files.contains_key(dir), "parent is a file: {}", dir.display());
            state.dirs.insert(dir.to_path_buf());
        }
        let node = state.files.entry(key).or_default();
        let mut node = node.borrow_mut();
        node.current = bytes.to_vec();
        node.durable = bytes.to_vec();
        node.pending.clear();
        node.durability_lost = false;
    }

    /// Removes `path` at once (durably). Returns whether there was such a file.
    pub fn remove_file_now(&self, path: impl AsRef<Path>) -> bool {
        self.state.borrow_mut().files.remove(&normalize(path.as_ref())).is_some()
    }

    /// Every file path, sorted.
    pub fn list_paths(&self) -> Vec<PathBuf> {
        self.state.borrow().files.keys().cloned().collect()
    }

    /// Every directory path, sorted.
    pub fn list_dirs(&self) -> Vec<PathBuf> {
        self.state.borrow().dirs.iter().cloned().collect()
    }

    /// Total size of all files now, in bytes (what [`FaultIo::set_space_limit`] caps).
    pub fn total_bytes(&self) -> u64 {
        self.state.borrow().total_bytes()
    }

    /// Writes that reached the "device": passed the alignment, size and space checks (torn writes
    /// included). [`FaultIo::tear_write`] counts these.
    pub fn writes(&self) -> u64 {
        self.state.borrow().writes
    }

    /// Syncs issued on live handles, failed ones included. [`FaultIo::fail_sync`] counts these.
    pub fn syncs(&self) -> u64 {
        self.state.borrow().syncs
    }

    /// How many crashes happened so far.
    pub fn crashes(&self) -> u64 {
        self.state.borrow().generation
    }

    fn node(&self, path: &Path) -> Option<Rc<RefCell<FileNode>>> {
        self.state.borrow().files.get(&normalize(path)).cloned()
    }

    fn open_now(&self, path: &Path, create: bool) -> IoResult<FaultFile> {
        let key = normalize(path);
        let mut state = self.state.borrow_mut();
        if state.dir_exists(&key) {
            return Err(os_error("open", path, EISDIR));
        }
        let node = match state.files.get(&key) {
            Some(node) => node.clone(),
            None if !create => return Err(os_error("open", path, ENOENT)),
            None => {
                if key.file_name().is_none() {
                    return Err(os_error("open", path, EINVAL));
                }
                state.check_parent("open", path, &key)?;
                let node = Rc::new(RefCell::new(FileNode::default()));
                state.files.insert(key, node.clone());
                node
            }
        };
        Ok(FaultFile {
            io: self.clone(),
            node,
            path: path.to_path_buf(),
            generation: state.generation,
            alignment: state.config.alignment,
            alloc_fill_byte: state.config.alloc_fill_byte,
        })
    }

    fn remove_now(&self, path: &Path) -> IoResult<()> {
        let key = normalize(path);
        let mut state = self.state.borrow_mut();
        if state.files.remove(&key).is_some() {
            return Ok(());
        }
        let code = if state.dir_exists(&key) { EISDIR } else { ENOENT };
        Err(os_error("remove", path, code))
    }

    fn rename_now(&self, from: &Path, to: &Path) -> IoResult<()> {
        let (from_key, to_key) = (normalize(from), normalize(to));
        let mut state = self.state.borrow_mut();
        if !state.files.contains_key(&from_key) {
            let code = if state.dir_exists(&from_key) { EISDIR } else { ENOENT };
            return Err(os_error("rename", from, code));
        }
        if state.dir_exists(&to_key) || to_key.file_name().is_none() {
            return Err(os_error("rename", to, EISDIR));
        }
        state.check_parent("rename", to, &to_key)?;
        if from_key != to_key {
            if let Some(node) = state.files.remove(&from_key) {
                state.files.insert(to_key, node);
            }
        }
        Ok(())
    }

    fn list_now(&self, dir: &Path) -> IoResult<Vec<String>> {
        let key = normalize(dir);
        let state = self.state.borrow();
        if !state.dir_exists(&key) {
            let code = if state.files.contains_key(&key) { ENOTDIR } else { ENOENT };
            return Err(os_error("list", dir, code));
        }
        let in_dir = |path: &&PathBuf| path.parent() == Some(key.as_path());
        let files = state.files.keys().filter(in_dir);
        let dirs = state.dirs.iter().filter(in_dir);
        let mut names: Vec<String> = files
            .chain(dirs)
            .filter_map(|path| path.file_name())
            .map(|name| name.to_string_lossy().into_owned())
            .collect();
        names.sort();
        Ok(names)
    }

    fn create_dir_all_now(&self, dir: &Path) -> IoResult<()> {
        let key = normalize(dir);
        let mut state = self.state.borrow_mut();
        let missing: Vec<&Path> = key.ancestors().filter(|dir| !is_root(dir)).collect();
        if let Some(file) = missing.iter().find(|dir| state.files.contains_key(**dir)) {
            return Err(os_error("create_dir_all", file, ENOTDIR));
        }
        for dir in missing {
            state.dirs.insert(dir.to_path_buf());
        }
        Ok(())
    }

    fn exists_now(&self, path: &Path) -> bool {
        let key = normalize(path);
        let state = self.state.borrow();
        state.files.contains_key(&key) || state.dir_exists(&key)
    }
}

impl Default for FaultIo {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for FaultIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.borrow();
        f.debug_struct("FaultIo")
            .field("files", &state.files.len())
            .field("dirs", &state.dirs.len())
            .field("crashes", &state.generation)
            .field("writes", &state.writes)
            .field("syncs", &state.syncs)
            .finish_non_exhaustive()
    }
}

impl State {
    fn dir_exists(&self, dir: &Path) -> bool {
        is_root(dir) || self.dirs.contains(dir)
    }

    fn check_parent(&self, operation: &'static str, path: &Path, key: &Path) -> IoResult<()> {
        let parent = key.parent().unwrap_or(Path::new(""));
        if self.config.require_parent_dir && !self.dir_exists(parent) {
            let code = if self.files.contains_key(parent) { ENOTDIR } else { ENOENT };
            return Err(os_error(operation, path, code));
        }
        Ok(())
    }

    fn total_bytes(&self) -> u64 {
        self.files.values().map(|node| node.borrow().current.len() as u64).sum()
    }
}

impl Io for FaultIo {
    type File = FaultFile;

    async fn open(&self, path: &Path, create: bool) -> IoResult<FaultFile> {
        self.open_now(path, create)
    }

    async fn remove(&self, path: &Path) -> IoResult<()> {
        self.remove_now(path)
    }

    async fn rename(&self, from: &Path, to: &Path) -> IoResult<()> {
        self.rename_now(from, to)
    }

    async fn list(&self, dir: &Path) -> IoResult<Vec<String>> {
        self.list_now(dir)
    }

    async fn create_dir_all(&self, dir: &Path) -> IoResult<()> {
        self.create_dir_all_now(dir)
    }

    async fn exists(&self, path: &Path) -> bool {
        self.exists_now(path)
    }
}

impl FaultFile {
    fn check_live(&self, operation: &'static str) -> IoResult<()> {
        let generation = self.io.state.borrow().generation;
        if self.generation == generation {
            return Ok(());
        }
        let message = format!(
            "stale handle after crash (opened before crash {}, {} crashes so far)",
            self.generation + 1,
            generation
        );
        Err(IoError::new(operation, &self.path, std::io::Error::other(message)))
    }

    fn write_now(&self, bytes: &[u8], position: u64) -> IoResult<usize> {
        self.check_live("write")?;
        let len = bytes.len();
        if position % self.alignment as u64 != 0 || len % self.alignment != 0 {
            let message =
                format!("unaligned write: position {position}, length {len}, alignment {}", self.alignment);
            let source = std::io::Error::new(ErrorKind::InvalidInput, message);
            return Err(IoError::new("write", &self.path, source));
        }
        let mut state = self.io.state.borrow_mut();
        let end = position
            .checked_add(len as u64)
            .filter(|end| *end <= state.config.file_bytes_max)
            .ok_or_else(|| os_error("write", &self.path, EFBIG))?;
        let growth_bytes = end.saturating_sub(self.node.borrow().current.len() as u64);
        let over_limit = state
            .space_limit_bytes
            .is_some_and(|limit| growth_bytes > 0 && state.total_bytes() + growth_bytes > limit);
        if state.enospc_always || over_limit {
            return Err(os_error("write", &self.path, ENOSPC));
        }
        state.writes += 1;
        let torn_at = fire(&mut state.tear, &self.path);
        drop(state);
        let landed = torn_at.map_or(len, |at_byte| at_byte.min(len));
        // `end` fits in usize: it is at most `file_bytes_max`, checked at creation.
        let position = position as usize;
        let mut node = self.node.borrow_mut();
        apply_write(&mut node.current, position, &bytes[..landed]);
        if landed > 0 {
            let bytes = bytes[..landed].to_vec();
            node.pending.push(PendingOp::Write { position, bytes });
        }
        assert!(node.current.len() >= position + landed);
        assert!(node.current[position..position + landed] == bytes[..landed]);
        match torn_at {
            Some(_) => Err(os_error("write", &self.path, EIO)),
            None => Ok(len),
        }
    }

    fn read_now(&self, position: u64, len: usize) -> IoResult<FaultReadBuf> {
        self.check_live("read")?;
        let node = self.node.borrow();
        let size = node.current.len();
        let start = usize::try_from(position).map_or(size, |position| position.min(size));
        let end = start.saturating_add(len).min(size);
        assert!(start <= end && end - start <= len);
        Ok(FaultReadBuf { bytes: Rc::from(&node.current[start..end]) })
    }

    fn sync_now(&self) -> IoResult<()> {
        self.check_live("fdatasync")?;
        let mut state = self.io.state.borrow_mut();
        state.syncs += 1;
        let failed = fire(&mut state.sync_failure, &self.path).is_some();
        drop(state);
        let mut node = self.node.borrow_mut();
        if failed {
            node.pending.clear();
            node.durability_lost = true;
            return Err(os_error("fdatasync", &self.path, EIO));
        }
        let pending = std::mem::take(&mut node.pending);
        for op in &pending {
            match op {
                PendingOp::Write { position, bytes } => apply_write(&mut node.durable, *position, bytes),
                PendingOp::Truncate { len } => node.durable.resize(*len, 0),
            }
        }
        // Pair assertion: with no failed sync in between, replaying the pending operations onto
        // the durable image must reproduce exactly what reads see.
        assert!(
            node.durability_lost || node.durable == node.current,
            "fault: durable image diverged from current contents of {}",
            self.path.display()
        );
        Ok(())
    }

    fn truncate_now(&self, len: u64) -> IoResult<()> {
        self.check_live("truncate")?;
        if len > self.io.state.borrow().config.file_bytes_max {
            return Err(os_error("truncate", &self.path, EFBIG));
        }
        let len = len as usize;
        let mut node = self.node.borrow_mut();
        node.current.resize(len, 0);
        node.pending.push(PendingOp::Truncate { len });
        Ok(())
    }
}

impl fmt::Debug for FaultFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultFile")
            .field("path", &self.path)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl IoFile for FaultFile {
    type Buffer = FaultBuffer;
    type ReadBuf = FaultReadBuf;

    fn alignment(&self) -> usize {
        self.alignment
    }

    fn alloc(&self, len: usize) -> FaultBuffer {
        FaultBuffer { bytes: vec![self.alloc_fill_byte; len] }
    }

    async fn write_at(&self, buffer: FaultBuffer, position: u64) -> IoResult<usize> {
        self.write_now(&buffer.bytes, position)
    }

    async fn read_at(&self, position: u64, len: usize) -> IoResult<FaultReadBuf> {
        self.read_now(position, len)
    }

    async fn sync(&self) -> IoResult<()> {
        self.sync_now()
    }

    async fn truncate(&self, len: u64) -> IoResult<()> {
        self.truncate_now(len)
    }

    async fn size(&self) -> IoResult<u64> {
        self.check_live("size")?;
        Ok(self.node.borrow().current.len() as u64)
    }

    fn path(&self) -> &Path {
        &self.path
    }

    async fn close(self) -> IoResult<()> {
        self.check_live("close")
    }
}

impl FaultBuffer {
    /// Wraps `bytes` as a write buffer.
    pub fn from_vec(bytes: Vec<u8>) -> Self {
        Self { bytes }
    }

    /// The bytes, unwrapped.
    pub fn into_vec(self) -> Vec<u8> {
        self.bytes
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// True when the buffer holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

impl AsRef<[u8]> for FaultBuffer {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl AsMut<[u8]> for FaultBuffer {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }
}

impl IoBuffer for FaultBuffer {
    fn trim(&mut self, len: usize) {
        assert!(len <= self.bytes.len(), "trim to {len} beyond length {}", self.bytes.len());
        self.bytes.truncate(len);
    }
}

impl Deref for FaultReadBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

impl AsRef<[u8]> for FaultReadBuf {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// Decrements an armed fault that matches `path`; returns its payload (and disarms it) when it
/// fires.
fn fire<T: Copy>(slot: &mut Option<Armed<T>>, path: &Path) -> Option<T> {
    let armed = slot.as_mut()?;
    if let Some(suffix) = &armed.path_suffix {
        if !path.to_string_lossy().ends_with(suffix.as_str()) {
            return None;
        }
    }
    if armed.remaining > 0 {
        armed.remaining -= 1;
        return None;
    }
    slot.take().map(|armed| armed.payload)
}

/// Writes `bytes` into `target` at `position`, zero-filling any gap past its end.
fn apply_write(target: &mut Vec<u8>, position: usize, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    let end = position + bytes.len();
    if target.len() < end {
        target.resize(end, 0);
    }
    target[position..end].copy_from_slice(bytes);
}

/// The namespace key of a path: its components, without `.` and repeated separators.
fn normalize(path: &Path) -> PathBuf {
    path.components().filter(|component| *component != Component::CurDir).collect()
}

/// The empty path and `/` always exist as directories.
fn is_root(path: &Path) -> bool {
    path.parent().is_none() || path.as_os_str().is_empty()
}

fn os_error(operation: &'static str, path: &Path, code: i32) -> IoError {
    IoError::new(operation, path, std::io::Error::from_raw_os_error(code))
}

/// xorshift64* (Vigna): tiny, seeded, good enough to pick crash outcomes. Not for anything else.
struct Xorshift64Star {
    state: u64,
}

impl Xorshift64Star {
    fn new(seed: u64) -> Self {
        // One splitmix64 step spreads small seeds and keeps the state non-zero.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Self { state: if z == 0 { 0x9E37_79B9_7F4A_7C15 } else { z } }
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..bound` (modulo bias is irrelevant here).
    fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0);
        self.next_u64() % bound
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;

    const A: usize = IO_ALIGNMENT_BYTES;

    fn setup() -> (FaultIo, FaultFile) {
        let io = FaultIo::new();
        block_on(io.create_dir_all(Path::new("/data/p0"))).unwrap();
        let file = block_on(io.open(Path::new("/data/p0/0.log"), true)).unwrap();
        (io, file)
    }

    fn buffer(file: &FaultFile, len: usize, byte: u8) -> FaultBuffer {
        let mut buffer = file.alloc(len);
        buffer.as_mut().fill(byte);
        buffer
    }

    fn write(file: &FaultFile, position: u64, len: usize, byte: u8) -> IoResult<usize> {
        block_on(file.write_at(buffer(file, len, byte), position))
    }

    #[test]
    fn write_read_round_trip() {
        let (_io, file) = setup();
        assert_eq!(file.alignment(), A);
        let mut data = file.alloc(2 * A);
        for (i, byte) in data.as_mut().iter_mut().enumerate() {
            *byte = (i % 251) as u8;
        }
        let expected = data.as_ref().to_vec();
        assert_eq!(block_on(file.write_at(data, 0)).unwrap(), 2 * A);
        assert_eq!(block_on(file.size()).unwrap(), 2 * A as u64);
        assert_eq!(&*block_on(file.read_at(0, 2 * A)).unwrap(), &expected[..]);
        assert_eq!(&*block_on(file.read_at(7, 100)).unwrap(), &expected[7..107]);
        // Short at the end of file, empty past it.
        assert_eq!(block_on(file.read_at(2 * A as u64 - 3, 10)).unwrap().len(), 3);
        assert!(block_on(file.read_at(10 * A as u64, 10)).unwrap().is_empty());
        assert!(block_on(file.read_at(u64::MAX, 10)).unwrap().is_empty());
        // A write past the end zero-fills the gap.
        write(&file, 4 * A as u64, A, 9).unwrap();
        let bytes = block_on(file.read_at(2 * A as u64, 3 * A)).unwrap();
        assert!(bytes[..2 * A].iter().all(|b| *b == 0));
        assert!(bytes[2 * A..].iter().all(|b| *b == 9));
        assert_eq!(file.path(), Path::new("/data/p0/0.log"));
        block_on(file.close()).unwrap();
    }

    #[test]
    fn unaligned_write_rejected() {
        let (io, file) = setup();
        for (position, len) in [(1, A), (0, A - 1), (A as u64 / 2, A)] {
            let error = write(&file, position, len, 1).unwrap_err();
            assert_eq!(error.source.kind(), ErrorKind::InvalidInput);
            assert_eq!(error.operation, "write");
        }
        assert_eq!(io.writes(), 0);
        assert_eq!(io.file_bytes("/data/p0/0.log").unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn crash_clean_keeps_synced_and_drops_unsynced() {
        let (io, file) = setup();
        write(&file, 0, A, 1).unwrap();
        block_on(file.sync()).unwrap();
        write(&file, A as u64, A, 2).unwrap();
        write(&file, 0, A, 3).unwrap();
        assert_eq!(io.pending_ops("/data/p0/0.log"), 2);
        let report = io.crash_clean();
        assert_eq!(report.writes_dropped, 2);
        assert_eq!(report.files, 1);
        assert_eq!(io.file_bytes("/data/p0/0.log").unwrap(), vec![1; A]);
        assert_eq!(io.durable_bytes("/data/p0/0.log").unwrap(), vec![1; A]);
        assert_eq!(io.pending_ops("/data/p0/0.log"), 0);
    }

    #[test]
    fn truncate_is_durable_only_at_sync() {
        let (io, file) = setup();
        write(&file, 0, 2 * A, 1).unwrap();
        block_on(file.sync()).unwrap();
        block_on(file.truncate(A as u64)).unwrap();
        assert_eq!(block_on(file.size()).unwrap(), A as u64);
        io.crash_clean();
        assert_eq!(io.file_bytes("/data/p0/0.log").unwrap().len(), 2 * A);
        let file = block_on(io.open(Path::new("/data/p0/0.log"), false)).unwrap();
        block_on(file.truncate(A as u64)).unwrap();
        block_on(file.sync()).unwrap();
        io.crash_clean();
        assert_eq!(io.file_bytes("/data/p0/0.log").unwrap(), vec![1; A]);
    }

    /// Runs one history (a synced prefix, then unsynced appends and an overwrite) and crashes.
    fn crash_history(seed: u64) -> (CrashReport, Vec<u8>) {
        let (io, file) = setup();
        write(&file, 0, A, 1).unwrap();
        block_on(file.sync()).unwrap();
        for i in 1..6u8 {
            write(&file, i as u64 * A as u64, A, i + 1).unwrap();
        }
        write(&file, 0, A, 9).unwrap();
        let report = io.crash(seed);
        assert_eq!(report.writes_kept + report.writes_torn + report.writes_dropped, 6);
        (report, io.file_bytes("/data/p0/0.log").unwrap())
    }

    #[test]
    fn crash_is_deterministic_per_seed_and_tears_some_writes() {
        for seed in 0..50 {
            assert_eq!(crash_history(seed), crash_history(seed));
        }
        let outcomes: Vec<_> = (0..50).map(crash_history).collect();
        assert!(outcomes.iter().any(|(report, _)| report.writes_torn > 0));
        assert!(outcomes.iter().any(|(report, _)| report.writes_dropped > 0));
        assert!(outcomes.windows(2).any(|pair| pair[0] != pair[1]));
        for (report, bytes) in &outcomes {
            // Every byte comes from the synced image or from one of the writes.
            assert!(bytes.len() <= 6 * A, "{report}");
            assert!(bytes[..A].iter().all(|b| *b == 1 || *b == 9));
            for (i, chunk) in bytes[A..].chunks(A).enumerate() {
                assert!(chunk.iter().all(|b| *b == 0 || *b == i as u8 + 2));
            }
        }
        // A torn write may cut at a byte that is not a sector multiple.
        assert!(outcomes.iter().any(|(_, bytes)| bytes.len() % 512 != 0));
    }

    #[test]
    fn tear_write_lands_prefix_and_errors() {
        let (io, file) = setup();
        let index = block_on(io.open(Path::new("/data/p0/0.index"), true)).unwrap();
        io.tear_write_on(".log", 1, 100);
        write(&index, 0, A, 7).unwrap();
        write(&file, 0, A, 1).unwrap();
        write(&index, A as u64, A, 7).unwrap();
        let error = write(&file, 0, A, 2).unwrap_err();
        assert_eq!(error.source.raw_os_error(), Some(EIO));
        let mut expected = vec![2; 100];
        expected.resize(A, 1);
        assert_eq!(io.file_bytes("/data/p0/0.log").unwrap(), expected);
        assert_eq!(io.file_bytes("/data/p0/0.index").unwrap(), vec![7; 2 * A]);
        // Fired once: the next write lands whole.
        write(&file, 0, A, 3).unwrap();
        assert_eq!(io.writes(), 5);
        // A tear on an extending write leaves the file as long as the prefix.
        io.tear_write(0, 10);
        write(&file, A as u64, A, 4).unwrap_err();
        assert_eq!(block_on(file.size()).unwrap(), A as u64 + 10);
    }

    #[test]
    fn fail_sync_errors_and_leaves_durable_unchanged() {
        let (io, file) = setup();
        write(&file, 0, A, 1).unwrap();
        block_on(file.sync()).unwrap();
        write(&file, A as u64, A, 2).unwrap();
        io.fail_sync(0);
        let error = block_on(file.sync()).unwrap_err();
        assert_eq!(error.source.raw_os_error(), Some(EIO));
        assert_eq!(error.operation, "fdatasync");
        assert_eq!(io.durable_bytes("/data/p0/0.log").unwrap(), vec![1; A]);
        // Like Linux: reads still see the write, a later sync succeeds but does not persist it.
        assert_eq!(io.file_bytes("/data/p0/0.log").unwrap().len(), 2 * A);
        block_on(file.sync()).unwrap();
        assert_eq!(io.durable_bytes("/data/p0/0.log").unwrap(), vec![1; A]);
        assert_eq!(io.syncs(), 3);
        io.crash(1);
        assert_eq!(io.file_bytes("/data/p0/0.log").unwrap(), vec![1; A]);
    }

    #[test]
    fn space_limit_yields_enospc_without_change() {
        let (io, file) = setup();
        io.set_space_limit(Some(2 * A as u64));
        write(&file, 0, 2 * A, 1).unwrap();
        let error = write(&file, 2 * A as u64, A, 2).unwrap_err();
        assert!(error.is_out_of_space());
        assert_eq!(error.source.raw_os_error(), Some(ENOSPC));
        assert_eq!(io.file_bytes("/data/p0/0.log").unwrap(), vec![1; 2 * A]);
        // Overwrites need no space.
        write(&file, 0, A, 3).unwrap();
        io.set_space_limit(None);
        io.fail_writes_with_enospc(true);
        assert!(write(&file, 0, A, 4).unwrap_err().is_out_of_space());
        assert_eq!(io.writes(), 2);
        io.fail_writes_with_enospc(false);
        write(&file, 2 * A as u64, A, 5).unwrap();
        assert_eq!(io.total_bytes(), 3 * A as u64);
    }

    #[test]
    fn stale_handle_after_crash() {
        let (io, file) = setup();
        write(&file, 0, A, 1).unwrap();
        io.crash(7);
        let error = write(&file, 0, A, 1).unwrap_err();
        assert!(error.to_string().contains("stale handle after crash"), "{error}");
        assert!(block_on(file.read_at(0, 1)).is_err());
        assert!(block_on(file.sync()).is_err());
        assert!(block_on(file.size()).is_err());
        let reopened = block_on(io.open(Path::new("/data/p0/0.log"), false)).unwrap();
        block_on(reopened.size()).unwrap();
        assert!(block_on(file.close()).is_err());
    }

    #[test]
    fn namespace_operations() {
        let io = FaultIo::new();
        let missing = block_on(io.open(Path::new("/data/a.log"), false)).unwrap_err();
        assert_eq!(missing.source.kind(), ErrorKind::NotFound);
        // The parent directory must exist.
        assert!(block_on(io.open(Path::new("/data/a.log"), true)).is_err());
        block_on(io.create_dir_all(Path::new("/data/sub"))).unwrap();
        assert!(block_on(io.exists(Path::new("/data"))));
        for name in ["b.log", "a.log", "c.tmp"] {
            let path = Path::new("/data").join(name);
            block_on(io.open(&path, true)).unwrap();
        }
        io.set_file_bytes("/data/c.tmp", b"new");
        io.set_file_bytes("/data/a.log", b"old");
        block_on(io.rename(Path::new("/data/c.tmp"), Path::new("/data/a.log"))).unwrap();
        assert_eq!(io.durable_bytes("/data/a.log").unwrap(), b"new");
        assert!(!block_on(io.exists(Path::new("/data/c.tmp"))));
        let names = block_on(io.list(Path::new("/data"))).unwrap();
        assert_eq!(names, ["a.log", "b.log", "sub"]);
        block_on(io.remove(Path::new("/data/b.log"))).unwrap();
        let error = block_on(io.remove(Path::new("/data/b.log"))).unwrap_err();
        assert_eq!(error.source.kind(), ErrorKind::NotFound);
        assert!(block_on(io.list(Path::new("/nowhere"))).is_err());
        assert!(io.remove_file_now("/data/a.log"));
        assert!(io.list_paths().is_empty());
        // `./` and repeated separators name the same file.
        io.set_file_bytes("x/y.log", b"1");
        assert_eq!(io.file_bytes("./x//y.log").unwrap(), b"1");
    }

    #[test]
    fn open_handle_follows_rename_and_clones_share_state() {
        let (io, file) = setup();
        let clone = io.clone();
        block_on(clone.rename(Path::new("/data/p0/0.log"), Path::new("/data/p0/1.log"))).unwrap();
        write(&file, 0, A, 4).unwrap();
        assert_eq!(io.file_bytes("/data/p0/1.log").unwrap(), vec![4; A]);
        assert_eq!(clone.writes(), 1);
    }
}
