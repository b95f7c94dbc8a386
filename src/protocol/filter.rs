//! Filtering by filter value: what a consumer asks for ([`Filter`]), the broker's test of one
//! batch header against it ([`batch_may_match`]), and the exact test of one record
//! ([`Filter::matches`]) the SDK applies afterwards.
//!
//! Pure functions, no I/O and no shared state: the broker runs [`batch_may_match`] on the shard
//! that owns the partition (polls today, push subscriptions later), the SDK runs both tests on
//! the caller's runtime. A filter is built once per request; each value's Bloom bits are
//! precomputed as a 256-bit mask, so testing a batch is a few word ANDs per value and never
//! touches the records (compressed batches are tested by their uncompressed header alike).
//!
//! Invariants:
//! * No false negatives: [`batch_may_match`] returns `false` only when no record of the batch can
//!   match (the Bloom filter never misses a value, and a batch without filter values holds only
//!   unfiltered records). A `true` may be a false positive; [`Filter::matches`] is exact.
//! * A [`Filter`] holds 1..=[`FILTER_VALUES_MAX`] distinct values of at most
//!   [`FILTER_VALUE_BYTES_MAX`] bytes each; [`Filter::new`] refuses anything else with a typed
//!   [`FilterError`] and never panics.

use std::fmt;

use super::batch::{bloom_of, BatchHeader, FILTER_BLOOM_BYTES};
use crate::constants::{FILTER_VALUES_MAX, FILTER_VALUE_BYTES_MAX};

/// The Bloom filter as four little-endian 64-bit words.
type BloomWords = [u64; FILTER_BLOOM_BYTES / 8];

const _: () = assert!(FILTER_BLOOM_BYTES % 8 == 0);

/// What a consumer wants: records whose filter value is one of `values`, and, with
/// `match_unfiltered`, records that carry no filter value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// The wanted values, sorted and distinct.
    values: Vec<Vec<u8>>,
    /// The Bloom bits of each value, in the order of `values`.
    masks: Vec<BloomWords>,
    /// Records without a filter value match too.
    match_unfiltered: bool,
}

/// Why a filter was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterError {
    /// No values: an empty list means "no filtering", which is not a filter.
    Empty,
    /// More than [`FILTER_VALUES_MAX`] values.
    TooManyValues(usize),
    /// Value `index` is longer than [`FILTER_VALUE_BYTES_MAX`].
    ValueTooLong {
        /// Its place in the list.
        index: usize,
        /// Its length in bytes.
        bytes: usize,
    },
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FilterError::Empty => write!(f, "a filter needs at least one value"),
            FilterError::TooManyValues(count) => {
                write!(f, "{count} filter values, at most {FILTER_VALUES_MAX} are allowed")
            }
            FilterError::ValueTooLong { index, bytes } => write!(
                f,
                "filter value {index} is {bytes} bytes long, at most {FILTER_VALUE_BYTES_MAX} are allowed"
            ),
        }
    }
}

impl std::error::Error for FilterError {}

impl Filter {
    /// A filter for `values` (duplicates are dropped); refuses an empty list, too many values or
    /// a value that is too long.
    pub fn new<V: AsRef<[u8]>>(values: &[V], match_unfiltered: bool) -> Result<Filter, FilterError> {
        if values.is_empty() {
            return Err(FilterError::Empty);
        }
        if values.len() > FILTER_VALUES_MAX {
            return Err(FilterError::TooManyValues(values.len()));
        }
        if let Some((index, value)) =
            values.iter().enumerate().find(|(_, value)| value.as_ref().len() > FILTER_VALUE_BYTES_MAX)
        {
            return Err(FilterError::ValueTooLong { index, bytes: value.as_ref().len() });
        }
        let mut sorted: Vec<Vec<u8>> = values.iter().map(|value| value.as_ref().to_vec()).collect();
        sorted.sort_unstable();
        sorted.dedup();
        let masks = sorted.iter().map(|value| words(&bloom_of(value))).collect();
        debug_assert!(!sorted.is_empty() && sorted.len() <= FILTER_VALUES_MAX);
        Ok(Filter { values: sorted, masks, match_unfiltered })
    }

    /// The wanted values, sorted and distinct.
    pub fn values(&self) -> &[Vec<u8>] {
        &self.values
    }

    /// Whether records without a filter value match.
    pub fn match_unfiltered(&self) -> bool {
        self.match_unfiltered
    }

    /// The exact test of one record by its filter value.
    pub fn matches(&self, value: Option<&[u8]>) -> bool {
        match value {
            None => self.match_unfiltered,
            Some(value) => self.values.binary_search_by(|wanted| wanted.as_slice().cmp(value)).is_ok(),
        }
    }

    /// Whether a batch with this Bloom filter may hold one of the values.
    fn bloom_may_hold(&self, bloom: &[u8; FILTER_BLOOM_BYTES]) -> bool {
        let bloom = words(bloom);
        self.masks.iter().any(|mask| mask.iter().zip(&bloom).all(|(m, b)| b & m == *m))
    }
}

/// Whether a batch may hold a record `filter` wants, judged by its header alone (works the same
/// for compressed batches). `false` is definite: the broker skips such a batch.
///
/// - A batch without filter values (attribute bit 3 clear) holds only unfiltered records: it
///   matches exactly when `match_unfiltered` is set.
/// - A batch with filter values matches when its Bloom filter may hold one of the values. With
///   `match_unfiltered` it always matches: the format does not say whether some of its records
///   lack a value, and those would be wanted.
pub fn batch_may_match(header: &BatchHeader, filter: &Filter) -> bool {
    if !header.has_filter_values() {
        return filter.match_unfiltered;
    }
    filter.match_unfiltered || filter.bloom_may_hold(&header.filter_bloom)
}

fn words(bloom: &[u8; FILTER_BLOOM_BYTES]) -> BloomWords {
    let mut out = [0_u64; FILTER_BLOOM_BYTES / 8];
    for (word, chunk) in out.iter_mut().zip(bloom.chunks_exact(8)) {
        let mut bytes = [0_u8; 8];
        bytes.copy_from_slice(chunk);
        *word = u64::from_le_bytes(bytes);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::batch::{BatchBuilder, Compression, Message};

    /// A batch whose records carry these filter values (`None`: no value).
    fn header_of(values: &[Option<&str>], compression: Compression) -> BatchHeader {
        let mut builder = BatchBuilder::new(0, 0);
        builder.set_compression(compression);
        let payload = vec![b'x'; 512];
        for value in values {
            let message = Message { filter_value: value.map(str::as_bytes), ..Message::payload(&payload) };
            builder.push(&message).expect("push");
        }
        let bytes = builder.finish().expect("finish");
        let header = BatchHeader::decode(&bytes).expect("header");
        assert_eq!(header.is_compressed(), compression != Compression::None, "compression took");
        header
    }

    fn filter(values: &[&str], match_unfiltered: bool) -> Filter {
        Filter::new(values, match_unfiltered).expect("filter")
    }

    #[test]
    fn a_batch_is_skipped_only_when_its_bloom_rules_out_every_value() {
        let eu = header_of(&[Some("eu"), Some("eu")], Compression::None);
        let us = header_of(&[Some("us")], Compression::None);
        // The chosen values do not collide in the Bloom filter (otherwise the test proves nothing).
        assert!(!us.might_contain_filter(b"eu") && !eu.might_contain_filter(b"us"));
        assert!(!eu.might_contain_filter(b"apac") && !us.might_contain_filter(b"apac"));
        assert!(batch_may_match(&eu, &filter(&["eu"], false)));
        assert!(!batch_may_match(&us, &filter(&["eu"], false)));
        assert!(batch_may_match(&us, &filter(&["eu", "us"], false)));
        assert!(!batch_may_match(&eu, &filter(&["apac", "us"], false)));
        let mixed = header_of(&[Some("eu"), Some("us")], Compression::None);
        assert!(batch_may_match(&mixed, &filter(&["us"], false)));
        assert!(!batch_may_match(&mixed, &filter(&["apac"], false)));
    }

    #[test]
    fn batches_without_values_match_only_unfiltered_consumers() {
        let plain = header_of(&[None, None], Compression::None);
        assert!(!plain.has_filter_values());
        assert!(!batch_may_match(&plain, &filter(&["eu"], false)));
        assert!(batch_may_match(&plain, &filter(&["eu"], true)));
        // A batch with values may also hold records without one: never skipped for
        // match_unfiltered.
        let partly = header_of(&[Some("us"), None], Compression::None);
        assert!(!batch_may_match(&partly, &filter(&["eu"], false)));
        assert!(batch_may_match(&partly, &filter(&["eu"], true)));
    }

    #[test]
    fn compressed_batches_are_judged_by_their_header() {
        for compression in [Compression::Lz4, Compression::Zstd] {
            let us = header_of(&[Some("us"); 8], compression);
            assert!(!batch_may_match(&us, &filter(&["eu"], false)), "{compression:?}");
            assert!(batch_may_match(&us, &filter(&["us"], false)), "{compression:?}");
            let plain = header_of(&[None; 8], compression);
            assert!(!batch_may_match(&plain, &filter(&["us"], false)), "{compression:?}");
        }
    }

    #[test]
    fn masks_are_the_documented_bloom_bits() {
        // docs/format.md: the empty string sets bits 37, 10 and 239, "f" sets 217, 38 and 115.
        let filter = filter(&["", "f"], false);
        let bits = |mask: &BloomWords| -> Vec<u32> {
            (0..256).filter(|bit| mask[bit / 64] & (1 << (bit % 64)) != 0).map(|bit| bit as u32).collect()
        };
        assert_eq!(bits(&filter.masks[0]), [10, 37, 239]);
        assert_eq!(bits(&filter.masks[1]), [38, 115, 217]);
    }

    #[test]
    fn records_match_exactly() {
        let filter = filter(&["us", "eu", "eu"], false);
        assert_eq!(filter.values(), [b"eu".to_vec(), b"us".to_vec()]);
        assert!(filter.matches(Some(b"eu")) && filter.matches(Some(b"us")));
        assert!(!filter.matches(Some(b"e")) && !filter.matches(Some(b"")) && !filter.matches(None));
        let unfiltered = Filter::new(&["eu"], true).expect("filter");
        assert!(unfiltered.matches(None) && unfiltered.match_unfiltered());
    }

    #[test]
    fn limits_are_refused_with_a_reason() {
        let none: [&str; 0] = [];
        assert_eq!(Filter::new(&none, false), Err(FilterError::Empty));
        let many: Vec<String> = (0..=FILTER_VALUES_MAX).map(|i| format!("v{i}")).collect();
        assert_eq!(Filter::new(&many, false), Err(FilterError::TooManyValues(FILTER_VALUES_MAX + 1)));
        assert!(Filter::new(&many[..FILTER_VALUES_MAX], false).is_ok());
        let long = "x".repeat(FILTER_VALUE_BYTES_MAX + 1);
        let error = Filter::new(&["ok", long.as_str()], false).expect_err("too long");
        assert_eq!(error, FilterError::ValueTooLong { index: 1, bytes: FILTER_VALUE_BYTES_MAX + 1 });
        assert!(error.to_string().contains("filter value 1"));
        assert!(Filter::new(&["x".repeat(FILTER_VALUE_BYTES_MAX)], false).is_ok());
    }
}
