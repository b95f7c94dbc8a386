//! Domain newtypes shared by every layer: offsets, timestamps, ids.
//!
//! Runs on any core; plain values with no interior state. Invariant: an [`Offset`] is dense per
//! partition and starts at 0; a [`TimestampUs`] is microseconds since the Unix epoch.

use std::time::{SystemTime, UNIX_EPOCH};

/// A message offset inside one partition: dense, starting at 0.
pub type Offset = u64;

/// Microseconds since the Unix epoch.
pub type TimestampUs = u64;

/// Identifies a partition inside a topic.
pub type PartitionId = u32;

/// The current wall-clock time in microseconds since the Unix epoch (0 if the clock is before it).
pub fn now_us() -> TimestampUs {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as TimestampUs).unwrap_or(0)
}
