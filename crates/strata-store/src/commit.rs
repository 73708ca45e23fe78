//! The commit algorithm, written once for every backend: check preconditions, bump the
//! revision per op, write the change feed, append audit entries with their leaf hashes.

use crate::{Batch, Committed, Op, Precondition, Result, StoreError};

/// The handful of statements a backend provides inside one open transaction.
pub(crate) trait Tx {
    /// Locks and returns `(revision, next_audit_seq)`.
    fn counters(&mut self) -> Result<(u64, u64)>;
    fn set_counters(&mut self, revision: u64, next_seq: u64) -> Result<()>;
    fn revision_of(&mut self, key: &str) -> Result<Option<u64>>;
    fn upsert(&mut self, key: &str, rtype: &str, parent: &str, body: &str, rev: u64) -> Result<()>;
    /// Deletes one key; returns its type if it existed.
    fn delete(&mut self, key: &str) -> Result<Option<String>>;
    /// Keys (and types) at or below `key`.
    fn keys_in_tree(&mut self, key: &str) -> Result<Vec<(String, String)>>;
    fn insert_change(&mut self, rev: u64, key: &str, rtype: &str, body: Option<&str>)
    -> Result<()>;
    fn insert_audit(&mut self, seq: u64, entry: &[u8], leaf_hash: &[u8]) -> Result<()>;
}

fn check(key: &str, pre: &Precondition, current: Option<u64>) -> Result<()> {
    let fail = |detail: String| {
        Err(StoreError::Precondition {
            key: key.to_string(),
            detail,
        })
    };
    match (pre, current) {
        (Precondition::None, _) => Ok(()),
        (Precondition::MustNotExist, Some(_)) => fail("it already exists".into()),
        (Precondition::MustExist, None) => fail("it does not exist".into()),
        (Precondition::Revision(want), Some(have)) if *want != have => {
            fail(format!("it is at revision {have}, not {want}"))
        }
        (Precondition::Revision(_), None) => fail("it does not exist".into()),
        _ => Ok(()),
    }
}

/// Applies one batch in its own transaction (reads and writes the counters).
pub(crate) fn apply(tx: &mut dyn Tx, batch: Batch) -> Result<Committed> {
    let mut counters = tx.counters()?;
    let out = apply_with(tx, batch, &mut counters)?;
    tx.set_counters(counters.0, counters.1)?;
    Ok(out)
}

/// Applies one batch given the current `(revision, next_audit_seq)`, advancing them; the caller
/// persists the counters (once per group commit).
pub(crate) fn apply_with(
    tx: &mut dyn Tx,
    batch: Batch,
    counters: &mut (u64, u64),
) -> Result<Committed> {
    let (mut rev, mut seq) = *counters;
    let mut out = Committed {
        revisions: Vec::with_capacity(batch.ops.len()),
        deleted: Vec::new(),
        audit_seqs: Vec::with_capacity(batch.audit.len()),
    };
    for op in &batch.ops {
        match op {
            Op::Put {
                key,
                rtype,
                parent,
                body,
                pre,
            } => {
                check(key, pre, tx.revision_of(key)?)?;
                rev += 1;
                tx.upsert(key, rtype, parent, body, rev)?;
                tx.insert_change(rev, key, rtype, Some(body))?;
                out.revisions.push(rev);
            }
            Op::Delete { key, pre } => {
                check(key, pre, tx.revision_of(key)?)?;
                rev += 1;
                if let Some(rtype) = tx.delete(key)? {
                    tx.insert_change(rev, key, &rtype, None)?;
                    out.deleted.push(key.clone());
                }
                out.revisions.push(rev);
            }
            Op::Assert { key, pre } => {
                check(key, pre, tx.revision_of(key)?)?;
                out.revisions.push(rev);
            }
            Op::DeleteTree { key } => {
                // Children first so a follower never sees an orphan.
                let mut keys = tx.keys_in_tree(key)?;
                keys.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
                for (k, rtype) in keys {
                    rev += 1;
                    tx.delete(&k)?;
                    tx.insert_change(rev, &k, &rtype, None)?;
                    out.deleted.push(k);
                }
                out.revisions.push(rev);
            }
        }
    }
    for mut entry in batch.audit {
        entry.seq = seq;
        let bytes = entry.leaf_bytes();
        let leaf = strata_audit::leaf_hash(&bytes);
        tx.insert_audit(seq, &bytes, &leaf)?;
        out.audit_seqs.push(seq);
        seq += 1;
    }
    *counters = (rev, seq);
    Ok(out)
}
