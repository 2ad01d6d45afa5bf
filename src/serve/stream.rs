//! The stream runner: one task per xDS stream, shared by both protocol variants.
//!
//! Each stream is its own task with a small bounded outbox, so a client that stops reading
//! stalls only its own task; the publisher never waits for it, and other streams never notice.

use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use futures_channel::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming};

use super::body::{self, Outgoing};
use super::delta::DeltaState;
use super::peer::Verified;
use super::sotw::SotwState;
use super::wire::{DeltaResponse, SotwResponse};
use crate::cache::{Cache, SnapshotWatch, StreamStatus};
use crate::snapshot::Snapshot;

/// Responses waiting to be written per stream. The protocol state sends at most one response
/// per type before an ACK, so a handful is enough.
///
/// The outbox is a `futures-channel` channel rather than tokio's: tokio's allocates its slots
/// in blocks of 32 and pads its fields to cache lines, about 1.5 KiB per channel, which every
/// idle stream would carry; this one allocates per queued message.
const OUTBOX: usize = 8;

/// Who a stream serves; handed to the protocol state with each event.
#[derive(Debug)]
pub(crate) struct StreamContext {
    pub cache: Cache,
    pub stream_id: u64,
    pub node_id: String,
    pub node_type: String,
}

/// Which service a stream was opened on, and who its connection's certificate says it is.
pub(super) struct Peer {
    /// `ads`, `cds`, ... (the gRPC service).
    pub service: &'static str,
    /// The workload its client certificate names, when it presented one. An `Arc`: this sits
    /// in every stream's task for its whole life.
    pub verified: Option<Arc<Verified>>,
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
    peer: Peer,
    state: P,
    requests: Streaming<P::Request>,
) -> mpsc::Receiver<Outgoing>
where
    Streaming<P::Request>: Send,
{
    let (tx, rx) = mpsc::channel(OUTBOX);
    tokio::spawn(run(cache, shutdown, peer, state, requests, tx));
    rx
}

/// Unregisters a stream from the status registry however its task ends.
struct Registered<'a>(&'a Cache, u64);

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.0.status().disconnect(self.1);
    }
}

/// `Ok(value)`, or leaves the labeled block with the error.
macro_rules! or_end {
    ($label:lifetime, $result:expr) => {
        match $result {
            Ok(value) => value,
            Err(status) => break $label Err(status),
        }
    };
}

/// Waits for room in the outbox and queues `message`; fails once the response body is gone.
async fn send(tx: &mut mpsc::Sender<Outgoing>, message: Outgoing) -> Result<(), mpsc::SendError> {
    std::future::poll_fn(|cx| tx.poll_ready(cx)).await?;
    tx.start_send(message)
}

/// A stream registered from its first request.
struct Started<'a, R> {
    ctx: StreamContext,
    registered: Registered<'a>,
    snapshots: SnapshotWatch,
    /// The answer to the first request.
    outbox: Vec<R>,
}

/// Registers a stream from its first request and answers that request.
fn start<'a, P: Protocol>(
    cache: &'a Cache,
    peer: &Peer,
    state: &mut P,
    first: P::Request,
) -> Result<Started<'a, P::Response>, Status> {
    let service = peer.service;
    let node = P::node(&first)
        .ok_or_else(|| Status::invalid_argument("the first request of a stream must carry node"))?;
    let node_id = node.id.clone();
    let node_type = cache.resolve_node_type(node);
    // Its service picks its backend set, if that service declares one; its zone and region,
    // which endpoints it gets first. They are its certificate's, when it has one; else what
    // its bootstrap states (`node.cluster`, `node.locality`).
    let verified = peer.verified.as_deref();
    let caller = super::peer::caller(cache, node, verified)?;
    let location = super::peer::location(cache, node, verified)?;
    let stream_id = cache.status().connect(StreamStatus {
        connected_at: None,
        node_id: node_id.clone(),
        node_type: node_type.clone(),
        location: location.clone(),
        caller: caller.clone(),
        identity: verified.map(|v| v.id.to_string().into()),
        service,
        mode: P::MODE,
        types: Default::default(),
    });
    let registered = Registered(cache, stream_id);
    tracing::debug!(%node_id, %node_type, service, mode = P::MODE, "xDS stream opened");
    let ctx = StreamContext {
        cache: cache.clone(),
        stream_id,
        node_id,
        node_type,
    };
    let mut snapshots = cache.watch(&ctx.node_type, &caller, &location);
    let current = snapshots.borrow_and_update().clone();
    if let Some(snapshot) = current {
        state.on_snapshot(&ctx, snapshot);
    }
    let outbox = state.on_request(&ctx, first)?;
    Ok(Started {
        ctx,
        registered,
        snapshots,
        outbox,
    })
}

/// One stream, from its first request to its end.
///
/// This future lives as long as the stream, on every stream, so its size matters. It is one
/// `async move` block using what it captured in place, with a labeled block for early ends:
/// - not an `async fn`: an async fn moves its arguments into locals, and the future keeps room
///   for both, so the protocol state and the request stream would be stored twice;
/// - not one future awaiting another: the outer one would keep its own copy of them too.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn would store the state and the request stream twice"
)]
fn run<P: Protocol>(
    cache: Cache,
    shutdown: CancellationToken,
    peer: Peer,
    mut state: P,
    mut requests: Streaming<P::Request>,
    mut tx: mpsc::Sender<Outgoing>,
) -> impl std::future::Future<Output = ()> + Send + 'static
where
    Streaming<P::Request>: Send,
{
    async move {
        let outcome: Result<(), Status> = 'stream: {
            // The first request's own scope ends before the loop: a request (with its node) takes
            // hundreds of bytes, and anything in scope across the loop's awaits stays in this
            // future, on every stream, for the stream's whole life.
            let started = {
                let first = tokio::select! {
                    first = requests.message() => or_end!('stream, first),
                    _ = shutdown.cancelled() => break 'stream Ok(()),
                };
                let Some(first) = first else {
                    break 'stream Ok(());
                };
                start(&cache, &peer, &mut state, first)
            };
            let Started {
                ctx,
                registered: _registered,
                mut snapshots,
                mut outbox,
            } = or_end!('stream, started);
            loop {
                for response in outbox.drain(..) {
                    if send(&mut tx, Ok(body::frame(&response))).await.is_err() {
                        break 'stream Ok(());
                    }
                }
                tokio::select! {
                    request = requests.message() => match request {
                        Ok(Some(request)) => outbox = or_end!('stream, state.on_request(&ctx, request)),
                        Ok(None) => break,
                        // A request that does not decode ends the stream with tonic's status
                        // (INTERNAL, naming the decode error); if the client is gone, nobody reads it.
                        Err(status) => {
                            tracing::debug!(node_id = %ctx.node_id, %status, "xDS stream request failed");
                            break 'stream Err(status);
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
        };
        if let Err(status) = outcome {
            // A client's protocol mistake is worth an operator's attention; a dropped connection
            // is not.
            if status.code() == tonic::Code::InvalidArgument {
                tracing::info!(code = ?status.code(), message = status.message(), "xDS stream refused");
            } else {
                tracing::debug!(code = ?status.code(), message = status.message(), "xDS stream ended");
            }
            let _ = send(&mut tx, Err(Box::new(status))).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::NodeTypeResolver;

    /// The size of a stream's task future, and the part of it that is the protocol state and
    /// the request stream.
    fn task_size<P: Protocol>(state: P) -> (usize, usize)
    where
        Streaming<P::Request>: Send,
        P::Request: prost::Message + Default,
    {
        let (tx, _rx) = mpsc::channel(OUTBOX);
        let requests: Streaming<P::Request> = Streaming::new_request(
            super::super::codec::request_decoder::<P::Request>(),
            tonic::body::Body::empty(),
            None,
            None,
        );
        let held = std::mem::size_of_val(&state) + std::mem::size_of_val(&requests);
        let (cache, _publisher) = Cache::new(NodeTypeResolver::default());
        let peer = Peer {
            service: "ads",
            verified: None,
        };
        let task = run(cache, CancellationToken::new(), peer, state, requests, tx);
        (std::mem::size_of_val(&task), held)
    }

    /// The stream task lives as long as its stream, on every stream: its future must hold the
    /// protocol state and the request stream once (it held them twice, then three times, when
    /// it was an async fn, and awaited one), plus a bounded amount of await state.
    #[test]
    fn the_stream_task_holds_its_state_once() {
        for (size, held) in [
            task_size(SotwState::new(None)),
            task_size(DeltaState::new(None)),
        ] {
            assert!(
                size < 2 * held && size <= held + 800,
                "{size} bytes, of which {held} are the state and the requests"
            );
        }
    }
}
