//! The xDS gRPC server: ADS and the per-type services (CDS, EDS, LDS, RDS, SDS), each in
//! state-of-the-world, delta and fetch variants, on one port.
//!
//! Every method is one [`XdsMethod`] value naming its protocol variant and type; they share the
//! stream runner ([`stream`]) and differ only in the protocol state ([`sotw`], [`delta`]).
//! Responses are written from bytes the snapshot encoded once ([`wire`]).
//!
//! The same port serves xDS over REST-JSON to HTTP/1.1 and HTTP/2 clients ([`rest`]), from the
//! unary fetch's code path.
//!
//! Beside them, the access log service where Envoys report what their services' rules in
//! shadow would deny ([`access_log`]).

mod access_log;
mod body;
mod codec;
mod csds;
mod delta;
mod fetch;
mod held;
mod names;
mod peer;
mod rest;
mod sotw;
mod stream;
#[cfg(test)]
mod test_harness;
mod wire;

pub use csds::Csds;

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Path;
use envoy_types::pb::envoy::service::accesslog::v3::access_log_service_server::AccessLogServiceServer;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::status::v3::client_status_discovery_service_server::ClientStatusDiscoveryServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::server::{Grpc, UnaryService};
use tonic::service::Routes;
use tonic::{Request, Response, Status, Streaming};
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};
use tonic_health::ServingStatus;
use tonic_prost::ProstCodec;

use crate::cache::Cache;
use crate::http_listener::{self, ConnectionClosing, ConnectionStats, Limits, Protocol, Tls};
use crate::snapshot::{ResourceType, Snapshot};
use delta::DeltaState;
use sotw::SotwState;
pub(crate) use stream::StreamContext;
use wire::SotwResponse;

/// Which protocol variant a method speaks, and for which type (`None`: ADS, every type).
#[derive(Debug, Clone, Copy)]
enum Variant {
    Sotw(Option<ResourceType>),
    Delta(Option<ResourceType>),
    Fetch(ResourceType),
}

/// The gRPC service name of each per-type service and its method-name stem.
const PER_TYPE_SERVICES: [(ResourceType, &str, &str); ResourceType::COUNT] = [
    (
        ResourceType::Cluster,
        "envoy.service.cluster.v3.ClusterDiscoveryService",
        "Clusters",
    ),
    (
        ResourceType::Endpoint,
        "envoy.service.endpoint.v3.EndpointDiscoveryService",
        "Endpoints",
    ),
    (
        ResourceType::Listener,
        "envoy.service.listener.v3.ListenerDiscoveryService",
        "Listeners",
    ),
    (
        ResourceType::Route,
        "envoy.service.route.v3.RouteDiscoveryService",
        "Routes",
    ),
    (
        ResourceType::Secret,
        "envoy.service.secret.v3.SecretDiscoveryService",
        "Secrets",
    ),
];
const ADS: &str = "envoy.service.discovery.v3.AggregatedDiscoveryService";

/// The xDS server over a [`Cache`], with CSDS and the standard gRPC health service beside it.
#[derive(Clone)]
pub struct XdsServer {
    cache: Cache,
    /// Ends every stream: they never end on their own, and a connection closes gracefully
    /// only once its streams have.
    streams: CancellationToken,
    health: HealthReporter,
    health_service: HealthServer<HealthService>,
    connections: Arc<ConnectionStats>,
    /// Mutual TLS, when on: the listener's TLS and the trust domain whose workloads its client
    /// certificates must name.
    tls: Option<(Tls, Arc<str>)>,
    /// Serve Envoys that open without TLS too (`xds.client_auth = "optional"`).
    plaintext_beside_tls: bool,
    /// What each REST-JSON poller was sent and rejected.
    rest: Arc<rest::Polls>,
}

impl std::fmt::Debug for XdsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdsServer")
            .field("cache", &self.cache)
            .finish()
    }
}

impl XdsServer {
    /// A server streaming the snapshots of `cache`. Its gRPC health status is `SERVING` until
    /// [`XdsServer::set_ready`] says otherwise.
    pub fn new(cache: Cache) -> Self {
        let health = HealthReporter::new();
        let health_service = HealthServer::new(HealthService::from_health_reporter(health.clone()));
        Self {
            cache,
            streams: CancellationToken::new(),
            health,
            health_service,
            connections: Arc::default(),
            tls: None,
            plaintext_beside_tls: false,
            rest: Arc::default(),
        }
    }

    /// Serves over `tls`. A client certificate it verified names the stream's service (a
    /// workload of `trust_domain`) and, when it names one, its zone; a node claiming another
    /// service or zone is refused.
    pub fn with_tls(mut self, tls: Tls, trust_domain: &str) -> Self {
        self.tls = Some((tls, trust_domain.into()));
        self
    }

    /// With [`XdsServer::with_tls`], serves Envoys that do not open with TLS in plaintext too, as
    /// before mutual TLS (their own claim names their service): for moving a fleet over.
    pub fn with_plaintext_beside_tls(mut self) -> Self {
        self.plaintext_beside_tls = true;
        self
    }

    /// What the xDS port's connections did (open, refused, timed out).
    pub fn connections(&self) -> &Arc<ConnectionStats> {
        &self.connections
    }

    /// Sets the gRPC health status of the whole server (`""`) and of ADS. The daemon reports
    /// `NOT_SERVING` until its first complete discovery is published, so a load balancer
    /// health-checking the xDS port sends Envoys only to a replica with something to serve.
    pub async fn set_ready(&self, ready: bool) {
        let status = match ready {
            true => ServingStatus::Serving,
            false => ServingStatus::NotServing,
        };
        for service in ["", ADS] {
            self.health.set_service_status(service, status).await;
        }
    }

    /// Whether gRPC health says `SERVING` for the whole server, as a client checking it would
    /// hear.
    pub async fn serving(&self) -> bool {
        use tonic_health::pb::health_server::Health;
        use tonic_health::pb::{
            health_check_response::ServingStatus as Status, HealthCheckRequest,
        };
        let service = HealthService::from_health_reporter(self.health.clone());
        let asked = service.check(Request::new(HealthCheckRequest::default()));
        asked
            .await
            .is_ok_and(|answer| answer.into_inner().status == Status::Serving as i32)
    }

    /// Every xDS method, CSDS, the access log service and gRPC health as tonic routes, for
    /// embedding next to other gRPC services; and xDS over REST-JSON (`POST
    /// /v3/discovery:clusters` and friends, [`rest`]).
    pub fn routes(&self) -> Routes {
        let mut methods = vec![
            (
                format!("/{ADS}/StreamAggregatedResources"),
                Variant::Sotw(None),
            ),
            (
                format!("/{ADS}/DeltaAggregatedResources"),
                Variant::Delta(None),
            ),
        ];
        for (ty, service, stem) in PER_TYPE_SERVICES {
            methods.push((format!("/{service}/Stream{stem}"), Variant::Sotw(Some(ty))));
            methods.push((format!("/{service}/Delta{stem}"), Variant::Delta(Some(ty))));
            methods.push((format!("/{service}/Fetch{stem}"), Variant::Fetch(ty)));
        }
        let access_logs = access_log::AccessLogs {
            cache: self.cache.clone(),
            trust_domain: self.tls.as_ref().map(|(_, domain)| domain.clone()),
            streams: self.streams.clone(),
        };
        let mut routes = Routes::new(self.health_service.clone())
            .add_service(ClientStatusDiscoveryServiceServer::new(csds::Csds {
                cache: self.cache.clone(),
            }))
            .add_service(AccessLogServiceServer::new(access_logs));
        let router = routes.axum_router_mut();
        for (path, variant) in methods {
            let method = XdsMethod {
                variant,
                server: self.clone(),
            };
            *router = std::mem::take(router).route_service(&path, method);
        }
        let server = self.clone();
        let rest = move |Path(discovery): Path<String>, req: axum::extract::Request| {
            rest::answer(server.clone(), discovery, req)
        };
        *router = std::mem::take(router).route(rest::ROUTE, axum::routing::any(rest));
        routes
    }

    /// Serves on `listener` until `shutdown` is cancelled; then ends every stream, lets the
    /// connections close for up to `limits.grace`, closes the rest and returns.
    pub async fn serve(self, listener: TcpListener, limits: Limits, shutdown: CancellationToken) {
        let streams = self.streams.clone();
        let connections = self.connections.clone();
        let router = self.routes().prepare().into_axum_router();
        let end_streams = async {
            shutdown.cancelled().await;
            streams.cancel();
        };
        let serve = http_listener::serve(
            "xds",
            listener,
            router,
            http_listener::Serving {
                protocol: Protocol::Http2OrHttp1,
                limits,
                stats: connections,
                tls: self.tls.as_ref().map(|(tls, _)| tls.clone()),
                plaintext_beside_tls: self.plaintext_beside_tls,
            },
            shutdown.clone(),
        );
        tokio::join!(serve, end_streams);
    }
}

/// One gRPC method of the xDS services.
#[derive(Debug, Clone)]
struct XdsMethod {
    variant: Variant,
    server: XdsServer,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl tower_service::Service<http::Request<axum::body::Body>> for XdsMethod {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<axum::body::Body>) -> Self::Future {
        let method = self.clone();
        // A connection with a maximum age ends its streams when it reaches it (that token is a
        // child of the listener's shutdown); the server's own token ends every stream.
        let shutdown = match req.extensions().get::<ConnectionClosing>() {
            Some(closing) => closing.0.clone(),
            None => self.server.streams.clone(),
        };
        let cache = self.server.cache.clone();
        let verified = match &self.server.tls {
            Some((_, trust_domain)) => peer::workload(&cache, req.extensions(), trust_domain),
            None => Ok(None),
        };
        Box::pin(async move {
            let verified = match verified {
                Ok(verified) => verified,
                Err(status) => return Ok(status.into_http()),
            };
            Ok(match method.variant {
                Variant::Fetch(ty) => {
                    let codec = ProstCodec::<SotwResponse, DiscoveryRequest>::default();
                    let method = Fetch {
                        cache,
                        ty,
                        verified,
                    };
                    Grpc::new(codec).unary(method, req).await
                }
                Variant::Sotw(only) => {
                    let state = SotwState::new(only);
                    open_stream(cache, shutdown, only, state, verified, req)
                }
                Variant::Delta(only) => {
                    let state = DeltaState::new(only);
                    open_stream(cache, shutdown, only, state, verified, req)
                }
            })
        })
    }
}

/// Starts a stream with protocol `state`: requests decoded by tonic, responses framed by
/// `body`.
fn open_stream<P: stream::Protocol>(
    cache: Cache,
    shutdown: CancellationToken,
    only: Option<ResourceType>,
    state: P,
    verified: Option<Arc<peer::Verified>>,
    req: http::Request<axum::body::Body>,
) -> http::Response<tonic::body::Body>
where
    P::Request: prost::Message + Default,
    Streaming<P::Request>: Send,
{
    let requests: Streaming<P::Request> =
        Streaming::new_request(codec::request_decoder(), req.into_body(), None, None);
    let service = service_name(only);
    let peer = stream::Peer { service, verified };
    body::response(stream::spawn(cache, shutdown, peer, state, requests))
}

/// One unary fetch, with the verified identity of its connection.
struct Fetch {
    cache: Cache,
    ty: ResourceType,
    verified: Option<Arc<peer::Verified>>,
}

impl UnaryService<DiscoveryRequest> for Fetch {
    type Response = SotwResponse;
    type Future = std::future::Ready<Result<Response<SotwResponse>, Status>>;

    fn call(&mut self, request: Request<DiscoveryRequest>) -> Self::Future {
        let verified = self.verified.as_deref();
        let fetched = fetch::fetch(&self.cache, self.ty, verified, request.get_ref());
        std::future::ready(fetched.map(|f| Response::new(f.response)))
    }
}

fn service_name(only: Option<ResourceType>) -> &'static str {
    only.map_or("ads", ResourceType::short_name)
}

/// What both protocol states keep besides their per-type state.
#[derive(Debug)]
struct StreamCommon {
    /// The one type a per-type service serves; `None` for ADS.
    only: Option<ResourceType>,
    /// The newest snapshot of the stream's node type, once there is one.
    snapshot: Option<Arc<Snapshot>>,
    next_nonce: u64,
    unknown_types_logged: BTreeSet<String>,
}

impl StreamCommon {
    fn new(only: Option<ResourceType>) -> Self {
        StreamCommon {
            only,
            snapshot: None,
            next_nonce: 1,
            unknown_types_logged: BTreeSet::new(),
        }
    }

    /// A fresh nonce for a response about to be sent.
    fn nonce(&mut self) -> String {
        let nonce = self.next_nonce.to_string();
        self.next_nonce += 1;
        nonce
    }

    /// The type a request is for. A per-type service takes its own type (an empty type URL
    /// means it) and refuses others; ADS requires a type URL and ignores, logging once per
    /// stream, types it does not serve, so one unknown type does not end the stream that
    /// carries all the others.
    fn request_type(
        &mut self,
        type_url: &str,
        node_id: &str,
    ) -> Result<Option<ResourceType>, Status> {
        match self.only {
            Some(ty) if type_url.is_empty() || type_url == ty.type_url() => Ok(Some(ty)),
            Some(ty) => Err(Status::invalid_argument(format!(
                "the {ty} service serves {}, not {type_url:?}",
                ty.type_url()
            ))),
            None if type_url.is_empty() => {
                Err(Status::invalid_argument("an ADS request must set type_url"))
            }
            None => match ResourceType::from_type_url(type_url) {
                Ok(ty) => Ok(Some(ty)),
                Err(unknown) => {
                    if self.unknown_types_logged.insert(type_url.to_owned()) {
                        tracing::warn!(node_id, %unknown, "ignoring ADS requests for a type ecs-xds does not serve");
                    }
                    Ok(None)
                }
            },
        }
    }
}
