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

/// One service's sidecar with mutual TLS, as [`mtls_sidecar`] writes it.
pub struct MtlsSidecar<'a> {
    /// `[mtls] mode`: strict, permissive or off.
    pub mode: &'a str,
    pub trust_domain: &'a str,
    /// Where its agent writes (`[mtls] certificate_dir`).
    pub certs: &'a std::path::Path,
    pub egress: u16,
    pub ingress: u16,
    /// The app's port on 127.0.0.1 (the `local_app` cluster).
    pub app: u16,
    /// TOML tables under `[cluster_defaults]`, added to the clusters' defaults.
    pub defaults: &'a str,
    /// TOML lines of its `[authz]` section.
    pub authz: &'a str,
}

/// A node type for one service's sidecar on 127.0.0.1: egress to the generated routes, an
/// ingress listener to its app, and `[mtls]` with its own certificate directory (tests run
/// several on one machine; in ECS every task has its own `/certs`).
pub fn mtls_sidecar(s: &MtlsSidecar<'_>) -> String {
    let hcm = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
    let router = ROUTER;
    let (mode, trust_domain, defaults, authz) = (s.mode, s.trust_domain, s.defaults, s.authz);
    format!(
        r#"
[mtls]
mode = "{mode}"
trust_domain = "{trust_domain}"
certificate_dir = "{certs}"

[authz]
{authz}

[cluster_defaults]
connect_timeout = "1s"
{defaults}

[generated_routes]
name = "egress"

[[listeners]]
name = "egress"
address = {{ socket_address = {{ address = "127.0.0.1", port_value = {egress} }} }}
[[listeners.filter_chains]]
[[listeners.filter_chains.filters]]
name = "envoy.filters.network.http_connection_manager"
[listeners.filter_chains.filters.typed_config]
"@type" = "{hcm}"
stat_prefix = "egress"
rds = {{ route_config_name = "egress", config_source = {{ ads = {{}}, resource_api_version = "V3" }} }}
http_filters = [{router}]

[[listeners]]
name = "ingress"
address = {{ socket_address = {{ address = "127.0.0.1", port_value = {ingress} }} }}
[[listeners.filter_chains]]
[[listeners.filter_chains.filters]]
name = "envoy.filters.network.http_connection_manager"
[listeners.filter_chains.filters.typed_config]
"@type" = "{hcm}"
stat_prefix = "ingress"
route_config = {{ name = "local_app", virtual_hosts = [{{ name = "local_app", domains = ["*"], routes = [{{ match = {{ prefix = "/" }}, route = {{ cluster = "local_app" }} }}] }}] }}
http_filters = [{router}]

[[clusters]]
name = "local_app"
type = "STATIC"
connect_timeout = "0.25s"
load_assignment = {{ cluster_name = "local_app", endpoints = [{{ lb_endpoints = [{{ endpoint = {{ address = {{ socket_address = {{ address = "127.0.0.1", port_value = {app} }} }} }} }}] }}] }}
"#,
        certs = s.certs.display(),
        egress = s.egress,
        ingress = s.ingress,
        app = s.app,
    )
}
