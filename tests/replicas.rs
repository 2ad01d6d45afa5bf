//! Running several replicas: streams that end at their maximum age and reconnect without any
//! config change or failed request, and an Envoy that fails over from a killed replica to the
//! other. The real `ecs-xds run`, moto's ECS and Cloud Map and a real Envoy 1.40; the only
//! backend receiving traffic runs on 127.0.0.1 (the 10.x task addresses are only read from
//! Envoy's admin API; the clusters have no health checks).

use crate::support;

use std::time::{Duration, Instant};

use support::backend::Backend;
use support::daemon::Running;
use support::envoy::{free_port, AdsMode, Envoy};
use support::moto::{run_service_task, running_task_ips, Moto};
use support::settings::SettingsFile;
use support::templates::egress_sidecar;

const BACKEND: &str = "cloudmap.backend.demo.local";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_past_their_age_reconnect_with_no_config_update_and_no_failed_request() {
    let backend = Backend::start("backend").await;
    let moto = Moto::start();
    moto.seed(&["--no-ecs", "--cloudmap-instance", &backend.addr.to_string()]);
    let dir = tempfile::tempdir().unwrap();
    let config = SettingsFile::new()
        .set("xds", "max_connection_age", "2s")
        .aws_endpoint(&moto.endpoint)
        .poll_interval("1s")
        .namespaces(&["demo.local"])
        .write(dir.path());
    std::fs::create_dir_all(dir.path().join("templates")).unwrap();
    let egress = free_port();
    std::fs::write(
        dir.path().join("templates/sidecar.toml"),
        egress_sidecar(egress, "egress", 1),
    )
    .unwrap();
    let daemon = Running::start(&config).await;
    let envoy = Envoy::start("sidecar-app1", daemon.xds, AdsMode::Sotw).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!("http://127.0.0.1:{egress}/");
    envoy
        .wait_for(
            "a request through Envoy",
            Duration::from_secs(20),
            || async {
                let r = client.get(&url).header("host", BACKEND).send().await;
                r.is_ok_and(|r| r.status().is_success())
            },
        )
        .await;
    let cds = envoy.stat("cluster_manager.cds.update_success").await;
    let lds = envoy.stat("listener_manager.lds.update_success").await;
    let connections = envoy.stat("cluster.ecs-xds.upstream_cx_total").await;

    // Requests all along while the stream reaches its age (2 s ±10%) at least twice.
    let started = Instant::now();
    let mut requests = 0;
    while started.elapsed() < Duration::from_secs(7) {
        let r = client
            .get(&url)
            .header("host", BACKEND)
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "request {requests} failed: {}",
            r.status()
        );
        requests += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reconnected = envoy.stat("cluster.ecs-xds.upstream_cx_total").await - connections;
    assert!(reconnected >= 2, "Envoy reconnected {reconnected} times");
    assert_eq!(
        envoy.stat("cluster_manager.cds.update_success").await,
        cds,
        "no CDS update"
    );
    assert_eq!(
        envoy.stat("listener_manager.lds.update_success").await,
        lds,
        "no LDS update"
    );
    assert_eq!(envoy.stat("cluster_manager.cds.update_rejected").await, 0);
    eprintln!("{requests} requests, {reconnected} reconnects, none failed");
    envoy.stop().await;
}

/// The node ids a replica's `/nodes` lists as connected.
async fn connected(admin: std::net::SocketAddr) -> String {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!("http://{admin}/nodes");
    match client.get(url).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_fails_over_to_the_other_replica_with_no_config_update_and_follows_ecs_through_it() {
    let moto = Moto::start();
    let seed = moto.seed(&["--tasks-per-service", "1"]);
    let ecs = aws_sdk_ecs::Client::new(&moto.sdk_config().await);
    let dir = tempfile::tempdir().unwrap();
    let config = SettingsFile::new()
        .aws_endpoint(&moto.endpoint)
        .clusters(&["demo"])
        .poll_interval("1s")
        .write(dir.path());
    std::fs::create_dir_all(dir.path().join("templates")).unwrap();
    std::fs::write(
        dir.path().join("templates/sidecar.toml"),
        egress_sidecar(free_port(), "egress", 1),
    )
    .unwrap();
    // Two replicas from the same settings, both endpoints of Envoy's xDS cluster.
    let mut replicas = [Running::start(&config).await, Running::start(&config).await];
    let envoy =
        Envoy::start_with_replicas("sidecar-app1", &[replicas[0].xds, replicas[1].xds]).await;
    let web = running_task_ips(&ecs, "web").await;
    envoy
        .wait_for_ips("web", &web, Duration::from_secs(20))
        .await;
    let stats = [
        "cluster_manager.cds.update_success",
        "cluster_manager.cds.update_rejected",
        "listener_manager.lds.update_success",
        "listener_manager.lds.update_rejected",
    ];
    let mut before = Vec::new();
    for stat in stats {
        before.push(envoy.stat(stat).await);
    }

    // Kill (SIGKILL) the replica Envoy's stream is on; Envoy reconnects to the other.
    let killed = match connected(replicas[0].admin).await.contains("sidecar-app1") {
        true => 0,
        false => 1,
    };
    let survivor = replicas[1 - killed].admin;
    assert!(!connected(survivor).await.contains("sidecar-app1"));
    replicas[killed].child.kill().await.unwrap();
    let killed_at = Instant::now();
    envoy
        .wait_for(
            "Envoy on the other replica",
            Duration::from_secs(20),
            || async {
                connected(survivor).await.contains("sidecar-app1")
                    && envoy.stat("control_plane.connected_state").await == 1
            },
        )
        .await;
    eprintln!(
        "Envoy reconnected to the other replica {:?} after the kill",
        killed_at.elapsed()
    );
    for (stat, was) in stats.iter().zip(&before) {
        assert_eq!(
            envoy.stat(stat).await,
            *was,
            "{stat}: no config update on failover"
        );
    }

    // An ECS change reaches Envoy through the survivor.
    run_service_task(&ecs, &seed, "web").await;
    let web = running_task_ips(&ecs, "web").await;
    assert_eq!(web.len(), 2);
    envoy
        .wait_for_ips("web", &web, Duration::from_secs(5))
        .await;
    envoy.stop().await;
}
