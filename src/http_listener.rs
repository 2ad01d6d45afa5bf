//! The accept loop both HTTP listeners share (the xDS gRPC port and the admin port): a cap on
//! open connections, a deadline for a new connection's first request, and a shutdown that ends
//! within a grace period whatever the peers do.
//!
//! A listener may also serve TLS ([`Tls`]), replaceable while it runs: each connection takes the
//! configuration in force when it was accepted, and its requests carry the client's verified
//! certificates ([`PeerCertificates`]) and address ([`PeerAddr`]).
//!
//! Why not the servers' own loops (tonic's, axum's): neither has a first-request deadline or a
//! connection cap, and both wait for every open connection at graceful shutdown, so one peer
//! that connects and never speaks (a port scanner, a slowloris on an admin port open to the VPC)
//! held the process past SIGTERM until ECS killed it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower_service::Service;

/// How one listener treats its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once; one more is closed as soon as it is accepted (and counted).
    pub max_connections: usize,
    /// A new connection must have made its first request by then, or it is closed.
    pub first_request: Duration,
    /// At shutdown, how long open connections get to finish before they are closed.
    pub grace: Duration,
    /// A connection older than this (±10%, so reconnects spread out) is asked to go away: its
    /// requests' [`ConnectionClosing`] token is cancelled and an HTTP/2 GOAWAY follows, so the
    /// peer reconnects, perhaps to another replica. `None`: connections live as long as their
    /// peers keep them.
    pub max_age: Option<Duration>,
}

/// In every request's extensions on a listener with a [`Limits::max_age`]: cancelled when the
/// connection reaches its age (or the listener shuts down), so a long-lived stream can end
/// itself gracefully and let the connection close.
#[derive(Debug, Clone)]
pub struct ConnectionClosing(pub CancellationToken);

/// A listener's TLS configuration, replaceable while it serves (a renewed server certificate,
/// a changed trust bundle). Cheap to clone: clones share the one configuration.
#[derive(Clone)]
pub struct Tls(Arc<RwLock<Arc<rustls::ServerConfig>>>);

impl Tls {
    pub fn new(config: rustls::ServerConfig) -> Self {
        Tls(Arc::new(RwLock::new(Arc::new(config))))
    }

    /// Connections accepted from now on use `config`; open ones keep theirs.
    pub fn replace(&self, config: rustls::ServerConfig) {
        // A poisoned lock only means a writer panicked mid-assignment of an Arc: the value is
        // still a whole configuration.
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let config = self.0.read().unwrap_or_else(|e| e.into_inner()).clone();
        tokio_rustls::TlsAcceptor::from(config)
    }
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls(..)")
    }
}

/// In every request's extensions on a TLS listener: the client certificate chain the
/// handshake verified, leaf first; empty when the client presented none (allowed only where
/// the listener's verifier allows it).
#[derive(Debug, Clone, Default)]
pub struct PeerCertificates(pub Arc<Vec<CertificateDer<'static>>>);

/// In every request's extensions: the address the connection came from.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// HTTP versions a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/2 with prior knowledge (gRPC), with keepalive pings so dead peers are noticed on
    /// idle streams (Envoy answers them).
    Http2,
    /// HTTP/1.1 (the admin views); a request head must arrive within `first_request`, on a
    /// new connection and between keep-alive requests alike.
    Http1,
    /// Both, told apart by HTTP/2's connection preface: gRPC, and xDS over REST-JSON from
    /// clients (and proxies) that speak only HTTP/1.1. Each keeps its own rules above.
    Http2OrHttp1,
}

/// What a listener's connections did, for `/metrics`.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    open: AtomicUsize,
    refused: AtomicU64,
    timed_out: AtomicU64,
    tls_failed: AtomicU64,
}

impl ConnectionStats {
    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
    /// Connections closed at once because `max_connections` were open.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
    /// Connections closed because their first request (on HTTP/1, any request head) did not
    /// come in time.
    pub fn timed_out(&self) -> u64 {
        self.timed_out.load(Ordering::Relaxed)
    }
    /// Connections whose TLS handshake failed: no client certificate where one is required, a
    /// certificate from another CA, an expired one, or not TLS at all.
    pub fn tls_failed(&self) -> u64 {
        self.tls_failed.load(Ordering::Relaxed)
    }
}

/// How a listener serves: its protocol, limits, counters and TLS (if any).
#[derive(Debug, Clone)]
pub struct Serving {
    pub protocol: Protocol,
    pub limits: Limits,
    pub stats: Arc<ConnectionStats>,
    pub tls: Option<Tls>,
    /// With `tls`: serve connections that do not open with a TLS handshake in plaintext too
    /// (`xds.client_auth = "optional"`, while a fleet moves over to mutual TLS).
    pub plaintext_beside_tls: bool,
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then lets open connections
/// finish for up to `limits.grace` and closes what is left. `name` labels logs.
pub async fn serve(
    name: &'static str,
    listener: TcpListener,
    router: axum::Router,
    serving: Serving,
    shutdown: CancellationToken,
) {
    let Serving {
        protocol,
        limits,
        stats,
        tls,
        plaintext_beside_tls,
    } = serving;
    let builder = builder(protocol, limits);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of descriptors, mostly: the open connections keep working, and
                        // accepting again at once would spin.
                        tracing::warn!(listener = name, error = %e, "accept failed; retrying in 100 ms");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    stats.refused.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(listener = name, %peer, max = limits.max_connections, "connection refused: too many open");
                    continue;
                };
                stats.open.fetch_add(1, Ordering::Relaxed);
                let connection = Connection {
                    name,
                    peer,
                    limits,
                    stats: stats.clone(),
                    plaintext_beside_tls,
                    _permit: permit,
                };
                let service = router.clone();
                let acceptor = tls.as_ref().map(Tls::acceptor);
                connections.spawn(connection.run(stream, acceptor, builder.clone(), service, shutdown.clone()));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(limits.grace, drained).await.is_err() {
        tracing::info!(
            listener = name,
            open = connections.len(),
            grace = ?limits.grace,
            "grace period over; closing the connections still open"
        );
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
}

fn builder(protocol: Protocol, limits: Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    match protocol {
        Protocol::Http2 => builder = builder.http2_only(),
        Protocol::Http1 => builder = builder.http1_only(),
        Protocol::Http2OrHttp1 => {}
    }
    if protocol != Protocol::Http1 {
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10));
    }
    if protocol != Protocol::Http2 {
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.first_request);
    }
    builder
}

/// Whether the connection's first byte is a TLS handshake record's (22); `None` when nothing
/// arrived before `deadline` or the connection failed. Peeked, not read: TLS still sees it.
async fn opens_with_tls(stream: &TcpStream, deadline: tokio::time::Instant) -> Option<bool> {
    const HANDSHAKE: u8 = 22;
    let mut first = [0u8; 1];
    match tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
        Ok(Ok(1)) => Some(first[0] == HANDSHAKE),
        _ => None,
    }
}

/// One accepted connection, counted open and holding its permit until it ends.
struct Connection {
    name: &'static str,
    peer: SocketAddr,
    limits: Limits,
    stats: Arc<ConnectionStats>,
    plaintext_beside_tls: bool,
    _permit: OwnedSemaphorePermit,
}

impl Connection {
    /// Shakes hands (on a TLS listener), then serves the connection.
    async fn run(
        self,
        stream: TcpStream,
        tls: Option<tokio_rustls::TlsAcceptor>,
        builder: auto::Builder<TokioExecutor>,
        router: axum::Router,
        shutdown: CancellationToken,
    ) {
        let _ = stream.set_nodelay(true);
        // The handshake counts against the first-request deadline.
        let deadline = tokio::time::Instant::now() + self.limits.first_request;
        let plaintext = match &tls {
            None => true,
            Some(_) if self.plaintext_beside_tls => match opens_with_tls(&stream, deadline).await {
                Some(tls) => !tls,
                None => {
                    self.stats.timed_out.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            },
            Some(_) => false,
        };
        let (Some(acceptor), false) = (tls, plaintext) else {
            let peer = PeerCertificates::default();
            return self
                .serve(stream, peer, deadline, builder, router, shutdown)
                .await;
        };
        let handshake = tokio::time::timeout_at(deadline, acceptor.accept(stream));
        let stream = match handshake.await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                self.stats.tls_failed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(listener = self.name, peer = %self.peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                self.stats.timed_out.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(listener = self.name, peer = %self.peer, "connection closed: no TLS handshake in time");
                return;
            }
        };
        let certificates = stream.get_ref().1.peer_certificates().unwrap_or_default();
        let peer = PeerCertificates(Arc::new(
            certificates
                .iter()
                .map(|c| c.clone().into_owned())
                .collect(),
        ));
        self.serve(stream, peer, deadline, builder, router, shutdown)
            .await
    }

    async fn serve<Io>(
        self,
        stream: Io,
        certificates: PeerCertificates,
        deadline: tokio::time::Instant,
        builder: auto::Builder<TokioExecutor>,
        router: axum::Router,
        shutdown: CancellationToken,
    ) where
        Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let spoke = Arc::new(AtomicBool::new(false));
        // Cancelled at the connection's age, and with the listener at shutdown.
        let closing = self.limits.max_age.map(|_| shutdown.child_token());
        let service = FirstRequest {
            spoke: spoke.clone(),
            closing: closing.clone(),
            certificates,
            peer: PeerAddr(self.peer),
            router,
        };
        let connection = builder.serve_connection(
            TokioIo::new(stream),
            hyper_util::service::TowerToHyperService::new(service),
        );
        tokio::pin!(connection);
        let deadline = tokio::time::sleep_until(deadline);
        tokio::pin!(deadline);
        let age = self.limits.max_age.map(jittered).unwrap_or(Duration::MAX);
        let aged = tokio::time::sleep(age.min(Duration::from_secs(100 * 365 * 86_400)));
        tokio::pin!(aged);
        let (mut waiting, mut draining) = (true, false);
        loop {
            tokio::select! {
                ended = connection.as_mut() => {
                    if let Err(e) = ended {
                        // HTTP/1's own header-read timeout (a slowloris) counts as ours.
                        let timeout = e.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_timeout);
                        if timeout {
                            self.stats.timed_out.fetch_add(1, Ordering::Relaxed);
                        }
                        tracing::debug!(listener = self.name, peer = %self.peer, error = %e, "connection ended");
                    }
                    break;
                }
                _ = &mut deadline, if waiting => {
                    waiting = false;
                    if !spoke.load(Ordering::Relaxed) {
                        self.stats.timed_out.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(
                            listener = self.name,
                            peer = %self.peer,
                            deadline = ?self.limits.first_request,
                            "connection closed: no request in time"
                        );
                        break;
                    }
                }
                _ = shutdown.cancelled(), if !draining => {
                    draining = true;
                    connection.as_mut().graceful_shutdown();
                }
                _ = &mut aged, if !draining && closing.is_some() => {
                    draining = true;
                    tracing::debug!(listener = self.name, peer = %self.peer, ?age, "connection reached its maximum age; asking the peer to reconnect");
                    if let Some(closing) = &closing {
                        closing.cancel();
                    }
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `age` give or take 10%.
fn jittered(age: Duration) -> Duration {
    age.mul_f64(0.9 + 0.2 * fastrand::f64())
}

/// The router, noting that the connection made a request.
#[derive(Clone)]
struct FirstRequest {
    spoke: Arc<AtomicBool>,
    closing: Option<CancellationToken>,
    certificates: PeerCertificates,
    peer: PeerAddr,
    router: axum::Router,
}

impl Service<http::Request<Incoming>> for FirstRequest {
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = axum::routing::future::RouteFuture<Infallible>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        Service::<http::Request<Incoming>>::poll_ready(&mut self.router, cx)
    }

    fn call(&mut self, mut request: http::Request<Incoming>) -> Self::Future {
        self.spoke.store(true, Ordering::Relaxed);
        request.extensions_mut().insert(self.certificates.clone());
        request.extensions_mut().insert(self.peer);
        if let Some(closing) = &self.closing {
            request
                .extensions_mut()
                .insert(ConnectionClosing(closing.clone()));
        }
        self.router.call(request)
    }
}
