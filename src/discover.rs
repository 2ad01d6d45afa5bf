//! Discover: AWS (ECS, Cloud Map) in, one complete [`Inventory`] out.
//!
//! This is the only module that talks to AWS (the push store's S3 objects included), and no AWS SDK type leaves it: the [`Inventory`]
//! is plain data (serializable as JSON for `ecs-xds discover --json` and `render --inventory`).
//!
//! - [`settings`]: the `[aws]`, `[ecs]`, `[cloud_map]` settings sections.
//! - [`Aws`] (in `aws.rs`): the SDK clients, retries with backoff, and the [`CallCounter`].
//! - `ecs.rs` / `ecs_calls.rs`: one ECS cluster → its part of the inventory (calls in
//!   `ecs_calls.rs`, the pure task → endpoint mapping in `mapping.rs`).
//! - `cloud_map.rs`: one Cloud Map namespace → its part.
//! - [`poller`]: polls every source each interval, keeps the last good part of a failed source,
//!   and publishes only complete inventories that changed.
//! - `s3_objects.rs`: the S3 requests of the shared push store (`push` decides what the
//!   objects mean; the requests live here with every other AWS call).
//! - [`events`] (with `ecs_events.rs` and `reconcile.rs`): with `[events]` on, ECS events from
//!   SQS applied to the poller's facts as they come, and the full poll only every
//!   `events.reconcile_interval`.
//!
//! # Using it
//! ```no_run
//! # async fn demo(settings: ecs_xds::discover::DiscoverSettings) -> Result<(), ecs_xds::discover::DiscoverError> {
//! use std::sync::Arc;
//! use ecs_xds::discover::{Aws, Inventory, Poller};
//! let aws = Aws::connect(&settings).await?; // standard credential chain
//! let calls = aws.calls().clone(); // for the metrics layer
//! let (tx, mut rx) = tokio::sync::watch::channel(Arc::new(Inventory::default()));
//! tokio::spawn(Poller::new(settings, aws)?.run(tx, std::future::pending()));
//! rx.changed().await.ok(); // the first complete inventory
//! # Ok(()) }
//! ```
//! `ecs-xds discover` calls [`discover_once`] and prints [`Inventory::to_table`] or the JSON.
//!
//! # Naming rules
//! - An ECS service exposed on one unnamed port is the cluster `{service}`; each named port
//!   mapping of a service is the cluster `{service}.{port_name}` (both templates configurable,
//!   `ecs.cluster_name` / `ecs.port_cluster_name`; the `<prefix>cluster-name` label or tag
//!   replaces `{service}`).
//! - A Cloud Map service is `{cloud_map.cluster_name_prefix}{service}.{namespace}`.
//! - **Collisions** (the same name from two sources, e.g. service `web` in ECS clusters `a` and
//!   `b`): the source listed first in the settings wins (ECS clusters in `ecs.clusters` order, or
//!   by name when auto-discovered, then Cloud Map namespaces in order). The losing cluster is left
//!   out and a warning naming both is added to [`Inventory::warnings`] and logged. Endpoints
//!   are never merged across sources. Fix a collision with `{ecs_cluster}` in the template or a
//!   `<prefix>cluster-name` tag.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod assemble;
mod aws;
pub mod backends;
mod calls;
mod cloud_map;
mod ecs;
mod ecs_calls;
mod ecs_events;
pub mod events;
mod mapping;
pub mod policy;
pub mod poller;
mod reconcile;
mod s3_objects;
pub mod settings;
mod table;

pub use aws::{Aws, RetryPolicy};
pub use calls::{CallCounter, Outcome};
pub use policy::{
    CircuitBreakers, OutlierDetection, RevisionWeight, RoutePolicy, DEFAULT_RETRY_ON,
};
pub use poller::{
    discover_once, discover_once_with, Observe, Observer, PollCycle, PollReport, Poller,
};
pub use s3_objects::{Condition, Object, Objects, Written};
pub use settings::{
    AwsSettings, CloudMapSettings, DiscoverSettings, EcsSettings, EventsSettings, SettingsErrors,
};

/// Why discovery (or one source of it) failed. Each variant says which step, so the user can act.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoverError {
    /// An AWS request failed after its retries, e.g.
    /// `DescribeTasks on ECS cluster demo failed: ...`.
    #[error("{operation} on {target} failed: {message}")]
    Aws {
        operation: &'static str,
        target: String,
        /// The AWS error code (`ThrottlingException`, `ServiceNotFound`...), when AWS answered.
        code: Option<String>,
        message: String,
    },
    /// A configured source does not exist (an unknown Cloud Map namespace).
    #[error("{target} not found: {message}")]
    NotFound { target: String, message: String },
    #[error("invalid discover settings:\n{0}")]
    Settings(#[from] SettingsErrors),
    #[error("no AWS region configured: set aws.region in the settings file or AWS_REGION")]
    NoRegion,
}

/// Every Envoy cluster discovered in one poll, by cluster name.
///
/// Deterministic: clusters are ordered by name and endpoints by (address, port), so two polls of
/// the same AWS state compare equal and serialize to the same bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    pub clusters: BTreeMap<String, Cluster>,
    /// Things a human should fix (name collisions, unusable labels), sorted. Part of the
    /// value, so a new warning is a change.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Services that declare their backends but serve no port (workers, queue consumers), by
    /// ECS service name: their Envoys call others too. A service with clusters declares on
    /// them ([`Cluster::backends`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub callers: BTreeMap<String, Vec<String>>,
}

/// Why a saved inventory (`ecs-xds discover --json`, for `run`, `render` and `validate
/// --inventory`) could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InventoryFileError {
    #[error("cannot read inventory file {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("inventory file {path} is not an inventory as `ecs-xds discover --json` writes it: {source}")]
    Parse {
        path: std::path::PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

impl Inventory {
    /// Reads a saved inventory, as `ecs-xds discover --json` prints it.
    pub fn read_file(path: &std::path::Path) -> Result<Inventory, InventoryFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| InventoryFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| InventoryFileError::Parse {
            path: path.to_owned(),
            source,
        })
    }
}

/// One Envoy cluster: an ECS service on one port, or a Cloud Map service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cluster {
    pub name: String,
    pub source: Source,
    /// The ECS port mapping name this cluster serves, when the port is named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_name: Option<String>,
    #[serde(default, skip_serializing_if = "ClusterOverrides::is_empty")]
    pub overrides: ClusterOverrides,
    /// The generated route's settings the service asks for (timeouts, retries, weights).
    #[serde(default, skip_serializing_if = "RoutePolicy::is_empty")]
    pub route: RoutePolicy,
    /// What this service calls (`<prefix>backends`, see [`backends`]): its Envoys are served
    /// only these clusters. `None`: not declared, so they get the node type's whole scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backends: Option<Vec<String>>,
    /// Sorted by (address, port); may be empty only for Cloud Map services with no instances.
    pub endpoints: Vec<Endpoint>,
}

/// Where a cluster came from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    Ecs {
        ecs_cluster: String,
        service: String,
    },
    CloudMap {
        namespace: String,
        service: String,
    },
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Ecs {
                ecs_cluster,
                service,
            } => write!(f, "ecs:{ecs_cluster}/{service}"),
            Source::CloudMap { namespace, service } => write!(f, "cloudmap:{namespace}/{service}"),
        }
    }
}

/// Per-cluster Envoy settings asked for by labels or tags. Only parsed here: applying them is
/// synthesis's job. `None` means "the template's default".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterOverrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lb_policy: Option<LbPolicy>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde"
    )]
    pub connect_timeout: Option<Duration>,
    /// Speak HTTP/2 to the endpoints (from `<prefix>http2`, or a port mapping's `appProtocol`
    /// of `http2` or `grpc`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2: Option<bool>,
    #[serde(default, skip_serializing_if = "CircuitBreakers::is_empty")]
    pub circuit_breakers: CircuitBreakers,
    #[serde(default, skip_serializing_if = "OutlierDetection::is_empty")]
    pub outlier_detection: OutlierDetection,
    /// `Some(false)`: serve this service's endpoints without zone priorities, even to a node
    /// type that routes by zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_aware: Option<bool>,
}

impl ClusterOverrides {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Envoy load-balancing policies a label may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LbPolicy {
    RoundRobin,
    LeastRequest,
    Random,
    RingHash,
    Maglev,
}

impl std::str::FromStr for LbPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().replace('-', "_").as_str() {
            "round_robin" => Ok(Self::RoundRobin),
            "least_request" => Ok(Self::LeastRequest),
            "random" => Ok(Self::Random),
            "ring_hash" => Ok(Self::RingHash),
            "maglev" => Ok(Self::Maglev),
            _ => Err(format!(
                "unknown lb policy `{s}` (round_robin, least_request, random, ring_hash, maglev)"
            )),
        }
    }
}

/// One address Envoy may send requests to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// IPv4 address, as text.
    pub address: String,
    pub port: u16,
    pub health: Health,
    pub locality: Locality,
    /// Load-balancing weight (1 unless a `<prefix>weight` label says otherwise).
    pub weight: u32,
    /// The ECS task id, or the Cloud Map instance id.
    pub id: String,
    /// The task definition's revision (ECS tasks), for canary routing by revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u32>,
    /// The ECS deployment that started the task (`startedBy`, e.g. `ecs-svc/1234567890`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
}

/// Endpoint health as Envoy should see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    Healthy,
    Unhealthy,
    /// No health check, or not yet known: Envoy still routes to it.
    Unknown,
    /// Still running but being stopped: Envoy sends no new requests.
    Draining,
}

impl Health {
    /// The name tables, metrics and JSON use.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
            Health::Unknown => "unknown",
            Health::Draining => "draining",
        }
    }
}

/// Where an endpoint runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Locality {
    pub region: String,
    /// Availability zone, when AWS reports one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
}

impl Inventory {
    /// Total number of endpoints over all clusters.
    pub fn endpoint_count(&self) -> usize {
        self.clusters.values().map(|c| c.endpoints.len()).sum()
    }
}
