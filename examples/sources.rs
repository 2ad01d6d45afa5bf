//! Measures discovery over several accounts and regions (`[[ecs.sources]]`) against one, on a
//! moto server this tool starts (from the project venv, `scripts/setup-test-env.sh`): the own
//! account's cluster `demo` in us-east-1, and cluster `prod` in member accounts 222222222222
//! (us-east-1, eu-west-1) and 333333333333 (us-east-1), each with `--tasks` tasks per service.
//!
//! `cargo run --release --example sources -- [--tasks N] [--runs R] [--delay-ms D]` prints:
//! - `sources calls source=ACCOUNT/REGION cold=N warm=M per_second_at_5s=X` per source: the
//!   requests of a first poll (roles assumed, task definitions read) and of the next one;
//! - `sources startup sources=1 ms=...` and `sources startup sources=4 ms=... ratio=R`: the
//!   median wall time from a new poller to its first complete inventory, over R runs each
//!   (the four scopes are polled side by side; one after another would be about 4×).
//!
//! Requests go through `tests/support/deny_proxy.py`, which holds each answer `--delay-ms`
//! (default 30): the round trip to AWS, which moto on 127.0.0.1 lacks. moto itself answers one
//! request at a time (Python), so its own time does not overlap; the ratio is the figure.

#[path = "../tests/support/deny_proxy.rs"]
mod deny_proxy;
#[path = "../tests/support/moto.rs"]
mod moto;

use std::time::{Duration, Instant};

use ecs_xds::aws::{Aws, CallCounter};
use ecs_xds::discover::Poller;
use ecs_xds::settings::{DiscoverSettings, SourceSettings};

const MEMBER: &str = "arn:aws:iam::222222222222:role/ecs-xds-reader";
const OTHER: &str = "arn:aws:iam::333333333333:role/ecs-xds-reader";
const POLL_SECONDS: f64 = 5.0;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let tasks = arg("--tasks", 10);
    let runs = arg("--runs", 5);
    let delay = arg("--delay-ms", 30);
    let emulator = moto::Moto::start();
    let proxy = deny_proxy::DenyProxy::with_delay(&emulator, delay as u64);
    let per_service = tasks.to_string();
    let prod = ["--tasks-per-service", &per_service, "--cluster", "prod"];
    emulator.seed(&["--tasks-per-service", &per_service]);
    emulator.seed_in(Some(MEMBER), "us-east-1", &prod);
    emulator.seed_in(Some(MEMBER), "eu-west-1", &prod);
    emulator.seed_in(Some(OTHER), "us-east-1", &prod);
    println!("sources seeded tasks_per_service={tasks} services=3 scopes=4 delay_ms={delay}");

    let endpoint = &proxy.endpoint;
    calls_per_source(&emulator, endpoint).await;
    let one = median_startup(&emulator, endpoint, false, runs).await;
    let four = median_startup(&emulator, endpoint, true, runs).await;
    println!("sources startup sources=1 ms={:.1}", ms(one));
    println!(
        "sources startup sources=4 ms={:.1} ratio={:.2}",
        ms(four),
        four.as_secs_f64() / one.as_secs_f64()
    );
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    let at = args.iter().position(|a| a == name);
    at.and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(default)
}

fn settings(several: bool) -> DiscoverSettings {
    let mut s = DiscoverSettings::default();
    if !several {
        s.ecs.clusters = vec!["demo".into()];
        return s;
    }
    let member = |role: &str, regions: &[&str]| SourceSettings {
        role_arn: Some(role.into()),
        regions: regions.iter().map(|r| r.to_string()).collect(),
        clusters: vec!["prod".into()],
        ..SourceSettings::default()
    };
    s.ecs.merge = true;
    s.ecs.sources = vec![
        SourceSettings {
            clusters: vec!["demo".into()],
            ..SourceSettings::default()
        },
        member(MEMBER, &["us-east-1", "eu-west-1"]),
        member(OTHER, &["us-east-1"]),
    ];
    s
}

/// A poller whose requests go to `endpoint`.
async fn poller(emulator: &moto::Moto, endpoint: &str, several: bool) -> (Poller, CallCounter) {
    let config = emulator.sdk_config().await.to_builder();
    let aws = Aws::from_sdk_config(&config.endpoint_url(endpoint).build()).unwrap();
    let calls = aws.calls().clone();
    let settings = settings(several).check().expect("valid settings");
    (Poller::new(settings, aws).unwrap(), calls)
}

/// Each source's requests in a cold poll and a warm one, and what the warm one costs its
/// account per second when polling every 5 s.
async fn calls_per_source(emulator: &moto::Moto, endpoint: &str) {
    let (mut poller, calls) = poller(emulator, endpoint, true).await;
    let report = poller.poll().await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let cold = by_source(&calls);
    assert!(poller.poll().await.errors.is_empty());
    let both = by_source(&calls);
    for (source, total) in &both {
        let first = cold
            .iter()
            .find(|(s, _)| s == source)
            .map_or(0, |(_, n)| *n);
        let warm = total - first;
        println!(
            "sources calls source={source} cold={first} warm={warm} per_second_at_5s={:.2}",
            warm as f64 / POLL_SECONDS
        );
    }
}

fn by_source(calls: &CallCounter) -> Vec<(String, u64)> {
    let mut totals: Vec<(String, u64)> = Vec::new();
    for (source, _, _, n) in calls.snapshot_by_source() {
        match totals.iter_mut().find(|(s, _)| **s == *source) {
            Some((_, total)) => *total += n,
            None => totals.push((source.to_string(), n)),
        }
    }
    totals
}

/// The median time from a new poller to its first complete inventory.
async fn median_startup(
    emulator: &moto::Moto,
    endpoint: &str,
    several: bool,
    runs: usize,
) -> Duration {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let (mut poller, _) = poller(emulator, endpoint, several).await;
        let started = Instant::now();
        let report = poller.poll().await;
        times.push(started.elapsed());
        assert!(report.inventory.is_some(), "{:?}", report.errors);
    }
    times.sort();
    times[times.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
