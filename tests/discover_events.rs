//! Applying ECS events to discovery's facts, on recorded AWS responses (aws-smithy-mocks): what
//! each event costs in calls, and how duplicates, reordering and stops are handled.

use crate::support;

use aws_sdk_ecs::types::{NetworkMode, Tag};
use ecs_xds::aws::CallCounter;
use ecs_xds::discover::events::{decode, Event, EventOutcome};
use ecs_xds::discover::Poller;
use ecs_xds::inventory::{Health, Inventory, LbPolicy};
use ecs_xds::settings::DiscoverSettings;
use serde_json::json;
use support::fake_aws::{
    awsvpc_task, ec2_task, task_arn, task_def, task_def_arn, Fake, World, ACCOUNT, REGION,
};

fn settings() -> DiscoverSettings {
    let mut s = DiscoverSettings::default();
    s.ecs.clusters = vec!["demo".into()];
    s
}

/// Service `web` with tasks t1..t3 (task definition web:1) and service `api` with its task
/// definition registered but no task yet.
fn world(world: &mut World) {
    for family in ["web", "api"] {
        world.task_defs.insert(
            task_def_arn(family, 1),
            task_def(family, 1, NetworkMode::Awsvpc, &[(8080, None)]),
        );
        world
            .services
            .insert(("demo".into(), family.into()), Vec::new());
    }
    let td = task_def_arn("web", 1);
    world.tasks.insert(
        "demo".into(),
        (1..=3)
            .map(|i| {
                awsvpc_task(
                    "demo",
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

struct Task<'a> {
    id: &'a str,
    service: &'a str,
    ip: &'a str,
    version: i64,
    last: &'a str,
    desired: &'a str,
}

impl Task<'_> {
    fn running(
        id: &'static str,
        service: &'static str,
        ip: &'static str,
        version: i64,
    ) -> Task<'static> {
        Task {
            id,
            service,
            ip,
            version,
            last: "RUNNING",
            desired: "RUNNING",
        }
    }

    fn event(&self) -> Event {
        let body = json!({
            "version": "0", "id": format!("e-{}-{}", self.id, self.version),
            "detail-type": "ECS Task State Change", "source": "aws.ecs",
            "account": ACCOUNT, "time": "2026-01-01T00:00:00Z", "region": REGION,
            "resources": [task_arn("demo", self.id)],
            "detail": {
                "taskArn": task_arn("demo", self.id),
                "clusterArn": format!("arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/demo"),
                "lastStatus": self.last, "desiredStatus": self.desired,
                "group": format!("service:{}", self.service),
                "taskDefinitionArn": task_def_arn(self.service, 1),
                "availabilityZone": "us-east-1b",
                "attachments": [{"type": "eni", "status": "ATTACHED",
                    "details": [{"name": "privateIPv4Address", "value": self.ip}]}],
                "containers": [{"name": "app", "lastStatus": self.last}],
                "version": self.version,
            },
        });
        decode(&body.to_string()).unwrap()
    }
}

fn endpoints(poller: &Poller, cluster: &str) -> Vec<(String, Health)> {
    let inventory: Inventory = poller.complete_inventory().expect("polled once");
    inventory
        .clusters
        .get(cluster)
        .map(|c| {
            c.endpoints
                .iter()
                .map(|e| (e.address.clone(), e.health))
                .collect()
        })
        .unwrap_or_default()
}

/// A poller over `fake`, polled once, and its call counter.
async fn polled_over(fake: &Fake) -> (CallCounter, Poller) {
    let aws = fake.aws();
    let calls = aws.calls().clone();
    let mut poller = Poller::new(settings().check().unwrap(), aws).unwrap();
    assert!(poller.poll().await.errors.is_empty());
    (calls, poller)
}

async fn polled() -> (Fake, CallCounter, Poller) {
    let fake = Fake::default();
    world(&mut fake.world());
    let (calls, poller) = polled_over(&fake).await;
    (fake, calls, poller)
}

#[tokio::test]
async fn a_task_event_whose_definition_and_service_are_known_costs_no_call() {
    let (_fake, calls, mut poller) = polled().await;
    let before = calls.total();
    let started = Task::running("t4", "web", "10.0.0.4", 1).event();
    assert_eq!(
        poller.apply_events(&[&started]).await,
        [EventOutcome::Applied]
    );
    assert_eq!(endpoints(&poller, "web").len(), 4);
    let stopped = Task {
        last: "STOPPED",
        desired: "STOPPED",
        ..Task::running("t4", "web", "10.0.0.4", 2)
    }
    .event();
    assert_eq!(
        poller.apply_events(&[&stopped]).await,
        [EventOutcome::Applied]
    );
    assert_eq!(endpoints(&poller, "web").len(), 3);
    assert_eq!(calls.total(), before, "no AWS call for either event");
}

#[tokio::test]
async fn duplicates_and_older_events_are_stale_and_a_stopped_task_never_comes_back() {
    let (_fake, _calls, mut poller) = polled().await;
    let running = Task::running("t4", "web", "10.0.0.4", 2).event();
    let stopping = Task {
        desired: "STOPPED",
        ..Task::running("t4", "web", "10.0.0.4", 3)
    }
    .event();
    let stopped = Task {
        last: "STOPPED",
        desired: "STOPPED",
        ..Task::running("t4", "web", "10.0.0.4", 5)
    }
    .event();
    let late = Task::running("t4", "web", "10.0.0.4", 9).event();
    let outcomes = poller
        .apply_events(&[&running, &running, &stopping, &running])
        .await;
    use EventOutcome::*;
    assert_eq!(outcomes, [Applied, Stale, Applied, Stale]);
    assert!(endpoints(&poller, "web").contains(&("10.0.0.4".into(), Health::Draining)));
    // The stop arrives before an older event, and a (bogus) newer RUNNING after it.
    assert_eq!(
        poller.apply_events(&[&stopped, &stopping, &late]).await,
        [Applied, Stale, Stale]
    );
    assert_eq!(endpoints(&poller, "web").len(), 3);
}

#[tokio::test]
async fn a_poll_that_reads_a_task_an_event_stopped_does_not_bring_it_back() {
    let (fake, _calls, mut poller) = polled().await;
    // ECS's read lags: ListTasks still lists t1, which the event says is stopped.
    let stopped = Task {
        last: "STOPPED",
        desired: "STOPPED",
        ..Task::running("t1", "web", "10.0.0.1", 7)
    }
    .event();
    poller.apply_events(&[&stopped]).await;
    assert!(poller.poll().await.errors.is_empty());
    assert_eq!(endpoints(&poller, "web").len(), 2);
    assert_eq!(fake.world().tasks["demo"].len(), 3);
}

#[tokio::test]
async fn a_new_service_and_task_definition_are_described_once_then_cached() {
    let (_fake, calls, mut poller) = polled().await;
    let first = Task::running("a1", "api", "10.0.1.1", 1).event();
    assert_eq!(
        poller.apply_events(&[&first]).await,
        [EventOutcome::Applied]
    );
    assert_eq!(
        calls.operation_total("DescribeTaskDefinition"),
        2,
        "web:1 at the poll, api:1 now"
    );
    assert_eq!(
        calls.operation_total("DescribeServices"),
        2,
        "the poll's, and api's"
    );
    // A new service's first task is described for its own tags.
    assert_eq!(calls.operation_total("DescribeTasks"), 2);
    let before = calls.total();
    let second = Task::running("a2", "api", "10.0.1.2", 1).event();
    assert_eq!(
        poller.apply_events(&[&second]).await,
        [EventOutcome::Applied]
    );
    assert_eq!(calls.total(), before);
    assert_eq!(endpoints(&poller, "api").len(), 2);
}

#[tokio::test]
async fn task_override_tags_are_read_once_for_new_tasks_of_services_that_use_them() {
    let fake = Fake::default();
    world(&mut fake.world());
    let weight = |w: &str| Tag::builder().key("ecs-xds.weight").value(w).build();
    fake.world().tasks.get_mut("demo").unwrap()[0].tags = Some(vec![weight("5")]);
    let (calls, mut poller) = polled_over(&fake).await;
    // t4 starts after the poll, with a weight tag of its own.
    let mut t4 = awsvpc_task(
        "demo",
        "t4",
        "web",
        &task_def_arn("web", 1),
        "10.0.0.4",
        "us-east-1a",
    );
    t4.tags = Some(vec![weight("7")]);
    fake.world().tasks.get_mut("demo").unwrap().push(t4);
    let before = calls.operation_total("DescribeTasks");
    let new = Task::running("t4", "web", "10.0.0.4", 1).event();
    poller.apply_events(&[&new]).await;
    assert_eq!(calls.operation_total("DescribeTasks") - before, 1);
    let weight_of = |p: &Poller| {
        let inv = p.complete_inventory().unwrap();
        inv.clusters["web"]
            .endpoints
            .iter()
            .find(|e| e.address == "10.0.0.4")
            .unwrap()
            .weight
    };
    assert_eq!(weight_of(&poller), 7);
    // Its next event keeps the tags read then, with no call.
    let next = Task {
        desired: "STOPPED",
        ..Task::running("t4", "web", "10.0.0.4", 2)
    }
    .event();
    poller.apply_events(&[&next]).await;
    assert_eq!(calls.operation_total("DescribeTasks") - before, 1);
    assert_eq!(weight_of(&poller), 7);
}

/// CloudTrail's record of an ECS `TagResource` / `UntagResource` call on `resource`, as
/// EventBridge delivers it (the pattern in deploy/ecs/event-pattern.json selects these).
fn tag_call(event_name: &str, resource: &str) -> Event {
    let body = json!({
        "version": "0", "id": format!("ct-{event_name}"), "detail-type": "AWS API Call via CloudTrail",
        "source": "aws.ecs", "account": ACCOUNT, "time": "2026-01-01T00:00:00Z", "region": REGION,
        "resources": [],
        "detail": {"eventSource": "ecs.amazonaws.com", "eventName": event_name,
            "eventType": "AwsApiCall", "requestParameters": {"resourceArn": resource}},
    });
    decode(&body.to_string()).unwrap()
}

#[tokio::test]
async fn a_service_event_or_a_tag_call_on_the_service_re_reads_the_service_tags() {
    let service = format!("arn:aws:ecs:{REGION}:{ACCOUNT}:service/demo/web");
    let service_action = json!({
        "version": "0", "id": "s1", "detail-type": "ECS Service Action", "source": "aws.ecs",
        "time": "2026-01-01T00:00:00Z",
        "resources": [&service],
        "detail": {"eventType": "INFO", "eventName": "SERVICE_STEADY_STATE"},
    });
    let events = [
        decode(&service_action.to_string()).unwrap(),
        tag_call("TagResource", &service),
    ];
    for event in events {
        let (fake, calls, mut poller) = polled().await;
        let tagged = Tag::builder()
            .key("ecs-xds.lb-policy")
            .value("maglev")
            .build();
        fake.world()
            .services
            .insert(("demo".into(), "web".into()), vec![tagged]);
        let before = calls.operation_total("DescribeServices");
        assert_eq!(
            poller.apply_events(&[&event]).await,
            [EventOutcome::Applied],
            "{event:?}"
        );
        assert_eq!(calls.operation_total("DescribeServices") - before, 1);
        let inventory = poller.complete_inventory().unwrap();
        assert_eq!(
            inventory.clusters["web"].overrides.lb_policy,
            Some(LbPolicy::Maglev)
        );
        // Unchanged tags: applied, nothing to publish.
        assert_eq!(
            poller.apply_events(&[&event]).await,
            [EventOutcome::Unchanged]
        );
    }
}

#[tokio::test]
async fn a_tag_call_on_a_task_re_reads_that_task_s_tags_only() {
    let (fake, calls, mut poller) = polled().await;
    let weight = |p: &Poller, address: &str| {
        let inv = p.complete_inventory().unwrap();
        let endpoints = &inv.clusters["web"].endpoints;
        endpoints
            .iter()
            .find(|e| e.address == address)
            .unwrap()
            .weight
    };
    let default_weight = weight(&poller, "10.0.0.2");
    let tag = |k: &str, v: &str| Tag::builder().key(k).value(v).build();
    fake.world().tasks.get_mut("demo").unwrap()[1].tags = Some(vec![tag("ecs-xds.weight", "9")]);
    let (before, describes) = (calls.total(), calls.operation_total("DescribeTasks"));
    let on_task = tag_call("TagResource", &task_arn("demo", "t2"));
    assert_eq!(
        poller.apply_events(&[&on_task]).await,
        [EventOutcome::Applied]
    );
    assert_eq!(calls.total() - before, 1, "one call");
    assert_eq!(calls.operation_total("DescribeTasks") - describes, 1);
    assert_eq!(weight(&poller, "10.0.0.2"), 9);
    assert_eq!(weight(&poller, "10.0.0.1"), default_weight);
    // Untagged again: the weight goes back.
    fake.world().tasks.get_mut("demo").unwrap()[1].tags = None;
    let untag = tag_call("UntagResource", &task_arn("demo", "t2"));
    assert_eq!(
        poller.apply_events(&[&untag]).await,
        [EventOutcome::Applied]
    );
    assert_eq!(weight(&poller, "10.0.0.2"), default_weight);
    // A task discovery does not serve costs nothing; it is read when it starts.
    let before = calls.total();
    let unknown = tag_call("TagResource", &task_arn("demo", "t9"));
    assert_eq!(
        poller.apply_events(&[&unknown]).await,
        [EventOutcome::Unchanged]
    );
    assert_eq!(calls.total(), before);
}

#[tokio::test]
async fn a_container_instance_event_moves_or_removes_the_hosts_of_bridge_tasks() {
    let fake = Fake::default();
    {
        let mut w = fake.world();
        let td = task_def_arn("legacy", 1);
        w.task_defs.insert(
            td.clone(),
            task_def("legacy", 1, NetworkMode::Bridge, &[(8080, None)]),
        );
        w.services
            .insert(("demo".into(), "legacy".into()), Vec::new());
        let ci = format!("arn:aws:ecs:{REGION}:{ACCOUNT}:container-instance/demo/ci1");
        w.container_instances.insert(ci.clone(), "i-1".into());
        w.instance_ips.insert("i-1".into(), "172.31.0.1".into());
        w.instance_ips.insert("i-2".into(), "172.31.0.2".into());
        w.tasks.insert(
            "demo".into(),
            vec![ec2_task("demo", "b1", "legacy", &td, &ci, &[(8080, 32768)])],
        );
    }
    let (calls, mut poller) = polled_over(&fake).await;
    assert_eq!(
        endpoints(&poller, "legacy"),
        [("172.31.0.1".to_owned(), Health::Unknown)]
    );
    let event = |instance: &str, status: &str| {
        decode(&json!({
            "version": "0", "id": "c1", "detail-type": "ECS Container Instance State Change",
            "source": "aws.ecs", "time": "2026-01-01T00:00:00Z",
            "resources": [format!("arn:aws:ecs:{REGION}:{ACCOUNT}:container-instance/demo/ci1")],
            "detail": {"clusterArn": format!("arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/demo"),
                "containerInstanceArn": format!("arn:aws:ecs:{REGION}:{ACCOUNT}:container-instance/demo/ci1"),
                "ec2InstanceId": instance, "status": status, "agentConnected": true, "version": 3},
        }).to_string())
        .unwrap()
    };
    // An agent reconnect: same host, no call.
    let before = calls.total();
    assert_eq!(
        poller.apply_events(&[&event("i-1", "ACTIVE")]).await,
        [EventOutcome::Unchanged]
    );
    assert_eq!(calls.total(), before);
    assert_eq!(
        poller.apply_events(&[&event("i-2", "ACTIVE")]).await,
        [EventOutcome::Applied]
    );
    assert_eq!(calls.operation_total("DescribeInstances"), 2);
    assert_eq!(
        endpoints(&poller, "legacy"),
        [("172.31.0.2".to_owned(), Health::Unknown)]
    );
    assert_eq!(
        poller.apply_events(&[&event("i-2", "INACTIVE")]).await,
        [EventOutcome::Applied]
    );
    assert!(endpoints(&poller, "legacy").is_empty());
}

#[tokio::test]
async fn events_about_clusters_not_watched_are_ignored() {
    let (_fake, calls, mut poller) = polled().await;
    let body = json!({
        "version": "0", "id": "x", "detail-type": "ECS Service Action", "source": "aws.ecs",
        "resources": [format!("arn:aws:ecs:{REGION}:{ACCOUNT}:service/other/web")],
        "detail": {}, "time": "2026-01-01T00:00:00Z",
    });
    let event = decode(&body.to_string()).unwrap();
    let before = calls.total();
    assert_eq!(
        poller.apply_events(&[&event]).await,
        [EventOutcome::Ignored]
    );
    assert_eq!(calls.total(), before);
}
