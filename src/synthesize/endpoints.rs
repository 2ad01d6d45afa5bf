//! Endpoint (EDS) builders.

use envoy_types::pb::envoy::config::core::v3::{
    address, socket_address::PortSpecifier, Address, HealthStatus, SocketAddress,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint::HostIdentifier, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};

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
