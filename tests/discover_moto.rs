//! Discovery against a real moto server, over HTTP, through the real AWS SDK.
//! Safety: the 10.x addresses moto invents are only read as data, never contacted.

use crate::support;

use std::collections::BTreeSet;
use std::sync::Arc;

use ecs_xds::aws::Aws;
use ecs_xds::discover::Poller;
use ecs_xds::inventory::{Health, Inventory, LbPolicy};
use ecs_xds::settings::DiscoverSettings;
use serde_json::Value;
use support::moto::Moto;

fn settings(clusters: &[&str], namespaces: &[&str]) -> DiscoverSettings {
    let mut s = DiscoverSettings::default();
    s.ecs.clusters = clusters.iter().map(|c| c.to_string()).collect();
    s.cloud_map.namespaces = namespaces.iter().map(|n| n.to_string()).collect();
    s
}

fn endpoint_ids(inv: &Inventory, cluster: &str) -> BTreeSet<String> {
    inv.clusters[cluster]
        .endpoints
        .iter()
        .map(|e| e.id.clone())
        .collect()
}

fn task_ids(seed: &Value, service: &str) -> BTreeSet<String> {
    seed["ecs"]["services"][service]["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|arn| arn.as_str().unwrap().rsplit('/').next().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_follows_fargate_tasks_scaled_up_and_down() {
    let moto = Moto::start();
    let seed = moto.seed(&["--tasks-per-service", "2"]);
    let config = moto.sdk_config().await;
    let aws = Aws::from_sdk_config(&config).unwrap();
    let calls = aws.calls().clone();
    let mut poller = Poller::new(settings(&["demo"], &[]).check().unwrap(), aws).unwrap();
    let (tx, mut rx) = tokio::sync::watch::channel(Arc::new(Inventory::default()));

    assert!(
        poller.poll_and_publish(&tx).await,
        "the first complete inventory is published"
    );
    let inv = rx.borrow_and_update().clone();
    assert_eq!(
        inv.clusters.keys().map(String::as_str).collect::<Vec<_>>(),
        ["api.grpc", "api.http", "orders", "web"],
        "one cluster per named port; the envoy sidecar is skipped"
    );
    assert_eq!(endpoint_ids(&inv, "web"), task_ids(&seed, "web"));
    assert_eq!(endpoint_ids(&inv, "api.grpc"), task_ids(&seed, "api"));
    let api_grpc = &inv.clusters["api.grpc"];
    assert_eq!(api_grpc.overrides.http2, Some(true), "appProtocol grpc");
    assert!(
        api_grpc
            .endpoints
            .iter()
            .all(|e| e.port == 9090 && e.address.starts_with("10.")),
        "ENI private IPs (moto: random 10.x)"
    );
    assert_eq!(
        inv.clusters["orders"].overrides.lb_policy,
        Some(LbPolicy::LeastRequest),
        "service tag"
    );
    let e = &inv.clusters["web"].endpoints[0];
    assert_eq!(
        (e.port, e.health, e.locality.region.as_str()),
        (8080, Health::Unknown, "us-east-1")
    );
    assert!(inv.warnings.is_empty(), "{:?}", inv.warnings);
    assert_eq!(
        [
            calls.operation_total("ListTasks"),
            calls.operation_total("DescribeTasks"),
            calls.operation_total("DescribeServices"),
            calls.operation_total("DescribeTaskDefinition")
        ],
        [1, 1, 1, 3]
    );

    // Nothing changed: nothing published, and task definitions come from the cache.
    assert!(!poller.poll_and_publish(&tx).await);
    assert!(!rx.has_changed().unwrap());
    assert_eq!(calls.operation_total("DescribeTaskDefinition"), 3);

    // Scale web up by one.
    let ecs = aws_sdk_ecs::Client::new(&config);
    let started = support::moto::run_service_task(&ecs, &seed, "web").await;
    let new_id = started.rsplit('/').next().unwrap().to_owned();
    assert!(poller.poll_and_publish(&tx).await);
    let inv = rx.borrow_and_update().clone();
    let mut expected = task_ids(&seed, "web");
    expected.insert(new_id);
    assert_eq!(endpoint_ids(&inv, "web"), expected);

    // Scale api down to zero and web down by one.
    for arn in seed["ecs"]["services"]["api"]["tasks"].as_array().unwrap() {
        ecs.stop_task()
            .cluster("demo")
            .task(arn.as_str().unwrap())
            .send()
            .await
            .unwrap();
    }
    let web_arn = seed["ecs"]["services"]["web"]["tasks"][0].as_str().unwrap();
    ecs.stop_task()
        .cluster("demo")
        .task(web_arn)
        .send()
        .await
        .unwrap();
    assert!(poller.poll_and_publish(&tx).await);
    let inv = rx.borrow_and_update().clone();
    assert_eq!(
        inv.clusters.keys().map(String::as_str).collect::<Vec<_>>(),
        ["orders", "web"]
    );
    expected.remove(web_arn.rsplit('/').next().unwrap());
    assert_eq!(
        endpoint_ids(&inv, "web"),
        expected,
        "moto stops tasks at once: nothing left draining"
    );
    assert_eq!(inv.endpoint_count(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_map_instances_become_endpoints_with_their_health() {
    let moto = Moto::start();
    moto.seed(&[
        "--no-ecs",
        "--namespace",
        "demo.local",
        "--cloudmap-instance",
        "127.0.0.1:8081",
        "--cloudmap-unhealthy-instance",
        "127.0.0.1:8082",
    ]);
    let aws = Aws::from_sdk_config(&moto.sdk_config().await).unwrap();
    let mut poller = Poller::new(settings(&[], &["demo.local"]).check().unwrap(), aws).unwrap();
    let report = poller.poll().await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let inv = report.inventory.unwrap();
    let cluster = &inv.clusters["cloudmap.backend.demo.local"];
    let seen: Vec<(String, u16, Health, Option<String>)> = cluster
        .endpoints
        .iter()
        .map(|e| (e.address.clone(), e.port, e.health, e.locality.zone.clone()))
        .collect();
    let zone = Some("us-east-1a".to_owned());
    assert_eq!(
        seen,
        [
            ("127.0.0.1".to_owned(), 8081, Health::Healthy, zone.clone()),
            ("127.0.0.1".to_owned(), 8082, Health::Unhealthy, zone)
        ]
    );
    assert_eq!(inv.clusters.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_cluster_fails_the_poll_and_publishes_nothing() {
    let moto = Moto::start();
    moto.seed(&["--tasks-per-service", "1"]);
    let aws = Aws::from_sdk_config(&moto.sdk_config().await).unwrap();
    let mut poller = Poller::new(
        settings(&["demo", "no-such-cluster"], &[]).check().unwrap(),
        aws,
    )
    .unwrap();
    let (tx, rx) = tokio::sync::watch::channel(Arc::new(Inventory::default()));
    assert!(!poller.poll_and_publish(&tx).await);
    assert!(
        !rx.has_changed().unwrap(),
        "a failed source is never published as zero tasks"
    );
    let report = poller.poll().await;
    let message = report.errors[0].to_string();
    assert!(
        message.starts_with("ListTasks on ECS cluster no-such-cluster failed:"),
        "{message}"
    );
    assert!(report.inventory.is_none());
}
