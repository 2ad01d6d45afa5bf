//! A snapshot as the static resources of the sidecar's bootstrap, for `envoy --mode validate`:
//! EDS clusters turn STATIC with their endpoints inline, and RDS references in HTTP connection
//! managers turn into the route configurations inline. Envoy then checks it with its own rules
//! (including the field constraints our schema check cannot see), without opening any socket.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::snapshot::Snapshot;

const HCM: &str =
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

/// `sidecar` (a bootstrap) without its `dynamic_resources`, and with `snapshot` added to its
/// static resources. Listeners with an `api_listener` (what gRPC node types serve proxyless
/// clients) are left out: the Envoy server has no API listener extension and refuses them,
/// though gRPC clients take them ([`api_listeners`]). So are the TLS contexts of a gRPC node
/// type's clusters (gRFC A29): they name certificate provider instances of the client's
/// bootstrap, and leave out the SDS secret Envoy requires ([`grpc_tls_clusters`]).
pub fn static_bootstrap(sidecar: &Value, snapshot: &Snapshot) -> Value {
    let rendered = snapshot.to_envoy_json();
    let by_name = |section: &str, key: &str| -> Map<String, Value> {
        rendered[section]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                let name = r[key].as_str().unwrap_or_default().to_owned();
                (name, strip_type(r))
            })
            .collect()
    };
    let endpoints = by_name("endpoints", "clusterName");
    let routes = by_name("routes", "name");
    let clusters: Vec<Value> = rendered["clusters"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let mut c = strip_type(c);
            if grpc_tls(&c) {
                c.as_object_mut().map(|o| o.remove("transportSocket"));
            }
            if c["type"] == "EDS" {
                let name = c["name"].as_str().unwrap_or_default().to_owned();
                let object = c.as_object_mut().expect("a cluster is an object");
                object.insert("type".into(), json!("STATIC"));
                object.remove("edsClusterConfig");
                let cla = endpoints.get(&name).cloned().unwrap_or(json!({}));
                let mut cla = cla;
                cla["clusterName"] = json!(name);
                object.insert("loadAssignment".into(), cla);
            }
            c
        })
        .collect();
    let listeners: Vec<Value> = rendered["listeners"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l.get("apiListener").is_none())
        .map(|l| {
            let mut l = strip_type(l);
            inline_routes(&mut l, &routes);
            // An xDS-enabled gRPC server's chain: its TLS context is the server's own
            // bootstrap's certificate provider, as a client cluster's is.
            let chains = l.get_mut("filterChains").and_then(Value::as_array_mut);
            for chain in chains.into_iter().flatten().filter(|c| grpc_tls(c)) {
                chain.as_object_mut().map(|o| o.remove("transportSocket"));
            }
            l
        })
        .collect();
    let mut bootstrap = sidecar.clone();
    let root = bootstrap.as_object_mut().expect("a bootstrap is an object");
    root.remove("dynamic_resources");
    root.remove("dynamicResources");
    // deploy/ecs's has none: the task's init container appends the task's own.
    root.entry("node")
        .or_insert_with(|| json!({ "id": "sidecar-validate", "cluster": "validate" }));
    let statics = root
        .remove("static_resources")
        .or_else(|| root.remove("staticResources"))
        .unwrap_or(json!({}));
    let own = |key: &str, camel: &str| -> Vec<Value> {
        let list = statics.get(key).or_else(|| statics.get(camel));
        list.and_then(Value::as_array).cloned().unwrap_or_default()
    };
    let clusters = [own("clusters", "clusters"), clusters].concat();
    let listeners = [own("listeners", "listeners"), listeners].concat();
    let secrets = own("secrets", "secrets");
    root.insert(
        "static_resources".into(),
        json!({ "clusters": clusters, "listeners": listeners, "secrets": secrets }),
    );
    bootstrap
}

/// How many of the snapshot's listeners are API listeners, for gRPC clients only.
pub fn api_listeners(snapshot: &Snapshot) -> usize {
    let rendered = snapshot.to_envoy_json();
    let listeners = rendered["listeners"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    listeners
        .iter()
        .filter(|l| l.get("apiListener").is_some())
        .count()
}

/// How many of the snapshot's clusters have a TLS context for proxyless gRPC clients.
pub fn grpc_tls_clusters(snapshot: &Snapshot) -> usize {
    let rendered = snapshot.to_envoy_json();
    let clusters = rendered["clusters"].as_array().cloned().unwrap_or_default();
    clusters.iter().filter(|c| grpc_tls(c)).count()
}

/// Whether `cluster` (rendered) has a TLS context for proxyless gRPC clients: one whose
/// certificate comes from a certificate provider instance (gRFC A29).
fn grpc_tls(cluster: &Value) -> bool {
    let common = &cluster["transportSocket"]["typedConfig"]["commonTlsContext"];
    common.get("tlsCertificateProviderInstance").is_some()
}

/// A top-level resource rendered from its `Any`, without the `@type` a bootstrap does not take.
fn strip_type(resource: &Value) -> Value {
    let mut resource = resource.clone();
    if let Some(object) = resource.as_object_mut() {
        object.remove("@type");
    }
    resource
}

/// Replaces every HTTP connection manager's `rds` with the route configuration it names.
fn inline_routes(value: &mut Value, routes: &Map<String, Value>) {
    match value {
        Value::Object(object) => {
            if object.get("@type").and_then(Value::as_str) == Some(HCM) {
                if let Some(rds) = object.remove("rds") {
                    let name = rds["routeConfigName"].as_str().unwrap_or_default();
                    let mut route = routes.get(name).cloned().unwrap_or(json!({ "name": name }));
                    // Routes over RDS may name clusters not (yet) known; Envoy validates cluster
                    // names only in static route configs unless told otherwise, so keep the RDS
                    // behaviour unless the template asked for validation.
                    if route.get("validateClusters").is_none() {
                        route["validateClusters"] = json!(false);
                    }
                    object.insert("routeConfig".into(), route);
                }
            }
            object.values_mut().for_each(|v| inline_routes(v, routes));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| inline_routes(v, routes)),
        _ => {}
    }
}

/// What `envoy --mode validate` made of a bootstrap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accepted,
    /// Envoy's own words (or why it could not be run).
    Rejected(String),
    /// Envoy died of a signal: how, and what it printed.
    Crashed(String),
}

/// Runs `envoy --mode validate` on `bootstrap`.
pub async fn envoy_validate(envoy: &Path, bootstrap: &Value) -> Verdict {
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => return Verdict::Rejected(format!("temporary directory: {e}")),
    };
    let path = dir.path().join("bootstrap.json");
    if let Err(e) = std::fs::write(&path, bootstrap.to_string()) {
        return Verdict::Rejected(format!("{}: {e}", path.display()));
    }
    let run = tokio::process::Command::new(envoy)
        .args(["--mode", "validate", "--log-level", "error"])
        .arg("--config-path")
        .arg(&path)
        .kill_on_drop(true)
        .output();
    let output = match tokio::time::timeout(Duration::from_secs(60), run).await {
        Err(_) => return Verdict::Rejected("envoy --mode validate took over 60s".to_owned()),
        Ok(Err(e)) => return Verdict::Rejected(format!("cannot run {}: {e}", envoy.display())),
        Ok(Ok(output)) => output,
    };
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout).trim(),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    use std::os::unix::process::ExitStatusExt;
    match (output.status.success(), output.status.signal()) {
        (true, _) => Verdict::Accepted,
        (false, Some(signal)) => {
            // Its backtrace is dozens of lines: the line saying what it caught is enough.
            let caught = (said.lines().find(|l| l.contains("Caught"))).unwrap_or_default();
            Verdict::Crashed(format!("signal {signal}; {}", caught.trim()))
        }
        (false, None) => Verdict::Rejected(said),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_becomes_static_resources_with_endpoints_and_routes_inline() {
        let snapshot = crate::snapshot::tests::orders_egress();
        let sidecar = json!({
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 9901}}},
            "dynamic_resources": {"ads_config": {"api_type": "GRPC"}},
            "static_resources": {"clusters": [{"name": "ecs_xds"}]}
        });
        let bootstrap = static_bootstrap(&sidecar, &snapshot);
        assert!(bootstrap.get("dynamic_resources").is_none());
        assert_eq!(
            bootstrap["admin"], sidecar["admin"],
            "the sidecar's own sections stay"
        );
        assert_eq!(
            bootstrap["static_resources"]["clusters"][0]["name"],
            "ecs_xds"
        );
        let cluster = &bootstrap["static_resources"]["clusters"][1];
        assert_eq!(cluster["type"], "STATIC");
        assert!(cluster.get("edsClusterConfig").is_none() && cluster.get("@type").is_none());
        assert_eq!(cluster["loadAssignment"]["clusterName"], "orders");
        let hcm = &bootstrap["static_resources"]["listeners"][0]["filterChains"][0]["filters"][0]
            ["typedConfig"];
        assert!(hcm.get("rds").is_none());
        assert_eq!(hcm["routeConfig"]["name"], "egress");
        assert_eq!(
            hcm["routeConfig"]["virtualHosts"][0]["domains"][0],
            "orders"
        );
    }

    #[test]
    fn a_grpc_clients_tls_context_is_left_out_and_counted() {
        let text = "[grpc]\nenabled = true\n[mtls]\nmode = \"strict\"\ntrust_domain = \"m.x\"\n";
        let templates = crate::synthesize::Templates::parse([(Path::new("t/grpc.toml"), text)]);
        let mut orders = crate::synthesize::synthesizer::tests::service("orders", &["10.0.0.1"]);
        orders.security.workload = Some(crate::inventory::Workload {
            account: "111122223333".into(),
            region: "eu-west-1".into(),
            ecs_cluster: "demo".into(),
        });
        let inventory = crate::synthesize::synthesizer::tests::inventory([orders]);
        let synthesis = crate::synthesize::synthesize(&inventory, &templates.unwrap());
        let snapshot = &synthesis.snapshots["grpc"];
        assert_eq!(grpc_tls_clusters(snapshot), 1);
        let bootstrap = static_bootstrap(&json!({}), snapshot);
        let cluster = &bootstrap["static_resources"]["clusters"][0];
        assert_eq!(cluster["name"], "orders");
        assert!(cluster.get("transportSocket").is_none(), "{cluster}");
    }

    #[test]
    fn a_grpc_servers_tls_context_is_left_out() {
        let text = "[grpc]\nenabled = true\nserver_addresses = [\"0.0.0.0:50051\"]\n[mtls]\nmode = \"strict\"\ntrust_domain = \"m.x\"\n";
        let templates = crate::synthesize::Templates::parse([(Path::new("t/grpc.toml"), text)]);
        let inventory = crate::synthesize::synthesizer::tests::inventory([]);
        let synthesis = crate::synthesize::synthesize(&inventory, &templates.unwrap());
        let snapshot = &synthesis.snapshots["grpc"];
        let rendered = snapshot.to_envoy_json();
        let served = &rendered["listeners"][0]["filterChains"][0];
        assert!(served.get("transportSocket").is_some(), "{served}");
        let bootstrap = static_bootstrap(&json!({}), snapshot);
        let chain = &bootstrap["static_resources"]["listeners"][0]["filterChains"][0];
        assert!(chain.get("transportSocket").is_none(), "{chain}");
    }
}
