//! REST push end to end: the real `ecs-xds run` binary (with a saved, empty inventory, so no
//! AWS is involved), its admin listener, and a real Envoy 1.40 with node id `sidecar-app1`.
//!
//! Safety: every address is 127.0.0.1 (the exposed admin listener binds 0.0.0.0 and is reached
//! on 127.0.0.1); the pushed cluster points at a backend the test starts on 127.0.0.1.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::backend::Backend;
use support::daemon::{ecs_xds_command, Running};
use support::envoy::{free_port, AdsMode, Envoy};
use support::settings::SettingsFile;
use support::templates::egress_sidecar;
use tokio::process::Command;

const HCM: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const ROUTER: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";
const TOKEN: &str = "t0ken-for-tests";

/// The settings (push enabled, the token only from the environment), a sidecar template
/// (egress listener on generated routes) and an empty saved inventory in `dir`. Returns
/// (settings file, inventory file). Port 0 in `xds` or `admin`: the daemon says what it bound.
fn write_config(dir: &Path, xds: u16, admin: &str) -> (PathBuf, PathBuf) {
    let config = write_settings(dir, xds, admin);
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    let egress = free_port();
    std::fs::write(
        dir.join("templates/sidecar.toml"),
        egress_sidecar(egress, "egress", 1),
    )
    .unwrap();
    let inventory = dir.join("inventory.json");
    let empty = ecs_xds::inventory::Inventory::default();
    std::fs::write(&inventory, serde_json::to_string(&empty).unwrap()).unwrap();
    (config, inventory)
}

/// The settings file alone (as `write_config` writes it).
fn write_settings(dir: &Path, xds: u16, admin: &str) -> PathBuf {
    SettingsFile::new()
        .xds_listen(format!("127.0.0.1:{xds}"))
        .admin_listen(admin)
        .set("push", "enabled", true)
        .set("push", "max_body_bytes", 16384)
        .write(dir)
}

/// `ecs-xds run` serving the saved inventory (no AWS), killed when dropped.
fn ecs_xds(config: &Path, inventory: &Path) -> Command {
    let mut command = ecs_xds_command(config);
    command
        .arg("--inventory")
        .arg(inventory)
        .stdin(Stdio::null());
    command
}

/// `ecs-xds run` serving the saved inventory, once its listeners are bound.
async fn running(config: &Path, inventory: &Path) -> Running {
    Running::start_command(ecs_xds(config, inventory)).await
}

/// A push: a listener on `port` routing everything to a STATIC cluster at the backend.
fn a_push(version: &str, port: u16, backend: u16) -> Value {
    json!({
        "version": version,
        "listeners": [{
            "name": "pushed",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": HCM,
                    "stat_prefix": "pushed",
                    "rds": {"route_config_name": "pushed", "config_source": {"ads": {}, "resource_api_version": "V3"}},
                    "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}]
                }
            }]}]
        }],
        "routes": [{
            "name": "pushed",
            "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                {"match": {"prefix": "/"}, "route": {"cluster": "backend"}}
            ]}]
        }],
        "clusters": [{
            "name": "backend",
            "type": "STATIC",
            "connect_timeout": "1s",
            "load_assignment": {"cluster_name": "backend", "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": backend}}}}
            ]}]}
        }]
    })
}

/// Runs `ecs-xds run` expecting it to refuse to start: its exit code and stderr.
async fn refused_start(config: &Path, inventory: &Path) -> (Option<i32>, String) {
    let output = tokio::time::timeout(
        Duration::from_secs(20),
        ecs_xds(config, inventory).stderr(Stdio::piped()).output(),
    )
    .await
    .expect("ecs-xds exits")
    .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

struct Admin {
    base: String,
    http: reqwest::Client,
    token: Option<&'static str>,
}

impl Admin {
    fn new(port: u16, token: Option<&'static str>) -> Admin {
        Admin {
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            token,
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> reqwest::Response {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        request.send().await.unwrap()
    }

    /// PUTs once the daemon is up and has its first inventory (connection refused or 503
    /// before that).
    async fn put_when_ready(&self, node_type: &str, body: &Value) -> reqwest::Response {
        let started = Instant::now();
        let url = format!("{}/resources/{node_type}", self.base);
        loop {
            let mut request = self.http.put(&url).body(body.to_string());
            if let Some(token) = self.token {
                request = request.bearer_auth(token);
            }
            match request.send().await {
                Ok(r) if r.status() != reqwest::StatusCode::SERVICE_UNAVAILABLE => return r,
                _ => {}
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "admin never ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Listener names Envoy holds (dynamic, active).
async fn listeners(envoy: &Envoy) -> Vec<String> {
    let dump = envoy.config_dump().await;
    let mut names: Vec<String> = dump["configs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| {
            c["@type"]
                .as_str()
                .is_some_and(|t| t.ends_with("ListenersConfigDump"))
        })
        .flat_map(|c| {
            c["dynamic_listeners"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter(|l| l.get("active_state").is_some())
        .map(|l| l["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    names.sort();
    names
}

async fn get_through(port: u16) -> Option<String> {
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let response = http
        .get(format!("http://127.0.0.1:{port}/"))
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.text().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_resources_reach_envoy_survive_a_restart_and_delete_removes_them() {
    let backend = Backend::start("pushed-backend").await;
    let dir = tempfile::tempdir().unwrap();
    let (config, inventory) = write_config(dir.path(), 0, "127.0.0.1:0");
    let mut daemon = running(&config, &inventory).await;
    let admin = Admin::new(daemon.admin.port(), None);

    let listen = free_port();
    let push = a_push("v1", listen, backend.addr.port());
    let put = admin.put_when_ready("sidecar", &push).await;
    assert_eq!(put.status(), 200);
    let answer: Value = put.json().await.unwrap();
    assert_eq!(answer["version"], "v1");
    assert_eq!(answer["resources"]["clusters"], 1);
    assert!(dir.path().join("state/sidecar.json").exists());

    let envoy = Envoy::start("sidecar-app1", daemon.xds, AdsMode::Sotw).await;
    envoy
        .wait_for(
            "a request through the pushed listener",
            Duration::from_secs(20),
            || async { get_through(listen).await.as_deref() == Some("pushed-backend") },
        )
        .await;
    assert_eq!(listeners(&envoy).await, ["egress", "pushed"]);
    assert_eq!(envoy.versions().await.clusters, ["backend"]);

    // Restart: the push is reloaded from the state directory and served with the same
    // versions, so Envoy accepts no update at all.
    let cds = envoy.stat("cluster_manager.cds.update_success").await;
    let lds = envoy.stat("listener_manager.lds.update_success").await;
    let versions = envoy.versions().await;
    daemon.child.kill().await.unwrap();
    envoy
        .wait_for(
            "Envoy noticing the restart",
            Duration::from_secs(10),
            || async { envoy.stat("control_plane.connected_state").await == 0 },
        )
        .await;
    // The restarted daemon takes the addresses Envoy and the test know.
    let admin_listen = daemon.admin.to_string();
    write_settings(dir.path(), daemon.xds.port(), &admin_listen);
    let _daemon = running(&config, &inventory).await;
    envoy
        .wait_for("Envoy reconnecting", Duration::from_secs(20), || async {
            envoy.stat("control_plane.connected_state").await == 1
        })
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(envoy.versions().await, versions);
    assert_eq!(envoy.stat("cluster_manager.cds.update_success").await, cds);
    assert_eq!(envoy.stat("listener_manager.lds.update_success").await, lds);
    let hits = backend.hits();
    assert_eq!(get_through(listen).await.as_deref(), Some("pushed-backend"));
    assert_eq!(backend.hits(), hits + 1);

    // GET returns the body as it was PUT; DELETE takes the pushed resources out of Envoy.
    let get = admin
        .send(reqwest::Method::GET, "/resources/sidecar", None)
        .await;
    assert_eq!(get.status(), 200);
    assert_eq!(get.json::<Value>().await.unwrap(), push);
    let delete = admin
        .send(reqwest::Method::DELETE, "/resources/sidecar", None)
        .await;
    assert_eq!(delete.status(), 204);
    envoy
        .wait_for(
            "the pushed listener gone",
            Duration::from_secs(10),
            || async {
                listeners(&envoy).await == ["egress"] && envoy.versions().await.clusters.is_empty()
            },
        )
        .await;
    let get = admin
        .send(reqwest::Method::GET, "/resources/sidecar", None)
        .await;
    assert_eq!(get.status(), 404);
    assert!(!dir.path().join("state/sidecar.json").exists());
    envoy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exposed_admin_needs_the_token_and_bad_input_is_400_with_the_field_path() {
    let dir = tempfile::tempdir().unwrap();
    let (config, inventory) = write_config(dir.path(), 0, "0.0.0.0:0");
    let mut command = ecs_xds(&config, &inventory);
    command.env("ECS_XDS_ADMIN_TOKEN", TOKEN);
    let daemon = Running::start_command(command).await;
    let admin_port = daemon.admin.port();
    let push = a_push("v1", free_port(), free_port());

    let anonymous = Admin::new(admin_port, None);
    let started = Instant::now();
    let refused = loop {
        let url = format!("{}/resources/sidecar", anonymous.base);
        if let Ok(r) = anonymous.http.put(url).body(push.to_string()).send().await {
            break r;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "admin never came up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(refused.status(), 401);
    assert!(refused.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer"));
    let wrong = Admin {
        token: Some("wrong"),
        ..Admin::new(admin_port, None)
    };
    let put = wrong
        .send(
            reqwest::Method::PUT,
            "/resources/sidecar",
            Some(push.to_string().into()),
        )
        .await;
    assert_eq!(put.status(), 401);

    let admin = Admin::new(admin_port, Some(TOKEN));
    let mut bad = push.clone();
    bad["listeners"][0]["address"]["socket_address"]["port_value"] = json!("eighty");
    let put = admin.put_when_ready("sidecar", &bad).await;
    assert_eq!(put.status(), 400);
    let answer: Value = put.json().await.unwrap();
    assert_eq!(
        answer["path"],
        "listeners[0].address.socket_address.port_value"
    );

    let put = admin
        .send(
            reqwest::Method::PUT,
            "/resources/sidecar",
            Some(b"{\"listeners\": [".to_vec()),
        )
        .await;
    assert_eq!(put.status(), 400);
    let too_big = vec![b' '; 20_000];
    let put = admin
        .send(reqwest::Method::PUT, "/resources/sidecar", Some(too_big))
        .await;
    assert_eq!(put.status(), 413);
    let get = admin
        .send(reqwest::Method::GET, "/resources/sidecar", None)
        .await;
    assert_eq!(get.status(), 404);

    let put = admin.put_when_ready("sidecar", &push).await;
    assert_eq!(put.status(), 200);
}

#[tokio::test]
async fn an_exposed_push_api_without_a_token_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let (config, inventory) = write_config(dir.path(), 0, "0.0.0.0:0");
    let (code, stderr) = refused_start(&config, &inventory).await;
    assert_eq!(code, Some(2));
    assert!(stderr.contains("admin.token"), "{stderr}");
}

/// As in sxds, pushes alone can define a node type: with push on, an empty templates directory
/// starts; with push off, it is refused, naming the directory.
#[tokio::test]
async fn with_push_on_node_types_can_come_from_pushes_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (config, inventory) = write_config(dir.path(), 0, "127.0.0.1:0");
    std::fs::remove_file(dir.path().join("templates/sidecar.toml")).unwrap();
    let daemon = running(&config, &inventory).await;
    let admin = Admin::new(daemon.admin.port(), None);
    let put = admin
        .put_when_ready("sidecar", &a_push("v1", free_port(), free_port()))
        .await;
    assert_eq!(put.status(), 200);
    let served: Value = admin
        .send(reqwest::Method::GET, "/snapshot/sidecar", None)
        .await
        .json()
        .await
        .unwrap();
    let listeners = served["listeners"].as_array().expect("listeners");
    assert_eq!(listeners.len(), 1, "{served}");
    assert_eq!(listeners[0]["name"], "pushed");
    assert_eq!(served["clusters"][0]["name"], "backend");

    let off = dir.path().join("push-off.toml");
    std::fs::write(&off, SettingsFile::new().text()).unwrap();
    let (code, stderr) = refused_start(&off, &inventory).await;
    assert_eq!(code, Some(2));
    assert!(stderr.contains("no templates"), "{stderr}");
    let templates = dir.path().join("templates");
    assert!(stderr.contains(&*templates.to_string_lossy()), "{stderr}");
}

/// A template reload that would leave a pushed listener's route configuration missing is
/// refused as a whole: the running templates stay, and the failed reload is counted.
#[tokio::test]
async fn a_reload_that_breaks_a_push_is_refused_and_the_running_templates_stay() {
    let dir = tempfile::tempdir().unwrap();
    let (config, inventory) = write_config(dir.path(), 0, "127.0.0.1:0");
    let daemon = running(&config, &inventory).await;
    let admin = Admin::new(daemon.admin.port(), None);
    let mut push = a_push("v1", free_port(), free_port());
    // The pushed listener uses the template's generated route configuration, `egress`.
    push["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["rds"]
        ["route_config_name"] = json!("egress");
    push["routes"] = json!([]);
    assert_eq!(admin.put_when_ready("sidecar", &push).await.status(), 200);

    let template = dir.path().join("templates/sidecar.toml");
    let renamed = std::fs::read_to_string(&template)
        .unwrap()
        .replace("\"egress\"", "\"egress2\"");
    std::fs::write(&template, renamed).unwrap();
    let started = Instant::now();
    loop {
        let metrics = admin
            .send(reqwest::Method::GET, "/metrics", None)
            .await
            .text()
            .await
            .unwrap();
        let failed = "ecs_xds_template_reloads_total{outcome=\"failed\",reason=\"inconsistent\"} 1";
        if metrics.contains(failed) {
            assert!(metrics.contains("ecs_xds_template_reloads_total{outcome=\"ok\"} 0"));
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no failed reload counted:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let served: Value = admin
        .send(reqwest::Method::GET, "/snapshot/sidecar", None)
        .await
        .json()
        .await
        .unwrap();
    let routes: Vec<&str> = served["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(routes, ["egress"], "{served}");
}
