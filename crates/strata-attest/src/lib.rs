//! Strata's TPM attestation verifier: a pure crate (no I/O, no clock, no TPM library) that
//! turns the bytes a host agent sends into a [`Verdict`].
//!
//! | module | what |
//! |---|---|
//! | [`tpm`] | `TPMS_ATTEST`, `TPMT_SIGNATURE`, `TPM2B_PUBLIC` parsers/encoders, key names, signature verification |
//! | [`eventlog`] | the TCG crypto-agile event log: parser (owned, and in place: [`eventlog::LogView`]), [`eventlog::LogBuilder`], [`eventlog::replay`], typed UEFI event data |
//! | [`policy`] | [`policy::ReferencePolicy`]: what a trusted host's boot looks like |
//! | [`appraise`](mod@appraise) | [`appraise()`]: quote + log + agent measurements → [`Verdict`] |
//! | [`credential`] | TPM2_MakeCredential in software (registration: prove the AK lives in the EK's TPM) |
//! | [`bundle`] | Ed25519-signed, versioned bundles of reference policies |
//! | [`round`] | the qualifying data binding a round's nonce and the agent's TLS key |
//!
//! Decisions are values: [`appraise()`] never returns an error; malformed input is a
//! [`Failure`] like any other.

pub mod appraise;
pub mod bundle;
pub mod credential;
pub mod eventlog;
mod hash;
pub mod policy;
pub mod round;
pub mod tpm;
mod wire;

#[cfg(test)]
pub(crate) mod testkit;

pub use appraise::{
    AgentMeasurement, BootApplication, BootSummary, Evidence, Failure, Verdict, appraise,
};
pub use hash::{Digest, HashAlg, InlineDigest, constant_time_eq, hex};
pub use tpm::ClockInfo;
pub use wire::WireError;
