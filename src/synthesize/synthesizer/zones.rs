//! The snapshots of a zone-aware node type, one per zone that holds part of some cluster.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use super::{endpoint_inputs, same_endpoints, Encodings, Synthesis};
use crate::inventory;
use crate::snapshot::{ResourceType, Snapshot};
use crate::synthesize::endpoints::{discovered_load_assignment, splits};

impl Encodings {
    /// For a zone-aware node type, one snapshot per zone that holds part (not all) of the
    /// endpoints of some cluster of `discovered` (those served their discovered endpoints):
    /// `base` with those clusters' endpoints given priorities for that zone (same zone first).
    /// Everything else is `base`'s own encoding.
    pub(super) fn zone_snapshots(
        &mut self,
        base: &Snapshot,
        discovered: &[&inventory::Cluster],
        out: &mut Synthesis,
    ) -> BTreeMap<String, Snapshot> {
        let aware: Vec<&inventory::Cluster> = discovered
            .iter()
            .filter(|c| c.overrides.zone_aware != Some(false))
            .copied()
            .collect();
        let zones: BTreeSet<&str> = aware
            .iter()
            .flat_map(|c| {
                c.endpoints
                    .iter()
                    .filter_map(|e| e.locality.zone.as_deref())
            })
            .collect();
        let mut snapshots = BTreeMap::new();
        for zone in zones {
            let mut builder = Snapshot::builder();
            let mut fresh = Vec::new();
            let split: HashSet<&str> = aware
                .iter()
                .filter(|c| splits(c, zone))
                .map(|c| c.name.as_str())
                .collect();
            if split.is_empty() {
                // It would be the plain snapshot, which a zone without one of its own gets.
                continue;
            }
            if let Some(wildcard) = base.wildcard_clusters() {
                builder = builder.wildcard_clusters(wildcard.iter().cloned());
            }
            for ty in ResourceType::ALL {
                for (name, resource) in base.of(ty).resources() {
                    if ty != ResourceType::Endpoint || !split.contains(&**name) {
                        builder = builder.shared(ty, resource.clone());
                    }
                }
            }
            for cluster in aware.iter().filter(|c| split.contains(c.name.as_str())) {
                let key = (cluster.name.clone(), zone.to_owned());
                builder = match self
                    .endpoints
                    .get(&key, |inputs| same_endpoints(inputs, cluster))
                {
                    Some(shared) => builder.shared(ResourceType::Endpoint, shared),
                    None => {
                        fresh.push((key, endpoint_inputs(cluster)));
                        builder.endpoints(discovered_load_assignment(cluster, Some(zone)))
                    }
                };
            }
            let snapshot = builder.build();
            out.encoded += fresh.len();
            for (key, endpoints) in fresh {
                let resource = snapshot
                    .of(ResourceType::Endpoint)
                    .get(&key.0)
                    .expect("built")
                    .clone();
                self.endpoints.insert(key, endpoints, resource);
            }
            snapshots.insert(zone.to_owned(), snapshot);
        }
        snapshots
    }
}
