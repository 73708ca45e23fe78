//! PostgreSQL backend: for several control-plane replicas sharing one database. Same schema and
//! commit algorithm as SQLite; the single `counters` row (taken `FOR UPDATE`) serialises
//! writers so revisions and audit sequence numbers follow commit order across replicas.
//!
//! The `postgres` client drives its own Tokio runtime internally, which cannot run on a thread
//! that is already inside a runtime (the control plane calls the store from Tokio's blocking
//! pool). Every client operation therefore runs on a plain scoped thread, and dropping the store
//! closes its connections on a plain thread too.

use crate::commit::{self, Tx};
use crate::{
    AuditRow, Batch, Change, Committed, Record, Result, Store, StoreError, checkpoint_from_json,
    hash_from_slice, under_bounds,
};
use postgres::{Client, NoTls, Row};
use std::sync::Mutex;
use strata_audit::{Hash, SignedCheckpoint};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS resources (
    key TEXT PRIMARY KEY, rtype TEXT NOT NULL, parent TEXT NOT NULL,
    body TEXT NOT NULL, revision BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS resources_parent ON resources(parent, rtype);
CREATE INDEX IF NOT EXISTS resources_type ON resources(rtype, key);
CREATE TABLE IF NOT EXISTS changes (
    revision BIGINT PRIMARY KEY, key TEXT NOT NULL, rtype TEXT NOT NULL, body TEXT);
CREATE TABLE IF NOT EXISTS audit (
    seq BIGINT PRIMARY KEY, entry BYTEA NOT NULL, leaf_hash BYTEA NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints (tree_size BIGINT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BYTEA NOT NULL);
CREATE TABLE IF NOT EXISTS counters (
    id INTEGER PRIMARY KEY CHECK (id = 1), revision BIGINT NOT NULL, audit_seq BIGINT NOT NULL);
INSERT INTO counters (id, revision, audit_seq) VALUES (1, 0, 0) ON CONFLICT DO NOTHING;
";

pub struct PgStore {
    url: String,
    pool: Mutex<Vec<Client>>,
}

fn connect(url: &str) -> Result<Client> {
    Client::connect(url, NoTls).map_err(|e| StoreError::Open {
        // Never echo the URL: it may carry a password.
        path: "postgres".to_string(),
        source: Box::new(e),
    })
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn record(r: &Row) -> Result<Record> {
    Ok(Record {
        key: r.try_get(0)?,
        rtype: r.try_get(1)?,
        parent: r.try_get(2)?,
        body: r.try_get(3)?,
        revision: to_u64(r.try_get(4)?),
    })
}

/// Runs `f` on a fresh plain thread (no Tokio context) and waits for it.
fn off_runtime<T: Send>(f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(f)
            .join()
            .unwrap_or_else(|_| Err(StoreError::Backend("a database worker panicked".into())))
    })
}

impl Drop for PgStore {
    fn drop(&mut self) {
        let clients = match self.pool.lock() {
            Ok(mut p) => std::mem::take(&mut *p),
            Err(_) => return,
        };
        let _ = std::thread::spawn(move || drop(clients)).join();
    }
}

impl PgStore {
    /// Connects to `url` (`postgres://…`) and creates the schema if needed.
    pub fn connect(url: &str) -> Result<Self> {
        off_runtime(|| Self::connect_here(url))
    }

    fn connect_here(url: &str) -> Result<Self> {
        let mut client = connect(url)?;
        // Serialise schema creation across racing replicas.
        let mut tx = client.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock(7277827)", &[])?;
        tx.batch_execute(SCHEMA)?;
        tx.commit()?;
        Ok(Self {
            url: url.to_string(),
            pool: Mutex::new(vec![client]),
        })
    }

    fn with<T: Send>(&self, f: impl FnOnce(&mut Client) -> Result<T> + Send) -> Result<T> {
        off_runtime(|| self.with_here(f))
    }

    fn with_here<T>(&self, f: impl FnOnce(&mut Client) -> Result<T>) -> Result<T> {
        let client = self.pool.lock().map_err(|_| poisoned())?.pop();
        let mut client = match client {
            Some(c) if !c.is_closed() => c,
            _ => connect(&self.url)?,
        };
        let out = f(&mut client);
        if !client.is_closed()
            && let Ok(mut pool) = self.pool.lock()
            && pool.len() < 8
        {
            pool.push(client);
        }
        out
    }
}

fn poisoned() -> StoreError {
    StoreError::Backend("a store lock was poisoned by a panic".into())
}

struct PgTx<'a, 'b>(&'a mut postgres::Transaction<'b>);

impl Tx for PgTx<'_, '_> {
    fn counters(&mut self) -> Result<(u64, u64)> {
        let row = self.0.query_one(
            "SELECT revision, audit_seq FROM counters WHERE id = 1 FOR UPDATE",
            &[],
        )?;
        Ok((to_u64(row.try_get(0)?), to_u64(row.try_get(1)?)))
    }
    fn set_counters(&mut self, revision: u64, next_seq: u64) -> Result<()> {
        self.0.execute(
            "UPDATE counters SET revision = $1, audit_seq = $2 WHERE id = 1",
            &[&to_i64(revision), &to_i64(next_seq)],
        )?;
        Ok(())
    }
    fn revision_of(&mut self, key: &str) -> Result<Option<u64>> {
        let row = self
            .0
            .query_opt("SELECT revision FROM resources WHERE key = $1", &[&key])?;
        row.map(|r| Ok(to_u64(r.try_get(0)?))).transpose()
    }
    fn upsert(&mut self, key: &str, rtype: &str, parent: &str, body: &str, rev: u64) -> Result<()> {
        self.0.execute(
            "INSERT INTO resources (key, rtype, parent, body, revision) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (key) DO UPDATE SET rtype = EXCLUDED.rtype, parent = EXCLUDED.parent,
                body = EXCLUDED.body, revision = EXCLUDED.revision",
            &[&key, &rtype, &parent, &body, &to_i64(rev)],
        )?;
        Ok(())
    }
    fn delete(&mut self, key: &str) -> Result<Option<String>> {
        let row = self.0.query_opt(
            "DELETE FROM resources WHERE key = $1 RETURNING rtype",
            &[&key],
        )?;
        row.map(|r| Ok(r.try_get(0)?)).transpose()
    }
    fn keys_in_tree(&mut self, key: &str) -> Result<Vec<(String, String)>> {
        let (lo, hi) = under_bounds(key);
        let rows = self.0.query(
            "SELECT key, rtype FROM resources WHERE key = $1 OR (key COLLATE \"C\" >= $2 AND key COLLATE \"C\" < $3)",
            &[&key, &lo, &hi],
        )?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }
    fn insert_change(
        &mut self,
        rev: u64,
        key: &str,
        rtype: &str,
        body: Option<&str>,
    ) -> Result<()> {
        self.0.execute(
            "INSERT INTO changes (revision, key, rtype, body) VALUES ($1, $2, $3, $4)",
            &[&to_i64(rev), &key, &rtype, &body],
        )?;
        Ok(())
    }
    fn insert_audit(&mut self, seq: u64, entry: &[u8], leaf_hash: &[u8]) -> Result<()> {
        self.0.execute(
            "INSERT INTO audit (seq, entry, leaf_hash) VALUES ($1, $2, $3)",
            &[&to_i64(seq), &entry, &leaf_hash],
        )?;
        Ok(())
    }
}

impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn get(&self, key: &str) -> Result<Option<Record>> {
        self.with(|c| {
            c.query_opt(
                "SELECT key, rtype, parent, body, revision FROM resources WHERE key = $1",
                &[&key],
            )?
            .as_ref()
            .map(record)
            .transpose()
        })
    }

    fn list_children(&self, parent: &str, rtype: &str) -> Result<Vec<Record>> {
        self.with(|c| {
            c.query(
                "SELECT key, rtype, parent, body, revision FROM resources
                 WHERE parent = $1 AND rtype = $2 ORDER BY key COLLATE \"C\"",
                &[&parent, &rtype],
            )?
            .iter()
            .map(record)
            .collect()
        })
    }

    fn list_under(&self, key: &str) -> Result<Vec<Record>> {
        let (lo, hi) = under_bounds(key);
        self.with(|c| {
            c.query(
                "SELECT key, rtype, parent, body, revision FROM resources
                 WHERE key COLLATE \"C\" >= $1 AND key COLLATE \"C\" < $2 ORDER BY key COLLATE \"C\"",
                &[&lo, &hi],
            )?
            .iter()
            .map(record)
            .collect()
        })
    }

    fn list_type(&self, rtype: &str) -> Result<Vec<Record>> {
        self.with(|c| {
            c.query(
                "SELECT key, rtype, parent, body, revision FROM resources WHERE rtype = $1 ORDER BY key COLLATE \"C\"",
                &[&rtype],
            )?
            .iter()
            .map(record)
            .collect()
        })
    }

    fn commit(&self, batch: Batch) -> Result<Committed> {
        self.with(|c| {
            let mut tx = c.transaction()?;
            let out = commit::apply(&mut PgTx(&mut tx), batch)?;
            tx.commit()?;
            Ok(out)
        })
    }

    fn revision(&self) -> Result<u64> {
        self.with(|c| {
            let row = c.query_one("SELECT revision FROM counters WHERE id = 1", &[])?;
            Ok(to_u64(row.try_get(0)?))
        })
    }

    fn changes_since(&self, after: u64, limit: usize) -> Result<Vec<Change>> {
        self.with(|c| {
            c.query(
                "SELECT revision, key, rtype, body FROM changes WHERE revision > $1 ORDER BY revision LIMIT $2",
                &[&to_i64(after), &to_i64(limit as u64)],
            )?
            .iter()
            .map(|r| {
                Ok(Change {
                    revision: to_u64(r.try_get(0)?),
                    key: r.try_get(1)?,
                    rtype: r.try_get(2)?,
                    body: r.try_get(3)?,
                })
            })
            .collect()
        })
    }

    fn audit_len(&self) -> Result<u64> {
        self.with(|c| {
            let row = c.query_one("SELECT audit_seq FROM counters WHERE id = 1", &[])?;
            Ok(to_u64(row.try_get(0)?))
        })
    }

    fn audit_rows(&self, from: u64, limit: usize) -> Result<Vec<AuditRow>> {
        self.with(|c| {
            c.query(
                "SELECT seq, entry, leaf_hash FROM audit WHERE seq >= $1 ORDER BY seq LIMIT $2",
                &[&to_i64(from), &to_i64(limit as u64)],
            )?
            .iter()
            .map(|r| {
                let leaf: Vec<u8> = r.try_get(2)?;
                Ok(AuditRow {
                    seq: to_u64(r.try_get(0)?),
                    entry: r.try_get(1)?,
                    leaf_hash: hash_from_slice("audit", &leaf)?,
                })
            })
            .collect()
        })
    }

    fn audit_leaf_hashes(&self, to: u64) -> Result<Vec<Hash>> {
        self.with(|c| {
            c.query(
                "SELECT leaf_hash FROM audit WHERE seq < $1 ORDER BY seq",
                &[&to_i64(to)],
            )?
            .iter()
            .map(|r| {
                let leaf: Vec<u8> = r.try_get(0)?;
                hash_from_slice("audit", &leaf)
            })
            .collect()
        })
    }

    fn put_checkpoint(&self, cp: &SignedCheckpoint) -> Result<()> {
        let body = serde_json::to_string(cp).map_err(|e| StoreError::Backend(Box::new(e)))?;
        self.with(|c| {
            c.execute(
                "INSERT INTO checkpoints (tree_size, body) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&to_i64(cp.checkpoint.tree_size), &body],
            )?;
            Ok(())
        })
    }

    fn checkpoints(&self) -> Result<Vec<SignedCheckpoint>> {
        self.with(|c| {
            c.query("SELECT body FROM checkpoints ORDER BY tree_size", &[])?
                .iter()
                .map(|r| checkpoint_from_json(&r.try_get::<_, String>(0)?))
                .collect()
        })
    }

    fn latest_checkpoint(&self) -> Result<Option<SignedCheckpoint>> {
        self.with(|c| {
            c.query_opt(
                "SELECT body FROM checkpoints ORDER BY tree_size DESC LIMIT 1",
                &[],
            )?
            .map(|r| checkpoint_from_json(&r.try_get::<_, String>(0)?))
            .transpose()
        })
    }

    fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.with(|c| {
            c.query_opt("SELECT value FROM meta WHERE key = $1", &[&key])?
                .map(|r| Ok(r.try_get(0)?))
                .transpose()
        })
    }

    fn meta_init(&self, key: &str, value: &[u8]) -> Result<Vec<u8>> {
        self.with(|c| {
            c.execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&key, &value],
            )?;
            let row = c.query_one("SELECT value FROM meta WHERE key = $1", &[&key])?;
            Ok(row.try_get(0)?)
        })
    }

    fn meta_set(&self, key: &str, value: &[u8]) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                &[&key, &value],
            )?;
            Ok(())
        })
    }
}
