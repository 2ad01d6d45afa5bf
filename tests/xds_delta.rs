//! Delta (incremental) xDS over real gRPC against the in-process server on 127.0.0.1:0.

mod support;

use std::collections::HashMap;

use ecs_xds::cache::NodeTypeResolver;
use ecs_xds::snapshot::ResourceType::{self, *};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use envoy_types::pb::google::rpc;
use support::xds::*;

fn subscribe(ty: ResourceType, names: &[&str]) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: ty.type_url().into(),
        resource_names_subscribe: names.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn first(ty: ResourceType, names: &[&str], id: &str) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        node: Some(node(id)),
        ..subscribe(ty, names)
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

#[tokio::test]
async fn a_wildcard_cds_subscription_gets_every_cluster_with_resource_versions() {
    let server = start_server(NodeTypeResolver::default()).await;
    let snapshot = sample(&["a", "b"], 1, 10000);
    let version = snapshot.version(Cluster).to_string();
    server.publisher.publish("sidecar", snapshot).unwrap();
    let mut s = ads_delta(server.addr).await;
    s.send(first(Cluster, &[], "sidecar-1")).await;
    let r = s.recv().await;
    assert_eq!(names(&r), ["a", "b"]);
    assert_eq!(r.system_version_info, version);
    assert!(r
        .resources
        .iter()
        .all(|r| r.version.len() == 16 && r.resource.is_some()));
    s.send(ack(&r)).await;
    s.expect_silence().await;
}

#[tokio::test]
async fn named_subscribe_and_unsubscribe_control_what_is_sent() {
    let server = start_server(NodeTypeResolver::default()).await;
    server
        .publisher
        .publish("sidecar", sample(&["a", "b", "c"], 1, 10000))
        .unwrap();
    let mut s = ads_delta(server.addr).await;
    s.send(first(Endpoint, &["a"], "sidecar-1")).await;
    let r = s.recv().await;
    assert_eq!(names(&r), ["a"]);
    s.send(ack(&r)).await;

    s.send(subscribe(Endpoint, &["c"])).await;
    let r = s.recv().await;
    assert_eq!(names(&r), ["c"], "only the newly subscribed name is sent");
    s.send(ack(&r)).await;

    s.send(DeltaDiscoveryRequest {
        type_url: Endpoint.type_url().into(),
        resource_names_unsubscribe: vec!["a".into()],
        ..Default::default()
    })
    .await;
    s.expect_silence().await;
    // A change to the unsubscribed name is not sent; a change to a subscribed one is.
    server
        .publisher
        .publish("sidecar", sample(&["a", "b", "c"], 2, 10000))
        .unwrap();
    let r = s.recv().await;
    assert_eq!(names(&r), ["c"]);
}

#[tokio::test]
async fn a_removed_cluster_is_listed_in_removed_resources() {
    let server = start_server(NodeTypeResolver::default()).await;
    server
        .publisher
        .publish("sidecar", sample(&["a", "b"], 1, 10000))
        .unwrap();
    let mut s = ads_delta(server.addr).await;
    s.send(first(Cluster, &[], "sidecar-1")).await;
    let r = s.recv().await;
    s.send(ack(&r)).await;
    server
        .publisher
        .publish("sidecar", sample(&["a"], 1, 10000))
        .unwrap();
    let r = s.recv().await;
    assert!(r.resources.is_empty(), "a is unchanged: {:?}", names(&r));
    assert_eq!(r.removed_resources, ["b"]);
}

#[tokio::test]
async fn a_reconnect_with_initial_resource_versions_gets_only_what_changed() {
    let server = start_server(NodeTypeResolver::default()).await;
    server
        .publisher
        .publish("sidecar", sample(&["a", "b"], 1, 10000))
        .unwrap();
    let mut s = ads_delta(server.addr).await;
    s.send(first(Cluster, &[], "sidecar-1")).await;
    let held = versions(&s.recv().await);
    drop(s);

    // Same content: the reconnect sends nothing at all.
    let mut s = ads_delta(server.addr).await;
    s.send(DeltaDiscoveryRequest {
        initial_resource_versions: held.clone(),
        ..first(Cluster, &[], "sidecar-1")
    })
    .await;
    s.expect_silence().await;
    drop(s);

    // A cluster added and one gone while disconnected: only those are sent.
    server
        .publisher
        .publish("sidecar", sample(&["a", "c"], 1, 10000))
        .unwrap();
    let mut s = ads_delta(server.addr).await;
    s.send(DeltaDiscoveryRequest {
        initial_resource_versions: held,
        ..first(Cluster, &[], "sidecar-1")
    })
    .await;
    let r = s.recv().await;
    assert_eq!(names(&r), ["c"]);
    assert_eq!(r.removed_resources, ["b"]);
}

#[tokio::test]
async fn a_delta_nack_is_recorded_and_the_rejected_version_is_not_resent() {
    let server = start_server(NodeTypeResolver::default()).await;
    server
        .publisher
        .publish("sidecar", sample(&["a"], 1, 10000))
        .unwrap();
    let mut s = ads_delta(server.addr).await;
    s.send(first(Cluster, &[], "sidecar-1")).await;
    let r = s.recv().await;
    s.send(ack(&r)).await;
    server
        .publisher
        .publish("sidecar", sample(&["a", "bad"], 1, 10000))
        .unwrap();
    let bad = s.recv().await;
    assert_eq!(names(&bad), ["bad"]);
    s.send(nack(&bad)).await;
    s.expect_silence().await;
    let nacks = server.cache.status().recent_nacks();
    assert_eq!(nacks.len(), 1);
    assert_eq!(nacks[0].rejected_version, bad.system_version_info);
    assert_eq!(nacks[0].message, "delta rejected by test");

    // The same content again: nothing. New content: the client's real state is diffed, so the
    // rejected resource's removal is not claimed and the new one is sent.
    server
        .publisher
        .publish("sidecar", sample(&["a", "bad"], 1, 10000))
        .unwrap();
    s.expect_silence().await;
    server
        .publisher
        .publish("sidecar", sample(&["a", "good"], 1, 10000))
        .unwrap();
    let r = s.recv().await;
    assert_eq!(names(&r), ["good"]);
    assert!(r.removed_resources.is_empty(), "Envoy never accepted 'bad'");
}

#[tokio::test]
async fn subscribing_again_to_a_held_name_resends_it_for_warming() {
    let server = start_server(NodeTypeResolver::default()).await;
    server
        .publisher
        .publish("sidecar", sample(&["a"], 1, 10000))
        .unwrap();
    let mut s = ads_delta(server.addr).await;
    s.send(first(Endpoint, &["a"], "sidecar-1")).await;
    let r = s.recv().await;
    s.send(ack(&r)).await;
    s.expect_silence().await;
    s.send(subscribe(Endpoint, &["a"])).await;
    let again = s.recv().await;
    assert_eq!(names(&again), ["a"]);
}

#[tokio::test]
async fn a_publish_coalesces_while_a_delta_response_is_unanswered() {
    let server = start_server(NodeTypeResolver::default()).await;
    server
        .publisher
        .publish("sidecar", sample(&["a"], 1, 10000))
        .unwrap();
    let mut s = ads_delta(server.addr).await;
    s.send(first(Endpoint, &["a"], "sidecar-1")).await;
    let r = s.recv().await;
    for port in 2..20 {
        server
            .publisher
            .publish("sidecar", sample(&["a"], port, 10000))
            .unwrap();
    }
    s.expect_silence().await;
    s.send(ack(&r)).await;
    let newest = s.recv().await;
    let expected = sample(&["a"], 19, 10000);
    assert_eq!(newest.system_version_info, **expected.version(Endpoint));
    s.send(ack(&newest)).await;
    s.expect_silence().await;
}

#[tokio::test]
async fn per_type_delta_services_serve_their_own_type() {
    use envoy_types::pb::envoy::service::cluster::v3::cluster_discovery_service_client::ClusterDiscoveryServiceClient;
    let server = start_server(NodeTypeResolver::default()).await;
    server
        .publisher
        .publish("sidecar", sample(&["a", "b"], 1, 10000))
        .unwrap();
    let mut client = ClusterDiscoveryServiceClient::new(channel(server.addr).await);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut req = first(Cluster, &[], "sidecar-1");
    req.type_url.clear(); // implied by the service
    tx.send(req).await.unwrap();
    let mut responses = client
        .delta_clusters(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let r = responses.message().await.unwrap().unwrap();
    assert_eq!(r.type_url, Cluster.type_url());
    assert_eq!(names(&r), ["a", "b"]);
}

#[tokio::test]
async fn a_wildcard_added_to_named_eds_sends_only_what_the_client_lacks() {
    let server = start_server(NodeTypeResolver::default()).await;
    server
        .publisher
        .publish("sidecar", sample(&["a", "b", "c"], 1, 10000))
        .unwrap();
    let mut s = ads_delta(server.addr).await;
    s.send(first(Endpoint, &["a"], "sidecar-1")).await;
    let r = s.recv().await;
    assert_eq!(names(&r), ["a"]);
    s.send(ack(&r)).await;
    s.send(subscribe(Endpoint, &["*"])).await;
    let r = s.recv().await;
    assert_eq!(names(&r), ["b", "c"], "a is held already");
    s.send(ack(&r)).await;
    s.expect_silence().await;
}
