//! The one test suite every [`Store`] backend must pass. Backends' integration tests call
//! [`run_all`] on a fresh, empty store; each case asserts behaviour the control plane relies on.

#![expect(
    clippy::unwrap_used,
    reason = "conformance cases are test code: any failed step must abort the case loudly"
)]

use crate::{Batch, Op, Precondition, Store, StoreError};

/// One named conformance case.
pub type Case = (&'static str, fn(&dyn Store));
use strata_audit::AuditEntry;

/// Every conformance case, by name.
pub const CASES: &[Case] = &[
    ("put_get_and_revisions", put_get_and_revisions),
    ("preconditions_are_atomic", preconditions_are_atomic),
    ("listing", listing),
    ("delete_tree", delete_tree),
    ("change_feed", change_feed),
    ("audit_append", audit_append),
    ("checkpoints", checkpoints),
    (
        "meta_init_is_first_writer_wins",
        meta_init_is_first_writer_wins,
    ),
    ("concurrent_writers", concurrent_writers),
    ("racing_creates_one_winner", racing_creates_one_winner),
];

/// Runs every case against `store`, which must start empty.
pub fn run_all(store: &dyn Store) {
    for (name, case) in CASES {
        eprintln!("conformance[{}]: {name}", store.backend());
        case(store);
    }
}

fn put(key: &str, rtype: &str, parent: &str, body: &str, pre: Precondition) -> Op {
    Op::Put {
        key: key.into(),
        rtype: rtype.into(),
        parent: parent.into(),
        body: body.into(),
        pre,
    }
}

fn entry(action: &str) -> AuditEntry {
    AuditEntry {
        seq: u64::MAX,
        time: "2026-11-28T00:00:00Z".into(),
        request_id: "req".into(),
        principal_id: Some("p1".into()),
        principal_name: None,
        client_ip: None,
        category: "write".into(),
        action: action.into(),
        scope: "/".into(),
        outcome: "success".into(),
        status: 200,
        reason: "test".into(),
        details: serde_json::Value::Null,
    }
}

fn one(store: &dyn Store, op: Op) -> Result<u64, StoreError> {
    store
        .commit(Batch {
            ops: vec![op],
            audit: vec![],
        })
        .map(|c| c.revisions[0])
}

fn put_get_and_revisions(store: &dyn Store) {
    let r0 = store.revision().unwrap();
    let r1 = one(
        store,
        put("/a/x", "t", "/a", "{\"v\":1}", Precondition::MustNotExist),
    )
    .unwrap();
    assert_eq!(r1, r0 + 1);
    let got = store.get("/a/x").unwrap().unwrap();
    assert_eq!(got.body, "{\"v\":1}");
    assert_eq!(got.revision, r1);
    assert_eq!(got.etag(), format!("\"{r1}\""));
    let r2 = one(
        store,
        put("/a/x", "t", "/a", "{\"v\":2}", Precondition::Revision(r1)),
    )
    .unwrap();
    assert!(r2 > r1);
    assert_eq!(store.revision().unwrap(), r2);
    assert!(store.get("/a/missing").unwrap().is_none());
}

fn preconditions_are_atomic(store: &dyn Store) {
    one(
        store,
        put("/p/a", "t", "/p", "1", Precondition::MustNotExist),
    )
    .unwrap();
    let before_rev = store.revision().unwrap();
    let before_audit = store.audit_len().unwrap();
    // A batch whose second op fails must leave nothing of the first op or its audit entry.
    let err = store
        .commit(Batch {
            ops: vec![
                put("/p/b", "t", "/p", "2", Precondition::MustNotExist),
                put("/p/a", "t", "/p", "3", Precondition::MustNotExist),
            ],
            audit: vec![entry("x/write")],
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::Precondition { .. }), "{err:?}");
    assert!(store.get("/p/b").unwrap().is_none());
    assert_eq!(store.get("/p/a").unwrap().unwrap().body, "1");
    assert_eq!(store.revision().unwrap(), before_rev);
    assert_eq!(store.audit_len().unwrap(), before_audit);
    // Stale If-Match, MustExist on a missing key, delete of a missing key with a revision.
    let cur = store.get("/p/a").unwrap().unwrap().revision;
    assert!(
        one(
            store,
            put("/p/a", "t", "/p", "4", Precondition::Revision(cur + 100))
        )
        .is_err()
    );
    assert!(one(store, put("/p/zz", "t", "/p", "4", Precondition::MustExist)).is_err());
    assert!(
        one(
            store,
            Op::Delete {
                key: "/p/zz".into(),
                pre: Precondition::Revision(1)
            }
        )
        .is_err()
    );
    // An assertion on a missing parent fails the whole batch.
    assert!(
        store
            .commit(Batch {
                ops: vec![
                    Op::Assert {
                        key: "/p/parent".into(),
                        pre: Precondition::MustExist
                    },
                    put(
                        "/p/parent/child",
                        "t",
                        "/p/parent",
                        "{}",
                        Precondition::None
                    ),
                ],
                audit: vec![],
            })
            .is_err()
    );
    assert!(store.get("/p/parent/child").unwrap().is_none());
    one(
        store,
        Op::Delete {
            key: "/p/a".into(),
            pre: Precondition::Revision(cur),
        },
    )
    .unwrap();
    assert!(store.get("/p/a").unwrap().is_none());
}

fn listing(store: &dyn Store) {
    for (k, t) in [
        ("/l/b", "vm"),
        ("/l/a", "vm"),
        ("/l/c", "net"),
        ("/l/a/sub/x", "vm"),
        ("/l0", "vm"),
    ] {
        let parent = k
            .rsplit_once('/')
            .map(|(p, _)| if p.is_empty() { "/" } else { p })
            .unwrap();
        one(store, put(k, t, parent, "{}", Precondition::None)).unwrap();
    }
    let kids: Vec<String> = store
        .list_children("/l", "vm")
        .unwrap()
        .into_iter()
        .map(|r| r.key)
        .collect();
    assert_eq!(kids, vec!["/l/a", "/l/b"]);
    let under: Vec<String> = store
        .list_under("/l")
        .unwrap()
        .into_iter()
        .map(|r| r.key)
        .collect();
    assert_eq!(
        under,
        vec!["/l/a", "/l/a/sub/x", "/l/b", "/l/c"],
        "'/l0' is not under '/l'"
    );
    let nets: Vec<String> = store
        .list_type("net")
        .unwrap()
        .into_iter()
        .map(|r| r.key)
        .collect();
    assert!(nets.contains(&"/l/c".to_string()));
}

fn delete_tree(store: &dyn Store) {
    for k in ["/d", "/d/a", "/d/a/b", "/dz"] {
        one(store, put(k, "t", "/", "{}", Precondition::None)).unwrap();
    }
    let c = store
        .commit(Batch {
            ops: vec![Op::DeleteTree { key: "/d".into() }],
            audit: vec![],
        })
        .unwrap();
    assert_eq!(
        c.deleted,
        vec!["/d/a/b", "/d/a", "/d"],
        "children are deleted before parents"
    );
    assert!(store.get("/d/a").unwrap().is_none());
    assert!(store.get("/dz").unwrap().is_some());
}

fn change_feed(store: &dyn Store) {
    let start = store.revision().unwrap();
    one(store, put("/cf/a", "t", "/cf", "1", Precondition::None)).unwrap();
    one(store, put("/cf/a", "t", "/cf", "2", Precondition::None)).unwrap();
    one(
        store,
        Op::Delete {
            key: "/cf/a".into(),
            pre: Precondition::MustExist,
        },
    )
    .unwrap();
    let changes = store.changes_since(start, 100).unwrap();
    assert_eq!(changes.len(), 3);
    assert_eq!(changes[0].body.as_deref(), Some("1"));
    assert_eq!(changes[1].body.as_deref(), Some("2"));
    assert_eq!(changes[2].body, None);
    assert!(changes.windows(2).all(|w| w[0].revision < w[1].revision));
    assert_eq!(store.changes_since(start, 1).unwrap().len(), 1);
    assert!(
        store
            .changes_since(store.revision().unwrap(), 10)
            .unwrap()
            .is_empty()
    );
}

fn audit_append(store: &dyn Store) {
    let n0 = store.audit_len().unwrap();
    let c = store
        .commit(Batch {
            ops: vec![],
            audit: vec![entry("a/write"), entry("b/write")],
        })
        .unwrap();
    assert_eq!(c.audit_seqs, vec![n0, n0 + 1]);
    assert_eq!(store.audit_len().unwrap(), n0 + 2);
    let rows = store.audit_rows(n0, 10).unwrap();
    assert_eq!(rows.len(), 2);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row.seq, n0 + i as u64);
        assert_eq!(row.leaf_hash, strata_audit::leaf_hash(&row.entry));
        let parsed: AuditEntry = serde_json::from_slice(&row.entry).unwrap();
        assert_eq!(
            parsed.seq, row.seq,
            "the stored entry carries its own sequence number"
        );
    }
    let leaves = store.audit_leaf_hashes(n0 + 2).unwrap();
    assert_eq!(leaves.len() as u64, n0 + 2);
    assert_eq!(leaves[n0 as usize + 1], rows[1].leaf_hash);
}

fn checkpoints(store: &dyn Store) {
    let (signer, _) = strata_audit::CheckpointSigner::generate().unwrap();
    assert!(store.latest_checkpoint().unwrap().is_none());
    for size in [3u64, 1, 2] {
        let cp = signer.sign(strata_audit::Checkpoint {
            origin: "test".into(),
            tree_size: size,
            root_hash: [size as u8; 32],
            timestamp: 1,
        });
        store.put_checkpoint(&cp).unwrap();
        store.put_checkpoint(&cp).unwrap();
    }
    let all = store.checkpoints().unwrap();
    assert_eq!(
        all.iter()
            .map(|c| c.checkpoint.tree_size)
            .collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(
        store
            .latest_checkpoint()
            .unwrap()
            .unwrap()
            .checkpoint
            .tree_size,
        3
    );
}

fn meta_init_is_first_writer_wins(store: &dyn Store) {
    assert!(store.meta_get("k").unwrap().is_none());
    assert_eq!(store.meta_init("k", b"first").unwrap(), b"first");
    assert_eq!(store.meta_init("k", b"second").unwrap(), b"first");
    assert_eq!(store.meta_get("k").unwrap().unwrap(), b"first");
    store.meta_set("k", b"rotated").unwrap();
    assert_eq!(store.meta_get("k").unwrap().unwrap(), b"rotated");
}

fn concurrent_writers(store: &dyn Store) {
    let start_rev = store.revision().unwrap();
    let start_audit = store.audit_len().unwrap();
    std::thread::scope(|s| {
        for t in 0..4 {
            s.spawn(move || {
                for i in 0..25 {
                    store
                        .commit(Batch {
                            ops: vec![put(
                                &format!("/cc/{t}/{i}"),
                                "t",
                                "/cc",
                                "{}",
                                Precondition::MustNotExist,
                            )],
                            audit: vec![entry("cc/write")],
                        })
                        .unwrap();
                }
            });
        }
    });
    assert_eq!(store.revision().unwrap(), start_rev + 100);
    assert_eq!(store.audit_len().unwrap(), start_audit + 100);
    let changes = store.changes_since(start_rev, 1000).unwrap();
    assert_eq!(
        changes.len(),
        100,
        "every write is in the change feed exactly once"
    );
    let rows = store.audit_rows(start_audit, 1000).unwrap();
    assert!(
        rows.iter()
            .enumerate()
            .all(|(i, r)| r.seq == start_audit + i as u64),
        "no gaps"
    );
}

fn racing_creates_one_winner(store: &dyn Store) {
    let start_rev = store.revision().unwrap();
    let start_audit = store.audit_len().unwrap();
    let wins = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..8 {
            let wins = &wins;
            s.spawn(move || {
                for i in 0..10 {
                    let r = store.commit(Batch {
                        ops: vec![put(
                            &format!("/race/{i}"),
                            "t",
                            "/race",
                            &format!("{{\"by\":{t}}}"),
                            Precondition::MustNotExist,
                        )],
                        audit: vec![entry("race/write")],
                    });
                    match r {
                        Ok(_) => {
                            wins.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Err(StoreError::Precondition { .. }) => {}
                        Err(e) => panic!("unexpected error: {e:?}"),
                    }
                }
            });
        }
    });
    assert_eq!(wins.into_inner(), 10, "exactly one creator wins each key");
    assert_eq!(
        store.revision().unwrap(),
        start_rev + 10,
        "losers left no revision behind"
    );
    assert_eq!(
        store.audit_len().unwrap(),
        start_audit + 10,
        "losers left no audit entry behind"
    );
}
