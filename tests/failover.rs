//! Regional failover with real traffic: the real `ecs-xds run` serving a saved inventory in
//! which `orders` was found in two regions (one cluster, endpoints in us-east-1 and
//! eu-west-1, as discovery merges same-named services), with HTTP backends this test runs on
//! 127.0.0.1 in their place, and a real Envoy 1.40 whose bootstrap states its region.

use crate::support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use ecs_xds::inventory::{
    Cluster, ClusterOverrides, Endpoint, Health, Inventory, Locality, RoutePolicy, Source,
};
use serde_json::json;
use support::backend::Backend;
use support::daemon::serve_inventory;
use support::envoy::{bootstrap_json, free_port, AdsMode, Envoy};
use support::templates::egress_sidecar;

fn endpoint(backend: &Backend, region: &str, zone: &str, health: Health) -> Endpoint {
    Endpoint {
        address: backend.addr.ip().to_string(),
        port: backend.addr.port(),
        health,
        locality: Locality {
            region: region.into(),
            zone: Some(zone.into()),
        },
        weight: 1,
        id: format!("task-{}", backend.addr.port()),
        revision: Some(1),
        deployment: None,
    }
}

/// `orders` with `east`'s endpoint at `east_health` and `west`'s healthy.
fn orders(east: &Backend, west: &Backend, east_health: Health) -> Cluster {
    Cluster {
        name: "orders".into(),
        source: Source::Ecs {
            ecs_cluster: "prod".into(),
            service: "orders".into(),
        },
        port_name: None,
        overrides: ClusterOverrides::default(),
        route: RoutePolicy::default(),
        backends: None,
        security: Default::default(),
        endpoints: vec![
            endpoint(east, "us-east-1", "us-east-1a", east_health),
            endpoint(west, "eu-west-1", "eu-west-1a", Health::Healthy),
        ],
    }
}

/// Replaces the served inventory file whole (a rename), as `discover --json > new; mv` would:
/// the daemon follows it and serves the change.
fn save(dir: &Path, clusters: Vec<Cluster>) {
    let inventory = Inventory {
        clusters: clusters.into_iter().map(|c| (c.name.clone(), c)).collect(),
        warnings: Vec::new(),
        callers: Default::default(),
    };
    let new = dir.join("inventory.json.new");
    std::fs::write(&new, serde_json::to_string(&inventory).unwrap()).unwrap();
    std::fs::rename(new, dir.join("inventory.json")).unwrap();
}

/// `n` GETs of `http://orders/` through Envoy's egress: how many answers had each body.
async fn spread(egress: u16, n: usize) -> BTreeMap<String, usize> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let url = format!("http://127.0.0.1:{egress}/");
        let response = http.get(url).header("host", "orders").send().await.unwrap();
        let key = match response.status().as_u16() {
            200 => response.text().await.unwrap(),
            status => format!("status {status}"),
        };
        *counts.entry(key).or_default() += 1;
    }
    counts
}

/// An Envoy in us-east-1 sends every request to us-east-1's endpoint, though eu-west-1's is
/// healthy too; once us-east-1's is unhealthy, every request fails over to eu-west-1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envoy_stays_in_its_region_and_fails_over_when_the_region_is_unhealthy() {
    let served = stays_then_fails_over(json!({ "region": "us-east-1" })).await;
    assert_eq!(
        (served["region"].as_str(), served.get("zone")),
        (Some("us-east-1"), None)
    );
}

/// An Envoy of a node type that is not zone-aware, stating only its zone (what the task
/// metadata tells it), gets its region first all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envoy_stating_only_its_zone_gets_its_region_first() {
    let served = stays_then_fails_over(json!({ "zone": "us-east-1a" })).await;
    assert_eq!(served["zone"].as_str(), Some("us-east-1a"));
}

/// Runs the scenario for an Envoy whose bootstrap states `locality`; returns its entry in the
/// daemon's `/nodes`.
async fn stays_then_fails_over(locality: serde_json::Value) -> serde_json::Value {
    let (east, west) = (Backend::start("east").await, Backend::start("west").await);
    let dir = tempfile::tempdir().unwrap();
    let egress = free_port();
    std::fs::create_dir_all(dir.path().join("templates")).unwrap();
    let template = egress_sidecar(egress, "egress", 1);
    std::fs::write(dir.path().join("templates/sidecar.toml"), template).unwrap();
    let cluster = orders(&east, &west, Health::Healthy);
    let daemon = serve_inventory(dir.path(), vec![cluster]).await;

    let mut bootstrap = bootstrap_json("sidecar-east", daemon.xds, AdsMode::Sotw);
    bootstrap["node"]["locality"] = locality;
    let envoy = Envoy::start_config(bootstrap, AdsMode::Sotw).await;
    let limit = Duration::from_secs(20);
    envoy
        .wait_for("orders' two endpoints", limit, || async {
            let v = envoy.versions().await;
            (v.endpoints.iter()).any(|(name, addrs)| name == "orders" && addrs.len() == 2)
        })
        .await;
    // As Envoy holds them: us-east-1's host at priority 0, eu-west-1's at 1.
    let hosts = envoy.admin_get("/clusters").await;
    for (backend, priority) in [(&east, 0), (&west, 1)] {
        let line = format!("orders::{}::priority::{priority}", backend.addr);
        assert!(hosts.lines().any(|l| l == line), "no {line}: {hosts}");
    }
    let counts = spread(egress, 100).await;
    assert_eq!(counts, BTreeMap::from([("east".to_owned(), 100)]));
    assert_eq!(west.hits(), 0, "eu-west-1 is priority 1");

    save(dir.path(), vec![orders(&east, &west, Health::Unhealthy)]);
    let started = Instant::now();
    loop {
        if spread(egress, 1).await.contains_key("west") {
            break;
        }
        let waited = started.elapsed();
        assert!(
            waited < Duration::from_secs(15),
            "no failover after {waited:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("failover to eu-west-1 after {:?}", started.elapsed());
    let counts = spread(egress, 50).await;
    assert_eq!(counts, BTreeMap::from([("west".to_owned(), 50)]));

    let (_, nodes) = support::http::get(daemon.admin, "/nodes").await;
    let nodes: serde_json::Value = serde_json::from_str(&nodes).unwrap();
    envoy.stop().await;
    nodes["nodes"][0].clone()
}
