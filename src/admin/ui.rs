//! `/ui`, the operator's page, and the JSON it reads besides `/nodes`: `/inventory`, `/graph`,
//! `/changes`, `/explain/{node_id}` and `/csds/{node_id}`.
//!
//! The page is four files embedded in the binary (no CDN, no node toolchain): it polls the
//! JSON every 2 s. The JSON follows the push API's token rule: a configured `admin.token` is
//! required (`Authorization: Bearer`, which the page sends once the operator has typed it), and
//! on a listener that is not loopback with no token the views are off (403), fail safe. The
//! page itself holds no data and is served to anyone who reaches the listener; it is sent with
//! a content security policy that lets it load and call nothing but this server.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::changes::KEPT;
use super::explain::Explanation;
use super::graph::Graph;
use super::AdminState;

/// Who may read the views.
#[derive(Debug, Clone)]
pub enum UiAccess {
    /// Loopback, no token: anyone on this host.
    Open,
    /// Whoever presents the token.
    Token(Arc<str>),
    /// Not loopback and no token: nobody.
    Off(SocketAddr),
}

impl UiAccess {
    /// The rule for an admin listener on `listen` with `token` configured.
    pub fn new(listen: SocketAddr, token: Option<String>) -> UiAccess {
        match token {
            Some(token) => UiAccess::Token(token.into()),
            None if super::is_loopback(listen) => UiAccess::Open,
            None => UiAccess::Off(listen),
        }
    }
}

const INDEX: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/app.css");
const ICON: &str = include_str!("ui/favicon.svg");
/// The page loads, calls and frames nothing but this server.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The page and its views, to merge into the admin router.
pub fn routes(state: AdminState) -> Router {
    let views = Router::new()
        .route("/inventory", get(inventory))
        .route("/graph", get(graph))
        .route("/changes", get(changes))
        .route("/explain/{node_id}", get(explain))
        .route("/csds/{node_id}", get(csds))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state);
    Router::new()
        .route(
            "/ui",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/ui/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/ui/app.js",
            get(|| async { asset("text/javascript", SCRIPT) }),
        )
        .route("/ui/app.css", get(|| async { asset("text/css", STYLE) }))
        .route(
            "/ui/favicon.svg",
            get(|| async { asset("image/svg+xml", ICON) }),
        )
        .merge(views)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let headers = [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_SECURITY_POLICY, POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::CACHE_CONTROL, "no-cache"),
    ];
    (headers, body).into_response()
}

async fn authorize(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    match &state.ui {
        UiAccess::Open => next.run(request).await,
        UiAccess::Off(listen) => refuse(
            StatusCode::FORBIDDEN,
            format!("the views are off: admin.listen {listen} is not loopback and no admin.token (or ECS_XDS_ADMIN_TOKEN) is set"),
        ),
        UiAccess::Token(token) => {
            let presented = (request.headers().get(header::AUTHORIZATION))
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            match presented.is_some_and(|p| super::push::same(p.as_bytes(), token.as_bytes())) {
                true => next.run(request).await,
                false => {
                    let message = "a bearer token is required (Authorization: Bearer <admin.token>)";
                    let mut response = refuse(StatusCode::UNAUTHORIZED, message.into());
                    let challenge = HeaderValue::from_static("Bearer realm=\"ecs-xds\"");
                    response.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
                    response
                }
            }
        }
    }
}

fn refuse(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// The last complete inventory, as `ecs-xds discover --json` prints it.
async fn inventory(State(state): State<AdminState>) -> Response {
    let inventory = state.inventory.borrow().clone();
    Json(&*inventory).into_response()
}

async fn graph(State(state): State<AdminState>) -> Json<Graph> {
    let inventory = state.inventory.borrow().clone();
    Json(Graph::of(&inventory))
}

async fn changes(State(state): State<AdminState>) -> Response {
    Json(json!({ "kept": KEPT, "changes": state.changes.recent() })).into_response()
}

async fn explain(State(state): State<AdminState>, Path(node_id): Path<String>) -> Response {
    match Explanation::of(&state.cache, &state.replica, &node_id) {
        Some(explained) => Json(explained).into_response(),
        None => not_connected(&state, &node_id),
    }
}

async fn csds(State(state): State<AdminState>, Path(node_id): Path<String>) -> Response {
    if !state
        .cache
        .status()
        .streams()
        .iter()
        .any(|s| s.node_id == node_id)
    {
        return not_connected(&state, &node_id);
    }
    match crate::serve::Csds::dump_json(&state.cache, &node_id) {
        Ok(dump) => Json(dump).into_response(),
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

fn not_connected(state: &AdminState, node_id: &str) -> Response {
    let message = format!(
        "no Envoy with node id {node_id:?} is connected to replica {}",
        state.replica
    );
    refuse(StatusCode::NOT_FOUND, message)
}
