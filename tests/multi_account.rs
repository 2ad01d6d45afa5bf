//! Several accounts and regions (`[[ecs.sources]]`) in one moto, through the real AWS SDK: the
//! member account's role assumed by the SDK's own provider, one service merged across regions,
//! fail static per source when the role is removed, and events applied to the right source.
//! Safety: the 10.x addresses moto invents are only read as data, never contacted.

use crate::support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_credential_types::provider::ProvideCredentials;
use ecs_xds::aws::Aws;
use ecs_xds::discover::events::{decode, EventOutcome};
use ecs_xds::discover::Poller;
use ecs_xds::inventory::Inventory;
use ecs_xds::settings::{DiscoverSettings, SourceSettings};
use serde_json::json;
use support::daemon::Running;
use support::deny_proxy::DenyProxy;
use support::envoy::{free_port, AdsMode, Envoy};
use support::http::{get, scrape_metric};
use support::moto::{run_service_task, running_task_ips_in, Moto};
use support::settings::SettingsFile;
use support::templates::egress_sidecar;

const MEMBER_ROLE: &str = "arn:aws:iam::222222222222:role/ecs-xds-reader";
const MEMBER: &str = "222222222222";

/// The own account's `demo` in us-east-1, and the member's `prod` in us-east-1 and eu-west-1.
fn settings(merge: bool) -> DiscoverSettings {
    let mut s = DiscoverSettings::default();
    s.ecs.merge = merge;
    s.ecs.sources = vec![
        SourceSettings {
            clusters: vec!["demo".into()],
            ..SourceSettings::default()
        },
        SourceSettings {
            role_arn: Some(MEMBER_ROLE.into()),
            external_id: Some("mesh-test".into()),
            regions: vec!["us-east-1".into(), "eu-west-1".into()],
            clusters: vec!["prod".into()],
            ..SourceSettings::default()
        },
    ];
    s
}

/// moto with one task per service in each of the three (account, region, cluster)s.
fn seeded(moto: &Moto) -> BTreeMap<&'static str, serde_json::Value> {
    let one = ["--tasks-per-service", "1"];
    let prod = ["--tasks-per-service", "1", "--cluster", "prod"];
    BTreeMap::from([
        ("self", moto.seed(&one)),
        (
            "member-east",
            moto.seed_in(Some(MEMBER_ROLE), "us-east-1", &prod),
        ),
        (
            "member-west",
            moto.seed_in(Some(MEMBER_ROLE), "eu-west-1", &prod),
        ),
    ])
}

/// `cluster`'s endpoints as (region, task id), sorted.
fn placed(inventory: &Inventory, cluster: &str) -> Vec<(String, String)> {
    let endpoints = inventory.clusters[cluster].endpoints.iter();
    let mut placed: Vec<_> = endpoints
        .map(|e| (e.locality.region.clone(), e.id.clone()))
        .collect();
    placed.sort();
    placed
}

fn regions(inventory: &Inventory, cluster: &str) -> Vec<String> {
    placed(inventory, cluster)
        .into_iter()
        .map(|(r, _)| r)
        .collect()
}

/// Task `arn` of the member's eu-west-1 `prod` as DescribeTasks gives it (an event's detail),
/// asked with the member's access key `key`.
fn member_west_detail(moto: &Moto, key: &str, arn: &str) -> serde_json::Value {
    let target = "AmazonEC2ContainerServiceV20141113.DescribeTasks";
    let body = json!({"cluster": "prod", "tasks": [arn]});
    moto.aws_json_as(key, "eu-west-1", target, &body)["tasks"][0].clone()
}

/// A poller whose AWS calls go through `endpoint`.
async fn poller(moto: &Moto, endpoint: &str, merge: bool) -> (Poller, ecs_xds::aws::CallCounter) {
    let config = moto
        .sdk_config()
        .await
        .to_builder()
        .endpoint_url(endpoint)
        .build();
    let aws = Aws::from_sdk_config(&config).unwrap();
    let calls = aws.calls().clone();
    (
        Poller::new(settings(merge).check().unwrap(), aws).unwrap(),
        calls,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_accounts_in_two_regions_merge_and_each_source_fails_static_on_its_own() {
    let moto = Moto::start();
    let proxy = DenyProxy::start(&moto);
    let seeds = seeded(&moto);
    let (mut merged, calls) = poller(&moto, &proxy.endpoint, true).await;

    let report = merged.poll().await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let inventory = report.inventory.expect("every source discovered");
    assert_eq!(
        inventory
            .clusters
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        ["api.grpc", "api.http", "orders", "web"],
        "one cluster per name: the member's services merged into the own account's"
    );
    assert!(inventory.warnings.is_empty(), "{:?}", inventory.warnings);
    assert_eq!(
        regions(&inventory, "web"),
        ["eu-west-1", "us-east-1", "us-east-1"],
        "the own account's task and the member's, each in its region's locality"
    );
    let workload = inventory.clusters["web"].security.workload.clone().unwrap();
    assert_eq!(workload.account, "123456789012", "the first source decides");
    for scope in ["222222222222/us-east-1", "222222222222/eu-west-1"] {
        assert!(
            calls.source_total(scope) >= 3,
            "{scope}: {:?}",
            calls.snapshot_by_source()
        );
    }
    assert!(calls.source_total("self/default") >= 3);

    // Without merge, the own account (listed first) keeps each name and the member's are
    // reported, once per region.
    let (mut apart, _) = poller(&moto, &proxy.endpoint, false).await;
    let inventory = apart.poll().await.inventory.unwrap();
    assert_eq!(regions(&inventory, "web"), ["us-east-1"]);
    let collisions = inventory
        .warnings
        .iter()
        .filter(|w| w.contains("`web`"))
        .count();
    assert_eq!(collisions, 2, "{:?}", inventory.warnings);

    // A task started in the member account's second region appears at the next poll.
    let member_west = moto.sdk_config_as(MEMBER_ROLE, "eu-west-1").await;
    let member_ecs = aws_sdk_ecs::Client::new(&member_west);
    let started = run_service_task(&member_ecs, &seeds["member-west"], "web").await;
    let inventory = merged.poll().await.inventory.unwrap();
    let id = started.rsplit('/').next().unwrap().to_owned();
    assert!(
        placed(&inventory, "web").contains(&("eu-west-1".into(), id)),
        "{:?}",
        placed(&inventory, "web")
    );
    let before = placed(&inventory, "web");

    // The member's role is removed: its two scopes keep their last good parts, the own account
    // goes on (a task started there appears), and each failure names the source and role.
    proxy.deny(MEMBER_ROLE);
    let own = aws_sdk_ecs::Client::new(&moto.sdk_config().await);
    let own_task = run_service_task(&own, &seeds["self"], "web").await;
    let report = merged.poll().await;
    let errors: Vec<String> = report.errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(errors.len(), 2, "{errors:#?}");
    for (error, scope) in errors
        .iter()
        .zip(["222222222222/us-east-1", "222222222222/eu-west-1"])
    {
        assert!(
            error.starts_with(&format!("source {scope} (role {MEMBER_ROLE})")),
            "{error}"
        );
        assert!(error.contains("AccessDenied"), "{error}");
    }
    let inventory = report.inventory.expect("fail static: still complete");
    let now = placed(&inventory, "web");
    let own_id = own_task.rsplit('/').next().unwrap().to_owned();
    assert!(now.contains(&("us-east-1".into(), own_id)), "{now:?}");
    assert!(
        before.iter().all(|e| now.contains(e)),
        "the member's endpoints stay"
    );
    assert!(
        merged.undiscovered().is_empty(),
        "each source succeeded once"
    );

    // A replica starting now never discovers the member: it publishes nothing and says which.
    let (mut late, _) = poller(&moto, &proxy.endpoint, true).await;
    assert_eq!(late.poll().await.inventory, None);
    assert_eq!(
        late.undiscovered(),
        ["222222222222/us-east-1", "222222222222/eu-west-1"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_is_applied_to_the_source_of_its_account_and_region() {
    let moto = Moto::start();
    let seeds = seeded(&moto);
    let (mut poller, _) = poller(&moto, &moto.endpoint, true).await;
    assert!(poller.poll().await.errors.is_empty());

    // ECS in the member account's eu-west-1 starts a task; its event reaches the central bus.
    let config = moto.sdk_config_as(MEMBER_ROLE, "eu-west-1").await;
    let key = config
        .credentials_provider()
        .unwrap()
        .provide_credentials()
        .await
        .unwrap();
    let started = run_service_task(
        &aws_sdk_ecs::Client::new(&config),
        &seeds["member-west"],
        "web",
    )
    .await;
    let mut detail = member_west_detail(&moto, key.access_key_id(), &started);
    assert!(detail["clusterArn"]
        .as_str()
        .unwrap()
        .contains(":eu-west-1:222222222222:"));
    detail["version"] = 2.into();
    let mut envelope = support::events::task_envelope(&detail);
    envelope["account"] = MEMBER.into();
    envelope["region"] = "eu-west-1".into();
    let event = decode(&envelope.to_string()).unwrap();
    assert_eq!(
        poller.apply_events(&[&event]).await,
        [EventOutcome::Applied]
    );
    let inventory = poller.complete_inventory().unwrap();
    let id = started.rsplit('/').next().unwrap().to_owned();
    assert!(placed(&inventory, "web").contains(&("eu-west-1".into(), id)));

    // The same cluster name in an account no source watches is not ours.
    let mut stranger = detail.clone();
    let arn = detail["clusterArn"]
        .as_str()
        .unwrap()
        .replace(MEMBER, "333333333333");
    stranger["clusterArn"] = arn.into();
    stranger["version"] = 3.into();
    let event = decode(&support::events::task_envelope(&stranger).to_string()).unwrap();
    assert_eq!(
        poller.apply_events(&[&event]).await,
        [EventOutcome::Ignored]
    );
}

/// The central event bus of the ecs-xds account, its rule to an SQS queue (the queue's URL),
/// and the rules forwarding ECS events to it from the own account's default bus and the
/// member's in eu-west-1 (what `deploy/multi-account/` sets up; moto's EventBridge forwards
/// across accounts and regions, but has no SNS target, so the bus targets the queue here).
async fn central_bus(moto: &Moto, member_key: &str) -> String {
    let pattern =
        std::fs::read_to_string(support::moto::repo_root().join("deploy/ecs/event-pattern.json"))
            .unwrap();
    let sqs = support::events::sqs(moto).await;
    let queue = sqs
        .create_queue()
        .queue_name("mesh-events")
        .send()
        .await
        .unwrap();
    let queue_arn = "arn:aws:sqs:us-east-1:123456789012:mesh-events";
    let bus = "ecs-xds-events";
    moto.aws_json("AWSEvents.CreateEventBus", &json!({"Name": bus}));
    moto.aws_json(
        "AWSEvents.PutRule",
        &json!({"Name": "to-queue", "EventBusName": bus, "EventPattern": pattern, "State": "ENABLED"}),
    );
    moto.aws_json(
        "AWSEvents.PutTargets",
        &json!({"Rule": "to-queue", "EventBusName": bus, "Targets": [{"Id": "q", "Arn": queue_arn}]}),
    );
    let bus_arn = format!("arn:aws:events:us-east-1:123456789012:event-bus/{bus}");
    for (key, region) in [("testing", "us-east-1"), (member_key, "eu-west-1")] {
        let forward =
            |target: &str, body: serde_json::Value| moto.aws_json_as(key, region, target, &body);
        forward(
            "AWSEvents.PutRule",
            json!({"Name": "ecs-xds-forward", "EventPattern": pattern, "State": "ENABLED"}),
        );
        forward(
            "AWSEvents.PutTargets",
            json!({"Rule": "ecs-xds-forward", "Targets": [{"Id": "central", "Arn": bus_arn}]}),
        );
    }
    queue.queue_url().unwrap().to_owned()
}

/// The daemon's settings: both sources, merged, events from `queue`, polling only at start.
fn daemon_settings(dir: &Path, moto: &Moto, queue: &str) -> PathBuf {
    let sources = format!(
        r#"merge = true
sources = [{{ clusters = ["demo"] }}, {{ role_arn = "{MEMBER_ROLE}", regions = ["us-east-1", "eu-west-1"], clusters = ["prod"] }}]"#
    );
    let config = SettingsFile::new()
        .aws_endpoint(&moto.endpoint)
        .poll_interval("1h")
        .raw("ecs", &sources)
        .set("events", "enabled", true)
        .set("events", "queue_url", queue)
        .set("events", "reconcile_interval", "1h")
        .set("events", "wait_time", "1s")
        .write(dir);
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    let template = egress_sidecar(free_port(), "egress", 1);
    std::fs::write(dir.join("templates/sidecar.toml"), template).unwrap();
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_envoy_gets_every_sources_endpoints_and_a_member_task_through_the_central_bus() {
    let moto = Moto::start();
    let seeds = seeded(&moto);
    let member_west = moto.sdk_config_as(MEMBER_ROLE, "eu-west-1").await;
    let key = member_west
        .credentials_provider()
        .unwrap()
        .provide_credentials()
        .await
        .unwrap();
    let queue = central_bus(&moto, key.access_key_id()).await;
    let dir = tempfile::tempdir().unwrap();
    let daemon = Running::start(&daemon_settings(dir.path(), &moto, &queue)).await;
    let envoy = Envoy::start("sidecar-app1", daemon.xds, AdsMode::Sotw).await;

    let own = aws_sdk_ecs::Client::new(&moto.sdk_config().await);
    let member_east = aws_sdk_ecs::Client::new(&moto.sdk_config_as(MEMBER_ROLE, "us-east-1").await);
    let member_west_ecs = aws_sdk_ecs::Client::new(&member_west);
    let mut web = running_task_ips_in(&own, "demo", "web").await;
    web.extend(running_task_ips_in(&member_east, "prod", "web").await);
    web.extend(running_task_ips_in(&member_west_ecs, "prod", "web").await);
    envoy
        .wait_for_ips("web", &web, Duration::from_secs(30))
        .await;
    let (status, _) = get(daemon.admin, "/readyz").await;
    assert_eq!(status, 200);

    // A task starts in the member's eu-west-1; ECS's event there goes to the central bus.
    let started = run_service_task(&member_west_ecs, &seeds["member-west"], "web").await;
    let mut detail = member_west_detail(&moto, key.access_key_id(), &started);
    detail["availabilityZone"] = "eu-west-1a".into();
    detail["version"] = 2.into();
    let entry = json!({"Entries": [{"Source": "aws.ecs", "DetailType": "ECS Task State Change",
        "Detail": detail.to_string(), "Resources": [started]}]});
    let out = moto.aws_json_as(
        key.access_key_id(),
        "eu-west-1",
        "AWSEvents.PutEvents",
        &entry,
    );
    assert_eq!(out["FailedEntryCount"], 0, "{out}");
    web.extend(running_task_ips_in(&member_west_ecs, "prod", "web").await);
    let took = envoy
        .wait_for_ips("web", &web, Duration::from_secs(10))
        .await;
    eprintln!("a member account's task reached Envoy {took:?} after its event");

    // And one in the own account, whose default bus forwards to the central bus too.
    let own_task = run_service_task(&own, &seeds["self"], "web").await;
    support::events::put_task_event(
        &moto,
        &support::events::task_detail(&moto, "demo", &own_task, 2),
    );
    web.extend(running_task_ips_in(&own, "demo", "web").await);
    envoy
        .wait_for_ips("web", &web, Duration::from_secs(10))
        .await;

    // Through the events alone: each scope was listed once, at start.
    for (account, region) in [("222222222222", "eu-west-1"), ("self", "default")] {
        let listed = format!("ecs_xds_aws_requests_total{{account=\"{account}\",region=\"{region}\",operation=\"ListTasks\",outcome=\"ok\"}} ");
        assert_eq!(
            scrape_metric(daemon.admin, &listed).await,
            1.0,
            "{account}/{region}"
        );
    }
    let applied =
        "ecs_xds_events_received_total{detail_type=\"task_state_change\",outcome=\"applied\"} ";
    assert_eq!(scrape_metric(daemon.admin, applied).await, 2.0);
}
