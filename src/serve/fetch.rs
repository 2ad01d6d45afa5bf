//! Unary fetch (`FetchClusters` and friends, and REST-JSON's `POST /v3/discovery:*`): the
//! current resources, no stream state. The service and zone are chosen as for a stream
//! (`peer.rs`).

use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use tonic::Status;

use super::peer::Verified;
use super::sotw::Subscription;
use super::wire::{Encoded, SotwResponse};
use crate::cache::{Cache, Location};
use crate::snapshot::ResourceType;

/// What a fetch answers, and whom it answered: REST-JSON records it as a poller's state.
pub(super) struct Fetched {
    pub node_id: String,
    pub node_type: String,
    pub caller: String,
    pub location: Location,
    pub response: SotwResponse,
}

/// The resources of type `ty` that `req` asks for, as a stream would be sent them now.
pub(super) fn fetch(
    cache: &Cache,
    ty: ResourceType,
    verified: Option<&Verified>,
    req: &DiscoveryRequest,
) -> Result<Fetched, Status> {
    super::StreamCommon::new(Some(ty)).request_type(&req.type_url, "")?;
    let node = req
        .node
        .as_ref()
        .ok_or_else(|| Status::invalid_argument("a fetch request must carry node"))?;
    let node_type = cache.resolve_node_type(node);
    let caller = super::peer::caller(cache, node, verified)?;
    let location = super::peer::location(cache, node, verified)?;
    let snapshot = cache
        .snapshot_for(&node_type, &caller, &location)
        .ok_or_else(|| {
            Status::unavailable(format!(
                "no snapshot has been published for node type {node_type:?}"
            ))
        })?;
    let current = snapshot.of(ty);
    let resources = match Subscription::from_names(ty, &req.resource_names, None) {
        Subscription::Wildcard => current.resources().values().collect::<Vec<_>>(),
        Subscription::Names(names) => names.names().filter_map(|n| current.get(n)).collect(),
    };
    let response = SotwResponse {
        version_info: current.version().to_string(),
        resources: resources
            .into_iter()
            .map(|r| Encoded(r.any_bytes().clone()))
            .collect(),
        type_url: ty.type_url().to_owned(),
        nonce: String::new(),
        resource_errors: Vec::new(),
    };
    Ok(Fetched {
        node_id: node.id.clone(),
        node_type,
        caller,
        location,
        response,
    })
}
