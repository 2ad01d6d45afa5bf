//! The server child: ecs-xds's cache and xDS server with a sidecar-like snapshot, publishing an
//! endpoint change each time it reads `publish` on stdin. Another server measured with
//! `--server-cmd` speaks the same protocol (docs/benchmarks.md).

use std::time::Duration;

use ecs_xds::cache::{Cache, NodeTypeResolver};
use ecs_xds::serve::XdsServer;
use ecs_xds::snapshot::{ResourceType, Snapshot};
use ecs_xds::synthesize::clusters::eds_cluster;
use ecs_xds::synthesize::endpoints::load_assignment;
use ecs_xds::synthesize::listeners::{http_listener, route_configuration};
use envoy_types::pb::envoy::config::core::v3::HealthStatus;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_util::sync::CancellationToken;

pub fn cluster_name(i: usize) -> String {
    format!("service-{i:04}")
}

/// `clusters` EDS clusters of `endpoints` loopback endpoints each, an egress listener and a
/// route configuration with one virtual host per cluster. `generation` moves the first
/// endpoint of the first cluster, which is the one change the load test pushes.
pub fn load_snapshot(clusters: usize, endpoints: usize, generation: u16) -> Snapshot {
    let names: Vec<String> = (0..clusters).map(cluster_name).collect();
    let mut b = Snapshot::builder()
        .listener(http_listener("egress", "127.0.0.1", 15001, "routes"))
        .route(route_configuration(
            "routes",
            names.iter().map(|n| (vec![n.clone()], n.as_str())),
        ));
    for (i, name) in names.iter().enumerate() {
        let cla = load_assignment(
            name,
            (0..endpoints).map(|j| {
                let bump = if i == 0 && j == 0 { generation } else { 0 };
                (
                    format!("127.0.{}.{}", i / 250 + 1, i % 250 + 1),
                    8000 + j as u16 + bump,
                    HealthStatus::Healthy,
                )
            }),
        );
        b = b
            .cluster(eds_cluster(name, Duration::from_secs(1)))
            .endpoints(cla);
    }
    b.build()
}

pub async fn serve(clusters: usize, endpoints: usize, node_type: &str) {
    let (cache, publisher) = Cache::new(NodeTypeResolver::default());
    publisher
        .publish(node_type, load_snapshot(clusters, endpoints, 0))
        .expect("consistent snapshot");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("{}", listener.local_addr().unwrap());
    let server = XdsServer::new(cache);
    let limits = ecs_xds::settings::Settings::default().xds_limits();
    tokio::spawn(server.serve(listener, limits, CancellationToken::new()));
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut generation = 0;
    while let Ok(Some(line)) = lines.next_line().await {
        if line.trim() == "publish" {
            generation += 1;
            let snapshot = load_snapshot(clusters, endpoints, generation);
            let version = snapshot.version(ResourceType::Endpoint).to_string();
            publisher
                .publish(node_type, snapshot)
                .expect("consistent snapshot");
            println!("{version}");
        } else if line.trim() == "heap" {
            println!("{}", allocated_bytes());
        }
    }
}

/// Bytes the program has allocated and not freed, from jemalloc's statistics.
fn allocated_bytes() -> usize {
    // jemalloc caches its statistics; advancing the epoch refreshes them.
    tikv_jemalloc_ctl::epoch::advance().expect("jemalloc epoch");
    tikv_jemalloc_ctl::stats::allocated::read().expect("jemalloc stats.allocated")
}
