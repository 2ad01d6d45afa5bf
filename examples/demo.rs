//! The demo behind the README's first command: ecs-xds serving a sample sidecar snapshot to a
//! real Envoy, and what Envoy then knows.
//!
//! Everything runs on 127.0.0.1 and stops when the demo ends: the xDS server, two HTTP
//! backends standing in for tasks, and Envoy (from the project venv; see
//! `scripts/setup-test-env.sh`). It publishes a snapshot, shows what Envoy holds, sends a
//! request through Envoy, then moves the endpoint and shows Envoy following.

#[allow(dead_code)]
#[path = "../tests/support/backend.rs"]
mod backend;
#[allow(dead_code)]
#[path = "../tests/support/envoy.rs"]
mod envoy;

use std::time::Duration;

use ecs_xds::cache::{Cache, NodeTypeResolver};
use ecs_xds::serve::XdsServer;
use ecs_xds::snapshot::{ResourceType, Snapshot};
use ecs_xds::synthesize::clusters::eds_cluster;
use ecs_xds::synthesize::endpoints::load_assignment;
use ecs_xds::synthesize::listeners::{http_listener, route_configuration};
use envoy_types::pb::envoy::config::core::v3::HealthStatus;

fn sidecar_snapshot(backend_port: u16, listener_port: u16) -> Snapshot {
    Snapshot::builder()
        .listener(http_listener(
            "egress",
            "127.0.0.1",
            listener_port,
            "routes",
        ))
        .route(route_configuration(
            "routes",
            [(vec!["*".to_string()], "orders")],
        ))
        .cluster(eds_cluster("orders", Duration::from_secs(1)))
        .endpoints(load_assignment(
            "orders",
            [("127.0.0.1".to_string(), backend_port, HealthStatus::Healthy)],
        ))
        .build()
}

#[tokio::main]
async fn main() {
    let cache = Cache::new(NodeTypeResolver::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let xds = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(XdsServer::new(cache.clone()).serve(listener, async {
        let _ = stopped.await;
    }));
    let (a, b) = (
        backend::Backend::start("hello from orders task A").await,
        backend::Backend::start("hello from orders task B").await,
    );
    let listener_port = envoy::free_port();
    let first = sidecar_snapshot(a.addr.port(), listener_port);
    println!("ecs-xds: xDS server on {xds}; publishing node type 'sidecar':");
    for ty in [
        ResourceType::Cluster,
        ResourceType::Endpoint,
        ResourceType::Listener,
        ResourceType::Route,
    ] {
        let names: Vec<_> = first
            .of(ty)
            .resources()
            .keys()
            .map(|k| k.to_string())
            .collect();
        println!("  {ty} version {} {:?}", first.version(ty), names);
    }
    cache
        .publish("sidecar", first)
        .expect("consistent snapshot");

    let envoy = envoy::Envoy::start("sidecar-demo", xds, envoy::AdsMode::Sotw).await;
    println!(
        "envoy: started (pid {}, admin {}), node id sidecar-demo",
        envoy.pid().unwrap_or_default(),
        envoy.admin
    );
    wait_for_body(&envoy, listener_port, "hello from orders task A").await;
    show(&envoy, listener_port).await;

    println!("\necs-xds: the orders task moved; publishing its new endpoint");
    cache
        .publish("sidecar", sidecar_snapshot(b.addr.port(), listener_port))
        .expect("consistent snapshot");
    wait_for_body(&envoy, listener_port, "hello from orders task B").await;
    show(&envoy, listener_port).await;

    envoy.stop().await;
    let _ = stop.send(());
    let _ = server.await;
    println!("\ndemo: stopped Envoy, the backends and the xDS server");
}

async fn get(listener_port: u16) -> Option<String> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .ok()?;
    let url = format!("http://127.0.0.1:{listener_port}/");
    client.get(url).send().await.ok()?.text().await.ok()
}

async fn wait_for_body(envoy: &envoy::Envoy, listener_port: u16, body: &str) {
    envoy
        .wait_for(body, Duration::from_secs(20), || async {
            get(listener_port).await.as_deref() == Some(body)
        })
        .await;
}

/// What Envoy holds, from its admin API.
async fn show(envoy: &envoy::Envoy, listener_port: u16) {
    let v = envoy.versions().await;
    println!("envoy now knows (from its admin API):");
    println!("  cds version {}  clusters {:?}", v.cds, v.clusters);
    for (cluster, version) in &v.eds {
        println!("  eds {cluster} version {version}");
    }
    println!("  lds version {}", v.lds);
    for (route, version) in &v.rds {
        println!("  rds {route} version {version}");
    }
    let clusters = envoy.admin_get("/clusters").await;
    for line in clusters.lines().filter(|l| {
        l.starts_with("orders::") && (l.contains("::health_flags::") || l.contains("::cx_active::"))
    }) {
        println!("  {line}");
    }
    println!(
        "  control_plane.connected_state {}  cds.update_success {}  cds.update_rejected {}",
        envoy.stat("control_plane.connected_state").await,
        envoy.stat("cluster_manager.cds.update_success").await,
        envoy.stat("cluster_manager.cds.update_rejected").await,
    );
    let body = get(listener_port).await.unwrap_or_default();
    println!("  GET http://127.0.0.1:{listener_port}/ through Envoy -> {body:?}");
}
