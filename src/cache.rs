//! The snapshot cache: the latest snapshot per node type (and per place: a zone or a region
//! whose Envoys get some endpoints first), and the only thing that pushes.
//!
//! Each (node type, zone, region) that a stream asks for has a `watch` channel; "" is an Envoy
//! that states none. Publishing a snapshot with new content replaces the channel's value and wakes
//! the streams on it; each stream then sends only the types whose version differs from what it
//! sent. A `watch` keeps only the newest value, so a slow stream that misses three publishes
//! sends the fourth and never queues the others, and the publisher never waits for any stream.
//!
//! An Envoy is served its zone's snapshot, else its region's, else the node type's plain one (a
//! publish has a snapshot only for the places whose priorities differ); streams in one place
//! share one snapshot, computed once.
//!
//! Channels are keyed by the Envoy's service too ("" for none): a service that declares its
//! backends gets its backend set's snapshot, any other the node type's whole scope. The key is
//! the service, not the set, so a stream never changes channels: when a service's declaration
//! changes, the next publish puts the other set's snapshot on its channel.

mod denials;
mod node_type;
mod status;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, RwLock};

use envoy_types::pb::envoy::config::core::v3::Node;
use tokio::sync::watch;

pub use denials::{DenialCounts, ShadowDenials, MAX_CALLERS, MAX_SERVICES, OTHER};
pub use node_type::{service_of, NodeTypeResolver, NodeTypeSource, SERVICE_METADATA_KEY};
pub use status::{Counters, Nack, NotFound, StatusRegistry, StreamStatus, TypeStatus};

use crate::snapshot::{InconsistentSnapshot, ResourceType, Snapshot};

/// A node type's current snapshot for one place; `None` until the first publish.
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
    // One lock over both maps: a stream's new channel starts from the latest publish, and a
    // publish reaches every channel, so neither can slip between the other's two steps. Both
    // are short and rare (a publish per inventory change, a channel per new zone), and every
    // other access only reads.
    state: RwLock<State>,
    resolver: NodeTypeResolver,
    status: StatusRegistry,
    unknown_logged: Mutex<BTreeSet<String>>,
}

/// Where an Envoy is served: the zone and region it is served in ("" for none), as
/// `serve::peer` decides them (a verified certificate's, else the node's claim).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    pub zone: String,
    pub region: String,
}

impl Location {
    /// In `zone`, of no stated region.
    pub fn zone(zone: &str) -> Location {
        Location {
            zone: zone.to_owned(),
            region: String::new(),
        }
    }
}

/// (node type, service, location).
type ChannelKey = (String, String, Location);

#[derive(Debug, Default)]
struct State {
    /// By (node type, service, location).
    channels: BTreeMap<ChannelKey, watch::Sender<Option<Arc<Snapshot>>>>,
    /// The latest publish of each node type.
    published: BTreeMap<String, NodeSnapshots>,
}

/// What one publish gives a node type.
#[derive(Debug)]
pub struct NodeTypeSnapshots {
    /// The whole scope, for an Envoy in no place of its own.
    pub plain: Snapshot,
    /// The whole scope by place (zone or region name).
    pub places: BTreeMap<String, Snapshot>,
    /// By backend set key: that set's snapshot, and by place.
    pub backend_sets: BTreeMap<String, (Snapshot, BTreeMap<String, Snapshot>)>,
    /// By service (what an Envoy states as its own): its backend set's key.
    pub callers: BTreeMap<String, String>,
}

impl NodeTypeSnapshots {
    /// Just the whole scope, for every Envoy.
    pub fn plain(plain: Snapshot) -> Self {
        NodeTypeSnapshots {
            plain,
            places: BTreeMap::new(),
            backend_sets: BTreeMap::new(),
            callers: BTreeMap::new(),
        }
    }
}

/// A plain snapshot and those of places by place.
#[derive(Debug, Clone)]
struct Placed {
    plain: Arc<Snapshot>,
    places: BTreeMap<String, Arc<Snapshot>>,
}

impl Placed {
    fn new(plain: Snapshot, places: BTreeMap<String, Snapshot>) -> Placed {
        Placed {
            plain: Arc::new(plain),
            places: places.into_iter().map(|(p, s)| (p, Arc::new(s))).collect(),
        }
    }

    /// The zone's snapshot, else the region's, else the plain one: the zone's, when it has
    /// one, already puts its region first (see `synthesize`'s `places.rs`).
    fn at(&self, location: &Location) -> &Arc<Snapshot> {
        let place = |name: &str| (!name.is_empty()).then(|| self.places.get(name)).flatten();
        (place(&location.zone).or_else(|| place(&location.region))).unwrap_or(&self.plain)
    }
}

/// One node type's published snapshots.
#[derive(Debug, Clone)]
struct NodeSnapshots {
    whole: Placed,
    sets: BTreeMap<String, Placed>,
    callers: BTreeMap<String, String>,
}

impl NodeSnapshots {
    fn for_service(&self, service: &str) -> &Placed {
        let set = self.callers.get(service).and_then(|key| self.sets.get(key));
        set.unwrap_or(&self.whole)
    }
}

/// The one handle that publishes snapshots into a [`Cache`]: not `Clone`, so whoever holds it
/// (the daemon's synthesis stage) is the only source of pushes.
#[derive(Debug)]
pub struct Publisher {
    cache: Cache,
}

impl Cache {
    /// An empty cache resolving node types with `resolver`, and its publisher.
    pub fn new(resolver: NodeTypeResolver) -> (Cache, Publisher) {
        let cache = Cache {
            inner: Arc::new(Inner {
                state: RwLock::default(),
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

    /// The current plain snapshot of a node type (what an Envoy stating no place gets).
    pub fn snapshot(&self, node_type: &str) -> Option<Arc<Snapshot>> {
        self.snapshot_in(node_type, "")
    }

    /// The current snapshot of a node type for an Envoy in `zone` (of no stated region).
    pub fn snapshot_in(&self, node_type: &str, zone: &str) -> Option<Arc<Snapshot>> {
        self.snapshot_for(node_type, "", &Location::zone(zone))
    }

    /// The current snapshot of a node type for an Envoy of `service` ("" for none) at
    /// `location`.
    pub fn snapshot_for(
        &self,
        node_type: &str,
        service: &str,
        location: &Location,
    ) -> Option<Arc<Snapshot>> {
        let state = self.inner.state.read().unwrap();
        let published = state.published.get(node_type)?;
        Some(published.for_service(service).at(location).clone())
    }

    /// The backend set (its key) the Envoys of `service` are on; `None`: the whole scope.
    pub fn backend_set(&self, node_type: &str, service: &str) -> Option<String> {
        let state = self.inner.state.read().unwrap();
        let published = state.published.get(node_type)?;
        let key = published.callers.get(service)?;
        published.sets.contains_key(key).then(|| key.clone())
    }

    /// How many backend sets a node type has snapshots of.
    pub fn backend_set_count(&self, node_type: &str) -> usize {
        let state = self.inner.state.read().unwrap();
        state.published.get(node_type).map_or(0, |p| p.sets.len())
    }

    /// The places (zones and regions) a node type has snapshots of their own for.
    pub fn places(&self, node_type: &str) -> Vec<String> {
        let state = self.inner.state.read().unwrap();
        let places = state
            .published
            .get(node_type)
            .map(|p| p.whole.places.keys());
        places.into_iter().flatten().cloned().collect()
    }

    /// Node types that have a snapshot.
    pub fn node_types(&self) -> Vec<String> {
        let state = self.inner.state.read().unwrap();
        state.published.keys().cloned().collect()
    }

    /// How node types are read ([`NodeTypeResolver::describe`]).
    pub fn node_type_rule(&self) -> String {
        self.inner.resolver.describe()
    }

    /// Resolves the node type of an Envoy node, applying the configured fallback.
    pub fn resolve_node_type(&self, node: &Node) -> String {
        self.inner
            .resolver
            .resolve(node, |ty| self.snapshot(ty).is_some())
    }

    /// Watches a node type's snapshot for an Envoy of `service` ("" for none) at `location`.
    /// A node type nobody has published yet is logged once; its streams wait until it is
    /// published.
    pub fn watch(&self, node_type: &str, service: &str, location: &Location) -> SnapshotWatch {
        let key = (node_type.to_owned(), service.to_owned(), location.clone());
        let existing = self
            .inner
            .state
            .read()
            .unwrap()
            .channels
            .get(&key)
            .map(|s| s.subscribe());
        let rx = existing.unwrap_or_else(|| {
            let mut state = self.inner.state.write().unwrap();
            let current = state
                .published
                .get(node_type)
                .map(|p| p.for_service(service).at(location).clone());
            let sender = state
                .channels
                .entry(key)
                .or_insert_with(|| watch::channel(current).0);
            sender.subscribe()
        });
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
}

impl Publisher {
    /// Publishes `snapshot` for `node_type` (every place gets it) after checking its
    /// consistency.
    ///
    /// Identical content (equal versions for every type) changes nothing and wakes nobody.
    pub fn publish(
        &self,
        node_type: &str,
        snapshot: Snapshot,
    ) -> Result<Published, InconsistentSnapshot> {
        self.publish_places(node_type, snapshot, BTreeMap::new())
    }

    /// Publishes a node type's plain snapshot and its snapshots by place (zone or region),
    /// each checked for consistency first (nothing is published if one fails). What it reports
    /// is about the plain snapshot; each place's streams are woken only if their own snapshot
    /// changed.
    pub fn publish_places(
        &self,
        node_type: &str,
        plain: Snapshot,
        places: BTreeMap<String, Snapshot>,
    ) -> Result<Published, InconsistentSnapshot> {
        let mut snapshots = NodeTypeSnapshots::plain(plain);
        snapshots.places = places;
        self.publish_all(node_type, snapshots)
    }

    /// Publishes all of a node type's snapshots: the whole scope's and each backend set's,
    /// each checked for consistency first (nothing is published if one fails). What it
    /// reports is about the whole scope's plain snapshot; each channel's streams are woken only
    /// if their own snapshot changed.
    pub fn publish_all(
        &self,
        node_type: &str,
        snapshots: NodeTypeSnapshots,
    ) -> Result<Published, InconsistentSnapshot> {
        let NodeTypeSnapshots {
            plain,
            places,
            backend_sets,
            callers,
        } = snapshots;
        let each_set = backend_sets
            .values()
            .flat_map(|(p, z)| z.values().chain([p]));
        for snapshot in places.values().chain([&plain]).chain(each_set) {
            snapshot.check_consistency()?;
        }
        let published = NodeSnapshots {
            whole: Placed::new(plain, places),
            sets: (backend_sets.into_iter())
                .map(|(key, (plain, places))| (key, Placed::new(plain, places)))
                .collect(),
            callers,
        };
        let mut state = self.cache.inner.state.write().unwrap();
        let plain_key = (node_type.to_owned(), String::new(), Location::default());
        state
            .channels
            .entry(plain_key.clone())
            .or_insert_with(|| watch::channel(None).0);
        let mut outcome = Published::Unchanged;
        for ((_, service, location), sender) in state
            .channels
            .range(plain_key..)
            .take_while(|((n, _, _), _)| n == node_type)
        {
            let changed = offer(sender, published.for_service(service).at(location));
            if service.is_empty() && *location == Location::default() {
                outcome = changed;
            }
        }
        state.published.insert(node_type.to_owned(), published);
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

/// Replaces the channel's snapshot with `snapshot` if any type's version differs, waking its
/// streams; says which types changed.
fn offer(sender: &watch::Sender<Option<Arc<Snapshot>>>, snapshot: &Arc<Snapshot>) -> Published {
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
    outcome
}

#[cfg(test)]
mod tests;
