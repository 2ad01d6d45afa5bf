//! The inventory: every Envoy cluster discovery found, as plain data. Discovery produces it,
//! synthesis reads it, the admin server and `ecs-xds discover` show it; no AWS type is in it.
//! It serializes as JSON (`ecs-xds discover --json`, read back by `run`, `render` and
//! `validate --inventory`).
//!
//! The traffic policy values ([`RoutePolicy`], [`CircuitBreakers`], [`OutlierDetection`],
//! [`LbPolicy`]) are what a service asks for with its tags and labels, already parsed
//! (`discover::labels`); applying them is synthesis's job.

use std::collections::BTreeMap;
use std::time::Duration;

use globset::{Glob, GlobMatcher};
use serde::{Deserialize, Serialize};

mod diff;
mod security;
pub use diff::{InventoryDiff, Names};
pub use security::{
    parse_allow_from, parse_authz, AllowFrom, AuthzMode, MtlsMode, Security, Workload,
};

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
    /// What this service calls (`<prefix>backends`, see `discover::backends`): its Envoys are served
    /// only these clusters. `None`: not declared, so they get the node type's whole scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backends: Option<Vec<String>>,
    /// Who may call it and how (`<prefix>mtls`, `allow-from`, `authz`), and where it runs.
    #[serde(default, skip_serializing_if = "Security::is_empty")]
    pub security: Security,
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
    /// `Some(false)`: serve this service's endpoints in every region at priority 0, rather
    /// than the Envoy's own region first, when it is found in several regions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region_failover: Option<bool>,
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

/// Settings of the generated route to a service. `None`: the template's `[route_defaults]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutePolicy {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde"
    )]
    pub timeout: Option<Duration>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde"
    )]
    pub idle_timeout: Option<Duration>,
    /// `Some(0)` turns retries off, whatever the template says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde"
    )]
    pub per_try_timeout: Option<Duration>,
    /// Canary or blue/green: traffic shares by task-definition revision, in the order written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weights: Vec<RevisionWeight>,
    /// More names apps call it by (`<prefix>hosts`, e.g. `orders.prod.local`): domains of its
    /// virtual host on a node type that intercepts the app's traffic.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// What its apps speak (`<prefix>protocol`); `None`: HTTP, or TCP where it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
}

/// What a service's port speaks, for redirected traffic: `Tcp` is never inspected for HTTP
/// (a database whose server speaks first would wait for the inspector's timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Http,
    Tcp,
}

impl std::str::FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "http" => Ok(Self::Http),
            "tcp" => Ok(Self::Tcp),
            _ => Err(format!("unknown protocol `{s}` (http, tcp)")),
        }
    }
}

impl RoutePolicy {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// One `revision=weight` of `<prefix>weights`. Weights are relative (percentages, usually).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevisionWeight {
    pub revision: u32,
    pub weight: u32,
}

/// The DEFAULT-priority circuit breaker thresholds a service asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CircuitBreakers {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending_requests: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
}

impl CircuitBreakers {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Outlier detection settings a service asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutlierDetection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_5xx: Option<u32>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde"
    )]
    pub interval: Option<Duration>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde"
    )]
    pub base_ejection_time: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Option<u32>,
}

impl OutlierDetection {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// One declared item, compiled.
#[derive(Debug, Clone)]
pub struct BackendPattern {
    pub item: String,
    /// `None` for a plain name, compared as it is: compiling a glob builds a regex, and a
    /// thousand services declaring five names each are synthesized on every change.
    glob: Option<GlobMatcher>,
}

impl BackendPattern {
    /// Compiles an item `discover::backends::parse` accepted (an invalid glob matches nothing).
    pub fn new(item: &str) -> BackendPattern {
        let glob = item.contains(['*', '?', '[', '{']).then(|| {
            let glob = Glob::new(item).unwrap_or_else(|_| Glob::new("").expect("empty glob"));
            glob.compile_matcher()
        });
        BackendPattern {
            item: item.to_owned(),
            glob,
        }
    }

    /// A plain name rather than a glob: one that matches nothing is reported, and its route
    /// answers 503.
    pub fn is_literal(&self) -> bool {
        self.glob.is_none()
    }

    fn is_match(&self, name: &str) -> bool {
        match &self.glob {
            Some(glob) => glob.is_match(name),
            None => self.item == name,
        }
    }

    /// True when `cluster` is this item's: by cluster name, or by its ECS service's name.
    pub fn matches(&self, cluster: &Cluster) -> bool {
        self.is_match(&cluster.name)
            || matches!(&cluster.source, Source::Ecs { service, .. } if self.is_match(service))
    }
}
