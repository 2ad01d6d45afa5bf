//! xDS over REST-JSON under mutual TLS: the same client-certificate rules as gRPC. A real Envoy
//! 1.40 polling CDS and LDS over REST with web's agent certificate gets web's snapshot and shows
//! in `/nodes` with its verified identity; one claiming another service is refused; a client
//! with no certificate never gets past the handshake.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::{ca_files, identity_settings, nodes_of, prepared_dir, spiffe_id, wait_for_discovered};
use super::{Mesh, TLS_FAILED, TRUST_DOMAIN};
use crate::rest_e2e::{rest_bootstrap, rest_template};
use crate::support::envoy::{free_port, AdsMode, Envoy};
use crate::support::http::{scrape_metric, wait_for_metric};
use crate::support::moto::Moto;

const CLAIM_REFUSED: &str = "ecs_xds_xds_identity_refused_total{reason=\"service_mismatch\"}";

/// A mesh (client certificates required on xDS) whose sidecar template is all REST.
async fn rest_mesh() -> Mesh {
    let moto = Moto::start();
    let seed = moto.seed(&["--tasks-per-service", "1"]);
    let dir = prepared_dir();
    let template = rest_template(free_port(), "egress", 1);
    std::fs::write(dir.path().join("templates/sidecar.toml"), template).unwrap();
    let config = identity_settings(&moto, &ca_files(dir.path())).write(dir.path());
    Mesh::serve(moto, seed, dir, &config).await
}

/// An Envoy of `service` polling REST over TLS with the agent's files in `certs`; HTTP/1.1, so
/// its ALPN offers `http/1.1`.
async fn rest_envoy(mesh: &Mesh, node_id: &str, service: &str, certs: &std::path::Path) -> Envoy {
    let mut config = rest_bootstrap(node_id, mesh.daemon.xds);
    config["node"]["cluster"] = json!(service);
    let mut tls = crate::support::envoy::xds_tls(&mesh.bundle(), Some(certs), TRUST_DOMAIN);
    tls["typed_config"]["common_tls_context"]["alpn_protocols"] = json!(["http/1.1"]);
    config["static_resources"]["clusters"][0]["transport_socket"] = tls;
    Envoy::start_config(config, AdsMode::Sotw).await
}

/// A TLS handshake with the xDS port offering no client certificate: refused by the server.
async fn handshake_without_certificate(mesh: &Mesh) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let bundle = std::fs::read_to_string(mesh.bundle()).unwrap();
    let mut tls = ecs_xds::identity::tls::client_config(&bundle).unwrap();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let tcp = tokio::net::TcpStream::connect(mesh.daemon.xds)
        .await
        .unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let Ok(mut stream) = connector.connect(name, tcp).await else {
        return false;
    };
    // TLS 1.3: the client's handshake ends before the server has checked it; the refusal comes
    // as an alert on the first read.
    let poll = r#"{"node":{"id":"sidecar-anon","cluster":"web"}}"#;
    let head = format!(
        "POST /v3/discovery:clusters HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{poll}",
        poll.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let mut answer = Vec::new();
    let read = stream.read_to_end(&mut answer).await;
    read.is_ok() && answer.starts_with(b"HTTP/1.1 200")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_polls_follow_the_client_certificate_rules_of_grpc() {
    let mesh = rest_mesh().await;
    let (_, certs, _agent) = mesh.certified("web", "certs").await;

    let envoy = rest_envoy(&mesh, "sidecar-rest-web", "web", &certs).await;
    wait_for_discovered(&envoy, "the clusters over REST and mTLS").await;
    let nodes: Value = nodes_of(mesh.daemon.admin).await;
    let node = (nodes["nodes"].as_array().unwrap().iter())
        .find(|n| n["node_id"] == "sidecar-rest-web")
        .unwrap_or_else(|| panic!("no REST poller in {nodes}"));
    assert_eq!(node["streams"][0]["mode"], "rest", "{node}");
    assert_eq!(node["streams"][0]["identity"], json!(spiffe_id("web")));

    // web's certificate, claiming api: refused, counted, and the Envoy gets no clusters.
    let before = scrape_metric(mesh.daemon.admin, CLAIM_REFUSED).await;
    let claims = rest_envoy(&mesh, "sidecar-rest-claims", "api", &certs).await;
    let limit = Duration::from_secs(20);
    wait_for_metric(mesh.daemon.admin, CLAIM_REFUSED, before + 1.0, limit).await;
    assert_eq!(claims.stat("cluster_manager.cds.update_success").await, 0);
    assert!(claims.cluster_names().await.iter().all(|n| n != "web"));

    // No certificate at all: the handshake is refused before any HTTP.
    let failed = scrape_metric(mesh.daemon.admin, TLS_FAILED).await;
    assert!(!handshake_without_certificate(&mesh).await);
    wait_for_metric(mesh.daemon.admin, TLS_FAILED, failed + 1.0, limit).await;
}
