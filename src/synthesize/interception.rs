//! Transparent interception (`[interception]`): the listeners, route configuration and
//! clusters that serve the traffic ECS's `proxyConfiguration` redirects into Envoy, so apps
//! keep calling `orders.prod.local:8080` with no proxy setting.
//!
//! Egress (`interception-egress`, on `ProxyEgressPort`): the `original_dst` listener filter
//! restores where the app sent a connection, and the HTTP inspector tells HTTP from the rest.
//! For each port the services' endpoints listen on, one HTTP chain holds every address on that
//! port and routes by `Host` (route configuration `interception-egress`: a virtual host per
//! service whose domains are its cluster name, Cloud Map name and `hosts` tag, each with and
//! without its ports), and one TCP chain per service matches its own addresses and sends to its
//! cluster. HTTP to any other address still routes by `Host` (an app may have resolved the name
//! to an address ecs-xds does not know). What matches no service goes where it was sent (the
//! `ORIGINAL_DST` cluster `interception-passthrough`), or nowhere with `outbound =
//! "registry_only"`: Envoy closes the connection (`no_filter_chain_match`) and answers HTTP to
//! an unknown host with a 403 (virtual host `outside-the-mesh`).
//!
//! Ingress (`interception-ingress`, on `ProxyIngressPort`): one chain per app port to the app
//! on 127.0.0.1, HTTP with `X-Forwarded-For` set to the caller's address.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::{cluster, Cluster};
use envoy_types::pb::envoy::config::core::v3::{data_source, CidrRange, DataSource};
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint::HostIdentifier, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::envoy::config::listener::v3::{
    filter, listener_filter, listener_filter_chain_match_predicate as predicate, Filter,
    FilterChain, FilterChainMatch, Listener, ListenerFilter, ListenerFilterChainMatchPredicate,
};
use envoy_types::pb::envoy::config::route::v3::{
    route::Action, route_action::ClusterSpecifier, route_match::PathSpecifier,
    DirectResponseAction, Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost,
};
use envoy_types::pb::envoy::extensions::filters::listener::http_inspector::v3::HttpInspector;
use envoy_types::pb::envoy::extensions::filters::listener::original_dst::v3::OriginalDst;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    tcp_proxy, TcpProxy,
};
use envoy_types::pb::envoy::r#type::v3::Int32Range;
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};
use envoy_types::util::pack_any;

use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::{
    UpstreamProtocolOptions, UseDownstreamHttpConfig,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;

use super::clusters::{duration, HTTP_PROTOCOL_OPTIONS};
use super::endpoints::socket_address;
use super::listeners::rds_connection_manager;
use super::routes::virtual_host;
use super::templates::Interception;
use crate::inventory::{self, Protocol, Source};

/// The egress listener's and its route configuration's name.
pub const EGRESS: &str = "interception-egress";
/// The ingress listener's name.
pub const INGRESS: &str = "interception-ingress";
/// The `ORIGINAL_DST` cluster: traffic to where the app sent it.
pub const PASSTHROUGH: &str = "interception-passthrough";
/// The virtual host answering 403 under `registry_only`.
pub const OUTSIDE: &str = "outside-the-mesh";
/// Resource names synthesis owns on a node type with `[interception]`.
pub const PREFIX: &str = "interception-";

/// How long the HTTP inspector waits for a silent client before the connection is taken as
/// TCP (a server that speaks first); a service tagged `protocol = tcp` is never inspected.
const INSPECTOR_TIMEOUT: Duration = Duration::from_secs(1);
const HTTP_PROTOCOLS: [&str; 2] = ["http/1.1", "h2c"];

/// The cluster reaching the app on `port` of its own task.
pub fn app_cluster_name(port: u16) -> String {
    format!("{PREFIX}app-{port}")
}

/// What the node type's template gains: the ingress listener (when there are app ports) and
/// the passthrough and app clusters. They depend on no discovery. A `secured` ingress (the
/// node type has `[mtls]`, which wraps each chain in TLS and RBAC) takes every connection as
/// TCP: the HTTP inspector cannot see into TLS.
pub fn static_resources(spec: &Interception, secured: bool) -> (Vec<Listener>, Vec<Cluster>) {
    let mut clusters: Vec<Cluster> = spec.app_ports.iter().map(|p| app_cluster(*p)).collect();
    if !spec.registry_only {
        clusters.push(passthrough_cluster());
    }
    let listeners = match spec.app_ports.is_empty() {
        true => Vec::new(),
        false => vec![ingress_listener(spec, secured)],
    };
    (listeners, clusters)
}

/// The egress listener and its route configuration for `services` (name, discovered cluster),
/// with the domains dropped because an earlier service has them (for a warning).
pub fn egress(
    spec: &Interception,
    defaults: &RouteAction,
    services: &[(&str, &inventory::Cluster)],
) -> (Listener, RouteConfiguration, Vec<(String, String)>) {
    let (routes, dropped) = egress_routes(spec, defaults, services);
    (egress_listener(spec, services), routes, dropped)
}

fn egress_listener(spec: &Interception, services: &[(&str, &inventory::Cluster)]) -> Listener {
    let owners = address_owners(services);
    // By port, each service's addresses on it.
    let mut by_port: BTreeMap<u16, BTreeMap<&str, Vec<&str>>> = BTreeMap::new();
    for ((address, port), name) in &owners {
        let on_port = by_port.entry(*port).or_default();
        on_port.entry(*name).or_default().push(address);
    }
    let tcp_only = tcp_only_ports(services, &by_port);
    let mut chains = Vec::new();
    for (port, services) in &by_port {
        let mut every: Vec<&str> = services.values().flatten().copied().collect();
        every.sort_unstable();
        chains.push(http_chain(Some(*port), &every));
        chains.push(http_chain(Some(*port), &[]));
        for (name, addresses) in services {
            chains.push(tcp_chain(
                &format!("tcp:{name}:{port}"),
                Some(*port),
                addresses,
                name,
            ));
        }
    }
    chains.push(http_chain(None, &[]));
    chains.push(loop_chain(spec.egress_port));
    Listener {
        name: EGRESS.to_owned(),
        // ECS redirects the task's own connections (OUTPUT) to 127.0.0.1: nothing from outside
        // the task reaches this listener.
        address: Some(socket_address("127.0.0.1", spec.egress_port)),
        listener_filters: listener_filters(&tcp_only),
        listener_filters_timeout: Some(duration(INSPECTOR_TIMEOUT)),
        continue_on_listener_filters_timeout: true,
        filter_chains: chains,
        default_filter_chain: (!spec.registry_only)
            .then(|| tcp_chain("passthrough", None, &[], PASSTHROUGH)),
        ..Default::default()
    }
}

/// Which service each (address, port) of an endpoint belongs to: the first claiming it, ECS
/// services before Cloud Map ones (an ECS service registered in Cloud Map is both), as Envoy
/// refuses a listener whose chains overlap.
fn address_owners<'a>(
    services: &[(&'a str, &'a inventory::Cluster)],
) -> BTreeMap<(&'a str, u16), &'a str> {
    let mut owners = BTreeMap::new();
    let ecs_first = |(_, c): &&(&str, &inventory::Cluster)| !matches!(c.source, Source::Ecs { .. });
    let mut ordered: Vec<&(&str, &inventory::Cluster)> = services.iter().collect();
    ordered.sort_by_key(ecs_first);
    for (name, cluster) in ordered {
        for e in &cluster.endpoints {
            owners.entry((e.address.as_str(), e.port)).or_insert(*name);
        }
    }
    owners
}

/// Ports only `protocol = tcp` services listen on: the HTTP inspector is off for them.
fn tcp_only_ports(
    services: &[(&str, &inventory::Cluster)],
    by_port: &BTreeMap<u16, BTreeMap<&str, Vec<&str>>>,
) -> Vec<u16> {
    let tcp = |name: &str| {
        let cluster = services.iter().find(|(n, _)| *n == name).map(|(_, c)| c);
        cluster.is_some_and(|c| c.route.protocol == Some(Protocol::Tcp))
    };
    let ports = by_port.iter().filter(|(_, s)| s.keys().all(|n| tcp(n)));
    ports.map(|(port, _)| *port).collect()
}

fn listener_filters(uninspected_ports: &[u16]) -> Vec<ListenerFilter> {
    let mut rules: Vec<_> = uninspected_ports.iter().map(|p| single_port(*p)).collect();
    // A match set takes two rules or more.
    let disabled = match rules.len() {
        0 | 1 => rules.pop(),
        _ => Some(ListenerFilterChainMatchPredicate {
            rule: Some(predicate::Rule::OrMatch(predicate::MatchSet { rules })),
        }),
    };
    let inspector = ListenerFilter {
        name: "envoy.filters.listener.http_inspector".into(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(pack_any(
            HttpInspector::default(),
        ))),
        filter_disabled: disabled,
    };
    vec![original_dst(), inspector]
}

fn single_port(port: u16) -> ListenerFilterChainMatchPredicate {
    ListenerFilterChainMatchPredicate {
        rule: Some(predicate::Rule::DestinationPortRange(Int32Range {
            start: i32::from(port),
            end: i32::from(port) + 1,
        })),
    }
}

fn original_dst() -> ListenerFilter {
    ListenerFilter {
        name: "envoy.filters.listener.original_dst".into(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(pack_any(
            OriginalDst::default(),
        ))),
        ..Default::default()
    }
}

/// A chain matching `addresses` (all of them when empty) on `port` (any when `None`) for HTTP,
/// routed by `Host`.
fn http_chain(port: Option<u16>, addresses: &[&str]) -> FilterChain {
    let hcm = rds_connection_manager("interception_egress", EGRESS);
    let name = match (port, addresses.is_empty()) {
        (Some(port), false) => format!("http:{port}"),
        (Some(port), true) => format!("http:any:{port}"),
        (None, _) => "http:any".to_owned(),
    };
    FilterChain {
        name,
        filter_chain_match: Some(FilterChainMatch {
            application_protocols: HTTP_PROTOCOLS.map(String::from).to_vec(),
            ..chain_match(port, addresses)
        }),
        filters: vec![network_filter(
            "envoy.filters.network.http_connection_manager",
            pack_any(hcm),
        )],
        ..Default::default()
    }
}

fn tcp_chain(name: &str, port: Option<u16>, addresses: &[&str], cluster: &str) -> FilterChain {
    let proxy = TcpProxy {
        stat_prefix: format!("interception_{cluster}"),
        cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(cluster.to_owned())),
        ..Default::default()
    };
    FilterChain {
        name: name.to_owned(),
        filter_chain_match: (port.is_some() || !addresses.is_empty())
            .then(|| chain_match(port, addresses)),
        filters: vec![network_filter(
            "envoy.filters.network.tcp_proxy",
            pack_any(proxy),
        )],
        ..Default::default()
    }
}

/// A connection made to the listener itself (not redirected: its original destination is the
/// listener) would be passed through to the listener again, without end. Its chain sends to a
/// cluster nobody serves, so Envoy closes it (`tcp.interception_loop.downstream_cx_no_route`).
fn loop_chain(port: u16) -> FilterChain {
    let mut chain = tcp_chain("loop", Some(port), &["127.0.0.1"], "interception-loop");
    chain.filters = vec![network_filter(
        "envoy.filters.network.tcp_proxy",
        pack_any(TcpProxy {
            stat_prefix: "interception_loop".into(),
            cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(format!(
                "{PREFIX}refused"
            ))),
            ..Default::default()
        }),
    )];
    chain
}

fn chain_match(port: Option<u16>, addresses: &[&str]) -> FilterChainMatch {
    FilterChainMatch {
        destination_port: port.map(|p| UInt32Value { value: p.into() }),
        prefix_ranges: (addresses.iter())
            .map(|a| CidrRange {
                address_prefix: (*a).to_owned(),
                prefix_len: Some(UInt32Value { value: 32 }),
            })
            .collect(),
        ..Default::default()
    }
}

fn network_filter(name: &str, config: envoy_types::pb::google::protobuf::Any) -> Filter {
    Filter {
        name: name.to_owned(),
        config_type: Some(filter::ConfigType::TypedConfig(config)),
    }
}

/// One virtual host per service, then the catch-all: passthrough, or 403 under
/// `registry_only`. A domain a service shares with an earlier one stays with the earlier
/// (Envoy refuses a route configuration with a domain twice).
fn egress_routes(
    spec: &Interception,
    defaults: &RouteAction,
    services: &[(&str, &inventory::Cluster)],
) -> (RouteConfiguration, Vec<(String, String)>) {
    let mut taken = BTreeSet::new();
    let mut dropped = Vec::new();
    let mut hosts = Vec::new();
    for (name, cluster) in services {
        let mut domains = Vec::new();
        for domain in domains_of(name, cluster) {
            match taken.insert(domain.clone()) {
                true => domains.push(domain),
                false => dropped.push(((*name).to_owned(), domain)),
            }
        }
        hosts.push(virtual_host(domains, defaults, name, cluster));
    }
    hosts.push(catch_all(spec.registry_only));
    let routes = RouteConfiguration {
        name: EGRESS.to_owned(),
        virtual_hosts: hosts,
        ..Default::default()
    };
    (routes, dropped)
}

/// The names apps call a service by, each alone and with any port (`orders.prod.local:*`: the
/// port an app dials need not be the one its tasks listen on).
fn domains_of(name: &str, cluster: &inventory::Cluster) -> Vec<String> {
    let mut names = vec![name.to_owned()];
    if let Source::CloudMap { namespace, service } = &cluster.source {
        names.push(format!("{service}.{namespace}"));
    }
    names.extend(cluster.route.hosts.iter().cloned());
    let mut domains = Vec::new();
    for name in names {
        if !name.contains(':') {
            domains.push(format!("{name}:*"));
        }
        domains.push(name);
    }
    domains
}

fn catch_all(registry_only: bool) -> VirtualHost {
    let action = match registry_only {
        true => Action::DirectResponse(DirectResponseAction {
            status: 403,
            body: Some(DataSource {
                specifier: Some(data_source::Specifier::InlineString(
                    "ecs-xds: this host is outside the mesh (outbound = \"registry_only\")\n"
                        .into(),
                )),
                ..Default::default()
            }),
            ..Default::default()
        }),
        // Where the app sent it, with no route timeout: a passthrough may be a long poll.
        false => Action::Route(RouteAction {
            cluster_specifier: Some(ClusterSpecifier::Cluster(PASSTHROUGH.into())),
            timeout: Some(duration(Duration::ZERO)),
            ..Default::default()
        }),
    };
    VirtualHost {
        name: match registry_only {
            true => OUTSIDE.to_owned(),
            false => PASSTHROUGH.to_owned(),
        },
        domains: vec!["*".into()],
        routes: vec![prefix_route(action)],
        ..Default::default()
    }
}

fn prefix_route(action: Action) -> Route {
    Route {
        r#match: Some(RouteMatch {
            path_specifier: Some(PathSpecifier::Prefix("/".into())),
            ..Default::default()
        }),
        action: Some(action),
        ..Default::default()
    }
}

/// Redirected connections to the app's ports, to the app on 127.0.0.1: HTTP through a
/// connection manager that tells the app who called (`X-Forwarded-For`), the rest as is.
fn ingress_listener(spec: &Interception, secured: bool) -> Listener {
    let mut chains = Vec::new();
    for port in &spec.app_ports {
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
        address: Some(socket_address("0.0.0.0", spec.ingress_port)),
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
