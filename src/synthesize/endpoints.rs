//! Endpoint (EDS) builders.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::{
    address, socket_address::PortSpecifier, Address, HealthStatus, Locality, Metadata,
    SocketAddress,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint::HostIdentifier, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::google::protobuf::{value, Struct, UInt32Value, Value};

use crate::inventory::{self, Health};

/// A discovered cluster's endpoints, with health, load-balancing weight, locality and, for ECS
/// tasks, their revision as metadata, plus their deployment for a service that splits by
/// revision (what its canary routes and subsets select on).
///
/// One `LocalityLbEndpoints` per (region, zone), in that order, endpoints sorted by (address,
/// port, id) within each: the same endpoints give the same bytes in any order. Each locality's
/// weight is the sum of its endpoints' weights: gRPC clients ignore a locality without one, and
/// Envoy uses it only when locality-weighted balancing is on.
///
/// With `local_zone`, for an Envoy in that zone: its zone's localities at priority 0 and the
/// others at priority 1, so traffic stays in the zone and spills over as the zone's endpoints
/// become unhealthy or ejected. When the zone has none of the endpoints, or all of them, every
/// locality stays at priority 0 (Envoy would send everything to priority 1 anyway), which is
/// the bytes of the plain assignment, shared with it.
pub fn discovered_load_assignment(
    cluster: &inventory::Cluster,
    local_zone: Option<&str>,
) -> ClusterLoadAssignment {
    let mut localities: BTreeMap<(&str, &str), Vec<&inventory::Endpoint>> = BTreeMap::new();
    // One endpoint per address: gRPC clients refuse an assignment listing one twice (Cloud Map
    // can hold two instances at one address while an instance is re-registered).
    let mut seen = std::collections::HashSet::new();
    for e in cluster
        .endpoints
        .iter()
        .filter(|e| seen.insert((e.address.as_str(), e.port)))
    {
        let zone = e.locality.zone.as_deref().unwrap_or_default();
        localities
            .entry((&e.locality.region, zone))
            .or_default()
            .push(e);
    }
    let local = local_zone.filter(|z| splits(cluster, z));
    let with_deployment = !cluster.route.weights.is_empty();
    let endpoints = localities
        .into_iter()
        .map(|((region, zone), mut endpoints)| {
            endpoints.sort_by(|a, b| (&a.address, a.port, &a.id).cmp(&(&b.address, b.port, &b.id)));
            let weight: u32 = endpoints.iter().map(|e| e.weight.max(1)).sum();
            LocalityLbEndpoints {
                locality: Some(Locality {
                    region: region.to_owned(),
                    zone: zone.to_owned(),
                    sub_zone: String::new(),
                }),
                lb_endpoints: endpoints
                    .into_iter()
                    .map(|e| lb_endpoint(e, with_deployment))
                    .collect(),
                load_balancing_weight: Some(UInt32Value { value: weight }),
                priority: match local {
                    Some(local) if local != zone => 1,
                    _ => 0,
                },
                ..Default::default()
            }
        })
        .collect();
    ClusterLoadAssignment {
        cluster_name: cluster.name.clone(),
        endpoints,
        ..Default::default()
    }
}

/// `cla` with a weight on every locality that has none (the sum of its endpoints' weights, 1
/// for an endpoint without one) and a locality message on every group: gRPC clients ignore a
/// locality without a weight and refuse one without a locality message. For pushed endpoints;
/// Envoy reads neither unless asked, so nothing changes for it.
pub fn with_locality_weights(mut cla: ClusterLoadAssignment) -> ClusterLoadAssignment {
    for locality in &mut cla.endpoints {
        if locality.load_balancing_weight.is_none_or(|w| w.value == 0) {
            let weight = locality
                .lb_endpoints
                .iter()
                .map(|e| e.load_balancing_weight.map_or(1, |w| w.value.max(1)))
                .sum::<u32>()
                .max(1);
            locality.load_balancing_weight = Some(UInt32Value { value: weight });
        }
        locality.locality.get_or_insert_with(Locality::default);
    }
    cla
}

/// Whether `zone` holds some but not all of `cluster`'s endpoints: only then does an Envoy in
/// that zone get an assignment of its own.
pub fn splits(cluster: &inventory::Cluster, zone: &str) -> bool {
    let local = |e: &&inventory::Endpoint| e.locality.zone.as_deref() == Some(zone);
    let here = cluster.endpoints.iter().filter(local).count();
    here > 0 && here < cluster.endpoints.len()
}

/// The metadata filter that endpoint metadata and route matches use, as Envoy's subset load
/// balancer expects.
pub const LB_METADATA: &str = "envoy.lb";

fn lb_endpoint(e: &inventory::Endpoint, with_deployment: bool) -> LbEndpoint {
    LbEndpoint {
        health_status: health_status(e.health) as i32,
        // Envoy refuses a weight of 0; discovery never produces one.
        load_balancing_weight: Some(UInt32Value {
            value: e.weight.max(1),
        }),
        metadata: lb_metadata(e, with_deployment),
        host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
            address: Some(socket_address(&e.address, e.port)),
            ..Default::default()
        })),
    }
}

/// `envoy.lb: {revision: "12"}`, with `deployment: "ecs-svc/..."` when asked, for what an ECS
/// task has.
///
/// The deployment only comes with a split: a second key makes the metadata a two-entry map,
/// which prost writes in random order, so every such endpoint costs a canonical rewrite when
/// hashed (about twice the cost of the whole assignment); one key encodes canonically as is.
fn lb_metadata(e: &inventory::Endpoint, with_deployment: bool) -> Option<Metadata> {
    let mut fields = BTreeMap::new();
    if let Some(revision) = e.revision {
        fields.insert("revision".to_owned(), string_value(revision.to_string()));
    }
    if let Some(deployment) = e.deployment.as_ref().filter(|_| with_deployment) {
        fields.insert("deployment".to_owned(), string_value(deployment.clone()));
    }
    if fields.is_empty() {
        return None;
    }
    let filter = Struct {
        fields: fields.into_iter().collect(),
    };
    Some(Metadata {
        filter_metadata: [(LB_METADATA.to_owned(), filter)].into_iter().collect(),
        typed_filter_metadata: Default::default(),
    })
}

pub(crate) fn string_value(s: String) -> Value {
    Value {
        kind: Some(value::Kind::StringValue(s)),
    }
}

/// How Envoy should treat an endpoint: `Unknown` still receives traffic, `Draining` gets no new
/// requests.
pub fn health_status(health: Health) -> HealthStatus {
    match health {
        Health::Healthy => HealthStatus::Healthy,
        Health::Unhealthy => HealthStatus::Unhealthy,
        Health::Unknown => HealthStatus::Unknown,
        Health::Draining => HealthStatus::Draining,
    }
}

/// A socket address `ip:port`.
pub fn socket_address(ip: &str, port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.to_owned(),
            port_specifier: Some(PortSpecifier::PortValue(port.into())),
            ..Default::default()
        })),
    }
}

/// A load assignment for `cluster` with every endpoint in one locality (weighted 1, so gRPC
/// clients take it too).
pub fn load_assignment(
    cluster: &str,
    endpoints: impl IntoIterator<Item = (String, u16, HealthStatus)>,
) -> ClusterLoadAssignment {
    let lb_endpoints = endpoints
        .into_iter()
        .map(|(ip, port, health)| LbEndpoint {
            health_status: health as i32,
            host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                address: Some(socket_address(&ip, port)),
                ..Default::default()
            })),
            ..Default::default()
        })
        .collect();
    ClusterLoadAssignment {
        cluster_name: cluster.to_owned(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints,
            load_balancing_weight: Some(UInt32Value { value: 1 }),
            ..Default::default()
        }],
        ..Default::default()
    }
}
