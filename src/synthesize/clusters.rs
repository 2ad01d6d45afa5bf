//! Cluster (CDS) builders: the one place clusters are made.

use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::{cluster, Cluster};
use envoy_types::pb::envoy::config::core::v3::{Http1ProtocolOptions, Http2ProtocolOptions};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::{
    explicit_http_config::ProtocolConfig, ExplicitHttpConfig, UpstreamProtocolOptions,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
use envoy_types::pb::google::protobuf::Any;
use envoy_types::util::pack_any;
use prost::{Message, Name};

use super::ads_config_source;
use crate::discover::{ClusterOverrides, LbPolicy};

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
/// service's own `overrides` on top.
pub fn discovered_cluster(name: &str, defaults: &Cluster, overrides: &ClusterOverrides) -> Cluster {
    let mut cluster = defaults.clone();
    make_eds(&mut cluster, name);
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

fn make_eds(cluster: &mut Cluster, name: &str) {
    cluster.name = name.to_owned();
    cluster.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::Type(
        cluster::DiscoveryType::Eds as i32,
    ));
    cluster.eds_cluster_config = Some(cluster::EdsClusterConfig {
        eds_config: Some(ads_config_source()),
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
