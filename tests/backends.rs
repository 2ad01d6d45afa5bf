//! Declared backends with a real Envoy 1.40: a service tagged `ecs-xds.backends` has its
//! Envoys served only those clusters, the others everything in scope.
//! - From a saved inventory (`run --inventory`) with HTTP backends on 127.0.0.1, so requests
//!   really flow: a declared backend answers, an undeclared one is 404 (no virtual host), a
//!   declared one nobody runs is 503.
//! - From moto: changing the service's tag reaches its Envoy without a restart, and a change to
//!   a service outside its set sends it nothing. Only the config is read there: the endpoints
//!   are moto's 10.x addresses.

use crate::support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use ecs_xds::inventory::{Cluster, Endpoint, Health, Locality, Source};
use support::backend::Backend;
use support::daemon::{serve_inventory, Running};
use support::envoy::{free_port, AdsMode, Envoy};
use support::moto::{awsvpc_network, run_service_task, tag_service, Moto};
use support::settings::SettingsFile;
use support::templates::{egress_sidecar, on_demand_sidecar};

fn service(name: &str, backend: Option<&Backend>, backends: Option<&str>) -> Cluster {
    Cluster {
        name: name.into(),
        source: Source::Ecs {
            ecs_cluster: "prod".into(),
            service: name.into(),
        },
        port_name: None,
        overrides: Default::default(),
        route: Default::default(),
        backends: backends.map(|b| b.split(' ').map(str::to_owned).collect()),
        security: Default::default(),
        endpoints: backend
            .map(|b| Endpoint {
                address: b.addr.ip().to_string(),
                port: b.addr.port(),
                health: Health::Healthy,
                locality: Locality {
                    region: "us-east-1".into(),
                    zone: None,
                },
                weight: 1,
                id: format!("task-{name}"),
                revision: Some(1),
                deployment: None,
            })
            .into_iter()
            .collect(),
    }
}

fn write_templates(dir: &Path, egress: u16) {
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    std::fs::write(
        dir.join("templates/sidecar.toml"),
        egress_sidecar(egress, "egress", 1),
    )
    .unwrap();
}

/// The cluster names Envoy's `/clusters` lists (static and dynamic).
async fn listed_clusters(envoy: &Envoy) -> BTreeSet<String> {
    envoy.cluster_names().await
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

async fn wait_for_clusters(envoy: &Envoy, wanted: &[&str]) {
    let wanted = set(wanted);
    envoy
        .wait_for("its clusters", Duration::from_secs(20), || async {
            listed_clusters(envoy).await == wanted
        })
        .await;
}

async fn get(egress: u16, host: &str) -> (u16, String) {
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let response = http
        .get(format!("http://127.0.0.1:{egress}/"))
        .header("host", host)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declaring_service_gets_only_its_backends_and_others_get_everything() {
    let (orders, payments, billing) = (
        Backend::start("orders").await,
        Backend::start("payments").await,
        Backend::start("billing").await,
    );
    let dir = tempfile::tempdir().unwrap();
    let (web_egress, billing_egress) = (free_port(), free_port());
    // Each Envoy gets the same template, so each needs its own egress port: two node types.
    write_templates(dir.path(), web_egress);
    std::fs::write(
        dir.path().join("templates/other.toml"),
        egress_sidecar(billing_egress, "egress", 1),
    )
    .unwrap();
    let clusters = [
        service("web", None, Some("orders payments ghost")),
        service("orders", Some(&orders), None),
        service("payments", Some(&payments), None),
        service("billing", Some(&billing), None),
    ];
    let daemon = serve_inventory(dir.path(), clusters).await;

    let web = Envoy::start_of_service("sidecar-web1", daemon.xds, AdsMode::Sotw, "web").await;
    let other =
        Envoy::start_of_service("other-billing1", daemon.xds, AdsMode::Delta, "billing").await;
    wait_for_clusters(&web, &["ecs-xds", "orders", "payments"]).await;
    wait_for_clusters(&other, &["ecs-xds", "billing", "orders", "payments", "web"]).await;

    // Through the web Envoy: a declared backend answers, an undeclared one has no virtual
    // host (404), a declared one nobody runs says so with a 503.
    let answered = |want: &'static str| {
        move |(status, body): (u16, String)| status == 200 && body.contains(want)
    };
    web.wait_for("orders through egress", Duration::from_secs(10), || async {
        answered("orders")(get(web_egress, "orders").await)
    })
    .await;
    assert!(answered("payments")(get(web_egress, "payments").await));
    assert_eq!(get(web_egress, "billing").await.0, 404);
    let (status, body) = get(web_egress, "ghost").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("\"ghost\" is declared but not discovered"),
        "{body}"
    );
    assert!(answered("billing")(get(billing_egress, "billing").await));

    // /nodes says which set each Envoy is on.
    let nodes: serde_json::Value = reqwest::get(format!("http://{}/nodes", daemon.admin))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let node = |id: &str| {
        nodes["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["node_id"] == id)
            .unwrap_or_else(|| panic!("{id} in {nodes}"))
            .clone()
    };
    assert_eq!(node("sidecar-web1")["service"], "web");
    assert_eq!(node("sidecar-web1")["backends"], "ghost,orders,payments");
    assert_eq!(node("other-billing1")["backends"], serde_json::Value::Null);
    // And /snapshot shows what a service's Envoys are served.
    let served: serde_json::Value = reqwest::get(format!(
        "http://{}/snapshot/sidecar?service=web",
        daemon.admin
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let names: Vec<&str> = (served["clusters"].as_array().unwrap().iter())
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["orders", "payments"], "{served}");
    assert_eq!(served["backends"], "ghost,orders,payments");
}

/// Sum of an Envoy's CDS and EDS `update_success` counters.
async fn cds_eds_updates(envoy: &Envoy, clusters: &[&str]) -> u64 {
    let mut total = envoy.stat("cluster_manager.cds.update_success").await;
    for cluster in clusters {
        total += envoy
            .stat(&format!("cluster.{cluster}.eds.update_success"))
            .await;
    }
    total
}

/// A worker service in the seeded cluster: a task serving no port (only its Envoy's admin
/// port, which discovery skips), with `ecs-xds.backends = backends` on the service.
async fn start_worker(ecs: &aws_sdk_ecs::Client, seed: &serde_json::Value, backends: &str) {
    use aws_sdk_ecs::types::{ContainerDefinition, LaunchType, PortMapping, Tag};
    let container = |name: &str, image: &str| {
        ContainerDefinition::builder()
            .name(name)
            .image(image)
            .memory(128)
            .essential(true)
    };
    let envoy_admin = PortMapping::builder().container_port(15000).build();
    let registered = ecs
        .register_task_definition()
        .family("queue")
        .network_mode(aws_sdk_ecs::types::NetworkMode::Awsvpc)
        .requires_compatibilities(aws_sdk_ecs::types::Compatibility::Fargate)
        .cpu("256")
        .memory("512")
        .container_definitions(container("worker", "demo/worker").build())
        .container_definitions(
            container("envoy", "envoyproxy/envoy")
                .port_mappings(envoy_admin)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let arn = registered
        .task_definition()
        .unwrap()
        .task_definition_arn()
        .unwrap()
        .to_owned();
    ecs.create_service()
        .cluster("demo")
        .service_name("queue")
        .task_definition(&arn)
        .desired_count(1)
        .launch_type(LaunchType::Fargate)
        .network_configuration(awsvpc_network(seed))
        .tags(
            Tag::builder()
                .key("ecs-xds.backends")
                .value(backends)
                .build(),
        )
        .send()
        .await
        .unwrap();
    ecs.run_task()
        .cluster("demo")
        .task_definition(&arn)
        .launch_type(LaunchType::Fargate)
        .group("service:queue")
        .network_configuration(awsvpc_network(seed))
        .send()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_tag_reaches_the_envoy_and_an_unrelated_change_sends_it_nothing() {
    let moto = Moto::start();
    let seed = moto.seed(&["--tasks-per-service", "1"]);
    let ecs = aws_sdk_ecs::Client::new(&moto.sdk_config().await);
    let tag = |value: &'static str| tag_service(&ecs, "web", "ecs-xds.backends", value);
    tag("orders ghost").await;
    start_worker(&ecs, &seed, "api.grpc").await;
    let dir = tempfile::tempdir().unwrap();
    let config = SettingsFile::new()
        .aws_endpoint(&moto.endpoint)
        .clusters(&["demo"])
        .poll_interval("1s")
        .write(dir.path());
    write_templates(dir.path(), free_port());
    let daemon = Running::start(&config).await;
    let web = Envoy::start_of_service("sidecar-web1", daemon.xds, AdsMode::Delta, "web").await;
    let whole = Envoy::start_of_service("sidecar-x", daemon.xds, AdsMode::Sotw, "x").await;
    // Only the xDS cluster is static: the egress port of `whole` is never used.
    wait_for_clusters(&web, &["ecs-xds", "orders"]).await;
    // A worker serves no port, so it has no cluster, and declares all the same.
    let worker = Envoy::start_of_service("sidecar-q1", daemon.xds, AdsMode::Delta, "queue").await;
    wait_for_clusters(&worker, &["api.grpc", "ecs-xds"]).await;
    worker.stop().await;
    daemon
        .wait_for_log(
            "backends names `ghost`, which matches no discovered cluster",
            Duration::from_secs(5),
        )
        .await;

    // A backend added by tag appears; with it replaced, the one left out goes.
    tag("orders api").await;
    wait_for_clusters(&web, &["api.grpc", "api.http", "ecs-xds", "orders"]).await;
    tag("api.http").await;
    wait_for_clusters(&web, &["api.http", "ecs-xds"]).await;
    web.wait_for("api.http's endpoints", Duration::from_secs(10), || async {
        !web.endpoint_ips("api.http").await.is_empty()
    })
    .await;

    // One more `orders` task, outside web's set: the whole-scope Envoy gets it, web nothing.
    let before = cds_eds_updates(&web, &["api.http"]).await;
    let orders_before = whole.endpoint_ips("orders").await.len();
    run_service_task(&ecs, &seed, "orders").await;
    whole
        .wait_for("the new orders task", Duration::from_secs(20), || async {
            whole.endpoint_ips("orders").await.len() == orders_before + 1
        })
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(cds_eds_updates(&web, &["api.http"]).await, before);
    assert_eq!(listed_clusters(&web).await, set(&["api.http", "ecs-xds"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_demand_a_cluster_is_loaded_by_its_first_request_and_others_never() {
    let (orders, payments, billing) = (
        Backend::start("orders").await,
        Backend::start("payments").await,
        Backend::start("billing").await,
    );
    let dir = tempfile::tempdir().unwrap();
    let egress = free_port();
    std::fs::create_dir_all(dir.path().join("templates")).unwrap();
    std::fs::write(
        dir.path().join("templates/sidecar.toml"),
        on_demand_sidecar(egress),
    )
    .unwrap();
    let clusters = [
        service("orders", Some(&orders), None),
        service("payments", Some(&payments), None),
        service("billing", Some(&billing), None),
    ];
    let daemon = serve_inventory(dir.path(), clusters).await;
    let envoy = Envoy::start("sidecar-app1", daemon.xds, AdsMode::Delta).await;
    envoy
        .wait_for("the routes", Duration::from_secs(20), || async {
            envoy.versions().await.rds.len() == 1
                && envoy.stat("listener_manager.total_listeners_active").await == 1
        })
        .await;
    assert_eq!(listed_clusters(&envoy).await, set(&["ecs-xds"]));

    // The first request to `orders` succeeds; it alone is then loaded.
    let (status, body) = get(egress, "orders").await;
    assert_eq!((status, body.contains("orders")), (200, true), "{body}");
    assert_eq!(listed_clusters(&envoy).await, set(&["ecs-xds", "orders"]));
    assert!(get(egress, "payments").await.1.contains("payments"));
    assert_eq!(
        listed_clusters(&envoy).await,
        set(&["ecs-xds", "orders", "payments"])
    );
    assert!(!listed_clusters(&envoy).await.contains("billing"));
}
