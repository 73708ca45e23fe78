//! Background duties on a one-second tick: sign a checkpoint when the audit log grew, rebuild
//! the directory snapshot when another replica changed identity or authorization data, keep
//! the token-signing keys on schedule, demote hosts whose attestation went stale, and (once a
//! minute) rotate due key vault keys and purge expired soft-deleted ones (`keysweep`).

use crate::app::{App, log_chain};
use std::sync::Arc;
use strata_audit::{Checkpoint, CompactTree};

/// Signs a checkpoint over the whole log if it grew since the last one. Recomputes every new
/// leaf hash from the stored entry bytes and refuses to sign over a mismatch; the tree over
/// older entries is cached in memory.
pub fn checkpoint_now(app: &App) {
    if let Err(e) = try_checkpoint(app) {
        tracing::error!(error = %e, "audit checkpoint not signed");
    }
}

fn try_checkpoint(app: &App) -> Result<(), String> {
    let store = app.store.as_ref();
    let len = store.audit_len().map_err(|e| e.to_string())?;
    let latest = store.latest_checkpoint().map_err(|e| e.to_string())?;
    if latest
        .as_ref()
        .is_some_and(|c| c.checkpoint.tree_size >= len)
        || len == 0
    {
        return Ok(());
    }
    // The tree over everything already checkpointed is kept in memory: each tick hashes only
    // the entries appended since (the log is append-only; `strata audit verify` re-checks
    // every stored entry offline).
    let mut cache = app
        .audit_tree
        .lock()
        .map_err(|_| "audit tree lock poisoned")?;
    let mut tree = match cache.take() {
        Some(t) if t.size() <= len => t,
        _ => CompactTree::new(),
    };
    // On any error the cache stays empty and the next tick starts from scratch.
    extend(store, &mut tree, len)?;
    let signed = app.audit_signer.sign(Checkpoint {
        origin: format!("strata/{}", app.tenant_id),
        tree_size: tree.size(),
        root_hash: tree.root(),
        timestamp: strata_types::time::now_unix(),
    });
    store.put_checkpoint(&signed).map_err(|e| e.to_string())?;
    *cache = Some(tree);
    Ok(())
}

/// Appends entries `tree.size()..len` to `tree`, recomputing each leaf hash from the stored
/// entry bytes and refusing a mismatch or a gap.
fn extend(store: &dyn strata_store::Store, tree: &mut CompactTree, len: u64) -> Result<(), String> {
    let mut from = tree.size();
    while from < len {
        let rows = store.audit_rows(from, 10_000).map_err(|e| e.to_string())?;
        if rows.is_empty() {
            break;
        }
        for row in rows {
            if row.seq != tree.size() {
                return Err(format!("audit entry {} is missing", tree.size()));
            }
            if strata_audit::leaf_hash(&row.entry) != row.leaf_hash {
                return Err(format!(
                    "audit entry {} does not match its leaf hash",
                    row.seq
                ));
            }
            tree.append(row.leaf_hash);
            from = row.seq + 1;
            if tree.size() == len {
                break;
            }
        }
    }
    Ok(())
}

pub async fn run(app: Arc<App>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    let mut ticks: u64 = 0;
    loop {
        ticks = ticks.wrapping_add(1);
        let key_sweep = ticks.is_multiple_of(crate::keysweep::INTERVAL_SECS);
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let a = app.clone();
        let _ = tokio::task::spawn_blocking(move || {
            checkpoint_now(&a);
            if let Err(e) = a.refresh_directory() {
                log_chain("directory refresh failed", &e);
            }
            if let Err(e) = a.maintain_signing_keys() {
                log_chain("signing-key maintenance failed", &e);
            }
            crate::fabric::door::sweep(&a);
            // Once a minute: both read every key, disk and snapshot document.
            if key_sweep {
                let now = strata_types::time::now_unix();
                crate::keysweep::sweep(&a, now);
                crate::compute::snapshots::expire(&a, now);
            }
        })
        .await;
    }
}
