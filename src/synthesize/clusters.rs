//! Cluster (CDS) builders.

use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::{cluster, Cluster};

use super::ads_config_source;

/// An EDS cluster whose endpoints come over ADS under the cluster's own name.
pub fn eds_cluster(name: &str, connect_timeout: Duration) -> Cluster {
    Cluster {
        name: name.to_owned(),
        connect_timeout: Some(duration(connect_timeout)),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster::EdsClusterConfig {
            eds_config: Some(ads_config_source()),
            service_name: String::new(),
        }),
        ..Default::default()
    }
}

pub(crate) fn duration(d: Duration) -> envoy_types::pb::google::protobuf::Duration {
    envoy_types::pb::google::protobuf::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}
