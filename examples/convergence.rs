//! convergence: how long from a change in ECS to Envoy holding it, through ecs-xds.
//!
//! ```text
//! cargo run --release --example convergence -- --changes 20 --interval 1s
//! cargo run --release --example convergence -- --changes 50 --events
//! ```
//!
//! Starts moto server (seeded with the demo ECS cluster), the ecs-xds daemon polling every
//! `--interval`, and a real Envoy (node `sidecar-bench`). Then, `--changes` times, it starts or
//! stops a `web` task in the emulator and measures the time until Envoy's admin API shows
//! exactly the new set of `web` endpoints (Envoy applies an EDS update when it accepts it, so
//! this is the ACK time within the 5 ms polling step). Prints one final line:
//! `convergence changes=20 interval_ms=1000 p50_ms=... p99_ms=...`.
//!
//! With `--events`, the daemon reads ECS events from an SQS queue that moto's EventBridge rule
//! (`deploy/ecs/event-pattern.json`) feeds, and polls only once an hour; each change's task
//! state change event (moto's DescribeTasks output as `detail`) is published with `PutEvents`,
//! and the time is measured from that call to Envoy holding the change
//! (`convergence mode=events changes=50 p50_ms=... p99_ms=...`).
//!
//! The endpoints are the 10.x addresses moto invents; they are only read, never contacted.

#[allow(dead_code)]
#[path = "../tests/support/envoy.rs"]
mod envoy;
#[allow(dead_code)]
#[path = "../tests/support/events.rs"]
mod events;
#[path = "../tests/support/moto.rs"]
mod moto;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use clap::Parser;

#[derive(Debug, Parser)]
struct Args {
    /// How many changes to measure.
    #[arg(long, default_value_t = 20)]
    changes: usize,
    /// ecs-xds's poll interval.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Event-driven: changes reach ecs-xds as ECS events through EventBridge and SQS.
    #[arg(long)]
    events: bool,
}

fn main() {
    // Before the runtime starts any thread.
    moto::use_emulator_environment();
    tokio::runtime::Runtime::new()
        .expect("tokio runtime")
        .block_on(run(Args::parse()));
}

async fn run(args: Args) {
    let emulator = moto::Moto::start();
    let seed = emulator.seed(&["--tasks-per-service", "1"]);
    let ecs = aws_sdk_ecs::Client::new(&emulator.sdk_config().await);
    let dir = tempfile::tempdir().unwrap();
    let queue = match args.events {
        true => Some(events::routed_queue(&emulator, "ecs-events").await),
        false => None,
    };
    let config = write_config(
        dir.path(),
        &emulator.endpoint,
        args.interval,
        queue.as_deref(),
    );
    let (_reload, reload_rx) = tokio::sync::mpsc::channel(1);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let daemon =
        ecs_xds::daemon::Daemon::start(ecs_xds::cli::load(&config).expect("settings load"), None)
            .await
            .expect("ecs-xds starts");
    let (xds, admin) = (daemon.xds_addr(), daemon.admin_addr());
    let daemon = tokio::spawn(daemon.run(reload_rx, async {
        let _ = stopped.await;
    }));
    let envoy = envoy::Envoy::start("sidecar-bench", xds, envoy::AdsMode::Sotw).await;
    wait_for(&envoy, &task_ips(&ecs).await, Duration::from_secs(30)).await;

    if args.events {
        // Until the daemon reads its queue, an event would wait in it: start once it does.
        wait_for_events_mode(admin).await;
    }
    let mut started: Vec<String> = Vec::new();
    let mut latencies = Vec::with_capacity(args.changes);
    for i in 0..args.changes {
        // Alternate: one task up, one task down, so the service stays small.
        let arn = if i % 2 == 0 {
            let arn = run_web_task(&ecs, &seed).await;
            started.push(arn.clone());
            arn
        } else {
            let arn = started.pop().unwrap();
            ecs.stop_task()
                .cluster("demo")
                .task(&arn)
                .send()
                .await
                .unwrap();
            arn
        };
        let want = task_ips(&ecs).await;
        // Each task's version: 2 when started, 3 when stopped.
        let detail = args
            .events
            .then(|| events::task_detail(&emulator, "demo", &arn, 2 + (i % 2) as i64));
        let changed_at = Instant::now();
        if let Some(detail) = &detail {
            events::put_task_event(&emulator, detail);
        }
        let limit = match args.events {
            true => Duration::from_secs(10),
            false => args.interval * 5,
        };
        wait_for(&envoy, &want, limit).await;
        let took = changed_at.elapsed();
        latencies.push(took);
        eprintln!(
            "convergence: change {:>2} reached Envoy in {} ms",
            i + 1,
            took.as_millis()
        );
    }
    envoy.stop().await;
    let _ = stop.send(());
    let _ = daemon.await;

    latencies.sort();
    let pct = |p: usize| {
        latencies[(latencies.len() * p)
            .div_ceil(100)
            .clamp(1, latencies.len())
            - 1]
    };
    match args.events {
        true => println!(
            "convergence mode=events changes={} p50_ms={} p99_ms={} max_ms={}",
            args.changes,
            pct(50).as_millis(),
            pct(99).as_millis(),
            latencies.last().unwrap().as_millis()
        ),
        false => println!(
            "convergence changes={} interval_ms={} p50_ms={} p99_ms={}",
            args.changes,
            args.interval.as_millis(),
            pct(50).as_millis(),
            pct(99).as_millis()
        ),
    }
}

/// Waits until the daemon's `/metrics` says it is in events mode.
async fn wait_for_events_mode(admin: std::net::SocketAddr) {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let started = Instant::now();
    loop {
        let metrics = match client.get(format!("http://{admin}/metrics")).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if metrics.contains("ecs_xds_discovery_mode{mode=\"events\"} 1") {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the daemon never read its queue"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn write_config(
    dir: &Path,
    endpoint: &str,
    interval: Duration,
    queue: Option<&str>,
) -> std::path::PathBuf {
    let config = dir.join("ecs-xds.toml");
    let mut settings = format!(
        "[xds]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[aws]\nendpoint_url = \"{endpoint}\"\n\
         [ecs]\nclusters = [\"demo\"]\npoll_interval = \"{}\"\n",
        humantime::format_duration(interval)
    );
    if let Some(queue) = queue {
        // The poll runs once an hour: every change comes through its event.
        settings = settings.replace(
            &format!(
                "poll_interval = \"{}\"",
                humantime::format_duration(interval)
            ),
            "poll_interval = \"1h\"",
        );
        settings.push_str(&format!(
            "[events]\nenabled = true\nqueue_url = \"{queue}\"\nreconcile_interval = \"1h\"\n"
        ));
    }
    std::fs::write(&config, settings).unwrap();
    // The project's sidecar template, with its listeners moved to free loopback ports.
    let sidecar = std::fs::read_to_string(moto::repo_root().join("config/templates/sidecar.toml"))
        .unwrap()
        .replace(
            "port_value = 15001",
            &format!("port_value = {}", envoy::free_port()),
        )
        .replace(
            "port_value = 15000",
            &format!("port_value = {}", envoy::free_port()),
        )
        .replace("\"0.0.0.0\"", "\"127.0.0.1\"");
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    std::fs::write(dir.join("templates/sidecar.toml"), sidecar).unwrap();
    config
}

async fn run_web_task(ecs: &aws_sdk_ecs::Client, seed: &serde_json::Value) -> String {
    moto::run_service_task(ecs, seed, "web").await
}

/// The running `web` tasks' endpoints, `ip:8080`, from ECS.
async fn task_ips(ecs: &aws_sdk_ecs::Client) -> BTreeSet<String> {
    let ips = moto::running_task_ips(ecs, "web").await;
    ips.into_iter().map(|ip| format!("{ip}:8080")).collect()
}

/// Waits until Envoy's `web` endpoints are exactly `want`; returns how long it took.
async fn wait_for(envoy: &envoy::Envoy, want: &BTreeSet<String>, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let held = envoy.versions().await;
        let web: BTreeSet<String> = held
            .endpoints
            .iter()
            .find(|(name, _)| name == "web")
            .map(|(_, addrs)| addrs.iter().cloned().collect())
            .unwrap_or_default();
        if web == *want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "Envoy has web {web:?}, expected {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
