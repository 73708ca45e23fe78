//! Integration tests for the host agent's TPM access, against real swtpm instances.
//!
//! Every test starts its own swtpm host(s); `swtpm` and `swtpm_setup` must be installed
//! (Debian: swtpm, swtpm-tools): the tests panic with that message otherwise, never skip.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod support;

mod appraise;
mod credential;
mod ek;
mod pcr;
mod quote;
