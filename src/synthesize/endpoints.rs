//! Endpoint (EDS) builders.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::{
    address, socket_address::PortSpecifier, Address, HealthStatus, Locality, SocketAddress,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint::HostIdentifier, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::google::protobuf::UInt32Value;

use crate::discover::{self, Health};

/// A discovered cluster's endpoints, with health, load-balancing weight and locality.
///
/// One `LocalityLbEndpoints` per (region, zone), in that order, endpoints sorted by (address,
/// port, id) within each: the same endpoints give the same bytes in any order.
pub fn discovered_load_assignment(cluster: &discover::Cluster) -> ClusterLoadAssignment {
    let mut localities: BTreeMap<(&str, &str), Vec<&discover::Endpoint>> = BTreeMap::new();
    for e in &cluster.endpoints {
        let zone = e.locality.zone.as_deref().unwrap_or_default();
        localities
            .entry((&e.locality.region, zone))
            .or_default()
            .push(e);
    }
    let endpoints = localities
        .into_iter()
        .map(|((region, zone), mut endpoints)| {
            endpoints.sort_by(|a, b| (&a.address, a.port, &a.id).cmp(&(&b.address, b.port, &b.id)));
            LocalityLbEndpoints {
                locality: Some(Locality {
                    region: region.to_owned(),
                    zone: zone.to_owned(),
                    sub_zone: String::new(),
                }),
                lb_endpoints: endpoints.into_iter().map(lb_endpoint).collect(),
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

fn lb_endpoint(e: &discover::Endpoint) -> LbEndpoint {
    LbEndpoint {
        health_status: health_status(e.health) as i32,
        // Envoy refuses a weight of 0; discovery never produces one.
        load_balancing_weight: Some(UInt32Value {
            value: e.weight.max(1),
        }),
        host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
            address: Some(socket_address(&e.address, e.port)),
            ..Default::default()
        })),
        ..Default::default()
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

/// A load assignment for `cluster` with every endpoint in one locality.
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
            ..Default::default()
        }],
        ..Default::default()
    }
}
