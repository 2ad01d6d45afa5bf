//! Event-driven discovery end to end: moto server (ECS, EventBridge, SQS, SNS), the real
//! `ecs-xds run` binary and a real Envoy 1.40. ECS events are made from moto's own
//! DescribeTasks output and routed by moto's EventBridge to SQS (or published to SNS as
//! EventBridge would); the poll interval is far longer than each test, so what reaches Envoy
//! came through events, unless the test says otherwise.
//!
//! Safety: the endpoints are the 10.x addresses moto invents. They are only read from Envoy's
//! admin API and the daemon's; nothing connects to them.

use crate::support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::daemon::Running;
use support::envoy::{free_port, AdsMode, Envoy};
use support::events::{
    publish_task_event, put_tag_call_event, put_task_event, queued, routed_queue, sns, sqs,
    task_detail,
};
use support::fault_proxy::{FaultProxy, Mode};
use support::http::{get, scrape_metric, wait_for_metric};
use support::moto::{run_service_task, running_task_ips, tag_service, Moto};
use support::settings::SettingsFile;
use support::templates::egress_sidecar;

/// Settings polling (and reconciling) every `poll` / `reconcile`, reading events as `events`
/// (TOML lines of the `[events]` section).
fn write_config(dir: &Path, moto: &Moto, poll: &str, reconcile: &str, events: &str) -> PathBuf {
    let config = SettingsFile::new()
        .aws_endpoint(&moto.endpoint)
        .clusters(&["demo"])
        .poll_interval(poll)
        .set("events", "enabled", true)
        .set("events", "reconcile_interval", reconcile)
        .set("events", "wait_time", "1s")
        .raw("events", events)
        .write(dir);
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    std::fs::write(
        dir.join("templates/sidecar.toml"),
        egress_sidecar(free_port(), "egress", 1),
    )
    .unwrap();
    config
}

const EVENTS_MODE: &str = "ecs_xds_discovery_mode{mode=\"events\"} ";
const TASK_EVENTS: &str = "ecs_xds_events_received_total{detail_type=\"task_state_change\",";

async fn run_web_task(ecs: &aws_sdk_ecs::Client, seed: &serde_json::Value) -> String {
    run_service_task(ecs, seed, "web").await
}

async fn stop_task(ecs: &aws_sdk_ecs::Client, arn: &str) {
    ecs.stop_task()
        .cluster("demo")
        .task(arn)
        .send()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_started_and_stopped_reaches_envoy_through_events_alone_through_duplicates_reordering_and_garbage(
) {
    let moto = Moto::start();
    let seed = moto.seed(&["--tasks-per-service", "1"]);
    let ecs = aws_sdk_ecs::Client::new(&moto.sdk_config().await);
    let queue = routed_queue(&moto, "ecs-events").await;
    let dir = tempfile::tempdir().unwrap();
    let events = format!("queue_url = \"{queue}\"");
    let config = write_config(dir.path(), &moto, "1h", "1h", &events);
    let daemon = Running::start(&config).await;
    let envoy = Envoy::start("sidecar-app1", daemon.xds, AdsMode::Sotw).await;
    let initial = running_task_ips(&ecs, "web").await;
    envoy
        .wait_for_ips("web", &initial, Duration::from_secs(20))
        .await;
    wait_for_metric(daemon.admin, EVENTS_MODE, 1.0, Duration::from_secs(10)).await;

    // Started: its event, twice (SQS and EventBridge deliver at least once).
    let arn = run_web_task(&ecs, &seed).await;
    let running = task_detail(&moto, "demo", &arn, 2);
    put_task_event(&moto, &running);
    put_task_event(&moto, &running);
    let started = running_task_ips(&ecs, "web").await;
    assert_eq!(started.len(), 2);
    let took = envoy
        .wait_for_ips("web", &started, Duration::from_secs(5))
        .await;
    eprintln!("a started task reached Envoy {took:?} after its event");

    // Something that is no event at all.
    sqs(&moto)
        .await
        .send_message()
        .queue_url(&queue)
        .message_body("this is not an EventBridge event")
        .send()
        .await
        .unwrap();

    // Stopped, and the older RUNNING event delivered again after the stop.
    stop_task(&ecs, &arn).await;
    let stopped = task_detail(&moto, "demo", &arn, 3);
    assert_eq!(stopped["lastStatus"], "STOPPED");
    put_task_event(&moto, &stopped);
    put_task_event(&moto, &running);
    envoy
        .wait_for_ips("web", &initial, Duration::from_secs(5))
        .await;
    let metrics = daemon.admin;
    wait_for_metric(
        metrics,
        &format!("{TASK_EVENTS}outcome=\"stale\"}} "),
        2.0,
        Duration::from_secs(5),
    )
    .await;
    let undecodable =
        "ecs_xds_events_received_total{detail_type=\"none\",outcome=\"undecodable\"} ";
    wait_for_metric(metrics, undecodable, 1.0, Duration::from_secs(5)).await;
    assert!(
        daemon.log().contains("undecodable SQS message"),
        "{}",
        daemon.log()
    );
    assert_eq!(
        envoy.endpoint_ips("web").await,
        initial,
        "the stale RUNNING did not bring it back"
    );
    assert_eq!(
        scrape_metric(metrics, &format!("{TASK_EVENTS}outcome=\"applied\"}} ")).await,
        2.0
    );
    // One poll in all (at start): the changes came through events alone.
    let list_tasks = "ecs_xds_aws_requests_total{account=\"self\",region=\"default\",operation=\"ListTasks\",outcome=\"ok\"} ";
    assert_eq!(scrape_metric(metrics, list_tasks).await, 1.0);
    assert!(scrape_metric(metrics, "ecs_xds_event_lag_seconds_count ").await >= 2.0);
    // Every message was deleted: applied, stale or undecodable.
    let sqs = sqs(&moto).await;
    let started = Instant::now();
    while queued(&sqs, &queue).await > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "messages left in the queue"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    envoy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_no_event_announced_appears_at_the_next_reconcile_and_is_counted() {
    let moto = Moto::start();
    let seed = moto.seed(&["--tasks-per-service", "1"]);
    let ecs = aws_sdk_ecs::Client::new(&moto.sdk_config().await);
    let queue = routed_queue(&moto, "ecs-events").await;
    let dir = tempfile::tempdir().unwrap();
    let events = format!("queue_url = \"{queue}\"");
    let config = write_config(dir.path(), &moto, "1h", "2s", &events);
    let daemon = Running::start(&config).await;
    let envoy = Envoy::start("sidecar-app1", daemon.xds, AdsMode::Sotw).await;
    envoy
        .wait_for_ips(
            "web",
            &running_task_ips(&ecs, "web").await,
            Duration::from_secs(20),
        )
        .await;
    wait_for_metric(daemon.admin, EVENTS_MODE, 1.0, Duration::from_secs(10)).await;

    // A task starts and its event is lost.
    run_web_task(&ecs, &seed).await;
    let want = running_task_ips(&ecs, "web").await;
    let took = envoy
        .wait_for_ips("web", &want, Duration::from_secs(5))
        .await;
    eprintln!("the reconcile found the unannounced task {took:?} later");
    wait_for_metric(
        daemon.admin,
        "ecs_xds_reconcile_corrections_total ",
        1.0,
        Duration::from_secs(2),
    )
    .await;
    assert!(daemon
        .log()
        .contains("corrected endpoints that events had missed"));
    envoy.stop().await;
}

/// A daemon reading events from SQS through a fault proxy (ECS direct), polling every `poll`
/// while events fail, and an Envoy that has its web endpoints, once events are received.
struct SqsBehindProxy {
    moto: Moto,
    seed: serde_json::Value,
    ecs: aws_sdk_ecs::Client,
    proxy: FaultProxy,
    _dir: tempfile::TempDir,
    daemon: Running,
    envoy: Envoy,
    initial: BTreeSet<String>,
}

impl SqsBehindProxy {
    async fn start(poll: &str) -> SqsBehindProxy {
        let moto = Moto::start();
        let seed = moto.seed(&["--tasks-per-service", "1"]);
        let ecs = aws_sdk_ecs::Client::new(&moto.sdk_config().await);
        let queue = routed_queue(&moto, "ecs-events").await;
        let proxy = FaultProxy::start(moto.port).await;
        let dir = tempfile::tempdir().unwrap();
        let events = format!(
            "queue_url = \"{queue}\"\nendpoint_url = \"{}\"",
            proxy.endpoint()
        );
        let config = write_config(dir.path(), &moto, poll, "1h", &events);
        let daemon = Running::start(&config).await;
        let envoy = Envoy::start("sidecar-app1", daemon.xds, AdsMode::Sotw).await;
        let initial = running_task_ips(&ecs, "web").await;
        envoy
            .wait_for_ips("web", &initial, Duration::from_secs(20))
            .await;
        wait_for_metric(daemon.admin, EVENTS_MODE, 1.0, Duration::from_secs(10)).await;
        SqsBehindProxy {
            moto,
            seed,
            ecs,
            proxy,
            _dir: dir,
            daemon,
            envoy,
            initial,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_sqs_unreachable_discovery_polls_keeps_every_endpoint_and_returns_to_events() {
    // Polling every second only while events fail.
    let SqsBehindProxy {
        moto,
        seed,
        ecs,
        proxy,
        _dir,
        daemon,
        envoy,
        initial,
    } = SqsBehindProxy::start("1s").await;
    let before = envoy.versions().await;

    proxy.set_up(false);
    daemon
        .wait_for_log(
            "receiving ECS events failed; polling until it works again",
            Duration::from_secs(15),
        )
        .await;
    wait_for_metric(
        daemon.admin,
        "ecs_xds_discovery_mode{mode=\"fallback\"} ",
        1.0,
        Duration::from_secs(2),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(envoy.versions().await, before, "no endpoint lost");
    // A change while events are down: the fallback polls find it.
    let arn = run_web_task(&ecs, &seed).await;
    let started = running_task_ips(&ecs, "web").await;
    envoy
        .wait_for_ips("web", &started, Duration::from_secs(5))
        .await;

    proxy.set_up(true);
    daemon
        .wait_for_log("receiving ECS events again", Duration::from_secs(40))
        .await;
    assert_eq!(
        daemon.log().matches("receiving ECS events failed").count(),
        1,
        "logged once"
    );
    // Back on events (the next poll is an hour away): a stop reaches Envoy through its event.
    stop_task(&ecs, &arn).await;
    put_task_event(&moto, &task_detail(&moto, "demo", &arn, 3));
    envoy
        .wait_for_ips("web", &initial, Duration::from_secs(5))
        .await;
    envoy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_sqs_hanging_a_started_task_reaches_envoy_within_the_poll_interval_and_events_resume()
{
    // Long polls of 1 s; polling every 2 s while events fail.
    let poll = Duration::from_secs(2);
    let SqsBehindProxy {
        moto,
        seed,
        ecs,
        proxy,
        _dir,
        daemon,
        envoy,
        initial,
    } = SqsBehindProxy::start("2s").await;

    // SQS accepts connections and never answers; a task starts meanwhile.
    proxy.set_mode(Mode::Hanging);
    let arn = run_web_task(&ecs, &seed).await;
    let started = running_task_ips(&ecs, "web").await;
    let took = envoy
        .wait_for_ips("web", &started, poll + Duration::from_secs(5))
        .await;
    eprintln!("with SQS hanging, a started task reached Envoy after {took:?}");
    assert!(daemon.log().contains("receiving ECS events failed"));

    proxy.set_mode(Mode::Up);
    daemon
        .wait_for_log("receiving ECS events again", Duration::from_secs(30))
        .await;
    wait_for_metric(daemon.admin, EVENTS_MODE, 1.0, Duration::from_secs(5)).await;
    // Back on events (the next poll is an hour away): a stop reaches Envoy through its event.
    stop_task(&ecs, &arn).await;
    put_task_event(&moto, &task_detail(&moto, "demo", &arn, 3));
    envoy
        .wait_for_ips("web", &initial, Duration::from_secs(5))
        .await;
    envoy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_from_the_same_settings_both_apply_one_event_and_clean_up_their_queues() {
    let moto = Moto::start();
    let seed = moto.seed(&["--tasks-per-service", "1"]);
    let ecs = aws_sdk_ecs::Client::new(&moto.sdk_config().await);
    let sns = sns(&moto).await;
    let sqs = sqs(&moto).await;
    let topic = sns.create_topic().name("ecs-events").send().await.unwrap();
    let topic = topic.topic_arn().unwrap().to_owned();
    // A queue a crashed replica left behind, its heartbeat long past.
    let orphan = sqs
        .create_queue()
        .queue_name("ecs-xds-crashed-1")
        .tags("ecs-xds:heartbeat", "1000")
        .send()
        .await
        .unwrap();
    let orphan = orphan.queue_url().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let events = format!("topic_arn = \"{topic}\"");
    let config = write_config(dir.path(), &moto, "1h", "1h", &events);
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let daemon = Running::start(&config).await;
        wait_for_metric(daemon.admin, EVENTS_MODE, 1.0, Duration::from_secs(15)).await;
        replicas.push(daemon);
    }
    let queues = |sqs: aws_sdk_sqs::Client| async move {
        let out = sqs
            .list_queues()
            .queue_name_prefix("ecs-xds-")
            .send()
            .await
            .unwrap();
        out.queue_urls().to_vec()
    };
    let own = queues(sqs.clone()).await;
    assert_eq!(
        own.len(),
        2,
        "one queue per replica, the orphan removed: {own:?}"
    );
    assert!(!own.contains(&orphan));
    // Each queue is named after the replica, as /nodes names it.
    for daemon in &replicas {
        let nodes: serde_json::Value =
            serde_json::from_str(&get(daemon.admin, "/nodes").await.1).unwrap();
        let replica = nodes["replica"].as_str().unwrap().to_owned();
        // `{prefix}{replica}-{start time in hex}`
        let named = |url: &String| {
            let name = url.rsplit('/').next().unwrap();
            (name.strip_prefix(&format!("ecs-xds-{replica}-")))
                .is_some_and(|stamp| stamp.chars().all(|c| c.is_ascii_hexdigit()))
        };
        assert!(
            own.iter().any(named),
            "no queue of replica {replica}: {own:?}"
        );
    }

    let arn = run_web_task(&ecs, &seed).await;
    let detail = task_detail(&moto, "demo", &arn, 2);
    publish_task_event(&sns, &topic, &detail).await;
    let ip = detail["attachments"][0]["details"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "privateIPv4Address")
        .unwrap()["value"]
        .as_str()
        .unwrap()
        .to_owned();
    for daemon in &replicas {
        let started = Instant::now();
        while !get(daemon.admin, "/snapshot/sidecar").await.1.contains(&ip) {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "a replica missed the event"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    for mut daemon in replicas {
        daemon.terminate();
        let status = tokio::time::timeout(Duration::from_secs(15), daemon.child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success(), "{status}");
        assert!(
            daemon.log().contains("removed this replica's queue"),
            "{}",
            daemon.log()
        );
    }
    assert!(
        queues(sqs).await.is_empty(),
        "both queues removed at shutdown"
    );
}

/// Declared backends with events on: a tag change has no ECS event, but CloudTrail's record of
/// the `TagResource` call, routed by deploy/ecs/event-pattern.json, moves web's Envoy to its
/// new set long before the hour-away poll or reconcile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_call_through_cloudtrail_moves_the_envoy_to_its_new_backends() {
    let moto = Moto::start();
    moto.seed(&["--tasks-per-service", "1"]);
    let ecs = aws_sdk_ecs::Client::new(&moto.sdk_config().await);
    let web_arn = tag_service(&ecs, "web", "ecs-xds.backends", "orders").await;
    let queue = routed_queue(&moto, "ecs-events").await;
    let dir = tempfile::tempdir().unwrap();
    let events = format!("queue_url = \"{queue}\"");
    let config = write_config(dir.path(), &moto, "1h", "1h", &events);
    let daemon = Running::start(&config).await;
    let web = Envoy::start_of_service("sidecar-web1", daemon.xds, AdsMode::Delta, "web").await;
    let names = |list: &[&str]| list.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>();
    let clusters_are = |want: BTreeSet<String>| {
        let web = &web;
        move || {
            let want = want.clone();
            async move { web.cluster_names().await == want }
        }
    };
    let declared = names(&["ecs-xds", "orders"]);
    web.wait_for(
        "orders alone",
        Duration::from_secs(20),
        clusters_are(declared),
    )
    .await;
    wait_for_metric(daemon.admin, EVENTS_MODE, 1.0, Duration::from_secs(10)).await;

    tag_service(&ecs, "web", "ecs-xds.backends", "orders api").await;
    put_tag_call_event(&moto, "TagResource", &web_arn);
    let widened = names(&["api.grpc", "api.http", "ecs-xds", "orders"]);
    let started = Instant::now();
    web.wait_for(
        "api's clusters",
        Duration::from_secs(5),
        clusters_are(widened),
    )
    .await;
    eprintln!(
        "a tag change reached Envoy {:?} after its CloudTrail event",
        started.elapsed()
    );
    let applied = "ecs_xds_events_received_total{detail_type=\"tag_change\",outcome=\"applied\"} ";
    assert_eq!(scrape_metric(daemon.admin, applied).await, 1.0);
}
