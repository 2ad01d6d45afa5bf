//! Delta (incremental) protocol state for one stream (ADS or a per-type service).
//!
//! Pure state: requests and snapshots in, responses out. The stream runner does the I/O.
//!
//! The server tracks, per type, the version of each resource the client holds ([`Held`]: a
//! snapshot plus exceptions). It starts from `initial_resource_versions` on (re)connect, so
//! nothing Envoy already has is resent, and it is updated optimistically when a response is
//! sent; a NACK restores what the client held before that response.
//! - Responses caused by a publish wait until the previous one of that type is ACKed or NACKed,
//!   then carry the newest content only (coalesced).
//! - A NACKed version is never resent; the next publish of different content is.
//! - A name subscribed again while already subscribed (Envoy re-warming a cluster) is answered
//!   even if unchanged.

use std::collections::VecDeque;
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use tonic::Status;

use super::held::Held;
use super::names::{self, NameSet};
use super::wire::{DeltaResponse, Encoded};
use super::{StreamCommon, StreamContext};
use crate::cache::{Nack, NotFound};
use crate::snapshot::{hash, ResourceType, Snapshot};

/// The client's version of a resource when it reported one we did not produce. A content hash
/// equal to it (a 1 in 2^64 chance) would mean one resource is not resent.
const FOREIGN: u64 = 0;

/// A response not yet ACKed: what to restore if it is NACKed.
#[derive(Debug)]
struct InFlight {
    nonce: String,
    version: Arc<str>,
    /// What the client held before this response.
    before: Held,
}

#[derive(Debug, Default)]
struct TypeState {
    wildcard: bool,
    /// Shared with every stream subscribed to the same names ([`names::share`]).
    names: Arc<NameSet>,
    /// What the client holds (or will, once in-flight responses are ACKed). [`FOREIGN`] for a
    /// version string we did not produce: always resent.
    held: Held,
    /// Subscribed names to send even if unchanged.
    forced: NameSet,
    in_flight: VecDeque<InFlight>,
    /// Snapshot version of the last computed push: a publish with the same version has nothing.
    synced: Option<Arc<str>>,
    rejected: Option<Arc<str>>,
}

/// Per-stream delta state.
#[derive(Debug)]
pub(super) struct DeltaState {
    common: StreamCommon,
    types: [Option<TypeState>; ResourceType::COUNT],
}

impl DeltaState {
    pub(super) fn new(only: Option<ResourceType>) -> Self {
        Self {
            common: StreamCommon::new(only),
            types: Default::default(),
        }
    }

    /// Handles one request; returns the responses to send.
    pub(super) fn on_request(
        &mut self,
        ctx: &StreamContext,
        req: DeltaDiscoveryRequest,
    ) -> Result<Vec<DeltaResponse>, Status> {
        let Some(ty) = self.common.request_type(&req.type_url, &ctx.node_id)? else {
            return Ok(Vec::new());
        };
        let first = self.types[ty.index()].is_none();
        let known = self.common.snapshot.clone();
        let intern = |name: &str| match &known {
            Some(snapshot) => snapshot.of(ty).intern(name),
            None => Arc::from(name),
        };
        // On-demand snapshots: a wildcard subscription covers only some clusters.
        let covered = |name: &str| known.as_ref().is_none_or(|s| s.in_wildcard(ty, name));
        let state = self.types[ty.index()].get_or_insert_with(TypeState::default);
        if first {
            state.wildcard = ty.is_wildcard_by_default() && req.resource_names_subscribe.is_empty();
            for (name, version) in &req.initial_resource_versions {
                let version = hash::parse_version(version).unwrap_or(FOREIGN);
                state.held.set(intern(name), Some(version));
            }
        } else if !req.response_nonce.is_empty() {
            Self::answer(ctx, ty, state, &req);
        }
        if !req.resource_names_subscribe.is_empty() {
            Arc::make_mut(&mut state.names).reserve(req.resource_names_subscribe.len());
        }
        for name in &req.resource_names_subscribe {
            if name == "*" {
                if !state.wildcard {
                    let names = &state.names;
                    state
                        .held
                        .pin_all(ty, |n| names.contains(n), |n| covered(n));
                }
                state.wildcard = true;
            } else {
                let name = intern(name);
                let wanted_before =
                    (state.wildcard && covered(&name)) || state.names.contains(&name);
                state.held.pin(ty, &name, wanted_before, true);
                if ty.is_wildcard_by_default() && !state.held.diff_names().any(|n| *n == name) {
                    // A listener or cluster asked for by name is looked at in the next push
                    // even if it exists nowhere, so that its absence can be said.
                    let held = state.held.get(ty, &name, wanted_before);
                    state.held.set(name.clone(), held);
                }
                if Arc::make_mut(&mut state.names)
                    .insert(name.clone(), ())
                    .is_some()
                {
                    state.forced.insert(name, ());
                }
            }
        }
        for name in &req.resource_names_unsubscribe {
            if name == "*" {
                // The client drops what only the wildcard brought (Envoy clears its wildcard
                // resource state), so those names are held no more: not pinned, they read as
                // not held once unwanted, and are sent again if wanted again.
                state.wildcard = false;
            } else {
                Arc::make_mut(&mut state.names).remove(name);
                state.forced.remove(name);
                match state.wildcard && covered(name) {
                    // Still wanted through the wildcard: resend it if asked again.
                    true => state.held.set(intern(name), None),
                    false => state.held.forget(name),
                }
            }
        }
        if !req.resource_names_subscribe.is_empty() || !req.resource_names_unsubscribe.is_empty() {
            Arc::make_mut(&mut state.names).shrink_to_fit();
            state.names = names::share(state.names.clone());
        }
        let subscribed = first || !req.resource_names_subscribe.is_empty();
        Ok(self.push(ctx, ty, subscribed).into_iter().collect())
    }

    /// Takes a newly published snapshot; returns the responses it calls for, in push order.
    pub(super) fn on_snapshot(
        &mut self,
        ctx: &StreamContext,
        snapshot: Arc<Snapshot>,
    ) -> Vec<DeltaResponse> {
        self.common.snapshot = Some(snapshot);
        ResourceType::ALL
            .into_iter()
            .filter_map(|ty| self.push(ctx, ty, false))
            .collect()
    }

    /// Applies an ACK or NACK of an in-flight response.
    fn answer(
        ctx: &StreamContext,
        ty: ResourceType,
        state: &mut TypeState,
        req: &DeltaDiscoveryRequest,
    ) {
        let Some(pos) = state
            .in_flight
            .iter()
            .position(|f| f.nonce == req.response_nonce)
        else {
            tracing::debug!(node_id = %ctx.node_id, %ty, nonce = %req.response_nonce, "stale nonce ignored");
            return;
        };
        // Envoy answers responses in order; older ones still listed were answered implicitly.
        let answered = state
            .in_flight
            .drain(..=pos)
            .next_back()
            .expect("pos is in range");
        // An idle stream has nothing in flight; it need not keep room for it either.
        state.in_flight.shrink_to_fit();
        match &req.error_detail {
            None => ctx
                .cache
                .status()
                .acked(ctx.stream_id, ty, &answered.version),
            Some(error) => {
                state.held = answered.before;
                state.rejected = Some(answered.version.clone());
                ctx.cache.status().nacked(
                    ctx.stream_id,
                    Nack {
                        node_id: ctx.node_id.clone(),
                        node_type: ctx.node_type.clone(),
                        resource_type: ty,
                        rejected_version: answered.version.to_string(),
                        message: error.message.clone(),
                        at: std::time::SystemTime::now(),
                    },
                );
            }
        }
    }

    /// Sends what the client lacks for `ty`. `requested`: the client just (re)subscribed, so
    /// answer now, even while another response is in flight or the content was rejected before.
    fn push(
        &mut self,
        ctx: &StreamContext,
        ty: ResourceType,
        requested: bool,
    ) -> Option<DeltaResponse> {
        let snapshot = self.common.snapshot.clone()?;
        let state = self.types[ty.index()].as_mut()?;
        let version = snapshot.version(ty);
        if !requested
            && (!state.in_flight.is_empty()
                || state.synced.as_ref() == Some(version)
                || state.rejected.as_ref() == Some(version))
        {
            return None;
        }
        let first_answer = state.synced.is_none();
        state.synced = Some(version.clone());
        let current = snapshot.of(ty);
        let wanted = |name: &str| {
            (state.wildcard && snapshot.in_wildcard(ty, name)) || state.names.contains(name)
        };
        let held = |name: &str| state.held.get(ty, name, wanted(name));
        // Only these names can differ from what the client holds: what changed since its base
        // snapshot, where it differs from that base, and what it asked for again.
        let mut candidates: Vec<Arc<str>> = match state.held.base() {
            Some(base) => {
                let changes = snapshot.changes_since(base, ty);
                changes
                    .changed
                    .iter()
                    .chain(changes.removed.iter())
                    .cloned()
                    .collect()
            }
            None => current.resources().keys().cloned().collect(),
        };
        candidates.extend(state.held.diff_names().chain(state.forced.names()).cloned());
        candidates.sort_unstable();
        candidates.dedup();
        let changed: Vec<_> = candidates
            .iter()
            .filter(|name| wanted(name))
            .filter_map(|name| current.get(name))
            .filter(|r| state.forced.contains(r.name()) || held(r.name()) != Some(r.hash()))
            .cloned()
            .collect();
        let removed: Vec<Arc<str>> = candidates
            .iter()
            .filter(|name| wanted(name) && current.get(name).is_none() && held(name).is_some())
            .cloned()
            .collect();
        // A listener or cluster subscribed by name that does not exist is said so, as the
        // protocol has it: a resource with the name and nothing else (gRPC clients subscribe
        // these by name). Once: the name then leaves the candidates until it changes.
        // On-demand, Envoy asks by name on a wildcard stream too.
        let by_name = !state.wildcard || snapshot.is_on_demand();
        let absent: Vec<Arc<str>> = match ty.is_wildcard_by_default() && by_name {
            true => candidates
                .iter()
                .filter(|name| state.names.contains(name))
                .filter(|name| current.get(name).is_none() && held(name).is_none())
                .cloned()
                .collect(),
            false => Vec::new(),
        };
        // A wildcard type is answered once even when empty, so Envoy can finish initializing.
        let must_answer = first_answer && state.wildcard && state.held.is_empty();
        let send = !changed.is_empty() || !removed.is_empty() || !absent.is_empty() || must_answer;
        let before = send.then(|| state.held.clone());
        // Sent or not, the client now holds this snapshot's version of every name it wants.
        let (names, wildcard) = (&state.names, state.wildcard);
        let covered = |n: &str| wildcard && snapshot.in_wildcard(ty, n);
        state
            .held
            .rebase(snapshot.clone(), |n| covered(n) || names.contains(n));
        let before = before?;
        state.forced.clear();
        let nonce = self.common.nonce();
        state.in_flight.push_back(InFlight {
            nonce: nonce.clone(),
            version: version.clone(),
            before,
        });
        ctx.cache.status().sent(ctx.stream_id, ty, version);
        Some(DeltaResponse {
            system_version_info: version.to_string(),
            resources: changed
                .iter()
                .map(|r| Encoded(r.delta_resource_bytes().clone()))
                .chain(absent.iter().map(|name| does_not_exist(ctx, ty, name)))
                .collect(),
            type_url: ty.type_url().to_owned(),
            nonce,
            removed_resources: removed.iter().map(|n| n.to_string()).collect(),
        })
    }
}

/// A `Resource` with only its name: "this subscribed resource does not exist".
fn does_not_exist(ctx: &StreamContext, ty: ResourceType, name: &str) -> Encoded {
    use prost::Message;
    ctx.cache.status().not_found(NotFound {
        node_id: ctx.node_id.clone(),
        node_type: ctx.node_type.clone(),
        resource_type: ty,
        name: name.to_owned(),
        at: std::time::SystemTime::now(),
    });
    let resource = envoy_types::pb::envoy::service::discovery::v3::Resource {
        name: name.to_owned(),
        ..Default::default()
    };
    Encoded(resource.encode_to_vec().into())
}

#[cfg(test)]
mod tests;
