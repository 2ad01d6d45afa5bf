//! backends: what declared backends and on-demand clusters save, on this machine.
//!
//! ```text
//! cargo run --release --example backends -- envoy-memory
//! cargo run --release --example backends -- synthesis --services 1000 --backends 5
//! cargo run --release --example backends -- first-request --clusters 20
//! ```
//!
//! **envoy-memory**: for each case, a fresh daemon (a child process of this tool) serving a saved
//! inventory of services with 3 tasks each (127.x addresses nothing listens on) with the
//! egress sidecar template, and one real Envoy 1.40. Once Envoy holds every cluster it is
//! served with its endpoints and 3 s have passed, prints its RSS and `server.memory_allocated`:
//! `backends envoy-memory case=... services=... clusters=... envoy_rss_mb=... envoy_heap_mb=...`.
//! Cases: the whole scope at 10, 100 and 1,000 services; 5 declared backends out of 1,000; and an
//! on-demand node type (delta ADS) after requests to 5 of 1,000 (each answered 503, since
//! nothing listens on the endpoints: the cluster is loaded all the same).
//!
//! **synthesis**: in this process, `--services` services synthesized with no declarations, and
//! then with each service declaring its own set of `--backends` (service i calls i+1…i+k), so
//! every set is distinct: median cold synthesis and median "one task changed" of 5 runs, then
//! the RSS of a fresh daemon (child process) serving each inventory, idle, 3 s after it is ready:
//! `backends synthesis declared=... cold_ms=... one_changed_ms=... snapshots=... daemon_rss_mb=...`
//! and the ratios of the declared run to the plain one.
//!
//! **first-request**: an on-demand daemon (in this process) serving `--clusters` clusters whose
//! endpoint is one HTTP backend on 127.0.0.1, and a real Envoy (delta ADS). For each cluster, a
//! first request (Envoy asks for the cluster, warms it, then forwards) and a second one (warm):
//! `backends first-request clusters=... first_p50_ms=... first_max_ms=... warm_p50_ms=...`.

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
#[allow(dead_code)]
#[path = "../tests/support/templates.rs"]
mod templates;

use proc_stats::rss_kb;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use ecs_xds::daemon::Daemon;
use ecs_xds::inventory::{Cluster, Endpoint, Health, Inventory, Locality, Source};
use ecs_xds::synthesize::{Synthesizer, Templates};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

#[derive(Debug, Parser)]
struct Args {
    #[command(subcommand)]
    measure: Measure,
}

#[derive(Debug, Subcommand)]
enum Measure {
    /// Envoy's memory with the whole scope, declared backends and on-demand clusters.
    EnvoyMemory,
    /// Synthesis time and daemon RSS with every service declaring its own backend set.
    Synthesis {
        #[arg(long, default_value_t = 1000)]
        services: usize,
        #[arg(long, default_value_t = 5)]
        backends: usize,
    },
    /// On-demand: a request's latency when its cluster is not loaded yet, against a warm one.
    FirstRequest {
        #[arg(long, default_value_t = 20)]
        clusters: usize,
    },
    /// (Used by the others.) Runs a daemon on `--config` and `--inventory` until stdin closes,
    /// after printing `ready <xds> <admin>`.
    #[command(hide = true)]
    Serve {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        inventory: PathBuf,
    },
}

fn main() {
    // Before the runtime starts any thread.
    moto::use_emulator_environment();
    let _ = rlimit::increase_nofile_limit(65_536);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match Args::parse().measure {
        Measure::EnvoyMemory => runtime.block_on(envoy_memory()),
        Measure::Synthesis { services, backends } => {
            runtime.block_on(synthesis(services, backends))
        }
        Measure::FirstRequest { clusters } => runtime.block_on(first_request(clusters)),
        Measure::Serve { config, inventory } => runtime.block_on(serve(&config, &inventory)),
    }
}

/// `services` services `service-0000`… with 3 tasks each at 127.x addresses, and for each
/// `declares(i)` its backends.
fn inventory(services: usize, declares: impl Fn(usize) -> Option<Vec<String>>) -> Inventory {
    let clusters = (0..services).map(|s| {
        let name = service_name(s);
        let endpoints = (0..3)
            .map(|t| {
                let n = s * 3 + t;
                Endpoint {
                    address: format!("127.{}.{}.{}", 1 + n / 65536 % 250, n / 256 % 256, n % 256),
                    port: 8080,
                    health: Health::Healthy,
                    locality: Locality {
                        region: "us-east-1".into(),
                        zone: Some(format!("us-east-1{}", ["a", "b", "c"][t])),
                    },
                    weight: 1,
                    id: format!("task-{n}"),
                    revision: Some(1),
                    deployment: None,
                }
            })
            .collect();
        let cluster = Cluster {
            name: name.clone(),
            source: Source::Ecs {
                ecs_cluster: "prod".into(),
                service: name.clone(),
            },
            port_name: None,
            overrides: Default::default(),
            route: Default::default(),
            backends: declares(s),
            security: Default::default(),
            endpoints,
        };
        (name, cluster)
    });
    Inventory {
        clusters: clusters.collect(),
        warnings: Vec::new(),
        callers: Default::default(),
    }
}

fn service_name(i: usize) -> String {
    format!("service-{i:04}")
}

/// Service i calls the `k` services after it.
fn next_k(services: usize, k: usize) -> impl Fn(usize) -> Option<Vec<String>> {
    move |i| {
        let mut names: Vec<String> = (1..=k).map(|d| service_name((i + d) % services)).collect();
        names.sort();
        Some(names)
    }
}

/// A settings file and a template directory in `dir`; `template` is the sidecar's.
fn write_config(dir: &Path, template: &str) -> PathBuf {
    let config = dir.join("ecs-xds.toml");
    std::fs::write(
        &config,
        "[xds]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    std::fs::write(dir.join("templates/sidecar.toml"), template).unwrap();
    config
}

/// A daemon in a child process of this tool, so that its RSS is its own.
struct Child {
    process: tokio::process::Child,
    xds: SocketAddr,
    admin: SocketAddr,
}

impl Child {
    async fn start(dir: &Path, template: &str, inventory: &Inventory) -> Child {
        let config = write_config(dir, template);
        let path = dir.join("inventory.json");
        std::fs::write(&path, serde_json::to_string(inventory).unwrap()).unwrap();
        let mut process = tokio::process::Command::new(std::env::current_exe().unwrap())
            .args(["serve", "--config"])
            .arg(&config)
            .arg("--inventory")
            .arg(&path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the daemon");
        let mut lines = BufReader::new(process.stdout.take().unwrap()).lines();
        let line = lines.next_line().await.unwrap().expect("a ready line");
        let mut words = line.split(' ').skip(1);
        let mut addr = || words.next().unwrap().parse().unwrap();
        let (xds, admin) = (addr(), addr());
        Child {
            process,
            xds,
            admin,
        }
    }

    fn rss_mb(&self) -> f64 {
        rss_kb(self.process.id().unwrap()) as f64 / 1024.0
    }
}

async fn serve(config: &Path, inventory: &Path) {
    let inventory = Inventory::read_file(inventory).unwrap();
    let daemon = Daemon::start(ecs_xds::cli::load(config).unwrap(), Some(inventory))
        .await
        .unwrap();
    println!("ready {} {}", daemon.xds_addr(), daemon.admin_addr());
    let (_reload, reload_rx) = mpsc::channel(1);
    let stdin_closed = async {
        let mut stdin = BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(_)) = stdin.next_line().await {}
    };
    let _ = daemon.run(reload_rx, stdin_closed).await;
}

/// Polls the admin API until the daemon has published (is ready).
async fn wait_ready(admin: SocketAddr) {
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
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

async fn envoy_memory() {
    let egress = envoy::free_port();
    let whole = templates::egress_sidecar(egress, "egress", 1);
    let on_demand = templates::on_demand_sidecar(egress);
    struct Case {
        name: &'static str,
        services: usize,
        declared: bool,
        on_demand: bool,
    }
    let case = |name, services, declared, on_demand| Case {
        name,
        services,
        declared,
        on_demand,
    };
    for c in [
        case("whole-scope", 10, false, false),
        case("whole-scope", 100, false, false),
        case("whole-scope", 1000, false, false),
        case("declared-5", 1000, true, false),
        case("on-demand-5", 1000, false, true),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let declares = |i: usize| (c.declared && i == 0).then(|| next_k(c.services, 5)(i).unwrap());
        let inventory = inventory(c.services, declares);
        let template = if c.on_demand { &on_demand } else { &whole };
        let daemon = Child::start(dir.path(), template, &inventory).await;
        wait_ready(daemon.admin).await;
        let mode = if c.on_demand {
            envoy::AdsMode::Delta
        } else {
            envoy::AdsMode::Sotw
        };
        let envoy =
            envoy::Envoy::start_of_service("sidecar-app1", daemon.xds, mode, &service_name(0))
                .await;
        if c.on_demand {
            egress_ready(&envoy).await;
            let http = reqwest::Client::builder().no_proxy().build().unwrap();
            for i in 1..=5 {
                let _ = http
                    .get(format!("http://127.0.0.1:{egress}/"))
                    .header("host", service_name(i))
                    .send()
                    .await;
            }
        }
        let expected = match (c.declared, c.on_demand) {
            (true, _) | (_, true) => 5,
            _ => c.services,
        };
        envoy
            .wait_for("every cluster", Duration::from_secs(120), || async {
                // The static xDS cluster is active too.
                envoy.stat("cluster_manager.active_clusters").await == expected as u64 + 1
                    && envoy.stat("cluster_manager.warming_clusters").await == 0
            })
            .await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let rss = rss_kb(envoy.pid().unwrap()) as f64 / 1024.0;
        let heap = envoy.stat("server.memory_allocated").await as f64 / 1024.0 / 1024.0;
        println!(
            "backends envoy-memory case={} services={} clusters={expected} envoy_rss_mb={rss:.1} envoy_heap_mb={heap:.1}",
            c.name, c.services
        );
        envoy.stop().await;
        drop(daemon);
    }
}

async fn synthesis(services: usize, backends: usize) {
    let dir = tempfile::tempdir().unwrap();
    let template = templates::egress_sidecar(envoy::free_port(), "egress", 1);
    write_config(dir.path(), &template);
    let templates = Templates::load_dir(&dir.path().join("templates")).unwrap();
    let plain = inventory(services, |_| None);
    let declared = inventory(services, next_k(services, backends));
    let mut results = Vec::new();
    for (label, inv) in [("no", &plain), ("yes", &declared)] {
        let mut cold = Vec::new();
        let mut changed = Vec::new();
        let mut snapshots = 0;
        for _ in 0..5 {
            let mut synthesizer = Synthesizer::new(templates.clone());
            let started = Instant::now();
            let synthesis = synthesizer.synthesize(inv);
            cold.push(started.elapsed());
            snapshots = synthesis.snapshots.len()
                + synthesis
                    .backend_sets
                    .values()
                    .map(|s| s.sets.len())
                    .sum::<usize>();
            let mut next = inv.clone();
            let first = next.clusters.values_mut().next().unwrap();
            first.endpoints[0].port += 1;
            let started = Instant::now();
            synthesizer.synthesize(&next);
            changed.push(started.elapsed());
        }
        let daemon_dir = tempfile::tempdir().unwrap();
        let daemon = Child::start(daemon_dir.path(), &template, inv).await;
        wait_ready(daemon.admin).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let rss = daemon.rss_mb();
        drop(daemon);
        let (cold, changed) = (median(cold), median(changed));
        println!(
            "backends synthesis declared={label} services={services} backends={backends} cold_ms={} one_changed_ms={} snapshots={snapshots} daemon_rss_mb={rss:.1}",
            ms(cold),
            ms(changed)
        );
        results.push((cold, changed, rss));
    }
    let (plain, declared) = (results[0], results[1]);
    println!(
        "backends synthesis ratios cold={:.2} one_changed={:.2} daemon_rss={:.2}",
        declared.0.as_secs_f64() / plain.0.as_secs_f64(),
        declared.1.as_secs_f64() / plain.1.as_secs_f64(),
        declared.2 / plain.2
    );
}

async fn first_request(clusters: usize) {
    let backend = backend::Backend::start("backend").await;
    let dir = tempfile::tempdir().unwrap();
    let egress = envoy::free_port();
    let config = write_config(dir.path(), &templates::on_demand_sidecar(egress));
    let mut inv = inventory(clusters, |_| None);
    for cluster in inv.clusters.values_mut() {
        cluster.endpoints.truncate(1);
        cluster.endpoints[0].address = backend.addr.ip().to_string();
        cluster.endpoints[0].port = backend.addr.port();
    }
    let daemon = Daemon::start(ecs_xds::cli::load(&config).unwrap(), Some(inv))
        .await
        .unwrap();
    let (xds, admin) = (daemon.xds_addr(), daemon.admin_addr());
    let (_reload, reload_rx) = mpsc::channel(1);
    tokio::spawn(daemon.run(reload_rx, std::future::pending()));
    wait_ready(admin).await;
    let envoy = envoy::Envoy::start("sidecar-app1", xds, envoy::AdsMode::Delta).await;
    egress_ready(&envoy).await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let get = |host: String| {
        let http = http.clone();
        async move {
            let started = Instant::now();
            let response = http
                .get(format!("http://127.0.0.1:{egress}/"))
                .header("host", host)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{:?}", response.text().await);
            started.elapsed()
        }
    };
    let (mut first, mut warm) = (Vec::new(), Vec::new());
    for i in 0..clusters {
        first.push(get(service_name(i)).await);
        warm.push(get(service_name(i)).await);
    }
    let max_first = *first.iter().max().unwrap();
    let (first, warm) = (median(first), median(warm));
    println!(
        "backends first-request clusters={clusters} first_p50_ms={} first_max_ms={} warm_p50_ms={} first_over_warm={:.1}",
        ms(first),
        ms(max_first),
        ms(warm),
        first.as_secs_f64() / warm.as_secs_f64()
    );
    envoy.stop().await;
}

/// Waits until Envoy's egress listener is up with the generated routes (on-demand: the clusters
/// come later, one request at a time).
async fn egress_ready(envoy: &envoy::Envoy) {
    envoy
        .wait_for("the routes", Duration::from_secs(60), || async {
            envoy.stat("listener_manager.total_listeners_active").await == 1
                && envoy.stat("http.egress.rds.egress.update_success").await >= 1
        })
        .await;
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}
