//! Snapshots (`Strata.Compute/snapshots`) as the control plane sees them: what a host is asked
//! to take, and what it sends back.
//!
//! ```text
//!  PUT …/snapshots/S {creationData: {createOption: Copy, sourceResourceId: VM or disk}}
//!     └─ one commit: S (Creating, its own wrapped copy of the source disk's data key, AAD: S)
//!                    + the VM's internal.snapshots += {token, S}  (revision asserted)
//!  the VM's host: assignments list the token ─▶ the agent copies the disk, still encrypted
//!     (`strata_compute::snapshot`: live through QMP, or offline) ─▶
//!     PUT /fabric/v1/hosts/{host}/snapshots/{token}  (mTLS, current certificate)
//!     └─ header check: a standalone LUKS qcow2 or nothing ─▶ stored by SHA-256 beside the
//!        image blobs ─▶ one commit: S Succeeded (sha256, sizeBytes) + the token gone
//!     or POST …/snapshots/{token}/failed {reason} ─▶ S Failed (failureReason) + token gone
//!  GET …/snapshots/S/export  ─▶ the encrypted bytes (`handlers::snapshots`)
//!  PUT …/disks/D {creationData: {createOption: Copy, sourceResourceId: S}}
//!     └─ D's data key: the same key, wrapped again with AAD D; D's internal.source = S's
//!        content; the host of a VM using D fetches it like an imported image and copies it
//!        with a fresh LUKS master key (`VmSpec::disk_source`).
//! ```
//!
//! The snapshot is encrypted under the source disk's data key (a fresh LUKS master key in its
//! header), so it is locked by what locks the disk: a customer-managed key's snapshot is
//! wrapped under that key too, and disabling it withholds every disk restored from it. The
//! bytes never exist in plaintext outside a Trusted host's QEMU or `qemu-img`.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use strata_audit::AuditEntry;
use strata_store::{Op, Record};
use strata_types::ApiError;

use super::VmInternal;
use super::images::ImageContent;
use crate::app::{App, log_chain};
use crate::docs::Doc;
use crate::kinds::Kind;

/// A snapshot a host has yet to take, in its VM's `internal`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingSnapshot {
    /// What the host names it by (32 hex digits; not the resource id, which is no file name).
    pub token: String,
    /// The snapshot's store key.
    pub snapshot: String,
}

/// `internal` of a snapshot document (never returned by the API).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotInternal {
    /// The source disk's data key, wrapped again (platform or the source's customer key) with
    /// the snapshot's id as AAD.
    #[serde(default)]
    pub data_key: Option<String>,
    /// The customer key it is wrapped under, if any (as the source disk's).
    #[serde(default)]
    pub key_vault_key_id: Option<String>,
    #[serde(default)]
    pub token: String,
    /// The VM whose disk it copies (store key) and the host asked to take it.
    #[serde(default)]
    pub vm: String,
    #[serde(default)]
    pub host: String,
    /// The encrypted content, once the host has sent it.
    #[serde(default)]
    pub content: Option<ImageContent>,
    /// Unix seconds of the request (a snapshot still pending long after fails: `expire`).
    #[serde(default)]
    pub requested_at: i64,
}

/// How long a host has to deliver a snapshot (a live copy may take an hour; then the upload).
pub const PENDING_LIMIT_SECS: i64 = 3 * 3600;

/// Fails the snapshots still `Creating` more than [`PENDING_LIMIT_SECS`] after they were asked
/// for (their host is gone, Untrusted, or cannot copy), taking their tokens off their VMs.
/// Runs on the background tick; `now` is an argument for tests. Returns how many failed.
pub fn expire(app: &App, now: i64) -> usize {
    let records = match app.store.list_type(&Kind::Snapshot.type_key()) {
        Ok(r) => r,
        Err(e) => {
            log_chain("snapshot expiry: store read failed", &e);
            return 0;
        }
    };
    let mut failed = 0;
    for rec in records {
        let Ok(mut doc) = Doc::parse(&rec.body) else {
            continue;
        };
        let si: SnapshotInternal = crate::docs::internal_of(&doc);
        if si.content.is_some()
            || si.requested_at == 0
            || now - si.requested_at <= PENDING_LIMIT_SECS
            || doc.prop_str("provisioningState") != Some("Creating")
        {
            continue;
        }
        let reason = format!(
            "host {} did not deliver the snapshot within {} hours",
            si.host,
            PENDING_LIMIT_SECS / 3600
        );
        let result = (|| {
            let mut ops: Vec<Op> = drop_pending_on_delete(app, &doc)?.into_iter().collect();
            set_state(&mut doc, "Failed", &[("failureReason", json!(reason))]);
            ops.push(crate::docs::rewrite(&rec, &doc)?);
            let entry = AuditEntry {
                seq: 0,
                time: strata_types::time::now_rfc3339(),
                request_id: format!("snapshot-expiry-{}", uuid::Uuid::new_v4().simple()),
                principal_id: None,
                principal_name: Some("strata-system".into()),
                client_ip: None,
                category: "compute".into(),
                action: Kind::Snapshot.action("write"),
                scope: doc.id.clone(),
                outcome: "failure".into(),
                status: 200,
                reason: reason.clone(),
                details: json!({ "id": doc.id }),
            };
            app.commit(
                strata_store::Batch {
                    ops,
                    audit: vec![entry],
                },
                false,
            )
        })();
        match result {
            Ok(_) => failed += 1,
            // Delivered or changed meanwhile: looked at again on the next tick.
            Err(e) => {
                tracing::debug!(snapshot = %doc.id, error = %e.message, "snapshot expiry skipped")
            }
        }
    }
    failed
}

/// A fresh token.
pub fn new_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn is_token(t: &str) -> bool {
    t.len() == 32 && t.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn read(app: &App, key: &str) -> Result<Option<Record>, ApiError> {
    app.store.get(key).map_err(|e| {
        log_chain("store read failed", &e);
        ApiError::internal()
    })
}

/// The VM on `host` with snapshot `token` pending: its record, document and entry.
fn find_pending(
    app: &App,
    host: &str,
    token: &str,
) -> Result<(Record, Doc, PendingSnapshot), ApiError> {
    if !is_token(token) {
        return Err(ApiError::not_found(token));
    }
    for key in super::door::vms_on(app, host)? {
        let Some(rec) = read(app, &key)? else {
            continue;
        };
        let doc = Doc::parse(&rec.body)?;
        if doc.prop_str("host") != Some(host) {
            continue;
        }
        let internal: VmInternal = crate::docs::internal_of(&doc);
        if let Some(p) = internal.snapshots.iter().find(|p| p.token == token) {
            let p = p.clone();
            return Ok((rec, doc, p));
        }
    }
    Err(ApiError::not_found(&format!(
        "no snapshot {token} is pending on host {host}"
    )))
}

/// The upload limit for a snapshot: the largest virtual disk the store takes (a full disk's
/// worth of clusters), plus LUKS and qcow2 metadata.
pub fn max_bytes(app: &App) -> u64 {
    app.images
        .config()
        .max_virtual_bytes
        .saturating_add(256 << 20)
}

/// Checks that `token` is pending on `host` before any byte of its upload is read.
pub fn check_pending(app: &App, host: &str, token: &str) -> Result<String, ApiError> {
    find_pending(app, host, token).map(|(_, _, p)| p.snapshot)
}

/// Ends a pending snapshot: removes the token from its VM and, if the snapshot still exists,
/// applies `update` to it, in one commit (retried when a status report changed the VM first).
fn settle(
    app: &App,
    host: &str,
    token: &str,
    audit: AuditEntry,
    update: &dyn Fn(&mut Doc, &mut SnapshotInternal),
) -> Result<Option<Doc>, ApiError> {
    for _ in 0..8 {
        let (vm_rec, mut vm, pending) = find_pending(app, host, token)?;
        let mut internal: VmInternal = crate::docs::internal_of(&vm);
        internal.snapshots.retain(|p| p.token != token);
        vm.internal = serde_json::to_value(&internal).map_err(|_| ApiError::internal())?;
        let mut ops = vec![crate::docs::rewrite(&vm_rec, &vm)?];
        let mut settled = None;
        if let Some(rec) = read(app, &pending.snapshot)?
            && rec.rtype == Kind::Snapshot.type_key()
        {
            let mut doc = Doc::parse(&rec.body)?;
            let mut si: SnapshotInternal = crate::docs::internal_of(&doc);
            // Only the host asked for it (the VM may have been placed elsewhere since).
            if si.token == token && si.host == host {
                update(&mut doc, &mut si);
                doc.internal = serde_json::to_value(&si).map_err(|_| ApiError::internal())?;
                ops.push(crate::docs::rewrite(&rec, &doc)?);
                settled = Some(doc);
            }
        }
        let mut entry = audit.clone();
        entry.scope = pending.snapshot.clone();
        match app.commit(
            strata_store::Batch {
                ops,
                audit: vec![entry],
            },
            false,
        ) {
            Ok(_) => return Ok(settled),
            Err(e) if e.status == 412 => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::conflict(
        "Busy",
        "the VM kept changing; send the snapshot again",
    ))
}

fn set_state(doc: &mut Doc, state: &str, extra: &[(&str, Value)]) {
    if let Some(o) = doc.properties.as_object_mut() {
        o.insert("provisioningState".into(), json!(state));
        for (k, v) in extra {
            o.insert((*k).into(), v.clone());
        }
    }
}

/// `PUT hosts/{host}/snapshots/{token}` has delivered `file` (`received`: its length and
/// SHA-256). Only a standalone LUKS-encrypted qcow2 is kept: stored by digest, the snapshot
/// Succeeded. Anything else fails the snapshot with the reason. `file` is moved or left for
/// the caller to remove.
pub fn complete(
    app: &App,
    host: &str,
    token: &str,
    file: &Path,
    received: (u64, String),
    audit: AuditEntry,
) -> Result<Value, ApiError> {
    let (length, sha256) = received;
    let header = {
        use std::io::Read as _;
        let mut head = Vec::with_capacity(64 << 10);
        std::fs::File::open(file)
            .and_then(|f| f.take(64 << 10).read_to_end(&mut head))
            .map_err(|e| {
                log_chain("cannot read a received snapshot", &e);
                ApiError::internal()
            })?;
        strata_compute::import::check_snapshot_header(&head)
    };
    let header = header.and_then(|h| {
        let most = app.images.config().max_virtual_bytes;
        if h.virtual_size > most {
            Err(format!(
                "its virtual size {} bytes is over the {most} bytes a disk may have",
                h.virtual_size
            ))
        } else {
            Ok(h)
        }
    });
    let header = match header {
        Ok(h) => h,
        Err(why) => {
            let reason = format!("the host sent something other than an encrypted snapshot: {why}");
            let mut refusal = audit;
            refusal.outcome = "denied".into();
            refusal.status = 400;
            refusal.reason = reason.clone();
            settle(app, host, token, refusal, &|doc, _| {
                set_state(doc, "Failed", &[("failureReason", json!(reason))]);
            })?;
            return Err(ApiError::bad_request("InvalidSnapshot", reason));
        }
    };
    let _held = app.images.lock();
    app.images.place(file, &sha256).map_err(|e| {
        log_chain("cannot store a snapshot", &e);
        ApiError::internal()
    })?;
    let content = ImageContent {
        sha256: sha256.clone(),
        size_bytes: length,
        virtual_size_bytes: header.virtual_size,
    };
    let now = strata_types::time::now_rfc3339();
    let mut entry = audit;
    entry.reason = "the host delivered the snapshot (LUKS-encrypted qcow2)".into();
    entry.details = json!({ "sha256": sha256, "bytes": length });
    let settled = settle(app, host, token, entry, &|doc, si| {
        si.content = Some(content.clone());
        set_state(
            doc,
            "Succeeded",
            &[
                ("sha256", json!(content.sha256)),
                ("sizeBytes", json!(content.size_bytes)),
                ("diskSizeBytes", json!(content.virtual_size_bytes)),
                ("timeCreated", json!(now)),
                ("failureReason", Value::Null),
            ],
        );
    })?;
    Ok(json!({ "accepted": settled.is_some(), "sha256": sha256 }))
}

/// The upload of `token` could not be received (too long, disk full, …): the snapshot fails
/// with the reason, so the host does not copy and send it again and again. An upload cut off
/// in transit (`UploadInterrupted`) stays pending, to be sent again.
pub fn upload_failed(
    app: &App,
    host: &str,
    token: &str,
    error: &ApiError,
    audit: AuditEntry,
) -> Result<(), ApiError> {
    if error.code == "UploadInterrupted" {
        return Ok(());
    }
    let reason = format!("the host's upload was refused: {}", error.message);
    let mut entry = audit;
    entry.outcome = "failure".into();
    entry.status = error.status;
    entry.reason = reason.clone();
    settle(app, host, token, entry, &|doc, _| {
        set_state(doc, "Failed", &[("failureReason", json!(reason))]);
    })
    .map(|_| ())
}

/// `POST hosts/{host}/snapshots/{token}/failed`: the host could not take it.
pub fn fail(
    app: &App,
    host: &str,
    token: &str,
    body: &[u8],
    audit: AuditEntry,
) -> Result<Value, ApiError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Failed {
        reason: String,
    }
    let f: Failed = crate::handlers::parse_body(body)?;
    let reason: String = f.reason.chars().take(500).collect();
    let mut entry = audit;
    entry.outcome = "failure".into();
    entry.reason = format!("the host could not take the snapshot: {reason}");
    settle(app, host, token, entry, &|doc, _| {
        set_state(doc, "Failed", &[("failureReason", json!(reason))]);
    })?;
    Ok(json!({ "accepted": true }))
}

/// The writes that fail `vm`'s pending snapshots when it is deleted (its host will not take
/// them): each `Failed` with the reason, its revision asserted. Snapshots under `deleted` (a
/// resource group going with the VM) go anyway and are left alone.
pub fn fail_pending_on_vm_delete(
    app: &App,
    vm: &Doc,
    deleted: Option<&str>,
) -> Result<Vec<Op>, ApiError> {
    let internal: VmInternal = crate::docs::internal_of(vm);
    let mut ops = Vec::new();
    for p in &internal.snapshots {
        if deleted.is_some_and(|d| p.snapshot.starts_with(&format!("{d}/"))) {
            continue;
        }
        let Some(rec) = read(app, &p.snapshot)? else {
            continue;
        };
        let mut doc = Doc::parse(&rec.body)?;
        let si: SnapshotInternal = crate::docs::internal_of(&doc);
        if si.token != p.token || si.content.is_some() {
            continue;
        }
        set_state(
            &mut doc,
            "Failed",
            &[(
                "failureReason",
                json!("the VM was deleted before its host took the snapshot"),
            )],
        );
        ops.push(crate::docs::rewrite(&rec, &doc)?);
    }
    Ok(ops)
}

/// The write that takes a deleted snapshot's token off its VM (the host need not copy it any
/// more), if it is still pending.
pub fn drop_pending_on_delete(app: &App, snapshot: &Doc) -> Result<Option<Op>, ApiError> {
    let si: SnapshotInternal = crate::docs::internal_of(snapshot);
    if si.content.is_some() || si.vm.is_empty() {
        return Ok(None);
    }
    let Some(rec) = read(app, &si.vm)? else {
        return Ok(None);
    };
    let mut vm = Doc::parse(&rec.body)?;
    let mut internal: VmInternal = crate::docs::internal_of(&vm);
    let before = internal.snapshots.len();
    internal.snapshots.retain(|p| p.token != si.token);
    if internal.snapshots.len() == before {
        return Ok(None);
    }
    vm.internal = serde_json::to_value(&internal).map_err(|_| ApiError::internal())?;
    Ok(Some(crate::docs::rewrite(&rec, &vm)?))
}

/// The tokens of a VM's pending snapshots, for its assignment.
pub fn tokens(internal: &VmInternal) -> Vec<&str> {
    internal
        .snapshots
        .iter()
        .map(|p| p.token.as_str())
        .collect()
}

/// The content a disk was made from, if it was made from a snapshot.
pub fn disk_source(app: &App, disk_key: &str) -> Result<Option<ImageContent>, ApiError> {
    let Some(rec) = read(app, disk_key)? else {
        return Ok(None);
    };
    let doc = Doc::parse(&rec.body)?;
    let internal: super::disks::DiskInternal = crate::docs::internal_of(&doc);
    Ok(internal.source)
}

/// Every digest a snapshot or a disk made from one names (kept by the blob collector).
pub fn named_blobs(
    store: &dyn strata_store::Store,
    named: &mut std::collections::BTreeSet<String>,
) -> Result<(), strata_store::StoreError> {
    for rec in store.list_type(&Kind::Snapshot.type_key())? {
        if let Ok(doc) = Doc::parse(&rec.body) {
            let si: SnapshotInternal = crate::docs::internal_of(&doc);
            if let Some(c) = si.content {
                named.insert(c.sha256);
            }
        }
    }
    for rec in store.list_type(&Kind::Disk.type_key())? {
        if let Ok(doc) = Doc::parse(&rec.body) {
            let di: super::disks::DiskInternal = crate::docs::internal_of(&doc);
            if let Some(c) = di.source {
                named.insert(c.sha256);
            }
        }
    }
    Ok(())
}
