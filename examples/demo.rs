//! The demo behind the README's first command: ECS (emulated by moto) → ecs-xds → a real
//! Envoy, and what Envoy then knows.
//!
//! 1. starts moto server on 127.0.0.1 and seeds an ECS cluster `demo` (services `web`, `api`,
//!    `orders`, two Fargate tasks each) and a Cloud Map namespace whose `backend` service has
//!    two instances: HTTP servers this demo runs on 127.0.0.1, one healthy, one unhealthy;
//! 2. runs the ecs-xds daemon (discovery every second, the `sidecar` template, the xDS server)
//!    and a real Envoy with node id `sidecar-demo`;
//! 3. prints the clusters and endpoints (with health) Envoy reports, and sends a request
//!    through Envoy's egress listener to the Cloud Map backend;
//! 4. tags service `web` with `ecs-xds.backends = orders` and starts a second Envoy as web's
//!    sidecar (`node.cluster = web`), which is served only `orders`;
//! 5. stops everything it started.
//!
//! The ECS task addresses are the 10.x addresses moto invents: they are only displayed; no
//! request goes to them.

#[allow(dead_code)]
#[path = "../tests/support/backend.rs"]
mod backend;
#[allow(dead_code)]
#[path = "../tests/support/envoy.rs"]
mod envoy;
#[path = "../tests/support/moto.rs"]
mod moto;

use std::path::Path;
use std::time::Duration;

const BACKEND: &str = "cloudmap.backend.demo.local";

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    println!("demo: starting moto server (the AWS API emulator) and seeding ECS and Cloud Map");
    let emulator = moto::Moto::start();
    let healthy = backend::Backend::start("hello from the backend on 127.0.0.1").await;
    let unhealthy = backend::Backend::start("this instance is unhealthy").await;
    emulator.seed(&[
        "--tasks-per-service",
        "2",
        "--cloudmap-instance",
        &healthy.addr.to_string(),
        "--cloudmap-unhealthy-instance",
        &unhealthy.addr.to_string(),
    ]);

    let dir = tempfile::tempdir().unwrap();
    let egress = envoy::free_port();
    let config = write_config(dir.path(), &emulator.endpoint, egress);
    let (_reload, reload_rx) = tokio::sync::mpsc::channel(1);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let daemon =
        ecs_xds::daemon::Daemon::start(ecs_xds::cli::load(&config).expect("settings load"), None)
            .await
            .expect("ecs-xds starts");
    let xds = daemon.xds_addr();
    println!("demo: starting ecs-xds (xDS on {xds}, polling every 1s)");
    let daemon = tokio::spawn(daemon.run(reload_rx, async {
        let _ = stopped.await;
    }));

    let envoy = envoy::Envoy::start("sidecar-demo", xds, envoy::AdsMode::Sotw).await;
    println!(
        "demo: started Envoy 1.40 (node id sidecar-demo, admin {})",
        envoy.admin
    );
    envoy
        .wait_for(
            "every discovered cluster",
            Duration::from_secs(30),
            || async {
                let clusters = envoy.versions().await.clusters;
                ["web", "orders", BACKEND]
                    .iter()
                    .all(|c| clusters.iter().any(|have| have == c))
            },
        )
        .await;
    let body = request_backend(egress).await;
    show(&envoy).await;
    println!("\nGET http://{BACKEND}/ through Envoy's egress listener 127.0.0.1:{egress}:");
    println!(
        "  -> {body:?} (requests served by the healthy instance: {}, by the unhealthy one: {})",
        healthy.hits(),
        unhealthy.hits()
    );

    declared_backends(&emulator, xds, &envoy).await;

    envoy.stop().await;
    let _ = stop.send(());
    let _ = daemon.await;
    drop(emulator);
    println!("\ndemo: stopped Envoy, ecs-xds, the backends and moto");
}

/// Tags `web` with what it calls and shows what web's own sidecar is then served.
async fn declared_backends(emulator: &moto::Moto, xds: std::net::SocketAddr, demo: &envoy::Envoy) {
    let ecs = aws_sdk_ecs::Client::new(&emulator.sdk_config().await);
    moto::tag_service(&ecs, "web", "ecs-xds.backends", "orders").await;
    println!(
        "
demo: tagged ECS service web with ecs-xds.backends=orders (what web calls)"
    );
    let web = envoy::Envoy::start_of_service("sidecar-web", xds, envoy::AdsMode::Sotw, "web").await;
    // `local_app` is the template's own cluster: every sidecar has it.
    web.wait_for("only orders", Duration::from_secs(30), || async {
        web.versions().await.clusters == ["local_app", "orders"]
    })
    .await;
    println!(
        "demo: web's sidecar (node.cluster=web) holds {:?}; the demo Envoy (no declared service) holds {:?}",
        web.versions().await.clusters,
        demo.versions().await.clusters
    );
    web.stop().await;
}

fn write_config(dir: &Path, endpoint: &str, egress: u16) -> std::path::PathBuf {
    let config = dir.join("ecs-xds.toml");
    let settings = format!(
        "[xds]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[aws]\nendpoint_url = \"{endpoint}\"\n\
         [ecs]\nclusters = [\"demo\"]\npoll_interval = \"1s\"\n\
         [cloud_map]\nnamespaces = [\"demo.local\"]\n"
    );
    std::fs::write(&config, settings).unwrap();
    // The project's sidecar template, with the egress listener moved to a free port.
    let sidecar = std::fs::read_to_string(moto::repo_root().join("config/templates/sidecar.toml"))
        .unwrap()
        .replace("port_value = 15001", &format!("port_value = {egress}"))
        .replace("ports = [80, 15001]", &format!("ports = [80, {egress}]"))
        .replace(
            "port_value = 15000",
            &format!("port_value = {}", envoy::free_port()),
        )
        .replace("\"0.0.0.0\"", "\"127.0.0.1\"");
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    std::fs::write(dir.join("templates/sidecar.toml"), sidecar).unwrap();
    config
}

async fn request_backend(egress: u16) -> String {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let url = format!("http://127.0.0.1:{egress}/");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let response = client.get(&url).header("host", BACKEND).send().await;
        if let Ok(r) = response {
            if r.status().is_success() {
                return r.text().await.unwrap_or_default();
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no answer through Envoy from {BACKEND}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The route Envoy holds for `host` in the generated route configuration: its timeout and
/// retries, which come from the ECS service's tags.
fn route_policy(dump: &serde_json::Value, host: &str) -> String {
    let configs = dump["configs"].as_array().cloned().unwrap_or_default();
    let routes = configs.iter().find(|c| {
        c["@type"]
            .as_str()
            .is_some_and(|t| t.ends_with(".RoutesConfigDump"))
    });
    let action = routes.and_then(|r| {
        r["dynamic_route_configs"].as_array()?.iter().find_map(|c| {
            let hosts = c["route_config"]["virtual_hosts"].as_array()?;
            let h = hosts.iter().find(|h| h["name"] == host)?;
            Some(h["routes"][0]["route"].clone())
        })
    });
    match action {
        Some(a) => format!(
            "timeout {}, {} retries on {}",
            a["timeout"].as_str().unwrap_or("none"),
            a["retry_policy"]["num_retries"],
            a["retry_policy"]["retry_on"].as_str().unwrap_or("-")
        ),
        None => "no route".to_owned(),
    }
}

/// What Envoy holds, from its admin API: each cluster's endpoints and their health.
async fn show(envoy: &envoy::Envoy) {
    let v = envoy.versions().await;
    println!("\nEnvoy now knows (from its admin API /clusters and /config_dump):");
    println!("  cds version {}  lds version {}", v.cds, v.lds);
    let policy = route_policy(&envoy.config_dump().await, "orders");
    println!("  route to orders: {policy} (from the ECS service's ecs-xds.* tags)");
    let clusters = envoy.admin_get("/clusters").await;
    for name in &v.clusters {
        println!("  cluster {name}");
        for line in clusters.lines() {
            let Some(rest) = line.strip_prefix(&format!("{name}::")) else {
                continue;
            };
            if let Some((addr, flags)) = rest.split_once("::health_flags::") {
                println!("    {addr:<22} {flags}");
            }
        }
    }
}
