//! Which host each VM is on, kept current from the store's change feed so that placement and
//! a host's assignment list cost O(changes since the last look) rather than a scan of every VM.
//!
//! INVARIANT: the change feed is gap-free and ordered (both stores serialise commits), so
//! applying `changes_since(revision)` in order reproduces the table's current state.
//!
//! The same feed says when a subscription's network last changed (`network_revision`), so
//! the hosts' assignments (`door::assigned`) reuse a subscription's topology until then
//! instead of reading the subscription on every poll of every host.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

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
    /// Subscription key → revision of the last network change seen (0: none since loading).
    net_changed: HashMap<String, u64>,
    /// Subscription key → its network as last read, with the `net_changed` it was read at.
    networks: HashMap<String, (u64, Arc<SubscriptionNetwork>)>,
}

/// A subscription's network documents and their topology, as the assignments need them.
#[derive(Debug)]
pub struct SubscriptionNetwork {
    pub topology: strata_netpol::Topology,
    pub docs: Vec<crate::docs::Doc>,
}

/// `/subscriptions/{sub}` of a store key below a subscription.
fn subscription_of(key: &str) -> Option<String> {
    key.starts_with("/subscriptions/")
        .then(|| key.split('/').take(3).collect::<Vec<_>>().join("/"))
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
                } else if crate::network::KINDS
                    .iter()
                    .any(|k| k.type_key() == change.rtype)
                    && let Some(sub) = subscription_of(&change.key)
                {
                    self.net_changed.insert(sub, change.revision);
                }
            }
            self.revision = last;
        }
    }

    /// The revision of the last change to the network of subscription `sub_key` since the
    /// index loaded (0: none).
    pub fn network_revision(&self, sub_key: &str) -> u64 {
        self.net_changed.get(sub_key).copied().unwrap_or(0)
    }

    /// The subscription's network as cached, if it was read at `revision`.
    pub fn network(&self, sub_key: &str, revision: u64) -> Option<Arc<SubscriptionNetwork>> {
        self.networks
            .get(sub_key)
            .filter(|(at, _)| *at == revision)
            .map(|(_, n)| n.clone())
    }

    /// Keeps the subscription's network, read at `revision` (read after the index was
    /// refreshed to it: a later change moves the revision on and the entry is read again).
    pub fn keep_network(&mut self, sub_key: &str, revision: u64, net: Arc<SubscriptionNetwork>) {
        self.networks.insert(sub_key.to_owned(), (revision, net));
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

    #[test]
    fn a_network_change_moves_its_subscriptions_network_revision() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
        let mut index = VmIndex::default();
        index.refresh(&store).unwrap();
        assert_eq!(index.network_revision("/subscriptions/s"), 0);
        let net = Arc::new(SubscriptionNetwork {
            topology: Default::default(),
            docs: vec![],
        });
        index.keep_network("/subscriptions/s", 0, net);
        assert!(index.network("/subscriptions/s", 0).is_some());
        put(&store, "a", Some("h1")); // a VM: not a network change
        index.refresh(&store).unwrap();
        assert_eq!(index.network_revision("/subscriptions/s"), 0);
        store
            .commit(Batch {
                ops: vec![Op::Put {
                    key: format!("{RG}/providers/strata.network/networksecuritygroups/n"),
                    rtype: Kind::NetworkSecurityGroup.type_key(),
                    parent: RG.into(),
                    body: "{}".into(),
                    pre: Precondition::None,
                }],
                audit: vec![],
            })
            .unwrap();
        index.refresh(&store).unwrap();
        let revision = index.network_revision("/subscriptions/s");
        assert!(revision > 0);
        assert!(index.network("/subscriptions/s", revision).is_none());
        assert_eq!(index.network_revision("/subscriptions/other"), 0);
    }
}
