//! Integration tests for strata-netpol: data-driven flow-verify cases over one fixture,
//! validation messages, effective rules and reachability snapshots, and property tests
//! (classifier == linear scan, reachability == flow verify, the JSON parser never panics).

// clippy.toml only allows unwrap/expect inside #[test] fns; fixtures here are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cases;
mod effective;
mod props;
mod reach;
mod support;
mod validation;
