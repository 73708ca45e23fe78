//! Offline verification of a stored audit log against its signed checkpoints.
//!
//! One streaming pass: entries (in ascending stored `seq` order) are checked
//! individually and their recomputed leaf hashes appended to a [`CompactTree`];
//! whenever the tree reaches a checkpoint's size, the checkpoint's root is
//! compared with the recomputed root.

use std::fmt;

use serde::Serialize;

use crate::checkpoint::{SignedCheckpoint, verify_checkpoint};
use crate::entry::AuditEntry;
use crate::merkle::{CompactTree, Hash, empty_root, leaf_hash};

/// One entry as read back from storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEntry {
    /// The position the store holds the entry at.
    pub seq: u64,
    /// The entry bytes exactly as stored.
    pub entry_json: Vec<u8>,
    /// The leaf hash stored alongside the entry.
    pub stored_leaf_hash: Hash,
}

/// The outcome of [`verify_log`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyReport {
    /// Number of stored entries read.
    pub entries: u64,
    /// Number of checkpoints supplied.
    pub checkpoints: u64,
    /// Everything wrong with the log; empty if and only if the log verifies.
    pub problems: Vec<Problem>,
    /// The largest checkpointed tree size whose signature and root verified
    /// against the entries (0 if none).
    pub verified_tree_size: u64,
}

impl VerifyReport {
    /// True when no problem was found.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// One thing wrong with a stored log. `Display` gives a human sentence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(
    tag = "kind",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum Problem {
    /// The stored bytes are not a valid [`AuditEntry`].
    Unparseable { seq: u64, error: String },
    /// The entry stored at `seq` says it belongs at `claimed_seq`.
    Reordered { seq: u64, claimed_seq: u64 },
    /// Entries `first_seq..=last_seq` are missing.
    Gap { first_seq: u64, last_seq: u64 },
    /// `seq` is stored more than once.
    Duplicate { seq: u64 },
    /// `seq` comes after the larger `after_seq` in the stored order.
    OutOfOrder { seq: u64, after_seq: u64 },
    /// The stored bytes do not hash to the stored leaf hash.
    LeafHashMismatch { seq: u64 },
    /// The checkpoint's signature is invalid (forged, altered or another key).
    CheckpointSignature { tree_size: u64, error: String },
    /// The checkpoint's root differs from the root recomputed from the entries;
    /// the change is among entries `first_seq..=last_seq` (those after the last
    /// verified checkpoint).
    CheckpointRootMismatch {
        tree_size: u64,
        first_seq: u64,
        last_seq: u64,
    },
    /// A checkpoint covers more entries than the log holds.
    Truncated { tree_size: u64, log_size: u64 },
    /// A checkpoint cannot be checked because the entry sequence breaks at `missing_seq`.
    CheckpointUnverifiable { tree_size: u64, missing_seq: u64 },
    /// The checkpoint disagrees with a larger checkpoint that verified against the entries.
    InconsistentCheckpoints {
        tree_size: u64,
        later_tree_size: u64,
    },
    /// Two validly signed checkpoints of the same size have different roots.
    CheckpointFork { tree_size: u64 },
    /// A larger checkpoint has an earlier timestamp than a smaller one.
    CheckpointTimeRegression {
        tree_size: u64,
        timestamp: i64,
        earlier_tree_size: u64,
        earlier_timestamp: i64,
    },
    /// A checkpoint names a different log than the others.
    CheckpointOrigin {
        tree_size: u64,
        origin: String,
        expected: String,
    },
}

fn seq_range(first: u64, last: u64) -> String {
    if first == last {
        format!("entry {first}")
    } else {
        format!("entries {first} to {last}")
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unparseable { seq, error } => {
                write!(
                    f,
                    "entry {seq}: stored bytes are not a valid audit entry ({error})"
                )
            }
            Self::Reordered { seq, claimed_seq } => write!(
                f,
                "entry {seq}: stored at position {seq} but its content says seq {claimed_seq} (entries were reordered)"
            ),
            Self::Gap {
                first_seq,
                last_seq,
            } => write!(
                f,
                "{} missing from the log (removed)",
                if first_seq == last_seq {
                    format!("entry {first_seq} is")
                } else {
                    format!("entries {first_seq} to {last_seq} are")
                }
            ),
            Self::Duplicate { seq } => write!(f, "entry {seq} is stored more than once"),
            Self::OutOfOrder { seq, after_seq } => write!(
                f,
                "entry {seq} is stored after entry {after_seq} (entries are out of order)"
            ),
            Self::LeafHashMismatch { seq } => write!(
                f,
                "entry {seq}: stored bytes do not match the stored leaf hash (entry was edited)"
            ),
            Self::CheckpointSignature { tree_size, error } => write!(
                f,
                "checkpoint at tree size {tree_size}: signature is invalid ({error}); the checkpoint is forged or altered"
            ),
            Self::CheckpointRootMismatch { tree_size: 0, .. } => write!(
                f,
                "checkpoint at tree size 0 does not carry the empty-tree root"
            ),
            Self::CheckpointRootMismatch {
                tree_size,
                first_seq,
                last_seq,
            } => write!(
                f,
                "checkpoint at tree size {tree_size}: root does not match the entries; {} changed after it was signed",
                if first_seq == last_seq {
                    format!("entry {first_seq}")
                } else {
                    format!("at least one of entries {first_seq} to {last_seq} was")
                }
            ),
            Self::Truncated {
                tree_size,
                log_size,
            } => write!(
                f,
                "checkpoint at tree size {tree_size} but the log ends after {log_size} entries: {} removed from the end (truncated)",
                seq_range(*log_size, tree_size.saturating_sub(1))
            ),
            Self::CheckpointUnverifiable {
                tree_size,
                missing_seq,
            } => write!(
                f,
                "checkpoint at tree size {tree_size} cannot be verified: the entry sequence breaks at entry {missing_seq}"
            ),
            Self::InconsistentCheckpoints {
                tree_size,
                later_tree_size,
            } => write!(
                f,
                "checkpoint at tree size {tree_size} is inconsistent with the verified checkpoint at tree size {later_tree_size} (the log history forked)"
            ),
            Self::CheckpointFork { tree_size } => write!(
                f,
                "validly signed checkpoints at tree size {tree_size} have different roots (the log history forked)"
            ),
            Self::CheckpointTimeRegression {
                tree_size,
                timestamp,
                earlier_tree_size,
                earlier_timestamp,
            } => write!(
                f,
                "checkpoint at tree size {tree_size} has timestamp {timestamp}, earlier than {earlier_timestamp} of the smaller checkpoint at tree size {earlier_tree_size}"
            ),
            Self::CheckpointOrigin {
                tree_size,
                origin,
                expected,
            } => write!(
                f,
                "checkpoint at tree size {tree_size} is for log {origin:?}, not {expected:?}"
            ),
        }
    }
}

/// Verifies a stored log offline.
///
/// `entries` must be supplied in the order the store holds them (ascending
/// `seq`); deviations are reported. `checkpoints` may be in any order. Every
/// checkpoint must be signed by `public_key` (raw 32-byte Ed25519).
pub fn verify_log(
    entries: impl IntoIterator<Item = StoredEntry>,
    checkpoints: &[SignedCheckpoint],
    public_key: &[u8],
) -> VerifyReport {
    let mut problems = Vec::new();

    // Checkpoints: signatures first; only validly signed ones are used further.
    let mut valid: Vec<&SignedCheckpoint> = Vec::new();
    let mut sorted: Vec<&SignedCheckpoint> = checkpoints.iter().collect();
    sorted.sort_by_key(|c| (c.checkpoint.tree_size, c.checkpoint.timestamp));
    for c in sorted {
        match verify_checkpoint(public_key, c) {
            Ok(()) => valid.push(c),
            Err(e) => problems.push(Problem::CheckpointSignature {
                tree_size: c.checkpoint.tree_size,
                error: e.to_string(),
            }),
        }
    }
    check_checkpoints_agree(&valid, &mut problems);

    let mut state = Pass {
        tree: CompactTree::new(),
        pending: &valid,
        last_verified: 0,
        verified_any: false,
        mismatches: Vec::new(),
    };
    state.check_due_checkpoints();

    let mut count: u64 = 0;
    let mut max_seq: Option<u64> = None;
    let mut broken_at: Option<u64> = None;

    for e in entries {
        count += 1;
        let seq = e.seq;

        // Sequence of stored positions.
        match max_seq {
            Some(prev) if seq == prev => problems.push(Problem::Duplicate { seq }),
            Some(prev) if seq < prev => problems.push(Problem::OutOfOrder {
                seq,
                after_seq: prev,
            }),
            _ => {
                let expected = max_seq.map_or(0, |p| p.saturating_add(1));
                if seq > expected {
                    problems.push(Problem::Gap {
                        first_seq: expected,
                        last_seq: seq - 1,
                    });
                }
            }
        }
        max_seq = Some(max_seq.map_or(seq, |p| p.max(seq)));

        // Content.
        let recomputed = leaf_hash(&e.entry_json);
        match serde_json::from_slice::<AuditEntry>(&e.entry_json) {
            Err(err) => problems.push(Problem::Unparseable {
                seq,
                error: err.to_string(),
            }),
            Ok(parsed) if parsed.seq != seq => problems.push(Problem::Reordered {
                seq,
                claimed_seq: parsed.seq,
            }),
            Ok(_) => {}
        }
        if recomputed != e.stored_leaf_hash {
            problems.push(Problem::LeafHashMismatch { seq });
        }

        // Tree: only entries at their expected position can be placed.
        if broken_at.is_none() {
            let size = state.tree.size();
            if seq == size {
                state.tree.append(recomputed);
                state.check_due_checkpoints();
            } else if seq > size {
                broken_at = Some(size);
            }
            // seq < size: a repeat of a placed position; the first copy stands.
        }
    }

    let log_size = max_seq.map_or(0, |s| s.saturating_add(1));
    for c in state.pending {
        let tree_size = c.checkpoint.tree_size;
        if tree_size > log_size {
            problems.push(Problem::Truncated {
                tree_size,
                log_size,
            });
        } else {
            problems.push(Problem::CheckpointUnverifiable {
                tree_size,
                missing_seq: broken_at.unwrap_or(state.tree.size()),
            });
        }
    }

    let verified_tree_size = state.last_verified;
    for (tree_size, first_seq, last_seq) in state.mismatches {
        if state.verified_any && verified_tree_size > tree_size {
            problems.push(Problem::InconsistentCheckpoints {
                tree_size,
                later_tree_size: verified_tree_size,
            });
        } else {
            problems.push(Problem::CheckpointRootMismatch {
                tree_size,
                first_seq,
                last_seq,
            });
        }
    }

    VerifyReport {
        entries: count,
        checkpoints: checkpoints.len() as u64,
        problems,
        verified_tree_size,
    }
}

struct Pass<'a> {
    tree: CompactTree,
    /// Validly signed checkpoints not yet reached, sorted by tree size.
    pending: &'a [&'a SignedCheckpoint],
    last_verified: u64,
    verified_any: bool,
    /// (tree size, first seq, last seq) of checkpoints whose root did not match.
    mismatches: Vec<(u64, u64, u64)>,
}

impl Pass<'_> {
    /// Checks every pending checkpoint whose size equals the current tree size.
    fn check_due_checkpoints(&mut self) {
        let size = self.tree.size();
        let due = self
            .pending
            .iter()
            .take_while(|c| c.checkpoint.tree_size <= size)
            .count();
        if due == 0 {
            return;
        }
        let (now, rest) = self.pending.split_at(due);
        self.pending = rest;
        let root = if size == 0 {
            empty_root()
        } else {
            self.tree.root()
        };
        let mut any = false;
        for c in now {
            if c.checkpoint.root_hash == root {
                any = true;
            } else {
                self.mismatches.push((
                    size,
                    self.last_verified.min(size.saturating_sub(1)),
                    size.saturating_sub(1),
                ));
            }
        }
        if any {
            self.last_verified = size;
            self.verified_any = true;
        }
    }
}

/// Checks that validly signed checkpoints agree with each other regardless of the entries.
fn check_checkpoints_agree(valid: &[&SignedCheckpoint], problems: &mut Vec<Problem>) {
    let Some(first) = valid.first() else {
        return;
    };
    let origin = &first.checkpoint.origin;
    for c in valid {
        if c.checkpoint.origin != *origin {
            problems.push(Problem::CheckpointOrigin {
                tree_size: c.checkpoint.tree_size,
                origin: c.checkpoint.origin.clone(),
                expected: origin.clone(),
            });
        }
    }
    for pair in valid.windows(2) {
        let (a, b) = (&pair[0].checkpoint, &pair[1].checkpoint);
        if a.tree_size == b.tree_size && a.root_hash != b.root_hash {
            // Report each forked size once.
            let already = problems.iter().any(
                |p| matches!(p, Problem::CheckpointFork { tree_size } if *tree_size == a.tree_size),
            );
            if !already {
                problems.push(Problem::CheckpointFork {
                    tree_size: a.tree_size,
                });
            }
        }
    }
    // Timestamps must not go backwards as the tree grows.
    let mut latest: Option<(u64, i64)> = None;
    for c in valid {
        let cp = &c.checkpoint;
        if let Some((size, ts)) = latest
            && cp.tree_size > size
            && cp.timestamp < ts
        {
            problems.push(Problem::CheckpointTimeRegression {
                tree_size: cp.tree_size,
                timestamp: cp.timestamp,
                earlier_tree_size: size,
                earlier_timestamp: ts,
            });
            continue;
        }
        if latest.is_none_or(|(_, ts)| cp.timestamp >= ts) {
            latest = Some((cp.tree_size, cp.timestamp));
        }
    }
}
