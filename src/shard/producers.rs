//! The named-producer table of one partition: who may write, which batches are new, which are
//! duplicates and where the duplicates were stored.
//!
//! What it owns: [`ProducerTable`], producer id → epoch, last stored sequence and the offsets of
//! its last [`RECENT_BATCHES`] batches ([`ProducerState`]), plus what is admitted but not yet
//! stored. It decides every batch of a produce request before anything is appended
//! ([`ProducerTable::admit`]) and learns the outcome afterwards ([`ProducerTable::settle`]).
//!
//! Which core: the partition's owner shard, synchronously (no await inside), so the decisions
//! of one request and the order of the log's appends cannot interleave with another request's.
//!
//! Invariants:
//! * a batch is *named* when its header has a producer id and an epoch above 0; anonymous and
//!   version-1 batches are never looked at;
//! * a named batch is appended only when its first sequence is above every sequence stored or
//!   admitted for its producer, so sequences stored on the partition increase strictly;
//! * `last_sequence` only covers batches that were stored (a failed append is forgotten);
//! * the table holds at most `max_entries` producers; the least recently active one without
//!   batches in flight is evicted to make room, and producers idle past the expiry are dropped
//!   by [`ProducerTable::expire`]; both count as evictions.

use std::collections::{BTreeMap, HashMap};

use super::error::{BrokerError, BrokerResult};
use crate::protocol::batch::BatchHeader;
use crate::protocol::messages::{BatchAck, Status};
pub use crate::storage::producers::{Placed, ProducerState, RECENT_BATCHES};

/// The producer fields of a named batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamedBatch {
    /// Producer id.
    pub id: u64,
    /// Its epoch.
    pub epoch: u32,
    /// Sequence of the first record.
    pub first_sequence: u64,
    /// Sequence of the last record.
    pub last_sequence: u64,
}

impl NamedBatch {
    /// The producer fields of `header`, when the batch is named.
    pub fn of(header: &BatchHeader) -> Option<Self> {
        (header.producer_id != 0 && header.producer_epoch != 0).then_some(NamedBatch {
            id: header.producer_id,
            epoch: header.producer_epoch,
            first_sequence: header.first_sequence,
            last_sequence: header.last_sequence,
        })
    }
}

/// What happens to one batch of a produce request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Append it.
    Append,
    /// Already stored: answer this acknowledgement and write nothing.
    Duplicate(BatchAck),
}

/// One producer in memory: its stored state and what is admitted beyond it.
#[derive(Debug)]
struct Live {
    state: ProducerState,
    /// The highest last sequence admitted (stored or in flight).
    admitted: Option<u64>,
    /// Named batches of this producer being appended now.
    in_flight: u32,
}

impl Live {
    fn resync(&mut self) {
        if self.in_flight == 0 {
            self.admitted = self.state.last_sequence;
        }
    }
}

/// The producer table of one partition. See the module documentation.
#[derive(Debug)]
pub struct ProducerTable {
    entries: HashMap<u64, Live>,
    max_entries: usize,
    expiry_us: u64,
    /// Entries dropped by the bound or the expiry since start.
    pub evictions: u64,
    /// Duplicate batches acknowledged since start.
    pub duplicates: u64,
    /// Batches stored or entries changed since the last snapshot.
    pub dirty: u64,
}

impl ProducerTable {
    /// An empty table holding at most `max_entries` producers idle for at most `expiry_us`.
    pub fn new(max_entries: usize, expiry_us: u64) -> Self {
        Self {
            entries: HashMap::new(),
            max_entries: max_entries.max(1),
            expiry_us,
            evictions: 0,
            duplicates: 0,
            dirty: 0,
        }
    }

    /// Installs recovered producers.
    pub fn restore(&mut self, entries: impl IntoIterator<Item = ProducerState>) {
        for state in entries {
            let admitted = state.last_sequence;
            self.entries.insert(state.id, Live { state, admitted, in_flight: 0 });
        }
    }

    /// Applies a batch found in the log while rebuilding (creates the producer when a batch is
    /// all that is left of it).
    pub fn replay(&mut self, batch: NamedBatch, placed: Placed) {
        let live = self.entries.entry(batch.id).or_insert_with(|| Live {
            state: ProducerState::new(batch.id, "", batch.epoch, placed.append_timestamp_us),
            admitted: None,
            in_flight: 0,
        });
        live.state.apply(batch.epoch, placed);
        live.admitted = live.state.last_sequence;
    }

    /// Number of producers.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no producer is known.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The stored state of producer `id`.
    pub fn get(&self, id: u64) -> Option<&ProducerState> {
        self.entries.get(&id).map(|live| &live.state)
    }

    /// Every producer's stored state.
    pub fn states(&self) -> impl ExactSizeIterator<Item = &ProducerState> + '_ {
        self.entries.values().map(|live| &live.state)
    }

    /// Named batches in flight on this partition.
    pub fn in_flight(&self) -> u32 {
        self.entries.values().map(|live| live.in_flight).sum()
    }

    /// Decides every batch of a request (all or nothing: one refused batch refuses the request
    /// and admits nothing), then admits the batches to append.
    pub fn admit(&mut self, batches: &[Option<NamedBatch>], now_us: u64) -> BrokerResult<Vec<Decision>> {
        // Admitted sequences as this request's earlier batches leave them.
        let mut shadow: BTreeMap<u64, Option<u64>> = BTreeMap::new();
        let mut decisions = Vec::with_capacity(batches.len());
        for (index, batch) in batches.iter().enumerate() {
            let Some(batch) = batch else {
                decisions.push(Decision::Append);
                continue;
            };
            let live = self.entries.get(&batch.id).ok_or_else(|| {
                BrokerError::new(
                    Status::UnknownProducer,
                    format!(
                        "batch {index}: producer id {:#x} is not declared on this partition (never declared, deleted or expired): declare it again",
                        batch.id
                    ),
                )
            })?;
            if batch.epoch < live.state.epoch {
                return Err(BrokerError::new(
                    Status::ProducerFenced,
                    format!(
                        "batch {index}: producer \"{}\" epoch {} was fenced by epoch {} (another instance declared the same name)",
                        live.state.name, batch.epoch, live.state.epoch
                    ),
                ));
            }
            let stored = live.state.last_sequence;
            let admitted = *shadow.entry(batch.id).or_insert(live.admitted);
            if stored.is_some_and(|last| batch.last_sequence <= last) {
                decisions.push(Decision::Duplicate(duplicate_ack(&live.state, batch.last_sequence)));
                continue;
            }
            if stored.is_some_and(|last| batch.first_sequence <= last) {
                return Err(BrokerError::new(
                    Status::SequenceStraddle,
                    format!(
                        "batch {index}: sequences {}..={} straddle the last stored sequence {} of producer \"{}\": send only new sequences",
                        batch.first_sequence,
                        batch.last_sequence,
                        stored.unwrap_or(0),
                        live.state.name
                    ),
                ));
            }
            if admitted.is_some_and(|last| batch.first_sequence <= last) {
                return Err(BrokerError::new(
                    Status::TooManyInFlight,
                    format!(
                        "batch {index}: sequences {}..={} of producer \"{}\" overlap a batch being stored now: retry once it is answered",
                        batch.first_sequence, batch.last_sequence, live.state.name
                    ),
                ));
            }
            shadow.insert(batch.id, Some(batch.last_sequence));
            decisions.push(Decision::Append);
        }
        for (batch, decision) in batches.iter().zip(&decisions) {
            match (batch, decision) {
                (Some(batch), Decision::Append) => {
                    let Some(live) = self.entries.get_mut(&batch.id) else { continue };
                    live.in_flight += 1;
                    live.admitted = Some(batch.last_sequence);
                    live.state.epoch = live.state.epoch.max(batch.epoch);
                    live.state.last_active_us = now_us;
                }
                (_, Decision::Duplicate(_)) => self.duplicates += 1,
                _ => {}
            }
        }
        Ok(decisions)
    }

    /// Settles an admitted batch: `Some` where it was stored, `None` when its append failed.
    pub fn settle(&mut self, batch: &NamedBatch, placed: Option<Placed>) {
        let Some(live) = self.entries.get_mut(&batch.id) else { return };
        live.in_flight = live.in_flight.saturating_sub(1);
        if let Some(placed) = placed {
            live.state.apply(batch.epoch, placed);
            self.dirty += 1;
        }
        live.resync();
    }

    /// A declaration: sets producer `id`'s epoch (creating it), making room when full.
    /// Fails when another name already hashes to `id`.
    pub fn declare(&mut self, id: u64, name: &str, epoch: u32, now_us: u64) -> BrokerResult<&ProducerState> {
        if let Some(live) = self.entries.get(&id) {
            if !live.state.name.is_empty() && live.state.name != name {
                return Err(BrokerError::new(
                    Status::InvalidName,
                    format!(
                        "producer names \"{name}\" and \"{}\" share the id {id:#x}: rename one",
                        live.state.name
                    ),
                ));
            }
        } else {
            self.make_room();
        }
        self.dirty += 1;
        let live = self.entries.entry(id).or_insert_with(|| Live {
            state: ProducerState::new(id, name, epoch, now_us),
            admitted: None,
            in_flight: 0,
        });
        live.state.name = name.to_string();
        live.state.epoch = live.state.epoch.max(epoch);
        live.state.last_active_us = now_us;
        Ok(&live.state)
    }

    /// Forgets producer `id`; false when it was not known.
    pub fn remove(&mut self, id: u64) -> bool {
        self.dirty += 1;
        self.entries.remove(&id).is_some()
    }

    /// Drops producers idle for longer than the expiry (none with batches in flight).
    pub fn expire(&mut self, now_us: u64) -> usize {
        let before = self.entries.len();
        let expiry = self.expiry_us;
        self.entries.retain(|_, live| {
            live.in_flight > 0 || now_us.saturating_sub(live.state.last_active_us) <= expiry
        });
        let dropped = before - self.entries.len();
        self.evictions += dropped as u64;
        self.dirty += dropped as u64;
        dropped
    }

    /// Evicts least recently active producers until one more fits.
    fn make_room(&mut self) {
        while self.entries.len() >= self.max_entries {
            let oldest = self
                .entries
                .iter()
                .filter(|(_, live)| live.in_flight == 0)
                .min_by_key(|(_, live)| live.state.last_active_us)
                .map(|(id, _)| *id);
            let Some(oldest) = oldest else { return };
            self.entries.remove(&oldest);
            self.evictions += 1;
        }
    }
}

/// The acknowledgement of a duplicate: the original offsets when still remembered.
fn duplicate_ack(state: &ProducerState, last_sequence: u64) -> BatchAck {
    match state.recent.iter().find(|placed| placed.last_sequence == last_sequence) {
        Some(placed) => BatchAck {
            base_offset: placed.base_offset,
            last_offset: placed.last_offset,
            append_timestamp_us: placed.append_timestamp_us,
            duplicate: true,
        },
        None => BatchAck {
            base_offset: BatchAck::UNKNOWN,
            last_offset: BatchAck::UNKNOWN,
            append_timestamp_us: BatchAck::UNKNOWN,
            duplicate: true,
        },
    }
}

/// The producer id of a name: FNV-1a 64 of its bytes, never 0 (0 means anonymous). Every
/// shard and every restart derive the same id, so no registry is needed.
pub fn producer_id(name: &str) -> u64 {
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    hash.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(id: u64, epoch: u32, first: u64, last: u64) -> Option<NamedBatch> {
        Some(NamedBatch { id, epoch, first_sequence: first, last_sequence: last })
    }

    fn store(table: &mut ProducerTable, batch: Option<NamedBatch>, base: u64) {
        let batch = batch.unwrap();
        assert_eq!(table.admit(&[Some(batch)], 1).unwrap(), vec![Decision::Append]);
        let count = batch.last_sequence - batch.first_sequence;
        let placed = Placed {
            last_sequence: batch.last_sequence,
            base_offset: base,
            last_offset: base + count,
            append_timestamp_us: 5,
        };
        table.settle(&batch, Some(placed));
    }

    fn status(result: BrokerResult<Vec<Decision>>) -> Status {
        result.unwrap_err().status
    }

    #[test]
    fn duplicates_straddles_fencing_and_unknown_producers() {
        let mut table = ProducerTable::new(10, u64::MAX);
        assert_eq!(status(table.admit(&[named(7, 1, 0, 3)], 0)), Status::UnknownProducer);
        table.declare(7, "seven", 1, 0).unwrap();
        store(&mut table, named(7, 1, 0, 3), 100);
        store(&mut table, named(7, 1, 10, 12), 104); // a gap is allowed
        let decisions = table.admit(&[named(7, 1, 10, 12), named(7, 1, 0, 3), None], 0).unwrap();
        let Decision::Duplicate(ack) = decisions[0] else { panic!("{decisions:?}") };
        assert_eq!((ack.base_offset, ack.last_offset, ack.duplicate), (104, 106, true));
        assert!(matches!(decisions[1], Decision::Duplicate(ack) if ack.base_offset == 100));
        assert_eq!(decisions[2], Decision::Append);
        assert_eq!(status(table.admit(&[named(7, 1, 12, 14)], 0)), Status::SequenceStraddle);
        table.declare(7, "seven", 2, 0).unwrap();
        assert_eq!(status(table.admit(&[named(7, 1, 20, 20)], 0)), Status::ProducerFenced);
        assert_eq!(table.duplicates, 2);
        assert_eq!(
            status(table.admit(&[named(7, 2, 20, 20), named(7, 2, 20, 21)], 0)),
            Status::TooManyInFlight
        );
        assert_eq!(table.get(7).unwrap().last_sequence, Some(12), "a refused request admits nothing");
    }

    #[test]
    fn a_failed_append_is_forgotten_and_old_duplicates_lose_their_offsets() {
        let mut table = ProducerTable::new(10, u64::MAX);
        table.declare(1, "one", 1, 0).unwrap();
        let first = named(1, 1, 0, 0).unwrap();
        table.admit(&[Some(first)], 0).unwrap();
        assert_eq!(status(table.admit(&[Some(first)], 0)), Status::TooManyInFlight);
        table.settle(&first, None);
        assert_eq!(table.get(1).unwrap().last_sequence, None);
        for i in 0..7 {
            store(&mut table, named(1, 1, i, i), i);
        }
        let decisions = table.admit(&[named(1, 1, 0, 0), named(1, 1, 6, 6)], 0).unwrap();
        assert!(matches!(decisions[0], Decision::Duplicate(ack) if !ack.has_offsets()));
        assert!(matches!(decisions[1], Decision::Duplicate(ack) if ack.base_offset == 6));
    }

    #[test]
    fn bounded_by_count_and_expiry() {
        let mut table = ProducerTable::new(2, 100);
        table.declare(1, "a", 1, 10).unwrap();
        table.declare(2, "b", 1, 20).unwrap();
        table.declare(3, "c", 1, 30).unwrap();
        assert!(table.get(1).is_none(), "the least recently active producer is evicted");
        assert_eq!(table.evictions, 1);
        assert_eq!(table.expire(125), 1);
        assert!(table.get(3).is_some());
        assert_eq!(table.evictions, 2);
        assert_eq!(status(table.declare(3, "other", 1, 0).map(|_| Vec::new())), Status::InvalidName);
    }

    #[test]
    fn ids_are_stable_and_never_zero() {
        assert_eq!(producer_id("orders-1"), producer_id("orders-1"));
        assert_ne!(producer_id("orders-1"), producer_id("orders-2"));
        assert_ne!(producer_id(""), 0);
    }
}
