//! Subject patterns over filter values, as NATS subjects: a value is a `.`-separated list of
//! tokens; in a pattern `*` matches exactly one token and `>` (last token only) one or more.
//!
//! Pure functions, no I/O; the broker runs them on the shard that owns a partition (durable
//! consumer filters, interest checks) and on the controller (work-queue overlap checks).
//! Invariants: [`check_pattern`] accepts exactly the patterns [`matches`] and [`overlap`] are
//! defined for; neither panics on any input.

use std::fmt;

use crate::constants::FILTER_VALUE_BYTES_MAX;

/// Why a pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError(pub String);

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PatternError {}

/// Checks one pattern: 1..=[`FILTER_VALUE_BYTES_MAX`] bytes, no empty token, `>` only as the
/// last token, wildcards only as whole tokens.
pub fn check_pattern(pattern: &str) -> Result<(), PatternError> {
    if pattern.is_empty() || pattern.len() > FILTER_VALUE_BYTES_MAX {
        return Err(PatternError(format!(
            "filter pattern \"{pattern}\" must have 1 to {FILTER_VALUE_BYTES_MAX} bytes"
        )));
    }
    let tokens: Vec<&str> = pattern.split('.').collect();
    for (index, token) in tokens.iter().enumerate() {
        if token.is_empty() {
            return Err(PatternError(format!("filter pattern \"{pattern}\" has an empty token")));
        }
        if *token == ">" && index + 1 != tokens.len() {
            return Err(PatternError(format!("filter pattern \"{pattern}\": `>` must be the last token")));
        }
        if token.len() > 1 && (token.contains('*') || token.contains('>')) {
            return Err(PatternError(format!(
                "filter pattern \"{pattern}\": `*` and `>` must be whole tokens"
            )));
        }
    }
    Ok(())
}

/// Whether `value` (a record's filter value) matches `pattern`.
pub fn matches(pattern: &[u8], value: &[u8]) -> bool {
    let mut pattern = pattern.split(|b| *b == b'.');
    let mut value = value.split(|b| *b == b'.');
    loop {
        match (pattern.next(), value.next()) {
            (Some(b">"), Some(_)) => return true,
            (Some(b"*"), Some(_)) => {}
            (Some(p), Some(v)) if p == v => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether some value matches both patterns (work-queue consumers must not overlap).
pub fn overlap(a: &str, b: &str) -> bool {
    let mut a = a.split('.');
    let mut b = b.split('.');
    loop {
        match (a.next(), b.next()) {
            (Some(">"), Some(_)) | (Some(_), Some(">")) => return true,
            (Some("*"), Some(_)) | (Some(_), Some("*")) => {}
            (Some(x), Some(y)) if x == y => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// A consumer's filter: no patterns matches every record; otherwise a record matches when its
/// filter value matches one pattern (a record without a filter value matches none).
pub fn filter_matches(patterns: &[String], value: Option<&[u8]>) -> bool {
    if patterns.is_empty() {
        return true;
    }
    match value {
        Some(value) => patterns.iter().any(|p| matches(p.as_bytes(), value)),
        None => false,
    }
}

/// Whether two consumer filters (as in [`filter_matches`]) can both match one record.
pub fn filters_overlap(a: &[String], b: &[String]) -> bool {
    if a.is_empty() || b.is_empty() {
        return true;
    }
    a.iter().any(|x| b.iter().any(|y| overlap(x, y)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_like_nats_subjects() {
        assert!(matches(b"events.>", b"events.page_loaded"));
        assert!(matches(b"events.>", b"events.a.b"));
        assert!(!matches(b"events.>", b"events"));
        assert!(matches(b"events.*", b"events.x"));
        assert!(!matches(b"events.*", b"events.x.y"));
        assert!(matches(b"events.mouse_clicked", b"events.mouse_clicked"));
        assert!(!matches(b"events.mouse_clicked", b"events.input_focused"));
        assert!(matches(b"*.x", b"a.x"));
        assert!(!matches(b"a", b"a.b"));
    }

    #[test]
    fn overlap_is_symmetric_and_exact() {
        let cases = [
            ("a.*", "a.b", true),
            ("a.>", "a.b.c", true),
            ("a.b", "a.c", false),
            ("a.*", "b.*", false),
            ("a.*.c", "a.b.*", true),
            ("a.*", "a.b.c", false),
            ("a.>", "a", false),
            ("*.>", "x.y", true),
        ];
        for (a, b, want) in cases {
            assert_eq!(overlap(a, b), want, "{a} / {b}");
            assert_eq!(overlap(b, a), want, "{b} / {a}");
        }
        assert!(filters_overlap(&[], &["x".into()]));
        assert!(!filters_overlap(&["a.b".into()], &["a.c".into()]));
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in ["", "a..b", ">.a", "a*", "a.b>", ".a"] {
            assert!(check_pattern(bad).is_err(), "{bad}");
        }
        for good in ["a", "a.*", "a.>", "*", ">", "events.mouse_clicked"] {
            assert!(check_pattern(good).is_ok(), "{good}");
        }
    }
}
