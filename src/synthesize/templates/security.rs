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
//! ```
//!
//! A service's `<prefix>mtls` tag wins over `mode`; without an `[mtls]` section the node type
//! has no TLS at all (it has no certificate to use), whatever the tags say.

use serde::Deserialize;

use crate::envoy_json::{FieldError, FieldPath};
use crate::inventory::MtlsMode;

/// The default `ingress_listener`: the sidecar template's listener for other services' calls.
const INGRESS: &str = "ingress";

/// A node type's `[mtls]`, checked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mtls {
    pub mode: MtlsMode,
    pub trust_domain: String,
    /// Where the agent's SDS files are: `tls_certificate.yaml` and `validation_context.yaml`.
    pub certificate_dir: String,
    /// The template listener that takes other services' calls, when the template has it.
    pub ingress_listener: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MtlsSpec {
    mode: MtlsMode,
    trust_domain: String,
    #[serde(default = "default_certificate_dir")]
    certificate_dir: String,
    #[serde(default)]
    ingress_listener: Option<String>,
}

fn default_certificate_dir() -> String {
    "/certs".to_owned()
}

/// `[authz]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuthzSpec {
    #[serde(default)]
    default: AuthzDefault,
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
}

impl MtlsSpec {
    /// Checks the trust domain, the directory and the ingress listener against the template's
    /// listeners.
    pub(super) fn check(self, listeners: &[&str], errors: &mut Vec<FieldError>) -> Option<Mtls> {
        let at = FieldPath::default().key("mtls");
        let before = errors.len();
        if let Err(e) = crate::spiffe::check_trust_domain(&self.trust_domain) {
            errors.push(FieldError::new(at.key("trust_domain"), e.to_string()));
        }
        if !self.certificate_dir.starts_with('/') {
            errors.push(FieldError::new(
                at.key("certificate_dir"),
                "must be an absolute path (Envoy reads it in its own container)",
            ));
        }
        let ingress = match self.ingress_listener {
            Some(name) if !listeners.contains(&name.as_str()) => {
                errors.push(FieldError::new(
                    at.key("ingress_listener"),
                    format!("no listener {name:?} in this template"),
                ));
                None
            }
            Some(name) => Some(name),
            None => listeners.contains(&INGRESS).then(|| INGRESS.to_owned()),
        };
        (errors.len() == before).then_some(Mtls {
            mode: self.mode,
            trust_domain: self.trust_domain,
            certificate_dir: self.certificate_dir.trim_end_matches('/').to_owned(),
            ingress_listener: ingress,
        })
    }
}
