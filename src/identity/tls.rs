//! The rustls configurations of ecs-xds's listeners (server certificate from the CA; client
//! certificates checked against the trust bundle) and of the agent (server checked against the
//! bundle it was given).
//!
//! One crypto provider, named here (aws-lc-rs, the SDK's own), so that rustls never has to guess
//! a process default when two providers are linked in.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub use crate::settings::ClientAuth;

/// A PEM input that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what}: no certificate in it")]
    NoCertificate { what: &'static str },
    #[error("{what}: {message}")]
    Invalid { what: &'static str, message: String },
}

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The certificates of a PEM text, in order.
pub fn certificates(
    pem: &str,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Invalid {
            what,
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { what });
    }
    Ok(certs)
}

/// The roots of a trust bundle.
pub fn roots(bundle_pem: &str) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(bundle_pem, "trust bundle")? {
        roots.add(cert).map_err(|e| TlsError::Invalid {
            what: "trust bundle",
            message: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// A listener's configuration: `chain_pem`/`key_pem` its certificate, client certificates
/// checked against `bundle_pem` as `client_auth` says, `alpn` the protocols it speaks.
pub fn server_config(
    chain_pem: &str,
    key_pem: &str,
    bundle_pem: &str,
    client_auth: ClientAuth,
    alpn: &[&[u8]],
) -> Result<rustls::ServerConfig, TlsError> {
    let invalid = |what: &'static str| {
        move |e: rustls::Error| TlsError::Invalid {
            what,
            message: e.to_string(),
        }
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(invalid("TLS versions"))?;
    let builder = match client_auth {
        ClientAuth::Off => builder.with_no_client_auth(),
        ClientAuth::Optional | ClientAuth::Required => {
            let verifier = WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots(bundle_pem)?),
                provider(),
            );
            let verifier = match client_auth {
                ClientAuth::Optional => verifier.allow_unauthenticated(),
                _ => verifier,
            };
            let verifier = verifier.build().map_err(|e| TlsError::Invalid {
                what: "trust bundle",
                message: e.to_string(),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| TlsError::Invalid {
        what: "server key",
        message: e.to_string(),
    })?;
    let mut config = builder
        .with_single_cert(certificates(chain_pem, "server certificate")?, key)
        .map_err(invalid("server certificate"))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// The agent's configuration: the server must present a certificate that verifies against
/// `bundle_pem` for the name it is reached by. No client certificate: the proof is the
/// credential.
pub fn client_config(bundle_pem: &str) -> Result<rustls::ClientConfig, TlsError> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Invalid {
            what: "TLS versions",
            message: e.to_string(),
        })?
        .with_root_certificates(roots(bundle_pem)?)
        .with_no_client_auth();
    Ok(config)
}
