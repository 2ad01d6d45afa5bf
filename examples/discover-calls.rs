//! Measures discovery's AWS call efficiency on recorded responses: 1,000 ECS services with
//! 10,000 awsvpc tasks in one cluster, one task-definition revision per service.
//!
//! `cargo run --release --example discover-calls` prints, last, exactly one line:
//! `discover-calls services=1000 tasks=10000 calls=N minimum=M ratio=R build_ms=...`
//! where the minimum is ⌈tasks/100⌉ ListTasks pages + ⌈tasks/100⌉ DescribeTasks +
//! ⌈services/10⌉ DescribeServices + one DescribeTaskDefinition per new revision, and
//! build_ms is the wall time of that (cold) poll. A line before it gives the same for a second,
//! warm poll, where every revision is already cached.

#[path = "../tests/support/fake_aws.rs"]
mod fake_aws;

use std::time::Instant;

use ecs_xds::discover::{DiscoverSettings, Poller};

const SERVICES: usize = 1000;
const TASKS: usize = 10_000;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let fake = fake_aws::Fake::default();
    fake_aws::populate(&mut fake.world(), "prod", SERVICES, TASKS);
    let aws = fake.aws();
    let calls = aws.calls().clone();
    let mut settings = DiscoverSettings::default();
    settings.ecs.clusters = vec!["prod".to_owned()];
    let mut poller = Poller::new(settings, aws).expect("valid settings");

    let pages = TASKS.div_ceil(100) as u64;
    let steady_minimum = pages + pages + SERVICES.div_ceil(10) as u64;

    let started = Instant::now();
    let cold = poller.poll().await;
    let cold_ms = started.elapsed().as_millis();
    let cold_calls = calls.total();
    check(&cold);

    let started = Instant::now();
    let warm = poller.poll().await;
    let warm_ms = started.elapsed().as_millis();
    let warm_calls = calls.total() - cold_calls;
    check(&warm);
    assert_eq!(
        cold.inventory, warm.inventory,
        "same AWS state, same inventory"
    );

    for (operation, outcome, count) in calls.snapshot() {
        println!("  {operation:<24} {:<9} {count}", outcome.as_str());
    }
    println!(
        "discover-calls warm-poll services={SERVICES} tasks={TASKS} calls={warm_calls} minimum={steady_minimum} ratio={:.3} build_ms={warm_ms}",
        warm_calls as f64 / steady_minimum as f64
    );
    let minimum = steady_minimum + SERVICES as u64;
    println!(
        "discover-calls services={SERVICES} tasks={TASKS} calls={cold_calls} minimum={minimum} ratio={:.3} build_ms={cold_ms}",
        cold_calls as f64 / minimum as f64
    );
}

fn check(report: &ecs_xds::discover::poller::PollReport) {
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let inventory = report.inventory.as_ref().expect("complete inventory");
    assert_eq!(inventory.clusters.len(), SERVICES);
    assert_eq!(inventory.endpoint_count(), TASKS);
}
