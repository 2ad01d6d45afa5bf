//! ecs-xds serving a node type with `[interception]` to a real Envoy 1.40 in the task's
//! namespace, under ECS's `proxyConfiguration` rules: the app calls other services by name or
//! by address with no proxy setting, and Envoy's own connection to ecs-xds (in the peer
//! namespace, as another task would be) is not redirected.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use ecs_xds::inventory::{
    Cluster, ClusterOverrides, Endpoint, Health, Inventory, Locality, Protocol, RevisionWeight,
    RoutePolicy, Source,
};

use crate::support;
use support::envoy::{bootstrap_json, AdsMode};
use support::netns::{
    Namespaces, NsEnvoy, NsProcess, ProxyConfiguration, Who, APP_ADDR, PEER_ADDR,
};
use support::settings::SettingsFile;

const ORDERS_A: &str = "10.200.0.11";
const ORDERS_B: &str = "10.200.0.12";
const DB_A: &str = "10.200.0.21";
const DB_B: &str = "10.200.0.22";
/// An address no service has: the internet, as far as the app knows.
const OUTSIDE: &str = "10.200.0.99";
const CREDENTIALS: &str = "169.254.170.2";
pub(super) const XDS_PORT: u16 = 18000;
pub(super) const APP_PORT: u16 = 9080;
const PASSTHROUGH: &str = "cluster.interception-passthrough.upstream_cx_total";

/// The namespaces, the backends in the peer (orders-a always answers 503), the app's own
/// server, ECS's rules, ecs-xds in the peer and an Envoy of `node_type` in the app.
struct Task {
    dir: tempfile::TempDir,
    envoy: NsEnvoy,
    _servers: [NsProcess; 3],
    // Declared last: dropped after the processes in it.
    ns: Namespaces,
}

impl Task {
    async fn start(tag: &str, node_type: &str, outbound: &str) -> Task {
        let ns = Namespaces::new(tag, &[ORDERS_A, ORDERS_B, DB_A, DB_B, OUTSIDE, CREDENTIALS]);
        let peer = [
            format!("http503:{ORDERS_A}:8080:orders-a"),
            format!("http:{ORDERS_B}:8080:orders-b"),
            format!("tcp:{DB_A}:5432:db-a"),
            format!("tcp:{DB_B}:5432:db-b"),
            format!("http:{OUTSIDE}:80:outside"),
            format!("http:{CREDENTIALS}:80:credentials"),
        ];
        let peer: Vec<&str> = peer.iter().map(String::as_str).collect();
        let backends = ns.serve(Who::Peer, &peer).await;
        let app = ns
            .serve(Who::App, &[&format!("http:0.0.0.0:{APP_PORT}:app")])
            .await;
        ns.proxy_configuration(&ProxyConfiguration::ecs_defaults(&[APP_PORT]));
        let dir = tempfile::tempdir().unwrap();
        write_template(dir.path(), node_type, outbound);
        write_inventory(dir.path(), DB_A, orders_policy());
        let xds = start_ecs_xds(&ns, dir.path());
        let at: SocketAddr = format!("{PEER_ADDR}:{XDS_PORT}").parse().unwrap();
        let bootstrap = bootstrap_json(&format!("{node_type}-1"), at, AdsMode::Sotw);
        let envoy = ns.start_envoy(bootstrap).await;
        let task = Task {
            dir,
            envoy,
            _servers: [backends, app, xds],
            ns,
        };
        task.wait_for_chains(|chains| chains.contains(DB_A)).await;
        task
    }

    async fn get(&self, url: &str, host: Option<&str>) -> String {
        self.ns.get(Who::App, url, host).await
    }

    async fn stat(&self, name: &str) -> u64 {
        self.envoy.stat(name).await
    }

    /// Waits until Envoy holds the egress listener and its config dump (as JSON text) passes
    /// `check`.
    async fn wait_for_chains(&self, check: impl Fn(&str) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let dump = self.envoy.config_dump().await.to_string();
            if dump.contains("interception-egress") && check(&dump) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "Envoy never held the awaited interception-egress listener: {dump}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The project's `intercepted` template as node type `node_type`, retrying on another host
/// (so a retry of orders-a's 503 reaches orders-b).
fn write_template(dir: &Path, node_type: &str, outbound: &str) {
    let shipped = support::moto::repo_root().join("config/templates/intercepted.toml");
    let text = std::fs::read_to_string(shipped).unwrap();
    let text = text.replace(
        "outbound = \"passthrough\"",
        &format!("outbound = \"{outbound}\""),
    );
    let retry_elsewhere = "\n[route_defaults.retry_policy]\nretry_host_predicate = [{ name = \"envoy.retry_host_predicates.previous_hosts\", typed_config = { \"@type\" = \"type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate\" } }]\nhost_selection_retry_max_attempts = 5\n";
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    let file = dir.join(format!("templates/{node_type}.toml"));
    std::fs::write(file, text + retry_elsewhere).unwrap();
}

/// A task; orders' two tasks are of revisions 1 (orders-a) and 2 (orders-b).
pub(super) fn endpoint(address: &str, port: u16) -> Endpoint {
    Endpoint {
        address: address.into(),
        port,
        health: Health::Healthy,
        locality: Locality {
            region: "us-east-1".into(),
            zone: Some("us-east-1a".into()),
        },
        weight: 1,
        id: format!("task-{address}"),
        revision: match address {
            ORDERS_A => Some(1),
            ORDERS_B => Some(2),
            _ => None,
        },
        deployment: None,
    }
}

pub(super) fn service(name: &str, route: RoutePolicy, endpoints: Vec<Endpoint>) -> Cluster {
    Cluster {
        name: name.into(),
        source: Source::Ecs {
            ecs_cluster: "prod".into(),
            service: name.into(),
        },
        port_name: None,
        overrides: ClusterOverrides::default(),
        route,
        backends: None,
        security: Default::default(),
        endpoints,
    }
}

/// orders' tags: called `orders.prod.local`, 2 retries.
fn orders_policy() -> RoutePolicy {
    RoutePolicy {
        retries: Some(2),
        hosts: vec!["orders.prod.local".into()],
        ..Default::default()
    }
}

/// orders (two tasks, tagged `orders`) and db (TCP, its one task at `db_task`), in one rename:
/// the daemon follows the file.
fn write_inventory(dir: &Path, db_task: &str, orders: RoutePolicy) {
    let orders = service(
        "orders",
        orders,
        vec![endpoint(ORDERS_A, 8080), endpoint(ORDERS_B, 8080)],
    );
    let db = RoutePolicy {
        protocol: Some(Protocol::Tcp),
        ..Default::default()
    };
    let db = service("db", db, vec![endpoint(db_task, 5432)]);
    let inventory = Inventory {
        clusters: [orders, db]
            .into_iter()
            .map(|c| (c.name.clone(), c))
            .collect(),
        warnings: Vec::new(),
        callers: Default::default(),
    };
    let saved = dir.join("inventory.json.new");
    std::fs::write(&saved, serde_json::to_string(&inventory).unwrap()).unwrap();
    std::fs::rename(saved, dir.join("inventory.json")).unwrap();
}

/// `ecs-xds run --inventory` in the peer namespace, xDS on the peer's address: Envoy reaches it
/// as it would another task.
pub(super) fn start_ecs_xds(ns: &Namespaces, dir: &Path) -> NsProcess {
    let config = SettingsFile::new()
        .xds_listen(format!("{PEER_ADDR}:{XDS_PORT}"))
        .write(dir);
    let (config, inventory) = (config.display().to_string(), dir.join("inventory.json"));
    let args = [
        "AWS_ACCESS_KEY_ID=test",
        "AWS_SECRET_ACCESS_KEY=test",
        "AWS_REGION=us-east-1",
        "AWS_EC2_METADATA_DISABLED=true",
        "RUST_LOG=warn",
        env!("CARGO_BIN_EXE_ecs-xds"),
        "run",
        "--config",
        &config,
        "--inventory",
        inventory.to_str().unwrap(),
    ];
    ns.spawn(Who::Peer, Path::new("/usr/bin/env"), &args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_reaches_services_by_name_and_address_with_no_proxy_setting() {
    let task = Task::start("mesh", "intercepted", "passthrough").await;
    // Envoy holds its config: its own connection to ecs-xds (10.200.0.1) was not redirected,
    // or it would have been passed through Envoy and counted.
    assert_eq!(
        task.stat(PASSTHROUGH).await,
        0,
        "Envoy's xDS connection went into Envoy"
    );

    // The app resolved orders.prod.local to orders-a, which answers 503: Envoy routes by Host,
    // balances over orders' tasks and retries on the other one, as orders' tags say.
    let by_name = format!("http://{ORDERS_A}:8080/");
    for _ in 0..20 {
        let answer = task.get(&by_name, Some("orders.prod.local:8080")).await;
        assert!(answer.starts_with("200 orders-b\n"), "{answer:?}");
    }
    assert!(task.stat("cluster.orders.upstream_rq_retry").await >= 1);
    assert!(task.stat("cluster.orders.upstream_rq_total").await >= 20);
    // orders' weights apply too: all to revision 2 (orders-b), with no retries left to hide
    // a request sent to orders-a.
    let weighted = RoutePolicy {
        retries: Some(0),
        weights: vec![RevisionWeight {
            revision: 2,
            weight: 100,
        }],
        ..orders_policy()
    };
    write_inventory(task.dir.path(), DB_A, weighted);
    task.wait_for_chains(|dump| dump.contains("weighted_clusters"))
        .await;
    let retried = task.stat("cluster.orders.upstream_rq_retry").await;
    for _ in 0..20 {
        let answer = task.get(&by_name, Some("orders.prod.local:8080")).await;
        assert!(answer.starts_with("200 orders-b\n"), "{answer:?}");
    }
    assert_eq!(task.stat("cluster.orders.upstream_rq_retry").await, retried);
    // HTTP to an address no service has, but for orders' name, still goes to orders.
    let elsewhere = task
        .get(&format!("http://{OUTSIDE}/"), Some("orders.prod.local"))
        .await;
    assert!(elsewhere.starts_with("200 orders-b\n"), "{elsewhere:?}");

    // TCP to db's task (db speaks first): through db's cluster.
    assert_eq!(task.ns.tcp(Who::App, DB_A, 5432).await.trim(), "db-a");
    assert_eq!(task.stat("cluster.db.upstream_cx_total").await, 1);
    // Tagged protocol=tcp, db's port is never held by the HTTP inspector (a silent client
    // would wait for its timeout).
    let waited = "listener.127.0.0.1_15001.downstream_pre_cx_timeout";
    assert_eq!(task.stat(waited).await, 0);

    // Anything else goes where it was sent, counted; the credentials endpoint never enters.
    let outside = task
        .get(&format!("http://{OUTSIDE}/"), Some("example.com"))
        .await;
    assert!(outside.starts_with("200 outside\n"), "{outside:?}");
    assert_eq!(task.stat(PASSTHROUGH).await, 1);
    let credentials = task.get(&format!("http://{CREDENTIALS}/"), None).await;
    assert!(
        credentials.starts_with("200 credentials\n"),
        "{credentials:?}"
    );
    assert_eq!(
        task.stat(PASSTHROUGH).await,
        1,
        "the credentials call went into Envoy"
    );

    // Redirected ingress reaches the app, which is told the caller's address.
    let peer = task
        .ns
        .get(Who::Peer, &format!("http://{APP_ADDR}:{APP_PORT}/"), None)
        .await;
    assert!(
        peer.starts_with("200 app\n") && peer.contains(&format!("xff {PEER_ADDR}")),
        "{peer:?}"
    );
    assert_eq!(
        task.stat("cluster.interception-app-9080.upstream_cx_total")
            .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_stops_leaves_the_filter_chains_and_a_new_one_joins() {
    let task = Task::start("churn", "intercepted", "passthrough").await;
    assert_eq!(task.ns.tcp(Who::App, DB_A, 5432).await.trim(), "db-a");
    assert_eq!(task.stat("cluster.db.upstream_cx_total").await, 1);
    // db's task moves: the old address leaves db's chain, the new one joins it.
    write_inventory(task.dir.path(), DB_B, orders_policy());
    task.wait_for_chains(|chains| chains.contains(DB_B) && !chains.contains(DB_A))
        .await;
    assert_eq!(task.ns.tcp(Who::App, DB_B, 5432).await.trim(), "db-b");
    assert_eq!(task.stat("cluster.db.upstream_cx_total").await, 2);
    let before = task.stat(PASSTHROUGH).await;
    assert_eq!(task.ns.tcp(Who::App, DB_A, 5432).await.trim(), "db-a");
    assert_eq!(
        task.stat("cluster.db.upstream_cx_total").await,
        2,
        "the stopped task is db's"
    );
    assert_eq!(task.stat(PASSTHROUGH).await, before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_only_refuses_what_is_outside_the_mesh_and_counts_it() {
    let task = Task::start("registry", "locked", "registry_only").await;
    let outside = task
        .get(&format!("http://{OUTSIDE}/"), Some("example.com"))
        .await;
    assert!(outside.starts_with("403 "), "{outside:?}");
    let refused = "listener.127.0.0.1_15001.no_filter_chain_match";
    assert_eq!(task.stat(refused).await, 0);
    let tcp = task.ns.tcp(Who::App, OUTSIDE, 22).await;
    assert!(!tcp.contains("outside"), "{tcp:?}");
    assert_eq!(task.stat(refused).await, 1);
    // Inside the mesh, and Envoy's own and the credentials connections, are untouched.
    let orders = task
        .get(&format!("http://{ORDERS_B}:8080/"), Some("orders"))
        .await;
    assert!(orders.starts_with("200 orders-b\n"), "{orders:?}");
    let credentials = task.get(&format!("http://{CREDENTIALS}/"), None).await;
    assert!(
        credentials.starts_with("200 credentials\n"),
        "{credentials:?}"
    );
}
