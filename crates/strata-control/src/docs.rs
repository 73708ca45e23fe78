//! Stored documents: the ARM envelope as the API shows it, plus an `internal` section the API
//! never returns (password hashes, sealed TOTP secrets, credential hashes, revocation times).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use strata_types::{ApiError, Resource, SystemData};

/// One stored resource.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Doc {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub rtype: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    pub properties: Value,
    pub system_data: SystemData,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub internal: Value,
}

impl Doc {
    pub fn parse(body: &str) -> Result<Doc, ApiError> {
        serde_json::from_str(body).map_err(|e| {
            tracing::error!(error = %e, "stored document does not parse");
            ApiError::internal()
        })
    }

    pub fn to_json(&self) -> Result<String, ApiError> {
        serde_json::to_string(self).map_err(|_| ApiError::internal())
    }

    /// The API view: no `internal`, plus the etag.
    pub fn public(&self, etag: String) -> Resource {
        Resource {
            id: self.id.clone(),
            name: self.name.clone(),
            rtype: self.rtype.clone(),
            location: self.location.clone(),
            tags: self.tags.clone(),
            etag,
            properties: self.properties.clone(),
            system_data: self.system_data.clone(),
        }
    }

    pub fn prop_str(&self, field: &str) -> Option<&str> {
        self.properties.get(field).and_then(Value::as_str)
    }

    pub fn internal_i64(&self, field: &str) -> i64 {
        self.internal
            .get(field)
            .and_then(Value::as_i64)
            .unwrap_or(0)
    }
}

/// A password credential of a service principal, as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretCredential {
    pub key_id: String,
    pub hash: String,
    pub expires_at: i64,
}

/// A certificate credential of a service principal, as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertCredential {
    pub key_id: String,
    pub thumbprint: String,
    /// The certificate PEM; the public key is re-derived from it when used.
    pub certificate: String,
}

/// `internal` of a user.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserInternal {
    #[serde(default)]
    pub password_hash: Option<String>,
    /// TOTP secret sealed under the root key, bound to the user's object id.
    #[serde(default)]
    pub totp_sealed: Option<String>,
    #[serde(default)]
    pub last_totp_step: u64,
    /// Tokens issued before this Unix time are refused.
    #[serde(default)]
    pub valid_after: i64,
}

/// `internal` of a service principal.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpInternal {
    #[serde(default)]
    pub secrets: Vec<SecretCredential>,
    #[serde(default)]
    pub certificates: Vec<CertCredential>,
    #[serde(default)]
    pub valid_after: i64,
}

pub fn internal_of<T: for<'de> Deserialize<'de> + Default>(doc: &Doc) -> T {
    if doc.internal.is_null() {
        return T::default();
    }
    serde_json::from_value(doc.internal.clone()).unwrap_or_default()
}

/// The write that replaces stored record `rec` with `doc`, on condition that `rec` is still the
/// current revision (a concurrent change makes the commit fail instead of being lost).
pub fn rewrite(rec: &strata_store::Record, doc: &Doc) -> Result<strata_store::Op, ApiError> {
    Ok(strata_store::Op::Put {
        key: rec.key.clone(),
        rtype: rec.rtype.clone(),
        parent: rec.parent.clone(),
        body: doc.to_json()?,
        pre: strata_store::Precondition::Revision(rec.revision),
    })
}
