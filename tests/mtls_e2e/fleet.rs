//! The mesh the mTLS tests run: three services, their apps, Envoys and agents, and the
//! ecs-xds that serves them from a saved inventory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ecs_xds::inventory::{
    AllowFrom, Cluster, Endpoint, Health, Inventory, Locality, Security, Source, Workload,
};

use crate::identity_e2e::{wait_for_certificate, Agent, Mesh, SERVER_ID, TRUST_DOMAIN};
use crate::support::backend::Backend;
use crate::support::daemon::{ecs_xds_command, Running};
use crate::support::envoy::{free_port, AdsMode, Envoy};
use crate::support::settings::SettingsFile;
use crate::support::templates::{mtls_sidecar, MtlsSidecar};

const SERVICES: [&str; 3] = ["web", "api", "orders"];

/// One service of the mesh: its app, its Envoy's ports and certificates, its agent.
pub(crate) struct Service {
    pub(crate) name: &'static str,
    pub(crate) task: String,
    pub(crate) certs: PathBuf,
    pub(crate) app: Backend,
    pub(crate) egress: u16,
    pub(crate) ingress: u16,
    pub(crate) _agent: Agent,
}

/// `[cluster_defaults]` TOML that makes every upstream connection carry one request: each
/// request through an egress is a new TLS handshake with the certificates of that moment.
pub(crate) const ONE_REQUEST_PER_CONNECTION: &str = r#"
[cluster_defaults.typed_extension_protocol_options."envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
"@type" = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
common_http_protocol_options = { max_requests_per_connection = 1 }
explicit_http_config = { http_protocol_options = {} }
"#;

/// A node type of its own for `service`: egress to the generated routes, an ingress listener
/// to its app, `[mtls]` with its certificate directory, would-be denials reported to ecs-xds
/// through the bootstrap's cluster `ecs-xds`; `defaults` (TOML tables under
/// `[cluster_defaults]`) added to the clusters' defaults.
pub(crate) fn template(service: &Service, mode: &str, defaults: &str) -> String {
    mtls_sidecar(&MtlsSidecar {
        mode,
        trust_domain: TRUST_DOMAIN,
        certs: &service.certs,
        egress: service.egress,
        ingress: service.ingress,
        app: service.app.addr.port(),
        defaults,
        authz: r#"shadow_log_cluster = "ecs-xds""#,
    })
}

/// The inventory entry of `service`, reached at `ingress` (its Envoy's, or another's).
pub(crate) fn cluster(service: &Service, ingress: u16, security: Security) -> Cluster {
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

pub(crate) fn allow_from(names: &[&str]) -> Security {
    Security {
        allow_from: Some(AllowFrom::Services(
            names.iter().map(|n| n.to_string()).collect(),
        )),
        ..Default::default()
    }
}

/// The whole mesh: the identity side (moto, ecs-xds with `[identity]`), the three services
/// with their Envoys, and the ecs-xds serving them from `inventory.json`.
pub(crate) struct Fleet {
    pub(crate) mesh: Mesh,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) services: Vec<Service>,
    pub(crate) envoys: Vec<Envoy>,
    /// The ecs-xds serving the saved inventory (the Envoys' xDS server).
    pub(crate) xds: Option<Running>,
}

impl Fleet {
    /// A fleet whose identity ecs-xds has `identity` (TOML lines) in its `[identity]`.
    pub(crate) async fn start(mode: &str, orders: Security, identity: &str) -> Fleet {
        Fleet::start_on(Mesh::start(identity).await, None, mode, orders, "").await
    }

    /// A fleet on `mesh`, whose agents trust `agents_trust` for the identity endpoint's
    /// certificate (default: the mesh's bundle), with `defaults` added to every node type's
    /// `[cluster_defaults]`.
    pub(crate) async fn start_on(
        mesh: Mesh,
        agents_trust: Option<&Path>,
        mode: &str,
        orders: Security,
        defaults: &str,
    ) -> Fleet {
        let trust = agents_trust.map_or_else(|| mesh.bundle(), Path::to_path_buf);
        let mut services = Vec::new();
        for name in SERVICES {
            let task = mesh.task(name);
            let creds = mesh.task_credentials(&mesh.role(name), &task).await;
            let certs = mesh.dir.path().join(format!("certs-{name}"));
            let agent = mesh.agent_with(&creds, &task, &certs, SERVER_ID, &trust);
            wait_for_certificate(&certs, &agent).await;
            services.push(Service {
                name,
                task,
                certs,
                app: Backend::start_telling_caller(name).await,
                egress: free_port(),
                ingress: free_port(),
                _agent: agent,
            });
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("templates")).unwrap();
        for service in &services {
            let file = dir.path().join(format!("templates/{}.toml", service.name));
            std::fs::write(file, template(service, mode, defaults)).unwrap();
        }
        let mut fleet = Fleet {
            mesh,
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

    pub(crate) fn service(&self, name: &str) -> &Service {
        self.services.iter().find(|s| s.name == name).unwrap()
    }

    pub(crate) fn envoy(&self, name: &str) -> &Envoy {
        &self.envoys[SERVICES.iter().position(|s| *s == name).unwrap()]
    }

    /// The mesh with `orders` as tagged; its endpoint is `orders_at` (default: its own Envoy).
    pub(crate) fn inventory(&self, orders: Security, orders_at: Option<u16>) -> Inventory {
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
    pub(crate) fn write(&self, inventory: &Inventory) {
        let path = self.dir.path().join("inventory.json");
        let fresh = self.dir.path().join("inventory.json.new");
        std::fs::write(&fresh, serde_json::to_string(inventory).unwrap()).unwrap();
        std::fs::rename(fresh, path).unwrap();
    }

    /// [`Fleet::write`], then waits until ecs-xds has read it (its log says so) and a second
    /// more, for it to reach the Envoys if it changed anything.
    pub(crate) async fn write_and_wait(&self, inventory: &Inventory) {
        let log = &self.xds.as_ref().expect("started").log;
        let served = || {
            let log = log.lock().unwrap();
            log.matches("the saved inventory changed").count()
        };
        let before = served();
        self.write(inventory);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while served() == before {
            assert!(
                tokio::time::Instant::now() < deadline,
                "ecs-xds did not read the inventory"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    /// What ecs-xds's `/nodes` shows for `service`'s Envoy.
    pub(crate) async fn node_shown(&self, service: &str) -> serde_json::Value {
        let admin = self.xds.as_ref().expect("started").admin;
        let (_, body) = crate::support::http::get(admin, "/nodes").await;
        let nodes: serde_json::Value = serde_json::from_str(&body).unwrap();
        let node_id = format!("{service}-1");
        let nodes = nodes["nodes"].as_array().unwrap();
        let node = nodes.iter().find(|n| n["node_id"] == node_id.as_str());
        node.unwrap_or_else(|| panic!("{node_id} in {body}"))
            .clone()
    }

    /// The `ingress` policy ecs-xds's `/nodes` shows for `service`'s Envoy (null: the node
    /// type's own).
    pub(crate) async fn ingress_shown(&self, service: &str) -> serde_json::Value {
        self.node_shown(service).await["ingress"].clone()
    }

    /// Waits (Envoy's gRPC access logger sends every second) until ecs-xds's `/nodes` shows
    /// a would-be denial of `caller` for `service`'s Envoy; returns its `shadow_denials`.
    pub(crate) async fn wait_for_shadow_denial(
        &self,
        service: &str,
        caller: &str,
    ) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let denials = self.node_shown(service).await["shadow_denials"].clone();
            if denials[caller].as_u64().is_some_and(|n| n >= 1) {
                return denials;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no shadow denial of {caller} shown for {service}: {denials}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `caller`'s app calling `callee` through `caller`'s Envoy: (status, body).
    pub(crate) async fn call(&self, caller: &str, callee: &str) -> (u16, String) {
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
    pub(crate) async fn wait_for_call(&self, caller: &str, callee: &str, status: u16) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (got, body) = self.call(caller, callee).await;
            if got == status {
                return body;
            }
            if tokio::time::Instant::now() >= deadline {
                // What tells a refused listener (a port taken) from a failed handshake.
                let (from, to) = (self.envoy(caller), self.envoy(callee));
                let rejected = "listener_manager.lds.update_rejected";
                let facts = [
                    (caller, rejected.to_owned(), from.stat(rejected).await),
                    (callee, rejected.to_owned(), to.stat(rejected).await),
                    (
                        caller,
                        format!("cluster.{callee}.upstream_cx_connect_fail"),
                        from.stat(&format!("cluster.{callee}.upstream_cx_connect_fail"))
                            .await,
                    ),
                    (
                        caller,
                        format!("cluster.{callee}.ssl.connection_error"),
                        from.stat(&format!("cluster.{callee}.ssl.connection_error"))
                            .await,
                    ),
                ];
                panic!("{caller} → {callee}: {got} {body:?}, waiting for {status}; {facts:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A plaintext client straight to `service`'s ingress (no certificate): the status, or
    /// `None` when the connection is refused.
    pub(crate) async fn plaintext(&self, service: &str) -> Option<u16> {
        let ingress = self.service(service).ingress;
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let sent = http
            .get(format!("http://127.0.0.1:{ingress}/"))
            .send()
            .await;
        sent.ok().map(|r| r.status().as_u16())
    }

    pub(crate) fn spiffe_id(&self, service: &str) -> String {
        let w = Workload::of_task_arn(&self.service(service).task).unwrap();
        format!(
            "spiffe://{TRUST_DOMAIN}/ecs/{}/{}/{}/{service}",
            w.account, w.region, w.ecs_cluster
        )
    }
}
