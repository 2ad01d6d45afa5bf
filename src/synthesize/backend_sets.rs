//! Backend sets: the services that declare their backends (`<prefix>backends`, see
//! [`crate::discover::backends`]) get a snapshot with only those clusters, their endpoints and
//! their generated virtual hosts, plus the template's own resources and the discovered clusters
//! the template's routes name. Services declaring the same items share one snapshot, keyed by
//! the items joined with `,`; a service that declares nothing gets the node type's whole scope.
//!
//! An Envoy says which service it is with `node.cluster` (or `node.metadata["ecs-xds.service"]`,
//! which wins), naming the service's cluster or its ECS service.

use std::collections::{BTreeMap, BTreeSet};

use crate::discover::backends::BackendPattern;
use crate::discover::{Cluster, Inventory, Source};
use crate::snapshot::Snapshot;

/// One node type's snapshots by backend set, and who is on which.
#[derive(Debug, Default)]
pub struct BackendSets {
    /// By backend set key.
    pub sets: BTreeMap<String, BackendSet>,
    /// By caller (a declaring service's cluster name and ECS service name): its set's key.
    pub callers: BTreeMap<String, String>,
}

/// What the Envoys of the services declaring one backend set are served.
#[derive(Debug)]
pub struct BackendSet {
    pub snapshot: Snapshot,
    /// For a zone-aware node type, by zone, as [`super::Synthesis::zones`] is for the whole scope.
    pub zones: BTreeMap<String, Snapshot>,
}

/// Every declaration of an inventory: by caller its set's key, and each set's items.
#[derive(Debug, Default)]
pub(super) struct Declarations {
    pub callers: BTreeMap<String, String>,
    pub sets: BTreeMap<String, Vec<BackendPattern>>,
}

impl Declarations {
    pub(super) fn of(inventory: &Inventory) -> Declarations {
        let mut out = Declarations::default();
        for cluster in inventory.clusters.values() {
            let Some(items) = &cluster.backends else {
                continue;
            };
            // Discovery sorts them; a hand-written inventory may not have.
            let items: BTreeSet<&str> = items.iter().map(String::as_str).collect();
            let key = items.iter().copied().collect::<Vec<_>>().join(",");
            out.sets
                .entry(key.clone())
                .or_insert_with(|| items.iter().map(|i| BackendPattern::new(i)).collect());
            if let Source::Ecs { service, .. } = &cluster.source {
                out.callers.entry(service.clone()).or_insert(key.clone());
            }
            // A cluster's own name wins over another service's ECS name.
            out.callers.insert(cluster.name.clone(), key);
        }
        out
    }
}

/// One backend set being synthesized: its key, items and the discovered clusters they select.
pub(super) struct Selection<'i> {
    pub key: &'i str,
    pub patterns: &'i [BackendPattern],
    pub clusters: Vec<(&'i String, &'i Cluster)>,
}

/// By ECS service name, its clusters (for items naming a service rather than a cluster).
pub(super) type ByService<'i> = BTreeMap<&'i str, Vec<(&'i String, &'i Cluster)>>;

pub(super) fn by_service(inventory: &Inventory) -> ByService<'_> {
    let mut out = ByService::new();
    for (name, cluster) in &inventory.clusters {
        if let Source::Ecs { service, .. } = &cluster.source {
            out.entry(service.as_str())
                .or_default()
                .push((name, cluster));
        }
    }
    out
}

impl<'i> Selection<'i> {
    /// The clusters of `inventory` that `patterns` select, plus those named in `also` (the
    /// template's routes), in name order. Plain names are looked up, not matched against every
    /// cluster: with a thousand sets of five, this is what keeps a synthesis short.
    pub(super) fn new(
        key: &'i str,
        patterns: &'i [BackendPattern],
        inventory: &'i Inventory,
        services: &ByService<'i>,
        also: &BTreeSet<&str>,
    ) -> Selection<'i> {
        let mut selected: BTreeMap<&'i String, &'i Cluster> = BTreeMap::new();
        let names = patterns
            .iter()
            .filter(|p| p.is_literal())
            .map(|p| p.item.as_str())
            .chain(also.iter().copied());
        for name in names {
            if let Some((name, cluster)) = inventory.clusters.get_key_value(name) {
                selected.insert(name, cluster);
            }
            for &(name, cluster) in services.get(name).into_iter().flatten() {
                selected.insert(name, cluster);
            }
        }
        let globs: Vec<&BackendPattern> = patterns.iter().filter(|p| !p.is_literal()).collect();
        if !globs.is_empty() {
            for (name, cluster) in &inventory.clusters {
                if globs.iter().any(|p| p.matches(cluster)) {
                    selected.insert(name, cluster);
                }
            }
        }
        Selection {
            key,
            patterns,
            clusters: selected.into_iter().collect(),
        }
    }

    /// The plain names of this set that none of `served` is, nor any of `statics`: declared
    /// backends the node type does not serve, which get a virtual host answering 503.
    pub(super) fn missing(
        &self,
        served: &[(&str, &Cluster)],
        statics: &std::collections::HashSet<&str>,
    ) -> Vec<String> {
        self.patterns
            .iter()
            .filter(|p| p.is_literal() && !statics.contains(p.item.as_str()))
            .filter(|p| !served.iter().any(|(_, c)| p.matches(c)))
            .map(|p| p.item.clone())
            .collect()
    }
}

impl super::Synthesis {
    /// What an Envoy of node type `node_type` and service `service` (no zone) is served, and
    /// the key of its backend set (`None`: the node type's whole scope).
    pub fn snapshot_of_service(
        &self,
        node_type: &str,
        service: &str,
    ) -> Option<(&Snapshot, Option<&str>)> {
        let whole = self.snapshots.get(node_type)?;
        let set = self.backend_sets.get(node_type).and_then(|sets| {
            let key = sets.callers.get(service)?;
            Some((&sets.sets.get(key)?.snapshot, key.as_str()))
        });
        Some(match set {
            Some((snapshot, key)) => (snapshot, Some(key)),
            None => (whole, None),
        })
    }
}
