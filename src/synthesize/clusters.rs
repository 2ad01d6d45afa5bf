//! Cluster (CDS) builders: the one place clusters are made.

use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::{circuit_breakers::Thresholds, cluster, Cluster};
use envoy_types::pb::envoy::config::core::v3::{
    Http1ProtocolOptions, Http2ProtocolOptions, RoutingPriority,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::{
    explicit_http_config::ProtocolConfig, ExplicitHttpConfig, UpstreamProtocolOptions,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
use envoy_types::pb::google::protobuf::{Any, UInt32Value};
use envoy_types::util::pack_any;
use prost::{Message, Name};

use super::ads_config_source;
use crate::inventory::{CircuitBreakers, ClusterOverrides, LbPolicy, OutlierDetection};

/// The `typed_extension_protocol_options` key of upstream HTTP options.
pub const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// An EDS cluster whose endpoints come over ADS under the cluster's own name.
pub fn eds_cluster(name: &str, connect_timeout: Duration) -> Cluster {
    let mut cluster = Cluster {
        connect_timeout: Some(duration(connect_timeout)),
        ..Default::default()
    };
    make_eds(&mut cluster, name);
    cluster
}

/// A discovered cluster: the node type's `defaults` made an EDS cluster named `name`, with the
/// service's own `overrides` on top. `revision_subsets`: the service splits traffic by
/// task-definition revision, so the cluster load-balances over subsets of its endpoints by
/// their `revision` (and `deployment`) metadata.
pub fn discovered_cluster(
    name: &str,
    defaults: &Cluster,
    overrides: &ClusterOverrides,
    revision_subsets: bool,
) -> Cluster {
    let mut cluster = defaults.clone();
    make_eds(&mut cluster, name);
    set_circuit_breakers(&mut cluster, &overrides.circuit_breakers);
    set_outlier_detection(&mut cluster, &overrides.outlier_detection);
    if revision_subsets {
        cluster.lb_subset_config = Some(revision_subset_config());
    }
    if let Some(policy) = overrides.lb_policy {
        cluster.lb_policy = lb_policy(policy) as i32;
        // `load_balancing_policy` would win over `lb_policy` in Envoy; the service asked.
        cluster.load_balancing_policy = None;
    }
    if let Some(timeout) = overrides.connect_timeout {
        cluster.connect_timeout = Some(duration(timeout));
    }
    if let Some(http2) = overrides.http2 {
        set_http2(&mut cluster, http2);
    }
    cluster
}

/// The service's circuit breaker thresholds, over the DEFAULT-priority ones of the defaults.
fn set_circuit_breakers(cluster: &mut Cluster, wanted: &CircuitBreakers) {
    if wanted.is_empty() {
        return;
    }
    let breakers = cluster
        .circuit_breakers
        .get_or_insert_with(Default::default);
    let default_priority = RoutingPriority::Default as i32;
    let thresholds = match breakers
        .thresholds
        .iter_mut()
        .position(|t| t.priority == default_priority)
    {
        Some(i) => &mut breakers.thresholds[i],
        None => {
            breakers.thresholds.push(Thresholds::default());
            breakers.thresholds.last_mut().expect("just pushed")
        }
    };
    let set = |field: &mut Option<UInt32Value>, value: Option<u32>| {
        if let Some(value) = value {
            *field = Some(UInt32Value { value });
        }
    };
    set(&mut thresholds.max_connections, wanted.max_connections);
    set(
        &mut thresholds.max_pending_requests,
        wanted.max_pending_requests,
    );
    set(&mut thresholds.max_requests, wanted.max_requests);
    set(&mut thresholds.max_retries, wanted.max_retries);
}

/// The service's outlier detection settings, over the defaults' (outlier detection is on once
/// either asks for it).
fn set_outlier_detection(cluster: &mut Cluster, wanted: &OutlierDetection) {
    if wanted.is_empty() {
        return;
    }
    let detection = cluster
        .outlier_detection
        .get_or_insert_with(Default::default);
    if let Some(n) = wanted.consecutive_5xx {
        detection.consecutive_5xx = Some(UInt32Value { value: n });
    }
    if let Some(d) = wanted.interval {
        detection.interval = Some(duration(d));
    }
    if let Some(d) = wanted.base_ejection_time {
        detection.base_ejection_time = Some(duration(d));
    }
    if let Some(p) = wanted.max_ejection_percent {
        detection.max_ejection_percent = Some(UInt32Value { value: p });
    }
}

/// Subsets by revision and by deployment; a request whose route selects no existing subset
/// (a revision whose tasks just stopped) goes to any endpoint rather than failing.
fn revision_subset_config() -> cluster::LbSubsetConfig {
    use cluster::lb_subset_config::{LbSubsetFallbackPolicy, LbSubsetSelector};
    let selector = |key: &str| LbSubsetSelector {
        keys: vec![key.to_owned()],
        ..Default::default()
    };
    cluster::LbSubsetConfig {
        fallback_policy: LbSubsetFallbackPolicy::AnyEndpoint as i32,
        subset_selectors: vec![selector("revision"), selector("deployment")],
        ..Default::default()
    }
}

/// Makes `cluster` the EDS cluster `name`, its endpoints from the config source the node type's
/// defaults name (its template's `[config_source]`), else over ADS.
fn make_eds(cluster: &mut Cluster, name: &str) {
    let eds_config = cluster
        .eds_cluster_config
        .take()
        .and_then(|eds| eds.eds_config);
    cluster.name = name.to_owned();
    cluster.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::Type(
        cluster::DiscoveryType::Eds as i32,
    ));
    cluster.eds_cluster_config = Some(cluster::EdsClusterConfig {
        eds_config: Some(eds_config.unwrap_or_else(ads_config_source)),
        service_name: String::new(),
    });
    cluster.load_assignment = None;
}

fn lb_policy(policy: LbPolicy) -> cluster::LbPolicy {
    match policy {
        LbPolicy::RoundRobin => cluster::LbPolicy::RoundRobin,
        LbPolicy::LeastRequest => cluster::LbPolicy::LeastRequest,
        LbPolicy::Random => cluster::LbPolicy::Random,
        LbPolicy::RingHash => cluster::LbPolicy::RingHash,
        LbPolicy::Maglev => cluster::LbPolicy::Maglev,
    }
}

/// Upstream HTTP/2 on or off, keeping whatever else the defaults' `HttpProtocolOptions` say
/// (common options, HTTP/2 settings).
fn set_http2(cluster: &mut Cluster, http2: bool) {
    let existing = cluster
        .typed_extension_protocol_options
        .get(HTTP_PROTOCOL_OPTIONS)
        .filter(|any| any.type_url == HttpProtocolOptions::type_url())
        .and_then(|any| HttpProtocolOptions::decode(any.value.as_slice()).ok());
    if existing.is_none() && !http2 {
        return; // HTTP/1.1 is Envoy's default.
    }
    let mut options = existing.unwrap_or_default();
    let (mut h1, mut h2) = (None, None);
    match options.upstream_protocol_options.take() {
        Some(UpstreamProtocolOptions::ExplicitHttpConfig(explicit)) => {
            match explicit.protocol_config {
                Some(ProtocolConfig::HttpProtocolOptions(o)) => h1 = Some(o),
                Some(ProtocolConfig::Http2ProtocolOptions(o)) => h2 = Some(o),
                _ => {}
            }
        }
        Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(c)) => {
            (h1, h2) = (c.http_protocol_options, c.http2_protocol_options);
        }
        Some(UpstreamProtocolOptions::AutoConfig(c)) => {
            (h1, h2) = (c.http_protocol_options, c.http2_protocol_options);
        }
        None => {}
    }
    let config = if http2 {
        ProtocolConfig::Http2ProtocolOptions(h2.unwrap_or_else(Http2ProtocolOptions::default))
    } else {
        ProtocolConfig::HttpProtocolOptions(h1.unwrap_or_else(Http1ProtocolOptions::default))
    };
    options.upstream_protocol_options = Some(UpstreamProtocolOptions::ExplicitHttpConfig(
        ExplicitHttpConfig {
            protocol_config: Some(config),
        },
    ));
    let any: Any = pack_any(options);
    cluster
        .typed_extension_protocol_options
        .insert(HTTP_PROTOCOL_OPTIONS.to_owned(), any);
}

pub(crate) fn duration(d: Duration) -> envoy_types::pb::google::protobuf::Duration {
    envoy_types::pb::google::protobuf::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}
