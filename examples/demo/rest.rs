//! The demo's REST-JSON step: what `curl -X POST .../v3/discovery:clusters` shows of a node,
//! and the `304 Not Modified` a poll already at the current version gets (an Envoy with
//! `api_type: REST` polls the same way; `tests/rest_e2e.rs` runs one).

use std::net::SocketAddr;

use serde_json::{json, Value};

pub(super) async fn show_rest_json(xds: SocketAddr) {
    let url = format!("http://{xds}/v3/discovery:clusters");
    let request = json!({"node": {"id": "sidecar-rest", "cluster": "web"}});
    println!("\ndemo: xDS over REST-JSON, as curl would: POST {url} {request}");
    let client = reqwest::Client::new();
    let response = client.post(&url).json(&request).send().await.expect("POST");
    let status = response.status();
    let body: Value = response.json().await.expect("a DiscoveryResponse in JSON");
    let names: Vec<&str> = (body["resources"].as_array().into_iter().flatten())
        .filter_map(|r| r["name"].as_str())
        .collect();
    println!(
        "  -> {status}, versionInfo {}, clusters {names:?} (web's backend set, as over gRPC)",
        body["versionInfo"]
    );
    let again = json!({"node": request["node"], "versionInfo": body["versionInfo"]});
    let second = client.post(&url).json(&again).send().await.expect("POST");
    println!(
        "  the same poll with that versionInfo -> {} (nothing changed: nothing sent)",
        second.status()
    );
}
