//! Integration tests for strata-attest against real artifacts: an OVMF + swtpm event log
//! captured from a QEMU guest (`tests/fixtures/ovmf-swtpm/`, see its README).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod ovmf;
