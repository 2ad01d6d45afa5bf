//! Backend sets: a service that declares what it calls gets only that.

use std::collections::BTreeSet;

use envoy_types::pb::envoy::config::route::v3::{route::Action, RouteConfiguration};

use super::tests::{inventory, service, template, templates};
use super::*;
use crate::inventory::Source;

fn declaring(name: &str, backends: &str) -> inventory::Cluster {
    let mut cluster = service(name, &["10.0.9.1"]);
    cluster.backends = Some(crate::discover::backends::parse(backends).unwrap());
    cluster
}

fn names(snapshot: &Snapshot, ty: ResourceType) -> BTreeSet<String> {
    snapshot
        .of(ty)
        .resources()
        .keys()
        .map(|k| k.to_string())
        .collect()
}

fn set<'s>(synthesis: &'s Synthesis, service: &str) -> (&'s Snapshot, Option<&'s str>) {
    synthesis.snapshot_of_service("sidecar", service).unwrap()
}

fn hosts(snapshot: &Snapshot) -> Vec<(String, Option<u32>)> {
    let routes: RouteConfiguration = snapshot
        .of(ResourceType::Route)
        .get("egress")
        .unwrap()
        .decode()
        .unwrap();
    routes
        .virtual_hosts
        .iter()
        .map(|vh| {
            let direct = vh.routes.iter().find_map(|r| match &r.action {
                Some(Action::DirectResponse(d)) => Some(d.status),
                _ => None,
            });
            (vh.name.clone(), direct)
        })
        .collect()
}

fn mesh() -> Inventory {
    inventory([
        declaring("web", "orders payments"),
        declaring("admin", "payments,orders"),
        service("orders", &["10.0.0.1"]),
        service("payments", &["10.0.1.1"]),
        service("billing", &["10.0.2.1"]),
    ])
}

#[test]
fn a_declaring_service_gets_only_its_backends_and_others_everything() {
    let templates = templates(&[("sidecar", &template(""))]);
    let synthesis = synthesize(&mesh(), &templates);
    let (web, key) = set(&synthesis, "web");
    assert_eq!(key, Some("orders,payments"));
    let expected: BTreeSet<String> = ["orders", "payments"].map(String::from).into();
    assert_eq!(names(web, ResourceType::Cluster), expected);
    assert_eq!(names(web, ResourceType::Endpoint), expected);
    assert_eq!(
        hosts(web),
        [("orders".into(), None), ("payments".into(), None)]
    );
    assert_eq!(
        names(web, ResourceType::Listener),
        ["egress".to_owned()].into()
    );
    // The same items in another order and separator: the same set, one snapshot.
    assert_eq!(set(&synthesis, "admin").1, Some("orders,payments"));
    assert_eq!(synthesis.backend_sets["sidecar"].sets.len(), 1);
    // A service that declares nothing, or an Envoy of no known service: the whole scope.
    for other in ["billing", "", "unknown"] {
        let (snapshot, key) = set(&synthesis, other);
        assert_eq!(key, None);
        assert_eq!(names(snapshot, ResourceType::Cluster).len(), 5, "{other}");
    }
    // Shared work: the set's cluster is the same encoding as the whole scope's.
    let whole = &synthesis.snapshots["sidecar"];
    let of = |s: &Snapshot| s.of(ResourceType::Cluster).get("orders").unwrap().clone();
    assert!(Arc::ptr_eq(&of(web), &of(whole)));
}

#[test]
fn an_undiscovered_backend_answers_503_and_a_glob_selects_by_name_or_ecs_service() {
    let mut grpc = service("payments.grpc", &["10.0.1.2"]);
    grpc.source = Source::Ecs {
        ecs_cluster: "demo".into(),
        service: "payments".into(),
    };
    let inventory = inventory([
        declaring("web", "ghost payments bill*"),
        service("orders", &["10.0.0.1"]),
        grpc,
        service("billing", &["10.0.2.1"]),
    ]);
    let templates = templates(&[("sidecar", &template(""))]);
    let synthesis = synthesize(&inventory, &templates);
    let (web, _) = set(&synthesis, "web");
    assert_eq!(
        names(web, ResourceType::Cluster),
        ["billing", "payments.grpc"].map(String::from).into()
    );
    assert_eq!(
        hosts(web),
        [
            ("billing".into(), None),
            ("payments.grpc".into(), None),
            ("ghost".into(), Some(503))
        ]
    );
    assert_eq!(web.check_consistency(), Ok(()));
}

#[test]
fn a_template_route_keeps_its_cluster_and_a_scope_still_applies() {
    let extra = r#"
[scope]
exclude = ["billing"]
[[listeners]]
name = "ingress"
address = { socket_address = { address = "127.0.0.1", port_value = 15002 } }
[[listeners.filter_chains]]
[[listeners.filter_chains.filters]]
name = "envoy.filters.network.http_connection_manager"
[listeners.filter_chains.filters.typed_config]
"@type" = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
stat_prefix = "ingress"
rds = { route_config_name = "ingress", config_source = { ads = {} } }
http_filters = [{ name = "envoy.filters.http.router", typed_config = { "@type" = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" } }]
[[routes]]
name = "ingress"
[[routes.virtual_hosts]]
name = "all"
domains = ["*"]
routes = [{ match = { prefix = "/" }, route = { cluster = "payments" } }]
"#;
    let mut inventory = mesh();
    inventory
        .clusters
        .insert("web".into(), declaring("web", "orders billing"));
    let templates = templates(&[("sidecar", &template(extra))]);
    let synthesis = synthesize(&inventory, &templates);
    let (web, _) = set(&synthesis, "web");
    assert_eq!(
        names(web, ResourceType::Cluster),
        ["orders", "payments"].map(String::from).into()
    );
    assert!(hosts(web).contains(&("billing".into(), Some(503))));
    assert!(
        synthesis.warnings.iter().any(|f| f
            .message
            .contains("\"billing\" is discovered, but this node type's [scope] leaves it out")),
        "{:?}",
        synthesis.warnings
    );
}

#[test]
fn an_unrelated_change_leaves_a_set_untouched_and_a_changed_declaration_moves_the_caller() {
    let templates = templates(&[("sidecar", &template(""))]);
    let mut synthesizer = Synthesizer::new(templates);
    let first = synthesizer.synthesize(&mesh());
    let mut changed = mesh();
    changed
        .clusters
        .insert("billing".into(), service("billing", &["10.0.2.9"]));
    let second = synthesizer.synthesize(&changed);
    let version = |s: &Synthesis, ty| set(s, "web").0.version(ty).to_owned();
    for ty in ResourceType::ALL {
        assert_eq!(version(&first, ty), version(&second, ty), "{ty:?}");
    }
    assert_ne!(
        first.snapshots["sidecar"].version(ResourceType::Endpoint),
        second.snapshots["sidecar"].version(ResourceType::Endpoint)
    );
    changed
        .clusters
        .insert("web".into(), declaring("web", "orders billing"));
    let third = synthesizer.synthesize(&changed);
    let (web, key) = set(&third, "web");
    assert_eq!(key, Some("billing,orders"));
    assert_eq!(
        names(web, ResourceType::Cluster),
        ["billing", "orders"].map(String::from).into()
    );
    assert_eq!(set(&third, "admin").1, Some("orders,payments"));
}

#[test]
fn an_empty_declaration_gets_only_the_templates_own_resources() {
    let mut inventory = mesh();
    inventory
        .clusters
        .insert("web".into(), declaring("web", ""));
    let templates = templates(&[("sidecar", &template(""))]);
    let synthesis = synthesize(&inventory, &templates);
    let (web, key) = set(&synthesis, "web");
    assert_eq!(key, Some(""));
    assert!(names(web, ResourceType::Cluster).is_empty());
    assert_eq!(
        names(web, ResourceType::Listener),
        ["egress".to_owned()].into()
    );
}

#[test]
fn a_worker_with_no_cluster_of_its_own_declares_through_the_inventorys_callers() {
    let mut inventory = mesh();
    inventory
        .callers
        .insert("queue".into(), vec!["billing".to_owned()]);
    let templates = templates(&[("sidecar", &template(""))]);
    let synthesis = synthesize(&inventory, &templates);
    let (queue, key) = set(&synthesis, "queue");
    assert_eq!(key, Some("billing"));
    assert_eq!(
        names(queue, ResourceType::Cluster),
        ["billing".to_owned()].into()
    );
}

#[test]
fn a_declared_name_repeating_a_served_hosts_domain_gets_no_503_host() {
    // `orders:80` is not a cluster, but it is a domain of orders' own host (ports = [80]).
    let mut inventory = mesh();
    inventory
        .clusters
        .insert("web".into(), declaring("web", "orders orders:80"));
    let templates = templates(&[("sidecar", &template(""))]);
    let synthesis = synthesize(&inventory, &templates);
    let (web, _) = set(&synthesis, "web");
    assert_eq!(hosts(web), [("orders".into(), None)]);
}
