//! Errors and their stable codes.
//!
//! Messages name the key, version or resource involved and say what to do. None carries key
//! material: the types that hold secrets have no `Display`, and their `Debug` prints
//! `[redacted]`. Caller-supplied associated data is never echoed either.

use serde::{Deserialize, Serialize};

use crate::aad::Purpose;
use crate::envelope::EnvelopeError;
use crate::vault::{KeyType, Operation};

/// A stable, machine-readable code for every way an operation can be refused or fail. The
/// control plane maps these to HTTP statuses; audit records carry them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ErrorCode {
    InvalidArgument,
    KeyNotFound,
    KeyAlreadyExists,
    KeyDeleted,
    KeyNotDeleted,
    KeyDisabled,
    VersionNotFound,
    VersionDisabled,
    KeyExpired,
    WrongKeyType,
    WrongKey,
    PurgeProtected,
    RotationIncomplete,
    MalformedEnvelope,
    AuthenticationFailed,
    CryptoFailure,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "InvalidArgument",
            ErrorCode::KeyNotFound => "KeyNotFound",
            ErrorCode::KeyAlreadyExists => "KeyAlreadyExists",
            ErrorCode::KeyDeleted => "KeyDeleted",
            ErrorCode::KeyNotDeleted => "KeyNotDeleted",
            ErrorCode::KeyDisabled => "KeyDisabled",
            ErrorCode::VersionNotFound => "VersionNotFound",
            ErrorCode::VersionDisabled => "VersionDisabled",
            ErrorCode::KeyExpired => "KeyExpired",
            ErrorCode::WrongKeyType => "WrongKeyType",
            ErrorCode::WrongKey => "WrongKey",
            ErrorCode::PurgeProtected => "PurgeProtected",
            ErrorCode::RotationIncomplete => "RotationIncomplete",
            ErrorCode::MalformedEnvelope => "MalformedEnvelope",
            ErrorCode::AuthenticationFailed => "AuthenticationFailed",
            ErrorCode::CryptoFailure => "CryptoFailure",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KmsError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("key {key} not found")]
    KeyNotFound { key: String },
    #[error("key {key} already exists; rotate it instead, or choose another name")]
    KeyAlreadyExists { key: String },
    #[error("key {key} is soft-deleted; recover it before using or changing it")]
    KeyDeleted { key: String },
    #[error("key {key} is not deleted; delete it first")]
    KeyNotDeleted { key: String },
    #[error("key {key} is disabled; enable it to use it")]
    KeyDisabled { key: String },
    #[error("key {key} has no version {version}")]
    VersionNotFound { key: String, version: u32 },
    #[error("version {version} of key {key} is disabled; enable that version to use it")]
    VersionDisabled { key: String, version: u32 },
    #[error(
        "version {version} of key {key} expired at {at} (Unix seconds); rotate the key for a new version (unwrap, decrypt and verify still work)"
    )]
    KeyExpired { key: String, version: u32, at: i64 },
    #[error("key {key} is of type {kty}, which does not support {operation}")]
    WrongKeyType {
        key: String,
        kty: KeyType,
        operation: Operation,
    },
    #[error("the envelope was sealed under {found}, not {expected}; open it with that key")]
    WrongKey { expected: String, found: String },
    #[error(
        "key {key} is purge-protected until {until} (Unix seconds); it can be recovered, but not purged before then"
    )]
    PurgeProtected { key: String, until: i64 },
    #[error(
        "rotation of key {key} is not finished: {remaining} wrapped key(s) still use version(s) {versions:?}; rewrap them, then finish the rotation"
    )]
    RotationIncomplete {
        key: String,
        versions: Vec<u32>,
        remaining: usize,
    },
    #[error("malformed envelope")]
    MalformedEnvelope(#[from] EnvelopeError),
    #[error(
        "cannot open the {purpose} envelope for {resource:?} under {key}: it was sealed for another resource, purpose, key or version, or it has been altered"
    )]
    AuthenticationFailed {
        purpose: Purpose,
        resource: String,
        key: String,
    },
    #[error("cryptographic operation failed: {0}")]
    Crypto(&'static str),
}

impl KmsError {
    pub fn code(&self) -> ErrorCode {
        match self {
            KmsError::InvalidArgument(_) => ErrorCode::InvalidArgument,
            KmsError::KeyNotFound { .. } => ErrorCode::KeyNotFound,
            KmsError::KeyAlreadyExists { .. } => ErrorCode::KeyAlreadyExists,
            KmsError::KeyDeleted { .. } => ErrorCode::KeyDeleted,
            KmsError::KeyNotDeleted { .. } => ErrorCode::KeyNotDeleted,
            KmsError::KeyDisabled { .. } => ErrorCode::KeyDisabled,
            KmsError::VersionNotFound { .. } => ErrorCode::VersionNotFound,
            KmsError::VersionDisabled { .. } => ErrorCode::VersionDisabled,
            KmsError::KeyExpired { .. } => ErrorCode::KeyExpired,
            KmsError::WrongKeyType { .. } => ErrorCode::WrongKeyType,
            KmsError::WrongKey { .. } => ErrorCode::WrongKey,
            KmsError::PurgeProtected { .. } => ErrorCode::PurgeProtected,
            KmsError::RotationIncomplete { .. } => ErrorCode::RotationIncomplete,
            KmsError::MalformedEnvelope(_) => ErrorCode::MalformedEnvelope,
            KmsError::AuthenticationFailed { .. } => ErrorCode::AuthenticationFailed,
            KmsError::Crypto(_) => ErrorCode::CryptoFailure,
        }
    }
}
