//! Reference policies ("golden measurements"): accepted only as bundles signed by a configured
//! release key, versioned (a bundle must be newer than every policy it replaces, so an old
//! signed bundle cannot roll the fleet back), and audited. There is no other way to write one:
//! PUT on `referencePolicies` is refused.

use serde_json::{Value, json};
use strata_attest::bundle::{ReleaseKey, SignedBundle};
use strata_attest::policy::ReferencePolicy;
use strata_store::{Op, Precondition};
use strata_types::{ApiError, ResourceId};

use crate::app::{App, log_chain};
use crate::context::Ctx;
use crate::dispatch::Reply;
use crate::docs::Doc;
use crate::kinds::Kind;

/// A host's reference policy, as loaded for a round.
#[derive(Clone, Debug)]
pub struct LoadedPolicy {
    pub name: String,
    pub version: u64,
    pub policy: ReferencePolicy,
}

/// Release keys from a file: one key or a list (JSON).
pub fn parse_release_keys(text: &str) -> Result<Vec<ReleaseKey>, String> {
    if let Ok(list) = serde_json::from_str::<Vec<ReleaseKey>>(text) {
        return Ok(list);
    }
    serde_json::from_str::<ReleaseKey>(text)
        .map(|k| vec![k])
        .map_err(|e| format!("not a release key or a list of release keys: {e}"))
}

pub fn policy_id(name: &str) -> Result<ResourceId, ApiError> {
    ResourceId::tenant()
        .child_provider("Strata.Fabric", "referencePolicies", name)
        .map_err(|e| ApiError::bad_request("InvalidPolicyName", format!("policy name: {e}")))
}

/// The policy a host is appraised against (`properties.policy`, default `default`), or why
/// there is no usable one. The stored signed bundle is verified again against the release
/// keys configured *now*, so removing a compromised release key disables every policy it
/// signed, and a policy edited in the database is refused.
pub fn load_for_host(app: &App, host: &Doc) -> Result<Result<LoadedPolicy, String>, ApiError> {
    let name = host.prop_str("policy").unwrap_or("default").to_string();
    let id = policy_id(&name)?;
    let rec = app.store.get(id.key()).map_err(|e| {
        log_chain("store read failed", &e);
        ApiError::internal()
    })?;
    let Some(rec) = rec else {
        return Ok(Err(format!(
            "no reference policy '{name}' has been imported: import a signed bundle with 'strata host policy import'"
        )));
    };
    let doc = Doc::parse(&rec.body)?;
    let Some(bundle) = doc
        .internal
        .get("bundle")
        .cloned()
        .and_then(|v| serde_json::from_value::<SignedBundle>(v).ok())
    else {
        return Ok(Err(format!(
            "reference policy '{name}' has no signed bundle on record; import it again"
        )));
    };
    let payload = match strata_attest::bundle::verify_bundle(&bundle, &app.fabric.release_keys) {
        Ok(p) => p,
        Err(e) => {
            return Ok(Err(format!(
                "reference policy '{name}' is no longer trusted: {e}"
            )));
        }
    };
    match payload.policies.get(&name) {
        Some(policy) => Ok(Ok(LoadedPolicy {
            name,
            version: payload.version,
            policy: policy.clone(),
        })),
        None => Ok(Err(format!(
            "the signed bundle on record does not contain policy '{name}'"
        ))),
    }
}

/// `POST /providers/Strata.Fabric/referencePolicies/import`: verifies the bundle's signature
/// and version, then writes every policy in it in one audited transaction.
pub fn import(ctx: &Ctx<'_>, body: &[u8]) -> Result<Reply, ApiError> {
    let bundle: SignedBundle = crate::handlers::parse_body(body)?;
    let keys = &ctx.app.fabric.release_keys;
    if keys.is_empty() {
        return Err(ApiError::forbidden(
            "no release key is configured, so no policy bundle can be trusted; start the server with --policy-release-key FILE",
        ));
    }
    let payload = strata_attest::bundle::verify_bundle(&bundle, keys).map_err(|e| {
        ApiError::bad_request(
            "PolicyBundleRejected",
            format!("the policy bundle was refused: {e}"),
        )
    })?;
    if payload.policies.is_empty() {
        return Err(ApiError::bad_request(
            "PolicyBundleRejected",
            "the bundle holds no policies",
        ));
    }
    let mut ops = Vec::new();
    let mut names = Vec::new();
    for (name, policy) in &payload.policies {
        let id = policy_id(name)?;
        let existing = ctx.app.store.get(id.key()).map_err(|e| {
            log_chain("store read failed", &e);
            ApiError::internal()
        })?;
        let pre = match &existing {
            Some(rec) => {
                let doc = Doc::parse(&rec.body)?;
                let have = doc
                    .properties
                    .get("version")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                if payload.version <= have {
                    return Err(ApiError::conflict(
                        "PolicyBundleOutdated",
                        format!(
                            "policy '{name}' is at version {have}; bundle version {} is not newer (rollback refused)",
                            payload.version
                        ),
                    ));
                }
                Precondition::Revision(rec.revision)
            }
            None => Precondition::MustNotExist,
        };
        let existing_doc = existing.as_ref().map(|r| Doc::parse(&r.body)).transpose()?;
        let props = json!({
            "version": payload.version,
            "keyId": bundle.key_id,
            "importedAt": strata_types::time::now_rfc3339(),
            "policy": serde_json::to_value(policy).map_err(|_| ApiError::internal())?,
            "provisioningState": "Succeeded",
        });
        let mut doc = crate::handlers::new_doc(
            ctx,
            &id,
            Kind::ReferencePolicy,
            existing_doc.as_ref(),
            props,
        );
        // The signed bundle itself is kept so every load re-verifies it.
        doc.internal =
            json!({ "bundle": serde_json::to_value(&bundle).map_err(|_| ApiError::internal())? });
        ops.push(Op::Put {
            key: id.key().into(),
            rtype: Kind::ReferencePolicy.type_key(),
            parent: "/".into(),
            body: doc.to_json()?,
            pre,
        });
        names.push(name.clone());
    }
    ctx.commit(
        ops,
        200,
        json!({ "bundleVersion": payload.version, "keyId": bundle.key_id, "policies": names }),
        false,
    )?;
    Ok(Reply::json(
        200,
        json!({ "version": payload.version, "keyId": bundle.key_id, "policies": names }),
    ))
}
