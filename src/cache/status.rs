//! What each connected Envoy has been sent, has ACKed and has rejected (and, in
//! `denials.rs`, what services' rules in shadow would have denied).
//!
//! The serve module writes here as streams progress; the admin view reads it. A std `Mutex` is
//! fine: every critical section is a few field writes, never held across an `.await`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::denials::ShadowDenials;
use crate::snapshot::ResourceType;

/// How many recent NACKs are kept across all nodes.
const RECENT_NACKS: usize = 256;

/// A rejected response: Envoy kept its previous config and said why.
#[derive(Debug, Clone, PartialEq)]
pub struct Nack {
    pub node_id: String,
    pub node_type: String,
    pub resource_type: ResourceType,
    /// The version Envoy rejected (the one we sent with the NACKed nonce).
    pub rejected_version: String,
    /// Envoy's `error_detail.message`.
    pub message: String,
    pub at: SystemTime,
}

/// A client asked by name for a listener or cluster its node type does not have (a gRPC client
/// dialing a target nobody serves, mostly).
#[derive(Debug, Clone, PartialEq)]
pub struct NotFound {
    pub node_id: String,
    pub node_type: String,
    pub resource_type: ResourceType,
    pub name: String,
    /// When it was last reported to the client.
    pub at: SystemTime,
}

/// The xDS state of one resource type on one stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TypeStatus {
    pub sent_version: Option<Arc<str>>,
    pub acked_version: Option<Arc<str>>,
    /// Boxed: NACKs are rare, and this sits in every stream's status, on thousands of streams.
    pub last_nack: Option<Box<Nack>>,
}

/// One connected stream.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamStatus {
    pub node_id: String,
    pub node_type: String,
    /// The zone and region it is served in, "" for none: its verified certificate's when that
    /// names them, else those the node states (`node.locality`).
    pub location: super::Location,
    /// The service the node says it is ([`super::service_of`]), "" for none: which backend set
    /// it gets.
    pub caller: String,
    /// The SPIFFE ID of the client certificate the connection verified, when it presented one:
    /// then `caller` is that certificate's service, not the node's claim.
    pub identity: Option<Arc<str>>,
    /// `ads`, `cds`, `eds`, `lds`, `rds` or `sds`.
    pub service: &'static str,
    /// `sotw` or `delta`.
    pub mode: &'static str,
    pub types: [TypeStatus; ResourceType::COUNT],
    /// When it connected (set by [`StatusRegistry::connect`]).
    pub connected_at: Option<SystemTime>,
}

/// Counters of protocol events, per resource type.
#[derive(Debug, Default)]
pub struct Counters {
    pushes: [AtomicU64; ResourceType::COUNT],
    acks: [AtomicU64; ResourceType::COUNT],
    nacks: [AtomicU64; ResourceType::COUNT],
    /// Streams refused for their identity, by reason.
    refused: Mutex<BTreeMap<&'static str, u64>>,
}

impl Counters {
    /// Responses sent of this type.
    pub fn pushes(&self, ty: ResourceType) -> u64 {
        self.pushes[ty.index()].load(Ordering::Relaxed)
    }
    /// ACKs received of this type.
    pub fn acks(&self, ty: ResourceType) -> u64 {
        self.acks[ty.index()].load(Ordering::Relaxed)
    }
    /// NACKs received of this type.
    pub fn nacks(&self, ty: ResourceType) -> u64 {
        self.nacks[ty.index()].load(Ordering::Relaxed)
    }
    /// Counts a stream refused for its identity (a certificate naming another service or zone
    /// than the node claims, or no workload of the mesh).
    pub fn refused(&self, reason: &'static str) {
        *self.refused.lock().unwrap().entry(reason).or_default() += 1;
    }
    /// Streams refused for their identity so far, by reason.
    pub fn refusals(&self) -> BTreeMap<&'static str, u64> {
        self.refused.lock().unwrap().clone()
    }
}

/// Registry of connected streams and recent NACKs.
#[derive(Debug, Default)]
pub struct StatusRegistry {
    next_id: AtomicU64,
    /// Boxed: a map's slots are sized for the largest value and kept at up to twice the
    /// number of streams, so inline statuses would cost twice their size per stream.
    streams: Mutex<HashMap<u64, Box<StreamStatus>>>,
    recent_nacks: Mutex<VecDeque<Nack>>,
    recent_not_found: Mutex<VecDeque<NotFound>>,
    counters: Counters,
    shadow_denials: ShadowDenials,
}

impl StatusRegistry {
    /// Registers a stream; the returned id keys later updates.
    pub fn connect(&self, mut status: StreamStatus) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        status.connected_at = Some(SystemTime::now());
        self.streams.lock().unwrap().insert(id, Box::new(status));
        id
    }

    /// Forgets a stream that ended.
    pub fn disconnect(&self, id: u64) {
        self.streams.lock().unwrap().remove(&id);
    }

    /// Records a response sent.
    pub fn sent(&self, id: u64, ty: ResourceType, version: &Arc<str>) {
        self.counters.pushes[ty.index()].fetch_add(1, Ordering::Relaxed);
        self.update(id, ty, |t| t.sent_version = Some(version.clone()));
    }

    /// Records an ACK of `version`.
    pub fn acked(&self, id: u64, ty: ResourceType, version: &Arc<str>) {
        self.counters.acks[ty.index()].fetch_add(1, Ordering::Relaxed);
        self.update(id, ty, |t| t.acked_version = Some(version.clone()));
    }

    /// Records a NACK, logged at warn with the node and Envoy's message.
    pub fn nacked(&self, id: u64, nack: Nack) {
        tracing::warn!(
            node_id = %nack.node_id,
            node_type = %nack.node_type,
            resource_type = %nack.resource_type,
            rejected_version = %nack.rejected_version,
            error = %nack.message,
            "Envoy rejected a config (NACK); it keeps its previous one and this version is not resent"
        );
        self.counters.nacks[nack.resource_type.index()].fetch_add(1, Ordering::Relaxed);
        let ty = nack.resource_type;
        {
            let mut recent = self.recent_nacks.lock().unwrap();
            if recent.len() == RECENT_NACKS {
                recent.pop_front();
            }
            recent.push_back(nack.clone());
        }
        self.update(id, ty, |t| t.last_nack = Some(Box::new(nack)));
    }

    /// Records that a client was told a resource it asked for does not exist, logged (at
    /// warn) the first time for that node and name.
    pub fn not_found(&self, missing: NotFound) {
        let mut recent = self.recent_not_found.lock().unwrap();
        let same = |n: &NotFound| {
            (&n.node_id, n.resource_type, &n.name)
                == (&missing.node_id, missing.resource_type, &missing.name)
        };
        if let Some(known) = recent.iter_mut().find(|n| same(n)) {
            known.at = missing.at;
            return;
        }
        tracing::warn!(
            node_id = %missing.node_id,
            node_type = %missing.node_type,
            resource_type = %missing.resource_type,
            name = %missing.name,
            "a client asked for a resource its node type does not have; told it does not exist"
        );
        if recent.len() == RECENT_NACKS {
            recent.pop_front();
        }
        recent.push_back(missing);
    }

    /// Resources recently reported as not existing, oldest first.
    pub fn recent_not_found(&self) -> Vec<NotFound> {
        self.recent_not_found
            .lock()
            .unwrap()
            .iter()
            .cloned()
            .collect()
    }

    /// Every connected stream.
    pub fn streams(&self) -> Vec<StreamStatus> {
        self.streams
            .lock()
            .unwrap()
            .values()
            .map(|s| StreamStatus::clone(s))
            .collect()
    }

    /// Recent NACKs, oldest first.
    pub fn recent_nacks(&self) -> Vec<Nack> {
        self.recent_nacks.lock().unwrap().iter().cloned().collect()
    }

    /// Protocol event counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// What services' rules in shadow would have denied, as their Envoys report it.
    pub fn shadow_denials(&self) -> &ShadowDenials {
        &self.shadow_denials
    }

    fn update(&self, id: u64, ty: ResourceType, f: impl FnOnce(&mut TypeStatus)) {
        if let Some(stream) = self.streams.lock().unwrap().get_mut(&id) {
            f(&mut stream.types[ty.index()]);
        }
    }
}
