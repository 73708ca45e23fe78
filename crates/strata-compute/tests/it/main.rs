//! Integration tests for the compute layer: real QEMU + OVMF secure boot + swtpm boots of the
//! tiny image, and the simulated driver.
//!
//! The real-VM tests need root-free but host-installed Debian packages
//! (`strata_compute::COMPUTE_PACKAGES`); they panic naming the missing program, never skip.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod support;

mod boot;
mod export;
mod sim;
