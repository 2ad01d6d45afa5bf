use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::cluster;
use serde_json::{json, Value};

use crate::push::tests::{body, listener, route, static_cluster};
use crate::push::{parse, PushedResources};
use crate::snapshot::{InconsistentSnapshot, ResourceType};
use crate::synthesize::synthesizer::tests::{
    cluster_of, endpoints_of, names, template, templates, three_services,
};
use crate::synthesize::Synthesizer;

fn pushed(value: Value) -> Option<Arc<PushedResources>> {
    Some(Arc::new(parse(&body(&value)).unwrap()))
}

fn sidecar() -> Synthesizer {
    Synthesizer::new(templates(&[("sidecar", &template(""))]))
}

fn eds_cluster(name: &str, timeout: &str) -> Value {
    json!({
        "name": name,
        "type": "EDS",
        "connect_timeout": timeout,
        "eds_cluster_config": {"eds_config": {"ads": {}, "resource_api_version": "V3"}}
    })
}

fn is_static(c: &envoy_types::pb::envoy::config::cluster::v3::Cluster) -> bool {
    c.cluster_discovery_type
        == Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        ))
}

#[test]
fn a_pushed_resource_replaces_the_one_of_the_same_name_and_the_rest_are_added() {
    let mut synthesizer = sidecar();
    synthesizer.set_pushed(
        "sidecar",
        pushed(json!({
            "clusters": [static_cluster("orders", 9000), static_cluster("extra", 9001)],
            "listeners": [listener("pushed", 15002, "pushed")],
            "routes": [route("pushed", "extra")],
        })),
    );
    let synthesis = synthesizer.synthesize(&three_services());
    let snapshot = &synthesis.snapshots["sidecar"];
    snapshot.check_consistency().unwrap();
    assert_eq!(
        names(snapshot, ResourceType::Cluster),
        ["extra", "orders", "users", "web"]
    );
    assert!(is_static(&cluster_of(snapshot, "orders")));
    // The replaced discovered cluster took its endpoints with it.
    assert_eq!(names(snapshot, ResourceType::Endpoint), ["users", "web"]);
    assert_eq!(
        names(snapshot, ResourceType::Listener),
        ["egress", "pushed"]
    );
    assert_eq!(names(snapshot, ResourceType::Route), ["egress", "pushed"]);
    assert!(synthesis.dangling.is_empty());
}

#[test]
fn a_pushed_eds_cluster_keeps_the_discovered_endpoints_it_replaces() {
    let mut synthesizer = sidecar();
    synthesizer.set_pushed(
        "sidecar",
        pushed(json!({"clusters": [eds_cluster("orders", "7s")]})),
    );
    let synthesis = synthesizer.synthesize(&three_services());
    let snapshot = &synthesis.snapshots["sidecar"];
    snapshot.check_consistency().unwrap();
    assert_eq!(
        cluster_of(snapshot, "orders")
            .connect_timeout
            .unwrap()
            .seconds,
        7
    );
    assert_eq!(
        endpoints_of(snapshot, "orders").endpoints[0]
            .lb_endpoints
            .len(),
        2
    );
}

#[test]
fn pushed_endpoints_replace_the_discovered_ones() {
    let mut synthesizer = sidecar();
    let cla = static_cluster("orders", 9000)["load_assignment"].clone();
    synthesizer.set_pushed("sidecar", pushed(json!({"endpoints": [cla]})));
    let snapshot = &synthesizer.synthesize(&three_services()).snapshots["sidecar"];
    let orders = endpoints_of(snapshot, "orders");
    assert_eq!(orders.endpoints[0].lb_endpoints.len(), 1);
}

#[test]
fn a_pushed_route_replaces_the_generated_one() {
    let mut synthesizer = sidecar();
    synthesizer.set_pushed(
        "sidecar",
        pushed(json!({"routes": [route("egress", "web")]})),
    );
    let snapshot = &synthesizer.synthesize(&three_services()).snapshots["sidecar"];
    let egress: envoy_types::pb::envoy::config::route::v3::RouteConfiguration = snapshot
        .of(ResourceType::Route)
        .get("egress")
        .unwrap()
        .decode()
        .unwrap();
    assert_eq!(egress.virtual_hosts.len(), 1);
}

#[test]
fn a_node_type_without_a_template_is_served_exactly_what_was_pushed() {
    let mut synthesizer = sidecar();
    synthesizer.set_pushed(
        "edge",
        pushed(json!({
            "clusters": [static_cluster("backend", 9000)],
            "listeners": [listener("edge", 15003, "edge")],
            "routes": [route("edge", "backend")],
        })),
    );
    let synthesis = synthesizer.synthesize(&three_services());
    assert_eq!(
        synthesis.snapshots.keys().collect::<Vec<_>>(),
        ["edge", "sidecar"]
    );
    let edge = &synthesis.snapshots["edge"];
    edge.check_consistency().unwrap();
    assert_eq!(names(edge, ResourceType::Cluster), ["backend"]);
    assert!(names(edge, ResourceType::Endpoint).is_empty());
}

#[test]
fn a_pushed_eds_cluster_with_no_endpoints_is_served_empty_and_reported() {
    let mut synthesizer = sidecar();
    synthesizer.set_pushed(
        "sidecar",
        pushed(json!({"clusters": [eds_cluster("payments", "1s")]})),
    );
    let synthesis = synthesizer.synthesize(&three_services());
    let snapshot = &synthesis.snapshots["sidecar"];
    snapshot.check_consistency().unwrap();
    assert!(endpoints_of(snapshot, "payments").endpoints.is_empty());
    assert_eq!(
        synthesis.dangling,
        [(
            "sidecar".to_owned(),
            InconsistentSnapshot::MissingEndpoints {
                cluster: "payments".into(),
                eds_name: "payments".into()
            }
        )]
    );
    assert!(synthesis.warnings[0]
        .to_string()
        .starts_with("sidecar.json: "));
}

#[test]
fn a_dangling_pushed_reference_makes_the_snapshot_inconsistent() {
    let mut synthesizer = sidecar();
    synthesizer.set_pushed(
        "sidecar",
        pushed(json!({"listeners": [listener("pushed", 15002, "missing")]})),
    );
    let snapshot = &synthesizer.synthesize(&three_services()).snapshots["sidecar"];
    assert!(matches!(
        snapshot.check_consistency(),
        Err(InconsistentSnapshot::MissingRoute { .. })
    ));
}

#[test]
fn pushes_are_encoded_once_and_removing_one_restores_the_template() {
    let inventory = three_services();
    let plain = sidecar()
        .synthesize(&inventory)
        .snapshots
        .remove("sidecar")
        .unwrap();
    let mut synthesizer = sidecar();
    synthesizer.synthesize(&inventory);
    synthesizer.set_pushed(
        "sidecar",
        pushed(json!({"clusters": [static_cluster("x", 1)]})),
    );
    synthesizer.synthesize(&inventory);
    assert_eq!(synthesizer.synthesize(&inventory).encoded, 0);
    let previous = synthesizer.set_pushed("sidecar", None);
    assert_eq!(previous.unwrap().clusters[0].name, "x");
    let synthesis = synthesizer.synthesize(&inventory);
    assert_eq!(synthesis.encoded, 0, "the template's encodings were kept");
    assert!(synthesis.snapshots["sidecar"].same_content(&plain));
}

#[test]
fn a_pushed_route_to_a_cluster_not_served_is_a_warning() {
    let mut synthesizer = sidecar();
    synthesizer.set_pushed(
        "sidecar",
        pushed(json!({"routes": [route("egress", "web")]})),
    );
    let served = synthesizer.synthesize(&three_services());
    assert!(
        !served
            .warnings
            .iter()
            .any(|f| f.message.contains("pushed route")),
        "web is discovered: {:?}",
        served.warnings
    );
    synthesizer.set_pushed(
        "sidecar",
        pushed(json!({"routes": [route("egress", "nowhere")]})),
    );
    let missing = synthesizer.synthesize(&three_services());
    let warning = missing
        .warnings
        .iter()
        .find(|f| f.message.contains("pushed route"))
        .expect("a warning");
    assert_eq!(warning.file.to_str(), Some("sidecar.json"));
    assert!(warning.message.contains("\"nowhere\""), "{warning}");
}
