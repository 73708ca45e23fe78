//! Users, groups and service principals: validation, credential handling and their actions.
//! Secrets (passwords, client secrets, TOTP seeds) are hashed or sealed before they reach a
//! document, and a new secret is shown exactly once in `secretOutput`.

use super::{Built, check_display_name, new_doc, parse_props};
use crate::context::Ctx;
use crate::docs::{CertCredential, Doc, SecretCredential, SpInternal, UserInternal, internal_of};
use crate::kinds::Kind;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Value, json};
use strata_identity::{assertion, password, secret, totp};
use strata_types::{ApiError, ResourceBody, ResourceId};

fn internal_err<E: std::fmt::Display>(e: E) -> ApiError {
    tracing::error!(error = %e, "identity operation failed");
    ApiError::internal()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[expect(
    dead_code,
    reason = "read-only fields are accepted and ignored so GET-modify-PUT works"
)]
struct UserProps {
    #[serde(default)]
    display_name: Option<String>,
    /// Write-only.
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    account_enabled: Option<bool>,
    #[serde(default)]
    object_id: Option<IgnoredAny>,
    #[serde(default)]
    user_principal_name: Option<IgnoredAny>,
    #[serde(default)]
    mfa_enabled: Option<IgnoredAny>,
    #[serde(default)]
    provisioning_state: Option<IgnoredAny>,
}

pub fn build_user(
    ctx: &Ctx<'_>,
    id: &ResourceId,
    existing: Option<&Doc>,
    body: ResourceBody,
) -> Result<Built, ApiError> {
    let p: UserProps = parse_props(body.properties)?;
    let mut internal: UserInternal = existing.map(internal_of).unwrap_or_default();
    if let Some(pw) = &p.password {
        password::check_policy(pw)
            .map_err(|e| ApiError::bad_request("PasswordPolicy", format!("password: {e}")))?;
        internal.password_hash = Some(password::hash(pw).map_err(internal_err)?);
        // A new password ends every existing session.
        internal.valid_after = ctx.now() + 1;
    } else if existing.is_none() {
        return Err(ApiError::bad_request(
            "PasswordRequired",
            "properties.password is required when creating a user",
        ));
    }
    let display = p
        .display_name
        .or_else(|| existing.and_then(|d| d.prop_str("displayName").map(String::from)))
        .unwrap_or_else(|| id.name().unwrap_or_default().to_string());
    check_display_name(&display)?;
    let enabled = p.account_enabled.unwrap_or_else(|| {
        existing
            .and_then(|d| d.properties.get("accountEnabled").and_then(Value::as_bool))
            .unwrap_or(true)
    });
    let was_enabled = existing
        .and_then(|d| d.properties.get("accountEnabled").and_then(Value::as_bool))
        .unwrap_or(true);
    if was_enabled && !enabled {
        internal.valid_after = ctx.now() + 1;
    }
    let object_id = existing
        .and_then(|d| d.prop_str("objectId").map(String::from))
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let props = json!({
        "objectId": object_id,
        "userPrincipalName": id.name(),
        "displayName": display,
        "accountEnabled": enabled,
        "mfaEnabled": internal.totp_sealed.is_some(),
        "provisioningState": "Succeeded",
    });
    let mut doc = new_doc(ctx, id, Kind::User, existing, props);
    doc.internal = serde_json::to_value(&internal).map_err(internal_err)?;
    Ok(Built {
        doc,
        extra_ops: vec![],
        reveal: None,
    })
}

fn totp_aad(object_id: &str) -> String {
    format!("totp:{object_id}")
}

/// Opens a user's sealed TOTP secret.
pub fn user_totp_secret(ctx_root: &crate::crypto::RootKey, doc: &Doc) -> Option<Vec<u8>> {
    let internal: UserInternal = internal_of(doc);
    let sealed = internal.totp_sealed?;
    let oid = doc.prop_str("objectId")?;
    ctx_root.open(&totp_aad(oid), &sealed).ok()
}

pub fn user_action(
    ctx: &Ctx<'_>,
    id: &ResourceId,
    doc: &Doc,
    action: &str,
    _body: Value,
) -> Result<Built, ApiError> {
    let mut doc = doc.clone();
    let mut internal: UserInternal = internal_of(&doc);
    let oid = doc.prop_str("objectId").unwrap_or_default().to_string();
    let mut reveal = None;
    match action {
        "enableMfa" => {
            let seed = totp::generate_secret().map_err(internal_err)?;
            internal.totp_sealed = Some(
                ctx.app
                    .root
                    .seal(&totp_aad(&oid), &seed)
                    .map_err(internal_err)?,
            );
            internal.last_totp_step = 0;
            reveal = Some(json!({
                "totpSecret": totp::to_base32(&seed),
                "otpauthUri": totp::otpauth_uri("Strata", id.name().unwrap_or_default(), &seed),
                "note": "shown once: add it to an authenticator app now",
            }));
        }
        "disableMfa" => {
            internal.totp_sealed = None;
        }
        "revokeSessions" => {
            internal.valid_after = ctx.now() + 1;
        }
        _ => {
            return Err(ApiError::bad_request(
                "InvalidAction",
                format!("unknown action '{action}'"),
            ));
        }
    }
    if let Some(p) = doc.properties.as_object_mut() {
        p.insert("mfaEnabled".into(), json!(internal.totp_sealed.is_some()));
    }
    doc.internal = serde_json::to_value(&internal).map_err(internal_err)?;
    let mut built = Built {
        doc: new_doc(ctx, id, Kind::User, Some(&doc), doc.properties.clone()),
        extra_ops: vec![],
        reveal,
    };
    built.doc.internal = doc.internal;
    Ok(built)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[expect(
    dead_code,
    reason = "read-only fields are accepted and ignored so GET-modify-PUT works"
)]
struct GroupProps {
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    members: Vec<String>,
    #[serde(default)]
    object_id: Option<IgnoredAny>,
    #[serde(default)]
    provisioning_state: Option<IgnoredAny>,
}

pub fn build_group(
    ctx: &Ctx<'_>,
    id: &ResourceId,
    existing: Option<&Doc>,
    body: ResourceBody,
) -> Result<Built, ApiError> {
    let mut p: GroupProps = parse_props(body.properties)?;
    let display = p
        .display_name
        .take()
        .unwrap_or_else(|| id.name().unwrap_or_default().to_string());
    check_display_name(&display)?;
    if p.members.len() > 10_000 {
        return Err(ApiError::bad_request(
            "TooManyMembers",
            "a group holds at most 10,000 members",
        ));
    }
    let dir = ctx.app.dir();
    p.members.sort();
    p.members.dedup();
    for m in &p.members {
        match dir.principal(m) {
            Some(pr) if pr.kind != strata_types::PrincipalKind::Group => {}
            Some(_) => {
                return Err(ApiError::bad_request(
                    "NestedGroupsNotSupported",
                    format!("member '{m}' is a group; groups cannot be nested"),
                ));
            }
            None => {
                return Err(ApiError::bad_request(
                    "PrincipalNotFound",
                    format!("member '{m}' is not the object id of a user or service principal"),
                ));
            }
        }
    }
    let object_id = existing
        .and_then(|d| d.prop_str("objectId").map(String::from))
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let props = json!({ "objectId": object_id, "displayName": display, "members": p.members, "provisioningState": "Succeeded" });
    Ok(Built {
        doc: new_doc(ctx, id, Kind::Group, existing, props),
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
struct SpProps {
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    account_enabled: Option<bool>,
    #[serde(default)]
    object_id: Option<IgnoredAny>,
    #[serde(default)]
    app_id: Option<IgnoredAny>,
    #[serde(default)]
    password_credentials: Option<IgnoredAny>,
    #[serde(default)]
    key_credentials: Option<IgnoredAny>,
    #[serde(default)]
    provisioning_state: Option<IgnoredAny>,
}

fn sp_public_props(doc_props: &Value, internal: &SpInternal) -> Value {
    let mut props = doc_props.clone();
    if let Some(p) = props.as_object_mut() {
        p.insert(
            "passwordCredentials".into(),
            json!(internal.secrets.iter().map(|s| json!({ "keyId": s.key_id, "endDateTime": strata_types::time::rfc3339(s.expires_at) })).collect::<Vec<_>>()),
        );
        p.insert(
            "keyCredentials".into(),
            json!(
                internal
                    .certificates
                    .iter()
                    .map(|c| json!({ "keyId": c.key_id, "thumbprintSha256": c.thumbprint }))
                    .collect::<Vec<_>>()
            ),
        );
    }
    props
}

pub fn build_sp(
    ctx: &Ctx<'_>,
    id: &ResourceId,
    existing: Option<&Doc>,
    body: ResourceBody,
) -> Result<Built, ApiError> {
    let p: SpProps = parse_props(body.properties)?;
    let mut internal: SpInternal = existing.map(internal_of).unwrap_or_default();
    let display = p
        .display_name
        .or_else(|| existing.and_then(|d| d.prop_str("displayName").map(String::from)))
        .unwrap_or_else(|| id.name().unwrap_or_default().to_string());
    check_display_name(&display)?;
    let was_enabled = existing
        .and_then(|d| d.properties.get("accountEnabled").and_then(Value::as_bool))
        .unwrap_or(true);
    let enabled = p.account_enabled.unwrap_or(was_enabled);
    if was_enabled && !enabled {
        internal.valid_after = ctx.now() + 1;
    }
    let object_id = existing
        .and_then(|d| d.prop_str("objectId").map(String::from))
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let app_id = existing
        .and_then(|d| d.prop_str("appId").map(String::from))
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let base = json!({
        "objectId": object_id,
        "appId": app_id,
        "displayName": display,
        "accountEnabled": enabled,
        "provisioningState": "Succeeded",
    });
    let mut doc = new_doc(
        ctx,
        id,
        Kind::ServicePrincipal,
        existing,
        sp_public_props(&base, &internal),
    );
    doc.internal = serde_json::to_value(&internal).map_err(internal_err)?;
    Ok(Built {
        doc,
        extra_ops: vec![],
        reveal: None,
    })
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct AddPassword {
    #[serde(default)]
    expires_in_days: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct AddCertificate {
    certificate: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RemoveCredential {
    key_id: String,
}

pub fn sp_action(
    ctx: &Ctx<'_>,
    id: &ResourceId,
    doc: &Doc,
    action: &str,
    body: Value,
) -> Result<Built, ApiError> {
    let mut internal: SpInternal = internal_of(doc);
    let bad = |e: serde_json::Error| ApiError::bad_request("InvalidRequestContent", e.to_string());
    let mut reveal = None;
    match action {
        "addPassword" => {
            let a: AddPassword = serde_json::from_value(body).map_err(bad)?;
            let days = a.expires_in_days.unwrap_or(180);
            if !(1..=730).contains(&days) {
                return Err(ApiError::bad_request(
                    "InvalidExpiry",
                    "expiresInDays must be between 1 and 730",
                ));
            }
            if internal.secrets.len() >= 10 {
                return Err(ApiError::conflict(
                    "TooManyCredentials",
                    "a service principal holds at most 10 secrets; remove one first",
                ));
            }
            let s = secret::generate().map_err(internal_err)?;
            let key_id = uuid::Uuid::new_v4().to_string();
            let expires_at = ctx.now() + i64::from(days) * 86_400;
            internal.secrets.push(SecretCredential {
                key_id: key_id.clone(),
                hash: secret::hash(&s),
                expires_at,
            });
            reveal = Some(json!({
                "clientId": doc.prop_str("appId"),
                "keyId": key_id,
                "clientSecret": s,
                "endDateTime": strata_types::time::rfc3339(expires_at),
                "note": "shown once: store it now",
            }));
        }
        "addCertificate" => {
            let a: AddCertificate = serde_json::from_value(body).map_err(bad)?;
            if a.certificate.len() > 16 * 1024 {
                return Err(ApiError::bad_request(
                    "InvalidCertificate",
                    "certificate: at most 16 KiB of PEM",
                ));
            }
            let key = assertion::parse_certificate_pem(&a.certificate).map_err(|e| {
                ApiError::bad_request("InvalidCertificate", format!("certificate: {e}"))
            })?;
            if internal
                .certificates
                .iter()
                .any(|c| c.thumbprint == key.thumbprint)
            {
                return Err(ApiError::conflict(
                    "CredentialExists",
                    "this certificate is already registered",
                ));
            }
            let key_id = uuid::Uuid::new_v4().to_string();
            internal.certificates.push(CertCredential {
                key_id: key_id.clone(),
                thumbprint: key.thumbprint.clone(),
                certificate: a.certificate,
            });
            reveal = Some(json!({ "keyId": key_id, "thumbprintSha256": key.thumbprint }));
        }
        "removeCredential" => {
            let a: RemoveCredential = serde_json::from_value(body).map_err(bad)?;
            let before = internal.secrets.len() + internal.certificates.len();
            internal.secrets.retain(|s| s.key_id != a.key_id);
            internal.certificates.retain(|c| c.key_id != a.key_id);
            if before == internal.secrets.len() + internal.certificates.len() {
                return Err(ApiError::new(
                    404,
                    "CredentialNotFound",
                    format!("no credential with keyId '{}'", a.key_id),
                ));
            }
        }
        "revokeSessions" => {
            internal.valid_after = ctx.now() + 1;
        }
        _ => {
            return Err(ApiError::bad_request(
                "InvalidAction",
                format!("unknown action '{action}'"),
            ));
        }
    }
    let props = sp_public_props(&doc.properties, &internal);
    let mut new = new_doc(ctx, id, Kind::ServicePrincipal, Some(doc), props);
    new.internal = serde_json::to_value(&internal).map_err(internal_err)?;
    Ok(Built {
        doc: new,
        extra_ops: vec![],
        reveal,
    })
}
