//! Key vaults: customer-managed keys as a pure, serializable state machine.
//!
//! A [`Vault`] is a document the control plane stores as it stores any resource. It holds no
//! plaintext: each key version's material is sealed by the subscription's platform-managed key
//! (or the root key), which every operation that needs the material takes as an argument and
//! opens for that one operation. Time is an argument (`now`, Unix seconds).
//!
//! Every operation returns an [`Audited`] value: the [`AuditRecord`] (operation, key, version,
//! outcome with a stable [`ErrorCode`] and reason) beside the result. A refused operation leaves
//! the vault unchanged.
//!
//! ```text
//! key lifecycle                                  per-key rotation (AES keys)
//!
//!   create_key                                     Stable { current = n }
//!       │                                               │ begin_rotation: version n+1 created,
//!       ▼          disable                              │ current = n+1, pending = {from, to}
//!    Enabled ───────────────▶ Disabled                  ▼            ── PERSIST THE VAULT ──
//!       ▲  ◀─────────────────    │                  Rotating ◀─┐
//!       │        enable          │                      │  │   │ rewrap(envelope): idempotent;
//!       │ delete         delete  │                      │  └───┘ persist each new envelope
//!       ▼                        ▼                      │ finish_rotation(envelopes still stored):
//!    SoftDeleted (enabled flag kept) ── recover ──▶     │ refused while any uses a `from` version
//!       │ purge: refused while purge protection         ▼
//!       │ is on and the retention has not elapsed   Stable { current = n+1 }, `from` disabled
//!       ▼
//!    gone (material dropped)
//! ```
//!
//! Disabled keys (and disabled versions) refuse wrap, unwrap, encrypt, decrypt, rewrap, sign
//! and verify with [`ErrorCode::KeyDisabled`] / [`ErrorCode::VersionDisabled`]; enabling them
//! again restores every operation. Soft-deleted keys refuse everything but `recover` and `purge`.
//!
//! Crash safety of rotation: `begin_rotation` only adds a version, and old versions stay
//! enabled until `finish_rotation` has been shown (by the caller's list of stored envelopes)
//! that nothing uses them. A crash before the vault is persisted loses an unused version; a
//! crash during rewrapping leaves some envelopes under the old version and some under the new,
//! both openable; `begin_rotation` on a vault with a pending rotation resumes it rather than
//! adding another version. EC keys rotate in one step: nothing is wrapped under them, and old
//! versions stay enabled so old signatures still verify.

use std::collections::BTreeMap;

use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _,
    UnparsedPublicKey,
};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::aad::Purpose;
use crate::envelope::{Envelope, KeyRef};
use crate::error::{ErrorCode, KmsError};
use crate::hierarchy::WrappingKey;
use crate::secret::{DataKey, Plaintext};

pub const MIN_RETENTION_DAYS: u32 = 7;
pub const MAX_RETENTION_DAYS: u32 = 90;
const DAY: i64 = 86_400;

/// What a vault key is and what it can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KeyType {
    /// AES-256-GCM (Azure's `oct-HSM`, without the HSM): wrapKey, unwrapKey, encrypt, decrypt.
    #[serde(rename = "oct")]
    Oct,
    /// ECDSA P-256 with SHA-256 (Azure's `EC` / `P-256`): sign, verify.
    #[serde(rename = "EC")]
    Ec,
}

impl KeyType {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::Oct => "oct",
            KeyType::Ec => "EC",
        }
    }
}

impl std::fmt::Display for KeyType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every operation on a vault, as it appears in audit records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Operation {
    CreateKey,
    BeginRotation,
    FinishRotation,
    Rewrap,
    RewrapMaterial,
    Enable,
    Disable,
    EnableVersion,
    DisableVersion,
    SetRotationPolicy,
    Delete,
    Recover,
    Purge,
    WrapKey,
    UnwrapKey,
    Encrypt,
    Decrypt,
    Sign,
    Verify,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::CreateKey => "createKey",
            Operation::BeginRotation => "beginRotation",
            Operation::FinishRotation => "finishRotation",
            Operation::Rewrap => "rewrap",
            Operation::RewrapMaterial => "rewrapMaterial",
            Operation::Enable => "enable",
            Operation::Disable => "disable",
            Operation::EnableVersion => "enableVersion",
            Operation::DisableVersion => "disableVersion",
            Operation::SetRotationPolicy => "setRotationPolicy",
            Operation::Delete => "delete",
            Operation::Recover => "recover",
            Operation::Purge => "purge",
            Operation::WrapKey => "wrapKey",
            Operation::UnwrapKey => "unwrapKey",
            Operation::Encrypt => "encrypt",
            Operation::Decrypt => "decrypt",
            Operation::Sign => "sign",
            Operation::Verify => "verify",
        }
    }
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "camelCase")]
pub enum Outcome {
    Success,
    Failure { code: ErrorCode, reason: String },
}

/// What happened, for the audit log. Never contains key material or caller data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    pub operation: Operation,
    /// The key's id (`{vault id}/keys/{name}`), or the vault's id for vault-wide operations.
    pub key: String,
    /// The key version the operation used or would have used, when known.
    pub version: Option<u32>,
    pub outcome: Outcome,
}

/// An operation's result and its audit record. Audit the record whatever the result.
#[must_use = "audit the record, then use the result"]
#[derive(Debug)]
pub struct Audited<T> {
    pub record: AuditRecord,
    pub result: Result<T, KmsError>,
}

impl<T> Audited<T> {
    pub fn into_result(self) -> Result<T, KmsError> {
        self.result
    }

    pub fn code(&self) -> Option<ErrorCode> {
        self.result.as_ref().err().map(KmsError::code)
    }
}

/// When a key rotates and when its versions expire: Azure Key Vault's rotation policy
/// (`lifetimeActions` with a `Rotate` action triggered by `timeAfterCreate` or
/// `timeBeforeExpiry`, a `Notify` action, and `attributes.expiryTime`), in seconds. The
/// control plane's key sweep rotates keys when [`VaultKey::rotation_due`] says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RotationPolicy {
    /// Rotate once the current version is this old (`timeAfterCreate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotate_after_secs: Option<i64>,
    /// Rotate this long before the current version expires (`timeBeforeExpiry`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotate_before_expiry_secs: Option<i64>,
    /// Each new version expires this long after it is created (`expiryTime`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry_secs: Option<i64>,
    /// `Notify` this long before expiry: the control plane's key sweep writes one
    /// `nearExpiry` audit entry per version once it is that close.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_before_expiry_secs: Option<i64>,
}

impl RotationPolicy {
    /// Rotate every `secs` (a `timeAfterCreate` trigger, no expiry).
    pub fn every(secs: i64) -> Self {
        RotationPolicy {
            rotate_after_secs: Some(secs),
            ..Default::default()
        }
    }

    /// When a version created at `created` expires under this policy.
    pub fn expires(&self, created: i64) -> Option<i64> {
        self.expiry_secs.map(|e| created.saturating_add(e))
    }

    /// Whether a version created at `created` (expiring at `expires`) is due for rotation at
    /// `now`: it is at least `timeAfterCreate` old, or within `timeBeforeExpiry` of expiring.
    pub fn due(&self, created: i64, expires: Option<i64>, now: i64) -> bool {
        let aged = self
            .rotate_after_secs
            .is_some_and(|a| now >= created.saturating_add(a));
        let expiring = match (self.rotate_before_expiry_secs, expires) {
            (Some(before), Some(at)) => now >= at.saturating_sub(before),
            _ => false,
        };
        aged || expiring
    }
}

/// A rotation that has created its new version but may not have rewrapped everything yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingRotation {
    /// Versions that were enabled when the rotation began; disabled when it finishes.
    pub from: Vec<u32>,
    pub to: u32,
    pub started: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deletion {
    pub deleted_at: i64,
    pub scheduled_purge_at: i64,
}

/// One version of a vault key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyVersion {
    version: u32,
    created: i64,
    enabled: bool,
    /// The key material (32 AES bytes, or an EC private key as PKCS#8), sealed with
    /// [`Purpose::VaultKeyMaterial`] for this version's id.
    material: Envelope,
    /// When this version expires (its key's `expiryTime` at creation), if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires: Option<i64>,
    /// EC keys: the uncompressed SEC1 public point.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "b64_opt")]
    public_key: Option<Vec<u8>>,
}

impl KeyVersion {
    pub fn version(&self) -> u32 {
        self.version
    }
    pub fn created(&self) -> i64 {
        self.created
    }
    pub fn enabled(&self) -> bool {
        self.enabled
    }
    pub fn expires(&self) -> Option<i64> {
        self.expires
    }
    /// The key that seals this version's material.
    pub fn sealed_by(&self) -> &KeyRef {
        self.material.key()
    }
    pub fn public_key(&self) -> Option<&[u8]> {
        self.public_key.as_deref()
    }
}

/// A customer-managed key and its versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VaultKey {
    name: String,
    kty: KeyType,
    enabled: bool,
    current_version: u32,
    /// Ascending; versions are never removed (only the whole key is purged).
    versions: Vec<KeyVersion>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rotation_policy: Option<RotationPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pending_rotation: Option<PendingRotation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    deleted: Option<Deletion>,
}

impl VaultKey {
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn kty(&self) -> KeyType {
        self.kty
    }
    pub fn enabled(&self) -> bool {
        self.enabled
    }
    pub fn current_version(&self) -> u32 {
        self.current_version
    }
    pub fn versions(&self) -> &[KeyVersion] {
        &self.versions
    }
    pub fn version(&self, version: u32) -> Option<&KeyVersion> {
        self.versions.iter().find(|v| v.version == version)
    }
    pub fn rotation_policy(&self) -> Option<RotationPolicy> {
        self.rotation_policy
    }
    pub fn pending_rotation(&self) -> Option<&PendingRotation> {
        self.pending_rotation.as_ref()
    }
    pub fn deleted(&self) -> Option<Deletion> {
        self.deleted
    }

    /// Whether the rotation policy asks for a new version at `now`: a live, enabled key with a
    /// policy, no rotation in progress, and a current version the policy finds due (old
    /// enough, or close enough to its expiry). A disabled key is not rotated: it is locked on
    /// purpose, and a new version would be as locked.
    pub fn rotation_due(&self, now: i64) -> bool {
        let Some(policy) = self.rotation_policy else {
            return false;
        };
        if self.deleted.is_some() || self.pending_rotation.is_some() || !self.enabled {
            return false;
        }
        self.version(self.current_version)
            .is_some_and(|v| policy.due(v.created, v.expires, now))
    }

    fn version_mut(&mut self, version: u32) -> Option<&mut KeyVersion> {
        self.versions.iter_mut().find(|v| v.version == version)
    }
}

/// A signature and the key version that made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    pub key: KeyRef,
    /// ECDSA P-256 `r || s`, 64 bytes (the JWS ES256 form).
    #[serde(with = "b64")]
    pub value: Vec<u8>,
}

/// A key vault: its settings and keys. See the module docs for the state machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Vault {
    id: String,
    soft_delete_retention_days: u32,
    purge_protection: bool,
    keys: BTreeMap<String, VaultKey>,
}

/// A key's id inside a vault.
pub fn key_id(vault_id: &str, name: &str) -> String {
    format!("{vault_id}/keys/{name}")
}

fn version_ref(vault_id: &str, name: &str, version: u32) -> KeyRef {
    KeyRef::new(key_id(vault_id, name), version)
}

fn validate_name(name: &str) -> Result<(), KmsError> {
    let ok = (1..=127).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(KmsError::InvalidArgument(format!(
            "key name {name:?} is invalid: use 1 to 127 letters, digits and hyphens"
        )))
    }
}

fn rng_error(_: ring::error::Unspecified) -> KmsError {
    KmsError::Crypto("the system random generator failed")
}

impl Vault {
    /// A new, empty vault. `id` is the vault's canonical resource id; it is bound into every
    /// key id, so a key's envelopes cannot be opened through another vault.
    pub fn new(
        id: impl Into<String>,
        soft_delete_retention_days: u32,
        purge_protection: bool,
    ) -> Result<Self, KmsError> {
        let id = id.into();
        if id.is_empty() {
            return Err(KmsError::InvalidArgument("vault id is empty".to_owned()));
        }
        if !(MIN_RETENTION_DAYS..=MAX_RETENTION_DAYS).contains(&soft_delete_retention_days) {
            return Err(KmsError::InvalidArgument(format!(
                "soft-delete retention must be {MIN_RETENTION_DAYS} to {MAX_RETENTION_DAYS} days, got {soft_delete_retention_days}"
            )));
        }
        Ok(Vault {
            id,
            soft_delete_retention_days,
            purge_protection,
            keys: BTreeMap::new(),
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }
    pub fn soft_delete_retention_days(&self) -> u32 {
        self.soft_delete_retention_days
    }
    pub fn purge_protection(&self) -> bool {
        self.purge_protection
    }
    /// Purge protection can be turned on, never off (as in Azure Key Vault).
    pub fn enable_purge_protection(&mut self) {
        self.purge_protection = true;
    }
    pub fn key(&self, name: &str) -> Option<&VaultKey> {
        self.keys.get(name)
    }
    pub fn keys(&self) -> impl Iterator<Item = &VaultKey> {
        self.keys.values()
    }
    pub fn key_id(&self, name: &str) -> String {
        key_id(&self.id, name)
    }
    /// Names of the keys whose rotation policy asks for a new version at `now`.
    pub fn keys_due(&self, now: i64) -> Vec<String> {
        self.keys
            .values()
            .filter(|k| k.rotation_due(now))
            .map(|k| k.name.clone())
            .collect()
    }
    /// Names of the keys with a rotation begun and not finished (resume these after a restart).
    pub fn pending_rotations(&self) -> Vec<String> {
        self.keys
            .values()
            .filter(|k| k.pending_rotation.is_some() && k.deleted.is_none())
            .map(|k| k.name.clone())
            .collect()
    }

    fn record<T>(
        &self,
        operation: Operation,
        key: String,
        version: Option<u32>,
        result: Result<T, KmsError>,
    ) -> Audited<T> {
        let outcome = match &result {
            Ok(_) => Outcome::Success,
            Err(e) => Outcome::Failure {
                code: e.code(),
                reason: e.to_string(),
            },
        };
        Audited {
            record: AuditRecord {
                operation,
                key,
                version,
                outcome,
            },
            result,
        }
    }

    fn audit<T>(
        &self,
        operation: Operation,
        name: &str,
        version: Option<u32>,
        result: Result<T, KmsError>,
    ) -> Audited<T> {
        self.record(operation, self.key_id(name), version, result)
    }

    fn existing(&self, name: &str) -> Result<&VaultKey, KmsError> {
        self.keys.get(name).ok_or_else(|| KmsError::KeyNotFound {
            key: self.key_id(name),
        })
    }

    fn live(&self, name: &str) -> Result<&VaultKey, KmsError> {
        let key = self.existing(name)?;
        if key.deleted.is_some() {
            return Err(KmsError::KeyDeleted {
                key: self.key_id(name),
            });
        }
        Ok(key)
    }

    fn live_mut(&mut self, name: &str) -> Result<&mut VaultKey, KmsError> {
        self.live(name)?;
        let id = self.key_id(name);
        self.keys
            .get_mut(name)
            .ok_or(KmsError::KeyNotFound { key: id })
    }

    /// A live, enabled key and an enabled version of it (the current one if `version` is
    /// `None`) of the type `operation` needs.
    fn usable(
        &self,
        name: &str,
        version: Option<u32>,
        operation: Operation,
        kty: KeyType,
    ) -> Result<(&VaultKey, &KeyVersion), KmsError> {
        let key = self.live(name)?;
        if !key.enabled {
            return Err(KmsError::KeyDisabled {
                key: self.key_id(name),
            });
        }
        let version = version.unwrap_or(key.current_version);
        let v = key.version(version).ok_or(KmsError::VersionNotFound {
            key: self.key_id(name),
            version,
        })?;
        if !v.enabled {
            return Err(KmsError::VersionDisabled {
                key: self.key_id(name),
                version,
            });
        }
        if key.kty != kty {
            return Err(KmsError::WrongKeyType {
                key: self.key_id(name),
                kty: key.kty,
                operation,
            });
        }
        Ok((key, v))
    }

    /// The version an envelope names, refusing envelopes sealed by another key.
    fn envelope_version(&self, name: &str, envelope: &Envelope) -> Result<u32, KmsError> {
        self.key_ref_version(name, envelope.key())
    }

    /// The version `key` names, refusing references to another key.
    fn key_ref_version(&self, name: &str, key: &KeyRef) -> Result<u32, KmsError> {
        let id = self.key_id(name);
        if key.id != id {
            return Err(KmsError::WrongKey {
                expected: id,
                found: key.to_string(),
            });
        }
        Ok(key.version)
    }

    fn open_material(
        &self,
        kek: &WrappingKey,
        name: &str,
        v: &KeyVersion,
    ) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        let resource = version_ref(&self.id, name, v.version).to_string();
        kek.open(Purpose::VaultKeyMaterial, &resource, &[], &v.material)
    }

    fn open_aes(
        &self,
        kek: &WrappingKey,
        name: &str,
        v: &KeyVersion,
    ) -> Result<WrappingKey, KmsError> {
        let material = self.open_material(kek, name, v)?;
        WrappingKey::new(version_ref(&self.id, name, v.version), &material)
    }

    fn new_version(
        &self,
        kek: &WrappingKey,
        name: &str,
        kty: KeyType,
        version: u32,
        now: i64,
        policy: Option<RotationPolicy>,
    ) -> Result<KeyVersion, KmsError> {
        let rng = SystemRandom::new();
        let (material, public_key) = match kty {
            KeyType::Oct => {
                let key = DataKey::generate()?;
                (Zeroizing::new(key.expose_secret().to_vec()), None)
            }
            KeyType::Ec => {
                let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map_err(rng_error)?;
                let pkcs8 = Zeroizing::new(pkcs8.as_ref().to_vec());
                let pair =
                    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8[..], &rng)
                        .map_err(|_| KmsError::Crypto("ring rejected the EC key it generated"))?;
                let public = pair.public_key().as_ref().to_vec();
                (pkcs8, Some(public))
            }
        };
        let resource = version_ref(&self.id, name, version).to_string();
        let material = kek.seal(Purpose::VaultKeyMaterial, &resource, &[], &material)?;
        Ok(KeyVersion {
            version,
            created: now,
            enabled: true,
            material,
            expires: policy.and_then(|p| p.expires(now)),
            public_key,
        })
    }

    // ---- management ---------------------------------------------------------------------

    /// Creates key `name` with version 1, its material sealed by `kek` (the subscription's
    /// platform-managed key, or the root key).
    pub fn create_key(
        &mut self,
        kek: &WrappingKey,
        name: &str,
        kty: KeyType,
        rotation_policy: Option<RotationPolicy>,
        now: i64,
    ) -> Audited<KeyRef> {
        let result = self.create_key_inner(kek, name, kty, rotation_policy, now);
        self.audit(Operation::CreateKey, name, Some(1), result)
    }

    fn create_key_inner(
        &mut self,
        kek: &WrappingKey,
        name: &str,
        kty: KeyType,
        rotation_policy: Option<RotationPolicy>,
        now: i64,
    ) -> Result<KeyRef, KmsError> {
        validate_name(name)?;
        if let Some(policy) = rotation_policy {
            validate_policy(policy)?;
        }
        if let Some(existing) = self.keys.get(name) {
            let key = self.key_id(name);
            return Err(if existing.deleted.is_some() {
                KmsError::KeyDeleted { key }
            } else {
                KmsError::KeyAlreadyExists { key }
            });
        }
        let v1 = self.new_version(kek, name, kty, 1, now, rotation_policy)?;
        self.keys.insert(
            name.to_owned(),
            VaultKey {
                name: name.to_owned(),
                kty,
                enabled: true,
                current_version: 1,
                versions: vec![v1],
                rotation_policy,
                pending_rotation: None,
                deleted: None,
            },
        );
        Ok(version_ref(&self.id, name, 1))
    }

    /// Phase one of a rotation: adds a version and makes it current. Persist the vault before
    /// rewrapping anything under the new version. If a rotation is already pending, returns
    /// its new version and changes nothing (resume after a crash by calling this again).
    pub fn begin_rotation(&mut self, kek: &WrappingKey, name: &str, now: i64) -> Audited<KeyRef> {
        let result = self.begin_rotation_inner(kek, name, now);
        let version = result.as_ref().ok().map(|r| r.version);
        self.audit(Operation::BeginRotation, name, version, result)
    }

    fn begin_rotation_inner(
        &mut self,
        kek: &WrappingKey,
        name: &str,
        now: i64,
    ) -> Result<KeyRef, KmsError> {
        let key = self.live(name)?;
        if let Some(pending) = &key.pending_rotation {
            return Ok(version_ref(&self.id, name, pending.to));
        }
        let (kty, policy) = (key.kty, key.rotation_policy);
        let next = key
            .versions
            .iter()
            .map(|v| v.version)
            .max()
            .unwrap_or(0)
            .checked_add(1)
            .ok_or_else(|| KmsError::InvalidArgument(format!("key {name} has no versions left")))?;
        let new = self.new_version(kek, name, kty, next, now, policy)?;
        let key = self.live_mut(name)?;
        let from: Vec<u32> = key
            .versions
            .iter()
            .filter(|v| v.enabled)
            .map(|v| v.version)
            .collect();
        key.versions.push(new);
        key.current_version = next;
        if kty == KeyType::Oct {
            key.pending_rotation = Some(PendingRotation {
                from,
                to: next,
                started: now,
            });
        }
        Ok(version_ref(&self.id, name, next))
    }

    /// Phase two: given every envelope still stored under this key (their `key()` refs), checks
    /// that none uses a version the rotation replaces, then disables those versions. Refused
    /// with [`ErrorCode::RotationIncomplete`] otherwise. Returns the versions disabled; a key
    /// with no rotation pending returns an empty list.
    pub fn finish_rotation<'a>(
        &mut self,
        name: &str,
        still_stored: impl IntoIterator<Item = &'a KeyRef>,
    ) -> Audited<Vec<u32>> {
        let key_id = self.key_id(name);
        let result = self.live_mut(name).and_then(|key| {
            let Some(pending) = key.pending_rotation.clone() else {
                return Ok(Vec::new());
            };
            let remaining = still_stored
                .into_iter()
                .filter(|r| r.id == key_id && pending.from.contains(&r.version))
                .count();
            if remaining > 0 {
                return Err(KmsError::RotationIncomplete {
                    key: key_id.clone(),
                    versions: pending.from,
                    remaining,
                });
            }
            for v in &pending.from {
                if let Some(version) = key.version_mut(*v) {
                    version.enabled = false;
                }
            }
            key.pending_rotation = None;
            Ok(pending.from)
        });
        let version = self.keys.get(name).map(|k| k.current_version);
        self.audit(Operation::FinishRotation, name, version, result)
    }

    /// Reseals `envelope` (a `wrap_key` result) under the key's current version: opens it with
    /// the version that sealed it, seals with the current one; the wrapped key never leaves
    /// this crate's types. Idempotent: an envelope already under the current version is
    /// returned unchanged.
    pub fn rewrap(
        &self,
        kek: &WrappingKey,
        name: &str,
        resource: &str,
        envelope: &Envelope,
    ) -> Audited<Envelope> {
        let current = self.keys.get(name).map(|k| k.current_version);
        let result = self.rewrap_inner(kek, name, resource, envelope);
        self.audit(Operation::Rewrap, name, current, result)
    }

    fn rewrap_inner(
        &self,
        kek: &WrappingKey,
        name: &str,
        resource: &str,
        envelope: &Envelope,
    ) -> Result<Envelope, KmsError> {
        let from = self.envelope_version(name, envelope)?;
        let (_, current) = self.usable(name, None, Operation::Rewrap, KeyType::Oct)?;
        if from == current.version {
            return Ok(envelope.clone());
        }
        let (_, old) = self.usable(name, Some(from), Operation::Rewrap, KeyType::Oct)?;
        let dek = self
            .open_aes(kek, name, old)?
            .open_key(Purpose::WrapKey, resource, envelope)?;
        self.open_aes(kek, name, current)?.seal(
            Purpose::WrapKey,
            resource,
            &[],
            dek.expose_secret(),
        )
    }

    /// Platform- or root-key rotation: reseals every version's material (of every key, deleted
    /// ones included) under `to`, opening it with `from`. Idempotent: material already under
    /// `to` is left alone. All or nothing: on error the vault is unchanged. Returns how many
    /// versions were resealed.
    pub fn rewrap_material(&mut self, from: &WrappingKey, to: &WrappingKey) -> Audited<usize> {
        let result = self.rewrap_material_inner(from, to);
        self.record(Operation::RewrapMaterial, self.id.clone(), None, result)
    }

    fn rewrap_material_inner(
        &mut self,
        from: &WrappingKey,
        to: &WrappingKey,
    ) -> Result<usize, KmsError> {
        let mut resealed = Vec::new();
        for key in self.keys.values() {
            for v in &key.versions {
                if v.material.key() == to.key_ref() {
                    continue;
                }
                let resource = version_ref(&self.id, &key.name, v.version).to_string();
                let material = from.open(Purpose::VaultKeyMaterial, &resource, &[], &v.material)?;
                let sealed = to.seal(Purpose::VaultKeyMaterial, &resource, &[], &material)?;
                resealed.push((key.name.clone(), v.version, sealed));
            }
        }
        let count = resealed.len();
        for (name, version, sealed) in resealed {
            if let Some(v) = self
                .keys
                .get_mut(&name)
                .and_then(|k| k.version_mut(version))
            {
                v.material = sealed;
            }
        }
        Ok(count)
    }

    pub fn enable(&mut self, name: &str) -> Audited<()> {
        self.set_enabled(name, true)
    }

    pub fn disable(&mut self, name: &str) -> Audited<()> {
        self.set_enabled(name, false)
    }

    fn set_enabled(&mut self, name: &str, enabled: bool) -> Audited<()> {
        let result = self.live_mut(name).map(|k| k.enabled = enabled);
        let op = if enabled {
            Operation::Enable
        } else {
            Operation::Disable
        };
        let version = self.keys.get(name).map(|k| k.current_version);
        self.audit(op, name, version, result)
    }

    /// Enables or disables one version. The current version cannot be disabled (rotate first,
    /// or disable the whole key).
    pub fn set_version_enabled(&mut self, name: &str, version: u32, enabled: bool) -> Audited<()> {
        let key_id = self.key_id(name);
        let result = self.live_mut(name).and_then(|key| {
            if !enabled && key.current_version == version {
                return Err(KmsError::InvalidArgument(format!(
                    "version {version} is the current version of key {key_id}; rotate the key or disable the whole key"
                )));
            }
            let v = key.version_mut(version).ok_or(KmsError::VersionNotFound {
                key: key_id.clone(),
                version,
            })?;
            v.enabled = enabled;
            Ok(())
        });
        let op = if enabled {
            Operation::EnableVersion
        } else {
            Operation::DisableVersion
        };
        self.audit(op, name, Some(version), result)
    }

    pub fn set_rotation_policy(
        &mut self,
        name: &str,
        policy: Option<RotationPolicy>,
    ) -> Audited<()> {
        let result = policy
            .map_or(Ok(()), validate_policy)
            .and_then(|()| self.live_mut(name))
            .map(|k| k.rotation_policy = policy);
        self.audit(Operation::SetRotationPolicy, name, None, result)
    }

    /// Soft-deletes a key: it refuses every operation but `recover` and `purge` until purged
    /// at `now` + the vault's retention.
    pub fn delete(&mut self, name: &str, now: i64) -> Audited<Deletion> {
        let retention = i64::from(self.soft_delete_retention_days) * DAY;
        let result = self.live_mut(name).map(|k| {
            let deletion = Deletion {
                deleted_at: now,
                scheduled_purge_at: now.saturating_add(retention),
            };
            k.deleted = Some(deletion);
            deletion
        });
        self.audit(Operation::Delete, name, None, result)
    }

    /// Undoes a soft delete; the key comes back as it was (enabled or not, same versions).
    pub fn recover(&mut self, name: &str) -> Audited<()> {
        let key_id = self.key_id(name);
        let result = match self.keys.get_mut(name) {
            None => Err(KmsError::KeyNotFound { key: key_id }),
            Some(k) if k.deleted.is_none() => Err(KmsError::KeyNotDeleted { key: key_id }),
            Some(k) => {
                k.deleted = None;
                Ok(())
            }
        };
        self.audit(Operation::Recover, name, None, result)
    }

    /// Permanently removes a soft-deleted key and its material. With purge protection on,
    /// refused until the retention period has elapsed.
    pub fn purge(&mut self, name: &str, now: i64) -> Audited<()> {
        let key_id = self.key_id(name);
        let result = match self.keys.get(name).map(|k| k.deleted) {
            None => Err(KmsError::KeyNotFound { key: key_id }),
            Some(None) => Err(KmsError::KeyNotDeleted { key: key_id }),
            Some(Some(d)) if self.purge_protection && now < d.scheduled_purge_at => {
                Err(KmsError::PurgeProtected {
                    key: key_id,
                    until: d.scheduled_purge_at,
                })
            }
            Some(Some(_)) => {
                self.keys.remove(name);
                Ok(())
            }
        };
        self.audit(Operation::Purge, name, None, result)
    }

    /// Purges every soft-deleted key whose retention has elapsed (the control plane's sweeper).
    pub fn purge_expired(&mut self, now: i64) -> Vec<AuditRecord> {
        let expired: Vec<String> = self
            .keys
            .values()
            .filter(|k| k.deleted.is_some_and(|d| d.scheduled_purge_at <= now))
            .map(|k| k.name.clone())
            .collect();
        expired
            .iter()
            .map(|name| self.purge(name, now).record)
            .collect()
    }

    // ---- data plane ---------------------------------------------------------------------

    /// Refuses `operation` — one that makes new ciphertext or signatures with the current
    /// version (wrapKey, encrypt, sign) — once that version has expired at `now`, as Azure Key
    /// Vault does. Unwrap, decrypt and verify keep working, so nothing already protected is
    /// lost. Call it before the operation; audit its record only when it refuses.
    pub fn check_unexpired(&self, name: &str, operation: Operation, now: i64) -> Audited<()> {
        let key = self.keys.get(name);
        let version = key.map(|k| k.current_version);
        let result = match key.and_then(|k| k.version(k.current_version)) {
            Some(v) if v.expires.is_some_and(|at| now >= at) => Err(KmsError::KeyExpired {
                key: self.key_id(name),
                version: v.version,
                at: v.expires.unwrap_or_default(),
            }),
            _ => Ok(()),
        };
        self.audit(operation, name, version, result)
    }

    /// `wrapKey`: seals `key` (typically a disk's data key) under the current version, bound
    /// to `resource` (what the key protects, e.g. the disk's canonical resource id).
    pub fn wrap_key(
        &self,
        kek: &WrappingKey,
        name: &str,
        resource: &str,
        key: &DataKey,
    ) -> Audited<Envelope> {
        let version = self.keys.get(name).map(|k| k.current_version);
        let result = self
            .usable(name, None, Operation::WrapKey, KeyType::Oct)
            .and_then(|(_, v)| self.open_aes(kek, name, v))
            .and_then(|aes| aes.seal(Purpose::WrapKey, resource, &[], key.expose_secret()));
        self.audit(Operation::WrapKey, name, version, result)
    }

    /// `unwrapKey`: opens an envelope from [`Vault::wrap_key`] for the same `resource`, with
    /// the version that sealed it.
    pub fn unwrap_key(
        &self,
        kek: &WrappingKey,
        name: &str,
        resource: &str,
        envelope: &Envelope,
    ) -> Audited<DataKey> {
        let result = self
            .envelope_version(name, envelope)
            .and_then(|version| {
                self.usable(name, Some(version), Operation::UnwrapKey, KeyType::Oct)
            })
            .and_then(|(_, v)| self.open_aes(kek, name, v))
            .and_then(|aes| aes.open_key(Purpose::WrapKey, resource, envelope));
        self.audit(
            Operation::UnwrapKey,
            name,
            Some(envelope.key().version),
            result,
        )
    }

    /// `encrypt`: AES-256-GCM under the current version; `aad` must be given again to decrypt.
    pub fn encrypt(
        &self,
        kek: &WrappingKey,
        name: &str,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Audited<Envelope> {
        let version = self.keys.get(name).map(|k| k.current_version);
        let result = self
            .usable(name, None, Operation::Encrypt, KeyType::Oct)
            .and_then(|(_, v)| self.open_aes(kek, name, v))
            .and_then(|aes| aes.seal(Purpose::Encrypt, "", aad, plaintext));
        self.audit(Operation::Encrypt, name, version, result)
    }

    /// `decrypt`: opens an [`Vault::encrypt`] envelope with the version that sealed it.
    pub fn decrypt(
        &self,
        kek: &WrappingKey,
        name: &str,
        envelope: &Envelope,
        aad: &[u8],
    ) -> Audited<Plaintext> {
        let result = self
            .envelope_version(name, envelope)
            .and_then(|version| self.usable(name, Some(version), Operation::Decrypt, KeyType::Oct))
            .and_then(|(_, v)| self.open_aes(kek, name, v))
            .and_then(|aes| aes.open(Purpose::Encrypt, "", aad, envelope))
            .map(Plaintext::new);
        self.audit(
            Operation::Decrypt,
            name,
            Some(envelope.key().version),
            result,
        )
    }

    /// `sign`: ECDSA P-256 over SHA-256 of `message`, with the current version.
    pub fn sign(&self, kek: &WrappingKey, name: &str, message: &[u8]) -> Audited<Signature> {
        let version = self.keys.get(name).map(|k| k.current_version);
        let result = self
            .usable(name, None, Operation::Sign, KeyType::Ec)
            .and_then(|(_, v)| {
                let pkcs8 = self.open_material(kek, name, v)?;
                let rng = SystemRandom::new();
                let pair =
                    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8[..], &rng)
                        .map_err(|_| KmsError::Crypto("the stored EC key does not parse"))?;
                let sig = pair.sign(&rng, message).map_err(rng_error)?;
                Ok(Signature {
                    key: version_ref(&self.id, name, v.version),
                    value: sig.as_ref().to_vec(),
                })
            });
        self.audit(Operation::Sign, name, version, result)
    }

    /// `verify`: checks `signature` over `message` with the version it names. An invalid
    /// signature is `Ok(false)`; a disabled or deleted key refuses to answer.
    pub fn verify(&self, name: &str, message: &[u8], signature: &Signature) -> Audited<bool> {
        let result = self
            .key_ref_version(name, &signature.key)
            .and_then(|version| self.usable(name, Some(version), Operation::Verify, KeyType::Ec))
            .and_then(|(_, v)| {
                let public = v
                    .public_key
                    .as_deref()
                    .ok_or(KmsError::Crypto("the EC key version has no public key"))?;
                Ok(UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, public)
                    .verify(message, &signature.value)
                    .is_ok())
            });
        self.audit(Operation::Verify, name, Some(signature.key.version), result)
    }
}

fn validate_policy(policy: RotationPolicy) -> Result<(), KmsError> {
    let bad = |what: &str| Err(KmsError::InvalidArgument(what.to_owned()));
    let RotationPolicy {
        rotate_after_secs: after,
        rotate_before_expiry_secs: before,
        expiry_secs: expiry,
        notify_before_expiry_secs: notify,
    } = policy;
    if [after, before, expiry, notify]
        .iter()
        .flatten()
        .any(|secs| *secs <= 0)
    {
        return bad("rotation policy durations must be positive");
    }
    if after.is_some() && before.is_some() {
        return bad(
            "a rotation policy rotates either a time after creation or a time before expiry, not both",
        );
    }
    for (name, value) in [
        ("timeBeforeExpiry", before.or(notify)),
        ("timeAfterCreate", after),
    ] {
        match (value, expiry) {
            (Some(v), Some(e)) if v >= e => {
                return Err(KmsError::InvalidArgument(format!(
                    "{name} ({v} s) must be shorter than expiryTime ({e} s)"
                )));
            }
            (Some(_), None) if name == "timeBeforeExpiry" => {
                return bad("timeBeforeExpiry needs expiryTime");
            }
            _ => {}
        }
    }
    Ok(())
}

mod b64 {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

mod b64_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(bytes) => super::b64::serialize(bytes, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapper(#[serde(with = "super::b64")] Vec<u8>);
        Ok(Option::<Wrapper>::deserialize(d)?.map(|Wrapper(v)| v))
    }
}
