//! `[mtls]` and `[authz]`: mutual TLS between a node type's Envoys and the services they call,
//! and who may call them.
//!
//! ```toml
//! [mtls]
//! mode = "strict"                  # or "permissive" (TLS and plaintext side by side), "off"
//! trust_domain = "mesh.example"    # the [identity] trust domain the certificates are of
//! certificate_dir = "/certs"       # where the agent writes (the same path in Envoy's container)
//! ingress_listener = "ingress"     # the template listener other services call (default "ingress")
//!
//! [authz]
//! default = "allow"                # "deny": a service without `allow-from` accepts nobody
//! shadow_log_cluster = "ecs_xds"   # optional: report would-be denials to ecs-xds through it
//! ```
//!
//! `shadow_log_cluster` names the cluster of the Envoy's own bootstrap that reaches ecs-xds
//! (the one ADS uses). With it, each chain whose rules are only counted (`authz = shadow`, and
//! the plaintext chain of `permissive`) also sends the requests its rules would deny to
//! ecs-xds's access log service, which counts them by service and caller (`/nodes`,
//! `/metrics`). Without it, the would-be denials are only in Envoy's stats.
//!
//! A service's `<prefix>mtls` tag wins over `mode`; without an `[mtls]` section the node type
//! has no TLS at all (it has no certificate to use), whatever the tags say.
//!
//! A `[grpc]` node type (proxyless gRPC clients) takes `[mtls]` as gRFC A29 has it. Each ECS
//! cluster it reaches over TLS (as for Envoy: `mode`, or the callee's `mtls` tag, is not
//! `off`; Cloud Map services stay plaintext) carries an `UpstreamTlsContext` whose certificate
//! and roots are a certificate provider instance of the client's own bootstrap, where Envoy's
//! name the agent's SDS files, and which accepts exactly the callee's SPIFFE ID:
//!
//! ```toml
//! [mtls]
//! mode = "strict"
//! trust_domain = "mesh.example"
//! certificate_provider = "ecs-xds" # the bootstrap `certificate_providers` key (default "ecs-xds")
//! ```
//!
//! The client's bootstrap then holds that instance, a `file_watcher` over the agent's files:
//! `"certificate_providers": {"ecs-xds": {"plugin_name": "file_watcher", "config":
//! {"certificate_file": "DIR/cert.pem", "private_key_file": "DIR/key.pem",
//! "ca_certificate_file": "DIR/bundle.pem", "refresh_interval": "60s"}}}`, and the client dials
//! with xDS credentials (grpcio: `grpc.xds_channel_credentials(fallback_credentials=...)`); a
//! channel with insecure credentials ignores the TLS context and stays plaintext.
//! `certificate_dir` and `ingress_listener` are refused there: the bootstrap names the files,
//! and its xDS-enabled servers' listeners are `[grpc] server_addresses` (`grpc.rs`), each
//! secured by the service's policy (A29's `DownstreamTlsContext` from the same provider, A41's
//! RBAC; `[authz]` applies). `certificate_provider` is refused on an Envoy node type, which
//! reads the SDS files.

use serde::Deserialize;

use crate::envoy_json::{FieldError, FieldPath};
use crate::inventory::MtlsMode;

/// The default `ingress_listener`: the sidecar template's listener for other services' calls.
const INGRESS: &str = "ingress";
/// The default `certificate_provider` of a gRPC node type.
const CERTIFICATE_PROVIDER: &str = "ecs-xds";
/// The default `certificate_dir`.
const CERTIFICATE_DIR: &str = "/certs";

/// A node type's `[mtls]`, checked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mtls {
    pub mode: MtlsMode,
    pub trust_domain: String,
    /// Where the agent's SDS files are: `tls_certificate.yaml` and `validation_context.yaml`
    /// (unused by a gRPC node type).
    pub certificate_dir: String,
    /// The template listener that takes other services' calls, when the template has it
    /// (never for a gRPC node type).
    pub ingress_listener: Option<String>,
    /// For a gRPC node type: the certificate provider instance of its clients' bootstrap
    /// (`certificate_providers`) their clusters' TLS contexts name.
    pub certificate_provider: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MtlsSpec {
    mode: MtlsMode,
    trust_domain: String,
    #[serde(default)]
    certificate_dir: Option<String>,
    #[serde(default)]
    ingress_listener: Option<String>,
    #[serde(default)]
    certificate_provider: Option<String>,
}

/// `[authz]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuthzSpec {
    #[serde(default)]
    default: AuthzDefault,
    #[serde(default)]
    shadow_log_cluster: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum AuthzDefault {
    #[default]
    Allow,
    Deny,
}

impl AuthzSpec {
    /// True when a service without `allow-from` accepts no caller.
    pub(super) fn deny_by_default(&self) -> bool {
        self.default == AuthzDefault::Deny
    }

    /// The bootstrap cluster through which Envoy reports would-be denials to ecs-xds, checked:
    /// a name Envoy could hold (not empty, no whitespace or control characters).
    pub(super) fn shadow_log_cluster(&self, errors: &mut Vec<FieldError>) -> Option<String> {
        let name = self.shadow_log_cluster.as_deref()?;
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            let at = FieldPath::default().key("authz").key("shadow_log_cluster");
            errors.push(FieldError::new(
                at,
                format!("{name:?} is not a cluster name: give the name of the Envoy bootstrap's cluster to ecs-xds (deploy/ecs's is \"ecs_xds\")"),
            ));
            return None;
        }
        Some(name.to_owned())
    }
}

impl MtlsSpec {
    /// Checks the trust domain, the directory and the ingress listener against the template's
    /// listeners; for a gRPC node type (`grpc`), the certificate provider instance instead.
    pub(super) fn check(
        self,
        listeners: &[&str],
        grpc: bool,
        errors: &mut Vec<FieldError>,
    ) -> Option<Mtls> {
        let at = FieldPath::default().key("mtls");
        let before = errors.len();
        if let Err(e) = crate::spiffe::check_trust_domain(&self.trust_domain) {
            errors.push(FieldError::new(at.key("trust_domain"), e.to_string()));
        }
        let mut refuse = |key: &str, why: &str| errors.push(FieldError::new(at.key(key), why));
        if grpc {
            let name = self
                .certificate_provider
                .as_deref()
                .unwrap_or(CERTIFICATE_PROVIDER);
            if name.is_empty() {
                refuse("certificate_provider", "must name the certificate provider instance of the clients' bootstrap (`certificate_providers`)");
            }
            if self.certificate_dir.is_some() {
                refuse("certificate_dir", "not read for a [grpc] node type: its clients' bootstrap `certificate_providers` entry (a file_watcher) names the agent's files");
            }
            if self.ingress_listener.is_some() {
                refuse("ingress_listener", "not read for a [grpc] node type: its xDS-enabled servers' listeners are `[grpc] server_addresses`");
            }
            return (errors.len() == before).then(|| Mtls {
                mode: self.mode,
                trust_domain: self.trust_domain,
                certificate_dir: CERTIFICATE_DIR.to_owned(),
                ingress_listener: None,
                certificate_provider: name.to_owned(),
            });
        }
        if self.certificate_provider.is_some() {
            refuse("certificate_provider", "only for a [grpc] node type (proxyless clients' bootstrap); Envoy reads the agent's SDS files in certificate_dir");
        }
        let dir = self
            .certificate_dir
            .unwrap_or_else(|| CERTIFICATE_DIR.to_owned());
        if !dir.starts_with('/') {
            refuse(
                "certificate_dir",
                "must be an absolute path (Envoy reads it in its own container)",
            );
        }
        let ingress = match self.ingress_listener {
            Some(name) if !listeners.contains(&name.as_str()) => {
                refuse(
                    "ingress_listener",
                    &format!("no listener {name:?} in this template"),
                );
                None
            }
            Some(name) => Some(name),
            None => listeners.contains(&INGRESS).then(|| INGRESS.to_owned()),
        };
        (errors.len() == before).then_some(Mtls {
            mode: self.mode,
            trust_domain: self.trust_domain,
            certificate_dir: dir.trim_end_matches('/').to_owned(),
            ingress_listener: ingress,
            certificate_provider: CERTIFICATE_PROVIDER.to_owned(),
        })
    }
}
