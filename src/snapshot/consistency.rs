//! The consistency check a snapshot passes before it is published.
//!
//! A dangling reference is exactly what leaves an Envoy cluster or listener stuck warming, so it
//! is refused here rather than discovered in Envoy's stats.

use std::collections::BTreeSet;

use envoy_types::pb::envoy::config::cluster::v3::{cluster, Cluster};
use envoy_types::pb::envoy::config::listener::v3::{filter, Listener};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, HttpConnectionManager,
};
use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};

use super::{ResourceType, Snapshot};

/// Why a snapshot was refused: each dangling reference, named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InconsistentSnapshot {
    /// A ClusterLoadAssignment that no EDS cluster asks for.
    #[error("endpoints {0:?} belong to no CDS cluster of type EDS")]
    OrphanEndpoints(String),
    /// An EDS cluster whose ClusterLoadAssignment is missing; Envoy would never finish warming it.
    #[error("EDS cluster {cluster:?} needs endpoints {eds_name:?}, which the snapshot lacks")]
    MissingEndpoints { cluster: String, eds_name: String },
    /// A RouteConfiguration that no listener references.
    #[error("route configuration {0:?} is referenced by no listener")]
    OrphanRoute(String),
    /// A listener that asks RDS for a route configuration the snapshot lacks.
    #[error(
        "listener {listener:?} uses RDS route configuration {route:?}, which the snapshot lacks"
    )]
    MissingRoute { listener: String, route: String },
    /// A resource that does not decode as its type.
    #[error("{ty} resource {name:?} does not decode: {reason}")]
    Undecodable {
        ty: ResourceType,
        name: String,
        reason: String,
    },
}

pub(super) fn check(snapshot: &Snapshot) -> Result<(), InconsistentSnapshot> {
    check_endpoints(snapshot)?;
    check_routes(snapshot)
}

fn check_endpoints(snapshot: &Snapshot) -> Result<(), InconsistentSnapshot> {
    let mut eds_names = BTreeSet::new();
    for resource in snapshot.of(ResourceType::Cluster).resources().values() {
        let cluster: Cluster =
            resource
                .decode()
                .map_err(|e| InconsistentSnapshot::Undecodable {
                    ty: ResourceType::Cluster,
                    name: resource.name().to_string(),
                    reason: e.to_string(),
                })?;
        if let Some(eds_name) = eds_name(&cluster) {
            if snapshot.of(ResourceType::Endpoint).get(&eds_name).is_none() {
                return Err(InconsistentSnapshot::MissingEndpoints {
                    cluster: cluster.name,
                    eds_name,
                });
            }
            eds_names.insert(eds_name);
        }
    }
    match snapshot
        .of(ResourceType::Endpoint)
        .resources()
        .keys()
        .find(|name| !eds_names.contains(&***name))
    {
        Some(orphan) => Err(InconsistentSnapshot::OrphanEndpoints(orphan.to_string())),
        None => Ok(()),
    }
}

/// The name an EDS cluster asks EDS for; `None` for clusters of other types.
pub(crate) fn eds_name(cluster: &Cluster) -> Option<String> {
    let eds = cluster::DiscoveryType::Eds as i32;
    match cluster.cluster_discovery_type {
        Some(cluster::ClusterDiscoveryType::Type(t)) if t == eds => {}
        _ => return None,
    }
    let service_name = cluster
        .eds_cluster_config
        .as_ref()
        .map(|c| c.service_name.as_str())
        .unwrap_or_default();
    Some(if service_name.is_empty() {
        cluster.name.clone()
    } else {
        service_name.to_owned()
    })
}

fn check_routes(snapshot: &Snapshot) -> Result<(), InconsistentSnapshot> {
    let mut referenced = BTreeSet::new();
    for resource in snapshot.of(ResourceType::Listener).resources().values() {
        let listener: Listener =
            resource
                .decode()
                .map_err(|e| InconsistentSnapshot::Undecodable {
                    ty: ResourceType::Listener,
                    name: resource.name().to_string(),
                    reason: e.to_string(),
                })?;
        for route in rds_names(&listener) {
            if snapshot.of(ResourceType::Route).get(&route).is_none() {
                return Err(InconsistentSnapshot::MissingRoute {
                    listener: listener.name,
                    route,
                });
            }
            referenced.insert(route);
        }
    }
    match snapshot
        .of(ResourceType::Route)
        .resources()
        .keys()
        .find(|name| !referenced.contains(&***name))
    {
        Some(orphan) => Err(InconsistentSnapshot::OrphanRoute(orphan.to_string())),
        None => Ok(()),
    }
}

/// Every RDS route configuration name the listener's HTTP connection managers ask for.
pub(crate) fn rds_names(listener: &Listener) -> Vec<String> {
    let chains = listener
        .filter_chains
        .iter()
        .chain(listener.default_filter_chain.as_ref());
    let filter_configs =
        chains
            .flat_map(|chain| &chain.filters)
            .filter_map(|f| match &f.config_type {
                Some(filter::ConfigType::TypedConfig(any)) => Some(any),
                _ => None,
            });
    let api_listener = listener
        .api_listener
        .as_ref()
        .and_then(|api| api.api_listener.as_ref());
    filter_configs
        .chain(api_listener)
        .filter_map(http_connection_manager)
        .filter_map(|hcm| match hcm.route_specifier {
            Some(RouteSpecifier::Rds(rds)) => Some(rds.route_config_name),
            _ => None,
        })
        .collect()
}

fn http_connection_manager(any: &Any) -> Option<HttpConnectionManager> {
    if any.type_url != HttpConnectionManager::type_url() {
        return None;
    }
    HttpConnectionManager::decode(any.value.as_slice()).ok()
}
