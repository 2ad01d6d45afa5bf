//! `/ui` in a real browser: Debian's headless Chromium driven by Playwright
//! (`tests/support/ui/browser.py`), against the real `ecs-xds run`, moto and a real Envoy 1.40.
//! The page is loaded once; between steps the test changes the world (a task started in moto,
//! a template Envoy rejects) and the page shows it without a reload. Screenshots go to
//! `ECS_XDS_UI_SHOTS` (the README's are made with `ECS_XDS_UI_SHOTS=docs/ui`), else a temporary
//! directory.
//!
//! Safety: the endpoints are the 10.x addresses moto invents; nothing is sent to them.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::support::daemon::Running;
use crate::support::envoy::{bootstrap_json, free_port, AdsMode, Envoy};
use crate::support::http::get;
use crate::support::moto::{repo_root, run_service_task, tag_service, venv_python, Moto};
use crate::support::settings::SettingsFile;
use crate::support::templates::egress_sidecar;

/// The browser, one step at a time.
struct Browser {
    _child: Child,
    stdin: ChildStdin,
    answers: Lines<BufReader<ChildStdout>>,
}

impl Browser {
    fn start(admin: std::net::SocketAddr, shots: &Path) -> Browser {
        let mut child = Command::new(venv_python())
            .arg(repo_root().join("tests/support/ui/browser.py"))
            .arg(format!("http://{admin}"))
            .arg(shots)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the venv's python with playwright (scripts/setup-test-env.sh)");
        let stdin = child.stdin.take().unwrap();
        let answers = BufReader::new(child.stdout.take().unwrap()).lines();
        Browser {
            _child: child,
            stdin,
            answers,
        }
    }

    /// Runs `step` in the page; panics with the browser's reason when it fails.
    async fn step(&mut self, step: &str) {
        self.stdin
            .write_all(format!("{step}\n").as_bytes())
            .await
            .unwrap();
        let limit = Duration::from_secs(60);
        let answer = tokio::time::timeout(limit, self.answers.next_line()).await;
        let answer = answer.expect("the browser answers").unwrap();
        let name = step.split(' ').next().unwrap();
        assert_eq!(
            answer.as_deref(),
            Some(format!("ok {name}").as_str()),
            "step {step}"
        );
    }
}

fn shots_dir(temp: &Path) -> PathBuf {
    match std::env::var_os("ECS_XDS_UI_SHOTS") {
        Some(dir) => repo_root().join(dir),
        None => temp.join("shots"),
    }
}

async fn json(admin: std::net::SocketAddr, path: &str) -> Value {
    let (status, body) = get(admin, path).await;
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_services_envoys_graph_and_changes_and_follows_them_live() {
    let moto = Moto::start();
    let seed = moto.seed(&["--tasks-per-service", "1"]);
    let ecs = aws_sdk_ecs::Client::new(&moto.sdk_config().await);
    tag_service(&ecs, "web", "ecs-xds.backends", "orders payments").await;
    let dir = tempfile::tempdir().unwrap();
    let egress = free_port();
    let config = SettingsFile::new()
        .aws_endpoint(&moto.endpoint)
        .clusters(&["demo"])
        .poll_interval("1s")
        .write(dir.path());
    let templates = dir.path().join("templates");
    std::fs::create_dir_all(&templates).unwrap();
    let template = templates.join("sidecar.toml");
    std::fs::write(&template, egress_sidecar(egress, "egress", 1)).unwrap();
    let daemon = Running::start(&config).await;
    let mut bootstrap = bootstrap_json("sidecar-web-ui", daemon.xds, AdsMode::Sotw);
    bootstrap["node"]["cluster"] = "web".into();
    let envoy = Envoy::start_config(bootstrap, AdsMode::Sotw).await;
    let limit = Duration::from_secs(20);
    envoy
        .wait_for("web's backends", limit, || async {
            envoy.cluster_names().await.contains("orders")
        })
        .await;

    let shots = shots_dir(dir.path());
    std::fs::create_dir_all(&shots).unwrap();
    let mut browser = Browser::start(daemon.admin, &shots);
    browser.step("open").await;
    let inventory = json(daemon.admin, "/inventory").await;
    let clusters: Vec<&String> = inventory["clusters"].as_object().unwrap().keys().collect();
    assert!(clusters.len() >= 4, "{inventory}");
    let names: Vec<&str> = clusters.iter().map(|c| c.as_str()).collect();
    browser.step(&format!("services {}", names.join(" "))).await;
    browser.step("envoy sidecar-web-ui").await;
    browser.step("graph web orders payments").await;

    // A task starts in moto: the page, never reloaded, counts it.
    let orders = inventory["clusters"]["orders"]["endpoints"].as_array();
    let before = orders.map_or(0, Vec::len);
    run_service_task(&ecs, &seed, "orders").await;
    browser
        .step(&format!("endpoints orders {}", before + 1))
        .await;

    // A template Envoy rejects (two identical filter chains): the NACK, with Envoy's message.
    std::fs::write(&template, egress_sidecar(egress, "egress", 2)).unwrap();
    browser.step("nack sidecar-web-ui filter chain").await;
    browser.step("changes reload").await;
    browser.step("changes inventory").await;
    browser.step("errors").await;
    browser.step("quit").await;
    for view in [
        "services",
        "envoys",
        "explain",
        "graph",
        "envoys-nack",
        "changes",
    ] {
        let file = shots.join(format!("{view}.png"));
        let size = std::fs::metadata(&file).map_or(0, |m| m.len());
        assert!(size > 10_000, "{} is {size} bytes", file.display());
    }
}

/// `ecs-xds run --inventory` of one service with `settings` (admin on `listen`), and the
/// address to reach its admin server on loopback.
async fn serve_views(dir: &Path, settings: SettingsFile) -> (Running, std::net::SocketAddr) {
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    let template = egress_sidecar(free_port(), "egress", 1);
    std::fs::write(dir.join("templates/sidecar.toml"), template).unwrap();
    let config = settings.write(dir);
    let inventory = serde_json::json!({"clusters": {"orders": {
        "name": "orders",
        "source": {"kind": "ecs", "ecs_cluster": "prod", "service": "orders"},
        "backends": ["payments"],
        "endpoints": [{"address": "10.0.0.1", "port": 8080, "health": "healthy",
            "locality": {"region": "us-east-1"}, "weight": 1, "id": "t1"}]}}});
    let path = dir.join("inventory.json");
    std::fs::write(&path, inventory.to_string()).unwrap();
    let mut command = crate::support::daemon::ecs_xds_command(&config);
    command.arg("--inventory").arg(&path);
    let running = Running::start_command(command).await;
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], running.admin.port()));
    (running, admin)
}

async fn get_with(admin: std::net::SocketAddr, path: &str, token: Option<&str>) -> (u16, Value) {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut request = client.get(format!("http://{admin}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_views_take_the_admin_token_and_are_off_when_exposed_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let settings = SettingsFile::new().set("admin", "token", "s3cret-token");
    let (_daemon, admin) = serve_views(dir.path(), settings).await;

    // The page holds no data: served to anyone, locked to this server by its CSP.
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let page = client
        .get(format!("http://{admin}/ui"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"));
    assert!(page.text().await.unwrap().contains("/ui/app.js"));

    for view in [
        "/inventory",
        "/graph",
        "/changes",
        "/explain/sidecar-x",
        "/csds/x",
    ] {
        let (status, body) = get_with(admin, view, None).await;
        assert_eq!(status, 401, "{view}: {body}");
        let (status, _) = get_with(admin, view, Some("wrong")).await;
        assert_eq!(status, 401, "{view}");
    }
    let token = Some("s3cret-token");
    let (status, changes) = get_with(admin, "/changes", token).await;
    assert_eq!(status, 200);
    assert_eq!(changes["kept"], 100);
    let first = &changes["changes"][0];
    assert_eq!(first["kind"], "inventory", "{changes}");
    assert_eq!(first["inventory"]["clusters_added"]["names"][0], "orders");
    let (_, graph) = get_with(admin, "/graph", token).await;
    let edge = &graph["edges"][0];
    assert_eq!(
        (&edge["from"], &edge["to"], &edge["missing"]),
        (&"orders".into(), &"payments".into(), &true.into())
    );
    let (_, inventory) = get_with(admin, "/inventory", token).await;
    assert_eq!(inventory["clusters"]["orders"]["endpoints"][0]["id"], "t1");
    let (status, missing) = get_with(admin, "/explain/sidecar-x", token).await;
    assert_eq!(status, 404);
    assert!(missing["error"].as_str().unwrap().contains("sidecar-x"));

    // Listening beyond loopback with no token: the views are off, and say why.
    let dir = tempfile::tempdir().unwrap();
    let exposed = SettingsFile::new().admin_listen("0.0.0.0:0");
    let (_daemon, admin) = serve_views(dir.path(), exposed).await;
    let (status, refused) = get_with(admin, "/changes", None).await;
    assert_eq!(status, 403);
    assert!(
        refused["error"].as_str().unwrap().contains("admin.token"),
        "{refused}"
    );
}
