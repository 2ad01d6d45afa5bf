//! replicas: what running two ecs-xds replicas costs in time, on this machine.
//!
//! ```text
//! cargo run --release --example replicas -- propagation --pushes 50
//! cargo run --release --example replicas -- rebalance --streams 1000 --max-age 60s
//! ```
//!
//! **propagation**: moto server (S3), two daemons A and B sharing pushes on S3
//! (`push.refresh_interval`, 2 s by default), and a real Envoy on B. `--pushes` times, a PUT on
//! A changes a pushed STATIC cluster's port, and the time is measured from the PUT to Envoy's
//! admin API showing the new port (5 ms polling step). Prints
//! `replicas propagation pushes=50 refresh_ms=2000 p50_ms=... p99_ms=... max_ms=...`.
//! The cluster's address is 127.0.0.1 and nothing connects to it.
//!
//! **rebalance**: two daemons serving a saved inventory with `xds.max_connection_age`
//! `--max-age`, and `--streams` ADS streams (SotW, one HTTP/2 connection each, ACKing) that,
//! like Envoys behind Cloud Map DNS naming both replicas, connect to one of them at random and
//! reconnect after a jittered backoff whenever their stream ends. A is stopped (SIGTERM-like,
//! graceful), everything moves to B, A comes back on its port, and the time is measured from A
//! listening again to A holding at least 40% of the streams. Prints
//! `replicas rebalance streams=1000 max_age_s=60 seconds_to_60_40=...`.

#[allow(dead_code)]
#[path = "../tests/support/envoy.rs"]
mod envoy;
#[path = "../tests/support/moto.rs"]
mod moto;
#[allow(dead_code)]
#[path = "../tests/support/templates.rs"]
mod templates;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use ecs_xds::daemon::Daemon;
use ecs_xds::snapshot::ResourceType;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

#[derive(Debug, Parser)]
struct Args {
    #[command(subcommand)]
    measure: Measure,
}

#[derive(Debug, Subcommand)]
enum Measure {
    /// A PUT on replica A until the Envoy on replica B holds it.
    Propagation {
        #[arg(long, default_value_t = 50)]
        pushes: usize,
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        refresh: Duration,
    },
    /// After replica A restarts, the time until streams are split 60/40 again.
    Rebalance {
        #[arg(long, default_value_t = 1000)]
        streams: usize,
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        max_age: Duration,
    },
}

fn main() {
    // Before the runtime starts any thread.
    moto::use_emulator_environment();
    let _ = rlimit::increase_nofile_limit(65_536);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match Args::parse().measure {
        Measure::Propagation { pushes, refresh } => runtime.block_on(propagation(pushes, refresh)),
        Measure::Rebalance { streams, max_age } => runtime.block_on(rebalance(streams, max_age)),
    }
}

/// A daemon running in this process; `stop` ends it as SIGTERM would.
struct Replica {
    xds: SocketAddr,
    admin: SocketAddr,
    stop: oneshot::Sender<()>,
    done: tokio::task::JoinHandle<()>,
}

impl Replica {
    async fn start(config: &Path, inventory: Option<ecs_xds::inventory::Inventory>) -> Replica {
        let daemon = Daemon::start(
            ecs_xds::cli::load(config).expect("settings load"),
            inventory,
        )
        .await
        .expect("ecs-xds starts");
        let (xds, admin) = (daemon.xds_addr(), daemon.admin_addr());
        let (stop, stopped) = oneshot::channel::<()>();
        let (_reload, reload_rx) = mpsc::channel(1);
        let done = tokio::spawn(async move {
            let _keep = _reload;
            let _ = daemon
                .run(reload_rx, async {
                    let _ = stopped.await;
                })
                .await;
        });
        Replica {
            xds,
            admin,
            stop,
            done,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.done.await;
    }
}

fn write_config(dir: &Path, name: &str, extra: &str) -> PathBuf {
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(&config, extra).unwrap();
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    let template = templates::egress_sidecar(envoy::free_port(), "egress", 1);
    std::fs::write(dir.join("templates/sidecar.toml"), template).unwrap();
    config
}

async fn propagation(pushes: usize, refresh: Duration) {
    let emulator = moto::Moto::start();
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&emulator.sdk_config().await)
            .force_path_style(true)
            .build(),
    );
    s3.create_bucket().bucket("pushes").send().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let settings = format!(
        "[xds]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[aws]\nendpoint_url = \"{}\"\n\
         [push]\nenabled = true\nrefresh_interval = \"{}ms\"\nstore = {{ s3 = {{ bucket = \"pushes\", prefix = \"push/\" }} }}\n",
        emulator.endpoint,
        refresh.as_millis()
    );
    let config = write_config(dir.path(), "ecs-xds", &settings);
    let empty = ecs_xds::inventory::Inventory::default();
    let a = Replica::start(&config, Some(empty.clone())).await;
    let b = Replica::start(&config, Some(empty)).await;
    let envoy = envoy::Envoy::start("sidecar-bench", b.xds, envoy::AdsMode::Sotw).await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut latencies = Vec::with_capacity(pushes);
    for i in 0..pushes {
        let port = 20_000 + i as u32;
        let body = json!({"version": format!("v{i}"), "clusters": [{
            "name": "pushed", "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": "pushed", "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}
            ]}]}
        }]});
        let want = format!("pushed::127.0.0.1:{port}::");
        let put_at = Instant::now();
        loop {
            let url = format!("http://{}/resources/sidecar", a.admin);
            let r = http.put(&url).body(body.to_string()).send().await;
            if r.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            assert!(
                put_at.elapsed() < Duration::from_secs(30),
                "A never took the PUT"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        loop {
            if envoy.admin_get("/clusters").await.contains(&want) {
                break;
            }
            assert!(
                put_at.elapsed() < refresh * 10,
                "push {i} never reached Envoy on B"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let took = put_at.elapsed();
        eprintln!(
            "replicas: push {:>2} reached Envoy on B in {} ms",
            i + 1,
            took.as_millis()
        );
        latencies.push(took);
        // Start the next one at a random point of the refresh cycle.
        tokio::time::sleep(refresh.mul_f64(fastrand::f64())).await;
    }
    envoy.stop().await;
    a.stop().await;
    b.stop().await;
    latencies.sort();
    let pct = |p: usize| {
        latencies[(latencies.len() * p)
            .div_ceil(100)
            .clamp(1, latencies.len())
            - 1]
    };
    println!(
        "replicas propagation pushes={pushes} refresh_ms={} p50_ms={} p99_ms={} max_ms={}",
        refresh.as_millis(),
        pct(50).as_millis(),
        pct(99).as_millis(),
        latencies.last().unwrap().as_millis()
    );
}

/// Streams held by each replica, counted when a stream's first response arrives.
#[derive(Default)]
struct Held([AtomicUsize; 2]);

async fn rebalance(streams: usize, max_age: Duration) {
    let dir = tempfile::tempdir().unwrap();
    let ports = [envoy::free_port(), envoy::free_port()];
    let configs = ports.map(|port| {
        let settings = format!(
            "[xds]\nlisten = \"127.0.0.1:{port}\"\nmax_connection_age = \"{}s\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
            max_age.as_secs()
        );
        write_config(dir.path(), &format!("replica-{port}"), &settings)
    });
    let inventory = ecs_xds::inventory::Inventory::default();
    let a = Replica::start(&configs[0], Some(inventory.clone())).await;
    let b = Replica::start(&configs[1], Some(inventory.clone())).await;
    let addrs = [a.xds, b.xds];
    let held = Arc::new(Held::default());
    for i in 0..streams {
        tokio::spawn(client(i, addrs, held.clone()));
    }
    let count = |held: &Held| [0, 1].map(|r| held.0[r].load(Ordering::Relaxed));
    let started = Instant::now();
    while count(&held).iter().sum::<usize>() < streams {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "streams never all connected"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("replicas: connected {:?} (A, B)", count(&held));

    // A stops; its streams go to B.
    a.stop().await;
    let stopped = Instant::now();
    while count(&held)[1] < streams {
        assert!(
            stopped.elapsed() < Duration::from_secs(120),
            "streams never all moved to B"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "replicas: all on B {} ms after A stopped",
        stopped.elapsed().as_millis()
    );

    // A is back: time until it holds at least 40% again.
    let a = Replica::start(&configs[0], Some(inventory)).await;
    let back = Instant::now();
    let mut last_print = Instant::now();
    while count(&held)[0] * 10 < streams * 4 {
        assert!(
            back.elapsed() < max_age * 5,
            "never rebalanced: {:?}",
            count(&held)
        );
        if last_print.elapsed() >= Duration::from_secs(5) {
            eprintln!(
                "replicas: {:>3} s after A came back: {:?} (A, B)",
                back.elapsed().as_secs(),
                count(&held)
            );
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = back.elapsed();
    eprintln!(
        "replicas: {:?} (A, B) {} ms after A came back",
        count(&held),
        took.as_millis()
    );
    println!(
        "replicas rebalance streams={streams} max_age_s={} seconds_to_60_40={:.1}",
        max_age.as_secs(),
        took.as_secs_f64()
    );
    a.stop().await;
    b.stop().await;
    std::process::exit(0);
}

/// One Envoy-like client: a stream to a random replica, ACKing; when it ends, a jittered
/// backoff (Envoy's first retry waits up to 500 ms) and another random replica.
async fn client(i: usize, addrs: [SocketAddr; 2], held: Arc<Held>) {
    let node = Node {
        id: format!("sidecar-{i}"),
        ..Default::default()
    };
    let mut backoff = Duration::from_millis(500);
    loop {
        let replica = fastrand::usize(0..2);
        let url = format!("http://{}", addrs[replica]);
        let Ok(channel) = tonic::transport::Endpoint::from_shared(url)
            .unwrap()
            .connect()
            .await
        else {
            tokio::time::sleep(backoff.mul_f64(fastrand::f64())).await;
            backoff = (backoff * 2).min(Duration::from_secs(4));
            continue;
        };
        let (tx, rx) = mpsc::channel(4);
        let first = DiscoveryRequest {
            node: Some(node.clone()),
            type_url: ResourceType::Listener.type_url().to_owned(),
            ..Default::default()
        };
        tx.send(first).await.unwrap();
        let requests = tokio_stream::wrappers::ReceiverStream::new(rx);
        let mut client = AggregatedDiscoveryServiceClient::new(channel);
        if let Ok(responses) = client.stream_aggregated_resources(requests).await {
            let mut responses = responses.into_inner();
            let mut counted = false;
            while let Ok(Some(response)) = responses.message().await {
                if !counted {
                    held.0[replica].fetch_add(1, Ordering::Relaxed);
                    counted = true;
                    backoff = Duration::from_millis(500);
                }
                let ack = DiscoveryRequest {
                    type_url: response.type_url.clone(),
                    version_info: response.version_info.clone(),
                    response_nonce: response.nonce.clone(),
                    ..Default::default()
                };
                if tx.send(ack).await.is_err() {
                    break;
                }
            }
            if counted {
                held.0[replica].fetch_sub(1, Ordering::Relaxed);
            }
        }
        tokio::time::sleep(backoff.mul_f64(fastrand::f64())).await;
    }
}
