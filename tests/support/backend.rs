//! A plain HTTP backend on 127.0.0.1 that answers every request with its name, or misbehaves
//! on purpose (for retries, timeouts and outlier detection).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use tokio::sync::oneshot;

/// How a backend answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// 200 with its name.
    Ok,
    /// 503 on the 1st, 3rd, 5th... request, 200 on the others.
    FailEveryOther,
    /// 503 always.
    Fail,
    /// 200, after this long.
    Slow(Duration),
}

pub struct Backend {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicU64>,
    _stop: oneshot::Sender<()>,
}

impl Backend {
    pub async fn start(name: &'static str) -> Backend {
        Backend::start_with(name, Behaviour::Ok).await
    }

    pub async fn start_with(name: &'static str, behaviour: Behaviour) -> Backend {
        let hits = Arc::new(AtomicU64::new(0));
        let counter = hits.clone();
        let app = axum::Router::new().fallback(move || {
            let counter = counter.clone();
            async move {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                match behaviour {
                    Behaviour::Ok => (StatusCode::OK, name),
                    Behaviour::FailEveryOther if n.is_multiple_of(2) => {
                        (StatusCode::SERVICE_UNAVAILABLE, name)
                    }
                    Behaviour::FailEveryOther => (StatusCode::OK, name),
                    Behaviour::Fail => (StatusCode::SERVICE_UNAVAILABLE, name),
                    Behaviour::Slow(d) => {
                        tokio::time::sleep(d).await;
                        (StatusCode::OK, name)
                    }
                }
            }
        });
        Backend::serve(app, hits).await
    }

    /// An HTTP app on 127.0.0.1 that answers `NAME xfcc=<x-forwarded-client-cert>`: who its
    /// Envoy says called (`none` without the header).
    pub async fn start_telling_caller(name: &'static str) -> Backend {
        let hits = Arc::new(AtomicU64::new(0));
        let counter = hits.clone();
        let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
            counter.fetch_add(1, Ordering::Relaxed);
            async move {
                let xfcc = headers.get("x-forwarded-client-cert");
                let xfcc = xfcc.and_then(|v| v.to_str().ok()).unwrap_or("none");
                format!("{name} xfcc={xfcc}")
            }
        });
        Backend::serve(app, hits).await
    }

    async fn serve(app: axum::Router, hits: Arc<AtomicU64>) -> Backend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Backend {
            addr,
            hits,
            _stop: stop,
        }
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }
}
