//! Signed checkpoints: an Ed25519 signature over a tree size and root, in the
//! style of C2SP signed notes.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::digest::{SHA256, digest};
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

use crate::merkle::Hash;

/// A statement that the log named `origin` had `tree_size` entries with root
/// `root_hash` at `timestamp`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    /// Identifies the log; must be non-empty and contain no newline.
    pub origin: String,
    pub tree_size: u64,
    #[serde(with = "b64_hash")]
    pub root_hash: Hash,
    /// Caller-defined clock (e.g. Unix seconds); must not decrease as the tree grows.
    pub timestamp: i64,
}

impl Checkpoint {
    /// The signed text: `"{origin}\n{tree_size}\n{base64(root)}\n{timestamp}\n"`.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n{}\n",
            self.origin,
            self.tree_size,
            STANDARD.encode(self.root_hash),
            self.timestamp
        )
    }
}

/// A checkpoint with its signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignedCheckpoint {
    pub checkpoint: Checkpoint,
    /// [`key_id`] of the signing key.
    pub key_id: String,
    /// Base64 (standard, padded) Ed25519 signature over [`Checkpoint::body`].
    pub signature: String,
}

/// Key generation or loading failed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("failed to generate an ed25519 key")]
    Generate,
    #[error("invalid ed25519 pkcs#8 v2 key: {0}")]
    InvalidKey(String),
}

/// A signed checkpoint did not verify.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("public key must be 32 bytes, got {0}")]
    PublicKeyLength(usize),
    #[error("checkpoint origin is empty or contains a newline")]
    MalformedOrigin,
    #[error("checkpoint key id {found} does not match the verifying key {expected}")]
    KeyIdMismatch { expected: String, found: String },
    #[error("signature is not valid base64")]
    SignatureEncoding,
    #[error("signature does not verify")]
    BadSignature,
}

/// Signs checkpoints with an Ed25519 key (via ring).
pub struct CheckpointSigner {
    key: Ed25519KeyPair,
}

impl std::fmt::Debug for CheckpointSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointSigner")
            .field("key_id", &self.key_id())
            .finish_non_exhaustive()
    }
}

/// First 8 bytes of SHA-256 of the 32-byte public key, as lowercase hex.
pub fn key_id(public_key: &[u8]) -> String {
    let d = digest(&SHA256, public_key);
    d.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

impl CheckpointSigner {
    /// Generates a fresh key; returns the signer and its PKCS#8 v2 document to persist.
    pub fn generate() -> Result<(Self, Vec<u8>), SignError> {
        let rng = ring::rand::SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| SignError::Generate)?;
        let pkcs8 = doc.as_ref().to_vec();
        let signer = Self::from_pkcs8(&pkcs8)?;
        Ok((signer, pkcs8))
    }

    /// Loads a PKCS#8 v2 Ed25519 key (as produced by [`CheckpointSigner::generate`]).
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, SignError> {
        let key =
            Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|e| SignError::InvalidKey(e.to_string()))?;
        Ok(Self { key })
    }

    /// The raw 32-byte Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.key.public_key().as_ref());
        out
    }

    /// First 8 bytes of SHA-256(public key), hex.
    pub fn key_id(&self) -> String {
        key_id(&self.public_key())
    }

    /// Signs `cp.body()`. A checkpoint whose origin is empty or contains a
    /// newline is signed but will never verify.
    pub fn sign(&self, cp: Checkpoint) -> SignedCheckpoint {
        let sig = self.key.sign(cp.body().as_bytes());
        SignedCheckpoint {
            checkpoint: cp,
            key_id: self.key_id(),
            signature: STANDARD.encode(sig.as_ref()),
        }
    }
}

/// Verifies `signed` against a raw 32-byte Ed25519 public key.
pub fn verify_checkpoint(
    public_key: &[u8],
    signed: &SignedCheckpoint,
) -> Result<(), CheckpointError> {
    if public_key.len() != 32 {
        return Err(CheckpointError::PublicKeyLength(public_key.len()));
    }
    let origin = &signed.checkpoint.origin;
    if origin.is_empty() || origin.contains('\n') {
        return Err(CheckpointError::MalformedOrigin);
    }
    let expected = key_id(public_key);
    if signed.key_id != expected {
        return Err(CheckpointError::KeyIdMismatch {
            expected,
            found: signed.key_id.clone(),
        });
    }
    let sig = STANDARD
        .decode(signed.signature.as_bytes())
        .map_err(|_| CheckpointError::SignatureEncoding)?;
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(signed.checkpoint.body().as_bytes(), &sig)
        .map_err(|_| CheckpointError::BadSignature)
}

mod b64_hash {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    use crate::merkle::Hash;

    pub fn serialize<S: Serializer>(h: &Hash, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(h))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Hash, D::Error> {
        let s = String::deserialize(d)?;
        let bytes = STANDARD.decode(s.as_bytes()).map_err(D::Error::custom)?;
        Hash::try_from(bytes.as_slice()).map_err(|_| {
            D::Error::custom(format!("root hash must be 32 bytes, got {}", bytes.len()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp() -> Checkpoint {
        Checkpoint {
            origin: "strata.example/audit".into(),
            tree_size: 3,
            root_hash: [7u8; 32],
            timestamp: 1_700_000_000,
        }
    }

    #[test]
    fn body_format() {
        assert_eq!(
            cp().body(),
            format!(
                "strata.example/audit\n3\n{}\n1700000000\n",
                STANDARD.encode([7u8; 32])
            )
        );
    }

    #[test]
    fn json_round_trip_uses_base64_root() {
        let json = serde_json::to_value(cp()).unwrap();
        assert_eq!(json["rootHash"], STANDARD.encode([7u8; 32]));
        assert_eq!(json["treeSize"], 3);
        let back: Checkpoint = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, cp());
        let mut bad = json;
        bad["rootHash"] = STANDARD.encode([1u8; 31]).into();
        assert!(serde_json::from_value::<Checkpoint>(bad).is_err());
    }

    #[test]
    fn key_id_is_16_hex_chars() {
        let (s, _) = CheckpointSigner::generate().unwrap();
        let id = s.key_id();
        assert_eq!(id.len(), 16);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(format!("{s:?}").contains(&id));
    }

    #[test]
    fn malformed_origin_never_verifies() {
        let (s, _) = CheckpointSigner::generate().unwrap();
        let mut c = cp();
        c.origin = "a\n3".into();
        let signed = s.sign(c);
        assert_eq!(
            verify_checkpoint(&s.public_key(), &signed),
            Err(CheckpointError::MalformedOrigin)
        );
    }
}
