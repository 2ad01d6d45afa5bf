//! Every problem in one resource is reported at once, each with its line and full field path.

use super::toml_json::Located;
use super::*;
use crate::envoy_json::schema_check;

fn errors(text: &str) -> Vec<String> {
    match NodeTemplate::parse(Path::new("t/sidecar.toml"), text) {
        Ok(_) => panic!("expected errors"),
        Err(e) => e.iter().map(ToString::to_string).collect(),
    }
}

/// Asserts `errors` are, in order, `file:line: path: message…` for each (line, path, message
/// start) of `expected`.
fn assert_errors(errors: &[String], expected: &[(usize, &str, &str)]) {
    let want: Vec<String> = expected
        .iter()
        .map(|(line, path, message)| format!("t/sidecar.toml:{line}: {path}: {message}"))
        .collect();
    assert_eq!(errors.len(), want.len(), "{errors:#?}");
    for (got, want) in errors.iter().zip(&want) {
        assert!(got.starts_with(want.as_str()), "{got:?}\nis not\n{want:?}…");
    }
}

const HCM_AT: &str = "listeners[0].filter_chains[0].filters[0].typed_config";

/// One listener with mistakes everywhere: an unknown field in a nested message, wrong value
/// types, an unknown enum value, an unknown `@type`, and an unknown field and a bad duration
/// deep inside a typed config.
const MANY_MISTAKES: &str = r#"# Several mistakes in one listener.
[[listeners]]
name = "egress"
address = { socket_address = { adress = "127.0.0.1", port_value = 15001 } }
per_connection_buffer_limit_bytes = "lots"
listener_filters_timeout = 5

[[listeners.filter_chains]]
[[listeners.filter_chains.filters]]
name = "envoy.filters.network.http_connection_manager"

[listeners.filter_chains.filters.typed_config]
"@type" = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
stat_prefix = "egress"
codec_type = "HTTP9"
http_filters = [
  { name = "envoy.filters.http.router", typed_config = { "@type" = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Routr" } },
]

[listeners.filter_chains.filters.typed_config.route_config]
name = "local"

[[listeners.filter_chains.filters.typed_config.route_config.virtual_hosts]]
name = "all"
domainz = ["*"]
routes = [
  { match = { prefix = "/" }, route = { cluster = "local_app", timeout = "5 seconds" } },
]
"#;

#[test]
fn every_problem_in_one_resource_is_reported_with_its_full_path() {
    let vh = format!("{HCM_AT}.route_config.virtual_hosts[0]");
    assert_errors(
        &errors(MANY_MISTAKES),
        &[
            (
                4,
                "listeners[0].address.socket_address.adress",
                "unknown field \"adress\" in envoy.config.core.v3.SocketAddress (did you mean \"address\"?)",
            ),
            (
                5,
                "listeners[0].per_connection_buffer_limit_bytes",
                "invalid digit found in string (expected a non-negative integer)",
            ),
            (
                6,
                "listeners[0].listener_filters_timeout",
                "invalid type: integer `5`, expected a duration string (a duration is written \"5s\" or \"0.25s\")",
            ),
            (
                15,
                &format!("{HCM_AT}.codec_type"),
                "unrecognized enum value 'HTTP9' in CodecType (did you mean \"HTTP1\"?)",
            ),
            (
                17,
                &format!("{HCM_AT}.http_filters[0].typed_config.@type"),
                "unknown @type \"type.googleapis.com/envoy.extensions.filters.http.router.v3.Routr\"",
            ),
            (25, &format!("{vh}.domainz"), "unknown field \"domainz\""),
            (
                27,
                &format!("{vh}.routes[0].route.timeout"),
                "failed to parse duration (a duration is written \"5s\" or \"0.25s\")",
            ),
        ],
    );
}

#[test]
fn each_bad_list_item_and_map_entry_is_reported() {
    let text = r#"
[[routes]]
name = "r"

[[routes.virtual_hosts]]
name = "all"
domains = ["a", 1, "b", 2]
routes = [
  { match = { prefix = "/" }, route = { cluster = "a", cluster_header = "x" } },
  { match = { prefix = 7 }, route = { cluster = "a" } },
]

[routes.virtual_hosts.typed_per_filter_config."envoy.filters.http.nope"]
"@type" = "type.googleapis.com/envoy.no.Such"
"#;
    let vh = "routes[0].virtual_hosts[0]";
    assert_errors(
        &errors(text),
        &[
            (7, &format!("{vh}.domains[1]"), "invalid type: integer `1`"),
            (7, &format!("{vh}.domains[3]"), "invalid type: integer `2`"),
            (
                9,
                &format!("{vh}.routes[0].route.cluster_header"),
                "\"cluster_header\" and \"cluster\" are both set, but only one of oneof \"cluster_specifier\" may be",
            ),
            (10, &format!("{vh}.routes[1].match.prefix"), "invalid type: integer `7`"),
            (
                14,
                &format!("{vh}.typed_per_filter_config.envoy.filters.http.nope.@type"),
                "unknown @type",
            ),
        ],
    );
}

#[test]
fn a_scalar_where_a_message_belongs_is_reported_at_that_field() {
    let text = "[[clusters]]\nname = \"a\"\ntype = \"STATIC\"\nload_assignment = \"x\"\nconnect_timeout = []\n";
    assert_errors(
        &errors(text),
        &[
            (
                4,
                "clusters[0].load_assignment",
                "invalid type: string \"x\"",
            ),
            (5, "clusters[0].connect_timeout", "invalid type: sequence"),
        ],
    );
}

#[test]
fn enums_in_lists_and_well_known_types_in_any() {
    let text = r#"[[clusters]]
name = "a"
type = "STATIK"
common_lb_config = { override_host_status = { statuses = ["HEALTHY", "DRAINNG", 7, "X"] } }

[clusters.typed_extension_protocol_options]
late = { "@type" = "type.googleapis.com/google.protobuf.Duration", value = "1 second" }
bare = { "@type" = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions" }
"#;
    let statuses = "clusters[0].common_lb_config.override_host_status.statuses";
    let options = "clusters[0].typed_extension_protocol_options";
    assert_errors(
        &errors(text),
        &[
            (
                3,
                "clusters[0].type",
                "unrecognized enum value 'STATIK' in DiscoveryType (did you mean \"STATIC\"?)",
            ),
            (
                4,
                &format!("{statuses}[1]"),
                "unrecognized enum value 'DRAINNG' in HealthStatus (did you mean \"DRAINING\"?)",
            ),
            (
                4,
                &format!("{statuses}[3]"),
                "unrecognized enum value 'X' in HealthStatus (one of UNKNOWN, HEALTHY,",
            ),
            (
                7,
                &format!("{options}.late"),
                "failed to parse duration (a duration is written \"5s\" or \"0.25s\")",
            ),
            (
                8,
                &format!("{options}.bare.@type"),
                "@type \"envoy.extensions.upstreams.http.v3.HttpProtocolOptions\" is not a type URL \
                 (write \"type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\")",
            ),
        ],
    );
}

/// The walk must never flag what prost-reflect accepts: it only runs when a resource has a
/// problem, and a false alarm would then sit beside the real one.
#[test]
fn the_walk_finds_nothing_in_the_shipped_templates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/templates");
    let kinds = [
        ("listeners", "envoy.config.listener.v3.Listener"),
        ("routes", "envoy.config.route.v3.RouteConfiguration"),
        ("clusters", "envoy.config.cluster.v3.Cluster"),
        ("cluster_defaults", "envoy.config.cluster.v3.Cluster"),
    ];
    let mut checked = 0;
    for name in ["sidecar.toml", "ingress.toml"] {
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        let located = Located::parse(&text).unwrap_or_else(|e| panic!("{}", e.message));
        for (section, message) in kinds {
            let desc = crate::descriptors::pool()
                .get_message_by_name(message)
                .unwrap();
            let resources = match located.json.get(section) {
                Some(Value::Array(items)) => items.clone(),
                Some(one) => vec![one.clone()],
                None => continue,
            };
            for (i, json) in resources.iter().enumerate() {
                let at = FieldPath::default().key(section).index(i);
                let errors = schema_check::check(&desc, json, &at);
                assert!(errors.is_empty(), "{name}: {errors:#?}");
                checked += 1;
            }
        }
    }
    assert!(checked >= 6, "{checked}");
}

/// Lines inside inline arrays of inline tables, and in arrays of tables nested under a later
/// header, point at the item itself, not at the field that holds the array.
#[test]
fn items_of_inline_arrays_and_nested_arrays_of_tables_have_their_own_lines() {
    let text = r#"[[listeners]]
name = "l"
filter_chains = [
  { filters = [
      { name = "a" },
      { name = "b", typed_config = { "@type" = "x", stat_prefix = "s" } },
  ] },
]

[[listeners]]
name = "m"

[[listeners.filter_chains]]
name = "fc0"

[[listeners.filter_chains]]
name = "fc1"
"#;
    let Ok(located) = Located::parse(text) else {
        panic!("valid TOML")
    };
    let line = |path: &str| {
        let mut field = FieldPath::default();
        for part in path.split('.') {
            let (key, index) = part
                .split_once('[')
                .map_or((part, None), |(k, i)| (k, Some(i)));
            field = field.key(key);
            if let Some(i) = index {
                field = field.index(i.trim_end_matches(']').parse().unwrap());
            }
        }
        located.line(&field)
    };
    let filter = "listeners[0].filter_chains[0].filters";
    assert_eq!(line(&format!("{filter}[0].name")), Some(5));
    assert_eq!(line(&format!("{filter}[1]")), Some(6));
    assert_eq!(
        line(&format!("{filter}[1].typed_config.stat_prefix")),
        Some(6)
    );
    // A field that was not written gets its nearest written parent's line.
    assert_eq!(line(&format!("{filter}[1].typed_config.nope")), Some(6));
    assert_eq!(line("listeners[1]"), Some(10));
    assert_eq!(line("listeners[1].filter_chains[0].name"), Some(14));
    assert_eq!(line("listeners[1].filter_chains[1]"), Some(16));
    assert_eq!(line("listeners[1].filter_chains[1].name"), Some(17));
}

#[test]
fn an_on_demand_node_type_needs_the_on_demand_filter_where_the_generated_routes_are_served() {
    let text = crate::synthesize::synthesizer::tests::template("[on_demand]\nenabled = true\n");
    let errors = errors(&text);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].contains("on_demand.enabled: the listener serving the generated routes \"egress\" has no envoy.filters.http.on_demand HTTP filter"),
        "{errors:#?}"
    );
    let with_filter = text.replace(
        "http_filters = [",
        r#"http_filters = [{ name = "envoy.filters.http.on_demand", typed_config = { "@type" = "type.googleapis.com/envoy.extensions.filters.http.on_demand.v3.OnDemand", odcds = { source = { ads = {} } } } }, "#,
    );
    assert!(NodeTemplate::parse(Path::new("t/sidecar.toml"), &with_filter).is_ok());
}

#[test]
fn mtls_problems_name_their_keys() {
    let found = errors(
        r#"[mtls]
mode = "strict"
trust_domain = "Mesh.Example"
certificate_dir = "certs"
ingress_listener = "inbound"
"#,
    );
    assert_errors(
        &found,
        &[
            (
                3,
                "mtls.trust_domain",
                "the trust domain `Mesh.Example` holds 'M'",
            ),
            (4, "mtls.certificate_dir", "must be an absolute path"),
            (
                5,
                "mtls.ingress_listener",
                "no listener \"inbound\" in this template",
            ),
        ],
    );
    let unknown = errors("[mtls]\nmode = \"on\"\ntrust_domain = \"mesh.example\"\n");
    assert!(
        unknown[0].contains("mtls.mode") && unknown[0].contains("unknown variant"),
        "{unknown:?}"
    );
    // A gRPC node type's clients name their bootstrap's certificate provider, not files, and
    // have no ingress ecs-xds secures.
    let grpc = errors(
        r#"[grpc]
enabled = true
[mtls]
mode = "strict"
trust_domain = "m.x"
certificate_dir = "/certs"
ingress_listener = "ingress"
certificate_provider = ""
"#,
    );
    assert_errors(
        &grpc,
        &[
            (6, "mtls.certificate_dir", "not read for a [grpc] node type"),
            (
                7,
                "mtls.ingress_listener",
                "not read for a [grpc] node type",
            ),
            (
                8,
                "mtls.certificate_provider",
                "must name the certificate provider",
            ),
        ],
    );
    let envoy =
        errors("[mtls]\nmode = \"strict\"\ntrust_domain = \"m.x\"\ncertificate_provider = \"x\"\n");
    assert!(
        envoy[0].contains("mtls.certificate_provider") && envoy[0].contains("only for a [grpc]"),
        "{envoy:?}"
    );
}

#[test]
fn a_bad_shadow_log_cluster_names_its_key_and_line() {
    let found = errors("[authz]\ndefault = \"allow\"\nshadow_log_cluster = \"ecs xds\"\n");
    assert_errors(
        &found,
        &[(
            3,
            "authz.shadow_log_cluster",
            "\"ecs xds\" is not a cluster name",
        )],
    );
    let empty = errors("[authz]\nshadow_log_cluster = \"\"\n");
    assert_errors(&empty, &[(2, "authz.shadow_log_cluster", "\"\" is not")]);
    let number = errors("[authz]\nshadow_log_cluster = 5\n");
    assert_errors(&number, &[(2, "authz.shadow_log_cluster", "invalid type")]);
    let fine = "[authz]\nshadow_log_cluster = \"ecs_xds\"\n";
    let template = NodeTemplate::parse(Path::new("t/sidecar.toml"), fine).unwrap();
    assert_eq!(template.shadow_log_cluster.as_deref(), Some("ecs_xds"));
}

#[test]
fn grpc_server_addresses_must_be_ip_port_and_the_name_must_hold_the_address() {
    let text = "[grpc]\nenabled = true\nserver_addresses = [\"0.0.0.0:50051\", \"orders:50051\"]\nserver_listener_name = \"grpc/server\"\n";
    assert_errors(
        &errors(text),
        &[
            (
                3,
                "grpc.server_addresses[1]",
                "\"orders:50051\" is not IP:port",
            ),
            (4, "grpc.server_listener_name", "must hold `%s`"),
        ],
    );
    let not_grpc = "[grpc]\nserver_addresses = [\"0.0.0.0:50051\"]\n";
    assert_errors(
        &errors(not_grpc),
        &[(2, "grpc.server_addresses", "needs `enabled = true`")],
    );
}

#[test]
fn config_source_needs_a_source_and_is_refused_where_ads_is_the_only_way() {
    assert_errors(
        &errors("[config_source]\nresource_api_version = \"V3\"\n"),
        &[(1, "config_source", "needs where endpoints come from")],
    );
    let grpc = "[grpc]\nenabled = true\n\n[config_source]\nads = {}\n";
    assert_errors(
        &errors(grpc),
        &[(
            4,
            "config_source",
            "proxyless gRPC takes its endpoints over ADS only",
        )],
    );
    assert_errors(
        &errors("[config_source]\nads = {}\nnope = 1\n"),
        &[(3, "config_source.nope", "")],
    );
}
