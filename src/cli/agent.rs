//! `ecs-xds agent`: the identity sidecar ([`crate::agent`]); `--check` is its health check.

use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

use super::CommandError;
use crate::agent::{self, Options};

/// The agent's flags, as `main.rs` parsed them.
#[derive(Debug, Clone)]
pub struct AgentFlags {
    pub server: String,
    pub server_id: String,
    /// The trust bundle itself (PEM), e.g. from an ECS secret in an environment variable.
    pub trust_bundle: Option<String>,
    pub trust_bundle_file: Option<PathBuf>,
    pub out_dir: PathBuf,
    pub sts_region: Option<String>,
    pub task_arn: Option<String>,
    pub key_mode: u32,
}

/// Runs the agent until SIGTERM or SIGINT.
pub async fn agent(flags: AgentFlags) -> Result<(), CommandError> {
    let options = options(flags).await?;
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        super::run::terminated().await;
        stop.cancel();
    });
    agent::run(options, shutdown)
        .await
        .map_err(|e| CommandError::Agent(e.to_string()))
}

/// `--check`: exit 0 while the certificate in `dir` is valid with a tenth of its life left.
pub fn agent_check(dir: &std::path::Path) -> Result<(), CommandError> {
    let left = agent::check(dir).map_err(CommandError::Agent)?;
    println!("certificate valid for {}s", left.as_secs());
    Ok(())
}

async fn options(flags: AgentFlags) -> Result<Options, CommandError> {
    let input = |message: String| CommandError::AgentInput(message);
    let bundle_pem = match (flags.trust_bundle, &flags.trust_bundle_file) {
        (Some(pem), None) => pem,
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| input(format!("--trust-bundle-file {}: {e}", path.display())))?,
        _ => {
            return Err(input(
                "give one of --trust-bundle and --trust-bundle-file".into(),
            ))
        }
    };
    let server: http::Uri = flags
        .server
        .parse()
        .map_err(|e| input(format!("--server {:?}: {e}", flags.server)))?;
    if server.scheme_str() != Some("https") {
        return Err(input(format!("--server {server}: must be https://")));
    }
    let sts_region = flags
        .sts_region
        .or_else(|| std::env::var("AWS_REGION").ok())
        .ok_or_else(|| input("no --sts-region and no AWS_REGION".into()))?;
    let task_arn = match flags.task_arn {
        Some(arn) => arn,
        None => task_arn_from_metadata().await.map_err(input)?,
    };
    Ok(Options {
        server,
        server_id: flags.server_id,
        bundle_pem,
        out_dir: flags.out_dir,
        sts_region,
        task_arn,
        key_mode: flags.key_mode,
    })
}

/// The task's ARN from the ECS task metadata endpoint (v4), which ECS gives every container.
async fn task_arn_from_metadata() -> Result<String, String> {
    let base = std::env::var("ECS_CONTAINER_METADATA_URI_V4")
        .map_err(|_| "no --task-arn, and ECS_CONTAINER_METADATA_URI_V4 is not set (not on ECS?)")?;
    let url = format!("{base}/task");
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let uri: http::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let response = client.get(uri).await.map_err(|e| format!("{url}: {e}"))?;
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .map_err(|e| format!("{url}: {e}"))?
        .to_bytes();
    #[derive(serde::Deserialize)]
    struct Task {
        #[serde(rename = "TaskARN")]
        task_arn: String,
    }
    let task: Task = serde_json::from_slice(&body).map_err(|e| format!("{url}: {e}"))?;
    Ok(task.task_arn)
}
