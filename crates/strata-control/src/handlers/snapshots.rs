//! ARM handlers for `Strata.Compute/snapshots`: create (a copy of a VM's OS disk, taken by the
//! VM's host, see `compute::snapshots`) and the export of a snapshot's encrypted bytes.
//!
//! Creating one needs `snapshots/write` on it and `read` on the source (a VM, or a disk used
//! as a VM's OS disk). The snapshot is encrypted under the source disk's data key, wrapped
//! again for the snapshot: by the platform key, or by the source's customer key (which then
//! needs wrapKey, as for a disk). Neither properties nor audit entries carry key material.

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Value, json};
use strata_kms::Envelope;
use strata_store::{Op, Precondition};
use strata_types::{ApiError, ResourceId};

use super::disks::{check_wrap_access, details, encryption_props, refused, wrap_customer};
use super::{load, new_doc, parse_props};
use crate::compute::VmInternal;
use crate::compute::disks::{Release, customer_key_of, os_disk_of, platform_key, release};
use crate::compute::snapshots::{PendingSnapshot, SnapshotInternal, new_token};
use crate::context::Ctx;
use crate::dispatch::{Incoming, Reply};
use crate::docs::Doc;
use crate::kinds::Kind;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct CreationData {
    pub create_option: String,
    pub source_resource_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SnapshotInput {
    #[serde(default)]
    creation_data: Option<CreationData>,
    // Read-only, accepted and ignored so that GET-modify-PUT works.
    #[serde(default)]
    provisioning_state: Option<IgnoredAny>,
    #[serde(default)]
    encryption: Option<IgnoredAny>,
    #[serde(default)]
    sha256: Option<IgnoredAny>,
    #[serde(default)]
    size_bytes: Option<IgnoredAny>,
    #[serde(default)]
    disk_size_bytes: Option<IgnoredAny>,
    #[serde(default)]
    time_created: Option<IgnoredAny>,
    #[serde(default)]
    failure_reason: Option<IgnoredAny>,
}

/// `creationData` checked: `Copy` of a resource id of one of `kinds`.
pub(crate) fn copy_source(
    data: Option<&CreationData>,
    kinds: &[Kind],
    what: &str,
) -> Result<(ResourceId, Kind), ApiError> {
    let Some(data) = data else {
        return Err(ApiError::bad_request(
            "CreationDataRequired",
            format!(
                "properties.creationData is required: {{\"createOption\": \"Copy\", \"sourceResourceId\": \"{what}\"}}"
            ),
        ));
    };
    if !data.create_option.eq_ignore_ascii_case("Copy") {
        return Err(ApiError::bad_request(
            "InvalidCreateOption",
            format!(
                "creationData.createOption '{}' is not supported: use Copy",
                data.create_option.chars().take(40).collect::<String>()
            ),
        ));
    }
    let bad = || {
        ApiError::bad_request(
            "InvalidSourceResourceId",
            format!("creationData.sourceResourceId must be the id of {what}"),
        )
    };
    let id = ResourceId::parse(&data.source_resource_id).map_err(|_| bad())?;
    let kind = id
        .resource_type()
        .and_then(|t| Kind::from_type(&t))
        .filter(|k| kinds.contains(k))
        .ok_or_else(bad)?;
    Ok((id, kind))
}

/// Refuses a source whose data the caller may not take (deny by default, 403 with the
/// reason): copying a disk's contents is data access, so it needs the source's
/// `beginGetAccess/action` (Azure's action for handing out a disk's bytes; the VM and disk
/// contributor roles have it, Reader does not), not just `read`.
pub(crate) fn check_data_access(
    ctx: &Ctx<'_>,
    source: &ResourceId,
    kind: Kind,
) -> Result<(), ApiError> {
    let action = kind.action("beginGetAccess/action");
    if ctx
        .app
        .decide(&ctx.caller, &action, source.key(), false)
        .is_allowed()
    {
        return Ok(());
    }
    Err(ApiError::new(
        403,
        "LinkedAuthorizationFailed",
        format!(
            "'{}' may not copy the data of '{source}': it needs {action} there",
            ctx.caller.name
        ),
    ))
}

/// PUT or PATCH of a snapshot: creates it (the VM's host is asked to take it), or changes its
/// tags. What it copies cannot change.
pub fn put_snapshot(
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
    } = super::own_put(ctx, id, req, Kind::Snapshot, patch)?;
    let input: SnapshotInput = parse_props(body.properties.take())?;
    let _ = (
        &input.provisioning_state,
        &input.encryption,
        &input.sha256,
        &input.size_bytes,
        &input.disk_size_bytes,
        &input.time_created,
        &input.failure_reason,
    );
    let what = "a virtual machine (its OS disk) or a disk: /subscriptions/SUB/resourceGroups/RG/providers/Strata.Compute/virtualMachines/VM";
    let (source, source_kind) = copy_source(
        input.creation_data.as_ref(),
        &[Kind::VirtualMachine, Kind::Disk],
        what,
    )?;
    if let Some((rec, old)) = &existing {
        let same = old
            .properties
            .pointer("/creationData/sourceResourceId")
            .and_then(Value::as_str)
            .is_some_and(|s| s.eq_ignore_ascii_case(source.as_str()));
        if !same {
            return Err(ApiError::conflict(
                "PropertyChangeNotAllowed",
                "a snapshot's source cannot change; create another snapshot",
            ));
        }
        let mut doc = old.clone();
        doc.system_data = new_doc(ctx, id, Kind::Snapshot, Some(old), Value::Null).system_data;
        if let Some(t) = body.tags.take() {
            doc.tags = t;
        }
        let ops = vec![Op::Put {
            key: id.key().to_string(),
            rtype: Kind::Snapshot.type_key(),
            parent: parent.key().to_string(),
            body: doc.to_json()?,
            pre: Precondition::Revision(rec.revision),
        }];
        let committed = ctx.commit(ops, 200, json!({ "id": id.to_string() }), false)?;
        let rev = committed.revisions.first().copied().unwrap_or_default();
        return super::doc_reply(200, &doc, rev, None);
    }
    if source.subscription_id() != id.subscription_id() {
        return Err(ApiError::bad_request(
            "InvalidSourceResourceId",
            "the source must be in the snapshot's subscription",
        ));
    }
    check_data_access(ctx, &source, source_kind)?;
    let (source_doc_rec, source_doc) =
        load(ctx, &source)?.ok_or_else(|| ApiError::not_found(source.as_str()))?;
    // The VM whose disk holds the data (a disk's content lives on its VM's host).
    let vm_id = match source_kind {
        Kind::VirtualMachine => source.clone(),
        _ => {
            let managed_by = source_doc
                .properties
                .get("managedBy")
                .and_then(Value::as_str)
                .and_then(|m| ResourceId::parse(m).ok());
            let _ = source_doc_rec;
            managed_by.ok_or_else(|| {
                ApiError::conflict(
                    "DiskNotAttached",
                    format!(
                        "disk '{source}' is not a VM's OS disk: it holds no data until a VM uses it"
                    ),
                )
            })?
        }
    };
    let (vm_rec, mut vm) = load(ctx, &vm_id)?.ok_or_else(|| ApiError::not_found(vm_id.as_str()))?;
    // A disk's `managedBy` may be stale (its VM deleted with a resource group, another VM of
    // that name since): the VM must use exactly this disk now.
    if source_kind == Kind::Disk && os_disk_of(&vm).as_deref() != Some(source.key()) {
        return Err(ApiError::conflict(
            "DiskNotAttached",
            format!("disk '{source}' is not a VM's OS disk: it holds no data until a VM uses it"),
        ));
    }
    let Some(host) = vm.prop_str("host").map(str::to_owned) else {
        return Err(ApiError::conflict(
            "VmNotPlaced",
            format!("VM '{vm_id}' has no host yet, so its disk has no data to copy"),
        ));
    };
    let mut vm_internal: VmInternal = crate::docs::internal_of(&vm);
    if vm_internal.snapshots.len() >= 8 {
        return Err(ApiError::conflict(
            "TooManyPendingSnapshots",
            format!("VM '{vm_id}' already has 8 snapshots being taken; wait for them"),
        ));
    }
    // The source disk's data key, and how it is protected.
    let disk_resource = os_disk_of(&vm);
    let (dek, customer) = match &disk_resource {
        Some(disk) => {
            let Some((_, disk_doc)) = ctx
                .app
                .store
                .get(disk)
                .ok()
                .flatten()
                .map(|r| Doc::parse(&r.body).map(|d| (r, d)))
                .transpose()?
            else {
                return Err(ApiError::conflict(
                    "DiskNotFound",
                    "the VM's OS disk resource is gone",
                ));
            };
            match release(ctx.app, disk)? {
                Release::Key(dek) => (dek, customer_key_of(&disk_doc)),
                Release::Withheld(why) => {
                    return Err(ApiError::conflict(
                        "DiskKeyUnavailable",
                        format!("the disk cannot be copied: {why}"),
                    ));
                }
            }
        }
        None => {
            let envelope = vm_internal.disk_key.as_deref().ok_or_else(|| {
                tracing::error!(vm = %vm_id, "VM has no disk key");
                ApiError::internal()
            })?;
            (
                crate::compute::door::disk_key_of(ctx.app, vm_rec.key.as_str(), envelope)?,
                None,
            )
        }
    };
    let mut records = Vec::new();
    let mut ops = vec![Op::Assert {
        key: parent.key().to_string(),
        pre: Precondition::MustExist,
    }];
    let envelope: Envelope = match &customer {
        None => platform_key(ctx.app, id.key())?
            .wrap_data_key(id.key(), &dek)
            .map_err(|_| ApiError::internal())?,
        Some(key_id) => {
            check_wrap_access(ctx, key_id)?;
            let (env, asserts) = wrap_customer(ctx, id, key_id, &dek, &mut records)
                .map_err(|e| refused(ctx, id, &records, e))?;
            ops.extend(asserts);
            env
        }
    };
    let token = new_token();
    let props = json!({
        "creationData": { "createOption": "Copy", "sourceResourceId": source.to_string() },
        "provisioningState": "Creating",
        "encryption": encryption_props(customer.as_ref(), &envelope),
    });
    let mut doc = new_doc(ctx, id, Kind::Snapshot, None, props);
    doc.location = vm.location.clone();
    if let Some(t) = body.tags.take() {
        doc.tags = t;
    }
    doc.internal = serde_json::to_value(SnapshotInternal {
        data_key: Some(envelope.encode()),
        key_vault_key_id: customer.as_ref().map(|k| k.key().to_owned()),
        token: token.clone(),
        vm: vm_rec.key.clone(),
        host,
        content: None,
        requested_at: ctx.now(),
    })
    .map_err(|_| ApiError::internal())?;
    vm_internal.snapshots.push(PendingSnapshot {
        token,
        snapshot: id.key().to_owned(),
    });
    vm.internal = serde_json::to_value(&vm_internal).map_err(|_| ApiError::internal())?;
    let put_index = ops.len();
    ops.push(Op::Put {
        key: id.key().to_string(),
        rtype: Kind::Snapshot.type_key(),
        parent: parent.key().to_string(),
        body: doc.to_json()?,
        pre,
    });
    ops.push(crate::docs::rewrite(&vm_rec, &vm)?);
    let committed = ctx.commit(ops, 201, details(id, &records), false)?;
    let rev = committed
        .revisions
        .get(put_index)
        .copied()
        .unwrap_or_default();
    super::doc_reply(201, &doc, rev, None)
}

/// `POST …/snapshots/S/export` through the JSON API: the bytes come only from `GET`.
pub fn snapshot_action(action: &str) -> Result<Reply, ApiError> {
    Err(ApiError::bad_request(
        "InvalidAction",
        format!("'{action}' is downloaded, not posted: GET …/Strata.Compute/snapshots/NAME/export"),
    ))
}

/// Whether a public request is `GET …/Strata.Compute/snapshots/NAME/export`.
pub fn is_export(method: &str, path: &str) -> bool {
    use strata_types::path::ArmPath;
    method == "GET"
        && matches!(
            ArmPath::parse(path),
            Ok(ArmPath::Collection { parent, last, .. })
                if last.eq_ignore_ascii_case("export")
                    && parent.resource_type().and_then(|t| Kind::from_type(&t)) == Some(Kind::Snapshot)
        )
}

/// Admits `GET …/snapshots/NAME/export` (authenticated, and authorized as the `export`
/// action: `Strata.Compute/snapshots/beginGetAccess/action`) and opens the snapshot's bytes:
/// a standalone LUKS qcow2 that stays encrypted (its key never leaves the control plane except
/// to a Trusted host). Audited either way.
pub fn open_export(
    app: &crate::app::App,
    req: &Incoming<'_>,
    request_id: &str,
) -> Result<(std::fs::File, u64, String), Box<Reply>> {
    // Admitted as the POST action it is authorized as.
    let as_post = Incoming {
        method: "POST",
        path: req.path,
        query: req.query,
        authorization: req.authorization,
        if_match: None,
        if_none_match: None,
        client_ip: req.client_ip.clone(),
        body: &[],
    };
    let admitted = crate::dispatch::admit(app, &as_post, request_id)
        .map_err(|f| Box::new(crate::dispatch::Failure::reply(f)))?;
    let ctx = admitted.context(app, &req.client_ip, request_id);
    let result = (|| {
        let crate::dispatch::Target::PostAction {
            id,
            kind: Kind::Snapshot,
            ..
        } = &admitted.route.target
        else {
            return Err(ApiError::not_found(req.path));
        };
        let (_, doc) = load(&ctx, id)?.ok_or_else(|| ApiError::not_found(id.as_str()))?;
        let internal: SnapshotInternal = crate::docs::internal_of(&doc);
        let Some(content) = internal.content else {
            return Err(ApiError::conflict(
                "SnapshotNotReady",
                format!(
                    "snapshot '{id}' is {}: only a Succeeded snapshot can be exported",
                    doc.prop_str("provisioningState").unwrap_or("not ready")
                ),
            ));
        };
        let path = app
            .images
            .blob(&content.sha256)
            .ok_or_else(ApiError::internal)?;
        let file = std::fs::File::open(&path).map_err(|e| {
            crate::app::log_chain("cannot open snapshot bytes", &e);
            ApiError::internal()
        })?;
        ctx.app.audit_only(vec![ctx.entry(
            "snapshotExport",
            "success",
            200,
            json!({ "id": id.to_string(), "sha256": content.sha256, "bytes": content.size_bytes, "encrypted": true }),
        )]);
        Ok((file, content.size_bytes, doc.name.clone()))
    })();
    result.map_err(|e| {
        crate::dispatch::audit_failure(&ctx, admitted.route.verb, &Err::<(), _>(e.clone()));
        Box::new(Reply::error(&e))
    })
}
