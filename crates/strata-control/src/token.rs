//! `POST /oauth2/token` (RFC 6749) and OIDC discovery. Grants: `client_credentials` with a
//! client secret or a certificate-signed client assertion (RFC 7523), and `password` (+ `totp`)
//! for interactive CLI sign-in. Every attempt, good or bad, is audited; no secret is ever logged.

use crate::app::{AUDIENCE, App, log_chain};
use crate::docs::{Doc, SpInternal, UserInternal, internal_of};
use crate::handlers::identity::user_totp_secret;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Mutex;
use strata_audit::AuditEntry;
use strata_identity::jwt::Claims;
use strata_identity::{assertion, password, secret, totp};
use strata_store::{Batch, Op, Precondition};

#[derive(Deserialize, Default)]
pub struct TokenForm {
    #[serde(default)]
    grant_type: String,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    client_secret: Option<String>,
    #[serde(default)]
    client_assertion_type: Option<String>,
    #[serde(default)]
    client_assertion: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    totp: Option<String>,
    #[serde(default)]
    scope: Option<String>,
}

impl std::fmt::Debug for TokenForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenForm")
            .field("grant_type", &self.grant_type)
            .finish_non_exhaustive()
    }
}

/// An OAuth error response (`{"error","error_description"}`), as RFC 6749 §5.2 shapes it.
pub struct OAuthError {
    pub status: u16,
    pub error: &'static str,
    pub description: String,
}

impl OAuthError {
    fn new(status: u16, error: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            error,
            description: description.into(),
        }
    }
    pub fn body(&self) -> Value {
        json!({ "error": self.error, "error_description": self.description })
    }
}

/// `jti`s of client assertions seen recently (replay protection), with their expiry.
#[derive(Default)]
pub struct SeenAssertions(Mutex<HashMap<String, i64>>);

impl SeenAssertions {
    fn first_use(&self, jti: &str, exp: i64, now: i64) -> bool {
        let Ok(mut seen) = self.0.lock() else {
            return false;
        };
        seen.retain(|_, e| *e > now - 60);
        if seen.contains_key(jti) {
            return false;
        }
        seen.insert(jti.to_string(), exp);
        true
    }
}

struct Issued {
    principal_id: String,
    name: String,
    ptype: &'static str,
    amr: Vec<String>,
    valid_after: i64,
    /// A user's TOTP step to record (replay protection), with the document revision it was read at.
    totp_update: Option<(String, String, u64, u64)>,
}

pub fn token_endpoint(
    app: &App,
    seen: &SeenAssertions,
    body: &[u8],
    client_ip: &str,
    request_id: &str,
) -> (u16, Value) {
    if let Err(wait) = app.signin_limiter.check(&format!("token:{client_ip}")) {
        return (
            429,
            OAuthError::new(
                429,
                "slow_down",
                format!("too many sign-in attempts from this address; retry after {wait} s"),
            )
            .body(),
        );
    }
    let form: TokenForm = match serde_urlencoded::from_bytes(body) {
        Ok(f) => f,
        Err(_) => {
            return (
                400,
                OAuthError::new(
                    400,
                    "invalid_request",
                    "the body must be application/x-www-form-urlencoded",
                )
                .body(),
            );
        }
    };
    let grant = form.grant_type.clone();
    let who = form
        .client_id
        .clone()
        .or_else(|| form.username.clone())
        .unwrap_or_default();
    let result = match grant.as_str() {
        "client_credentials" => client_credentials(app, seen, &form),
        "password" => password_grant(app, &form),
        "" => Err(OAuthError::new(
            400,
            "invalid_request",
            "grant_type is required",
        )),
        _ => Err(OAuthError::new(
            400,
            "unsupported_grant_type",
            "supported grant types: client_credentials, password",
        )),
    };
    let now = strata_types::time::now_unix();
    let mut entry = AuditEntry {
        seq: 0,
        time: strata_types::time::now_rfc3339(),
        request_id: request_id.to_string(),
        principal_id: None,
        principal_name: Some(who.chars().take(100).collect()),
        client_ip: Some(client_ip.to_string()),
        category: if grant == "password" {
            "signIn".into()
        } else {
            "token".into()
        },
        action: "oauth2/token".into(),
        scope: "/".into(),
        outcome: "failure".into(),
        status: 0,
        reason: String::new(),
        details: json!({ "grantType": grant.chars().take(40).collect::<String>() }),
    };
    match result {
        Err(e) => {
            entry.status = e.status;
            entry.reason = e.description.clone();
            app.audit_only(vec![entry]);
            (e.status, e.body())
        }
        Ok(issued) => {
            // Tokens are never issued in the same second as a revocation that must refuse them.
            if issued.valid_after > now {
                std::thread::sleep(std::time::Duration::from_millis(
                    ((issued.valid_after - now) as u64 * 1000).min(2000),
                ));
            }
            let now = strata_types::time::now_unix();
            let lifetime = app.settings.token_lifetime_secs;
            let claims = Claims {
                iss: app.settings.issuer.clone(),
                sub: issued.principal_id.clone(),
                aud: AUDIENCE.into(),
                exp: now + lifetime,
                nbf: now,
                iat: now,
                jti: uuid::Uuid::new_v4().to_string(),
                tid: app.tenant_id.clone(),
                ptype: issued.ptype.into(),
                name: issued.name.clone(),
                amr: issued.amr.clone(),
            };
            let token = match app.tokens().signer.sign(&claims) {
                Ok(t) => t,
                Err(e) => {
                    log_chain("token signing failed", &e);
                    return (
                        500,
                        OAuthError::new(500, "server_error", "token signing failed").body(),
                    );
                }
            };
            entry.principal_id = Some(issued.principal_id.clone());
            entry.principal_name = Some(issued.name.clone());
            entry.outcome = "success".into();
            entry.status = 200;
            entry.reason = format!("credentials verified ({})", issued.amr.join("+"));
            entry.details = json!({ "grantType": grant, "tokenId": claims.jti, "expiresAt": claims.exp, "amr": claims.amr });
            let mut ops = Vec::new();
            if let Some((key, body, rev, _)) = issued.totp_update {
                ops.push(Op::Put {
                    key,
                    rtype: crate::kinds::Kind::User.type_key(),
                    parent: "/".into(),
                    body,
                    pre: Precondition::Revision(rev),
                });
            }
            // The issuance is durable in the audit log before the token leaves the server.
            if let Err(e) = app.store.commit(Batch {
                ops,
                audit: vec![entry],
            }) {
                if matches!(e, strata_store::StoreError::Precondition { .. }) {
                    return (
                        400,
                        OAuthError::new(
                            400,
                            "invalid_grant",
                            "the sign-in raced with another; try again with a fresh code",
                        )
                        .body(),
                    );
                }
                log_chain("token audit failed", &e);
                return (
                    500,
                    OAuthError::new(500, "server_error", "the sign-in could not be recorded")
                        .body(),
                );
            }
            let _ = form.scope;
            (
                200,
                json!({ "access_token": token, "token_type": "Bearer", "expires_in": lifetime }),
            )
        }
    }
}

fn client_credentials(
    app: &App,
    seen: &SeenAssertions,
    form: &TokenForm,
) -> Result<Issued, OAuthError> {
    let invalid = || OAuthError::new(401, "invalid_client", "client authentication failed");
    let client_id = form
        .client_id
        .as_deref()
        .ok_or_else(|| OAuthError::new(400, "invalid_request", "client_id is required"))?;
    let dir = app.dir();
    let sp = dir.sp_by_app_id(client_id).cloned();
    let Some(sp) = sp else {
        // Spend comparable time whether or not the client exists.
        let _ = secret::verify(
            form.client_secret.as_deref().unwrap_or(""),
            "sha256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        );
        return Err(invalid());
    };
    let rec = app
        .store
        .get(&sp.key)
        .map_err(|_| OAuthError::new(500, "server_error", "lookup failed"))?
        .ok_or_else(invalid)?;
    let doc =
        Doc::parse(&rec.body).map_err(|_| OAuthError::new(500, "server_error", "lookup failed"))?;
    let internal: SpInternal = internal_of(&doc);
    let now = strata_types::time::now_unix();
    let amr = if let Some(s) = form.client_secret.as_deref() {
        let ok = internal
            .secrets
            .iter()
            .any(|c| c.expires_at > now && secret::verify(s, &c.hash));
        if !ok {
            return Err(invalid());
        }
        "secret"
    } else if let Some(a) = form.client_assertion.as_deref() {
        if form.client_assertion_type.as_deref()
            != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
        {
            return Err(OAuthError::new(
                400,
                "invalid_request",
                "client_assertion_type must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ));
        }
        let audience = format!("{}/oauth2/token", app.settings.issuer);
        let verified = internal.certificates.iter().find_map(|c| {
            let key = assertion::parse_certificate_pem(&c.certificate).ok()?;
            assertion::verify_client_assertion(a, &key, &sp_app_id(&doc), &audience, now).ok()
        });
        let claims = verified.ok_or_else(invalid)?;
        if !seen.first_use(&claims.jti, claims.exp, now) {
            return Err(OAuthError::new(
                401,
                "invalid_client",
                "this client assertion was already used",
            ));
        }
        "cert"
    } else {
        return Err(OAuthError::new(
            400,
            "invalid_request",
            "send client_secret or client_assertion",
        ));
    };
    if !sp.enabled {
        return Err(OAuthError::new(
            401,
            "invalid_client",
            "the service principal is disabled",
        ));
    }
    Ok(Issued {
        principal_id: sp.id,
        name: sp.name,
        ptype: "servicePrincipal",
        amr: vec![amr.into()],
        valid_after: internal.valid_after,
        totp_update: None,
    })
}

fn sp_app_id(doc: &Doc) -> String {
    doc.prop_str("appId").unwrap_or_default().to_string()
}

/// A fixed argon2id hash to verify against when the user does not exist (equal timing).
const DUMMY_PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$c3RyYXRhLWR1bW15LXNhbHQ$1Q1tEfmFm3W9MEGXgFmPjZpuBfVdOEbTu4BD6C7oXdA";

fn password_grant(app: &App, form: &TokenForm) -> Result<Issued, OAuthError> {
    let invalid = || {
        OAuthError::new(
            400,
            "invalid_grant",
            "the user name or password is incorrect",
        )
    };
    let (Some(username), Some(pw)) = (form.username.as_deref(), form.password.as_deref()) else {
        return Err(OAuthError::new(
            400,
            "invalid_request",
            "username and password are required",
        ));
    };
    if let Err(wait) = app
        .signin_limiter
        .check(&format!("user:{}", username.to_ascii_lowercase()))
    {
        return Err(OAuthError::new(
            429,
            "slow_down",
            format!("too many sign-in attempts for this user; retry after {wait} s"),
        ));
    }
    let dir = app.dir();
    let Some(user) = dir.user_by_name(username).cloned() else {
        let _ = password::verify(pw, DUMMY_PHC);
        return Err(invalid());
    };
    let rec = app
        .store
        .get(&user.key)
        .map_err(|_| OAuthError::new(500, "server_error", "lookup failed"))?
        .ok_or_else(invalid)?;
    let doc =
        Doc::parse(&rec.body).map_err(|_| OAuthError::new(500, "server_error", "lookup failed"))?;
    let mut internal: UserInternal = internal_of(&doc);
    let ok = internal
        .password_hash
        .as_deref()
        .is_some_and(|h| password::verify(pw, h));
    if !ok {
        return Err(invalid());
    }
    if !user.enabled {
        return Err(OAuthError::new(
            400,
            "invalid_grant",
            "the account is disabled",
        ));
    }
    let mut amr = vec!["pwd".to_string()];
    let mut totp_update = None;
    if let Some(seed) = user_totp_secret(&app.root, &doc) {
        let Some(code) = form.totp.as_deref() else {
            return Err(OAuthError::new(
                400,
                "invalid_grant",
                "this account has MFA: send the current TOTP code in 'totp'",
            ));
        };
        let now = strata_types::time::now_unix();
        let step = totp::verify(&seed, code, now, 1).ok_or_else(|| {
            OAuthError::new(400, "invalid_grant", "the TOTP code is wrong or expired")
        })?;
        if step <= internal.last_totp_step {
            return Err(OAuthError::new(
                400,
                "invalid_grant",
                "this TOTP code was already used; wait for the next one",
            ));
        }
        internal.last_totp_step = step;
        let mut new_doc = doc.clone();
        new_doc.internal = serde_json::to_value(&internal)
            .map_err(|_| OAuthError::new(500, "server_error", "update failed"))?;
        let body = new_doc
            .to_json()
            .map_err(|_| OAuthError::new(500, "server_error", "update failed"))?;
        totp_update = Some((user.key.clone(), body, rec.revision, step));
        amr.push("mfa".into());
    } else if form.totp.is_some() {
        return Err(OAuthError::new(
            400,
            "invalid_grant",
            "this account has no MFA enrolled; omit 'totp'",
        ));
    }
    Ok(Issued {
        principal_id: user.id,
        name: user.name,
        ptype: "user",
        amr,
        valid_after: internal.valid_after,
        totp_update,
    })
}

pub fn discovery(app: &App) -> Value {
    let iss = &app.settings.issuer;
    json!({
        "issuer": iss,
        "token_endpoint": format!("{iss}/oauth2/token"),
        "jwks_uri": format!("{iss}/.well-known/jwks.json"),
        "grant_types_supported": ["client_credentials", "password"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["ES256", "RS256", "PS256"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "response_types_supported": ["token"],
        "subject_types_supported": ["public"],
        "claims_supported": ["iss", "sub", "aud", "exp", "nbf", "iat", "jti", "tid", "ptype", "name", "amr"],
    })
}
