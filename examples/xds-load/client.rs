//! The fleet: N Envoy-like ADS streams, each on its own HTTP/2 connection, subscribed to CDS,
//! EDS for every cluster, LDS and RDS, ACKing every response.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ecs_xds::snapshot::ResourceType;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use super::server::cluster_name;
use super::{Args, Mode, Shared, SharedRef};

const TYPES: [ResourceType; 4] = [
    ResourceType::Cluster,
    ResourceType::Endpoint,
    ResourceType::Listener,
    ResourceType::Route,
];

pub struct Fleet {
    shared: SharedRef,
    streams: usize,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Fleet {
    /// Opens every stream and returns once each has received all four types.
    pub async fn connect(args: &Args, addr: SocketAddr) -> Fleet {
        let shared = Arc::new(Shared {
            armed_at: Default::default(),
            latencies: Default::default(),
            ready: tokio::sync::Semaphore::new(0),
            done: Default::default(),
            last_eds_len: Default::default(),
            churn: Default::default(),
            generations: Default::default(),
        });
        let names: Arc<Vec<String>> = Arc::new((0..args.clusters).map(cluster_name).collect());
        let route: Arc<str> = args.route_name.as_str().into();
        let gate = Arc::new(tokio::sync::Semaphore::new(args.connect_concurrency));
        let tasks = (0..args.streams)
            .map(|i| {
                let (shared, names, gate) = (shared.clone(), names.clone(), gate.clone());
                let route = route.clone();
                let node = node(format!("{}-{i}", args.node_type), zone(args.zones, i));
                let mode = args.mode;
                tokio::spawn(async move {
                    let permit = gate.acquire_owned().await.unwrap();
                    let channel = connect(addr).await;
                    let outcome = match mode {
                        Mode::Sotw => sotw(channel, node, names, route, shared, permit).await,
                        Mode::Delta => delta(channel, node, names, route, shared, permit).await,
                    };
                    if let Err(status) = outcome {
                        eprintln!("xds-load: stream {i} failed: {status}");
                    }
                })
            })
            .collect();
        let wanted = u32::try_from(args.streams).expect("stream count fits u32");
        shared.ready.acquire_many(wanted).await.unwrap().forget();
        Fleet {
            shared,
            streams: args.streams,
            tasks,
        }
    }

    /// From now on, the first EDS response each stream gets is the measured update.
    pub fn arm(&self, t0: Instant) {
        self.shared.armed_at.set(t0).unwrap();
    }

    /// Waits until every stream got the update; latencies sorted ascending.
    pub async fn wait_all(&self, limit: Duration) -> Vec<Duration> {
        let deadline = Instant::now() + limit;
        loop {
            let notified = self.shared.done.notified();
            if self.shared.latencies.lock().unwrap().len() >= self.streams {
                break;
            }
            if tokio::time::timeout_at(deadline.into(), notified)
                .await
                .is_err()
            {
                let got = self.shared.latencies.lock().unwrap().len();
                panic!(
                    "only {got} of {} streams got the update within {limit:?}",
                    self.streams
                );
            }
        }
        let mut l = self.shared.latencies.lock().unwrap().clone();
        l.sort();
        l
    }

    /// What the streams share (the churn soak's figures).
    pub fn shared(&self) -> &SharedRef {
        &self.shared
    }

    /// Size of the last EDS response a stream received, in bytes.
    pub fn last_eds_len(&self) -> usize {
        self.shared.last_eds_len.load(Ordering::Relaxed)
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn connect(addr: SocketAddr) -> Channel {
    let endpoint = Endpoint::from_shared(format!("http://{addr}")).unwrap();
    loop {
        match endpoint.connect().await {
            Ok(channel) => return channel,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Tracks which types a stream has received and records the measured update.
struct Progress {
    seen: [bool; 4],
    ready: bool,
    recorded: bool,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    /// The endpoint generation this stream holds (churn soak).
    generation: u16,
}

impl Progress {
    fn new(permit: tokio::sync::OwnedSemaphorePermit) -> Self {
        Self {
            seen: [false; 4],
            ready: false,
            recorded: false,
            permit: Some(permit),
            generation: 0,
        }
    }

    /// An EDS response of generation `g` (when the churn soak runs and it says).
    fn generation(&mut self, shared: &Shared, g: Option<u16>) {
        if let (Some(churn), Some(g)) = (shared.churn.get(), g) {
            if g > self.generation {
                churn.reached(self.generation, g);
                shared
                    .generations
                    .fetch_add(u64::from(g - self.generation), Ordering::Relaxed);
                self.generation = g;
            }
        }
    }

    fn received(&mut self, shared: &Shared, ty: ResourceType, len: usize) {
        if ty == ResourceType::Endpoint {
            if let (Some(t0), false) = (shared.armed_at.get(), self.recorded) {
                self.recorded = true;
                shared.latencies.lock().unwrap().push(t0.elapsed());
                shared.last_eds_len.store(len, Ordering::Relaxed);
                shared.done.notify_waiters();
            }
        }
        if !self.ready {
            self.seen[TYPES.iter().position(|t| *t == ty).unwrap()] = true;
            if self.seen.iter().all(|s| *s) {
                self.ready = true;
                self.permit.take();
                shared.ready.add_permits(1);
            }
        }
    }
}

fn names_for(ty: ResourceType, clusters: &[String], route: &str) -> Vec<String> {
    match ty {
        ResourceType::Endpoint => clusters.to_vec(),
        ResourceType::Route => vec![route.to_owned()],
        _ => vec![],
    }
}

/// With `zones`, stream `i` states zone `us-east-1a`, `b`, `c`... in turn (the zones
/// `scripts/gen-inventory.py` puts tasks in).
fn zone(zones: usize, i: usize) -> Option<String> {
    (zones > 0).then(|| format!("us-east-1{}", char::from(b'a' + (i % zones) as u8)))
}

fn node(id: String, zone: Option<String>) -> Node {
    Node {
        id,
        locality: zone.map(|zone| envoy_types::pb::envoy::config::core::v3::Locality {
            zone,
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn sotw(
    channel: Channel,
    node: Node,
    clusters: Arc<Vec<String>>,
    route: Arc<str>,
    shared: SharedRef,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Result<(), tonic::Status> {
    let (tx, rx) = mpsc::channel(8);
    for (i, ty) in TYPES.into_iter().enumerate() {
        let node = (i == 0).then(|| node.clone());
        let req = DiscoveryRequest {
            node,
            type_url: ty.type_url().into(),
            resource_names: names_for(ty, &clusters, &route),
            ..Default::default()
        };
        tx.send(req).await.unwrap();
    }
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let mut responses = client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut progress = Progress::new(permit);
    while let Some(r) = responses.message().await? {
        let ty = ResourceType::from_type_url(&r.type_url).unwrap();
        let ack = DiscoveryRequest {
            type_url: r.type_url.clone(),
            resource_names: names_for(ty, &clusters, &route),
            version_info: r.version_info.clone(),
            response_nonce: r.nonce.clone(),
            ..Default::default()
        };
        let _ = tx.send(ack).await;
        if ty == ResourceType::Endpoint && shared.churn.get().is_some() {
            progress.generation(&shared, super::churn::generation(&r.resources));
        }
        progress.received(&shared, ty, r.encoded_len());
    }
    Ok(())
}

async fn delta(
    channel: Channel,
    node: Node,
    clusters: Arc<Vec<String>>,
    route: Arc<str>,
    shared: SharedRef,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Result<(), tonic::Status> {
    let (tx, rx) = mpsc::channel(8);
    for (i, ty) in TYPES.into_iter().enumerate() {
        let node = (i == 0).then(|| node.clone());
        let req = DeltaDiscoveryRequest {
            node,
            type_url: ty.type_url().into(),
            resource_names_subscribe: names_for(ty, &clusters, &route),
            ..Default::default()
        };
        tx.send(req).await.unwrap();
    }
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let mut responses = client
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut progress = Progress::new(permit);
    while let Some(r) = responses.message().await? {
        let ty = ResourceType::from_type_url(&r.type_url).unwrap();
        let ack = DeltaDiscoveryRequest {
            type_url: r.type_url.clone(),
            response_nonce: r.nonce.clone(),
            ..Default::default()
        };
        let _ = tx.send(ack).await;
        if ty == ResourceType::Endpoint && shared.churn.get().is_some() {
            let resources = r.resources.iter().filter_map(|res| res.resource.as_ref());
            progress.generation(&shared, super::churn::generation(resources));
        }
        progress.received(&shared, ty, r.encoded_len());
    }
    Ok(())
}
