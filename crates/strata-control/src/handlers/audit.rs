//! Reading the audit log: entries, the latest signed checkpoint, inclusion and consistency
//! proofs (RFC 6962), and the resource change feed.

use crate::context::Ctx;
use crate::dispatch::Reply;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use strata_types::ApiError;

/// Reads a non-negative integer query parameter.
pub fn query_u64(query: Option<&str>, name: &str) -> Result<Option<u64>, ApiError> {
    let Some(q) = query else { return Ok(None) };
    for pair in q.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == name {
            return v.parse().map(Some).map_err(|_| {
                ApiError::bad_request(
                    "InvalidQueryParameter",
                    format!("query parameter '{name}' must be a non-negative integer"),
                )
            });
        }
    }
    Ok(None)
}

fn required(query: Option<&str>, name: &str) -> Result<u64, ApiError> {
    query_u64(query, name)?.ok_or_else(|| {
        ApiError::bad_request(
            "MissingQueryParameter",
            format!("query parameter '{name}' is required"),
        )
    })
}

fn internal<E: std::error::Error>(e: E) -> ApiError {
    crate::app::log_chain("audit read failed", &e);
    ApiError::internal()
}

pub fn entries(ctx: &Ctx<'_>, query: Option<&str>) -> Result<Reply, ApiError> {
    let len = ctx.app.store.audit_len().map_err(internal)?;
    let limit = query_u64(query, "limit")?.unwrap_or(100).clamp(1, 1000);
    // Default: the newest `limit` entries.
    let from = query_u64(query, "from")?.unwrap_or_else(|| len.saturating_sub(limit));
    let rows = ctx
        .app
        .store
        .audit_rows(from, limit as usize)
        .map_err(internal)?;
    let mut value = Vec::with_capacity(rows.len());
    for row in rows {
        let entry: Value = serde_json::from_slice(&row.entry).unwrap_or(Value::Null);
        value
            .push(json!({ "seq": row.seq, "leafHash": B64.encode(row.leaf_hash), "entry": entry }));
    }
    let next = from + value.len() as u64;
    Ok(Reply::json(
        200,
        json!({ "treeSize": len, "value": value, "nextFrom": (next < len).then_some(next) }),
    ))
}

pub fn checkpoint(ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
    let cp = ctx.app.store.latest_checkpoint().map_err(internal)?;
    let public_key = B64.encode(ctx.app.audit_signer.public_key());
    match cp {
        Some(cp) => Ok(Reply::json(
            200,
            json!({ "checkpoint": cp, "publicKey": public_key }),
        )),
        None => Err(ApiError::new(
            404,
            "NoCheckpoint",
            "no checkpoint has been signed yet; retry in a second",
        )),
    }
}

pub fn inclusion(ctx: &Ctx<'_>, query: Option<&str>) -> Result<Reply, ApiError> {
    let seq = required(query, "seq")?;
    let size = required(query, "treeSize")?;
    let len = ctx.app.store.audit_len().map_err(internal)?;
    if size == 0 || size > len || seq >= size {
        return Err(ApiError::bad_request(
            "InvalidProofRequest",
            format!("need seq < treeSize <= {len}"),
        ));
    }
    let leaves = ctx.app.store.audit_leaf_hashes(size).map_err(internal)?;
    let proof = strata_audit::inclusion_proof(&leaves, seq)
        .map_err(|e| ApiError::bad_request("InvalidProofRequest", e.to_string()))?;
    let leaf = leaves.get(seq as usize).copied().unwrap_or_default();
    Ok(Reply::json(
        200,
        json!({
            "seq": seq,
            "treeSize": size,
            "leafHash": B64.encode(leaf),
            "rootHash": B64.encode(strata_audit::root(&leaves)),
            "proof": proof.iter().map(|h| B64.encode(h)).collect::<Vec<_>>(),
        }),
    ))
}

pub fn consistency(ctx: &Ctx<'_>, query: Option<&str>) -> Result<Reply, ApiError> {
    let first = required(query, "first")?;
    let second = required(query, "second")?;
    let len = ctx.app.store.audit_len().map_err(internal)?;
    if first > second || second > len {
        return Err(ApiError::bad_request(
            "InvalidProofRequest",
            format!("need first <= second <= {len}"),
        ));
    }
    let leaves = ctx.app.store.audit_leaf_hashes(second).map_err(internal)?;
    let proof = strata_audit::consistency_proof(&leaves, first)
        .map_err(|e| ApiError::bad_request("InvalidProofRequest", e.to_string()))?;
    let first_root = strata_audit::root(leaves.get(..first as usize).unwrap_or_default());
    Ok(Reply::json(
        200,
        json!({
            "first": first,
            "second": second,
            "firstRootHash": B64.encode(first_root),
            "secondRootHash": B64.encode(strata_audit::root(&leaves)),
            "proof": proof.iter().map(|h| B64.encode(h)).collect::<Vec<_>>(),
        }),
    ))
}

pub fn changes(ctx: &Ctx<'_>, query: Option<&str>) -> Result<Reply, ApiError> {
    let since = query_u64(query, "since")?.unwrap_or(0);
    let limit = query_u64(query, "limit")?.unwrap_or(500).clamp(1, 5000);
    let changes = ctx
        .app
        .store
        .changes_since(since, limit as usize)
        .map_err(internal)?;
    let revision = ctx.app.store.revision().map_err(internal)?;
    let value: Vec<Value> = changes
        .into_iter()
        .map(|c| {
            // Never hand out `internal` sections through the feed.
            let resource = c.body.as_deref().and_then(|b| crate::docs::Doc::parse(b).ok()).map(|d| d.public(format!("\"{}\"", c.revision)));
            json!({ "revision": c.revision, "id": c.key, "type": c.rtype, "deleted": resource.is_none(), "resource": resource })
        })
        .collect();
    Ok(Reply::json(
        200,
        json!({ "revision": revision, "value": value }),
    ))
}
