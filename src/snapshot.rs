//! The snapshot: everything one node type is served, as a plain value.
//!
//! Each resource is encoded exactly once, when the snapshot is built, into the bytes of a
//! `google.protobuf.Any`. Every stream that serves the snapshot shares those bytes, so 10,000
//! streams cost 10,000 memory copies, not 10,000 encodings.
//!
//! Versions are content hashes (see [`hash`]): the same resources give the same versions in any
//! process, whatever order they were added in, so a restarted controller or a second replica
//! re-serves exactly what Envoy already holds and nothing is re-pushed.

mod canonical;
mod consistency;
pub mod hash;
mod render;
mod resource_type;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use prost::{Message, Name};

pub(crate) use consistency::eds_name;
pub use consistency::InconsistentSnapshot;
pub use resource_type::{ResourceType, UnknownTypeUrl};

/// One resource, encoded once and shared by every stream that serves it.
#[derive(Debug)]
pub struct EncodedResource {
    name: Arc<str>,
    /// Content hash of the resource (stable across processes).
    hash: u64,
    /// `hash` as the per-resource version string delta xDS reports.
    version: Arc<str>,
    /// The encoded `google.protobuf.Any` wrapping the resource.
    any: Bytes,
    /// The encoded delta `Resource` message, built on first delta use only.
    delta: OnceLock<Bytes>,
}

impl EncodedResource {
    fn new(type_url: &str, name: &str, value: Vec<u8>) -> Self {
        let hash = hash::resource_hash(type_url, &value);
        let any = envoy_types::pb::google::protobuf::Any {
            type_url: type_url.to_owned(),
            value,
        };
        Self {
            name: name.into(),
            hash,
            version: hash::format_version(hash).into(),
            any: any.encode_to_vec().into(),
            delta: OnceLock::new(),
        }
    }

    /// `listener` encoded and hashed as a snapshot holds it, for a listener made apart from
    /// a snapshot (one with no builder's other work to share).
    pub fn listener(listener: &Listener) -> EncodedResource {
        let (ty, name) = (ResourceType::Listener, &listener.name);
        EncodedResource::new(ty.type_url(), name, listener.encode_to_vec())
    }

    /// The resource name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// The content hash.
    pub fn hash(&self) -> u64 {
        self.hash
    }

    /// The per-resource version (the content hash in hex).
    pub fn version(&self) -> &Arc<str> {
        &self.version
    }

    /// The encoded `Any`.
    pub fn any_bytes(&self) -> &Bytes {
        &self.any
    }

    /// The encoded `envoy.service.discovery.v3.Resource` (name, version, resource) for delta xDS.
    pub fn delta_resource_bytes(&self) -> &Bytes {
        self.delta.get_or_init(|| {
            let mut buf = Vec::with_capacity(self.any.len() + self.name.len() + 32);
            // Field numbers from envoy.service.discovery.v3.Resource.
            prost::encoding::string::encode(1, &self.version.to_string(), &mut buf);
            prost::encoding::bytes::encode(2, &self.any, &mut buf);
            prost::encoding::string::encode(3, &self.name.to_string(), &mut buf);
            buf.into()
        })
    }

    /// Decodes the resource back into its message type (for checks and rendering).
    pub fn decode<M: Message + Default>(&self) -> Result<M, prost::DecodeError> {
        let any = envoy_types::pb::google::protobuf::Any::decode(self.any.clone())?;
        M::decode(any.value.as_slice())
    }
}

/// The resources of one type within a snapshot, keyed and ordered by name.
#[derive(Debug, Default)]
pub struct TypeResources {
    version: Arc<str>,
    resources: BTreeMap<Arc<str>, Arc<EncodedResource>>,
}

impl TypeResources {
    /// The version of this resource type: a hash over every (name, content hash).
    pub fn version(&self) -> &Arc<str> {
        &self.version
    }

    /// Resources by name.
    pub fn resources(&self) -> &BTreeMap<Arc<str>, Arc<EncodedResource>> {
        &self.resources
    }

    /// Looks one resource up.
    pub fn get(&self, name: &str) -> Option<&Arc<EncodedResource>> {
        self.resources.get(name)
    }

    /// `name` as a shared string: the snapshot's own when it has that resource, so thousands of
    /// streams subscribed to the same names store one copy of each.
    pub fn intern(&self, name: &str) -> Arc<str> {
        match self.resources.get_key_value(name) {
            Some((key, _)) => key.clone(),
            None => name.into(),
        }
    }
}

/// Everything one node type is served: resources of each type, with a version per type.
///
/// Build it with [`Snapshot::builder`]. It is immutable once built and shared as `Arc<Snapshot>`.
#[derive(Debug)]
pub struct Snapshot {
    /// Shared with the snapshots derived from this one ([`Snapshot::with_resource`]).
    types: [Arc<TypeResources>; ResourceType::COUNT],
    /// For an on-demand node type: the clusters a wildcard CDS subscription gets. Envoy asks
    /// for any other by name (on-demand CDS, delta only) the first time a request needs it.
    /// `None`: every cluster.
    wildcard_clusters: Option<BTreeSet<Arc<str>>>,
    /// Unique per built snapshot (unlike its address, never reused), keying `changes`.
    id: u64,
    /// Recent answers of [`Snapshot::changes_since`]: every stream that last got the same
    /// snapshot asks the same question, so it is answered once.
    changes: Mutex<Vec<(u64, ResourceType, Changes)>>,
}

/// Names of resources, in name order.
pub type ChangedNames = Arc<[Arc<str>]>;

/// How one type's resources differ between a base snapshot and a later one.
#[derive(Debug, Clone)]
pub struct Changes {
    /// New or changed.
    pub changed: ChangedNames,
    /// In the base, gone now.
    pub removed: ChangedNames,
}

/// How many `changed_since` answers a snapshot keeps.
const CHANGES_KEPT: usize = 8;

impl Snapshot {
    /// Starts an empty snapshot.
    pub fn builder() -> SnapshotBuilder {
        SnapshotBuilder::default()
    }

    /// The resources of one type.
    pub fn of(&self, ty: ResourceType) -> &TypeResources {
        &self.types[ty.index()]
    }

    /// The version of one type.
    pub fn version(&self, ty: ResourceType) -> &Arc<str> {
        self.of(ty).version()
    }

    /// True when only some clusters go to a wildcard subscription (an on-demand node type).
    pub fn is_on_demand(&self) -> bool {
        self.wildcard_clusters.is_some()
    }

    /// The clusters a wildcard subscription gets, for an on-demand snapshot.
    pub fn wildcard_clusters(&self) -> Option<&BTreeSet<Arc<str>>> {
        self.wildcard_clusters.as_ref()
    }

    /// Whether a delta wildcard subscription covers `name`: every resource, except an
    /// on-demand snapshot's clusters outside [`Snapshot::wildcard_clusters`]. A name the
    /// snapshot does not have is covered, so that the client is told it is gone.
    pub fn in_wildcard(&self, ty: ResourceType, name: &str) -> bool {
        match (&self.wildcard_clusters, ty) {
            (Some(wildcard), ResourceType::Cluster) => {
                wildcard.contains(name) || self.of(ty).get(name).is_none()
            }
            _ => true,
        }
    }

    /// True when every type has the same version in both snapshots (same content).
    pub fn same_content(&self, other: &Snapshot) -> bool {
        ResourceType::ALL
            .iter()
            .all(|&ty| self.version(ty) == other.version(ty))
    }

    /// Names of `ty` resources that are new or changed in `self` compared with `base`, computed
    /// once per (base, type) and shared by every stream asking.
    pub fn changed_since(&self, base: &Snapshot, ty: ResourceType) -> ChangedNames {
        self.changes_since(base, ty).changed
    }

    /// How `ty` resources changed from `base` to `self`, computed once per (base, type) and
    /// shared by every stream asking.
    pub fn changes_since(&self, base: &Snapshot, ty: ResourceType) -> Changes {
        let mut cached = self.changes.lock().unwrap();
        if let Some((_, _, changes)) = cached.iter().find(|(id, t, _)| *id == base.id && *t == ty) {
            return changes.clone();
        }
        let (before, now) = (base.of(ty), self.of(ty));
        let changes = Changes {
            changed: now
                .resources()
                .values()
                .filter(|r| before.get(r.name()).is_none_or(|b| b.hash() != r.hash()))
                .map(|r| r.name().clone())
                .collect(),
            removed: before
                .resources()
                .keys()
                .filter(|name| now.get(name).is_none())
                .cloned()
                .collect(),
        };
        if cached.len() == CHANGES_KEPT {
            cached.remove(0);
        }
        cached.push((base.id, ty, changes.clone()));
        changes
    }

    /// This snapshot with `resource` added to its type (replacing its namesake), sharing every
    /// other type's resources: what a service whose listener differs is served, at the cost of
    /// one type's map, not of the whole snapshot.
    pub fn with_resource(&self, ty: ResourceType, resource: Arc<EncodedResource>) -> Snapshot {
        let mut types = self.types.clone();
        let mut resources = types[ty.index()].resources.clone();
        resources.insert(resource.name.clone(), resource);
        let version = hash::type_version(resources.values().map(|r| (&*r.name, r.hash)));
        // An on-demand snapshot's CDS version also covers its wildcard set (see `build`).
        debug_assert!(ty != ResourceType::Cluster || self.wildcard_clusters.is_none());
        types[ty.index()] = Arc::new(TypeResources {
            version: version.into(),
            resources,
        });
        Snapshot {
            types,
            wildcard_clusters: self.wildcard_clusters.clone(),
            id: next_id(),
            changes: Mutex::default(),
        }
    }

    /// A second snapshot of the same resources and versions, sharing all of them: what one
    /// place is served under another's name (a zone served its region's snapshot), at the cost
    /// of a handful of reference counts.
    pub fn share(&self) -> Snapshot {
        Snapshot {
            types: self.types.clone(),
            wildcard_clusters: self.wildcard_clusters.clone(),
            id: next_id(),
            changes: Mutex::default(),
        }
    }

    /// Checks that references between types resolve (see [`InconsistentSnapshot`]).
    pub fn check_consistency(&self) -> Result<(), InconsistentSnapshot> {
        consistency::check(self)
    }
}

/// Collects resources, encodes each once and computes the versions.
#[derive(Debug, Default)]
pub struct SnapshotBuilder {
    types: [BTreeMap<Arc<str>, Arc<EncodedResource>>; ResourceType::COUNT],
    wildcard_clusters: Option<BTreeSet<Arc<str>>>,
}

impl SnapshotBuilder {
    /// Adds a cluster (CDS).
    pub fn cluster(self, cluster: Cluster) -> Self {
        let name = cluster.name.clone();
        self.encoded(ResourceType::Cluster, &name, &cluster)
    }

    /// Adds a cluster load assignment (EDS).
    pub fn endpoints(self, cla: ClusterLoadAssignment) -> Self {
        let name = cla.cluster_name.clone();
        self.encoded(ResourceType::Endpoint, &name, &cla)
    }

    /// Adds a listener (LDS).
    pub fn listener(self, listener: Listener) -> Self {
        let name = listener.name.clone();
        self.encoded(ResourceType::Listener, &name, &listener)
    }

    /// Adds a route configuration (RDS).
    pub fn route(self, route: RouteConfiguration) -> Self {
        let name = route.name.clone();
        self.encoded(ResourceType::Route, &name, &route)
    }

    /// Adds a TLS secret (SDS).
    pub fn secret(self, secret: Secret) -> Self {
        let name = secret.name.clone();
        self.encoded(ResourceType::Secret, &name, &secret)
    }

    /// Makes the snapshot on-demand: a wildcard CDS subscription gets only `names` (see
    /// [`Snapshot::wildcard_clusters`]).
    pub fn wildcard_clusters(mut self, names: impl IntoIterator<Item = Arc<str>>) -> Self {
        self.wildcard_clusters = Some(names.into_iter().collect());
        self
    }

    /// True when a resource of type `ty` named `name` has been added.
    pub fn has(&self, ty: ResourceType, name: &str) -> bool {
        self.types[ty.index()].contains_key(name)
    }

    /// Adds an already-encoded resource, shared with another snapshot (no re-encoding).
    pub fn shared(mut self, ty: ResourceType, resource: Arc<EncodedResource>) -> Self {
        self.types[ty.index()].insert(resource.name.clone(), resource);
        self
    }

    fn encoded<M: Message + Name>(mut self, ty: ResourceType, name: &str, msg: &M) -> Self {
        debug_assert_eq!(M::type_url(), ty.type_url());
        let resource = EncodedResource::new(ty.type_url(), name, msg.encode_to_vec());
        self.types[ty.index()].insert(resource.name.clone(), Arc::new(resource));
        self
    }

    /// Finishes the snapshot: computes each type's version. A later resource with the same
    /// name as an earlier one has replaced it.
    pub fn build(self) -> Snapshot {
        let mut types = self.types.map(|resources| TypeResources {
            version: hash::type_version(resources.values().map(|r| (&*r.name, r.hash))).into(),
            resources,
        });
        if let Some(wildcard) = &self.wildcard_clusters {
            // What a wildcard subscription gets is part of what is served: a change to it is a
            // new CDS version, which wakes the streams.
            let cds = &mut types[ResourceType::Cluster.index()];
            let marked: Vec<String> = wildcard
                .iter()
                .map(|n| format!("\0wildcard\0{n}"))
                .collect();
            let entries = (cds.resources.values().map(|r| (&*r.name, r.hash)))
                .chain(marked.iter().map(|n| (n.as_str(), 0)));
            cds.version = hash::type_version(entries).into();
        }
        Snapshot {
            types: types.map(Arc::new),
            wildcard_clusters: self.wildcard_clusters,
            id: next_id(),
            changes: Mutex::default(),
        }
    }
}

/// A new snapshot's id: unique in the process.
fn next_id() -> u64 {
    static NEXT_ID: AtomicU64 = AtomicU64::new(0);
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
pub(crate) mod tests;
