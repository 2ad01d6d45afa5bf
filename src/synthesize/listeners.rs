//! Listener (LDS) and route (RDS) builders.

use envoy_types::pb::envoy::config::listener::v3::{filter, Filter, FilterChain, Listener};
use envoy_types::pb::envoy::config::route::v3::{
    route::Action, route_action::ClusterSpecifier, route_match::PathSpecifier, Route, RouteAction,
    RouteConfiguration, RouteMatch, VirtualHost,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, http_filter, HttpConnectionManager, HttpFilter, Rds,
};
use envoy_types::util::pack_any;

use super::ads_config_source;
use super::endpoints::socket_address;

/// A connection manager whose routes come over ADS as `route_config`, with the router as its
/// only (and last) filter: what Envoy listeners and gRPC API listeners both need.
pub fn rds_connection_manager(stat_prefix: &str, route_config: &str) -> HttpConnectionManager {
    HttpConnectionManager {
        stat_prefix: stat_prefix.to_owned(),
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: Some(ads_config_source()),
            route_config_name: route_config.to_owned(),
        })),
        http_filters: vec![HttpFilter {
            name: "envoy.filters.http.router".into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(
                Router::default(),
            ))),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// An HTTP listener on `ip:port` whose routes come over ADS as `route_config`.
pub fn http_listener(name: &str, ip: &str, port: u16, route_config: &str) -> Listener {
    let hcm = rds_connection_manager(name, route_config);
    Listener {
        name: name.to_owned(),
        address: Some(socket_address(ip, port)),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(pack_any(hcm))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A route configuration with one virtual host per `(domains, cluster)`, each sending every
/// path to its cluster.
pub fn route_configuration<'a>(
    name: &str,
    virtual_hosts: impl IntoIterator<Item = (Vec<String>, &'a str)>,
) -> RouteConfiguration {
    RouteConfiguration {
        name: name.to_owned(),
        virtual_hosts: virtual_hosts
            .into_iter()
            .map(|(domains, cluster)| VirtualHost {
                name: cluster.to_owned(),
                domains,
                routes: vec![Route {
                    r#match: Some(RouteMatch {
                        path_specifier: Some(PathSpecifier::Prefix("/".into())),
                        ..Default::default()
                    }),
                    action: Some(Action::Route(RouteAction {
                        cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.to_owned())),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}
