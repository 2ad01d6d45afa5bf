//! The stream runner: one task per xDS stream, shared by both protocol variants.
//!
//! Each stream is its own task with a small bounded outbox, so a client that stops reading
//! stalls only its own task; the publisher never waits for it, and other streams never notice.

use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming};

use super::body::{self, Outgoing};
use super::delta::DeltaState;
use super::sotw::SotwState;
use super::wire::{DeltaResponse, SotwResponse};
use crate::cache::{Cache, StreamStatus};
use crate::snapshot::Snapshot;

/// Responses waiting to be written per stream. The protocol state sends at most one response
/// per type before an ACK, so a handful is enough.
const OUTBOX: usize = 8;

/// Who a stream serves; handed to the protocol state with each event.
#[derive(Debug)]
pub(crate) struct StreamContext {
    pub cache: Cache,
    pub stream_id: u64,
    pub node_id: String,
    pub node_type: String,
}

/// A protocol variant's per-stream state.
pub(super) trait Protocol: Send + 'static {
    type Request: Send + 'static;
    type Response: prost::Message + Send + 'static;
    const MODE: &'static str;

    fn node(req: &Self::Request) -> Option<&Node>;
    fn on_request(
        &mut self,
        ctx: &StreamContext,
        req: Self::Request,
    ) -> Result<Vec<Self::Response>, Status>;
    fn on_snapshot(&mut self, ctx: &StreamContext, snapshot: Arc<Snapshot>) -> Vec<Self::Response>;
}

impl Protocol for SotwState {
    type Request = DiscoveryRequest;
    type Response = SotwResponse;
    const MODE: &'static str = "sotw";

    fn node(req: &DiscoveryRequest) -> Option<&Node> {
        req.node.as_ref()
    }
    fn on_request(
        &mut self,
        ctx: &StreamContext,
        req: DiscoveryRequest,
    ) -> Result<Vec<SotwResponse>, Status> {
        SotwState::on_request(self, ctx, req)
    }
    fn on_snapshot(&mut self, ctx: &StreamContext, snapshot: Arc<Snapshot>) -> Vec<SotwResponse> {
        SotwState::on_snapshot(self, ctx, snapshot)
    }
}

impl Protocol for DeltaState {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaResponse;
    const MODE: &'static str = "delta";

    fn node(req: &DeltaDiscoveryRequest) -> Option<&Node> {
        req.node.as_ref()
    }
    fn on_request(
        &mut self,
        ctx: &StreamContext,
        req: DeltaDiscoveryRequest,
    ) -> Result<Vec<DeltaResponse>, Status> {
        DeltaState::on_request(self, ctx, req)
    }
    fn on_snapshot(&mut self, ctx: &StreamContext, snapshot: Arc<Snapshot>) -> Vec<DeltaResponse> {
        DeltaState::on_snapshot(self, ctx, snapshot)
    }
}

/// Starts a stream's task and returns the response stream tonic writes out.
pub(super) fn spawn<P: Protocol>(
    cache: Cache,
    shutdown: CancellationToken,
    service: &'static str,
    state: P,
    requests: Streaming<P::Request>,
) -> mpsc::Receiver<Outgoing>
where
    Streaming<P::Request>: Send,
{
    let (tx, rx) = mpsc::channel(OUTBOX);
    tokio::spawn(async move {
        let outcome = run(&cache, &shutdown, service, state, requests, &tx).await;
        if let Err(status) = outcome {
            // A client's protocol mistake is worth an operator's attention; a dropped
            // connection is not.
            if status.code() == tonic::Code::InvalidArgument {
                tracing::info!(code = ?status.code(), message = status.message(), "xDS stream refused");
            } else {
                tracing::debug!(code = ?status.code(), message = status.message(), "xDS stream ended");
            }
            let _ = tx.send(Err(Box::new(status))).await;
        }
    });
    rx
}

/// Unregisters a stream from the status registry however its task ends.
struct Registered<'a>(&'a Cache, u64);

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.0.status().disconnect(self.1);
    }
}

async fn run<P: Protocol>(
    cache: &Cache,
    shutdown: &CancellationToken,
    service: &'static str,
    mut state: P,
    mut requests: Streaming<P::Request>,
    tx: &mpsc::Sender<Outgoing>,
) -> Result<(), Status> {
    let first = tokio::select! {
        first = requests.message() => first?,
        _ = shutdown.cancelled() => return Ok(()),
    };
    let Some(first) = first else { return Ok(()) };
    let node = P::node(&first)
        .ok_or_else(|| Status::invalid_argument("the first request of a stream must carry node"))?;
    let node_id = node.id.clone();
    let node_type = cache.resolve_node_type(node);
    let stream_id = cache.status().connect(StreamStatus {
        node_id: node_id.clone(),
        node_type: node_type.clone(),
        service,
        mode: P::MODE,
        types: Default::default(),
    });
    let _registered = Registered(cache, stream_id);
    tracing::debug!(%node_id, %node_type, service, mode = P::MODE, "xDS stream opened");
    let ctx = StreamContext {
        cache: cache.clone(),
        stream_id,
        node_id,
        node_type,
    };
    let mut snapshots = cache.watch(&ctx.node_type);
    let current = snapshots.borrow_and_update().clone();
    if let Some(snapshot) = current {
        state.on_snapshot(&ctx, snapshot);
    }
    let mut outbox = state.on_request(&ctx, first)?;
    loop {
        for response in outbox.drain(..) {
            if tx.send(Ok(body::frame(&response))).await.is_err() {
                return Ok(());
            }
        }
        tokio::select! {
            request = requests.message() => match request {
                Ok(Some(request)) => outbox = state.on_request(&ctx, request)?,
                Ok(None) => break,
                // A request that does not decode ends the stream with tonic's status (INTERNAL,
                // naming the decode error); if the client is gone, nobody reads it.
                Err(status) => {
                    tracing::debug!(node_id = %ctx.node_id, %status, "xDS stream request failed");
                    return Err(status);
                }
            },
            changed = snapshots.changed() => {
                if changed.is_err() {
                    break;
                }
                let current = snapshots.borrow_and_update().clone();
                if let Some(snapshot) = current {
                    outbox = state.on_snapshot(&ctx, snapshot);
                }
            },
            _ = shutdown.cancelled() => break,
        }
    }
    tracing::debug!(node_id = %ctx.node_id, "xDS stream closed");
    Ok(())
}
