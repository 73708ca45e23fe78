//! The key hierarchy: root key → per-subscription platform-managed key (PMK) → per-disk data
//! keys (DEK).
//!
//! ```text
//! RootSecret (32 bytes, from a RootKeyProvider: file today, TPM-sealed later)
//!   │ HKDF-SHA256 (domain-separated: the same root.key file may also serve strata-control)
//!   ▼
//! RootKey          id "strata-root/<key check value>", version 1
//!   │ seals (Purpose::PlatformKey, resource = PMK version id)
//!   ▼
//! PlatformKey      id "{subscription}/platformKey", version n      stored as WrappedPlatformKey
//!   │ seals (Purpose::DataKey, resource = disk id)       │ seals (Purpose::VaultKeyMaterial)
//!   ▼                                                    ▼
//! DataKey (one per disk)  stored as Envelope        vault key versions (crate::vault)
//! ```
//!
//! Every seal is AES-256-GCM with a fresh random 96-bit nonce, so one key may seal at most
//! 2^32 envelopes (NIST SP 800-38D); a PMK seals one envelope per disk and per rewrap, far below.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::aad::{Purpose, associated_data};
use crate::envelope::{Envelope, KeyRef, MAX_KEY_ID_LEN, NONCE_LEN};
use crate::error::KmsError;
use crate::secret::{DataKey, KEY_LEN, RootSecret};

const ROOT_SALT: &[u8] = b"strata-kms root key v1";
const ROOT_KEK_INFO: &[u8] = b"strata-kms key-encryption key";
const ROOT_KCV_INFO: &[u8] = b"strata-kms key check value";

/// A key that seals other keys: the root key, a platform-managed key, or (inside the vault) an
/// opened vault key version. Opaque; [`RootKey`] and [`PlatformKey`] dereference to it so vault
/// operations accept either.
pub struct WrappingKey {
    key_ref: KeyRef,
    key: LessSafeKey,
}

impl std::fmt::Debug for WrappingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WrappingKey")
            .field("key_ref", &self.key_ref)
            .field("key", &"[redacted]")
            .finish()
    }
}

impl WrappingKey {
    pub(crate) fn new(key_ref: KeyRef, secret: &[u8]) -> Result<Self, KmsError> {
        check_key_ref(&key_ref)?;
        let unbound = UnboundKey::new(&AES_256_GCM, secret)
            .map_err(|_| KmsError::Crypto("an AES-256 key is 32 bytes"))?;
        Ok(WrappingKey {
            key_ref,
            key: LessSafeKey::new(unbound),
        })
    }

    /// The key's id and version, as written into every envelope it seals.
    pub fn key_ref(&self) -> &KeyRef {
        &self.key_ref
    }

    /// Seals `plaintext` bound to (purpose, this key's ref, resource, context).
    pub(crate) fn seal(
        &self,
        purpose: Purpose,
        resource: &str,
        context: &[u8],
        plaintext: &[u8],
    ) -> Result<Envelope, KmsError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| KmsError::Crypto("the system random generator failed"))?;
        let aad = associated_data(purpose, &self.key_ref, resource, context);
        let mut sealed = Vec::with_capacity(plaintext.len() + AES_256_GCM.tag_len());
        sealed.extend_from_slice(plaintext);
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad),
                &mut sealed,
            )
            .map_err(|_| KmsError::Crypto("AES-GCM seal refused the input length"))?;
        Ok(Envelope::new(self.key_ref.clone(), nonce, sealed))
    }

    /// Opens an envelope this key sealed for (purpose, resource, context).
    pub(crate) fn open(
        &self,
        purpose: Purpose,
        resource: &str,
        context: &[u8],
        envelope: &Envelope,
    ) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        if envelope.key() != &self.key_ref {
            return Err(KmsError::WrongKey {
                expected: self.key_ref.to_string(),
                found: envelope.key().to_string(),
            });
        }
        let aad = associated_data(purpose, &self.key_ref, resource, context);
        let mut buf = Zeroizing::new(envelope.sealed().to_vec());
        let len = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(envelope.nonce()),
                Aad::from(&aad),
                &mut buf,
            )
            .map_err(|_| KmsError::AuthenticationFailed {
                purpose,
                resource: resource.to_owned(),
                key: self.key_ref.to_string(),
            })?
            .len();
        buf.truncate(len);
        Ok(buf)
    }

    /// Opens a 32-byte key.
    pub(crate) fn open_key(
        &self,
        purpose: Purpose,
        resource: &str,
        envelope: &Envelope,
    ) -> Result<DataKey, KmsError> {
        let bytes = self.open(purpose, resource, &[], envelope)?;
        if bytes.len() != KEY_LEN {
            // Authenticated, so this is our own bug or a purpose mix-up, not tampering.
            return Err(KmsError::Crypto("the sealed key is not 32 bytes"));
        }
        DataKey::from_bytes(&bytes)
    }
}

fn check_key_ref(key_ref: &KeyRef) -> Result<(), KmsError> {
    if key_ref.id.is_empty() || key_ref.id.len() > MAX_KEY_ID_LEN {
        return Err(KmsError::InvalidArgument(format!(
            "key id must be 1 to {MAX_KEY_ID_LEN} bytes, got {}",
            key_ref.id.len()
        )));
    }
    if key_ref.version == 0 {
        return Err(KmsError::InvalidArgument(format!(
            "key {} has version 0; versions start at 1",
            key_ref.id
        )));
    }
    Ok(())
}

/// The root of the hierarchy. Seals platform-managed keys (and, where a vault has no
/// subscription key, vault key material).
#[derive(Debug)]
pub struct RootKey {
    kek: WrappingKey,
}

struct OutputLen(usize);

impl hkdf::KeyType for OutputLen {
    fn len(&self) -> usize {
        self.0
    }
}

impl RootKey {
    /// Derives the root key-encryption key from the provider's secret. Its id carries a key
    /// check value (8 bytes of HKDF output, not the key), so an envelope from another root says
    /// so instead of failing as tampered.
    pub fn from_secret(secret: &RootSecret) -> Result<Self, KmsError> {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, ROOT_SALT).extract(secret.expose_secret());
        let mut kek = Zeroizing::new([0u8; KEY_LEN]);
        let mut kcv = [0u8; 8];
        prk.expand(&[ROOT_KEK_INFO], OutputLen(KEY_LEN))
            .and_then(|okm| okm.fill(&mut kek[..]))
            .and_then(|()| prk.expand(&[ROOT_KCV_INFO], OutputLen(kcv.len())))
            .and_then(|okm| okm.fill(&mut kcv))
            .map_err(|_| KmsError::Crypto("HKDF output length"))?;
        let id = format!("strata-root/{}", hex(&kcv));
        Ok(RootKey {
            kek: WrappingKey::new(KeyRef::new(id, 1), &kek[..])?,
        })
    }

    /// Creates version `version` of `subscription`'s platform-managed key. Persist the returned
    /// [`WrappedPlatformKey`] before sealing anything under the key.
    pub fn create_platform_key(
        &self,
        subscription: &str,
        version: u32,
    ) -> Result<(PlatformKey, WrappedPlatformKey), KmsError> {
        let key_ref = KeyRef::new(platform_key_id(subscription), version);
        check_key_ref(&key_ref)?;
        let secret = DataKey::generate()?;
        let wrapped = self.kek.seal(
            Purpose::PlatformKey,
            &key_ref.to_string(),
            &[],
            secret.expose_secret(),
        )?;
        let pmk = PlatformKey {
            kek: WrappingKey::new(key_ref.clone(), secret.expose_secret())?,
        };
        Ok((
            pmk,
            WrappedPlatformKey {
                key: key_ref,
                wrapped,
            },
        ))
    }

    /// Opens `subscription`'s platform-managed key. Refuses a key stored for another
    /// subscription, and (by authentication) one whose stored version was altered.
    pub fn open_platform_key(
        &self,
        subscription: &str,
        stored: &WrappedPlatformKey,
    ) -> Result<PlatformKey, KmsError> {
        let expected = platform_key_id(subscription);
        if stored.key.id != expected {
            return Err(KmsError::WrongKey {
                expected,
                found: stored.key.id.clone(),
            });
        }
        let secret = self.kek.open_key(
            Purpose::PlatformKey,
            &stored.key.to_string(),
            &stored.wrapped,
        )?;
        Ok(PlatformKey {
            kek: WrappingKey::new(stored.key.clone(), secret.expose_secret())?,
        })
    }

    /// Root rotation: reseals a stored platform key under `self`, opening it with `previous`.
    /// Idempotent: a key already under `self` is returned unchanged.
    pub fn rewrap_platform_key(
        &self,
        previous: &RootKey,
        subscription: &str,
        stored: &WrappedPlatformKey,
    ) -> Result<WrappedPlatformKey, KmsError> {
        let expected = platform_key_id(subscription);
        if stored.key.id != expected {
            return Err(KmsError::WrongKey {
                expected,
                found: stored.key.id.clone(),
            });
        }
        if stored.wrapped.key() == self.key_ref() {
            return Ok(stored.clone());
        }
        let secret = previous.kek.open_key(
            Purpose::PlatformKey,
            &stored.key.to_string(),
            &stored.wrapped,
        )?;
        let wrapped = self.kek.seal(
            Purpose::PlatformKey,
            &stored.key.to_string(),
            &[],
            secret.expose_secret(),
        )?;
        Ok(WrappedPlatformKey {
            key: stored.key.clone(),
            wrapped,
        })
    }
}

impl std::ops::Deref for RootKey {
    type Target = WrappingKey;
    fn deref(&self) -> &WrappingKey {
        &self.kek
    }
}

/// The id of a subscription's platform-managed key. `subscription` is the subscription's
/// canonical resource id (`/subscriptions/{id}`, as `strata_types::ResourceId::key` gives it).
pub fn platform_key_id(subscription: &str) -> String {
    format!("{subscription}/platformKey")
}

/// A platform-managed key as stored: its id and version, and its material sealed by the root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrappedPlatformKey {
    pub key: KeyRef,
    pub wrapped: Envelope,
}

/// A subscription's platform-managed key, open: seals the data keys of the subscription's
/// disks (those without a customer key) and its vaults' key material.
#[derive(Debug)]
pub struct PlatformKey {
    kek: WrappingKey,
}

impl PlatformKey {
    /// A fresh data key for `resource` (a disk's canonical resource id) and its envelope.
    /// Persist the envelope before using the key.
    pub fn create_data_key(&self, resource: &str) -> Result<(DataKey, Envelope), KmsError> {
        let dek = DataKey::generate()?;
        let envelope = self.wrap_data_key(resource, &dek)?;
        Ok((dek, envelope))
    }

    pub fn wrap_data_key(&self, resource: &str, key: &DataKey) -> Result<Envelope, KmsError> {
        self.kek
            .seal(Purpose::DataKey, resource, &[], key.expose_secret())
    }

    /// Opens `resource`'s data key. Fails if the envelope was sealed for another resource,
    /// under another key or version, or altered.
    pub fn unwrap_data_key(
        &self,
        resource: &str,
        envelope: &Envelope,
    ) -> Result<DataKey, KmsError> {
        self.kek.open_key(Purpose::DataKey, resource, envelope)
    }

    /// PMK rotation: reseals a data key under `self`, opening it with `previous`. Idempotent: an
    /// envelope already under `self` is returned unchanged.
    pub fn rewrap_data_key(
        &self,
        previous: &PlatformKey,
        resource: &str,
        envelope: &Envelope,
    ) -> Result<Envelope, KmsError> {
        if envelope.key() == self.key_ref() {
            return Ok(envelope.clone());
        }
        let dek = previous.unwrap_data_key(resource, envelope)?;
        self.wrap_data_key(resource, &dek)
    }
}

impl std::ops::Deref for PlatformKey {
    type Target = WrappingKey;
    fn deref(&self) -> &WrappingKey {
        &self.kek
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
