//! Proxyless gRPC clients served by the real `ecs-xds run`: grpcio (the gRPC C core) and
//! grpc-js with @grpc/grpc-js-xds, calling gRPC servers on 127.0.0.1 by `xds:///<cluster>`,
//! with no listener written by hand: the node type's template only says `[grpc] enabled`.

use crate::support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ecs_xds::inventory::{
    Cluster, ClusterOverrides, Endpoint, Health, Inventory, Locality, RevisionWeight, RoutePolicy,
    Source,
};
use support::daemon::{ecs_xds_command, Running};
use support::grpc::{bootstrap, grpc_js_calls, grpcio_calls, CallLoop, GrpcServer};
use support::moto::Moto;
use support::settings::SettingsFile;

const GRPC_TEMPLATE: &str = "# Proxyless gRPC clients.\n[grpc]\nenabled = true\n";

/// `settings` and the gRPC node type's template, in `dir`; the settings file.
fn settings(dir: &Path, settings: SettingsFile) -> PathBuf {
    let config = settings.write(dir);
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    std::fs::write(dir.join("templates/grpc.toml"), GRPC_TEMPLATE).unwrap();
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
            .map(|(server, revision)| Endpoint {
                address: "127.0.0.1".into(),
                port: server.addr.port(),
                health: Health::Healthy,
                locality: Locality {
                    region: "us-east-1".into(),
                    zone: Some("us-east-1a".into()),
                },
                weight: 1,
                id: format!("task-{}", server.addr.port()),
                revision: Some(*revision),
                deployment: None,
            })
            .collect(),
    }
}

async fn serve_inventory(dir: &Path, clusters: Vec<Cluster>) -> Running {
    let config = settings(dir, SettingsFile::new());
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
