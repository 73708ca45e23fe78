//! The one door every ARM request goes through:
//!
//! ```text
//! request ─▶ authenticate ─▶ rate limit ─▶ parse + route ─▶ authorize ─▶ handler ─▶ reply
//!               │ 401 (audited)   │ 429          │ 400            │ 403/404 (audited)
//!               └──────────────── every write and every failure of a write is audited ───┘
//! ```
//!
//! **Architecture Invariant:** handlers never see an unauthenticated or unauthorized request:
//! the router's only non-public route is [`handle`], which runs the steps above in order, and the
//! only way a handler writes is [`crate::context::Ctx::commit`], which audits atomically.

use crate::app::{App, Caller};
use crate::context::Ctx;
use crate::handlers;
use crate::kinds::Kind;
use serde_json::{Value, json};
use strata_audit::AuditEntry;
use strata_types::{ApiError, ArmPath, ResourceId};

/// HTTP verbs the ARM surface understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Get,
    Put,
    Patch,
    Delete,
    Post,
}

impl Verb {
    pub fn parse(m: &str) -> Option<Verb> {
        Some(match m {
            "GET" => Verb::Get,
            "PUT" => Verb::Put,
            "PATCH" => Verb::Patch,
            "DELETE" => Verb::Delete,
            "POST" => Verb::Post,
            _ => return None,
        })
    }
    pub fn mutating(self) -> bool {
        self != Verb::Get
    }
}

/// What a request is about, once routed.
#[derive(Clone, Debug)]
pub enum Target {
    Item {
        id: ResourceId,
        kind: Kind,
    },
    Collection {
        parent: ResourceId,
        kind: Kind,
    },
    GroupResources {
        rg: ResourceId,
    },
    PostAction {
        id: ResourceId,
        kind: Kind,
        action: String,
    },
    AuditEntries,
    AuditCheckpoint,
    AuditInclusion,
    AuditConsistency,
    Changes,
    CheckAccess(handlers::authz::CheckAccessBody),
    PolicyImport,
    PlacementPreview,
}

/// A routed request: its target plus the RBAC question that guards it.
#[derive(Clone, Debug)]
pub struct Route {
    pub verb: Verb,
    pub target: Target,
    pub action: String,
    pub scope: ResourceId,
}

/// An answer, before it becomes HTTP.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Option<Value>,
    pub etag: Option<String>,
    pub retry_after: Option<u64>,
    pub location: Option<String>,
}

impl Reply {
    pub fn json(status: u16, body: Value) -> Reply {
        Reply {
            status,
            body: Some(body),
            etag: None,
            retry_after: None,
            location: None,
        }
    }
    pub fn empty(status: u16) -> Reply {
        Reply {
            status,
            body: None,
            etag: None,
            retry_after: None,
            location: None,
        }
    }
    pub fn error(e: &ApiError) -> Reply {
        Reply::json(
            e.status,
            serde_json::to_value(e.body()).unwrap_or(Value::Null),
        )
    }
}

/// Request pieces the dispatcher needs, independent of the HTTP library.
pub struct Incoming<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub authorization: Option<&'a str>,
    pub if_match: Option<&'a str>,
    pub if_none_match: Option<&'a str>,
    pub client_ip: String,
    pub body: &'a [u8],
}

fn system_entry(
    request_id: &str,
    client_ip: &str,
    action: &str,
    scope: &str,
    status: u16,
    reason: &str,
) -> AuditEntry {
    AuditEntry {
        seq: 0,
        time: strata_types::time::now_rfc3339(),
        request_id: request_id.to_string(),
        principal_id: None,
        principal_name: None,
        client_ip: Some(client_ip.to_string()),
        category: "denial".into(),
        action: action.to_string(),
        scope: scope.to_string(),
        outcome: "denied".into(),
        status,
        reason: reason.to_string(),
        details: Value::Null,
    }
}

/// Runs one ARM request through authenticate → authorize → handler → audit.
pub fn handle(app: &App, req: Incoming<'_>, request_id: &str) -> Reply {
    match handle_inner(app, &req, request_id) {
        Ok(r) => r,
        Err(f) => f.reply(),
    }
}

/// A refusal, with the `Retry-After` a rate limit asks for.
pub struct Failure {
    pub err: ApiError,
    pub retry_after: Option<u64>,
}

impl Failure {
    pub fn reply(self) -> Reply {
        let mut r = Reply::error(&self.err);
        r.retry_after = self.retry_after;
        r
    }
}

impl From<ApiError> for Failure {
    fn from(err: ApiError) -> Self {
        Failure {
            err,
            retry_after: None,
        }
    }
}

fn handle_inner(app: &App, req: &Incoming<'_>, request_id: &str) -> Result<Reply, Failure> {
    let admitted = admit(app, req, request_id)?;
    // 5. Handle, with the context that audits writes.
    let ctx = admitted.context(app, &req.client_ip, request_id);
    let result = handlers::run(&ctx, &admitted.route, req);
    audit_failure(&ctx, admitted.route.verb, &result);
    Ok(result?)
}

/// A request that passed steps 1-4 (authenticated, within its rate limit, routed, authorized);
/// the handler has not run.
pub struct Admitted {
    pub caller: Caller,
    pub route: Route,
    /// Why it was allowed.
    pub reason: String,
}

impl Admitted {
    /// The handler's context for this request.
    pub fn context<'a>(&self, app: &'a App, client_ip: &str, request_id: &str) -> Ctx<'a> {
        Ctx {
            app,
            caller: self.caller.clone(),
            request_id: request_id.to_string(),
            client_ip: client_ip.to_string(),
            action: self.route.action.clone(),
            scope: self.route.scope.to_string(),
            reason: self.reason.clone(),
            audited: std::cell::Cell::new(false),
        }
    }
}

/// Steps 1-4: authenticate, rate limit, route, authorize. Streamed requests (image uploads:
/// [`is_upload`]) are admitted with an empty `body` before a byte of it is read.
pub fn admit(app: &App, req: &Incoming<'_>, request_id: &str) -> Result<Admitted, Failure> {
    // 1. Authenticate. A missing or bad token is refused before anything else is looked at.
    let caller = match authenticate(app, req.authorization) {
        Ok(c) => c,
        Err(e) => {
            // Audit refused credentials, bounded per client address so a flood cannot fill the log.
            if app
                .signin_limiter
                .check(&format!("401:{}", req.client_ip))
                .is_ok()
            {
                app.audit_only(vec![system_entry(
                    request_id,
                    &req.client_ip,
                    &format!("{} {}", req.method, truncate(req.path, 200)),
                    "/",
                    401,
                    &e.message,
                )]);
            }
            return Err(e.into());
        }
    };

    // 2. Rate limit per principal.
    if let Err(wait) = app.limiter.check(&caller.principal_id) {
        return Err(Failure {
            err: ApiError::new(
                429,
                "TooManyRequests",
                format!("too many requests from this principal; retry after {wait} s"),
            ),
            retry_after: Some(wait),
        });
    }

    // 3. Route.
    let verb = Verb::parse(req.method).ok_or_else(|| {
        ApiError::new(
            405,
            "MethodNotAllowed",
            format!("method {} is not supported", req.method),
        )
    })?;
    let path = ArmPath::parse(req.path)
        .map_err(|e| ApiError::bad_request("InvalidResourceId", e.to_string()))?;
    let route = resolve(verb, path, req.body)?;

    // 4. Authorize.
    let reason = authorize(app, &caller, &route, req, request_id)?;
    Ok(Admitted {
        caller,
        route,
        reason,
    })
}

/// Audits a failed mutating request whose handler did not audit it itself.
pub fn audit_failure<T>(ctx: &Ctx<'_>, verb: Verb, result: &Result<T, ApiError>) {
    if verb.mutating()
        && !ctx.audited.get()
        && let Err(e) = result
    {
        ctx.app.audit_only(vec![ctx.entry(
            "write",
            "failure",
            e.status,
            json!({ "error": e.code }),
        )]);
    }
}

/// Whether a request carries a streamed body rather than JSON: `POST …/Strata.Compute/images/
/// NAME/upload` (the image's bytes). The server admits it with [`admit`] before reading the
/// body, then streams the body to disk (`handlers::images`).
pub fn is_upload(method: &str, path: &str) -> bool {
    method == "POST"
        && matches!(
            ArmPath::parse(path),
            Ok(ArmPath::Collection { parent, last, .. })
                if last.eq_ignore_ascii_case("upload")
                    && parent.resource_type().and_then(|t| Kind::from_type(&t)) == Some(Kind::Image)
        )
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

fn authenticate(app: &App, header: Option<&str>) -> Result<Caller, ApiError> {
    let header = header.ok_or_else(|| {
        ApiError::unauthenticated(
            "no access token: send 'Authorization: Bearer TOKEN' (get one from POST /oauth2/token)",
        )
    })?;
    let token = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .ok_or_else(|| {
            ApiError::unauthenticated("the Authorization header must be 'Bearer TOKEN'")
        })?;
    app.authenticate(token.trim())
}

/// Maps a parsed path and verb to a target and the RBAC action that guards it.
pub fn resolve(verb: Verb, path: ArmPath, body: &[u8]) -> Result<Route, ApiError> {
    let unsupported = |what: &str| {
        ApiError::new(
            405,
            "MethodNotAllowed",
            format!("{what} does not support this method"),
        )
    };
    let tenant = ResourceId::tenant();
    match path {
        ArmPath::Item(id) if id.is_tenant() => Err(ApiError::bad_request(
            "InvalidResourceId",
            "the tenant root is not a resource; try GET /subscriptions",
        )),
        ArmPath::Item(id) => {
            let rtype = id
                .resource_type()
                .ok_or_else(|| ApiError::not_found(id.as_str()))?;
            match (rtype.key(), id.name().unwrap_or_default()) {
                ("strata.audit/checkpoints", "latest") if verb == Verb::Get => {
                    return Ok(Route {
                        verb,
                        target: Target::AuditCheckpoint,
                        action: "Strata.Audit/entries/read".into(),
                        scope: tenant,
                    });
                }
                ("strata.audit/proofs", "inclusion") if verb == Verb::Get => {
                    return Ok(Route {
                        verb,
                        target: Target::AuditInclusion,
                        action: "Strata.Audit/entries/read".into(),
                        scope: tenant,
                    });
                }
                ("strata.audit/proofs", "consistency") if verb == Verb::Get => {
                    return Ok(Route {
                        verb,
                        target: Target::AuditConsistency,
                        action: "Strata.Audit/entries/read".into(),
                        scope: tenant,
                    });
                }
                ("strata.fabric/referencepolicies", "import")
                    if verb == Verb::Post && id.parent().is_some_and(|p| p.is_tenant()) =>
                {
                    return Ok(Route {
                        verb,
                        target: Target::PolicyImport,
                        action: "Strata.Fabric/referencePolicies/write".into(),
                        scope: tenant,
                    });
                }
                ("strata.fabric/placements", "preview")
                    if verb == Verb::Post && id.parent().is_some_and(|p| p.is_tenant()) =>
                {
                    return Ok(Route {
                        verb,
                        target: Target::PlacementPreview,
                        action: "Strata.Fabric/hosts/read".into(),
                        scope: tenant,
                    });
                }
                _ => {}
            }
            let kind = Kind::from_type(&rtype).ok_or_else(|| unknown_type(rtype.as_str()))?;
            let action = match verb {
                Verb::Get => kind.action("read"),
                Verb::Put | Verb::Patch => kind.action("write"),
                Verb::Delete => kind.action("delete"),
                Verb::Post => return Err(unsupported(rtype.as_str())),
            };
            Ok(Route {
                verb,
                scope: id.clone(),
                target: Target::Item { id, kind },
                action,
            })
        }
        ArmPath::Collection {
            parent,
            rtype,
            last,
        } => {
            match rtype.key() {
                "strata.audit/entries" if verb == Verb::Get && parent.is_tenant() => {
                    return Ok(Route {
                        verb,
                        target: Target::AuditEntries,
                        action: "Strata.Audit/entries/read".into(),
                        scope: tenant,
                    });
                }
                "strata.resources/changes" if verb == Verb::Get && parent.is_tenant() => {
                    return Ok(Route {
                        verb,
                        target: Target::Changes,
                        action: "Strata.Resources/changes/read".into(),
                        scope: tenant,
                    });
                }
                "strata.authorization/checkaccess" if verb == Verb::Post && parent.is_tenant() => {
                    let body: handlers::authz::CheckAccessBody = handlers::parse_body(body)?;
                    let scope = ResourceId::parse(&body.scope).map_err(|e| {
                        ApiError::bad_request("InvalidScope", format!("scope: {e}"))
                    })?;
                    return Ok(Route {
                        verb,
                        target: Target::CheckAccess(body),
                        action: "Strata.Authorization/roleAssignments/read".into(),
                        scope,
                    });
                }
                _ => {}
            }
            // `…/{type}/{name}/{action}` arrives as a collection whose "type" is the action.
            if verb == Verb::Post {
                if let Some(ptype) = parent.resource_type()
                    && let Some(kind) = Kind::from_type(&ptype)
                {
                    if let Some(action) = kind
                        .post_actions()
                        .iter()
                        .find(|a| a.eq_ignore_ascii_case(&last))
                    {
                        return Ok(Route {
                            verb,
                            action: kind.post_action_permission(action),
                            scope: parent.clone(),
                            target: Target::PostAction {
                                id: parent,
                                kind,
                                action: (*action).to_string(),
                            },
                        });
                    }
                    return Err(ApiError::bad_request(
                        "InvalidAction",
                        format!(
                            "'{last}' is not an action of {}; available: {}",
                            kind.type_name(),
                            kind.post_actions().join(", ")
                        ),
                    ));
                }
                return Err(unsupported(rtype.as_str()));
            }
            let kind = Kind::from_type(&rtype).ok_or_else(|| unknown_type(rtype.as_str()))?;
            if verb != Verb::Get {
                return Err(unsupported("a collection"));
            }
            Ok(Route {
                verb,
                action: kind.action("read"),
                scope: parent.clone(),
                target: Target::Collection { parent, kind },
            })
        }
        ArmPath::GroupResources(rg) => {
            if verb != Verb::Get {
                return Err(unsupported("a resource group's resource list"));
            }
            Ok(Route {
                verb,
                action: Kind::ResourceGroup.action("read"),
                scope: rg.clone(),
                target: Target::GroupResources { rg },
            })
        }
    }
}

fn unknown_type(t: &str) -> ApiError {
    ApiError::bad_request(
        "InvalidResourceType",
        format!(
            "the resource type '{t}' is not served by this control plane; see /openapi.json for the supported types"
        ),
    )
}

/// Decides the route's RBAC question. On deny, audits and answers 403 when the caller may read
/// the target and 404 when it may not (so existence never leaks). Returns the allow reason.
fn authorize(
    app: &App,
    caller: &Caller,
    route: &Route,
    req: &Incoming<'_>,
    request_id: &str,
) -> Result<String, ApiError> {
    // PIM self-activation: a principal activates its own eligible assignment; the handler
    // checks the eligibility itself, so the RBAC question here is "is this the caller's own
    // request".
    if let Target::Item {
        kind: Kind::ActivationRequest,
        ..
    } = route.target
        && route.verb == Verb::Put
    {
        let body: Value = serde_json::from_slice(req.body).unwrap_or(Value::Null);
        let requested = body
            .pointer("/properties/principalId")
            .and_then(Value::as_str)
            .unwrap_or(&caller.principal_id);
        if requested == caller.principal_id {
            return Ok("self-service activation of the caller's own eligible assignment".into());
        }
    }
    // Lists are filtered item by item in the handler; they pass here.
    if matches!(
        route.target,
        Target::Collection { .. } | Target::GroupResources { .. }
    ) {
        return Ok("list filtered to readable items".into());
    }
    // Key vaults' cryptographic operations are data actions: only roles' `dataActions` grant
    // them (a management `*` does not).
    let data_action = matches!(
        &route.target,
        Target::PostAction { kind, action, .. } if kind.post_action_is_data(action)
    );
    let decision = app.decide(caller, &route.action, route.scope.key(), data_action);
    let mfa_role = app.missing_mfa(caller, &decision);
    if decision.is_allowed() && mfa_role.is_none() {
        return Ok(decision.explain());
    }
    let (status, err, reason) = if let Some(role) = mfa_role {
        (
            403,
            ApiError::new(
                403,
                "MfaRequired",
                format!(
                    "'{}' at '{}' is allowed only through the privileged role '{role}', which requires multi-factor sign-in; sign in again with a TOTP code",
                    route.action, route.scope
                ),
            ),
            format!(
                "{}; privileged role '{role}' requires MFA",
                decision.explain()
            ),
        )
    } else {
        let readable = match &route.target {
            Target::Item { id, kind } | Target::PostAction { id, kind, .. } => {
                app.decide(caller, &kind.action("read"), id.key(), false)
                    .is_allowed()
                    // A data-plane reader of keys (Key Vault Crypto User) knows they exist.
                    || (*kind == Kind::VaultKey
                        && app
                            .decide(caller, &kind.action("read"), id.key(), true)
                            .is_allowed())
            }
            _ => true,
        };
        if readable {
            (
                403,
                ApiError::forbidden(format!(
                    "the client '{}' does not have authorization to perform action '{}' over scope '{}'",
                    caller.name, route.action, route.scope
                )),
                decision.explain(),
            )
        } else {
            let what = match (&route.target, route.verb) {
                (Target::Item { id, .. }, Verb::Put) => {
                    id.parent().unwrap_or_else(ResourceId::tenant)
                }
                _ => route.scope.clone(),
            };
            (404, ApiError::not_found(what.as_str()), decision.explain())
        }
    };
    app.audit_only(vec![AuditEntry {
        seq: 0,
        time: strata_types::time::now_rfc3339(),
        request_id: request_id.to_string(),
        principal_id: Some(caller.principal_id.clone()),
        principal_name: Some(caller.name.clone()),
        client_ip: Some(req.client_ip.clone()),
        category: "denial".into(),
        action: route.action.clone(),
        scope: route.scope.to_string(),
        outcome: "denied".into(),
        status,
        reason,
        details: Value::Null,
    }]);
    Err(err)
}
