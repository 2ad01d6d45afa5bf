//! `[interception]`: the listeners, routes and clusters for traffic ECS redirects into Envoy.

use envoy_types::pb::envoy::config::listener::v3::{filter, FilterChain, Listener};
use envoy_types::pb::envoy::config::route::v3::{route::Action, RouteConfiguration};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    tcp_proxy::ClusterSpecifier, TcpProxy,
};

use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac as NetworkRbac;
use prost::Message;

use super::tests::{endpoint, inventory, service, templates};
use super::*;
use crate::inventory::{Health, Protocol};
use crate::synthesize::interception::{EGRESS, INGRESS, OUTSIDE, PASSTHROUGH};

fn intercepting(outbound: &str) -> Templates {
    let text =
        format!("[interception]\nenabled = true\napp_ports = [9080]\noutbound = \"{outbound}\"\n");
    templates(&[("app", &text)])
}

/// orders (HTTP, two tasks on 8080, also called `orders.prod.local`), db (TCP on 5432), and a
/// Cloud Map service holding one of orders' tasks.
fn mesh() -> Inventory {
    let mut orders = service("orders", &["10.0.0.1", "10.0.0.2"]);
    orders.route.hosts = vec!["orders.prod.local".into()];
    let mut db = service("db", &[]);
    let mut task = endpoint("10.0.0.3", Health::Healthy, "eu-west-1a", 1);
    task.port = 5432;
    db.endpoints = vec![task];
    db.route.protocol = Some(Protocol::Tcp);
    let mut registered = service("cloudmap.orders.prod.local", &["10.0.0.2", "10.0.0.9"]);
    registered.source = inventory::Source::CloudMap {
        namespace: "prod.local".into(),
        service: "orders".into(),
    };
    inventory([orders, db, registered])
}

fn listener(snapshot: &Snapshot, name: &str) -> Listener {
    let listener = snapshot.of(ResourceType::Listener).get(name);
    listener.expect("the listener").decode().unwrap()
}

/// Each chain as `name port addresses protocols -> target` (the tcp_proxy's cluster, or `hcm`).
fn chains(listener: &Listener) -> Vec<String> {
    let show = |c: &FilterChain| {
        let m = c.filter_chain_match.clone().unwrap_or_default();
        let port = m
            .destination_port
            .map_or("*".into(), |p| p.value.to_string());
        let ips: Vec<_> = m
            .prefix_ranges
            .iter()
            .map(|r| r.address_prefix.clone())
            .collect();
        format!(
            "{} {port} {ips:?} {:?} -> {}",
            c.name,
            m.application_protocols,
            target(c)
        )
    };
    let default = listener.default_filter_chain.iter();
    listener
        .filter_chains
        .iter()
        .chain(default)
        .map(show)
        .collect()
}

fn target(chain: &FilterChain) -> String {
    let last = chain.filters.last().expect("a terminal filter");
    let Some(filter::ConfigType::TypedConfig(any)) = &last.config_type else {
        panic!("a typed config");
    };
    match any.type_url.ends_with("TcpProxy") {
        true => match TcpProxy::decode(any.value.as_slice())
            .unwrap()
            .cluster_specifier
        {
            Some(ClusterSpecifier::Cluster(c)) => c,
            other => panic!("{other:?}"),
        },
        false => "hcm".into(),
    }
}

#[test]
fn redirected_connections_go_to_the_service_owning_their_address_http_by_host() {
    let synthesis = synthesize(&mesh(), &intercepting("passthrough"));
    let snapshot = &synthesis.snapshots["app"];
    snapshot.check_consistency().unwrap();
    let egress = listener(snapshot, EGRESS);
    let http = r#"["http/1.1", "h2c"]"#;
    assert_eq!(
        chains(&egress),
        [
            format!(r#"http:5432 5432 ["10.0.0.3"] {http} -> hcm"#),
            format!(r#"http:any:5432 5432 [] {http} -> hcm"#),
            r#"tcp:db:5432 5432 ["10.0.0.3"] [] -> db"#.to_owned(),
            // 10.0.0.2 is in orders and in the Cloud Map service: the ECS service has it.
            format!(r#"http:8080 8080 ["10.0.0.1", "10.0.0.2", "10.0.0.9"] {http} -> hcm"#),
            format!(r#"http:any:8080 8080 [] {http} -> hcm"#),
            r#"tcp:cloudmap.orders.prod.local:8080 8080 ["10.0.0.9"] [] -> cloudmap.orders.prod.local"#.to_owned(),
            r#"tcp:orders:8080 8080 ["10.0.0.1", "10.0.0.2"] [] -> orders"#.to_owned(),
            format!(r#"http:any * [] {http} -> hcm"#),
            r#"loop 15001 ["127.0.0.1"] [] -> interception-refused"#.to_owned(),
            format!("passthrough * [] [] -> {PASSTHROUGH}"),
        ]
    );
    // db speaks first maybe: its port is never held by the HTTP inspector.
    let inspector = &egress.listener_filters[1];
    assert_eq!(inspector.name, "envoy.filters.listener.http_inspector");
    assert!(format!("{:?}", inspector.filter_disabled).contains("start: 5432, end: 5433"));
    assert!(egress.continue_on_listener_filters_timeout);
}

fn routes(snapshot: &Snapshot) -> RouteConfiguration {
    let routes = snapshot.of(ResourceType::Route).get(EGRESS);
    routes.expect("the egress routes").decode().unwrap()
}

#[test]
fn each_service_answers_to_its_names_with_and_without_its_ports() {
    let mut inventory = mesh();
    // A second claim of orders' name stays orders', with a warning.
    let db = inventory.clusters.get_mut("db").unwrap();
    db.route.hosts = vec!["orders.prod.local".into(), "postgres".into()];
    let synthesis = synthesize(&inventory, &intercepting("passthrough"));
    let hosts = routes(&synthesis.snapshots["app"]).virtual_hosts;
    let domains: Vec<(String, Vec<String>)> = hosts
        .iter()
        .map(|h| (h.name.clone(), h.domains.clone()))
        .collect();
    let d = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        domains,
        [
            (
                "cloudmap.orders.prod.local".into(),
                d(&[
                    "cloudmap.orders.prod.local:*",
                    "cloudmap.orders.prod.local",
                    "orders.prod.local:*",
                    "orders.prod.local"
                ])
            ),
            ("db".into(), d(&["db:*", "db", "postgres:*", "postgres"])),
            ("orders".into(), d(&["orders:*", "orders"])),
            (PASSTHROUGH.into(), d(&["*"])),
        ]
    );
    let warnings: Vec<String> = synthesis.warnings.iter().map(|w| w.to_string()).collect();
    let warnings = warnings.join("\n");
    assert!(
        warnings.contains(r#""db" is also called "orders.prod.local:*""#),
        "{warnings}"
    );
    assert!(
        warnings.contains(r#""orders" is also called "orders.prod.local""#),
        "{warnings}"
    );
}

#[test]
fn registry_only_refuses_what_no_service_owns() {
    let synthesis = synthesize(&mesh(), &intercepting("registry_only"));
    let snapshot = &synthesis.snapshots["app"];
    snapshot.check_consistency().unwrap();
    let egress = listener(snapshot, EGRESS);
    assert!(
        egress.default_filter_chain.is_none(),
        "no passthrough chain"
    );
    let last = routes(snapshot).virtual_hosts.pop().unwrap();
    assert_eq!(
        (last.name.as_str(), last.domains.as_slice()),
        (OUTSIDE, &["*".to_owned()][..])
    );
    let Some(Action::DirectResponse(answer)) = &last.routes[0].action else {
        panic!("a direct response");
    };
    assert_eq!(answer.status, 403);
    let clusters = snapshot.of(ResourceType::Cluster).resources();
    assert!(!clusters.contains_key(PASSTHROUGH));
}

#[test]
fn the_ingress_forwards_each_app_port_to_the_app_http_with_the_callers_address() {
    let synthesis = synthesize(&mesh(), &intercepting("passthrough"));
    let snapshot = &synthesis.snapshots["app"];
    let ingress = listener(snapshot, INGRESS);
    assert_eq!(
        chains(&ingress),
        [
            r#"http:9080 9080 [] ["http/1.1", "h2c"] -> hcm"#,
            r#"tcp:9080 9080 [] [] -> interception-app-9080"#,
        ]
    );
    let app = super::tests::cluster_of(snapshot, "interception-app-9080");
    assert!(format!("{:?}", app.load_assignment).contains("127.0.0.1"));
    let Some(filter::ConfigType::TypedConfig(any)) =
        &ingress.filter_chains[0].filters[0].config_type
    else {
        panic!("a typed config");
    };
    let hcm = HttpConnectionManager::decode(any.value.as_slice()).unwrap();
    assert_eq!(hcm.use_remote_address.map(|b| b.value), Some(true));
}

#[test]
fn a_task_that_stops_leaves_the_chains_and_a_health_change_re_encodes_nothing() {
    let mut synthesizer = Synthesizer::new(intercepting("passthrough"));
    let mut inventory = mesh();
    let before = synthesizer.synthesize(&inventory);
    let orders = inventory.clusters.get_mut("orders").unwrap();
    orders.endpoints[0].health = Health::Draining;
    let drained = synthesizer.synthesize(&inventory);
    let egress = |s: &Synthesis, ty| s.snapshots["app"].of(ty).get(EGRESS).unwrap().clone();
    for ty in [ResourceType::Listener, ResourceType::Route] {
        assert!(std::sync::Arc::ptr_eq(
            &egress(&before, ty),
            &egress(&drained, ty)
        ));
    }
    let orders = inventory.clusters.get_mut("orders").unwrap();
    orders.endpoints.retain(|e| e.address != "10.0.0.1");
    let after = synthesizer.synthesize(&inventory);
    // The routes do not depend on addresses: kept.
    let routes = ResourceType::Route;
    assert!(std::sync::Arc::ptr_eq(
        &egress(&before, routes),
        &egress(&after, routes)
    ));
    let addresses = |s: &Synthesis| chains(&listener(&s.snapshots["app"], EGRESS)).join("\n");
    assert!(addresses(&before).contains("10.0.0.1"));
    assert!(
        !addresses(&after).contains("10.0.0.1"),
        "{}",
        addresses(&after)
    );
}

fn refused(extra: &str) -> String {
    let text = format!("[interception]\nenabled = true\n{extra}");
    let files = [(std::path::Path::new("t/app.toml"), text.as_str())];
    Templates::parse(files).unwrap_err().to_string()
}

#[test]
fn a_wrong_interception_section_is_refused_with_its_field() {
    let loop_ = refused("app_ports = [15001]\n");
    assert!(
        loop_.contains("interception.app_ports[0]") && loop_.contains("loop"),
        "{loop_}"
    );
    let same = refused("egress_port = 15000\n");
    assert!(same.contains("interception.egress_port"), "{same}");
    let taken = refused(&super::tests::template(""));
    assert!(
        taken.contains("listeners[0].address") && taken.contains("egress_port (15001)"),
        "{taken}"
    );
    let outbound = refused("outbound = \"drop_all\"\n");
    assert!(
        outbound.contains("interception") && outbound.contains("registry_only"),
        "{outbound}"
    );
}

/// The network RBAC filter of a chain, if any: its principals' exact names.
fn network_principals(chain: &FilterChain) -> Option<Vec<String>> {
    let rbac = chain
        .filters
        .iter()
        .find(|f| f.name == "envoy.filters.network.rbac")?;
    let Some(filter::ConfigType::TypedConfig(any)) = &rbac.config_type else {
        panic!("a typed config");
    };
    let rbac = NetworkRbac::decode(any.value.as_slice()).unwrap();
    let policies = rbac.rules.unwrap().policies.into_values();
    let names = policies
        .flat_map(|p| p.principals)
        .map(|p| format!("{:?}", p.identifier));
    Some(names.collect())
}

#[test]
fn with_mtls_the_redirected_ingress_takes_tls_from_allowed_callers_only() {
    use super::security_tests::{allowing, ecs, id, TD};
    let text = format!(
        "[interception]\nenabled = true\napp_ports = [9080]\n[mtls]\nmode = \"strict\"\ntrust_domain = \"{TD}\"\n"
    );
    let templates = templates(&[("app", &text)]);
    let mesh = inventory([allowing("orders", &["web"]), ecs("web")]);
    let synthesis = synthesize(&mesh, &templates);
    let (orders, _) = synthesis.snapshot_of_service("app", "orders").unwrap();
    orders.check_consistency().unwrap();
    let ingress = listener(orders, INGRESS);
    // One TCP chain per app port, in TLS, with web's SPIFFE ID as its only principal.
    assert_eq!(
        chains(&ingress),
        [r#"tcp:9080 9080 [] [] -> interception-app-9080"#]
    );
    let chain = &ingress.filter_chains[0];
    assert!(chain.transport_socket.is_some(), "TLS required");
    let principals = network_principals(chain).expect("network RBAC");
    assert_eq!(principals.len(), 1);
    assert!(principals[0].contains(&id("web")), "{principals:?}");
    // No HTTP inspector: it cannot see into TLS.
    let filters: Vec<&str> = ingress
        .listener_filters
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    assert_eq!(filters, ["envoy.filters.listener.original_dst"]);
    // Callers reach orders over TLS that checks orders' own ID.
    let (web, _) = synthesis.snapshot_of_service("app", "web").unwrap();
    let cluster = super::tests::cluster_of(web, "orders");
    assert!(cluster.transport_socket.is_some());
}
