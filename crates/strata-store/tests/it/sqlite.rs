//! SQLite backend: conformance, durability across reopen, read-only open.

use strata_store::{Batch, Op, Precondition, SqliteStore, Store, conformance};

#[test]
fn sqlite_passes_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("strata.db")).unwrap();
    conformance::run_all(&store);
}

#[test]
fn sqlite_state_survives_reopen_and_read_only_cannot_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("strata.db");
    {
        let store = SqliteStore::open(&path).unwrap();
        store
            .commit(Batch {
                ops: vec![Op::Put {
                    key: "/k".into(),
                    rtype: "t".into(),
                    parent: "/".into(),
                    body: "{}".into(),
                    pre: Precondition::MustNotExist,
                }],
                audit: vec![],
            })
            .unwrap();
    }
    let ro = SqliteStore::open_read_only(&path).unwrap();
    assert_eq!(ro.get("/k").unwrap().unwrap().revision, 1);
    assert!(ro.commit(Batch::default()).is_err() || ro.revision().unwrap() == 1);
    assert!(SqliteStore::open_read_only(&dir.path().join("missing.db")).is_err());
}
