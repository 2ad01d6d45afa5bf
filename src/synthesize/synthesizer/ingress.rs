//! Each service's own ingress, for node types with `[mtls]` and an ingress listener: the
//! template's listener secured by the service's policy (`mtls`, `allow-from`, `authz` tags).
//!
//! Every snapshot of the node type holds the listener as the node type's own policy secures it
//! (its `[mtls] mode`, and any caller of the trust domain, or none with `[authz] default =
//! "deny"`). A service whose tags ask for something else gets a snapshot of its own: the one
//! it would have had (its backend set's or the whole scope's, per place) with that one listener
//! replaced and every other resource shared. Services asking for the same policy share it.
//!
//! A tag that does not parse keeps the policy the service had at the last synthesis (or denies
//! every caller, and enforces): never "allow all" by accident.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use envoy_types::pb::envoy::config::listener::v3::Listener;

use super::{Encodings, Synthesis};
use crate::inventory::{AllowFrom, AuthzMode, Cluster, Inventory, MtlsMode, Source, Workload};
use crate::snapshot::{EncodedResource, ResourceType, Snapshot};
use crate::spiffe::SpiffeId;
use crate::synthesize::grpc_server::server_listener;
use crate::synthesize::security::{secured_ingress, Callers, IngressPolicy, PreparedIngress};
use crate::synthesize::templates::{Mtls, NodeTemplate};
use crate::synthesize::BackendSet;

/// By the name an Envoy states (a cluster's or its ECS service's), its ingress policy and
/// that policy as a snapshot key shows it.
type Policies = BTreeMap<String, (IngressPolicy, String)>;

/// What each caller named in an `allow-from` tag is: the SPIFFE IDs of the ECS services of
/// that name (or whose cluster has that name).
type Workloads<'i> = BTreeMap<&'i str, Vec<String>>;

/// The policy of a node type's services without tags.
pub(super) fn base_policy(template: &NodeTemplate, mtls: &Mtls) -> IngressPolicy {
    IngressPolicy {
        mode: mtls.mode,
        callers: match template.deny_by_default {
            true => Callers::Only(Vec::new()),
            false => Callers::AnyWorkload,
        },
        shadow: false,
    }
}

/// The node type's ingress listeners secured by `policy`, encoded: the template's ingress
/// listener, or a gRPC node type's server listeners.
pub(super) fn encode_ingress(
    template: &NodeTemplate,
    mtls: &Mtls,
    policy: &IngressPolicy,
) -> Vec<Arc<EncodedResource>> {
    if template.grpc {
        let servers = template.grpc_servers.iter();
        return encoded(servers.map(|server| server_listener(server, Some((mtls, policy)))));
    }
    let listener = template_ingress(template, mtls);
    let shadow_log = template.shadow_log_cluster.as_deref();
    encoded(listener.map(|l| secured_ingress(l, mtls, policy, shadow_log)))
}

/// The template's listener that `[mtls]` names as its ingress, if it has it.
fn template_ingress<'t>(template: &'t NodeTemplate, mtls: &Mtls) -> Option<&'t Listener> {
    let name = mtls.ingress_listener.as_deref()?;
    template.listeners.iter().find(|l| l.name == name)
}

fn encoded(listeners: impl IntoIterator<Item = Listener>) -> Vec<Arc<EncodedResource>> {
    let builder = (listeners.into_iter()).fold(Snapshot::builder(), |b, l| b.listener(l));
    let snapshot = builder.build();
    let listeners = snapshot.of(ResourceType::Listener).resources().values();
    listeners.cloned().collect()
}

/// How many listeners [`encode_ingress`] makes.
fn ingress_count(template: &NodeTemplate, mtls: &Mtls) -> usize {
    match template.grpc {
        true => template.grpc_servers.len(),
        false => usize::from(mtls.ingress_listener.is_some()),
    }
}

/// A node type's policies as [`Encodings::policies`] found them, with what they were found
/// from: each ECS cluster's (name, service, security tags).
pub(super) struct KeptPolicies {
    inputs: Vec<(String, String, crate::inventory::Security)>,
    policies: Arc<Policies>,
}

impl Encodings {
    /// Adds to `out` a snapshot for every policy some service of `node_type` asks for that is
    /// not the node type's own, and puts those services on it.
    pub(super) fn service_ingresses(
        &mut self,
        node_type: &str,
        template: &NodeTemplate,
        inventory: &Inventory,
        out: &mut Synthesis,
    ) {
        let Some(mtls) = (template.mtls.as_ref()).filter(|m| ingress_count(template, m) > 0) else {
            return;
        };
        let base = base_policy(template, mtls);
        let policies = self.policies(template, mtls, inventory);
        denied_backends(node_type, template, mtls, inventory, &policies, out);
        let class = ingress_class(template, mtls);
        let mut sets = out.backend_sets.remove(node_type).unwrap_or_default();
        for (caller, (policy, described)) in policies.iter().filter(|(_, (p, _))| *p != base) {
            let on = sets.callers.get(caller).cloned();
            let backends = on.as_deref().unwrap_or(WHOLE_SCOPE);
            let key = format!("{backends}{INGRESS_MARK}{described}");
            if !sets.sets.contains_key(&key) {
                let listeners = self.ingress(class, template, mtls, policy);
                if listeners.is_empty() {
                    return;
                }
                let listener = listeners.as_slice();
                let derived = match on.as_ref().and_then(|k| sets.sets.get(k)) {
                    Some(set) => derive(&set.snapshot, &set.places, listener),
                    None => {
                        let none = BTreeMap::new();
                        let places = out.places.get(node_type).unwrap_or(&none);
                        derive(&out.snapshots[node_type], places, listener)
                    }
                };
                sets.sets.insert(key.clone(), derived);
            }
            sets.callers.insert(caller.clone(), key);
        }
        if !sets.sets.is_empty() {
            out.backend_sets.insert(node_type.to_owned(), sets);
        }
    }

    /// The listeners `policy` secures, from an earlier synthesis or another node type with
    /// the same ingress listeners (`class`) when they had the same.
    fn ingress(
        &mut self,
        class: u64,
        template: &NodeTemplate,
        mtls: &Mtls,
        policy: &IngressPolicy,
    ) -> Vec<Arc<EncodedResource>> {
        let count = ingress_count(template, mtls);
        // Keyed by the policy's hash, compared in full on a hit: no clone of its callers to
        // look it up.
        let hash = policy_hash(policy);
        let kept: Option<Vec<_>> = (0..count)
            .map(|i| (self.ingresses).get(&(class, hash, i), |kept| kept == policy))
            .collect();
        if let Some(kept) = kept {
            return kept;
        }
        let encoded = match (template.grpc, template_ingress(template, mtls)) {
            (false, Some(listener)) => {
                let prepared = self.prepared_ingress(class, listener, template, mtls, policy);
                let listener = EncodedResource::listener(&prepared.secure(&policy.callers));
                vec![Arc::new(listener)]
            }
            _ => encode_ingress(template, mtls, policy),
        };
        for (i, listener) in encoded.iter().enumerate() {
            let key = (class, hash, i);
            self.ingresses.insert(key, policy.clone(), listener.clone());
        }
        encoded
    }

    /// The template's ingress `listener` secured for policies shaped as `policy` is, but for
    /// their callers: made once per synthesis for every service of that shape.
    fn prepared_ingress(
        &mut self,
        class: u64,
        listener: &Listener,
        template: &NodeTemplate,
        mtls: &Mtls,
        policy: &IngressPolicy,
    ) -> Arc<PreparedIngress> {
        let key = (class, policy.shape());
        if let Some(kept) = self.prepared_ingresses.get(&key, |_| true) {
            return kept;
        }
        let shadow_log = template.shadow_log_cluster.as_deref();
        let prepared = Arc::new(PreparedIngress::new(listener, mtls, key.1, shadow_log));
        self.prepared_ingresses.insert(key, (), prepared.clone());
        prepared
    }

    /// Every ECS service's policy, by its clusters' names and its own (a cluster's name
    /// wins); the last synthesis's when no service's tags changed.
    fn policies(
        &mut self,
        template: &NodeTemplate,
        mtls: &Mtls,
        inventory: &Inventory,
    ) -> Arc<Policies> {
        let inputs: Vec<_> = (inventory.clusters.iter())
            .filter_map(|(name, c)| match &c.source {
                Source::Ecs { service, .. } => Some((name, service, &c.security)),
                Source::CloudMap { .. } => None,
            })
            .collect();
        let class = policy_class(template, mtls);
        if let Some(kept) = self.kept_policies.get(&class) {
            let same = kept.inputs.len() == inputs.len()
                && (kept.inputs.iter().zip(&inputs))
                    .all(|((n, s, c), (n2, s2, c2))| n == *n2 && s == *s2 && c == *c2);
            if same {
                return kept.policies.clone();
            }
        }
        let workloads = workloads(inventory, &mtls.trust_domain);
        let mut policies = Policies::new();
        let mut kept = HashMap::new();
        for (name, cluster) in &inventory.clusters {
            let Source::Ecs { service, .. } = &cluster.source else {
                continue;
            };
            let key = (class.clone(), name.clone());
            let previous = self.last_policies.get(&key);
            let policy = policy_of(cluster, template, mtls, &workloads, previous);
            kept.insert(key, policy.clone());
            let described = (policy.clone(), describe(&policy));
            policies.entry(service.clone()).or_insert(described.clone());
            policies.insert(name.clone(), described);
        }
        self.last_policies.retain(|(c, _), _| *c != class);
        self.last_policies.extend(kept);
        let policies = Arc::new(policies);
        let inputs = (inputs.into_iter())
            .map(|(n, s, c)| (n.clone(), s.clone(), c.clone()))
            .collect();
        let fresh = KeptPolicies {
            inputs,
            policies: policies.clone(),
        };
        self.kept_policies.insert(class, fresh);
        policies
    }
}

/// What a node type's policies are made from besides the inventory: node types with the same
/// trust domain, mode and default share them (and what a bad tag keeps).
fn policy_class(template: &NodeTemplate, mtls: &Mtls) -> String {
    let mode = describe_mode(mtls.mode);
    let deny = template.deny_by_default;
    format!("{}\0{mode}\0{deny}", mtls.trust_domain)
}

fn policy_hash(policy: &IngressPolicy) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault};
    BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(policy)
}

/// What a node type's ingress listeners are made from besides the policy: node types with
/// the same template listener and `[mtls]` share their encodings.
fn ingress_class(template: &NodeTemplate, mtls: &Mtls) -> u64 {
    use prost::Message;
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let listener = template_ingress(template, mtls);
    listener.map(|l| l.encode_to_vec()).hash(&mut hasher);
    (template.grpc, &template.grpc_servers).hash(&mut hasher);
    mtls.hash(&mut hasher);
    template.shadow_log_cluster.hash(&mut hasher);
    hasher.finish()
}

/// A service that declares a backend whose policy does not allow it: its calls would be
/// denied (403), which its owners should hear of before they make them.
fn denied_backends(
    node_type: &str,
    template: &NodeTemplate,
    mtls: &Mtls,
    inventory: &Inventory,
    policies: &Policies,
    out: &mut Synthesis,
) {
    let mut warned = std::collections::BTreeSet::new();
    for cluster in inventory.clusters.values() {
        let (Source::Ecs { service, .. }, Some(items), Some(w)) = (
            &cluster.source,
            &cluster.backends,
            &cluster.security.workload,
        ) else {
            continue;
        };
        let Ok(id) = SpiffeId::new(
            &mtls.trust_domain,
            &w.account,
            &w.region,
            &w.ecs_cluster,
            service,
        ) else {
            continue;
        };
        for item in items {
            let Some(Callers::Only(allowed)) = policies.get(item.as_str()).map(|p| &p.0.callers)
            else {
                continue;
            };
            if !allowed.contains(&id.to_string()) && warned.insert((service, item)) {
                let message = format!(
                    "ECS service {service} declares backend {item:?}, whose allow-from does not name {service}: its calls would be denied (403)"
                );
                out.warnings
                    .push(super::warning(node_type, template, message));
            }
        }
    }
}

/// `cluster`'s policy: its tags over the node type's; a tag that does not parse keeps the
/// `previous` policy's part (or the strict one).
fn policy_of(
    cluster: &Cluster,
    template: &NodeTemplate,
    mtls: &Mtls,
    workloads: &Workloads<'_>,
    previous: Option<&IngressPolicy>,
) -> IngressPolicy {
    let base = base_policy(template, mtls);
    let callers = match &cluster.security.allow_from {
        None => base.callers,
        Some(AllowFrom::Services(names)) => {
            Callers::Only(caller_ids(names, cluster, mtls, workloads))
        }
        Some(AllowFrom::Invalid) => {
            (previous.map(|p| p.callers.clone())).unwrap_or(Callers::Only(Vec::new()))
        }
    };
    let shadow = match cluster.security.authz {
        None | Some(AuthzMode::Enforce) => false,
        Some(AuthzMode::Shadow) => true,
        Some(AuthzMode::Invalid) => previous.is_some_and(|p| p.shadow),
    };
    IngressPolicy {
        mode: cluster.security.mtls.unwrap_or(mtls.mode),
        callers,
        shadow,
    }
}

/// The SPIFFE IDs of the services `names`: of every ECS service of that name discovered (or
/// whose cluster has that name), else of one in the callee's own cluster (a worker with no
/// port of its own, or one not deployed yet).
fn caller_ids(
    names: &[String],
    callee: &Cluster,
    mtls: &Mtls,
    workloads: &Workloads<'_>,
) -> Vec<String> {
    let mut ids = Vec::new();
    for name in names {
        match workloads.get(name.as_str()) {
            Some(found) => ids.extend(found.iter().cloned()),
            None => ids.extend(
                (callee.security.workload.as_ref())
                    .and_then(|w| spiffe_id(&mtls.trust_domain, name, w)),
            ),
        }
    }
    ids.sort();
    ids.dedup();
    ids
}

fn spiffe_id(trust_domain: &str, service: &str, w: &Workload) -> Option<String> {
    let id = SpiffeId::new(trust_domain, &w.account, &w.region, &w.ecs_cluster, service);
    id.ok().map(|id| id.to_string())
}

/// Each ECS service's SPIFFE ID (one per workload), by service name and cluster name.
fn workloads<'i>(inventory: &'i Inventory, trust_domain: &str) -> Workloads<'i> {
    let mut out = Workloads::new();
    for (name, cluster) in &inventory.clusters {
        let Source::Ecs { service, .. } = &cluster.source else {
            continue;
        };
        let ids = cluster.security.workloads();
        for id in ids.filter_map(|w| spiffe_id(trust_domain, service, w)) {
            for key in [service.as_str(), name.as_str()] {
                let entry = out.entry(key).or_default();
                if !entry.contains(&id) {
                    entry.push(id.clone());
                }
            }
        }
    }
    out
}

/// What a snapshot key of [`BackendSets`](crate::synthesize::BackendSets) says: the backends
/// declared (`None`: the whole scope) and the service's own ingress policy (`None`: the node
/// type's).
pub fn set_key_parts(key: &str) -> (Option<&str>, Option<&str>) {
    let (backends, ingress) = match key.split_once(INGRESS_MARK) {
        Some((backends, ingress)) => (backends, Some(ingress)),
        None => (key, None),
    };
    ((backends != WHOLE_SCOPE).then_some(backends), ingress)
}

/// Between a key's backends and its ingress policy.
const INGRESS_MARK: &str = "|ingress ";
/// A key's backends part for the whole scope.
const WHOLE_SCOPE: &str = "*";

/// A policy as a backend set key shows it (`/nodes`, `render --service`).
fn describe(policy: &IngressPolicy) -> String {
    let mode = describe_mode(policy.mode);
    let callers = match &policy.callers {
        Callers::AnyWorkload => "any".to_owned(),
        Callers::Only(ids) if ids.is_empty() => "none".to_owned(),
        Callers::Only(ids) => ids.join(" "),
    };
    let shadow = if policy.shadow { " (shadow)" } else { "" };
    format!("{mode} allow {callers}{shadow}")
}

fn describe_mode(mode: MtlsMode) -> &'static str {
    match mode {
        MtlsMode::Strict => "strict",
        MtlsMode::Permissive => "permissive",
        MtlsMode::Off => "off",
    }
}

/// `base` and its places' snapshots with `listeners` in place of their own.
fn derive(
    base: &Snapshot,
    places: &BTreeMap<String, Snapshot>,
    listeners: &[Arc<EncodedResource>],
) -> BackendSet {
    let with = |s: &Snapshot| {
        let mut derived = s.with_resource(ResourceType::Listener, listeners[0].clone());
        for listener in &listeners[1..] {
            derived = derived.with_resource(ResourceType::Listener, listener.clone());
        }
        derived
    };
    BackendSet {
        snapshot: with(base),
        places: places.iter().map(|(p, s)| (p.clone(), with(s))).collect(),
    }
}
