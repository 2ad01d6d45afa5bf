//! Delta (incremental) protocol state for one stream (ADS or a per-type service).
//!
//! Pure state: requests and snapshots in, responses out. The stream runner does the I/O.
//!
//! The server tracks, per type, the version of each resource the client holds. It starts from
//! `initial_resource_versions` on (re)connect, so nothing Envoy already has is resent, and it is
//! updated optimistically when a response is sent; a NACK restores what the response replaced.
//! - Responses caused by a publish wait until the previous one of that type is ACKed or NACKed,
//!   then carry the newest content only (coalesced).
//! - A NACKed version is never resent; the next publish of different content is.
//! - A name subscribed again while already subscribed (Envoy re-warming a cluster) is answered
//!   even if unchanged.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use tonic::Status;

use super::names::{NameMap, NameSet};
use super::wire::{DeltaResponse, Encoded};
use super::StreamContext;
use crate::cache::Nack;
use crate::snapshot::{hash, ResourceType, Snapshot};

/// The client's version of a resource when it reported one we did not produce. A content hash
/// equal to it (a 1 in 2^64 chance) would mean one resource is not resent.
const FOREIGN: u64 = 0;

/// A response not yet ACKed: what to restore if it is NACKed.
#[derive(Debug)]
struct InFlight {
    nonce: String,
    version: Arc<str>,
    /// The client's previous version of each resource the response changed.
    undo: Vec<(Arc<str>, Option<u64>)>,
}

#[derive(Debug, Default)]
struct TypeState {
    wildcard: bool,
    names: NameSet,
    /// Resource name → content hash the client holds (or will, once in-flight responses are
    /// ACKed). [`FOREIGN`] for a version string we did not produce: always resent.
    client: NameMap<u64>,
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
    only: Option<ResourceType>,
    types: [Option<TypeState>; ResourceType::COUNT],
    snapshot: Option<Arc<Snapshot>>,
    next_nonce: u64,
    unknown_types_logged: BTreeSet<String>,
}

impl DeltaState {
    pub(super) fn new(only: Option<ResourceType>) -> Self {
        Self {
            only,
            types: Default::default(),
            snapshot: None,
            next_nonce: 1,
            unknown_types_logged: BTreeSet::new(),
        }
    }

    /// Handles one request; returns the responses to send.
    pub(super) fn on_request(
        &mut self,
        ctx: &StreamContext,
        req: DeltaDiscoveryRequest,
    ) -> Result<Vec<DeltaResponse>, Status> {
        let Some(ty) = super::request_type(
            self.only,
            &req.type_url,
            &mut self.unknown_types_logged,
            &ctx.node_id,
        )?
        else {
            return Ok(Vec::new());
        };
        let first = self.types[ty.index()].is_none();
        let known = self.snapshot.clone();
        let intern = |name: &str| match &known {
            Some(snapshot) => snapshot.of(ty).intern(name),
            None => Arc::from(name),
        };
        let state = self.types[ty.index()].get_or_insert_with(TypeState::default);
        if first {
            state.wildcard = ty.is_wildcard_by_default() && req.resource_names_subscribe.is_empty();
            for (name, version) in &req.initial_resource_versions {
                state.client.insert(
                    intern(name),
                    hash::parse_version(version).unwrap_or(FOREIGN),
                );
            }
        } else if !req.response_nonce.is_empty() {
            Self::answer(ctx, ty, state, &req);
        }
        for name in &req.resource_names_subscribe {
            if name == "*" {
                state.wildcard = true;
            } else if state.names.insert(intern(name), ()).is_some() {
                state.forced.insert(intern(name), ());
            }
        }
        for name in &req.resource_names_unsubscribe {
            if name == "*" {
                state.wildcard = false;
            } else {
                state.names.remove(name);
                state.client.remove(name);
                state.forced.remove(name);
            }
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
        self.snapshot = Some(snapshot);
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
        match &req.error_detail {
            None => ctx
                .cache
                .status()
                .acked(ctx.stream_id, ty, &answered.version),
            Some(error) => {
                for (name, previous) in answered.undo {
                    match previous {
                        Some(previous) => state.client.insert(name, previous),
                        None => state.client.remove(&name),
                    };
                }
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
        let snapshot = self.snapshot.clone()?;
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
        let wanted = |name: &str| state.wildcard || state.names.contains(name);
        let changed: Vec<_> = current
            .resources()
            .values()
            .filter(|r| wanted(r.name()))
            .filter(|r| {
                state.forced.contains(r.name()) || state.client.get(r.name()) != Some(r.hash())
            })
            .cloned()
            .collect();
        let removed: Vec<Arc<str>> = state
            .client
            .names()
            .filter(|name| wanted(name) && current.get(name).is_none())
            .cloned()
            .collect();
        // A wildcard type is answered once even when empty, so Envoy can finish initializing.
        let must_answer = first_answer && state.wildcard && state.client.is_empty();
        if changed.is_empty() && removed.is_empty() && !must_answer {
            return None;
        }
        state.forced.clear();
        let mut undo = Vec::with_capacity(changed.len() + removed.len());
        for r in &changed {
            let previous = state.client.insert(r.name().clone(), r.hash());
            undo.push((r.name().clone(), previous));
        }
        for name in &removed {
            let previous = state.client.remove(name);
            undo.push((name.clone(), previous));
        }
        let nonce = self.next_nonce.to_string();
        self.next_nonce += 1;
        state.in_flight.push_back(InFlight {
            nonce: nonce.clone(),
            version: version.clone(),
            undo,
        });
        ctx.cache.status().sent(ctx.stream_id, ty, version);
        Some(DeltaResponse {
            system_version_info: version.to_string(),
            resources: changed
                .iter()
                .map(|r| Encoded(r.delta_resource_bytes().clone()))
                .collect(),
            type_url: ty.type_url().to_owned(),
            nonce,
            removed_resources: removed.iter().map(|n| n.to_string()).collect(),
        })
    }
}
