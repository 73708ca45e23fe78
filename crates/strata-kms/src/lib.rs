#![doc = include_str!("../README.md")]

pub mod aad;
pub mod envelope;
pub mod error;
pub mod hierarchy;
pub mod provider;
pub mod secret;
pub mod vault;

pub use aad::{Purpose, associated_data};
pub use envelope::{Envelope, EnvelopeError, KeyRef};
pub use error::{ErrorCode, KmsError};
pub use hierarchy::{PlatformKey, RootKey, WrappedPlatformKey, WrappingKey, platform_key_id};
pub use provider::{
    FileRootKey, LoadedRoot, ProviderError, RootKeyProvider, RootKeySealer, SealedFileRootKey,
    SecurityWarning,
};
pub use secret::{DataKey, Plaintext, RootSecret};
pub use vault::{
    AuditRecord, Audited, KeyType, KeyVersion, Operation, Outcome, RotationPolicy, Signature,
    Vault, VaultKey,
};
