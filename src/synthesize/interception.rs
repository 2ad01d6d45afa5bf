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

use envoy_types::pb::envoy::config::core::v3::{data_source, DataSource};
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, FilterChainMatch, Listener};
use envoy_types::pb::envoy::config::route::v3::{
    route::Action, route_action::ClusterSpecifier, DirectResponseAction, RouteAction,
    RouteConfiguration, VirtualHost,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{tcp_proxy, TcpProxy};
use envoy_types::util::pack_any;

use super::clusters::duration;
use super::endpoints::socket_address;
use super::listeners::rds_connection_manager;
use super::routes::virtual_host;
use super::templates::Interception;
use crate::inventory::{self, Protocol, Source};
pub use parts::{app_cluster_name, EGRESS, INGRESS, OUTSIDE, PASSTHROUGH};
use parts::{
    chain_match, listener_filters, network_filter, prefix_route, tcp_chain, HTTP_PROTOCOLS,
    INSPECTOR_TIMEOUT, PREFIX,
};

pub mod parts;
pub mod statics;

/// The egress listener for `services` (name, discovered cluster): its chains from their
/// addresses and protocols.
pub fn egress_listener(spec: &Interception, services: &[(&str, &inventory::Cluster)]) -> Listener {
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

/// The egress route configuration: one virtual host per service, then the catch-all:
/// passthrough, or 403 under `registry_only`. A domain a service shares with an earlier one
/// stays with the earlier (Envoy refuses a route configuration with a domain twice): the
/// (service, domain) pairs left out come back too, for a warning.
pub fn egress_routes(
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
