//! Transparent interception as ECS sets it up for a task whose definition has a
//! `proxyConfiguration` (type APPMESH): iptables in the task's network namespace redirect the
//! app's TCP into Envoy, except Envoy's own (uid 1337) and the credentials and metadata
//! endpoints. Two namespaces the test makes stand for the task and the rest of the network;
//! needs root and iptables (`scripts/setup-test-env.sh`).
//!
//! For now Envoy runs a static bootstrap, the shape an interception sidecar has: an egress
//! listener that forwards to the original destination and an ingress listener in front of the
//! app.

mod mesh;
mod secured;

use crate::support;

use serde_json::{json, Value};
use support::netns::{Namespaces, ProxyConfiguration, Who, APP_ADDR, ENVOY_UID};

/// Another service's task, in the peer namespace.
const BACKEND: &str = "10.200.0.11";
/// The ECS task credentials endpoint, also in the peer.
const CREDENTIALS: &str = "169.254.170.2";
/// The port the app serves on in its namespace.
const APP_PORT: u16 = 9080;

/// A listener on `port` that restores each redirected connection's original destination and
/// hands it to `cluster` over TCP.
fn intercepting_listener(name: &str, port: u16, cluster: &str) -> Value {
    json!({
        "name": name,
        "address": { "socket_address": { "address": "0.0.0.0", "port_value": port } },
        "listener_filters": [{ "name": "envoy.filters.listener.original_dst", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst" } }],
        "filter_chains": [{ "filters": [{ "name": "envoy.filters.network.tcp_proxy", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            "stat_prefix": name, "cluster": cluster } }] }]
    })
}

/// Egress on 15001 to wherever the app meant to go (cluster `passthrough`), ingress on 15000
/// to the app on 127.0.0.1 (cluster `app`).
fn interception_bootstrap(p: &ProxyConfiguration) -> Value {
    let app = json!({ "endpoint": { "address": { "socket_address": {
        "address": "127.0.0.1", "port_value": APP_PORT } } } });
    json!({
        "node": { "id": "interception", "cluster": "app" },
        "static_resources": {
            "listeners": [
                intercepting_listener("egress", p.egress_port, "passthrough"),
                intercepting_listener("ingress", p.ingress_port, "app"),
            ],
            "clusters": [
                { "name": "passthrough", "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED",
                  "connect_timeout": "1s" },
                { "name": "app", "type": "STATIC", "connect_timeout": "1s", "load_assignment": {
                    "cluster_name": "app", "endpoints": [{ "lb_endpoints": [app] }] } },
            ]
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecs_proxy_configuration_redirects_the_apps_traffic_into_envoy_but_not_envoys_own_or_the_credentials_endpoints(
) {
    let ns = Namespaces::new("intercept", &[BACKEND, CREDENTIALS]);
    let peer = [
        format!("http:{BACKEND}:8080:backend"),
        format!("http:{CREDENTIALS}:80:credentials"),
    ];
    let _peer = ns.serve(Who::Peer, &[&peer[0], &peer[1]]).await;
    let _app = ns
        .serve(Who::App, &[&format!("http:0.0.0.0:{APP_PORT}:app")])
        .await;
    let proxy = ProxyConfiguration::ecs_defaults(&[APP_PORT]);
    ns.proxy_configuration(&proxy);
    let envoy = ns.start_envoy(interception_bootstrap(&proxy)).await;
    let egress = "cluster.passthrough.upstream_cx_total";
    let backend = format!("http://{BACKEND}:8080/");

    let answer = ns.get(Who::App, &backend, None).await;
    assert!(
        answer.starts_with("200 backend\n"),
        "the app got {answer:?}"
    );
    assert_eq!(
        envoy.stat(egress).await,
        1,
        "the app's call went around Envoy"
    );

    let answer = ns
        .get(Who::App, &format!("http://{CREDENTIALS}/"), None)
        .await;
    assert!(answer.starts_with("200 credentials\n"), "{answer:?}");
    assert_eq!(
        envoy.stat(egress).await,
        1,
        "the credentials call went into Envoy"
    );

    // Envoy's own upstream connections would loop back into it if its uid were redirected.
    let answer = ns.get(Who::AppAs(ENVOY_UID), &backend, None).await;
    assert!(answer.starts_with("200 backend\n"), "{answer:?}");
    assert_eq!(
        envoy.stat(egress).await,
        1,
        "uid {ENVOY_UID}'s call went into Envoy"
    );

    let answer = ns
        .get(Who::Peer, &format!("http://{APP_ADDR}:{APP_PORT}/"), None)
        .await;
    // Envoy's ingress listener reached the app from 127.0.0.1, not the peer's address.
    assert!(
        answer.starts_with("200 app\nsource 127.0.0.1:"),
        "the peer got {answer:?}"
    );
    assert_eq!(envoy.stat("cluster.app.upstream_cx_total").await, 1);
}

/// deploy/ecs's task definition and the project's `intercepted` template agree: the ports ECS
/// redirects to are the ones the template's listeners take, the app port is an app port, Envoy
/// runs as the ignored uid and the credentials and metadata addresses are not redirected.
#[test]
fn the_deploy_task_definition_redirects_to_the_intercepted_templates_ports() {
    let root = support::moto::repo_root();
    let read = |path: &str| std::fs::read_to_string(root.join(path)).unwrap();
    let task: Value =
        serde_json::from_str(&read("deploy/ecs/app-task-def-interception.json")).unwrap();
    let template: toml::Table = read("config/templates/intercepted.toml").parse().unwrap();
    let interception = &template["interception"];
    let proxy = &task["proxyConfiguration"];
    assert_eq!(proxy["type"], "APPMESH");
    let property = |name: &str| {
        let properties = proxy["properties"].as_array().unwrap();
        let found = properties.iter().find(|p| p["name"] == name);
        found.unwrap_or_else(|| panic!("no {name}"))["value"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let port = |key: &str| interception[key].as_integer().unwrap().to_string();
    assert_eq!(property("ProxyEgressPort"), port("egress_port"));
    assert_eq!(property("ProxyIngressPort"), port("ingress_port"));
    let app_ports: Vec<String> = (interception["app_ports"].as_array().unwrap().iter())
        .map(|p| p.as_integer().unwrap().to_string())
        .collect();
    assert_eq!(property("AppPorts"), app_ports.join(","));
    assert_eq!(property("IgnoredUID"), ENVOY_UID.to_string());
    assert_eq!(
        property("EgressIgnoredIPs"),
        "169.254.170.2,169.254.169.254"
    );
    let containers = task["containerDefinitions"].as_array().unwrap();
    let envoy = containers
        .iter()
        .find(|c| c["name"] == proxy["containerName"])
        .unwrap();
    assert_eq!(envoy["user"], ENVOY_UID.to_string());
    let init = containers
        .iter()
        .find(|c| c["name"] == "envoy-init")
        .unwrap();
    assert!(
        init["environment"]
            .to_string()
            .contains(r#""value":"intercepted""#),
        "{init}"
    );
}
