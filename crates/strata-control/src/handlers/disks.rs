//! ARM handlers for `Strata.Compute/disks`: create (a data key wrapped by the subscription's
//! platform key, or by a key vault key the caller may `wrapKey` with), the `rewrapKey` action
//! (the data key resealed under the vault key's current version), the refusal to delete an
//! attached disk, and the VM side: attaching a disk as a VM's OS disk and releasing it when the
//! VM is deleted. Where keys live and when a host gets one: `compute::disks`.
//!
//! Neither properties nor audit entries ever carry key material: an audit entry lists the
//! `strata_kms` records (operation, key id, version, outcome) of the request's key operations.

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Value, json};
use strata_kms::{AuditRecord, DataKey, Envelope, ErrorCode, KmsError};
use strata_store::{Op, Precondition};
use strata_types::{ApiError, ResourceId};

use super::{load, new_doc, parse_props};
use crate::compute::disks::{
    CUSTOMER_KEY, DiskInternal, PLATFORM_KEY, customer_key_of, platform_key, vault_key,
};
use crate::context::Ctx;
use crate::dispatch::{Incoming, Reply};
use crate::docs::Doc;
use crate::kinds::Kind;

/// Disk sizes accepted, in GiB.
const MAX_SIZE_GB: u64 = 32 * 1024;

/// The data action a caller needs on a vault key to put a disk under it (as Azure checks the
/// disk encryption set's access to the key).
const WRAP_KEY: &str = "Strata.KeyVault/vaults/keys/wrapKey/action";

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct DiskInput {
    #[serde(default, rename = "diskSizeGB")]
    disk_size_gb: Option<u64>,
    #[serde(default)]
    encryption: Option<EncryptionInput>,
    /// Restore: `{createOption: Copy, sourceResourceId: a snapshot}`.
    #[serde(default)]
    creation_data: Option<super::snapshots::CreationData>,
    // Read-only, accepted and ignored so that GET-modify-PUT works.
    #[serde(default)]
    disk_state: Option<IgnoredAny>,
    #[serde(default)]
    managed_by: Option<IgnoredAny>,
    #[serde(default)]
    provisioning_state: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct EncryptionInput {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    key_vault_key_id: Option<String>,
    // Read-only.
    #[serde(default)]
    key_version: Option<IgnoredAny>,
    #[serde(default)]
    key_uri_with_version: Option<IgnoredAny>,
}

/// What the caller asked for, checked.
#[derive(PartialEq, Eq)]
enum Encryption {
    Platform,
    Customer(ResourceId),
}

fn encryption_of(input: Option<&EncryptionInput>) -> Result<Encryption, ApiError> {
    let kind = input.and_then(|e| e.kind.as_deref());
    let key = input.and_then(|e| e.key_vault_key_id.as_deref());
    let customer = match kind {
        None => key.is_some(),
        Some(k) if k.eq_ignore_ascii_case(PLATFORM_KEY) => false,
        Some(k) if k.eq_ignore_ascii_case(CUSTOMER_KEY) => true,
        Some(k) => {
            return Err(ApiError::bad_request(
                "InvalidEncryptionType",
                format!(
                    "encryption.type '{}' is not supported: use {PLATFORM_KEY} (the default) or {CUSTOMER_KEY}",
                    k.chars().take(60).collect::<String>()
                ),
            ));
        }
    };
    match (customer, key) {
        (false, None) => Ok(Encryption::Platform),
        (false, Some(_)) => Err(ApiError::bad_request(
            "InvalidEncryption",
            format!("encryption.keyVaultKeyId needs encryption.type {CUSTOMER_KEY}"),
        )),
        (true, None) => Err(ApiError::bad_request(
            "KeyVaultKeyRequired",
            format!(
                "encryption.type {CUSTOMER_KEY} needs encryption.keyVaultKeyId: …/providers/Strata.KeyVault/vaults/VAULT/keys/KEY"
            ),
        )),
        (true, Some(k)) => {
            let bad = || {
                ApiError::bad_request(
                    "InvalidKeyVaultKeyId",
                    "encryption.keyVaultKeyId must be a key's id: /subscriptions/SUB/resourceGroups/RG/providers/Strata.KeyVault/vaults/VAULT/keys/KEY",
                )
            };
            let id = ResourceId::parse(k).map_err(|_| bad())?;
            let is_key = id
                .resource_type()
                .is_some_and(|t| t.as_str().eq_ignore_ascii_case(Kind::VaultKey.type_name()));
            if !is_key {
                return Err(bad());
            }
            Ok(Encryption::Customer(id))
        }
    }
}

fn encryption_stored(doc: &Doc) -> Encryption {
    match customer_key_of(doc) {
        Some(id) => Encryption::Customer(id),
        None => Encryption::Platform,
    }
}

/// The HTTP answer for a refused key operation.
pub(super) fn kms_error(e: &KmsError) -> ApiError {
    let status = match e.code() {
        ErrorCode::KeyNotFound | ErrorCode::VersionNotFound => 404,
        ErrorCode::KeyDisabled
        | ErrorCode::VersionDisabled
        | ErrorCode::KeyExpired
        | ErrorCode::KeyDeleted
        | ErrorCode::RotationIncomplete => 409,
        ErrorCode::CryptoFailure => 500,
        _ => 400,
    };
    ApiError::new(status, e.code().as_str(), e.to_string())
}

/// Refuses a customer key the caller may not wrap with: deny by default, 403 with the reason.
pub(super) fn check_wrap_access(ctx: &Ctx<'_>, key_id: &ResourceId) -> Result<(), ApiError> {
    let decision = ctx.app.decide(&ctx.caller, WRAP_KEY, key_id.key(), true);
    if decision.is_allowed() {
        return Ok(());
    }
    Err(ApiError::forbidden(format!(
        "'{}' may not use key '{key_id}' for disk encryption: it needs the data action {WRAP_KEY} on the key (e.g. the Key Vault Crypto User role)",
        ctx.caller.name
    )))
}

pub(crate) fn encryption_props(key_id: Option<&ResourceId>, envelope: &Envelope) -> Value {
    let version = envelope.key().version;
    match key_id {
        None => json!({ "type": PLATFORM_KEY, "keyVersion": version }),
        Some(k) => json!({
            "type": CUSTOMER_KEY,
            "keyVaultKeyId": k.to_string(),
            "keyVersion": version,
            "keyUriWithVersion": format!("{k}/{version}"),
        }),
    }
}

/// Wraps `dek` for disk `id` under its customer key; the caller's access was checked.
pub(super) fn wrap_customer(
    ctx: &Ctx<'_>,
    id: &ResourceId,
    key_id: &ResourceId,
    dek: &DataKey,
    records: &mut Vec<AuditRecord>,
) -> Result<(Envelope, Vec<Op>), ApiError> {
    let (rec, _) = load(ctx, key_id)?.ok_or_else(|| {
        ApiError::new(
            404,
            "KeyVaultKeyNotFound",
            format!("the key vault key '{key_id}' was not found; create it first"),
        )
    })?;
    let (vault, name) =
        vault_key(ctx.app, key_id)?.ok_or_else(|| ApiError::not_found(key_id.as_str()))?;
    let checked = vault.check_unexpired(&name, strata_kms::Operation::WrapKey, ctx.now());
    if let Err(e) = checked.result {
        records.push(checked.record);
        return Err(kms_error(&e));
    }
    let pmk = platform_key(ctx.app, id.key())?;
    let audited = vault.wrap_key(&pmk, &name, id.key(), dek);
    records.push(audited.record);
    let envelope = audited.result.map_err(|e| kms_error(&e))?;
    // The key must not change under us (disabled or rotated), nor its vault go, before the
    // disk commits.
    let asserts = vec![
        Op::Assert {
            key: rec.key,
            pre: Precondition::Revision(rec.revision),
        },
        super::keyvault::vault_live(&key_id.parent().ok_or_else(ApiError::internal)?),
    ];
    Ok((envelope, asserts))
}

pub(super) fn details(id: &ResourceId, records: &[AuditRecord]) -> Value {
    json!({ "id": id.to_string(), "keyOperations": records })
}

/// PUT or PATCH of a disk: creates it with a new data key, or changes what may change (tags;
/// a larger size). The encryption of a disk cannot change.
pub fn put_disk(
    ctx: &Ctx<'_>,
    id: &ResourceId,
    req: &Incoming<'_>,
    patch: bool,
) -> Result<Reply, ApiError> {
    let super::OwnPut {
        mut body,
        parent,
        existing,
        pre,
    } = super::own_put(ctx, id, req, Kind::Disk, patch)?;
    let input: DiskInput = parse_props(body.properties)?;
    let _ = (input.disk_state, input.managed_by, input.provisioning_state);
    let mut from = match (&existing, input.creation_data.as_ref()) {
        (None, Some(data)) => Some(snapshot_source(ctx, id, data)?),
        _ => None,
    };
    let encryption = match from.as_ref().and_then(|f| f.customer.as_ref()) {
        // A disk from a customer-key snapshot stays under that key: the key's owner keeps
        // control of the data (another key, or the platform key, would take it away).
        Some(k) => {
            if input.encryption.is_some()
                && encryption_of(input.encryption.as_ref())? != Encryption::Customer(k.clone())
            {
                return Err(ApiError::bad_request(
                    "InvalidEncryption",
                    format!(
                        "the snapshot is encrypted with customer key '{k}': a disk made from it uses that key too"
                    ),
                ));
            }
            Encryption::Customer(k.clone())
        }
        None => encryption_of(input.encryption.as_ref())?,
    };
    let _ = input
        .encryption
        .as_ref()
        .map(|e| (&e.key_version, &e.key_uri_with_version));
    let size = input.disk_size_gb.unwrap_or(0);
    let mut ops = vec![Op::Assert {
        key: parent.key().to_string(),
        pre: Precondition::MustExist,
    }];
    ops.extend(from.as_mut().and_then(|f| f.assert.take()));
    let mut records = Vec::new();
    let doc = match &existing {
        Some((_, old)) => {
            if encryption_stored(old) != encryption {
                return Err(ApiError::conflict(
                    "PropertyChangeNotAllowed",
                    "a disk's encryption cannot change after creation; create another disk",
                ));
            }
            let old_size = old
                .properties
                .get("diskSizeGB")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            let size = if input.disk_size_gb.is_none() {
                old_size
            } else {
                size
            };
            check_size(size)?;
            if size < old_size {
                return Err(ApiError::conflict(
                    "PropertyChangeNotAllowed",
                    format!("a disk cannot shrink (it is {old_size} GB); it may only grow"),
                ));
            }
            let old_source = old
                .properties
                .pointer("/creationData/sourceResourceId")
                .and_then(Value::as_str);
            let new_source = input
                .creation_data
                .as_ref()
                .map(|c| c.source_resource_id.as_str());
            if let Some(new) = new_source
                && !old_source.is_some_and(|old| old.eq_ignore_ascii_case(new))
            {
                return Err(ApiError::conflict(
                    "PropertyChangeNotAllowed",
                    "a disk's creationData cannot change after creation; create another disk",
                ));
            }
            let mut doc = old.clone();
            doc.system_data = new_doc(ctx, id, Kind::Disk, Some(old), Value::Null).system_data;
            if let Some(o) = doc.properties.as_object_mut() {
                o.insert("diskSizeGB".into(), json!(size));
            }
            doc
        }
        None => {
            let size = match &from {
                Some(f) => {
                    if input.disk_size_gb.is_some_and(|gb| gb != f.size_gb) {
                        return Err(ApiError::bad_request(
                            "InvalidDiskSize",
                            format!(
                                "a disk made from a snapshot has the snapshot's size ({} GB); leave diskSizeGB out",
                                f.size_gb
                            ),
                        ));
                    }
                    f.size_gb
                }
                None if input.disk_size_gb.is_none() => {
                    return Err(ApiError::bad_request(
                        "DiskSizeRequired",
                        "properties.diskSizeGB is required (e.g. 8), or creationData names a snapshot to copy",
                    ));
                }
                None => size,
            };
            check_size(size)?;
            let dek = match from.as_mut().and_then(|f| f.dek.take()) {
                Some(dek) => dek,
                None => DataKey::generate().map_err(|_| ApiError::internal())?,
            };
            let (envelope, key_id) = match &encryption {
                Encryption::Platform => {
                    let pmk = platform_key(ctx.app, id.key())?;
                    let env = pmk
                        .wrap_data_key(id.key(), &dek)
                        .map_err(|_| ApiError::internal())?;
                    (env, None)
                }
                Encryption::Customer(key_id) => {
                    if key_id.subscription_id() != id.subscription_id() {
                        return Err(ApiError::bad_request(
                            "InvalidKeyVaultKeyId",
                            "the key vault key must be in the disk's subscription",
                        ));
                    }
                    check_wrap_access(ctx, key_id)?;
                    let (env, asserts) = wrap_customer(ctx, id, key_id, &dek, &mut records)
                        .map_err(|e| refused(ctx, id, &records, e))?;
                    ops.extend(asserts);
                    (env, Some(key_id))
                }
            };
            let mut props = json!({
                "diskSizeGB": size,
                "encryption": encryption_props(key_id, &envelope),
                "diskState": "Unattached",
                "managedBy": Value::Null,
                "provisioningState": "Succeeded",
            });
            if let Some(f) = &from {
                props["creationData"] = json!({
                    "createOption": "Copy",
                    "sourceResourceId": f.snapshot.to_string(),
                });
            }
            let mut doc = new_doc(ctx, id, Kind::Disk, None, props);
            doc.internal = serde_json::to_value(DiskInternal {
                data_key: Some(envelope.encode()),
                source: from.as_ref().map(|f| f.content.clone()),
            })
            .map_err(|_| ApiError::internal())?;
            doc
        }
    };
    let mut doc = doc;
    if let Some(t) = body.tags.take() {
        doc.tags = t;
    }
    let put_index = ops.len();
    ops.push(Op::Put {
        key: id.key().to_string(),
        rtype: Kind::Disk.type_key(),
        parent: parent.key().to_string(),
        body: doc.to_json()?,
        pre,
    });
    let status = if existing.is_some() { 200 } else { 201 };
    let committed = ctx.commit(ops, status, details(id, &records), false)?;
    let rev = committed
        .revisions
        .get(put_index)
        .copied()
        .unwrap_or_default();
    super::doc_reply(status, &doc, rev, None)
}

/// A Succeeded snapshot a new disk copies: its data key (the disk keeps it), content and size.
struct FromSnapshot {
    /// The snapshot must not change (or go, its bytes with it) before the disk commits.
    assert: Option<Op>,
    snapshot: ResourceId,
    dek: Option<DataKey>,
    content: crate::compute::images::ImageContent,
    size_gb: u64,
    customer: Option<ResourceId>,
}

fn snapshot_source(
    ctx: &Ctx<'_>,
    id: &ResourceId,
    data: &super::snapshots::CreationData,
) -> Result<FromSnapshot, ApiError> {
    let (snapshot, _) = super::snapshots::copy_source(
        Some(data),
        &[Kind::Snapshot],
        "a snapshot: /subscriptions/SUB/resourceGroups/RG/providers/Strata.Compute/snapshots/NAME",
    )?;
    if snapshot.subscription_id() != id.subscription_id() {
        return Err(ApiError::bad_request(
            "InvalidSourceResourceId",
            "the snapshot must be in the disk's subscription",
        ));
    }
    super::snapshots::check_data_access(ctx, &snapshot, Kind::Snapshot)?;
    let (rec, doc) = load(ctx, &snapshot)?.ok_or_else(|| ApiError::not_found(snapshot.as_str()))?;
    let internal: crate::compute::snapshots::SnapshotInternal = crate::docs::internal_of(&doc);
    let Some(content) = internal.content else {
        return Err(ApiError::conflict(
            "SnapshotNotReady",
            format!(
                "snapshot '{snapshot}' is {}: only a Succeeded snapshot can be copied",
                doc.prop_str("provisioningState").unwrap_or("not ready")
            ),
        ));
    };
    // The snapshot's key opens like a disk's (same fields: `compute::disks::release`).
    let dek = match crate::compute::disks::release(ctx.app, snapshot.key())? {
        crate::compute::disks::Release::Key(k) => k,
        crate::compute::disks::Release::Withheld(why) => {
            return Err(ApiError::conflict(
                "SnapshotKeyUnavailable",
                format!("the snapshot cannot be copied: {why}"),
            ));
        }
    };
    Ok(FromSnapshot {
        assert: Some(Op::Assert {
            key: rec.key,
            pre: Precondition::Revision(rec.revision),
        }),
        size_gb: content.virtual_size_bytes.div_ceil(1 << 30).max(1),
        customer: customer_key_of(&doc),
        snapshot,
        dek: Some(dek),
        content,
    })
}

fn check_size(size: u64) -> Result<(), ApiError> {
    if size == 0 || size > MAX_SIZE_GB {
        return Err(ApiError::bad_request(
            "InvalidDiskSize",
            format!("diskSizeGB must be 1 to {MAX_SIZE_GB}, got {size}"),
        ));
    }
    Ok(())
}

/// Audits a request refused by a key operation (with its records) and returns the error.
pub(super) fn refused(
    ctx: &Ctx<'_>,
    id: &ResourceId,
    records: &[AuditRecord],
    e: ApiError,
) -> ApiError {
    if !records.is_empty() {
        ctx.app.audit_only(vec![ctx.entry(
            "keyOperation",
            "failure",
            e.status,
            details(id, records),
        )]);
        ctx.audited.set(true);
    }
    e
}

/// `rewrapKey`: reseals a customer-key disk's data key under the key's current version
/// (phase two of a rotation, see `compute::disks`). Idempotent; a platform-key disk is left
/// as it is.
pub fn disk_action(
    ctx: &Ctx<'_>,
    id: &ResourceId,
    action: &str,
    _req: &Incoming<'_>,
) -> Result<Reply, ApiError> {
    if action != "rewrapKey" {
        return Err(ApiError::bad_request(
            "InvalidAction",
            format!(
                "'{action}' is not an action of {}: use rewrapKey",
                Kind::Disk.type_name()
            ),
        ));
    }
    let (rec, mut doc) = load(ctx, id)?.ok_or_else(|| ApiError::not_found(id.as_str()))?;
    let Some(key_id) = customer_key_of(&doc) else {
        return super::doc_reply(200, &doc, rec.revision, None);
    };
    check_wrap_access(ctx, &key_id)?;
    let mut internal: DiskInternal = crate::docs::internal_of(&doc);
    let envelope = internal
        .data_key
        .as_deref()
        .and_then(|t| Envelope::decode(t).ok())
        .ok_or_else(|| {
            tracing::error!(disk = %id, "the disk has no readable data key");
            ApiError::internal()
        })?;
    let (key_rec, _) = load(ctx, &key_id)?.ok_or_else(|| {
        ApiError::new(
            404,
            "KeyVaultKeyNotFound",
            format!("the key vault key '{key_id}' was not found"),
        )
    })?;
    let (vault, name) =
        vault_key(ctx.app, &key_id)?.ok_or_else(|| ApiError::not_found(key_id.as_str()))?;
    let pmk = platform_key(ctx.app, id.key())?;
    let audited = vault.rewrap(&pmk, &name, id.key(), &envelope);
    let records = vec![audited.record];
    let new = audited
        .result
        .map_err(|e| refused(ctx, id, &records, kms_error(&e)))?;
    doc.properties["encryption"] = encryption_props(Some(&key_id), &new);
    internal.data_key = Some(new.encode());
    doc.internal = serde_json::to_value(&internal).map_err(|_| ApiError::internal())?;
    doc.system_data = new_doc(ctx, id, Kind::Disk, Some(&doc), Value::Null).system_data;
    let ops = vec![
        Op::Assert {
            key: key_rec.key,
            pre: Precondition::Revision(key_rec.revision),
        },
        super::keyvault::vault_live(&key_id.parent().ok_or_else(ApiError::internal)?),
        Op::Put {
            key: id.key().to_string(),
            rtype: rec.rtype.clone(),
            parent: rec.parent.clone(),
            body: doc.to_json()?,
            pre: Precondition::Revision(rec.revision),
        },
    ];
    let committed = ctx.commit(ops, 200, details(id, &records), false)?;
    super::doc_reply(
        200,
        &doc,
        committed.revisions.get(1).copied().unwrap_or_default(),
        None,
    )
}

/// DELETE of a disk is refused while a VM uses it.
pub fn check_detached(ctx: &Ctx<'_>, id: &ResourceId) -> Result<(), ApiError> {
    let Some((_, doc)) = load(ctx, id)? else {
        return Ok(());
    };
    if let Some(vm) = doc.prop_str("managedBy")
        && let Ok(vm_id) = ResourceId::parse(vm)
        && load(ctx, &vm_id)?.is_some()
    {
        return Err(ApiError::conflict(
            "DiskAttached",
            format!(
                "disk '{}' is the OS disk of '{vm}'; delete the VM first",
                doc.id
            ),
        ));
    }
    Ok(())
}

/// A new VM's OS disk (`storageProfile.osDisk.id`): checks it (same subscription, unattached,
/// the caller may write it) and returns the write that marks it attached. The VM's own
/// properties name it; its key is the disk's (see `compute::disks::release`).
pub fn attach_os_disk(
    ctx: &Ctx<'_>,
    vm_id: &ResourceId,
    disk: &str,
) -> Result<(ResourceId, Op), ApiError> {
    let bad = || {
        ApiError::bad_request(
            "InvalidOsDisk",
            "storageProfile.osDisk.id must be a disk's id: /subscriptions/SUB/resourceGroups/RG/providers/Strata.Compute/disks/NAME",
        )
    };
    let disk_id = ResourceId::parse(disk).map_err(|_| bad())?;
    if !disk_id
        .resource_type()
        .is_some_and(|t| t.as_str().eq_ignore_ascii_case(Kind::Disk.type_name()))
        || disk_id.subscription_id() != vm_id.subscription_id()
    {
        return Err(bad());
    }
    let write = Kind::Disk.action("write");
    if !ctx
        .app
        .decide(&ctx.caller, &write, disk_id.key(), false)
        .is_allowed()
    {
        return Err(ApiError::forbidden(format!(
            "'{}' may not attach disk '{disk_id}': it needs {write} on the disk",
            ctx.caller.name
        )));
    }
    let (rec, mut doc) = load(ctx, &disk_id)?.ok_or_else(|| {
        ApiError::new(
            404,
            "DiskNotFound",
            format!("the disk '{disk_id}' was not found; create it first"),
        )
    })?;
    let holder = doc
        .prop_str("managedBy")
        .and_then(|vm| ResourceId::parse(vm).ok());
    let held = match &holder {
        Some(vm) => load(ctx, vm)?.is_some(),
        None => false,
    };
    if doc.prop_str("diskState") == Some("Attached") && held {
        return Err(ApiError::conflict(
            "DiskAttached",
            format!(
                "disk '{disk_id}' is already attached to '{}'",
                doc.prop_str("managedBy").unwrap_or_default()
            ),
        ));
    }
    if let Some(o) = doc.properties.as_object_mut() {
        o.insert("diskState".into(), json!("Attached"));
        o.insert("managedBy".into(), json!(vm_id.to_string()));
    }
    doc.system_data = new_doc(ctx, &disk_id, Kind::Disk, Some(&doc), Value::Null).system_data;
    let op = Op::Put {
        key: rec.key.clone(),
        rtype: rec.rtype.clone(),
        parent: rec.parent.clone(),
        body: doc.to_json()?,
        pre: Precondition::Revision(rec.revision),
    };
    Ok((disk_id, op))
}

/// When a VM is deleted, its OS disk (kept, as in Azure) becomes Unattached again.
pub fn detach_on_vm_delete(ctx: &Ctx<'_>, vm_id: &ResourceId) -> Result<Vec<Op>, ApiError> {
    let Some((_, vm)) = load(ctx, vm_id)? else {
        return Ok(Vec::new());
    };
    let Some(disk_key) = crate::compute::disks::os_disk_of(&vm) else {
        return Ok(Vec::new());
    };
    let Some(rec) = ctx.app.store.get(&disk_key).map_err(super::store_err)? else {
        return Ok(Vec::new());
    };
    let mut doc = Doc::parse(&rec.body)?;
    if !doc
        .prop_str("managedBy")
        .is_some_and(|m| m.eq_ignore_ascii_case(&vm.id))
    {
        return Ok(Vec::new());
    }
    if let Some(o) = doc.properties.as_object_mut() {
        o.insert("diskState".into(), json!("Unattached"));
        o.insert("managedBy".into(), Value::Null);
    }
    Ok(vec![Op::Put {
        key: rec.key.clone(),
        rtype: rec.rtype.clone(),
        parent: rec.parent.clone(),
        body: doc.to_json()?,
        pre: Precondition::Revision(rec.revision),
    }])
}
