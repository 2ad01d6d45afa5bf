//! A gRPC node type's own resources: each cluster's listener and route configuration under
//! the name a client dials, one cluster and assignment per revision of a service that splits,
//! and a warning per field of its clusters gRPC does not take.

use super::node::{FreshGrpc, NodeBuild};
use super::{endpoint_inputs, route_inputs, same_endpoints, warning, Encodings, Synthesis};
use crate::inventory::{self, ClusterOverrides};
use crate::snapshot::{ResourceType, SnapshotBuilder};
use crate::synthesize::clusters::discovered_cluster;
use crate::synthesize::grpc::{
    client_cluster, client_listener, client_routes, revision_cluster, revision_load_assignment,
};
use crate::synthesize::routes::running_revisions;

impl Encodings {
    /// For a gRPC node type: each cluster's listener and route configuration under the name a
    /// client dials, one cluster and assignment per revision of a service that splits, and a
    /// warning per field of its clusters gRPC does not take.
    pub(super) fn grpc_clients(
        &mut self,
        mut builder: SnapshotBuilder,
        in_scope: &[(&str, &inventory::Cluster)],
        b: &mut NodeBuild<'_, '_>,
        out: &mut Synthesis,
    ) -> SnapshotBuilder {
        let node_type = b.node_type.to_owned();
        for (name, cluster) in in_scope {
            let key = (node_type.clone(), name.to_string());
            if !b.replaced(ResourceType::Listener, name) {
                builder = match self.grpc_listeners.get(&key, |()| true) {
                    Some(shared) => builder.shared(ResourceType::Listener, shared),
                    None => {
                        b.fresh.grpc.push(FreshGrpc::Listener(key.clone()));
                        builder.listener(client_listener(name))
                    }
                };
            }
            if !b.replaced(ResourceType::Route, name) {
                let inputs = route_inputs(name, cluster);
                builder = match self.grpc_routes.get(&key, |kept| *kept == inputs) {
                    Some(shared) => builder.shared(ResourceType::Route, shared),
                    None => {
                        b.fresh.grpc.push(FreshGrpc::Route(key, inputs));
                        builder.route(client_routes(name, &b.template.route_defaults, cluster))
                    }
                };
            }
            if cluster.route.weights.is_empty() {
                continue;
            }
            for revision in running_revisions(cluster) {
                let rev = revision_cluster(name, revision);
                builder = self.cluster(
                    builder,
                    b.class,
                    &rev,
                    cluster,
                    false,
                    &mut b.fresh.clusters,
                );
                let key = (rev, Default::default());
                builder = match self
                    .endpoints
                    .get(&key, |inputs| same_endpoints(inputs, cluster))
                {
                    Some(shared) => builder.shared(ResourceType::Endpoint, shared),
                    None => {
                        b.fresh.endpoints.push((key, endpoint_inputs(cluster)));
                        builder.endpoints(revision_load_assignment(cluster, revision))
                    }
                };
            }
        }
        // What the node type's defaults set that gRPC does not take, and each service's
        // own lb policy gRPC refuses.
        let (defaults, _, _) = &self.defaults[b.class];
        let sample = discovered_cluster("any", defaults, &ClusterOverrides::default(), false);
        for field in client_cluster(&sample).1 {
            let message = format!("[cluster_defaults] {field}: not taken by gRPC clients; dropped from this gRPC node type's clusters");
            out.warnings.push(warning(b.node_type, b.template, message));
        }
        for (name, cluster) in in_scope {
            let policy = cluster.overrides.lb_policy;
            if policy.is_some_and(|p| {
                !matches!(
                    p,
                    inventory::LbPolicy::RoundRobin | inventory::LbPolicy::RingHash
                )
            }) {
                let message = format!("cluster {name:?}: lb policy {policy:?} is not supported by gRPC clients; ROUND_ROBIN is served to this gRPC node type");
                out.warnings.push(warning(b.node_type, b.template, message));
            }
        }
        builder
    }
}
