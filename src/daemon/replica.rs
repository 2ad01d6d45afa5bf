//! Which replica this is, for `/nodes`, the startup line, `/metrics` and the name of its own
//! events queue: the ECS task id when running on ECS (from the task metadata endpoint the agent
//! gives every container), the host name and pid otherwise. Several replicas behind one name
//! are told apart by it.

use std::time::Duration;

use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::discover::events::local_replica_id;

/// The variable ECS sets in every container of a task (metadata endpoint v4).
const METADATA_URI: &str = "ECS_CONTAINER_METADATA_URI_V4";

/// This replica's id. Never fails: without a usable metadata endpoint, host name and pid.
pub async fn replica_id() -> String {
    if let Ok(base) = std::env::var(METADATA_URI) {
        match task_id(&base).await {
            Ok(id) => return id,
            Err(e) => {
                tracing::warn!(%base, error = %e, "cannot read the ECS task metadata; naming this replica by its host name and pid")
            }
        }
    }
    local_replica_id()
}

async fn task_id(base: &str) -> Result<String, String> {
    let uri: http::Uri = format!("{base}/task").parse().map_err(|e| format!("{e}"))?;
    let client = Client::builder(TokioExecutor::new()).build_http::<axum::body::Body>();
    let request = http::Request::get(uri)
        .body(axum::body::Body::empty())
        .map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(Duration::from_secs(2), client.request(request))
        .await
        .map_err(|_| "no answer within 2 s".to_owned())?
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status()));
    }
    let body = axum::body::to_bytes(axum::body::Body::new(response.into_body()), 1 << 20)
        .await
        .map_err(|e| e.to_string())?;
    task_id_of(&body)
}

/// The task id: the last part of the metadata's `TaskARN`.
fn task_id_of(metadata: &[u8]) -> Result<String, String> {
    let json: serde_json::Value = serde_json::from_slice(metadata).map_err(|e| e.to_string())?;
    let arn = json["TaskARN"]
        .as_str()
        .ok_or("no TaskARN in the task metadata")?;
    Ok(arn.rsplit('/').next().unwrap_or(arn).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_task_id_is_the_end_of_the_task_arn() {
        let metadata = br#"{"Cluster": "prod", "TaskARN": "arn:aws:ecs:us-east-1:123456789012:task/prod/4d5e6f7a8b9c", "Family": "ecs-xds"}"#;
        assert_eq!(task_id_of(metadata).unwrap(), "4d5e6f7a8b9c");
        assert!(task_id_of(b"{}").unwrap_err().contains("TaskARN"));
    }
}
