//! `[authz] shadow_log_cluster`: chains whose rules are in shadow report what they would deny
//! to ecs-xds through a gRPC access log; nothing else changes.

use envoy_types::pb::envoy::config::accesslog::v3::{
    access_log, access_log_filter::FilterSpecifier, AccessLog,
};
use envoy_types::pb::envoy::config::core::v3::grpc_service::TargetSpecifier;
use envoy_types::pb::envoy::config::core::v3::ApiVersion;
use envoy_types::pb::envoy::extensions::access_loggers::grpc::v3::HttpGrpcAccessLogConfig;
use envoy_types::pb::envoy::r#type::matcher::v3::metadata_matcher::path_segment::Segment;
use envoy_types::pb::envoy::r#type::matcher::v3::value_matcher;

use super::*;
use crate::synthesize::security::SHADOW_DENIED_LOG;

const WITH_LOG: &str = "[authz]\nshadow_log_cluster = \"ecs_xds\"";

/// Each filter chain's access logs.
fn access_logs(listener: &Listener) -> Vec<Vec<AccessLog>> {
    let chain = |c: &envoy_types::pb::envoy::config::listener::v3::FilterChain| {
        let Some(filter::ConfigType::TypedConfig(any)) = &c.filters[0].config_type else {
            panic!("typed config");
        };
        HttpConnectionManager::decode(any.value.as_slice())
            .unwrap()
            .access_log
    };
    listener.filter_chains.iter().map(chain).collect()
}

/// What a shadow-denied log says: (log name, cluster, metadata key, value, if key not found).
fn described(log: &AccessLog) -> (String, String, String, String, Option<bool>) {
    assert_eq!(log.name, "envoy.access_loggers.http_grpc");
    let Some(access_log::ConfigType::TypedConfig(any)) = &log.config_type else {
        panic!("typed config");
    };
    let config = HttpGrpcAccessLogConfig::decode(any.value.as_slice()).unwrap();
    let common = config.common_config.unwrap();
    assert_eq!(common.transport_api_version, ApiVersion::V3 as i32);
    let Some(TargetSpecifier::EnvoyGrpc(grpc)) = common.grpc_service.unwrap().target_specifier
    else {
        panic!("envoy_grpc");
    };
    let filter = log.filter.clone().unwrap().filter_specifier;
    let Some(FilterSpecifier::MetadataFilter(metadata)) = filter else {
        panic!("metadata filter: {filter:?}");
    };
    let matcher = metadata.matcher.unwrap();
    assert_eq!(matcher.filter, "envoy.filters.http.rbac");
    let Some(Segment::Key(key)) = matcher.path[0].segment.clone() else {
        panic!("key");
    };
    let Some(value_matcher::MatchPattern::StringMatch(value)) =
        matcher.value.unwrap().match_pattern
    else {
        panic!("string match");
    };
    let Some(MatchPattern::Exact(value)) = value.match_pattern else {
        panic!("exact");
    };
    let if_absent = metadata.match_if_key_not_found.map(|b| b.value);
    (common.log_name, grpc.cluster_name, key, value, if_absent)
}

fn shadow(name: &str, callers: &[&str]) -> inventory::Cluster {
    let mut cluster = allowing(name, callers);
    cluster.security.authz = Some(AuthzMode::Shadow);
    cluster
}

#[test]
fn rules_in_shadow_report_would_be_denials_through_the_shadow_log_cluster() {
    let inventory = inventory([shadow("orders", &["web"]), ecs("web")]);
    let synthesis = synthesize(&inventory, &sidecar("strict", WITH_LOG));
    let (orders, _) = synthesis.snapshot_of_service("sidecar", "orders").unwrap();
    let logs = access_logs(&ingress(orders));
    assert_eq!(logs.len(), 1);
    let [log] = logs[0].as_slice() else {
        panic!("one access log: {logs:?}");
    };
    let want = (
        SHADOW_DENIED_LOG.to_owned(),
        "ecs_xds".to_owned(),
        "shadow_engine_result".to_owned(),
        "denied".to_owned(),
        Some(false),
    );
    assert_eq!(described(log), want);
}

#[test]
fn permissive_reports_the_plaintext_chains_would_be_denials_only() {
    let inventory = inventory([allowing("orders", &["web"]), ecs("web")]);
    let synthesis = synthesize(&inventory, &sidecar("permissive", WITH_LOG));
    let (orders, _) = synthesis.snapshot_of_service("sidecar", "orders").unwrap();
    let logs = access_logs(&ingress(orders));
    assert!(logs[0].is_empty(), "the TLS chain enforces: {:?}", logs[0]);
    let [plain] = logs[1].as_slice() else {
        panic!("one access log on the plaintext chain: {logs:?}");
    };
    let (_, _, key, _, _) = described(plain);
    assert_eq!(key, "plaintext_shadow_engine_result");
}

#[test]
fn without_the_key_or_shadow_rules_no_access_log_is_added_and_nothing_changes() {
    let inventory = inventory([
        shadow("orders", &["web"]),
        allowing("users", &["web"]),
        ecs("web"),
    ]);
    let without = synthesize(&inventory, &sidecar("strict", ""));
    let with = synthesize(&inventory, &sidecar("strict", WITH_LOG));
    let (orders, _) = without.snapshot_of_service("sidecar", "orders").unwrap();
    assert_eq!(access_logs(&ingress(orders)), [vec![]], "no key: no log");
    // Enforced rules, and no rules at all, are served as without the key, byte for byte.
    for service in ["users", "web"] {
        let listener = |s: &Synthesis| {
            let (snapshot, _) = s.snapshot_of_service("sidecar", service).unwrap();
            snapshot.version(ResourceType::Listener).clone()
        };
        assert_eq!(listener(&with), listener(&without), "{service}");
    }
    let (users, _) = with.snapshot_of_service("sidecar", "users").unwrap();
    assert_eq!(access_logs(&ingress(users)), [vec![]]);
}
