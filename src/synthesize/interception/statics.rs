//! What a node type with `[interception]` has whatever is discovered: the ingress listener to
//! the app's ports and the passthrough and app clusters. Templates add them to the node
//! type's own resources.

use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::{cluster, Cluster};
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint::HostIdentifier, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::{
    route::Action, route_action::ClusterSpecifier, RouteAction, RouteConfiguration, VirtualHost,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::{
    UpstreamProtocolOptions, UseDownstreamHttpConfig,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
use envoy_types::pb::google::protobuf::BoolValue;
use envoy_types::util::pack_any;

use super::parts::{
    app_cluster_name, listener_filters, network_filter, original_dst, prefix_route, tcp_chain,
    HTTP_PROTOCOLS, INGRESS, INSPECTOR_TIMEOUT, PASSTHROUGH,
};
use crate::synthesize::clusters::{duration, HTTP_PROTOCOL_OPTIONS};
use crate::synthesize::endpoints::socket_address;
use crate::synthesize::listeners::rds_connection_manager;

/// The ports and outbound rule of `[interception]` that the static resources depend on.
pub struct Ports<'a> {
    pub ingress_port: u16,
    pub app_ports: &'a [u16],
    pub registry_only: bool,
}

/// What the node type's template gains: the ingress listener (when there are app ports) and
/// the passthrough and app clusters. They depend on no discovery. A `secured` ingress (the
/// node type has `[mtls]`, which wraps each chain in TLS and RBAC) takes every connection as
/// TCP: the HTTP inspector cannot see into TLS.
pub fn static_resources(ports: &Ports, secured: bool) -> (Vec<Listener>, Vec<Cluster>) {
    let mut clusters: Vec<Cluster> = ports.app_ports.iter().map(|p| app_cluster(*p)).collect();
    if !ports.registry_only {
        clusters.push(passthrough_cluster());
    }
    let listeners = match ports.app_ports.is_empty() {
        true => Vec::new(),
        false => vec![ingress_listener(ports, secured)],
    };
    (listeners, clusters)
}

/// Redirected connections to the app's ports, to the app on 127.0.0.1: HTTP through a
/// connection manager that tells the app who called (`X-Forwarded-For`), the rest as is.
fn ingress_listener(ports: &Ports, secured: bool) -> Listener {
    let mut chains = Vec::new();
    for port in ports.app_ports {
        let cluster = app_cluster_name(*port);
        if secured {
            chains.push(tcp_chain(
                &format!("tcp:{port}"),
                Some(*port),
                &[],
                &cluster,
            ));
            continue;
        }
        let mut hcm = rds_connection_manager("interception_ingress", "");
        hcm.use_remote_address = Some(BoolValue { value: true });
        hcm.route_specifier = Some(RouteSpecifier::RouteConfig(RouteConfiguration {
            name: cluster.clone(),
            virtual_hosts: vec![VirtualHost {
                name: cluster.clone(),
                domains: vec!["*".into()],
                routes: vec![prefix_route(Action::Route(RouteAction {
                    cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.clone())),
                    timeout: Some(duration(Duration::ZERO)),
                    ..Default::default()
                }))],
                ..Default::default()
            }],
            ..Default::default()
        }));
        let mut http = tcp_chain(&format!("http:{port}"), Some(*port), &[], &cluster);
        http.filter_chain_match
            .as_mut()
            .expect("a port")
            .application_protocols = HTTP_PROTOCOLS.map(String::from).to_vec();
        http.filters = vec![network_filter(
            "envoy.filters.network.http_connection_manager",
            pack_any(hcm),
        )];
        chains.push(http);
        chains.push(tcp_chain(
            &format!("tcp:{port}"),
            Some(*port),
            &[],
            &cluster,
        ));
    }
    let mut filters = vec![original_dst()];
    if !secured {
        filters = listener_filters(&[]);
    }
    Listener {
        name: INGRESS.to_owned(),
        address: Some(socket_address("0.0.0.0", ports.ingress_port)),
        listener_filters: filters,
        listener_filters_timeout: Some(duration(INSPECTOR_TIMEOUT)),
        continue_on_listener_filters_timeout: true,
        filter_chains: chains,
        ..Default::default()
    }
}

fn app_cluster(port: u16) -> Cluster {
    let name = app_cluster_name(port);
    let endpoint = LbEndpoint {
        host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
            address: Some(socket_address("127.0.0.1", port)),
            ..Default::default()
        })),
        ..Default::default()
    };
    Cluster {
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: name.clone(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![endpoint],
                ..Default::default()
            }],
            ..Default::default()
        }),
        name,
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        connect_timeout: Some(duration(Duration::from_secs(1))),
        typed_extension_protocol_options: downstream_protocol(),
        ..Default::default()
    }
}

fn passthrough_cluster() -> Cluster {
    Cluster {
        name: PASSTHROUGH.to_owned(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::OriginalDst as i32,
        )),
        lb_policy: cluster::LbPolicy::ClusterProvided as i32,
        connect_timeout: Some(duration(Duration::from_secs(5))),
        typed_extension_protocol_options: downstream_protocol(),
        ..Default::default()
    }
}

/// Upstream HTTP as the app spoke it (h2c stays HTTP/2: gRPC needs it).
fn downstream_protocol() -> std::collections::HashMap<String, envoy_types::pb::google::protobuf::Any>
{
    let options = HttpProtocolOptions {
        upstream_protocol_options: Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(
            UseDownstreamHttpConfig {
                http2_protocol_options: Some(Default::default()),
                ..Default::default()
            },
        )),
        ..Default::default()
    };
    [(HTTP_PROTOCOL_OPTIONS.to_owned(), pack_any(options))].into()
}
