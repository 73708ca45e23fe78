//! Tamper-evident audit log for Strata: an RFC 6962 / RFC 9162 Merkle tree over
//! audit entries, Ed25519-signed checkpoints, and an offline verifier.
//!
//! Pure computation: no I/O, no clocks. Storage and scheduling of checkpoints
//! are the caller's job.

mod checkpoint;
mod entry;
mod merkle;
mod verify;

pub use checkpoint::{
    Checkpoint, CheckpointError, CheckpointSigner, SignError, SignedCheckpoint, key_id,
    verify_checkpoint,
};
pub use entry::AuditEntry;
pub use merkle::{
    CompactTree, Hash, ProofError, consistency_proof, empty_root, inclusion_proof, leaf_hash,
    node_hash, root, verify_consistency, verify_inclusion,
};
pub use verify::{Problem, StoredEntry, VerifyReport, verify_log};
