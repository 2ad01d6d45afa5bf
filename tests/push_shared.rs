//! The shared push store: two real `ecs-xds run` replicas from one settings file, their pushes
//! on moto's S3 (reached through a fault proxy that a test switches off), each serving a saved
//! empty inventory so that S3 is the only AWS they talk to.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use support::daemon::{ecs_xds_command, Running};
use support::envoy::free_port;
use support::fault_proxy::FaultProxy;
use support::http::scrape_metric;
use support::moto::Moto;
use support::settings::SettingsFile;
use support::templates::egress_sidecar;

const BUCKET: &str = "ecs-xds-pushes";
const REFRESH: Duration = Duration::from_millis(1000);

/// Settings (push on the shared store behind `s3_endpoint`), a sidecar template and an empty
/// saved inventory in `dir`; (settings file, inventory file).
fn write_config(dir: &Path, s3_endpoint: &str) -> (PathBuf, PathBuf) {
    let config = SettingsFile::new()
        .aws_endpoint(s3_endpoint)
        .set("push", "enabled", true)
        .set(
            "push",
            "refresh_interval",
            format!("{}ms", REFRESH.as_millis()),
        )
        .raw(
            "push",
            &format!("store = {{ s3 = {{ bucket = \"{BUCKET}\", prefix = \"prod/push/\" }} }}"),
        )
        .write(dir);
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    std::fs::write(
        dir.join("templates/sidecar.toml"),
        egress_sidecar(free_port(), "egress", 1),
    )
    .unwrap();
    let inventory = dir.join("inventory.json");
    let empty = ecs_xds::inventory::Inventory::default();
    std::fs::write(&inventory, serde_json::to_string(&empty).unwrap()).unwrap();
    (config, inventory)
}

async fn replica(config: &Path, inventory: &Path) -> Running {
    let mut command = ecs_xds_command(config);
    command
        .arg("--inventory")
        .arg(inventory)
        .stdin(Stdio::null());
    Running::start_command(command).await
}

async fn s3(moto: &Moto) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::config::Builder::from(&moto.sdk_config().await)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

async fn create_bucket(moto: &Moto) -> aws_sdk_s3::Client {
    let s3 = s3(moto).await;
    s3.create_bucket().bucket(BUCKET).send().await.unwrap();
    s3
}

fn a_push(version: &str, port: u32) -> Value {
    json!({
        "version": version,
        "clusters": [{
            "name": "pushed",
            "type": "STATIC",
            "connect_timeout": "1s",
            "load_assignment": {"cluster_name": "pushed", "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}
            ]}]}
        }]
    })
}

struct Admin {
    http: reqwest::Client,
    base: String,
}

impl Admin {
    fn of(replica: &Running) -> Admin {
        Admin {
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            base: format!("http://{}", replica.admin),
        }
    }

    async fn put(&self, body: &Value, if_match: Option<&str>) -> reqwest::Response {
        let mut request = self
            .http
            .put(format!("{}/resources/sidecar", self.base))
            .body(body.to_string());
        if let Some(etag) = if_match {
            request = request.header("if-match", etag);
        }
        request.send().await.unwrap()
    }

    async fn get(&self, path: &str) -> (StatusCode, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    }

    async fn delete(&self) -> StatusCode {
        let url = format!("{}/resources/sidecar", self.base);
        self.http.delete(url).send().await.unwrap().status()
    }

    /// The node type's push as this replica serves it (`None`: nothing pushed).
    async fn pushed(&self) -> Option<Value> {
        match self.get("/resources/sidecar").await {
            (StatusCode::OK, body) => Some(serde_json::from_str(&body).unwrap()),
            (StatusCode::NOT_FOUND, _) => None,
            (status, body) => panic!("GET /resources/sidecar: {status} {body}"),
        }
    }

    /// The versions of the sidecar snapshot this replica serves.
    async fn versions(&self) -> Value {
        let (status, body) = self.get("/snapshot/sidecar").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        serde_json::from_str::<Value>(&body).unwrap()["versions"].clone()
    }

    async fn wait_ready(&self, limit: Duration) {
        let started = Instant::now();
        while self.get("/readyz").await.0 != StatusCode::OK {
            assert!(started.elapsed() < limit, "not ready within {limit:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until this replica serves `want` as the push; returns how long that took.
    async fn wait_pushed(&self, want: Option<&Value>, limit: Duration) -> Duration {
        let started = Instant::now();
        while self.pushed().await.as_ref() != want {
            assert!(
                started.elapsed() < limit,
                "push {want:?} not served within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        started.elapsed()
    }
}

fn etag(response: &reqwest::Response) -> String {
    response.headers()["etag"].to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_to_one_replica_is_served_by_the_other_and_if_match_lets_one_writer_win() {
    let moto = Moto::start();
    create_bucket(&moto).await;
    let dir = tempfile::tempdir().unwrap();
    let (config, inventory) = write_config(dir.path(), &moto.endpoint);
    let (a, b) = (
        replica(&config, &inventory).await,
        replica(&config, &inventory).await,
    );
    let (admin_a, admin_b) = (Admin::of(&a), Admin::of(&b));
    admin_a.wait_ready(Duration::from_secs(20)).await;
    admin_b.wait_ready(Duration::from_secs(20)).await;
    assert_eq!(admin_a.versions().await, admin_b.versions().await);

    // A PUT on A is served by B within the refresh interval (and a margin for the listing).
    let v1 = a_push("v1", 9001);
    let put = admin_a.put(&v1, None).await;
    assert_eq!(put.status(), StatusCode::OK);
    let took = admin_b.wait_pushed(Some(&v1), REFRESH * 3).await;
    assert!(took <= REFRESH + Duration::from_millis(800), "{took:?}");
    assert_eq!(admin_a.versions().await, admin_b.versions().await);
    let served = admin_b.get("/snapshot/sidecar").await.1;
    assert!(served.contains("\"pushed\""), "{served}");

    // Two If-Match PUTs over that version at once, one per replica: exactly one wins.
    let seen = etag(&put);
    let (v2a, v2b) = (a_push("v2-a", 9002), a_push("v2-b", 9003));
    let (on_a, on_b) = tokio::join!(
        admin_a.put(&v2a, Some(&seen)),
        admin_b.put(&v2b, Some(&seen))
    );
    let mut statuses = [on_a.status(), on_b.status()];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::CONFLICT]);
    let winner = if on_a.status() == StatusCode::OK {
        &v2a
    } else {
        &v2b
    };
    admin_a.wait_pushed(Some(winner), REFRESH * 3).await;
    admin_b.wait_pushed(Some(winner), REFRESH * 3).await;
    assert_eq!(admin_a.versions().await, admin_b.versions().await);

    // A plain PUT over a version it has not seen yet still lands (conditionally, after
    // reading the new one), and a DELETE on B reaches A.
    let v3 = a_push("v3", 9004);
    assert_eq!(admin_b.put(&v3, None).await.status(), StatusCode::OK);
    assert_eq!(admin_a.put(&v3, None).await.status(), StatusCode::OK);
    assert_eq!(admin_b.delete().await, StatusCode::NO_CONTENT);
    admin_a.wait_pushed(None, REFRESH * 3).await;
    let served = admin_a.get("/snapshot/sidecar").await.1;
    assert!(!served.contains("\"pushed\""), "{served}");
    assert_eq!(admin_a.versions().await, admin_b.versions().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_stores_s3_requests_are_counted_in_the_aws_request_metrics() {
    let moto = Moto::start();
    create_bucket(&moto).await;
    let dir = tempfile::tempdir().unwrap();
    let (config, inventory) = write_config(dir.path(), &moto.endpoint);
    let daemon = replica(&config, &inventory).await;
    let admin = Admin::of(&daemon);
    admin.wait_ready(Duration::from_secs(20)).await;
    const PUTS: &str = "ecs_xds_aws_requests_total{account=\"self\",region=\"default\",operation=\"PutObject\",outcome=\"ok\"} ";
    const LISTS: &str = "ecs_xds_aws_requests_total{account=\"self\",region=\"default\",operation=\"ListObjectsV2\",outcome=\"ok\"} ";
    assert_eq!(scrape_metric(daemon.admin, PUTS).await, 0.0);
    assert!(
        scrape_metric(daemon.admin, LISTS).await >= 1.0,
        "the store was listed at start"
    );

    let put = admin.put(&a_push("v1", 9001), None).await;
    assert_eq!(put.status(), StatusCode::OK);
    assert_eq!(scrape_metric(daemon.admin, PUTS).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_s3_unreachable_replicas_wait_then_serve_what_they_hold_and_refuse_changes_with_503() {
    let moto = Moto::start();
    let s3 = create_bucket(&moto).await;
    let proxy = FaultProxy::start(moto.port).await;
    let dir = tempfile::tempdir().unwrap();
    let (config, inventory) = write_config(dir.path(), &proxy.endpoint());

    // S3 down at start: nothing is published and the replica is not ready until it is read.
    proxy.set_up(false);
    let daemon = replica(&config, &inventory).await;
    let admin = Admin::of(&daemon);
    tokio::time::sleep(REFRESH * 2).await;
    assert_eq!(
        admin.get("/readyz").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        admin.get("/snapshot/sidecar").await.0,
        StatusCode::NOT_FOUND
    );
    proxy.set_up(true);
    admin.wait_ready(REFRESH * 5).await;

    let v1 = a_push("v1", 9001);
    assert_eq!(admin.put(&v1, None).await.status(), StatusCode::OK);
    let versions = admin.versions().await;

    // Down: what is held is still served; a PUT or DELETE is refused and changes nothing.
    proxy.set_up(false);
    let put = admin.put(&a_push("v2", 9002), None).await;
    assert_eq!(put.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(put.headers()["retry-after"], "1");
    let text = put.text().await.unwrap();
    assert!(text.contains("shared push store"), "{text}");
    assert_eq!(admin.delete().await, StatusCode::SERVICE_UNAVAILABLE);
    tokio::time::sleep(REFRESH * 2).await;
    assert_eq!(admin.pushed().await, Some(v1));
    assert_eq!(admin.versions().await, versions);
    assert_eq!(admin.get("/readyz").await.0, StatusCode::OK);

    // Meanwhile another replica wrote v3; once S3 is back, this one serves it.
    let v3 = a_push("v3", 9003);
    s3.put_object()
        .bucket(BUCKET)
        .key("prod/push/sidecar.json")
        .body(v3.to_string().into_bytes().into())
        .send()
        .await
        .unwrap();
    proxy.set_up(true);
    admin.wait_pushed(Some(&v3), REFRESH * 5).await;
    assert!(daemon.log().contains("shared push store reachable again"));
}
