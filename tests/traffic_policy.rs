//! Traffic policy with real traffic: the real `ecs-xds run` binary serving a saved inventory
//! (the `discover --json` format) whose endpoints are HTTP backends this test runs on
//! 127.0.0.1, with the revisions, zones and policies ECS tags would give, and a real Envoy
//! 1.40 in front of them. Requests go to Envoy's egress listener with the service's name as
//! Host, exactly as an app would call `http://web/`.

use crate::support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use ecs_xds::inventory::{
    Cluster, ClusterOverrides, Endpoint, Health, Locality, OutlierDetection, RevisionWeight,
    RoutePolicy, Source,
};
use support::backend::{Backend, Behaviour};
use support::daemon::{serve_inventory, Running};
use support::envoy::{free_port, AdsMode, Envoy};
use support::templates::egress_sidecar;

const ZONE_A: &str = "us-east-1a";
const ZONE_B: &str = "us-east-1b";

fn endpoint(backend: &Backend, revision: u32, zone: &str) -> Endpoint {
    Endpoint {
        address: backend.addr.ip().to_string(),
        port: backend.addr.port(),
        health: Health::Healthy,
        locality: Locality {
            region: "us-east-1".into(),
            zone: Some(zone.into()),
        },
        weight: 1,
        id: format!("task-{}", backend.addr.port()),
        revision: Some(revision),
        deployment: Some(format!("ecs-svc/{revision}")),
    }
}

fn service(name: &str, endpoints: Vec<Endpoint>) -> Cluster {
    Cluster {
        name: name.into(),
        source: Source::Ecs {
            ecs_cluster: "prod".into(),
            service: name.into(),
        },
        port_name: None,
        overrides: ClusterOverrides::default(),
        route: RoutePolicy::default(),
        backends: None,
        security: Default::default(),
        endpoints,
    }
}

/// A daemon serving `clusters` to node type `sidecar` (the egress template, with `extra`
/// template sections), and the egress port.
async fn serve(dir: &Path, clusters: Vec<Cluster>, extra: &str) -> (Running, u16) {
    let egress = free_port();
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    let template = format!("{}\n{extra}", egress_sidecar(egress, "egress", 1));
    std::fs::write(dir.join("templates/sidecar.toml"), template).unwrap();
    (serve_inventory(dir, clusters).await, egress)
}

/// Waits until Envoy has `clusters` active with their endpoints.
async fn ready(envoy: &Envoy, clusters: &[&str]) {
    envoy
        .wait_for(
            "the discovered clusters",
            Duration::from_secs(20),
            || async {
                let v = envoy.versions().await;
                clusters.iter().all(|c| {
                    v.endpoints
                        .iter()
                        .any(|(name, addrs)| name == c && !addrs.is_empty())
                })
            },
        )
        .await;
}

#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    egress: u16,
}

impl Client {
    fn new(egress: u16) -> Client {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        Client { http, egress }
    }

    /// GET / on `host` through Envoy: (status, body).
    async fn get(&self, host: &str, headers: &[(&str, &str)]) -> (u16, String) {
        let mut request = self
            .http
            .get(format!("http://127.0.0.1:{}/", self.egress))
            .header("host", host);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }

    /// `n` requests, 8 at a time: how many answers had each body (or `status N`).
    async fn spread(
        &self,
        host: &str,
        n: usize,
        headers: &[(&str, &str)],
    ) -> BTreeMap<String, usize> {
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut counts = BTreeMap::new();
        let mut running = tokio::task::JoinSet::new();
        for i in 0..n {
            let (client, host, headers) = (self.clone(), host.to_owned(), headers.clone());
            running.spawn(async move {
                let headers: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                client.get(&host, &headers).await
            });
            if running.len() == 8 || i + 1 == n {
                while let Some(answer) = running.join_next().await {
                    let (status, body) = answer.unwrap();
                    let key = if status == 200 {
                        body
                    } else {
                        format!("status {status}")
                    };
                    *counts.entry(key).or_default() += 1;
                }
            }
        }
        counts
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_split_traffic_by_revision_and_the_header_pins_one() {
    let (stable, canary) = (
        Backend::start("rev-11").await,
        Backend::start("rev-12").await,
    );
    let mut web = service(
        "web",
        vec![endpoint(&stable, 11, ZONE_A), endpoint(&canary, 12, ZONE_A)],
    );
    web.route.weights = vec![
        RevisionWeight {
            revision: 12,
            weight: 10,
        },
        RevisionWeight {
            revision: 11,
            weight: 90,
        },
    ];
    let dir = tempfile::tempdir().unwrap();
    let (daemon, egress) = serve(dir.path(), vec![web], "").await;
    let envoy = Envoy::start("sidecar-app1", daemon.xds, AdsMode::Sotw).await;
    ready(&envoy, &["web"]).await;
    let client = Client::new(egress);

    let counts = client.spread("web", 2000, &[]).await;
    let share = |name: &str| 100.0 * *counts.get(name).unwrap_or(&0) as f64 / 2000.0;
    assert_eq!(counts.values().sum::<usize>(), 2000, "{counts:?}");
    assert!(
        (share("rev-12") - 10.0).abs() <= 3.0,
        "canary share {}%: {counts:?}",
        share("rev-12")
    );
    assert!(
        (share("rev-11") - 90.0).abs() <= 3.0,
        "stable share {}%: {counts:?}",
        share("rev-11")
    );

    let pinned = client
        .spread("web", 50, &[("x-ecs-xds-revision", "12")])
        .await;
    assert_eq!(pinned, BTreeMap::from([("rev-12".to_owned(), 50)]));
    let pinned = client
        .spread("web", 50, &[("x-ecs-xds-revision", "11")])
        .await;
    assert_eq!(pinned, BTreeMap::from([("rev-11".to_owned(), 50)]));
    envoy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weight_naming_a_revision_with_no_task_gives_its_share_to_the_others() {
    let stable = Backend::start("rev-11").await;
    let mut web = service("web", vec![endpoint(&stable, 11, ZONE_A)]);
    web.route.weights = vec![
        RevisionWeight {
            revision: 12,
            weight: 50,
        },
        RevisionWeight {
            revision: 11,
            weight: 50,
        },
    ];
    let dir = tempfile::tempdir().unwrap();
    let (daemon, egress) = serve(dir.path(), vec![web], "").await;
    let envoy = Envoy::start("sidecar-app1", daemon.xds, AdsMode::Sotw).await;
    ready(&envoy, &["web"]).await;
    let counts = Client::new(egress).spread("web", 100, &[]).await;
    assert_eq!(counts, BTreeMap::from([("rev-11".to_owned(), 100)]));
    envoy.stop().await;
}

/// The template's `[route_defaults]` retry twice on 5xx; `flaky` keeps them, `strict` turns
/// them off with `retries=0`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_first_attempt_is_retried_unless_the_service_turns_retries_off() {
    let flaky_backend = Backend::start_with("flaky", Behaviour::FailEveryOther).await;
    let strict_backend = Backend::start_with("strict", Behaviour::FailEveryOther).await;
    let flaky = service("flaky", vec![endpoint(&flaky_backend, 1, ZONE_A)]);
    let mut strict = service("strict", vec![endpoint(&strict_backend, 1, ZONE_A)]);
    strict.route.retries = Some(0);
    let defaults = "[route_defaults]\nretry_policy = { retry_on = \"5xx\", num_retries = 2 }\n";
    let dir = tempfile::tempdir().unwrap();
    let (daemon, egress) = serve(dir.path(), vec![flaky, strict], defaults).await;
    let envoy = Envoy::start("sidecar-app1", daemon.xds, AdsMode::Sotw).await;
    ready(&envoy, &["flaky", "strict"]).await;
    let client = Client::new(egress);

    assert_eq!(client.get("flaky", &[]).await, (200, "flaky".to_owned()));
    assert_eq!(flaky_backend.hits(), 2, "the 503 and its retry");
    assert!(envoy.stat("cluster.flaky.upstream_rq_retry").await >= 1);

    assert_eq!(client.get("strict", &[]).await.0, 503);
    assert_eq!(strict_backend.hits(), 1);
    assert_eq!(envoy.stat("cluster.strict.upstream_rq_retry").await, 0);
    envoy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_slower_than_the_route_timeout_gets_a_504_at_the_timeout() {
    let backend = Backend::start_with("slow", Behaviour::Slow(Duration::from_secs(3))).await;
    let mut slow = service("slow", vec![endpoint(&backend, 1, ZONE_A)]);
    slow.route.timeout = Some(Duration::from_millis(500));
    let dir = tempfile::tempdir().unwrap();
    let (daemon, egress) = serve(dir.path(), vec![slow], "").await;
    let envoy = Envoy::start("sidecar-app1", daemon.xds, AdsMode::Sotw).await;
    ready(&envoy, &["slow"]).await;
    let started = Instant::now();
    let (status, _) = Client::new(egress).get("slow", &[]).await;
    let took = started.elapsed();
    assert_eq!(status, 504);
    assert!(
        took >= Duration::from_millis(400) && took <= Duration::from_millis(600),
        "504 after {took:?}, timeout 500 ms"
    );
    envoy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_answering_5xx_is_ejected_by_outlier_detection() {
    let (good, bad) = (
        Backend::start("good").await,
        Backend::start_with("bad", Behaviour::Fail).await,
    );
    let mut api = service(
        "api",
        vec![endpoint(&good, 1, ZONE_A), endpoint(&bad, 1, ZONE_A)],
    );
    api.overrides.outlier_detection = OutlierDetection {
        consecutive_5xx: Some(3),
        interval: Some(Duration::from_millis(500)),
        base_ejection_time: Some(Duration::from_secs(30)),
        max_ejection_percent: Some(100),
    };
    let dir = tempfile::tempdir().unwrap();
    let (daemon, egress) = serve(dir.path(), vec![api], "").await;
    let envoy = Envoy::start("sidecar-app1", daemon.xds, AdsMode::Sotw).await;
    ready(&envoy, &["api"]).await;
    let client = Client::new(egress);
    client.spread("api", 40, &[]).await;
    envoy
        .wait_for("bad ejected", Duration::from_secs(10), || async {
            envoy
                .stat("cluster.api.outlier_detection.ejections_enforced_total")
                .await
                >= 1
        })
        .await;
    let hits = bad.hits();
    let counts = client.spread("api", 40, &[]).await;
    assert_eq!(counts, BTreeMap::from([("good".to_owned(), 40)]));
    assert_eq!(bad.hits(), hits, "an ejected endpoint gets nothing");
    envoy.stop().await;
}

/// An Envoy in zone a sends everything to zone a; once zone a's endpoint is gone (and
/// ejected), traffic moves to zone b. An Envoy stating no zone spreads over both, as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envoy_stays_in_its_zone_and_fails_over_when_the_zone_is_down() {
    let (a, b) = (
        Backend::start("zone-a").await,
        Backend::start("zone-b").await,
    );
    let mut orders = service(
        "orders",
        vec![endpoint(&a, 1, ZONE_A), endpoint(&b, 1, ZONE_B)],
    );
    orders.overrides.outlier_detection = OutlierDetection {
        consecutive_5xx: Some(2),
        interval: Some(Duration::from_millis(500)),
        base_ejection_time: Some(Duration::from_secs(30)),
        max_ejection_percent: Some(100),
    };
    let dir = tempfile::tempdir().unwrap();
    let (daemon, egress) = serve(dir.path(), vec![orders], "[zone_aware]\nenabled = true\n").await;
    let in_a = Envoy::start_in_zone("sidecar-a", daemon.xds, ZONE_A).await;
    ready(&in_a, &["orders"]).await;
    let client = Client::new(egress);
    let counts = client.spread("orders", 100, &[]).await;
    assert_eq!(counts, BTreeMap::from([("zone-a".to_owned(), 100)]));

    // Zone a's backend goes away: connection failures eject it, then zone b takes over.
    drop(a);
    let started = Instant::now();
    loop {
        let (status, body) = client.get("orders", &[]).await;
        if status == 200 && body == "zone-b" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "still {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("failover to zone b after {:?}", started.elapsed());
    let counts = client.spread("orders", 50, &[]).await;
    assert_eq!(counts, BTreeMap::from([("zone-b".to_owned(), 50)]));
    in_a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envoy_stating_no_zone_spreads_over_every_zone_as_before() {
    let (a, b) = (
        Backend::start("zone-a").await,
        Backend::start("zone-b").await,
    );
    let orders = service(
        "orders",
        vec![endpoint(&a, 1, ZONE_A), endpoint(&b, 1, ZONE_B)],
    );
    let dir = tempfile::tempdir().unwrap();
    let (daemon, egress) = serve(dir.path(), vec![orders], "[zone_aware]\nenabled = true\n").await;
    let envoy = Envoy::start("sidecar-nozone", daemon.xds, AdsMode::Sotw).await;
    ready(&envoy, &["orders"]).await;
    let counts = Client::new(egress).spread("orders", 200, &[]).await;
    assert!(
        counts.get("zone-a").is_some_and(|n| *n > 50)
            && counts.get("zone-b").is_some_and(|n| *n > 50),
        "{counts:?}"
    );
    envoy.stop().await;
}
