//! A real Envoy 1.40 process bootstrapped for ADS to a local ecs-xds, and its admin API.
//!
//! The binary comes from the project venv (`scripts/setup-test-env.sh`), or `ECS_XDS_ENVOY`.
//! Each Envoy gets its own base id and an admin port chosen by the kernel, so tests run in
//! parallel; it is killed by pid when dropped.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::process::{Child, Command};

/// xDS transport flavour of the bootstrap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdsMode {
    Sotw,
    Delta,
}

/// The real Envoy binary, or a panic telling how to install it.
pub fn envoy_binary() -> PathBuf {
    if let Ok(path) = std::env::var("ECS_XDS_ENVOY") {
        return path.into();
    }
    let lib = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/lib");
    let found = std::fs::read_dir(&lib).ok().and_then(|dirs| {
        dirs.flatten()
            .map(|d| d.path().join("site-packages/envoy/_bin/envoy"))
            .find(|p| p.exists())
    });
    found.unwrap_or_else(|| {
        panic!(
            "no Envoy binary under {}: run scripts/setup-test-env.sh (or set ECS_XDS_ENVOY)",
            lib.display()
        )
    })
}

pub struct Envoy {
    child: Child,
    pub mode: AdsMode,
    pub admin: SocketAddr,
    _dir: tempfile::TempDir,
    http: reqwest::Client,
}

static BASE_ID: AtomicU32 = AtomicU32::new(0);

impl Envoy {
    /// Starts Envoy with node id `node_id`, ADS to `xds` in `mode`; waits for its admin API.
    pub async fn start(node_id: &str, xds: SocketAddr, mode: AdsMode) -> Envoy {
        Envoy::start_with(node_id, xds, mode, None).await
    }

    /// [`Envoy::start`] with the xDS cluster's endpoints at every one of `replicas` (as an
    /// Envoy behind Cloud Map DNS naming several ecs-xds tasks sees them), round robin.
    pub async fn start_with_replicas(node_id: &str, replicas: &[SocketAddr]) -> Envoy {
        let mut config = bootstrap_json(node_id, replicas[0], AdsMode::Sotw);
        let endpoints: Vec<Value> = (replicas.iter())
            .map(|r| {
                json!({ "endpoint": { "address": { "socket_address": {
                "address": r.ip().to_string(), "port_value": r.port() } } } })
            })
            .collect();
        config["static_resources"]["clusters"][0]["load_assignment"]["endpoints"] =
            json!([{ "lb_endpoints": endpoints }]);
        Envoy::start_config(config, AdsMode::Sotw).await
    }

    /// [`Envoy::start`] for an Envoy that states `zone` (`node.locality.zone`), as the
    /// deploy/ecs bootstrap does from the task metadata.
    pub async fn start_in_zone(node_id: &str, xds: SocketAddr, zone: &str) -> Envoy {
        Envoy::start_with(node_id, xds, AdsMode::Sotw, Some(zone)).await
    }

    /// [`Envoy::start`] for an Envoy of ECS service `service` (`node.cluster`, as the
    /// deploy/ecs bootstrap sets it from the task metadata), which picks its backend set.
    pub async fn start_of_service(
        node_id: &str,
        xds: SocketAddr,
        mode: AdsMode,
        service: &str,
    ) -> Envoy {
        let mut config = bootstrap_json(node_id, xds, mode);
        config["node"]["cluster"] = json!(service);
        Envoy::start_config(config, mode).await
    }

    async fn start_with(
        node_id: &str,
        xds: SocketAddr,
        mode: AdsMode,
        zone: Option<&str>,
    ) -> Envoy {
        let mut config = bootstrap_json(node_id, xds, mode);
        if let Some(zone) = zone {
            config["node"]["locality"] = json!({ "zone": zone });
        }
        Envoy::start_config(config, mode).await
    }

    /// Starts Envoy with the bootstrap `config` (JSON), as built by [`bootstrap_json`] and edited.
    pub async fn start_config(config: Value, mode: AdsMode) -> Envoy {
        let dir = tempfile::tempdir().unwrap();
        let bootstrap = dir.path().join("bootstrap.json");
        let admin_path = dir.path().join("admin-address");
        std::fs::write(&bootstrap, config.to_string()).unwrap();
        let base_id = std::process::id() * 100 + BASE_ID.fetch_add(1, Ordering::Relaxed);
        let child = Command::new(envoy_binary())
            .arg("--config-path")
            .arg(&bootstrap)
            .arg("--admin-address-path")
            .arg(&admin_path)
            .args(["--base-id", &base_id.to_string(), "--concurrency", "1"])
            .args(["--log-level", "warning", "--drain-time-s", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(if std::env::var_os("ECS_XDS_ENVOY_LOGS").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .kill_on_drop(true)
            .spawn()
            .expect("start envoy");
        let started = Instant::now();
        let admin = loop {
            if let Ok(text) = std::fs::read_to_string(&admin_path) {
                if let Ok(addr) = text.trim().parse() {
                    break addr;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "Envoy admin never came up"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Envoy {
            child,
            mode,
            admin,
            _dir: dir,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub async fn admin_get(&self, path: &str) -> String {
        let url = format!("http://{}{path}", self.admin);
        self.http
            .get(url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn config_dump(&self) -> Value {
        serde_json::from_str(&self.admin_get("/config_dump?include_eds").await).unwrap()
    }

    /// One counter or gauge from `/stats`, 0 when absent.
    pub async fn stat(&self, name: &str) -> u64 {
        let text = self
            .admin_get(&format!("/stats?filter=^{}$", regex_escape(name)))
            .await;
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Versions Envoy reports for each xDS type: (cds, eds by cluster, lds, rds by name).
    ///
    /// Envoy's config dump leaves EDS versions empty, so those come from each cluster's
    /// `version_text` stat, the version of the last EDS update it accepted.
    pub async fn versions(&self) -> Versions {
        let mut versions = Versions::from_dump(&self.config_dump().await);
        let stats = self.admin_get("/stats?filter=version_text").await;
        for (cluster, version) in versions
            .eds
            .iter_mut()
            .filter(|_| self.mode == AdsMode::Sotw)
        {
            let prefix = format!("cluster.{cluster}.version_text: ");
            *version = stats
                .lines()
                .find_map(|l| l.strip_prefix(&prefix))
                .map(|v| v.trim().trim_matches('"').to_string())
                .unwrap_or_default();
        }
        versions
    }

    /// The names of the clusters Envoy holds, from its admin `/clusters`.
    pub async fn cluster_names(&self) -> BTreeSet<String> {
        let text = self.admin_get("/clusters").await;
        text.lines()
            .filter_map(|l| l.split("::").next())
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The endpoint addresses (IPs) Envoy holds for `cluster`, read from its admin API only.
    pub async fn endpoint_ips(&self, cluster: &str) -> BTreeSet<String> {
        let v = self.versions().await;
        (v.endpoints.iter())
            .find(|(name, _)| name == cluster)
            .map(|(_, addrs)| {
                (addrs.iter())
                    .map(|a| a.rsplit_once(':').unwrap().0.to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits until Envoy holds exactly `want` for `cluster`; returns how long it took.
    pub async fn wait_for_ips(
        &self,
        cluster: &str,
        want: &BTreeSet<String>,
        limit: Duration,
    ) -> Duration {
        let started = Instant::now();
        loop {
            let have = self.endpoint_ips(cluster).await;
            if have == *want {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < limit,
                "Envoy's {cluster} endpoints {have:?}, expected {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn wait_for<F, Fut>(&self, what: &str, limit: Duration, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let started = Instant::now();
        while !check().await {
            assert!(started.elapsed() < limit, "Envoy never reached: {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

fn regex_escape(name: &str) -> String {
    name.replace('.', "\\.")
}

/// What Envoy's `/config_dump` says it holds.
#[derive(Debug, Default, PartialEq)]
pub struct Versions {
    pub cds: String,
    pub lds: String,
    /// Cluster name → version of its ClusterLoadAssignment.
    pub eds: Vec<(String, String)>,
    /// Route config name → version.
    pub rds: Vec<(String, String)>,
    /// Cluster name → the `ip:port` of each endpoint Envoy holds for it.
    pub endpoints: Vec<(String, Vec<String>)>,
    /// Cluster names (dynamic, active).
    pub clusters: Vec<String>,
}

impl Versions {
    pub fn from_dump(dump: &Value) -> Versions {
        let mut v = Versions::default();
        for config in dump["configs"].as_array().into_iter().flatten() {
            match config["@type"].as_str().unwrap_or_default() {
                t if t.ends_with("ClustersConfigDump") => {
                    v.cds = config["version_info"].as_str().unwrap_or_default().into();
                    for c in config["dynamic_active_clusters"]
                        .as_array()
                        .into_iter()
                        .flatten()
                    {
                        v.clusters
                            .push(c["cluster"]["name"].as_str().unwrap_or_default().into());
                    }
                }
                t if t.ends_with("ListenersConfigDump") => {
                    v.lds = config["version_info"].as_str().unwrap_or_default().into();
                }
                t if t.ends_with("EndpointsConfigDump") => {
                    for e in config["dynamic_endpoint_configs"]
                        .as_array()
                        .into_iter()
                        .flatten()
                    {
                        let cla = &e["endpoint_config"];
                        let name: String = cla["cluster_name"].as_str().unwrap_or_default().into();
                        let mut addrs: Vec<String> = cla["endpoints"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .flat_map(|l| l["lb_endpoints"].as_array().into_iter().flatten())
                            .map(|lb| {
                                let sa = &lb["endpoint"]["address"]["socket_address"];
                                format!(
                                    "{}:{}",
                                    sa["address"].as_str().unwrap_or_default(),
                                    sa["port_value"]
                                )
                            })
                            .collect();
                        addrs.sort();
                        v.endpoints.push((name.clone(), addrs));
                        v.eds.push((name, String::new()));
                    }
                }
                t if t.ends_with("RoutesConfigDump") => {
                    for r in config["dynamic_route_configs"]
                        .as_array()
                        .into_iter()
                        .flatten()
                    {
                        v.rds.push((
                            r["route_config"]["name"]
                                .as_str()
                                .unwrap_or_default()
                                .into(),
                            r["version_info"].as_str().unwrap_or_default().into(),
                        ));
                    }
                }
                _ => {}
            }
        }
        v.eds.sort();
        v.endpoints.sort();
        v.rds.sort();
        v.clusters.sort();
        v
    }
}

/// A bootstrap with ADS for CDS and LDS to `xds`, nothing static but the xDS cluster itself.
pub fn bootstrap_json(node_id: &str, xds: SocketAddr, mode: AdsMode) -> Value {
    let api_type = match mode {
        AdsMode::Sotw => "GRPC",
        AdsMode::Delta => "DELTA_GRPC",
    };
    json!({
        "node": { "id": node_id, "cluster": "ecs-xds-test" },
        "admin": { "address": { "socket_address": { "address": "127.0.0.1", "port_value": 0 } } },
        "dynamic_resources": {
            "ads_config": {
                "api_type": api_type,
                "transport_api_version": "V3",
                "set_node_on_first_message_only": true,
                "grpc_services": [{ "envoy_grpc": { "cluster_name": "ecs-xds" } }]
            },
            "cds_config": { "ads": {}, "resource_api_version": "V3" },
            "lds_config": { "ads": {}, "resource_api_version": "V3" }
        },
        "static_resources": {
            "clusters": [{
                "name": "ecs-xds",
                "type": "STATIC",
                "connect_timeout": "1s",
                "typed_extension_protocol_options": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "explicit_http_config": { "http2_protocol_options": {} }
                    }
                },
                "load_assignment": {
                    "cluster_name": "ecs-xds",
                    "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": {
                        "socket_address": { "address": xds.ip().to_string(), "port_value": xds.port() }
                    }}}]}]
                }
            }]
        }
    })
}

/// The transport socket of an Envoy's xDS cluster on TLS to ecs-xds of `trust_domain` (its
/// SPIFFE ID checked, its certificate against `bundle`). With `certs`, an agent's directory,
/// the workload certificate and the bundle come from its SDS files, which Envoy re-reads on
/// each renewal; without, the Envoy presents no certificate.
pub fn xds_tls(bundle: &Path, certs: Option<&Path>, trust_domain: &str) -> Value {
    let sds = |file: &Path, name: &str| {
        json!({ "name": name, "sds_config": {
            "path_config_source": { "path": file.display().to_string() },
            "resource_api_version": "V3" } })
    };
    let server_id = json!([{ "san_type": "URI", "matcher": {
        "exact": format!("spiffe://{trust_domain}/ecs-xds") } }]);
    let mut common = match certs {
        Some(dir) => json!({
            "tls_certificate_sds_secret_configs": [sds(&dir.join("tls_certificate.yaml"), "workload")],
            "combined_validation_context": {
                "default_validation_context": { "match_typed_subject_alt_names": server_id },
                "validation_context_sds_secret_config": sds(&dir.join("validation_context.yaml"), "trust_bundle")
            }
        }),
        None => json!({ "validation_context": {
            "trusted_ca": { "filename": bundle.display().to_string() },
            "match_typed_subject_alt_names": server_id } }),
    };
    common["alpn_protocols"] = json!(["h2"]);
    json!({ "name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "sni": "localhost",
        "common_tls_context": common } })
}

/// A free TCP port on 127.0.0.1 (bound, read, released).
/// A port free now, from below Linux's ephemeral range (32768 to 60999). Connections the tests
/// make take their local ports from that range, so with ports from it one of them could take
/// the port between now and the moment a test's server binds it (seen in CI as an Envoy whose
/// ingress listener could not bind). Each test process has its own stretch of ports.
pub fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    const STRETCH: u16 = 1500;
    let base = 20000 + (std::process::id() % 8) as u16 * STRETCH;
    for _ in 0..STRETCH {
        let port = base + NEXT.fetch_add(1, Ordering::Relaxed) % STRETCH;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port from {base} to {}", base + STRETCH - 1);
}
