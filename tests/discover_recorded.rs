//! Discovery on recorded AWS responses (aws-smithy-mocks), for what moto can't produce:
//! paging, batch limits, bridge and host networking, task health, draining, throttling and
//! failures part way through a poll.

use crate::support;

use std::sync::Arc;

use aws_sdk_ecs::types::{HealthStatus, NetworkMode, Tag};
use ecs_xds::aws::Outcome;
use ecs_xds::discover::Poller;
use ecs_xds::inventory::{Health, Inventory, Source};
use ecs_xds::settings::DiscoverSettings;
use support::fake_aws::{self, awsvpc_task, ec2_task, task_def, task_def_arn, Fake, World};
use tokio::sync::watch;

fn settings(clusters: &[&str]) -> DiscoverSettings {
    let mut s = DiscoverSettings::default();
    s.ecs.clusters = clusters.iter().map(|c| c.to_string()).collect();
    s
}

fn channel() -> (
    watch::Sender<Arc<Inventory>>,
    watch::Receiver<Arc<Inventory>>,
) {
    watch::channel(Arc::new(Inventory::default()))
}

/// Three awsvpc tasks of service `web` in `cluster`, one task definition.
fn web(world: &mut World, cluster: &str) {
    let td = task_def_arn("web", 1);
    world.task_defs.insert(
        td.clone(),
        task_def("web", 1, NetworkMode::Awsvpc, &[(8080, None)]),
    );
    world
        .services
        .insert((cluster.into(), "web".into()), Vec::new());
    world.tasks.insert(
        cluster.into(),
        (1..=3)
            .map(|i| {
                awsvpc_task(
                    cluster,
                    &format!("t{i}"),
                    "web",
                    &td,
                    &format!("10.0.0.{i}"),
                    "us-east-1a",
                )
            })
            .collect(),
    );
}

fn addresses(inv: &Inventory, cluster: &str) -> Vec<String> {
    inv.clusters[cluster]
        .endpoints
        .iter()
        .map(|e| format!("{}:{}", e.address, e.port))
        .collect()
}

#[tokio::test]
async fn list_tasks_pages_and_describe_batches_stay_within_ecs_limits() {
    let fake = Fake::default();
    fake_aws::populate(&mut fake.world(), "big", 25, 250);
    let aws = fake.aws();
    let calls = aws.calls().clone();
    let inv = ecs_xds::discover::discover_once_with(settings(&["big"]).check().unwrap(), aws)
        .await
        .unwrap();
    assert_eq!(inv.clusters.len(), 25);
    assert_eq!(inv.endpoint_count(), 250);
    // The fake answers InvalidParameterException to batches over ECS's limits.
    assert_eq!(calls.get("ListTasks", Outcome::Ok), 3, "pages of 100");
    assert_eq!(calls.get("DescribeTasks", Outcome::Ok), 3, "batches of 100");
    assert_eq!(
        calls.get("DescribeServices", Outcome::Ok),
        3,
        "batches of 10"
    );
    assert_eq!(calls.get("DescribeTaskDefinition", Outcome::Ok), 25);
    assert_eq!(calls.total(), 34, "{:?}", calls.snapshot());
}

#[tokio::test]
async fn bridge_tasks_use_the_host_ip_and_dynamic_host_ports_and_hosts_are_cached() {
    let fake = Fake::default();
    {
        let mut w = fake.world();
        let td = task_def_arn("legacy", 3);
        w.task_defs.insert(
            td.clone(),
            task_def("legacy", 3, NetworkMode::Bridge, &[(8080, None)]),
        );
        w.services
            .insert(("ec2".into(), "legacy".into()), Vec::new());
        w.container_instances.insert("ci-a".into(), "i-aaa".into());
        w.container_instances.insert("ci-b".into(), "i-bbb".into());
        w.instance_ips.insert("i-aaa".into(), "172.31.0.10".into());
        w.instance_ips.insert("i-bbb".into(), "172.31.0.11".into());
        w.tasks.insert(
            "ec2".into(),
            vec![
                ec2_task("ec2", "b1", "legacy", &td, "ci-a", &[(8080, 32768)]),
                ec2_task("ec2", "b2", "legacy", &td, "ci-a", &[(8080, 32771)]),
                ec2_task("ec2", "b3", "legacy", &td, "ci-b", &[(8080, 49153)]),
            ],
        );
    }
    let aws = fake.aws();
    let calls = aws.calls().clone();
    let mut poller = Poller::new(settings(&["ec2"]).check().unwrap(), aws).unwrap();
    let inv = poller.poll().await.inventory.unwrap();
    assert_eq!(
        addresses(&inv, "legacy"),
        [
            "172.31.0.10:32768",
            "172.31.0.10:32771",
            "172.31.0.11:49153"
        ]
    );
    assert_eq!(
        inv.clusters["legacy"].endpoints[0].locality.zone.as_deref(),
        Some("us-east-1b")
    );
    assert_eq!(calls.operation_total("DescribeContainerInstances"), 1);
    assert_eq!(calls.operation_total("DescribeInstances"), 1);

    poller.poll().await.inventory.unwrap();
    assert_eq!(
        calls.operation_total("DescribeContainerInstances"),
        1,
        "hosts are cached"
    );
    assert_eq!(
        calls.operation_total("DescribeInstances"),
        1,
        "hosts are cached"
    );
}

#[tokio::test]
async fn host_networking_uses_the_host_ip_and_the_container_port() {
    let fake = Fake::default();
    {
        let mut w = fake.world();
        let td = task_def_arn("metrics", 1);
        w.task_defs.insert(
            td.clone(),
            task_def("metrics", 1, NetworkMode::Host, &[(9100, Some("prom"))]),
        );
        w.container_instances.insert("ci-a".into(), "i-aaa".into());
        w.instance_ips.insert("i-aaa".into(), "172.31.0.10".into());
        w.tasks.insert(
            "ec2".into(),
            vec![ec2_task("ec2", "h1", "metrics", &td, "ci-a", &[])],
        );
    }
    let inv =
        ecs_xds::discover::discover_once_with(settings(&["ec2"]).check().unwrap(), fake.aws())
            .await
            .unwrap();
    assert_eq!(addresses(&inv, "metrics.prom"), ["172.31.0.10:9100"]);
    assert_eq!(
        inv.clusters["metrics.prom"].port_name.as_deref(),
        Some("prom")
    );
}

#[tokio::test]
async fn task_health_maps_and_a_stopping_task_drains_until_it_stops() {
    let fake = Fake::default();
    {
        let mut w = fake.world();
        web(&mut w, "demo");
        let tasks = w.tasks.get_mut("demo").unwrap();
        tasks[1].health_status = Some(HealthStatus::Unhealthy);
        tasks[2].health_status = None;
        let mut unknown = awsvpc_task(
            "demo",
            "t4",
            "web",
            &task_def_arn("web", 1),
            "10.0.0.4",
            "us-east-1a",
        );
        unknown.health_status = Some(HealthStatus::from("UNKNOWN"));
        tasks.push(unknown);
    }
    let aws = fake.aws();
    let calls = aws.calls().clone();
    let mut poller = Poller::new(settings(&["demo"]).check().unwrap(), aws).unwrap();
    let health = |inv: &Inventory| {
        inv.clusters["web"]
            .endpoints
            .iter()
            .map(|e| (e.id.clone(), e.health))
            .collect::<Vec<_>>()
    };
    let inv = poller.poll().await.inventory.unwrap();
    assert_eq!(
        health(&inv),
        [
            ("t1".into(), Health::Healthy),
            ("t2".into(), Health::Unhealthy),
            ("t3".into(), Health::Unknown),
            ("t4".into(), Health::Unknown)
        ]
    );

    // ECS is stopping t1: desired STOPPED, still RUNNING, so ListTasks no longer lists it.
    {
        let mut w = fake.world();
        w.tasks.get_mut("demo").unwrap()[0].desired_status = Some("STOPPED".into());
    }
    let before = calls.operation_total("DescribeTasks");
    let inv = poller.poll().await.inventory.unwrap();
    assert_eq!(health(&inv)[0], ("t1".into(), Health::Draining));
    assert_eq!(
        calls.operation_total("DescribeTasks") - before,
        2,
        "one batch listed, one batch vanished"
    );

    // Still stopping on the next poll: still draining.
    let inv = poller.poll().await.inventory.unwrap();
    assert_eq!(health(&inv)[0], ("t1".into(), Health::Draining));

    // Stopped: gone, and no longer described.
    {
        let mut w = fake.world();
        w.tasks.get_mut("demo").unwrap()[0].last_status = Some("STOPPED".into());
    }
    let inv = poller.poll().await.inventory.unwrap();
    assert_eq!(inv.clusters["web"].endpoints.len(), 3);
    let before = calls.operation_total("DescribeTasks");
    poller.poll().await.inventory.unwrap();
    assert_eq!(calls.operation_total("DescribeTasks") - before, 1);
}

#[tokio::test]
async fn throttled_list_tasks_is_retried_with_backoff_then_succeeds() {
    let fake = Fake::default();
    web(&mut fake.world(), "demo");
    fake.world().throttle_list_tasks = 2;
    let aws = fake.aws();
    let calls = aws.calls().clone();
    let inv = ecs_xds::discover::discover_once_with(settings(&["demo"]).check().unwrap(), aws)
        .await
        .unwrap();
    assert_eq!(inv.clusters["web"].endpoints.len(), 3);
    assert_eq!(calls.get("ListTasks", Outcome::Throttled), 2);
    assert_eq!(calls.get("ListTasks", Outcome::Ok), 1);
}

#[tokio::test]
async fn throttling_beyond_the_retry_budget_fails_the_source_naming_the_operation() {
    let fake = Fake::default();
    web(&mut fake.world(), "demo");
    fake.world().throttle_list_tasks = 100;
    let err =
        ecs_xds::discover::discover_once_with(settings(&["demo"]).check().unwrap(), fake.aws())
            .await
            .unwrap_err();
    let message = err.to_string();
    assert!(
        message.starts_with("ListTasks on ECS cluster demo failed:"),
        "{message}"
    );
    assert!(message.contains("ThrottlingException"), "{message}");
}

#[tokio::test]
async fn describe_tasks_failure_mid_poll_keeps_publishing_the_previous_inventory() {
    let fake = Fake::default();
    web(&mut fake.world(), "a");
    {
        let mut w = fake.world();
        let td = task_def_arn("api", 1);
        w.task_defs.insert(
            td.clone(),
            task_def("api", 1, NetworkMode::Awsvpc, &[(9000, None)]),
        );
        w.tasks.insert(
            "b".into(),
            vec![awsvpc_task("b", "x1", "api", &td, "10.1.0.1", "us-east-1c")],
        );
    }
    let aws = fake.aws();
    let calls = aws.calls().clone();
    let mut poller = Poller::new(settings(&["a", "b"]).check().unwrap(), aws).unwrap();
    let (tx, mut rx) = channel();
    assert!(poller.poll_and_publish(&tx).await);
    let first = rx.borrow_and_update().clone();
    assert_eq!(first.endpoint_count(), 4);

    // Cluster `a` loses a task but its DescribeTasks fails; cluster `b` gains one.
    {
        let mut w = fake.world();
        w.tasks.get_mut("a").unwrap().pop();
        w.fail_describe_tasks = vec!["a".into()];
        let td = task_def_arn("api", 1);
        w.tasks.get_mut("b").unwrap().push(awsvpc_task(
            "b",
            "x2",
            "api",
            &td,
            "10.1.0.2",
            "us-east-1c",
        ));
    }
    let report = poller.poll().await;
    assert_eq!(report.errors.len(), 1);
    assert!(
        report.errors[0]
            .to_string()
            .starts_with("DescribeTasks on ECS cluster a failed:"),
        "{}",
        report.errors[0]
    );
    assert!(calls.get("DescribeTasks", Outcome::Error) >= 1);
    let inv = report.inventory.unwrap();
    assert_eq!(
        inv.clusters["web"], first.clusters["web"],
        "the failed source keeps its last good part"
    );
    assert_eq!(
        inv.clusters["api"].endpoints.len(),
        2,
        "the healthy source moves on"
    );

    // Only `a` failing and nothing else changing: nothing new is published.
    fake.world().tasks.get_mut("b").unwrap().pop();
    assert!(!poller.poll_and_publish(&tx).await);
    assert!(!rx.has_changed().unwrap());
    assert_eq!(*rx.borrow(), first);

    // Recovery publishes the fresh state.
    fake.world().fail_describe_tasks.clear();
    assert!(poller.poll_and_publish(&tx).await);
    assert_eq!(rx.borrow_and_update().clusters["web"].endpoints.len(), 2);
}

#[tokio::test]
async fn a_source_that_never_succeeded_blocks_publishing_and_zero_tasks_is_published() {
    let fake = Fake::default();
    web(&mut fake.world(), "demo");
    fake.world().fail_describe_tasks = vec!["demo".into()];
    let mut poller = Poller::new(settings(&["demo"]).check().unwrap(), fake.aws()).unwrap();
    let (tx, mut rx) = channel();
    assert!(
        !poller.poll_and_publish(&tx).await,
        "an error is never published as zero tasks"
    );
    assert!(!rx.has_changed().unwrap());

    fake.world().fail_describe_tasks.clear();
    assert!(poller.poll_and_publish(&tx).await);
    assert_eq!(rx.borrow_and_update().endpoint_count(), 3);

    fake.world().tasks.get_mut("demo").unwrap().clear();
    assert!(
        poller.poll_and_publish(&tx).await,
        "a successful poll with zero tasks is real"
    );
    assert!(rx.borrow_and_update().clusters.is_empty());
}

#[tokio::test]
async fn same_service_in_two_ecs_clusters_is_reported_and_never_merged() {
    let fake = Fake::default();
    web(&mut fake.world(), "first");
    web(&mut fake.world(), "second");
    let inv = ecs_xds::discover::discover_once_with(
        settings(&["second", "first"]).check().unwrap(),
        fake.aws(),
    )
    .await
    .unwrap();
    let web = &inv.clusters["web"];
    assert_eq!(
        web.source,
        Source::Ecs {
            ecs_cluster: "second".into(),
            service: "web".into()
        },
        "listed first wins"
    );
    assert_eq!(web.endpoints.len(), 3);
    assert_eq!(inv.warnings.len(), 1);
    assert!(
        inv.warnings[0].contains("ecs:second/web and ecs:first/web"),
        "{}",
        inv.warnings[0]
    );
}

#[tokio::test]
async fn service_tags_override_and_auto_discovery_finds_every_cluster() {
    let fake = Fake::default();
    web(&mut fake.world(), "alpha");
    web(&mut fake.world(), "beta");
    fake.world().services.insert(
        ("beta".into(), "web".into()),
        vec![Tag::builder()
            .key("ecs-xds.cluster-name")
            .value("web-beta")
            .build()],
    );
    let mut s = DiscoverSettings::default();
    s.ecs.auto_discover_clusters = true;
    let inv = ecs_xds::discover::discover_once_with(s.check().unwrap(), fake.aws())
        .await
        .unwrap();
    assert_eq!(
        inv.clusters.keys().map(String::as_str).collect::<Vec<_>>(),
        ["web", "web-beta"]
    );
    assert!(inv.warnings.is_empty());
}

#[tokio::test]
async fn run_publishes_each_change_once_and_stops_at_shutdown() {
    let fake = Fake::default();
    web(&mut fake.world(), "demo");
    let mut s = settings(&["demo"]);
    s.ecs.poll_interval = std::time::Duration::from_secs(1);
    let aws = fake.aws();
    let calls = aws.calls().clone();
    let poller = Poller::new(s.check().unwrap(), aws).unwrap();
    let (tx, mut rx) = channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(poller.run(tx, async {
        let _ = stopped.await;
    }));

    rx.changed().await.unwrap();
    assert_eq!(rx.borrow_and_update().endpoint_count(), 3);
    // More poll intervals with no change: polled, but nothing is published.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert!(!rx.has_changed().unwrap());
    assert!(
        calls.operation_total("ListTasks") >= 3,
        "{:?}",
        calls.snapshot()
    );

    fake.world().tasks.get_mut("demo").unwrap().pop();
    tokio::time::timeout(std::time::Duration::from_secs(5), rx.changed())
        .await
        .expect("published")
        .unwrap();
    assert_eq!(rx.borrow_and_update().endpoint_count(), 2);

    stop.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(1), run)
        .await
        .expect("run stops at shutdown")
        .unwrap();
}
