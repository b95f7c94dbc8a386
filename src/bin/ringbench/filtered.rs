//! The filtered-consumer measurement (`--consume-filter`): consumers poll with filter values,
//! count the wanted messages exactly and the batch bytes that reached them; the run reads the
//! broker's `filtered_bytes` counter before and after, so the report can say which share of the
//! stream the consumers were sent (the target: one value of 10 evenly used, homogeneous
//! batches, at most 12% of the unfiltered stream's bytes).
//!
//! Runs on the main thread (stats) and on consumer actors' threads (counting). Invariant: the
//! share is received / (received + skipped), both over the whole run, so the warm-up cannot
//! bias it; the broker's counter is server-wide, so a run must be the only filtered reader.

use std::fmt::Write as _;

use std::time::Duration;

use ringbroker::client::{Client, ClientError, Polled};
use ringbroker::protocol::filter::Filter;
use ringbroker::protocol::messages::{Kind, PollRequest, PollResponse};
use serde_json::json;

use crate::report::{ActorResult, Role};
use crate::{current_thread_runtime, Settings};

/// The exact filter of `--consume-filter` (none without it).
pub fn exact(settings: &Settings) -> Result<Option<Filter>, String> {
    if settings.consume_filter.is_empty() {
        return Ok(None);
    }
    Filter::new(&settings.consume_filter, false)
        .map(Some)
        .map_err(|error| format!("--consume-filter: {error}"))
}

/// A filtered poll, and the batch bytes it brought as they came over the wire (a `Polled`
/// holds compressed batches inflated).
pub async fn poll(client: &Client, request: &PollRequest) -> Result<(Polled, u64), ClientError> {
    let timeout =
        client.connection_string().options.timeout + Duration::from_millis(u64::from(request.max_wait_ms));
    let (response, payload) =
        client.request_with_timeout::<_, PollResponse>(Kind::Poll, request, &[], timeout).await?;
    let wire = payload.len() as u64;
    Ok((Polled::new(response, payload)?, wire))
}

/// How many records of a poll answer the filter wants.
pub fn wanted(polled: &Polled, filter: &Filter) -> Result<u64, ClientError> {
    let mut count = 0;
    for record in polled.records() {
        count += u64::from(filter.matches(record?.record.filter_value));
    }
    Ok(count)
}

/// The broker's count of bytes filtered polls skipped, since it started.
pub fn skipped_bytes(settings: &Settings) -> Result<u64, String> {
    let runtime = current_thread_runtime()?;
    runtime.block_on(async {
        let client = settings.connect().await.map_err(|error| format!("{}: {error}", settings.server))?;
        let stats = client.stats(None).await.map_err(|error| format!("stats: {error}"))?;
        Ok(stats.server.filtered_bytes)
    })
}

/// What the filtered consumers were sent, against what the broker skipped for them.
pub struct Tally {
    received_bytes: u64,
    skipped_bytes: u64,
}

impl Tally {
    /// The consumers' received bytes over the whole run, and the broker's skipped bytes.
    pub fn of(actors: &[ActorResult], skipped_bytes: u64) -> Tally {
        let consumers = actors.iter().filter(|actor| actor.role == Role::Consumer);
        Tally { received_bytes: consumers.map(|actor| actor.wire_bytes_all).sum(), skipped_bytes }
    }

    /// The share of the stream's bytes the consumers were sent (0 when nothing was read).
    fn share(&self) -> f64 {
        let total = self.received_bytes + self.skipped_bytes;
        if total == 0 {
            return 0.0;
        }
        self.received_bytes as f64 / total as f64
    }

    /// One report line.
    pub fn line(&self, settings: &Settings) -> String {
        let mut line = String::new();
        let _ = writeln!(
            line,
            "filter ({}): consumers were sent {} bytes, the broker skipped {} bytes: {:.1}% of the stream's bytes (whole run)",
            settings.consume_filter.join(","),
            self.received_bytes,
            self.skipped_bytes,
            100.0 * self.share()
        );
        line
    }

    /// The same in the JSON report.
    pub fn json(&self) -> serde_json::Value {
        json!({
            "received_bytes": self.received_bytes,
            "skipped_bytes": self.skipped_bytes,
            "received_share": self.share(),
        })
    }
}
