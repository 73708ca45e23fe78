//! The ARM resource envelope: what every GET returns and every PUT accepts.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Largest accepted request body, in bytes.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// What a client may send in a PUT/PATCH. Unknown top-level fields are refused.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceBody {
    /// Accepted for compatibility with ARM clients; must match the path when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub rtype: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<serde_json::Value>,
}

/// Who created and last changed a resource, and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SystemData {
    pub created_by: String,
    pub created_at: String,
    pub last_modified_by: String,
    pub last_modified_at: String,
}

/// A stored resource as the API returns it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resource {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub rtype: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    pub etag: String,
    pub properties: serde_json::Value,
    pub system_data: SystemData,
}
