//! Traffic policy in synthesized snapshots: route defaults and a service's own settings,
//! weighted revisions, circuit breakers and outlier detection, and zone-aware endpoints.

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::RoutingPriority;
use envoy_types::pb::envoy::config::route::v3::{
    route::Action, route_action::ClusterSpecifier, RouteAction, RouteConfiguration,
};
use envoy_types::pb::google::protobuf::value::Kind;

use super::tests::{cluster_of, endpoint, endpoints_of, inventory, service, template, templates};
use super::*;
use crate::inventory::{Health, OutlierDetection, RevisionWeight};
use crate::synthesize::routes::REVISION_HEADER;

fn routes_of(snapshot: &Snapshot) -> RouteConfiguration {
    snapshot
        .of(ResourceType::Route)
        .get("egress")
        .unwrap()
        .decode()
        .unwrap()
}

/// The routes of `cluster`'s virtual host, as (header match, action).
fn host_routes(snapshot: &Snapshot, cluster: &str) -> Vec<(Option<String>, RouteAction)> {
    let config = routes_of(snapshot);
    let host = config
        .virtual_hosts
        .iter()
        .find(|h| h.name == cluster)
        .unwrap();
    host.routes
        .iter()
        .map(|r| {
            let header = r
                .r#match
                .as_ref()
                .unwrap()
                .headers
                .first()
                .map(|h| h.name.clone());
            let Some(Action::Route(action)) = &r.action else {
                panic!("a route action")
            };
            (header, action.clone())
        })
        .collect()
}

fn canary(revisions: &[(u32, u32)]) -> inventory::Cluster {
    let mut web = service("web", &["10.0.0.1", "10.0.0.2"]);
    web.endpoints[0].revision = Some(11);
    web.endpoints[1].revision = Some(12);
    web.route.weights = revisions
        .iter()
        .map(|&(revision, weight)| RevisionWeight { revision, weight })
        .collect();
    web
}

#[test]
fn route_defaults_apply_and_a_service_overrides_them_field_by_field() {
    let extra = "[route_defaults]\ntimeout = \"3s\"\nretry_policy = { retry_on = \"5xx\", num_retries = 2 }\n";
    let templates = templates(&[("sidecar", &template(extra))]);
    let mut strict = service("strict", &["10.0.0.1"]);
    strict.route.retries = Some(0);
    strict.route.timeout = Some(Duration::from_millis(250));
    let mut patient = service("patient", &["10.0.0.2"]);
    patient.route.idle_timeout = Some(Duration::from_secs(60));
    patient.route.per_try_timeout = Some(Duration::from_secs(1));
    let plain = service("plain", &["10.0.0.3"]);
    let synthesis = synthesize(&inventory([strict, patient, plain]), &templates);
    let snapshot = &synthesis.snapshots["sidecar"];

    let (_, plain) = host_routes(snapshot, "plain").remove(0);
    assert_eq!(plain.timeout.unwrap().seconds, 3);
    let retry = plain.retry_policy.unwrap();
    assert_eq!(
        (retry.retry_on.as_str(), retry.num_retries.unwrap().value),
        ("5xx", 2)
    );

    let (_, strict) = host_routes(snapshot, "strict").remove(0);
    assert_eq!(strict.timeout.unwrap().nanos, 250_000_000);
    assert!(
        strict.retry_policy.is_none(),
        "retries=0 turns the default off"
    );

    let (_, patient) = host_routes(snapshot, "patient").remove(0);
    assert_eq!(patient.idle_timeout.unwrap().seconds, 60);
    let retry = patient.retry_policy.unwrap();
    assert_eq!(retry.per_try_timeout.unwrap().seconds, 1);
    assert_eq!(
        retry.num_retries.unwrap().value,
        2,
        "the default's count stays"
    );
}

#[test]
fn retries_asked_for_without_a_condition_retry_on_server_and_connection_failures() {
    let templates = templates(&[("sidecar", &template(""))]);
    let mut orders = service("orders", &["10.0.0.1"]);
    orders.route.retries = Some(3);
    let synthesis = synthesize(&inventory([orders]), &templates);
    let (_, action) = host_routes(&synthesis.snapshots["sidecar"], "orders").remove(0);
    let retry = action.retry_policy.unwrap();
    assert_eq!(retry.retry_on, crate::synthesize::routes::DEFAULT_RETRY_ON);
    assert_eq!(retry.num_retries.unwrap().value, 3);
}

#[test]
fn weights_split_the_route_by_revision_with_a_pinned_route_per_running_revision() {
    let templates = templates(&[("sidecar", &template(""))]);
    let synthesis = synthesize(&inventory([canary(&[(12, 10), (11, 90)])]), &templates);
    let snapshot = &synthesis.snapshots["sidecar"];
    let routes = host_routes(snapshot, "web");
    assert_eq!(routes.len(), 3, "two pinned routes and the split");
    for (i, revision) in ["11", "12"].into_iter().enumerate() {
        let (header, action) = &routes[i];
        assert_eq!(header.as_deref(), Some(REVISION_HEADER));
        let matched = &action.metadata_match.as_ref().unwrap().filter_metadata["envoy.lb"];
        let wanted = Some(Kind::StringValue(revision.into()));
        assert_eq!(matched.fields["revision"].kind, wanted);
    }
    let (header, split) = &routes[2];
    assert!(header.is_none());
    let Some(ClusterSpecifier::WeightedClusters(weighted)) = &split.cluster_specifier else {
        panic!("a weighted split: {split:?}")
    };
    let weights: Vec<(String, u32)> = weighted
        .clusters
        .iter()
        .map(|c| (c.name.clone(), c.weight.as_ref().unwrap().value))
        .collect();
    assert_eq!(weights, [("web".to_owned(), 10), ("web".to_owned(), 90)]);
    let cluster = cluster_of(snapshot, "web");
    let subsets = cluster.lb_subset_config.expect("subset load balancing");
    assert_eq!(subsets.subset_selectors[0].keys, ["revision"]);
    assert_eq!(
        subsets.fallback_policy, 1,
        "ANY_ENDPOINT: never a black hole"
    );
}

#[test]
fn a_gone_revision_gives_its_share_away_and_with_none_left_the_split_goes() {
    let templates = templates(&[("sidecar", &template(""))]);
    let synthesis = synthesize(&inventory([canary(&[(13, 50), (12, 50)])]), &templates);
    let routes = host_routes(&synthesis.snapshots["sidecar"], "web");
    let Some(ClusterSpecifier::WeightedClusters(weighted)) =
        &routes.last().unwrap().1.cluster_specifier
    else {
        panic!("a weighted split")
    };
    assert_eq!(weighted.clusters.len(), 1, "only revision 12 runs");

    let synthesis = synthesize(&inventory([canary(&[(13, 50), (14, 50)])]), &templates);
    let routes = host_routes(&synthesis.snapshots["sidecar"], "web");
    assert_eq!(
        routes.last().unwrap().1.cluster_specifier,
        Some(ClusterSpecifier::Cluster("web".into())),
        "every endpoint, as without weights"
    );
}

#[test]
fn without_weights_a_cluster_has_no_subsets_and_one_plain_route() {
    let templates = templates(&[("sidecar", &template(""))]);
    let synthesis = synthesize(&inventory([canary(&[])]), &templates);
    let snapshot = &synthesis.snapshots["sidecar"];
    assert!(cluster_of(snapshot, "web").lb_subset_config.is_none());
    assert_eq!(host_routes(snapshot, "web").len(), 1);
}

#[test]
fn service_circuit_breakers_and_outlier_detection_go_over_the_defaults() {
    let extra = r#"
[cluster_defaults]
circuit_breakers = { thresholds = [{ priority = "DEFAULT", max_connections = 1024, max_requests = 1024 }, { priority = "HIGH", max_connections = 9 }] }
outlier_detection = { consecutive_5xx = 5, interval = "10s" }
"#;
    let templates = templates(&[("sidecar", &template(extra))]);
    let mut orders = service("orders", &["10.0.0.1"]);
    orders.overrides.circuit_breakers.max_connections = Some(100);
    orders.overrides.outlier_detection = OutlierDetection {
        consecutive_5xx: Some(2),
        max_ejection_percent: Some(100),
        ..Default::default()
    };
    let synthesis = synthesize(&inventory([orders]), &templates);
    let cluster = cluster_of(&synthesis.snapshots["sidecar"], "orders");
    let thresholds = cluster.circuit_breakers.unwrap().thresholds;
    let default = thresholds
        .iter()
        .find(|t| t.priority == RoutingPriority::Default as i32)
        .unwrap();
    assert_eq!(default.max_connections.unwrap().value, 100);
    assert_eq!(
        default.max_requests.unwrap().value,
        1024,
        "the default's other limits stay"
    );
    let high = thresholds
        .iter()
        .find(|t| t.priority == RoutingPriority::High as i32)
        .unwrap();
    assert_eq!(high.max_connections.unwrap().value, 9);
    let outlier = cluster.outlier_detection.unwrap();
    assert_eq!(outlier.consecutive_5xx.unwrap().value, 2);
    assert_eq!(outlier.max_ejection_percent.unwrap().value, 100);
    assert_eq!(outlier.interval.unwrap().seconds, 10);
}

#[test]
fn endpoints_carry_revision_and_deployment_metadata_and_localities_their_weight() {
    let templates = templates(&[("sidecar", &template(""))]);
    let mut web = service("web", &["10.0.0.1", "10.0.0.2"]);
    web.endpoints[0].revision = Some(11);
    web.endpoints[0].deployment = Some("ecs-svc/1".into());
    web.endpoints[1].weight = 3;
    let synthesis = synthesize(&inventory([web]), &templates);
    let cla = endpoints_of(&synthesis.snapshots["sidecar"], "web");
    let locality = &cla.endpoints[0];
    assert_eq!(locality.load_balancing_weight.unwrap().value, 4, "1 + 3");
    let metadata = locality.lb_endpoints[0].metadata.as_ref().unwrap();
    let fields = &metadata.filter_metadata["envoy.lb"].fields;
    assert_eq!(
        fields.keys().collect::<Vec<_>>(),
        ["revision"],
        "no split, no deployment"
    );
    assert!(
        locality.lb_endpoints[1].metadata.is_none(),
        "no revision, no metadata"
    );

    // With a split, the deployment comes too.
    let mut split = service("web", &["10.0.0.1"]);
    split.endpoints[0].revision = Some(11);
    split.endpoints[0].deployment = Some("ecs-svc/1".into());
    split.route.weights = vec![RevisionWeight {
        revision: 11,
        weight: 1,
    }];
    let synthesis = synthesize(&inventory([split]), &templates);
    let cla = endpoints_of(&synthesis.snapshots["sidecar"], "web");
    let metadata = cla.endpoints[0].lb_endpoints[0].metadata.as_ref().unwrap();
    assert_eq!(metadata.filter_metadata["envoy.lb"].fields.len(), 2);
}

/// Zone a holds two of three orders endpoints, zone b one; users run only in zone a.
fn zoned() -> Inventory {
    let mut orders = service("orders", &["10.0.0.1"]);
    orders.endpoints = vec![
        endpoint("10.0.0.1", Health::Healthy, "eu-west-1a", 1),
        endpoint("10.0.0.2", Health::Healthy, "eu-west-1a", 1),
        endpoint("10.0.0.3", Health::Healthy, "eu-west-1b", 1),
    ];
    let users = service("users", &["10.0.1.1"]);
    inventory([orders, users])
}

#[test]
fn a_zone_aware_node_type_gets_a_snapshot_per_zone_with_its_zone_at_priority_0() {
    let templates = templates(&[
        ("sidecar", &template("[zone_aware]\nenabled = true\n")),
        ("edge", &template("")),
    ]);
    let synthesis = synthesize(&zoned(), &templates);
    assert!(synthesis.places["edge"].is_empty(), "not zone-aware");
    let zones = &synthesis.places["sidecar"];
    assert_eq!(
        zones.keys().collect::<Vec<_>>(),
        ["eu-west-1a", "eu-west-1b"]
    );
    let priorities = |zone: &str| {
        endpoints_of(&zones[zone], "orders")
            .endpoints
            .iter()
            .map(|l| (l.locality.as_ref().unwrap().zone.clone(), l.priority))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        priorities("eu-west-1a"),
        [("eu-west-1a".into(), 0), ("eu-west-1b".into(), 1)]
    );
    assert_eq!(
        priorities("eu-west-1b"),
        [("eu-west-1a".into(), 1), ("eu-west-1b".into(), 0)]
    );
    let plain = &synthesis.snapshots["sidecar"];
    assert!(endpoints_of(plain, "orders")
        .endpoints
        .iter()
        .all(|l| l.priority == 0));

    // Everything but the split cluster's endpoints is the plain snapshot's own encoding.
    for ty in ResourceType::ALL {
        for (name, resource) in plain.of(ty).resources() {
            let zoned = zones["eu-west-1a"].of(ty).get(name).unwrap();
            let shared = Arc::ptr_eq(resource, zoned);
            let split = ty == ResourceType::Endpoint && &**name == "orders";
            assert_eq!(shared, !split, "{ty} {name}");
        }
    }
}

#[test]
fn a_service_may_opt_out_of_zone_priorities() {
    let templates = templates(&[("sidecar", &template("[zone_aware]\nenabled = true\n"))]);
    let mut inventory = zoned();
    inventory
        .clusters
        .get_mut("orders")
        .unwrap()
        .overrides
        .zone_aware = Some(false);
    let synthesis = synthesize(&inventory, &templates);
    assert!(
        synthesis.places["sidecar"].is_empty(),
        "users has one zone, orders opted out"
    );
}

#[test]
fn a_change_in_one_zone_re_encodes_only_that_cluster_for_each_zone() {
    let templates = templates(&[("sidecar", &template("[zone_aware]\nenabled = true\n"))]);
    let mut synthesizer = Synthesizer::new(templates);
    synthesizer.synthesize(&zoned());
    let mut changed = zoned();
    changed.clusters.get_mut("orders").unwrap().endpoints[0].health = Health::Draining;
    let synthesis = synthesizer.synthesize(&changed);
    assert_eq!(
        synthesis.encoded, 3,
        "the plain assignment and the two zones'"
    );
    let cla = endpoints_of(&synthesis.places["sidecar"]["eu-west-1a"], "orders");
    let health = cla.endpoints[0].lb_endpoints[0].health_status;
    assert_eq!(
        health,
        envoy_types::pb::envoy::config::core::v3::HealthStatus::Draining as i32
    );
}
