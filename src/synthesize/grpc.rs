//! gRPC client node types (`[grpc] enabled = true`): what a proxyless gRPC client (grpc-go,
//! grpc-java, grpc C++ and the languages on it, grpc-js with `@grpc/grpc-js-xds`) needs to
//! call each discovered cluster by the name it dials.
//!
//! A client of `xds:///orders` asks for the listener `orders`, then its route configuration,
//! the cluster and its endpoints. So for every discovered cluster in scope there is a listener
//! named as the cluster (`orders`, and `orders.grpc` for a named port mapping) holding an
//! `api_listener` with an HttpConnectionManager on RDS, and a route configuration of the same
//! name whose one virtual host answers any authority (`*`: the client matches it against the
//! target, port included).
//!
//! gRPC implements a subset of Envoy's fields and refuses some values Envoy takes, so what the
//! Envoy-side synthesis makes is adjusted here, each change on purpose:
//! - the route's `timeout` becomes `max_stream_duration` (gRPC reads only that);
//! - retries keep the gRPC conditions of `retry_on` (`cancelled`, `deadline-exceeded`,
//!   `internal`, `resource-exhausted`, `unavailable`), `unavailable` when none is left;
//! - a weighted split by revision goes to one cluster per revision (`orders@12`), since gRPC
//!   has no subset load balancing;
//! - the cluster keeps what gRPC reads (EDS, ROUND_ROBIN or RING_HASH, the DEFAULT
//!   `max_requests` circuit breaker, outlier detection's success-rate and failure-percentage
//!   settings, metadata); every other field set is dropped and said so ([`client_cluster`]);
//! - with `[mtls]`, each cluster of an ECS service reached over TLS (its `mtls` tag, or the
//!   node type's mode, is not `off`; a Cloud Map service has no certificate and stays
//!   plaintext) gets a `transport_socket` in gRFC A29's shape instead of Envoy's SDS one: an
//!   `UpstreamTlsContext` whose `tls_certificate_provider_instance` and
//!   `combined_validation_context.default_validation_context.ca_certificate_provider_instance`
//!   name the `[mtls] certificate_provider` instance of the client's bootstrap, and whose
//!   `match_subject_alt_names` (and `match_typed_subject_alt_names`) accept exactly the
//!   callee's SPIFFE ID (`security::grpc_upstream_tls`). A client uses it only when its
//!   channel has xDS credentials (falling back to their fallback credentials on a cluster
//!   without it); its bootstrap's `certificate_providers` entry of that name is a
//!   `file_watcher` over the agent's `cert.pem`, `key.pem` and `bundle.pem`. The server side
//!   (xDS-enabled gRPC servers, `[grpc] server_addresses`) is in `grpc_server.rs`.

use envoy_types::pb::envoy::config::cluster::v3::{
    circuit_breakers, cluster, Cluster, OutlierDetection,
};
use envoy_types::pb::envoy::config::core::v3::RoutingPriority;
use envoy_types::pb::envoy::config::listener::v3::{ApiListener, Listener};
use envoy_types::pb::envoy::config::route::v3::{
    route_action::{ClusterSpecifier, MaxStreamDuration},
    weighted_cluster::ClusterWeight,
    RouteAction, RouteConfiguration, VirtualHost, WeightedCluster,
};
use envoy_types::pb::google::protobuf::UInt32Value;
use envoy_types::util::pack_any;
use prost::Message;
use prost_reflect::DynamicMessage;

use super::listeners::rds_connection_manager;
use super::routes::{live_weights, route, running_revisions, with_policy};
use crate::inventory::{self, RoutePolicy};

/// The retry conditions gRPC implements (gRFC A44); Envoy's HTTP ones mean nothing to it.
const GRPC_RETRY_ON: &[&str] = &[
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// The cluster (and EDS) name of one revision of a service that splits by revision.
pub fn revision_cluster(name: &str, revision: u32) -> String {
    format!("{name}@{revision}")
}

/// The listener a client dialing `xds:///{name}` asks for.
pub fn client_listener(name: &str) -> Listener {
    // gRPC refuses a connection manager without filters; the router must be last.
    let hcm = rds_connection_manager("", name);
    Listener {
        name: name.to_owned(),
        api_listener: Some(ApiListener {
            api_listener: Some(pack_any(hcm)),
        }),
        ..Default::default()
    }
}

/// The route configuration of `client_listener(name)`: the node type's route defaults and the
/// service's policy, as gRPC reads them.
pub fn client_routes(
    name: &str,
    defaults: &RouteAction,
    cluster: &inventory::Cluster,
) -> RouteConfiguration {
    let action = grpc_action(
        with_policy(defaults.clone(), &cluster.route),
        &cluster.route,
    );
    let mut routes = Vec::new();
    if !cluster.route.weights.is_empty() {
        for revision in running_revisions(cluster) {
            let mut pinned = action.clone();
            pinned.cluster_specifier =
                Some(ClusterSpecifier::Cluster(revision_cluster(name, revision)));
            routes.push(route(Some(revision), pinned));
        }
    }
    let mut main = action;
    main.cluster_specifier = Some(match live_weights(cluster).as_slice() {
        [] => ClusterSpecifier::Cluster(name.to_owned()),
        weights => ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: weights
                .iter()
                .map(|w| ClusterWeight {
                    name: revision_cluster(name, w.revision),
                    weight: Some(UInt32Value { value: w.weight }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
    });
    routes.push(route(None, main));
    RouteConfiguration {
        name: name.to_owned(),
        virtual_hosts: vec![VirtualHost {
            name: name.to_owned(),
            domains: vec!["*".to_owned()],
            routes,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// An Envoy route action as gRPC reads it: the timeout as `max_stream_duration`, retries on
/// gRPC conditions only.
fn grpc_action(mut action: RouteAction, policy: &RoutePolicy) -> RouteAction {
    if let Some(timeout) = action.timeout.take() {
        if policy.timeout.is_some() || action.max_stream_duration.is_none() {
            action.max_stream_duration = Some(MaxStreamDuration {
                max_stream_duration: Some(timeout),
                ..Default::default()
            });
        }
    }
    if let Some(retry) = action.retry_policy.as_mut() {
        let kept: Vec<&str> = retry
            .retry_on
            .split(',')
            .map(str::trim)
            .filter(|c| GRPC_RETRY_ON.contains(c))
            .collect();
        retry.retry_on = match kept.is_empty() {
            true => "unavailable".to_owned(),
            false => kept.join(","),
        };
        // gRPC reads neither; they would only look as if they applied.
        retry.per_try_timeout = None;
        retry.retry_host_predicate.clear();
    }
    action
}

/// The cluster as gRPC clients take it, and the fields dropped from it (by name, e.g.
/// `connect_timeout`, `lb_policy LEAST_REQUEST`): gRPC ignores most Envoy-only fields, but
/// refuses others (a LEAST_REQUEST policy, a transport socket it cannot use, such as Envoy's
/// SDS one: the synthesis sets gRPC's own on the result), and either way a setting that seems
/// to apply but does not is worth saying.
pub fn client_cluster(envoy: &Cluster) -> (Cluster, Vec<String>) {
    let mut dropped = Vec::new();
    let lb_policy = match cluster::LbPolicy::try_from(envoy.lb_policy) {
        Ok(cluster::LbPolicy::RoundRobin | cluster::LbPolicy::RingHash) => envoy.lb_policy,
        other => {
            let name = other.map_or_else(
                |_| envoy.lb_policy.to_string(),
                |p| p.as_str_name().to_owned(),
            );
            dropped.push(format!("lb_policy {name} (ROUND_ROBIN used)"));
            cluster::LbPolicy::RoundRobin as i32
        }
    };
    let kept = Cluster {
        name: envoy.name.clone(),
        cluster_discovery_type: envoy.cluster_discovery_type.clone(),
        eds_cluster_config: envoy.eds_cluster_config.clone(),
        lb_policy,
        lb_config: envoy
            .lb_config
            .clone()
            .filter(|_| lb_policy == cluster::LbPolicy::RingHash as i32),
        circuit_breakers: envoy.circuit_breakers.as_ref().and_then(max_requests),
        outlier_detection: envoy.outlier_detection.as_ref().map(grpc_outlier_detection),
        metadata: envoy.metadata.clone(),
        ..Default::default()
    };
    dropped.extend(
        set_fields(envoy)
            .into_iter()
            .filter(|f| !KEPT.contains(&f.as_str())),
    );
    if let Some(breakers) = &envoy.circuit_breakers {
        let other = breakers.thresholds.iter().any(|t| {
            t.priority != RoutingPriority::Default as i32
                || t.max_connections.is_some()
                || t.max_pending_requests.is_some()
                || t.max_retries.is_some()
        });
        if other {
            dropped.push("circuit_breakers other than DEFAULT max_requests".to_owned());
        }
    }
    if let Some(outlier) = &envoy.outlier_detection {
        if outlier.consecutive_5xx.is_some() || outlier.consecutive_gateway_failure.is_some() {
            dropped.push("outlier_detection.consecutive_* (gRPC ejects by success rate and failure percentage)".to_owned());
        }
    }
    (kept, dropped)
}

/// Top-level cluster fields kept (or adjusted) above.
const KEPT: &[&str] = &[
    "name",
    "type",
    "eds_cluster_config",
    "lb_policy",
    "ring_hash_lb_config",
    "circuit_breakers",
    "outlier_detection",
    "metadata",
];

/// The names of the fields set in `cluster`.
fn set_fields(cluster: &Cluster) -> Vec<String> {
    let desc = crate::descriptors::pool()
        .get_message_by_name("envoy.config.cluster.v3.Cluster")
        .expect("envoy-types messages are in the descriptor set");
    let Ok(message) = DynamicMessage::decode(desc, cluster.encode_to_vec().as_slice()) else {
        return Vec::new();
    };
    message
        .fields()
        .map(|(field, _)| field.name().to_owned())
        .collect()
}

/// The DEFAULT `max_requests` threshold alone, the only one gRPC reads.
fn max_requests(
    breakers: &envoy_types::pb::envoy::config::cluster::v3::CircuitBreakers,
) -> Option<envoy_types::pb::envoy::config::cluster::v3::CircuitBreakers> {
    let default = breakers
        .thresholds
        .iter()
        .find(|t| t.priority == RoutingPriority::Default as i32)?;
    let max_requests = default.max_requests?;
    Some(
        envoy_types::pb::envoy::config::cluster::v3::CircuitBreakers {
            thresholds: vec![circuit_breakers::Thresholds {
                max_requests: Some(max_requests),
                ..Default::default()
            }],
            ..Default::default()
        },
    )
}

/// Outlier detection as gRPC implements it (gRFC A50). Success-rate ejection is stated
/// explicitly (Envoy's default, 100, unless set): gRPC implementations disagree on its default.
fn grpc_outlier_detection(envoy: &OutlierDetection) -> OutlierDetection {
    OutlierDetection {
        interval: envoy.interval,
        base_ejection_time: envoy.base_ejection_time,
        max_ejection_time: envoy.max_ejection_time,
        max_ejection_percent: envoy.max_ejection_percent,
        enforcing_success_rate: envoy
            .enforcing_success_rate
            .or(Some(UInt32Value { value: 100 })),
        success_rate_minimum_hosts: envoy.success_rate_minimum_hosts,
        success_rate_request_volume: envoy.success_rate_request_volume,
        success_rate_stdev_factor: envoy.success_rate_stdev_factor,
        enforcing_failure_percentage: envoy.enforcing_failure_percentage,
        failure_percentage_minimum_hosts: envoy.failure_percentage_minimum_hosts,
        failure_percentage_request_volume: envoy.failure_percentage_request_volume,
        failure_percentage_threshold: envoy.failure_percentage_threshold,
        ..Default::default()
    }
}

/// One revision's endpoints of `cluster`, as its own cluster's assignment.
pub fn revision_load_assignment(
    cluster: &inventory::Cluster,
    revision: u32,
) -> envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment {
    let mut only = cluster.clone();
    only.name = revision_cluster(&cluster.name, revision);
    only.endpoints.retain(|e| e.revision == Some(revision));
    super::endpoints::discovered_load_assignment(&only, &Default::default())
}
