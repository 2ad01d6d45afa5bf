//! xDS over REST-JSON (`POST /v3/discovery:*`) from a real HTTP/1.1 client (reqwest) against
//! the in-process server on 127.0.0.1:0: answers, 304s, resource names, NACKs and refusals.

use crate::support;

use ecs_xds::cache::NodeTypeResolver;
use ecs_xds::snapshot::ResourceType::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::xds::*;

async fn serving() -> (TestServer, String) {
    let server = start_server(NodeTypeResolver::default()).await;
    let snapshot = sample(&["a", "b"], 8080, 10000);
    server.publisher.publish("sidecar", snapshot).unwrap();
    let base = format!("http://{}/v3/discovery:", server.addr);
    (server, base)
}

async fn post(url: &str, body: impl Into<reqwest::Body>) -> (StatusCode, String) {
    let response = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    (response.status(), response.text().await.unwrap())
}

async fn poll(url: &str, request: Value) -> (StatusCode, Value) {
    let (status, text) = post(url, request.to_string()).await;
    let json = match status {
        StatusCode::OK => serde_json::from_str(&text).unwrap(),
        _ => Value::String(text),
    };
    (status, json)
}

fn names(response: &Value) -> Vec<&str> {
    let resources = response["resources"].as_array().unwrap();
    (resources.iter())
        .map(|r| r["name"].as_str().or(r["clusterName"].as_str()).unwrap())
        .collect()
}

#[tokio::test]
async fn a_poll_gets_the_snapshot_in_proto3_json_then_304_once_it_has_it() {
    let (server, base) = serving().await;
    let clusters = format!("{base}clusters");
    let first = json!({"node": {"id": "sidecar-app1"}});
    let (status, response) = poll(&clusters, first).await;
    assert_eq!(status, StatusCode::OK, "{response}");
    let version = server
        .cache
        .snapshot("sidecar")
        .unwrap()
        .version(Cluster)
        .to_string();
    assert_eq!(response["versionInfo"], version.as_str());
    assert_eq!(response["nonce"], version.as_str());
    assert_eq!(response["typeUrl"], Cluster.type_url());
    assert_eq!(names(&response), ["a", "b"]);
    let cluster_type = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    assert_eq!(response["resources"][0]["@type"], cluster_type);
    assert_eq!(response["resources"][0]["type"], "EDS");

    let again = json!({"node": {"id": "sidecar-app1"}, "versionInfo": version});
    let (status, _) = poll(&clusters, again.clone()).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    let streams = server.cache.status().streams();
    assert_eq!(streams.len(), 1, "{streams:?}");
    assert_eq!((streams[0].service, streams[0].mode), ("rest", "rest"));
    let cds = &streams[0].types[Cluster.index()];
    assert_eq!(cds.acked_version.as_deref(), Some(version.as_str()));

    // A new snapshot is the answer to the next poll.
    server
        .publisher
        .publish("sidecar", sample(&["a", "c"], 8080, 10000))
        .unwrap();
    let (status, response) = poll(&clusters, again).await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(response["versionInfo"], version.as_str());
    assert_eq!(names(&response), ["a", "c"]);
}

#[tokio::test]
async fn resource_names_subscribe_as_in_grpc() {
    let (_server, base) = serving().await;
    let node = json!({"id": "sidecar-app1"});
    let one = json!({"node": node, "resourceNames": ["b"]});
    let (status, response) = poll(&format!("{base}endpoints"), one).await;
    assert_eq!(status, StatusCode::OK, "{response}");
    assert_eq!(names(&response), ["b"]);
    let routes = json!({"node": node, "resource_names": ["routes", "nowhere"]});
    let (status, response) = poll(&format!("{base}routes"), routes).await;
    assert_eq!(status, StatusCode::OK, "{response}");
    assert_eq!(names(&response), ["routes"]);
    let (status, response) = poll(&format!("{base}listeners"), json!({"node": node})).await;
    assert_eq!(status, StatusCode::OK, "{response}");
    assert_eq!(names(&response), ["ingress"]);
}

#[tokio::test]
async fn error_detail_is_recorded_as_a_nack_and_the_version_is_not_resent() {
    let (server, base) = serving().await;
    let listeners = format!("{base}listeners");
    let node = json!({"id": "sidecar-app1"});
    let (_, response) = poll(&listeners, json!({"node": node})).await;
    let version = response["versionInfo"].as_str().unwrap().to_owned();
    let nack = json!({
        "node": node,
        "responseNonce": version,
        "errorDetail": {"code": 3, "message": "duplicate filter chain match"},
    });
    let (status, _) = poll(&listeners, nack.clone()).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    let (status, _) = poll(&listeners, json!({"node": node})).await;
    assert_eq!(
        status,
        StatusCode::NOT_MODIFIED,
        "a rejected version is not resent"
    );
    let counters = server.cache.status().counters();
    assert_eq!(
        (counters.pushes(Listener), counters.nacks(Listener)),
        (1, 1)
    );
    let recent = server.cache.status().recent_nacks();
    assert_eq!(recent.len(), 1, "{recent:?}");
    assert_eq!(recent[0].message, "duplicate filter chain match");
    assert_eq!(recent[0].rejected_version, version);
}

#[tokio::test]
async fn bad_requests_get_a_clear_4xx_naming_the_problem() {
    let (_server, base) = serving().await;
    let clusters = format!("{base}clusters");
    let node = json!({"node": {"id": "sidecar-app1"}});

    let (status, text) = post(&format!("{base}runtime"), node.to_string()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        text.contains("/v3/discovery:runtime") && text.contains(":listeners"),
        "{text}"
    );

    let got = reqwest::get(&clusters).await.unwrap();
    assert_eq!(got.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(got.headers()["allow"], "POST");
    assert!(got.text().await.unwrap().contains("takes POST, not GET"));

    let (status, text) = post(&clusters, "{\"node\": {\"id\": ").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        text.contains("not a DiscoveryRequest in proto3 JSON"),
        "{text}"
    );

    let (status, text) = post(&clusters, r#"{"node": {"id": 7}}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(text.contains("node.id"), "the field path is named: {text}");

    let (status, text) = post(&clusters, "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(text.contains("empty"), "{text}");

    let (status, text) = post(&clusters, "{}").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(text.contains("node"), "{text}");

    let other_type = json!({"node": {"id": "n"}, "typeUrl": Listener.type_url()});
    let (status, text) = post(&clusters, other_type.to_string()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(text.contains(Listener.type_url()), "{text}");

    let padding = " ".repeat(2 << 20);
    let (status, text) = post(&clusters, format!("{node}{padding}")).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(text.contains("over 1048576 bytes"), "{text}");

    // Fields a newer Envoy may add are ignored, as proto3 JSON parsers may.
    let newer = json!({"node": {"id": "sidecar-n", "someFutureField": 1}});
    let (status, text) = post(&clusters, newer.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{text}");
}
