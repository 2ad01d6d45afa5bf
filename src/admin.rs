//! The operator's HTTP endpoint (axum): what ecs-xds is doing, read without touching AWS or
//! Envoy.
//!
//! - `/healthz`: the process is alive.
//! - `/readyz`: 200 once the first complete discovery has been synthesized and published, 503
//!   with the reason before.
//! - `/metrics`: Prometheus/OpenMetrics text ([`metrics`]).
//! - `/nodes`: every connected Envoy and, per resource type, what it was sent, ACKed and
//!   rejected ([`nodes`]).
//! - `/snapshot/{node_type}`: the resources a node type is served, as Envoy JSON (`?zone=`,
//!   `?region=` and `?service=` for an Envoy in that zone and region, of that service).
//! - `/ui`: the operator's page, and the views it reads (`/inventory`, `/graph`, `/changes`,
//!   `/explain/{node_id}`, `/csds/{node_id}`) ([`ui`]).
//! - `/resources/{node_type}`: the REST push API, when `push.enabled` ([`push`]).
//!
//! Every view reads the live state (cache, status registry, counters) at request time, so there
//! is no second copy to keep in sync.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cache::Cache;
use crate::http_listener::{self, ConnectionStats, Limits, Protocol};

pub mod changes;
pub mod explain;
pub mod graph;
pub mod metrics;
pub mod nodes;
pub mod push;
pub mod stats;
pub mod ui;

pub use metrics::Metrics;
pub use stats::{DaemonStats, ReloadErrorKind};

/// What the admin views read. Cheap to clone: handles all the way down.
#[derive(Clone)]
pub struct AdminState {
    pub cache: Cache,
    pub stats: Arc<DaemonStats>,
    pub metrics: Arc<Metrics>,
    /// Which replica answers (ECS task id, or host name).
    pub replica: Arc<str>,
    /// The last complete inventory, for `/inventory` and `/graph`.
    pub inventory: tokio::sync::watch::Receiver<Arc<crate::inventory::Inventory>>,
    /// What changed lately, for `/changes`.
    pub changes: Arc<changes::ChangeLog>,
    /// Who may read `/ui`'s views.
    pub ui: ui::UiAccess,
}

/// The admin routes (without the push API, which the daemon merges in when enabled).
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/nodes", get(nodes))
        .route("/snapshot/{node_type}", get(snapshot))
        .with_state(state.clone())
        .merge(ui::routes(state))
}

/// Serves `router` on `listener` until `shutdown` is cancelled; then lets open connections
/// finish for up to `limits.grace` and closes the rest. A request head must arrive within
/// `limits.first_request`, so a client that never finishes one (a slowloris) is closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    connections: Arc<ConnectionStats>,
    shutdown: CancellationToken,
) {
    http_listener::serve(
        "admin",
        listener,
        router,
        http_listener::Serving {
            protocol: Protocol::Http1,
            limits,
            stats: connections,
            tls: None,
            plaintext_beside_tls: false,
        },
        shutdown,
    )
    .await
}

/// Whether `addr` is reachable only from this host.
pub fn is_loopback(addr: SocketAddr) -> bool {
    addr.ip().is_loopback()
}

async fn readyz(State(state): State<AdminState>) -> Response {
    match state.stats.not_ready_reason() {
        None => (StatusCode::OK, "ready\n").into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<AdminState>) -> Response {
    match state.metrics.encode() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

async fn nodes(State(state): State<AdminState>) -> Json<nodes::NodesView> {
    let cache = &state.cache;
    let backend_set = |node_type: &str, service: &str| cache.backend_set(node_type, service);
    Json(nodes::NodesView::of(
        &state.replica,
        cache.status(),
        backend_set,
    ))
}

/// `?zone=`, `?region=`, `?service=`: what an Envoy in that zone and region, of that
/// service, is served.
#[derive(Debug, serde::Deserialize)]
struct ZoneQuery {
    #[serde(default)]
    zone: String,
    #[serde(default)]
    region: String,
    #[serde(default)]
    service: String,
}

async fn snapshot(
    State(state): State<AdminState>,
    Path(node_type): Path<String>,
    Query(query): Query<ZoneQuery>,
) -> Response {
    let cache = &state.cache;
    let location = crate::cache::Location {
        zone: query.zone,
        region: query.region,
    };
    match cache.snapshot_for(&node_type, &query.service, &location) {
        Some(snapshot) => {
            let mut json = snapshot.to_envoy_json();
            json["places"] = json!(cache.places(&node_type));
            json["backends"] = json!(cache.backend_set(&node_type, &query.service));
            Json(json).into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({
                "error": format!("no snapshot for node type {node_type:?}"),
                "node_types": state.cache.node_types(),
            })),
        )
            .into_response(),
    }
}
