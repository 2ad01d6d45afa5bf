//! A node type's egress for redirected traffic (`[interception]`), in each snapshot: its
//! listener and its route configuration, each kept with what it was made from, so a task that
//! moves re-encodes the listener alone and a health change neither.

use std::sync::Arc;

use super::{route_inputs, warning, Encodings, RouteInputs, Synthesis};
use crate::inventory::{self, Protocol};
use crate::snapshot::{EncodedResource, ResourceType, Snapshot, SnapshotBuilder};
use crate::synthesize::interception::{egress_listener, egress_routes, EGRESS};
use crate::synthesize::templates::{Interception, NodeTemplate};

/// (node type, backend set).
type Key = (String, Option<String>);
/// Per service: its name, protocol, whether it is an ECS service (which owns an address a
/// Cloud Map service also has) and its endpoints' addresses.
pub(super) type ListenerInputs = Vec<(String, Option<Protocol>, bool, Vec<(String, u16)>)>;
/// Per service: its route's inputs and where it came from (a Cloud Map name is a domain).
pub(super) type RoutesInputs = Vec<(RouteInputs, inventory::Source)>;
/// (service, domain) pairs a route configuration left out: an earlier service has the domain.
type Dropped = Vec<(String, String)>;
/// The encoded route configuration and the domains it left out.
pub(super) type Routes = (Arc<EncodedResource>, Dropped);

/// What a snapshot's builder encoded afresh of the egress, to keep.
#[derive(Default)]
pub(super) struct FreshIntercepted {
    listener: Option<(Key, ListenerInputs)>,
    routes: Option<(Key, RoutesInputs, Dropped)>,
}

impl FreshIntercepted {
    pub fn count(&self) -> usize {
        self.listener.iter().len() + self.routes.iter().len()
    }
}

fn listener_inputs(in_scope: &[(&str, &inventory::Cluster)]) -> ListenerInputs {
    let service = |(name, c): &(&str, &inventory::Cluster)| {
        let ecs = matches!(c.source, inventory::Source::Ecs { .. });
        let addresses = c.endpoints.iter().map(|e| (e.address.clone(), e.port));
        (
            (*name).to_owned(),
            c.route.protocol,
            ecs,
            addresses.collect(),
        )
    };
    in_scope.iter().map(service).collect()
}

/// Whether `in_scope` is what the kept listener was made from, compared in place: the
/// addresses of every task are not copied at each synthesis to find nothing changed.
fn same_listener(kept: &ListenerInputs, in_scope: &[(&str, &inventory::Cluster)]) -> bool {
    kept.len() == in_scope.len()
        && kept
            .iter()
            .zip(in_scope)
            .all(|((n, p, ecs, addrs), (name, c))| {
                n == name
                    && *p == c.route.protocol
                    && *ecs == matches!(c.source, inventory::Source::Ecs { .. })
                    && addrs.len() == c.endpoints.len()
                    && (addrs.iter().zip(&c.endpoints))
                        .all(|((a, port), e)| *a == e.address && *port == e.port)
            })
}

impl Encodings {
    /// The egress listener and route configuration for the app's redirected traffic, in the
    /// snapshot of `node_type` (of backend set `selection`), and what of them was encoded
    /// afresh. Each domain two services claim is a warning (the whole scope's snapshot reports
    /// it).
    pub(super) fn intercepted(
        &mut self,
        builder: SnapshotBuilder,
        (node_type, template, selection): (&str, &NodeTemplate, Option<&str>),
        spec: &Interception,
        in_scope: &[(&str, &inventory::Cluster)],
        out: &mut Synthesis,
    ) -> (SnapshotBuilder, FreshIntercepted) {
        let mut fresh = FreshIntercepted::default();
        let key: Key = (node_type.to_owned(), selection.map(str::to_owned));
        let same = |kept: &ListenerInputs| same_listener(kept, in_scope);
        let builder = match self.intercepted_listeners.get(&key, same) {
            Some(listener) => builder.shared(ResourceType::Listener, listener),
            None => {
                fresh.listener = Some((key.clone(), listener_inputs(in_scope)));
                builder.listener(egress_listener(spec, in_scope))
            }
        };
        let inputs: RoutesInputs = (in_scope.iter())
            .map(|(name, c)| (route_inputs(name, c), c.source.clone()))
            .collect();
        let (builder, dropped) = match self.intercepted_routes.get(&key, |kept| *kept == inputs) {
            Some((routes, dropped)) => (builder.shared(ResourceType::Route, routes), dropped),
            None => {
                let defaults = &template.route_defaults;
                let (routes, dropped) = egress_routes(spec, defaults, in_scope);
                fresh.routes = Some((key, inputs, dropped.clone()));
                (builder.route(routes), dropped)
            }
        };
        if selection.is_none() {
            for (service, domain) in dropped {
                let why = format!("{service:?} is also called {domain:?}, which an earlier service has: the earlier one keeps it for redirected HTTP");
                out.warnings.push(warning(node_type, template, why));
            }
        }
        (builder, fresh)
    }

    /// Keeps what `snapshot`'s builder encoded afresh of the egress.
    pub(super) fn keep_intercepted(&mut self, snapshot: &Snapshot, fresh: FreshIntercepted) {
        let encoded = |ty: ResourceType| {
            let resource = snapshot.of(ty).get(EGRESS);
            (resource.expect("the builder holds what it was given")).clone()
        };
        if let Some((key, inputs)) = fresh.listener {
            let listener = encoded(ResourceType::Listener);
            self.intercepted_listeners.insert(key, inputs, listener);
        }
        if let Some((key, inputs, dropped)) = fresh.routes {
            let routes = encoded(ResourceType::Route);
            self.intercepted_routes
                .insert(key, inputs, (routes, dropped));
        }
    }
}
