//! (Inventory, Templates) → one snapshot per node type, re-encoding only what changed.
//!
//! - `node.rs`: one node type's snapshot, in named steps;
//! - `grpc.rs`: what a gRPC node type serves its proxyless clients besides;
//! - `places.rs`: a node type's snapshot per region and, zone-aware, per zone;
//! - `backend_sets.rs`: a snapshot per set of declared backends;
//! - `memo.rs`: the encodings kept, with their inputs, from one synthesis to the next.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;

use super::endpoints::Tiers;
use super::grpc_server;
use super::pushed::Pushed;
use super::pushed::PushedResources;
use super::security::{IngressPolicy, IngressShape, PreparedIngress};
use super::templates::{Mtls, NodeTemplate, Templates};
use crate::inventory::{self, ClusterOverrides, Inventory, RoutePolicy};
use crate::snapshot::{EncodedResource, InconsistentSnapshot, ResourceType, Snapshot};
use backend_sets::{by_service, Declarations};
pub use backend_sets::{BackendSet, BackendSets};
pub use ingress::set_key_parts;
use memo::Memo;

/// What one synthesis produced.
#[derive(Debug, Default)]
pub struct Synthesis {
    /// One snapshot per node type, each consistent: what an Envoy that states no zone or
    /// region (or one with no snapshot of its own in `places`) is served.
    pub snapshots: BTreeMap<String, Snapshot>,
    /// By node type, then by place (a zone or a region name), the snapshot an Envoy there is
    /// served (see `places.rs`). It shares every resource with the plain snapshot except the
    /// endpoints of the clusters whose priorities differ in that place.
    pub places: BTreeMap<String, BTreeMap<String, Snapshot>>,
    /// For node types some of whose services declare their backends: the snapshot of each
    /// backend set, and which services are on which (see `backend_sets.rs`).
    pub backend_sets: BTreeMap<String, BackendSets>,
    /// Warnings a human should look at (routes to clusters that are not discovered, ...),
    /// in node type order.
    pub warnings: Vec<Warning>,
    /// Resources encoded by this synthesis.
    pub encoded: usize,
    /// Resources reused, unchanged, from an earlier synthesis or another node type.
    pub reused: usize,
    /// References synthesis could resolve only by serving something empty, by node type: a
    /// pushed EDS cluster whose endpoints are neither pushed nor discovered gets an empty
    /// ClusterLoadAssignment. The push API refuses a push that causes one; one that appears
    /// later (its ECS service was deleted) is served, with a warning.
    pub dangling: Vec<(String, InconsistentSnapshot)>,
}

/// A warning about one node type's template against the current inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub node_type: String,
    /// The template file, or for pushed resources `<node_type>.json` (their state file).
    pub file: PathBuf,
    pub message: String,
}

impl fmt::Display for Warning {
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
    /// The distinct (`cluster_defaults`, gRPC node type?, `[mtls]`): node types with equal
    /// ones share cluster encodings.
    defaults: Vec<ClusterClass>,
    defaults_of: BTreeMap<String, usize>,
    /// Each template's own listeners, routes and clusters, encoded once.
    statics: BTreeMap<String, Vec<(ResourceType, Arc<EncodedResource>)>>,
    /// By (defaults, cluster name), from the cluster's overrides, whether it splits by
    /// revision and the callee's SPIFFE ID when it is reached over mutual TLS.
    clusters: Memo<(usize, String), ClusterInputs>,
    /// By (cluster name, the tiers its priorities were set for), from its endpoints and
    /// whether it splits by revision (the same for every node type).
    endpoints: Memo<(String, Tiers), (Vec<inventory::Endpoint>, bool)>,
    /// By (node type, backend set; `None` for the whole scope), from its clusters: name,
    /// route policy, running revisions; and the declared backends it answers 503 for.
    generated: Memo<(String, Option<String>), GeneratedInputs>,
    /// gRPC node types' listener and route configuration of each cluster, by (node type,
    /// cluster name).
    grpc_listeners: Memo<(String, String), ()>,
    grpc_routes: Memo<(String, String), RouteInputs>,
    /// By (node type, backend set), the egress listener for redirected traffic
    /// (`[interception]`), from its services' names, protocols and addresses.
    intercepted_listeners: Memo<(String, Option<String>), intercepted::ListenerInputs>,
    /// By (node type, backend set), its route configuration, from its services' route inputs
    /// and sources, with the domains two services claimed.
    intercepted_routes:
        Memo<(String, Option<String>), intercepted::RoutesInputs, intercepted::Routes>,
    /// Services' own ingress listeners, by (ingress class, the policy's hash, which of the
    /// class's listeners), with the policy: node types with the same ingress listener and
    /// `[mtls]` share them.
    ingresses: Memo<(u64, u64, usize), IngressPolicy>,
    /// By ingress class and policy shape, the template's ingress listener secured but for the
    /// RBAC rules' callers.
    prepared_ingresses: Memo<(u64, IngressShape), (), Arc<PreparedIngress>>,
    /// By policy class (trust domain, mode, default), the services' ingress policies and what
    /// they were found from.
    kept_policies: BTreeMap<String, ingress::KeptPolicies>,
    /// By (policy class, cluster name), the ingress policy of the last synthesis: what a tag
    /// that no longer parses keeps.
    last_policies: HashMap<(String, String), IngressPolicy>,
}

/// What a discovered cluster is made from besides its class: the service's overrides,
/// whether it splits by revision, and the SPIFFE ID its endpoints must present (mutual TLS).
type ClusterInputs = (ClusterOverrides, bool, Option<Vec<String>>);
/// What every cluster of some node types is made from: `cluster_defaults`, whether the node
/// type is a gRPC one, and its `[mtls]`.
type ClusterClass = (Cluster, bool, Option<Mtls>);

/// What a generated virtual host is made from, besides the node type's route defaults.
type RouteInputs = (String, RoutePolicy, Vec<u32>);
/// What a generated route configuration is made from: its virtual hosts' inputs, and the
/// declared backends nobody serves (a 503 host each).
type GeneratedInputs = (Vec<RouteInputs>, Vec<String>);

/// A discovered cluster encoded by this synthesis: its key and what it was made from.
type FreshCluster = ((usize, String), ClusterInputs);
/// A discovered assignment encoded by this synthesis: its key and what it was made from.
type FreshEndpoints = ((String, Tiers), (Vec<inventory::Endpoint>, bool));

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
    /// kept: they do not depend on templates; so are the services' last ingress policies.
    pub fn set_templates(&mut self, templates: Templates) -> Templates {
        let endpoints = std::mem::take(&mut self.encodings.endpoints);
        // What a tag that stops parsing keeps survives a reload too.
        let last_policies = std::mem::take(&mut self.encodings.last_policies);
        let mut encodings = Encodings {
            endpoints,
            last_policies,
            ..Default::default()
        };
        for (node_type, template) in templates.iter() {
            let defaults = &mut encodings.defaults;
            let wanted = (&template.cluster_defaults, template.grpc, &template.mtls);
            let class = match defaults.iter().position(|(d, g, m)| (d, *g, m) == wanted) {
                Some(i) => i,
                None => {
                    let mtls = template.mtls.clone();
                    defaults.push((template.cluster_defaults.clone(), template.grpc, mtls));
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
                Some(pushed) => pushed.route_warnings(node_type, &snapshot, &mut out),
                None => debug_assert_eq!(snapshot.check_consistency(), Ok(()), "{node_type}"),
            }
            let template = self.templates.get(node_type);
            let zone_aware = template.is_some_and(|t| t.zone_aware);
            let places =
                (self.encodings).place_snapshots(&snapshot, &discovered_eds, zone_aware, &mut out);
            out.places.insert(node_type.to_owned(), places);
            out.snapshots.insert(node_type.to_owned(), snapshot);
            // gRPC clients ask for each target by name: they get only what they dial anyway.
            let template = template.filter(|t| !t.grpc);
            if let Some(template) = template.filter(|_| !declarations.sets.is_empty()) {
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
            // A gRPC node type's servers are secured per service like an Envoy's ingress.
            if let Some(template) = self.templates.get(node_type) {
                let encodings = &mut self.encodings;
                encodings.service_ingresses(node_type, template, inventory, &mut out);
            }
        }
        self.encodings.clusters.end_round();
        self.encodings.endpoints.end_round();
        self.encodings.generated.end_round();
        self.encodings.grpc_listeners.end_round();
        self.encodings.grpc_routes.end_round();
        self.encodings.intercepted_listeners.end_round();
        self.encodings.intercepted_routes.end_round();
        self.encodings.ingresses.end_round();
        self.encodings.prepared_ingresses.end_round();
        out
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

fn warning(node_type: &str, template: &NodeTemplate, message: String) -> Warning {
    Warning {
        node_type: node_type.to_owned(),
        file: template.file.clone(),
        message,
    }
}

/// A template's own resources, encoded (they change only with the templates).
/// The ingress listener is secured by the node type's own policy (`ingress.rs`).
fn encode_statics(template: &NodeTemplate) -> Vec<(ResourceType, Arc<EncodedResource>)> {
    let mut builder = Snapshot::builder();
    for l in &template.listeners {
        builder = builder.listener(l.clone());
    }
    match &template.mtls {
        Some(mtls) => {
            let base = ingress::base_policy(template, mtls);
            for listener in ingress::encode_ingress(template, mtls, &base) {
                builder = builder.shared(ResourceType::Listener, listener);
            }
        }
        None => {
            for server in &template.grpc_servers {
                builder = builder.listener(grpc_server::server_listener(server, None));
            }
        }
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

mod backend_sets;
#[cfg(test)]
mod backend_tests;
#[cfg(test)]
mod failover_tests;
mod grpc;
#[cfg(test)]
mod grpc_server_tests;
#[cfg(test)]
mod grpc_tests;
mod ingress;
mod intercepted;
#[cfg(test)]
mod interception_tests;
mod memo;
mod node;
mod places;
#[cfg(test)]
mod policy_tests;
#[cfg(test)]
mod security_tests;
#[cfg(test)]
pub(crate) mod tests;
