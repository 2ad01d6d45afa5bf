//! Mutual TLS and authorization: TLS on the clusters, each service's ingress policy.

use envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType;
use envoy_types::pb::envoy::config::listener::v3::{filter, Listener};
use envoy_types::pb::envoy::config::rbac::v3::{principal, Rbac};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as HttpRbac;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_filter, HttpConnectionManager,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context::ValidationContextType, subject_alt_name_matcher::SanType,
    DownstreamTlsContext, UpstreamTlsContext,
};
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use prost::Message;

use super::tests::{inventory, service, template, templates};
use super::*;
use crate::inventory::{AllowFrom, AuthzMode, MtlsMode, RevisionWeight, Workload};

pub(super) mod shadow_log;

pub(super) const TD: &str = "mesh.test";

pub(super) fn id(service: &str) -> String {
    format!("spiffe://{TD}/ecs/111122223333/eu-west-1/demo/{service}")
}

fn sidecar(mode: &str, extra: &str) -> Templates {
    let ingress = r#"
[[listeners]]
name = "ingress"
address = { socket_address = { address = "0.0.0.0", port_value = 15000 } }
[[listeners.filter_chains]]
[[listeners.filter_chains.filters]]
name = "envoy.filters.network.http_connection_manager"
[listeners.filter_chains.filters.typed_config]
"@type" = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
stat_prefix = "ingress"
route_config = { name = "local", virtual_hosts = [{ name = "local", domains = ["*"], routes = [{ match = { prefix = "/" }, direct_response = { status = 200 } }] }] }
http_filters = [{ name = "envoy.filters.http.router", typed_config = { "@type" = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" } }]
"#;
    let mtls = format!("[mtls]\nmode = \"{mode}\"\ntrust_domain = \"{TD}\"\n{extra}\n{ingress}");
    templates(&[("sidecar", &template(&mtls))])
}

pub(super) fn ecs(name: &str) -> inventory::Cluster {
    let mut cluster = service(name, &["10.0.0.1"]);
    cluster.security.workload = Some(Workload {
        account: "111122223333".into(),
        region: "eu-west-1".into(),
        ecs_cluster: "demo".into(),
    });
    cluster
}

pub(super) fn allowing(name: &str, callers: &[&str]) -> inventory::Cluster {
    let mut cluster = ecs(name);
    let callers = callers.iter().map(|c| c.to_string()).collect();
    cluster.security.allow_from = Some(AllowFrom::Services(callers));
    cluster
}

fn upstream(snapshot: &Snapshot, cluster: &str) -> Option<UpstreamTlsContext> {
    let cluster = super::tests::cluster_of(snapshot, cluster);
    let socket = cluster.transport_socket?;
    let Some(ConfigType::TypedConfig(any)) = socket.config_type else {
        panic!("typed config");
    };
    Some(UpstreamTlsContext::decode(any.value.as_slice()).unwrap())
}

fn ingress(snapshot: &Snapshot) -> Listener {
    let listener = snapshot.of(ResourceType::Listener).get("ingress").unwrap();
    listener.decode().unwrap()
}

/// Each filter chain's transport protocol, whether it has TLS, and its HTTP RBAC filter.
pub(super) fn chains(listener: &Listener) -> Vec<(String, bool, Option<HttpRbac>)> {
    let chain = |c: &envoy_types::pb::envoy::config::listener::v3::FilterChain| {
        let protocol = c
            .filter_chain_match
            .as_ref()
            .map(|m| m.transport_protocol.clone());
        let Some(filter::ConfigType::TypedConfig(any)) = &c.filters[0].config_type else {
            panic!("typed config");
        };
        let hcm = HttpConnectionManager::decode(any.value.as_slice()).unwrap();
        let rbac = hcm
            .http_filters
            .iter()
            .find(|f| f.name == "envoy.filters.http.rbac");
        let rbac = rbac.map(|f| match &f.config_type {
            Some(http_filter::ConfigType::TypedConfig(any)) => {
                HttpRbac::decode(any.value.as_slice()).unwrap()
            }
            _ => panic!("typed config"),
        });
        (
            protocol.unwrap_or_default(),
            c.transport_socket.is_some(),
            rbac,
        )
    };
    listener.filter_chains.iter().map(chain).collect()
}

fn principals(rules: &Rbac) -> Vec<String> {
    let policies = rules.policies.values();
    let principals = policies.flat_map(|p| p.principals.iter());
    principals
        .map(|p| match &p.identifier {
            Some(principal::Identifier::Authenticated(a)) => {
                match &a.principal_name.as_ref().unwrap().match_pattern {
                    Some(MatchPattern::Exact(id)) => id.clone(),
                    other => panic!("{other:?}"),
                }
            }
            other => panic!("{other:?}"),
        })
        .collect()
}

#[test]
fn clusters_check_the_callees_own_spiffe_id() {
    let synthesis = synthesize(
        &inventory([ecs("orders"), ecs("web")]),
        &sidecar("strict", ""),
    );
    let tls = upstream(&synthesis.snapshots["sidecar"], "orders").expect("TLS to orders");
    let common = tls.common_tls_context.unwrap();
    assert_eq!(
        common.tls_certificate_sds_secret_configs[0].name,
        "workload"
    );
    let Some(ValidationContextType::CombinedValidationContext(combined)) =
        common.validation_context_type
    else {
        panic!("combined validation context");
    };
    let san = &combined
        .default_validation_context
        .unwrap()
        .match_typed_subject_alt_names[0];
    let matcher = san.matcher.as_ref().unwrap().match_pattern.clone();
    assert_eq!(matcher, Some(MatchPattern::Exact(id("orders"))));
    let bundle = combined.validation_context_sds_secret_config.unwrap();
    assert_eq!(bundle.name, "trust_bundle");
}

#[test]
fn a_callee_tagged_off_and_a_cloud_map_service_are_plaintext() {
    let mut off = ecs("legacy");
    off.security.mtls = Some(MtlsMode::Off);
    let cloud_map = service("external", &["10.0.5.1"]); // no workload: not an agent's task
    let synthesis = synthesize(
        &inventory([off, cloud_map, ecs("web")]),
        &sidecar("strict", ""),
    );
    let snapshot = &synthesis.snapshots["sidecar"];
    assert!(upstream(snapshot, "legacy").is_none());
    assert!(upstream(snapshot, "external").is_none());
    assert!(upstream(snapshot, "web").is_some());
}

#[test]
fn off_mode_clusters_are_plaintext_unless_the_callee_asks() {
    let mut strict = ecs("orders");
    strict.security.mtls = Some(MtlsMode::Strict);
    let synthesis = synthesize(&inventory([strict, ecs("web")]), &sidecar("off", ""));
    let snapshot = &synthesis.snapshots["sidecar"];
    assert!(upstream(snapshot, "orders").is_some());
    assert!(upstream(snapshot, "web").is_none());
}

/// A gRPC node type with `[mtls]` (`extra`: more of its keys).
fn grpc_clients(extra: &str) -> Templates {
    let text = format!(
        "[grpc]\nenabled = true\n[mtls]\nmode = \"strict\"\ntrust_domain = \"{TD}\"\n{extra}"
    );
    templates(&[("grpc", &text)])
}

#[test]
fn grpc_clients_clusters_name_the_bootstraps_certificate_provider_and_the_callees_id() {
    let mut split = ecs("web");
    split.endpoints[0].revision = Some(12);
    split.route.weights = vec![RevisionWeight {
        revision: 12,
        weight: 100,
    }];
    let mut off = ecs("legacy");
    off.security.mtls = Some(MtlsMode::Off);
    let mut cloud_map = ecs("external");
    cloud_map.source = crate::inventory::Source::CloudMap {
        namespace: "demo.local".into(),
        service: "external".into(),
    };
    let inventory = inventory([ecs("orders"), split, off, cloud_map]);
    for (extra, instance) in [
        ("", "ecs-xds"),
        ("certificate_provider = \"spire\"", "spire"),
    ] {
        let synthesis = synthesize(&inventory, &grpc_clients(extra));
        let snapshot = &synthesis.snapshots["grpc"];
        for (cluster, service) in [("orders", "orders"), ("web@12", "web")] {
            let socket = super::tests::cluster_of(snapshot, cluster).transport_socket;
            assert_eq!(socket.unwrap().name, "envoy.transport_sockets.tls");
            let tls = upstream(snapshot, cluster).expect("TLS to an ECS service");
            let common = tls.common_tls_context.unwrap();
            let provider = common.tls_certificate_provider_instance.unwrap();
            assert_eq!(provider.instance_name, instance, "{cluster}");
            // gRPC refuses (NACKs) SDS: nothing of Envoy's shape is left.
            assert!(common.tls_certificate_sds_secret_configs.is_empty());
            let Some(ValidationContextType::CombinedValidationContext(combined)) =
                common.validation_context_type
            else {
                panic!("combined validation context");
            };
            assert_eq!(combined.validation_context_sds_secret_config, None);
            let validation = combined.default_validation_context.unwrap();
            let roots = validation.ca_certificate_provider_instance.clone().unwrap();
            assert_eq!(roots.instance_name, instance);
            #[allow(deprecated)] // what gRPC reads
            let sans: Vec<_> = (validation.match_subject_alt_names.iter())
                .map(|m| m.match_pattern.clone())
                .collect();
            assert_eq!(sans, [Some(MatchPattern::Exact(id(service)))], "{cluster}");
            let typed = &validation.match_typed_subject_alt_names;
            assert_eq!(typed.len(), 1);
            assert_eq!(typed[0].san_type, SanType::Uri as i32);
            let matcher = typed[0].matcher.as_ref().unwrap().match_pattern.clone();
            assert_eq!(matcher, Some(MatchPattern::Exact(id(service))));
        }
        assert!(upstream(snapshot, "legacy").is_none(), "tagged off");
        assert!(upstream(snapshot, "external").is_none(), "Cloud Map");
        // No warning about a dropped transport socket: the gRPC one is synthesis's own.
        assert!(synthesis.warnings.is_empty(), "{:?}", synthesis.warnings);
    }
}

#[test]
fn strict_ingress_requires_a_client_certificate_of_the_trust_domain() {
    let synthesis = synthesize(&inventory([ecs("web")]), &sidecar("strict", ""));
    let listener = ingress(&synthesis.snapshots["sidecar"]);
    assert_eq!(chains(&listener), [(String::new(), true, None)]);
    let socket = listener.filter_chains[0].transport_socket.clone().unwrap();
    let Some(ConfigType::TypedConfig(any)) = socket.config_type else {
        panic!("typed config");
    };
    let tls = DownstreamTlsContext::decode(any.value.as_slice()).unwrap();
    assert_eq!(tls.require_client_certificate.map(|b| b.value), Some(true));
    let Some(ValidationContextType::CombinedValidationContext(combined)) =
        tls.common_tls_context.unwrap().validation_context_type
    else {
        panic!("combined validation context");
    };
    let san = &combined
        .default_validation_context
        .unwrap()
        .match_typed_subject_alt_names[0];
    let prefix = format!("spiffe://{TD}/ecs/");
    let matcher = san.matcher.as_ref().unwrap().match_pattern.clone();
    assert_eq!(matcher, Some(MatchPattern::Prefix(prefix)));
}

#[test]
fn permissive_ingress_has_a_tls_and_a_plaintext_chain() {
    let inventory = inventory([allowing("orders", &["web"]), ecs("web")]);
    let synthesis = synthesize(&inventory, &sidecar("permissive", ""));
    let (snapshot, _) = synthesis.snapshot_of_service("sidecar", "orders").unwrap();
    let listener = ingress(snapshot);
    let inspector = &listener.listener_filters[0].name;
    assert_eq!(inspector, "envoy.filters.listener.tls_inspector");
    let chains = chains(&listener);
    assert_eq!((chains[0].0.as_str(), chains[0].1), ("tls", true));
    assert_eq!((chains[1].0.as_str(), chains[1].1), ("raw_buffer", false));
    let (tls_rbac, plain_rbac) = (chains[0].2.clone().unwrap(), chains[1].2.clone().unwrap());
    assert!(tls_rbac.rules.is_some() && tls_rbac.shadow_rules.is_none());
    // Plaintext is served in permissive; what strict would deny is counted.
    assert!(plain_rbac.rules.is_none());
    assert_eq!(principals(&plain_rbac.shadow_rules.unwrap()), [id("web")]);
}

/// `name` merged from a second region (`ecs.merge`): its tasks there have their own ID.
fn merged(name: &str) -> inventory::Cluster {
    let mut cluster = ecs(name);
    cluster.security.merged.push(Workload {
        account: "111122223333".into(),
        region: "us-east-1".into(),
        ecs_cluster: "demo".into(),
    });
    cluster
}

#[test]
fn a_service_merged_from_two_regions_is_known_by_both_ids_as_callee_and_caller() {
    let inventory = inventory([merged("orders"), allowing("billing", &["orders"])]);
    let synthesis = synthesize(&inventory, &sidecar("strict", ""));
    let tls = upstream(&synthesis.snapshots["sidecar"], "orders").expect("TLS to orders");
    let Some(ValidationContextType::CombinedValidationContext(combined)) =
        tls.common_tls_context.unwrap().validation_context_type
    else {
        panic!("combined validation context");
    };
    let sans = combined
        .default_validation_context
        .unwrap()
        .match_typed_subject_alt_names;
    let sans: Vec<_> = sans
        .into_iter()
        .map(|s| s.matcher.unwrap().match_pattern)
        .collect();
    let east = id("orders").replace("eu-west-1", "us-east-1");
    assert_eq!(
        sans,
        [
            Some(MatchPattern::Exact(id("orders"))),
            Some(MatchPattern::Exact(east.clone()))
        ]
    );
    let (billing, _) = synthesis.snapshot_of_service("sidecar", "billing").unwrap();
    let rbac = chains(&ingress(billing))[0]
        .2
        .clone()
        .expect("RBAC on billing");
    assert_eq!(principals(&rbac.rules.unwrap()), [id("orders"), east]);
}

#[test]
fn allow_from_becomes_rbac_with_the_callers_spiffe_ids_on_that_service_only() {
    let inventory = inventory([allowing("orders", &["web", "api"]), ecs("web"), ecs("api")]);
    let synthesis = synthesize(&inventory, &sidecar("strict", ""));
    let (orders, key) = synthesis.snapshot_of_service("sidecar", "orders").unwrap();
    assert!(key.is_some_and(|k| k.contains("strict allow")), "{key:?}");
    let rbac = chains(&ingress(orders))[0]
        .2
        .clone()
        .expect("RBAC on orders");
    assert_eq!(principals(&rbac.rules.unwrap()), [id("api"), id("web")]);
    let (web, key) = synthesis.snapshot_of_service("sidecar", "web").unwrap();
    assert_eq!(key, None, "web has no tag: the node type's snapshot");
    assert_eq!(chains(&ingress(web))[0].2, None, "any workload: no RBAC");
    // Everything but the listener is shared with the node type's snapshot.
    let whole = &synthesis.snapshots["sidecar"];
    assert_eq!(
        orders.version(ResourceType::Cluster),
        whole.version(ResourceType::Cluster)
    );
    assert_ne!(
        orders.version(ResourceType::Listener),
        whole.version(ResourceType::Listener)
    );
    orders.check_consistency().unwrap();
}

/// The RBAC filter is written in front of the manager's encoding (not decoded and encoded
/// again): decoded, it is the first HTTP filter, the router follows, and the rest of the
/// manager is as the policy's shape made it (XFCC for the app, the template's route).
#[test]
fn the_rbac_filter_comes_first_and_the_rest_of_the_manager_is_kept() {
    let inventory = inventory([allowing("orders", &["web"]), ecs("web")]);
    let synthesis = synthesize(&inventory, &sidecar("strict", ""));
    let (orders, _) = synthesis.snapshot_of_service("sidecar", "orders").unwrap();
    let listener = ingress(orders);
    let Some(filter::ConfigType::TypedConfig(any)) =
        &listener.filter_chains[0].filters[0].config_type
    else {
        panic!("typed config");
    };
    let hcm = HttpConnectionManager::decode(any.value.as_slice()).unwrap();
    let names: Vec<_> = hcm.http_filters.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        ["envoy.filters.http.rbac", "envoy.filters.http.router"]
    );
    assert_eq!(hcm.stat_prefix, "ingress");
    assert!(hcm.route_specifier.is_some(), "the template's inline route");
    assert!(hcm.set_current_client_cert_details.is_some_and(|d| d.uri));
    // Encoded again by prost, it is the same manager.
    let again = HttpConnectionManager::decode(hcm.encode_to_vec().as_slice()).unwrap();
    assert_eq!(again, hcm);
}

#[test]
fn an_unknown_caller_is_named_in_the_callees_own_cluster() {
    let inventory = inventory([allowing("orders", &["worker"])]);
    let synthesis = synthesize(&inventory, &sidecar("strict", ""));
    let (orders, _) = synthesis.snapshot_of_service("sidecar", "orders").unwrap();
    let rbac = chains(&ingress(orders))[0].2.clone().unwrap();
    assert_eq!(principals(&rbac.rules.unwrap()), [id("worker")]);
}

#[test]
fn shadow_rules_are_evaluated_not_enforced() {
    let mut orders = allowing("orders", &["web"]);
    orders.security.authz = Some(AuthzMode::Shadow);
    let synthesis = synthesize(&inventory([orders, ecs("web")]), &sidecar("strict", ""));
    let (orders, _) = synthesis.snapshot_of_service("sidecar", "orders").unwrap();
    let rbac = chains(&ingress(orders))[0].2.clone().unwrap();
    assert!(rbac.rules.is_none());
    assert_eq!(principals(&rbac.shadow_rules.unwrap()), [id("web")]);
}

#[test]
fn deny_by_default_gives_untagged_services_an_empty_allow_list() {
    let templates = sidecar("strict", "[authz]\ndefault = \"deny\"");
    let synthesis = synthesize(&inventory([ecs("web")]), &templates);
    let rbac = chains(&ingress(&synthesis.snapshots["sidecar"]))[0]
        .2
        .clone();
    let rules = rbac.expect("RBAC").rules.expect("enforced");
    assert!(
        rules.policies.is_empty(),
        "an ALLOW with no policy denies all"
    );
}

#[test]
fn a_bad_tag_keeps_the_previous_policy_and_denies_when_there_was_none() {
    let mut synthesizer = Synthesizer::new(sidecar("strict", ""));
    let good = inventory([allowing("orders", &["web"]), ecs("web")]);
    synthesizer.synthesize(&good);
    let mut broken = allowing("orders", &[]);
    broken.security.allow_from = Some(AllowFrom::Invalid);
    broken.security.authz = Some(AuthzMode::Invalid);
    let synthesis = synthesizer.synthesize(&inventory([broken.clone(), ecs("web")]));
    let (orders, _) = synthesis.snapshot_of_service("sidecar", "orders").unwrap();
    let rbac = chains(&ingress(orders))[0].2.clone().unwrap();
    assert_eq!(
        principals(&rbac.rules.unwrap()),
        [id("web")],
        "kept, enforced"
    );
    // A fresh synthesizer has nothing to keep: nobody may call.
    let fresh = synthesize(&inventory([broken, ecs("web")]), &sidecar("strict", ""));
    let (orders, _) = fresh.snapshot_of_service("sidecar", "orders").unwrap();
    let rules = chains(&ingress(orders))[0]
        .2
        .clone()
        .unwrap()
        .rules
        .unwrap();
    assert!(rules.policies.is_empty());
}

#[test]
fn services_with_one_policy_share_one_snapshot_and_backend_sets_keep_theirs() {
    let mut web = allowing("web", &["edge"]);
    web.backends = Some(vec!["orders".into()]);
    let inventory = inventory([
        allowing("orders", &["web"]),
        allowing("users", &["web"]),
        web,
    ]);
    let synthesis = synthesize(&inventory, &sidecar("strict", ""));
    let key = |s| {
        synthesis
            .snapshot_of_service("sidecar", s)
            .unwrap()
            .1
            .unwrap()
    };
    assert_eq!(key("orders"), key("users"));
    assert!(key("web").starts_with("orders|ingress"), "{}", key("web"));
    let (web, _) = synthesis.snapshot_of_service("sidecar", "web").unwrap();
    let clusters = web.of(ResourceType::Cluster).resources();
    assert!(clusters.contains_key("orders") && !clusters.contains_key("users"));
}

#[test]
fn an_unchanged_policy_is_not_encoded_again() {
    let mut synthesizer = Synthesizer::new(sidecar("strict", ""));
    let inventory = inventory([allowing("orders", &["web"]), ecs("web")]);
    let first = synthesizer.synthesize(&inventory);
    let again = synthesizer.synthesize(&inventory);
    assert_eq!(again.encoded, 0, "first encoded {}", first.encoded);
    let version = |s: &Synthesis| {
        let (orders, _) = s.snapshot_of_service("sidecar", "orders").unwrap();
        orders.version(ResourceType::Listener).clone()
    };
    assert_eq!(version(&first), version(&again));
}

#[test]
fn a_declared_backend_that_does_not_allow_its_caller_is_a_warning() {
    let mut web = ecs("web");
    web.backends = Some(vec!["orders".into(), "users".into()]);
    let inventory = inventory([
        allowing("orders", &["api"]),
        allowing("users", &["web"]),
        web,
    ]);
    let synthesis = synthesize(&inventory, &sidecar("strict", ""));
    let warnings: Vec<String> = synthesis
        .warnings
        .iter()
        .map(|w| w.message.clone())
        .collect();
    assert_eq!(
        warnings,
        ["ECS service web declares backend \"orders\", whose allow-from does not name web: its calls would be denied (403)"]
    );
}
