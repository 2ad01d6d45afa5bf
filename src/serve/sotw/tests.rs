//! The SotW rules of the module doc, checked on the state itself: requests and publishes in,
//! responses out, no network. An empty `Vec` is "nothing is sent".

use std::time::Duration;

use tonic::Code;

use super::SotwState;
use crate::serve::test_harness::{
    ack, endpoints, nack, names, one, request, sample, sample_builder, Harness,
};
use crate::snapshot::ResourceType::{self, *};
use crate::snapshot::Snapshot;
use crate::synthesize::clusters::eds_cluster;

type Sotw = Harness<SotwState>;

/// An ADS stream on `snapshot`, subscribed to all four types like Envoy's, every response
/// ACKed.
fn subscribed_sidecar(snapshot: Snapshot) -> Sotw {
    let mut h = Sotw::ads();
    h.publish(snapshot);
    for (ty, subscription) in [
        (Cluster, &[][..]),
        (Endpoint, &["a", "b"]),
        (Listener, &[]),
        (Route, &["routes"]),
    ] {
        let r = one(h.request(request(ty, subscription, "", "")).unwrap());
        assert!(h.request(ack(&r, subscription)).unwrap().is_empty());
    }
    h
}

#[test]
fn the_initial_cds_request_gets_every_cluster_with_version_and_nonce() {
    let mut h = Sotw::ads();
    let snapshot = sample(&["a", "b"], 8080, 10000);
    let version = snapshot.version(Cluster).to_string();
    assert!(h.publish(snapshot).is_empty(), "nothing is subscribed yet");
    let r = one(h.request(request(Cluster, &[], "", "")).unwrap());
    assert_eq!(r.type_url, Cluster.type_url());
    assert_eq!(r.version_info, version);
    assert!(!r.nonce.is_empty());
    assert_eq!(names(&r), ["a", "b"]);
    let cds = &h.status().types[Cluster.index()];
    assert_eq!(cds.sent_version.as_deref(), Some(version.as_str()));
    assert_eq!(cds.acked_version, None);

    // An ACK (same version, same nonce) is answered by nothing, and recorded.
    assert!(h.request(ack(&r, &[])).unwrap().is_empty());
    let cds = &h.status().types[Cluster.index()];
    assert_eq!(cds.acked_version.as_deref(), Some(version.as_str()));
}

#[test]
fn each_response_gets_a_fresh_nonce_and_a_stale_nonce_is_ignored() {
    let mut h = Sotw::ads();
    h.publish(sample(&["a"], 1, 10000));
    let first = one(h.request(request(Cluster, &[], "", "")).unwrap());
    assert!(h.request(ack(&first, &[])).unwrap().is_empty());
    let second = one(h.publish(sample(&["a", "b"], 1, 10000)));
    assert_ne!(first.nonce, second.nonce);
    assert_ne!(first.version_info, second.version_info);

    // A request carrying the first (stale) nonce is ignored: it neither gets an answer nor
    // counts as an ACK of the second response.
    let stale = request(Cluster, &[], &first.version_info, &first.nonce);
    assert!(h.request(stale).unwrap().is_empty());
    let cds = &h.status().types[Cluster.index()];
    assert_eq!(
        cds.acked_version.as_deref(),
        Some(first.version_info.as_str())
    );
}

#[test]
fn a_named_eds_subscription_gets_only_the_named_endpoints_that_exist() {
    let mut h = Sotw::ads();
    h.publish(sample(&["a", "b", "c"], 1, 10000));
    let r = one(h
        .request(request(Endpoint, &["c", "a", "missing"], "", ""))
        .unwrap());
    assert_eq!(names(&r), ["a", "c"]);
}

#[test]
fn a_publish_changing_every_type_pushes_in_make_before_break_order() {
    let mut h = subscribed_sidecar(sample(&["a", "b"], 1, 10000));
    // A new connect timeout, endpoint port and listener port, and routes to "b".
    let changed = sample_builder(&["b", "a"], 2, 10001)
        .cluster(eds_cluster("a", Duration::from_secs(2)))
        .build();
    let order: Vec<ResourceType> = h
        .publish(changed)
        .iter()
        .map(|r| ResourceType::from_type_url(&r.type_url).unwrap())
        .collect();
    assert_eq!(order, [Cluster, Endpoint, Listener, Route]);
}

#[test]
fn only_the_changed_endpoints_are_pushed_and_other_types_stay_quiet() {
    let mut h = subscribed_sidecar(sample(&["a", "b"], 1, 10000));
    let b_moved = sample_builder(&["a", "b"], 1, 10000)
        .endpoints(endpoints("b", 9))
        .build();
    let r = one(h.publish(b_moved));
    assert_eq!(r.type_url, Endpoint.type_url());
    assert_eq!(names(&r), ["b"]);
    assert!(h.request(ack(&r, &["a", "b"])).unwrap().is_empty());
}

#[test]
fn eds_asked_again_after_its_ack_is_answered_although_nothing_changed() {
    // Envoy re-requests EDS for a cluster it is warming after a CDS update; go-control-plane
    // leaves such clusters stuck warming by treating the request as an ACK.
    let mut h = Sotw::ads();
    h.publish(sample(&["a", "b"], 1, 10000));
    let r = one(h.request(request(Endpoint, &["a", "b"], "", "")).unwrap());
    assert!(h.request(ack(&r, &["a", "b"])).unwrap().is_empty());
    let again = one(h.request(ack(&r, &["a", "b"])).unwrap());
    assert_eq!(again.version_info, r.version_info);
    assert_eq!(names(&again), ["a", "b"]);
    assert_ne!(again.nonce, r.nonce);
}

#[test]
fn adding_a_name_to_the_eds_subscription_answers_with_every_subscribed_resource() {
    let mut h = Sotw::ads();
    h.publish(sample(&["a", "b"], 1, 10000));
    let r = one(h.request(request(Endpoint, &["a"], "", "")).unwrap());
    let more = one(h.request(ack(&r, &["a", "b"])).unwrap());
    assert_eq!(names(&more), ["a", "b"]);
    let eds = &h.status().types[Endpoint.index()];
    assert_eq!(eds.acked_version.as_deref(), Some(r.version_info.as_str()));
}

#[test]
fn a_nack_is_recorded_and_the_rejected_version_is_not_resent() {
    let mut h = Sotw::ads();
    h.publish(sample(&["a"], 1, 10000));
    let good = one(h.request(request(Cluster, &[], "", "")).unwrap());
    assert!(h.request(ack(&good, &[])).unwrap().is_empty());
    let bad = one(h.publish(sample(&["a", "bad"], 1, 10000)));
    assert!(h
        .request(nack(&bad, &[], &good.version_info))
        .unwrap()
        .is_empty());

    let nacks = h.cache.status().recent_nacks();
    assert_eq!(nacks.len(), 1);
    assert_eq!(nacks[0].node_id, "sidecar-1");
    assert_eq!(nacks[0].node_type, "sidecar");
    assert_eq!(nacks[0].resource_type, Cluster);
    assert_eq!(nacks[0].rejected_version, bad.version_info);
    assert_eq!(nacks[0].message, "rejected by test");
    let cds = &h.status().types[Cluster.index()];
    assert_eq!(
        cds.acked_version.as_deref(),
        Some(good.version_info.as_str())
    );
    assert_eq!(cds.last_nack.as_deref(), Some(&nacks[0]));

    // Woken by a publish that leaves the clusters as rejected, the stream sends nothing;
    // different clusters are sent.
    assert!(h.publish(sample(&["a", "bad"], 2, 10000)).is_empty());
    let fixed = one(h.publish(sample(&["a", "fixed"], 2, 10000)));
    assert_eq!(names(&fixed), ["a", "fixed"]);
    assert_eq!(h.cache.status().counters().pushes(Cluster), 3);
}

#[test]
fn after_a_nack_the_next_eds_response_carries_every_subscribed_resource() {
    // Envoy may have applied part of a rejected EDS response, so what follows is whole.
    let before = sample(&["a", "b"], 1, 10000);
    let acked = before.version(Endpoint).to_string();
    let mut h = subscribed_sidecar(before);
    let b_moved = sample_builder(&["a", "b"], 1, 10000).endpoints(endpoints("b", 9));
    let rejected = one(h.publish(b_moved.build()));
    assert_eq!(names(&rejected), ["b"]);
    assert!(h
        .request(nack(&rejected, &["a", "b"], &acked))
        .unwrap()
        .is_empty());
    let a_moved = sample_builder(&["a", "b"], 1, 10000)
        .endpoints(endpoints("a", 7))
        .endpoints(endpoints("b", 9));
    let r = one(h.publish(a_moved.build()));
    assert_eq!(names(&r), ["a", "b"]);
}

#[test]
fn a_reconnect_with_the_current_version_is_not_answered_but_new_content_is() {
    // A restarted controller computes the same versions, so Envoy's reconnect re-pushes
    // nothing.
    let mut h = Sotw::ads();
    let snapshot = sample(&["a"], 1, 10000);
    let cds_version = snapshot.version(Cluster).to_string();
    h.publish(snapshot);
    assert!(h
        .request(request(Cluster, &[], &cds_version, ""))
        .unwrap()
        .is_empty());
    let r = one(h.publish(sample(&["a", "b"], 1, 10000)));
    assert_eq!(names(&r), ["a", "b"]);
}

#[test]
fn a_request_before_any_snapshot_is_answered_by_the_first_publish() {
    let mut h = Sotw::ads();
    assert!(h.request(request(Cluster, &[], "", "")).unwrap().is_empty());
    let r = one(h.publish(sample(&["g"], 1, 10000)));
    assert_eq!(names(&r), ["g"]);
}

#[test]
fn a_wildcard_type_with_nothing_in_it_is_still_answered() {
    // Envoy waits for an LDS answer, even an empty one, before it finishes initializing.
    let mut h = Sotw::ads();
    let no_listeners = Snapshot::builder()
        .cluster(eds_cluster("a", Duration::from_secs(1)))
        .endpoints(endpoints("a", 1))
        .build();
    h.publish(no_listeners);
    let r = one(h.request(request(Listener, &[], "", "")).unwrap());
    assert!(r.resources.is_empty());
    assert!(h.request(ack(&r, &[])).unwrap().is_empty());
}

#[test]
fn an_unknown_type_url_on_ads_is_ignored_and_the_stream_keeps_working() {
    let mut h = Sotw::ads();
    h.publish(sample(&["a"], 1, 10000));
    let mut req = request(Cluster, &[], "", "");
    req.type_url = "type.googleapis.com/envoy.config.route.v3.ScopedRouteConfiguration".into();
    assert!(h.request(req.clone()).unwrap().is_empty());
    assert!(h.request(req).unwrap().is_empty(), "ignored every time");
    let r = one(h.request(request(Cluster, &[], "", "")).unwrap());
    assert_eq!(names(&r), ["a"]);
}

#[test]
fn acks_repeating_a_name_do_not_cause_a_response_loop() {
    let mut h = Sotw::ads();
    h.publish(sample(&["a", "b"], 1, 10000));
    let r = one(h
        .request(request(Endpoint, &["a", "b", "a"], "", ""))
        .unwrap());
    assert_eq!(names(&r), ["a", "b"]);
    assert!(h.request(ack(&r, &["a", "b", "a"])).unwrap().is_empty());
}

#[test]
fn publishes_while_a_response_is_unacked_coalesce_to_the_newest_after_the_ack() {
    let mut h = Sotw::ads();
    h.publish(sample(&["a"], 1, 10000));
    let first = one(h.request(request(Listener, &[], "", "")).unwrap());
    for port in 2..20 {
        assert!(h.publish(sample(&["a"], port, 10000 + port)).is_empty());
    }
    let newest = one(h.request(ack(&first, &[])).unwrap());
    let expected = sample(&["a"], 19, 10019);
    assert_eq!(newest.version_info, **expected.version(Listener));
    assert!(h.request(ack(&newest, &[])).unwrap().is_empty());
}

#[test]
fn a_per_type_state_refuses_another_type_url_with_invalid_argument() {
    let mut h = Sotw::new(Some(Cluster));
    h.publish(sample(&["a"], 1, 10000));
    let refused = h.request(request(Listener, &[], "", "")).unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused}");
}

#[test]
fn a_per_type_state_takes_an_empty_type_url_as_its_own_type() {
    let mut h = Sotw::new(Some(Cluster));
    h.publish(sample(&["a", "b"], 1, 10000));
    let mut req = request(Cluster, &[], "", "");
    req.type_url.clear();
    let r = one(h.request(req).unwrap());
    assert_eq!(r.type_url, Cluster.type_url());
    assert_eq!(names(&r), ["a", "b"]);
}

#[test]
fn an_ads_request_without_a_type_url_is_invalid_argument() {
    let mut h = Sotw::ads();
    let mut req = request(Cluster, &[], "", "");
    req.type_url.clear();
    let refused = h.request(req).unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused}");
}

/// gRPC clients subscribe to listeners and clusters by name. SotW has the server send every
/// subscribed listener or cluster in each response (one left out would be deleted), and only
/// those.
#[test]
fn a_named_cds_subscription_gets_every_subscribed_cluster_whenever_one_changes() {
    let mut h = Sotw::ads();
    h.publish(sample(&["a", "b", "c"], 1, 10000));
    let r = one(h.request(request(Cluster, &["a", "b"], "", "")).unwrap());
    assert_eq!(names(&r), ["a", "b"]);
    assert!(h.request(ack(&r, &["a", "b"])).unwrap().is_empty());

    // Only b changes (and c, which is not subscribed): both subscribed clusters come again.
    let mut changed = sample_builder(&["a"], 1, 10000);
    for name in ["b", "c"] {
        changed = changed
            .cluster(eds_cluster(name, Duration::from_secs(9)))
            .endpoints(endpoints(name, 1));
    }
    let r = one(h.publish(changed.build()));
    assert_eq!(names(&r), ["a", "b"]);
    assert!(h.request(ack(&r, &["a", "b"])).unwrap().is_empty());

    // Only c changes: nothing this stream subscribed to, so nothing is sent.
    let mut changed = sample_builder(&["a"], 1, 10000);
    changed = changed
        .cluster(eds_cluster("b", Duration::from_secs(9)))
        .endpoints(endpoints("b", 1))
        .cluster(eds_cluster("c", Duration::from_secs(3)))
        .endpoints(endpoints("c", 1));
    assert!(h.publish(changed.build()).is_empty());
}

#[test]
fn a_subscribed_listener_that_does_not_exist_is_reported_not_found() {
    let mut h = Sotw::ads();
    h.publish(sample(&["a"], 1, 10000));
    let r = one(h
        .request(request(Listener, &["ingress", "orders"], "", ""))
        .unwrap());
    assert_eq!(names(&r), ["ingress"]);
    assert_eq!(r.resource_errors.len(), 1, "{:?}", r.resource_errors);
    let error = &r.resource_errors[0];
    assert_eq!(error.resource_name.as_ref().unwrap().name, "orders");
    let status = error.error_detail.as_ref().unwrap();
    assert_eq!(status.code, Code::NotFound as i32);
    assert!(
        status.message.contains("does not exist"),
        "{}",
        status.message
    );

    // A wildcard subscription has nothing to report missing; named EDS neither (Envoy asks
    // for endpoints of clusters as they warm).
    let mut h = Sotw::ads();
    h.publish(sample(&["a"], 1, 10000));
    let r = one(h.request(request(Listener, &[], "", "")).unwrap());
    assert!(r.resource_errors.is_empty());
    let r = one(h.request(request(Endpoint, &["a", "zzz"], "", "")).unwrap());
    assert!(r.resource_errors.is_empty());
}
