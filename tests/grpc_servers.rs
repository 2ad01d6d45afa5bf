//! xDS-enabled gRPC servers (gRFC A36) served by the real `ecs-xds run`: a grpcio server with
//! xDS server credentials gets its listener, mutual TLS from its agent's certificate (A29) and
//! its service's `allow-from` as RBAC (A41), and grpcio clients with xDS credentials call it.

use std::time::{Duration, Instant};

use crate::grpc_clients::{ecs_service_at, serve_inventory_with};
use crate::identity_e2e::{spiffe_id, Mesh, TRUST_DOMAIN};
use crate::support::grpc::{bootstrap, grpcio_xds_calls, with_certificate_provider, GrpcServer};
use ecs_xds::inventory::AllowFrom;

/// Calls `xds:///orders` with `config` until the server answers something other than
/// UNAVAILABLE (it serves only once it has its listener) or 30 s pass; the last answer.
async fn first_answer(config: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = grpcio_xds_calls(config, "xds:///orders", 1).await.remove(0);
        if !answer.starts_with("error UNAVAILABLE") || Instant::now() > deadline {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_xds_enabled_grpc_server_takes_mtls_and_allow_from_from_ecs_xds() {
    let started = Instant::now();
    let mesh = Mesh::start("").await;
    let (_, web_certs, _web_agent) = mesh.certified("web", "certs-web").await;
    let (orders_task, orders_certs, _orders_agent) = mesh.certified("orders", "certs-orders").await;
    let (_, api_certs, _api_agent) = mesh.certified("api", "certs-api").await;
    let address = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    let template = format!(
        "[grpc]\nenabled = true\nserver_addresses = [\"{address}\"]\n\
         [mtls]\nmode = \"strict\"\ntrust_domain = \"{TRUST_DOMAIN}\"\n"
    );
    let mut orders = ecs_service_at("orders", &orders_task, address.port());
    orders.security.allow_from = Some(AllowFrom::Services(vec!["web".into()]));
    let dir = tempfile::tempdir().unwrap();
    let daemon = serve_inventory_with(dir.path(), &template, vec![orders]).await;
    // The server's bootstrap: it is orders, and asks for its listener by address.
    let mut server_config: serde_json::Value =
        serde_json::from_str(&bootstrap(daemon.xds, "grpc-orders")).unwrap();
    server_config["node"]["cluster"] = "orders".into();
    server_config["server_listener_resource_name_template"] =
        "grpc/server?xds.resource.listening_address=%s".into();
    let server_config =
        with_certificate_provider(&server_config.to_string(), "ecs-xds", &orders_certs);
    let _server = GrpcServer::start_xds("orders", address, &server_config).await;
    let client =
        |certs| with_certificate_provider(&bootstrap(daemon.xds, "grpc-client"), "ecs-xds", certs);
    eprintln!(
        "mesh, agents, ecs-xds and the server in {:?}",
        started.elapsed()
    );

    let answer = first_answer(&client(&web_certs)).await;
    assert_eq!(
        answer,
        format!("ok orders to {}", spiffe_id("web")),
        "web is allowed, over mutual TLS"
    );
    let denied = first_answer(&client(&api_certs)).await;
    assert!(
        denied.starts_with("error PERMISSION_DENIED"),
        "api is not in orders' allow-from: {denied}"
    );
    eprintln!("both answers after {:?}", started.elapsed());
}
