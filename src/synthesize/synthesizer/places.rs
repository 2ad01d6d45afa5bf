//! A node type's snapshots by place: the zone or the region an Envoy is served for.
//!
//! A cluster found in several regions is served to an Envoy of one of them with that region's
//! endpoints first, and on a zone-aware node type the Envoy's own zone comes before the rest of
//! its region ([`Tiers`]). A place gets a snapshot of its own only when some cluster's
//! priorities there differ from the plain snapshot's; every other resource in it is the plain
//! snapshot's own encoding, and each (cluster, tiers) is encoded once for every place and node
//! type that sees the cluster alike.
//!
//! Places are zone names and region names (an AWS zone name is never a region's); the cache
//! looks an Envoy up by its zone, then by its region. On a node type that is not zone-aware,
//! each zone seen in a region is served that region's snapshot (shared, not re-encoded), so an
//! Envoy that states only its zone still gets its own region first.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{endpoint_inputs, same_endpoints, Encodings, Synthesis};
use crate::inventory;
use crate::snapshot::{ResourceType, Snapshot};
use crate::synthesize::endpoints::{discovered_load_assignment, Tiers};

impl Encodings {
    /// By place, the snapshot of an Envoy there: `base` with the endpoints of the clusters of
    /// `discovered` (those served their discovered endpoints) prioritized for that place.
    /// Places whose Envoys would get `base` itself are left out.
    pub(super) fn place_snapshots(
        &mut self,
        base: &Snapshot,
        discovered: &[&inventory::Cluster],
        zone_aware: bool,
        out: &mut Synthesis,
    ) -> BTreeMap<String, Snapshot> {
        let zones = zone_regions(discovered);
        let regions: BTreeSet<&str> = (discovered.iter())
            .flat_map(|c| c.endpoints.iter().map(|e| e.locality.region.as_str()))
            .collect();
        if !zone_aware && regions.len() < 2 {
            // No cluster is in two regions: nothing to put first (the common case, kept cheap).
            return BTreeMap::new();
        }
        let mut places = BTreeMap::new();
        for region in regions.into_iter().filter(|r| !r.is_empty()) {
            if let Some(snapshot) = self.place_snapshot(base, discovered, None, region, out) {
                places.insert(region.to_owned(), snapshot);
            }
        }
        for (zone, region) in zones {
            let snapshot = match zone_aware {
                true => self.place_snapshot(base, discovered, Some(zone), region, out),
                false => places.get(region).map(Snapshot::share),
            };
            if let Some(snapshot) = snapshot {
                places.insert(zone.to_owned(), snapshot);
            }
        }
        places
    }

    /// `base` with every cluster whose tiers for an Envoy in `zone` of `region` are not plain
    /// given their priorities; `None` when there is no such cluster.
    fn place_snapshot(
        &mut self,
        base: &Snapshot,
        discovered: &[&inventory::Cluster],
        zone: Option<&str>,
        region: &str,
        out: &mut Synthesis,
    ) -> Option<Snapshot> {
        let region = Some(region).filter(|r| !r.is_empty());
        let tiered: HashMap<&str, (&inventory::Cluster, Tiers)> = (discovered.iter())
            .map(|c| (c.name.as_str(), (*c, Tiers::of(c, zone, region))))
            .filter(|(_, (_, tiers))| !tiers.is_plain())
            .collect();
        if tiered.is_empty() {
            return None;
        }
        let mut builder = Snapshot::builder();
        if let Some(wildcard) = base.wildcard_clusters() {
            builder = builder.wildcard_clusters(wildcard.iter().cloned());
        }
        for ty in ResourceType::ALL {
            for (name, resource) in base.of(ty).resources() {
                if ty != ResourceType::Endpoint || !tiered.contains_key(&**name) {
                    builder = builder.shared(ty, resource.clone());
                }
            }
        }
        let mut fresh = Vec::new();
        for (cluster, tiers) in tiered.into_values() {
            let key = (cluster.name.clone(), tiers);
            builder = match (self.endpoints).get(&key, |inputs| same_endpoints(inputs, cluster)) {
                Some(shared) => builder.shared(ResourceType::Endpoint, shared),
                None => {
                    let assignment = discovered_load_assignment(cluster, &key.1);
                    fresh.push((key, endpoint_inputs(cluster)));
                    builder.endpoints(assignment)
                }
            };
        }
        let snapshot = builder.build();
        out.encoded += fresh.len();
        for (key, inputs) in fresh {
            let resource = snapshot.of(ResourceType::Endpoint).get(&key.0);
            let resource = resource.expect("built").clone();
            self.endpoints.insert(key, inputs, resource);
        }
        Some(snapshot)
    }
}

/// Each zone the endpoints of `clusters` are in, with its region (the first one seen with it:
/// a zone name belongs to one region).
fn zone_regions<'i>(clusters: &[&'i inventory::Cluster]) -> BTreeMap<&'i str, &'i str> {
    let mut zones = BTreeMap::new();
    for e in clusters.iter().flat_map(|c| &c.endpoints) {
        if let Some(zone) = e.locality.zone.as_deref() {
            zones.entry(zone).or_insert(e.locality.region.as_str());
        }
    }
    zones
}
