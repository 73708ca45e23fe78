//! ARM handlers for `Strata.Fabric`: join tokens, host operator actions, placement preview.
//! Hosts themselves are created only by the agent door (`fabric::door`); reference policies
//! only by signed bundle import (`fabric::policy`).

use serde::Deserialize;
use serde_json::{Value, json};
use strata_types::{ApiError, ResourceBody, ResourceId};

use super::{Built, new_doc, parse_props};
use crate::context::Ctx;
use crate::dispatch::Reply;
use crate::docs::Doc;
use crate::fabric::door::{HostInternal, TokenInternal};
use crate::fabric::placement::{self, HostView};
use crate::fabric::state::{self, HostEvent, HostState};
use crate::kinds::Kind;

/// Default and maximum join-token lifetime.
const TOKEN_DEFAULT_SECS: i64 = 3600;
const TOKEN_MAX_SECS: i64 = 7 * 86_400;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct JoinTokenProps {
    #[serde(default)]
    expires_in_secs: Option<i64>,
    #[serde(default)]
    policy: Option<String>,
    #[serde(default)]
    allow_development: bool,
    /// Only a host registering under this name may use the token.
    #[serde(default)]
    hostname: Option<String>,
}

pub fn build_join_token(
    ctx: &Ctx<'_>,
    id: &ResourceId,
    existing: Option<&Doc>,
    body: ResourceBody,
) -> Result<Built, ApiError> {
    if existing.is_some() {
        return Err(ApiError::conflict(
            "JoinTokenExists",
            "join tokens are one-time: delete this one and create a new one",
        ));
    }
    let p: JoinTokenProps = parse_props(body.properties)?;
    let secs = p.expires_in_secs.unwrap_or(TOKEN_DEFAULT_SECS);
    if !(60..=TOKEN_MAX_SECS).contains(&secs) {
        return Err(ApiError::bad_request(
            "InvalidExpiry",
            format!("expiresInSecs must be 60-{TOKEN_MAX_SECS}"),
        ));
    }
    let policy = p.policy.unwrap_or_else(|| "default".into());
    crate::fabric::policy::policy_id(&policy)?;
    let name = id.name().unwrap_or_default();
    if name.contains('.') {
        return Err(ApiError::bad_request(
            "InvalidName",
            "join token names may not contain '.'",
        ));
    }
    if let Some(h) = &p.hostname {
        crate::fabric::door::host_id(h)?;
    }
    let secret = strata_identity::secret::generate().map_err(|_| ApiError::internal())?;
    let expires_at = ctx.now() + secs;
    let props = json!({
        "expiresAt": expires_at,
        "expiresOn": strata_types::time::rfc3339(expires_at),
        "policy": policy,
        "allowDevelopment": p.allow_development,
        "hostname": p.hostname,
        "used": false,
        "usedBy": Value::Null,
        "provisioningState": "Succeeded",
    });
    let mut doc = new_doc(ctx, id, Kind::JoinToken, existing, props);
    doc.internal = serde_json::to_value(TokenInternal {
        hash: strata_identity::secret::hash(&secret),
        pending: None,
    })
    .map_err(|_| ApiError::internal())?;
    Ok(Built {
        doc,
        extra_ops: vec![],
        reveal: Some(json!({ "joinToken": format!("sjt.{name}.{secret}") })),
    })
}

/// `attest`, `cordon`, `uncordon`, `quarantine`, `release` on a host.
pub fn host_action(ctx: &Ctx<'_>, doc: &Doc, action: &str, body: Value) -> Result<Built, ApiError> {
    let mut doc = doc.clone();
    let current = doc
        .prop_str("state")
        .and_then(HostState::parse)
        .unwrap_or(HostState::Registered);
    let reason = body
        .get("reason")
        .and_then(Value::as_str)
        .unwrap_or("")
        .chars()
        .take(500)
        .collect::<String>();
    let set = |doc: &mut Doc, k: &str, v: Value| {
        if let Some(o) = doc.properties.as_object_mut() {
            o.insert(k.into(), v);
        }
    };
    match action {
        "attest" => {
            return Err(ApiError::internal()); // handled by `request_attestation`
        }
        "cordon" => set(&mut doc, "cordoned", json!(true)),
        "uncordon" => set(&mut doc, "cordoned", json!(false)),
        "quarantine" | "release" => {
            if action == "quarantine" && reason.trim().is_empty() {
                return Err(ApiError::bad_request(
                    "ReasonRequired",
                    "say why the host is quarantined: {\"reason\": \"…\"}",
                ));
            }
            let event = if action == "quarantine" {
                HostEvent::Quarantine { reason }
            } else {
                HostEvent::Release
            };
            let t = state::apply(current, &event);
            if t.to == current && action == "release" {
                return Err(ApiError::conflict(
                    "HostNotQuarantined",
                    format!("the host is {}, not Quarantined", current.as_str()),
                ));
            }
            set(&mut doc, "state", json!(t.to.as_str()));
            set(&mut doc, "reason", json!(t.reason));
            // The operator's reason survives later rounds (which rewrite `reason`).
            if action == "quarantine" {
                set(&mut doc, "quarantineReason", json!(t.reason));
            } else {
                set(&mut doc, "quarantineReason", Value::Null);
            }
            if t.effects.cordon {
                set(&mut doc, "cordoned", json!(true));
            }
            let mut internal: HostInternal = crate::docs::internal_of(&doc);
            if t.effects.revoke_certificate {
                internal.cert_fingerprint = None;
                internal.cert_not_after = 0;
                set(&mut doc, "certificate", Value::Null);
            }
            if action == "release" {
                // Start the clock checks afresh: the TPM may have been cleared while the host
                // was out (its counters legitimately restart).
                internal.last_clock = None;
            }
            doc.internal = serde_json::to_value(internal).map_err(|_| ApiError::internal())?;
        }
        _ => {
            return Err(ApiError::bad_request(
                "InvalidAction",
                format!("'{action}' is not a host action"),
            ));
        }
    }
    doc.system_data.last_modified_by = ctx.caller.name.clone();
    doc.system_data.last_modified_at = strata_types::time::now_rfc3339();
    Ok(Built {
        doc,
        extra_ops: vec![],
        reveal: None,
    })
}

/// `POST …/hosts/{name}/attest`: asks for a round now. Kept in memory and audited, never
/// written to the host document (a write would race the host's own round).
pub fn request_attestation(ctx: &Ctx<'_>, id: &ResourceId, doc: &Doc) -> Result<Reply, ApiError> {
    if let Ok(mut r) = ctx.app.fabric.attest_requests.lock() {
        r.insert(id.key().to_string(), ctx.now());
    }
    ctx.commit(
        vec![],
        202,
        json!({ "id": id.to_string(), "action": "attest" }),
        false,
    )?;
    let mut body =
        serde_json::to_value(doc.public(String::new())).map_err(|_| ApiError::internal())?;
    if let Some(o) = body.as_object_mut() {
        o.remove("etag");
    }
    Ok(Reply::json(202, body))
}

/// The scheduler's view of every host.
pub fn host_views(ctx: &Ctx<'_>) -> Result<Vec<HostView>, ApiError> {
    let now = ctx.now();
    let records = ctx
        .app
        .store
        .list_children("/", &Kind::Host.type_key())
        .map_err(|e| {
            crate::app::log_chain("store read failed", &e);
            ApiError::internal()
        })?;
    let mut out = Vec::new();
    for rec in records {
        let doc = Doc::parse(&rec.body)?;
        let internal: HostInternal = crate::docs::internal_of(&doc);
        out.push(HostView {
            name: doc.name.clone(),
            state: doc
                .prop_str("state")
                .and_then(HostState::parse)
                .unwrap_or(HostState::Registered),
            cordoned: doc
                .properties
                .get("cordoned")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            last_pass_age_secs: if internal.last_pass_at == 0 {
                i64::MAX
            } else {
                now - internal.last_pass_at
            },
            vms: 0, // from the VM index below
            development: doc
                .properties
                .get("development")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        });
    }
    let mut index = ctx
        .app
        .vm_index
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    index.refresh(ctx.app.store.as_ref()).map_err(|e| {
        crate::app::log_chain("store read failed", &e);
        ApiError::internal()
    })?;
    for view in &mut out {
        view.vms = index.count(&view.name);
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PreviewBody {
    #[serde(default = "one")]
    count: usize,
}

fn one() -> usize {
    1
}

/// `POST /providers/Strata.Fabric/placements/preview {"count": N}`: where N new VMs would land
/// now, or why they cannot.
pub fn placement_preview(ctx: &Ctx<'_>, body: &[u8]) -> Result<Reply, ApiError> {
    let b: PreviewBody = if body.is_empty() {
        PreviewBody { count: 1 }
    } else {
        super::parse_body(body)?
    };
    if !(1..=1000).contains(&b.count) {
        return Err(ApiError::bad_request(
            "InvalidCount",
            "count must be 1-1000",
        ));
    }
    let mut hosts = host_views(ctx)?;
    let mut placements = Vec::new();
    for _ in 0..b.count {
        match placement::place(
            &hosts,
            ctx.app.fabric.stale_after(),
            ctx.app.fabric.config.allow_development_placement,
        ) {
            Ok(h) => {
                if let Some(v) = hosts.iter_mut().find(|x| x.name == h) {
                    v.vms += 1;
                }
                placements.push(h);
            }
            Err(refusal) => {
                return Err(ApiError::conflict("NoTrustedHost", refusal.to_string()));
            }
        }
    }
    Ok(Reply::json(200, json!({ "placements": placements })))
}
