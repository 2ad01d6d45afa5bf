//! Backend sets: the services that declare their backends (`<prefix>backends`, see
//! `discover::backends`) get a snapshot with only those clusters, their endpoints and
//! their generated virtual hosts, plus the template's own resources and the discovered clusters
//! the template's routes name. Services declaring the same items share one snapshot, keyed by
//! the items joined with `,`; a service that declares nothing gets the node type's whole scope.
//!
//! An Envoy says which service it is with `node.cluster` (or `node.metadata["ecs-xds.service"]`,
//! which wins), naming the service's cluster or its ECS service.

use std::collections::{BTreeMap, BTreeSet};

use super::{warning, Encodings, Synthesis};
use crate::inventory::BackendPattern;
use crate::inventory::{Cluster, Inventory, Source};
use crate::snapshot::Snapshot;
use crate::synthesize::pushed::Pushed;
use crate::synthesize::templates::NodeTemplate;

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
    /// By place (zone or region), as [`Synthesis::places`] is for the whole scope.
    pub places: BTreeMap<String, Snapshot>,
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
            let key = out.declare(items);
            if let Source::Ecs { service, .. } = &cluster.source {
                out.callers.entry(service.clone()).or_insert(key.clone());
            }
            // A cluster's own name wins over another service's ECS name.
            out.callers.insert(cluster.name.clone(), key);
        }
        // Workers: services with no cluster of their own.
        for (service, items) in &inventory.callers {
            let key = out.declare(items);
            out.callers.entry(service.clone()).or_insert(key);
        }
        out
    }

    /// Adds the set of `items` (if new); returns its key.
    fn declare(&mut self, items: &[String]) -> String {
        // Discovery sorts them; a hand-written inventory may not have.
        let items: BTreeSet<&str> = items.iter().map(String::as_str).collect();
        let key = items.iter().copied().collect::<Vec<_>>().join(",");
        self.sets
            .entry(key.clone())
            .or_insert_with(|| items.iter().map(|i| BackendPattern::new(i)).collect());
        key
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

impl Encodings {
    /// The snapshot of every backend set declared in the inventory, for one node type.
    pub(super) fn backend_sets(
        &mut self,
        node_type: &str,
        template: &NodeTemplate,
        pushed: Option<&Pushed>,
        inventory: &Inventory,
        (declarations, services): (&Declarations, &ByService<'_>),
        out: &mut Synthesis,
    ) -> BackendSets {
        let also: std::collections::BTreeSet<&str> = template
            .route_clusters
            .iter()
            .map(|(c, _)| c.as_str())
            .collect();
        let mut sets = BTreeMap::new();
        for (key, patterns) in &declarations.sets {
            let selection = Selection::new(key, patterns, inventory, services, &also);
            let (snapshot, discovered_eds) = self.node_snapshot(
                node_type,
                template,
                pushed,
                inventory,
                Some(&selection),
                out,
            );
            let zone_aware = template.zone_aware;
            let places = self.place_snapshots(&snapshot, &discovered_eds, zone_aware, out);
            sets.insert(key.clone(), BackendSet { snapshot, places });
        }
        BackendSets {
            sets,
            callers: declarations.callers.clone(),
        }
    }
}

/// A declared backend that is discovered but outside the node type's scope is served as not
/// discovered (503); someone should widen the scope or fix the declaration.
pub(super) fn out_of_scope(
    node_type: &str,
    template: &NodeTemplate,
    selection: &Selection<'_>,
    out: &mut Synthesis,
) {
    for (name, _) in &selection.clusters {
        let declared = selection.patterns.iter().any(|p| p.item == **name);
        if declared && !template.scope.contains(name) {
            let message = format!(
                "backend set {:?}: cluster {name:?} is discovered, but this node type's [scope] leaves it out; its route answers 503",
                selection.key
            );
            out.warnings.push(warning(node_type, template, message));
        }
    }
}

impl Synthesis {
    /// What an Envoy of node type `node_type` and service `service` (no place) is served, and
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
