//! strata-kms integration tests: one binary, one module per concern.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod aad;
mod common;
mod envelope;
mod hierarchy;
mod props;
mod provider;
mod rotation;
mod secrets;
mod vault;
