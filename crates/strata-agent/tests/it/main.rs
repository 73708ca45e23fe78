//! Integration tests for the host agent: TPM access against real swtpm instances, and the VM
//! loop against a fake control plane (simulated hypervisor, plus one real QEMU boot).
//!
//! Every TPM test starts its own swtpm host(s); `swtpm` and `swtpm_setup` must be installed
//! (Debian: swtpm, swtpm-tools): the tests panic with that message otherwise, never skip.
//! The QEMU test needs root and the compute packages (`strata_compute::COMPUTE_PACKAGES`).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod support;

mod appraise;
mod credential;
mod ek;
mod pcr;
mod quote;
mod rootseal;
mod vms;
