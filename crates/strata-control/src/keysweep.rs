//! The key vault sweep: a background duty (once a minute, on the checkpointer's tick) that
//! rotates keys whose rotation policy is due, moves the disks those keys wrap to the key's
//! current version, and purges soft-deleted keys whose retention has elapsed.
//!
//! ```text
//!  for each key vault key, at `now`:
//!    soft-deleted, scheduledPurgeDate <= now ──▶ purge: delete the key resource      (audited)
//!    live, enabled, rotation policy due ───────▶ rotate (phase 1): a new current version; the
//!                                                 versions it replaces stay enabled, as with
//!                                                 POST …/rotate; commit the key     (audited)
//!    each disk it wraps under an older version ─▶ rewrap (phase 2): commit the disk's new
//!                                                 envelope with the key's revision
//!                                                 asserted unchanged                (audited)
//!    live, enabled, its current version within ─▶ notify: an audit entry
//!    the policy's Notify timeBeforeExpiry           `…/keys/nearExpiry/action`, once per
//!                                                 version (recorded in the key's internal)
//! ```
//!
//! The notice is Azure's `KeyNearExpiry` event on Strata's event channel, the audit log (what
//! `strata audit list` shows and a SIEM export carries).
//!
//! Every action is its own transaction carrying its own audit entry (principal
//! `strata-system`), guarded by the revision it read: two replicas sweeping at once cannot
//! rotate a key twice (the second commit conflicts and is skipped until the next sweep). A crash
//! between the phases, or between disks, leaves each disk under a version that is still enabled,
//! so nothing is lost; the next sweep (or `POST …/disks/D/rewrapKey`) finishes the job.
//!
//! Old versions are not disabled when no disk uses them any more: callers of the data plane
//! may hold ciphertexts under them (Azure keeps them enabled too). Disabling one is an explicit
//! `PATCH` of the key's `versions[].enabled`, refused (`VersionInUse`) while a disk is still
//! wrapped under that version.
//!
//! `now` is an argument, so tests drive the sweep with a clock of their choosing.

use serde_json::{Value, json};
use strata_audit::AuditEntry;
use strata_kms::{AuditRecord, Envelope, Vault};
use strata_store::{Batch, Op, Precondition, Record};
use strata_types::{ApiError, ResourceId};

use crate::app::{App, log_chain};
use crate::compute::disks::{DiskInternal, customer_key_of, platform_key};
use crate::docs::Doc;
use crate::handlers::keyvault::{key_doc_by, stored_vault_of};
use crate::kinds::Kind;

/// How often the checkpointer runs the sweep.
pub const INTERVAL_SECS: u64 = 60;

const SYSTEM: &str = "strata-system";

/// What one sweep did (ids of the resources acted on).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    pub rotated: Vec<String>,
    pub rewrapped: Vec<String>,
    pub purged: Vec<String>,
    /// Keys whose current version entered its Notify window (noticed once per version).
    pub notified: Vec<String>,
    /// Actions that failed or conflicted, with the reason (retried on the next sweep).
    pub failed: Vec<String>,
}

/// Runs one sweep at `now` (Unix seconds). Never fails as a whole: each key is independent.
pub fn sweep(app: &App, now: i64) -> SweepReport {
    let mut report = SweepReport::default();
    let keys = match app.store.list_type(&Kind::VaultKey.type_key()) {
        Ok(k) => k,
        Err(e) => {
            log_chain("key sweep: store read failed", &e);
            return report;
        }
    };
    for rec in keys {
        // A soft-deleted vault's keys are frozen (its purge takes them).
        let vault_key = rec.key.rsplit_once("/keys/").map(|(v, _)| v.to_owned());
        if vault_key.is_some_and(|v| !matches!(app.store.get(&v), Ok(Some(_)))) {
            continue;
        }
        if let Err(e) = sweep_key(app, &rec, now, &mut report) {
            tracing::warn!(key = %rec.key, error = %e.message, "key sweep: skipped a key");
            report.failed.push(format!("{}: {}", rec.key, e.message));
        }
    }
    purge_deleted_vaults(app, now, &mut report);
    if report != SweepReport::default() {
        tracing::info!(
            rotated = report.rotated.len(),
            rewrapped = report.rewrapped.len(),
            purged = report.purged.len(),
            notified = report.notified.len(),
            failed = report.failed.len(),
            "key sweep"
        );
    }
    report
}

fn entry(
    action: &str,
    scope: &str,
    outcome: (&str, u16),
    reason: &str,
    details: Value,
) -> AuditEntry {
    AuditEntry {
        seq: 0,
        time: strata_types::time::now_rfc3339(),
        request_id: format!("keysweep-{}", uuid::Uuid::new_v4().simple()),
        principal_id: None,
        principal_name: Some(SYSTEM.into()),
        client_ip: None,
        category: "keyOperation".into(),
        action: action.into(),
        scope: scope.into(),
        outcome: outcome.0.into(),
        status: outcome.1,
        reason: reason.into(),
        details,
    }
}

fn details(id: &str, operation: &str, records: &[AuditRecord]) -> Value {
    json!({ "id": id, "operation": operation, "keyOperations": records })
}

/// Takes an audited step's record; on failure, audits the refusal and returns it.
fn take<T>(
    app: &App,
    records: &mut Vec<AuditRecord>,
    audited: strata_kms::Audited<T>,
    (action, id, operation, reason): (&str, &str, &str, &str),
) -> Result<T, ApiError> {
    records.push(audited.record);
    audited.result.map_err(|e| {
        app.audit_only(vec![entry(
            action,
            id,
            ("failure", 500),
            &format!("{reason}: {e}"),
            details(id, operation, records),
        )]);
        ApiError::new(500, e.code().as_str(), e.to_string())
    })
}

fn sweep_key(app: &App, rec: &Record, now: i64, report: &mut SweepReport) -> Result<(), ApiError> {
    let doc = Doc::parse(&rec.body)?;
    let id = ResourceId::parse(&doc.id).map_err(|_| ApiError::internal())?;
    let mut vault = stored_vault_of(&doc)?;
    let name = id.name().unwrap_or_default().to_ascii_lowercase();
    let Some(key) = vault.key(&name) else {
        return Ok(());
    };
    let mut records = Vec::new();

    if key.deleted().is_some_and(|d| d.scheduled_purge_at <= now) {
        let action = Kind::VaultKey.action("purge/action");
        let reason = "scheduled purge: the soft-delete retention has elapsed";
        let ctx = (action.as_str(), doc.id.as_str(), "purge", reason);
        take(app, &mut records, vault.purge(&name, now), ctx)?;
        commit(
            app,
            vec![Op::Delete {
                key: rec.key.clone(),
                pre: Precondition::Revision(rec.revision),
            }],
            entry(
                &action,
                &doc.id,
                ("success", 200),
                reason,
                details(&doc.id, "purge", &records),
            ),
        )?;
        report.purged.push(doc.id.clone());
        return Ok(());
    }

    let mut key_revision = rec.revision;
    if key.rotation_due(now) {
        let action = Kind::VaultKey.action("rotate/action");
        let reason = "scheduled rotation: the key's rotation policy is due";
        let ctx = (action.as_str(), doc.id.as_str(), "rotate", reason);
        let pmk = platform_key(app, &rec.key)?;
        take(
            app,
            &mut records,
            vault.begin_rotation(&pmk, &name, now),
            ctx,
        )?;
        // As POST …/rotate: the rotation finishes at once and the versions it replaced stay
        // enabled, so every disk and every caller's ciphertext still opens.
        let replaced = take(
            app,
            &mut records,
            vault.finish_rotation(&name, std::iter::empty()),
            ctx,
        )?;
        for version in replaced {
            take(
                app,
                &mut records,
                vault.set_version_enabled(&name, version, true),
                ctx,
            )?;
        }
        let new_doc = key_doc_by(&id, &doc, &vault, SYSTEM)?;
        let committed = commit(
            app,
            vec![crate::docs::rewrite(rec, &new_doc)?],
            entry(
                &action,
                &doc.id,
                ("success", 200),
                reason,
                details(&doc.id, "rotate", &records),
            ),
        )?;
        key_revision = committed;
        report.rotated.push(doc.id.clone());
    }
    rewrap_disks(app, &rec.key, key_revision, &vault, &name, report)?;
    notify_near_expiry(app, &rec.key, now, report)
}

/// Purges the soft-deleted vaults whose scheduled purge date has passed, with their keys.
fn purge_deleted_vaults(app: &App, now: i64, report: &mut SweepReport) {
    let deleted = match app.store.list_type(&Kind::DeletedVault.type_key()) {
        Ok(d) => d,
        Err(e) => {
            log_chain("key sweep: store read failed", &e);
            return;
        }
    };
    for rec in deleted {
        let Ok(doc) = Doc::parse(&rec.body) else {
            continue;
        };
        let due = doc
            .internal
            .get("scheduledPurgeAt")
            .and_then(Value::as_i64)
            .is_some_and(|at| at <= now);
        if !due {
            continue;
        }
        let action = Kind::DeletedVault.action("purge/action");
        let reason = "scheduled purge: the deleted vault's retention has elapsed";
        let result = crate::handlers::keyvault::purge_vault_ops(&rec, &doc, now).and_then(|ops| {
            commit(
                app,
                ops,
                entry(
                    &action,
                    &doc.id,
                    ("success", 200),
                    reason,
                    json!({ "id": doc.id, "operation": "purgeVault" }),
                ),
            )
        });
        match result {
            Ok(_) => report.purged.push(doc.id.clone()),
            Err(e) => report.failed.push(format!("{}: {}", doc.id, e.message)),
        }
    }
}

/// Where a key's `internal` records the version a near-expiry notice was given for.
const NOTIFIED: &str = "nearExpiryNoticeVersion";

/// The rotation policy's `Notify` action: once the key's current version is within
/// `timeBeforeExpiry` of its expiry, one audit entry per version says so.
fn notify_near_expiry(
    app: &App,
    key_storage_key: &str,
    now: i64,
    report: &mut SweepReport,
) -> Result<(), ApiError> {
    // Re-read: a rotation or rewrap above may have moved the key on.
    let Some(rec) = app.store.get(key_storage_key).map_err(|e| {
        log_chain("key sweep: store read failed", &e);
        ApiError::internal()
    })?
    else {
        return Ok(());
    };
    let mut doc = Doc::parse(&rec.body)?;
    let vault = stored_vault_of(&doc)?;
    let id = ResourceId::parse(&doc.id).map_err(|_| ApiError::internal())?;
    let name = id.name().unwrap_or_default().to_ascii_lowercase();
    let Some(key) = vault
        .key(&name)
        .filter(|k| k.deleted().is_none() && k.enabled())
    else {
        return Ok(());
    };
    let current = key.current_version();
    let (Some(before), Some(expires)) = (
        key.rotation_policy()
            .and_then(|p| p.notify_before_expiry_secs),
        key.version(current).and_then(|v| v.expires()),
    ) else {
        return Ok(());
    };
    if now < expires.saturating_sub(before)
        || doc.internal.get(NOTIFIED).and_then(Value::as_u64) == Some(u64::from(current))
    {
        return Ok(());
    }
    let Some(internal) = doc.internal.as_object_mut() else {
        return Err(ApiError::internal());
    };
    internal.insert(NOTIFIED.into(), json!(current));
    let expires_at = strata_types::time::rfc3339(expires);
    let days = (expires - now).max(0) / 86_400;
    commit(
        app,
        vec![crate::docs::rewrite(&rec, &doc)?],
        entry(
            &Kind::VaultKey.action("nearExpiry/action"),
            &doc.id,
            ("success", 200),
            &format!(
                "key near expiry: version {current} expires at {expires_at} (in {days} days); rotate it or extend its expiry (rotation policy Notify)"
            ),
            json!({ "id": doc.id, "version": current, "expires": expires_at, "event": "KeyNearExpiry" }),
        ),
    )?;
    report.notified.push(doc.id.clone());
    Ok(())
}

/// Phase two: every disk wrapped by this key under an older version moves to the current one.
fn rewrap_disks(
    app: &App,
    key_storage_key: &str,
    key_revision: u64,
    vault: &Vault,
    name: &str,
    report: &mut SweepReport,
) -> Result<(), ApiError> {
    let Some(current) = vault
        .key(name)
        .filter(|k| k.deleted().is_none() && k.enabled())
        .map(|k| k.current_version())
    else {
        return Ok(());
    };
    // Snapshots keep their data key wrapped like disks (same fields): rewrapped alike.
    let mut disks = Vec::new();
    for kind in [Kind::Disk, Kind::Snapshot] {
        disks.extend(app.store.list_type(&kind.type_key()).map_err(|e| {
            log_chain("key sweep: store read failed", &e);
            ApiError::internal()
        })?);
    }
    let reason = "scheduled rewrap: the disk's customer key has a newer version";
    for rec in disks {
        let action = if rec.rtype == Kind::Snapshot.type_key() {
            Kind::Snapshot.action("rewrapKey/action")
        } else {
            Kind::Disk.action("rewrapKey/action")
        };
        let mut doc = Doc::parse(&rec.body)?;
        let Some(key_id) = customer_key_of(&doc).filter(|k| k.key() == key_storage_key) else {
            continue;
        };
        let internal: DiskInternal = crate::docs::internal_of(&doc);
        let Some(envelope) = internal
            .data_key
            .as_deref()
            .and_then(|t| Envelope::decode(t).ok())
        else {
            report
                .failed
                .push(format!("{}: no readable data key", rec.key));
            continue;
        };
        if envelope.key().version == current {
            continue;
        }
        let pmk = platform_key(app, &rec.key)?;
        let mut records = Vec::new();
        let ctx = (action.as_str(), doc.id.as_str(), "rewrapKey", reason);
        let Ok(new) = take(
            app,
            &mut records,
            vault.rewrap(&pmk, name, &rec.key, &envelope),
            ctx,
        ) else {
            report.failed.push(format!("{}: rewrap refused", doc.id));
            continue;
        };
        doc.properties["encryption"] =
            crate::handlers::disks::encryption_props(Some(&key_id), &new);
        // Only `dataKey` changes: a snapshot's `internal` holds more than a disk's.
        match doc.internal.as_object_mut() {
            Some(o) => {
                o.insert("dataKey".into(), serde_json::json!(new.encode()));
            }
            None => {
                report
                    .failed
                    .push(format!("{}: no internal document", rec.key));
                continue;
            }
        }
        doc.system_data.last_modified_by = SYSTEM.into();
        doc.system_data.last_modified_at = strata_types::time::now_rfc3339();
        let ops = vec![
            Op::Assert {
                key: key_storage_key.to_string(),
                pre: Precondition::Revision(key_revision),
            },
            crate::docs::rewrite(&rec, &doc)?,
        ];
        match commit(
            app,
            ops,
            entry(
                &action,
                &doc.id,
                ("success", 200),
                reason,
                details(&doc.id, "rewrapKey", &records),
            ),
        ) {
            Ok(_) => report.rewrapped.push(doc.id.clone()),
            Err(e) => report.failed.push(format!("{}: {}", doc.id, e.message)),
        }
    }
    Ok(())
}

/// Commits one action with its audit entry; returns the revision of the last write.
/// Every sweep commit that uses or changes a key (a write or assert on `…/vaults/V/keys/K`)
/// also asserts that the key's vault is still there, so a vault soft-deleted meanwhile wins and
/// its keys stay frozen.
fn with_vaults_live(mut ops: Vec<Op>) -> Vec<Op> {
    let vaults: std::collections::BTreeSet<String> = ops
        .iter()
        .map(|op| match op {
            Op::Put { key, .. }
            | Op::Delete { key, .. }
            | Op::Assert { key, .. }
            | Op::DeleteTree { key } => key,
        })
        .filter(|k| k.contains("/providers/strata.keyvault/vaults/"))
        .filter_map(|k| k.rsplit_once("/keys/").map(|(vault, _)| vault.to_owned()))
        .collect();
    ops.extend(vaults.into_iter().map(|key| Op::Assert {
        key,
        pre: Precondition::MustExist,
    }));
    ops
}

fn commit(app: &App, ops: Vec<Op>, audit: AuditEntry) -> Result<u64, ApiError> {
    let ops = with_vaults_live(ops);
    let committed = app.commit(
        Batch {
            ops,
            audit: vec![audit],
        },
        false,
    )?;
    Ok(committed.revisions.last().copied().unwrap_or_default())
}
