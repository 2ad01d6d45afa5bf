//! `PUT/GET/DELETE /resources/{node_type}`: the REST push API (sxds compatible), on the admin
//! listener when `push.enabled`.
//!
//! The handlers only parse and authenticate; every change goes to the synthesis loop as a
//! [`PushCommand`] and is answered once it is checked, persisted and published (see
//! [`crate::push::apply`]).
//!
//! | request | answer |
//! | --- | --- |
//! | `PUT` a valid body | 200 `{"node_type", "version", "etag", "resources": {counts}, "warnings": [...]}`, header `ETag` |
//! | `PUT` with `If-Match` naming another version than the push held | 409 |
//! | `PUT` an invalid body | 400 `{"error", "path", "errors": [{"error", "path"}...]}` |
//! | `PUT` with a dangling reference | 400 `{"error", "path"}` naming it |
//! | a body over `push.max_body_bytes` | 413 |
//! | `GET` | 200, the body as it was PUT, with its `ETag`; 404 if nothing is pushed |
//! | `DELETE` | 204; 404 if nothing is pushed |
//! | no or a wrong bearer token (when one is needed) | 401 with `WWW-Authenticate: Bearer` |
//! | before the first complete inventory, or the shared store unreachable | 503 with `Retry-After` |

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use crate::push::{check_node_type, parse, PushCommand, Refused};

/// What the push handlers need: the way to the synthesis loop, and the auth and size rules.
#[derive(Debug, Clone)]
pub struct PushApi {
    commands: mpsc::Sender<PushCommand>,
    /// The bearer token every request must carry, if any.
    token: Option<Arc<str>>,
    max_body_bytes: usize,
}

/// The push API would be reachable from other hosts with no token: refused, fail safe.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "push.enabled with admin.listen {0} (not loopback) needs a bearer token: set admin.token or the environment variable ECS_XDS_ADMIN_TOKEN"
)]
pub struct TokenRequired(pub SocketAddr);

impl PushApi {
    /// The API for an admin listener on `listen`. A configured `token` is always required; on
    /// a non-loopback `listen` one must be configured.
    pub fn new(
        commands: mpsc::Sender<PushCommand>,
        listen: SocketAddr,
        token: Option<String>,
        max_body_bytes: usize,
    ) -> Result<PushApi, TokenRequired> {
        if token.is_none() && !super::is_loopback(listen) {
            return Err(TokenRequired(listen));
        }
        Ok(PushApi {
            commands,
            token: token.map(Into::into),
            max_body_bytes,
        })
    }
}

/// The push routes, to merge into the admin router.
pub fn routes(api: PushApi) -> Router {
    let limit = api.max_body_bytes;
    Router::new()
        .route(
            "/resources/{node_type}",
            get(get_push).put(put_push).delete(delete_push),
        )
        .layer(DefaultBodyLimit::max(limit))
        .route_layer(middleware::from_fn_with_state(api.clone(), authorize))
        .with_state(api)
}

/// Checked before the body is read, so an unauthenticated client cannot make us buffer it.
async fn authorize(State(api): State<PushApi>, request: Request, next: Next) -> Response {
    if let Some(token) = &api.token {
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !presented.is_some_and(|p| same(p.as_bytes(), token.as_bytes())) {
            let mut response = error(
                StatusCode::UNAUTHORIZED,
                "",
                "a bearer token is required (Authorization: Bearer <admin.token>)",
            );
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"ecs-xds\""),
            );
            return response;
        }
    }
    next.run(request).await
}

/// Compares in time independent of where the inputs differ (the length is not secret).
pub(super) fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn put_push(
    State(api): State<PushApi>,
    Path(node_type): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Err(message) = check_node_type(&node_type) {
        return error(StatusCode::BAD_REQUEST, "", &message);
    }
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return error(rejection.status(), "", &rejection.body_text()),
    };
    let resources = match parse(&body) {
        Ok(resources) => resources,
        Err(e) => {
            let first = &e.0[0];
            let value = json!({"error": first.message, "path": first.path, "errors": e.0});
            return json_response(StatusCode::BAD_REQUEST, &value);
        }
    };
    let if_match = headers
        .get(header::IF_MATCH)
        .map(|v| v.to_str().unwrap_or("").to_owned());
    let ask = |reply| PushCommand::Put {
        node_type: node_type.clone(),
        body,
        resources,
        if_match,
        reply,
    };
    match command(&api, ask).await {
        Ok(outcome) => {
            let mut response = json_response(
                StatusCode::OK,
                &json!({
                    "node_type": node_type,
                    "version": outcome.version,
                    "etag": outcome.etag,
                    "resources": outcome.counts,
                    "warnings": outcome.warnings,
                }),
            );
            insert_etag(&mut response, &outcome.etag);
            response
        }
        Err(refused) => refused_response(&refused),
    }
}

async fn get_push(State(api): State<PushApi>, Path(node_type): Path<String>) -> Response {
    if let Err(message) = check_node_type(&node_type) {
        return error(StatusCode::BAD_REQUEST, "", &message);
    }
    let (reply, answer) = oneshot::channel();
    let ask = PushCommand::Get {
        node_type: node_type.clone(),
        reply,
    };
    if api.commands.send(ask).await.is_err() {
        return refused_response(&Refused::Stopped);
    }
    match answer.await {
        Ok(Some(stored)) => {
            let mut response = (
                [(header::CONTENT_TYPE, "application/json")],
                stored.body.clone(),
            )
                .into_response();
            insert_etag(&mut response, &stored.etag());
            response
        }
        Ok(None) => refused_response(&Refused::NotFound(node_type)),
        Err(_) => refused_response(&Refused::Stopped),
    }
}

async fn delete_push(State(api): State<PushApi>, Path(node_type): Path<String>) -> Response {
    if let Err(message) = check_node_type(&node_type) {
        return error(StatusCode::BAD_REQUEST, "", &message);
    }
    let ask = |reply| PushCommand::Delete {
        node_type: node_type.clone(),
        reply,
    };
    match command(&api, ask).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(refused) => refused_response(&refused),
    }
}

/// Sends a command to the synthesis loop and waits for its answer.
async fn command<T>(
    api: &PushApi,
    ask: impl FnOnce(oneshot::Sender<Result<T, Refused>>) -> PushCommand,
) -> Result<T, Refused> {
    let (reply, answer) = oneshot::channel();
    api.commands
        .send(ask(reply))
        .await
        .map_err(|_| Refused::Stopped)?;
    answer.await.unwrap_or(Err(Refused::Stopped))
}

fn refused_response(refused: &Refused) -> Response {
    let (status, path) = match refused {
        Refused::NotFound(_) => (StatusCode::NOT_FOUND, ""),
        Refused::Inconsistent { path, .. } => (StatusCode::BAD_REQUEST, path.as_str()),
        Refused::Persist(_) => (StatusCode::INTERNAL_SERVER_ERROR, ""),
        Refused::Changed(_) => (StatusCode::CONFLICT, ""),
        Refused::NotReady | Refused::Stopped | Refused::Unavailable(_) => {
            (StatusCode::SERVICE_UNAVAILABLE, "")
        }
    };
    let mut response = error(status, path, &refused.to_string());
    if status == StatusCode::SERVICE_UNAVAILABLE {
        let retry = HeaderValue::from_static("1");
        response.headers_mut().insert(header::RETRY_AFTER, retry);
    }
    response
}

/// `ETag: "<version>"`, the form `If-Match` gives back.
fn insert_etag(response: &mut Response, etag: &str) {
    if let Ok(value) = HeaderValue::from_str(&format!("\"{etag}\"")) {
        response.headers_mut().insert(header::ETAG, value);
    }
}

fn error(status: StatusCode, path: &str, message: &str) -> Response {
    json_response(status, &json!({"error": message, "path": path}))
}

fn json_response(status: StatusCode, value: &Value) -> Response {
    let body = value.to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

#[cfg(test)]
mod tests;
