//! `ecs-xds agent`: the sidecar that gets its task a certificate and keeps it fresh.
//!
//! Each round it makes a new P-256 key in memory (it never leaves the task), a CSR, and a proof:
//! a `sts:GetCallerIdentity` request signed with the task role's credentials and not sent,
//! whose signed headers name the server (so the proof is useless elsewhere) and the hash of the
//! CSR's public key (so it is useless with another key). It posts {proof, CSR, task ARN} to
//! ecs-xds's identity endpoint over TLS, checking ecs-xds's certificate against the trust
//! bundle it was given, and writes what it gets for Envoy ([`files`]).
//!
//! It renews at half the certificate's life, give or take 10% (so a fleet started together
//! spreads out), and on failure retries with capped backoff. If it cannot renew before expiry it
//! logs at error on every attempt and fails its health check (`ecs-xds agent --check`), and
//! keeps the certificate it has until then: Envoy keeps working as long as it can.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio_util::sync::CancellationToken;

use crate::aws::AwsError;
use crate::identity::attest::CertificateRequest;
use crate::identity::endpoint::{CertificateResponse, CERTIFICATE_PATH};
use crate::identity::proof::{KEY_HASH_HEADER, SERVER_ID_HEADER};

pub mod files;

/// How the agent was started.
#[derive(Debug, Clone)]
pub struct Options {
    /// The identity endpoint: `https://HOST:PORT`; HOST must be a name in ecs-xds's certificate.
    pub server: http::Uri,
    /// The id the server expects in its proofs (`identity.server_id`).
    pub server_id: String,
    /// The roots ecs-xds's certificate must chain to (PEM).
    pub bundle_pem: String,
    /// Where the certificate, key and bundle are written for Envoy.
    pub out_dir: PathBuf,
    /// The region whose STS the proof is signed for (`identity.sts_region`).
    pub sts_region: String,
    /// This task's ARN.
    pub task_arn: String,
    /// The key file's permission bits.
    pub key_mode: u32,
}

/// Why a round failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("making the key or CSR: {0}")]
    Key(String),
    #[error("signing the proof: {0}")]
    Sign(#[from] AwsError),
    #[error("reaching {server}: {message}")]
    Connect { server: String, message: String },
    #[error("{server} answered {status}: {message}")]
    Answer {
        server: String,
        status: u16,
        message: String,
    },
    #[error("writing to {dir}: {source}")]
    Write {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the trust bundle: {0}")]
    Bundle(String),
}

impl AgentError {
    /// A refusal will not turn into a certificate by retrying soon: back off the most.
    fn refused(&self) -> bool {
        matches!(self, AgentError::Answer { status, .. } if (400..500).contains(status))
    }
}

type HttpsClient = Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

/// Gets certificates until `shutdown`. Returns an error only if nothing can ever work (the
/// trust bundle is unusable); every failed round is retried.
pub async fn run(options: Options, shutdown: CancellationToken) -> Result<(), AgentError> {
    let client = https_client(&options.bundle_pem)?;
    files::write_sds_files(&options.out_dir).map_err(|source| AgentError::Write {
        dir: options.out_dir.clone(),
        source,
    })?;
    let mut held: Option<SystemTime> = files::current_expiry(&options.out_dir);
    let mut backoff = Duration::from_secs(1);
    loop {
        let wait = match round(&client, &options).await {
            Ok(expires) => {
                held = Some(expires);
                backoff = Duration::from_secs(1);
                renewal_delay(SystemTime::now(), expires)
            }
            Err(e) => {
                let wait = if e.refused() {
                    Duration::from_secs(30)
                } else {
                    backoff
                };
                backoff = (backoff * 2).min(Duration::from_secs(60));
                report_failure(&e, held, wait);
                wait
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => return Ok(()),
        }
    }
}

/// When to renew a certificate expiring at `expires`: half of what is left, ±10%.
fn renewal_delay(now: SystemTime, expires: SystemTime) -> Duration {
    let left = expires.duration_since(now).unwrap_or_default();
    (left / 2).mul_f64(0.9 + 0.2 * fastrand::f64())
}

fn report_failure(e: &AgentError, held: Option<SystemTime>, wait: Duration) {
    let left = held.and_then(|h| h.duration_since(SystemTime::now()).ok());
    match left {
        Some(left) => {
            tracing::warn!(error = %e, certificate_valid_for = ?left, retry_in = ?wait, "certificate renewal failed; keeping the current certificate")
        }
        None => {
            tracing::error!(error = %e, retry_in = ?wait, "no valid certificate: Envoy cannot reach the mesh until one is issued")
        }
    }
}

fn https_client(bundle_pem: &str) -> Result<HttpsClient, AgentError> {
    let config = crate::identity::tls::client_config(bundle_pem)
        .map_err(|e| AgentError::Bundle(e.to_string()))?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

/// One round: key, CSR, proof, request, files. Returns the new certificate's expiry.
async fn round(client: &HttpsClient, options: &Options) -> Result<SystemTime, AgentError> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| AgentError::Key(e.to_string()))?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .map_err(|e| AgentError::Key(e.to_string()))?;
    let hash =
        crate::identity::ca::key_sha256_hex(&csr).map_err(|e| AgentError::Key(e.to_string()))?;
    let extra = [
        (SERVER_ID_HEADER, options.server_id.as_str()),
        (KEY_HASH_HEADER, hash.as_str()),
    ];
    let proof = crate::aws::sign_caller_identity(&options.sts_region, &extra).await?;
    let request = CertificateRequest {
        proof,
        csr,
        task_arn: options.task_arn.clone(),
    };
    let answer = post(client, options, &request).await?;
    let expires = humantime::parse_rfc3339(&answer.expires_at).map_err(|e| AgentError::Answer {
        server: options.server.to_string(),
        status: 200,
        message: format!("expires_at: {e}"),
    })?;
    let written = files::Written {
        chain_pem: &answer.certificate_chain,
        key_pem: &key.serialize_pem(),
        bundle_pem: &answer.trust_bundle,
    };
    files::write(&options.out_dir, &written, options.key_mode).map_err(|source| {
        AgentError::Write {
            dir: options.out_dir.clone(),
            source,
        }
    })?;
    tracing::info!(spiffe_id = %answer.spiffe_id, expires_at = %answer.expires_at, "certificate written");
    Ok(expires)
}

async fn post(
    client: &HttpsClient,
    options: &Options,
    request: &CertificateRequest,
) -> Result<CertificateResponse, AgentError> {
    let server = options.server.to_string();
    let connect = |message: String| AgentError::Connect {
        server: server.clone(),
        message,
    };
    let uri = format!("{}{CERTIFICATE_PATH}", server.trim_end_matches('/'));
    let body = serde_json::to_vec(request).map_err(|e| connect(e.to_string()))?;
    let http = http::Request::post(uri)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| connect(e.to_string()))?;
    let send = tokio::time::timeout(Duration::from_secs(30), client.request(http));
    let response = send
        .await
        .map_err(|_| connect("no answer within 30 s".into()))?
        .map_err(|e| connect(error_chain(&e)))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| connect(e.to_string()))?
        .to_bytes();
    if !status.is_success() {
        return Err(AgentError::Answer {
            server,
            status: status.as_u16(),
            message: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    serde_json::from_slice(&body).map_err(|e| AgentError::Answer {
        server,
        status: status.as_u16(),
        message: format!("not a certificate response: {e}"),
    })
}

/// An error with its causes, which hyper keeps in its source chain (the TLS failure, say).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `ecs-xds agent --check`: whether `dir` holds a certificate that is valid now with more than a
/// tenth of its life left (a container health check: an agent that cannot renew turns
/// unhealthy before its Envoy fails).
pub fn check(dir: &std::path::Path) -> Result<Duration, String> {
    let (not_before, not_after) = files::validity(dir)?;
    let now = SystemTime::now();
    let left = not_after
        .duration_since(now)
        .map_err(|_| "the certificate has expired".to_owned())?;
    let life = not_after.duration_since(not_before).unwrap_or_default();
    if left < life / 10 {
        return Err(format!(
            "the certificate expires in {}s and was not renewed",
            left.as_secs()
        ));
    }
    Ok(left)
}
