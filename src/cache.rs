//! The snapshot cache: the latest snapshot per node type, and the only thing that pushes.
//!
//! Each node type has a `watch` channel. Publishing a snapshot with new content replaces the
//! channel's value and wakes the streams of that node type; each stream then sends only the
//! types whose version differs from what it sent. A `watch` keeps only the newest value, so a
//! slow stream that misses three publishes sends the fourth and never queues the others, and the
//! publisher never waits for any stream.

mod node_type;
mod status;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, RwLock};

use envoy_types::pb::envoy::config::core::v3::Node;
use tokio::sync::watch;

pub use node_type::{NodeTypeResolver, NodeTypeSource};
pub use status::{Counters, Nack, StatusRegistry, StreamStatus, TypeStatus};

use crate::snapshot::{InconsistentSnapshot, ResourceType, Snapshot};

/// A node type's current snapshot; `None` until the first publish.
pub type SnapshotWatch = watch::Receiver<Option<Arc<Snapshot>>>;

/// What a publish did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    /// Same content as the current snapshot: nothing was pushed.
    Unchanged,
    /// New content: these types changed (all types for a node type's first snapshot).
    Changed(Vec<ResourceType>),
}

/// Per-node-type snapshots, node-type resolution and the stream status registry: the read
/// handle that the server, the admin views and CSDS get.
///
/// A cheap handle: clones share the same cache. Publishing takes the [`Publisher`], of which
/// there is one.
#[derive(Debug, Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    // RwLock: the map changes only when a node type appears; every publish and every stream
    // start only reads it.
    slots: RwLock<BTreeMap<String, watch::Sender<Option<Arc<Snapshot>>>>>,
    resolver: NodeTypeResolver,
    status: StatusRegistry,
    unknown_logged: Mutex<BTreeSet<String>>,
}

/// The one handle that publishes snapshots into a [`Cache`]: not `Clone`, so whoever holds it
/// (the daemon's synthesis stage) is the only source of pushes.
#[derive(Debug)]
pub struct Publisher {
    cache: Cache,
}

impl Publisher {
    /// Publishes `snapshot` for `node_type` after checking its consistency.
    ///
    /// Identical content (equal versions for every type) changes nothing and wakes nobody.
    pub fn publish(
        &self,
        node_type: &str,
        snapshot: Snapshot,
    ) -> Result<Published, InconsistentSnapshot> {
        snapshot.check_consistency()?;
        let snapshot = Arc::new(snapshot);
        let sender = self.cache.slot(node_type);
        let mut outcome = Published::Unchanged;
        sender.send_if_modified(|current| {
            let changed: Vec<ResourceType> = ResourceType::ALL
                .into_iter()
                .filter(|&ty| {
                    current
                        .as_ref()
                        .is_none_or(|c| c.version(ty) != snapshot.version(ty))
                })
                .collect();
            if changed.is_empty() {
                return false;
            }
            *current = Some(snapshot.clone());
            outcome = Published::Changed(changed);
            true
        });
        if let Published::Changed(types) = &outcome {
            tracing::debug!(node_type, ?types, "published snapshot");
        }
        Ok(outcome)
    }

    /// The cache this publishes into.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }
}

impl Cache {
    /// An empty cache resolving node types with `resolver`, and its publisher.
    pub fn new(resolver: NodeTypeResolver) -> (Cache, Publisher) {
        let cache = Cache {
            inner: Arc::new(Inner {
                slots: RwLock::default(),
                resolver,
                status: StatusRegistry::default(),
                unknown_logged: Mutex::default(),
            }),
        };
        let publisher = Publisher {
            cache: cache.clone(),
        };
        (cache, publisher)
    }

    /// The current snapshot of a node type.
    pub fn snapshot(&self, node_type: &str) -> Option<Arc<Snapshot>> {
        let slots = self.inner.slots.read().unwrap();
        slots.get(node_type).and_then(|s| s.borrow().clone())
    }

    /// Node types that have a snapshot.
    pub fn node_types(&self) -> Vec<String> {
        let slots = self.inner.slots.read().unwrap();
        slots
            .iter()
            .filter(|(_, s)| s.borrow().is_some())
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Resolves the node type of an Envoy node, applying the configured fallback.
    pub fn resolve_node_type(&self, node: &Node) -> String {
        self.inner
            .resolver
            .resolve(node, |ty| self.snapshot(ty).is_some())
    }

    /// Watches a node type's snapshot. A node type nobody has published yet is logged once; its
    /// streams wait until it is published.
    pub fn watch(&self, node_type: &str) -> SnapshotWatch {
        let rx = self.slot(node_type).subscribe();
        if rx.borrow().is_none()
            && self
                .inner
                .unknown_logged
                .lock()
                .unwrap()
                .insert(node_type.into())
        {
            tracing::warn!(
                node_type,
                "an Envoy asked for a node type with no snapshot; it waits until one is published"
            );
        }
        rx
    }

    /// What every stream has been sent, ACKed and rejected.
    pub fn status(&self) -> &StatusRegistry {
        &self.inner.status
    }

    fn slot(&self, node_type: &str) -> watch::Sender<Option<Arc<Snapshot>>> {
        if let Some(sender) = self.inner.slots.read().unwrap().get(node_type) {
            return sender.clone();
        }
        let mut slots = self.inner.slots.write().unwrap();
        slots
            .entry(node_type.to_owned())
            .or_insert_with(|| watch::channel(None).0)
            .clone()
    }
}

#[cfg(test)]
mod tests;
