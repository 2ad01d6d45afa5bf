//! The headline test: moto server, the real `ecs-xds run` binary, and a real Envoy 1.40 with
//! node id `sidecar-app1`, bootstrapped for ADS to ecs-xds.
//!
//! Safety: the endpoints are the 10.x addresses moto invents. They are only read from Envoy's
//! admin API; no request is routed to them and the clusters have no health checks.

use crate::support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use support::daemon::Running;
use support::envoy::{free_port, AdsMode, Envoy};
use support::moto::{run_service_task, running_task_ips, Moto};
use support::settings::SettingsFile;
use support::templates::egress_sidecar;

const INTERVAL: Duration = Duration::from_secs(1);

/// Port 0: the daemon binds a free port and says which.
const ANY_PORT: &str = "127.0.0.1:0";

fn sidecar_template(egress_port: u16, stat_prefix: &str) -> String {
    egress_sidecar(egress_port, stat_prefix, 1)
}

/// Settings polling moto every second; xDS on `xds` (port 0: the daemon picks and says).
fn write_config(dir: &Path, moto: &Moto, xds: SocketAddr, egress_port: u16) -> std::path::PathBuf {
    let config = SettingsFile::new()
        .xds_listen(xds)
        .aws_endpoint(&moto.endpoint)
        .clusters(&["demo"])
        .poll_interval("1s")
        .write(dir);
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    std::fs::write(
        dir.join("templates/sidecar.toml"),
        sidecar_template(egress_port, "egress"),
    )
    .unwrap();
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_follows_ecs_through_ecs_xds_run_and_a_restart_repushes_nothing() {
    let moto = Moto::start();
    let seed = moto.seed(&["--tasks-per-service", "2"]);
    let ecs = aws_sdk_ecs::Client::new(&moto.sdk_config().await);
    let dir = tempfile::tempdir().unwrap();
    let egress = free_port();
    let config = write_config(dir.path(), &moto, ANY_PORT.parse().unwrap(), egress);
    let mut daemon = Running::start(&config).await;
    let xds = daemon.xds;
    let envoy = Envoy::start("sidecar-app1", xds, AdsMode::Sotw).await;

    // One cluster per service port, the template listener and the generated route.
    envoy
        .wait_for(
            "the discovered clusters",
            Duration::from_secs(20),
            || async {
                envoy.versions().await.clusters == ["api.grpc", "api.http", "orders", "web"]
            },
        )
        .await;
    let held = envoy.versions().await;
    assert!(!held.lds.is_empty());
    assert_eq!(
        held.rds.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["egress"]
    );
    for service in ["orders", "web"] {
        let want = running_task_ips(&ecs, service).await;
        assert_eq!(want.len(), 2);
        envoy
            .wait_for_ips(service, &want, Duration::from_secs(10))
            .await;
    }

    // Scale web up: Envoy has the new task within one poll interval plus 1 s.
    run_service_task(&ecs, &seed, "web").await;
    let want = running_task_ips(&ecs, "web").await;
    assert_eq!(want.len(), 3);
    let took = envoy
        .wait_for_ips("web", &want, INTERVAL + Duration::from_secs(1))
        .await;
    eprintln!("scale up reached Envoy in {took:?}");

    // Scale web down by one.
    let first = seed["ecs"]["services"]["web"]["tasks"][0].as_str().unwrap();
    ecs.stop_task()
        .cluster("demo")
        .task(first)
        .send()
        .await
        .unwrap();
    let want = running_task_ips(&ecs, "web").await;
    assert_eq!(want.len(), 2);
    let took = envoy
        .wait_for_ips("web", &want, INTERVAL + Duration::from_secs(1))
        .await;
    eprintln!("scale down reached Envoy in {took:?}");

    // Restart ecs-xds: same inventory, same versions, so Envoy accepts no update at all.
    let cds = envoy.stat("cluster_manager.cds.update_success").await;
    let lds = envoy.stat("listener_manager.lds.update_success").await;
    let eds = envoy.stat("cluster.web.update_success").await;
    let versions = envoy.versions().await;
    daemon.child.kill().await.unwrap();
    envoy
        .wait_for(
            "Envoy noticing the restart",
            Duration::from_secs(10),
            || async { envoy.stat("control_plane.connected_state").await == 0 },
        )
        .await;
    // The restarted daemon takes the address Envoy's bootstrap names.
    let config = write_config(dir.path(), &moto, xds, egress);
    let _daemon = Running::start(&config).await;
    envoy
        .wait_for("Envoy reconnecting", Duration::from_secs(20), || async {
            envoy.stat("control_plane.connected_state").await == 1
        })
        .await;
    tokio::time::sleep(INTERVAL * 3).await;
    assert_eq!(envoy.stat("cluster_manager.cds.update_success").await, cds);
    assert_eq!(envoy.stat("listener_manager.lds.update_success").await, lds);
    assert_eq!(envoy.stat("cluster.web.update_success").await, eds);
    assert_eq!(envoy.versions().await, versions);
    envoy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_template_keeps_the_running_config_fixing_it_applies_it_and_sigterm_exits_0() {
    let moto = Moto::start();
    moto.seed(&["--tasks-per-service", "1"]);
    let dir = tempfile::tempdir().unwrap();
    let egress = free_port();
    let config = write_config(dir.path(), &moto, ANY_PORT.parse().unwrap(), egress);
    let mut daemon = Running::start(&config).await;
    let envoy = Envoy::start("sidecar-app1", daemon.xds, AdsMode::Sotw).await;
    envoy
        .wait_for(
            "the discovered clusters",
            Duration::from_secs(20),
            || async { envoy.versions().await.clusters.len() == 4 },
        )
        .await;
    let before = envoy.versions().await;
    let template = dir.path().join("templates/sidecar.toml");

    // A typo: the daemon refuses the file, and Envoy keeps what it has.
    std::fs::write(
        &template,
        sidecar_template(egress, "egress").replace("stat_prefix", "stat_prefixx"),
    )
    .unwrap();
    let started = Instant::now();
    while !daemon.log().contains("template reload failed") {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no reload error logged:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        daemon.log().contains("stat_prefixx"),
        "the error names the field"
    );
    tokio::time::sleep(INTERVAL * 2).await;
    assert_eq!(envoy.versions().await, before);
    assert_eq!(envoy.stat("listener_manager.lds.update_rejected").await, 0);

    // Fixed, with a change: applied without a restart.
    std::fs::write(&template, sidecar_template(egress, "egress_fixed")).unwrap();
    envoy
        .wait_for("the fixed listener", Duration::from_secs(10), || async {
            envoy.versions().await.lds != before.lds
        })
        .await;
    assert_eq!(envoy.versions().await.clusters, before.clusters);

    // SIGTERM with Envoy still connected: streams closed, exit 0.
    daemon.terminate();
    let status = tokio::time::timeout(Duration::from_secs(10), daemon.child.wait())
        .await
        .expect("ecs-xds stops within 10 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
    envoy
        .wait_for(
            "Envoy seeing the stream closed",
            Duration::from_secs(10),
            || async { envoy.stat("control_plane.connected_state").await == 0 },
        )
        .await;
    envoy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_emulator_stopped_envoy_keeps_every_endpoint_and_ecs_xds_recovers_after() {
    let moto = Moto::start();
    let port = moto.port;
    moto.seed(&["--tasks-per-service", "1"]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &moto, ANY_PORT.parse().unwrap(), free_port());
    let daemon = Running::start(&config).await;
    let envoy = Envoy::start("sidecar-app1", daemon.xds, AdsMode::Sotw).await;
    envoy
        .wait_for(
            "the discovered clusters",
            Duration::from_secs(20),
            || async { envoy.versions().await.clusters.len() == 4 },
        )
        .await;
    let before = envoy.versions().await;

    // AWS unreachable: the failure is logged with the call, and nothing is withdrawn.
    drop(moto);
    let started = Instant::now();
    while !daemon.log().contains("ListTasks") {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no AWS failure logged:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(INTERVAL * 3).await;
    assert_eq!(envoy.versions().await, before, "Envoy keeps every endpoint");

    // The emulator is back (empty, then seeded again): ecs-xds follows it.
    let moto = Moto::start_on(port);
    moto.seed(&["--tasks-per-service", "2"]);
    let ecs = aws_sdk_ecs::Client::new(&moto.sdk_config().await);
    let want = running_task_ips(&ecs, "web").await;
    assert_eq!(want.len(), 2);
    envoy
        .wait_for_ips("web", &want, Duration::from_secs(20))
        .await;
    envoy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_through_envoy_reach_cloud_map_backends_and_a_deregistered_one_is_removed() {
    use support::backend::Backend;
    const BACKEND: &str = "cloudmap.backend.demo.local";
    let (a, b) = (
        Backend::start("backend-a").await,
        Backend::start("backend-b").await,
    );
    let moto = Moto::start();
    let seed = moto.seed(&[
        "--no-ecs",
        "--cloudmap-instance",
        &a.addr.to_string(),
        "--cloudmap-instance",
        &b.addr.to_string(),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let egress = free_port();
    let config = write_config(dir.path(), &moto, ANY_PORT.parse().unwrap(), egress);
    // Cloud Map only: these backends run on 127.0.0.1, so real traffic is safe.
    SettingsFile::new()
        .xds_listen(ANY_PORT)
        .aws_endpoint(&moto.endpoint)
        .poll_interval("1s")
        .namespaces(&["demo.local"])
        .write(dir.path());
    let daemon = Running::start(&config).await;
    let envoy = Envoy::start("sidecar-app1", daemon.xds, AdsMode::Sotw).await;
    let both: BTreeSet<String> = [a.addr, b.addr].iter().map(|s| s.to_string()).collect();
    envoy
        .wait_for(
            "both Cloud Map instances",
            Duration::from_secs(20),
            || async { envoy_addrs(&envoy, BACKEND).await == both },
        )
        .await;

    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!("http://127.0.0.1:{egress}/");
    let get = || async {
        let r = client
            .get(&url)
            .header("host", BACKEND)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        r.text().await.unwrap()
    };
    for _ in 0..20 {
        get().await;
    }
    assert!(
        a.hits() > 0 && b.hits() > 0,
        "a {} b {}",
        a.hits(),
        b.hits()
    );

    // Deregister b: Envoy drops it, and traffic goes to a only.
    let sd = aws_sdk_servicediscovery::Client::new(&moto.sdk_config().await);
    sd.deregister_instance()
        .service_id(seed["cloud_map"]["service_id"].as_str().unwrap())
        .instance_id(seed["cloud_map"]["instances"][1].as_str().unwrap())
        .send()
        .await
        .unwrap();
    let only_a: BTreeSet<String> = [a.addr.to_string()].into();
    envoy
        .wait_for("b removed", INTERVAL + Duration::from_secs(2), || async {
            envoy_addrs(&envoy, BACKEND).await == only_a
        })
        .await;
    let b_before = b.hits();
    for _ in 0..10 {
        assert_eq!(get().await, "backend-a");
    }
    assert_eq!(b.hits(), b_before);
    envoy.stop().await;
}

/// The `ip:port` endpoints Envoy holds for `cluster`.
async fn envoy_addrs(envoy: &Envoy, cluster: &str) -> BTreeSet<String> {
    let v = envoy.versions().await;
    v.endpoints
        .iter()
        .find(|(name, _)| name == cluster)
        .map(|(_, addrs)| addrs.iter().cloned().collect())
        .unwrap_or_default()
}

/// Policy tags on an ECS service (moto) reach the config Envoy accepted; a malformed one is a
/// warning and changes nothing else. Only the config is read: the endpoints are moto's 10.x.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_tags_become_the_route_and_cluster_policy_envoy_accepts() {
    use aws_sdk_ecs::types::Tag;
    let moto = Moto::start();
    moto.seed(&["--tasks-per-service", "1"]);
    let ecs = aws_sdk_ecs::Client::new(&moto.sdk_config().await);
    let web = ecs
        .describe_services()
        .cluster("demo")
        .services("web")
        .send()
        .await
        .unwrap();
    let arn = web.services()[0].service_arn().unwrap().to_owned();
    let tag = |k: &str, v: &str| Tag::builder().key(k).value(v).build();
    ecs.tag_resource()
        .resource_arn(arn)
        .tags(tag("ecs-xds.timeout", "2s"))
        .tags(tag("ecs-xds.retries", "2"))
        .tags(tag("ecs-xds.outlier-consecutive-5xx", "3"))
        .tags(tag("ecs-xds.max-requests", "two hundred"))
        .send()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &moto, ANY_PORT.parse().unwrap(), free_port());
    let daemon = Running::start(&config).await;
    let envoy = Envoy::start("sidecar-app1", daemon.xds, AdsMode::Sotw).await;
    envoy
        .wait_for(
            "the clusters and routes",
            Duration::from_secs(20),
            || async {
                let held = envoy.versions().await;
                held.clusters.len() == 4 && !held.rds.is_empty()
            },
        )
        .await;
    let dump = envoy.config_dump().await;
    let configs = dump["configs"].as_array().unwrap();
    let of = |suffix: &str| {
        configs
            .iter()
            .find(|c| c["@type"].as_str().is_some_and(|t| t.ends_with(suffix)))
            .unwrap()
            .clone()
    };
    let routes = of(".RoutesConfigDump");
    let web_host = routes["dynamic_route_configs"][0]["route_config"]["virtual_hosts"]
        .as_array()
        .unwrap_or_else(|| panic!("{routes}"))
        .iter()
        .find(|h| h["name"] == "web")
        .unwrap()
        .clone();
    let action = &web_host["routes"][0]["route"];
    assert_eq!(action["timeout"], "2s", "{action}");
    assert_eq!(action["retry_policy"]["num_retries"], 2, "{action}");
    let clusters = of(".ClustersConfigDump");
    let web_cluster = clusters["dynamic_active_clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["cluster"]["name"] == "web")
        .unwrap()
        .clone();
    assert_eq!(
        web_cluster["cluster"]["outlier_detection"]["consecutive_5xx"], 3,
        "{web_cluster}"
    );
    let thresholds = &web_cluster["cluster"]["circuit_breakers"];
    assert!(
        !thresholds.to_string().contains("max_requests\":200"),
        "the malformed tag changed nothing: {thresholds}"
    );
    daemon
        .wait_for_log("ecs-xds.max-requests=`two hundred`", Duration::from_secs(5))
        .await;
    assert_eq!(envoy.stat("cluster_manager.cds.update_rejected").await, 0);
    assert_eq!(envoy.stat("listener_manager.lds.update_rejected").await, 0);
    envoy.stop().await;
}
