//! Offline verification of whole stored logs (`verify_log`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use strata_audit::{
    AuditEntry, Checkpoint, CheckpointSigner, Hash, Problem, SignedCheckpoint, StoredEntry,
    VerifyReport, empty_root, leaf_hash, root, verify_log,
};

const ORIGIN: &str = "strata.test/audit";

fn entry(seq: u64) -> AuditEntry {
    AuditEntry {
        seq,
        time: format!("2025-01-01T00:00:{:02}Z", seq % 60),
        request_id: format!("req-{seq}"),
        principal_id: Some(format!("principal-{}", seq % 3)),
        principal_name: seq
            .is_multiple_of(2)
            .then(|| "alice@example.com".to_string()),
        client_ip: Some("192.0.2.10".into()),
        category: if seq.is_multiple_of(5) {
            "denial"
        } else {
            "write"
        }
        .into(),
        action: "Strata.Compute/virtualMachines/write".into(),
        scope: format!("/subscriptions/s1/vm-{seq}"),
        outcome: if seq.is_multiple_of(5) {
            "denied"
        } else {
            "success"
        }
        .into(),
        status: if seq.is_multiple_of(5) { 403 } else { 200 },
        reason: "role assignment ra-1 grants write".into(),
        details: serde_json::json!({ "n": seq }),
    }
}

fn stored(e: &AuditEntry) -> StoredEntry {
    StoredEntry {
        seq: e.seq,
        entry_json: e.leaf_bytes(),
        stored_leaf_hash: e.leaf_hash(),
    }
}

struct Log {
    signer: CheckpointSigner,
    entries: Vec<StoredEntry>,
    checkpoints: Vec<SignedCheckpoint>,
}

impl Log {
    /// A clean log of `n` entries with checkpoints at `sizes`.
    fn new(n: u64, sizes: &[u64]) -> Self {
        let (signer, _) = CheckpointSigner::generate().unwrap();
        let entries: Vec<StoredEntry> = (0..n).map(|s| stored(&entry(s))).collect();
        let mut log = Self {
            signer,
            entries,
            checkpoints: Vec::new(),
        };
        for &size in sizes {
            let r = log.root_at(size);
            log.checkpoints.push(log.sign(size, r));
        }
        log
    }

    fn root_at(&self, size: u64) -> Hash {
        let leaves: Vec<Hash> = self.entries[..size as usize]
            .iter()
            .map(|e| e.stored_leaf_hash)
            .collect();
        root(&leaves)
    }

    fn sign(&self, size: u64, root_hash: Hash) -> SignedCheckpoint {
        self.signer.sign(Checkpoint {
            origin: ORIGIN.into(),
            tree_size: size,
            root_hash,
            timestamp: 1_700_000_000 + size as i64,
        })
    }

    fn verify(&self) -> VerifyReport {
        verify_log(
            self.entries.clone(),
            &self.checkpoints,
            &self.signer.public_key(),
        )
    }

    /// Replaces the stored bytes of `seq` with an edited entry; the stored leaf
    /// hash is updated too when `rehash`.
    fn edit(&mut self, seq: u64, rehash: bool) {
        let mut e = entry(seq);
        e.outcome = "success".into();
        e.reason = "nothing to see here".into();
        let slot = &mut self.entries[seq as usize];
        slot.entry_json = e.leaf_bytes();
        if rehash {
            slot.stored_leaf_hash = e.leaf_hash();
        }
    }
}

fn messages(report: &VerifyReport) -> String {
    report.problems.iter().map(|p| format!("- {p}\n")).collect()
}

#[test]
fn clean_log_verifies() {
    let log = Log::new(50, &[10, 25, 50]);
    let report = log.verify();
    assert!(report.problems.is_empty(), "{}", messages(&report));
    assert!(report.is_ok());
    assert_eq!(report.entries, 50);
    assert_eq!(report.checkpoints, 3);
    assert_eq!(report.verified_tree_size, 50);
}

#[test]
fn checkpoint_order_does_not_matter() {
    let mut log = Log::new(50, &[10, 25, 50]);
    log.checkpoints.reverse();
    let report = log.verify();
    assert!(report.is_ok(), "{}", messages(&report));
    assert_eq!(report.verified_tree_size, 50);
}

#[test]
fn entries_after_the_last_checkpoint_are_fine() {
    let log = Log::new(60, &[10, 25, 50]);
    let report = log.verify();
    assert!(report.is_ok(), "{}", messages(&report));
    assert_eq!(report.verified_tree_size, 50);
    assert_eq!(report.entries, 60);
}

#[test]
fn empty_log() {
    let log = Log::new(0, &[]);
    let report = log.verify();
    assert!(report.is_ok());
    assert_eq!(report.verified_tree_size, 0);

    let mut log = Log::new(0, &[]);
    log.checkpoints.push(log.sign(0, empty_root()));
    assert!(log.verify().is_ok());
    log.checkpoints.push(log.sign(0, [9u8; 32]));
    let report = log.verify();
    assert!(
        report
            .problems
            .contains(&Problem::CheckpointFork { tree_size: 0 })
    );
    assert!(
        messages(&report).contains("empty-tree root"),
        "{}",
        messages(&report)
    );
}

#[test]
fn edited_entry_bytes_are_named() {
    let mut log = Log::new(50, &[10, 25, 50]);
    log.edit(30, false);
    let report = log.verify();
    assert!(
        report
            .problems
            .contains(&Problem::LeafHashMismatch { seq: 30 }),
        "{}",
        messages(&report)
    );
    assert!(report.problems.contains(&Problem::CheckpointRootMismatch {
        tree_size: 50,
        first_seq: 25,
        last_seq: 49
    }));
    assert_eq!(report.problems.len(), 2, "{}", messages(&report));
    assert_eq!(report.verified_tree_size, 25);
    assert!(
        messages(&report).contains("entry 30"),
        "{}",
        messages(&report)
    );
}

#[test]
fn edited_entry_and_leaf_hash_is_caught_by_the_checkpoint_range() {
    let mut log = Log::new(50, &[10, 25, 50]);
    log.edit(17, true);
    let report = log.verify();
    assert_eq!(
        report.problems,
        vec![
            Problem::CheckpointRootMismatch {
                tree_size: 25,
                first_seq: 10,
                last_seq: 24
            },
            Problem::CheckpointRootMismatch {
                tree_size: 50,
                first_seq: 10,
                last_seq: 49
            },
        ],
        "{}",
        messages(&report)
    );
    assert_eq!(report.verified_tree_size, 10);
    assert!(
        messages(&report).contains("entries 10 to 24"),
        "{}",
        messages(&report)
    );
}

#[test]
fn removed_entry_is_a_gap() {
    let mut log = Log::new(50, &[10, 25, 50]);
    log.entries.remove(30);
    let report = log.verify();
    assert!(
        report.problems.contains(&Problem::Gap {
            first_seq: 30,
            last_seq: 30
        }),
        "{}",
        messages(&report)
    );
    assert!(report.problems.contains(&Problem::CheckpointUnverifiable {
        tree_size: 50,
        missing_seq: 30
    }));
    assert_eq!(report.verified_tree_size, 25);
    assert_eq!(report.entries, 49);
    assert!(messages(&report).contains("entry 30 is missing"));
}

#[test]
fn removed_range_is_one_gap() {
    let mut log = Log::new(50, &[10, 25, 50]);
    log.entries.drain(3..7);
    let report = log.verify();
    assert!(
        report.problems.contains(&Problem::Gap {
            first_seq: 3,
            last_seq: 6
        }),
        "{}",
        messages(&report)
    );
    assert_eq!(report.verified_tree_size, 0);
}

#[test]
fn swapped_entries_are_reordered() {
    let mut log = Log::new(50, &[10, 25, 50]);
    // Swap the stored contents (bytes and leaf hashes) of positions 12 and 17.
    let a = log.entries[12].clone();
    let b = log.entries[17].clone();
    log.entries[12].entry_json = b.entry_json;
    log.entries[12].stored_leaf_hash = b.stored_leaf_hash;
    log.entries[17].entry_json = a.entry_json;
    log.entries[17].stored_leaf_hash = a.stored_leaf_hash;
    let report = log.verify();
    assert!(
        report.problems.contains(&Problem::Reordered {
            seq: 12,
            claimed_seq: 17
        }),
        "{}",
        messages(&report)
    );
    assert!(report.problems.contains(&Problem::Reordered {
        seq: 17,
        claimed_seq: 12
    }));
    assert!(report.problems.contains(&Problem::CheckpointRootMismatch {
        tree_size: 25,
        first_seq: 10,
        last_seq: 24
    }));
    assert_eq!(report.verified_tree_size, 10);
}

#[test]
fn swapped_rows_are_out_of_order() {
    let mut log = Log::new(50, &[10, 25, 50]);
    log.entries.swap(12, 13);
    let report = log.verify();
    assert!(
        report.problems.contains(&Problem::OutOfOrder {
            seq: 12,
            after_seq: 13
        }),
        "{}",
        messages(&report)
    );
    assert_eq!(report.verified_tree_size, 10);
}

#[test]
fn duplicate_entry_is_named_and_the_tree_stays_in_step() {
    let mut log = Log::new(50, &[10, 25, 50]);
    let dup = log.entries[7].clone();
    log.entries.insert(8, dup);
    let report = log.verify();
    assert_eq!(
        report.problems,
        vec![Problem::Duplicate { seq: 7 }],
        "{}",
        messages(&report)
    );
    assert_eq!(report.verified_tree_size, 50);
}

#[test]
fn unparseable_entry_is_named() {
    let mut log = Log::new(50, &[10, 25, 50]);
    let junk = b"{\"seq\": 40, \"oops\": true}".to_vec();
    log.entries[40].stored_leaf_hash = leaf_hash(&junk);
    log.entries[40].entry_json = junk;
    let report = log.verify();
    assert!(
        matches!(
            report.problems.first(),
            Some(Problem::Unparseable { seq: 40, .. })
        ),
        "{}",
        messages(&report)
    );
    assert_eq!(report.verified_tree_size, 25);
}

#[test]
fn truncated_tail_is_detected() {
    let mut log = Log::new(50, &[10, 25, 50]);
    log.entries.truncate(40);
    let report = log.verify();
    assert_eq!(
        report.problems,
        vec![Problem::Truncated {
            tree_size: 50,
            log_size: 40
        }],
        "{}",
        messages(&report)
    );
    assert_eq!(report.verified_tree_size, 25);
    assert!(messages(&report).contains("entries 40 to 49"));

    log.entries.truncate(20);
    let report = log.verify();
    assert_eq!(report.problems.len(), 2, "{}", messages(&report));
    assert!(report.problems.contains(&Problem::Truncated {
        tree_size: 25,
        log_size: 20
    }));
    assert_eq!(report.verified_tree_size, 10);
}

#[test]
fn forged_checkpoint_signature_is_detected() {
    let mut log = Log::new(50, &[10, 25, 50]);
    let mut sig = STANDARD.decode(&log.checkpoints[1].signature).unwrap();
    sig[0] ^= 1;
    log.checkpoints[1].signature = STANDARD.encode(sig);
    let report = log.verify();
    assert!(
        matches!(
            report.problems.as_slice(),
            [Problem::CheckpointSignature { tree_size: 25, .. }]
        ),
        "{}",
        messages(&report)
    );
    assert_eq!(report.verified_tree_size, 50);
}

#[test]
fn checkpoint_from_another_key_is_forged() {
    let mut log = Log::new(50, &[10, 25, 50]);
    let (mallory, _) = CheckpointSigner::generate().unwrap();
    let mut forged = mallory.sign(log.checkpoints[2].checkpoint.clone());
    forged.key_id = log.signer.key_id();
    log.checkpoints[2] = forged;
    let report = log.verify();
    assert!(
        matches!(
            report.problems.as_slice(),
            [Problem::CheckpointSignature { tree_size: 50, .. }]
        ),
        "{}",
        messages(&report)
    );
    assert_eq!(report.verified_tree_size, 25);
}

#[test]
fn checkpoint_inconsistent_with_a_later_verified_one() {
    let mut log = Log::new(50, &[25, 50]);
    // A validly signed checkpoint whose root is not a prefix of the verified history.
    log.checkpoints.push(log.sign(10, [1u8; 32]));
    let report = log.verify();
    assert_eq!(
        report.problems,
        vec![Problem::InconsistentCheckpoints {
            tree_size: 10,
            later_tree_size: 50
        }],
        "{}",
        messages(&report)
    );
    assert_eq!(report.verified_tree_size, 50);
}

#[test]
fn fork_at_the_same_size_is_detected() {
    let mut log = Log::new(50, &[10, 25, 50]);
    log.checkpoints.push(log.sign(25, [2u8; 32]));
    let report = log.verify();
    assert!(
        report
            .problems
            .contains(&Problem::CheckpointFork { tree_size: 25 }),
        "{}",
        messages(&report)
    );
    assert!(!report.is_ok());
}

#[test]
fn timestamp_regression_and_foreign_origin_are_inconsistent() {
    let mut log = Log::new(50, &[10, 25]);
    let r50 = log.root_at(50);
    log.checkpoints.push(log.signer.sign(Checkpoint {
        origin: ORIGIN.into(),
        tree_size: 50,
        root_hash: r50,
        timestamp: 1_600_000_000,
    }));
    let report = log.verify();
    assert_eq!(
        report.problems,
        vec![Problem::CheckpointTimeRegression {
            tree_size: 50,
            timestamp: 1_600_000_000,
            earlier_tree_size: 25,
            earlier_timestamp: 1_700_000_025,
        }],
        "{}",
        messages(&report)
    );

    let mut log = Log::new(50, &[10, 25]);
    let r50 = log.root_at(50);
    log.checkpoints.push(log.signer.sign(Checkpoint {
        origin: "other.log/audit".into(),
        tree_size: 50,
        root_hash: r50,
        timestamp: 1_700_000_050,
    }));
    let report = log.verify();
    assert!(
        matches!(
            report.problems.as_slice(),
            [Problem::CheckpointOrigin { tree_size: 50, .. }]
        ),
        "{}",
        messages(&report)
    );
}

#[test]
fn wrong_public_key_fails_every_checkpoint() {
    let log = Log::new(20, &[10, 20]);
    let (other, _) = CheckpointSigner::generate().unwrap();
    let report = verify_log(log.entries.clone(), &log.checkpoints, &other.public_key());
    assert_eq!(report.problems.len(), 2, "{}", messages(&report));
    assert_eq!(report.verified_tree_size, 0);
}

#[test]
fn report_serializes_with_kind_tags() {
    let mut log = Log::new(50, &[10, 25, 50]);
    log.edit(30, false);
    let report = log.verify();
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["verifiedTreeSize"], 25);
    assert_eq!(json["problems"][0]["kind"], "leafHashMismatch");
    assert_eq!(json["problems"][0]["seq"], 30);
    assert_eq!(json["problems"][1]["kind"], "checkpointRootMismatch");
    assert_eq!(json["problems"][1]["treeSize"], 50);
    assert_eq!(json["problems"][1]["firstSeq"], 25);
}
