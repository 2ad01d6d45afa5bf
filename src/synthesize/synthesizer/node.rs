//! One node type's snapshot (of its whole scope, or of one backend set's clusters), in named
//! steps: the discovered clusters and endpoints in scope, the generated routes, the gRPC
//! clients' resources, the template's own and pushed resources; then the encodings made
//! afresh are kept for the next synthesis.

use std::collections::HashSet;
use std::sync::Arc;

use super::backend_sets::{out_of_scope, Selection};
use super::intercepted::FreshIntercepted;
use super::{
    endpoint_inputs, resource_count, route_inputs, same_endpoints, warning, ClusterInputs,
    Encodings, FreshCluster, FreshEndpoints, GeneratedInputs, RouteInputs, Synthesis,
};
use crate::inventory::{self, Inventory, MtlsMode, Source};
use crate::snapshot::{ResourceType, Snapshot, SnapshotBuilder};
use crate::spiffe::SpiffeId;
use crate::synthesize::clusters::discovered_cluster;
use crate::synthesize::endpoints::discovered_load_assignment;
use crate::synthesize::grpc::client_cluster;
use crate::synthesize::pushed::Pushed;
use crate::synthesize::routes::generated_routes;
use crate::synthesize::security::{grpc_upstream_tls, upstream_tls};
use crate::synthesize::templates::Mtls;
use crate::synthesize::templates::NodeTemplate;

/// One node type's snapshot in the making: what it is made from, and what it encoded afresh.
pub(super) struct NodeBuild<'a, 'i> {
    pub node_type: &'a str,
    pub template: &'a NodeTemplate,
    pub pushed: Option<&'a Pushed>,
    pub selection: Option<&'a Selection<'i>>,
    /// The node type's `cluster_defaults` (an index into `Encodings::defaults`).
    pub class: usize,
    /// The template's own clusters: a discovered cluster of one of their names is not served.
    pub statics: HashSet<&'a str>,
    pub fresh: Fresh,
}

/// Resources a snapshot's builder encoded afresh, to keep once it is built.
#[derive(Default)]
pub(super) struct Fresh {
    pub clusters: Vec<FreshCluster>,
    pub endpoints: Vec<FreshEndpoints>,
    /// The generated route configuration: its key, name and inputs.
    pub generated: Option<((String, Option<String>), String, GeneratedInputs)>,
    pub grpc: Vec<FreshGrpc>,
    /// The egress listener and routes for redirected traffic, when encoded afresh.
    pub intercepted: FreshIntercepted,
}

impl Fresh {
    fn count(&self) -> usize {
        let intercepted = self.intercepted.count();
        self.clusters.len()
            + self.endpoints.len()
            + self.generated.iter().len()
            + self.grpc.len()
            + intercepted
    }
}

/// A gRPC listener or route configuration encoded by this synthesis, to keep.
pub(super) enum FreshGrpc {
    Listener((String, String)),
    Route((String, String), RouteInputs),
}

/// The clusters of a snapshot in scope (by name), and those served their discovered endpoints.
type InScope<'i> = (
    Vec<(&'i str, &'i inventory::Cluster)>,
    Vec<&'i inventory::Cluster>,
);

impl NodeBuild<'_, '_> {
    /// Whether a push replaces the resource `name` of `ty`.
    pub fn replaced(&self, ty: ResourceType, name: &str) -> bool {
        self.pushed.is_some_and(|p| p.replaces(ty, name))
    }
}

impl Encodings {
    /// The node type's snapshot (of one backend set's clusters, or of its whole scope), and
    /// the discovered clusters it serves their discovered endpoints for (what the priorities of
    /// a zone or region apply to).
    pub(super) fn node_snapshot<'i>(
        &mut self,
        node_type: &str,
        template: &NodeTemplate,
        pushed: Option<&Pushed>,
        inventory: &'i Inventory,
        selection: Option<&Selection<'i>>,
        out: &mut Synthesis,
    ) -> (Snapshot, Vec<&'i inventory::Cluster>) {
        let mut b = NodeBuild {
            node_type,
            template,
            pushed,
            selection,
            class: self.defaults_of[node_type],
            statics: template.clusters.iter().map(|c| c.name.as_str()).collect(),
            fresh: Fresh::default(),
        };
        let (builder, (in_scope, discovered_eds)) =
            self.discovered(Snapshot::builder(), &mut b, inventory, out);
        let mut builder = self.generated(builder, &mut b, &in_scope);
        let replaced = |ty| b.replaced(ty, crate::synthesize::interception::EGRESS);
        let egress_pushed = replaced(ResourceType::Listener) || replaced(ResourceType::Route);
        if let Some(spec) = template.interception.as_ref().filter(|_| !egress_pushed) {
            let site = (node_type, template, selection.map(|s| s.key));
            let fresh;
            (builder, fresh) = self.intercepted(builder, site, spec, &in_scope, out);
            b.fresh.intercepted = fresh;
        }
        if template.grpc {
            builder = self.grpc_clients(builder, &in_scope, &mut b, out);
        }
        let (builder, filled) = self.own_and_pushed(builder, &b, out);
        let snapshot = builder.build();
        self.keep(&snapshot, b.fresh, filled, out);
        match selection {
            None => {
                let mut served_statics = b.statics;
                served_statics.extend(pushed.into_iter().flat_map(|p| p.cluster_names()));
                route_warnings(node_type, template, inventory, &served_statics, out);
            }
            Some(selection) => out_of_scope(node_type, template, selection, out),
        }
        (snapshot, discovered_eds)
    }

    /// Every discovered cluster in scope, with its endpoints unless a push replaces them.
    fn discovered<'i>(
        &mut self,
        mut builder: SnapshotBuilder,
        b: &mut NodeBuild<'_, 'i>,
        inventory: &'i Inventory,
        out: &mut Synthesis,
    ) -> (SnapshotBuilder, InScope<'i>) {
        let (mut in_scope, mut discovered_eds) = (Vec::new(), Vec::new());
        let candidates: Vec<(&'i String, &'i inventory::Cluster)> = match b.selection {
            Some(selection) => selection.clusters.clone(),
            None => inventory.clusters.iter().collect(),
        };
        for (name, cluster) in candidates {
            if !b.template.scope.contains(name) {
                continue;
            }
            if b.statics.contains(name.as_str()) {
                // Reported once, by the whole scope's snapshot.
                if b.selection.is_none() {
                    out.warnings.push(warning(b.node_type, b.template, format!(
                        "template cluster {name:?} has the name of a discovered cluster; the template's is served"
                    )));
                }
                continue;
            }
            in_scope.push((name.as_str(), cluster));
            let cluster_replaced = b.replaced(ResourceType::Cluster, name);
            if !cluster_replaced {
                // gRPC has no subset load balancing: its split goes to per-revision clusters.
                let subsets = !cluster.route.weights.is_empty() && !b.template.grpc;
                let fresh = &mut b.fresh.clusters;
                builder = self.cluster(builder, b.class, name, cluster, subsets, fresh);
            }
            // A replaced cluster keeps its discovered endpoints only if the pushed one asks
            // EDS for them; pushed endpoints of the same name replace them.
            let eds_wanted = !cluster_replaced || b.pushed.is_some_and(|p| p.asks_eds(name));
            if !eds_wanted || b.replaced(ResourceType::Endpoint, name) {
                continue;
            }
            discovered_eds.push(cluster);
            let key = (name.clone(), Default::default());
            builder = match (self.endpoints).get(&key, |inputs| same_endpoints(inputs, cluster)) {
                Some(shared) => builder.shared(ResourceType::Endpoint, shared),
                None => {
                    let assignment = discovered_load_assignment(cluster, &key.1);
                    b.fresh.endpoints.push((key, endpoint_inputs(cluster)));
                    builder.endpoints(assignment)
                }
            };
        }
        (builder, (in_scope, discovered_eds))
    }

    /// The generated route configuration (`[generated_routes]`), unless a push replaces it.
    fn generated(
        &mut self,
        builder: SnapshotBuilder,
        b: &mut NodeBuild<'_, '_>,
        in_scope: &[(&str, &inventory::Cluster)],
    ) -> SnapshotBuilder {
        let generated = b.template.generated_routes.as_ref();
        let Some(spec) = generated.filter(|g| !b.replaced(ResourceType::Route, &g.name)) else {
            return builder;
        };
        let key = (
            b.node_type.to_owned(),
            b.selection.map(|s| s.key.to_owned()),
        );
        let missing = (b.selection).map_or_else(Vec::new, |s| s.missing(in_scope, &b.statics));
        let inputs: Vec<RouteInputs> = in_scope.iter().map(|(n, c)| route_inputs(n, c)).collect();
        let same = |kept: &GeneratedInputs| kept.0 == inputs && kept.1 == missing;
        if let Some(shared) = self.generated.get(&key, same) {
            return builder.shared(ResourceType::Route, shared);
        }
        let defaults = &b.template.route_defaults;
        let routes = generated_routes(spec, defaults, in_scope, &missing);
        b.fresh.generated = Some((key, spec.name.clone(), (inputs, missing)));
        builder.route(routes)
    }

    /// The template's own resources and the pushed ones (unless pushed over); for an
    /// on-demand node type, which clusters are sent up front. With how many pushed resources
    /// were encoded afresh.
    fn own_and_pushed(
        &self,
        mut builder: SnapshotBuilder,
        b: &NodeBuild<'_, '_>,
        out: &mut Synthesis,
    ) -> (SnapshotBuilder, usize) {
        for (ty, resource) in &self.statics[b.node_type] {
            if !b.replaced(*ty, resource.name()) {
                builder = builder.shared(*ty, resource.clone());
            }
        }
        let mut filled = 0;
        if let Some(pushed) = b.pushed {
            (builder, filled) = pushed.add_to(b.node_type, builder, out);
        }
        if b.template.on_demand && b.selection.is_none() {
            // Up front: the template's own clusters, pushed ones, and those its routes name.
            // Every other one is asked for by name, when a request first needs it.
            let own = (b.statics.iter().copied())
                .chain(b.pushed.into_iter().flat_map(|p| p.cluster_names()))
                .chain(b.template.route_clusters.iter().map(|(c, _)| c.as_str()));
            builder = builder.wildcard_clusters(own.map(Arc::from));
        }
        (builder, filled)
    }

    /// Keeps what `snapshot`'s builder encoded afresh, and counts encoded and reused resources.
    fn keep(&mut self, snapshot: &Snapshot, fresh: Fresh, filled: usize, out: &mut Synthesis) {
        let encoded = |ty: ResourceType, name: &str| {
            let resource = snapshot.of(ty).get(name);
            (resource.expect("the builder holds what it was given")).clone()
        };
        let count = fresh.count() + filled;
        out.encoded += count;
        out.reused += resource_count(snapshot) - count;
        for (key, overrides) in fresh.clusters {
            let resource = encoded(ResourceType::Cluster, &key.1);
            self.clusters.insert(key, overrides, resource);
        }
        for (key, endpoints) in fresh.endpoints {
            let resource = encoded(ResourceType::Endpoint, &key.0);
            self.endpoints.insert(key, endpoints, resource);
        }
        if let Some((key, route_name, names)) = fresh.generated {
            let resource = encoded(ResourceType::Route, &route_name);
            self.generated.insert(key, names, resource);
        }
        self.keep_intercepted(snapshot, fresh.intercepted);
        for fresh in fresh.grpc {
            match fresh {
                FreshGrpc::Listener(key) => {
                    let resource = encoded(ResourceType::Listener, &key.1);
                    self.grpc_listeners.insert(key, (), resource);
                }
                FreshGrpc::Route(key, inputs) => {
                    let resource = encoded(ResourceType::Route, &key.1);
                    self.grpc_routes.insert(key, inputs, resource);
                }
            }
        }
    }

    /// The discovered cluster `name`, from the node type's defaults (class) and the service's
    /// overrides, as gRPC takes it for a gRPC node type; over mutual TLS when the callee is
    /// (Envoy's SDS context, or gRPC's certificate provider one).
    pub(super) fn cluster(
        &mut self,
        builder: SnapshotBuilder,
        class: usize,
        name: &str,
        cluster: &inventory::Cluster,
        subsets: bool,
        fresh: &mut Vec<FreshCluster>,
    ) -> SnapshotBuilder {
        let key = (class, name.to_owned());
        let (defaults, grpc, mtls) = &self.defaults[class];
        let callee = mtls.as_ref().and_then(|m| callee_ids(m, cluster));
        let same =
            |(o, s, c): &ClusterInputs| *o == cluster.overrides && *s == subsets && *c == callee;
        if let Some(shared) = self.clusters.get(&key, same) {
            return builder.shared(ResourceType::Cluster, shared);
        }
        let mut envoy = discovered_cluster(name, defaults, &cluster.overrides, subsets);
        let secured = mtls.as_ref().zip(callee.as_deref());
        let resource = match grpc {
            // What gRPC takes of the Envoy cluster, and the TLS context as gRFC A29 has it.
            true => {
                let mut client = client_cluster(&envoy).0;
                client.transport_socket = secured.map(|(m, id)| grpc_upstream_tls(m, id));
                client
            }
            false => {
                if let Some((mtls, callee)) = secured {
                    envoy.transport_socket = Some(upstream_tls(mtls, callee));
                }
                envoy
            }
        };
        fresh.push((key, (cluster.overrides.clone(), subsets, callee)));
        builder.cluster(resource)
    }
}

/// The SPIFFE IDs a cluster's endpoints may present (one per account and region the service
/// was merged from), when the node type reaches it over mutual TLS: its `mtls` tag (or the
/// node type's mode) is not `off`, and it is an ECS service whose tasks' ARNs say where it
/// runs (a Cloud Map service has no certificate from the agent).
fn callee_ids(mtls: &Mtls, cluster: &inventory::Cluster) -> Option<Vec<String>> {
    if cluster.security.mtls.unwrap_or(mtls.mode) == MtlsMode::Off {
        return None;
    }
    let Source::Ecs { service, .. } = &cluster.source else {
        return None;
    };
    let id = |w: &inventory::Workload| {
        SpiffeId::new(
            &mtls.trust_domain,
            &w.account,
            &w.region,
            &w.ecs_cluster,
            service,
        )
        .ok()
        .map(|id| id.to_string())
    };
    let ids: Vec<String> = cluster.security.workloads().filter_map(id).collect();
    (!ids.is_empty()).then_some(ids)
}

/// A template route to a cluster the node type does not have is a warning, not an error: Envoy
/// answers 503 for it until the service is discovered.
fn route_warnings(
    node_type: &str,
    template: &NodeTemplate,
    inventory: &Inventory,
    statics: &HashSet<&str>,
    out: &mut Synthesis,
) {
    for (cluster, route) in &template.route_clusters {
        if statics.contains(cluster.as_str()) {
            continue;
        }
        let why = match inventory.clusters.contains_key(cluster) {
            false => "which is not discovered",
            true if !template.scope.contains(cluster) => {
                "which this node type's [scope] leaves out"
            }
            true => continue,
        };
        out.warnings.push(warning(
            node_type,
            template,
            format!("route configuration {route:?} sends to cluster {cluster:?}, {why}"),
        ));
    }
}
