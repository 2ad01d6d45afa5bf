//! CSDS (`envoy.service.status.v3.ClientStatusDiscoveryService`): the management server's view
//! of each connected client, for standard xDS tooling.
//!
//! Per connected stream and resource type, every resource of the node type's current snapshot
//! is listed with the version last sent and a status relative to it:
//! - `SYNCED`/`ACKED`: the client ACKed the version sent;
//! - `ERROR`/`NACKED`: the client rejected it (the error state carries Envoy's message);
//! - `STALE`: sent, not yet ACKed; `NOT_SENT`: nothing of this type sent yet.
//!
//! Each client's node is the one the stream is served as, with the workload its client
//! certificate proved, when it presented one.

use std::pin::Pin;

use envoy_types::pb::envoy::admin::v3::{ClientResourceStatus, UpdateFailureState};
use envoy_types::pb::envoy::config::core::v3::{Locality, Node};
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use envoy_types::pb::envoy::r#type::matcher::v3::{NodeMatcher, StringMatcher};
use envoy_types::pb::envoy::service::status::v3::client_config::GenericXdsConfig;
use envoy_types::pb::envoy::service::status::v3::client_status_discovery_service_server::ClientStatusDiscoveryService;
use envoy_types::pb::envoy::service::status::v3::{
    ClientConfig, ClientStatusRequest, ClientStatusResponse, ConfigStatus,
};
use envoy_types::pb::google::protobuf::value::Kind;
use envoy_types::pb::google::protobuf::{Any, Struct, Timestamp, Value};
use prost::Message;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::cache::{Cache, StreamStatus, TypeStatus};
use crate::snapshot::ResourceType;

/// The node metadata field that carries a verified stream's SPIFFE ID.
pub(crate) const IDENTITY_METADATA_KEY: &str = "ecs-xds.identity";

/// The CSDS service over the cache's status registry and snapshots.
#[derive(Debug, Clone)]
pub struct Csds {
    pub cache: Cache,
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<ClientStatusResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ClientStatusDiscoveryService for Csds {
    type StreamClientStatusStream = ResponseStream;

    async fn stream_client_status(
        &self,
        request: Request<Streaming<ClientStatusRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let csds = self.clone();
        let answers = request
            .into_inner()
            .map(move |req| req.and_then(|req| csds.status(&req)));
        Ok(Response::new(Box::pin(answers)))
    }

    async fn fetch_client_status(
        &self,
        request: Request<ClientStatusRequest>,
    ) -> Result<Response<ClientStatusResponse>, Status> {
        self.status(request.get_ref()).map(Response::new)
    }
}

impl Csds {
    /// What CSDS answers for the streams of `node_id` (exact), in proto3 JSON, resources
    /// included: for the admin server's `/csds/{node_id}`, readable where no gRPC client is.
    pub fn dump_json(cache: &Cache, node_id: &str) -> Result<serde_json::Value, String> {
        let csds = Csds {
            cache: cache.clone(),
        };
        let exact = StringMatcher {
            match_pattern: Some(MatchPattern::Exact(node_id.to_owned())),
            ..Default::default()
        };
        let request = ClientStatusRequest {
            node_matchers: vec![NodeMatcher {
                node_id: Some(exact),
                ..Default::default()
            }],
            ..Default::default()
        };
        let response = csds.status(&request).map_err(|e| e.message().to_owned())?;
        let desc = crate::descriptors::pool()
            .get_message_by_name("envoy.service.status.v3.ClientStatusResponse")
            .ok_or("the descriptor set lacks ClientStatusResponse")?;
        let message =
            prost_reflect::DynamicMessage::decode(desc, response.encode_to_vec().as_slice())
                .map_err(|e| e.to_string())?;
        serde_json::to_value(&message).map_err(|e| e.to_string())
    }

    fn status(&self, req: &ClientStatusRequest) -> Result<ClientStatusResponse, Status> {
        let mut streams = self.cache.status().streams();
        streams.sort_by(|a, b| (&a.node_id, a.service).cmp(&(&b.node_id, b.service)));
        let mut config = Vec::new();
        for stream in streams {
            if matches_all(&req.node_matchers, &stream.node_id)? {
                config.push(self.client_config(&stream, req.exclude_resource_contents));
            }
        }
        Ok(ClientStatusResponse { config })
    }

    fn client_config(&self, stream: &StreamStatus, exclude_contents: bool) -> ClientConfig {
        let snapshot =
            (self.cache).snapshot_for(&stream.node_type, &stream.caller, &stream.location);
        let mut generic_xds_configs = Vec::new();
        for (ty, status) in ResourceType::ALL.into_iter().zip(&stream.types) {
            let Some(snapshot) = &snapshot else { break };
            let (config_status, client_status) = statuses(status);
            let version = status.sent_version.as_deref().unwrap_or_default();
            for resource in snapshot.of(ty).resources().values() {
                let xds_config = match exclude_contents {
                    true => None,
                    false => Any::decode(resource.any_bytes().clone()).ok(),
                };
                let error_state = status.last_nack.as_ref().and_then(|nack| {
                    (config_status == ConfigStatus::Error).then(|| UpdateFailureState {
                        details: nack.message.clone(),
                        version_info: nack.rejected_version.clone(),
                        last_update_attempt: Some(timestamp(nack.at)),
                        failed_configuration: None,
                    })
                });
                generic_xds_configs.push(GenericXdsConfig {
                    type_url: ty.type_url().to_owned(),
                    name: resource.name().to_string(),
                    version_info: version.to_owned(),
                    xds_config,
                    config_status: config_status as i32,
                    client_status: client_status as i32,
                    error_state,
                    ..Default::default()
                });
            }
        }
        ClientConfig {
            node: Some(reported_node(stream)),
            generic_xds_configs,
            client_scope: String::new(),
            ..Default::default()
        }
    }
}

/// The node as it is served: its id, the zone and region it is served in (its certificate's on
/// a verified stream whose certificate names them) and, when its connection's client
/// certificate was verified, the SPIFFE ID it proved as `metadata["ecs-xds.identity"]`. A
/// node's own claims are not repeated: they are not what decided its configuration.
fn reported_node(stream: &StreamStatus) -> Node {
    let location = &stream.location;
    let locality = (*location != Default::default()).then(|| Locality {
        zone: location.zone.clone(),
        region: location.region.clone(),
        ..Default::default()
    });
    let metadata = stream.identity.as_ref().map(|id| {
        let value = Value {
            kind: Some(Kind::StringValue(id.to_string())),
        };
        Struct {
            fields: [(IDENTITY_METADATA_KEY.to_owned(), value)].into(),
        }
    });
    Node {
        id: stream.node_id.clone(),
        locality,
        metadata,
        ..Default::default()
    }
}

fn timestamp(at: std::time::SystemTime) -> Timestamp {
    let since = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: since.as_secs() as i64,
        nanos: since.subsec_nanos() as i32,
    }
}

fn statuses(status: &TypeStatus) -> (ConfigStatus, ClientResourceStatus) {
    let Some(sent) = &status.sent_version else {
        return (ConfigStatus::NotSent, ClientResourceStatus::Unknown);
    };
    let nacked = status
        .last_nack
        .as_ref()
        .is_some_and(|nack| *nack.rejected_version == **sent);
    if nacked {
        (ConfigStatus::Error, ClientResourceStatus::Nacked)
    } else if status.acked_version.as_ref() == Some(sent) {
        (ConfigStatus::Synced, ClientResourceStatus::Acked)
    } else {
        (ConfigStatus::Stale, ClientResourceStatus::Unknown)
    }
}

/// No matchers match every node; otherwise a node must match one of them. Only node-id string
/// matchers without regex are supported: anything else is refused rather than silently ignored.
fn matches_all(matchers: &[NodeMatcher], node_id: &str) -> Result<bool, Status> {
    if matchers.is_empty() {
        return Ok(true);
    }
    for matcher in matchers {
        if !matcher.node_metadatas.is_empty() {
            return Err(Status::invalid_argument(
                "CSDS node_metadatas matchers are not supported; match on node_id",
            ));
        }
        let matched = match &matcher.node_id {
            None => true,
            Some(m) => string_matches(m, node_id)?,
        };
        if matched {
            return Ok(true);
        }
    }
    Ok(false)
}

fn string_matches(matcher: &StringMatcher, value: &str) -> Result<bool, Status> {
    let fold = |s: &str| match matcher.ignore_case {
        true => s.to_lowercase(),
        false => s.to_owned(),
    };
    let value = fold(value);
    Ok(match &matcher.match_pattern {
        Some(MatchPattern::Exact(s)) => value == fold(s),
        Some(MatchPattern::Prefix(s)) => value.starts_with(&fold(s)),
        Some(MatchPattern::Suffix(s)) => value.ends_with(&fold(s)),
        Some(MatchPattern::Contains(s)) => value.contains(&fold(s)),
        _ => {
            return Err(Status::invalid_argument(
                "CSDS node_id matcher: only exact, prefix, suffix and contains are supported",
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(zone: &str, identity: Option<&str>) -> StreamStatus {
        StreamStatus {
            connected_at: None,
            node_id: "sidecar-web".into(),
            node_type: "sidecar".into(),
            location: crate::cache::Location::zone(zone),
            caller: "web".into(),
            identity: identity.map(Into::into),
            service: "ads",
            mode: "sotw",
            types: Default::default(),
        }
    }

    #[test]
    fn a_verified_node_is_reported_with_its_spiffe_id_and_zone_an_unverified_one_without() {
        let id = "spiffe://mesh.test/ecs/1/us-east-1/demo/web";
        let verified = reported_node(&stream("us-east-1a", Some(id)));
        assert_eq!(verified.id, "sidecar-web");
        assert_eq!(verified.locality.unwrap().zone, "us-east-1a");
        let field = &verified.metadata.unwrap().fields[IDENTITY_METADATA_KEY];
        assert_eq!(field.kind, Some(Kind::StringValue(id.into())));

        let plain = reported_node(&stream("", None));
        assert_eq!((plain.locality, plain.metadata), (None, None));
    }

    #[test]
    fn a_node_is_reported_in_the_region_it_is_served_in() {
        let mut served = stream("", None);
        served.location.region = "eu-west-1".into();
        let locality = reported_node(&served).locality.unwrap();
        assert_eq!((&*locality.region, &*locality.zone), ("eu-west-1", ""));
    }
}
