//! Who a stream's peer is. On an xDS listener with client certificates, the certificate the
//! TLS handshake verified names the Envoy's service; the node's own claim (`node.cluster`, or
//! `node.metadata["ecs-xds.service"]`) may repeat it, or be absent, but never name another.

use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use tonic::Status;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::cache::Cache;
use crate::http_listener::PeerCertificates;
use crate::spiffe::SpiffeId;

/// Refusal reasons, as counted in `xds_identity_refused_total`.
pub(crate) const FOREIGN_CERTIFICATE: &str = "foreign_certificate";
pub(crate) const SERVICE_MISMATCH: &str = "service_mismatch";

/// The workload a request's verified client certificate names; `None` when the connection
/// presented none (plaintext, or `client_auth = "optional"`). A verified certificate that names
/// no workload of `trust_domain` is refused: it was issued for something else.
pub(super) fn workload(
    cache: &Cache,
    extensions: &http::Extensions,
    trust_domain: &str,
) -> Result<Option<Arc<SpiffeId>>, Status> {
    let Some(leaf) = extensions
        .get::<PeerCertificates>()
        .and_then(|certs| certs.0.first().cloned())
    else {
        return Ok(None);
    };
    match workload_of(&leaf).filter(|id| id.trust_domain == trust_domain) {
        Some(id) => Ok(Some(Arc::new(id))),
        None => {
            cache.status().counters().refused(FOREIGN_CERTIFICATE);
            Err(Status::permission_denied(
                "the client certificate names no workload of this mesh's trust domain",
            ))
        }
    }
}

/// The one SPIFFE ID among a certificate's URI names.
fn workload_of(der: &[u8]) -> Option<SpiffeId> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let names = cert.subject_alternative_name().ok()??;
    let mut uris = names.value.general_names.iter().filter_map(|n| match n {
        GeneralName::URI(uri) => Some(*uri),
        _ => None,
    });
    let (Some(uri), None) = (uris.next(), uris.next()) else {
        return None;
    };
    SpiffeId::parse(uri).ok()
}

/// The service a node is served as: its certificate's, when it has one, else its own claim.
pub(super) fn caller(
    cache: &Cache,
    node: &Node,
    verified: Option<&SpiffeId>,
) -> Result<String, Status> {
    let claimed = crate::cache::service_of(node);
    let Some(id) = verified else {
        return Ok(claimed);
    };
    if claimed.is_empty() || claimed == id.service {
        return Ok(id.service.clone());
    }
    cache.status().counters().refused(SERVICE_MISMATCH);
    tracing::warn!(
        node_id = %node.id,
        claimed = %claimed,
        certificate = %id,
        "xDS stream refused: the node claims a service its certificate does not name"
    );
    Err(Status::permission_denied(format!(
        "the node claims service {claimed:?}, its certificate names {:?}",
        id.service
    )))
}
