//! Mutual TLS between services and authorization from tags, with real parts: three services
//! (web, api, orders), each an app on 127.0.0.1 behind its own real Envoy 1.40 holding the
//! certificate its real agent got from ecs-xds (moto's STS and ECS attest the seeded tasks);
//! a second ecs-xds serves the mesh from a saved inventory whose endpoints are those Envoys'
//! ingress ports (moto's tasks have 10.x addresses, which must get no traffic), and follows
//! each change to the file the way it would follow a retag.
//!
//! Each Envoy has a node type of its own (`web.toml`, ...) only because all three share one
//! machine: each has its own certificate directory and ports. In ECS every task has its own
//! `/certs`, and one `sidecar` template serves them all.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use axum::http::HeaderMap;
use ecs_xds::inventory::{
    AllowFrom, AuthzMode, Cluster, Endpoint, Health, Inventory, Locality, MtlsMode, Security,
    Source, Workload,
};
use tokio::sync::oneshot;

use crate::identity_e2e::{Agent, Mesh, TRUST_DOMAIN};
use crate::support::daemon::{ecs_xds_command, Running};
use crate::support::envoy::{free_port, AdsMode, Envoy};
use crate::support::settings::SettingsFile;

const SERVICES: [&str; 3] = ["web", "api", "orders"];

/// An app that answers `NAME xfcc=<x-forwarded-client-cert>`: who its Envoy says called.
struct App {
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

impl App {
    async fn start(name: &'static str) -> App {
        let app = axum::Router::new().fallback(move |headers: HeaderMap| async move {
            let xfcc = headers.get("x-forwarded-client-cert");
            let xfcc = xfcc.and_then(|v| v.to_str().ok()).unwrap_or("none");
            format!("{name} xfcc={xfcc}")
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let server = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = stopped.await;
            });
            let _ = server.await;
        });
        App { addr, _stop: stop }
    }
}

/// One service of the mesh: its app, its Envoy's ports and certificates, its agent.
struct Service {
    name: &'static str,
    task: String,
    certs: PathBuf,
    app: App,
    egress: u16,
    ingress: u16,
    _agent: Agent,
}

/// A node type of its own for `service`: egress to the generated routes, an ingress listener
/// to its app, `[mtls]` with its certificate directory.
fn template(service: &Service, mode: &str) -> String {
    let hcm = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
    let router = r#"{ name = "envoy.filters.http.router", typed_config = { "@type" = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" } }"#;
    format!(
        r#"
[mtls]
mode = "{mode}"
trust_domain = "{TRUST_DOMAIN}"
certificate_dir = "{certs}"

[cluster_defaults]
connect_timeout = "1s"

[generated_routes]
name = "egress"

[[listeners]]
name = "egress"
address = {{ socket_address = {{ address = "127.0.0.1", port_value = {egress} }} }}
[[listeners.filter_chains]]
[[listeners.filter_chains.filters]]
name = "envoy.filters.network.http_connection_manager"
[listeners.filter_chains.filters.typed_config]
"@type" = "{hcm}"
stat_prefix = "egress"
rds = {{ route_config_name = "egress", config_source = {{ ads = {{}}, resource_api_version = "V3" }} }}
http_filters = [{router}]

[[listeners]]
name = "ingress"
address = {{ socket_address = {{ address = "127.0.0.1", port_value = {ingress} }} }}
[[listeners.filter_chains]]
[[listeners.filter_chains.filters]]
name = "envoy.filters.network.http_connection_manager"
[listeners.filter_chains.filters.typed_config]
"@type" = "{hcm}"
stat_prefix = "ingress"
route_config = {{ name = "local_app", virtual_hosts = [{{ name = "local_app", domains = ["*"], routes = [{{ match = {{ prefix = "/" }}, route = {{ cluster = "local_app" }} }}] }}] }}
http_filters = [{router}]

[[clusters]]
name = "local_app"
type = "STATIC"
connect_timeout = "0.25s"
load_assignment = {{ cluster_name = "local_app", endpoints = [{{ lb_endpoints = [{{ endpoint = {{ address = {{ socket_address = {{ address = "127.0.0.1", port_value = {app} }} }} }} }}] }}] }}
"#,
        certs = service.certs.display(),
        egress = service.egress,
        ingress = service.ingress,
        app = service.app.addr.port(),
    )
}

/// The inventory entry of `service`, reached at `ingress` (its Envoy's, or another's).
fn cluster(service: &Service, ingress: u16, security: Security) -> Cluster {
    Cluster {
        name: service.name.to_owned(),
        source: Source::Ecs {
            ecs_cluster: "demo".into(),
            service: service.name.to_owned(),
        },
        port_name: None,
        overrides: Default::default(),
        route: Default::default(),
        backends: None,
        security: Security {
            workload: Workload::of_task_arn(&service.task),
            ..security
        },
        endpoints: vec![Endpoint {
            address: "127.0.0.1".into(),
            port: ingress,
            health: Health::Healthy,
            locality: Locality {
                region: "us-east-1".into(),
                zone: None,
            },
            weight: 1,
            id: service.task.rsplit('/').next().unwrap().to_owned(),
            revision: Some(1),
            deployment: None,
        }],
    }
}

fn allow_from(names: &[&str]) -> Security {
    Security {
        allow_from: Some(AllowFrom::Services(
            names.iter().map(|n| n.to_string()).collect(),
        )),
        ..Default::default()
    }
}

/// The whole mesh: the identity side (moto, ecs-xds with `[identity]`), the three services
/// with their Envoys, and the ecs-xds serving them from `inventory.json`.
struct Fleet {
    _mesh: Mesh,
    dir: tempfile::TempDir,
    services: Vec<Service>,
    envoys: Vec<Envoy>,
    /// The ecs-xds serving the saved inventory (the Envoys' xDS server).
    xds: Option<Running>,
}

impl Fleet {
    async fn start(mode: &str, orders: Security) -> Fleet {
        let mesh = Mesh::start("").await;
        let mut services = Vec::new();
        for name in SERVICES {
            let (task, certs, agent) = mesh.certified(name, &format!("certs-{name}")).await;
            services.push(Service {
                name,
                task,
                certs,
                app: App::start(name).await,
                egress: free_port(),
                ingress: free_port(),
                _agent: agent,
            });
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("templates")).unwrap();
        for service in &services {
            let file = dir.path().join(format!("templates/{}.toml", service.name));
            std::fs::write(file, template(service, mode)).unwrap();
        }
        let mut fleet = Fleet {
            _mesh: mesh,
            dir,
            services,
            envoys: Vec::new(),
            xds: None,
        };
        fleet.write(&fleet.inventory(orders, None));
        let config = SettingsFile::new().write(fleet.dir.path());
        let mut command = ecs_xds_command(&config);
        command
            .arg("--inventory")
            .arg(fleet.dir.path().join("inventory.json"));
        let xds = Running::start_command(command).await;
        for name in SERVICES {
            let node = format!("{name}-1");
            let envoy = Envoy::start_of_service(&node, xds.xds, AdsMode::Sotw, name).await;
            fleet.envoys.push(envoy);
        }
        fleet.xds = Some(xds);
        fleet
    }

    fn service(&self, name: &str) -> &Service {
        self.services.iter().find(|s| s.name == name).unwrap()
    }

    fn envoy(&self, name: &str) -> &Envoy {
        &self.envoys[SERVICES.iter().position(|s| *s == name).unwrap()]
    }

    /// The mesh with `orders` as tagged; its endpoint is `orders_at` (default: its own Envoy).
    fn inventory(&self, orders: Security, orders_at: Option<u16>) -> Inventory {
        let clusters = self.services.iter().map(|s| {
            let (at, security) = match s.name {
                "orders" => (orders_at.unwrap_or(s.ingress), orders.clone()),
                _ => (s.ingress, Security::default()),
            };
            (s.name.to_owned(), cluster(s, at, security))
        });
        Inventory {
            clusters: clusters.collect(),
            warnings: Vec::new(),
            callers: Default::default(),
        }
    }

    /// Replaces the saved inventory in one rename (the daemon follows the file).
    fn write(&self, inventory: &Inventory) {
        let path = self.dir.path().join("inventory.json");
        let fresh = self.dir.path().join("inventory.json.new");
        std::fs::write(&fresh, serde_json::to_string(inventory).unwrap()).unwrap();
        std::fs::rename(fresh, path).unwrap();
    }

    /// `caller`'s app calling `callee` through `caller`'s Envoy: (status, body).
    async fn call(&self, caller: &str, callee: &str) -> (u16, String) {
        let egress = self.service(caller).egress;
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let response = http
            .get(format!("http://127.0.0.1:{egress}/"))
            .header("host", callee)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }

    /// Waits until `caller` → `callee` answers `status`, then returns the body.
    async fn wait_for_call(&self, caller: &str, callee: &str, status: u16) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (got, body) = self.call(caller, callee).await;
            if got == status {
                return body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{caller} → {callee}: {got} {body:?}, waiting for {status}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A plaintext client straight to `service`'s ingress (no certificate): the status, or
    /// `None` when the connection is refused.
    async fn plaintext(&self, service: &str) -> Option<u16> {
        let ingress = self.service(service).ingress;
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let sent = http
            .get(format!("http://127.0.0.1:{ingress}/"))
            .send()
            .await;
        sent.ok().map(|r| r.status().as_u16())
    }

    fn spiffe_id(&self, service: &str) -> String {
        let w = Workload::of_task_arn(&self.service(service).task).unwrap();
        format!(
            "spiffe://{TRUST_DOMAIN}/ecs/{}/{}/{}/{service}",
            w.account, w.region, w.ecs_cluster
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_may_call_orders_over_mtls_api_may_not_until_retagged() {
    let fleet = Fleet::start("strict", allow_from(&["web"])).await;

    // web → orders: 200 over mutual TLS; orders' app is told web's SPIFFE ID by its Envoy.
    let body = fleet.wait_for_call("web", "orders", 200).await;
    let web_id = fleet.spiffe_id("web");
    assert!(
        body.starts_with("orders xfcc=") && body.contains(&format!("URI={web_id}")),
        "{body}"
    );
    let handshakes = fleet
        .envoy("web")
        .stat("cluster.orders.ssl.handshake")
        .await;
    assert!(handshakes >= 1, "web's Envoy reached orders over TLS");

    // api → orders: denied by orders' RBAC; api → web (no allow-from) is fine.
    let (status, body) = fleet.call("api", "orders").await;
    assert_eq!(status, 403, "{body}");
    let denied = fleet.envoy("orders").stat("http.ingress.rbac.denied").await;
    assert!(denied >= 1, "orders' Envoy counted the denial");
    fleet.wait_for_call("api", "web", 200).await;

    // A plaintext client is refused in strict mode.
    assert_eq!(fleet.plaintext("orders").await, None);

    // authz = shadow: api passes, and the would-be denial is counted.
    let shadow = Security {
        authz: Some(AuthzMode::Shadow),
        ..allow_from(&["web"])
    };
    fleet.write(&fleet.inventory(shadow, None));
    fleet.wait_for_call("api", "orders", 200).await;
    let shadow_denied = fleet
        .envoy("orders")
        .stat("http.ingress.rbac.shadow_denied")
        .await;
    assert!(shadow_denied >= 1, "the shadow denial is in orders' stats");

    // allow-from = "web api", enforced: api passes with no restart.
    fleet.write(&fleet.inventory(allow_from(&["web", "api"]), None));
    let denied_before = fleet.envoy("orders").stat("http.ingress.rbac.denied").await;
    fleet.wait_for_call("api", "orders", 200).await;
    let (status, _) = fleet.call("api", "orders").await;
    assert_eq!(status, 200);
    let denied_after = fleet.envoy("orders").stat("http.ingress.rbac.denied").await;
    assert_eq!(denied_after, denied_before, "nothing denied once allowed");

    // mtls = permissive on orders: a plaintext client is served, web still uses TLS.
    let permissive = Security {
        mtls: Some(MtlsMode::Permissive),
        ..Default::default()
    };
    fleet.write(&fleet.inventory(permissive, None));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while fleet.plaintext("orders").await != Some(200) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "plaintext not served in permissive"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let before = fleet
        .envoy("web")
        .stat("cluster.orders.ssl.handshake")
        .await;
    let body = fleet.wait_for_call("web", "orders", 200).await;
    assert!(body.contains(&format!("URI={web_id}")), "{body}");
    let after = fleet
        .envoy("web")
        .stat("cluster.orders.ssl.handshake")
        .await;
    assert!(after >= before, "web → orders stays TLS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envoy_with_another_services_certificate_cannot_pose_as_orders() {
    let fleet = Fleet::start("strict", Security::default()).await;
    fleet.wait_for_call("web", "orders", 200).await;
    // orders' one endpoint is now api's Envoy (an address reused by another task).
    let api_ingress = fleet.service("api").ingress;
    fleet.write(&fleet.inventory(Security::default(), Some(api_ingress)));
    let body = fleet.wait_for_call("web", "orders", 503).await;
    let san_failures = fleet
        .envoy("web")
        .stat("cluster.orders.ssl.fail_verify_san")
        .await;
    assert!(
        san_failures >= 1,
        "web's Envoy refused api's certificate: {body}"
    );
}
