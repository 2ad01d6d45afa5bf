use std::net::SocketAddr;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request};
use serde_json::json;
use tower_service::Service;

use super::*;
use crate::inventory::Inventory;
use crate::push::tests::{body, listener, route, static_cluster};
use crate::push::Pushes;
use crate::synthesize::synthesizer::tests::{template, templates, three_services};
use crate::synthesize::Synthesizer;

const LOOPBACK: &str = "127.0.0.1:19000";

/// A synthesis loop for node type `sidecar` over three services, persisting in `dir`.
fn synthesis_loop(
    dir: &std::path::Path,
    inventory: Option<Inventory>,
) -> mpsc::Sender<PushCommand> {
    let (tx, mut rx) = mpsc::channel(4);
    let mut pushes = Pushes::open(dir).unwrap();
    let mut synthesizer = Synthesizer::new(templates(&[("sidecar", &template(""))]));
    pushes.load_into(&mut synthesizer);
    tokio::spawn(async move {
        while let Some(command) = rx.recv().await {
            (pushes.handle(command, &mut synthesizer, inventory.as_ref(), |_| {})).await;
        }
    });
    tx
}

fn api(dir: &std::path::Path, token: Option<&str>, max_body_bytes: usize) -> Router {
    let commands = synthesis_loop(dir, Some(three_services()));
    let listen: SocketAddr = LOOPBACK.parse().unwrap();
    routes(PushApi::new(commands, listen, token.map(str::to_owned), max_body_bytes).unwrap())
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

async fn send(
    router: &Router,
    method: Method,
    uri: &str,
    token: Option<&str>,
    body: Vec<u8>,
) -> Answer {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request.body(Body::from(body)).unwrap();
    let response = router.clone().call(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    Answer {
        status,
        headers,
        body,
    }
}

/// A PUT with `If-Match: value`.
async fn put_if_match(router: &Router, value: &str, body: Vec<u8>) -> Answer {
    let request = Request::builder()
        .method(Method::PUT)
        .uri("/resources/sidecar")
        .header(header::IF_MATCH, value)
        .body(Body::from(body))
        .unwrap();
    let response = router.clone().call(request).await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    Answer {
        status,
        headers,
        body,
    }
}

#[tokio::test]
async fn if_match_applies_a_put_only_over_the_version_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let router = api(dir.path(), None, 1 << 20);
    let nothing_yet = put_if_match(&router, "*", a_push()).await;
    assert_eq!(nothing_yet.status, StatusCode::CONFLICT);
    let first = send(&router, Method::PUT, "/resources/sidecar", None, a_push()).await;
    let etag = first.headers[header::ETAG].to_str().unwrap().to_owned();
    let second_body =
        body(&json!({"version": "v2", "clusters": [static_cluster("backend", 9001)]}));
    let stale = put_if_match(&router, "\"0000000000000000\"", second_body.clone()).await;
    assert_eq!(stale.status, StatusCode::CONFLICT);
    assert!(
        stale.json()["error"].as_str().unwrap().contains("If-Match"),
        "{:?}",
        stale.body
    );
    let get = send(&router, Method::GET, "/resources/sidecar", None, vec![]).await;
    assert_eq!(get.body, a_push(), "a refused PUT changes nothing");
    let current = put_if_match(&router, &etag, second_body.clone()).await;
    assert_eq!(current.status, StatusCode::OK, "{:?}", current.body);
    assert_ne!(current.headers[header::ETAG], etag.as_str());
    let again = put_if_match(&router, &etag, second_body).await;
    assert_eq!(
        again.status,
        StatusCode::CONFLICT,
        "the old version is gone"
    );
}

fn a_push() -> Vec<u8> {
    body(&json!({
        "version": "v1",
        "clusters": [static_cluster("backend", 9000)],
        "listeners": [listener("pushed", 15002, "pushed")],
        "routes": [route("pushed", "backend")],
    }))
}

#[tokio::test]
async fn put_get_delete_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let router = api(dir.path(), None, 1 << 20);
    let put = send(&router, Method::PUT, "/resources/sidecar", None, a_push()).await;
    assert_eq!(put.status, StatusCode::OK, "{:?}", put.body);
    let etag = put.json()["etag"].as_str().unwrap().to_owned();
    assert_eq!(etag.len(), 16, "{etag}");
    assert_eq!(
        put.json(),
        json!({
            "node_type": "sidecar",
            "version": "v1",
            "etag": etag,
            "resources": {"listeners": 1, "clusters": 1, "endpoints": 0, "routes": 1},
            "warnings": [],
        })
    );
    assert_eq!(put.headers[header::ETAG], format!("\"{etag}\""));
    assert!(dir.path().join("sidecar.json").exists());
    let get = send(&router, Method::GET, "/resources/sidecar", None, vec![]).await;
    assert_eq!(get.status, StatusCode::OK);
    assert_eq!(get.body, a_push());
    assert_eq!(get.headers[header::ETAG], format!("\"{etag}\""));
    let delete = send(&router, Method::DELETE, "/resources/sidecar", None, vec![]).await;
    assert_eq!(delete.status, StatusCode::NO_CONTENT);
    assert!(!dir.path().join("sidecar.json").exists());
    for method in [Method::GET, Method::DELETE] {
        let gone = send(&router, method, "/resources/sidecar", None, vec![]).await;
        assert_eq!(gone.status, StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn a_bad_body_is_400_with_the_field_path_and_nothing_is_persisted() {
    let dir = tempfile::tempdir().unwrap();
    let router = api(dir.path(), None, 1 << 20);
    let mut l = listener("pushed", 15002, "pushed");
    l["address"]["socket_address"]["port_value"] = json!("x");
    let bad = body(&json!({"listeners": [l]}));
    let put = send(&router, Method::PUT, "/resources/sidecar", None, bad).await;
    assert_eq!(put.status, StatusCode::BAD_REQUEST);
    let answer = put.json();
    assert_eq!(
        answer["path"],
        "listeners[0].address.socket_address.port_value"
    );
    assert_eq!(answer["errors"].as_array().unwrap().len(), 1);
    let not_json = send(
        &router,
        Method::PUT,
        "/resources/sidecar",
        None,
        b"{".to_vec(),
    )
    .await;
    assert_eq!(not_json.status, StatusCode::BAD_REQUEST);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn a_dangling_reference_is_400_naming_it_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let router = api(dir.path(), None, 1 << 20);
    let dangling = body(&json!({"listeners": [listener("pushed", 15002, "nowhere")]}));
    let put = send(&router, Method::PUT, "/resources/sidecar", None, dangling).await;
    assert_eq!(put.status, StatusCode::BAD_REQUEST);
    let answer = put.json();
    assert_eq!(answer["path"], "listeners[0]");
    assert!(
        answer["error"].as_str().unwrap().contains("\"nowhere\""),
        "{answer}"
    );
    let get = send(&router, Method::GET, "/resources/sidecar", None, vec![]).await;
    assert_eq!(get.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_and_a_bad_node_type_400() {
    let dir = tempfile::tempdir().unwrap();
    let router = api(dir.path(), None, 64);
    let put = send(&router, Method::PUT, "/resources/sidecar", None, a_push()).await;
    assert_eq!(put.status, StatusCode::PAYLOAD_TOO_LARGE);
    let put = send(
        &router,
        Method::PUT,
        "/resources/.hidden",
        None,
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(put.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_configured_token_is_required() {
    let dir = tempfile::tempdir().unwrap();
    let router = api(dir.path(), Some("s3cret"), 1 << 20);
    for token in [None, Some("wrong")] {
        let put = send(&router, Method::PUT, "/resources/sidecar", token, a_push()).await;
        assert_eq!(put.status, StatusCode::UNAUTHORIZED);
        assert!(put.headers[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .starts_with("Bearer"));
    }
    let put = send(
        &router,
        Method::PUT,
        "/resources/sidecar",
        Some("s3cret"),
        a_push(),
    )
    .await;
    assert_eq!(put.status, StatusCode::OK);
}

#[test]
fn a_non_loopback_listener_needs_a_token() {
    let (tx, _rx) = mpsc::channel(1);
    let exposed: SocketAddr = "0.0.0.0:19000".parse().unwrap();
    let err = PushApi::new(tx.clone(), exposed, None, 1).unwrap_err();
    assert!(err.to_string().contains("admin.token"), "{err}");
    assert!(PushApi::new(tx.clone(), exposed, Some("t".into()), 1).is_ok());
    assert!(PushApi::new(tx, LOOPBACK.parse().unwrap(), None, 1).is_ok());
}

#[tokio::test]
async fn before_the_first_inventory_a_put_is_503() {
    let dir = tempfile::tempdir().unwrap();
    let commands = synthesis_loop(dir.path(), None);
    let api = PushApi::new(commands, LOOPBACK.parse().unwrap(), None, 1 << 20).unwrap();
    let put = send(
        &routes(api),
        Method::PUT,
        "/resources/sidecar",
        None,
        a_push(),
    )
    .await;
    assert_eq!(put.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(put.headers.contains_key(header::RETRY_AFTER));
}
