//! Authorization objects: custom role definitions, role assignments, deny assignments, PIM
//! eligibility and self-service activation, and `checkAccess` (a decision with its reason).

use super::{Built, load, new_doc, parse_props};
use crate::context::Ctx;
use crate::directory::{AssignmentProps, EligibilityProps, extension_scope};
use crate::dispatch::Reply;
use crate::docs::Doc;
use crate::kinds::Kind;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Value, json};
use strata_authz::{Permission, RoleDefinition, RoleType};
use strata_types::{ApiError, ResourceBody, ResourceId};

/// `roleDefinitionId` may be a bare id or `/…/providers/Strata.Authorization/roleDefinitions/{id}`.
pub fn bare_role_id(s: &str) -> &str {
    s.rsplit('/').next().unwrap_or(s)
}

pub fn is_builtin(id: &ResourceId) -> bool {
    let name = id.name().unwrap_or_default();
    strata_authz::builtin::roles()
        .iter()
        .any(|r| r.id.eq_ignore_ascii_case(name))
}

fn role_json(def: &RoleDefinition) -> Value {
    json!({
        "id": format!("/providers/Strata.Authorization/roleDefinitions/{}", def.id),
        "name": def.id,
        "type": Kind::RoleDefinition.type_name(),
        "properties": def,
    })
}

pub fn builtin_role_reply(ctx: &Ctx<'_>, id: &ResourceId) -> Option<Result<Reply, ApiError>> {
    let name = id.name()?;
    let dir = ctx.app.dir();
    let def = dir.engine.role(name)?;
    (def.role_type == RoleType::BuiltInRole).then(|| Ok(Reply::json(200, role_json(def))))
}

pub fn list_role_definitions(ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
    let dir = ctx.app.dir();
    let mut value: Vec<Value> = dir.engine.roles().map(role_json).collect();
    value.sort_by(|a, b| {
        a["properties"]["roleName"]
            .as_str()
            .cmp(&b["properties"]["roleName"].as_str())
    });
    Ok(Reply::json(200, json!({ "value": value })))
}

pub fn check_role_unused(ctx: &Ctx<'_>, id: &ResourceId) -> Result<(), ApiError> {
    let name = id.name().unwrap_or_default();
    let records = ctx
        .app
        .store
        .list_type(&Kind::RoleAssignment.type_key())
        .map_err(|_| ApiError::internal())?;
    for rec in records {
        let doc = Doc::parse(&rec.body)?;
        if doc
            .prop_str("roleDefinitionId")
            .is_some_and(|r| r.eq_ignore_ascii_case(name))
        {
            return Err(ApiError::conflict(
                "RoleDefinitionHasAssignments",
                format!(
                    "role '{name}' is still assigned ({}); delete its assignments first",
                    doc.id
                ),
            ));
        }
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RoleDefProps {
    role_name: String,
    #[serde(default)]
    description: String,
    permissions: Vec<Permission>,
    assignable_scopes: Vec<String>,
    #[serde(default)]
    privileged: bool,
    #[serde(default)]
    id: Option<IgnoredAny>,
    #[serde(default)]
    role_type: Option<IgnoredAny>,
}

pub fn build_role_definition(
    ctx: &Ctx<'_>,
    id: &ResourceId,
    existing: Option<&Doc>,
    body: ResourceBody,
) -> Result<Built, ApiError> {
    let p: RoleDefProps = parse_props(body.properties)?;
    let _ = (&p.id, &p.role_type);
    let def = RoleDefinition {
        id: id.name().unwrap_or_default().to_string(),
        role_name: p.role_name,
        description: p.description,
        role_type: RoleType::CustomRole,
        permissions: p.permissions,
        assignable_scopes: p
            .assignable_scopes
            .iter()
            .map(|s| s.to_ascii_lowercase())
            .collect(),
        privileged: p.privileged,
    };
    strata_authz::validate_role_definition(&def)
        .map_err(|e| ApiError::bad_request("InvalidRoleDefinition", e.to_string()))?;
    let dir = ctx.app.dir();
    if let Some(other) = dir.engine.role_by_name(&def.role_name)
        && !other.id.eq_ignore_ascii_case(&def.id)
    {
        return Err(ApiError::conflict(
            "RoleDefinitionWithSameNameExists",
            format!(
                "a role named '{}' already exists ({})",
                def.role_name, other.id
            ),
        ));
    }
    let props = serde_json::to_value(&def).map_err(|_| ApiError::internal())?;
    Ok(Built {
        doc: new_doc(ctx, id, Kind::RoleDefinition, existing, props),
        extra_ops: vec![],
        reveal: None,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[expect(
    dead_code,
    reason = "read-only fields are accepted and ignored so GET-modify-PUT works"
)]
struct AssignmentInput {
    principal_id: String,
    role_definition_id: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    principal_type: Option<IgnoredAny>,
    #[serde(default)]
    scope: Option<IgnoredAny>,
    #[serde(default)]
    role_name: Option<IgnoredAny>,
}

fn principal_type(ctx: &Ctx<'_>, principal_id: &str) -> Result<&'static str, ApiError> {
    let dir = ctx.app.dir();
    match dir.principal(principal_id) {
        Some(p) => Ok(p.kind.as_str()),
        None => Err(ApiError::bad_request(
            "PrincipalNotFound",
            format!(
                "principal '{principal_id}' does not exist in this tenant; use the object id of a user, group or service principal"
            ),
        )),
    }
}

fn role_at(ctx: &Ctx<'_>, role_id: &str, scope: &str) -> Result<RoleDefinition, ApiError> {
    let dir = ctx.app.dir();
    let def = dir
        .engine
        .role(role_id)
        .or_else(|| dir.engine.role_by_name(role_id))
        .cloned()
        .ok_or_else(|| {
            ApiError::bad_request(
                "RoleDefinitionDoesNotExist",
                format!("role definition '{role_id}' does not exist; see `strata role list`"),
            )
        })?;
    if !def.is_assignable_at(scope) {
        return Err(ApiError::bad_request(
            "InvalidScope",
            format!(
                "role '{}' cannot be assigned at '{scope}': its assignable scopes are {:?}",
                def.role_name, def.assignable_scopes
            ),
        ));
    }
    Ok(def)
}

pub fn build_assignment(
    ctx: &Ctx<'_>,
    id: &ResourceId,
    existing: Option<&Doc>,
    body: ResourceBody,
) -> Result<Built, ApiError> {
    let p: AssignmentInput = parse_props(body.properties)?;
    let scope = extension_scope(id.as_str());
    let ptype = principal_type(ctx, &p.principal_id)?;
    let def = role_at(ctx, bare_role_id(&p.role_definition_id), &scope)?;
    let props = AssignmentProps {
        principal_id: p.principal_id.clone(),
        role_definition_id: def.id.clone(),
        principal_type: Some(ptype.to_string()),
        description: p.description,
        scope: Some(scope.clone()),
    };
    if let Some(d) = existing
        && (d.prop_str("principalId") != Some(&p.principal_id)
            || d.prop_str("roleDefinitionId") != Some(&def.id))
    {
        return Err(ApiError::conflict(
            "RoleAssignmentUpdateNotPermitted",
            "a role assignment cannot change its principal or role; create a new one",
        ));
    }
    // Same principal, role and scope under another name is a duplicate, as in Azure.
    let dir = ctx.app.dir();
    let _ = &dir;
    for rec in ctx
        .app
        .store
        .list_children(
            &id.parent()
                .map(|p| p.key().to_string())
                .unwrap_or_else(|| "/".into()),
            &Kind::RoleAssignment.type_key(),
        )
        .map_err(|_| ApiError::internal())?
    {
        let other = Doc::parse(&rec.body)?;
        if rec.key != id.key()
            && other.prop_str("principalId") == Some(&p.principal_id)
            && other.prop_str("roleDefinitionId") == Some(&def.id)
        {
            return Err(ApiError::conflict(
                "RoleAssignmentExists",
                format!("the same assignment already exists as '{}'", other.id),
            ));
        }
    }
    let mut value = serde_json::to_value(&props).map_err(|_| ApiError::internal())?;
    if let Some(o) = value.as_object_mut() {
        o.insert("roleName".into(), json!(def.role_name));
    }
    Ok(Built {
        doc: new_doc(ctx, id, Kind::RoleAssignment, existing, value),
        extra_ops: vec![],
        reveal: None,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[expect(
    dead_code,
    reason = "read-only fields are accepted and ignored so GET-modify-PUT works"
)]
struct DenyInput {
    deny_assignment_name: String,
    #[serde(default)]
    description: Option<String>,
    permissions: Vec<Permission>,
    principals: Vec<String>,
    #[serde(default)]
    exclude_principals: Vec<String>,
    #[serde(default)]
    do_not_apply_to_child_scopes: bool,
    #[serde(default)]
    id: Option<IgnoredAny>,
    #[serde(default)]
    scope: Option<IgnoredAny>,
}

pub fn build_deny(
    ctx: &Ctx<'_>,
    id: &ResourceId,
    existing: Option<&Doc>,
    body: ResourceBody,
) -> Result<Built, ApiError> {
    let p: DenyInput = parse_props(body.properties)?;
    let scope = extension_scope(id.as_str());
    if p.deny_assignment_name.trim().is_empty() || p.deny_assignment_name.len() > 256 {
        return Err(ApiError::bad_request(
            "InvalidDenyAssignment",
            "denyAssignmentName: 1-256 characters",
        ));
    }
    if p.principals.is_empty() {
        return Err(ApiError::bad_request(
            "InvalidDenyAssignment",
            format!(
                "principals: list at least one principal id, or '{}' for everyone",
                strata_authz::EVERYONE
            ),
        ));
    }
    for pid in p.principals.iter().chain(&p.exclude_principals) {
        if pid != strata_authz::EVERYONE {
            principal_type(ctx, pid)?;
        }
    }
    // Reuse role validation for the permission patterns.
    let probe = RoleDefinition {
        id: "deny".into(),
        role_name: p.deny_assignment_name.clone(),
        description: String::new(),
        role_type: RoleType::CustomRole,
        permissions: p.permissions.clone(),
        assignable_scopes: vec![scope.clone()],
        privileged: false,
    };
    strata_authz::validate_role_definition(&probe)
        .map_err(|e| ApiError::bad_request("InvalidDenyAssignment", e.to_string()))?;
    let deny = strata_authz::DenyAssignment {
        id: id.name().unwrap_or_default().to_string(),
        deny_assignment_name: p.deny_assignment_name,
        permissions: p.permissions,
        scope,
        principals: p.principals,
        exclude_principals: p.exclude_principals,
        do_not_apply_to_child_scopes: p.do_not_apply_to_child_scopes,
    };
    let mut value = serde_json::to_value(&deny).map_err(|_| ApiError::internal())?;
    if let (Some(o), Some(d)) = (value.as_object_mut(), p.description) {
        o.insert("description".into(), json!(d));
    }
    Ok(Built {
        doc: new_doc(ctx, id, Kind::DenyAssignment, existing, value),
        extra_ops: vec![],
        reveal: None,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[expect(
    dead_code,
    reason = "read-only fields are accepted and ignored so GET-modify-PUT works"
)]
struct EligibilityInput {
    principal_id: String,
    role_definition_id: String,
    #[serde(default)]
    max_duration_secs: Option<u64>,
    #[serde(default)]
    expires_at: Option<i64>,
    #[serde(default)]
    scope: Option<IgnoredAny>,
    #[serde(default)]
    role_name: Option<IgnoredAny>,
}

pub fn build_eligibility(
    ctx: &Ctx<'_>,
    id: &ResourceId,
    existing: Option<&Doc>,
    body: ResourceBody,
) -> Result<Built, ApiError> {
    let p: EligibilityInput = parse_props(body.properties)?;
    let scope = extension_scope(id.as_str());
    principal_type(ctx, &p.principal_id)?;
    let def = role_at(ctx, bare_role_id(&p.role_definition_id), &scope)?;
    let max = p
        .max_duration_secs
        .unwrap_or(strata_authz::DEFAULT_MAX_ACTIVATION_SECS);
    if max == 0 || max > strata_authz::DEFAULT_MAX_ACTIVATION_SECS {
        return Err(ApiError::bad_request(
            "InvalidDuration",
            format!(
                "maxDurationSecs must be between 1 and {}",
                strata_authz::DEFAULT_MAX_ACTIVATION_SECS
            ),
        ));
    }
    let props = EligibilityProps {
        principal_id: p.principal_id,
        role_definition_id: def.id.clone(),
        max_duration_secs: max,
        expires_at: p.expires_at,
        scope: Some(scope),
    };
    let mut value = serde_json::to_value(&props).map_err(|_| ApiError::internal())?;
    if let Some(o) = value.as_object_mut() {
        o.insert("roleName".into(), json!(def.role_name));
    }
    Ok(Built {
        doc: new_doc(ctx, id, Kind::RoleEligibility, existing, value),
        extra_ops: vec![],
        reveal: None,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ActivationInput {
    #[serde(default)]
    principal_id: Option<String>,
    role_definition_id: String,
    justification: String,
    duration_secs: u64,
}

pub fn build_activation(
    ctx: &Ctx<'_>,
    id: &ResourceId,
    existing: Option<&Doc>,
    body: ResourceBody,
) -> Result<Built, ApiError> {
    if existing.is_some() {
        return Err(ApiError::conflict(
            "ActivationExists",
            "this activation request already exists; create a new request to extend",
        ));
    }
    let p: ActivationInput = parse_props(body.properties)?;
    let principal = p
        .principal_id
        .unwrap_or_else(|| ctx.caller.principal_id.clone());
    if principal != ctx.caller.principal_id {
        return Err(ApiError::forbidden(
            "a principal can only activate its own eligible assignments",
        ));
    }
    let scope = extension_scope(id.as_str());
    let role_id = bare_role_id(&p.role_definition_id).to_string();
    let dir = ctx.app.dir();
    let role = dir
        .engine
        .role(&role_id)
        .or_else(|| dir.engine.role_by_name(&role_id))
        .cloned()
        .ok_or_else(|| {
            ApiError::bad_request(
                "RoleDefinitionDoesNotExist",
                format!("role definition '{role_id}' does not exist"),
            )
        })?;
    let eligible = dir
        .eligibilities
        .iter()
        .find(|e| {
            e.principal_id == principal
                && e.role_definition_id.eq_ignore_ascii_case(&role.id)
                && e.scope == scope
        })
        .cloned()
        .ok_or_else(|| {
            ApiError::forbidden(format!(
                "you are not eligible for role '{}' at '{scope}'",
                role.role_name
            ))
        })?;
    if role.privileged && ctx.caller.kind == strata_types::PrincipalKind::User && !ctx.caller.mfa {
        return Err(ApiError::new(
            403,
            "MfaRequired",
            format!(
                "activating the privileged role '{}' requires a multi-factor sign-in; sign in again with a TOTP code",
                role.role_name
            ),
        ));
    }
    let activation = strata_authz::activate(
        &eligible,
        p.duration_secs,
        &p.justification,
        ctx.now(),
        id.name().unwrap_or_default().to_string(),
    )
    .map_err(|e| ApiError::bad_request("InvalidActivation", e.to_string()))?;
    let props = json!({
        "principalId": principal,
        "roleDefinitionId": role.id,
        "roleName": role.role_name,
        "eligibilityId": eligible.id,
        "justification": activation.justification,
        "startDateTime": strata_types::time::rfc3339(activation.start),
        "endDateTime": strata_types::time::rfc3339(activation.end),
        "scope": scope,
        "status": "Provisioned",
    });
    let mut doc = new_doc(ctx, id, Kind::ActivationRequest, existing, props);
    doc.internal = serde_json::to_value(&activation).map_err(|_| ApiError::internal())?;
    Ok(Built {
        doc,
        extra_ops: vec![],
        reveal: None,
    })
}

/// Body of `POST /providers/Strata.Authorization/checkAccess`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CheckAccessBody {
    pub principal_id: String,
    pub action: String,
    pub scope: String,
    #[serde(default)]
    pub data_action: bool,
}

pub fn check_access(ctx: &Ctx<'_>, body: &CheckAccessBody) -> Result<Reply, ApiError> {
    let dir = ctx.app.dir();
    let principal = dir.principal(&body.principal_id).ok_or_else(|| {
        ApiError::bad_request(
            "PrincipalNotFound",
            format!("principal '{}' does not exist", body.principal_id),
        )
    })?;
    if body.action.is_empty() || body.action.len() > 256 {
        return Err(ApiError::bad_request(
            "InvalidAction",
            "action: 1-256 characters",
        ));
    }
    let scope = ResourceId::parse(&body.scope)
        .map_err(|e| ApiError::bad_request("InvalidScope", e.to_string()))?;
    let decision = dir.engine.check(&strata_authz::Request {
        subject: strata_authz::Subject {
            principal_id: &principal.id,
            group_ids: dir.groups_of(&principal.id),
        },
        action: &body.action,
        data_action: body.data_action,
        scope: scope.key(),
        now: ctx.now(),
    });
    let _ = load;
    Ok(Reply::json(
        200,
        json!({
            "principalId": principal.id,
            "principalName": principal.name,
            "action": body.action,
            "scope": scope.to_string(),
            "decision": if decision.is_allowed() { "Allowed" } else { "Denied" },
            "reason": decision.explain(),
            "detail": decision.reason,
        }),
    ))
}
