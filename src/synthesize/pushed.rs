//! Pushed resources (the REST push API of the `push` module) in a node type's snapshot.
//!
//! # The merge rule
//! For a node type with pushed resources:
//! - a pushed resource replaces the resource of the same type and name that the template, the
//!   generated routes or discovery would have served; every other pushed resource is added;
//! - a pushed cluster that replaces a discovered one takes its endpoints with it, unless it is
//!   itself an EDS cluster asking for them (so a push can retune a discovered service's cluster
//!   and keep its ECS endpoints); pushed `endpoints` replace discovered ones of the same name;
//! - the generated routes still list every discovered cluster in scope (a replaced one too:
//!   its name is unchanged), never clusters that only a push added;
//! - a node type with pushed resources and no template is served exactly what was pushed (as
//!   sxds did); add a template (an empty file gives every discovered cluster) to merge the two.
//!
//! A pushed EDS cluster whose endpoints are neither pushed nor discovered is served an empty
//! ClusterLoadAssignment (never a cluster stuck warming) and recorded in
//! [`Synthesis::dangling`]; the push API refuses a push that would cause it.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;

use super::templates::route_clusters;
use super::{Synthesis, Warning};
use crate::snapshot::{
    eds_name, EncodedResource, InconsistentSnapshot, ResourceType, Snapshot, SnapshotBuilder,
};

/// What one REST push (a PUT to `/resources/{node_type}`) carried, parsed and validated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PushedResources {
    /// The operator's label for this push (`"version"` in the body), for GET and logs only.
    pub version: Option<String>,
    pub listeners: Vec<Listener>,
    pub clusters: Vec<Cluster>,
    /// EDS: `ClusterLoadAssignment`s, by `cluster_name`.
    pub endpoints: Vec<ClusterLoadAssignment>,
    pub routes: Vec<RouteConfiguration>,
}

/// Resource counts, as the PUT response reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    pub listeners: usize,
    pub clusters: usize,
    pub endpoints: usize,
    pub routes: usize,
}

impl PushedResources {
    pub fn counts(&self) -> Counts {
        Counts {
            listeners: self.listeners.len(),
            clusters: self.clusters.len(),
            endpoints: self.endpoints.len(),
            routes: self.routes.len(),
        }
    }

    /// Where in the body a dangling reference comes from: the pushed resource it names (e.g.
    /// `listeners[1]`), or "" when it names only templated or discovered resources.
    pub fn locate(&self, e: &InconsistentSnapshot) -> String {
        let at = |section: &str, i: Option<usize>| {
            i.map(|i| format!("{section}[{i}]")).unwrap_or_default()
        };
        match e {
            InconsistentSnapshot::MissingRoute { listener, .. } => at(
                "listeners",
                self.listeners.iter().position(|l| l.name == *listener),
            ),
            InconsistentSnapshot::OrphanRoute(route) => {
                at("routes", self.routes.iter().position(|r| r.name == *route))
            }
            InconsistentSnapshot::MissingEndpoints { cluster, .. } => at(
                "clusters",
                self.clusters.iter().position(|c| c.name == *cluster),
            ),
            InconsistentSnapshot::OrphanEndpoints(name) => at(
                "endpoints",
                self.endpoints.iter().position(|e| e.cluster_name == *name),
            ),
            InconsistentSnapshot::Undecodable { .. } => String::new(),
        }
    }
}

/// A node type's pushed resources, encoded once when set.
pub(super) struct Pushed {
    pub resources: Arc<PushedResources>,
    encoded: Vec<(ResourceType, Arc<EncodedResource>)>,
    /// Names by type, for the replacement rule.
    names: [HashSet<Arc<str>>; ResourceType::COUNT],
    /// (cluster, the name it asks EDS for) for each pushed EDS cluster.
    eds: Vec<(String, String)>,
    /// (cluster, route configuration) for each cluster a pushed route sends to.
    route_clusters: Vec<(String, String)>,
}

impl Pushed {
    pub fn new(resources: Arc<PushedResources>) -> Pushed {
        let mut builder = Snapshot::builder();
        for c in &resources.clusters {
            builder = builder.cluster(c.clone());
        }
        for e in &resources.endpoints {
            builder = builder.endpoints(super::endpoints::with_locality_weights(e.clone()));
        }
        for l in &resources.listeners {
            builder = builder.listener(l.clone());
        }
        for r in &resources.routes {
            builder = builder.route(r.clone());
        }
        let snapshot = builder.build();
        let mut encoded = Vec::new();
        let mut names: [HashSet<Arc<str>>; ResourceType::COUNT] = Default::default();
        for ty in ResourceType::ALL {
            for (name, resource) in snapshot.of(ty).resources() {
                names[ty.index()].insert(name.clone());
                encoded.push((ty, resource.clone()));
            }
        }
        let eds = resources
            .clusters
            .iter()
            .filter_map(|c| Some((c.name.clone(), eds_name(c)?)))
            .collect();
        let route_clusters = route_clusters(&resources.routes);
        Pushed {
            resources,
            encoded,
            names,
            eds,
            route_clusters,
        }
    }

    /// True when a pushed resource replaces the `ty` resource `name`.
    pub fn replaces(&self, ty: ResourceType, name: &str) -> bool {
        self.names[ty.index()].contains(name)
    }

    /// True when a pushed EDS cluster asks for the endpoints `name`.
    pub fn asks_eds(&self, name: &str) -> bool {
        self.eds.iter().any(|(_, eds)| eds == name)
    }

    /// Pushed cluster names (which template routes may send to).
    pub fn cluster_names(&self) -> impl Iterator<Item = &str> {
        self.resources.clusters.iter().map(|c| c.name.as_str())
    }

    /// Adds the pushed resources to `builder`, then an empty ClusterLoadAssignment for each
    /// pushed EDS cluster whose endpoints nothing else provides. Returns how many resources it
    /// encoded (the empty ones).
    pub fn add_to(
        &self,
        node_type: &str,
        mut builder: SnapshotBuilder,
        out: &mut Synthesis,
    ) -> (SnapshotBuilder, usize) {
        for (ty, resource) in &self.encoded {
            builder = builder.shared(*ty, resource.clone());
        }
        let mut filled = 0;
        for (cluster, eds) in &self.eds {
            if builder.has(ResourceType::Endpoint, eds) {
                continue;
            }
            builder = builder.endpoints(ClusterLoadAssignment {
                cluster_name: eds.clone(),
                ..Default::default()
            });
            filled += 1;
            out.warnings.push(Warning {
                node_type: node_type.to_owned(),
                file: state_file(node_type),
                message: format!(
                    "pushed EDS cluster {cluster:?} asks for endpoints {eds:?}, which are neither pushed nor discovered; served with no endpoints"
                ),
            });
            out.dangling.push((
                node_type.to_owned(),
                InconsistentSnapshot::MissingEndpoints {
                    cluster: cluster.clone(),
                    eds_name: eds.clone(),
                },
            ));
        }
        (builder, filled)
    }
}

impl Pushed {
    /// A pushed route to a cluster the node type is not served is a warning, as for templates:
    /// Envoy answers 503 for it until the cluster exists.
    pub fn route_warnings(&self, node_type: &str, snapshot: &Snapshot, out: &mut Synthesis) {
        for (cluster, route) in &self.route_clusters {
            if snapshot.of(ResourceType::Cluster).get(cluster).is_none() {
                out.warnings.push(Warning {
                    node_type: node_type.to_owned(),
                    file: state_file(node_type),
                    message: format!(
                        "pushed route configuration {route:?} sends to cluster {cluster:?}, which is neither pushed nor discovered"
                    ),
                });
            }
        }
    }
}

/// How warnings about pushed resources name their source: the push's file in the state
/// directory.
fn state_file(node_type: &str) -> PathBuf {
    PathBuf::from(format!("{node_type}.json"))
}

#[cfg(test)]
mod tests;
