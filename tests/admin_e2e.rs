//! The operator's views of the real `ecs-xds run` binary after a discovery against moto, with a
//! real Envoy 1.40 connected: the admin HTTP endpoint, CSDS and gRPC health on the xDS port.
//!
//! Safety: the endpoints are the 10.x addresses moto invents; they are only read, never
//! requested, and the clusters have no health checks.

use crate::support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use envoy_types::pb::envoy::admin::v3::ClientResourceStatus;
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use envoy_types::pb::envoy::r#type::matcher::v3::{NodeMatcher, StringMatcher};
use envoy_types::pb::envoy::service::status::v3::client_status_discovery_service_client::ClientStatusDiscoveryServiceClient;
use envoy_types::pb::envoy::service::status::v3::{ClientStatusRequest, ConfigStatus};
use serde_json::Value;
use support::daemon::Running;
use support::envoy::{free_port, AdsMode, Envoy};
use support::http::{get, metric};
use support::moto::Moto;
use support::settings::SettingsFile;
use support::templates::egress_sidecar;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

fn template(egress: u16, chains: usize) -> String {
    egress_sidecar(egress, "egress", chains)
}

struct Setup {
    _dir: tempfile::TempDir,
    config: PathBuf,
    egress: u16,
}

/// Settings with both listeners on port 0: the running daemon says what it bound.
fn setup(endpoint: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let egress = free_port();
    let config = SettingsFile::new()
        .aws_endpoint(endpoint)
        .clusters(&["demo"])
        .poll_interval("1s")
        .write(dir.path());
    std::fs::create_dir_all(dir.path().join("templates")).unwrap();
    write_template(dir.path(), &template(egress, 1));
    Setup {
        _dir: dir,
        config,
        egress,
    }
}

fn write_template(dir: &Path, text: &str) {
    std::fs::write(dir.join("templates/sidecar.toml"), text).unwrap();
}

async fn get_json(admin: SocketAddr, path: &str) -> Value {
    let (status, body) = get(admin, path).await;
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

async fn grpc_health(xds: SocketAddr) -> ServingStatus {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{xds}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);
    let response = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    response.into_inner().status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_csds_and_health_show_what_the_connected_envoy_acked_and_rejected() {
    let moto = Moto::start();
    moto.seed(&["--tasks-per-service", "1"]);
    let s = setup(&moto.endpoint);
    let daemon = Running::start(&s.config).await;
    let (xds, admin) = (daemon.xds, daemon.admin);
    let envoy = Envoy::start("sidecar-app1", xds, AdsMode::Sotw).await;
    envoy
        .wait_for(
            "the discovered clusters",
            Duration::from_secs(20),
            || async {
                // The listener too: it is sent after the clusters, and read below.
                let v = envoy.versions().await;
                v.clusters.len() == 4 && !v.lds.is_empty()
            },
        )
        .await;
    let held = envoy.versions().await;

    assert_eq!(get(admin, "/healthz").await, (200, "ok\n".to_owned()));
    assert_eq!(get(admin, "/readyz").await, (200, "ready\n".to_owned()));
    assert_eq!(grpc_health(xds).await, ServingStatus::Serving);

    // /snapshot: exactly what Envoy holds.
    let snapshot = get_json(admin, "/snapshot/sidecar").await;
    assert_eq!(snapshot["versions"]["cds"], held.cds.as_str());
    assert_eq!(snapshot["versions"]["lds"], held.lds.as_str());
    let clusters: Vec<&str> = snapshot["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(clusters, held.clusters);
    assert_eq!(get(admin, "/snapshot/nope").await.0, 404);

    // /nodes: the ACKed versions are Envoy's (its ACK can follow its config dump by a moment).
    envoy
        .wait_for("the listener's ACK", Duration::from_secs(5), || async {
            let nodes = get_json(admin, "/nodes").await;
            nodes["nodes"][0]["streams"][0]["types"]["lds"]["acked_version"] == held.lds.as_str()
        })
        .await;
    let nodes = get_json(admin, "/nodes").await;
    let node = &nodes["nodes"][0];
    assert_eq!(node["node_id"], "sidecar-app1");
    assert_eq!(node["node_type"], "sidecar");
    let stream = &node["streams"][0];
    assert_eq!(
        (&stream["service"], &stream["mode"]),
        (&"ads".into(), &"sotw".into())
    );
    assert_eq!(stream["types"]["cds"]["acked_version"], held.cds.as_str());
    assert_eq!(stream["types"]["lds"]["acked_version"], held.lds.as_str());
    assert_eq!(stream["types"]["lds"]["last_nack"], Value::Null);

    // /metrics: discovery, snapshots and xDS figures.
    let (status, metrics) = get(admin, "/metrics").await;
    assert_eq!(status, 200);
    for (line, want) in [
        ("ecs_xds_xds_streams{service=\"ads\",mode=\"sotw\"} ", 1.0),
        ("ecs_xds_inventory_clusters{source=\"ecs\",account=\"123456789012\",region=\"us-east-1\"} ", 4.0),
        ("ecs_xds_inventory_endpoints{health=\"unknown\"} ", 4.0),
        (
            "ecs_xds_template_reloads_total{outcome=\"failed\",reason=\"templates\"} ",
            0.0,
        ),
        ("ecs_xds_connections{listener=\"xds\"} ", 1.0),
        (
            "ecs_xds_connections_refused_total{listener=\"admin\"} ",
            0.0,
        ),
    ] {
        assert_eq!(metric(&metrics, line), Some(want), "{line} in:\n{metrics}");
    }
    let described = "ecs_xds_aws_requests_total{account=\"self\",region=\"default\",operation=\"DescribeTasks\",outcome=\"ok\"} ";
    assert!(metric(&metrics, described).unwrap() >= 1.0, "{metrics}");
    assert!(metric(&metrics, "ecs_xds_poll_cycles_total{outcome=\"ok\"} ").unwrap() >= 1.0);
    assert!(metric(&metrics, "ecs_xds_poll_duration_seconds_count ").unwrap() >= 1.0);
    let cds_info = format!(
        "ecs_xds_snapshot_version_info{{node_type=\"sidecar\",type=\"cds\",version=\"{}\"}} ",
        held.cds
    );
    assert_eq!(metric(&metrics, &cds_info), Some(1.0), "{metrics}");

    // CSDS on the xDS port: the connected Envoy, its clusters ACKed at the version it holds.
    let mut csds = ClientStatusDiscoveryServiceClient::connect(format!("http://{}", xds))
        .await
        .unwrap();
    let matcher = |id: &str| NodeMatcher {
        node_id: Some(StringMatcher {
            match_pattern: Some(MatchPattern::Exact(id.into())),
            ignore_case: false,
        }),
        node_metadatas: vec![],
    };
    let status = csds
        .fetch_client_status(ClientStatusRequest {
            node_matchers: vec![matcher("sidecar-app1")],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.config.len(), 1);
    let client = &status.config[0];
    assert_eq!(client.node.as_ref().unwrap().id, "sidecar-app1");
    let web = client
        .generic_xds_configs
        .iter()
        .find(|c| c.name == "web" && c.type_url.ends_with("cluster.v3.Cluster"))
        .expect("the web cluster in CSDS");
    assert_eq!(web.version_info, held.cds);
    assert_eq!(web.config_status(), ConfigStatus::Synced);
    assert_eq!(web.client_status(), ClientResourceStatus::Acked);
    assert!(web.xds_config.is_some());
    let nobody = csds
        .fetch_client_status(ClientStatusRequest {
            node_matchers: vec![matcher("sidecar-other")],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(nobody.config.is_empty());

    // A listener Envoy rejects (two identical filter chains): the NACK shows up with Envoy's
    // own message in /nodes, in the metrics and in CSDS.
    write_template(s.config.parent().unwrap(), &template(s.egress, 2));
    envoy
        .wait_for(
            "Envoy rejecting the listener",
            Duration::from_secs(10),
            || async { envoy.stat("listener_manager.lds.update_rejected").await >= 1 },
        )
        .await;
    let mut nack = Value::Null;
    for _ in 0..50 {
        let nodes = get_json(admin, "/nodes").await;
        nack = nodes["nodes"][0]["streams"][0]["types"]["lds"]["last_nack"].clone();
        if !nack.is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let message = nack["message"].as_str().expect("a NACK in /nodes");
    assert!(message.contains("filter chain"), "{message}");
    assert_ne!(nack["rejected_version"], held.lds.as_str());
    assert_eq!(
        envoy.versions().await.lds,
        held.lds,
        "Envoy kept its listener"
    );
    let (_, metrics) = get(admin, "/metrics").await;
    assert_eq!(
        metric(&metrics, "ecs_xds_xds_nacks_total{type=\"lds\"} "),
        Some(1.0)
    );
    let status = csds
        .fetch_client_status(ClientStatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    let egress = status.config[0]
        .generic_xds_configs
        .iter()
        .find(|c| c.name == "egress" && c.type_url.ends_with("listener.v3.Listener"))
        .unwrap();
    assert_eq!(egress.config_status(), ConfigStatus::Error);
    assert_eq!(egress.client_status(), ClientResourceStatus::Nacked);
    assert_eq!(egress.error_state.as_ref().unwrap().details, message);
    envoy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_waits_for_the_first_complete_discovery() {
    // AWS is unreachable at first: a port nothing listens on (yet).
    let aws_port = free_port();
    let s = setup(&format!("http://127.0.0.1:{aws_port}"));
    let daemon = Running::start(&s.config).await;
    let (xds, admin) = (daemon.xds, daemon.admin);

    let (status, body) = get(admin, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("first complete discovery"), "{body}");
    assert_eq!(get(admin, "/healthz").await.0, 200);
    assert_eq!(grpc_health(xds).await, ServingStatus::NotServing);
    let mut failed = None;
    for _ in 0..100 {
        let (_, metrics) = get(admin, "/metrics").await;
        failed = metric(&metrics, "ecs_xds_poll_cycles_total{outcome=\"failed\"} ");
        if failed.is_some() {
            assert!(metrics.contains("outcome=\"error\""), "{metrics}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(failed.unwrap_or(0.0) >= 1.0, "no failed poll cycle counted");

    // AWS comes up: the next poll completes and the daemon becomes ready.
    let moto = Moto::start_on(aws_port);
    moto.seed(&["--tasks-per-service", "1"]);
    let mut ready = (0, String::new());
    for _ in 0..200 {
        ready = get(admin, "/readyz").await;
        if ready.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ready, (200, "ready\n".to_owned()));
    assert_eq!(grpc_health(xds).await, ServingStatus::Serving);
}
