//! The generated route configuration (RDS): one virtual host per discovered cluster in scope,
//! each route the node type's `[route_defaults]` with the service's own policy on top
//! (timeouts, retries), and for a service with `weights`, a split across task-definition
//! revisions plus a header that pins a request to one revision.

use std::collections::BTreeSet;

use envoy_types::pb::envoy::config::core::v3::{data_source, DataSource, Metadata};
use envoy_types::pb::envoy::config::route::v3::{
    header_matcher::HeaderMatchSpecifier, route::Action, route_action::ClusterSpecifier,
    route_match::PathSpecifier, weighted_cluster::ClusterWeight, DirectResponseAction,
    HeaderMatcher, RetryPolicy, Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost,
    WeightedCluster,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher::MatchPattern, StringMatcher};
use envoy_types::pb::google::protobuf::{Struct, UInt32Value};

use super::clusters::duration;
use super::endpoints::{string_value, LB_METADATA};
use super::templates::GeneratedRoutes;
use crate::inventory::{self, RevisionWeight, RoutePolicy};

/// What a retry policy retries on when a service sets `retries` and neither it nor the
/// template says on what: failures that never reached the app or that the app reports as
/// server errors, as App Mesh's `server-error` plus `stream-error` did.
pub const DEFAULT_RETRY_ON: &str = "5xx,connect-failure,refused-stream,reset";

/// The request header that pins a request to one revision of a service with `weights`
/// (`x-ecs-xds-revision: 12`), for testing a canary before it takes traffic.
pub const REVISION_HEADER: &str = "x-ecs-xds-revision";

/// The generated route configuration for `clusters` (name, discovered cluster), in order, and
/// for each of `missing` (declared backends nobody serves) a virtual host answering 503.
pub fn generated_routes(
    spec: &GeneratedRoutes,
    defaults: &RouteAction,
    clusters: &[(&str, &inventory::Cluster)],
    missing: &[String],
) -> RouteConfiguration {
    let mut hosts: Vec<VirtualHost> = clusters
        .iter()
        .map(|(name, cluster)| virtual_host(domains(spec, name), defaults, name, cluster))
        .collect();
    // Envoy refuses a whole route configuration with a domain twice, and a declared name is
    // free text (`orders:80` would repeat a served host's domain): such a 503 host is dropped.
    let mut taken: std::collections::HashSet<String> =
        hosts.iter().flat_map(|h| h.domains.clone()).collect();
    for name in missing {
        let host = not_discovered(spec, name);
        if host.domains.iter().all(|d| !taken.contains(d)) {
            taken.extend(host.domains.iter().cloned());
            hosts.push(host);
        }
    }
    RouteConfiguration {
        name: spec.name.clone(),
        virtual_hosts: hosts,
        ..Default::default()
    }
}

fn domains(spec: &GeneratedRoutes, name: &str) -> Vec<String> {
    std::iter::once(name.to_owned())
        .chain(spec.ports.iter().map(|port| format!("{name}:{port}")))
        .collect()
}

/// A declared backend that is not discovered: an app calling it gets a 503 saying so (rather
/// than the 404 of a name nobody declared), and starts reaching it once it is discovered.
fn not_discovered(spec: &GeneratedRoutes, name: &str) -> VirtualHost {
    let body = format!("ecs-xds: backend {name:?} is declared but not discovered\n");
    VirtualHost {
        name: name.to_owned(),
        domains: domains(spec, name),
        routes: vec![Route {
            r#match: Some(RouteMatch {
                path_specifier: Some(PathSpecifier::Prefix("/".into())),
                ..Default::default()
            }),
            action: Some(Action::DirectResponse(DirectResponseAction {
                status: 503,
                body: Some(DataSource {
                    specifier: Some(data_source::Specifier::InlineString(body)),
                    ..Default::default()
                }),
                ..Default::default()
            })),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The virtual host of the service `name` on `domains`: its route policy over `defaults`, and
/// its weighted split with the routes pinning a revision.
pub fn virtual_host(
    domains: Vec<String>,
    defaults: &RouteAction,
    name: &str,
    cluster: &inventory::Cluster,
) -> VirtualHost {
    let action = with_policy(defaults.clone(), &cluster.route);
    let split = live_weights(cluster);
    let mut routes: Vec<Route> = Vec::new();
    if !cluster.route.weights.is_empty() {
        // One pinned route per running revision, before the split.
        for revision in running_revisions(cluster) {
            let mut pinned = action.clone();
            pinned.cluster_specifier = Some(ClusterSpecifier::Cluster(name.to_owned()));
            pinned.metadata_match = Some(revision_match(revision));
            routes.push(route(Some(revision), pinned));
        }
    }
    let mut main = action;
    main.cluster_specifier = Some(match split.as_slice() {
        [] => ClusterSpecifier::Cluster(name.to_owned()),
        weights => ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: weights
                .iter()
                .map(|w| ClusterWeight {
                    name: name.to_owned(),
                    weight: Some(UInt32Value { value: w.weight }),
                    metadata_match: Some(revision_match(w.revision)),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
    });
    routes.push(route(None, main));
    VirtualHost {
        name: name.to_owned(),
        domains,
        routes,
        ..Default::default()
    }
}

/// Every path, and with `revision` only requests carrying it in [`REVISION_HEADER`].
pub(super) fn route(revision: Option<u32>, action: RouteAction) -> Route {
    let headers = revision
        .map(|r| HeaderMatcher {
            name: REVISION_HEADER.to_owned(),
            header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(StringMatcher {
                match_pattern: Some(MatchPattern::Exact(r.to_string())),
                ..Default::default()
            })),
            ..Default::default()
        })
        .into_iter()
        .collect();
    Route {
        r#match: Some(RouteMatch {
            path_specifier: Some(PathSpecifier::Prefix("/".into())),
            headers,
            ..Default::default()
        }),
        action: Some(Action::Route(action)),
        ..Default::default()
    }
}

/// The route defaults with the service's timeouts and retries on top.
pub(super) fn with_policy(mut action: RouteAction, policy: &RoutePolicy) -> RouteAction {
    if let Some(d) = policy.timeout {
        action.timeout = Some(duration(d));
    }
    if let Some(d) = policy.idle_timeout {
        action.idle_timeout = Some(duration(d));
    }
    if policy.retries == Some(0) {
        action.retry_policy = None;
        return action;
    }
    let asks =
        policy.retries.is_some() || policy.retry_on.is_some() || policy.per_try_timeout.is_some();
    if !asks {
        return action;
    }
    let retry = action.retry_policy.get_or_insert_with(RetryPolicy::default);
    if let Some(n) = policy.retries {
        retry.num_retries = Some(UInt32Value { value: n });
    }
    if let Some(on) = &policy.retry_on {
        retry.retry_on = on.clone();
    } else if retry.retry_on.is_empty() {
        // Envoy retries nothing without a condition.
        retry.retry_on = DEFAULT_RETRY_ON.to_owned();
    }
    if let Some(d) = policy.per_try_timeout {
        retry.per_try_timeout = Some(duration(d));
    }
    action
}

/// Revisions of the cluster's running endpoints.
pub(super) fn running_revisions(cluster: &inventory::Cluster) -> BTreeSet<u32> {
    cluster
        .endpoints
        .iter()
        .filter_map(|e| e.revision)
        .collect()
}

/// The service's weights that can take traffic: revisions with running endpoints and a weight
/// above 0. A revision that is gone gives its share to the others; with none left the split is
/// dropped and every endpoint gets traffic, so weights never black-hole a request.
pub fn live_weights(cluster: &inventory::Cluster) -> Vec<RevisionWeight> {
    if cluster.route.weights.is_empty() {
        return Vec::new();
    }
    let running = running_revisions(cluster);
    cluster
        .route
        .weights
        .iter()
        .filter(|w| w.weight > 0 && running.contains(&w.revision))
        .copied()
        .collect()
}

/// `envoy.lb: {revision: "<revision>"}`.
fn revision_match(revision: u32) -> Metadata {
    let fields = [("revision".to_owned(), string_value(revision.to_string()))];
    Metadata {
        filter_metadata: [(
            LB_METADATA.to_owned(),
            Struct {
                fields: fields.into_iter().collect(),
            },
        )]
        .into_iter()
        .collect(),
        typed_filter_metadata: Default::default(),
    }
}
