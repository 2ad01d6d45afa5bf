//! moto behind an HTTP proxy on 127.0.0.1 that answers DescribeTasks as ECS does: every task
//! with an `availabilityZone` (moto's tasks carry none). Every other request and answer passes
//! through unchanged. For the real binary, whose AWS endpoint is this proxy; lives as long as
//! the test's runtime.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

const DESCRIBE_TASKS: &str = "AmazonEC2ContainerServiceV20141113.DescribeTasks";

pub struct ZonedEcs {
    pub addr: SocketAddr,
}

impl ZonedEcs {
    /// Forwards to moto at `upstream` (`http://127.0.0.1:PORT`), putting every described task
    /// in `zone`.
    pub async fn start(upstream: &str, zone: &'static str) -> ZonedEcs {
        let upstream: Arc<str> = upstream.into();
        let app = axum::Router::new().fallback(move |request: Request| {
            let upstream = upstream.clone();
            async move { forward(&upstream, zone, request).await }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        ZonedEcs { addr }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

async fn forward(upstream: &str, zone: &str, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let describes = parts.headers.get("x-amz-target").map(|t| t.as_bytes());
    let describes = describes == Some(DESCRIBE_TASKS.as_bytes());
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let answer = client
        .request(parts.method, format!("{upstream}{}", parts.uri))
        .headers(end_to_end(parts.headers))
        .body(body)
        .send()
        .await
        .unwrap();
    let status = answer.status();
    let headers = end_to_end(answer.headers().clone());
    let mut body = answer.bytes().await.unwrap();
    if describes && status == StatusCode::OK {
        body = in_zone(&body, zone);
    }
    (status, headers, body).into_response()
}

/// DescribeTasks output with every task in `zone`.
fn in_zone(body: &[u8], zone: &str) -> Bytes {
    let mut output: Value = serde_json::from_slice(body).unwrap();
    for task in output["tasks"].as_array_mut().into_iter().flatten() {
        task["availabilityZone"] = zone.into();
    }
    serde_json::to_vec(&output).unwrap().into()
}

/// `headers` without those of one hop or one body: each side sets its own.
fn end_to_end(mut headers: HeaderMap) -> HeaderMap {
    for name in [
        header::HOST,
        header::CONNECTION,
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
    ] {
        headers.remove(name);
    }
    headers.remove("x-amz-crc32");
    headers
}
