//! Running several replicas: streams that end at their maximum age and reconnect without any
//! config change or failed request. The real `ecs-xds run`, moto's Cloud Map and a real Envoy
//! 1.40; the only backend receiving traffic runs on 127.0.0.1.

mod support;

use std::time::{Duration, Instant};

use support::backend::Backend;
use support::daemon::Running;
use support::envoy::{free_port, AdsMode, Envoy};
use support::moto::Moto;
use support::templates::egress_sidecar;

const BACKEND: &str = "cloudmap.backend.demo.local";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_past_their_age_reconnect_with_no_config_update_and_no_failed_request() {
    let backend = Backend::start("backend").await;
    let moto = Moto::start();
    moto.seed(&["--no-ecs", "--cloudmap-instance", &backend.addr.to_string()]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ecs-xds.toml");
    std::fs::write(
        &config,
        format!(
            "[xds]\nlisten = \"127.0.0.1:0\"\nmax_connection_age = \"2s\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [aws]\nendpoint_url = \"{}\"\n[ecs]\npoll_interval = \"1s\"\n[cloud_map]\nnamespaces = [\"demo.local\"]\n",
            moto.endpoint
        ),
    )
    .unwrap();
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
