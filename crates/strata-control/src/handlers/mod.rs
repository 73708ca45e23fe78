//! Request handlers. They run only after the dispatcher authenticated and authorized the
//! request, and they write only through `Ctx::commit`.

pub mod audit;
pub mod authz;
pub mod compute;
pub mod disks;
pub mod fabric;
pub mod identity;
pub mod images;
pub mod keyvault;
pub mod network;
pub mod snapshots;

use crate::context::Ctx;
use crate::dispatch::{Incoming, Reply, Route, Target, Verb};
use crate::docs::Doc;
use crate::kinds::Kind;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use strata_store::{Op, Precondition, Record};
use strata_types::{ApiError, ResourceBody, ResourceId, SystemData};

/// Parses a JSON request body strictly: malformed JSON, unknown fields and wrong types are a
/// 400 that names the problem.
pub fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "InvalidRequestContent",
            "the request body is empty; send a JSON object",
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(
            "InvalidRequestContent",
            format!("the request body is not valid: {e}"),
        )
    })
}

/// Parses `properties` of a body into a kind's property struct.
pub fn parse_props<T: DeserializeOwned>(props: Option<Value>) -> Result<T, ApiError> {
    let v = props.unwrap_or_else(|| json!({}));
    serde_json::from_value(v)
        .map_err(|e| ApiError::bad_request("InvalidRequestContent", format!("properties: {e}")))
}

/// The result of building a document for a PUT/PATCH/POST.
pub struct Built {
    pub doc: Doc,
    /// Further writes in the same transaction.
    pub extra_ops: Vec<Op>,
    /// Shown once in the response and never stored in clear (a new secret, a TOTP seed).
    pub reveal: Option<Value>,
}

pub fn run(ctx: &Ctx<'_>, route: &Route, req: &Incoming<'_>) -> Result<Reply, ApiError> {
    match (&route.target, route.verb) {
        (
            Target::Item {
                id,
                kind: Kind::VaultKey,
            },
            Verb::Delete,
        ) => keyvault::delete_key(ctx, id, req),
        (
            Target::Collection {
                parent,
                kind: Kind::VaultKey,
            },
            _,
        ) => keyvault::list_keys(ctx, parent, req.query),
        (
            Target::PostAction {
                id,
                kind: Kind::VaultKey,
                action,
            },
            _,
        ) => keyvault::key_action(ctx, id, action, req),
        (
            Target::PostAction {
                id,
                kind: Kind::Disk,
                action,
            },
            _,
        ) => disks::disk_action(ctx, id, action, req),
        (
            Target::PostAction {
                kind: Kind::Snapshot,
                action,
                ..
            },
            _,
        ) => snapshots::snapshot_action(action),
        (
            Target::PostAction {
                id,
                kind: Kind::DeletedVault,
                action,
            },
            _,
        ) => keyvault::purge_deleted_vault(ctx, id, action),
        // Network writes (and resource group and VM deletes, which may take network resources
        // with them)
        // validate against the whole subscription's network: one at a time per subscription,
        // again from the start when another replica's network write won the race.
        (Target::Item { id, kind }, verb)
            if matches!(verb, Verb::Put | Verb::Patch | Verb::Delete)
                && (crate::network::KINDS.contains(kind)
                    || (matches!(kind, Kind::ResourceGroup | Kind::VirtualMachine)
                        && verb == Verb::Delete)) =>
        {
            let sub = crate::network::guard::subscription_key(id)?;
            crate::network::guard::with_retries(&ctx.app.network_locks, &sub, || match verb {
                Verb::Delete => delete_item(ctx, id, *kind, req),
                _ => put_item(ctx, id, *kind, req, verb == Verb::Patch),
            })
        }
        (Target::Item { id, kind }, Verb::Get) => get_item(ctx, id, *kind),
        (Target::Item { id, kind }, Verb::Put) => put_item(ctx, id, *kind, req, false),
        (Target::Item { id, kind }, Verb::Patch) => put_item(ctx, id, *kind, req, true),
        (Target::Item { id, kind }, Verb::Delete) => delete_item(ctx, id, *kind, req),
        (Target::Collection { parent, kind }, _) => list(ctx, parent, *kind),
        (Target::GroupResources { rg }, _) => list_group(ctx, rg),
        (Target::PostAction { id, kind, action }, _) => post_action(ctx, id, *kind, action, req),
        (Target::AuditEntries, _) => audit::entries(ctx, req.query),
        (Target::AuditCheckpoint, _) => audit::checkpoint(ctx),
        (Target::AuditInclusion, _) => audit::inclusion(ctx, req.query),
        (Target::AuditConsistency, _) => audit::consistency(ctx, req.query),
        (Target::Changes, _) => audit::changes(ctx, req.query),
        (Target::CheckAccess(body), _) => authz::check_access(ctx, body),
        (Target::PolicyImport, _) => crate::fabric::policy::import(ctx, req.body),
        (Target::PlacementPreview, _) => fabric::placement_preview(ctx, req.body),
        _ => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            "method not supported here",
        )),
    }
}

fn doc_reply(
    status: u16,
    doc: &Doc,
    revision: u64,
    reveal: Option<Value>,
) -> Result<Reply, ApiError> {
    let etag = format!("\"{revision}\"");
    let mut body =
        serde_json::to_value(doc.public(etag.clone())).map_err(|_| ApiError::internal())?;
    if let (Some(extra), Some(obj)) = (reveal, body.as_object_mut()) {
        obj.insert("secretOutput".into(), extra);
    }
    let mut r = Reply::json(status, body);
    r.etag = Some(etag);
    Ok(r)
}

fn store_err(e: strata_store::StoreError) -> ApiError {
    crate::app::log_chain("store read failed", &e);
    ApiError::internal()
}

pub fn load(ctx: &Ctx<'_>, id: &ResourceId) -> Result<Option<(Record, Doc)>, ApiError> {
    match ctx.app.store.get(id.key()).map_err(store_err)? {
        Some(rec) => {
            let doc = Doc::parse(&rec.body)?;
            Ok(Some((rec, doc)))
        }
        None => Ok(None),
    }
}

fn get_item(ctx: &Ctx<'_>, id: &ResourceId, kind: Kind) -> Result<Reply, ApiError> {
    if kind == Kind::RoleDefinition
        && let Some(r) = authz::builtin_role_reply(ctx, id)
    {
        return r;
    }
    let (rec, doc) = load(ctx, id)?.ok_or_else(|| ApiError::not_found(id.as_str()))?;
    // The keys of a soft-deleted vault are out of sight until it is recovered.
    if kind == Kind::VaultKey
        && let Some(vault) = id.parent()
        && load(ctx, &vault)?.is_none()
    {
        return Err(ApiError::not_found(id.as_str()));
    }
    doc_reply(200, &doc, rec.revision, None)
}

/// Turns `If-Match` / `If-None-Match` into a store precondition, checked again in the commit.
fn precondition(req: &Incoming<'_>, existing: Option<&Record>) -> Result<Precondition, ApiError> {
    if let Some(v) = req.if_none_match
        && v.trim() == "*"
    {
        return match existing {
            Some(_) => Err(ApiError::precondition_failed(
                "the resource already exists and If-None-Match: * was sent",
            )),
            None => Ok(Precondition::MustNotExist),
        };
    }
    if let Some(v) = req.if_match {
        let v = v.trim();
        let Some(rec) = existing else {
            return Err(ApiError::precondition_failed(
                "the resource does not exist, so If-Match cannot match",
            ));
        };
        if v == "*" {
            return Ok(Precondition::Revision(rec.revision));
        }
        let want: u64 = v
            .trim_start_matches("W/")
            .trim_matches('"')
            .parse()
            .map_err(|_| {
                ApiError::precondition_failed(format!(
                    "If-Match '{}' is not an etag this server issued",
                    v.chars().take(40).collect::<String>()
                ))
            })?;
        if want != rec.revision {
            return Err(ApiError::precondition_failed(format!(
                "the etag {} is stale (the resource is at {}); read it again and retry",
                v.chars().take(40).collect::<String>(),
                rec.etag()
            )));
        }
        return Ok(Precondition::Revision(want));
    }
    Ok(match existing {
        Some(rec) => Precondition::Revision(rec.revision),
        None => Precondition::MustNotExist,
    })
}

/// The common start of a kind's own PUT/PATCH handler: the body parsed and checked against the
/// id, the parent checked and present, the existing record and the request's precondition, a
/// PATCH merged onto what is stored (404 when nothing is).
pub struct OwnPut {
    pub body: ResourceBody,
    pub parent: ResourceId,
    pub existing: Option<(Record, Doc)>,
    pub pre: Precondition,
}

pub fn own_put(
    ctx: &Ctx<'_>,
    id: &ResourceId,
    req: &Incoming<'_>,
    kind: Kind,
    patch: bool,
) -> Result<OwnPut, ApiError> {
    let mut body: ResourceBody = parse_body(req.body)?;
    check_envelope(&body, id, kind)?;
    let parent = id.parent().unwrap_or_else(ResourceId::tenant);
    kind.check_parent(&parent)
        .map_err(|m| ApiError::bad_request("InvalidResourceLocation", m))?;
    require_parent(ctx, &parent)?;
    let existing = load(ctx, id)?;
    let pre = precondition(req, existing.as_ref().map(|(r, _)| r))?;
    if patch {
        let Some((_, doc)) = &existing else {
            return Err(ApiError::not_found(id.as_str()));
        };
        patch_onto(&mut body, doc);
    }
    Ok(OwnPut {
        body,
        parent,
        existing,
        pre,
    })
}

/// RFC 7396 JSON merge patch.
/// A PATCH body made whole: the stored properties with the patch merged in (RFC 7396), and the
/// stored tags and location where the patch names none.
pub fn patch_onto(body: &mut ResourceBody, doc: &Doc) {
    let mut props = doc.properties.clone();
    if let Some(p) = body.properties.take() {
        merge_patch(&mut props, p);
    }
    body.properties = Some(props);
    if body.tags.is_none() {
        body.tags = Some(doc.tags.clone());
    }
    if body.location.is_none() {
        body.location = doc.location.clone();
    }
}

/// 404 `ParentResourceNotFound` unless `parent` exists.
pub fn require_parent(ctx: &Ctx<'_>, parent: &ResourceId) -> Result<(), ApiError> {
    if load(ctx, parent)?.is_none() {
        return Err(ApiError::new(
            404,
            "ParentResourceNotFound",
            format!("the parent resource '{parent}' was not found; create it first"),
        ));
    }
    Ok(())
}

fn merge_patch(target: &mut Value, patch: Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            if let Some(t) = target.as_object_mut() {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(&k);
                    } else {
                        merge_patch(t.entry(k).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other,
    }
}

fn check_envelope(body: &ResourceBody, id: &ResourceId, kind: Kind) -> Result<(), ApiError> {
    if let Some(bid) = &body.id
        && !bid.eq_ignore_ascii_case(id.as_str())
    {
        return Err(ApiError::bad_request(
            "InvalidRequestContent",
            "the body's 'id' does not match the request path",
        ));
    }
    if let Some(n) = &body.name
        && Some(n.as_str()) != id.name()
    {
        return Err(ApiError::bad_request(
            "InvalidRequestContent",
            "the body's 'name' does not match the request path",
        ));
    }
    if let Some(t) = &body.rtype
        && !t.eq_ignore_ascii_case(kind.type_name())
    {
        return Err(ApiError::bad_request(
            "InvalidRequestContent",
            format!("the body's 'type' must be '{}'", kind.type_name()),
        ));
    }
    if let Some(tags) = &body.tags
        && (tags.len() > 50
            || tags
                .iter()
                .any(|(k, v)| k.is_empty() || k.len() > 512 || v.len() > 256))
    {
        return Err(ApiError::bad_request(
            "InvalidTag",
            "tags: at most 50, names 1-512 characters, values up to 256",
        ));
    }
    Ok(())
}

/// A new or updated document with `systemData` maintained.
pub fn new_doc(
    ctx: &Ctx<'_>,
    id: &ResourceId,
    kind: Kind,
    existing: Option<&Doc>,
    properties: Value,
) -> Doc {
    let now = strata_types::time::now_rfc3339();
    let system_data = match existing {
        Some(d) => SystemData {
            last_modified_by: ctx.caller.name.clone(),
            last_modified_at: now,
            ..d.system_data.clone()
        },
        None => SystemData {
            created_by: ctx.caller.name.clone(),
            created_at: now.clone(),
            last_modified_by: ctx.caller.name.clone(),
            last_modified_at: now,
        },
    };
    Doc {
        id: id.to_string(),
        name: id.name().unwrap_or_default().to_string(),
        rtype: kind.type_name().to_string(),
        location: None,
        tags: existing.map(|d| d.tags.clone()).unwrap_or_default(),
        properties,
        system_data,
        internal: existing.map(|d| d.internal.clone()).unwrap_or(Value::Null),
    }
}

fn put_item(
    ctx: &Ctx<'_>,
    id: &ResourceId,
    kind: Kind,
    req: &Incoming<'_>,
    patch: bool,
) -> Result<Reply, ApiError> {
    let mut body: ResourceBody = parse_body(req.body)?;
    check_envelope(&body, id, kind)?;
    let parent = id.parent().unwrap_or_else(ResourceId::tenant);
    kind.check_parent(&parent)
        .map_err(|m| ApiError::bad_request("InvalidResourceLocation", m))?;
    if kind == Kind::RoleDefinition && authz::is_builtin(id) {
        return Err(ApiError::bad_request(
            "RoleDefinitionIsBuiltIn",
            "built-in role definitions cannot be changed; create a custom role with another id",
        ));
    }
    let existing = load(ctx, id)?;
    let pre = precondition(req, existing.as_ref().map(|(r, _)| r))?;
    if patch {
        let Some((_, doc)) = &existing else {
            return Err(ApiError::not_found(id.as_str()));
        };
        if !kind.patchable() {
            return Err(ApiError::new(
                405,
                "MethodNotAllowed",
                format!(
                    "{} cannot be patched; delete and create it again",
                    kind.type_name()
                ),
            ));
        }
        patch_onto(&mut body, doc);
    }
    let existing_doc = existing.as_ref().map(|(_, d)| d);
    let tags = body.tags.take();
    let location = body.location.clone();
    let mut built = match kind {
        Kind::Subscription => build_subscription(ctx, id, existing_doc, body)?,
        Kind::ResourceGroup => build_resource_group(ctx, id, existing_doc, body)?,
        Kind::User => identity::build_user(ctx, id, existing_doc, body)?,
        Kind::Group => identity::build_group(ctx, id, existing_doc, body)?,
        Kind::ServicePrincipal => identity::build_sp(ctx, id, existing_doc, body)?,
        Kind::RoleDefinition => authz::build_role_definition(ctx, id, existing_doc, body)?,
        Kind::RoleAssignment => authz::build_assignment(ctx, id, existing_doc, body)?,
        Kind::DenyAssignment => authz::build_deny(ctx, id, existing_doc, body)?,
        Kind::RoleEligibility => authz::build_eligibility(ctx, id, existing_doc, body)?,
        Kind::ActivationRequest => authz::build_activation(ctx, id, existing_doc, body)?,
        Kind::JoinToken => fabric::build_join_token(ctx, id, existing_doc, body)?,
        Kind::VirtualMachine => compute::build_vm(ctx, id, existing_doc, body)?,
        Kind::Image => images::build_image(ctx, id, existing_doc, body)?,
        Kind::Vault => keyvault::build_vault(ctx, id, existing_doc, body)?,
        // Keys audit their key operations with the write: their own handler.
        Kind::VaultKey => return keyvault::put_key(ctx, id, req, patch),
        // Disks audit their key operations with the write: their own handler.
        Kind::Disk => return disks::put_disk(ctx, id, req, patch),
        // Snapshots wrap a key and ask a host for the copy in the same commit.
        Kind::Snapshot => return snapshots::put_snapshot(ctx, id, req, patch),
        Kind::VirtualNetwork => network::build_vnet(ctx, id, existing_doc, body)?,
        Kind::NetworkSecurityGroup => network::build_nsg(ctx, id, existing_doc, body)?,
        Kind::NetworkInterface => network::build_nic(ctx, id, existing_doc, body)?,
        Kind::ApplicationSecurityGroup => network::build_asg(ctx, id, existing_doc, body)?,
        Kind::Host => {
            return Err(ApiError::bad_request(
                "HostsJoinThroughTheAgent",
                "hosts cannot be created with PUT: create a join token and run 'strata agent --join-token …' on the host",
            ));
        }
        Kind::ReferencePolicy => {
            return Err(ApiError::bad_request(
                "PolicyRequiresSignedBundle",
                "reference policies are written only by importing a signed bundle: 'strata host policy import bundle.json'",
            ));
        }
        Kind::DeletedVault => {
            return Err(ApiError::bad_request(
                "DeletedVaultsAreNotCreated",
                "a deleted vault appears when its vault is deleted; recover it with PUT of the vault and properties.createMode \"recover\"",
            ));
        }
    };
    if let Some(t) = tags {
        built.doc.tags = t;
    }
    if kind == Kind::ResourceGroup {
        built.doc.location = Some(location.unwrap_or_else(|| {
            existing_doc
                .and_then(|d| d.location.clone())
                .unwrap_or_else(|| "local".into())
        }));
    }
    let mut ops = Vec::new();
    if !parent.is_tenant() {
        ops.push(Op::Assert {
            key: parent.key().to_string(),
            pre: Precondition::MustExist,
        });
        require_parent(ctx, &parent)?;
    }
    let put_index = ops.len();
    ops.push(Op::Put {
        key: id.key().to_string(),
        rtype: kind.type_key(),
        parent: parent.key().to_string(),
        body: built.doc.to_json()?,
        pre,
    });
    ops.extend(built.extra_ops);
    let status = if existing.is_some() { 200 } else { 201 };
    let committed = ctx.commit(
        ops,
        status,
        json!({ "id": id.to_string() }),
        kind.is_directory(),
    )?;
    let rev = committed
        .revisions
        .get(put_index)
        .copied()
        .unwrap_or_default();
    doc_reply(status, &built.doc, rev, built.reveal)
}

fn delete_item(
    ctx: &Ctx<'_>,
    id: &ResourceId,
    kind: Kind,
    req: &Incoming<'_>,
) -> Result<Reply, ApiError> {
    if kind == Kind::RoleDefinition && authz::is_builtin(id) {
        return Err(ApiError::bad_request(
            "RoleDefinitionIsBuiltIn",
            "built-in role definitions cannot be deleted",
        ));
    }
    if kind == Kind::ReferencePolicy {
        // Deleting would reset the version floor and let an older signed bundle back in.
        return Err(ApiError::bad_request(
            "PolicyRequiresSignedBundle",
            "reference policies are replaced only by importing a newer signed bundle; they cannot be deleted",
        ));
    }
    if !kind.deletable() {
        return Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!(
                "{} are not deleted: purge one with POST …/NAME/purge (refused under purge protection before its scheduled date) or recover its vault",
                kind.type_name()
            ),
        ));
    }
    let Some((rec, doc)) = load(ctx, id)? else {
        return Ok(Reply::empty(204));
    };
    let mut extra = Vec::new();
    let pre = precondition(req, Some(&rec))?;
    match kind {
        Kind::Subscription
            if ctx
                .app
                .store
                .list_under(id.key())
                .map_err(store_err)?
                .iter()
                .any(|r| r.rtype != crate::network::guard::TYPE) =>
        {
            return Err(ApiError::conflict(
                "SubscriptionNotEmpty",
                format!(
                    "the subscription '{id}' still holds resources; delete its resource groups first"
                ),
            ));
        }
        Kind::RoleDefinition => authz::check_role_unused(ctx, id)?,
        Kind::ResourceGroup => {
            keyvault::check_no_keys_under(ctx, id)?;
            extra = network::resource_group_delete_ops(ctx, id)?;
            // Snapshots elsewhere that the group's VMs' hosts will now never take fail.
            // Snapshots going with the group that VMs elsewhere were to take come off them.
            let inside = format!("{}/", id.key());
            for rec in ctx.app.store.list_under(id.key()).map_err(store_err)? {
                if rec.rtype == Kind::VirtualMachine.type_key() {
                    let vm = Doc::parse(&rec.body)?;
                    extra.extend(crate::compute::snapshots::fail_pending_on_vm_delete(
                        ctx.app,
                        &vm,
                        Some(id.key()),
                    )?);
                } else if rec.rtype == Kind::Snapshot.type_key() {
                    let snap = Doc::parse(&rec.body)?;
                    extra.extend(
                        crate::compute::snapshots::drop_pending_on_delete(ctx.app, &snap)?.filter(
                            |op| match op {
                                Op::Put { key, .. } => !key.starts_with(&inside),
                                _ => false,
                            },
                        ),
                    );
                }
            }
        }
        // Soft delete: the document moves to deletedVaults, the keys stay (frozen).
        Kind::Vault => return keyvault::soft_delete_vault(ctx, id, &rec, &doc, pre),
        Kind::VirtualNetwork
        | Kind::NetworkSecurityGroup
        | Kind::ApplicationSecurityGroup
        | Kind::NetworkInterface => extra = network::delete_ops(ctx, id, kind, &doc)?,
        Kind::Snapshot => {
            extra.extend(crate::compute::snapshots::drop_pending_on_delete(
                ctx.app, &doc,
            )?);
        }
        Kind::VirtualMachine => {
            extra = compute::detach_nics(ctx, &doc)?;
            extra.extend(crate::compute::snapshots::fail_pending_on_vm_delete(
                ctx.app, &doc, None,
            )?);
        }
        _ => {}
    }
    // A disk in use stays; a deleted VM's OS disk becomes Unattached (kept, as in Azure).
    let detach = match kind {
        Kind::Disk => {
            disks::check_detached(ctx, id)?;
            Vec::new()
        }
        Kind::VirtualMachine => disks::detach_on_vm_delete(ctx, id)?,
        _ => Vec::new(),
    };
    let ops = vec![
        Op::Assert {
            key: id.key().to_string(),
            pre,
        },
        Op::DeleteTree {
            key: id.key().to_string(),
        },
    ];
    let ops: Vec<Op> = ops.into_iter().chain(detach).collect();
    let ops = ops.into_iter().chain(extra).collect();
    ctx.commit(
        ops,
        200,
        json!({ "id": id.to_string() }),
        kind.is_directory(),
    )?;
    // Image bytes go once no image or VM names them (`compute::images`); the collection scans
    // every image and VM, so only deletes that can free bytes run it.
    let frees_image_bytes = match kind {
        Kind::Image | Kind::ResourceGroup | Kind::Snapshot => true,
        Kind::Disk => crate::docs::internal_of::<crate::compute::disks::DiskInternal>(&doc)
            .source
            .is_some(),
        Kind::VirtualMachine => crate::docs::internal_of::<crate::compute::VmInternal>(&doc)
            .image
            .is_some(),
        _ => false,
    };
    if frees_image_bytes {
        ctx.app
            .images
            .collect_garbage_logged(ctx.app.store.as_ref());
    }
    Ok(Reply::empty(200))
}

fn list(ctx: &Ctx<'_>, parent: &ResourceId, kind: Kind) -> Result<Reply, ApiError> {
    let read = kind.action("read");
    let parent_readable = ctx
        .app
        .decide(&ctx.caller, &read, parent.key(), false)
        .is_allowed();
    if kind == Kind::RoleDefinition {
        if !parent_readable {
            return Err(ApiError::not_found(parent.as_str()));
        }
        return authz::list_role_definitions(ctx);
    }
    if parent_readable && !parent.is_tenant() && load(ctx, parent)?.is_none() {
        return Err(ApiError::not_found(parent.as_str()));
    }
    let records = ctx
        .app
        .store
        .list_children(parent.key(), &kind.type_key())
        .map_err(store_err)?;
    let mut value = Vec::new();
    for rec in records {
        if parent_readable
            || ctx
                .app
                .decide(&ctx.caller, &read, &rec.key, false)
                .is_allowed()
        {
            let doc = Doc::parse(&rec.body)?;
            value.push(
                serde_json::to_value(doc.public(rec.etag())).map_err(|_| ApiError::internal())?,
            );
        }
    }
    if value.is_empty() && !parent_readable && !parent.is_tenant() {
        return Err(ApiError::not_found(parent.as_str()));
    }
    Ok(Reply::json(200, json!({ "value": value })))
}

fn list_group(ctx: &Ctx<'_>, rg: &ResourceId) -> Result<Reply, ApiError> {
    let rg_readable = ctx
        .app
        .decide(
            &ctx.caller,
            &Kind::ResourceGroup.action("read"),
            rg.key(),
            false,
        )
        .is_allowed();
    if rg_readable && load(ctx, rg)?.is_none() {
        return Err(ApiError::not_found(rg.as_str()));
    }
    let mut value = Vec::new();
    for rec in ctx.app.store.list_under(rg.key()).map_err(store_err)? {
        let doc = Doc::parse(&rec.body)?;
        let action = format!("{}/read", doc.rtype);
        if ctx
            .app
            .decide(&ctx.caller, &action, &rec.key, false)
            .is_allowed()
        {
            value.push(
                serde_json::to_value(doc.public(rec.etag())).map_err(|_| ApiError::internal())?,
            );
        }
    }
    if value.is_empty() && !rg_readable {
        return Err(ApiError::not_found(rg.as_str()));
    }
    Ok(Reply::json(200, json!({ "value": value })))
}

fn post_action(
    ctx: &Ctx<'_>,
    id: &ResourceId,
    kind: Kind,
    action: &str,
    req: &Incoming<'_>,
) -> Result<Reply, ApiError> {
    let (rec, doc) = load(ctx, id)?.ok_or_else(|| ApiError::not_found(id.as_str()))?;
    if kind == Kind::Host && action == "attest" {
        return fabric::request_attestation(ctx, id, &doc);
    }
    if kind == Kind::NetworkInterface {
        return network::nic_query(ctx, id, &doc, action, req.body);
    }
    if kind == Kind::VirtualMachine && action == "retrieveBootDiagnosticsData" {
        return Ok(compute::boot_diagnostics(&doc));
    }
    let body: Value = if req.body.is_empty() {
        json!({})
    } else {
        parse_body(req.body)?
    };
    let built = match kind {
        Kind::User => identity::user_action(ctx, id, &doc, action, body)?,
        Kind::ServicePrincipal => identity::sp_action(ctx, id, &doc, action, body)?,
        Kind::Host => fabric::host_action(ctx, &doc, action, body)?,
        Kind::VirtualMachine => compute::vm_action(ctx, &doc, action)?,
        _ => {
            return Err(ApiError::bad_request(
                "InvalidAction",
                "this resource has no actions",
            ));
        }
    };
    let ops = vec![Op::Put {
        key: id.key().to_string(),
        rtype: kind.type_key(),
        parent: rec.parent.clone(),
        body: built.doc.to_json()?,
        pre: Precondition::Revision(rec.revision),
    }];
    let committed = ctx.commit(
        ops,
        200,
        json!({ "id": id.to_string(), "action": action }),
        kind.is_directory(),
    )?;
    doc_reply(
        200,
        &built.doc,
        committed.revisions.first().copied().unwrap_or_default(),
        built.reveal,
    )
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SubscriptionProps {
    #[serde(default)]
    display_name: Option<String>,
    // read-only, accepted and ignored so GET-modify-PUT works
    #[serde(default)]
    subscription_id: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    state: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    provisioning_state: Option<serde::de::IgnoredAny>,
}

pub fn check_display_name(s: &str) -> Result<(), ApiError> {
    if s.chars().count() > 256 || s.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "InvalidDisplayName",
            "displayName: at most 256 characters, no control characters",
        ));
    }
    Ok(())
}

fn build_subscription(
    ctx: &Ctx<'_>,
    id: &ResourceId,
    existing: Option<&Doc>,
    body: ResourceBody,
) -> Result<Built, ApiError> {
    let p: SubscriptionProps = parse_props(body.properties)?;
    let _ = (p.subscription_id, p.state, p.provisioning_state);
    let name = p
        .display_name
        .unwrap_or_else(|| id.name().unwrap_or_default().to_string());
    check_display_name(&name)?;
    let props = json!({
        "subscriptionId": id.name(),
        "displayName": name,
        "state": "Enabled",
        "provisioningState": "Succeeded",
    });
    let mut doc = new_doc(ctx, id, Kind::Subscription, existing, props);
    if existing.is_none() {
        doc.internal = crate::compute::new_subscription_internal(&ctx.app.root, id.key())?;
    }
    Ok(Built {
        doc,
        extra_ops: vec![],
        reveal: None,
    })
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[expect(
    dead_code,
    reason = "read-only fields are accepted and ignored so GET-modify-PUT works"
)]
struct ResourceGroupProps {
    #[serde(default)]
    provisioning_state: Option<serde::de::IgnoredAny>,
}

fn build_resource_group(
    ctx: &Ctx<'_>,
    id: &ResourceId,
    existing: Option<&Doc>,
    body: ResourceBody,
) -> Result<Built, ApiError> {
    let _: ResourceGroupProps = parse_props(body.properties)?;
    if let Some(loc) = &body.location
        && (loc.is_empty()
            || loc.len() > 64
            || !loc.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
    {
        return Err(ApiError::bad_request(
            "InvalidLocation",
            "location: 1-64 letters, digits or '-'",
        ));
    }
    let props = json!({ "provisioningState": "Succeeded" });
    Ok(Built {
        doc: new_doc(ctx, id, Kind::ResourceGroup, existing, props),
        extra_ops: vec![],
        reveal: None,
    })
}

/// Tags map type re-exported for handlers.
pub type Tags = BTreeMap<String, String>;
