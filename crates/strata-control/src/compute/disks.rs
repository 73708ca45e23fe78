//! Managed disks (`Strata.Compute/disks`) as the control plane sees them: where a disk's data
//! key lives and when it may be released to a host.
//!
//! Every disk is encrypted. Its 256-bit data key exists in the store only wrapped:
//! - `EncryptionAtRestWithPlatformKey` (the default): by the subscription's platform key
//!   (`PlatformKey::create_data_key`, AAD: the disk's resource id);
//! - `EncryptionAtRestWithCustomerKey`: by a key vault key (`strata_kms::Vault::wrap_key`, AAD:
//!   the disk's resource id), so that disabling or deleting that key locks the disk.
//!
//! The wrapped key is the disk's `internal.dataKey` (an `Envelope` in text form); `properties`
//! carry only the encryption type, the vault key's id and the key version in use.
//!
//! ```text
//!  a VM with storageProfile.osDisk.id = D, placed on a Trusted host:
//!
//!    assignments ──▶ release(D) ── platform key ─────────────────▶ diskKey (desired as asked)
//!                         │
//!                         └── customer key: Vault::unwrap_key ──ok──▶ diskKey (desired as asked)
//!                                       │
//!                                       └─ KeyDisabled / VersionDisabled / KeyDeleted / gone
//!                                          ──▶ no diskKey, desiredState Stopped,
//!                                              failureReason "customer key disabled" (…)
//!                                          re-enabled ──▶ released again, started again
//! ```
//!
//! Rotation of a customer key, and what the control plane persists before each phase
//! (`strata_kms::vault`'s two-phase design):
//! 1. `POST …/keys/K/rotate` commits the key's vault document with the new version current
//!    (`begin_rotation`). The versions it replaced stay enabled, so every disk envelope still
//!    unwraps; nothing has been rewrapped yet. A crash before this commit loses only an unused
//!    version.
//! 2. `POST …/disks/D/rewrapKey` reseals one disk's data key under the current version
//!    (`Vault::rewrap`: the key never leaves `strata_kms`' types) and commits that disk's new
//!    envelope (with the vault key's revision asserted unchanged). It is idempotent: a crash
//!    between disks leaves each under the old or the new version, both openable, and running
//!    it again finishes the job. The key sweep (`crate::keysweep`) runs this step for every
//!    disk after a scheduled rotation, and again on its next pass after one made with
//!    `POST …/rotate`. Old versions are disabled only explicitly (`PATCH` of the key's
//!    `versions[].enabled`), which is refused while any disk is still wrapped under them.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use strata_kms::{DataKey, Envelope, ErrorCode, Vault};
use strata_types::{ApiError, ResourceId};

use crate::app::{App, log_chain};
use crate::docs::Doc;
use crate::kinds::Kind;

pub const PLATFORM_KEY: &str = "EncryptionAtRestWithPlatformKey";
pub const CUSTOMER_KEY: &str = "EncryptionAtRestWithCustomerKey";

/// Why a disk key is withheld, as shown in the VM's `failureReason`.
pub const CUSTOMER_KEY_DISABLED: &str = "customer key disabled";
pub const CUSTOMER_KEY_DELETED: &str = "customer key deleted";

/// `internal` of a disk document (never returned by the API).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiskInternal {
    /// The data key, wrapped by the platform key or the customer key (AAD: the disk's id).
    #[serde(default)]
    pub data_key: Option<String>,
    /// A disk made from a snapshot: its encrypted content, which the VM's host fetches and
    /// copies as the disk (under the same data key; `compute::snapshots`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<super::images::ImageContent>,
}

/// The storage key of the disk a VM's OS disk names (`storageProfile.osDisk.id`), if any.
pub fn os_disk_of(vm: &Doc) -> Option<String> {
    vm.properties
        .pointer("/storageProfile/osDisk/id")
        .and_then(Value::as_str)
        .map(str::to_ascii_lowercase)
}

/// `/subscriptions/{sub}` of a resource's storage key.
pub fn subscription_key(resource_key: &str) -> String {
    resource_key
        .split('/')
        .take(3)
        .collect::<Vec<_>>()
        .join("/")
}

fn get(app: &App, key: &str) -> Result<Option<Doc>, ApiError> {
    match app.store.get(key) {
        Ok(Some(rec)) => Doc::parse(&rec.body).map(Some),
        Ok(None) => Ok(None),
        Err(e) => {
            log_chain("store read failed", &e);
            Err(ApiError::internal())
        }
    }
}

/// The subscription's platform key, opened (it also seals every vault key's material).
pub fn platform_key(app: &App, resource_key: &str) -> Result<strata_kms::PlatformKey, ApiError> {
    let sub_key = subscription_key(resource_key);
    let doc = get(app, &sub_key)?.ok_or_else(|| {
        tracing::error!(resource = %resource_key, "the subscription is gone");
        ApiError::internal()
    })?;
    let keys: super::SubscriptionKeys = crate::docs::internal_of(&doc);
    let stored = keys.platform_key.ok_or_else(|| {
        tracing::error!(subscription = %sub_key, "the subscription has no platform key");
        ApiError::internal()
    })?;
    super::open_platform_key(&app.root, &sub_key, &stored)
}

/// A key vault key resource's stored vault document and the key's name in it.
pub fn vault_key(app: &App, key_id: &ResourceId) -> Result<Option<(Vault, String)>, ApiError> {
    let Some(doc) = get(app, key_id.key())? else {
        return Ok(None);
    };
    if !doc.rtype.eq_ignore_ascii_case(Kind::VaultKey.type_name()) {
        return Ok(None);
    }
    // A key in a soft-deleted vault is frozen: as good as deleted until the vault is recovered.
    if let Some(vault) = key_id.parent()
        && get(app, vault.key())?.is_none()
    {
        return Ok(None);
    }
    let vault: Vault = doc
        .internal
        .get("vault")
        .cloned()
        .and_then(|v| serde_json::from_value(v).ok())
        .ok_or_else(|| {
            tracing::error!(key = %doc.id, "a key's stored vault document does not parse");
            ApiError::internal()
        })?;
    let name = key_id.name().unwrap_or_default().to_ascii_lowercase();
    Ok(Some((vault, name)))
}

/// The customer key a disk names (`encryption.keyVaultKeyId`), if it uses one.
pub fn customer_key_of(disk: &Doc) -> Option<ResourceId> {
    let encryption = disk.properties.get("encryption")?;
    if encryption.get("type").and_then(Value::as_str) != Some(CUSTOMER_KEY) {
        return None;
    }
    ResourceId::parse(encryption.get("keyVaultKeyId")?.as_str()?).ok()
}

/// What a host may get for a disk.
pub enum Release {
    Key(DataKey),
    /// The disk stays locked; the reason is shown on the VMs using it.
    Withheld(&'static str),
}

/// Opens disk `disk_key`'s data key for release to a host, or says why it stays locked: a
/// customer key that is disabled, deleted or purged locks its disks until it is back.
pub fn release(app: &App, disk_key: &str) -> Result<Release, ApiError> {
    release_with_source(app, disk_key).map(|(release, _)| release)
}

/// [`release`], and the snapshot content the disk was made from (if it was), from one read of
/// the disk's document (what a host's assignments need of a VM's OS disk).
pub fn release_with_source(
    app: &App,
    disk_key: &str,
) -> Result<(Release, Option<super::images::ImageContent>), ApiError> {
    let fail = |what: &str| {
        tracing::error!(disk = %disk_key, "{what}");
        ApiError::internal()
    };
    let Some(disk) = get(app, disk_key)? else {
        return Err(fail("the VM's OS disk is gone"));
    };
    let internal: DiskInternal = crate::docs::internal_of(&disk);
    let source = internal.source.clone();
    release_of(app, disk_key, &disk, &internal).map(|release| (release, source))
}

fn release_of(
    app: &App,
    disk_key: &str,
    disk: &Doc,
    internal: &DiskInternal,
) -> Result<Release, ApiError> {
    let fail = |what: &str| {
        tracing::error!(disk = %disk_key, "{what}");
        ApiError::internal()
    };
    let envelope = internal
        .data_key
        .as_deref()
        .ok_or_else(|| fail("the disk has no data key"))
        .and_then(|t| {
            Envelope::decode(t).map_err(|_| fail("the disk key envelope does not parse"))
        })?;
    let pmk = platform_key(app, disk_key)?;
    let Some(key_id) = customer_key_of(disk) else {
        return pmk
            .unwrap_data_key(disk_key, &envelope)
            .map(Release::Key)
            .map_err(|_| fail("the disk key does not unwrap under the platform key"));
    };
    let Some((vault, name)) = vault_key(app, &key_id)? else {
        return Ok(Release::Withheld(CUSTOMER_KEY_DELETED));
    };
    match vault.unwrap_key(&pmk, &name, disk_key, &envelope).result {
        Ok(dek) => Ok(Release::Key(dek)),
        Err(e) => match e.code() {
            ErrorCode::KeyDisabled | ErrorCode::VersionDisabled => {
                Ok(Release::Withheld(CUSTOMER_KEY_DISABLED))
            }
            ErrorCode::KeyDeleted | ErrorCode::KeyNotFound | ErrorCode::VersionNotFound => {
                Ok(Release::Withheld(CUSTOMER_KEY_DELETED))
            }
            _ => Err(fail(&format!(
                "the disk key does not unwrap under its customer key: {e}"
            ))),
        },
    }
}

/// Why a VM is held stopped by its OS disk's key, if it is.
pub fn hold_of(app: &App, vm: &Doc) -> Result<Option<&'static str>, ApiError> {
    let Some(disk) = os_disk_of(vm) else {
        return Ok(None);
    };
    Ok(match release(app, &disk)? {
        Release::Key(_) => None,
        Release::Withheld(reason) => Some(reason),
    })
}
