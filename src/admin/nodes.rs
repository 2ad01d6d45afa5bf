//! `/nodes`: the operator's first question, "what does this Envoy have, and did it reject
//! anything?", answered from the status registry.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::Serialize;

use crate::cache::{Location, Nack, StatusRegistry, StreamStatus};
use crate::snapshot::ResourceType;

/// Every connected Envoy (sorted by node id) and the most recent NACKs of any node.
#[derive(Debug, Serialize)]
pub struct NodesView {
    /// The replica answering (ECS task id, or host name): each replica has its own Envoys.
    pub replica: String,
    pub nodes: Vec<NodeView>,
    /// Oldest first; kept after the node disconnects.
    pub recent_nacks: Vec<NackView>,
    /// Listeners and clusters clients asked for by name and were told do not exist (a gRPC
    /// target nobody serves), oldest first; kept after the node disconnects.
    pub recent_not_found: Vec<NotFoundView>,
}

#[derive(Debug, Serialize)]
pub struct NotFoundView {
    pub node_id: String,
    pub node_type: String,
    #[serde(rename = "type")]
    pub resource_type: &'static str,
    pub name: String,
    /// RFC 3339, UTC: when it was last reported.
    pub at: String,
}

/// One Envoy node: usually one ADS stream, or one stream per type with per-type services.
#[derive(Debug, Serialize)]
pub struct NodeView {
    pub node_id: String,
    pub node_type: String,
    /// The service it says it is (`node.cluster`, or `node.metadata["ecs-xds.service"]`);
    /// absent when it states none.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub service: String,
    /// The zone it is served in: its certificate's on a verified stream whose certificate names
    /// one, else the one it states; absent when none.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub zone: String,
    /// The region it is served in: its certificate's on a verified stream, else the one it
    /// states; absent when none.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub region: String,
    /// The backend set it is served (its service's declared backends, joined by `,`); `null`:
    /// the node type's whole scope.
    pub backends: Option<String>,
    /// Its service's own ingress policy, from its tags (`strict allow <SPIFFE IDs>`, with
    /// `(shadow)` when not enforced); `null`: the node type's (`[mtls]`, `[authz]`).
    pub ingress: Option<String>,
    /// The requests its service's rules in shadow would have denied, by caller (SPIFFE ID, or
    /// `plaintext`), as its service's Envoys report them (`[authz] shadow_log_cluster`); `null`:
    /// none reported.
    pub shadow_denials: Option<BTreeMap<String, u64>>,
    pub streams: Vec<StreamView>,
}

#[derive(Debug, Serialize)]
pub struct StreamView {
    /// The SPIFFE ID of the client certificate its connection verified; `null` for a stream
    /// without one (plaintext, or `xds.client_auth = "optional"` and no certificate), whose
    /// service is only its own claim.
    pub identity: Option<String>,
    /// `ads`, `cds`, `eds`, `lds`, `rds` or `sds`.
    pub service: &'static str,
    /// `sotw`, `delta` or `rest`.
    pub mode: &'static str,
    /// RFC 3339, UTC: when the stream opened (for REST, the first poll).
    pub connected_at: Option<String>,
    /// Keyed by `cds`, `eds`, `lds`, `rds`, `sds`; only types this stream has seen.
    pub types: BTreeMap<&'static str, TypeView>,
}

#[derive(Debug, Serialize)]
pub struct TypeView {
    pub sent_version: Option<String>,
    pub acked_version: Option<String>,
    pub last_nack: Option<NackView>,
}

#[derive(Debug, Serialize)]
pub struct NackView {
    pub node_id: String,
    pub node_type: String,
    #[serde(rename = "type")]
    pub resource_type: &'static str,
    pub rejected_version: String,
    /// Envoy's own error text.
    pub message: String,
    /// RFC 3339, UTC.
    pub at: String,
}

impl NodesView {
    /// `backend_set` says which backend set a (node type, service) is on.
    pub fn of(
        replica: &str,
        registry: &StatusRegistry,
        backend_set: impl Fn(&str, &str) -> Option<String>,
    ) -> Self {
        type Key = (String, String, String, Location);
        let mut nodes: BTreeMap<Key, Vec<StreamView>> = BTreeMap::new();
        for stream in registry.streams() {
            let key = (
                stream.node_id.clone(),
                stream.node_type.clone(),
                stream.caller.clone(),
                stream.location.clone(),
            );
            nodes.entry(key).or_default().push(StreamView::of(&stream));
        }
        Self {
            replica: replica.to_owned(),
            nodes: nodes
                .into_iter()
                .map(|((node_id, node_type, service, location), mut streams)| {
                    streams.sort_by_key(|s| (s.service, s.mode));
                    let set = backend_set(&node_type, &service);
                    let (backends, ingress) = match &set {
                        Some(key) => crate::synthesize::set_key_parts(key),
                        None => (None, None),
                    };
                    let (backends, ingress) =
                        (backends.map(str::to_owned), ingress.map(str::to_owned));
                    let shadow_denials = registry.shadow_denials().of(&service);
                    NodeView {
                        backends,
                        ingress,
                        shadow_denials,
                        node_id,
                        node_type,
                        service,
                        zone: location.zone,
                        region: location.region,
                        streams,
                    }
                })
                .collect(),
            recent_nacks: registry.recent_nacks().iter().map(NackView::of).collect(),
            recent_not_found: registry
                .recent_not_found()
                .into_iter()
                .map(|n| NotFoundView {
                    node_id: n.node_id,
                    node_type: n.node_type,
                    resource_type: n.resource_type.short_name(),
                    name: n.name,
                    at: rfc3339(n.at),
                })
                .collect(),
        }
    }
}

impl StreamView {
    pub(super) fn of(stream: &StreamStatus) -> Self {
        let types = ResourceType::ALL
            .into_iter()
            .zip(&stream.types)
            .filter(|(_, t)| t.sent_version.is_some() || t.last_nack.is_some())
            .map(|(ty, t)| {
                let view = TypeView {
                    sent_version: t.sent_version.as_deref().map(str::to_owned),
                    acked_version: t.acked_version.as_deref().map(str::to_owned),
                    last_nack: t.last_nack.as_deref().map(NackView::of),
                };
                (ty.short_name(), view)
            })
            .collect();
        Self {
            identity: stream.identity.as_deref().map(str::to_owned),
            service: stream.service,
            mode: stream.mode,
            connected_at: stream.connected_at.map(rfc3339),
            types,
        }
    }
}

impl NackView {
    fn of(nack: &Nack) -> Self {
        Self {
            node_id: nack.node_id.clone(),
            node_type: nack.node_type.clone(),
            resource_type: nack.resource_type.short_name(),
            rejected_version: nack.rejected_version.clone(),
            message: nack.message.clone(),
            at: rfc3339(nack.at),
        }
    }
}

fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn stream(node_id: &str, service: &'static str) -> StreamStatus {
        StreamStatus {
            connected_at: None,
            node_id: node_id.into(),
            node_type: "sidecar".into(),
            location: Default::default(),
            caller: String::new(),
            identity: None,
            service,
            mode: "sotw",
            types: Default::default(),
        }
    }

    #[test]
    fn streams_of_one_node_are_grouped_and_nacks_carry_envoys_message() {
        let registry = StatusRegistry::default();
        let ads = registry.connect(stream("sidecar-b", "ads"));
        let cds = registry.connect(stream("sidecar-a", "cds"));
        registry.connect(stream("sidecar-a", "eds"));
        let v1: Arc<str> = "v1".into();
        registry.sent(ads, ResourceType::Cluster, &v1);
        registry.acked(ads, ResourceType::Cluster, &v1);
        registry.sent(cds, ResourceType::Cluster, &"v2".into());
        registry.nacked(
            cds,
            Nack {
                node_id: "sidecar-a".into(),
                node_type: "sidecar".into(),
                resource_type: ResourceType::Cluster,
                rejected_version: "v2".into(),
                message: "bad cluster".into(),
                at: SystemTime::UNIX_EPOCH,
            },
        );

        let view =
            serde_json::to_value(NodesView::of("replica-1", &registry, |_, _| None)).unwrap();
        assert_eq!(view["replica"], "replica-1");
        let nodes = view["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[0]["node_id"], "sidecar-a");
        assert_eq!(nodes[0]["streams"].as_array().unwrap().len(), 2);
        let a_cds = &nodes[0]["streams"][0]["types"]["cds"];
        assert_eq!(a_cds["sent_version"], "v2");
        assert_eq!(a_cds["acked_version"], serde_json::Value::Null);
        assert_eq!(a_cds["last_nack"]["message"], "bad cluster");
        assert_eq!(a_cds["last_nack"]["at"], "1970-01-01T00:00:00.000Z");
        let connected = nodes[0]["streams"][0]["connected_at"].as_str().unwrap();
        assert!(
            connected.starts_with("20") && connected.ends_with('Z'),
            "{connected}"
        );
        assert_eq!(
            nodes[1]["streams"][0]["types"]["cds"]["acked_version"],
            "v1"
        );
        assert_eq!(view["recent_nacks"][0]["type"], "cds");
    }

    #[test]
    fn each_node_shows_its_services_shadow_denials_by_caller() {
        let registry = StatusRegistry::default();
        for (node_id, service) in [("orders-1", "orders"), ("web-1", "web")] {
            let mut status = stream(node_id, "ads");
            status.caller = service.into();
            registry.connect(status);
        }
        let api = "spiffe://m/ecs/1/r/c/api";
        registry.shadow_denials().add("orders", api, 2);
        registry.shadow_denials().add("orders", "plaintext", 1);

        let view = serde_json::to_value(NodesView::of("r", &registry, |_, _| None)).unwrap();
        let orders = &view["nodes"][0];
        assert_eq!(orders["service"], "orders");
        assert_eq!(orders["shadow_denials"][api], 2);
        assert_eq!(orders["shadow_denials"]["plaintext"], 1);
        assert_eq!(view["nodes"][1]["shadow_denials"], serde_json::Value::Null);
    }
}
