//! The identity parts of `run` (`[identity]` on): the CA, ecs-xds's own certificate on the
//! identity and xDS listeners, and the endpoint agents call.
//!
//! ecs-xds's own certificate is issued by its CA at start and again at half its life, and
//! swapped into both listeners while they run; with the CA in Secrets Manager, the secret is
//! read again every [`CA_REFRESH`], so a new intermediate or bundle (a CA change) reaches every
//! replica without a restart.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::DaemonError;
use crate::aws::{Aws, Sts};
use crate::discover::DiscoverError;
use crate::http_listener::{self, ConnectionStats, Limits, Protocol, Tls};
use crate::identity::attest::{AttestScope, Attestor, Policy, Watched};
use crate::identity::ca::Ca;
use crate::identity::endpoint::{self, Endpoint};
use crate::identity::proof::Pins;
use crate::identity::tls::{server_config, ClientAuth};
use crate::identity::{CaHolder, IdentityStats};
use crate::settings::{CaSource, Settings};

/// How long ecs-xds's own certificate is valid; it is renewed at half of it.
const SERVER_CERTIFICATE_TTL: Duration = Duration::from_secs(24 * 3600);
/// How often a CA kept in Secrets Manager is read again.
const CA_REFRESH: Duration = Duration::from_secs(300);

/// Everything the identity stage runs with, made by [`open`].
pub(super) struct Identity {
    listener: TcpListener,
    pub addr: SocketAddr,
    pub ca: CaHolder,
    pub stats: Arc<IdentityStats>,
    endpoint: Endpoint,
    identity_tls: Tls,
    /// The xDS listener's TLS, when `xds.tls` is on, with its client-certificate rule.
    pub xds_tls: Option<(Tls, ClientAuth)>,
    settings: Settings,
    aws: Aws,
    limits: Limits,
    /// The identity listener's connections, for `/metrics`.
    pub connections: Arc<ConnectionStats>,
}

/// Loads the CA, issues ecs-xds's certificate and binds the identity listener.
pub(super) async fn open(
    settings: &Settings,
    config: &Path,
    aws: Aws,
) -> Result<Identity, DaemonError> {
    let identity = &settings.identity;
    let ca = load_ca(&identity.ca, config, &identity.trust_domain, &aws).await?;
    let (identity_config, xds_config) = listener_configs(settings, &ca)?;
    let identity_tls = Tls::new(identity_config);
    let xds_tls = xds_config.map(|c| (Tls::new(c), settings.xds.client_auth));
    let region = identity
        .sts_region
        .clone()
        .unwrap_or_else(|| aws.region().to_owned());
    let sts = Sts::new(
        &region,
        identity.sts_endpoint.as_deref(),
        aws.calls().clone(),
    )?;
    let scopes = attest_scopes(settings, &aws).await?;
    let policy = Policy {
        pins: Pins {
            sts_host: sts.host().to_owned(),
            sts_region: region,
            server_id: identity.server_id(),
        },
        trust_domain: identity.trust_domain.clone(),
        scopes,
        ttl: identity.certificate_ttl,
        check_task_address: identity.check_task_address,
    };
    let ca = CaHolder::new(ca);
    let stats = Arc::new(IdentityStats::default());
    let endpoint = Endpoint {
        attestor: Arc::new(Attestor::new(policy, sts, ca.clone())),
        ca: ca.clone(),
        stats: stats.clone(),
        max_body_bytes: identity.max_body_bytes,
        request_timeout: identity.request_timeout,
    };
    let (listener, addr) = super::bind("identity", "identity.listen", identity.listen).await?;
    let limits = Limits {
        max_connections: identity.max_connections,
        first_request: identity.request_timeout,
        grace: settings.shutdown_grace,
        max_age: None,
    };
    Ok(Identity {
        listener,
        addr,
        ca,
        stats,
        endpoint,
        identity_tls,
        xds_tls,
        settings: settings.clone(),
        aws,
        limits,
        connections: Arc::default(),
    })
}

/// The CA from its three files or its secret.
async fn load_ca(
    source: &CaSource,
    config: &Path,
    trust_domain: &str,
    aws: &Aws,
) -> Result<Ca, DaemonError> {
    let invalid = |from: String, message: String| DaemonError::Ca { from, message };
    match (
        &source.secret_id,
        &source.key_file,
        &source.chain_file,
        &source.bundle_file,
    ) {
        (Some(secret), ..) => {
            let text = aws.secret_string(secret).await?;
            let from = format!("secret {secret}");
            let parts: SecretCa = serde_json::from_str(&text).map_err(|e| {
                // serde's message names the field, never the value.
                invalid(
                    from.clone(),
                    format!("not JSON {{\"key\", \"chain\", \"bundle\"}}: {e}"),
                )
            })?;
            Ca::from_pem(&parts.key, &parts.chain, &parts.bundle, trust_domain)
                .map_err(|e| invalid(from, e.to_string()))
        }
        (None, Some(key), Some(chain), Some(bundle)) => {
            let read = |path: &Path| {
                let path = crate::settings::beside(config, path);
                std::fs::read_to_string(&path)
                    .map_err(|e| invalid(path.display().to_string(), e.to_string()))
            };
            let from = format!("{} and {}", chain.display(), key.display());
            Ca::from_pem(&read(key)?, &read(chain)?, &read(bundle)?, trust_domain)
                .map_err(|e| invalid(from, e.to_string()))
        }
        _ => Err(invalid(
            "identity.ca".into(),
            "give key_file, chain_file and bundle_file, or secret_id".into(),
        )),
    }
}

/// The CA secret's JSON. `Debug` is not derived: it holds a key.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretCa {
    key: String,
    chain: String,
    bundle: String,
}

/// The identity listener's TLS (server certificate only: the proof is the credential) and,
/// with `xds.tls`, the xDS listener's (client certificates as `xds.client_auth` says).
fn listener_configs(
    settings: &Settings,
    ca: &Ca,
) -> Result<(rustls::ServerConfig, Option<rustls::ServerConfig>), DaemonError> {
    let identity = &settings.identity;
    let uri = format!("spiffe://{}/ecs-xds", identity.trust_domain);
    let own = ca
        .issue_server(
            &identity.server_names,
            &uri,
            SERVER_CERTIFICATE_TTL,
            SystemTime::now(),
        )
        .map_err(|e| DaemonError::Ca {
            from: "ecs-xds's own certificate".into(),
            message: e.to_string(),
        })?;
    let tls_error = |e: crate::identity::tls::TlsError| DaemonError::Ca {
        from: "ecs-xds's own certificate".into(),
        message: e.to_string(),
    };
    let bundle = ca.bundle_pem();
    let identity_config = server_config(
        &own.chain_pem,
        &own.key_pem,
        bundle,
        ClientAuth::Off,
        &[b"http/1.1"],
    )
    .map_err(tls_error)?;
    let xds_config = match settings.xds.tls {
        false => None,
        true => Some(
            server_config(
                &own.chain_pem,
                &own.key_pem,
                bundle,
                settings.xds.client_auth,
                // gRPC, and REST-JSON xDS from HTTP/1.1 clients.
                &[b"h2", b"http/1.1"],
            )
            .map_err(tls_error)?,
        ),
    };
    Ok((identity_config, xds_config))
}

impl Identity {
    /// Serves the identity endpoint, renews ecs-xds's own certificate at half its life and
    /// re-reads a Secrets Manager CA, until `stop`.
    pub(super) async fn run(self, stop: CancellationToken) {
        let router = endpoint::router(self.endpoint.clone());
        let serve = http_listener::serve(
            "identity",
            self.listener,
            router,
            http_listener::Serving {
                protocol: Protocol::Http1,
                limits: self.limits,
                stats: self.connections.clone(),
                tls: Some(self.identity_tls.clone()),
                plaintext_beside_tls: false,
            },
            stop.clone(),
        );
        let renew = renew(
            self.settings,
            self.aws,
            self.ca,
            self.identity_tls,
            self.xds_tls.map(|(tls, _)| tls),
            stop.clone(),
        );
        tokio::join!(serve, renew);
    }
}

/// Reads the CA secret again; whether it now holds another CA (chain or bundle), which is then
/// the one that signs. A failure keeps the CA already loaded.
async fn reload_ca(settings: &Settings, aws: &Aws, ca: &CaHolder) -> bool {
    let identity = &settings.identity;
    match load_ca(&identity.ca, Path::new(""), &identity.trust_domain, aws).await {
        Ok(fresh) => {
            let current = ca.current();
            let same = fresh.chain_pem() == current.chain_pem()
                && fresh.bundle_pem() == current.bundle_pem();
            if !same {
                ca.replace(fresh);
                tracing::info!("the CA secret holds a new CA; signing with it");
            }
            !same
        }
        Err(e) => {
            tracing::warn!(error = %e, "reading the CA secret again failed; signing with the CA already loaded");
            false
        }
    }
}

/// Reissues ecs-xds's certificate at half its life, and at once when a Secrets Manager CA,
/// read again every [`CA_REFRESH`], has changed; swaps both listeners' TLS. A failure keeps
/// what is served and is retried.
async fn renew(
    settings: Settings,
    aws: Aws,
    ca: CaHolder,
    identity_tls: Tls,
    xds_tls: Option<Tls>,
    stop: CancellationToken,
) {
    let mut issued_at = tokio::time::Instant::now();
    loop {
        let wait = match settings.identity.ca.secret_id {
            Some(_) => CA_REFRESH,
            None => SERVER_CERTIFICATE_TTL / 2,
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return,
        }
        let changed =
            settings.identity.ca.secret_id.is_some() && reload_ca(&settings, &aws, &ca).await;
        let due = issued_at.elapsed() >= SERVER_CERTIFICATE_TTL / 2;
        if !due && !changed {
            continue;
        }
        match listener_configs(&settings, &ca.current()) {
            Ok((identity_config, xds_config)) => {
                identity_tls.replace(identity_config);
                if let (Some(tls), Some(config)) = (&xds_tls, xds_config) {
                    tls.replace(config);
                }
                issued_at = tokio::time::Instant::now();
                tracing::info!("ecs-xds's own certificate renewed");
            }
            Err(e) => {
                tracing::error!(error = %e, "renewing ecs-xds's own certificate failed; keeping the current one")
            }
        }
    }
}

/// The accounts and regions whose watched clusters' tasks may get certificates: every scope
/// discovery watches, each asked with its own clients (an assumed role for another account).
async fn attest_scopes(settings: &Settings, aws: &Aws) -> Result<Vec<AttestScope>, DaemonError> {
    let discover = settings.discover().map_err(DiscoverError::from)?;
    let mut scopes = Vec::new();
    for scope in discover.scopes() {
        let clients = aws.for_scope(&scope).await?;
        scopes.push(AttestScope {
            account: scope.account.clone(),
            region: clients.region().to_owned(),
            watched: match scope.auto_discover_clusters {
                true => Watched::All,
                false => Watched::Clusters(scope.clusters.clone()),
            },
            aws: clients,
        });
    }
    Ok(scopes)
}
