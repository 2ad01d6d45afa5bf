//! The identity endpoint: `POST /v1/certificate` on its own HTTPS listener, where agents trade
//! a proof and a CSR for a certificate.
//!
//! It is a new door into the mesh, so it gives little away and holds nothing for long:
//! - a body over `max_body_bytes` is refused (413) without being read whole, and a request must
//!   arrive whole within `request_timeout` (408); the listener's header deadline and connection
//!   cap hold off slow and many clients;
//! - a malformed request is told what is wrong with it (400); a refused identity gets only a
//!   reference (403), while the reason and its details go to the log and the metrics: a caller
//!   probing which check failed learns nothing;
//! - STS or ECS being unreachable is a 503, which agents retry.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::attest::{Attestor, CertificateRequest, Denied};
use super::{CaHolder, IdentityStats};
use crate::http_listener::PeerAddr;

/// The path agents post to.
pub const CERTIFICATE_PATH: &str = "/v1/certificate";

/// What an agent gets back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CertificateResponse {
    /// The workload certificate, then the intermediates (PEM).
    pub certificate_chain: String,
    /// The roots to trust (PEM): during a CA change, old and new.
    pub trust_bundle: String,
    pub spiffe_id: String,
    /// RFC 3339, UTC.
    pub expires_at: String,
}

/// Everything a request needs.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub attestor: Arc<Attestor>,
    pub ca: CaHolder,
    pub stats: Arc<IdentityStats>,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
}

/// The router of the identity listener.
pub fn router(endpoint: Endpoint) -> Router {
    Router::new()
        .route(CERTIFICATE_PATH, post(certificate))
        .with_state(endpoint)
}

/// An error answer: `{"error": "..."}`.
fn answer(status: StatusCode, message: impl Into<String>) -> Response {
    #[derive(Serialize)]
    struct Error {
        error: String,
    }
    let error = Error {
        error: message.into(),
    };
    (status, Json(error)).into_response()
}

async fn certificate(State(endpoint): State<Endpoint>, request: Request) -> Response {
    let peer = request.extensions().get::<PeerAddr>().map(|p| p.0.ip());
    let read = axum::body::to_bytes(request.into_body(), endpoint.max_body_bytes);
    let body = match tokio::time::timeout(endpoint.request_timeout, read).await {
        Err(_) => {
            endpoint.stats.record("bad_request", "body_timeout");
            return answer(
                StatusCode::REQUEST_TIMEOUT,
                "the request body did not arrive in time",
            );
        }
        Ok(Err(_)) => {
            endpoint.stats.record("bad_request", "body_too_large");
            let limit = endpoint.max_body_bytes;
            return answer(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is over {limit} bytes, or was cut off"),
            );
        }
        Ok(Ok(body)) => body,
    };
    let parsed: CertificateRequest = match serde_json::from_slice(&body) {
        Ok(parsed) => parsed,
        Err(e) => {
            endpoint.stats.record("bad_request", "body_malformed");
            return answer(
                StatusCode::BAD_REQUEST,
                format!("the body is not a certificate request ({{proof, csr, task_arn}}): {e}"),
            );
        }
    };
    let Some(peer) = peer else {
        return answer(StatusCode::INTERNAL_SERVER_ERROR, "no peer address");
    };
    let now = SystemTime::now();
    match endpoint.attestor.attest(&parsed, peer, now).await {
        Ok((id, issued)) => {
            let service = id.service.clone();
            endpoint
                .stats
                .issued(&parsed.task_arn, &service, issued.not_after);
            tracing::info!(spiffe_id = %id, serial = %issued.serial_hex, %peer, "certificate issued");
            let response = CertificateResponse {
                certificate_chain: issued.chain_pem,
                trust_bundle: endpoint.ca.current().bundle_pem().to_owned(),
                spiffe_id: id.to_string(),
                expires_at: humantime::format_rfc3339_seconds(issued.not_after).to_string(),
            };
            (StatusCode::OK, Json(response)).into_response()
        }
        Err(denied) => denial(&endpoint, &parsed.task_arn, peer, denied),
    }
}

/// Logs and counts a denial, and answers the caller only what it may know.
fn denial(endpoint: &Endpoint, task_arn: &str, peer: std::net::IpAddr, denied: Denied) -> Response {
    let reason = denied.reason();
    match denied {
        Denied::BadRequest { detail, .. } => {
            endpoint.stats.record("bad_request", reason);
            tracing::info!(reason, %detail, %peer, "identity request malformed");
            answer(StatusCode::BAD_REQUEST, detail)
        }
        Denied::Refused { detail, .. } => {
            endpoint.stats.record("refused", reason);
            let reference = format!("{:016x}", fastrand::u64(..));
            tracing::warn!(reason, %detail, task_arn, %peer, reference, "identity refused");
            answer(
                StatusCode::FORBIDDEN,
                format!("identity refused (reference {reference}; the reason is in ecs-xds's log)"),
            )
        }
        Denied::Unavailable { detail, .. } => {
            endpoint.stats.record("unavailable", reason);
            tracing::warn!(reason, %detail, "identity could not be checked now");
            answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "the identity could not be checked now; retry",
            )
        }
    }
}
