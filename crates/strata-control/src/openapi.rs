//! The OpenAPI 3.1 description of the API, generated from the same type registry the
//! dispatcher routes with, served at `/openapi.json` and committed as `docs/openapi.json`.

use crate::kinds::Kind;
use serde_json::{Map, Value, json};

/// One documented operation.
#[derive(Clone, Debug)]
pub struct Operation {
    pub method: &'static str,
    pub path: String,
    pub operation_id: String,
    pub summary: String,
    /// Public operations need no token; everything else must answer 401 without one.
    pub public: bool,
    pub has_body: bool,
}

fn op(
    method: &'static str,
    path: String,
    id: String,
    summary: String,
    has_body: bool,
) -> Operation {
    Operation {
        method,
        path,
        operation_id: id,
        summary,
        public: false,
        has_body,
    }
}

fn short(kind: Kind) -> &'static str {
    kind.type_name().rsplit('/').next().unwrap_or_default()
}

/// Every operation, public ones first.
pub fn operations() -> Vec<Operation> {
    let mut ops = vec![
        Operation {
            method: "post",
            path: "/oauth2/token".into(),
            operation_id: "OAuth2_Token".into(),
            summary: "Issue an access token (client_credentials or password grant)".into(),
            public: true,
            has_body: true,
        },
        Operation {
            method: "get",
            path: "/.well-known/openid-configuration".into(),
            operation_id: "OpenId_Configuration".into(),
            summary: "OIDC discovery document".into(),
            public: true,
            has_body: false,
        },
        Operation {
            method: "get",
            path: "/.well-known/jwks.json".into(),
            operation_id: "OpenId_Jwks".into(),
            summary: "Token-signing public keys (JWKS)".into(),
            public: true,
            has_body: false,
        },
        Operation {
            method: "get",
            path: "/openapi.json".into(),
            operation_id: "OpenApi_Get".into(),
            summary: "This document".into(),
            public: true,
            has_body: false,
        },
        Operation {
            method: "get",
            path: "/healthz".into(),
            operation_id: "Health_Get".into(),
            summary: "Liveness".into(),
            public: true,
            has_body: false,
        },
    ];
    for kind in Kind::ALL {
        let t = kind.type_name();
        let s = short(kind);
        let (collection, item) = match kind {
            Kind::Subscription => (
                "/subscriptions".to_string(),
                "/subscriptions/{subscriptionId}".to_string(),
            ),
            Kind::ResourceGroup => (
                "/subscriptions/{subscriptionId}/resourceGroups".to_string(),
                "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}".to_string(),
            ),
            Kind::VaultKey => (
                "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Strata.KeyVault/vaults/{vaultName}/keys".to_string(),
                "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Strata.KeyVault/vaults/{vaultName}/keys/{name}".to_string(),
            ),
            k if k.in_resource_group() => (
                format!(
                    "/subscriptions/{{subscriptionId}}/resourceGroups/{{resourceGroupName}}/providers/{t}"
                ),
                format!(
                    "/subscriptions/{{subscriptionId}}/resourceGroups/{{resourceGroupName}}/providers/{t}/{{name}}"
                ),
            ),
            k if k.is_extension() => (
                format!("/{{scope}}/providers/{t}"),
                format!("/{{scope}}/providers/{t}/{{name}}"),
            ),
            _ => (
                format!("/providers/{t}"),
                format!("/providers/{t}/{{name}}"),
            ),
        };
        let tag = s[..1].to_uppercase() + &s[1..];
        ops.push(op(
            "get",
            collection,
            format!("{tag}_List"),
            format!("List {t}"),
            false,
        ));
        ops.push(op(
            "get",
            item.clone(),
            format!("{tag}_Get"),
            format!("Get one of {t}"),
            false,
        ));
        if kind.puttable() {
            ops.push(op(
                "put",
                item.clone(),
                format!("{tag}_CreateOrUpdate"),
                format!("Create or replace one of {t} (If-Match / If-None-Match honoured)"),
                true,
            ));
        }
        if kind.patchable() {
            ops.push(op(
                "patch",
                item.clone(),
                format!("{tag}_Update"),
                format!("Merge-patch one of {t}"),
                true,
            ));
        }
        if kind.deletable() {
            ops.push(op(
                "delete",
                item.clone(),
                format!("{tag}_Delete"),
                format!("Delete one of {t}"),
                false,
            ));
        }
        for action in kind.post_actions() {
            let a = action[..1].to_uppercase() + &action[1..];
            ops.push(op(
                "post",
                format!("{item}/{action}"),
                format!("{tag}_{a}"),
                format!("{action} on one of {t}"),
                true,
            ));
        }
    }
    ops.push(op(
        "get",
        "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/resources".into(),
        "ResourceGroups_ListResources".into(),
        "List the resources in a resource group".into(),
        false,
    ));
    ops.push(op(
        "post",
        "/providers/Strata.Authorization/checkAccess".into(),
        "Authorization_CheckAccess".into(),
        "Decide whether a principal may perform an action at a scope, with the reason".into(),
        true,
    ));
    ops.push(op(
        "post",
        "/providers/Strata.Fabric/referencePolicies/import".into(),
        "ReferencePolicies_Import".into(),
        "Import a reference-policy bundle signed by a configured release key".into(),
        true,
    ));
    ops.push(op(
        "post",
        "/providers/Strata.Fabric/placements/preview".into(),
        "Placements_Preview".into(),
        "Where N new VMs would be placed now (only Trusted, fresh, uncordoned hosts), or why not"
            .into(),
        true,
    ));
    ops.push(op(
        "get",
        "/providers/Strata.Audit/entries".into(),
        "Audit_ListEntries".into(),
        "Audit log entries (?from=&limit=)".into(),
        false,
    ));
    ops.push(op(
        "get",
        "/providers/Strata.Audit/checkpoints/latest".into(),
        "Audit_LatestCheckpoint".into(),
        "The latest signed checkpoint and the log's public key".into(),
        false,
    ));
    ops.push(op(
        "get",
        "/providers/Strata.Audit/proofs/inclusion".into(),
        "Audit_InclusionProof".into(),
        "RFC 6962 inclusion proof (?seq=&treeSize=)".into(),
        false,
    ));
    ops.push(op(
        "get",
        "/providers/Strata.Audit/proofs/consistency".into(),
        "Audit_ConsistencyProof".into(),
        "RFC 6962 consistency proof (?first=&second=)".into(),
        false,
    ));
    ops.push(op(
        "get",
        "/providers/Strata.Resources/changes".into(),
        "Resources_Changes".into(),
        "Change feed from a revision (?since=&limit=)".into(),
        false,
    ));
    ops
}

/// The OpenAPI document.
pub fn document() -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for o in operations() {
        let mut params: Vec<Value> = Vec::new();
        for seg in o.path.split('/') {
            if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                params.push(json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }));
            }
        }
        let mut operation = json!({
            "operationId": o.operation_id,
            "summary": o.summary,
            "parameters": params,
            "responses": {
                "200": { "description": "OK", "content": { "application/json": { "schema": { "type": "object" } } } },
                "default": { "description": "Error", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ErrorBody" } } } }
            }
        });
        if o.public {
            operation["security"] = json!([]);
        }
        if o.has_body {
            let content_type = if o.path == "/oauth2/token" {
                "application/x-www-form-urlencoded"
            } else if o.path.ends_with("/images/{name}/upload") {
                // The image's bytes, streamed (Content-Length = source.uploadSizeBytes).
                "application/octet-stream"
            } else {
                "application/json"
            };
            operation["requestBody"] = json!({ "required": true, "content": { content_type: { "schema": { "type": "object" } } } });
        }
        let entry = paths.entry(o.path.clone()).or_insert_with(|| json!({}));
        entry[o.method] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Strata control plane",
            "version": "0.0.0",
            "description": "ARM-shaped resource API. Every operation except the public ones needs 'Authorization: Bearer TOKEN'. {scope} is a resource id without its leading '/', e.g. subscriptions/S/resourceGroups/RG."
        },
        "security": [{ "bearer": [] }],
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" } },
            "schemas": {
                "ErrorBody": {
                    "type": "object",
                    "required": ["error"],
                    "properties": { "error": { "type": "object", "required": ["code", "message"], "properties": { "code": { "type": "string" }, "message": { "type": "string" } } } }
                }
            }
        },
        "paths": paths,
    })
}
