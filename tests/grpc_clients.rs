//! Proxyless gRPC clients served by the real `ecs-xds run`: grpcio (the gRPC C core) and
//! grpc-js with @grpc/grpc-js-xds, calling gRPC servers on 127.0.0.1 by `xds:///<cluster>`,
//! with no listener written by hand: the node type's template only says `[grpc] enabled`
//! (and `[mtls]` for mutual TLS with the agent's certificates, gRFC A29).

use crate::support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::identity_e2e::{spiffe_id, Mesh, TRUST_DOMAIN};
use ecs_xds::inventory::{
    Cluster, ClusterOverrides, Endpoint, Health, Inventory, Locality, RevisionWeight, RoutePolicy,
    Source, Workload,
};
use support::daemon::{ecs_xds_command, Running};
use support::grpc::{
    bootstrap, grpc_js_calls, grpcio_calls, grpcio_xds_calls, with_certificate_provider, CallLoop,
    GrpcServer,
};
use support::moto::Moto;
use support::settings::SettingsFile;

const GRPC_TEMPLATE: &str = "# Proxyless gRPC clients.\n[grpc]\nenabled = true\n";

/// `settings` and the gRPC node type's template, in `dir`; the settings file.
fn settings(dir: &Path, settings: SettingsFile) -> PathBuf {
    settings_with(dir, settings, GRPC_TEMPLATE)
}

/// `settings` and `template` as the gRPC node type's, in `dir`; the settings file.
fn settings_with(dir: &Path, settings: SettingsFile, template: &str) -> PathBuf {
    let config = settings.write(dir);
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    std::fs::write(dir.join("templates/grpc.toml"), template).unwrap();
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_clients_call_a_cloud_map_service_and_follow_its_instances() {
    let (a, b) = (
        GrpcServer::start("server-a").await,
        GrpcServer::start("server-b").await,
    );
    let moto = Moto::start();
    let seed = moto.seed(&["--no-ecs", "--cloudmap-instance", &a.addr.to_string()]);
    let dir = tempfile::tempdir().unwrap();
    let aws = SettingsFile::new()
        .aws_endpoint(&moto.endpoint)
        .poll_interval("1s")
        .namespaces(&["demo.local"]);
    let daemon = Running::start(&settings(dir.path(), aws)).await;
    let config = bootstrap(daemon.xds, "grpc-client1");
    let target = "xds:///cloudmap.backend.demo.local";

    // A client that keeps calling while the service's instances change under it.
    let mut calls = CallLoop::start(&config, target);
    calls.until("ok server-a", Duration::from_secs(20)).await;

    // A second implementation agrees.
    let js = grpc_js_calls(&config, target, 3).await;
    assert_eq!(js, ["ok server-a"; 3], "grpc-js");

    // Instance a is deregistered and b registered: the same client moves over, no restart.
    let sd = aws_sdk_servicediscovery::Client::new(&moto.sdk_config().await);
    let service_id = seed["cloud_map"]["service_id"].as_str().unwrap();
    sd.register_instance()
        .service_id(service_id)
        .instance_id("instance-b")
        .attributes("AWS_INSTANCE_IPV4", "127.0.0.1")
        .attributes("AWS_INSTANCE_PORT", b.addr.port().to_string())
        .send()
        .await
        .unwrap();
    sd.deregister_instance()
        .service_id(service_id)
        .instance_id(seed["cloud_map"]["instances"][0].as_str().unwrap())
        .send()
        .await
        .unwrap();
    let started = Instant::now();
    calls.until("ok server-b", Duration::from_secs(20)).await;
    eprintln!(
        "the client moved to the new instance after {:?}",
        started.elapsed()
    );
    calls.until("ok server-b", Duration::from_secs(5)).await;
}

fn grpc_service(name: &str, servers: &[(&GrpcServer, u32)], weights: &[(u32, u32)]) -> Cluster {
    Cluster {
        name: name.into(),
        source: Source::Ecs {
            ecs_cluster: "prod".into(),
            service: name.into(),
        },
        port_name: None,
        overrides: ClusterOverrides::default(),
        route: RoutePolicy {
            weights: weights
                .iter()
                .map(|&(revision, weight)| RevisionWeight { revision, weight })
                .collect(),
            ..Default::default()
        },
        backends: None,
        security: Default::default(),
        endpoints: servers
            .iter()
            .map(|(server, revision)| endpoint(server.addr.port(), *revision))
            .collect(),
    }
}

fn endpoint(port: u16, revision: u32) -> Endpoint {
    Endpoint {
        address: "127.0.0.1".into(),
        port,
        health: Health::Healthy,
        locality: Locality {
            region: "us-east-1".into(),
            zone: Some("us-east-1a".into()),
        },
        weight: 1,
        id: format!("task-{port}"),
        revision: Some(revision),
        deployment: None,
    }
}

async fn serve_inventory(dir: &Path, clusters: Vec<Cluster>) -> Running {
    serve_inventory_with(dir, GRPC_TEMPLATE, clusters).await
}

pub(crate) async fn serve_inventory_with(
    dir: &Path,
    template: &str,
    clusters: Vec<Cluster>,
) -> Running {
    let config = settings_with(dir, SettingsFile::new(), template);
    let inventory = Inventory {
        clusters: clusters.into_iter().map(|c| (c.name.clone(), c)).collect(),
        warnings: Vec::new(),
        callers: Default::default(),
    };
    let path = dir.join("inventory.json");
    std::fs::write(&path, serde_json::to_string(&inventory).unwrap()).unwrap();
    let mut command = ecs_xds_command(&config);
    command.arg("--inventory").arg(&path);
    Running::start_command(command).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_split_across_revisions_by_their_weights() {
    let (stable, canary) = (
        GrpcServer::start("rev-11").await,
        GrpcServer::start("rev-12").await,
    );
    let greeter = grpc_service(
        "greeter",
        &[(&stable, 11), (&canary, 12)],
        &[(12, 20), (11, 80)],
    );
    let dir = tempfile::tempdir().unwrap();
    let daemon = serve_inventory(dir.path(), vec![greeter]).await;
    let config = bootstrap(daemon.xds, "grpc-split");
    let answers = grpcio_calls(&config, "xds:///greeter", 1000, &[]).await;
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for answer in &answers {
        *counts.entry(answer.as_str()).or_default() += 1;
    }
    let share = |name: &str| 100.0 * *counts.get(name).unwrap_or(&0) as f64 / 1000.0;
    assert_eq!(counts.values().sum::<usize>(), 1000);
    assert!((share("ok rev-12") - 20.0).abs() <= 5.0, "{counts:?}");
    assert!((share("ok rev-11") - 80.0).abs() <= 5.0, "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_of_an_unknown_target_hears_it_does_not_exist_and_nodes_shows_it() {
    let server = GrpcServer::start("greeter").await;
    let greeter = grpc_service("greeter", &[(&server, 1)], &[]);
    let dir = tempfile::tempdir().unwrap();
    let daemon = serve_inventory(dir.path(), vec![greeter]).await;
    let config = bootstrap(daemon.xds, "grpc-lost");
    let started = Instant::now();
    // grpcio reads the server's NOT_FOUND with A88's data error handling on; without it, the
    // same answer comes after gRPC's 15 s does-not-exist timer.
    let env = [("GRPC_EXPERIMENTAL_XDS_DATA_ERROR_HANDLING", "true")];
    let answers = grpcio_calls(&config, "xds:///no-such-service", 1, &env).await;
    assert!(
        answers[0].starts_with("error UNAVAILABLE") && answers[0].contains("does not exist"),
        "{answers:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let nodes: serde_json::Value = reqwest::get(format!("http://{}/nodes", daemon.admin))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let text = nodes.to_string();
    assert!(text.contains("no-such-service"), "{text}");
}

/// The ECS service `name` of the task `task`'s cluster (so of its account and region), served
/// by `server`.
fn ecs_service(name: &str, task: &str, server: &GrpcServer) -> Cluster {
    ecs_service_at(name, task, server.addr.port())
}

/// [`ecs_service`] served on 127.0.0.1:`port`.
pub(crate) fn ecs_service_at(name: &str, task: &str, port: u16) -> Cluster {
    let mut cluster = grpc_service(name, &[], &[]);
    cluster.endpoints.push(endpoint(port, 1));
    let workload = Workload::of_task_arn(task).expect("a task ARN");
    cluster.source = Source::Ecs {
        ecs_cluster: workload.ecs_cluster.clone(),
        service: name.into(),
    };
    cluster.security.workload = Some(workload);
    cluster
}

/// A gRPC node type with `[mtls]`, served to clients of web's task: `orders` at a TLS server
/// holding orders' certificate, `users` at one holding api's (valid, of the trust domain, but
/// not users' SPIFFE ID). All certificates are real agents', from the mesh's identity endpoint.
struct MtlsClients {
    /// The clients' bootstrap: ADS, and the certificate provider `ecs-xds` over web's files.
    config: String,
    _mesh: Mesh,
    _agents: Vec<crate::identity_e2e::Agent>,
    _servers: Vec<GrpcServer>,
    _dir: tempfile::TempDir,
    _daemon: Running,
}

impl MtlsClients {
    async fn start() -> MtlsClients {
        let started = Instant::now();
        let mesh = Mesh::start("").await;
        let (_, web_certs, web_agent) = mesh.certified("web", "certs-web").await;
        let (orders_task, orders_certs, orders_agent) =
            mesh.certified("orders", "certs-orders").await;
        let (_, api_certs, api_agent) = mesh.certified("api", "certs-api").await;
        let orders = GrpcServer::start_tls("orders", &orders_certs).await;
        let impostor = GrpcServer::start_tls("impostor", &api_certs).await;
        let template = format!(
            "[grpc]\nenabled = true\n[mtls]\nmode = \"strict\"\ntrust_domain = \"{TRUST_DOMAIN}\"\n"
        );
        let dir = tempfile::tempdir().unwrap();
        let clusters = vec![
            ecs_service("orders", &orders_task, &orders),
            ecs_service("users", &orders_task, &impostor),
        ];
        let daemon = serve_inventory_with(dir.path(), &template, clusters).await;
        let plain = bootstrap(daemon.xds, "grpc-mtls");
        let config = with_certificate_provider(&plain, "ecs-xds", &web_certs);
        eprintln!(
            "mesh, three agents' certificates and ecs-xds in {:?}",
            started.elapsed()
        );
        MtlsClients {
            config,
            _mesh: mesh,
            _agents: vec![web_agent, orders_agent, api_agent],
            _servers: vec![orders, impostor],
            _dir: dir,
            _daemon: daemon,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_client_with_xds_credentials_calls_its_callee_over_mutual_tls() {
    let clients = MtlsClients::start().await;
    let started = Instant::now();
    let answers = grpcio_xds_calls(&clients.config, "xds:///orders", 3).await;
    let answer = format!("ok orders to {}", spiffe_id("web"));
    assert_eq!(
        answers,
        [answer.as_str(); 3],
        "orders answers, and saw web's certificate"
    );
    eprintln!("3 calls over mutual TLS in {:?}", started.elapsed());
    // A channel without xDS credentials ignores the cluster's TLS context: plaintext, which
    // the server refuses.
    let plaintext = grpcio_calls(&clients.config, "xds:///orders", 1, &[]).await;
    assert!(
        plaintext[0].starts_with("error UNAVAILABLE"),
        "{plaintext:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_client_refuses_a_server_holding_another_services_certificate() {
    let clients = MtlsClients::start().await;
    let refused = grpcio_xds_calls(&clients.config, "xds:///users", 1).await;
    let mismatch = "SANs from certificate did not match SANs from xDS control plane";
    assert!(
        refused[0].starts_with("error UNAVAILABLE") && refused[0].contains(mismatch),
        "{refused:?}"
    );
}
