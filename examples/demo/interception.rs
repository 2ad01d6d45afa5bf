//! The demo's interception step: `orders` is tagged with the name its callers use
//! (`ecs-xds.hosts=orders.demo.local`), and an Envoy of node type `intercepted` shows what it is
//! served for the traffic ECS's `proxyConfiguration` would redirect into it: HTTP routed by
//! `Host` (with that name), TCP by each service's task addresses, the rest passed through.
//!
//! Redirecting needs iptables in the task's network namespace (root): the demo shows the
//! configuration a real Envoy accepted; `tests/interception.rs` sends traffic through it.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

use super::{envoy, moto};

pub(super) async fn show_interception(emulator: &moto::Moto, xds: SocketAddr) {
    let ecs = aws_sdk_ecs::Client::new(&emulator.sdk_config().await);
    moto::tag_service(&ecs, "orders", "ecs-xds.hosts", "orders.demo.local").await;
    println!("\ndemo: tagged ECS service orders with ecs-xds.hosts=orders.demo.local");
    let envoy = envoy::Envoy::start("intercepted-demo", xds, envoy::AdsMode::Sotw).await;
    let domains = |dump: &Value| orders_domains(dump);
    envoy
        .wait_for("orders' name", Duration::from_secs(30), || async {
            domains(&envoy.config_dump().await).contains(&"orders.demo.local".to_owned())
        })
        .await;
    let dump = envoy.config_dump().await;
    println!(
        "demo: an Envoy of node type intercepted (node id intercepted-demo) holds listener \
         interception-egress, for the app's redirected connections:"
    );
    println!("  HTTP, by Host: orders answers to {:?}", domains(&dump));
    for chain in chains(&dump) {
        println!("  {chain}");
    }
    envoy.stop().await;
}

/// The domains of orders' virtual host in `interception-egress`.
fn orders_domains(dump: &Value) -> Vec<String> {
    let routes = find(dump, "dynamic_route_configs");
    let mut configs = routes.iter().map(|r| &r["route_config"]);
    let config = configs.find(|c| c["name"] == "interception-egress");
    let hosts = config.and_then(|c| c["virtual_hosts"].as_array().cloned());
    let orders = hosts
        .unwrap_or_default()
        .into_iter()
        .find(|h| h["name"] == "orders");
    let domains = orders.map(|h| h["domains"].clone()).unwrap_or_default();
    serde_json::from_value(domains).unwrap_or_default()
}

/// `interception-egress`'s TCP chains (service, port, addresses) and its default chain.
fn chains(dump: &Value) -> Vec<String> {
    let listeners = find(dump, "dynamic_listeners");
    let egress = listeners
        .iter()
        .find(|l| l["name"] == "interception-egress");
    let listener = egress
        .map(|l| l["active_state"]["listener"].clone())
        .unwrap_or_default();
    let mut shown = Vec::new();
    for chain in listener["filter_chains"].as_array().into_iter().flatten() {
        let name = chain["name"].as_str().unwrap_or_default();
        let Some((service, port)) = name.strip_prefix("tcp:").and_then(|n| n.rsplit_once(':'))
        else {
            continue;
        };
        let m = &chain["filter_chain_match"];
        let addresses: Vec<&str> = (m["prefix_ranges"].as_array().into_iter().flatten())
            .filter_map(|r| r["address_prefix"].as_str())
            .collect();
        shown.push(format!(
            "TCP to port {port} of {addresses:?}: tcp_proxy to cluster {service}"
        ));
    }
    if listener.get("default_filter_chain").is_some() {
        shown.push("anything else: where the app sent it (interception-passthrough)".to_owned());
    }
    shown
}

/// The entries of the config dump section holding `key`.
fn find(dump: &Value, key: &str) -> Vec<Value> {
    let configs = dump["configs"].as_array().cloned().unwrap_or_default();
    let section = configs.into_iter().find_map(|c| c.get(key).cloned());
    section
        .and_then(|s| s.as_array().cloned())
        .unwrap_or_default()
}
