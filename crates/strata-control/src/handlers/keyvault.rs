//! ARM handlers for `Strata.KeyVault/vaults` and `Strata.KeyVault/vaults/keys`: customer-managed
//! keys with versions, rotation, enable/disable, soft delete with purge protection, and the
//! data plane (wrapKey, unwrapKey, encrypt, decrypt, sign, verify).
//!
//! Each key resource stores, in its `internal`, a `strata_kms::Vault` document holding only
//! that key (so operations on different keys never contend), with its material sealed by the
//! subscription's platform key. `properties` are derived from that document after every
//! operation and never carry key material. The vault resource holds the settings
//! (`softDeleteRetentionInDays`, `enablePurgeProtection`), copied into each key's document when
//! it is used.
//!
//! A vault is soft-deleted too (`DELETE` of the vault): its document moves to
//! `…/providers/Strata.KeyVault/deletedVaults/NAME` in the same resource group (with its
//! deletion and scheduled purge dates) while its keys stay where they are, frozen: no key
//! operation, no release of a disk key wrapped under one of them, no rotation. `PUT` of the
//! vault with `properties.createMode: "recover"` brings it back; `POST
//! …/deletedVaults/NAME/purge` (refused under purge protection before the scheduled date) or
//! the key sweep once the date has passed removes it with its keys. Creating a vault of that
//! name meanwhile is refused.
//!
//! Management operations (PUT, DELETE = soft delete, rotate, enable, disable, recover, purge)
//! commit the key's new document together with an audit entry listing the `strata_kms` audit
//! records (operation, key id, version, outcome). Data-plane operations write nothing but
//! append the same kind of audit entry, refused or not. Neither ever records caller data.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Value, json};
use strata_kms::{
    AuditRecord, Audited, DataKey, Envelope, ErrorCode, KeyRef, KeyType, KmsError, PlatformKey,
    RotationPolicy, Signature, Vault,
};
use strata_store::{Op, Precondition};
use strata_types::{ApiError, ResourceBody, ResourceId};

use super::{Built, load, new_doc, parse_body, parse_props};
use crate::compute::{SubscriptionKeys, open_platform_key};
use crate::context::Ctx;
use crate::dispatch::{Incoming, Reply};
use crate::docs::Doc;
use crate::kinds::Kind;

const DAY: i64 = 86_400;
const DEFAULT_RETENTION_DAYS: u32 = 90;

// ---- vaults ---------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct VaultInput {
    #[serde(default)]
    soft_delete_retention_in_days: Option<u32>,
    #[serde(default)]
    enable_purge_protection: Option<bool>,
    /// `recover`: bring back the soft-deleted vault of this name (`default`: create).
    #[serde(default)]
    create_mode: Option<String>,
    // Read-only, accepted and ignored so that GET-modify-PUT works.
    #[serde(default)]
    enable_soft_delete: Option<IgnoredAny>,
    #[serde(default)]
    vault_uri: Option<IgnoredAny>,
    #[serde(default)]
    provisioning_state: Option<IgnoredAny>,
}

/// The vault's settings as stored in its properties.
fn vault_settings(doc: &Doc) -> (u32, bool) {
    let retention = doc
        .properties
        .get("softDeleteRetentionInDays")
        .and_then(Value::as_u64)
        .and_then(|d| u32::try_from(d).ok())
        .unwrap_or(DEFAULT_RETENTION_DAYS);
    let purge_protection = doc
        .properties
        .get("enablePurgeProtection")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    (retention, purge_protection)
}

/// PUT of a vault: retention 7–90 days (default 90), purge protection on unless turned off at
/// creation. Retention cannot change afterwards, and purge protection cannot be turned off.
pub fn build_vault(
    ctx: &Ctx<'_>,
    id: &ResourceId,
    existing: Option<&Doc>,
    body: ResourceBody,
) -> Result<Built, ApiError> {
    let input: VaultInput = parse_props(body.properties)?;
    let _ = (
        input.enable_soft_delete,
        input.vault_uri,
        input.provisioning_state,
    );
    let deleted_id = deleted_vault_id(id)?;
    let deleted = if existing.is_none() {
        load(ctx, &deleted_id)?
    } else {
        None
    };
    match input.create_mode.as_deref() {
        None | Some("default") => {
            if deleted.is_some() {
                return Err(ApiError::conflict(
                    "VaultAlreadySoftDeleted",
                    format!(
                        "a soft-deleted key vault of this name exists ('{deleted_id}'): recover it (PUT with properties.createMode \"recover\") or purge it first"
                    ),
                ));
            }
        }
        Some("recover") => {
            let Some((rec, gone)) = deleted else {
                return Err(ApiError::not_found(&format!(
                    "{deleted_id} (no soft-deleted key vault of this name to recover)"
                )));
            };
            let mut doc: Doc = serde_json::from_value(
                gone.internal.get("vault").cloned().unwrap_or(Value::Null),
            )
            .map_err(|_| {
                tracing::error!(vault = %deleted_id, "a deleted vault's stored document does not parse");
                ApiError::internal()
            })?;
            doc.system_data = new_doc(ctx, id, Kind::Vault, Some(&doc), Value::Null).system_data;
            return Ok(Built {
                doc,
                extra_ops: vec![Op::Delete {
                    key: rec.key,
                    pre: Precondition::Revision(rec.revision),
                }],
                reveal: None,
            });
        }
        Some(other) => {
            return Err(ApiError::bad_request(
                "InvalidCreateMode",
                format!(
                    "properties.createMode '{}' is not supported: use default or recover",
                    other.chars().take(40).collect::<String>()
                ),
            ));
        }
    }
    let before = existing.map(vault_settings);
    let retention = input
        .soft_delete_retention_in_days
        .or(before.map(|b| b.0))
        .unwrap_or(DEFAULT_RETENTION_DAYS);
    let min = strata_kms::vault::MIN_RETENTION_DAYS;
    let max = strata_kms::vault::MAX_RETENTION_DAYS;
    if !(min..=max).contains(&retention) {
        return Err(ApiError::bad_request(
            "InvalidSoftDeleteRetention",
            format!("softDeleteRetentionInDays must be {min} to {max}, got {retention}"),
        ));
    }
    let purge_protection = input
        .enable_purge_protection
        .or(before.map(|b| b.1))
        .unwrap_or(true);
    if let Some((old_retention, old_protection)) = before {
        if old_retention != retention {
            return Err(ApiError::conflict(
                "PropertyChangeNotAllowed",
                format!(
                    "softDeleteRetentionInDays cannot change after the vault is created (it is {old_retention})"
                ),
            ));
        }
        if old_protection && !purge_protection {
            return Err(ApiError::conflict(
                "PropertyChangeNotAllowed",
                "purge protection cannot be turned off once it is on",
            ));
        }
    }
    let props = json!({
        "softDeleteRetentionInDays": retention,
        "enablePurgeProtection": purge_protection,
        "enableSoftDelete": true,
        "vaultUri": id.to_string(),
        "provisioningState": "Succeeded",
    });
    Ok(Built {
        doc: new_doc(ctx, id, Kind::Vault, existing, props),
        // No soft-deleted vault of this name may appear before this commits.
        extra_ops: vec![Op::Assert {
            key: deleted_id.key().to_string(),
            pre: Precondition::MustNotExist,
        }],
        reveal: None,
    })
}

/// Where vault `id`'s document goes when it is soft-deleted.
pub fn deleted_vault_id(id: &ResourceId) -> Result<ResourceId, ApiError> {
    let rg = id.parent().ok_or_else(ApiError::internal)?;
    rg.child_provider(
        "Strata.KeyVault",
        "deletedVaults",
        id.name().unwrap_or_default(),
    )
    .map_err(|_| ApiError::internal())
}

/// `DELETE` of a vault: soft delete. The vault's document moves to `deletedVaults/NAME` with
/// its dates; its keys stay, frozen until it is recovered or purged.
pub fn soft_delete_vault(
    ctx: &Ctx<'_>,
    id: &ResourceId,
    rec: &strata_store::Record,
    doc: &Doc,
    pre: Precondition,
) -> Result<Reply, ApiError> {
    let (retention, purge_protection) = vault_settings(doc);
    let now = ctx.now();
    let purge_at = now + i64::from(retention) * DAY;
    let deleted_id = deleted_vault_id(id)?;
    let props = json!({
        "vaultId": id.to_string(),
        "deletionDate": strata_types::time::rfc3339(now),
        "scheduledPurgeDate": strata_types::time::rfc3339(purge_at),
        "purgeProtectionEnabled": purge_protection,
        "softDeleteRetentionInDays": retention,
    });
    let mut gone = new_doc(ctx, &deleted_id, Kind::DeletedVault, None, props);
    gone.location = doc.location.clone();
    gone.tags = doc.tags.clone();
    gone.internal = json!({
        "vault": serde_json::to_value(doc).map_err(|_| ApiError::internal())?,
        "scheduledPurgeAt": purge_at,
    });
    let parent = deleted_id.parent().ok_or_else(ApiError::internal)?;
    let ops = vec![
        Op::Delete {
            key: rec.key.clone(),
            pre,
        },
        Op::Put {
            key: deleted_id.key().to_string(),
            rtype: Kind::DeletedVault.type_key(),
            parent: parent.key().to_string(),
            body: gone.to_json()?,
            pre: Precondition::MustNotExist,
        },
    ];
    ctx.commit(
        ops,
        200,
        json!({ "id": id.to_string(), "deletedVault": deleted_id.to_string(), "scheduledPurgeAt": purge_at }),
        false,
    )?;
    Ok(Reply::empty(200))
}

/// The writes that purge soft-deleted vault `deleted` (its document and every key under the
/// vault's id) once `now` allows: refused under purge protection before the scheduled date.
pub fn purge_vault_ops(
    deleted_rec: &strata_store::Record,
    deleted: &Doc,
    now: i64,
) -> Result<Vec<Op>, ApiError> {
    let purge_at = deleted
        .internal
        .get("scheduledPurgeAt")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let protected = deleted
        .properties
        .get("purgeProtectionEnabled")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    if protected && now < purge_at {
        return Err(ApiError::conflict(
            "PurgeProtected",
            format!(
                "the key vault is under purge protection until {}: it can be recovered, not purged, before then",
                strata_types::time::rfc3339(purge_at)
            ),
        ));
    }
    let vault_id = deleted
        .properties
        .get("vaultId")
        .and_then(Value::as_str)
        .and_then(|v| ResourceId::parse(v).ok())
        .ok_or_else(ApiError::internal)?;
    Ok(vec![
        Op::Delete {
            key: deleted_rec.key.clone(),
            pre: Precondition::Revision(deleted_rec.revision),
        },
        // Never a live vault's keys: the vault must still be deleted.
        Op::Assert {
            key: vault_id.key().to_string(),
            pre: Precondition::MustNotExist,
        },
        // The vault's document is gone already; this takes its keys.
        Op::DeleteTree {
            key: vault_id.key().to_string(),
        },
    ])
}

/// `POST …/deletedVaults/NAME/purge`.
pub fn purge_deleted_vault(
    ctx: &Ctx<'_>,
    id: &ResourceId,
    action: &str,
) -> Result<Reply, ApiError> {
    if action != "purge" {
        return Err(ApiError::bad_request(
            "InvalidAction",
            format!("'{action}' is not an action of a deleted vault: use purge"),
        ));
    }
    let (rec, doc) = load(ctx, id)?.ok_or_else(|| ApiError::not_found(id.as_str()))?;
    let ops = purge_vault_ops(&rec, &doc, ctx.now())?;
    ctx.commit(
        ops,
        200,
        json!({ "id": id.to_string(), "purged": true }),
        false,
    )?;
    Ok(Reply::empty(200))
}

/// Refuses to delete `id` (a resource group or a vault) while it holds keys, soft-deleted ones
/// included: deleting the tree would purge them around their purge protection.
pub fn check_no_keys_under(ctx: &Ctx<'_>, id: &ResourceId) -> Result<(), ApiError> {
    let key_type = Kind::VaultKey.type_key();
    let records = ctx.app.store.list_under(id.key()).map_err(|e| {
        crate::app::log_chain("store read failed", &e);
        ApiError::internal()
    })?;
    let keys = records.iter().filter(|r| r.rtype == key_type).count();
    if keys > 0 {
        return Err(ApiError::conflict(
            "KeyVaultNotEmpty",
            format!(
                "'{id}' still holds {keys} key vault key(s), soft-deleted ones and those of deleted vaults included; purge them first (POST …/keys/K/purge, or POST …/deletedVaults/V/purge for a deleted vault; under purge protection only after the scheduled purge date)"
            ),
        ));
    }
    Ok(())
}

// ---- keys: storage and views -----------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[expect(
    dead_code,
    reason = "read-only fields are accepted and ignored so GET-modify-PUT works"
)]
struct KeyInput {
    #[serde(default)]
    kty: Option<String>,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    rotation_policy: Option<RotationPolicyInput>,
    // Read-only, accepted and ignored so that GET-modify-PUT works.
    #[serde(default)]
    key_size: Option<IgnoredAny>,
    #[serde(default)]
    curve_name: Option<IgnoredAny>,
    #[serde(default)]
    key_ops: Option<IgnoredAny>,
    #[serde(default)]
    current_version: Option<IgnoredAny>,
    #[serde(default)]
    key_uri: Option<IgnoredAny>,
    #[serde(default)]
    key_uri_with_version: Option<IgnoredAny>,
    /// `[{"version": N, "enabled": false}]`: enables or disables versions (other fields of a
    /// GET's entries are accepted and ignored).
    #[serde(default)]
    versions: Option<Vec<VersionInput>>,
    #[serde(default)]
    deleted_date: Option<IgnoredAny>,
    #[serde(default)]
    scheduled_purge_date: Option<IgnoredAny>,
    #[serde(default)]
    recovery_level: Option<IgnoredAny>,
    #[serde(default)]
    recoverable_days: Option<IgnoredAny>,
    #[serde(default)]
    provisioning_state: Option<IgnoredAny>,
}

/// `rotationPolicy`, in Azure Key Vault's shape:
/// `{"lifetimeActions": [{"trigger": {"timeAfterCreate": "P90D"}, "action": {"type": "Rotate"}},
///   {"trigger": {"timeBeforeExpiry": "P30D"}, "action": {"type": "Notify"}}],
///   "attributes": {"expiryTime": "P1Y"}}` (ISO 8601 durations), or Strata's older shorthand
/// `{"rotateEveryDays": N}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RotationPolicyInput {
    #[serde(default)]
    rotate_every_days: Option<u32>,
    #[serde(default)]
    lifetime_actions: Option<Vec<LifetimeAction>>,
    #[serde(default)]
    attributes: Option<PolicyAttributes>,
    #[serde(default)]
    id: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct LifetimeAction {
    trigger: Trigger,
    action: PolicyAction,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Trigger {
    #[serde(default)]
    time_after_create: Option<String>,
    #[serde(default)]
    time_before_expiry: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyAction {
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[expect(
    dead_code,
    reason = "read-only fields are accepted and ignored so GET-modify-PUT works"
)]
struct PolicyAttributes {
    #[serde(default)]
    expiry_time: Option<String>,
    #[serde(default)]
    created: Option<IgnoredAny>,
    #[serde(default)]
    updated: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(
    dead_code,
    reason = "read-only fields are accepted and ignored so GET-modify-PUT works"
)]
struct VersionInput {
    version: u32,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    kid: Option<IgnoredAny>,
    #[serde(default)]
    created: Option<IgnoredAny>,
    #[serde(default)]
    expires: Option<IgnoredAny>,
}

/// Refuses to disable a version some disk's or snapshot's data key is still wrapped under:
/// it would be locked. Rewrap it first (`POST …/disks/D/rewrapKey`, or let the key sweep do it).
fn check_version_unused(ctx: &Ctx<'_>, id: &ResourceId, version: u32) -> Result<(), ApiError> {
    // Snapshots keep their data key wrapped like disks (same fields).
    let mut disks = Vec::new();
    for kind in [Kind::Disk, Kind::Snapshot] {
        disks.extend(ctx.app.store.list_type(&kind.type_key()).map_err(|e| {
            crate::app::log_chain("store read failed", &e);
            ApiError::internal()
        })?);
    }
    for rec in disks {
        let doc = Doc::parse(&rec.body)?;
        if crate::compute::disks::customer_key_of(&doc).is_none_or(|k| k.key() != id.key()) {
            continue;
        }
        let internal: crate::compute::disks::DiskInternal = crate::docs::internal_of(&doc);
        let uses = internal
            .data_key
            .as_deref()
            .and_then(|t| Envelope::decode(t).ok())
            .is_some_and(|e| e.key().version == version);
        if uses && rec.rtype == Kind::Snapshot.type_key() {
            return Err(ApiError::conflict(
                "VersionInUse",
                format!(
                    "snapshot '{}' is still wrapped under version {version}; the key sweep rewraps it on its next pass, then disable that version",
                    doc.id
                ),
            ));
        }
        if uses {
            return Err(ApiError::conflict(
                "VersionInUse",
                format!(
                    "disk '{}' is still wrapped under version {version}; rewrap it (POST {}/rewrapKey) before disabling that version",
                    doc.id, doc.id
                ),
            ));
        }
    }
    Ok(())
}

fn bad_policy(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("InvalidRotationPolicy", message)
}

/// An ISO 8601 duration (`P90D`, `P1Y`, `P2M`, `P1W`, `PT12H`, `P1DT6H`) in seconds; a year is
/// 365 days and a month 30, as Key Vault counts them.
pub fn parse_duration(field: &str, text: &str) -> Result<i64, ApiError> {
    let bad = || {
        bad_policy(format!(
            "{field} must be an ISO 8601 duration such as P90D, P1Y or PT12H, got '{}'",
            text.chars().take(40).collect::<String>()
        ))
    };
    let rest = text.strip_prefix('P').ok_or_else(bad)?;
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) if !t.is_empty() => (d, Some(t)),
        Some(_) => return Err(bad()),
        None => (rest, None),
    };
    let mut total: i64 = 0;
    let mut any = false;
    for (part, units) in [
        (
            date,
            &[
                ('Y', 365 * DAY),
                ('M', 30 * DAY),
                ('W', 7 * DAY),
                ('D', DAY),
            ][..],
        ),
        (time.unwrap_or(""), &[('H', 3600), ('M', 60), ('S', 1)][..]),
    ] {
        let mut digits = String::new();
        let mut next = 0;
        for c in part.chars() {
            if c.is_ascii_digit() {
                digits.push(c);
                continue;
            }
            let at = units[next..]
                .iter()
                .position(|(u, _)| *u == c)
                .ok_or_else(bad)?;
            let (_, secs) = units[next + at];
            let n: i64 = digits.parse().map_err(|_| bad())?;
            total = n
                .checked_mul(secs)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(bad)?;
            digits.clear();
            next += at + 1;
            any = true;
        }
        if !digits.is_empty() {
            return Err(bad());
        }
    }
    if !any {
        return Err(bad());
    }
    Ok(total)
}

/// Seconds as an ISO 8601 duration: whole days as `PnD`, otherwise `PTnS`.
pub fn format_duration(secs: i64) -> String {
    if secs % DAY == 0 {
        format!("P{}D", secs / DAY)
    } else {
        format!("PT{secs}S")
    }
}

/// The most a policy duration may be (ten years).
const MAX_POLICY_SECS: i64 = 3650 * DAY;

fn rotation_policy(input: RotationPolicyInput) -> Result<RotationPolicy, ApiError> {
    let _ = input.id;
    let checked = |field: &str, text: &str| -> Result<i64, ApiError> {
        let secs = parse_duration(field, text)?;
        if !(DAY..=MAX_POLICY_SECS).contains(&secs) {
            return Err(bad_policy(format!(
                "{field} must be at least one day and at most ten years, got {text}"
            )));
        }
        Ok(secs)
    };
    let mut policy = RotationPolicy::default();
    if let Some(days) = input.rotate_every_days {
        if days == 0 || i64::from(days) * DAY > MAX_POLICY_SECS {
            return Err(bad_policy(format!(
                "rotationPolicy.rotateEveryDays must be 1 to 3650, got {days}"
            )));
        }
        if input.lifetime_actions.is_some() {
            return Err(bad_policy(
                "give rotateEveryDays or lifetimeActions, not both",
            ));
        }
        policy.rotate_after_secs = Some(i64::from(days) * DAY);
    }
    for action in input.lifetime_actions.unwrap_or_default() {
        let trigger = match (
            action.trigger.time_after_create.as_deref(),
            action.trigger.time_before_expiry.as_deref(),
        ) {
            (Some(t), None) => (true, checked("timeAfterCreate", t)?),
            (None, Some(t)) => (false, checked("timeBeforeExpiry", t)?),
            _ => {
                return Err(bad_policy(
                    "each lifetime action's trigger needs exactly one of timeAfterCreate and timeBeforeExpiry",
                ));
            }
        };
        let slot = match (action.action.kind.to_ascii_lowercase().as_str(), trigger.0) {
            ("rotate", true) => &mut policy.rotate_after_secs,
            ("rotate", false) => &mut policy.rotate_before_expiry_secs,
            ("notify", false) => &mut policy.notify_before_expiry_secs,
            ("notify", true) => {
                return Err(bad_policy(
                    "a Notify action is triggered by timeBeforeExpiry",
                ));
            }
            _ => {
                return Err(bad_policy(format!(
                    "lifetime action type '{}' is not supported: use Rotate or Notify",
                    action.action.kind.chars().take(20).collect::<String>()
                )));
            }
        };
        if slot.replace(trigger.1).is_some() {
            return Err(bad_policy(
                "a rotation policy has at most one Rotate and one Notify action",
            ));
        }
    }
    if policy.rotate_after_secs.is_some() && policy.rotate_before_expiry_secs.is_some() {
        return Err(bad_policy(
            "a rotation policy has at most one Rotate action",
        ));
    }
    if let Some(expiry) = input.attributes.and_then(|a| a.expiry_time) {
        policy.expiry_secs = Some(checked("expiryTime", &expiry)?);
    }
    Ok(policy)
}

/// A policy in the shape it was given (Azure's).
fn rotation_policy_view(policy: &RotationPolicy) -> Value {
    let mut actions = Vec::new();
    if let Some(s) = policy.rotate_after_secs {
        actions.push(json!({ "trigger": { "timeAfterCreate": format_duration(s) }, "action": { "type": "Rotate" } }));
    }
    if let Some(s) = policy.rotate_before_expiry_secs {
        actions.push(json!({ "trigger": { "timeBeforeExpiry": format_duration(s) }, "action": { "type": "Rotate" } }));
    }
    if let Some(s) = policy.notify_before_expiry_secs {
        actions.push(json!({ "trigger": { "timeBeforeExpiry": format_duration(s) }, "action": { "type": "Notify" } }));
    }
    json!({
        "lifetimeActions": actions,
        "attributes": { "expiryTime": policy.expiry_secs.map(format_duration) },
    })
}

fn parse_kty(kty: Option<&str>) -> Result<Option<KeyType>, ApiError> {
    Ok(match kty {
        None => None,
        Some(k) if k.eq_ignore_ascii_case("oct") || k.eq_ignore_ascii_case("oct-HSM") => {
            Some(KeyType::Oct)
        }
        Some(k) if k.eq_ignore_ascii_case("EC") || k.eq_ignore_ascii_case("EC-HSM") => {
            Some(KeyType::Ec)
        }
        Some(k) => {
            return Err(ApiError::bad_request(
                "InvalidKeyType",
                format!(
                    "kty '{}' is not supported: use 'oct' (AES-256-GCM) or 'EC' (P-256)",
                    k.chars().take(20).collect::<String>()
                ),
            ));
        }
    })
}

/// `internal` of a key: a vault document holding just this key.
fn stored_vault(doc: &Doc) -> Result<Vault, ApiError> {
    doc.internal
        .get("vault")
        .cloned()
        .and_then(|v| serde_json::from_value(v).ok())
        .ok_or_else(|| {
            tracing::error!(key = %doc.id, "a key's stored vault document does not parse");
            ApiError::internal()
        })
}

/// The vault settings as they are now: purge protection, once on in the vault, is on for
/// every key in it.
fn apply_vault_settings(
    ctx: &Ctx<'_>,
    vault_id: &ResourceId,
    vault: &mut Vault,
) -> Result<(), ApiError> {
    let Some((_, vdoc)) = load(ctx, vault_id)? else {
        return Err(vault_deleted(vault_id));
    };
    if vault_settings(&vdoc).1 {
        vault.enable_purge_protection();
    }
    Ok(())
}

/// Asserted in every commit that uses or changes a key: its vault is still there (a vault
/// soft-deleted meanwhile freezes its keys; the commit then fails instead).
pub fn vault_live(vault_id: &ResourceId) -> Op {
    Op::Assert {
        key: vault_id.key().to_string(),
        pre: Precondition::MustExist,
    }
}

/// A key whose vault is soft-deleted (or gone) is frozen.
fn vault_deleted(vault_id: &ResourceId) -> ApiError {
    ApiError::conflict(
        "VaultDeleted",
        format!(
            "the key vault '{vault_id}' is deleted: recover it (PUT with properties.createMode \"recover\") to use its keys"
        ),
    )
}

fn vault_of(id: &ResourceId) -> Result<ResourceId, ApiError> {
    let parent = id.parent().ok_or_else(ApiError::internal)?;
    Kind::VaultKey
        .check_parent(&parent)
        .map_err(|m| ApiError::bad_request("InvalidResourceLocation", m))?;
    Ok(parent)
}

/// The key's name inside its vault document (lowercase, like its storage key).
fn key_name(id: &ResourceId) -> String {
    id.name().unwrap_or_default().to_ascii_lowercase()
}

/// A key version's public id: `{key resource id}/{version}` (Azure's `kid`).
fn kid(id: &ResourceId, version: u32) -> String {
    format!("{id}/{version}")
}

fn key_doc(
    ctx: &Ctx<'_>,
    id: &ResourceId,
    existing: Option<&Doc>,
    vault: &Vault,
) -> Result<Doc, ApiError> {
    let props = key_properties(id, vault)?;
    let mut doc = new_doc(ctx, id, Kind::VaultKey, existing, props);
    doc.internal = internal_with(existing.map(|d| &d.internal), vault)?;
    Ok(doc)
}

/// A key's `internal`: its vault document, and what else the earlier one held (the key
/// sweep's record of near-expiry notices, `keysweep`).
fn internal_with(earlier: Option<&Value>, vault: &Vault) -> Result<Value, ApiError> {
    let mut internal = earlier
        .filter(|v| v.is_object())
        .cloned()
        .unwrap_or_else(|| json!({}));
    internal["vault"] = serde_json::to_value(vault).map_err(|_| ApiError::internal())?;
    Ok(internal)
}

/// A key's stored document after a change made outside a request (the key sweep): its
/// properties and vault document from `vault`, modified by `by`.
pub fn key_doc_by(id: &ResourceId, doc: &Doc, vault: &Vault, by: &str) -> Result<Doc, ApiError> {
    let mut out = doc.clone();
    out.properties = key_properties(id, vault)?;
    out.internal = internal_with(Some(&doc.internal), vault)?;
    out.system_data.last_modified_by = by.to_string();
    out.system_data.last_modified_at = strata_types::time::now_rfc3339();
    Ok(out)
}

/// A key's stored vault document.
pub fn stored_vault_of(doc: &Doc) -> Result<Vault, ApiError> {
    stored_vault(doc)
}

fn key_properties(id: &ResourceId, vault: &Vault) -> Result<Value, ApiError> {
    let key = vault.key(&key_name(id)).ok_or_else(ApiError::internal)?;
    let versions: Vec<Value> = key
        .versions()
        .iter()
        .map(|v| {
            json!({
                "version": v.version(),
                "kid": kid(id, v.version()),
                "created": strata_types::time::rfc3339(v.created()),
                "expires": v.expires().map(strata_types::time::rfc3339),
                "enabled": v.enabled(),
            })
        })
        .collect();
    let (size, ops) = match key.kty() {
        KeyType::Oct => (
            json!({ "keySize": 256 }),
            json!(["wrapKey", "unwrapKey", "encrypt", "decrypt"]),
        ),
        KeyType::Ec => (json!({ "curveName": "P-256" }), json!(["sign", "verify"])),
    };
    let deleted = key.deleted();
    let mut props = json!({
        "kty": key.kty().as_str(),
        "keyOps": ops,
        "enabled": key.enabled(),
        "rotationPolicy": key.rotation_policy().as_ref().map(rotation_policy_view),
        "currentVersion": key.current_version(),
        "keyUri": id.to_string(),
        "keyUriWithVersion": kid(id, key.current_version()),
        "versions": versions,
        "deletedDate": deleted.map(|d| strata_types::time::rfc3339(d.deleted_at)),
        "scheduledPurgeDate": deleted.map(|d| strata_types::time::rfc3339(d.scheduled_purge_at)),
        "recoveryLevel": if vault.purge_protection() { "Recoverable" } else { "Recoverable+Purgeable" },
        "recoverableDays": vault.soft_delete_retention_days(),
        "provisioningState": "Succeeded",
    });
    if let (Some(o), Value::Object(extra)) = (props.as_object_mut(), size) {
        o.extend(extra);
    }
    Ok(props)
}

/// The subscription's platform key, which seals every key version's material; created (with
/// the write that stores it) for a subscription made before subscriptions had one.
fn platform_key(ctx: &Ctx<'_>, id: &ResourceId) -> Result<(PlatformKey, Option<Op>), ApiError> {
    let sub_id = ResourceId::subscription(id.subscription_id().unwrap_or_default())
        .map_err(|_| ApiError::internal())?;
    let (sub_rec, mut sub_doc) =
        load(ctx, &sub_id)?.ok_or_else(|| ApiError::not_found(sub_id.as_str()))?;
    let keys: SubscriptionKeys = crate::docs::internal_of(&sub_doc);
    if let Some(stored) = &keys.platform_key {
        return Ok((
            open_platform_key(&ctx.app.root, sub_id.key(), stored)?,
            None,
        ));
    }
    let (pmk, wrapped) = ctx
        .app
        .root
        .kms()
        .create_platform_key(sub_id.key(), 1)
        .map_err(|_| ApiError::internal())?;
    let mut internal = match sub_doc.internal.take() {
        Value::Object(o) => o,
        _ => serde_json::Map::new(),
    };
    internal.insert(
        "platformKey".into(),
        serde_json::to_value(&wrapped).map_err(|_| ApiError::internal())?,
    );
    sub_doc.internal = Value::Object(internal);
    let op = Op::Put {
        key: sub_rec.key.clone(),
        rtype: sub_rec.rtype.clone(),
        parent: sub_rec.parent.clone(),
        body: sub_doc.to_json()?,
        pre: Precondition::Revision(sub_rec.revision),
    };
    Ok((pmk, Some(op)))
}

// ---- audit and errors ------------------------------------------------------------------------

/// The HTTP answer for a refused or failed key operation, with the stable code.
fn kms_error(e: &KmsError) -> ApiError {
    let code = e.code();
    let status = match code {
        ErrorCode::InvalidArgument
        | ErrorCode::WrongKeyType
        | ErrorCode::WrongKey
        | ErrorCode::MalformedEnvelope
        | ErrorCode::AuthenticationFailed => 400,
        ErrorCode::KeyNotFound | ErrorCode::VersionNotFound => 404,
        ErrorCode::KeyAlreadyExists
        | ErrorCode::KeyDeleted
        | ErrorCode::KeyNotDeleted
        | ErrorCode::KeyDisabled
        | ErrorCode::VersionDisabled
        | ErrorCode::KeyExpired
        | ErrorCode::PurgeProtected
        | ErrorCode::RotationIncomplete => 409,
        ErrorCode::CryptoFailure => 500,
    };
    let message = match e {
        KmsError::PurgeProtected { key, until } => format!(
            "key {key} is purge-protected until {} (the vault's soft-delete retention); it can be recovered, but not purged before then",
            strata_types::time::rfc3339(*until)
        ),
        other => other.to_string(),
    };
    ApiError::new(status, code.as_str(), message)
}

fn audit_details(id: &ResourceId, operation: &str, records: &[AuditRecord]) -> Value {
    json!({ "id": id.to_string(), "operation": operation, "keyOperations": records })
}

/// Collects the audit records of one request's key operations; a refusal is audited (with every
/// record so far) and becomes the request's error.
struct Trail<'c, 'a> {
    ctx: &'c Ctx<'a>,
    id: &'c ResourceId,
    operation: &'c str,
    records: Vec<AuditRecord>,
}

impl<'c, 'a> Trail<'c, 'a> {
    fn new(ctx: &'c Ctx<'a>, id: &'c ResourceId, operation: &'c str) -> Self {
        Trail {
            ctx,
            id,
            operation,
            records: Vec::new(),
        }
    }

    fn take<T>(&mut self, audited: Audited<T>) -> Result<T, ApiError> {
        self.records.push(audited.record);
        audited.result.map_err(|e| self.refuse(&kms_error(&e)))
    }

    /// Audits the request as refused with `err` and returns it.
    fn refuse(&self, err: &ApiError) -> ApiError {
        self.audit("failure", err.status);
        err.clone()
    }

    /// An audit entry without a write (data-plane operations, refusals).
    fn audit(&self, outcome: &str, status: u16) {
        self.ctx.app.audit_only(vec![self.ctx.entry(
            "keyOperation",
            outcome,
            status,
            self.details(),
        )]);
        self.ctx.audited.set(true);
    }

    fn details(&self) -> Value {
        audit_details(self.id, self.operation, &self.records)
    }
}

// ---- keys: management ------------------------------------------------------------------------

/// PUT or PATCH of a key: creates it (version 1, material sealed by the subscription's
/// platform key) or changes what may change (`enabled`, `rotationPolicy`); `kty` is fixed.
pub fn put_key(
    ctx: &Ctx<'_>,
    id: &ResourceId,
    req: &Incoming<'_>,
    patch: bool,
) -> Result<Reply, ApiError> {
    let mut body: ResourceBody = parse_body(req.body)?;
    super::check_envelope(&body, id, Kind::VaultKey)?;
    let vault_id = vault_of(id)?;
    let Some((_, vault_doc)) = load(ctx, &vault_id)? else {
        return Err(ApiError::new(
            404,
            "ParentResourceNotFound",
            format!("the key vault '{vault_id}' was not found; create it first"),
        ));
    };
    let existing = load(ctx, id)?;
    let pre = super::precondition(req, existing.as_ref().map(|(r, _)| r))?;
    if patch {
        let Some((_, doc)) = &existing else {
            return Err(ApiError::not_found(id.as_str()));
        };
        super::patch_onto(&mut body, doc);
    }
    let input: KeyInput = parse_props(body.properties)?;
    let kty = parse_kty(input.kty.as_deref())?;
    let policy = input.rotation_policy.map(rotation_policy).transpose()?;
    let name = key_name(id);
    let now = ctx.now();
    let operation = if existing.is_some() {
        "updateKey"
    } else {
        "createKey"
    };
    let mut trail = Trail::new(ctx, id, operation);
    let mut extra_ops = Vec::new();
    let vault = match &existing {
        None => {
            let (retention, purge_protection) = vault_settings(&vault_doc);
            let mut vault = Vault::new(vault_id.key(), retention, purge_protection)
                .map_err(|e| trail.refuse(&kms_error(&e)))?;
            let (pmk, sub_op) = platform_key(ctx, id)?;
            extra_ops.extend(sub_op);
            let kty = kty.unwrap_or(KeyType::Oct);
            trail.take(vault.create_key(&pmk, &name, kty, policy, now))?;
            if input.enabled == Some(false) {
                trail.take(vault.disable(&name))?;
            }
            vault
        }
        Some((_, doc)) => {
            let mut vault = stored_vault(doc)?;
            apply_vault_settings(ctx, &vault_id, &mut vault)?;
            let key = vault.key(&name).ok_or_else(ApiError::internal)?;
            if key.deleted().is_some() {
                return Err(trail.refuse(&kms_error(&KmsError::KeyDeleted {
                    key: vault.key_id(&name),
                })));
            }
            if kty.is_some_and(|k| k != key.kty()) {
                return Err(trail.refuse(&ApiError::conflict(
                    "PropertyChangeNotAllowed",
                    format!(
                        "a key's kty cannot change (it is {}); create another key",
                        key.kty()
                    ),
                )));
            }
            let (enabled, old_policy) = (key.enabled(), key.rotation_policy());
            match input.enabled {
                Some(true) if !enabled => trail.take(vault.enable(&name))?,
                Some(false) if enabled => trail.take(vault.disable(&name))?,
                _ => {}
            }
            if policy != old_policy {
                trail.take(vault.set_rotation_policy(&name, policy))?;
            }
            // Version cleanup after a rotation: disabling an old version is allowed once no
            // disk is wrapped under it.
            for v in input.versions.unwrap_or_default() {
                let Some(want) = v.enabled else { continue };
                let current = vault
                    .key(&name)
                    .and_then(|k| k.version(v.version))
                    .map(|kv| kv.enabled());
                if current == Some(want) {
                    continue;
                }
                let is_current = vault
                    .key(&name)
                    .is_some_and(|k| k.current_version() == v.version);
                if !want && !is_current {
                    check_version_unused(ctx, id, v.version).map_err(|e| trail.refuse(&e))?;
                }
                trail.take(vault.set_version_enabled(&name, v.version, want))?;
            }
            vault
        }
    };
    let mut doc = key_doc(ctx, id, existing.as_ref().map(|(_, d)| d), &vault)?;
    if let Some(t) = body.tags.take() {
        doc.tags = t;
    }
    let mut ops = vec![
        Op::Assert {
            key: vault_id.key().to_string(),
            pre: Precondition::MustExist,
        },
        Op::Put {
            key: id.key().to_string(),
            rtype: Kind::VaultKey.type_key(),
            parent: vault_id.key().to_string(),
            body: doc.to_json()?,
            pre,
        },
    ];
    ops.extend(extra_ops);
    let status = if existing.is_some() { 200 } else { 201 };
    let committed = ctx.commit(ops, status, trail.details(), false)?;
    let rev = committed.revisions.get(1).copied().unwrap_or_default();
    super::doc_reply(status, &doc, rev, None)
}

/// DELETE of a key: a soft delete. The key refuses every operation but `recover` and `purge`
/// until the vault's retention has passed; it is hidden from lists unless asked for.
pub fn delete_key(ctx: &Ctx<'_>, id: &ResourceId, req: &Incoming<'_>) -> Result<Reply, ApiError> {
    let Some((rec, doc)) = load(ctx, id)? else {
        return Ok(Reply::empty(204));
    };
    let pre = super::precondition(req, Some(&rec))?;
    let vault_id = vault_of(id)?;
    let mut vault = stored_vault(&doc)?;
    apply_vault_settings(ctx, &vault_id, &mut vault)?;
    let mut trail = Trail::new(ctx, id, "delete");
    trail.take(vault.delete(&key_name(id), ctx.now()))?;
    let doc = key_doc(ctx, id, Some(&doc), &vault)?;
    let ops = vec![
        Op::Put {
            key: id.key().to_string(),
            rtype: rec.rtype.clone(),
            parent: rec.parent.clone(),
            body: doc.to_json()?,
            pre,
        },
        vault_live(&vault_id),
    ];
    let committed = ctx.commit(ops, 200, trail.details(), false)?;
    super::doc_reply(
        200,
        &doc,
        committed.revisions.first().copied().unwrap_or_default(),
        None,
    )
}

/// Lists a vault's keys; soft-deleted ones only with `?includeDeleted=true`.
pub fn list_keys(
    ctx: &Ctx<'_>,
    parent: &ResourceId,
    query: Option<&str>,
) -> Result<Reply, ApiError> {
    if load(ctx, parent)?.is_none() {
        return Err(ApiError::not_found(parent.as_str()));
    }
    let include_deleted = query.is_some_and(|q| {
        q.split('&')
            .any(|p| p.eq_ignore_ascii_case("includeDeleted=true"))
    });
    let mut reply = super::list(ctx, parent, Kind::VaultKey)?;
    if !include_deleted
        && let Some(Value::Array(items)) = reply.body.as_mut().and_then(|b| b.get_mut("value"))
    {
        items.retain(|item| {
            item.pointer("/properties/deletedDate")
                .is_none_or(Value::is_null)
        });
    }
    Ok(reply)
}

/// POST actions on a key: management (rotate, enable, disable, recover, purge) and data plane.
pub fn key_action(
    ctx: &Ctx<'_>,
    id: &ResourceId,
    action: &str,
    req: &Incoming<'_>,
) -> Result<Reply, ApiError> {
    let (rec, doc) = load(ctx, id)?.ok_or_else(|| ApiError::not_found(id.as_str()))?;
    let vault_id = vault_of(id)?;
    let mut vault = stored_vault(&doc)?;
    apply_vault_settings(ctx, &vault_id, &mut vault)?;
    if Kind::VaultKey.post_action_is_data(action) {
        return data_operation(ctx, id, &vault, action, req.body);
    }
    let name = key_name(id);
    let now = ctx.now();
    let mut trail = Trail::new(ctx, id, action);
    let mut extra_ops = Vec::new();
    match action {
        "rotate" => {
            let (pmk, sub_op) = platform_key(ctx, id)?;
            extra_ops.extend(sub_op);
            trail.take(vault.begin_rotation(&pmk, &name, now))?;
            // The control plane stores nothing wrapped under API-managed keys (callers hold
            // their own ciphertexts), so the rotation finishes at once; the versions it
            // replaced stay enabled so that those ciphertexts still open, as in Azure.
            let replaced = trail.take(vault.finish_rotation(&name, std::iter::empty()))?;
            for version in replaced {
                trail.take(vault.set_version_enabled(&name, version, true))?;
            }
        }
        "enable" => trail.take(vault.enable(&name))?,
        "disable" => trail.take(vault.disable(&name))?,
        "recover" => trail.take(vault.recover(&name))?,
        "purge" => {
            trail.take(vault.purge(&name, now))?;
            let ops = vec![
                Op::Delete {
                    key: id.key().to_string(),
                    pre: Precondition::Revision(rec.revision),
                },
                vault_live(&vault_id),
            ];
            ctx.commit(ops, 200, trail.details(), false)?;
            return Ok(Reply::empty(204));
        }
        _ => {
            return Err(ApiError::bad_request(
                "InvalidAction",
                format!(
                    "'{action}' is not an action of {}",
                    Kind::VaultKey.type_name()
                ),
            ));
        }
    }
    let doc = key_doc(ctx, id, Some(&doc), &vault)?;
    let mut ops = vec![Op::Put {
        key: id.key().to_string(),
        rtype: rec.rtype.clone(),
        parent: rec.parent.clone(),
        body: doc.to_json()?,
        pre: Precondition::Revision(rec.revision),
    }];
    ops.extend(extra_ops);
    ops.push(vault_live(&vault_id));
    let committed = ctx.commit(ops, 200, trail.details(), false)?;
    super::doc_reply(
        200,
        &doc,
        committed.revisions.first().copied().unwrap_or_default(),
        None,
    )
}

// ---- keys: data plane ------------------------------------------------------------------------

/// A data-plane request body, after Azure Key Vault's key operations: `value` (and `aad`,
/// `message`) are base64url without padding.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyOperationBody {
    #[serde(default)]
    alg: Option<String>,
    value: String,
    /// encrypt/decrypt: associated data (AES-GCM).
    #[serde(default)]
    aad: Option<String>,
    /// verify: the signed message (`value` is the signature).
    #[serde(default)]
    message: Option<String>,
    /// verify: the key version that signed (`…/keys/K/VERSION`); the current one by default.
    #[serde(default)]
    kid: Option<String>,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(field: &str, text: &str) -> Result<zeroize::Zeroizing<Vec<u8>>, ApiError> {
    URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map(zeroize::Zeroizing::new)
        .map_err(|_| {
            ApiError::bad_request(
                "InvalidRequestContent",
                format!("'{field}' must be base64url"),
            )
        })
}

fn check_alg(alg: Option<&str>, want: &str) -> Result<(), ApiError> {
    match alg {
        None => Ok(()),
        Some(a) if a.eq_ignore_ascii_case(want) => Ok(()),
        Some(a) => Err(ApiError::bad_request(
            "InvalidAlgorithm",
            format!(
                "alg '{}' is not supported for this operation: use '{want}'",
                a.chars().take(20).collect::<String>()
            ),
        )),
    }
}

fn envelope(text: &str) -> Result<Envelope, ApiError> {
    let bytes = unb64("value", text)?;
    Envelope::from_bytes(&bytes).map_err(|e| kms_error(&KmsError::MalformedEnvelope(e)))
}

/// The version a `kid` names, checked to be a version of this key.
fn kid_version(id: &ResourceId, kid: &str) -> Result<u32, ApiError> {
    let bad = || {
        ApiError::bad_request(
            "WrongKey",
            format!("kid must be a version of this key: {id}/VERSION"),
        )
    };
    let (base, version) = kid.rsplit_once('/').ok_or_else(bad)?;
    if !base.eq_ignore_ascii_case(id.as_str()) {
        return Err(bad());
    }
    version.parse().map_err(|_| bad())
}

/// wrapKey, unwrapKey, encrypt, decrypt, sign, verify. Writes nothing; audited either way.
fn data_operation(
    ctx: &Ctx<'_>,
    id: &ResourceId,
    vault: &Vault,
    action: &str,
    body: &[u8],
) -> Result<Reply, ApiError> {
    let mut trail = Trail::new(ctx, id, action);
    let result = data_operation_inner(ctx, id, vault, action, body, &mut trail);
    match &result {
        Ok(_) => trail.audit("success", 200),
        Err(e) => trail.audit("failure", e.status),
    }
    result.map(|v| Reply::json(200, v))
}

fn data_operation_inner(
    ctx: &Ctx<'_>,
    id: &ResourceId,
    vault: &Vault,
    action: &str,
    body: &[u8],
    trail: &mut Trail<'_, '_>,
) -> Result<Value, ApiError> {
    let req: KeyOperationBody = parse_body(body)?;
    let name = key_name(id);
    // Records only: the caller audits the request once, whatever the result.
    let version_of = |r: &KeyRef| kid(id, r.version);
    // New ciphertext or signatures need a current version that has not expired.
    let producing = match action {
        "wrapKey" => Some(strata_kms::Operation::WrapKey),
        "encrypt" => Some(strata_kms::Operation::Encrypt),
        "sign" => Some(strata_kms::Operation::Sign),
        _ => None,
    };
    if let Some(op) = producing {
        let checked = vault.check_unexpired(&name, op, ctx.now());
        if let Err(e) = checked.result {
            trail.records.push(checked.record);
            return Err(kms_error(&e));
        }
    }
    match action {
        "wrapKey" | "encrypt" => {
            check_alg(req.alg.as_deref(), "A256GCM")?;
            let plaintext = unb64("value", &req.value)?;
            let (pmk, _) = platform_key(ctx, id)?;
            let audited = if action == "wrapKey" {
                let dek = DataKey::from_bytes(&plaintext).map_err(|e| kms_error(&e))?;
                vault.wrap_key(&pmk, &name, id.key(), &dek)
            } else {
                let aad = match &req.aad {
                    Some(a) => unb64("aad", a)?,
                    None => zeroize::Zeroizing::new(Vec::new()),
                };
                vault.encrypt(&pmk, &name, &plaintext, &aad)
            };
            trail.records.push(audited.record);
            let env = audited.result.map_err(|e| kms_error(&e))?;
            Ok(
                json!({ "kid": version_of(env.key()), "alg": "A256GCM", "value": b64(&env.to_bytes()) }),
            )
        }
        "unwrapKey" => {
            check_alg(req.alg.as_deref(), "A256GCM")?;
            let env = envelope(&req.value)?;
            let (pmk, _) = platform_key(ctx, id)?;
            let audited = vault.unwrap_key(&pmk, &name, id.key(), &env);
            trail.records.push(audited.record);
            let dek = audited.result.map_err(|e| kms_error(&e))?;
            Ok(json!({ "kid": version_of(env.key()), "value": b64(dek.expose_secret()) }))
        }
        "decrypt" => {
            check_alg(req.alg.as_deref(), "A256GCM")?;
            let env = envelope(&req.value)?;
            let aad = match &req.aad {
                Some(a) => unb64("aad", a)?,
                None => zeroize::Zeroizing::new(Vec::new()),
            };
            let (pmk, _) = platform_key(ctx, id)?;
            let audited = vault.decrypt(&pmk, &name, &env, &aad);
            trail.records.push(audited.record);
            let plaintext = audited.result.map_err(|e| kms_error(&e))?;
            Ok(json!({ "kid": version_of(env.key()), "value": b64(plaintext.expose_secret()) }))
        }
        "sign" => {
            check_alg(req.alg.as_deref(), "ES256")?;
            let message = unb64("value", &req.value)?;
            let (pmk, _) = platform_key(ctx, id)?;
            let audited = vault.sign(&pmk, &name, &message);
            trail.records.push(audited.record);
            let sig = audited.result.map_err(|e| kms_error(&e))?;
            Ok(json!({ "kid": version_of(&sig.key), "alg": "ES256", "value": b64(&sig.value) }))
        }
        "verify" => {
            check_alg(req.alg.as_deref(), "ES256")?;
            let message = unb64(
                "message",
                req.message.as_deref().ok_or_else(|| {
                    ApiError::bad_request(
                        "InvalidRequestContent",
                        "verify needs 'message' (the signed bytes) and 'value' (the signature)",
                    )
                })?,
            )?;
            let current = vault.key(&name).map(|k| k.current_version()).unwrap_or(1);
            let version = match &req.kid {
                Some(k) => kid_version(id, k)?,
                None => current,
            };
            let signature = Signature {
                key: KeyRef::new(vault.key_id(&name), version),
                value: unb64("value", &req.value)?.to_vec(),
            };
            let audited = vault.verify(&name, &message, &signature);
            trail.records.push(audited.record);
            let ok = audited.result.map_err(|e| kms_error(&e))?;
            Ok(json!({ "kid": kid(id, version), "value": ok }))
        }
        _ => Err(ApiError::bad_request(
            "InvalidAction",
            format!("'{action}' is not a key operation"),
        )),
    }
}
