//! The only crate that opens a database.
//!
//! **Architecture Invariant:** every durable byte of control-plane state goes through the
//! [`Store`] trait. Two backends implement it — SQLite (embedded default, WAL, `synchronous=FULL`)
//! and PostgreSQL — and both must pass the same conformance suite ([`conformance`]).
//!
//! The model is deliberately small: resources are JSON documents under a lowercase ARM key;
//! every put/delete gets a new global *revision* and a row in the change feed; audit entries
//! are appended to a Merkle-hashed log in the *same transaction* as the writes they describe, so
//! an acknowledged write is never missing from the audit log and vice versa.

mod commit;
pub mod conformance;
mod pg;
mod sqlite;

pub use pg::PgStore;
pub use sqlite::SqliteStore;

use strata_audit::{AuditEntry, Hash, SignedCheckpoint};

/// A stored resource document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Lowercase ARM id.
    pub key: String,
    /// Lowercase resource type, e.g. `strata.compute/virtualmachines`.
    pub rtype: String,
    /// Lowercase id of the enclosing scope or parent resource (`/` at the root).
    pub parent: String,
    /// The JSON document (without etag: the etag is the revision).
    pub body: String,
    /// Revision of the last write to this record.
    pub revision: u64,
}

impl Record {
    /// The HTTP entity tag for this record's current revision.
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.revision)
    }
}

/// What must be true of a record for a write to go ahead (checked inside the transaction).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Precondition {
    None,
    MustNotExist,
    MustExist,
    /// The record must exist at exactly this revision (`If-Match`).
    Revision(u64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Put {
        key: String,
        rtype: String,
        parent: String,
        body: String,
        pre: Precondition,
    },
    Delete {
        key: String,
        pre: Precondition,
    },
    /// Deletes `key` and everything below it (`key/…`), e.g. a resource group and its contents.
    DeleteTree {
        key: String,
    },
    /// Writes nothing; fails the batch unless `pre` holds (e.g. "the parent still exists").
    Assert {
        key: String,
        pre: Precondition,
    },
}

/// An atomic unit of work: all ops and audit entries commit together or not at all.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    pub ops: Vec<Op>,
    /// Entries to append; the store assigns `seq`.
    pub audit: Vec<AuditEntry>,
}

/// What a successful commit did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    /// The revision of each op, in order (for `DeleteTree`, the last revision it used).
    pub revisions: Vec<u64>,
    /// Keys removed by deletes, in order.
    pub deleted: Vec<String>,
    /// Sequence numbers given to the batch's audit entries.
    pub audit_seqs: Vec<u64>,
}

/// One row of the change feed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub revision: u64,
    pub key: String,
    pub rtype: String,
    /// `None` for a delete.
    pub body: Option<String>,
}

/// One stored audit row, as read back for serving or verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRow {
    pub seq: u64,
    pub entry: Vec<u8>,
    pub leaf_hash: Hash,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("precondition failed for '{key}': {detail}")]
    Precondition { key: String, detail: String },
    #[error("the database could not be opened at '{path}'")]
    Open {
        path: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("database error")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("corrupt row in {table}: {detail}")]
    Corrupt { table: &'static str, detail: String },
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Backend(Box::new(e))
    }
}

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        StoreError::Backend(Box::new(e))
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The storage contract shared by every backend.
pub trait Store: Send + Sync + 'static {
    /// `"sqlite"` or `"postgres"`.
    fn backend(&self) -> &'static str;
    fn get(&self, key: &str) -> Result<Option<Record>>;
    /// Records of `rtype` whose parent is exactly `parent`.
    fn list_children(&self, parent: &str, rtype: &str) -> Result<Vec<Record>>;
    /// Every record strictly below `key` (keys starting with `key/`), ordered by key.
    fn list_under(&self, key: &str) -> Result<Vec<Record>>;
    /// Every record of a type, ordered by key.
    fn list_type(&self, rtype: &str) -> Result<Vec<Record>>;
    /// Applies a batch atomically and durably; returns only after the commit is on disk.
    fn commit(&self, batch: Batch) -> Result<Committed>;
    /// The newest revision (0 when nothing was ever written).
    fn revision(&self) -> Result<u64>;
    /// Changes with revision > `after`, oldest first, at most `limit`.
    fn changes_since(&self, after: u64, limit: usize) -> Result<Vec<Change>>;
    /// Number of audit entries.
    fn audit_len(&self) -> Result<u64>;
    /// Audit rows with seq in `[from, from + limit)`.
    fn audit_rows(&self, from: u64, limit: usize) -> Result<Vec<AuditRow>>;
    /// Leaf hashes of entries `[0, to)`.
    fn audit_leaf_hashes(&self, to: u64) -> Result<Vec<Hash>>;
    /// Stores a signed checkpoint (idempotent per tree size).
    fn put_checkpoint(&self, cp: &SignedCheckpoint) -> Result<()>;
    /// All checkpoints, by tree size.
    fn checkpoints(&self) -> Result<Vec<SignedCheckpoint>>;
    fn latest_checkpoint(&self) -> Result<Option<SignedCheckpoint>>;
    fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>>;
    /// Stores `value` under `key` unless a value is there; returns the stored value either way
    /// (so racing replicas agree on one bootstrap value).
    fn meta_init(&self, key: &str, value: &[u8]) -> Result<Vec<u8>>;
    /// Stores `value` under `key`, replacing any value (key rotation).
    fn meta_set(&self, key: &str, value: &[u8]) -> Result<()>;
}

pub(crate) fn hash_from_slice(table: &'static str, bytes: &[u8]) -> Result<Hash> {
    bytes.try_into().map_err(|_| StoreError::Corrupt {
        table,
        detail: format!("leaf hash has {} bytes, expected 32", bytes.len()),
    })
}

pub(crate) fn checkpoint_from_json(text: &str) -> Result<SignedCheckpoint> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
        table: "checkpoints",
        detail: e.to_string(),
    })
}

/// The first key after every key that starts with `key/` (`/` + 1 is `0`).
pub(crate) fn under_bounds(key: &str) -> (String, String) {
    let base = key.trim_end_matches('/');
    (format!("{base}/"), format!("{base}0"))
}
