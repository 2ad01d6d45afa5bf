//! State-of-the-world xDS over real gRPC against the in-process server on 127.0.0.1:0.

mod support;

use std::time::{Duration, Instant};

use ecs_xds::cache::{NodeTypeResolver, NodeTypeSource};
use ecs_xds::snapshot::ResourceType::{self, *};
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use support::xds::*;

fn with_node(mut req: DiscoveryRequest, id: &str) -> DiscoveryRequest {
    req.node = Some(node(id));
    req
}

/// Subscribes an ADS stream to all four types like Envoy does and ACKs everything.
async fn subscribed_sidecar(server: &TestServer) -> SotwStream {
    let mut s = ads(server.addr).await;
    s.send(with_node(request(Cluster, &[], "", ""), "sidecar-app1"))
        .await;
    let cds = s.recv().await;
    s.send(ack(&cds, &[])).await;
    s.send(request(Endpoint, &["a", "b"], "", "")).await;
    let eds = s.recv().await;
    s.send(ack(&eds, &["a", "b"])).await;
    s.send(request(Listener, &[], "", "")).await;
    let lds = s.recv().await;
    s.send(ack(&lds, &[])).await;
    s.send(request(Route, &["routes"], "", "")).await;
    let rds = s.recv().await;
    s.send(ack(&rds, &["routes"])).await;
    s
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

    // An ACK (same version, same nonce) is answered by nothing.
    s.send(ack(&r, &[])).await;
    s.expect_silence().await;
    let status = &server.cache.status().streams()[0];
    assert_eq!(status.node_id, "sidecar-app1");
    assert_eq!(status.node_type, "sidecar");
    assert_eq!(
        status.types[0].acked_version.as_deref(),
        Some(version.as_str())
    );
}

#[tokio::test]
async fn each_response_gets_a_fresh_nonce_and_stale_nonces_are_ignored() {
    let server = start_server(NodeTypeResolver::default()).await;
    server
        .publisher
        .publish("sidecar", sample(&["a"], 1, 10000))
        .unwrap();
    let mut s = ads(server.addr).await;
    s.send(with_node(request(Cluster, &[], "", ""), "sidecar-1"))
        .await;
    let first = s.recv().await;
    s.send(ack(&first, &[])).await;
    server
        .publisher
        .publish("sidecar", sample(&["a", "b"], 1, 10000))
        .unwrap();
    let second = s.recv().await;
    assert_ne!(first.nonce, second.nonce);
    assert_ne!(first.version_info, second.version_info);

    // A request carrying the first (stale) nonce is ignored, even though it is not an ACK of
    // the current response.
    s.send(request(Cluster, &[], &first.version_info, &first.nonce))
        .await;
    s.expect_silence().await;
}

#[tokio::test]
async fn eds_named_subscription_gets_only_the_named_endpoints() {
    let server = start_server(NodeTypeResolver::default()).await;
    server
        .publisher
        .publish("sidecar", sample(&["a", "b", "c"], 1, 10000))
        .unwrap();
    let mut s = ads(server.addr).await;
    s.send(with_node(
        request(Endpoint, &["c", "a", "missing"], "", ""),
        "sidecar-1",
    ))
    .await;
    let r = s.recv().await;
    assert_eq!(names(&r), ["a", "c"]);
}

#[tokio::test]
async fn a_publish_pushes_changed_types_in_make_before_break_order() {
    let server = start_server(NodeTypeResolver::default()).await;
    server
        .publisher
        .publish("sidecar", sample(&["a", "b"], 1, 10000))
        .unwrap();
    let mut s = subscribed_sidecar(&server).await;
    s.expect_silence().await;

    // Every type changes: a new endpoint port, a new listener port, and routes to "b".
    let mut changed = ecs_xds::snapshot::Snapshot::builder();
    for name in ["a", "b"] {
        changed = changed
            .cluster(ecs_xds::synthesize::clusters::eds_cluster(
                name,
                Duration::from_secs(2),
            ))
            .endpoints(ecs_xds::synthesize::endpoints::load_assignment(
                name,
                [("127.0.0.1".to_string(), 2, Default::default())],
            ));
    }
    let changed = changed
        .listener(ecs_xds::synthesize::listeners::http_listener(
            "ingress",
            "127.0.0.1",
            10001,
            "routes",
        ))
        .route(ecs_xds::synthesize::listeners::route_configuration(
            "routes",
            [(vec!["*".to_string()], "b")],
        ))
        .build();
    server.publisher.publish("sidecar", changed).unwrap();
    let order: Vec<ResourceType> = {
        let mut order = Vec::new();
        for _ in 0..4 {
            let r = s.recv().await;
            order.push(ResourceType::from_type_url(&r.type_url).unwrap());
        }
        order
    };
    assert_eq!(order, [Cluster, Endpoint, Listener, Route]);
}

#[tokio::test]
async fn only_the_changed_endpoints_are_pushed_and_other_types_stay_quiet() {
    let server = start_server(NodeTypeResolver::default()).await;
    server
        .publisher
        .publish("sidecar", sample(&["a", "b"], 1, 10000))
        .unwrap();
    let mut s = subscribed_sidecar(&server).await;
    let mut snapshot = sample(&["a", "b"], 1, 10000);
    // Only cluster b's endpoints change.
    let b = ecs_xds::synthesize::endpoints::load_assignment(
        "b",
        [("127.0.0.1".to_string(), 9, Default::default())],
    );
    snapshot = rebuild_with(snapshot, b);
    server.publisher.publish("sidecar", snapshot).unwrap();
    let r = s.recv().await;
    assert_eq!(r.type_url, Endpoint.type_url());
    assert_eq!(names(&r), ["b"]);
    s.send(ack(&r, &["a", "b"])).await;
    s.expect_silence().await;
}

fn rebuild_with(
    base: ecs_xds::snapshot::Snapshot,
    cla: envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment,
) -> ecs_xds::snapshot::Snapshot {
    let mut b = ecs_xds::snapshot::Snapshot::builder();
    for ty in ResourceType::ALL {
        for r in base.of(ty).resources().values() {
            b = b.shared(ty, r.clone());
        }
    }
    b.endpoints(cla).build()
}

#[tokio::test]
async fn eds_asked_again_after_ack_is_answered_even_though_nothing_changed() {
    // Envoy re-requests EDS for a cluster it is warming after a CDS update; go-control-plane
    // leaves such clusters stuck warming by treating the request as an ACK.
    let server = start_server(NodeTypeResolver::default()).await;
    server
        .publisher
        .publish("sidecar", sample(&["a", "b"], 1, 10000))
        .unwrap();
    let mut s = ads(server.addr).await;
    s.send(with_node(
        request(Endpoint, &["a", "b"], "", ""),
        "sidecar-1",
    ))
    .await;
    let r = s.recv().await;
    s.send(ack(&r, &["a", "b"])).await;
    s.expect_silence().await;
    s.send(ack(&r, &["a", "b"])).await;
    let again = s.recv().await;
    assert_eq!(again.version_info, r.version_info);
    assert_eq!(names(&again), ["a", "b"]);
    assert_ne!(again.nonce, r.nonce);
}

#[tokio::test]
async fn a_nack_is_recorded_and_the_rejected_version_is_not_resent() {
    let server = start_server(NodeTypeResolver::default()).await;
    server
        .publisher
        .publish("sidecar", sample(&["a"], 1, 10000))
        .unwrap();
    let mut s = ads(server.addr).await;
    s.send(with_node(request(Cluster, &[], "", ""), "sidecar-1"))
        .await;
    let good = s.recv().await;
    s.send(ack(&good, &[])).await;

    server
        .publisher
        .publish("sidecar", sample(&["a", "bad"], 1, 10000))
        .unwrap();
    let bad = s.recv().await;
    s.send(nack(&bad, &[], &good.version_info)).await;
    s.expect_silence().await;

    let nacks = server.cache.status().recent_nacks();
    assert_eq!(nacks.len(), 1);
    assert_eq!(nacks[0].node_id, "sidecar-1");
    assert_eq!(nacks[0].resource_type, Cluster);
    assert_eq!(nacks[0].rejected_version, bad.version_info);
    assert_eq!(nacks[0].message, "rejected by test");
    let stream = &server.cache.status().streams()[0];
    assert_eq!(
        stream.types[0].acked_version.as_deref(),
        Some(good.version_info.as_str())
    );

    // Publishing the rejected content again sends nothing; different content is sent.
    server
        .publisher
        .publish("sidecar", sample(&["a", "bad"], 1, 10000))
        .unwrap();
    s.expect_silence().await;
    server
        .publisher
        .publish("sidecar", sample(&["a", "fixed"], 1, 10000))
        .unwrap();
    let fixed = s.recv().await;
    assert_eq!(names(&fixed), ["a", "fixed"]);
    assert_eq!(server.cache.status().counters().pushes(Cluster), 3);
}

#[tokio::test]
async fn a_reconnect_with_the_current_version_is_not_answered() {
    // A restarted controller computes the same versions, so Envoy's reconnect re-pushes nothing.
    let server = start_server(NodeTypeResolver::default()).await;
    let snapshot = sample(&["a"], 1, 10000);
    let cds_version = snapshot.version(Cluster).to_string();
    server.publisher.publish("sidecar", snapshot).unwrap();
    let mut s = ads(server.addr).await;
    s.send(with_node(
        request(Cluster, &[], &cds_version, ""),
        "sidecar-1",
    ))
    .await;
    s.expect_silence().await;
    // Content Envoy does not have is sent.
    server
        .publisher
        .publish("sidecar", sample(&["a", "b"], 1, 10000))
        .unwrap();
    assert_eq!(names(&s.recv().await), ["a", "b"]);
}

#[tokio::test]
async fn an_unknown_node_type_waits_until_it_is_published() {
    let server = start_server(NodeTypeResolver::default()).await;
    let mut s = ads(server.addr).await;
    s.send(with_node(request(Cluster, &[], "", ""), "gateway-1"))
        .await;
    s.expect_silence().await;
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
async fn an_unknown_type_url_on_ads_is_ignored_and_the_stream_keeps_working() {
    let server = start_server(NodeTypeResolver::default()).await;
    server
        .publisher
        .publish("sidecar", sample(&["a"], 1, 10000))
        .unwrap();
    let mut s = ads(server.addr).await;
    let mut req = with_node(request(Cluster, &[], "", ""), "sidecar-1");
    req.type_url = "type.googleapis.com/envoy.config.route.v3.ScopedRouteConfiguration".into();
    s.send(req).await;
    s.expect_silence().await;
    s.send(request(Cluster, &[], "", "")).await;
    assert_eq!(names(&s.recv().await), ["a"]);
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
    healthy.expect_silence().await;
    drop(stalled);
}

#[tokio::test]
async fn acks_repeating_a_name_do_not_cause_a_response_loop() {
    let server = start_server(NodeTypeResolver::default()).await;
    server
        .publisher
        .publish("sidecar", sample(&["a", "b"], 1, 10000))
        .unwrap();
    let mut s = ads(server.addr).await;
    s.send(with_node(
        request(Endpoint, &["a", "b", "a"], "", ""),
        "sidecar-1",
    ))
    .await;
    let r = s.recv().await;
    assert_eq!(names(&r), ["a", "b"]);
    s.send(ack(&r, &["a", "b", "a"])).await;
    s.expect_silence().await;
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
