//! Network writes in one subscription are serialised, so none can race past the topology
//! validation of another.
//!
//! Every network write validates against the whole subscription's topology (two NICs may not
//! share an address, a NIC needs its subnet, peered address spaces are disjoint, …), so a write
//! that committed after another write's read would store a state the engine never saw: two NIC
//! creates allocating the same address, a subnet removed while a NIC is created in it. Two
//! mechanisms close that window:
//!
//! - **The subscription's topology revision** (correctness, across replicas): a small internal
//!   record per subscription, `/subscriptions/S/providers/strata.network/topologyrevisions/current`,
//!   read *before* the network documents and rewritten by every network write with
//!   `Precondition::Revision` (or `MustNotExist`) of what was read. A write whose view went stale
//!   fails its commit on that record and nothing of it is stored; [`with_retries`] runs the whole
//!   read–validate–commit again, and after [`ATTEMPTS`] tries answers 409
//!   `NetworkChangedConcurrently`. The record's revision is therefore a generation number of the
//!   subscription's network: it moves with every change of it (the change feed carries it).
//! - **A per-subscription lock in the process** (throughput): writes through one replica queue
//!   on it instead of failing and retrying, so in the usual single-replica deployment a network
//!   write never loses a race; the revision check is what holds across replicas.

use std::collections::HashSet;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use serde_json::json;
use strata_store::{Op, Precondition, Record, StoreError};
use strata_types::{ApiError, ResourceId};

/// Lowercase type of the record (not a served resource type: no route reaches it).
pub const TYPE: &str = "strata.network/topologyrevisions";
/// The error code of a write that lost every retry to other network writes.
pub const CONFLICT_CODE: &str = "NetworkChangedConcurrently";
/// Read–validate–commit tries before giving up with 409.
pub const ATTEMPTS: u32 = 8;

const SUFFIX: &str = "/providers/strata.network/topologyrevisions/current";

/// The store key of the topology revision of the subscription `sub_key` (`/subscriptions/s`).
pub fn key(sub_key: &str) -> String {
    format!("{sub_key}{SUFFIX}")
}

/// Whether `key` is a topology revision record.
pub fn is_guard(key: &str) -> bool {
    key.starts_with("/subscriptions/") && key.ends_with(SUFFIX)
}

/// The lowercase subscription key of any id below a subscription.
pub fn subscription_key(id: &ResourceId) -> Result<String, ApiError> {
    let sub = id.subscription_id().ok_or_else(ApiError::internal)?;
    ResourceId::subscription(sub)
        .map(|s| s.key().to_owned())
        .map_err(|_| ApiError::internal())
}

/// The topology revision as read before a write's documents: the write commits only if it is
/// still current.
#[derive(Clone, Debug)]
pub struct Seen {
    sub_key: String,
    /// Revision and write count of the record; `None` before the subscription's first network
    /// write.
    current: Option<(u64, u64)>,
}

impl Seen {
    pub fn read(store: &dyn strata_store::Store, sub_key: &str) -> Result<Seen, StoreError> {
        let rec = store.get(&key(sub_key))?;
        Ok(Seen {
            sub_key: sub_key.to_owned(),
            current: rec.map(|r: Record| (r.revision, writes_in(&r.body))),
        })
    }

    /// The op that writes nothing but fails the batch if another network write committed
    /// since `read`.
    pub fn unchanged(&self) -> Op {
        Op::Assert {
            key: key(&self.sub_key),
            pre: match self.current {
                Some((rev, _)) => Precondition::Revision(rev),
                None => Precondition::MustNotExist,
            },
        }
    }

    /// The op that moves the revision on, conditional on nobody having moved it since `read`.
    pub fn bump(&self) -> Op {
        let (pre, writes) = match self.current {
            Some((rev, writes)) => (Precondition::Revision(rev), writes + 1),
            None => (Precondition::MustNotExist, 1),
        };
        let id = format!(
            "{}/providers/Strata.Network/topologyRevisions/current",
            self.sub_key
        );
        Op::Put {
            key: key(&self.sub_key),
            rtype: TYPE.to_owned(),
            parent: self.sub_key.clone(),
            body: json!({
                "id": id,
                "name": "current",
                "type": "Strata.Network/topologyRevisions",
                "properties": { "networkWrites": writes },
                "systemData": {
                    "createdBy": "strata", "createdAt": "", "lastModifiedBy": "strata",
                    "lastModifiedAt": strata_types::time::now_rfc3339(),
                },
            })
            .to_string(),
            pre,
        }
    }
}

fn writes_in(body: &str) -> u64 {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.pointer("/properties/networkWrites")?.as_u64())
        .unwrap_or(0)
}

/// The API error for a commit that failed on a topology revision record.
pub fn conflict(key: &str) -> ApiError {
    let sub = key.strip_suffix(SUFFIX).unwrap_or(key);
    ApiError::conflict(
        CONFLICT_CODE,
        format!(
            "other network writes in subscription '{sub}' kept committing while this one was validated ({ATTEMPTS} tries); nothing was changed, send the request again"
        ),
    )
}

/// Per-subscription locks of this process.
#[derive(Default)]
pub struct Locks {
    held: Mutex<HashSet<String>>,
    freed: Condvar,
}

/// Holds a subscription's lock until dropped.
pub struct Held<'a> {
    locks: &'a Locks,
    sub_key: String,
}

impl Locks {
    pub fn lock(&self, sub_key: &str) -> Held<'_> {
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while held.contains(sub_key) {
            held = self
                .freed
                .wait(held)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        held.insert(sub_key.to_owned());
        Held {
            locks: self,
            sub_key: sub_key.to_owned(),
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut held = self
            .locks
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        held.remove(&self.sub_key);
        self.locks.freed.notify_all();
    }
}

/// Runs a network write (read, validate, commit with [`Seen::bump`]) under the subscription's
/// lock, again from the start when its commit lost to another replica's network write.
pub fn with_retries<T>(
    locks: &Locks,
    sub_key: &str,
    mut write: impl FnMut() -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    let _held = locks.lock(sub_key);
    let mut attempt = 1;
    loop {
        match write() {
            Err(e) if e.code == CONFLICT_CODE && attempt < ATTEMPTS => {
                // Another replica is writing this network: back off, exponentially with jitter.
                let base = 1u64 << attempt.min(6);
                let jitter = u64::from(rand_byte()) % base;
                std::thread::sleep(Duration::from_millis(base + jitter));
                attempt += 1;
            }
            other => return other,
        }
    }
}

fn rand_byte() -> u8 {
    let mut b = [0u8; 1];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    b[0]
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_store::{Batch, SqliteStore, Store};

    #[test]
    fn a_write_from_a_stale_view_fails_on_the_revision_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
        let sub = "/subscriptions/s1";
        let commit = |op: Op| {
            store.commit(Batch {
                ops: vec![op],
                audit: vec![],
            })
        };
        // Two writers read the same (absent) revision; the second to commit loses.
        let a = Seen::read(&store, sub).unwrap();
        let b = Seen::read(&store, sub).unwrap();
        commit(a.bump()).unwrap();
        match commit(b.bump()) {
            Err(StoreError::Precondition { key: k, .. }) => {
                assert!(is_guard(&k), "{k}");
                assert_eq!(conflict(&k).status, 409);
                assert!(conflict(&k).message.contains("/subscriptions/s1'"));
            }
            other => panic!("{other:?}"),
        }
        // Re-read: it goes through, and the count of writes moves on.
        let c = Seen::read(&store, sub).unwrap();
        commit(c.bump()).unwrap();
        let rec = store.get(&key(sub)).unwrap().unwrap();
        assert_eq!(writes_in(&rec.body), 2);
        assert!(!is_guard("/subscriptions/s1/resourcegroups/rg"));
    }

    #[test]
    fn retries_only_lost_races_and_gives_up_with_409() {
        let locks = Locks::default();
        let mut tries = 0;
        let out: Result<(), ApiError> = with_retries(&locks, "/subscriptions/s", || {
            tries += 1;
            Err(conflict(&key("/subscriptions/s")))
        });
        assert_eq!(tries, ATTEMPTS);
        assert_eq!(out.unwrap_err().code, CONFLICT_CODE);
        let mut tries = 0;
        let out = with_retries(&locks, "/subscriptions/s", || {
            tries += 1;
            if tries < 3 {
                Err(conflict(&key("/subscriptions/s")))
            } else {
                Ok(tries)
            }
        });
        assert_eq!(out.unwrap(), 3);
        let out: Result<(), ApiError> = with_retries(&locks, "/subscriptions/s", || {
            Err(ApiError::bad_request("X", "no retry"))
        });
        assert_eq!(out.unwrap_err().code, "X");
    }
}
