//! Delta (incremental) xDS over real gRPC against the in-process server on 127.0.0.1:0.

use crate::support;

use ecs_xds::cache::NodeTypeResolver;
use ecs_xds::snapshot::ResourceType::{self, *};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
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

fn names(r: &DeltaDiscoveryResponse) -> Vec<&str> {
    r.resources.iter().map(|r| r.name.as_str()).collect()
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
    // An ACK is answered by nothing: the next response answers the request sent after it.
    s.send(ack(&r)).await;
    s.send(subscribe(Listener, &[])).await;
    assert_eq!(s.recv().await.type_url, Listener.type_url());
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
