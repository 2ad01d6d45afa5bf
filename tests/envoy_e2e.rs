//! The xDS server against a real Envoy 1.40, over ADS state-of-the-world and delta.
//!
//! Every address is on 127.0.0.1: the xDS server, Envoy's admin and listener, and the HTTP
//! backends the EDS endpoints point at.

use crate::support;

use std::time::Duration;

use ecs_xds::cache::NodeTypeResolver;
use ecs_xds::snapshot::{ResourceType, Snapshot};
use ecs_xds::synthesize::clusters::eds_cluster;
use ecs_xds::synthesize::endpoints::load_assignment;
use ecs_xds::synthesize::listeners::{http_listener, route_configuration};
use envoy_types::pb::envoy::config::core::v3::{
    address::Address, socket_address::PortSpecifier, HealthStatus,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint::HostIdentifier, ClusterLoadAssignment,
};
use support::backend::Backend;
use support::envoy::{free_port, AdsMode, Envoy, Versions};
use support::xds::start_server;

const CONVERGE: Duration = Duration::from_secs(15);

/// Clusters with one endpoint each on 127.0.0.1, and a listener routing everything to `route_to`.
fn snapshot(clusters: &[(&str, u16)], route_to: &str, listener_port: u16) -> Snapshot {
    let mut b = Snapshot::builder()
        .listener(http_listener(
            "ingress",
            "127.0.0.1",
            listener_port,
            "routes",
        ))
        .route(route_configuration(
            "routes",
            [(vec!["*".to_string()], route_to)],
        ));
    for (name, port) in clusters {
        b = b
            .cluster(eds_cluster(name, Duration::from_secs(1)))
            .endpoints(load_assignment(
                name,
                [("127.0.0.1".to_string(), *port, HealthStatus::Healthy)],
            ));
    }
    b.build()
}

/// The versions Envoy should report once it holds `snapshot`.
fn expected_versions(snapshot: &Snapshot, mode: AdsMode) -> Versions {
    // The config dump gives each route configuration the response's version in SotW and the
    // resource's own version in delta. An EDS cluster's `version_text` is the version of the
    // last response that carried its endpoints: in SotW every response carries them all; in
    // delta only changed ones are carried, so there the endpoints themselves are compared.
    let per_resource = |ty: ResourceType, own: bool| -> Vec<(String, String)> {
        snapshot
            .of(ty)
            .resources()
            .values()
            .map(|r| {
                let version = if own {
                    r.version()
                } else {
                    snapshot.version(ty)
                };
                (r.name().to_string(), version.to_string())
            })
            .collect()
    };
    Versions {
        cds: snapshot.version(ResourceType::Cluster).to_string(),
        lds: snapshot.version(ResourceType::Listener).to_string(),
        eds: match mode {
            AdsMode::Sotw => per_resource(ResourceType::Endpoint, false),
            AdsMode::Delta => per_resource(ResourceType::Endpoint, false)
                .into_iter()
                .map(|(name, _)| (name, String::new()))
                .collect(),
        },
        endpoints: snapshot
            .of(ResourceType::Endpoint)
            .resources()
            .values()
            .map(|r| {
                let cla: ClusterLoadAssignment = r.decode().unwrap();
                let addrs = cla.endpoints[0]
                    .lb_endpoints
                    .iter()
                    .map(|lb| match &lb.host_identifier {
                        Some(HostIdentifier::Endpoint(e)) => {
                            match &e.address.as_ref().unwrap().address {
                                Some(Address::SocketAddress(sa)) => match sa.port_specifier {
                                    Some(PortSpecifier::PortValue(p)) => {
                                        format!("{}:{p}", sa.address)
                                    }
                                    _ => unreachable!(),
                                },
                                _ => unreachable!(),
                            }
                        }
                        _ => unreachable!(),
                    })
                    .collect();
                (r.name().to_string(), addrs)
            })
            .collect(),
        rds: per_resource(ResourceType::Route, mode == AdsMode::Delta),
        clusters: snapshot
            .of(ResourceType::Cluster)
            .resources()
            .keys()
            .map(|k| k.to_string())
            .collect(),
    }
}

async fn get_through(listener_port: u16) -> Option<String> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let response = client
        .get(format!("http://127.0.0.1:{listener_port}/"))
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.text().await.ok()
}

async fn wait_for_versions(envoy: &Envoy, expected: &Versions) {
    let started = std::time::Instant::now();
    loop {
        let held = envoy.versions().await;
        if held == *expected {
            return;
        }
        assert!(
            started.elapsed() < CONVERGE,
            "Envoy holds {held:#?}\nexpected {expected:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_for_body(envoy: &Envoy, listener_port: u16, body: &str) {
    envoy
        .wait_for(
            &format!("a request through Envoy answered by {body}"),
            CONVERGE,
            || async { get_through(listener_port).await.as_deref() == Some(body) },
        )
        .await;
}

async fn envoy_follows_published_snapshots(mode: AdsMode) {
    let server = start_server(NodeTypeResolver::default()).await;
    let (a, b) = (
        Backend::start("backend-a").await,
        Backend::start("backend-b").await,
    );
    let listener_port = free_port();

    let first = snapshot(&[("web", a.addr.port())], "web", listener_port);
    let expected = expected_versions(&first, mode);
    server.publisher.publish("sidecar", first).unwrap();
    let envoy = Envoy::start("sidecar-e2e", server.addr, mode).await;
    wait_for_versions(&envoy, &expected).await;
    assert_eq!(envoy.stat("control_plane.connected_state").await, 1);
    wait_for_body(&envoy, listener_port, "backend-a").await;
    assert!(a.hits() >= 1);

    // A new endpoint: the cluster now points at backend b.
    let moved = snapshot(&[("web", b.addr.port())], "web", listener_port);
    let expected = expected_versions(&moved, mode);
    server.publisher.publish("sidecar", moved).unwrap();
    wait_for_versions(&envoy, &expected).await;
    wait_for_body(&envoy, listener_port, "backend-b").await;

    // A new cluster and a route to it.
    let rerouted = snapshot(
        &[("web", b.addr.port()), ("api", a.addr.port())],
        "api",
        listener_port,
    );
    let good = expected_versions(&rerouted, mode);
    server.publisher.publish("sidecar", rerouted).unwrap();
    wait_for_versions(&envoy, &good).await;
    wait_for_body(&envoy, listener_port, "backend-a").await;

    // A cluster Envoy must reject (connect_timeout must be > 0): a NACK, recorded, not resent.
    let mut broken = eds_cluster("broken", Duration::from_secs(1));
    broken.connect_timeout = Some(envoy_types::pb::google::protobuf::Duration {
        seconds: -1,
        nanos: 0,
    });
    let mut bad = Snapshot::builder();
    for ty in ResourceType::ALL {
        let good_snapshot = server.cache.snapshot("sidecar").unwrap();
        for r in good_snapshot.of(ty).resources().values() {
            bad = bad.shared(ty, r.clone());
        }
    }
    let bad = bad
        .cluster(broken)
        .endpoints(load_assignment(
            "broken",
            [("127.0.0.1".to_string(), 1, HealthStatus::Healthy)],
        ))
        .build();
    let bad_cds_version = bad.version(ResourceType::Cluster).to_string();
    server.publisher.publish("sidecar", bad).unwrap();
    envoy
        .wait_for("a CDS update_rejected", CONVERGE, || async {
            envoy.stat("cluster_manager.cds.update_rejected").await >= 1
        })
        .await;
    let status = server.cache.status();
    let started = std::time::Instant::now();
    while status.recent_nacks().is_empty() {
        assert!(started.elapsed() < CONVERGE, "the NACK was never recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let nack = &status.recent_nacks()[0];
    assert_eq!(nack.node_id, "sidecar-e2e");
    assert_eq!(nack.resource_type, ResourceType::Cluster);
    assert_eq!(nack.rejected_version, bad_cds_version);
    assert!(
        nack.message.contains("duration"),
        "Envoy's own error text: {}",
        nack.message
    );

    // Count: no resend of the rejected version, on either side, while nothing changes.
    let pushes = status.counters().pushes(ResourceType::Cluster);
    let attempts = envoy.stat("cluster_manager.cds.update_attempt").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        status.counters().pushes(ResourceType::Cluster),
        pushes,
        "CDS was resent"
    );
    assert_eq!(
        envoy.stat("cluster_manager.cds.update_attempt").await,
        attempts
    );
    assert_eq!(envoy.stat("cluster_manager.cds.update_rejected").await, 1);
    assert_eq!(status.counters().nacks(ResourceType::Cluster), 1);

    // Fail static: Envoy keeps the last good clusters and keeps serving.
    assert_eq!(envoy.versions().await.cds, good.cds);
    assert_eq!(
        get_through(listener_port).await.as_deref(),
        Some("backend-a")
    );
    envoy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_over_ads_state_of_the_world_follows_published_snapshots() {
    envoy_follows_published_snapshots(AdsMode::Sotw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_over_ads_delta_follows_published_snapshots() {
    envoy_follows_published_snapshots(AdsMode::Delta).await;
}
