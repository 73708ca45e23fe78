//! Strata host agent: the registration and attestation loop (`agent`), TPM access (`tpm`),
//! swtpm-backed test hosts (`testhost`) and a
//! measured-boot plan for the boot simulator (`bootplan`).

pub mod agent;
pub mod bootplan;
pub mod devtpm;
pub mod release;
pub mod testhost;
pub mod tpm;
