use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::HealthStatus;

use super::*;
use crate::synthesize::clusters::eds_cluster;
use crate::synthesize::endpoints::load_assignment;
use crate::synthesize::listeners::{http_listener, route_configuration};

/// One EDS cluster `orders` (250 ms connect timeout) with an endpoint at 10.0.0.1:8080, and an
/// egress listener on 127.0.0.1:15001 whose route configuration `egress` sends to it.
pub(crate) fn orders_egress() -> Snapshot {
    Snapshot::builder()
        .cluster(eds_cluster("orders", Duration::from_millis(250)))
        .endpoints(load_assignment(
            "orders",
            [("10.0.0.1".into(), 8080, Default::default())],
        ))
        .listener(http_listener("egress", "127.0.0.1", 15001, "egress"))
        .route(route_configuration(
            "egress",
            [(vec!["orders".into()], "orders")],
        ))
        .build()
}

fn cla(name: &str, port: u16) -> ClusterLoadAssignment {
    load_assignment(
        name,
        [("127.0.0.1".to_string(), port, HealthStatus::Healthy)],
    )
}

fn full(names: &[&str]) -> SnapshotBuilder {
    let mut b = Snapshot::builder()
        .listener(http_listener("ingress", "127.0.0.1", 10000, "routes"))
        .route(route_configuration(
            "routes",
            [(vec!["*".into()], names[0])],
        ));
    for name in names {
        b = b
            .cluster(eds_cluster(name, Duration::from_secs(1)))
            .endpoints(cla(name, 8080));
    }
    b
}

#[test]
fn same_content_gives_same_versions_whatever_the_insertion_order() {
    let a = full(&["a", "b", "c"]).build();
    let b = Snapshot::builder()
        .endpoints(cla("c", 8080))
        .cluster(eds_cluster("c", Duration::from_secs(1)))
        .route(route_configuration("routes", [(vec!["*".into()], "a")]))
        .cluster(eds_cluster("b", Duration::from_secs(1)))
        .endpoints(cla("a", 8080))
        .endpoints(cla("b", 8080))
        .listener(http_listener("ingress", "127.0.0.1", 10000, "routes"))
        .cluster(eds_cluster("a", Duration::from_secs(1)))
        .build();
    for ty in ResourceType::ALL {
        assert_eq!(a.version(ty), b.version(ty), "{ty}");
    }
    assert!(a.same_content(&b));
}

#[test]
fn a_changed_endpoint_changes_only_the_endpoint_version() {
    let a = full(&["a", "b"]).build();
    let b = full(&["a", "b"]).endpoints(cla("b", 9090)).build();
    assert_ne!(
        a.version(ResourceType::Endpoint),
        b.version(ResourceType::Endpoint)
    );
    for ty in [
        ResourceType::Cluster,
        ResourceType::Listener,
        ResourceType::Route,
    ] {
        assert_eq!(a.version(ty), b.version(ty), "{ty}");
    }
    let (ra, rb) = (a.of(ResourceType::Endpoint), b.of(ResourceType::Endpoint));
    assert_eq!(ra.get("a").unwrap().hash(), rb.get("a").unwrap().hash());
    assert_ne!(ra.get("b").unwrap().hash(), rb.get("b").unwrap().hash());
}

#[test]
fn versions_are_fixed_values_across_processes() {
    // Pinned: a change here means every deployed Envoy would be re-pushed after an upgrade.
    let snapshot = full(&["a"]).build();
    let again = full(&["a"]).build();
    assert_eq!(
        snapshot.version(ResourceType::Cluster),
        again.version(ResourceType::Cluster)
    );
    assert_eq!(
        &**snapshot.version(ResourceType::Cluster),
        "be3be0f88b5863b8"
    );
    let empty = Snapshot::builder().build();
    assert_eq!(
        &**empty.version(ResourceType::Secret),
        hash::type_version(std::iter::empty())
    );
}

#[test]
fn a_consistent_snapshot_passes() {
    full(&["a", "b"]).build().check_consistency().unwrap();
}

#[test]
fn an_eds_cluster_without_endpoints_is_refused_by_name() {
    let s = full(&["a"])
        .cluster(eds_cluster("lonely", Duration::from_secs(1)))
        .build();
    assert_eq!(
        s.check_consistency(),
        Err(InconsistentSnapshot::MissingEndpoints {
            cluster: "lonely".into(),
            eds_name: "lonely".into()
        })
    );
}

#[test]
fn endpoints_without_an_eds_cluster_are_refused_by_name() {
    let s = full(&["a"]).endpoints(cla("ghost", 1)).build();
    assert_eq!(
        s.check_consistency(),
        Err(InconsistentSnapshot::OrphanEndpoints("ghost".into()))
    );
}

#[test]
fn a_listener_using_a_missing_route_is_refused_by_name() {
    let s = full(&["a"])
        .listener(http_listener("egress", "127.0.0.1", 1, "nowhere"))
        .build();
    assert_eq!(
        s.check_consistency(),
        Err(InconsistentSnapshot::MissingRoute {
            listener: "egress".into(),
            route: "nowhere".into()
        })
    );
}

#[test]
fn a_route_no_listener_uses_is_refused_by_name() {
    let s = full(&["a"]).route(route_configuration("spare", [])).build();
    assert_eq!(
        s.check_consistency(),
        Err(InconsistentSnapshot::OrphanRoute("spare".into()))
    );
}

#[test]
fn resources_are_encoded_once_and_shared() {
    let s = full(&["a"]).build();
    let r = s.of(ResourceType::Cluster).get("a").unwrap();
    let decoded: Cluster = r.decode().unwrap();
    assert_eq!(decoded.name, "a");
    // The delta form is built once and then reused (same allocation).
    assert_eq!(
        r.delta_resource_bytes().as_ptr(),
        r.delta_resource_bytes().as_ptr()
    );
}

#[test]
fn changed_since_names_new_and_changed_resources_and_is_answered_once() {
    let base = full(&["a", "b"]).build();
    let next = full(&["a", "b", "c"]).endpoints(cla("b", 9)).build();
    let changed = next.changed_since(&base, ResourceType::Endpoint);
    assert_eq!(changed.iter().map(|n| &**n).collect::<Vec<_>>(), ["b", "c"]);
    let again = next.changed_since(&base, ResourceType::Endpoint);
    assert!(Arc::ptr_eq(&changed, &again), "cached, not recomputed");
    assert!(next.changed_since(&base, ResourceType::Listener).is_empty());
}

#[test]
fn changes_since_also_names_removed_resources() {
    let base = full(&["a", "b", "c"]).build();
    let next = full(&["a", "c", "d"]).endpoints(cla("a", 9)).build();
    let changes = next.changes_since(&base, ResourceType::Endpoint);
    let names = |n: &ChangedNames| n.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    assert_eq!(names(&changes.changed), ["a", "d"]);
    assert_eq!(names(&changes.removed), ["b"]);
    let back = base.changes_since(&next, ResourceType::Endpoint);
    assert_eq!(names(&back.changed), ["a", "b"]);
    assert_eq!(names(&back.removed), ["d"]);
}
