//! The zone of a verified Envoy is its task's, from attestation: the CA writes the zone ECS
//! gives the task into the certificate (localityName), and ecs-xds serves the Envoy in it,
//! refusing a bootstrap that claims another. moto's tasks carry no `availabilityZone`, so ecs-xds
//! talks to moto through [`ZonedEcs`], which answers DescribeTasks with one, as ECS does.
//!
//! `client_auth = "optional"`: the Envoys connect with their agent's certificate, and the test's
//! CSDS client reads the xDS port in plaintext beside them.

use std::path::Path;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::status::v3::client_status_discovery_service_client::ClientStatusDiscoveryServiceClient;
use envoy_types::pb::envoy::service::status::v3::ClientStatusRequest;
use envoy_types::pb::google::protobuf::value::Kind;
use serde_json::{json, Value};

use super::Mesh;
use super::{ca_files, identity_settings, nodes_of, prepared_dir, spiffe_id, wait_for_discovered};
use crate::support::envoy::{AdsMode, Envoy};
use crate::support::http::wait_for_metric;
use crate::support::moto::Moto;
use crate::support::zoned_ecs::ZonedEcs;

/// The zone ECS (the proxy) puts every task in.
const ZONE: &str = "us-east-1a";
const ZONE_MISMATCH: &str = "ecs_xds_xds_identity_refused_total{reason=\"zone_mismatch\"}";

/// The localityName of the certificate in `dir/cert.pem`.
fn certificate_zone(dir: &Path) -> Option<String> {
    let pem = std::fs::read(dir.join("cert.pem")).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    let cert = pem.parse_x509().unwrap();
    let mut zones = cert.subject().iter_locality();
    zones.next().map(|l| l.as_str().unwrap().to_owned())
}

/// An Envoy of web with its agent's certificate, its bootstrap claiming `zone` when given.
async fn web_envoy(mesh: &Mesh, node_id: &str, zone: Option<&str>, certs: &Path) -> Envoy {
    let mut config = mesh.bootstrap(node_id, "web", Some(certs));
    if let Some(zone) = zone {
        config["node"]["locality"] = json!({ "zone": zone });
    }
    Envoy::start_config(config, AdsMode::Sotw).await
}

/// The node `node_id` as CSDS on the xDS port reports it.
async fn csds_node(mesh: &Mesh, node_id: &str) -> Node {
    let xds = format!("http://{}", mesh.daemon.xds);
    let mut csds = ClientStatusDiscoveryServiceClient::connect(xds)
        .await
        .unwrap();
    let status = csds.fetch_client_status(ClientStatusRequest::default());
    let status = status.await.unwrap().into_inner();
    let mut nodes = status.config.into_iter().filter_map(|c| c.node);
    let found = nodes.find(|n| n.id == node_id);
    found.unwrap_or_else(|| panic!("{node_id} is not in CSDS"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_envoy_is_served_in_its_tasks_zone_and_refused_when_it_claims_another() {
    let moto = Moto::start();
    let seed = moto.seed(&["--tasks-per-service", "1"]);
    let ecs = ZonedEcs::start(&moto.endpoint, ZONE).await;
    let dir = prepared_dir();
    let config = identity_settings(&moto, &ca_files(dir.path()))
        .aws_endpoint(&ecs.endpoint())
        .set("xds", "client_auth", "optional")
        .write(dir.path());
    let mesh = Mesh::serve(moto, seed, dir, &config).await;
    let (_, certs, _agent) = mesh.certified("web", "certs").await;
    assert_eq!(certificate_zone(&certs).as_deref(), Some(ZONE));

    // No zone in the bootstrap, and the right one: both served in the task's zone.
    let unclaimed = web_envoy(&mesh, "sidecar-unclaimed", None, &certs).await;
    let right = web_envoy(&mesh, "sidecar-right", Some(ZONE), &certs).await;
    for envoy in [&unclaimed, &right] {
        wait_for_discovered(envoy, "the clusters over mTLS").await;
    }
    let nodes: Value = nodes_of(mesh.daemon.admin).await;
    let node = |id: &str| {
        let mut all = nodes["nodes"].as_array().unwrap().iter();
        all.find(|n| n["node_id"] == id)
            .cloned()
            .unwrap_or_default()
    };
    for id in ["sidecar-unclaimed", "sidecar-right"] {
        assert_eq!(node(id)["zone"], ZONE, "{nodes}");
        assert_eq!(node(id)["streams"][0]["identity"], spiffe_id("web"));
    }

    // Another zone in the bootstrap: refused, counted, and given nothing.
    let wrong = web_envoy(&mesh, "sidecar-wrong", Some("us-east-1b"), &certs).await;
    let limit = Duration::from_secs(20);
    wait_for_metric(mesh.daemon.admin, ZONE_MISMATCH, 1.0, limit).await;
    let names = wrong.cluster_names().await;
    assert!(names.iter().all(|c| c == "ecs-xds"), "{names:?}");
    let nodes: Value = nodes_of(mesh.daemon.admin).await;
    assert!(!nodes.to_string().contains("sidecar-wrong"), "{nodes}");

    // CSDS shows who the stream proved to be, and the zone it is served in.
    let reported = csds_node(&mesh, "sidecar-unclaimed").await;
    assert_eq!(reported.locality.unwrap().zone, ZONE);
    let metadata = reported.metadata.expect("the node's metadata");
    let identity = &metadata.fields["ecs-xds.identity"].kind;
    assert_eq!(identity, &Some(Kind::StringValue(spiffe_id("web"))));
}
