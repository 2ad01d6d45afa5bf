//! mtls-load: what mutual TLS between services costs on this machine: the latency it adds to a
//! request, and the memory its TLS contexts take in an Envoy.
//!
//! ```text
//! cargo run --release --example mtls-load -- latency --requests 2000
//! cargo run --release --example mtls-load -- envoy-memory --clusters 100
//! cargo run --release --example mtls-load -- all
//! ```
//!
//! Certificates are issued in this process by the library's CA (`identity::ca`, as `ecs-xds ca
//! init` makes it) from a P-256 key and CSR made as the agent makes them, and written with the
//! agent's own writer (`agent::files`: the renewal directory, the stable names and the two SDS
//! files), so Envoy reads exactly what an agent writes. The xDS server is an ecs-xds daemon in
//! this process serving a saved inventory (what `ecs-xds run --inventory FILE` does); the
//! Envoys are real Envoy 1.40 processes (one worker thread each). Nothing leaves 127.0.0.1.
//!
//! **latency**: a client Envoy (node type `web`) and a server Envoy (`orders`) in front of an
//! HTTP backend on 127.0.0.1; each request goes to web's egress listener (`Host: orders`), then
//! to orders' ingress listener (the inventory's one endpoint of `orders`), then to the backend.
//! For `mode = "off"` (plaintext) and `mode = "strict"` (mutual TLS, the callee's SPIFFE ID
//! checked), two phases of `--requests` sequential requests each, after a warm-up, each with a
//! fresh daemon and Envoys:
//! - `kept-alive`: web's connection to orders is kept (a warm pool: no handshake per request);
//! - `new-connection`: the template's `[cluster_defaults]` sets `max_requests_per_connection =
//!   1`, so web opens a new connection to orders (with `strict`, a full TLS handshake) per
//!   request; checked by web's `cluster.orders.upstream_cx_total` growing by the request count.
//!   `tls_resumed` counts the handshakes that resumed a session (`ssl.session_reused`: the
//!   UpstreamTlsContext ecs-xds synthesizes leaves Envoy's default session cache on).
//!
//! The client (this process) keeps its one connection to web's egress in every phase. Prints
//! p50 and p99 per phase (`mtls-load latency mode=... phase=... p50_ms=... p99_ms=...`), the
//! same requests straight to the backend as a floor (`mode=direct`), and what mTLS adds over
//! plaintext (`mtls-load latency added phase=...`: absolute and as a ratio).
//!
//! **envoy-memory**: one Envoy served `--clusters` discovered clusters (services with 3 tasks
//! each at 127.x addresses nothing listens on; no traffic), each of an ECS workload: without
//! `[mtls]` (`tls=none`), with `mode = "off"` (`tls=off`) and with `mode = "strict"`
//! (`tls=strict`: every cluster has its UpstreamTlsContext). Once Envoy holds every cluster and
//! 3 s have passed, prints its RSS and `server.memory_allocated`
//! (`mtls-load envoy-memory tls=... clusters=... envoy_rss_mb=... envoy_heap_mb=...`), then the
//! ratios of `strict` to `none` and the memory added per cluster.

#[allow(dead_code)]
#[path = "../tests/support/backend.rs"]
mod backend;
#[allow(dead_code)]
#[path = "../tests/support/envoy.rs"]
mod envoy;
#[path = "../tests/support/moto.rs"]
mod moto;
#[path = "../tests/support/proc.rs"]
mod proc_stats;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use clap::{Parser, Subcommand};
use ecs_xds::agent::files;
use ecs_xds::daemon::Daemon;
use ecs_xds::identity::ca::{self, Ca};
use ecs_xds::inventory::{
    Cluster, Endpoint, Health, Inventory, Locality, Security, Source, Workload,
};
use ecs_xds::spiffe::SpiffeId;
use envoy::{free_port, AdsMode, Envoy};
use proc_stats::rss_kb;
use tokio::sync::{mpsc, oneshot};

const TRUST_DOMAIN: &str = "mesh.test";
const ACCOUNT: &str = "111122223333";
const REGION: &str = "us-east-1";
const ECS_CLUSTER: &str = "bench";
/// Requests before the clock starts (pools, caches, the first handshake).
const WARMUP: usize = 200;

const HCM: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const ROUTER: &str = r#"{ name = "envoy.filters.http.router", typed_config = { "@type" = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" } }"#;
/// One request per upstream connection, for every discovered cluster.
const ONE_REQUEST_PER_CONNECTION: &str = r#"
[cluster_defaults.typed_extension_protocol_options."envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
"@type" = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
common_http_protocol_options = { max_requests_per_connection = 1 }
explicit_http_config = { http_protocol_options = {} }
"#;

#[derive(Debug, Parser)]
struct Args {
    #[command(subcommand)]
    measure: Measure,
}

#[derive(Debug, Subcommand)]
enum Measure {
    /// Request latency through two Envoys, plaintext against mutual TLS.
    Latency {
        #[arg(long, default_value_t = 2000)]
        requests: usize,
    },
    /// Envoy's memory with discovered clusters with and without TLS contexts.
    EnvoyMemory {
        #[arg(long, default_value_t = 100)]
        clusters: usize,
    },
    /// Both.
    All {
        #[arg(long, default_value_t = 2000)]
        requests: usize,
        #[arg(long, default_value_t = 100)]
        clusters: usize,
    },
}

fn main() {
    // Before the runtime starts any thread: dummy AWS credentials, no metadata probing.
    moto::use_emulator_environment();
    let _ = rlimit::increase_nofile_limit(65_536);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let ca = mesh_ca();
    match Args::parse().measure {
        Measure::Latency { requests } => runtime.block_on(latency(&ca, requests)),
        Measure::EnvoyMemory { clusters } => runtime.block_on(envoy_memory(&ca, clusters)),
        Measure::All { requests, clusters } => runtime.block_on(async {
            latency(&ca, requests).await;
            envoy_memory(&ca, clusters).await;
        }),
    }
}

/// The mesh's CA: a root and an intermediate, as `ecs-xds ca init` makes them.
fn mesh_ca() -> Ca {
    let made = ca::init(TRUST_DOMAIN, SystemTime::now()).expect("a new CA");
    Ca::from_pem(
        &made.intermediate_key_pem,
        &made.intermediate_pem,
        &made.root_pem,
        TRUST_DOMAIN,
    )
    .expect("load the new CA")
}

/// `service`'s certificate in `dir`, as its agent gets and writes it: a fresh P-256 key, a CSR
/// naming nothing, the certificate the CA issues for the service's SPIFFE ID, the SDS files.
fn certify(ca: &Ca, service: &str, dir: &Path) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("a key");
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = (params.serialize_request(&key))
        .and_then(|csr| csr.pem())
        .expect("a CSR");
    let id = SpiffeId::new(TRUST_DOMAIN, ACCOUNT, REGION, ECS_CLUSTER, service).unwrap();
    let hour = Duration::from_secs(3600);
    let issued = ca
        .issue_workload(&csr, &id, None, hour, SystemTime::now())
        .expect("a certificate");
    let written = files::Written {
        chain_pem: &issued.chain_pem,
        key_pem: &key.serialize_pem(),
        bundle_pem: ca.bundle_pem(),
    };
    files::write(dir, &written, 0o600).expect("write the certificate");
    files::write_sds_files(dir).expect("write the SDS files");
}

/// What a node type's template is made of.
struct Node<'a> {
    /// `[mtls]`'s mode; `None`: no `[mtls]` section.
    mode: Option<&'a str>,
    certs: &'a Path,
    egress: u16,
    /// The ingress listener's port and the app (`local_app`) it forwards to.
    ingress: Option<(u16, SocketAddr)>,
    /// One request per connection to each discovered cluster.
    new_connection: bool,
}

fn template(node: &Node) -> String {
    let mut text = String::new();
    if let Some(mode) = node.mode {
        text += &format!(
            "[mtls]\nmode = \"{mode}\"\ntrust_domain = \"{TRUST_DOMAIN}\"\ncertificate_dir = \"{}\"\n\n",
            node.certs.display()
        );
    }
    text += "[cluster_defaults]\nconnect_timeout = \"1s\"\n";
    if node.new_connection {
        text += ONE_REQUEST_PER_CONNECTION;
    }
    text += "\n[generated_routes]\nname = \"egress\"\n";
    let rds = r#"rds = { route_config_name = "egress", config_source = { ads = {}, resource_api_version = "V3" } }"#;
    text += &listener("egress", node.egress, rds);
    if let Some((port, app)) = node.ingress {
        let routes = r#"route_config = { name = "local_app", virtual_hosts = [{ name = "local_app", domains = ["*"], routes = [{ match = { prefix = "/" }, route = { cluster = "local_app" } }] }] }"#;
        text += &listener("ingress", port, routes);
        text += &format!(
            r#"
[[clusters]]
name = "local_app"
type = "STATIC"
connect_timeout = "0.25s"
load_assignment = {{ cluster_name = "local_app", endpoints = [{{ lb_endpoints = [{{ endpoint = {{ address = {{ socket_address = {{ address = "{}", port_value = {} }} }} }} }}] }}] }}
"#,
            app.ip(),
            app.port()
        );
    }
    text
}

/// A listener on 127.0.0.1:`port` with one HTTP connection manager routing by `routes`.
fn listener(name: &str, port: u16, routes: &str) -> String {
    format!(
        r#"
[[listeners]]
name = "{name}"
address = {{ socket_address = {{ address = "127.0.0.1", port_value = {port} }} }}
[[listeners.filter_chains]]
[[listeners.filter_chains.filters]]
name = "envoy.filters.network.http_connection_manager"
[listeners.filter_chains.filters.typed_config]
"@type" = "{HCM}"
stat_prefix = "{name}"
{routes}
http_filters = [{ROUTER}]
"#
    )
}

/// A discovered ECS service of the bench cluster (its workload set, so its SPIFFE ID is known)
/// with one task at each of `endpoints`.
fn discovered(service: &str, endpoints: &[(String, u16)]) -> (String, Cluster) {
    let endpoints = endpoints
        .iter()
        .enumerate()
        .map(|(i, (address, port))| Endpoint {
            address: address.clone(),
            port: *port,
            health: Health::Healthy,
            locality: Locality {
                region: REGION.into(),
                zone: Some(format!("{REGION}{}", ["a", "b", "c"][i % 3])),
            },
            weight: 1,
            id: format!("{service}-task-{i}"),
            revision: Some(1),
            deployment: None,
        });
    let workload = Workload {
        account: ACCOUNT.into(),
        region: REGION.into(),
        ecs_cluster: ECS_CLUSTER.into(),
    };
    let cluster = Cluster {
        name: service.to_owned(),
        source: Source::Ecs {
            ecs_cluster: ECS_CLUSTER.into(),
            service: service.to_owned(),
        },
        port_name: None,
        overrides: Default::default(),
        route: Default::default(),
        backends: None,
        security: Security {
            workload: Some(workload),
            ..Default::default()
        },
        endpoints: endpoints.collect(),
    };
    (service.to_owned(), cluster)
}

fn inventory(clusters: impl IntoIterator<Item = (String, Cluster)>) -> Inventory {
    Inventory {
        clusters: clusters.into_iter().collect(),
        warnings: Vec::new(),
        callers: Default::default(),
    }
}

/// An ecs-xds daemon in this process serving a saved inventory; stops when dropped.
struct Xds {
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

/// Serves `inventory` to the node types of `templates` (node type, template text).
async fn serve(templates: &[(&str, String)], inventory: Inventory) -> Xds {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ecs-xds.toml");
    let settings = "[xds]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n";
    std::fs::write(&config, settings).unwrap();
    std::fs::create_dir_all(dir.path().join("templates")).unwrap();
    for (node_type, text) in templates {
        let file = dir.path().join(format!("templates/{node_type}.toml"));
        std::fs::write(file, text).unwrap();
    }
    let loaded = ecs_xds::cli::load(&config).unwrap_or_else(|e| panic!("the templates: {e}"));
    let daemon = Daemon::start(loaded, Some(inventory)).await.unwrap();
    let (addr, admin) = (daemon.xds_addr(), daemon.admin_addr());
    let (stop, stopped) = oneshot::channel::<()>();
    let (reload, reload_rx) = mpsc::channel(1);
    tokio::spawn(async move {
        let _reload = reload;
        let shutdown = async {
            let _ = stopped.await;
        };
        let _ = daemon.run(reload_rx, shutdown).await;
    });
    wait_ready(admin).await;
    Xds {
        addr,
        _stop: stop,
        _dir: dir,
    }
}

/// Polls the admin API until the daemon has published (is ready).
async fn wait_ready(admin: SocketAddr) {
    let http = client();
    let started = Instant::now();
    loop {
        let ready = http.get(format!("http://{admin}/readyz")).send().await;
        if ready.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An HTTP/1.1 client keeping its connections alive.
fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// One request, to its whole body; its time. Anything but 200 is a failed run.
async fn get(http: &reqwest::Client, url: &str, host: Option<&str>) -> Duration {
    let started = Instant::now();
    let mut request = http.get(url);
    if let Some(host) = host {
        request = request.header("host", host);
    }
    let response = request.send().await.expect("an answer");
    let status = response.status();
    let body = response.bytes().await.expect("a body");
    let took = started.elapsed();
    assert_eq!(status, 200, "{url} (host {host:?}): {body:?}");
    took
}

/// Waits until `url` answers 200 with `host` (Envoy has its listeners, routes and clusters).
async fn wait_for_200(http: &reqwest::Client, url: &str, host: &str) {
    let started = Instant::now();
    loop {
        let sent = http.get(url).header("host", host).send().await;
        if sent.is_ok_and(|r| r.status() == 200) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{url} (host {host}) never answered 200"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The certificate directories of the two services of the latency run.
struct Certs {
    web: PathBuf,
    orders: PathBuf,
    _dir: tempfile::TempDir,
}

impl Certs {
    fn issue(ca: &Ca) -> Certs {
        let dir = tempfile::tempdir().unwrap();
        let (web, orders) = (dir.path().join("web"), dir.path().join("orders"));
        certify(ca, "web", &web);
        certify(ca, "orders", &orders);
        Certs {
            web,
            orders,
            _dir: dir,
        }
    }
}

/// One latency phase's figures.
struct Phase {
    times: Vec<Duration>,
    /// Web's new connections to orders while measuring, and its TLS handshakes.
    connections: u64,
    handshakes: u64,
    /// Of those, the handshakes that resumed a TLS session (Envoy's default session cache).
    resumed: u64,
    /// TLS handshakes since the Envoys started: web's to orders, orders' ingress listener's.
    client_tls: u64,
    server_tls: u64,
}

/// Web's counters for its cluster `orders`: (connections, TLS handshakes, of which resumed).
async fn web_counters(web: &Envoy) -> (u64, u64, u64) {
    (
        web.stat("cluster.orders.upstream_cx_total").await,
        web.stat("cluster.orders.ssl.handshake").await,
        web.stat("cluster.orders.ssl.session_reused").await,
    )
}

/// Fresh daemon and Envoys with `[mtls]` `mode`; `requests` timed requests web → orders.
async fn latency_phase(
    certs: &Certs,
    backend: SocketAddr,
    mode: &str,
    new_connection: bool,
    requests: usize,
) -> Phase {
    let (web_egress, orders_ingress) = (free_port(), free_port());
    let web = template(&Node {
        mode: Some(mode),
        certs: &certs.web,
        egress: web_egress,
        ingress: None,
        new_connection,
    });
    let orders = template(&Node {
        mode: Some(mode),
        certs: &certs.orders,
        egress: free_port(),
        ingress: Some((orders_ingress, backend)),
        new_connection: false,
    });
    let endpoint = [("127.0.0.1".to_owned(), orders_ingress)];
    let mesh = inventory([discovered("orders", &endpoint)]);
    let xds = serve(&[("web", web), ("orders", orders)], mesh).await;
    let web = Envoy::start_of_service("web-1", xds.addr, AdsMode::Sotw, "web").await;
    let orders = Envoy::start_of_service("orders-1", xds.addr, AdsMode::Sotw, "orders").await;
    let http = client();
    let url = format!("http://127.0.0.1:{web_egress}/");
    wait_for_200(&http, &url, "orders").await;
    for _ in 0..WARMUP {
        get(&http, &url, Some("orders")).await;
    }
    let before = web_counters(&web).await;
    let mut times = Vec::with_capacity(requests);
    for _ in 0..requests {
        times.push(get(&http, &url, Some("orders")).await);
    }
    let after = web_counters(&web).await;
    let rejected = web.stat("cluster_manager.cds.update_rejected").await;
    assert_eq!(rejected, 0, "web's Envoy rejected a CDS update");
    let ingress_tls = format!("listener.127.0.0.1_{orders_ingress}.ssl.handshake");
    let phase = Phase {
        times,
        connections: after.0 - before.0,
        handshakes: after.1 - before.1,
        resumed: after.2 - before.2,
        client_tls: after.1,
        server_tls: orders.stat(&ingress_tls).await,
    };
    check_phase(&phase, mode, new_connection, requests);
    web.stop().await;
    orders.stop().await;
    phase
}

/// That Envoy did what the phase is about: a connection per request (or a kept one), and TLS
/// handshakes only with mTLS.
fn check_phase(phase: &Phase, mode: &str, new_connection: bool, requests: usize) {
    if new_connection {
        assert!(
            phase.connections as usize >= requests * 99 / 100,
            "max_requests_per_connection = 1 not in force: {} connections for {requests} requests",
            phase.connections
        );
    } else {
        assert!(
            phase.connections <= 2,
            "the pool was not kept: {} connections for {requests} requests",
            phase.connections
        );
    }
    match mode {
        "off" => assert_eq!(
            (phase.client_tls, phase.server_tls),
            (0, 0),
            "TLS handshakes with mode = off"
        ),
        _ => {
            assert!(phase.client_tls >= 1, "no TLS handshake with mode = {mode}");
            assert!(
                phase.server_tls >= phase.client_tls,
                "orders' ingress counted {} handshakes, web {}",
                phase.server_tls,
                phase.client_tls
            );
            assert_eq!(
                phase.handshakes, phase.connections,
                "a connection without TLS handshake"
            );
        }
    }
}

fn percentile(times: &[Duration], p: usize) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

const PHASES: [(&str, bool); 2] = [("kept-alive", false), ("new-connection", true)];

async fn latency(ca: &Ca, requests: usize) {
    let certs = Certs::issue(ca);
    let backend = backend::Backend::start("backend").await;
    direct_floor(backend.addr, requests).await;
    for (phase_name, new_connection) in PHASES {
        let mut p = Vec::new();
        for mode in ["off", "strict"] {
            let phase = latency_phase(&certs, backend.addr, mode, new_connection, requests).await;
            let (p50, p99) = (percentile(&phase.times, 50), percentile(&phase.times, 99));
            println!(
                "mtls-load latency mode={mode} phase={phase_name} requests={requests} p50_ms={:.3} p99_ms={:.3} upstream_cx={} tls_handshakes={} tls_resumed={}",
                ms(p50),
                ms(p99),
                phase.connections,
                phase.handshakes,
                phase.resumed
            );
            p.push((p50, p99));
        }
        let ((off50, off99), (tls50, tls99)) = (p[0], p[1]);
        println!(
            "mtls-load latency added phase={phase_name} p50_ms={:+.3} p99_ms={:+.3} p50_ratio={:.2} p99_ratio={:.2}",
            ms(tls50) - ms(off50),
            ms(tls99) - ms(off99),
            ms(tls50) / ms(off50),
            ms(tls99) / ms(off99)
        );
    }
}

/// The same requests from this client straight to the backend: on a kept connection, and on a
/// new connection each.
async fn direct_floor(backend: SocketAddr, requests: usize) {
    let url = format!("http://{backend}/");
    let fresh = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    for ((phase, _), http) in PHASES.into_iter().zip([client(), fresh]) {
        for _ in 0..WARMUP {
            get(&http, &url, None).await;
        }
        let mut times = Vec::with_capacity(requests);
        for _ in 0..requests {
            times.push(get(&http, &url, None).await);
        }
        println!(
            "mtls-load latency mode=direct phase={phase} requests={requests} p50_ms={:.3} p99_ms={:.3}",
            ms(percentile(&times, 50)),
            ms(percentile(&times, 99))
        );
    }
}

/// Discovered clusters Envoy holds with an UpstreamTlsContext, from its config dump.
async fn tls_clusters(envoy: &Envoy) -> usize {
    let dump = envoy.config_dump().await;
    let configs = dump["configs"].as_array().cloned().unwrap_or_default();
    let clusters = configs
        .iter()
        .filter(|c| {
            c["@type"]
                .as_str()
                .is_some_and(|t| t.ends_with("ClustersConfigDump"))
        })
        .flat_map(|c| {
            c["dynamic_active_clusters"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        });
    clusters
        .filter(|c| c["cluster"]["transport_socket"]["name"] == "envoy.transport_sockets.tls")
        .count()
}

/// `services` services of 3 tasks each at 127.x addresses nothing listens on.
fn many_services(services: usize) -> Inventory {
    inventory((0..services).map(|s| {
        let endpoints: Vec<(String, u16)> = (0..3)
            .map(|t| {
                let n = s * 3 + t;
                let address = format!("127.{}.{}.{}", 1 + n / 65536 % 250, n / 256 % 256, n % 256);
                (address, 8080)
            })
            .collect();
        discovered(&format!("service-{s:04}"), &endpoints)
    }))
}

async fn envoy_memory(ca: &Ca, clusters: usize) {
    let certs = tempfile::tempdir().unwrap();
    certify(ca, "sidecar", certs.path());
    // Node types `none`, `off` and `strict`: each case's Envoy is node `<case>-1`.
    let cases = [
        ("none", None),
        ("off", Some("off")),
        ("strict", Some("strict")),
    ];
    let templates: Vec<(&str, String)> = (cases.iter())
        .map(|&(name, mode)| {
            let node = Node {
                mode,
                certs: certs.path(),
                egress: free_port(),
                ingress: None,
                new_connection: false,
            };
            (name, template(&node))
        })
        .collect();
    let xds = serve(&templates, many_services(clusters)).await;
    let mut figures = Vec::new();
    for (name, _) in cases {
        let node = format!("{name}-1");
        let envoy = Envoy::start_of_service(&node, xds.addr, AdsMode::Sotw, "sidecar").await;
        envoy
            .wait_for("every cluster", Duration::from_secs(120), || async {
                // The static xDS cluster is active too.
                envoy.stat("cluster_manager.active_clusters").await == clusters as u64 + 1
                    && envoy.stat("cluster_manager.warming_clusters").await == 0
            })
            .await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let rss = rss_kb(envoy.pid().unwrap()) as f64 / 1024.0;
        let heap = envoy.stat("server.memory_allocated").await as f64 / 1024.0 / 1024.0;
        let with_tls = tls_clusters(&envoy).await;
        let expected = if name == "strict" { clusters } else { 0 };
        assert_eq!(with_tls, expected, "clusters with TLS for tls={name}");
        println!(
            "mtls-load envoy-memory tls={name} clusters={clusters} tls_clusters={with_tls} envoy_rss_mb={rss:.1} envoy_heap_mb={heap:.1}"
        );
        figures.push((rss, heap));
        envoy.stop().await;
    }
    let ((rss0, heap0), (rss1, heap1)) = (figures[0], figures[2]);
    println!(
        "mtls-load envoy-memory ratios strict_over_none rss={:.2} heap={:.2} added_rss_kb_per_cluster={:.1} added_heap_kb_per_cluster={:.1}",
        rss1 / rss0,
        heap1 / heap0,
        (rss1 - rss0) * 1024.0 / clusters as f64,
        (heap1 - heap0) * 1024.0 / clusters as f64
    );
}
