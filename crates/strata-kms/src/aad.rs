//! Associated data: what binds every sealed key or ciphertext to the thing it protects.
//!
//! AES-GCM authenticates the associated data without storing it, so the envelope stays small and
//! the binding costs nothing to store: to open an envelope, the caller must name the same
//! purpose, wrapping key (id and version) and protected resource that sealing named. A DEK sealed
//! for disk A, presented for disk B (or under another subscription's key, another key version, or
//! as another kind of secret), fails authentication.
//!
//! The encoding is canonical and injective: a fixed domain tag, then every field as a
//! big-endian `u64` length followed by its bytes, in a fixed order:
//!
//! ```text
//! field("strata-kms/aad") field([format]) field(purpose) field(key id)
//! field(key version as u32 BE) field(resource) field(caller context)
//! ```
//!
//! Changing this encoding breaks every stored envelope: a new encoding needs a new envelope
//! format version. `tests/it/aad.rs` pins the bytes.

use serde::{Deserialize, Serialize};

use crate::envelope::{FORMAT_V1, KeyRef};

const DOMAIN: &[u8] = b"strata-kms/aad";

/// What an envelope holds, and so which key hierarchy edge sealed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Purpose {
    /// A subscription's platform-managed key, sealed by the root key. Resource: the PMK version's
    /// id (`{subscription}/platformKey/versions/{n}`).
    PlatformKey,
    /// A disk's data key, sealed by a platform-managed key. Resource: the disk's resource id.
    DataKey,
    /// A key vault key version's material, sealed by a platform-managed key or the root key.
    /// Resource: the vault key version's id (`{key id}/versions/{n}`).
    VaultKeyMaterial,
    /// A caller's key (a customer-managed disk's DEK) sealed by a vault key (`wrapKey`).
    /// Resource: what the wrapped key protects (the disk's resource id).
    WrapKey,
    /// Caller data sealed by a vault key (`encrypt`). Resource is empty; the caller's associated
    /// data is the context.
    Encrypt,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::PlatformKey => "platform-key",
            Purpose::DataKey => "data-key",
            Purpose::VaultKeyMaterial => "vault-key-material",
            Purpose::WrapKey => "wrap-key",
            Purpose::Encrypt => "encrypt",
        }
    }
}

impl std::fmt::Display for Purpose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The canonical associated data for sealing under `wrapping` (format version 1).
pub fn associated_data(
    purpose: Purpose,
    wrapping: &KeyRef,
    resource: &str,
    context: &[u8],
) -> Vec<u8> {
    let purpose = purpose.as_str().as_bytes();
    let len = 7 * 8
        + DOMAIN.len()
        + 1
        + purpose.len()
        + wrapping.id.len()
        + 4
        + resource.len()
        + context.len();
    let mut out = Vec::with_capacity(len);
    field(&mut out, DOMAIN);
    field(&mut out, &[FORMAT_V1]);
    field(&mut out, purpose);
    field(&mut out, wrapping.id.as_bytes());
    field(&mut out, &wrapping.version.to_be_bytes());
    field(&mut out, resource.as_bytes());
    field(&mut out, context);
    out
}

fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
    out.extend_from_slice(bytes);
}
