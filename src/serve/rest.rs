//! xDS over REST-JSON (Envoy's `api_config_source { api_type: REST }`): `POST
//! /v3/discovery:clusters` (`:endpoints`, `:listeners`, `:routes`, `:secrets`) on the xDS
//! listener, a `DiscoveryRequest` in proto3 JSON in, a `DiscoveryResponse` in proto3 JSON out.
//!
//! The answer is the unary fetch's ([`super::fetch`]): the same snapshots, node types, backend
//! sets, zones, resource names and client-certificate rules as gRPC. A poll asking with the
//! current version is answered `304 Not Modified` at once, not held: Envoy's REST client gives
//! each request `request_timeout` (1 s by default) and counts a request held longer as a
//! failure, and it polls again every `refresh_delay` anyway. What each poller was sent and
//! rejected is kept in [`polls`], which reads ACKs and NACKs from versions.

mod polls;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use prost::Message;
use prost_reflect::{DeserializeOptions, DynamicMessage};
use tonic::{Code, Status};

use super::fetch::{self, Fetched};
use super::XdsServer;
use crate::descriptors::pool;
use crate::snapshot::ResourceType;
pub(super) use polls::Polls;
use polls::{Answer, Poll, Poller};

/// The largest request body taken. An Envoy's request is its node (metadata included) and the
/// names it subscribes to: a few KB, up to some hundred KB for a gateway naming thousands of
/// clusters.
pub(super) const MAX_BODY: usize = 1 << 20;

/// The path every REST-JSON type is served under: `/v3/discovery:<type>`.
pub(super) const ROUTE: &str = "/v3/{discovery}";

/// A refused request: its status, and a message saying what was wrong.
#[derive(Debug)]
struct Refused(StatusCode, String);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let allow = (self.0 == StatusCode::METHOD_NOT_ALLOWED).then_some([(header::ALLOW, "POST")]);
        let text = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
        (self.0, text, allow, format!("{}\n", self.1)).into_response()
    }
}

/// Answers one REST-JSON request for the type its path names (`discovery:clusters`).
pub(super) async fn answer(server: XdsServer, discovery: String, req: Request<Body>) -> Response {
    match poll(&server, &discovery, req).await {
        Ok(response) => response,
        Err(refused) => refused.into_response(),
    }
}

async fn poll(
    server: &XdsServer,
    discovery: &str,
    req: Request<Body>,
) -> Result<Response, Refused> {
    let ty = type_of(discovery)?;
    if req.method() != Method::POST {
        let message = format!("xDS over REST-JSON takes POST, not {}", req.method());
        return Err(Refused(StatusCode::METHOD_NOT_ALLOWED, message));
    }
    let verified = match &server.tls {
        Some((_, domain)) => super::peer::workload(&server.cache, req.extensions(), domain),
        None => Ok(None),
    }
    .map_err(refused)?;
    let request = decode(&body(req).await?)?;
    let fetched =
        fetch::fetch(&server.cache, ty, verified.as_deref(), &request).map_err(refused)?;
    let identity = verified.map(|v| Arc::from(v.id.to_string()));
    Ok(respond(server, ty, &request, fetched, identity))
}

/// The resource type of `discovery:<type>`, as Envoy's REST client names them.
fn type_of(discovery: &str) -> Result<ResourceType, Refused> {
    let ty = match discovery.strip_prefix("discovery:") {
        Some("clusters") => ResourceType::Cluster,
        Some("endpoints") => ResourceType::Endpoint,
        Some("listeners") => ResourceType::Listener,
        Some("routes") => ResourceType::Route,
        Some("secrets") => ResourceType::Secret,
        _ => {
            let message = format!(
                "no xDS type is served at /v3/{discovery}: ecs-xds serves /v3/discovery:clusters, \
                 :endpoints, :listeners, :routes and :secrets"
            );
            return Err(Refused(StatusCode::NOT_FOUND, message));
        }
    };
    Ok(ty)
}

async fn body(req: Request<Body>) -> Result<bytes::Bytes, Refused> {
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(Refused(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is over {MAX_BODY} bytes"),
        )),
        Err(e) => Err(Refused(
            StatusCode::BAD_REQUEST,
            format!("the request body could not be read: {e}"),
        )),
    }
}

/// A `DiscoveryRequest` from proto3 JSON. Fields this Envoy's descriptors do not know are
/// ignored, as proto3 JSON parsers may: a newer Envoy's node can carry fields of its own.
fn decode(body: &[u8]) -> Result<DiscoveryRequest, Refused> {
    let bad = |message: String| Refused(StatusCode::BAD_REQUEST, message);
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(bad(
            "the body is empty: POST a DiscoveryRequest in proto3 JSON".into(),
        ));
    }
    let desc = pool()
        .get_message_by_name("envoy.service.discovery.v3.DiscoveryRequest")
        .expect("the descriptor set holds DiscoveryRequest");
    let mut json = serde_json::Deserializer::from_slice(body);
    let mut track = serde_path_to_error::Track::new();
    let de = serde_path_to_error::Deserializer::new(&mut json, &mut track);
    let options = DeserializeOptions::new().deny_unknown_fields(false);
    let dynamic = DynamicMessage::deserialize_with_options(desc, de, &options)
        .map_err(|e| {
            let at = track.path().to_string();
            bad(format!(
                "the body is not a DiscoveryRequest in proto3 JSON: at {at}: {e}"
            ))
        })
        .and_then(|dynamic| match json.end() {
            Ok(()) => Ok(dynamic),
            Err(e) => Err(bad(format!("the body has more after its JSON object: {e}"))),
        })?;
    DiscoveryRequest::decode(dynamic.encode_to_vec().as_slice())
        .map_err(|e| bad(format!("the DiscoveryRequest does not decode: {e}")))
}

/// The fetched resources as a `DiscoveryResponse` in proto3 JSON, or 304 when the poller has
/// them (or rejected them). The nonce is the version: a client reporting an error names what
/// it rejected with it.
fn respond(
    server: &XdsServer,
    ty: ResourceType,
    request: &DiscoveryRequest,
    fetched: Fetched,
    identity: Option<Arc<str>>,
) -> Response {
    let Fetched {
        node_id,
        node_type,
        caller,
        location,
        mut response,
    } = fetched;
    let current: Arc<str> = response.version_info.as_str().into();
    let who = Poller {
        node_id,
        node_type,
        caller,
        location,
        identity,
    };
    let poll = Poll {
        asked: &request.version_info,
        names: &request.resource_names,
        error: request.error_detail.as_ref().map(|e| e.message.as_str()),
        nonce: &request.response_nonce,
        current: &current,
    };
    if server.rest.poll(server.cache.status(), who, ty, poll) == Answer::NotModified {
        return StatusCode::NOT_MODIFIED.into_response();
    }
    response.nonce = response.version_info.clone();
    let desc = pool()
        .get_message_by_name("envoy.service.discovery.v3.DiscoveryResponse")
        .expect("the descriptor set holds DiscoveryResponse");
    let json = DynamicMessage::decode(desc, response.encode_to_vec().as_slice())
        .map_err(|e| e.to_string())
        .and_then(|message| serde_json::to_vec(&message).map_err(|e| e.to_string()));
    match json {
        Ok(json) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            json,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, %ty, "a snapshot did not render as proto3 JSON");
            Refused(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the response did not render".into(),
            )
            .into_response()
        }
    }
}

/// A fetch's refusal as an HTTP status with its message.
fn refused(status: Status) -> Refused {
    let code = match status.code() {
        Code::InvalidArgument => StatusCode::BAD_REQUEST,
        Code::PermissionDenied | Code::Unauthenticated => StatusCode::FORBIDDEN,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    Refused(code, status.message().to_owned())
}
