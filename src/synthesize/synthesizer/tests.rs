use std::path::Path;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::cluster;
use envoy_types::pb::envoy::config::core::v3::HealthStatus;
use envoy_types::pb::envoy::config::endpoint::v3::{lb_endpoint, ClusterLoadAssignment};
use envoy_types::pb::envoy::config::route::v3::{
    route::Action, route_action::ClusterSpecifier, RouteConfiguration,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::{
    explicit_http_config::ProtocolConfig, UpstreamProtocolOptions,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
use prost::Message;

use super::*;
use crate::inventory::{Endpoint, Health, LbPolicy, Locality, Source};
use crate::synthesize::clusters::HTTP_PROTOCOL_OPTIONS;

const HCM: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

/// A node type with an egress listener on the generated routes, plus `extra` TOML.
pub(crate) fn template(extra: &str) -> String {
    format!(
        r#"
[generated_routes]
name = "egress"
ports = [80]

[[listeners]]
name = "egress"
address = {{ socket_address = {{ address = "127.0.0.1", port_value = 15001 }} }}
[[listeners.filter_chains]]
[[listeners.filter_chains.filters]]
name = "envoy.filters.network.http_connection_manager"
[listeners.filter_chains.filters.typed_config]
"@type" = "{HCM}"
stat_prefix = "egress"
rds = {{ route_config_name = "egress", config_source = {{ ads = {{}} }} }}
http_filters = [{{ name = "envoy.filters.http.router", typed_config = {{ "@type" = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" }} }}]
{extra}
"#
    )
}

pub(crate) fn templates(files: &[(&str, &str)]) -> Templates {
    let files: Vec<_> = files
        .iter()
        .map(|(name, text)| (format!("t/{name}.toml"), text.to_string()))
        .collect();
    Templates::parse(files.iter().map(|(f, t)| (Path::new(f), t.as_str())))
        .unwrap_or_else(|e| panic!("{e}"))
}

pub(crate) fn endpoint(ip: &str, health: Health, zone: &str, weight: u32) -> Endpoint {
    Endpoint {
        address: ip.to_owned(),
        port: 8080,
        health,
        locality: Locality {
            region: "eu-west-1".into(),
            zone: Some(zone.to_owned()),
        },
        weight,
        id: format!("task-{ip}"),
        revision: None,
        deployment: None,
    }
}

pub(crate) fn service(name: &str, ips: &[&str]) -> inventory::Cluster {
    inventory::Cluster {
        name: name.to_owned(),
        source: Source::Ecs {
            ecs_cluster: "demo".into(),
            service: name.to_owned(),
        },
        port_name: None,
        overrides: ClusterOverrides::default(),
        route: Default::default(),
        backends: None,
        security: Default::default(),
        endpoints: ips
            .iter()
            .map(|ip| endpoint(ip, Health::Healthy, "eu-west-1a", 1))
            .collect(),
    }
}

pub(crate) fn inventory(services: impl IntoIterator<Item = inventory::Cluster>) -> Inventory {
    Inventory {
        clusters: services.into_iter().map(|c| (c.name.clone(), c)).collect(),
        warnings: Vec::new(),
        callers: Default::default(),
    }
}

pub(crate) fn three_services() -> Inventory {
    inventory([
        service("orders", &["10.0.0.1", "10.0.0.2"]),
        service("users", &["10.0.1.1"]),
        service("web", &["10.0.2.1", "10.0.2.2", "10.0.2.3"]),
    ])
}

pub(crate) fn cluster_of(snapshot: &Snapshot, name: &str) -> Cluster {
    snapshot
        .of(ResourceType::Cluster)
        .get(name)
        .unwrap_or_else(|| panic!("no cluster {name}"))
        .decode()
        .unwrap()
}

pub(crate) fn endpoints_of(snapshot: &Snapshot, name: &str) -> ClusterLoadAssignment {
    snapshot
        .of(ResourceType::Endpoint)
        .get(name)
        .unwrap()
        .decode()
        .unwrap()
}

pub(crate) fn names(snapshot: &Snapshot, ty: ResourceType) -> Vec<String> {
    let resources = snapshot.of(ty).resources();
    resources.keys().map(|k| k.to_string()).collect()
}

#[test]
fn every_node_type_gets_a_consistent_snapshot() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/templates");
    let templates = Templates::load_dir(&dir).unwrap();
    let synthesis = synthesize(&three_services(), &templates);
    assert_eq!(
        synthesis.snapshots.keys().collect::<Vec<_>>(),
        ["grpc", "ingress", "intercepted", "sidecar"]
    );
    for snapshot in synthesis.snapshots.values() {
        snapshot.check_consistency().unwrap();
    }
    let sidecar = &synthesis.snapshots["sidecar"];
    assert_eq!(
        names(sidecar, ResourceType::Cluster),
        ["local_app", "orders", "users", "web"]
    );
    assert_eq!(
        names(sidecar, ResourceType::Endpoint),
        ["orders", "users", "web"]
    );
    assert_eq!(
        names(sidecar, ResourceType::Listener),
        ["egress", "ingress"]
    );
    assert_eq!(names(sidecar, ResourceType::Route), ["egress", "local_app"]);
    let ingress = &synthesis.snapshots["ingress"];
    assert_eq!(names(ingress, ResourceType::Cluster), ["orders", "web"]);
}

#[test]
fn discovered_clusters_are_eds_over_ads_with_the_defaults_applied() {
    let text = template(
        r#"
[cluster_defaults]
connect_timeout = "1s"
lb_policy = "LEAST_REQUEST"
circuit_breakers = { thresholds = [{ max_connections = 7 }] }
"#,
    );
    let synthesis = synthesize(&three_services(), &templates(&[("sidecar", &text)]));
    let orders = cluster_of(&synthesis.snapshots["sidecar"], "orders");
    assert_eq!(orders.name, "orders");
    assert_eq!(
        orders.cluster_discovery_type,
        Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32
        ))
    );
    let eds = orders.eds_cluster_config.unwrap();
    assert_eq!(eds.eds_config, Some(crate::synthesize::ads_config_source()));
    assert_eq!(orders.connect_timeout.unwrap().seconds, 1);
    assert_eq!(orders.lb_policy, cluster::LbPolicy::LeastRequest as i32);
    let thresholds = &orders.circuit_breakers.unwrap().thresholds;
    assert_eq!(thresholds[0].max_connections.unwrap().value, 7);
}

#[test]
fn config_source_names_where_discovered_clusters_endpoints_come_from() {
    use envoy_types::pb::envoy::config::core::v3::{
        api_config_source::ApiType, config_source::ConfigSourceSpecifier, ApiVersion,
    };
    let text = template(
        r#"
[config_source]
api_config_source = { api_type = "REST", transport_api_version = "V3", cluster_names = ["ecs-xds"], refresh_delay = "5s" }
"#,
    );
    let synthesis = synthesize(&three_services(), &templates(&[("sidecar", &text)]));
    let orders = cluster_of(&synthesis.snapshots["sidecar"], "orders");
    let source = orders.eds_cluster_config.unwrap().eds_config.unwrap();
    assert_eq!(
        source.resource_api_version,
        ApiVersion::V3 as i32,
        "V3 when left out"
    );
    let Some(ConfigSourceSpecifier::ApiConfigSource(api)) = source.config_source_specifier else {
        panic!("expected an API config source, got {source:?}");
    };
    assert_eq!(api.api_type, ApiType::Rest as i32);
    assert_eq!(api.cluster_names, ["ecs-xds"]);
    assert_eq!(api.refresh_delay.unwrap().seconds, 5);
}

#[test]
fn service_overrides_go_on_top_of_the_defaults() {
    let text = template(
        r#"
[cluster_defaults]
connect_timeout = "1s"
lb_policy = "LEAST_REQUEST"
outlier_detection = { consecutive_5xx = 3 }
"#,
    );
    let mut inventory = three_services();
    inventory.clusters.get_mut("orders").unwrap().overrides = ClusterOverrides {
        lb_policy: Some(LbPolicy::RingHash),
        connect_timeout: Some(Duration::from_millis(250)),
        http2: Some(true),
        ..ClusterOverrides::default()
    };
    let synthesis = synthesize(&inventory, &templates(&[("sidecar", &text)]));
    let snapshot = &synthesis.snapshots["sidecar"];
    let orders = cluster_of(snapshot, "orders");
    assert_eq!(orders.lb_policy, cluster::LbPolicy::RingHash as i32);
    let timeout = orders.connect_timeout.unwrap();
    assert_eq!((timeout.seconds, timeout.nanos), (0, 250_000_000));
    assert!(orders.outlier_detection.is_some(), "defaults are kept");
    assert!(matches!(
        http_options(&orders).upstream_protocol_options,
        Some(UpstreamProtocolOptions::ExplicitHttpConfig(ref e))
            if matches!(e.protocol_config, Some(ProtocolConfig::Http2ProtocolOptions(_)))
    ));
    let users = cluster_of(snapshot, "users");
    assert_eq!(users.lb_policy, cluster::LbPolicy::LeastRequest as i32);
    assert_eq!(users.connect_timeout.unwrap().seconds, 1);
    assert!(users.typed_extension_protocol_options.is_empty());
}

fn http_options(cluster: &Cluster) -> HttpProtocolOptions {
    let any = &cluster.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS];
    HttpProtocolOptions::decode(any.value.as_slice()).unwrap()
}

#[test]
fn http2_override_keeps_the_defaults_protocol_settings() {
    let text = template(
        r#"
[cluster_defaults.typed_extension_protocol_options."envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
"@type" = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
common_http_protocol_options = { idle_timeout = "30s" }
explicit_http_config = { http2_protocol_options = { max_concurrent_streams = 50 } }
"#,
    );
    let mut inventory = three_services();
    inventory
        .clusters
        .get_mut("orders")
        .unwrap()
        .overrides
        .http2 = Some(false);
    inventory.clusters.get_mut("users").unwrap().overrides.http2 = Some(true);
    let synthesis = synthesize(&inventory, &templates(&[("sidecar", &text)]));
    let snapshot = &synthesis.snapshots["sidecar"];
    let protocol = |name: &str| {
        let options = http_options(&cluster_of(snapshot, name));
        assert_eq!(
            options
                .common_http_protocol_options
                .unwrap()
                .idle_timeout
                .unwrap()
                .seconds,
            30
        );
        match options.upstream_protocol_options {
            Some(UpstreamProtocolOptions::ExplicitHttpConfig(e)) => e.protocol_config.unwrap(),
            other => panic!("{other:?}"),
        }
    };
    assert!(matches!(
        protocol("orders"),
        ProtocolConfig::HttpProtocolOptions(_)
    ));
    let ProtocolConfig::Http2ProtocolOptions(h2) = protocol("users") else {
        panic!("not HTTP/2")
    };
    assert_eq!(h2.max_concurrent_streams.unwrap().value, 50);
}

#[test]
fn endpoints_carry_health_weight_and_locality() {
    let mut orders = service("orders", &[]);
    orders.endpoints = vec![
        endpoint("10.0.0.4", Health::Draining, "eu-west-1b", 1),
        endpoint("10.0.0.1", Health::Healthy, "eu-west-1a", 1),
        endpoint("10.0.0.3", Health::Unknown, "eu-west-1b", 5),
        endpoint("10.0.0.2", Health::Unhealthy, "eu-west-1a", 2),
    ];
    let synthesis = synthesize(
        &inventory([orders]),
        &templates(&[("sidecar", &template(""))]),
    );
    let cla = endpoints_of(&synthesis.snapshots["sidecar"], "orders");
    assert_eq!(cla.cluster_name, "orders");
    let seen: Vec<_> = cla
        .endpoints
        .iter()
        .flat_map(|locality| {
            let l = locality.locality.clone().unwrap();
            locality.lb_endpoints.iter().map(move |e| {
                let Some(lb_endpoint::HostIdentifier::Endpoint(ep)) = &e.host_identifier else {
                    panic!("no endpoint")
                };
                let address = match ep.address.clone().unwrap().address.unwrap() {
                    envoy_types::pb::envoy::config::core::v3::address::Address::SocketAddress(
                        s,
                    ) => s.address,
                    other => panic!("{other:?}"),
                };
                (
                    l.region.clone(),
                    l.zone.clone(),
                    address,
                    HealthStatus::try_from(e.health_status).unwrap(),
                    e.load_balancing_weight.unwrap().value,
                )
            })
        })
        .collect();
    let row = |zone: &str, ip: &str, health, weight| {
        (
            "eu-west-1".to_owned(),
            zone.to_owned(),
            ip.to_owned(),
            health,
            weight,
        )
    };
    assert_eq!(
        seen,
        [
            row("eu-west-1a", "10.0.0.1", HealthStatus::Healthy, 1),
            row("eu-west-1a", "10.0.0.2", HealthStatus::Unhealthy, 2),
            row("eu-west-1b", "10.0.0.3", HealthStatus::Unknown, 5),
            row("eu-west-1b", "10.0.0.4", HealthStatus::Draining, 1),
        ]
    );
}

#[test]
fn scope_globs_choose_the_clusters_each_node_type_gets() {
    let edge = template("[scope]\ninclude = [\"web\", \"orders*\"]\nexclude = [\"*.admin\"]\n");
    let mut inventory = three_services();
    inventory.clusters.insert(
        "orders.admin".into(),
        service("orders.admin", &["10.0.9.9"]),
    );
    let t = templates(&[("edge", &edge), ("sidecar", &template(""))]);
    let synthesis = synthesize(&inventory, &t);
    let edge = &synthesis.snapshots["edge"];
    assert_eq!(names(edge, ResourceType::Cluster), ["orders", "web"]);
    assert_eq!(names(edge, ResourceType::Endpoint), ["orders", "web"]);
    let sidecar = &synthesis.snapshots["sidecar"];
    assert_eq!(
        names(sidecar, ResourceType::Cluster),
        ["orders", "orders.admin", "users", "web"]
    );
}

#[test]
fn generated_routes_give_each_cluster_a_virtual_host() {
    let synthesis = synthesize(&three_services(), &templates(&[("sidecar", &template(""))]));
    let routes: RouteConfiguration = synthesis.snapshots["sidecar"]
        .of(ResourceType::Route)
        .get("egress")
        .unwrap()
        .decode()
        .unwrap();
    let hosts: Vec<_> = routes
        .virtual_hosts
        .iter()
        .map(|vh| {
            let Some(Action::Route(action)) = &vh.routes[0].action else {
                panic!("no route action")
            };
            let Some(ClusterSpecifier::Cluster(cluster)) = &action.cluster_specifier else {
                panic!("no cluster")
            };
            (vh.name.as_str(), vh.domains.clone(), cluster.as_str())
        })
        .collect();
    assert_eq!(
        hosts,
        [
            (
                "orders",
                vec!["orders".to_owned(), "orders:80".to_owned()],
                "orders"
            ),
            (
                "users",
                vec!["users".to_owned(), "users:80".to_owned()],
                "users"
            ),
            ("web", vec!["web".to_owned(), "web:80".to_owned()], "web"),
        ]
    );
}

#[test]
fn an_empty_inventory_still_gives_consistent_snapshots() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/templates");
    let templates = Templates::load_dir(&dir).unwrap();
    let synthesis = synthesize(&Inventory::default(), &templates);
    let sidecar = &synthesis.snapshots["sidecar"];
    assert_eq!(names(sidecar, ResourceType::Cluster), ["local_app"]);
    assert!(sidecar.of(ResourceType::Route).get("egress").is_some());
}

#[test]
fn the_same_inventory_gives_the_same_versions_whatever_its_order() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/templates");
    let templates = Templates::load_dir(&dir).unwrap();
    let forward = three_services();
    let mut backward = three_services();
    for c in backward.clusters.values_mut() {
        c.endpoints.reverse();
    }
    let a = synthesize(&forward, &templates);
    let b = Synthesizer::new(templates.clone()).synthesize(&backward);
    for (node_type, snapshot) in &a.snapshots {
        for ty in ResourceType::ALL {
            assert_eq!(
                snapshot.version(ty),
                b.snapshots[node_type].version(ty),
                "{node_type} {ty}"
            );
        }
    }
    let mut changed = three_services();
    changed.clusters.get_mut("web").unwrap().endpoints[0].weight = 3;
    let c = synthesize(&changed, &templates);
    let sidecar = (&a.snapshots["sidecar"], &c.snapshots["sidecar"]);
    assert_ne!(
        sidecar.0.version(ResourceType::Endpoint),
        sidecar.1.version(ResourceType::Endpoint)
    );
    assert_eq!(
        sidecar.0.version(ResourceType::Cluster),
        sidecar.1.version(ResourceType::Cluster)
    );
}

/// Every resource of both snapshots, by (type, name): whether it is the very same encoding.
fn same_encodings(a: &Snapshot, b: &Snapshot) -> Vec<(ResourceType, String, bool)> {
    let mut out = Vec::new();
    for ty in ResourceType::ALL {
        for (name, resource) in b.of(ty).resources() {
            let same = a.of(ty).get(name).is_some_and(|r| Arc::ptr_eq(r, resource));
            out.push((ty, name.to_string(), same));
        }
    }
    out
}

#[test]
fn a_change_to_one_service_re_encodes_only_that_service() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/templates");
    let mut synthesizer = Synthesizer::new(Templates::load_dir(&dir).unwrap());
    let before = synthesizer.synthesize(&three_services());
    let mut changed = three_services();
    changed.clusters.get_mut("orders").unwrap().endpoints[1].health = Health::Draining;
    let after = synthesizer.synthesize(&changed);
    // One new ClusterLoadAssignment, shared by both node types.
    assert_eq!(after.encoded, 1);
    for (node_type, snapshot) in &after.snapshots {
        for (ty, name, same) in same_encodings(&before.snapshots[node_type], snapshot) {
            let changed = ty == ResourceType::Endpoint && name == "orders";
            assert_eq!(same, !changed, "{node_type} {ty} {name}");
        }
    }
    let orders = |n: &str| {
        after.snapshots[n]
            .of(ResourceType::Endpoint)
            .get("orders")
            .unwrap()
            .clone()
    };
    assert!(Arc::ptr_eq(&orders("sidecar"), &orders("ingress")));
}

#[test]
fn an_override_change_re_encodes_only_that_cluster() {
    let t = templates(&[("sidecar", &template(""))]);
    let mut synthesizer = Synthesizer::new(t);
    let before = synthesizer.synthesize(&three_services());
    let mut changed = three_services();
    changed.clusters.get_mut("users").unwrap().overrides.http2 = Some(true);
    let after = synthesizer.synthesize(&changed);
    assert_eq!(after.encoded, 1);
    let same = same_encodings(&before.snapshots["sidecar"], &after.snapshots["sidecar"]);
    let fresh: Vec<_> = same.iter().filter(|(_, _, s)| !s).collect();
    assert_eq!(fresh, [&(ResourceType::Cluster, "users".to_owned(), false)]);
}

#[test]
fn a_new_service_is_encoded_once_and_regenerates_the_routes() {
    let t = templates(&[("a", &template("")), ("b", &template(""))]);
    let mut synthesizer = Synthesizer::new(t);
    let first = synthesizer.synthesize(&three_services());
    // Equal defaults: node type b reuses a's clusters and endpoints.
    assert_eq!(first.encoded, 3 + 3 + 2);
    let mut more = three_services();
    more.clusters
        .insert("billing".into(), service("billing", &["10.0.3.1"]));
    let second = synthesizer.synthesize(&more);
    // billing's cluster and endpoints once, and each node type's generated routes.
    assert_eq!(second.encoded, 2 + 2);
    let gone = synthesizer.synthesize(&three_services());
    assert_eq!(
        gone.encoded, 2,
        "the generated routes again; billing is not kept"
    );
    assert!(gone.snapshots["a"]
        .of(ResourceType::Cluster)
        .get("billing")
        .is_none());
}

#[test]
fn new_templates_keep_the_endpoint_encodings() {
    let mut synthesizer = Synthesizer::new(templates(&[("a", &template(""))]));
    let before = synthesizer.synthesize(&three_services());
    synthesizer.set_templates(templates(&[(
        "a",
        &template("[cluster_defaults]\nconnect_timeout = \"2s\"\n"),
    )]));
    let after = synthesizer.synthesize(&three_services());
    let same = same_encodings(&before.snapshots["a"], &after.snapshots["a"]);
    for (ty, name, same) in same {
        let expected = matches!(ty, ResourceType::Endpoint);
        assert_eq!(same, expected, "{ty} {name}");
    }
}

#[test]
fn a_route_to_a_cluster_that_is_not_discovered_is_a_warning() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/templates");
    let templates = Templates::load_dir(&dir).unwrap();
    let mut inventory = three_services();
    inventory.clusters.remove("web");
    let synthesis = synthesize(&inventory, &templates);
    let warnings: Vec<_> = synthesis.warnings.iter().map(|f| f.to_string()).collect();
    assert_eq!(
        warnings,
        [format!(
            "{}: route configuration \"public\" sends to cluster \"web\", which is not discovered",
            dir.join("ingress.toml").display()
        )]
    );
    assert_eq!(synthesis.warnings[0].node_type, "ingress");
    assert!(synthesize(&three_services(), &templates)
        .warnings
        .is_empty());
}

#[test]
fn a_route_to_a_cluster_out_of_scope_is_a_warning() {
    let text = template(
        r#"
[scope]
exclude = ["web"]

[[listeners]]
name = "public"
address = { socket_address = { address = "0.0.0.0", port_value = 8000 } }
[[listeners.filter_chains]]
[[listeners.filter_chains.filters]]
name = "envoy.filters.network.http_connection_manager"
[listeners.filter_chains.filters.typed_config]
"@type" = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
stat_prefix = "public"
route_config = { name = "inline", virtual_hosts = [] }

[[routes]]
name = "unused"
"#,
    );
    // A route configuration no listener asks for is refused at load...
    assert!(Templates::parse([(Path::new("t/x.toml"), text.as_str())]).is_err());
    // ...so the second listener asks RDS for it, and it routes to the excluded cluster.
    let text = text
        .replace("route_config = { name = \"inline\", virtual_hosts = [] }", "rds = { route_config_name = \"unused\", config_source = { ads = {} } }")
        + "[[routes.virtual_hosts]]\nname = \"all\"\ndomains = [\"*\"]\nroutes = [{ match = { prefix = \"/\" }, route = { cluster = \"web\" } }]\n";
    let synthesis = synthesize(&three_services(), &templates(&[("edge", &text)]));
    let warnings: Vec<_> = synthesis
        .warnings
        .iter()
        .map(|f| f.message.as_str())
        .collect();
    assert_eq!(
        warnings,
        ["route configuration \"unused\" sends to cluster \"web\", which this node type's [scope] leaves out"]
    );
}

#[test]
fn a_template_cluster_wins_over_a_discovered_one_of_the_same_name() {
    let text = template(
        r#"
[[clusters]]
name = "users"
type = "STATIC"
load_assignment = { cluster_name = "users", endpoints = [{ lb_endpoints = [{ endpoint = { address = { socket_address = { address = "127.0.0.1", port_value = 9000 } } } }] }] }
"#,
    );
    let synthesis = synthesize(&three_services(), &templates(&[("sidecar", &text)]));
    let snapshot = &synthesis.snapshots["sidecar"];
    assert_eq!(names(snapshot, ResourceType::Endpoint), ["orders", "web"]);
    assert!(cluster_of(snapshot, "users").load_assignment.is_some());
    assert_eq!(synthesis.warnings.len(), 1);
    assert!(synthesis.warnings[0].message.contains("\"users\""));
}
