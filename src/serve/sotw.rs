//! State-of-the-world protocol state for one stream (ADS or a per-type service).
//!
//! Pure state: requests and snapshots in, responses out. The stream runner does the I/O.
//!
//! The rules, and why:
//! - One response per type is in flight at a time; the next waits for its ACK or NACK. A
//!   snapshot published meanwhile is sent after the ACK, and only the newest one: versions are
//!   coalesced, never queued.
//! - A NACK records the rejection and sends nothing; the rejected version is only ever followed
//!   by different content (no resend loop). The next send after a NACK is whole, because Envoy
//!   may have applied part of a rejected EDS/RDS response.
//! - CDS and LDS responses always carry every resource. EDS and RDS responses carry what changed
//!   for the names subscribed, except that a request which is not an ACK (a new subscription,
//!   or Envoy asking again for names it already has, as it does while warming a cluster or
//!   listener) is answered with every subscribed resource even if nothing changed.
//! - A first request whose `version_info` equals ours (a reconnect after a controller restart)
//!   is not answered: Envoy already holds that content.

use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::{
    DiscoveryRequest, ResourceError, ResourceName,
};
use tonic::Status;

use super::names::{self, NameSet};
use super::wire::{Encoded, SotwResponse};
use super::{StreamCommon, StreamContext};
use crate::cache::{Nack, NotFound};
use crate::snapshot::{ResourceType, Snapshot, TypeResources};

/// What a client subscribed to for one type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Subscription {
    Wildcard,
    /// Shared with every stream subscribed to the same names ([`names::share`]).
    Names(Arc<NameSet>),
}

impl Subscription {
    /// Whether `names` express exactly this subscription (any order, no duplicates).
    fn is_expressed_by(&self, ty: ResourceType, names: &[String]) -> bool {
        match self {
            Subscription::Wildcard => {
                names.iter().any(|n| n == "*") || (names.is_empty() && ty.is_wildcard_by_default())
            }
            Subscription::Names(set) => {
                set.len() == names.len() && names.iter().all(|n| n != "*" && set.contains(n))
            }
        }
    }

    /// The subscription a request's `resource_names` express for `ty`: `*` is a wildcard, and so
    /// is an empty list for the wildcard types CDS and LDS. Names are interned against `known`.
    pub(super) fn from_names(
        ty: ResourceType,
        names: &[String],
        known: Option<&TypeResources>,
    ) -> Self {
        if names.iter().any(|n| n == "*") || (names.is_empty() && ty.is_wildcard_by_default()) {
            Subscription::Wildcard
        } else {
            let intern = |n: &String| known.map_or_else(|| Arc::from(n.as_str()), |k| k.intern(n));
            Subscription::Names(names::share(Arc::new(names.iter().map(intern).collect())))
        }
    }
}

/// The last response sent for a type, the base that later changes are computed against.
#[derive(Debug)]
struct Sent {
    snapshot: Arc<Snapshot>,
    version: Arc<str>,
    nonce: String,
}

#[derive(Debug)]
struct TypeState {
    subscription: Subscription,
    /// `version_info` of the first request, until the first response is decided.
    initial_version: Option<String>,
    sent: Option<Sent>,
    awaiting_ack: bool,
    /// The next response carries every subscribed resource.
    whole_next: bool,
}

/// Per-stream SotW state.
#[derive(Debug)]
pub(super) struct SotwState {
    common: StreamCommon,
    types: [Option<TypeState>; ResourceType::COUNT],
}

impl SotwState {
    pub(super) fn new(only: Option<ResourceType>) -> Self {
        Self {
            common: StreamCommon::new(only),
            types: Default::default(),
        }
    }

    /// Handles one request; returns the responses to send, in order.
    pub(super) fn on_request(
        &mut self,
        ctx: &StreamContext,
        req: DiscoveryRequest,
    ) -> Result<Vec<SotwResponse>, Status> {
        let Some(ty) = self.common.request_type(&req.type_url, &ctx.node_id)? else {
            return Ok(Vec::new());
        };
        let known = self.common.snapshot.as_ref().map(|s| s.of(ty));
        let current = self.types[ty.index()].as_ref().map(|s| &s.subscription);
        // An ACK repeats the subscription; recognise it without building a new one. `None`:
        // the subscription is unchanged.
        let subscription = match current {
            Some(current) if current.is_expressed_by(ty, &req.resource_names) => None,
            _ => Some(Subscription::from_names(ty, &req.resource_names, known)),
        };
        let Some(state) = self.types[ty.index()].as_mut() else {
            self.types[ty.index()] = Some(TypeState {
                subscription: subscription.expect("no previous subscription"),
                initial_version: Some(req.version_info),
                sent: None,
                awaiting_ack: false,
                whole_next: true,
            });
            return Ok(self.pending(ctx, ty).into_iter().collect());
        };
        let sent_nonce = state.sent.as_ref().map(|s| s.nonce.as_str());
        if !req.response_nonce.is_empty() && Some(req.response_nonce.as_str()) != sent_nonce {
            // A request for an older response; the protocol says to ignore it.
            tracing::debug!(node_id = %ctx.node_id, %ty, nonce = %req.response_nonce, "stale nonce ignored");
            return Ok(Vec::new());
        }
        let answers_last = !req.response_nonce.is_empty() && state.awaiting_ack;
        if let (true, Some(error)) = (answers_last, &req.error_detail) {
            let sent = state
                .sent
                .as_ref()
                .expect("a nonce matched, so a response was sent");
            ctx.cache.status().nacked(
                ctx.stream_id,
                Nack {
                    node_id: ctx.node_id.clone(),
                    node_type: ctx.node_type.clone(),
                    resource_type: ty,
                    rejected_version: sent.version.to_string(),
                    message: error.message.clone(),
                    at: std::time::SystemTime::now(),
                },
            );
            state.awaiting_ack = false;
            state.whole_next = true;
            if let Some(subscription) = subscription {
                state.subscription = subscription;
            }
            // Nothing is sent until the content differs from the rejected version.
            return Ok(self.pending(ctx, ty).into_iter().collect());
        }
        // Compared, not assumed: a client repeating a name in every ACK must not get a
        // response to each (that would loop).
        let resubscribed = subscription
            .as_ref()
            .is_some_and(|s| *s != state.subscription);
        if let Some(subscription) = subscription {
            state.subscription = subscription;
        }
        if answers_last {
            state.awaiting_ack = false;
            let sent = state.sent.as_ref().expect("a nonce matched");
            ctx.cache.status().acked(ctx.stream_id, ty, &sent.version);
            if !resubscribed {
                return Ok(self.pending(ctx, ty).into_iter().collect());
            }
        }
        // A subscription change, or Envoy asking again (warming): answer with everything
        // subscribed, even when nothing changed.
        Ok(self.respond(ctx, ty, true).into_iter().collect())
    }

    /// Takes a newly published snapshot; returns the responses it calls for, in push order.
    pub(super) fn on_snapshot(
        &mut self,
        ctx: &StreamContext,
        snapshot: Arc<Snapshot>,
    ) -> Vec<SotwResponse> {
        self.common.snapshot = Some(snapshot);
        ResourceType::ALL
            .into_iter()
            .filter_map(|ty| self.pending(ctx, ty))
            .collect()
    }

    /// A response due for `ty` without any request: the first one, or newer content after the
    /// last response was ACKed or NACKed.
    fn pending(&mut self, ctx: &StreamContext, ty: ResourceType) -> Option<SotwResponse> {
        let snapshot = self.common.snapshot.clone()?;
        let state = self.types[ty.index()].as_mut()?;
        if state.awaiting_ack {
            return None;
        }
        let version = snapshot.version(ty);
        match (&state.sent, state.initial_version.take()) {
            (None, Some(initial)) if initial == **version => {
                // Envoy already holds this content (a reconnect); treat it as sent and ACKed.
                state.sent = Some(Sent {
                    snapshot: snapshot.clone(),
                    version: version.clone(),
                    nonce: String::new(),
                });
                state.whole_next = false;
                None
            }
            (None, _) => self.respond(ctx, ty, true),
            (Some(sent), _) if sent.version == *version => None,
            (Some(_), _) => {
                let whole = state.whole_next;
                self.respond(ctx, ty, whole)
            }
        }
    }

    /// Builds a response for `ty` from the current snapshot. `whole` sends every subscribed
    /// resource; otherwise named types send only what changed since the last response. `None`
    /// when there is no snapshot yet, or a named type has nothing new to send.
    fn respond(
        &mut self,
        ctx: &StreamContext,
        ty: ResourceType,
        whole: bool,
    ) -> Option<SotwResponse> {
        let snapshot = self.common.snapshot.clone()?;
        let state = self.types[ty.index()].as_mut()?;
        let current = snapshot.of(ty);
        let encoded = |name: &Arc<str>| current.get(name).map(|r| Encoded(r.any_bytes().clone()));
        let resources: Vec<Encoded> = match &state.subscription {
            Subscription::Wildcard => current
                .resources()
                .values()
                .map(|r| Encoded(r.any_bytes().clone()))
                .collect(),
            Subscription::Names(names) => match state.sent.as_ref().filter(|_| !whole) {
                // A listener or cluster response must carry every subscribed resource: one left
                // out would be deleted. So it goes out whole, when any of them changed.
                Some(sent) if ty.is_wildcard_by_default() => {
                    let changes = snapshot.changes_since(&sent.snapshot, ty);
                    let mut touched = changes.changed.iter().chain(changes.removed.iter());
                    match touched.any(|name| names.contains(name)) {
                        true => names.names().filter_map(encoded).collect(),
                        false => Vec::new(),
                    }
                }
                Some(sent) => snapshot
                    .changed_since(&sent.snapshot, ty)
                    .iter()
                    .filter(|name| names.contains(name))
                    .filter_map(encoded)
                    .collect(),
                None => names.names().filter_map(encoded).collect(),
            },
        };
        if resources.is_empty() && !whole && matches!(state.subscription, Subscription::Names(_)) {
            // Nothing this stream subscribed to changed; move the base forward silently.
            if let Some(sent) = state.sent.as_mut() {
                sent.snapshot = snapshot.clone();
                sent.version = current.version().clone();
            }
            return None;
        }
        let resource_errors = match &state.subscription {
            Subscription::Names(names) if ty.is_wildcard_by_default() => names
                .names()
                .filter(|name| current.get(name).is_none())
                .map(|name| not_found(ctx, ty, name))
                .collect(),
            _ => Vec::new(),
        };
        let nonce = self.common.nonce();
        let version = current.version().clone();
        ctx.cache.status().sent(ctx.stream_id, ty, &version);
        state.sent = Some(Sent {
            snapshot: snapshot.clone(),
            version: version.clone(),
            nonce: nonce.clone(),
        });
        state.awaiting_ack = true;
        state.whole_next = false;
        Some(SotwResponse {
            version_info: version.to_string(),
            resources,
            type_url: ty.type_url().to_owned(),
            nonce,
            resource_errors,
        })
    }
}

/// A subscribed listener or cluster that does not exist, said so, for clients that read
/// `resource_errors` (grpcio with `GRPC_EXPERIMENTAL_XDS_DATA_ERROR_HANDLING=true`); others
/// find out when their does-not-exist timer fires (15 s in gRPC).
fn not_found(ctx: &StreamContext, ty: ResourceType, name: &str) -> ResourceError {
    ctx.cache.status().not_found(NotFound {
        node_id: ctx.node_id.clone(),
        node_type: ctx.node_type.clone(),
        resource_type: ty,
        name: name.to_owned(),
        at: std::time::SystemTime::now(),
    });
    let node_type = &ctx.node_type;
    ResourceError {
        resource_name: Some(ResourceName {
            name: name.to_owned(),
            dynamic_parameter_constraints: None,
        }),
        error_detail: Some(envoy_types::pb::google::rpc::Status {
            code: tonic::Code::NotFound as i32,
            message: format!("{ty} resource {name:?} does not exist for node type {node_type:?}"),
            details: Vec::new(),
        }),
    }
}

#[cfg(test)]
mod tests;
