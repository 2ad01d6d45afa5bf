//! Drives a protocol state the way the stream runner does, without a network: a cache and its
//! publisher, one registered stream, and the state. "Nothing is sent" is an empty `Vec`, known
//! at once instead of after a silence window.
//!
//! Responses are decoded into the standard envoy-types messages, as a client would read them.

use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::HealthStatus;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::pb::google::rpc;
use prost::Message;
use tonic::Status;

use super::delta::DeltaState;
use super::sotw::SotwState;
use super::stream::Protocol;
use super::StreamContext;
use crate::cache::{Cache, NodeTypeResolver, Published, Publisher, StreamStatus};
use crate::snapshot::{ResourceType, Snapshot, SnapshotBuilder};
use crate::synthesize::clusters::eds_cluster;
use crate::synthesize::endpoints::load_assignment;
use crate::synthesize::listeners::{http_listener, route_configuration};

/// The node type every harness stream has, and that [`Harness::publish`] publishes for.
const NODE_TYPE: &str = "sidecar";
const NODE_ID: &str = "sidecar-1";

/// A protocol state a [`Harness`] can drive.
pub(super) trait Tested: Protocol {
    /// The standard message this state's responses encode as.
    type Standard: Message + Default;

    /// The state of a new stream (ADS when `only` is `None`).
    fn fresh(only: Option<ResourceType>) -> Self;
}

impl Tested for SotwState {
    type Standard = DiscoveryResponse;

    fn fresh(only: Option<ResourceType>) -> Self {
        SotwState::new(only)
    }
}

impl Tested for DeltaState {
    type Standard = DeltaDiscoveryResponse;

    fn fresh(only: Option<ResourceType>) -> Self {
        DeltaState::new(only)
    }
}

/// One stream of node `sidecar-1` (node type `sidecar`) and the cache it reads.
pub(super) struct Harness<P: Tested> {
    pub cache: Cache,
    publisher: Publisher,
    only: Option<ResourceType>,
    ctx: StreamContext,
    state: P,
}

impl<P: Tested> Harness<P> {
    /// An ADS stream.
    pub fn ads() -> Self {
        Self::new(None)
    }

    /// A stream of the per-type service for `only`, or ADS for `None`.
    pub fn new(only: Option<ResourceType>) -> Self {
        let (cache, publisher) = Cache::new(NodeTypeResolver::default());
        let ctx = connect::<P>(&cache, only);
        Self {
            cache,
            publisher,
            only,
            ctx,
            state: P::fresh(only),
        }
    }

    /// Publishes `snapshot`; returns what the stream sends for it. Like the stream runner,
    /// which wakes only when its watch changes, the state hears of a publish only when it
    /// changed something.
    pub fn publish(&mut self, snapshot: Snapshot) -> Vec<P::Standard> {
        let published = self.publisher.publish(NODE_TYPE, snapshot);
        match published.expect("a consistent snapshot") {
            Published::Unchanged => Vec::new(),
            Published::Changed(_) => {
                let current = self.cache.snapshot(NODE_TYPE).expect("just published");
                standard(self.state.on_snapshot(&self.ctx, current))
            }
        }
    }

    /// Sends `req`; returns the responses, or the status that would end the stream.
    pub fn request(&mut self, req: P::Request) -> Result<Vec<P::Standard>, Status> {
        self.state.on_request(&self.ctx, req).map(standard)
    }

    /// Replaces the stream with a new one of the same node, as after a reconnect. Like the
    /// stream runner, the new state is handed the current snapshot before its first request.
    pub fn reconnect(&mut self) {
        self.cache.status().disconnect(self.ctx.stream_id);
        self.ctx = connect::<P>(&self.cache, self.only);
        self.state = P::fresh(self.only);
        if let Some(current) = self.cache.snapshot(NODE_TYPE) {
            let sent = self.state.on_snapshot(&self.ctx, current);
            assert!(
                sent.is_empty(),
                "a stream subscribed to nothing sends nothing"
            );
        }
    }

    /// The stream's status as the admin view reads it.
    pub fn status(&self) -> StreamStatus {
        let streams = self.cache.status().streams();
        assert_eq!(streams.len(), 1, "the harness has one stream");
        streams.into_iter().next().expect("one stream")
    }
}

/// Registers a stream like the stream runner's `start`.
fn connect<P: Tested>(cache: &Cache, only: Option<ResourceType>) -> StreamContext {
    let stream_id = cache.status().connect(StreamStatus {
        connected_at: None,
        node_id: NODE_ID.into(),
        node_type: NODE_TYPE.into(),
        location: Default::default(),
        caller: String::new(),
        identity: None,
        service: super::service_name(only),
        mode: P::MODE,
        types: Default::default(),
    });
    StreamContext {
        cache: cache.clone(),
        stream_id,
        node_id: NODE_ID.into(),
        node_type: NODE_TYPE.into(),
    }
}

/// The only response in `responses`.
pub(super) fn one<T: std::fmt::Debug>(mut responses: Vec<T>) -> T {
    assert_eq!(responses.len(), 1, "expected one response: {responses:?}");
    responses.pop().expect("one response")
}

fn standard<R: Message, S: Message + Default>(responses: Vec<R>) -> Vec<S> {
    responses
        .iter()
        .map(|r| S::decode(r.encode_to_vec().as_slice()).expect("a standard xDS response"))
        .collect()
}

/// A snapshot like a sidecar's: an ingress listener on `listener_port` routing to cluster
/// `clusters[0]`, and each cluster with one endpoint at 127.0.0.1:`endpoint_port`.
pub(super) fn sample(clusters: &[&str], endpoint_port: u16, listener_port: u16) -> Snapshot {
    sample_builder(clusters, endpoint_port, listener_port).build()
}

/// [`sample`], still open: a resource added with a name already there replaces it.
pub(super) fn sample_builder(
    clusters: &[&str],
    endpoint_port: u16,
    listener_port: u16,
) -> SnapshotBuilder {
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
            .endpoints(endpoints(name, endpoint_port));
    }
    b
}

/// One healthy endpoint for `cluster` at 127.0.0.1:`port`.
pub(super) fn endpoints(cluster: &str, port: u16) -> ClusterLoadAssignment {
    load_assignment(
        cluster,
        [("127.0.0.1".to_string(), port, HealthStatus::Healthy)],
    )
}

/// A SotW request for `names` of `ty`.
pub(super) fn request(
    ty: ResourceType,
    names: &[&str],
    version: &str,
    nonce: &str,
) -> DiscoveryRequest {
    DiscoveryRequest {
        type_url: ty.type_url().into(),
        resource_names: names.iter().map(|s| s.to_string()).collect(),
        version_info: version.into(),
        response_nonce: nonce.into(),
        ..Default::default()
    }
}

/// ACK of `response`, keeping the subscription `names`.
pub(super) fn ack(response: &DiscoveryResponse, names: &[&str]) -> DiscoveryRequest {
    let ty = ResourceType::from_type_url(&response.type_url).expect("a served type");
    request(ty, names, &response.version_info, &response.nonce)
}

/// NACK of `response` with Envoy-like error text, still on `previous_version`.
pub(super) fn nack(
    response: &DiscoveryResponse,
    names: &[&str],
    previous_version: &str,
) -> DiscoveryRequest {
    let ty = ResourceType::from_type_url(&response.type_url).expect("a served type");
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
pub(super) fn names(response: &DiscoveryResponse) -> Vec<String> {
    response.resources.iter().map(resource_name).collect()
}

fn resource_name(any: &Any) -> String {
    let value = any.value.as_slice();
    let ty = ResourceType::from_type_url(&any.type_url).expect("a served type");
    let name = match ty {
        ResourceType::Cluster => Cluster::decode(value).map(|r| r.name),
        ResourceType::Endpoint => ClusterLoadAssignment::decode(value).map(|r| r.cluster_name),
        ResourceType::Listener => Listener::decode(value).map(|r| r.name),
        ResourceType::Route => RouteConfiguration::decode(value).map(|r| r.name),
        ResourceType::Secret => Secret::decode(value).map(|r| r.name),
    };
    name.expect("a resource of its type URL")
}
