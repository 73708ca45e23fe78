//! SQLite backend: the embedded default. One write connection (SQLite has one writer anyway)
//! and a small pool of read connections; WAL mode with `synchronous=FULL`, so a commit that
//! returned is on disk and survives `kill -9` or power loss.

use crate::commit::{self, Tx};
use crate::{
    AuditRow, Batch, Change, Committed, Record, Result, Store, StoreError, checkpoint_from_json,
    hash_from_slice, under_bounds,
};
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use strata_audit::{Hash, SignedCheckpoint};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS resources (
    key TEXT PRIMARY KEY, rtype TEXT NOT NULL, parent TEXT NOT NULL,
    body TEXT NOT NULL, revision INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS resources_parent ON resources(parent, rtype);
CREATE INDEX IF NOT EXISTS resources_type ON resources(rtype, key);
CREATE TABLE IF NOT EXISTS changes (
    revision INTEGER PRIMARY KEY, key TEXT NOT NULL, rtype TEXT NOT NULL, body TEXT);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY, entry BLOB NOT NULL, leaf_hash BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints (tree_size INTEGER PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS counters (
    id INTEGER PRIMARY KEY CHECK (id = 1), revision INTEGER NOT NULL, audit_seq INTEGER NOT NULL);
INSERT OR IGNORE INTO counters (id, revision, audit_seq) VALUES (1, 0, 0);
";

/// A batch waiting for the next group commit, and where to send its outcome.
struct Pending {
    batch: Batch,
    reply: std::sync::mpsc::SyncSender<Result<Committed>>,
}

/// Commits `pending` in one transaction and answers every waiter.
fn commit_group(conn: &mut Connection, pending: Vec<Pending>) {
    let mut outcomes: Vec<(
        std::sync::mpsc::SyncSender<Result<Committed>>,
        Result<Committed>,
    )> = Vec::with_capacity(pending.len());
    let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            let msg = e.to_string();
            for p in pending {
                let _ = p.reply.send(Err(StoreError::Backend(msg.clone().into())));
            }
            return;
        }
    };
    let mut counters = match SqliteTx(&tx).counters() {
        Ok(c) => c,
        Err(e) => {
            let msg = e.to_string();
            for p in pending {
                let _ = p.reply.send(Err(StoreError::Backend(msg.clone().into())));
            }
            return;
        }
    };
    for p in pending {
        // Audit-only batches cannot fail a precondition: no savepoint needed.
        let needs_savepoint = !p.batch.ops.is_empty();
        let saved = counters;
        let outcome = (|| {
            if needs_savepoint {
                tx.prepare_cached("SAVEPOINT batch")?.execute([])?;
            }
            match commit::apply_with(&mut SqliteTx(&tx), p.batch, &mut counters) {
                Ok(c) => {
                    if needs_savepoint {
                        tx.prepare_cached("RELEASE batch")?.execute([])?;
                    }
                    Ok(c)
                }
                Err(e) => {
                    counters = saved;
                    if needs_savepoint {
                        tx.execute_batch("ROLLBACK TO batch; RELEASE batch")?;
                    }
                    Err(e)
                }
            }
        })();
        outcomes.push((p.reply, outcome));
    }
    if let Err(e) = SqliteTx(&tx).set_counters(counters.0, counters.1) {
        let msg = e.to_string();
        for (reply, _) in outcomes {
            let _ = reply.send(Err(StoreError::Backend(msg.clone().into())));
        }
        return;
    }
    match tx.commit() {
        Ok(()) => {
            for (reply, outcome) in outcomes {
                let _ = reply.send(outcome);
            }
        }
        Err(e) => {
            let msg = e.to_string();
            for (reply, _) in outcomes {
                let _ = reply.send(Err(StoreError::Backend(msg.clone().into())));
            }
        }
    }
}

pub struct SqliteStore {
    queue: Mutex<Vec<Pending>>,
    /// Group commits done, and batches they carried (see [`SqliteStore::group_stats`]).
    groups: AtomicU64,
    grouped: AtomicU64,
    path: PathBuf,
    read_only: bool,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
}

fn open_conn(path: &Path, read_only: bool) -> Result<Connection> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags).map_err(|e| StoreError::Open {
        path: path.display().to_string(),
        source: Box::new(e),
    })?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        // The database holds password hashes and sealed keys: create it owner-only (SQLite
        // gives its -wal and -shm files the same mode).
        if !path.exists() {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| StoreError::Open {
                    path: path.display().to_string(),
                    source: Box::new(e),
                })?;
        }
        let writer = open_conn(path, false)?;
        let mode: String =
            writer.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Open {
                path: path.display().to_string(),
                source: format!("journal_mode is '{mode}', WAL is required").into(),
            });
        }
        writer.execute_batch(SCHEMA)?;
        Ok(Self {
            queue: Mutex::new(Vec::new()),
            groups: AtomicU64::new(0),
            grouped: AtomicU64::new(0),
            path: path.to_path_buf(),
            read_only: false,
            writer: Mutex::new(writer),
            readers: Mutex::new(Vec::new()),
        })
    }

    /// Opens an existing database read-only (offline audit verification). Fails if missing.
    pub fn open_read_only(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(StoreError::Open {
                path: path.display().to_string(),
                source: "no such file".into(),
            });
        }
        let writer = open_conn(path, true)?;
        Ok(Self {
            queue: Mutex::new(Vec::new()),
            groups: AtomicU64::new(0),
            grouped: AtomicU64::new(0),
            path: path.to_path_buf(),
            read_only: true,
            writer: Mutex::new(writer),
            readers: Mutex::new(Vec::new()),
        })
    }

    /// `(group commits, batches committed)` since open: their ratio is the mean group size.
    pub fn group_stats(&self) -> (u64, u64) {
        (self.groups.load(Relaxed), self.grouped.load(Relaxed))
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = {
            let mut pool = self.readers.lock().map_err(|_| poisoned())?;
            pool.pop()
        };
        let conn = match conn {
            Some(c) => c,
            None => open_conn(&self.path, self.read_only)?,
        };
        let out = f(&conn);
        if let Ok(mut pool) = self.readers.lock()
            && pool.len() < 8
        {
            pool.push(conn);
        }
        out
    }
}

fn poisoned() -> StoreError {
    StoreError::Backend("a store lock was poisoned by a panic".into())
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn record(row: &rusqlite::Row<'_>) -> rusqlite::Result<Record> {
    Ok(Record {
        key: row.get(0)?,
        rtype: row.get(1)?,
        parent: row.get(2)?,
        body: row.get(3)?,
        revision: to_u64(row.get(4)?),
    })
}

struct SqliteTx<'a>(&'a Connection);

impl Tx for SqliteTx<'_> {
    fn counters(&mut self) -> Result<(u64, u64)> {
        let (r, s): (i64, i64) = self
            .0
            .prepare_cached("SELECT revision, audit_seq FROM counters WHERE id = 1")?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok((to_u64(r), to_u64(s)))
    }
    fn set_counters(&mut self, revision: u64, next_seq: u64) -> Result<()> {
        self.0
            .prepare_cached("UPDATE counters SET revision = ?1, audit_seq = ?2 WHERE id = 1")?
            .execute(params![to_i64(revision), to_i64(next_seq)])?;
        Ok(())
    }
    fn revision_of(&mut self, key: &str) -> Result<Option<u64>> {
        let r: Option<i64> = self
            .0
            .prepare_cached("SELECT revision FROM resources WHERE key = ?1")?
            .query_row([key], |r| r.get(0))
            .optional()?;
        Ok(r.map(to_u64))
    }
    fn upsert(&mut self, key: &str, rtype: &str, parent: &str, body: &str, rev: u64) -> Result<()> {
        self.0.prepare_cached(
            "INSERT INTO resources (key, rtype, parent, body, revision) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(key) DO UPDATE SET rtype = excluded.rtype, parent = excluded.parent,
                body = excluded.body, revision = excluded.revision",
        )?.execute(params![key, rtype, parent, body, to_i64(rev)])?;
        Ok(())
    }
    fn delete(&mut self, key: &str) -> Result<Option<String>> {
        let rtype: Option<String> = self
            .0
            .prepare_cached("DELETE FROM resources WHERE key = ?1 RETURNING rtype")?
            .query_row([key], |r| r.get(0))
            .optional()?;
        Ok(rtype)
    }
    fn keys_in_tree(&mut self, key: &str) -> Result<Vec<(String, String)>> {
        let (lo, hi) = under_bounds(key);
        let mut stmt = self.0.prepare(
            "SELECT key, rtype FROM resources WHERE key = ?1 OR (key >= ?2 AND key < ?3)",
        )?;
        let rows = stmt
            .query_map(params![key, lo, hi], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }
    fn insert_change(
        &mut self,
        rev: u64,
        key: &str,
        rtype: &str,
        body: Option<&str>,
    ) -> Result<()> {
        self.0
            .prepare_cached(
                "INSERT INTO changes (revision, key, rtype, body) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![to_i64(rev), key, rtype, body])?;
        Ok(())
    }
    fn insert_audit(&mut self, seq: u64, entry: &[u8], leaf_hash: &[u8]) -> Result<()> {
        self.0
            .prepare_cached("INSERT INTO audit (seq, entry, leaf_hash) VALUES (?1, ?2, ?3)")?
            .execute(params![to_i64(seq), entry, leaf_hash])?;
        Ok(())
    }
}

impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn get(&self, key: &str) -> Result<Option<Record>> {
        self.read(|c| {
            Ok(c.query_row(
                "SELECT key, rtype, parent, body, revision FROM resources WHERE key = ?1",
                [key],
                record,
            )
            .optional()?)
        })
    }

    fn list_children(&self, parent: &str, rtype: &str) -> Result<Vec<Record>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT key, rtype, parent, body, revision FROM resources
                 WHERE parent = ?1 AND rtype = ?2 ORDER BY key",
            )?;
            Ok(stmt
                .query_map([parent, rtype], record)?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn list_under(&self, key: &str) -> Result<Vec<Record>> {
        let (lo, hi) = under_bounds(key);
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT key, rtype, parent, body, revision FROM resources
                 WHERE key >= ?1 AND key < ?2 ORDER BY key",
            )?;
            Ok(stmt
                .query_map([lo, hi], record)?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn list_type(&self, rtype: &str) -> Result<Vec<Record>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT key, rtype, parent, body, revision FROM resources WHERE rtype = ?1 ORDER BY key",
            )?;
            Ok(stmt
                .query_map([rtype], record)?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// Group commit: the caller queues its batch, then whoever holds the write lock commits
    /// every queued batch in one transaction (one fsync), each inside its own savepoint so a
    /// failed precondition rolls back only that batch. Every caller returns only after the
    /// transaction holding its batch is durable.
    fn commit(&self, batch: Batch) -> Result<Committed> {
        let (reply, result) = std::sync::mpsc::sync_channel(1);
        self.queue
            .lock()
            .map_err(|_| poisoned())?
            .push(Pending { batch, reply });
        loop {
            match self.writer.try_lock() {
                Ok(mut conn) => {
                    // Leader: commit queued groups until the queue is empty (bounded), so
                    // followers are answered without each having to take the lock.
                    for _ in 0..64 {
                        let pending =
                            std::mem::take(&mut *self.queue.lock().map_err(|_| poisoned())?);
                        if pending.is_empty() {
                            break;
                        }
                        self.groups.fetch_add(1, Relaxed);
                        self.grouped.fetch_add(pending.len() as u64, Relaxed);
                        commit_group(&mut conn, pending);
                    }
                }
                Err(std::sync::TryLockError::Poisoned(_)) => return Err(poisoned()),
                Err(std::sync::TryLockError::WouldBlock) => {}
            }
            // Follower (or leader done): wait for our answer; if the current leader stops
            // before reaching our batch, the timeout sends us back to try to lead.
            match result.recv_timeout(std::time::Duration::from_millis(2)) {
                Ok(r) => return r,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return Err(poisoned()),
            }
        }
    }

    fn revision(&self) -> Result<u64> {
        self.read(|c| {
            let r: i64 = c.query_row("SELECT revision FROM counters WHERE id = 1", [], |r| {
                r.get(0)
            })?;
            Ok(to_u64(r))
        })
    }

    fn changes_since(&self, after: u64, limit: usize) -> Result<Vec<Change>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT revision, key, rtype, body FROM changes WHERE revision > ?1 ORDER BY revision LIMIT ?2",
            )?;
            Ok(stmt
                .query_map(params![to_i64(after), to_i64(limit as u64)], |r| {
                    Ok(Change {
                        revision: to_u64(r.get(0)?),
                        key: r.get(1)?,
                        rtype: r.get(2)?,
                        body: r.get(3)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn audit_len(&self) -> Result<u64> {
        self.read(|c| {
            let r: i64 = c.query_row("SELECT audit_seq FROM counters WHERE id = 1", [], |r| {
                r.get(0)
            })?;
            Ok(to_u64(r))
        })
    }

    fn audit_rows(&self, from: u64, limit: usize) -> Result<Vec<AuditRow>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT seq, entry, leaf_hash FROM audit WHERE seq >= ?1 ORDER BY seq LIMIT ?2",
            )?;
            let rows = stmt
                .query_map(params![to_i64(from), to_i64(limit as u64)], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter()
                .map(|(seq, entry, leaf)| {
                    Ok(AuditRow {
                        seq: to_u64(seq),
                        entry,
                        leaf_hash: hash_from_slice("audit", &leaf)?,
                    })
                })
                .collect()
        })
    }

    fn audit_leaf_hashes(&self, to: u64) -> Result<Vec<Hash>> {
        self.read(|c| {
            let mut stmt =
                c.prepare_cached("SELECT leaf_hash FROM audit WHERE seq < ?1 ORDER BY seq")?;
            let rows = stmt
                .query_map([to_i64(to)], |r| r.get::<_, Vec<u8>>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.iter().map(|h| hash_from_slice("audit", h)).collect()
        })
    }

    fn put_checkpoint(&self, cp: &SignedCheckpoint) -> Result<()> {
        let body = serde_json::to_string(cp).map_err(|e| StoreError::Backend(Box::new(e)))?;
        let conn = self.writer.lock().map_err(|_| poisoned())?;
        conn.execute(
            "INSERT OR IGNORE INTO checkpoints (tree_size, body) VALUES (?1, ?2)",
            params![to_i64(cp.checkpoint.tree_size), body],
        )?;
        Ok(())
    }

    fn checkpoints(&self) -> Result<Vec<SignedCheckpoint>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached("SELECT body FROM checkpoints ORDER BY tree_size")?;
            let rows = stmt
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.iter().map(|b| checkpoint_from_json(b)).collect()
        })
    }

    fn latest_checkpoint(&self) -> Result<Option<SignedCheckpoint>> {
        self.read(|c| {
            let body: Option<String> = c
                .query_row(
                    "SELECT body FROM checkpoints ORDER BY tree_size DESC LIMIT 1",
                    [],
                    |r| r.get(0),
                )
                .optional()?;
            body.as_deref().map(checkpoint_from_json).transpose()
        })
    }

    fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.read(|c| {
            Ok(
                c.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                    .optional()?,
            )
        })
    }

    fn meta_init(&self, key: &str, value: &[u8]) -> Result<Vec<u8>> {
        let conn = self.writer.lock().map_err(|_| poisoned())?;
        conn.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES (?1, ?2)",
            params![key, value],
        )?;
        Ok(conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))?)
    }

    fn meta_set(&self, key: &str, value: &[u8]) -> Result<()> {
        let conn = self.writer.lock().map_err(|_| poisoned())?;
        conn.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }
}
