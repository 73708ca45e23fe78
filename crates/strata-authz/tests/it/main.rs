//! Integration tests for strata-authz: data-driven decision cases, PIM, validation, the built-in
//! role × action matrix snapshot, and property tests.

// clippy.toml only allows unwrap/expect inside #[test] fns; fixtures here are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cases;
mod matrix;
mod pim;
mod props;
mod serde_shape;
mod support;
mod validation;
