//! Who a stream's peer is. On an xDS listener with client certificates, the certificate the
//! TLS handshake verified names the Envoy's service and region (its SPIFFE ID), and the zone its
//! task runs in when ECS named one (the subject's localityName, written by the CA from
//! attestation). The node's own claims (`node.cluster`, or `node.metadata["ecs-xds.service"]`;
//! `node.locality.zone` and `region`) may repeat them, or be absent, but never name others.

use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use tonic::Status;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::cache::{Cache, Location};
use crate::http_listener::PeerCertificates;
use crate::spiffe::SpiffeId;

/// Refusal reasons, as counted in `xds_identity_refused_total`.
pub(crate) const FOREIGN_CERTIFICATE: &str = "foreign_certificate";
pub(crate) const SERVICE_MISMATCH: &str = "service_mismatch";
pub(crate) const ZONE_MISMATCH: &str = "zone_mismatch";
pub(crate) const REGION_MISMATCH: &str = "region_mismatch";

/// What a connection's verified client certificate says of its workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verified {
    pub id: SpiffeId,
    /// The availability zone of the attested task; `None` when ECS named none, or the
    /// certificate predates zones in certificates.
    pub zone: Option<String>,
}

/// The workload a request's verified client certificate names; `None` when the connection
/// presented none (plaintext, or `client_auth = "optional"`). A verified certificate that names
/// no workload of `trust_domain` is refused: it was issued for something else.
pub(super) fn workload(
    cache: &Cache,
    extensions: &http::Extensions,
    trust_domain: &str,
) -> Result<Option<Arc<Verified>>, Status> {
    let Some(leaf) = extensions
        .get::<PeerCertificates>()
        .and_then(|certs| certs.0.first().cloned())
    else {
        return Ok(None);
    };
    match verified_of(&leaf).filter(|v| v.id.trust_domain == trust_domain) {
        Some(verified) => Ok(Some(Arc::new(verified))),
        None => {
            cache.status().counters().refused(FOREIGN_CERTIFICATE);
            Err(Status::permission_denied(
                "the client certificate names no workload of this mesh's trust domain",
            ))
        }
    }
}

/// The one SPIFFE ID among a certificate's URI names, and its one localityName, if any.
fn verified_of(der: &[u8]) -> Option<Verified> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let names = cert.subject_alternative_name().ok()??;
    let mut uris = names.value.general_names.iter().filter_map(|n| match n {
        GeneralName::URI(uri) => Some(*uri),
        _ => None,
    });
    let (Some(uri), None) = (uris.next(), uris.next()) else {
        return None;
    };
    let mut zones = cert.subject().iter_locality().map(|l| l.as_str());
    let zone = match (zones.next(), zones.next()) {
        (Some(Ok(zone)), None) if !zone.is_empty() => Some(zone.to_owned()),
        _ => None,
    };
    let id = SpiffeId::parse(uri).ok()?;
    Some(Verified { id, zone })
}

/// The service a node is served as: its certificate's, when it has one, else its own claim.
pub(super) fn caller(
    cache: &Cache,
    node: &Node,
    verified: Option<&Verified>,
) -> Result<String, Status> {
    let claimed = crate::cache::service_of(node);
    let Some(id) = verified.map(|v| &v.id) else {
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

/// Where a node is served (which endpoints it gets first): its zone and its region.
pub(super) fn location(
    cache: &Cache,
    node: &Node,
    verified: Option<&Verified>,
) -> Result<Location, Status> {
    Ok(Location {
        zone: zone(cache, node, verified)?,
        region: region(cache, node, verified)?,
    })
}

/// The zone a node is served in: its certificate's, when that names one, else its own claim
/// (`node.locality.zone`, "" for none).
fn zone(cache: &Cache, node: &Node, verified: Option<&Verified>) -> Result<String, Status> {
    let claimed = node.locality.as_ref().map_or("", |l| l.zone.as_str());
    let attested = verified.and_then(|v| v.zone.as_deref());
    served_in(cache, node, ("zone", ZONE_MISMATCH), claimed, attested)
}

/// The region a node is served in: the one its certificate's SPIFFE ID names (the region its
/// task was attested in), else its own claim (`node.locality.region`, "" for none).
fn region(cache: &Cache, node: &Node, verified: Option<&Verified>) -> Result<String, Status> {
    let claimed = node.locality.as_ref().map_or("", |l| l.region.as_str());
    let attested = verified
        .map(|v| v.id.region.as_str())
        .filter(|r| !r.is_empty());
    served_in(cache, node, ("region", REGION_MISMATCH), claimed, attested)
}

/// The `attested` place when there is one, else the `claimed` one; a claim naming another
/// place than the certificate is refused and counted as `reason`.
fn served_in(
    cache: &Cache,
    node: &Node,
    (what, reason): (&str, &'static str),
    claimed: &str,
    attested: Option<&str>,
) -> Result<String, Status> {
    let Some(attested) = attested else {
        return Ok(claimed.to_owned());
    };
    if claimed.is_empty() || claimed == attested {
        return Ok(attested.to_owned());
    }
    cache.status().counters().refused(reason);
    tracing::warn!(
        node_id = %node.id,
        claimed,
        certificate = attested,
        "xDS stream refused: the node claims a {what} its certificate does not name"
    );
    Err(Status::permission_denied(format!(
        "the node claims {what} {claimed:?}, its certificate names {attested:?}"
    )))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use envoy_types::pb::envoy::config::core::v3::Locality;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;

    use super::*;
    use crate::cache::NodeTypeResolver;
    use crate::identity::ca::{self, Ca};

    const TD: &str = "mesh.test";

    fn cache() -> Cache {
        Cache::new(NodeTypeResolver::default()).0
    }

    fn web() -> SpiffeId {
        SpiffeId::new(TD, "123456789012", "us-east-1", "demo", "web").unwrap()
    }

    /// The request extensions of a connection whose client presented a certificate for web
    /// issued by a fresh CA with `zone`.
    fn presenting(zone: Option<&str>) -> http::Extensions {
        let now = SystemTime::now();
        let files = ca::init(TD, now).unwrap();
        let (key, chain) = (&files.intermediate_key_pem, &files.intermediate_pem);
        let ca = Ca::from_pem(key, chain, &files.root_pem, TD).unwrap();
        let leaf_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        let csr = params.serialize_request(&leaf_key).unwrap().pem().unwrap();
        let hour = Duration::from_secs(3600);
        let issued = ca.issue_workload(&csr, &web(), zone, hour, now).unwrap();
        let leaf = CertificateDer::pem_slice_iter(issued.chain_pem.as_bytes());
        let mut extensions = http::Extensions::new();
        let certs = vec![leaf.map(Result::unwrap).next().unwrap()];
        extensions.insert(PeerCertificates(Arc::new(certs)));
        extensions
    }

    fn node_in(zone: &str) -> Node {
        Node {
            id: "sidecar-web".into(),
            cluster: "web".into(),
            locality: Some(Locality {
                zone: zone.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn verified(zone: Option<&str>) -> Verified {
        let zone = zone.map(str::to_owned);
        Verified { id: web(), zone }
    }

    #[test]
    fn a_verified_certificate_names_its_workload_and_the_zone_the_ca_wrote() {
        let cache = cache();
        let zoned = workload(&cache, &presenting(Some("us-east-1a")), TD).unwrap();
        assert_eq!(zoned.as_deref(), Some(&verified(Some("us-east-1a"))));
        let older = workload(&cache, &presenting(None), TD).unwrap();
        assert_eq!(older.as_deref(), Some(&verified(None)));
        let foreign = workload(&cache, &presenting(None), "other.test").unwrap_err();
        assert_eq!(foreign.code(), tonic::Code::PermissionDenied);
        let plaintext = workload(&cache, &http::Extensions::new(), TD).unwrap();
        assert_eq!(plaintext, None);
    }

    #[test]
    fn the_certificates_zone_serves_a_node_that_claims_it_or_no_zone() {
        let cache = cache();
        let id = verified(Some("us-east-1a"));
        for claim in ["", "us-east-1a"] {
            let zone = zone(&cache, &node_in(claim), Some(&id)).unwrap();
            assert_eq!(zone, "us-east-1a", "claim {claim:?}");
        }
        let no_locality = Node::default();
        assert_eq!(zone(&cache, &no_locality, Some(&id)).unwrap(), "us-east-1a");
        assert!(cache.status().counters().refusals().is_empty());
    }

    #[test]
    fn a_node_claiming_another_zone_than_its_certificate_is_refused_and_counted() {
        let cache = cache();
        let id = verified(Some("us-east-1a"));
        let refused = zone(&cache, &node_in("us-east-1b"), Some(&id)).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        assert!(refused.message().contains("us-east-1b"), "{refused:?}");
        let refusals = cache.status().counters().refusals();
        assert_eq!(refusals.get(ZONE_MISMATCH), Some(&1), "{refusals:?}");
    }

    #[test]
    fn without_a_zone_in_its_certificate_or_a_certificate_a_node_is_served_its_claim() {
        let cache = cache();
        let older = verified(None);
        for verified in [Some(&older), None] {
            let zone = zone(&cache, &node_in("us-east-1b"), verified).unwrap();
            assert_eq!(zone, "us-east-1b");
        }
        assert!(cache.status().counters().refusals().is_empty());
    }

    fn node_claiming(zone: &str, region: &str) -> Node {
        let mut node = node_in(zone);
        node.locality.as_mut().unwrap().region = region.into();
        node
    }

    #[test]
    fn the_certificates_region_serves_a_node_that_claims_it_or_no_region() {
        let cache = cache();
        let id = verified(Some("us-east-1a"));
        for claim in ["", "us-east-1"] {
            let served = location(&cache, &node_claiming("", claim), Some(&id)).unwrap();
            let wanted = Location {
                zone: "us-east-1a".into(),
                region: "us-east-1".into(),
            };
            assert_eq!(served, wanted, "claim {claim:?}");
        }
        let served = location(&cache, &Node::default(), Some(&verified(None))).unwrap();
        assert_eq!(
            served.region, "us-east-1",
            "the SPIFFE ID's, without a zone"
        );
        assert!(cache.status().counters().refusals().is_empty());
    }

    #[test]
    fn a_node_claiming_another_region_than_its_certificate_is_refused_and_counted() {
        let cache = cache();
        let id = verified(None);
        let claim = node_claiming("", "eu-west-1");
        let refused = location(&cache, &claim, Some(&id)).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        assert!(
            refused.message().contains("region \"eu-west-1\""),
            "{refused:?}"
        );
        let refusals = cache.status().counters().refusals();
        assert_eq!(refusals.get(REGION_MISMATCH), Some(&1), "{refusals:?}");
        assert_eq!(refusals.get(ZONE_MISMATCH), None, "{refusals:?}");
    }

    #[test]
    fn without_a_certificate_a_node_is_served_the_region_it_claims() {
        let cache = cache();
        let served = location(&cache, &node_claiming("eu-west-1a", "eu-west-1"), None).unwrap();
        assert_eq!(
            (&*served.zone, &*served.region),
            ("eu-west-1a", "eu-west-1")
        );
    }
}
