//! The delta rules of the module doc, checked on the state itself: requests and publishes in,
//! responses out, no network. An empty `Vec` is "nothing is sent"; a new state is a reconnect.

use std::collections::HashMap;
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use envoy_types::pb::google::rpc;

use super::DeltaState;
use crate::serve::test_harness::{endpoints, one, sample, Harness};
use crate::snapshot::ResourceType::{self, *};
use crate::snapshot::Snapshot;
use crate::synthesize::clusters::eds_cluster;

type Delta = Harness<DeltaState>;

fn subscribe(ty: ResourceType, names: &[&str]) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: ty.type_url().into(),
        resource_names_subscribe: names.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn unsubscribe(ty: ResourceType, names: &[&str]) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: ty.type_url().into(),
        resource_names_unsubscribe: names.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn ack(r: &DeltaDiscoveryResponse) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: r.type_url.clone(),
        response_nonce: r.nonce.clone(),
        ..Default::default()
    }
}

fn nack(r: &DeltaDiscoveryResponse) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        error_detail: Some(rpc::Status {
            code: 3,
            message: "delta rejected by test".into(),
            details: vec![],
        }),
        ..ack(r)
    }
}

fn names(r: &DeltaDiscoveryResponse) -> Vec<&str> {
    r.resources.iter().map(|r| r.name.as_str()).collect()
}

fn versions(r: &DeltaDiscoveryResponse) -> HashMap<String, String> {
    r.resources
        .iter()
        .map(|r| (r.name.clone(), r.version.clone()))
        .collect()
}

#[test]
fn a_wildcard_cds_subscription_gets_every_cluster_with_resource_versions() {
    let mut h = Delta::ads();
    let snapshot = sample(&["a", "b"], 1, 10000);
    let version = snapshot.version(Cluster).to_string();
    let resource_versions: HashMap<String, String> = (snapshot.of(Cluster).resources().values())
        .map(|r| (r.name().to_string(), r.version().to_string()))
        .collect();
    assert!(h.publish(snapshot).is_empty(), "nothing is subscribed yet");
    let r = one(h.request(subscribe(Cluster, &[])).unwrap());
    assert_eq!(names(&r), ["a", "b"]);
    assert_eq!(r.system_version_info, version);
    assert_eq!(versions(&r), resource_versions);
    assert!(r.resources.iter().all(|r| r.resource.is_some()));
    assert!(h.request(ack(&r)).unwrap().is_empty());
    let cds = &h.status().types[Cluster.index()];
    assert_eq!(cds.acked_version.as_deref(), Some(version.as_str()));
}

#[test]
fn named_subscribe_and_unsubscribe_control_what_is_sent() {
    let mut h = Delta::ads();
    h.publish(sample(&["a", "b", "c"], 1, 10000));
    let r = one(h.request(subscribe(Endpoint, &["a"])).unwrap());
    assert_eq!(names(&r), ["a"]);
    assert!(h.request(ack(&r)).unwrap().is_empty());

    let r = one(h.request(subscribe(Endpoint, &["c"])).unwrap());
    assert_eq!(names(&r), ["c"], "only the newly subscribed name is sent");
    assert!(h.request(ack(&r)).unwrap().is_empty());

    assert!(h.request(unsubscribe(Endpoint, &["a"])).unwrap().is_empty());
    // A change to the unsubscribed name is not sent; a change to a subscribed one is.
    let r = one(h.publish(sample(&["a", "b", "c"], 2, 10000)));
    assert_eq!(names(&r), ["c"]);
    assert!(r.removed_resources.is_empty());
}

#[test]
fn a_name_subscribed_again_after_unsubscribing_is_resent() {
    // Envoy dropped it when it unsubscribed.
    let mut h = Delta::ads();
    h.publish(sample(&["a"], 1, 10000));
    let r = one(h.request(subscribe(Endpoint, &["a"])).unwrap());
    assert!(h.request(ack(&r)).unwrap().is_empty());
    assert!(h.request(unsubscribe(Endpoint, &["a"])).unwrap().is_empty());
    let again = one(h.request(subscribe(Endpoint, &["a"])).unwrap());
    assert_eq!(names(&again), ["a"]);
}

#[test]
fn a_removed_cluster_is_listed_in_removed_resources() {
    let mut h = Delta::ads();
    h.publish(sample(&["a", "b"], 1, 10000));
    let r = one(h.request(subscribe(Cluster, &[])).unwrap());
    assert!(h.request(ack(&r)).unwrap().is_empty());
    let r = one(h.publish(sample(&["a"], 1, 10000)));
    assert!(r.resources.is_empty(), "a is unchanged: {:?}", names(&r));
    assert_eq!(r.removed_resources, ["b"]);
}

#[test]
fn a_reconnect_with_initial_resource_versions_gets_only_what_changed() {
    let mut h = Delta::ads();
    h.publish(sample(&["a", "b"], 1, 10000));
    let held = versions(&one(h.request(subscribe(Cluster, &[])).unwrap()));
    let reconnect = |held: &HashMap<String, String>| DeltaDiscoveryRequest {
        initial_resource_versions: held.clone(),
        ..subscribe(Cluster, &[])
    };

    // Same content: the reconnect sends nothing at all.
    h.reconnect();
    assert!(h.request(reconnect(&held)).unwrap().is_empty());

    // A cluster added and one gone: a connected stream is sent only those, and so is one
    // reconnecting with what it held before.
    let r = one(h.publish(sample(&["a", "c"], 1, 10000)));
    assert_eq!(names(&r), ["c"]);
    assert_eq!(r.removed_resources, ["b"]);
    h.reconnect();
    let r = one(h.request(reconnect(&held)).unwrap());
    assert_eq!(names(&r), ["c"]);
    assert_eq!(r.removed_resources, ["b"]);
}

#[test]
fn a_delta_nack_is_recorded_and_the_rejected_version_is_not_resent() {
    let mut h = Delta::ads();
    h.publish(sample(&["a"], 1, 10000));
    let good = one(h.request(subscribe(Cluster, &[])).unwrap());
    assert!(h.request(ack(&good)).unwrap().is_empty());
    let bad = one(h.publish(sample(&["a", "bad"], 1, 10000)));
    assert_eq!(names(&bad), ["bad"]);
    assert!(h.request(nack(&bad)).unwrap().is_empty());

    let nacks = h.cache.status().recent_nacks();
    assert_eq!(nacks.len(), 1);
    assert_eq!(nacks[0].resource_type, Cluster);
    assert_eq!(nacks[0].rejected_version, bad.system_version_info);
    assert_eq!(nacks[0].message, "delta rejected by test");
    let cds = &h.status().types[Cluster.index()];
    let acked = good.system_version_info.as_str();
    assert_eq!(cds.acked_version.as_deref(), Some(acked));
    assert_eq!(cds.last_nack.as_deref(), Some(&nacks[0]));

    // Woken by a publish that leaves the clusters as rejected, the stream sends nothing.
    // New clusters: the client's real state is diffed, so the rejected resource's removal is
    // not claimed and the new one is sent.
    assert!(h.publish(sample(&["a", "bad"], 2, 10000)).is_empty());
    let r = one(h.publish(sample(&["a", "good"], 2, 10000)));
    assert_eq!(names(&r), ["good"]);
    assert!(r.removed_resources.is_empty(), "Envoy never accepted 'bad'");
}

#[test]
fn a_rejected_version_is_not_sent_again_even_after_other_content() {
    let mut h = Delta::ads();
    h.publish(sample(&["a"], 1, 10000));
    let good = one(h.request(subscribe(Cluster, &[])).unwrap());
    assert!(h.request(ack(&good)).unwrap().is_empty());
    let bad = one(h.publish(sample(&["a", "bad"], 1, 10000)));
    assert!(h.request(nack(&bad)).unwrap().is_empty());
    let fixed = one(h.publish(sample(&["a", "fixed"], 1, 10000)));
    assert!(h.request(ack(&fixed)).unwrap().is_empty());
    assert!(h.publish(sample(&["a", "bad"], 1, 10000)).is_empty());
}

#[test]
fn subscribing_again_to_a_held_name_resends_it_for_warming() {
    let mut h = Delta::ads();
    h.publish(sample(&["a"], 1, 10000));
    let r = one(h.request(subscribe(Endpoint, &["a"])).unwrap());
    assert!(h.request(ack(&r)).unwrap().is_empty());
    let again = one(h.request(subscribe(Endpoint, &["a"])).unwrap());
    assert_eq!(names(&again), ["a"]);
}

#[test]
fn a_publish_coalesces_while_a_delta_response_is_unanswered() {
    let mut h = Delta::ads();
    h.publish(sample(&["a"], 1, 10000));
    let r = one(h.request(subscribe(Endpoint, &["a"])).unwrap());
    for port in 2..20 {
        assert!(h.publish(sample(&["a"], port, 10000)).is_empty());
    }
    let newest = one(h.request(ack(&r)).unwrap());
    let expected = sample(&["a"], 19, 10000);
    assert_eq!(newest.system_version_info, **expected.version(Endpoint));
    assert!(h.request(ack(&newest)).unwrap().is_empty());
}

#[test]
fn an_ack_with_an_unknown_nonce_leaves_the_response_unanswered() {
    let mut h = Delta::ads();
    h.publish(sample(&["a"], 1, 10000));
    let r = one(h.request(subscribe(Endpoint, &["a"])).unwrap());
    let unknown = DeltaDiscoveryRequest {
        response_nonce: "not-a-nonce-we-sent".into(),
        ..ack(&r)
    };
    assert!(h.request(unknown).unwrap().is_empty());
    assert_eq!(h.status().types[Endpoint.index()].acked_version, None);
    assert!(
        h.publish(sample(&["a"], 2, 10000)).is_empty(),
        "still unanswered"
    );
    assert_eq!(names(&one(h.request(ack(&r)).unwrap())), ["a"]);
}

#[test]
fn a_wildcard_added_to_named_eds_sends_only_what_the_client_lacks() {
    let mut h = Delta::ads();
    h.publish(sample(&["a", "b", "c"], 1, 10000));
    let r = one(h.request(subscribe(Endpoint, &["a"])).unwrap());
    assert_eq!(names(&r), ["a"]);
    assert!(h.request(ack(&r)).unwrap().is_empty());
    let r = one(h.request(subscribe(Endpoint, &["*"])).unwrap());
    assert_eq!(names(&r), ["b", "c"], "a is held already");
    assert!(h.request(ack(&r)).unwrap().is_empty());
}

#[test]
fn unsubscribing_the_wildcard_leaves_only_the_named_resources() {
    let mut h = Delta::ads();
    h.publish(sample(&["a", "b"], 1, 10000));
    let r = one(h.request(subscribe(Endpoint, &["*"])).unwrap());
    assert_eq!(names(&r), ["a", "b"]);
    assert!(h.request(ack(&r)).unwrap().is_empty());
    assert!(
        h.request(subscribe(Endpoint, &["a"])).unwrap().is_empty(),
        "a is held already"
    );
    assert!(h.request(unsubscribe(Endpoint, &["*"])).unwrap().is_empty());

    // Only the named resource is sent, and the one the wildcard brought is not claimed
    // removed: Envoy dropped it with the wildcard.
    let r = one(h.publish(sample(&["a", "b"], 2, 10000)));
    assert_eq!(names(&r), ["a"]);
    assert!(h.request(ack(&r)).unwrap().is_empty());
    assert!(h.publish(sample(&["a"], 2, 10000)).is_empty());
}

#[test]
fn a_name_only_the_wildcard_brought_is_resent_when_wanted_after_the_wildcard_is_dropped() {
    // Envoy drops the resources that came only from the wildcard when it unsubscribes from `*`
    // (`DeltaSubscriptionState::updateSubscriptionInterest`), so wanting b again, by name or
    // by wildcard, must send it even though it has not changed.
    let mut h = Delta::ads();
    h.publish(sample(&["a", "b"], 1, 10000));
    let r = one(h.request(subscribe(Endpoint, &["*"])).unwrap());
    assert!(h.request(ack(&r)).unwrap().is_empty());
    assert!(h.request(subscribe(Endpoint, &["a"])).unwrap().is_empty());
    assert!(h.request(unsubscribe(Endpoint, &["*"])).unwrap().is_empty());
    let r = one(h.request(subscribe(Endpoint, &["b"])).unwrap());
    assert_eq!(names(&r), ["b"]);
}

#[test]
fn a_wildcard_type_with_nothing_in_it_is_answered_once_so_envoy_can_initialize() {
    let mut h = Delta::ads();
    let no_listeners = |port| {
        Snapshot::builder()
            .cluster(eds_cluster("a", Duration::from_secs(1)))
            .endpoints(endpoints("a", port))
            .build()
    };
    h.publish(no_listeners(1));
    let r = one(h.request(subscribe(Listener, &[])).unwrap());
    assert!(r.resources.is_empty() && r.removed_resources.is_empty());
    assert!(h.request(ack(&r)).unwrap().is_empty());
    assert!(h.publish(no_listeners(2)).is_empty(), "listeners unchanged");
}

/// gRPC clients subscribe listeners and clusters by name; delta says that a subscribed one
/// does not exist with a resource carrying only its name, once.
#[test]
fn a_named_listener_that_does_not_exist_is_said_so_once_and_sent_when_it_appears() {
    let mut h = Delta::ads();
    h.publish(sample(&["a"], 1, 10000));
    let r = one(h
        .request(subscribe(Listener, &["ingress", "orders"]))
        .unwrap());
    let by_name: HashMap<&str, bool> = r
        .resources
        .iter()
        .map(|res| (res.name.as_str(), res.resource.is_some()))
        .collect();
    assert_eq!(
        by_name,
        HashMap::from([("ingress", true), ("orders", false)])
    );
    assert!(h.request(ack(&r)).unwrap().is_empty());
    // A publish that changes something else says nothing again.
    assert!(h.publish(sample(&["a"], 2, 10000)).is_empty());

    // orders appears: sent in full.
    let mut with_orders = crate::serve::test_harness::sample_builder(&["a"], 2, 10000);
    with_orders = with_orders.listener(crate::synthesize::listeners::http_listener(
        "orders",
        "127.0.0.1",
        10001,
        "routes",
    ));
    let r = one(h.publish(with_orders.build()));
    assert_eq!(names(&r), ["orders"]);
    assert!(r.resources[0].resource.is_some());
}

/// An on-demand snapshot: the wildcard gets only `a`; `b` and `c` come when asked by name.
fn on_demand(endpoint_port: u16) -> Snapshot {
    crate::serve::test_harness::sample_builder(&["a", "b", "c"], endpoint_port, 10000)
        .wildcard_clusters(["a".into()])
        .build()
}

#[test]
fn on_demand_a_wildcard_gets_its_part_and_a_name_asked_for_comes_from_the_whole() {
    let mut h = Delta::ads();
    h.publish(on_demand(1));
    let r = one(h.request(subscribe(Cluster, &[])).unwrap());
    assert_eq!(names(&r), ["a"]);
    assert!(h.request(ack(&r)).unwrap().is_empty());
    // Envoy's on-demand filter asks for `b` on the same wildcard stream.
    let r = one(h.request(subscribe(Cluster, &["b"])).unwrap());
    assert_eq!(names(&r), ["b"]);
    assert!(h.request(ack(&r)).unwrap().is_empty());
    // A change to `c`, which nobody asked for, sends nothing; one to `b` sends `b`.
    let changed_c = crate::serve::test_harness::sample_builder(&["a", "b", "c"], 1, 10000)
        .cluster(eds_cluster("c", Duration::from_secs(7)))
        .wildcard_clusters(["a".into()])
        .build();
    assert!(h.publish(changed_c).is_empty());
    let changed_b = crate::serve::test_harness::sample_builder(&["a", "b", "c"], 1, 10000)
        .cluster(eds_cluster("b", Duration::from_secs(7)))
        .cluster(eds_cluster("c", Duration::from_secs(7)))
        .wildcard_clusters(["a".into()])
        .build();
    let r = one(h.publish(changed_b));
    assert_eq!(names(&r), ["b"]);
    h.request(ack(&r)).unwrap();
    // A name nobody serves is said not to exist at once (Envoy answers 503, not a timeout).
    let r = one(h.request(subscribe(Cluster, &["ghost"])).unwrap());
    assert_eq!(names(&r), ["ghost"]);
    assert!(r.resources[0].resource.is_none());
    h.request(ack(&r)).unwrap();
    // Envoy 1.40 does not ask again; once `ghost` is discovered, it is sent all the same.
    let with_ghost =
        crate::serve::test_harness::sample_builder(&["a", "b", "c", "ghost"], 1, 10000)
            .cluster(eds_cluster("b", Duration::from_secs(7)))
            .cluster(eds_cluster("c", Duration::from_secs(7)))
            .wildcard_clusters(["a".into()])
            .build();
    let r = one(h.publish(with_ghost));
    assert_eq!(names(&r), ["ghost"]);
    assert!(r.resources[0].resource.is_some());
    // After a reconnect Envoy subscribes `*` and what it had: it gets those, not `c`.
    h.reconnect();
    h.publish(on_demand(1));
    let r = one(h.request(subscribe(Cluster, &["*", "b"])).unwrap());
    assert_eq!(names(&r), ["a", "b"]);
}
