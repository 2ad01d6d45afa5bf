//! Templates: what each node type is served besides discovered clusters.
//!
//! One TOML file per node type (`config/templates/sidecar.toml` is node type `sidecar`), holding
//! Envoy v3 resources in Envoy's proto3 JSON mapping, so any option from Envoy's docs works as
//! written there (`"@type"` included):
//!
//! ```toml
//! [scope]                       # which discovered clusters this node type gets (globs)
//! include = ["*"]
//! exclude = ["internal-*"]
//!
//! [cluster_defaults]            # an Envoy Cluster fragment applied to every discovered cluster
//! connect_timeout = "0.5s"
//! lb_policy = "LEAST_REQUEST"
//!
//! [generated_routes]            # one virtual host per discovered cluster, domains name[:port]
//! name = "egress"
//! ports = [80]
//!
//! [[listeners]]                 # Envoy Listener resources; routes by RDS name
//! name = "egress"
//! # ...
//! [[routes]]                    # Envoy RouteConfiguration resources
//! [[clusters]]                  # static extra clusters (endpoints written inline)
//! [mtls]                        # mutual TLS and its ingress listener (`templates/security.rs`)
//! [authz]                       # who may call a service without `allow-from`
//! [interception]                # serve traffic ECS's proxyConfiguration redirects (`templates/interception.rs`)
//! [config_source]               # where discovered clusters' endpoints come from (default: ADS)
//! ```
//!
//! Loading checks everything against Envoy's descriptors and reports every problem at once, each
//! with its file, line and field path. Synthesis owns each discovered cluster's name, type and
//! endpoints, so `cluster_defaults` may not set them.

mod grpc;
mod interception;
mod on_demand;
mod security;
pub(crate) mod toml_json;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use envoy_types::pb::envoy::config::cluster::v3::{cluster::EdsClusterConfig, Cluster};
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::{
    route::Action, route_action::ClusterSpecifier, RouteAction, RouteConfiguration,
};
use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Deserialize;
use serde_json::Value;

use crate::envoy_json::{self, check_names, resources, FieldError, FieldPath};
use crate::problem::{Problem, Problems};
use crate::snapshot::{InconsistentSnapshot, Snapshot};
use crate::synthesize::interception::parts::INGRESS as INTERCEPTED_INGRESS;
use crate::synthesize::interception::statics;
pub use grpc::ServerListener;
pub use interception::Interception;
pub use security::Mtls;
use toml_json::Located;

/// The templates of every node type, by node type.
#[derive(Debug, Clone, Default)]
pub struct Templates {
    node_types: BTreeMap<String, NodeTemplate>,
}

/// What one node type is served, besides its discovered clusters.
#[derive(Debug, Clone)]
pub struct NodeTemplate {
    /// The file it was read from (for errors and warnings).
    pub file: PathBuf,
    pub listeners: Vec<Listener>,
    pub routes: Vec<RouteConfiguration>,
    /// Static extra clusters, served as written.
    pub clusters: Vec<Cluster>,
    /// Applied to every discovered cluster before its own overrides.
    pub cluster_defaults: Cluster,
    /// Applied to the route of every generated virtual host before the service's own policy
    /// (timeouts, retries).
    pub route_defaults: RouteAction,
    /// Envoys that state their zone get same-zone endpoints at priority 0 and the others at
    /// priority 1 (`[zone_aware] enabled = true`).
    pub zone_aware: bool,
    /// A node type of proxyless gRPC clients (`[grpc] enabled = true`): every discovered
    /// cluster in scope also gets the listener and route configuration a client dialing
    /// `xds:///<cluster>` asks for, and clusters as gRPC takes them (see `grpc.rs`).
    pub grpc: bool,
    /// The listeners its xDS-enabled gRPC servers ask for (`[grpc] server_addresses`), each
    /// secured by the service's policy when the node type has `[mtls]` (`grpc_server.rs`).
    pub grpc_servers: Vec<ServerListener>,
    /// Envoys get the template's own clusters up front and ask for each discovered one the
    /// first time a request needs it (`[on_demand] enabled = true`; see `on_demand.rs`).
    pub on_demand: bool,
    /// Mutual TLS with the services this node type calls and on its ingress (`[mtls]`); for a
    /// gRPC node type, with the services its clients call (gRFC A29), no ingress.
    pub mtls: Option<Mtls>,
    /// A service without `allow-from` accepts no caller (`[authz] default = "deny"`).
    pub deny_by_default: bool,
    /// The Envoy bootstrap's cluster to ecs-xds, through which rules in shadow report the
    /// requests they would deny (`[authz] shadow_log_cluster`); `None`: Envoy's stats only.
    pub shadow_log_cluster: Option<String>,
    /// The app's traffic is redirected into Envoy (`[interception]`): its listeners and
    /// clusters are generated (`synthesize::interception`).
    pub interception: Option<Interception>,
    pub scope: Scope,
    pub generated_routes: Option<GeneratedRoutes>,
    /// Clusters the template's routes send to: (cluster, route configuration).
    pub route_clusters: Vec<(String, String)>,
}

/// Which discovered clusters a node type receives: matching an `include` glob and no `exclude`
/// glob. By default, all of them.
#[derive(Debug, Clone)]
pub struct Scope {
    include: GlobSet,
    exclude: GlobSet,
}

impl Default for Scope {
    fn default() -> Self {
        Scope::new(&["*".to_owned()], &[]).expect("`*` is a valid glob")
    }
}

impl Scope {
    /// A scope from glob patterns (`*`, `?`, `[a-z]`, `{a,b}`).
    pub fn new(include: &[String], exclude: &[String]) -> Result<Scope, globset::Error> {
        Ok(Scope {
            include: glob_set(include)?,
            exclude: glob_set(exclude)?,
        })
    }

    /// True when the node type receives the discovered cluster `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.include.is_match(name) && !self.exclude.is_match(name)
    }
}

fn glob_set(patterns: &[String]) -> Result<GlobSet, globset::Error> {
    let mut set = GlobSetBuilder::new();
    for p in patterns {
        set.add(Glob::new(p)?);
    }
    set.build()
}

/// A route configuration with one virtual host per discovered cluster in scope, so an app calls
/// `http://orders/` through its egress listener with no route written by hand.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratedRoutes {
    /// The route configuration's name, which a template listener asks RDS for.
    pub name: String,
    /// Each virtual host's domains are the cluster name and `name:port` for each of these.
    #[serde(default)]
    pub ports: Vec<u16>,
}

impl Templates {
    /// Loads every `*.toml` file of `dir`; the file stem is the node type. A directory with no
    /// templates is an error: nothing would be served.
    pub fn load_dir(dir: &Path) -> Result<Templates, Problems> {
        Self::read_dir(dir, false)
    }

    /// Like [`Templates::load_dir`], but a directory with no templates gives no node types.
    /// For the REST push API, where node types can come from pushes alone, as in sxds.
    pub fn load_dir_allow_empty(dir: &Path) -> Result<Templates, Problems> {
        Self::read_dir(dir, true)
    }

    fn read_dir(dir: &Path, allow_empty: bool) -> Result<Templates, Problems> {
        let io_error = |file: &Path, e: std::io::Error| {
            Problems(vec![Problem {
                file: Some(file.to_owned()),
                line: None,
                path: String::new(),
                message: e.to_string(),
            }])
        };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| io_error(dir, e))? {
            let path = entry.map_err(|e| io_error(dir, e))?.path();
            if path.extension().is_some_and(|e| e == "toml") && path.is_file() {
                files.push(path);
            }
        }
        files.sort();
        if files.is_empty() && !allow_empty {
            return Err(io_error(
                dir,
                std::io::Error::other(
                    "no templates (*.toml files) here; with [push] enabled, node types can come from pushes alone",
                ),
            ));
        }
        let mut texts = Vec::new();
        let mut errors = Vec::new();
        for file in files {
            match std::fs::read_to_string(&file) {
                Ok(text) => texts.push((file, text)),
                Err(e) => errors.extend(io_error(&file, e).0),
            }
        }
        let parsed = Templates::parse(texts.iter().map(|(f, t)| (f.as_path(), t.as_str())));
        match parsed {
            Ok(templates) if errors.is_empty() => Ok(templates),
            Ok(_) => Err(Problems(errors)),
            Err(more) => {
                errors.extend(more.0);
                Err(Problems(errors))
            }
        }
    }

    /// Parses template files given as (path, text); the file stem is the node type.
    pub fn parse<'a>(
        files: impl IntoIterator<Item = (&'a Path, &'a str)>,
    ) -> Result<Templates, Problems> {
        let mut node_types = BTreeMap::new();
        let mut errors = Vec::new();
        for (file, text) in files {
            let node_type = file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            match NodeTemplate::parse(file, text) {
                Ok(template) => {
                    if let Some(earlier) = node_types.insert(node_type.clone(), template) {
                        errors.push(Problem {
                            file: Some(file.to_owned()),
                            line: None,
                            path: String::new(),
                            message: format!(
                                "node type {node_type:?} is also defined by {}",
                                earlier.file.display()
                            ),
                        });
                    }
                }
                Err(e) => errors.extend(e),
            }
        }
        if errors.is_empty() {
            Ok(Templates { node_types })
        } else {
            Err(Problems(errors))
        }
    }

    /// The node types, in name order.
    pub fn node_types(&self) -> impl Iterator<Item = &str> {
        self.node_types.keys().map(String::as_str)
    }

    /// One node type's template.
    pub fn get(&self, node_type: &str) -> Option<&NodeTemplate> {
        self.node_types.get(node_type)
    }

    /// Every (node type, template), in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &NodeTemplate)> {
        self.node_types.iter().map(|(k, v)| (k.as_str(), v))
    }
}

const SECTIONS: &[&str] = &[
    "listeners",
    "routes",
    "clusters",
    "cluster_defaults",
    "route_defaults",
    "zone_aware",
    "grpc",
    "on_demand",
    "mtls",
    "authz",
    "interception",
    "scope",
    "generated_routes",
    "config_source",
];

/// Route action fields synthesis sets on every generated route (proto and JSON names).
const OWNED_ROUTE_FIELDS: &[&str] = &[
    "cluster",
    "weighted_clusters",
    "weightedClusters",
    "cluster_header",
    "clusterHeader",
    "cluster_specifier_plugin",
    "clusterSpecifierPlugin",
    "inline_cluster_specifier_plugin",
    "inlineClusterSpecifierPlugin",
    "metadata_match",
    "metadataMatch",
];

/// Cluster fields synthesis sets on every discovered cluster (proto and JSON names).
const OWNED_CLUSTER_FIELDS: &[&str] = &[
    "name",
    "type",
    "cluster_type",
    "clusterType",
    "eds_cluster_config",
    "edsClusterConfig",
    "load_assignment",
    "loadAssignment",
];

/// `[zone_aware]` and `[on_demand]`: a switch.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ZoneAware {
    #[serde(default)]
    enabled: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScopeSpec {
    #[serde(default = "everything")]
    include: Vec<String>,
    #[serde(default)]
    exclude: Vec<String>,
}

fn everything() -> Vec<String> {
    vec!["*".to_owned()]
}

/// `[mtls]`, checked against the template's listeners; with redirected ingress and no ingress
/// listener named, the generated one is secured (redirected calls arrive there).
fn mtls_section(
    root: &serde_json::Map<String, Value>,
    listeners: &[Listener],
    grpc: bool,
    interception: Option<&Interception>,
    errors: &mut Vec<FieldError>,
) -> Option<Mtls> {
    let names: Vec<&str> = listeners.iter().map(|l| l.name.as_str()).collect();
    let spec = section::<security::MtlsSpec>(root, "mtls", errors);
    let mut mtls = spec.and_then(|spec| spec.check(&names, grpc, errors))?;
    let redirected = interception.is_some_and(|i| !i.app_ports.is_empty());
    if mtls.ingress_listener.is_none() && redirected {
        mtls.ingress_listener = Some(INTERCEPTED_INGRESS.to_owned());
    }
    Some(mtls)
}

/// `[interception]`, checked against the rest of the template, and the template's listeners
/// and clusters with the ones it generates up front (its ingress, the passthrough and the
/// app's clusters; secured ingress takes TCP only when `[mtls]` is there).
fn intercepted(
    root: &serde_json::Map<String, Value>,
    (listeners, routes, clusters): (Vec<Listener>, &[RouteConfiguration], Vec<Cluster>),
    generated_routes: &Option<GeneratedRoutes>,
    grpc: bool,
    errors: &mut Vec<FieldError>,
) -> (Option<Interception>, Vec<Listener>, Vec<Cluster>) {
    let context = interception::Context {
        listeners: &listeners,
        resource_names: (listeners.iter().map(|l| l.name.as_str()))
            .chain(routes.iter().map(|r| r.name.as_str()))
            .chain(clusters.iter().map(|c| c.name.as_str()))
            .chain(generated_routes.iter().map(|g| g.name.as_str()))
            .collect(),
        grpc,
    };
    let spec = section::<interception::InterceptionSpec>(root, "interception", errors);
    let interception = spec.and_then(|spec| spec.check(&context, errors));
    let (mut listeners, mut clusters) = (listeners, clusters);
    if let Some(spec) = &interception {
        let secured = root.contains_key("mtls");
        let ports = statics::Ports {
            ingress_port: spec.ingress_port,
            app_ports: &spec.app_ports,
            registry_only: spec.registry_only,
        };
        let (more_listeners, more_clusters) = statics::static_resources(&ports, secured);
        listeners.extend(more_listeners);
        clusters.extend(more_clusters);
    }
    (interception, listeners, clusters)
}

impl NodeTemplate {
    /// Parses one template file. Every problem is reported, each with its line and field path.
    pub fn parse(file: &Path, text: &str) -> Result<NodeTemplate, Vec<Problem>> {
        let located = Located::parse(text).map_err(|e| {
            vec![Problem {
                file: Some(file.to_owned()),
                line: e.line,
                path: String::new(),
                message: format!("invalid TOML: {}", e.message),
            }]
        })?;
        let to_problem = |e: FieldError| Problem {
            file: Some(file.to_owned()),
            line: located.line(&e.path),
            path: e.path.to_string(),
            message: e.message,
        };
        let root = located.json.as_object().cloned().unwrap_or_default();
        let mut errors = Vec::new();
        unknown_sections(&root, &mut errors);
        let listeners = resources::<Listener>(&root, "listeners", &mut errors);
        let routes = resources::<RouteConfiguration>(&root, "routes", &mut errors);
        let clusters = resources::<Cluster>(&root, "clusters", &mut errors);
        let mut cluster_defaults = fragment::<Cluster>(
            &root,
            "cluster_defaults",
            OWNED_CLUSTER_FIELDS,
            "set by synthesis on every discovered cluster (its name, EDS type and endpoints); remove it",
            &mut errors,
        );
        let route_defaults = fragment::<RouteAction>(
            &root,
            "route_defaults",
            OWNED_ROUTE_FIELDS,
            "set by synthesis on every generated route (the cluster, or the weighted split a service's `weights` asks for); remove it",
            &mut errors,
        );
        let zone_aware =
            section::<ZoneAware>(&root, "zone_aware", &mut errors).is_some_and(|z| z.enabled);
        let (grpc, grpc_servers) = section::<grpc::GrpcSpec>(&root, "grpc", &mut errors)
            .map(|spec| spec.check(&mut errors))
            .unwrap_or_default();
        let on_demand =
            section::<ZoneAware>(&root, "on_demand", &mut errors).is_some_and(|o| o.enabled);
        let generated_routes = section::<GeneratedRoutes>(&root, "generated_routes", &mut errors);
        let (interception, listeners, clusters) = intercepted(
            &root,
            (listeners, &routes, clusters),
            &generated_routes,
            grpc,
            &mut errors,
        );
        let mtls = mtls_section(&root, &listeners, grpc, interception.as_ref(), &mut errors);
        let authz = section::<security::AuthzSpec>(&root, "authz", &mut errors);
        let deny_by_default = authz.as_ref().is_some_and(|a| a.deny_by_default());
        let shadow_log_cluster = authz.and_then(|a| a.shadow_log_cluster(&mut errors));
        let scope = scope(root.get("scope"), &mut errors);
        let generated = (grpc, interception.is_some());
        cluster_defaults.eds_cluster_config = config_source(&root, generated, &mut errors);
        let mut template = NodeTemplate {
            file: file.to_owned(),
            route_clusters: route_clusters(&routes),
            listeners,
            routes,
            clusters,
            cluster_defaults,
            route_defaults,
            zone_aware,
            grpc,
            grpc_servers,
            on_demand,
            mtls,
            deny_by_default,
            shadow_log_cluster,
            interception,
            scope,
            generated_routes,
        };
        // References are checked only between resources that all decoded, so a typo in one
        // does not also show up as a dangling reference.
        if errors.is_empty() {
            errors.extend(template.check_references());
        }
        if errors.is_empty() && template.on_demand {
            errors.extend(on_demand::check(&template));
        }
        if errors.is_empty() {
            template.route_clusters.sort();
            template.route_clusters.dedup();
            Ok(template)
        } else {
            let mut errors: Vec<_> = errors.into_iter().map(to_problem).collect();
            errors.sort_by_key(|e| e.line);
            Err(errors)
        }
    }

    /// Names are present and unique, and the resources form a consistent snapshot on their own
    /// (every RDS name a listener asks for exists, every route configuration is used).
    fn check_references(&self) -> Vec<FieldError> {
        let root = FieldPath::default();
        let mut errors = check_names(&[
            (
                "listeners",
                "name",
                self.listeners.iter().map(|l| &l.name).collect(),
            ),
            (
                "routes",
                "name",
                self.routes.iter().map(|r| &r.name).collect(),
            ),
            (
                "clusters",
                "name",
                self.clusters.iter().map(|c| &c.name).collect(),
            ),
        ]);
        if let Some(generated) = &self.generated_routes {
            if let Some(i) = self.routes.iter().position(|r| r.name == generated.name) {
                errors.push(FieldError::new(
                    root.key("routes").index(i).key("name"),
                    format!("{:?} is also the generated_routes name", generated.name),
                ));
            }
        }
        if !errors.is_empty() {
            return errors;
        }
        let generated = self.generated_routes.iter().map(|g| RouteConfiguration {
            name: g.name.clone(),
            ..Default::default()
        });
        let mut snapshot = Snapshot::builder();
        for l in &self.listeners {
            snapshot = snapshot.listener(l.clone());
        }
        for r in self.routes.iter().cloned().chain(generated) {
            snapshot = snapshot.route(r);
        }
        for c in &self.clusters {
            snapshot = snapshot.cluster(c.clone());
        }
        let Err(e) = snapshot.build().check_consistency() else {
            return errors;
        };
        let position = |section: &str, name: &str| -> FieldPath {
            let index = match section {
                "listeners" => self.listeners.iter().position(|l| l.name == name),
                "routes" => self.routes.iter().position(|r| r.name == name),
                _ => self.clusters.iter().position(|c| c.name == name),
            };
            match index {
                Some(i) => root.key(section).index(i),
                None => root.key("generated_routes"),
            }
        };
        let (at, message) = match &e {
            InconsistentSnapshot::MissingRoute { listener, route } => (
                position("listeners", listener),
                format!("asks RDS for route configuration {route:?}, which no [[routes]] or [generated_routes] defines"),
            ),
            InconsistentSnapshot::OrphanRoute(route) => (
                position("routes", route),
                format!("route configuration {route:?} is used by no listener (Envoy would never ask for it)"),
            ),
            InconsistentSnapshot::MissingEndpoints { cluster, .. } => (
                position("clusters", cluster),
                "EDS clusters come from discovery; a template cluster carries its endpoints in load_assignment (type STATIC, STRICT_DNS or LOGICAL_DNS)".to_owned(),
            ),
            other => (root.clone(), other.to_string()),
        };
        errors.push(FieldError::new(at, message));
        errors
    }
}

fn unknown_sections(root: &serde_json::Map<String, Value>, errors: &mut Vec<FieldError>) {
    for key in root.keys().filter(|k| !SECTIONS.contains(&k.as_str())) {
        let expected = SECTIONS.join(", ");
        let message = format!("unknown section {key:?} (expected one of {expected})");
        errors.push(FieldError::new(FieldPath::default().key(key), message));
    }
}

/// `[config_source]`: an Envoy `ConfigSource` for discovered clusters' endpoints, instead of the
/// ADS stream (`api_config_source { api_type = "REST" }` for an Envoy that polls REST-JSON).
/// Not with `[grpc]` (gRPC takes ADS only) nor `[interception]` (its generated listener takes
/// its routes over ADS). `generated` says whether the template has either.
fn config_source(
    root: &serde_json::Map<String, Value>,
    (grpc, interception): (bool, bool),
    errors: &mut Vec<FieldError>,
) -> Option<EdsClusterConfig> {
    use envoy_types::pb::envoy::config::core::v3::{ApiVersion, ConfigSource};
    root.get("config_source")?;
    let at = FieldPath::default().key("config_source");
    let before = errors.len();
    let mut source = fragment::<ConfigSource>(root, "config_source", &[], "", errors);
    let decoded = errors.len() == before;
    let refused = match (grpc, interception) {
        (true, _) => {
            Some("proxyless gRPC takes its endpoints over ADS only; remove [config_source]")
        }
        (_, true) => {
            Some("[interception]'s listener takes its routes over ADS; remove [config_source]")
        }
        _ if decoded && source.config_source_specifier.is_none() => Some(
            "needs where endpoints come from: ads, api_config_source, path_config_source or self",
        ),
        _ => None,
    };
    if let Some(why) = refused {
        errors.push(FieldError::new(at, why));
    }
    if source.resource_api_version == ApiVersion::Auto as i32 {
        source.resource_api_version = ApiVersion::V3 as i32;
    }
    Some(EdsClusterConfig {
        eds_config: Some(source),
        service_name: String::new(),
    })
}

/// `[section]`: a fragment of an Envoy message `M` applied to every discovered cluster or
/// generated route. The fields synthesis owns (`owned`) are refused, saying `why`.
fn fragment<M: prost::Message + prost::Name + Default>(
    root: &serde_json::Map<String, Value>,
    section: &str,
    owned: &[&str],
    why: &str,
    errors: &mut Vec<FieldError>,
) -> M {
    let at = FieldPath::default().key(section);
    let Some(json) = root.get(section) else {
        return M::default();
    };
    let Value::Object(fields) = json else {
        errors.push(FieldError::new(
            at,
            format!("expected a table ([{section}])"),
        ));
        return M::default();
    };
    let mut rest = fields.clone();
    for field in owned {
        if rest.remove(*field).is_some() {
            errors.push(FieldError::new(at.key(field), why));
        }
    }
    envoy_json::decode(&Value::Object(rest), &at).unwrap_or_else(|e| {
        errors.extend(e);
        M::default()
    })
}

fn scope(json: Option<&Value>, errors: &mut Vec<FieldError>) -> Scope {
    let at = FieldPath::default().key("scope");
    let Some(spec) = json.and_then(|j| typed::<ScopeSpec>(j, &at, errors)) else {
        return Scope::default();
    };
    let mut compile = |key: &str, patterns: &[String]| {
        let mut set = GlobSetBuilder::new();
        for (i, p) in patterns.iter().enumerate() {
            match Glob::new(p) {
                Ok(glob) => drop(set.add(glob)),
                Err(e) => errors.push(FieldError::new(at.key(key).index(i), e.to_string())),
            }
        }
        set.build().unwrap_or_default()
    };
    Scope {
        include: compile("include", &spec.include),
        exclude: compile("exclude", &spec.exclude),
    }
}

/// A plain (non-Envoy) section, read with serde.
fn section<T: for<'de> Deserialize<'de>>(
    root: &serde_json::Map<String, Value>,
    key: &str,
    errors: &mut Vec<FieldError>,
) -> Option<T> {
    typed(root.get(key)?, &FieldPath::default().key(key), errors)
}

fn typed<T: for<'de> Deserialize<'de>>(
    json: &Value,
    at: &FieldPath,
    errors: &mut Vec<FieldError>,
) -> Option<T> {
    serde_path_to_error::deserialize(json)
        .map_err(|e| {
            let path = at.join(&e.path().to_string());
            errors.push(FieldError::new(path, e.into_inner().to_string()));
        })
        .ok()
}

/// Every (cluster, route configuration) a route sends traffic to.
pub(crate) fn route_clusters(routes: &[RouteConfiguration]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for config in routes {
        for route in config.virtual_hosts.iter().flat_map(|vh| &vh.routes) {
            let Some(Action::Route(action)) = &route.action else {
                continue;
            };
            let mut add = |cluster: &str| out.push((cluster.to_owned(), config.name.clone()));
            match &action.cluster_specifier {
                Some(ClusterSpecifier::Cluster(c)) => add(c),
                Some(ClusterSpecifier::WeightedClusters(w)) => {
                    w.clusters.iter().for_each(|c| add(&c.name))
                }
                _ => {}
            }
            for mirror in &action.request_mirror_policies {
                add(&mirror.cluster);
            }
        }
    }
    out
}

#[cfg(test)]
mod error_tests;
#[cfg(test)]
mod tests;
