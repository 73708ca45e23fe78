//! Integration tests for strata-audit: known-answer vectors, property tests,
//! checkpoint signing and offline log verification.

// Fixture helpers outside `#[test]` functions panic on bad fixtures by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod checkpoints;
mod log;
mod props;
mod vectors;

/// Decodes lowercase hex (test helper).
pub fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Decodes a 32-byte hex hash (test helper).
pub fn h(s: &str) -> strata_audit::Hash {
    unhex(s).try_into().unwrap()
}
