//! A real Envoy 1.40 whose CDS, EDS, LDS and RDS all poll the real `ecs-xds run` over REST-JSON
//! (`api_type: REST`, per type, no ADS, HTTP/1.1), against moto.
//!
//! Safety: the endpoints are the 10.x addresses moto invents. They are only read from Envoy's
//! admin API; no request is routed to them and the clusters have no health checks.

use crate::support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::daemon::Running;
use support::envoy::{bootstrap_json, free_port, AdsMode, Envoy};
use support::http::{get, metric};
use support::moto::{run_service_task, running_task_ips, Moto};
use support::settings::SettingsFile;
use support::templates::egress_sidecar;

/// Envoy's `refresh_delay`; it polls every `REFRESH` plus up to `REFRESH` of jitter.
const REFRESH: Duration = Duration::from_secs(1);
const POLL_INTERVAL: Duration = Duration::from_secs(1);

fn rest_source() -> Value {
    json!({
        "resource_api_version": "V3",
        "api_config_source": {
            "api_type": "REST",
            "transport_api_version": "V3",
            "cluster_names": ["ecs-xds"],
            "refresh_delay": format!("{}s", REFRESH.as_secs()),
        }
    })
}

/// The test's sidecar template with its routes and endpoints over REST too.
pub fn rest_template(egress: u16, stat_prefix: &str, chains: usize) -> String {
    let ads = r#"config_source = { ads = {}, resource_api_version = "V3" }"#;
    let rest = r#"config_source = { resource_api_version = "V3", api_config_source = { api_type = "REST", transport_api_version = "V3", cluster_names = ["ecs-xds"], refresh_delay = "1s" } }"#;
    let template = egress_sidecar(egress, stat_prefix, chains);
    assert!(template.contains(ads));
    let section = r#"
[config_source]
resource_api_version = "V3"
api_config_source = { api_type = "REST", transport_api_version = "V3", cluster_names = ["ecs-xds"], refresh_delay = "1s" }
"#;
    format!("{}{section}", template.replace(ads, rest))
}

/// A bootstrap polling CDS and LDS over REST-JSON, its ecs-xds cluster on HTTP/1.1.
pub fn rest_bootstrap(node_id: &str, xds: SocketAddr) -> Value {
    let mut config = bootstrap_json(node_id, xds, AdsMode::Sotw);
    config["dynamic_resources"] = json!({
        "cds_config": rest_source(),
        "lds_config": rest_source(),
    });
    let cluster = &mut config["static_resources"]["clusters"][0];
    cluster
        .as_object_mut()
        .unwrap()
        .remove("typed_extension_protocol_options");
    config
}

fn write_template(dir: &Path, text: &str) {
    std::fs::write(dir.join("templates/sidecar.toml"), text).unwrap();
}

async fn nodes(admin: SocketAddr) -> Value {
    let (status, body) = get(admin, "/nodes").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envoy_polling_rest_json_follows_ecs_and_a_rejected_listener_is_not_resent() {
    let moto = Moto::start();
    let seed = moto.seed(&["--tasks-per-service", "1"]);
    let ecs = aws_sdk_ecs::Client::new(&moto.sdk_config().await);
    let dir = tempfile::tempdir().unwrap();
    let egress = free_port();
    let config = SettingsFile::new()
        .aws_endpoint(&moto.endpoint)
        .clusters(&["demo"])
        .poll_interval("1s")
        .write(dir.path());
    std::fs::create_dir_all(dir.path().join("templates")).unwrap();
    write_template(dir.path(), &rest_template(egress, "egress", 1));
    let daemon = Running::start(&config).await;
    let envoy =
        Envoy::start_config(rest_bootstrap("sidecar-rest", daemon.xds), AdsMode::Sotw).await;

    // Every type arrives over REST: clusters, their endpoints, the listener and its routes.
    let web = running_task_ips(&ecs, "web").await;
    envoy
        .wait_for_ips("web", &web, Duration::from_secs(20))
        .await;
    envoy
        .wait_for(
            "the listener and its routes",
            Duration::from_secs(10),
            || async {
                let v = envoy.versions().await;
                !v.lds.is_empty() && v.rds.iter().any(|(name, _)| name == "egress")
            },
        )
        .await;
    assert!(envoy.stat("cluster_manager.cds.update_success").await >= 1);
    assert_eq!(envoy.stat("listener_manager.lds.update_rejected").await, 0);

    // A new task: Envoy has it within discovery's interval and one poll (refresh_delay plus its
    // jitter, up to another refresh_delay), plus 1 s.
    run_service_task(&ecs, &seed, "web").await;
    let web = running_task_ips(&ecs, "web").await;
    let limit = POLL_INTERVAL + REFRESH * 2 + Duration::from_secs(1);
    let took = envoy.wait_for_ips("web", &web, limit).await;
    eprintln!("a new task reached the REST-polling Envoy in {took:?}");

    // /nodes shows the poller, with what it ACKed.
    let held = envoy.versions().await;
    let started = Instant::now();
    let poller = loop {
        let nodes = nodes(daemon.admin).await;
        let node = nodes["nodes"][0].clone();
        if node["streams"][0]["types"]["lds"]["acked_version"] == held.lds.as_str() {
            break node;
        }
        assert!(
            started.elapsed() < REFRESH * 3,
            "no ACK of {} in {nodes}",
            held.lds
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(poller["node_id"], "sidecar-rest");
    assert_eq!(poller["streams"][0]["mode"], "rest");

    // A listener Envoy rejects (two identical filter chains): sent twice, then recorded as
    // rejected and answered 304 while it is current.
    write_template(dir.path(), &rest_template(egress, "egress", 2));
    envoy
        .wait_for(
            "Envoy rejecting the listener",
            Duration::from_secs(10),
            || async { envoy.stat("listener_manager.lds.update_rejected").await >= 1 },
        )
        .await;
    let started = Instant::now();
    let nack = loop {
        let nodes = nodes(daemon.admin).await;
        let nack = nodes["nodes"][0]["streams"][0]["types"]["lds"]["last_nack"].clone();
        if !nack.is_null() {
            break nack;
        }
        assert!(started.elapsed() < REFRESH * 6, "no NACK in {nodes}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        nack["message"]
            .as_str()
            .unwrap()
            .contains("update_rejected"),
        "{nack}"
    );
    assert_ne!(nack["rejected_version"], held.lds.as_str());
    let rejected = envoy.stat("listener_manager.lds.update_rejected").await;
    let (_, metrics) = get(daemon.admin, "/metrics").await;
    let pushes = metric(&metrics, "ecs_xds_xds_pushes_total{type=\"lds\"} ").unwrap();
    assert_eq!(
        metric(&metrics, "ecs_xds_xds_nacks_total{type=\"lds\"} "),
        Some(1.0)
    );
    // Several more polls: nothing resent.
    tokio::time::sleep(REFRESH * 5).await;
    let (_, metrics) = get(daemon.admin, "/metrics").await;
    assert_eq!(
        metric(&metrics, "ecs_xds_xds_pushes_total{type=\"lds\"} "),
        Some(pushes)
    );
    assert_eq!(
        envoy.stat("listener_manager.lds.update_rejected").await,
        rejected
    );
    assert_eq!(
        rejected, 2,
        "sent once, then once more in case the first was lost"
    );
    assert_eq!(
        envoy.versions().await.lds,
        held.lds,
        "Envoy kept its listener"
    );

    // A fixed template is a new version, sent and taken.
    write_template(dir.path(), &rest_template(egress, "fixed", 1));
    envoy
        .wait_for("the fixed listener", Duration::from_secs(10), || async {
            let lds = envoy.versions().await.lds;
            lds != held.lds && lds != nack["rejected_version"].as_str().unwrap()
        })
        .await;
    envoy.stop().await;
}
