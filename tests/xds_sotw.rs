//! State-of-the-world xDS over real gRPC against the in-process server on 127.0.0.1:0.

use crate::support;

use std::time::{Duration, Instant};

use ecs_xds::cache::{NodeTypeResolver, NodeTypeSource};
use ecs_xds::snapshot::ResourceType::*;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use support::xds::*;

fn with_node(mut req: DiscoveryRequest, id: &str) -> DiscoveryRequest {
    req.node = Some(node(id));
    req
}

#[tokio::test]
async fn initial_cds_request_gets_every_cluster_with_version_and_nonce() {
    let server = start_server(NodeTypeResolver::default()).await;
    let snapshot = sample(&["a", "b"], 8080, 10000);
    let version = snapshot.version(Cluster).to_string();
    server.publisher.publish("sidecar", snapshot).unwrap();

    let mut s = ads(server.addr).await;
    s.send(with_node(request(Cluster, &[], "", ""), "sidecar-app1"))
        .await;
    let r = s.recv().await;
    assert_eq!(r.type_url, Cluster.type_url());
    assert_eq!(r.version_info, version);
    assert!(!r.nonce.is_empty());
    assert_eq!(names(&r), ["a", "b"]);

    // An ACK (same version, same nonce) is answered by nothing: the next response is the
    // answer to the request sent after it, by which time the ACK is recorded.
    s.send(ack(&r, &[])).await;
    s.send(request(Listener, &[], "", "")).await;
    assert_eq!(s.recv().await.type_url, Listener.type_url());
    let status = &server.cache.status().streams()[0];
    assert_eq!(status.node_id, "sidecar-app1");
    assert_eq!(status.node_type, "sidecar");
    assert_eq!(
        status.types[0].acked_version.as_deref(),
        Some(version.as_str())
    );
}

#[tokio::test]
async fn an_unknown_node_type_waits_until_it_is_published() {
    let server = start_server(NodeTypeResolver::default()).await;
    let mut s = ads(server.addr).await;
    s.send(with_node(request(Cluster, &[], "", ""), "gateway-1"))
        .await;
    server
        .publisher
        .publish("gateway", sample(&["g"], 1, 10000))
        .unwrap();
    assert_eq!(names(&s.recv().await), ["g"]);
}

#[tokio::test]
async fn node_type_can_come_from_the_node_cluster() {
    let server = start_server(NodeTypeResolver::new(NodeTypeSource::Cluster, None)).await;
    server
        .publisher
        .publish("edge", sample(&["e"], 1, 10000))
        .unwrap();
    let mut s = ads(server.addr).await;
    let mut req = with_node(request(Cluster, &[], "", ""), "sidecar-1");
    req.node.as_mut().unwrap().cluster = "edge".into();
    s.send(req).await;
    assert_eq!(names(&s.recv().await), ["e"]);
}

#[tokio::test]
async fn malformed_requests_end_the_stream_with_invalid_argument() {
    let server = start_server(NodeTypeResolver::default()).await;
    // No node on the first request.
    let mut s = ads(server.addr).await;
    s.send(request(Cluster, &[], "", "")).await;
    assert_eq!(s.expect_error().await.code(), tonic::Code::InvalidArgument);
    // No type URL on ADS.
    let mut s = ads(server.addr).await;
    let mut req = with_node(request(Cluster, &[], "", ""), "sidecar-1");
    req.type_url.clear();
    s.send(req).await;
    assert_eq!(s.expect_error().await.code(), tonic::Code::InvalidArgument);
    // A listener request on the cluster service.
    let mut s = per_type(server.addr, Cluster).await;
    s.send(with_node(request(Listener, &[], "", ""), "sidecar-1"))
        .await;
    assert_eq!(s.expect_error().await.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn per_type_services_serve_their_own_type() {
    let server = start_server(NodeTypeResolver::default()).await;
    server
        .publisher
        .publish("sidecar", sample(&["a", "b"], 1, 10000))
        .unwrap();
    for (ty, names_wanted, expected) in [
        (Cluster, vec![], vec!["a", "b"]),
        (Endpoint, vec!["b"], vec!["b"]),
        (Listener, vec![], vec!["ingress"]),
        (Route, vec!["routes"], vec!["routes"]),
    ] {
        let mut s = per_type(server.addr, ty).await;
        let mut req = with_node(request(ty, &names_wanted, "", ""), "sidecar-1");
        req.type_url.clear(); // implied by the service
        s.send(req).await;
        let r = s.recv().await;
        assert_eq!(r.type_url, ty.type_url());
        assert_eq!(names(&r), expected, "{ty}");
    }
}

#[tokio::test]
async fn fetch_returns_the_current_resources() {
    use envoy_types::pb::envoy::service::cluster::v3::cluster_discovery_service_client::ClusterDiscoveryServiceClient;
    let server = start_server(NodeTypeResolver::default()).await;
    let mut client = ClusterDiscoveryServiceClient::new(channel(server.addr).await);
    let req = with_node(request(Cluster, &[], "", ""), "sidecar-1");
    let err = client.fetch_clusters(req.clone()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    server
        .publisher
        .publish("sidecar", sample(&["a", "b"], 1, 10000))
        .unwrap();
    let r = client.fetch_clusters(req).await.unwrap().into_inner();
    assert_eq!(names(&r), ["a", "b"]);
}

#[tokio::test]
async fn a_stalled_stream_blocks_neither_the_publisher_nor_other_streams_and_versions_coalesce() {
    let server = start_server(NodeTypeResolver::default()).await;
    let many: Vec<String> = (0..2000).map(|i| format!("cluster-{i:04}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    server
        .publisher
        .publish("sidecar", sample(&many, 1, 10000))
        .unwrap();

    // The stalled client subscribes and then never reads again.
    let stalled = ads(server.addr).await;
    stalled
        .send(with_node(request(Cluster, &[], "", ""), "sidecar-stalled"))
        .await;
    stalled.send(request(Endpoint, &many, "", "")).await;

    let mut healthy = ads(server.addr).await;
    healthy
        .send(with_node(request(Listener, &[], "", ""), "sidecar-ok"))
        .await;
    let first = healthy.recv().await;

    // Many publishes while the healthy client has not ACKed yet: nothing more is sent until
    // the ACK, and then only the newest version.
    // Built first, so only the publishes are timed (building is slow in debug builds).
    let snapshots: Vec<_> = (2..40)
        .map(|port| sample(&many, port, 10000 + port))
        .collect();
    let last = snapshots.last().unwrap().version(Listener).to_string();
    let started = Instant::now();
    for snapshot in snapshots {
        server.publisher.publish("sidecar", snapshot).unwrap();
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "publishing never waits for streams"
    );
    healthy.send(ack(&first, &[])).await;
    let newest = healthy.recv().await;
    assert_eq!(newest.version_info, last);
    healthy.send(ack(&newest, &[])).await;
    healthy.send(request(Cluster, &[], "", "")).await;
    assert_eq!(
        healthy.recv().await.type_url,
        Cluster.type_url(),
        "the ACK is answered by nothing"
    );
    drop(stalled);
}

/// A message that is not a DiscoveryRequest: field 1 (`version_info`, a string) holds bytes
/// that are not UTF-8.
#[derive(Clone, PartialEq, prost::Message)]
struct Malformed {
    #[prost(bytes = "vec", tag = "1")]
    version_info: Vec<u8>,
}

#[tokio::test]
async fn a_request_that_does_not_decode_gets_an_error_status_not_a_panic() {
    let server = start_server(NodeTypeResolver::default()).await;
    server
        .publisher
        .publish("sidecar", sample(&["a"], 1, 10000))
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel(server.addr).await);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<
        Malformed,
        envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse,
    >::default();
    let path = http::uri::PathAndQuery::from_static(
        "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources",
    );
    let requests = tokio_stream::iter(vec![Malformed {
        version_info: vec![0xff, 0xfe],
    }]);
    let response = grpc
        .streaming(tonic::Request::new(requests), path, codec)
        .await;
    let status = match response {
        Err(status) => status,
        Ok(r) => r.into_inner().message().await.unwrap_err(),
    };
    assert_eq!(status.code(), tonic::Code::Internal, "{status}");
    // The server is still serving.
    let mut s = ads(server.addr).await;
    s.send(with_node(request(Cluster, &[], "", ""), "sidecar-1"))
        .await;
    assert_eq!(names(&s.recv().await), ["a"]);
}
