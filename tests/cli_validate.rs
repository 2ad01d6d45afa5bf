//! `ecs-xds validate`, the real binary: schema checks, and a real Envoy checking what each node
//! type would be served.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::envoy::envoy_binary;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn validate(config: &Path, envoy: bool) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ecs-xds"));
    command.args(["validate", "--config"]).arg(config);
    if envoy {
        command.arg("--envoy").arg(envoy_binary());
    }
    command.output().expect("run ecs-xds validate")
}

/// A settings file using a copy of the example templates, with `edit` applied to the sidecar.
fn with_sidecar(dir: &Path, edit: impl Fn(String) -> String) -> PathBuf {
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    for name in ["sidecar.toml", "ingress.toml"] {
        let text = std::fs::read_to_string(root().join("config/templates").join(name)).unwrap();
        let text = if name == "sidecar.toml" {
            edit(text)
        } else {
            text
        };
        std::fs::write(dir.join("templates").join(name), text).unwrap();
    }
    let config = dir.join("ecs-xds.toml");
    std::fs::write(&config, "").unwrap();
    config
}

/// `validate --envoy` on a saved inventory of `clusters`: (name, declared backends).
fn validate_inventory(config: &Path, clusters: &[(&str, Option<&[&str]>)]) -> Output {
    let clusters: serde_json::Map<String, serde_json::Value> = clusters
        .iter()
        .map(|(name, backends)| {
            let cluster = serde_json::json!({"name": name,
                "source": {"kind": "ecs", "ecs_cluster": "prod", "service": name},
                "endpoints": [{"address": "10.0.0.1", "port": 8080, "health": "healthy",
                    "locality": {"region": "us-east-1"}, "weight": 1, "id": "t1"}],
                "backends": backends});
            (name.to_string(), cluster)
        })
        .collect();
    let inventory = config.with_file_name("inventory.json");
    let json = serde_json::json!({ "clusters": clusters });
    std::fs::write(&inventory, json.to_string()).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_ecs-xds"));
    command
        .args(["validate", "--config"])
        .arg(config)
        .arg("--inventory")
        .arg(&inventory)
        .arg("--envoy")
        .arg(envoy_binary());
    command.output().expect("run ecs-xds validate")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn the_example_templates_are_valid_and_envoy_accepts_them() {
    let out = validate(&root().join("config/ecs-xds.toml"), true);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    for node_type in ["ingress", "sidecar"] {
        assert!(
            text.contains(&format!("node type {node_type}: valid, and Envoy")),
            "{text}"
        );
    }
}

#[test]
fn a_value_only_envoy_rejects_is_caught_with_envoy_and_its_words() {
    let dir = tempfile::tempdir().unwrap();
    let config = with_sidecar(dir.path(), |t| {
        t.replace("connect_timeout = \"0.25s\"", "connect_timeout = \"-1s\"")
    });
    // The schema allows a negative duration; Envoy's own rules do not.
    let out = validate(&config, false);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let out = validate(&config, true);
    let text = stdout(&out);
    // 4: Envoy rejects it (not 2, invalid input, nor 1, an AWS failure).
    assert_eq!(out.status.code(), Some(4), "{text}");
    assert!(
        text.contains("node type sidecar: Envoy rejects it"),
        "{text}"
    );
    assert!(text.contains("node type ingress: valid"), "{text}");
}

#[test]
fn a_template_error_fails_with_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = with_sidecar(dir.path(), |t| t.replacen("stat_prefix", "stat_prefixx", 1));
    let out = validate(&config, false);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("sidecar.toml:") && text.contains("stat_prefixx"),
        "{text}"
    );
}

#[test]
fn every_error_in_one_listener_is_printed_with_its_line_and_full_path() {
    let dir = tempfile::tempdir().unwrap();
    let router = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";
    let config = with_sidecar(dir.path(), |t| {
        t.replacen("port_value = 15001", "port_value = \"x\"", 1)
            .replacen(
                "stat_prefix = \"egress\"",
                "stat_prefix = \"egress\"\ncodec_type = \"HTTP9\"\nstat_prefixx = \"oops\"",
                1,
            )
            .replacen(router, "type.googleapis.com/envoy.no.Router", 1)
    });
    let out = validate(&config, false);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    // Lines in the edited sidecar: the two lines added after stat_prefix push the rest down.
    let original = std::fs::read_to_string(root().join("config/templates/sidecar.toml")).unwrap();
    let line = |needle: &str| 1 + original.lines().position(|l| l.contains(needle)).unwrap();
    let (port, stat_prefix, filter) = (
        line("port_value = 15001"),
        line("stat_prefix = \"egress\""),
        line(router),
    );
    let hcm = "listeners[0].filter_chains[0].filters[0].typed_config";
    for want in [
        format!("sidecar.toml:{port}: listeners[0].address.socket_address.port_value: "),
        format!(
            "sidecar.toml:{}: {hcm}.codec_type: unrecognized enum value 'HTTP9'",
            stat_prefix + 1
        ),
        format!(
            "sidecar.toml:{}: {hcm}.stat_prefixx: unknown field \"stat_prefixx\"",
            stat_prefix + 2
        ),
        format!(
            "sidecar.toml:{}: {hcm}.http_filters[0].typed_config.@type: unknown @type",
            filter + 2
        ),
    ] {
        assert!(text.contains(&want), "{want:?} is not in\n{text}");
    }
    assert_eq!(
        text.lines().filter(|l| l.contains("sidecar.toml:")).count(),
        4,
        "{text}"
    );
}

/// A gRPC node type's API listeners are for proxyless gRPC clients (the Envoy server has no
/// API listener extension); the rest of what it is served, Envoy checks.
#[test]
fn a_grpc_node_type_is_checked_by_envoy_except_its_api_listeners() {
    let dir = tempfile::tempdir().unwrap();
    let config = with_sidecar(dir.path(), |t| t);
    std::fs::write(
        dir.path().join("templates/grpc.toml"),
        "[grpc]\nenabled = true\n",
    )
    .unwrap();
    let out = validate_inventory(&config, &[("orders", None)]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("node type grpc: valid, and Envoy")
            && text.contains("1 API listeners, which are for proxyless gRPC clients"),
        "{text}"
    );
}

/// Each backend set is its own snapshot, with its own generated routes: Envoy checks each.
#[test]
fn envoy_checks_every_backend_set_as_well_as_the_whole_scope() {
    let dir = tempfile::tempdir().unwrap();
    let config = with_sidecar(dir.path(), |t| t);
    let declared: &[&str] = &["ghost", "orders"];
    let clusters = [("orders", None), ("web", Some(declared)), ("billing", None)];
    let out = validate_inventory(&config, &clusters);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("node type sidecar: valid, and Envoy")
            && text.contains("node type sidecar, backends \"ghost,orders\": valid, and Envoy"),
        "{text}"
    );
}

/// A settings file whose one node type `edge` is `template`; and a sidecar bootstrap file
/// holding `bootstrap` (YAML), beside it.
fn edge(dir: &Path, template: &str, bootstrap: &str) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    std::fs::write(dir.join("templates/edge.toml"), template).unwrap();
    let config = dir.join("ecs-xds.toml");
    std::fs::write(&config, "").unwrap();
    let sidecar = dir.join("sidecar.yaml");
    std::fs::write(&sidecar, bootstrap).unwrap();
    (config, sidecar)
}

fn validate_in(config: &Path, bootstrap: Option<&Path>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ecs-xds"));
    command.args(["validate", "--config"]).arg(config);
    command.arg("--envoy").arg(envoy_binary());
    if let Some(bootstrap) = bootstrap {
        command.arg("--bootstrap").arg(bootstrap);
    }
    command.output().expect("run ecs-xds validate")
}

const ADMIN: &str =
    "admin:\n  address: { socket_address: { address: 127.0.0.1, port_value: 9901 } }\n";
const INTERNAL_LISTENER_EXTENSION: &str = "bootstrap_extensions:\n  - name: envoy.bootstrap.internal_listener\n    typed_config:\n      \"@type\": type.googleapis.com/envoy.extensions.bootstrap.internal_listener.v3.InternalListener\n";

#[test]
fn an_internal_listener_is_checked_in_the_sidecar_bootstrap_given_with_its_extension() {
    // A listener only other listeners of the same Envoy reach, and a cluster sending to it.
    let template = r#"
[[listeners]]
name = "inner"
internal_listener = {}
[[listeners.filter_chains]]
[[listeners.filter_chains.filters]]
name = "envoy.filters.network.tcp_proxy"
typed_config = { "@type" = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy", stat_prefix = "inner", cluster = "to_inner" }

[[clusters]]
name = "to_inner"
connect_timeout = "1s"
load_assignment = { cluster_name = "to_inner", endpoints = [{ lb_endpoints = [{ endpoint = { address = { envoy_internal_address = { server_listener_name = "inner" } } } }] }] }
"#;
    let dir = tempfile::tempdir().unwrap();
    let (config, sidecar) = edge(
        dir.path(),
        template,
        &format!("{ADMIN}{INTERNAL_LISTENER_EXTENSION}"),
    );
    // deploy/ecs's bootstrap has no such extension: Envoy refuses, in its own words.
    let out = validate_in(&config, None);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(4), "{text}");
    assert!(
        text.contains("InternalListener bootstrap extension is mandatory"),
        "{text}"
    );
    // The sidecar's own bootstrap has it: accepted.
    let out = validate_in(&config, Some(&sidecar));
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("node type edge: valid, and Envoy"), "{text}");
}

#[test]
fn a_tap_socket_is_accepted_in_the_sidecar_bootstrap_and_envoy_crashing_is_told_from_rejecting() {
    // A cluster whose connections an operator can tap through the admin API.
    let template = r#"
[[clusters]]
name = "app"
connect_timeout = "1s"
load_assignment = { cluster_name = "app", endpoints = [{ lb_endpoints = [{ endpoint = { address = { socket_address = { address = "127.0.0.1", port_value = 8080 } } } }] }] }
[clusters.transport_socket]
name = "envoy.transport_sockets.tap"
[clusters.transport_socket.typed_config]
"@type" = "type.googleapis.com/envoy.extensions.transport_sockets.tap.v3.Tap"
common_config = { admin_config = { config_id = "app" } }
transport_socket = { name = "envoy.transport_sockets.raw_buffer", typed_config = { "@type" = "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer" } }
"#;
    let dir = tempfile::tempdir().unwrap();
    // A bootstrap with no admin section: Envoy 1.40 dies of a segfault on this tap socket.
    let (config, no_admin) = edge(dir.path(), template, "{}\n");
    // deploy/ecs's bootstrap has an admin: accepted, as the sidecar would.
    let out = validate_in(&config, None);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("node type edge: valid, and Envoy"), "{text}");

    let out = validate_in(&config, Some(&no_admin));
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(5), "{text}");
    assert!(
        text.contains("node type edge: Envoy crashed checking it (signal 11"),
        "{text}"
    );
    assert!(!text.contains("Envoy rejects it"), "{text}");
}

#[test]
fn a_bootstrap_that_is_not_yaml_is_an_input_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (config, sidecar) = edge(dir.path(), "", "admin: [unclosed\n");
    let out = validate_in(&config, Some(&sidecar));
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains(&format!(
            "cannot use {} as the sidecar's bootstrap",
            sidecar.display()
        )),
        "{text}"
    );
}

#[test]
fn enum_names_in_lower_case_and_a_single_value_for_a_list_are_taken_as_envoy_takes_them() {
    // As Envoy's own YAML often writes them: lower-case enum names, `domains: "*"`.
    let template = r#"
[[clusters]]
name = "backend"
type = "strict_dns"
lb_policy = "least_request"
connect_timeout = "1s"
load_assignment = { cluster_name = "backend", endpoints = [{ lb_endpoints = [{ endpoint = { address = { socket_address = { address = "backend.internal", port_value = 8080 } } } }] }] }

[[listeners]]
name = "front"
address = { socket_address = { address = "127.0.0.1", port_value = 10000 } }
[[listeners.filter_chains]]
[[listeners.filter_chains.filters]]
name = "envoy.filters.network.http_connection_manager"
[listeners.filter_chains.filters.typed_config]
"@type" = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
stat_prefix = "front"
codec_type = "http1"
route_config = { name = "front", virtual_hosts = [{ name = "all", domains = "*", routes = [{ match = { prefix = "/" }, route = { cluster = "backend" } }] }] }
http_filters = [
  { name = "envoy.filters.http.router", typed_config = { "@type" = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" } },
]
"#;
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = edge(dir.path(), template, "{}\n");
    let out = validate_in(&config, None);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("node type edge: valid, and Envoy"), "{text}");
    // What is served is Envoy's canonical form.
    let render = Command::new(env!("CARGO_BIN_EXE_ecs-xds"))
        .args(["render", "--node-type", "edge", "--inventory"])
        .arg(write_empty_inventory(dir.path()))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let rendered = stdout(&render);
    assert!(render.status.success(), "{rendered}");
    for canonical in ["\"STRICT_DNS\"", "\"LEAST_REQUEST\"", "\"HTTP1\""] {
        assert!(rendered.contains(canonical), "{canonical}: {rendered}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&rendered[rendered.find('{').unwrap()..]).unwrap();
    let hcm = &json["listeners"][0]["filterChains"][0]["filters"][0]["typedConfig"];
    assert_eq!(
        hcm["routeConfig"]["virtualHosts"][0]["domains"],
        serde_json::json!(["*"])
    );
}

fn write_empty_inventory(dir: &Path) -> PathBuf {
    let path = dir.join("inventory.json");
    std::fs::write(&path, "{\"clusters\": {}}").unwrap();
    path
}
