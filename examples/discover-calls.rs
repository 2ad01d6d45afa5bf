//! Measures discovery's AWS call efficiency on recorded responses: 1,000 ECS services with
//! 10,000 awsvpc tasks in one cluster, one task-definition revision per service.
//!
//! `cargo run --release --example discover-calls` prints, last, exactly one line:
//! `discover-calls services=1000 tasks=10000 calls=N minimum=M ratio=R build_ms=...`
//! where the minimum is ⌈tasks/100⌉ ListTasks pages + ⌈tasks/100⌉ DescribeTasks +
//! ⌈services/10⌉ DescribeServices + one DescribeTaskDefinition per new revision, and
//! build_ms is the wall time of that (cold) poll. A line before it gives the same for a second,
//! warm poll, where every revision is already cached.
//!
//! Before those, the event mode: an hour of simulated time with 10 task changes a second (a
//! task of some service starts, or an earlier one stops, each announced by its ECS task state
//! change event, applied in batches of 10 as SQS hands them out) and the reconcile poll every
//! 5 minutes, against polling every 5 s:
//! `discover-calls events hours=1 changes=36000 reconciles=12 ecs_calls=N polling_ecs_calls=M ratio=R describe_calls_for_events=0 ...`.

#[path = "../tests/support/fake_aws.rs"]
mod fake_aws;

use std::time::Instant;

use ecs_xds::aws::CallCounter;
use ecs_xds::discover::events::{decode, Event, EventOutcome};
use ecs_xds::discover::Poller;
use ecs_xds::settings::DiscoverSettings;

const SERVICES: usize = 1000;
const TASKS: usize = 10_000;
/// The simulated hour: 10 changes a second, a reconcile every 5 minutes, polling every 5 s.
const CHANGES_PER_SECOND: usize = 10;
const SECONDS: usize = 3600;
const RECONCILE_SECONDS: usize = 300;
const POLL_SECONDS: usize = 5;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    events_mode().await;
    polling_mode().await;
}

/// Operations ECS counts against its read quotas.
fn ecs_calls(calls: &CallCounter) -> u64 {
    calls
        .snapshot()
        .iter()
        .filter(|(op, _, _)| {
            matches!(
                *op,
                "ListClusters"
                    | "ListTasks"
                    | "DescribeTasks"
                    | "DescribeServices"
                    | "DescribeTaskDefinition"
                    | "DescribeContainerInstances"
            )
        })
        .map(|(_, _, n)| n)
        .sum()
}

fn describe_calls(calls: &CallCounter) -> u64 {
    [
        "DescribeTasks",
        "DescribeServices",
        "DescribeTaskDefinition",
        "DescribeContainerInstances",
    ]
    .iter()
    .map(|op| calls.operation_total(op))
    .sum()
}

/// The task state change event ECS sends for `task` of `service` (awsvpc, the service's one
/// revision), as SQS delivers it.
fn task_event(id: &str, service: &str, ip: &str, version: i64, status: &str) -> Event {
    let arn = fake_aws::task_arn("prod", id);
    let body = serde_json::json!({
        "version": "0", "id": format!("{id}-{version}"), "detail-type": "ECS Task State Change",
        "source": "aws.ecs", "account": fake_aws::ACCOUNT, "time": "2026-01-01T00:00:00Z",
        "region": fake_aws::REGION, "resources": [arn],
        "detail": {
            "taskArn": arn,
            "clusterArn": format!("arn:aws:ecs:{}:{}:cluster/prod", fake_aws::REGION, fake_aws::ACCOUNT),
            "lastStatus": status, "desiredStatus": status, "group": format!("service:{service}"),
            "taskDefinitionArn": fake_aws::task_def_arn(service, 1), "availabilityZone": "us-east-1a",
            "attachments": [{"type": "eni", "status": "ATTACHED",
                "details": [{"name": "privateIPv4Address", "value": ip}]}],
            "containers": [{"name": "app", "lastStatus": status}],
            "version": version,
        },
    });
    decode(&body.to_string()).expect("a well-formed event")
}

/// An hour of 10 changes a second through events, with the 5-minute reconcile.
async fn events_mode() {
    let fake = fake_aws::Fake::default();
    fake_aws::populate(&mut fake.world(), "prod", SERVICES, TASKS);
    let aws = fake.aws();
    let calls = aws.calls().clone();
    let mut settings = DiscoverSettings::default();
    settings.ecs.clusters = vec!["prod".to_owned()];
    let settings = settings.check().expect("valid settings");
    let mut poller = Poller::new(settings, aws).expect("valid settings");
    check(&poller.poll().await);
    let after_first_poll = ecs_calls(&calls);

    let started = Instant::now();
    let (mut reconciles, mut corrected, mut event_describes) = (0, 0, 0);
    let mut running: std::collections::VecDeque<(String, String, String)> = Default::default();
    let mut change = 0usize;
    for second in 1..=SECONDS {
        // One SQS batch: this second's changes, applied and reflected in ECS's own state.
        let mut batch = Vec::with_capacity(CHANGES_PER_SECOND);
        for _ in 0..CHANGES_PER_SECOND {
            change += 1;
            if change % 2 == 1 || running.is_empty() {
                let (id, service) = (
                    format!("new{change:06}"),
                    format!("svc-{:04}", change % SERVICES),
                );
                let ip = format!("10.200.{}.{}", (change >> 8) & 255, change & 255);
                // No container health check: events carry no task health, so a task with one
                // is `unknown` until the next reconcile reads it.
                let mut task = fake_aws::awsvpc_task(
                    "prod",
                    &id,
                    &service,
                    &fake_aws::task_def_arn(&service, 1),
                    &ip,
                    "us-east-1a",
                );
                task.health_status = None;
                fake.world().tasks.get_mut("prod").unwrap().push(task);
                batch.push(task_event(&id, &service, &ip, 1, "RUNNING"));
                running.push_back((id, service, ip));
            } else {
                let (id, service, ip) = running.pop_front().unwrap();
                let arn = fake_aws::task_arn("prod", &id);
                fake.world()
                    .tasks
                    .get_mut("prod")
                    .unwrap()
                    .retain(|t| t.task_arn() != Some(arn.as_str()));
                batch.push(task_event(&id, &service, &ip, 2, "STOPPED"));
            }
        }
        let before = describe_calls(&calls);
        let refs: Vec<&Event> = batch.iter().collect();
        let outcomes = poller.apply_events(&refs).await;
        assert!(
            outcomes.iter().all(|o| *o == EventOutcome::Applied),
            "{outcomes:?}"
        );
        event_describes += describe_calls(&calls) - before;
        if second % RECONCILE_SECONDS == 0 {
            let held = poller.complete_inventory();
            let report = poller.poll().await;
            assert!(report.errors.is_empty(), "{:?}", report.errors);
            reconciles += 1;
            corrected += usize::from(report.inventory != held);
        }
    }
    let event_calls = ecs_calls(&calls) - after_first_poll;
    let warm_poll = (TASKS.div_ceil(100) * 2 + SERVICES.div_ceil(10)) as u64;
    let polling_calls = (SECONDS / POLL_SECONDS) as u64 * warm_poll;
    println!(
        "discover-calls events hours=1 changes={change} reconciles={reconciles} reconciles_that_corrected={corrected} \
         ecs_calls={event_calls} polling_ecs_calls={polling_calls} ratio={:.4} describe_calls_for_events={event_describes} \
         sqs_receives={SECONDS} sqs_deletes={SECONDS} sim_ms={}",
        event_calls as f64 / polling_calls as f64,
        started.elapsed().as_millis()
    );
}

/// The poll alone: one cold and one warm poll of the same fleet.
async fn polling_mode() {
    let fake = fake_aws::Fake::default();
    fake_aws::populate(&mut fake.world(), "prod", SERVICES, TASKS);
    let aws = fake.aws();
    let calls = aws.calls().clone();
    let mut settings = DiscoverSettings::default();
    settings.ecs.clusters = vec!["prod".to_owned()];
    let settings = settings.check().expect("valid settings");
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
