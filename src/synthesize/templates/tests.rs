use envoy_types::pb::envoy::config::listener::v3::filter;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, HttpConnectionManager,
};
use prost::Message;

use super::*;

fn parse(text: &str) -> Result<NodeTemplate, Vec<Problem>> {
    NodeTemplate::parse(Path::new("t/sidecar.toml"), text)
}

fn errors(text: &str) -> Vec<String> {
    match parse(text) {
        Ok(_) => panic!("expected errors"),
        Err(e) => e.iter().map(ToString::to_string).collect(),
    }
}

const HCM: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

/// An egress listener asking RDS for `route`, with extra HCM lines.
fn listener(route: &str, extra_hcm: &str) -> String {
    format!(
        r#"
[[listeners]]
name = "egress"
address = {{ socket_address = {{ address = "127.0.0.1", port_value = 15001 }} }}

[[listeners.filter_chains]]
[[listeners.filter_chains.filters]]
name = "envoy.filters.network.http_connection_manager"

[listeners.filter_chains.filters.typed_config]
"@type" = "{HCM}"
stat_prefix = "egress"
rds = {{ route_config_name = "{route}", config_source = {{ ads = {{}} }} }}
{extra_hcm}
"#
    )
}

fn hcm(listener: &Listener) -> HttpConnectionManager {
    let Some(filter::ConfigType::TypedConfig(any)) =
        &listener.filter_chains[0].filters[0].config_type
    else {
        panic!("no typed config")
    };
    assert_eq!(any.type_url, HCM);
    HttpConnectionManager::decode(any.value.as_slice()).unwrap()
}

#[test]
fn example_templates_load() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/templates");
    let templates = Templates::load_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        templates.node_types().collect::<Vec<_>>(),
        ["grpc", "ingress", "intercepted", "sidecar"]
    );
    assert!(templates.get("grpc").unwrap().grpc);
    let sidecar = templates.get("sidecar").unwrap();
    let names: Vec<_> = sidecar.listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["egress", "ingress"]);
    assert_eq!(sidecar.clusters[0].name, "local_app");
    assert_eq!(sidecar.generated_routes.as_ref().unwrap().name, "egress");
    assert!(sidecar.cluster_defaults.outlier_detection.is_some());
    let ingress = templates.get("ingress").unwrap();
    assert_eq!(ingress.routes[0].name, "public");
    assert!(ingress.scope.contains("orders") && !ingress.scope.contains("billing"));
    assert_eq!(
        ingress.route_clusters,
        [
            ("orders".to_owned(), "public".to_owned()),
            ("web".to_owned(), "public".to_owned())
        ]
    );
}

#[test]
fn typed_configs_decode_into_envoy_messages() {
    let text = listener("egress", "") + "[generated_routes]\nname = \"egress\"\n";
    let template = parse(&text).unwrap();
    let hcm = hcm(&template.listeners[0]);
    assert_eq!(hcm.stat_prefix, "egress");
    let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier else {
        panic!("not RDS")
    };
    assert_eq!(rds.route_config_name, "egress");
    assert!(rds.config_source.unwrap().config_source_specifier.is_some());
}

#[test]
fn unknown_field_is_reported_with_file_line_and_field_path() {
    let text =
        listener("egress", "stat_prefixx = \"oops\"") + "[generated_routes]\nname = \"egress\"\n";
    assert_eq!(
        errors(&text),
        [format!(
            "t/sidecar.toml:14: listeners[0].filter_chains[0].filters[0].typed_config.stat_prefixx: \
             unknown field \"stat_prefixx\" in {} (did you mean \"stat_prefix\"?)",
            "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
        )]
    );
}

#[test]
fn unknown_type_is_an_error() {
    let text = listener("egress", "").replace(HCM, "type.googleapis.com/envoy.no.Such")
        + "[generated_routes]\nname = \"egress\"\n";
    assert_eq!(
        errors(&text),
        [
            "t/sidecar.toml:11: listeners[0].filter_chains[0].filters[0].typed_config.@type: \
          unknown @type \"type.googleapis.com/envoy.no.Such\""
        ]
    );
}

#[test]
fn value_errors_name_the_field() {
    let text = listener("egress", "").replace("port_value = 15001", "port_value = \"x\"")
        + "[generated_routes]\nname = \"egress\"\n";
    let errors = errors(&text);
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with("t/sidecar.toml:4: listeners[0].address.socket_address.port_value: "),
        "{errors:?}"
    );
}

#[test]
fn every_error_is_reported_at_once() {
    let text = listener("egress", "stat_prefixx = 1\nhttp_filterz = []")
        + r#"
[generated_routes]
name = "egress"
colour = "blue"

[cluster_defaults]
name = "mine"
connect_timeout = "1s"
lb_polcy = "RANDOM"

[scope]
include = ["a[", "b"]

[[routes]]
name = "extra"
virtual_hostz = []

[weird]
"#;
    let errors = errors(&text);
    // In line order.
    let expected = [
        ":14: listeners[0].filter_chains[0].filters[0].typed_config.stat_prefixx: unknown field",
        ":15: listeners[0].filter_chains[0].filters[0].typed_config.http_filterz: unknown field",
        ":19: generated_routes.colour: unknown field `colour`",
        ":22: cluster_defaults.name: set by synthesis",
        ":24: cluster_defaults.lb_polcy: unknown field",
        ":27: scope.include[0]: error parsing glob",
        ":31: routes[0].virtual_hostz: unknown field",
        ":33: weird: unknown section",
    ];
    assert_eq!(errors.len(), expected.len(), "{errors:#?}");
    for (got, want) in errors.iter().zip(expected) {
        assert!(
            got.starts_with(&format!("t/sidecar.toml{want}")),
            "{got:?} is not {want:?}"
        );
    }
}

#[test]
fn cluster_defaults_may_not_set_what_synthesis_owns() {
    let text =
        "[cluster_defaults]\ntype = \"STATIC\"\neds_cluster_config = {}\nload_assignment = {}\n";
    let errors = errors(text);
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(errors[0].starts_with("t/sidecar.toml:2: cluster_defaults.type: set by synthesis"));
}

#[test]
fn route_defaults_and_zone_awareness_are_read() {
    let text = "[route_defaults]\ntimeout = \"2s\"\nretry_policy = { retry_on = \"5xx\", num_retries = 2 }\n\n[zone_aware]\nenabled = true\n";
    let template = parse(text).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(template.route_defaults.timeout.unwrap().seconds, 2);
    assert_eq!(
        template.route_defaults.retry_policy.unwrap().retry_on,
        "5xx"
    );
    assert!(template.zone_aware);
    assert!(!parse("").unwrap().zone_aware, "off unless asked for");
}

#[test]
fn route_defaults_may_not_set_what_synthesis_owns_nor_zone_aware_unknown_keys() {
    let errors = errors(
        "[route_defaults]\ncluster = \"x\"\ntimeot = \"1s\"\n\n[zone_aware]\nenable = true\n",
    );
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(
        errors[0].starts_with("t/sidecar.toml:2: route_defaults.cluster: set by synthesis"),
        "{}",
        errors[0]
    );
    assert!(errors[1].contains("route_defaults.timeot"), "{}", errors[1]);
    assert!(
        errors[2].contains("zone_aware") && errors[2].contains("enable"),
        "{}",
        errors[2]
    );
}

#[test]
fn listener_asking_for_a_missing_route_configuration_is_an_error() {
    assert_eq!(
        errors(&listener("nowhere", "")),
        [
            "t/sidecar.toml:2: listeners[0]: asks RDS for route configuration \"nowhere\", \
          which no [[routes]] or [generated_routes] defines"
        ]
    );
}

#[test]
fn route_configuration_no_listener_uses_is_an_error() {
    let text = listener("egress", "")
        + "[generated_routes]\nname = \"egress\"\n[[routes]]\nname = \"spare\"\n";
    let errors = errors(&text);
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with("t/sidecar.toml:17: routes[0]: route configuration \"spare\""),
        "{errors:?}"
    );
}

#[test]
fn generated_routes_nobody_uses_is_an_error() {
    let errors = errors("[generated_routes]\nname = \"egress\"\n");
    assert!(errors[0].contains("generated_routes"), "{errors:?}");
}

#[test]
fn template_clusters_must_carry_their_endpoints() {
    let errors = errors("[[clusters]]\nname = \"x\"\ntype = \"EDS\"\n");
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with("t/sidecar.toml:1: clusters[0]: EDS clusters come from discovery"),
        "{errors:?}"
    );
}

#[test]
fn duplicate_names_are_errors() {
    let errors = errors(
        "[[clusters]]\nname = \"x\"\ntype = \"STATIC\"\n[[clusters]]\nname = \"x\"\ntype = \"STATIC\"\n",
    );
    assert_eq!(
        errors,
        ["t/sidecar.toml:5: clusters[1].name: duplicate name \"x\" (also clusters[0])"]
    );
}

#[test]
fn toml_syntax_errors_name_their_line() {
    let errors = errors("[scope]\ninclude = [\"a\" \"b\"]\n\n");
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with("t/sidecar.toml:2: invalid TOML"),
        "{errors:?}"
    );
}

#[test]
fn scope_globs_include_then_exclude() {
    let template =
        parse("[scope]\ninclude = [\"orders*\", \"web\"]\nexclude = [\"*.admin\"]\n").unwrap();
    let scope = &template.scope;
    assert!(scope.contains("orders"));
    assert!(scope.contains("orders.grpc"));
    assert!(scope.contains("web"));
    assert!(!scope.contains("orders.admin"));
    assert!(!scope.contains("billing"));
    assert!(parse("").unwrap().scope.contains("anything"));
}

#[test]
fn an_empty_template_directory_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = Templates::load_dir(dir.path()).unwrap_err();
    assert!(err.to_string().contains("no templates"), "{err}");
    let none = Templates::load_dir_allow_empty(dir.path()).unwrap();
    assert_eq!(none.node_types().count(), 0);
    let missing = dir.path().join("missing");
    assert!(
        Templates::load_dir_allow_empty(&missing).is_err(),
        "a missing directory is still an error"
    );
}

#[test]
fn errors_from_several_files_are_all_reported() {
    let a = Path::new("t/a.toml");
    let b = Path::new("t/b.toml");
    let err = Templates::parse([(a, "[bad]\n"), (b, "[scope]\ninclude = 3\n")]).unwrap_err();
    assert_eq!(err.0.len(), 2, "{err}");
    assert!(err.0[0]
        .to_string()
        .starts_with("t/a.toml:1: bad: unknown section"));
    assert!(err.0[1]
        .to_string()
        .starts_with("t/b.toml:2: scope.include: "));
}
