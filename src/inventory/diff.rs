//! What changed between two inventories, as an operator reads a change log: clusters added and
//! removed, endpoints added, removed and changed (health, weight, zone, revision), warnings
//! that appeared or went away.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Endpoint, Inventory};

/// The difference from one inventory to the next. Cluster and warning lists are capped at
/// [`NAMES_KEPT`] entries each (the counts are exact), so a first inventory of a large fleet
/// stays small in the change log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct InventoryDiff {
    pub clusters_added: Names,
    pub clusters_removed: Names,
    /// Clusters whose endpoints or policy changed (not added or removed ones).
    pub clusters_changed: Names,
    pub endpoints_added: usize,
    pub endpoints_removed: usize,
    /// Same address and port, another health, weight, zone or revision.
    pub endpoints_changed: usize,
    pub warnings_added: Names,
    pub warnings_removed: Names,
}

/// At most this many names are listed per kind of change.
pub const NAMES_KEPT: usize = 20;

/// Some names, and how many there were in all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Names {
    pub count: usize,
    pub names: Vec<String>,
}

impl Names {
    fn push(&mut self, name: &str) {
        self.count += 1;
        if self.names.len() < NAMES_KEPT {
            self.names.push(name.to_owned());
        }
    }
}

impl InventoryDiff {
    /// From `old` (`None`: nothing was discovered before) to `new`.
    pub fn between(old: Option<&Inventory>, new: &Inventory) -> InventoryDiff {
        let empty = Inventory::default();
        let old = old.unwrap_or(&empty);
        let mut diff = InventoryDiff::default();
        for (name, cluster) in &new.clusters {
            match old.clusters.get(name) {
                None => {
                    diff.clusters_added.push(name);
                    diff.endpoints_added += cluster.endpoints.len();
                }
                Some(before) if before != cluster => {
                    diff.clusters_changed.push(name);
                    diff.add_endpoints(&before.endpoints, &cluster.endpoints);
                }
                Some(_) => {}
            }
        }
        for (name, cluster) in &old.clusters {
            if !new.clusters.contains_key(name) {
                diff.clusters_removed.push(name);
                diff.endpoints_removed += cluster.endpoints.len();
            }
        }
        for warning in new.warnings.iter().filter(|w| !old.warnings.contains(w)) {
            diff.warnings_added.push(warning);
        }
        for warning in old.warnings.iter().filter(|w| !new.warnings.contains(w)) {
            diff.warnings_removed.push(warning);
        }
        diff
    }

    fn add_endpoints(&mut self, before: &[Endpoint], after: &[Endpoint]) {
        let key = |e: &Endpoint| (e.address.clone(), e.port);
        let before: BTreeMap<_, &Endpoint> = before.iter().map(|e| (key(e), e)).collect();
        let after: BTreeMap<_, &Endpoint> = after.iter().map(|e| (key(e), e)).collect();
        for (k, endpoint) in &after {
            match before.get(k) {
                None => self.endpoints_added += 1,
                Some(old) if old != endpoint => self.endpoints_changed += 1,
                Some(_) => {}
            }
        }
        self.endpoints_removed += before.keys().filter(|k| !after.contains_key(*k)).count();
    }

    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        *self == InventoryDiff::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{Cluster, Health, Locality, Source};

    fn endpoint(address: &str, health: Health) -> Endpoint {
        Endpoint {
            address: address.into(),
            port: 8080,
            health,
            locality: Locality::default(),
            weight: 1,
            id: address.into(),
            revision: None,
            deployment: None,
        }
    }

    fn cluster(name: &str, endpoints: Vec<Endpoint>) -> Cluster {
        Cluster {
            name: name.into(),
            source: Source::Ecs {
                ecs_cluster: "prod".into(),
                service: name.into(),
            },
            port_name: None,
            overrides: Default::default(),
            route: Default::default(),
            backends: None,
            security: Default::default(),
            endpoints,
        }
    }

    fn inventory(clusters: Vec<Cluster>, warnings: &[&str]) -> Inventory {
        Inventory {
            clusters: clusters.into_iter().map(|c| (c.name.clone(), c)).collect(),
            warnings: warnings.iter().map(|w| w.to_string()).collect(),
            callers: Default::default(),
        }
    }

    #[test]
    fn the_first_inventory_is_all_added() {
        let web = cluster("web", vec![endpoint("10.0.0.1", Health::Healthy)]);
        let diff = InventoryDiff::between(None, &inventory(vec![web], &["w"]));
        assert_eq!(diff.clusters_added.names, ["web"]);
        assert_eq!(diff.endpoints_added, 1);
        assert_eq!(diff.warnings_added.names, ["w"]);
        assert!(diff.clusters_removed.names.is_empty());
    }

    #[test]
    fn endpoints_added_removed_and_changed_are_counted_per_address_and_port() {
        let healthy = |a| endpoint(a, Health::Healthy);
        let old = inventory(
            vec![
                cluster("web", vec![healthy("10.0.0.1"), healthy("10.0.0.2")]),
                cluster("gone", vec![healthy("10.0.9.1")]),
                cluster("same", vec![healthy("10.0.8.1")]),
            ],
            &["old warning"],
        );
        let draining = endpoint("10.0.0.2", Health::Draining);
        let new = inventory(
            vec![
                cluster("web", vec![draining, healthy("10.0.0.3")]),
                cluster("same", vec![healthy("10.0.8.1")]),
            ],
            &[],
        );
        let diff = InventoryDiff::between(Some(&old), &new);
        assert_eq!(diff.clusters_changed.names, ["web"]);
        assert_eq!(diff.clusters_removed.names, ["gone"]);
        assert!(diff.clusters_added.names.is_empty());
        assert_eq!(
            (
                diff.endpoints_added,
                diff.endpoints_removed,
                diff.endpoints_changed
            ),
            (1, 2, 1)
        );
        assert_eq!(diff.warnings_removed.names, ["old warning"]);
        assert!(InventoryDiff::between(Some(&new), &new).is_empty());
    }

    #[test]
    fn names_are_capped_but_counted() {
        let many: Vec<Cluster> = (0..50)
            .map(|i| cluster(&format!("s{i:02}"), vec![]))
            .collect();
        let diff = InventoryDiff::between(None, &inventory(many, &[]));
        assert_eq!(diff.clusters_added.count, 50);
        assert_eq!(diff.clusters_added.names.len(), NAMES_KEPT);
    }
}
