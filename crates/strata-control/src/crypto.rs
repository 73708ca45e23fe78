//! Sealing secrets at rest: AES-256-GCM under the control plane's root key, with associated
//! data that binds each sealed value to what it protects (so a sealed TOTP secret cannot be
//! swapped onto another user's record).
//!
//! The root key comes from a `strata_kms::RootKeyProvider` (`setup::root_key`): sealed to the
//! host's TPM in `DATA_DIR/root.key.sealed`, or a 0600 file `DATA_DIR/root.key` with a warning.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the root key must be exactly 32 bytes")]
    BadKey,
    #[error("the random number generator failed")]
    Rng,
    #[error("a sealed value is corrupt or was sealed under another key or for another record")]
    Open,
}

/// The root key, held only in memory once loaded.
pub struct RootKey {
    key: LessSafeKey,
    /// The same root secret as the top of the key hierarchy (`strata_kms`: per-subscription
    /// platform keys → per-disk data keys); HKDF-separated from `key`.
    kms: strata_kms::RootKey,
}

impl std::fmt::Debug for RootKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RootKey(<redacted>)")
    }
}

impl RootKey {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SealError> {
        let unbound = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| SealError::BadKey)?;
        let secret = strata_kms::RootSecret::from_bytes(bytes).map_err(|_| SealError::BadKey)?;
        let kms = strata_kms::RootKey::from_secret(&secret).map_err(|_| SealError::BadKey)?;
        Ok(Self {
            key: LessSafeKey::new(unbound),
            kms,
        })
    }

    /// The key hierarchy's root (wraps the per-subscription platform keys).
    pub fn kms(&self) -> &strata_kms::RootKey {
        &self.kms
    }

    pub fn generate_bytes() -> Result<[u8; 32], SealError> {
        let mut b = [0u8; 32];
        SystemRandom::new()
            .fill(&mut b)
            .map_err(|_| SealError::Rng)?;
        Ok(b)
    }

    /// Encrypts `plaintext`, bound to `aad`. Output: base64(nonce || ciphertext || tag).
    pub fn seal(&self, aad: &str, plaintext: &[u8]) -> Result<String, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| SealError::Rng)?;
        let mut buf = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad.as_bytes()),
                &mut buf,
            )
            .map_err(|_| SealError::Rng)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(B64.encode(out))
    }

    pub fn open(&self, aad: &str, sealed: &str) -> Result<Vec<u8>, SealError> {
        let raw = B64.decode(sealed).map_err(|_| SealError::Open)?;
        if raw.len() < NONCE_LEN {
            return Err(SealError::Open);
        }
        let (nonce, ct) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Open)?;
        let mut buf = ct.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(aad.as_bytes()), &mut buf)
            .map_err(|_| SealError::Open)?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trip_and_binding() {
        let k = RootKey::from_bytes(&RootKey::generate_bytes().unwrap()).unwrap();
        let s = k.seal("user/alice/totp", b"secret").unwrap();
        assert_eq!(k.open("user/alice/totp", &s).unwrap(), b"secret");
        assert!(k.open("user/bob/totp", &s).is_err(), "bound to its record");
        let other = RootKey::from_bytes(&RootKey::generate_bytes().unwrap()).unwrap();
        assert!(
            other.open("user/alice/totp", &s).is_err(),
            "bound to its key"
        );
        assert!(k.open("x", "not base64!").is_err());
    }
}
