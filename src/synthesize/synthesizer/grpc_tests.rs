//! gRPC node types: what a proxyless client dialing `xds:///<cluster>` is served.

use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::cluster;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::{
    route::Action, route_action::ClusterSpecifier, RouteConfiguration,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, HttpConnectionManager,
};
use prost::Message;

use super::tests::{cluster_of, endpoints_of, inventory, service, templates};
use super::*;
use crate::inventory::RevisionWeight;

const GRPC: &str = "[grpc]\nenabled = true\n";

fn listener_of(snapshot: &Snapshot, name: &str) -> Listener {
    snapshot
        .of(ResourceType::Listener)
        .get(name)
        .unwrap()
        .decode()
        .unwrap()
}

fn routes_of(snapshot: &Snapshot, name: &str) -> RouteConfiguration {
    snapshot
        .of(ResourceType::Route)
        .get(name)
        .unwrap()
        .decode()
        .unwrap()
}

#[test]
fn each_cluster_gets_the_listener_and_routes_a_client_dialing_its_name_asks_for() {
    let templates = templates(&[("grpc", GRPC)]);
    let synthesis = synthesize(
        &inventory([
            service("orders", &["10.0.0.1"]),
            service("api.grpc", &["10.0.0.2"]),
        ]),
        &templates,
    );
    let snapshot = &synthesis.snapshots["grpc"];
    for name in ["orders", "api.grpc"] {
        let listener = listener_of(snapshot, name);
        assert!(
            listener.address.is_none(),
            "a client listener binds nothing"
        );
        let any = listener.api_listener.unwrap().api_listener.unwrap();
        let hcm = HttpConnectionManager::decode(any.value.as_slice()).unwrap();
        let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier else {
            panic!("RDS")
        };
        assert_eq!(rds.route_config_name, name);
        assert_eq!(
            hcm.http_filters.last().unwrap().name,
            "envoy.filters.http.router"
        );
        let routes = routes_of(snapshot, name);
        assert_eq!(routes.virtual_hosts[0].domains, ["*"]);
        let Some(Action::Route(action)) = &routes.virtual_hosts[0].routes[0].action else {
            panic!("a route")
        };
        assert_eq!(
            action.cluster_specifier,
            Some(ClusterSpecifier::Cluster(name.into()))
        );
    }
    assert_eq!(snapshot.check_consistency(), Ok(()));
}

#[test]
fn timeouts_and_retries_are_given_as_grpc_reads_them() {
    let extra = "[route_defaults]\ntimeout = \"3s\"\nretry_policy = { retry_on = \"5xx,unavailable\", num_retries = 2, per_try_timeout = \"1s\" }\n";
    let templates = templates(&[("grpc", &format!("{GRPC}{extra}"))]);
    let mut orders = service("orders", &["10.0.0.1"]);
    orders.route.timeout = Some(Duration::from_millis(800));
    let mut users = service("users", &["10.0.0.2"]);
    users.route.retry_on = Some("5xx,reset".into());
    let synthesis = synthesize(&inventory([orders, users]), &templates);
    let snapshot = &synthesis.snapshots["grpc"];
    let action = |name: &str| {
        let routes = routes_of(snapshot, name);
        let Some(Action::Route(action)) = routes.virtual_hosts[0].routes[0].action.clone() else {
            panic!("a route")
        };
        action
    };
    let orders = action("orders");
    assert!(
        orders.timeout.is_none(),
        "gRPC reads max_stream_duration, not timeout"
    );
    let max = orders
        .max_stream_duration
        .unwrap()
        .max_stream_duration
        .unwrap();
    assert_eq!(max.nanos, 800_000_000);
    let retry = orders.retry_policy.unwrap();
    assert_eq!(retry.retry_on, "unavailable", "only gRPC conditions");
    assert!(retry.per_try_timeout.is_none());
    let users = action("users");
    assert_eq!(
        users
            .max_stream_duration
            .unwrap()
            .max_stream_duration
            .unwrap()
            .seconds,
        3
    );
    assert_eq!(
        users.retry_policy.unwrap().retry_on,
        "unavailable",
        "no gRPC condition left"
    );
}

#[test]
fn a_weighted_service_splits_across_one_cluster_per_revision() {
    let templates = templates(&[("grpc", GRPC)]);
    let mut web = service("web", &["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
    for (e, revision) in web.endpoints.iter_mut().zip([11, 12, 12]) {
        e.revision = Some(revision);
    }
    web.route.weights = vec![
        RevisionWeight {
            revision: 12,
            weight: 20,
        },
        RevisionWeight {
            revision: 11,
            weight: 80,
        },
    ];
    let synthesis = synthesize(&inventory([web]), &templates);
    let snapshot = &synthesis.snapshots["grpc"];
    assert!(
        cluster_of(snapshot, "web").lb_subset_config.is_none(),
        "gRPC has no subsets"
    );
    let count = |name: &str| {
        endpoints_of(snapshot, name)
            .endpoints
            .iter()
            .map(|l| l.lb_endpoints.len())
            .sum::<usize>()
    };
    assert_eq!((count("web"), count("web@11"), count("web@12")), (3, 1, 2));
    let routes = routes_of(snapshot, "web");
    let last = routes.virtual_hosts[0].routes.last().unwrap();
    let Some(Action::Route(action)) = &last.action else {
        panic!("a route")
    };
    let Some(ClusterSpecifier::WeightedClusters(split)) = &action.cluster_specifier else {
        panic!("a split")
    };
    let names: Vec<(&str, u32)> = split
        .clusters
        .iter()
        .map(|c| (c.name.as_str(), c.weight.unwrap().value))
        .collect();
    assert_eq!(names, [("web@12", 20), ("web@11", 80)]);
    assert_eq!(snapshot.check_consistency(), Ok(()));
}

#[test]
fn cluster_settings_grpc_does_not_take_are_dropped_and_said_so() {
    let extra = "[cluster_defaults]\nconnect_timeout = \"1s\"\nlb_policy = \"LEAST_REQUEST\"\ncircuit_breakers = { thresholds = [{ max_connections = 10, max_requests = 50 }] }\noutlier_detection = { consecutive_5xx = 3, interval = \"2s\" }\n";
    let templates = templates(&[("grpc", &format!("{GRPC}{extra}")), ("sidecar", extra)]);
    let synthesis = synthesize(&inventory([service("orders", &["10.0.0.1"])]), &templates);
    let grpc = cluster_of(&synthesis.snapshots["grpc"], "orders");
    assert_eq!(grpc.lb_policy, cluster::LbPolicy::RoundRobin as i32);
    assert!(grpc.connect_timeout.is_none());
    let thresholds = &grpc.circuit_breakers.unwrap().thresholds;
    assert_eq!(thresholds.len(), 1);
    assert_eq!(thresholds[0].max_requests.unwrap().value, 50);
    assert!(thresholds[0].max_connections.is_none());
    let outlier = grpc.outlier_detection.unwrap();
    assert_eq!(outlier.interval.unwrap().seconds, 2);
    assert!(outlier.consecutive_5xx.is_none());
    assert_eq!(
        outlier.enforcing_success_rate.unwrap().value,
        100,
        "stated, not left to a default"
    );
    let warnings: Vec<String> = synthesis
        .warnings
        .iter()
        .filter(|f| f.node_type == "grpc")
        .map(|f| f.message.clone())
        .collect();
    for dropped in [
        "lb_policy LEAST_REQUEST",
        "connect_timeout",
        "circuit_breakers other than DEFAULT max_requests",
        "outlier_detection.consecutive_",
    ] {
        assert!(
            warnings.iter().any(|f| f.contains(dropped)),
            "{dropped} not in {warnings:?}"
        );
    }
    // The Envoy node type keeps all of it.
    let envoy = cluster_of(&synthesis.snapshots["sidecar"], "orders");
    assert_eq!(envoy.lb_policy, cluster::LbPolicy::LeastRequest as i32);
    assert!(
        synthesis.warnings.iter().all(|f| f.node_type != "sidecar"),
        "{:?}",
        synthesis.warnings
    );
}

#[test]
fn pushed_endpoints_get_locality_weights_for_grpc_clients() {
    let mut synthesizer = Synthesizer::new(templates(&[("grpc", GRPC)]));
    let body = br#"{"clusters": [{"name": "legacy", "type": "EDS", "eds_cluster_config": {"eds_config": {"ads": {}}}}],
        "endpoints": [{"cluster_name": "legacy", "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "10.1.1.1", "port_value": 80}}}},
            {"endpoint": {"address": {"socket_address": {"address": "10.1.1.2", "port_value": 80}}}, "load_balancing_weight": 3}]}]}]}"#;
    let pushed = crate::push::parse(body).unwrap();
    synthesizer.set_pushed("grpc", Some(std::sync::Arc::new(pushed)));
    let synthesis = synthesizer.synthesize(&inventory([]));
    let cla = endpoints_of(&synthesis.snapshots["grpc"], "legacy");
    assert_eq!(cla.endpoints[0].load_balancing_weight.unwrap().value, 4);
    assert!(cla.endpoints[0].locality.is_some());
}
