//! Which host each VM is on, kept current from the store's change feed so that placement and
//! a host's assignment list cost O(changes since the last look) rather than a scan of every VM.
//!
//! INVARIANT: the change feed is gap-free and ordered (both stores serialise commits), so
//! applying `changes_since(revision)` in order reproduces the table's current state.

use std::collections::{BTreeSet, HashMap};

use strata_store::{Store, StoreError};

use crate::kinds::Kind;

/// How many changes one feed read returns.
const PAGE: usize = 1000;

#[derive(Debug, Default)]
pub struct VmIndex {
    loaded: bool,
    /// The last revision applied.
    revision: u64,
    host_of: HashMap<String, String>,
    on_host: HashMap<String, BTreeSet<String>>,
}

/// The `host` property of a stored VM document, if it is placed.
fn host_in(body: &str) -> Option<String> {
    let doc: serde_json::Value = serde_json::from_str(body).ok()?;
    doc.pointer("/properties/host")?.as_str().map(str::to_owned)
}

impl VmIndex {
    fn set(&mut self, key: &str, host: Option<String>) {
        if let Some(old) = self.host_of.remove(key)
            && let Some(set) = self.on_host.get_mut(&old)
        {
            set.remove(key);
            if set.is_empty() {
                self.on_host.remove(&old);
            }
        }
        if let Some(h) = host {
            self.on_host
                .entry(h.clone())
                .or_default()
                .insert(key.to_owned());
            self.host_of.insert(key.to_owned(), h);
        }
    }

    /// Brings the index up to the store's current revision.
    pub fn refresh(&mut self, store: &dyn Store) -> Result<(), StoreError> {
        let vm_type = Kind::VirtualMachine.type_key();
        if !self.loaded {
            // Revision first: changes committed during the scan are applied again below,
            // which is harmless (each change sets a VM's host outright).
            let revision = store.revision()?;
            for rec in store.list_type(&vm_type)? {
                let host = host_in(&rec.body);
                self.set(&rec.key, host);
            }
            self.revision = revision;
            self.loaded = true;
        }
        loop {
            let changes = store.changes_since(self.revision, PAGE)?;
            let Some(last) = changes.last().map(|c| c.revision) else {
                return Ok(());
            };
            for change in changes {
                if change.rtype == vm_type {
                    let host = change.body.as_deref().and_then(host_in);
                    self.set(&change.key, host);
                }
            }
            self.revision = last;
        }
    }

    /// How many VMs are placed on `host`.
    pub fn count(&self, host: &str) -> usize {
        self.on_host.get(host).map_or(0, BTreeSet::len)
    }

    /// The keys of the VMs placed on `host`, in key order.
    pub fn on(&self, host: &str) -> Vec<String> {
        self.on_host
            .get(host)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_store::{Batch, Op, Precondition, SqliteStore};

    const RG: &str = "/subscriptions/s/resourcegroups/rg";

    fn put(store: &SqliteStore, name: &str, host: Option<&str>) {
        let key = format!("{RG}/providers/strata.compute/virtualmachines/{name}");
        let body = serde_json::json!({ "properties": { "host": host } }).to_string();
        store
            .commit(Batch {
                ops: vec![Op::Put {
                    key,
                    rtype: Kind::VirtualMachine.type_key(),
                    parent: RG.into(),
                    body,
                    pre: Precondition::None,
                }],
                audit: vec![],
            })
            .unwrap();
    }

    #[test]
    fn follows_creates_moves_deallocations_and_tree_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
        put(&store, "a", Some("h1"));
        let mut index = VmIndex::default();
        index.refresh(&store).unwrap();
        assert_eq!((index.count("h1"), index.count("h2")), (1, 0));
        put(&store, "b", Some("h1"));
        put(&store, "c", Some("h2"));
        put(&store, "a", Some("h2")); // moved
        put(&store, "b", None); // deallocated
        index.refresh(&store).unwrap();
        assert_eq!((index.count("h1"), index.count("h2")), (0, 2));
        assert_eq!(index.on("h2").len(), 2);
        store
            .commit(Batch {
                ops: vec![Op::DeleteTree { key: RG.into() }],
                audit: vec![],
            })
            .unwrap();
        index.refresh(&store).unwrap();
        assert_eq!(index.count("h2"), 0);
        assert!(index.on("h2").is_empty());
    }
}
