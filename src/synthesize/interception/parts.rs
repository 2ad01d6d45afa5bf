//! What the egress and ingress listeners for redirected traffic share: names, listener
//! filters and filter-chain pieces. Depends on no template or inventory type, so templates can
//! build the ingress (`statics.rs`) from it.

use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::CidrRange;
use envoy_types::pb::envoy::config::listener::v3::{
    filter, listener_filter, listener_filter_chain_match_predicate as predicate, Filter,
    FilterChain, FilterChainMatch, ListenerFilter, ListenerFilterChainMatchPredicate,
};
use envoy_types::pb::envoy::config::route::v3::{
    route::Action, route_match::PathSpecifier, Route, RouteMatch,
};
use envoy_types::pb::envoy::extensions::filters::listener::http_inspector::v3::HttpInspector;
use envoy_types::pb::envoy::extensions::filters::listener::original_dst::v3::OriginalDst;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{tcp_proxy, TcpProxy};
use envoy_types::pb::envoy::r#type::v3::Int32Range;
use envoy_types::pb::google::protobuf::UInt32Value;
use envoy_types::util::pack_any;

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
pub(crate) const INSPECTOR_TIMEOUT: Duration = Duration::from_secs(1);

pub(crate) const HTTP_PROTOCOLS: [&str; 2] = ["http/1.1", "h2c"];

/// The cluster reaching the app on `port` of its own task.
pub fn app_cluster_name(port: u16) -> String {
    format!("{PREFIX}app-{port}")
}

pub(crate) fn listener_filters(uninspected_ports: &[u16]) -> Vec<ListenerFilter> {
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

pub(crate) fn single_port(port: u16) -> ListenerFilterChainMatchPredicate {
    ListenerFilterChainMatchPredicate {
        rule: Some(predicate::Rule::DestinationPortRange(Int32Range {
            start: i32::from(port),
            end: i32::from(port) + 1,
        })),
    }
}

pub(crate) fn original_dst() -> ListenerFilter {
    ListenerFilter {
        name: "envoy.filters.listener.original_dst".into(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(pack_any(
            OriginalDst::default(),
        ))),
        ..Default::default()
    }
}

pub(crate) fn tcp_chain(
    name: &str,
    port: Option<u16>,
    addresses: &[&str],
    cluster: &str,
) -> FilterChain {
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

pub(crate) fn chain_match(port: Option<u16>, addresses: &[&str]) -> FilterChainMatch {
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

pub(crate) fn network_filter(name: &str, config: envoy_types::pb::google::protobuf::Any) -> Filter {
    Filter {
        name: name.to_owned(),
        config_type: Some(filter::ConfigType::TypedConfig(config)),
    }
}

pub(crate) fn prefix_route(action: Action) -> Route {
    Route {
        r#match: Some(RouteMatch {
            path_specifier: Some(PathSpecifier::Prefix("/".into())),
            ..Default::default()
        }),
        action: Some(action),
        ..Default::default()
    }
}
