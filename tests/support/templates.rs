//! The sidecar template the end-to-end tests serve: an egress listener on 127.0.0.1 whose
//! routes (`egress`, over ADS) are generated from the discovered clusters.

/// The HTTP filters of the egress chain: the router alone.
const ROUTER: &str = r#"{ name = "envoy.filters.http.router", typed_config = { "@type" = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" } }"#;

/// `chains` identical filter chains: 1 is what a user writes; 2 is valid protobuf that Envoy
/// rejects (a NACK on demand).
pub fn egress_sidecar(egress_port: u16, stat_prefix: &str, chains: usize) -> String {
    egress_listener(egress_port, stat_prefix, chains, ROUTER)
}

/// The egress template of an on-demand node type: the `on_demand` filter with `odcds` before
/// the router, as the README shows it.
pub fn on_demand_sidecar(egress: u16) -> String {
    let on_demand = r#"{ name = "envoy.filters.http.on_demand", typed_config = { "@type" = "type.googleapis.com/envoy.extensions.filters.http.on_demand.v3.OnDemand", odcds = { source = { ads = {}, resource_api_version = "V3" }, timeout = "5s" } } }"#;
    let filters = format!("{on_demand},\n  {ROUTER}");
    format!(
        "\n[on_demand]\nenabled = true\n{}",
        egress_listener(egress, "egress", 1, &filters)
    )
}

/// A sidecar template with one egress listener of `chains` filter chains, each an HTTP
/// connection manager with `http_filters` whose routes (`egress`) are generated.
fn egress_listener(
    egress_port: u16,
    stat_prefix: &str,
    chains: usize,
    http_filters: &str,
) -> String {
    let chain = format!(
        r#"
[[listeners.filter_chains]]
[[listeners.filter_chains.filters]]
name = "envoy.filters.network.http_connection_manager"
[listeners.filter_chains.filters.typed_config]
"@type" = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
stat_prefix = "{stat_prefix}"
rds = {{ route_config_name = "egress", config_source = {{ ads = {{}}, resource_api_version = "V3" }} }}
http_filters = [
  {http_filters},
]
"#
    );
    format!(
        r#"
[cluster_defaults]
connect_timeout = "1s"

[generated_routes]
name = "egress"

[[listeners]]
name = "egress"
address = {{ socket_address = {{ address = "127.0.0.1", port_value = {egress_port} }} }}
{}"#,
        chain.repeat(chains)
    )
}
