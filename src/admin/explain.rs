//! `/explain/{node_id}`: one Envoy, explained. What it is served and why: the node type and
//! the rule that chose it, the service (verified or only claimed), the zone and region, the
//! backend set or the whole scope, and the snapshot that makes (versions and resource names
//! per type), with the addresses of its `/snapshot` and CSDS dump.

use std::collections::BTreeMap;

use serde::Serialize;

use super::nodes::StreamView;
use crate::cache::{Cache, StreamStatus};
use crate::snapshot::ResourceType;

#[derive(Debug, Serialize)]
pub struct Explanation {
    pub node_id: String,
    pub replica: String,
    pub node_type: String,
    /// How the node type was read from the node.
    pub node_type_rule: String,
    /// The service whose snapshot it gets; absent when it states none.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub service: String,
    /// Why that service: a verified certificate, or only the node's own claim.
    pub service_from: String,
    pub zone: String,
    pub region: String,
    /// `backend set: <items>` or `the node type's whole scope`.
    pub scope: String,
    /// The node type's places (zones, regions) that have snapshots of their own.
    pub places: Vec<String>,
    /// What it is served now; `null`: the node type has no snapshot.
    pub snapshot: Option<SnapshotView>,
    pub streams: Vec<StreamView>,
    /// `/snapshot/...` for what it gets, as Envoy JSON.
    pub snapshot_url: String,
    /// `/csds/...`: what CSDS says of it.
    pub csds_url: String,
}

#[derive(Debug, Serialize)]
pub struct SnapshotView {
    /// By type (`cds`, `eds`, `lds`, `rds`, `sds`).
    pub versions: BTreeMap<&'static str, String>,
    /// Resource names by type.
    pub resources: BTreeMap<&'static str, Vec<String>>,
}

impl Explanation {
    /// `None`: no stream of `node_id` is connected to this replica.
    pub fn of(cache: &Cache, replica: &str, node_id: &str) -> Option<Explanation> {
        let mut streams: Vec<StreamStatus> = (cache.status().streams().into_iter())
            .filter(|s| s.node_id == node_id)
            .collect();
        streams.sort_by_key(|s| (s.service, s.mode));
        let first = streams.first()?;
        let (node_type, service) = (first.node_type.clone(), first.caller.clone());
        let location = first.location.clone();
        let service_from = match (&first.identity, service.is_empty()) {
            (Some(id), _) => format!("its verified client certificate, {id}"),
            (None, true) => "none stated (node.cluster and metadata are empty)".into(),
            (None, false) => "its own claim (node.cluster or metadata), no certificate".into(),
        };
        let scope = match cache.backend_set(&node_type, &service) {
            Some(key) => match crate::synthesize::set_key_parts(&key) {
                (Some(backends), _) => format!("backend set: {backends}"),
                _ => format!("its service's own snapshot: {key}"),
            },
            None => "the node type's whole scope".into(),
        };
        let snapshot = cache.snapshot_for(&node_type, &service, &location);
        let snapshot = snapshot.map(|s| SnapshotView {
            versions: (ResourceType::ALL.into_iter())
                .map(|ty| (ty.short_name(), s.version(ty).to_string()))
                .collect(),
            resources: (ResourceType::ALL.into_iter())
                .map(|ty| {
                    let names = s.of(ty).resources().values().map(|r| r.name().to_string());
                    (ty.short_name(), names.collect())
                })
                .collect(),
        });
        let query = [("service", &service), ("zone", &location.zone)];
        let query = query.into_iter().chain([("region", &location.region)]);
        let query: Vec<String> = query
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect();
        let snapshot_url = match query.is_empty() {
            true => format!("/snapshot/{}", encode(&node_type)),
            false => format!("/snapshot/{}?{}", encode(&node_type), query.join("&")),
        };
        Some(Explanation {
            node_id: node_id.to_owned(),
            replica: replica.to_owned(),
            node_type_rule: cache.node_type_rule(),
            places: cache.places(&node_type),
            csds_url: format!("/csds/{}", encode(node_id)),
            streams: streams.iter().map(StreamView::of).collect(),
            snapshot_url,
            snapshot,
            scope,
            service_from,
            zone: location.zone,
            region: location.region,
            node_type,
            service,
        })
    }
}

/// Percent-encodes all but unreserved characters, for a path segment or query value.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::NodeTypeResolver;

    fn connect(cache: &Cache, node_id: &str, caller: &str, service: &'static str) {
        cache.status().connect(StreamStatus {
            connected_at: None,
            node_id: node_id.into(),
            node_type: "sidecar".into(),
            location: crate::cache::Location {
                zone: "us-east-1a".into(),
                region: String::new(),
            },
            caller: caller.into(),
            identity: None,
            service,
            mode: "sotw",
            types: Default::default(),
        });
    }

    #[test]
    fn a_connected_node_is_explained_with_its_snapshot_and_links() {
        let (cache, publisher) = Cache::new(NodeTypeResolver::default());
        let snapshot = crate::snapshot::Snapshot::builder().build();
        publisher.publish("sidecar", snapshot).unwrap();
        connect(&cache, "sidecar-web 1", "web", "cds");
        connect(&cache, "sidecar-web 1", "web", "ads");
        assert!(Explanation::of(&cache, "r1", "sidecar-other").is_none());

        let explained = Explanation::of(&cache, "r1", "sidecar-web 1").unwrap();
        assert_eq!(explained.node_type, "sidecar");
        assert!(explained.node_type_rule.contains("node.id"));
        assert!(explained.service_from.contains("own claim"));
        assert_eq!(explained.scope, "the node type's whole scope");
        assert_eq!(explained.streams.len(), 2);
        assert_eq!(explained.streams[0].service, "ads");
        assert_eq!(
            explained.snapshot_url,
            "/snapshot/sidecar?service=web&zone=us-east-1a"
        );
        assert_eq!(explained.csds_url, "/csds/sidecar-web%201");
        let snapshot = explained.snapshot.unwrap();
        assert!(snapshot.resources["cds"].is_empty());
        assert!(snapshot.versions.contains_key("lds"));
    }
}
