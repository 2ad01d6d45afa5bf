//! (Inventory, Templates) → one snapshot per node type, re-encoding only what changed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::hash::Hash;
use std::path::PathBuf;
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;

use super::clusters::discovered_cluster;
use super::endpoints::{discovered_load_assignment, splits};
use super::grpc::{
    client_cluster, client_listener, client_routes, revision_cluster, revision_load_assignment,
};
use super::pushed::Pushed;
use super::pushed::PushedResources;
use super::routes::generated_routes;
use super::routes::running_revisions;
use super::templates::{NodeTemplate, Templates};
use crate::inventory::{self, ClusterOverrides, Inventory, RoutePolicy};
use crate::snapshot::{
    EncodedResource, InconsistentSnapshot, ResourceType, Snapshot, SnapshotBuilder,
};
use backend_sets::{by_service, out_of_scope, Declarations, Selection};
pub use backend_sets::{BackendSet, BackendSets};

/// What one synthesis produced.
#[derive(Debug, Default)]
pub struct Synthesis {
    /// One snapshot per node type, each consistent: what an Envoy that states no zone (or a
    /// zone with no endpoints of its own) is served.
    pub snapshots: BTreeMap<String, Snapshot>,
    /// For zone-aware node types: by node type, then by zone, the snapshot an Envoy in that
    /// zone is served. It shares every resource with the plain snapshot except the endpoints
    /// of the clusters that zone holds only part of.
    pub zones: BTreeMap<String, BTreeMap<String, Snapshot>>,
    /// For node types some of whose services declare their backends: the snapshot of each
    /// backend set, and which services are on which (see `backend_sets.rs`).
    pub backend_sets: BTreeMap<String, BackendSets>,
    /// Warnings a human should look at (routes to clusters that are not discovered, ...),
    /// in node type order.
    pub findings: Vec<Finding>,
    /// Resources encoded by this synthesis.
    pub encoded: usize,
    /// Resources reused, unchanged, from an earlier synthesis or another node type.
    pub reused: usize,
    /// References synthesis could resolve only by serving something empty, by node type: a
    /// pushed EDS cluster whose endpoints are neither pushed nor discovered gets an empty
    /// ClusterLoadAssignment. The push API refuses a push that causes one; one that appears
    /// later (its ECS service was deleted) is served, with a finding.
    pub dangling: Vec<(String, InconsistentSnapshot)>,
}

/// A warning about one node type's template against the current inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub node_type: String,
    /// The template file, or for pushed resources `<node_type>.json` (their state file).
    pub file: PathBuf,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.message)
    }
}

/// Synthesizes snapshots from inventories, keeping each encoded resource with the inputs it was
/// made from, so the next inventory re-encodes only the clusters whose inputs changed.
///
/// Pure: no I/O; the only state is the cache of encodings.
pub struct Synthesizer {
    templates: Templates,
    /// Pushed resources by node type (REST push), merged over templates and discovery.
    pushed: BTreeMap<String, Pushed>,
    encodings: Encodings,
}

/// Everything a [`Synthesizer`] keeps besides its templates.
#[derive(Default)]
struct Encodings {
    /// The distinct (`cluster_defaults`, gRPC node type?): node types with equal ones share
    /// cluster encodings.
    defaults: Vec<(Cluster, bool)>,
    defaults_of: BTreeMap<String, usize>,
    /// Each template's own listeners, routes and clusters, encoded once.
    statics: BTreeMap<String, Vec<(ResourceType, Arc<EncodedResource>)>>,
    /// By (defaults, cluster name), from the cluster's overrides and whether it splits by
    /// revision.
    clusters: Memo<(usize, String), (ClusterOverrides, bool)>,
    /// By (cluster name, zone for which priorities were set, "" for none), from its endpoints
    /// and whether it splits by revision (the same for every node type).
    endpoints: Memo<(String, String), (Vec<inventory::Endpoint>, bool)>,
    /// By (node type, backend set; `None` for the whole scope), from its clusters: name,
    /// route policy, running revisions; and the declared backends it answers 503 for.
    generated: Memo<(String, Option<String>), GeneratedInputs>,
    /// gRPC node types' listener and route configuration of each cluster, by (node type,
    /// cluster name).
    grpc_listeners: Memo<(String, String), ()>,
    grpc_routes: Memo<(String, String), RouteInputs>,
}

/// What a generated virtual host is made from, besides the node type's route defaults.
type RouteInputs = (String, RoutePolicy, Vec<u32>);
/// What a generated route configuration is made from: its virtual hosts' inputs, and the
/// declared backends nobody serves (a 503 host each).
type GeneratedInputs = (Vec<RouteInputs>, Vec<String>);

/// A discovered cluster encoded by this synthesis: its key and what it was made from.
type FreshCluster = ((usize, String), (ClusterOverrides, bool));
/// A discovered assignment encoded by this synthesis: its key and what it was made from.
type FreshEndpoints = ((String, String), (Vec<inventory::Endpoint>, bool));

/// One synthesis, without keeping anything: `Synthesizer::new(templates).synthesize(inventory)`.
pub fn synthesize(inventory: &Inventory, templates: &Templates) -> Synthesis {
    Synthesizer::new(templates.clone()).synthesize(inventory)
}

impl Synthesizer {
    /// A synthesizer for `templates`, with their own resources encoded and nothing else yet.
    pub fn new(templates: Templates) -> Self {
        let mut synthesizer = Synthesizer {
            templates: Templates::default(),
            pushed: BTreeMap::new(),
            encodings: Encodings::default(),
        };
        synthesizer.set_templates(templates);
        synthesizer
    }

    /// Replaces the templates (a reload), returning the previous ones. Endpoint encodings are
    /// kept: they do not depend on templates.
    pub fn set_templates(&mut self, templates: Templates) -> Templates {
        let endpoints = std::mem::take(&mut self.encodings.endpoints);
        let mut encodings = Encodings {
            endpoints,
            ..Default::default()
        };
        for (node_type, template) in templates.iter() {
            let defaults = &mut encodings.defaults;
            let wanted = (&template.cluster_defaults, template.grpc);
            let class = match defaults.iter().position(|(d, g)| (d, *g) == wanted) {
                Some(i) => i,
                None => {
                    defaults.push((template.cluster_defaults.clone(), template.grpc));
                    defaults.len() - 1
                }
            };
            encodings.defaults_of.insert(node_type.to_owned(), class);
            let statics = encode_statics(template);
            encodings.statics.insert(node_type.to_owned(), statics);
        }
        self.encodings = encodings;
        std::mem::replace(&mut self.templates, templates)
    }

    /// Sets a node type's pushed resources (`None` removes them), returning the previous ones.
    /// They are encoded once here. A node type with pushed resources is synthesized even
    /// without a template (see `pushed.rs` for the merge rule).
    pub fn set_pushed(
        &mut self,
        node_type: &str,
        resources: Option<Arc<PushedResources>>,
    ) -> Option<Arc<PushedResources>> {
        let previous = match resources {
            Some(r) => self.pushed.insert(node_type.to_owned(), Pushed::new(r)),
            None => self.pushed.remove(node_type),
        };
        previous.map(|p| p.resources)
    }

    /// A node type's pushed resources.
    pub fn pushed(&self, node_type: &str) -> Option<&Arc<PushedResources>> {
        self.pushed.get(node_type).map(|p| &p.resources)
    }

    /// One snapshot per node type (with a template or pushed resources) for `inventory`.
    ///
    /// Without pushed resources, each snapshot is consistent by construction: templates are
    /// checked for dangling references when loaded, and every discovered EDS cluster comes
    /// with its endpoints; debug builds check it. Pushed resources are checked by the push API
    /// before they are accepted; `Cache::publish` checks every snapshot again.
    pub fn synthesize(&mut self, inventory: &Inventory) -> Synthesis {
        let mut out = Synthesis::default();
        let declarations = Declarations::of(inventory);
        // Only needed, and only built, when some service declares its backends.
        let services = match declarations.sets.is_empty() {
            true => Default::default(),
            false => by_service(inventory),
        };
        let node_types: std::collections::BTreeSet<&str> = self
            .templates
            .node_types()
            .chain(self.pushed.keys().map(String::as_str))
            .collect();
        for node_type in node_types {
            let pushed = self.pushed.get(node_type);
            let (snapshot, discovered_eds) = match (self.templates.get(node_type), pushed) {
                (Some(template), _) => self
                    .encodings
                    .node_snapshot(node_type, template, pushed, inventory, None, &mut out),
                (None, Some(pushed)) => {
                    let (builder, fresh) = pushed.add_to(node_type, Snapshot::builder(), &mut out);
                    let snapshot = builder.build();
                    out.encoded += fresh;
                    out.reused += resource_count(&snapshot) - fresh;
                    (snapshot, Vec::new())
                }
                (None, None) => unreachable!("node types come from templates and pushes"),
            };
            match pushed {
                Some(pushed) => pushed.route_findings(node_type, &snapshot, &mut out),
                None => debug_assert_eq!(snapshot.check_consistency(), Ok(()), "{node_type}"),
            }
            let template = self.templates.get(node_type);
            if template.is_some_and(|t| t.zone_aware) {
                let zones = self
                    .encodings
                    .zone_snapshots(&snapshot, &discovered_eds, &mut out);
                out.zones.insert(node_type.to_owned(), zones);
            }
            out.snapshots.insert(node_type.to_owned(), snapshot);
            // gRPC clients ask for each target by name: they get only what they dial anyway.
            if let Some(template) = template.filter(|t| !t.grpc && !declarations.sets.is_empty()) {
                let sets = self.encodings.backend_sets(
                    node_type,
                    template,
                    pushed,
                    inventory,
                    (&declarations, &services),
                    &mut out,
                );
                out.backend_sets.insert(node_type.to_owned(), sets);
            }
        }
        self.encodings.clusters.end_round();
        self.encodings.endpoints.end_round();
        self.encodings.generated.end_round();
        self.encodings.grpc_listeners.end_round();
        self.encodings.grpc_routes.end_round();
        out
    }
}

impl Encodings {
    /// The node type's snapshot (of one backend set's clusters, or of its whole scope), and
    /// the discovered clusters it serves their discovered endpoints for (what zone-aware
    /// priorities apply to).
    fn node_snapshot<'i>(
        &mut self,
        node_type: &str,
        template: &NodeTemplate,
        pushed: Option<&Pushed>,
        inventory: &'i Inventory,
        selection: Option<&Selection<'i>>,
        out: &mut Synthesis,
    ) -> (Snapshot, Vec<&'i inventory::Cluster>) {
        let class = self.defaults_of[node_type];
        let statics: HashSet<&str> = template.clusters.iter().map(|c| c.name.as_str()).collect();
        let replaced = |ty: ResourceType, name: &str| pushed.is_some_and(|p| p.replaces(ty, name));
        let mut builder = Snapshot::builder();
        // Resources encoded by this builder, to keep once it is built.
        let mut fresh_clusters = Vec::new();
        let mut fresh_endpoints = Vec::new();
        let mut in_scope = Vec::new();
        let mut discovered_eds = Vec::new();
        let candidates: Vec<(&String, &inventory::Cluster)> = match selection {
            Some(selection) => selection.clusters.clone(),
            None => inventory.clusters.iter().collect(),
        };
        for (name, cluster) in candidates {
            if !template.scope.contains(name) {
                continue;
            }
            if statics.contains(name.as_str()) {
                // Reported once, by the whole scope's snapshot.
                if selection.is_none() {
                    out.findings.push(finding(node_type, template, format!(
                        "template cluster {name:?} has the name of a discovered cluster; the template's is served"
                    )));
                }
                continue;
            }
            in_scope.push((name.as_str(), cluster));
            let cluster_replaced = replaced(ResourceType::Cluster, name);
            if !cluster_replaced {
                // gRPC has no subset load balancing: its split goes to per-revision clusters.
                let subsets = !cluster.route.weights.is_empty() && !template.grpc;
                builder = self.cluster(builder, class, name, cluster, subsets, &mut fresh_clusters);
            }
            // A replaced cluster keeps its discovered endpoints only if the pushed one asks
            // EDS for them; pushed endpoints of the same name replace them.
            let eds_wanted = !cluster_replaced || pushed.is_some_and(|p| p.asks_eds(name));
            if !eds_wanted || replaced(ResourceType::Endpoint, name) {
                continue;
            }
            discovered_eds.push(cluster);
            let key = (name.clone(), String::new());
            builder = match self
                .endpoints
                .get(&key, |inputs| same_endpoints(inputs, cluster))
            {
                Some(shared) => builder.shared(ResourceType::Endpoint, shared),
                None => {
                    fresh_endpoints.push((key, endpoint_inputs(cluster)));
                    builder.endpoints(discovered_load_assignment(cluster, None))
                }
            };
        }
        let mut fresh_generated = None;
        let generated = template.generated_routes.as_ref();
        if let Some(spec) = generated.filter(|g| !replaced(ResourceType::Route, &g.name)) {
            let key = (node_type.to_owned(), selection.map(|s| s.key.to_owned()));
            let missing = selection.map_or_else(Vec::new, |s| s.missing(&in_scope, &statics));
            let inputs: Vec<RouteInputs> =
                in_scope.iter().map(|(n, c)| route_inputs(n, c)).collect();
            builder = match self
                .generated
                .get(&key, |kept| kept.0 == inputs && kept.1 == missing)
            {
                Some(shared) => builder.shared(ResourceType::Route, shared),
                None => {
                    let defaults = &template.route_defaults;
                    let routes = generated_routes(spec, defaults, &in_scope, &missing);
                    fresh_generated = Some((key, spec.name.clone(), (inputs, missing)));
                    builder.route(routes)
                }
            };
        }
        let mut fresh_grpc = Vec::new();
        if template.grpc {
            let mut grpc = GrpcBuild {
                node_type,
                template,
                class,
                fresh_clusters: &mut fresh_clusters,
                fresh_endpoints: &mut fresh_endpoints,
                fresh: &mut fresh_grpc,
                out,
            };
            builder = self.grpc_clients(builder, &in_scope, &replaced, &mut grpc);
        }
        for (ty, resource) in &self.statics[node_type] {
            if !replaced(*ty, resource.name()) {
                builder = builder.shared(*ty, resource.clone());
            }
        }
        let mut filled = 0;
        if let Some(pushed) = pushed {
            (builder, filled) = pushed.add_to(node_type, builder, out);
        }
        if template.on_demand && selection.is_none() {
            // Up front: the template's own clusters, pushed ones, and those its routes name.
            // Every other one is asked for by name, when a request first needs it.
            let own = (statics.iter().copied())
                .chain(pushed.into_iter().flat_map(|p| p.cluster_names()))
                .chain(template.route_clusters.iter().map(|(c, _)| c.as_str()));
            builder = builder.wildcard_clusters(own.map(Arc::from));
        }
        let snapshot = builder.build();

        let encoded = |ty: ResourceType, name: &str| {
            let resource = snapshot.of(ty).get(name);
            resource
                .expect("the builder holds what it was given")
                .clone()
        };
        let fresh = fresh_clusters.len()
            + fresh_endpoints.len()
            + fresh_generated.iter().len()
            + fresh_grpc.len()
            + filled;
        out.encoded += fresh;
        out.reused += resource_count(&snapshot) - fresh;
        for (key, overrides) in fresh_clusters {
            let resource = encoded(ResourceType::Cluster, &key.1);
            self.clusters.insert(key, overrides, resource);
        }
        for (key, endpoints) in fresh_endpoints {
            let resource = encoded(ResourceType::Endpoint, &key.0);
            self.endpoints.insert(key, endpoints, resource);
        }
        if let Some((key, route_name, names)) = fresh_generated {
            let resource = encoded(ResourceType::Route, &route_name);
            self.generated.insert(key, names, resource);
        }
        for fresh in fresh_grpc {
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
        match selection {
            None => {
                let mut served_statics = statics;
                served_statics.extend(pushed.into_iter().flat_map(|p| p.cluster_names()));
                route_findings(node_type, template, inventory, &served_statics, out);
            }
            Some(selection) => out_of_scope(node_type, template, selection, out),
        }
        (snapshot, discovered_eds)
    }
}

/// What [`Encodings::grpc_clients`] adds to, for one gRPC node type's snapshot.
struct GrpcBuild<'a, 'o> {
    node_type: &'a str,
    template: &'a NodeTemplate,
    class: usize,
    fresh_clusters: &'a mut Vec<FreshCluster>,
    fresh_endpoints: &'a mut Vec<FreshEndpoints>,
    fresh: &'a mut Vec<FreshGrpc>,
    out: &'o mut Synthesis,
}

/// A gRPC listener or route configuration encoded by this synthesis, to keep.
enum FreshGrpc {
    Listener((String, String)),
    Route((String, String), RouteInputs),
}

impl Encodings {
    /// The discovered cluster `name`, from the node type's defaults (class) and the service's
    /// overrides, as gRPC takes it for a gRPC node type.
    fn cluster(
        &mut self,
        builder: SnapshotBuilder,
        class: usize,
        name: &str,
        cluster: &inventory::Cluster,
        subsets: bool,
        fresh: &mut Vec<FreshCluster>,
    ) -> SnapshotBuilder {
        let key = (class, name.to_owned());
        let same = |(o, s): &(ClusterOverrides, bool)| *o == cluster.overrides && *s == subsets;
        if let Some(shared) = self.clusters.get(&key, same) {
            return builder.shared(ResourceType::Cluster, shared);
        }
        let (defaults, grpc) = &self.defaults[class];
        fresh.push((key, (cluster.overrides.clone(), subsets)));
        let envoy = discovered_cluster(name, defaults, &cluster.overrides, subsets);
        match grpc {
            true => builder.cluster(client_cluster(&envoy).0),
            false => builder.cluster(envoy),
        }
    }

    /// For a gRPC node type: each cluster's listener and route configuration under the name a
    /// client dials, one cluster and assignment per revision of a service that splits, and a
    /// finding per field of its clusters gRPC does not take.
    fn grpc_clients(
        &mut self,
        mut builder: SnapshotBuilder,
        in_scope: &[(&str, &inventory::Cluster)],
        replaced: &dyn Fn(ResourceType, &str) -> bool,
        b: &mut GrpcBuild<'_, '_>,
    ) -> SnapshotBuilder {
        let node_type = b.node_type.to_owned();
        for (name, cluster) in in_scope {
            let key = (node_type.clone(), name.to_string());
            if !replaced(ResourceType::Listener, name) {
                builder = match self.grpc_listeners.get(&key, |()| true) {
                    Some(shared) => builder.shared(ResourceType::Listener, shared),
                    None => {
                        b.fresh.push(FreshGrpc::Listener(key.clone()));
                        builder.listener(client_listener(name))
                    }
                };
            }
            if !replaced(ResourceType::Route, name) {
                let inputs = route_inputs(name, cluster);
                builder = match self.grpc_routes.get(&key, |kept| *kept == inputs) {
                    Some(shared) => builder.shared(ResourceType::Route, shared),
                    None => {
                        b.fresh.push(FreshGrpc::Route(key, inputs));
                        builder.route(client_routes(name, &b.template.route_defaults, cluster))
                    }
                };
            }
            if cluster.route.weights.is_empty() {
                continue;
            }
            for revision in running_revisions(cluster) {
                let rev = revision_cluster(name, revision);
                builder = self.cluster(builder, b.class, &rev, cluster, false, b.fresh_clusters);
                let key = (rev, String::new());
                builder = match self
                    .endpoints
                    .get(&key, |inputs| same_endpoints(inputs, cluster))
                {
                    Some(shared) => builder.shared(ResourceType::Endpoint, shared),
                    None => {
                        b.fresh_endpoints.push((key, endpoint_inputs(cluster)));
                        builder.endpoints(revision_load_assignment(cluster, revision))
                    }
                };
            }
        }
        // What the node type's defaults set that gRPC does not take, and each service's
        // own lb policy gRPC refuses.
        let (defaults, _) = &self.defaults[b.class];
        let sample = discovered_cluster("any", defaults, &ClusterOverrides::default(), false);
        for field in client_cluster(&sample).1 {
            let message = format!("[cluster_defaults] {field}: not taken by gRPC clients; dropped from this gRPC node type's clusters");
            b.out
                .findings
                .push(finding(b.node_type, b.template, message));
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
                b.out
                    .findings
                    .push(finding(b.node_type, b.template, message));
            }
        }
        builder
    }

    /// For a zone-aware node type, one snapshot per zone that holds part (not all) of the
    /// endpoints of some cluster of `discovered` (those served their discovered endpoints):
    /// `base` with those clusters' endpoints given priorities for that zone (same zone first).
    /// Everything else is `base`'s own encoding.
    fn zone_snapshots(
        &mut self,
        base: &Snapshot,
        discovered: &[&inventory::Cluster],
        out: &mut Synthesis,
    ) -> BTreeMap<String, Snapshot> {
        let aware: Vec<&inventory::Cluster> = discovered
            .iter()
            .filter(|c| c.overrides.zone_aware != Some(false))
            .copied()
            .collect();
        let zones: std::collections::BTreeSet<&str> = aware
            .iter()
            .flat_map(|c| {
                c.endpoints
                    .iter()
                    .filter_map(|e| e.locality.zone.as_deref())
            })
            .collect();
        let mut snapshots = BTreeMap::new();
        for zone in zones {
            let mut builder = Snapshot::builder();
            let mut fresh = Vec::new();
            let split: HashSet<&str> = aware
                .iter()
                .filter(|c| splits(c, zone))
                .map(|c| c.name.as_str())
                .collect();
            if split.is_empty() {
                // It would be the plain snapshot, which a zone without one of its own gets.
                continue;
            }
            if let Some(wildcard) = base.wildcard_clusters() {
                builder = builder.wildcard_clusters(wildcard.iter().cloned());
            }
            for ty in ResourceType::ALL {
                for (name, resource) in base.of(ty).resources() {
                    if ty != ResourceType::Endpoint || !split.contains(&**name) {
                        builder = builder.shared(ty, resource.clone());
                    }
                }
            }
            for cluster in aware.iter().filter(|c| split.contains(c.name.as_str())) {
                let key = (cluster.name.clone(), zone.to_owned());
                builder = match self
                    .endpoints
                    .get(&key, |inputs| same_endpoints(inputs, cluster))
                {
                    Some(shared) => builder.shared(ResourceType::Endpoint, shared),
                    None => {
                        fresh.push((key, endpoint_inputs(cluster)));
                        builder.endpoints(discovered_load_assignment(cluster, Some(zone)))
                    }
                };
            }
            let snapshot = builder.build();
            out.encoded += fresh.len();
            for (key, endpoints) in fresh {
                let resource = snapshot
                    .of(ResourceType::Endpoint)
                    .get(&key.0)
                    .expect("built")
                    .clone();
                self.endpoints.insert(key, endpoints, resource);
            }
            snapshots.insert(zone.to_owned(), snapshot);
        }
        snapshots
    }
}

/// What a cluster's endpoint assignment depends on.
fn endpoint_inputs(cluster: &inventory::Cluster) -> (Vec<inventory::Endpoint>, bool) {
    (cluster.endpoints.clone(), !cluster.route.weights.is_empty())
}

fn same_endpoints(kept: &(Vec<inventory::Endpoint>, bool), cluster: &inventory::Cluster) -> bool {
    kept.0 == cluster.endpoints && kept.1 != cluster.route.weights.is_empty()
}

/// What a cluster's generated virtual host depends on.
fn route_inputs(name: &str, cluster: &inventory::Cluster) -> RouteInputs {
    let revisions = match cluster.route.weights.is_empty() {
        true => Vec::new(),
        false => {
            let running: std::collections::BTreeSet<u32> = cluster
                .endpoints
                .iter()
                .filter_map(|e| e.revision)
                .collect();
            running.into_iter().collect()
        }
    };
    (name.to_owned(), cluster.route.clone(), revisions)
}

fn resource_count(snapshot: &Snapshot) -> usize {
    ResourceType::ALL
        .iter()
        .map(|&ty| snapshot.of(ty).resources().len())
        .sum()
}

/// A template route to a cluster the node type does not have is a warning, not an error: Envoy
/// answers 503 for it until the service is discovered.
fn route_findings(
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
        out.findings.push(finding(
            node_type,
            template,
            format!("route configuration {route:?} sends to cluster {cluster:?}, {why}"),
        ));
    }
}

fn finding(node_type: &str, template: &NodeTemplate, message: String) -> Finding {
    Finding {
        node_type: node_type.to_owned(),
        file: template.file.clone(),
        message,
    }
}

/// A template's own resources, encoded (they change only with the templates).
fn encode_statics(template: &NodeTemplate) -> Vec<(ResourceType, Arc<EncodedResource>)> {
    let mut builder = Snapshot::builder();
    for l in &template.listeners {
        builder = builder.listener(l.clone());
    }
    for r in &template.routes {
        builder = builder.route(r.clone());
    }
    for c in &template.clusters {
        builder = builder.cluster(c.clone());
    }
    let snapshot = builder.build();
    [
        ResourceType::Listener,
        ResourceType::Route,
        ResourceType::Cluster,
    ]
    .into_iter()
    .flat_map(|ty| {
        let resources = snapshot.of(ty).resources().values();
        resources.map(move |r| (ty, r.clone()))
    })
    .collect()
}

/// Encodings kept with the inputs they were made from, for one synthesis and the next. What
/// a synthesis does not use is dropped at its end, so removed services do not linger.
struct Memo<K, I> {
    previous: HashMap<K, (I, Arc<EncodedResource>)>,
    current: HashMap<K, (I, Arc<EncodedResource>)>,
}

impl<K, I> Default for Memo<K, I> {
    fn default() -> Self {
        Memo {
            previous: HashMap::new(),
            current: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq + Clone, I> Memo<K, I> {
    /// The encoding kept for `key`, if its inputs pass `same`.
    fn get(&mut self, key: &K, same: impl Fn(&I) -> bool) -> Option<Arc<EncodedResource>> {
        if let Some((inputs, resource)) = self.current.get(key) {
            return same(inputs).then(|| resource.clone());
        }
        let (inputs, resource) = self.previous.remove(key)?;
        if !same(&inputs) {
            return None;
        }
        self.current.insert(key.clone(), (inputs, resource.clone()));
        Some(resource)
    }

    fn insert(&mut self, key: K, inputs: I, resource: Arc<EncodedResource>) {
        self.current.insert(key, (inputs, resource));
    }

    fn end_round(&mut self) {
        self.previous = std::mem::take(&mut self.current);
    }
}

mod backend_sets;
#[cfg(test)]
mod backend_tests;
#[cfg(test)]
mod grpc_tests;
#[cfg(test)]
mod policy_tests;
#[cfg(test)]
pub(crate) mod tests;
