//! The demo's step for several accounts and regions (`[[ecs.sources]]`, `[ecs] merge = true`):
//! a member account's ECS cluster in eu-west-1 is discovered beside the own account's in
//! us-east-1 (its role assumed through moto's STS), each service becoming one Envoy cluster
//! whose endpoints keep their region; then a real Envoy in us-east-1 keeps its traffic in its
//! region and fails over to eu-west-1 when its region's endpoint is unhealthy.
//!
//! The failover half carries real requests, so (as in the mtls step) a second ecs-xds in this
//! process serves a saved inventory whose `orders` endpoints are two backends on 127.0.0.1, one
//! per region, in place of moto's 10.x tasks; it follows the file, as `run --inventory` does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ecs_xds::inventory::{Cluster, Endpoint, Health, Inventory, Locality, Source};
use ecs_xds::settings::{DiscoverSettings, SourceSettings};
use serde_json::json;

use super::{backend, envoy, moto, templates, LIMIT};

const MEMBER_ROLE: &str = "arn:aws:iam::222222222222:role/ecs-xds-reader";
const MEMBER_REGION: &str = "eu-west-1";
/// Requests sent through Envoy before and after the failover.
const REQUESTS: usize = 20;

pub(super) async fn several_regions(emulator: &moto::Moto, dir: &Path) {
    let prod = ["--tasks-per-service", "1", "--cluster", "prod"];
    let seed = emulator.seed_in(Some(MEMBER_ROLE), MEMBER_REGION, &prod);
    let services = seed["ecs"]["services"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let services: Vec<String> = services.keys().cloned().collect();
    println!(
        "\ndemo: several accounts and regions: seeded account 222222222222 in {MEMBER_REGION} \
         (ECS cluster prod, one task per service: {})",
        services.join(", ")
    );
    discover_both(emulator).await;
    failover(&dir.join("regions")).await;
}

/// Two sources: the own account's `demo` (in `aws.region`), and the member's `prod` in
/// eu-west-1 through its role; `merge` makes one cluster of each name found in both.
fn sources(endpoint: &str) -> DiscoverSettings {
    let mut s = DiscoverSettings::default();
    s.aws.endpoint_url = Some(endpoint.to_owned());
    s.ecs.merge = true;
    s.ecs.sources = vec![
        SourceSettings {
            clusters: vec!["demo".into()],
            ..SourceSettings::default()
        },
        SourceSettings {
            role_arn: Some(MEMBER_ROLE.into()),
            regions: vec![MEMBER_REGION.into()],
            clusters: vec!["prod".into()],
            ..SourceSettings::default()
        },
    ];
    s
}

/// One discovery over both sources: each cluster's endpoints per region, and what each source
/// asked of AWS.
async fn discover_both(emulator: &moto::Moto) {
    let aws = ecs_xds::aws::Aws::from_sdk_config(&emulator.sdk_config().await).expect("AWS");
    // The counter is shared with the clients of every source, which discovery takes.
    let calls = aws.calls().clone();
    let settings = sources(&emulator.endpoint);
    let labels: Vec<String> = settings.scopes().iter().map(|s| s.label()).collect();
    let settings = settings.check().expect("valid sources");
    let inventory = ecs_xds::discover::discover_once_with(settings, aws)
        .await
        .expect("both sources discovered");
    println!(
        "demo: one discovery with [[ecs.sources]] = own account (cluster demo) + role \
         {MEMBER_ROLE} in {MEMBER_REGION} (cluster prod), [ecs] merge = true:"
    );
    for (name, cluster) in &inventory.clusters {
        println!("  {name}: {}", per_region(cluster));
    }
    println!("AWS requests per source (self/default: the own account in aws.region):");
    let mut requests = by_source(&calls);
    for source in labels {
        let (total, operations) = requests.remove(&source).unwrap_or_default();
        println!("  {source}: {total} requests ({})", operations.join(", "));
    }
}

/// `us-east-1 ×2, eu-west-1 ×1`: the cluster's endpoints by region, in the order discovery
/// gave them (the first source's first).
fn per_region(cluster: &Cluster) -> String {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for e in &cluster.endpoints {
        match counts.iter_mut().find(|(r, _)| *r == e.locality.region) {
            Some((_, n)) => *n += 1,
            None => counts.push((&e.locality.region, 1)),
        }
    }
    let counts = counts.iter().map(|(r, n)| format!("{r} ×{n}"));
    counts.collect::<Vec<_>>().join(", ")
}

/// Per source: its requests in all, and `Operation n` for each operation.
fn by_source(calls: &ecs_xds::aws::CallCounter) -> BTreeMap<String, (u64, Vec<String>)> {
    let mut ops: BTreeMap<String, BTreeMap<&str, u64>> = BTreeMap::new();
    for (source, op, _outcome, n) in calls.snapshot_by_source() {
        *ops.entry(source.to_string())
            .or_default()
            .entry(op)
            .or_default() += n;
    }
    let summary = ops.into_iter().map(|(source, ops)| {
        let total = ops.values().sum();
        let ops = ops.iter().map(|(op, n)| format!("{op} {n}")).collect();
        (source, (total, ops))
    });
    summary.collect()
}

/// `orders` merged over both regions, each region's endpoint a backend on 127.0.0.1.
fn orders(east: &backend::Backend, west: &backend::Backend, east_health: Health) -> Cluster {
    let endpoint = |b: &backend::Backend, region: &str, health| Endpoint {
        address: b.addr.ip().to_string(),
        port: b.addr.port(),
        health,
        locality: Locality {
            region: region.into(),
            zone: None,
        },
        weight: 1,
        id: format!("orders-{region}"),
        revision: None,
        deployment: None,
    };
    Cluster {
        name: "orders".into(),
        source: Source::Ecs {
            ecs_cluster: "prod".into(),
            service: "orders".into(),
        },
        port_name: None,
        overrides: Default::default(),
        route: Default::default(),
        backends: None,
        security: Default::default(),
        endpoints: vec![
            endpoint(east, moto::REGION, east_health),
            endpoint(west, MEMBER_REGION, Health::Healthy),
        ],
    }
}

/// Replaces the saved inventory whole (write, then rename), as `discover --json > new; mv`
/// would: the daemon following it never reads half a file.
fn save(file: &Path, cluster: Cluster) -> Inventory {
    let inventory = Inventory {
        clusters: BTreeMap::from([(cluster.name.clone(), cluster)]),
        ..Default::default()
    };
    let new = file.with_extension("json.new");
    std::fs::write(&new, serde_json::to_string(&inventory).unwrap()).unwrap();
    std::fs::rename(new, file).unwrap();
    inventory
}

/// Settings and the one node type, `sidecar`: an egress listener on `egress` whose routes are
/// generated.
fn write_settings(dir: &Path, egress: u16) -> PathBuf {
    let templates_dir = dir.join("templates");
    std::fs::create_dir_all(&templates_dir).unwrap();
    let template = templates::egress_sidecar(egress, "egress", 1);
    std::fs::write(templates_dir.join("sidecar.toml"), template).unwrap();
    let config = dir.join("ecs-xds.toml");
    let settings = format!(
        "templates_dir = {:?}\n[xds]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        templates_dir.display().to_string()
    );
    std::fs::write(&config, settings).unwrap();
    config
}

/// `n` GETs of `http://orders/` through Envoy's egress: how many answers had each body.
async fn spread(egress: u16, n: usize) -> BTreeMap<String, usize> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let url = format!("http://127.0.0.1:{egress}/");
        let key = match http.get(url).header("host", "orders").send().await {
            Ok(r) if r.status().is_success() => r.text().await.unwrap_or_default(),
            Ok(r) => format!("status {}", r.status().as_u16()),
            Err(e) => format!("error {e}"),
        };
        *counts.entry(key).or_default() += 1;
    }
    counts
}

fn show_spread(counts: &BTreeMap<String, usize>) -> String {
    let answers = counts.iter().map(|(body, n)| format!("{n} by {body:?}"));
    answers.collect::<Vec<_>>().join(", ")
}

/// Regional failover with real traffic through a real Envoy in us-east-1.
async fn failover(dir: &Path) {
    let east = backend::Backend::start("orders in us-east-1").await;
    let west = backend::Backend::start("orders in eu-west-1").await;
    let egress = envoy::free_port();
    let config = write_settings(dir, egress);
    let file = dir.join("inventory.json");
    let inventory = save(&file, orders(&east, &west, Health::Healthy));
    let loaded = ecs_xds::cli::load(&config).expect("settings load");
    let daemon = ecs_xds::daemon::Daemon::start(loaded, Some(inventory))
        .await
        .expect("ecs-xds starts")
        .follow_inventory_file(file.clone());
    let xds = daemon.xds_addr();
    let (_reload, reload_rx) = tokio::sync::mpsc::channel(1);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(daemon.run(reload_rx, async {
        let _ = stopped.await;
    }));
    println!(
        "\ndemo: a second ecs-xds ({xds}) serves a saved inventory: orders merged over \
         us-east-1 and eu-west-1, one 127.0.0.1 backend standing in for each region's task"
    );
    let envoy = start_in_region(xds).await;
    show_priorities(&envoy).await;
    let before = spread(egress, REQUESTS).await;
    println!(
        "GET http://orders/ ×{REQUESTS} through its egress 127.0.0.1:{egress}: {}",
        show_spread(&before)
    );

    save(&file, orders(&east, &west, Health::Unhealthy));
    let waited = wait_for(&west, egress).await;
    println!(
        "\ndemo: marked us-east-1's orders endpoint unhealthy in the saved inventory; \
         ecs-xds followed the file and Envoy failed over after {:.1}s",
        waited.as_secs_f64()
    );
    let after = spread(egress, REQUESTS).await;
    println!("GET http://orders/ ×{REQUESTS}: {}", show_spread(&after));
    envoy.stop().await;
    let _ = stop.send(());
    let _ = running.await;
}

/// An Envoy of node type `sidecar` stating `node.locality.region = us-east-1`, once it holds
/// both of orders' endpoints.
async fn start_in_region(xds: std::net::SocketAddr) -> envoy::Envoy {
    let mut bootstrap = envoy::bootstrap_json("sidecar-us-east-1", xds, envoy::AdsMode::Sotw);
    bootstrap["node"]["locality"] = json!({ "region": moto::REGION });
    let envoy = envoy::Envoy::start_config(bootstrap, envoy::AdsMode::Sotw).await;
    envoy
        .wait_for("orders' two endpoints", LIMIT, || async {
            let v = envoy.versions().await;
            (v.endpoints.iter()).any(|(name, addrs)| name == "orders" && addrs.len() == 2)
        })
        .await;
    envoy
}

/// orders' hosts as Envoy holds them (admin `/clusters`): region and priority of each.
async fn show_priorities(envoy: &envoy::Envoy) {
    let clusters = envoy.admin_get("/clusters").await;
    let field = |host: &str, key: &str| {
        let prefix = format!("orders::{host}::{key}::");
        let line = clusters.lines().find_map(|l| l.strip_prefix(&prefix));
        line.unwrap_or("?").to_owned()
    };
    let mut hosts: Vec<&str> = (clusters.lines())
        .filter_map(|l| l.strip_prefix("orders::")?.split_once("::priority::"))
        .map(|(host, _)| host)
        .collect();
    hosts.dedup();
    println!("demo: a real Envoy (node.locality.region = us-east-1) holds orders' hosts (admin /clusters):");
    for host in hosts {
        let (region, priority) = (field(host, "region"), field(host, "priority"));
        println!("  {host:<16} region {region:<10} priority {priority}");
    }
}

/// Sends requests until one is answered by `west`; how long that took.
async fn wait_for(west: &backend::Backend, egress: u16) -> Duration {
    let started = Instant::now();
    let before = west.hits();
    loop {
        spread(egress, 1).await;
        if west.hits() > before {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < LIMIT,
            "no failover to eu-west-1 in {LIMIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
