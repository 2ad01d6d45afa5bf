//! An in-process xDS server and gRPC clients speaking to it over 127.0.0.1.

use std::net::SocketAddr;
use std::time::Duration;

use ecs_xds::cache::{Cache, NodeTypeResolver, Publisher};
use ecs_xds::serve::XdsServer;
use ecs_xds::snapshot::{ResourceType, Snapshot};
use ecs_xds::synthesize::clusters::eds_cluster;
use ecs_xds::synthesize::endpoints::load_assignment;
use ecs_xds::synthesize::listeners::{http_listener, route_configuration};
use envoy_types::pb::envoy::config::core::v3::{HealthStatus, Node};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::rpc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::Streaming;

pub const WAIT: Duration = Duration::from_secs(5);
/// How long "nothing arrives" is watched for.
pub const QUIET: Duration = Duration::from_millis(300);

/// A running server; stops when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    pub cache: Cache,
    pub publisher: Publisher,
    _stop: tokio_util::sync::DropGuard,
}

pub async fn start_server(resolver: NodeTypeResolver) -> TestServer {
    let (cache, publisher) = Cache::new(resolver);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let server = XdsServer::new(cache.clone());
    let limits = ecs_xds::settings::Settings::default().xds_limits();
    tokio::spawn(server.serve(listener, limits, stop.clone()));
    TestServer {
        addr,
        cache,
        publisher,
        _stop: stop.drop_guard(),
    }
}

pub async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// A snapshot like a sidecar's: an ingress listener on `listener_port` routing to cluster
/// `clusters[0]`, and each cluster with one endpoint at 127.0.0.1:`endpoint_port`.
pub fn sample(clusters: &[&str], endpoint_port: u16, listener_port: u16) -> Snapshot {
    let mut b = Snapshot::builder()
        .listener(http_listener(
            "ingress",
            "127.0.0.1",
            listener_port,
            "routes",
        ))
        .route(route_configuration(
            "routes",
            [(vec!["*".to_string()], clusters[0])],
        ));
    for name in clusters {
        b = b
            .cluster(eds_cluster(name, Duration::from_secs(1)))
            .endpoints(load_assignment(
                name,
                [(
                    "127.0.0.1".to_string(),
                    endpoint_port,
                    HealthStatus::Healthy,
                )],
            ));
    }
    b.build()
}

pub fn node(id: &str) -> Node {
    Node {
        id: id.into(),
        ..Default::default()
    }
}

pub fn request(ty: ResourceType, names: &[&str], version: &str, nonce: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        type_url: ty.type_url().into(),
        resource_names: names.iter().map(|s| s.to_string()).collect(),
        version_info: version.into(),
        response_nonce: nonce.into(),
        ..Default::default()
    }
}

/// ACK of `response`, keeping the subscription `names`.
pub fn ack(response: &DiscoveryResponse, names: &[&str]) -> DiscoveryRequest {
    let ty = ResourceType::from_type_url(&response.type_url).unwrap();
    request(ty, names, &response.version_info, &response.nonce)
}

/// NACK of `response` with Envoy-like error text.
pub fn nack(
    response: &DiscoveryResponse,
    names: &[&str],
    previous_version: &str,
) -> DiscoveryRequest {
    let ty = ResourceType::from_type_url(&response.type_url).unwrap();
    DiscoveryRequest {
        error_detail: Some(rpc::Status {
            code: 3,
            message: "rejected by test".into(),
            details: vec![],
        }),
        ..request(ty, names, previous_version, &response.nonce)
    }
}

/// Names of the resources in a SotW response, decoded from their `Any`s.
pub fn names(response: &DiscoveryResponse) -> Vec<String> {
    use prost::Message;
    response
        .resources
        .iter()
        .map(
            |any| match ResourceType::from_type_url(&any.type_url).unwrap() {
                ResourceType::Cluster => {
                    envoy_types::pb::envoy::config::cluster::v3::Cluster::decode(&*any.value)
                        .unwrap()
                        .name
                }
                ResourceType::Endpoint => {
                    envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment::decode(
                        &*any.value,
                    )
                    .unwrap()
                    .cluster_name
                }
                ResourceType::Listener => {
                    envoy_types::pb::envoy::config::listener::v3::Listener::decode(&*any.value)
                        .unwrap()
                        .name
                }
                ResourceType::Route => {
                    envoy_types::pb::envoy::config::route::v3::RouteConfiguration::decode(
                        &*any.value,
                    )
                    .unwrap()
                    .name
                }
                ResourceType::Secret => unreachable!(),
            },
        )
        .collect()
}

/// A bidirectional xDS stream as a test drives it.
pub struct Stream<Req, Resp> {
    tx: mpsc::Sender<Req>,
    rx: Streaming<Resp>,
}

pub type SotwStream = Stream<DiscoveryRequest, DiscoveryResponse>;
pub type DeltaStream = Stream<DeltaDiscoveryRequest, DeltaDiscoveryResponse>;

impl<Req, Resp> Stream<Req, Resp> {
    pub async fn send(&self, req: Req) {
        self.tx.send(req).await.unwrap();
    }

    /// The next response, failing the test after [`WAIT`].
    pub async fn recv(&mut self) -> Resp {
        match tokio::time::timeout(WAIT, self.rx.message()).await {
            Ok(Ok(Some(r))) => r,
            Ok(Ok(None)) => panic!("stream ended"),
            Ok(Err(status)) => panic!("stream failed: {status}"),
            Err(_) => panic!("no response within {WAIT:?}"),
        }
    }

    /// Asserts nothing arrives for [`QUIET`].
    pub async fn expect_silence(&mut self) {
        if let Ok(r) = tokio::time::timeout(QUIET, self.rx.message()).await {
            panic!("expected no response, got {:?}", r.map(|r| r.is_some()));
        }
    }

    /// The status the server ended the stream with.
    pub async fn expect_error(&mut self) -> tonic::Status {
        match tokio::time::timeout(WAIT, self.rx.message()).await {
            Ok(Err(status)) => status,
            Ok(Ok(_)) => panic!("expected an error status"),
            Err(_) => panic!("no status within {WAIT:?}"),
        }
    }
}

/// Opens an ADS SotW stream; the first request carries `node`.
pub async fn ads(addr: SocketAddr) -> SotwStream {
    let mut client = AggregatedDiscoveryServiceClient::new(channel(addr).await);
    let (tx, rx) = mpsc::channel(16);
    let rx = client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    Stream { tx, rx }
}

/// Opens an ADS delta stream.
pub async fn ads_delta(addr: SocketAddr) -> DeltaStream {
    let mut client = AggregatedDiscoveryServiceClient::new(channel(addr).await);
    let (tx, rx) = mpsc::channel(16);
    let rx = client
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    Stream { tx, rx }
}

/// Opens a stream on one of the per-type services.
pub async fn per_type(addr: SocketAddr, ty: ResourceType) -> SotwStream {
    use envoy_types::pb::envoy::service::{cluster, endpoint, listener, route};
    let channel = channel(addr).await;
    let (tx, rx) = mpsc::channel(16);
    let requests = ReceiverStream::new(rx);
    let rx = match ty {
        ResourceType::Cluster => {
            cluster::v3::cluster_discovery_service_client::ClusterDiscoveryServiceClient::new(
                channel,
            )
            .stream_clusters(requests)
            .await
        }
        ResourceType::Endpoint => {
            endpoint::v3::endpoint_discovery_service_client::EndpointDiscoveryServiceClient::new(
                channel,
            )
            .stream_endpoints(requests)
            .await
        }
        ResourceType::Listener => {
            listener::v3::listener_discovery_service_client::ListenerDiscoveryServiceClient::new(
                channel,
            )
            .stream_listeners(requests)
            .await
        }
        ResourceType::Route => {
            route::v3::route_discovery_service_client::RouteDiscoveryServiceClient::new(channel)
                .stream_routes(requests)
                .await
        }
        ResourceType::Secret => unimplemented!(),
    }
    .unwrap()
    .into_inner();
    Stream { tx, rx }
}
