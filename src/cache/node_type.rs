//! Which node type an Envoy belongs to, read from its `Node`.

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::value::Kind;
use serde::Deserialize;

/// Where the node type is read from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case", tag = "from", deny_unknown_fields)]
pub enum NodeTypeSource {
    /// The part of `node.id` before the first `-` (`sidecar-app1` → `sidecar`), as sxds does.
    /// An id without `-` is its own node type.
    #[default]
    IdPrefix,
    /// `node.cluster`, as set by Envoy's `--service-cluster`.
    Cluster,
    /// A string value in `node.metadata`.
    Metadata { key: String },
}

/// Resolves node types, with an optional fallback for nodes whose type has no templates.
#[derive(Debug, Clone, Default)]
pub struct NodeTypeResolver {
    source: NodeTypeSource,
    fallback: Option<String>,
}

impl NodeTypeResolver {
    /// A resolver reading `source`, using `fallback` when the node's own type is not known.
    pub fn new(source: NodeTypeSource, fallback: Option<String>) -> Self {
        Self { source, fallback }
    }

    /// How node types are read, for a person: `the part of node.id before the first "-"`, and
    /// the fallback when there is one.
    pub fn describe(&self) -> String {
        let from = match &self.source {
            NodeTypeSource::IdPrefix => "the part of node.id before the first \"-\"".to_owned(),
            NodeTypeSource::Cluster => "node.cluster".to_owned(),
            NodeTypeSource::Metadata { key } => format!("node.metadata[\"{key}\"]"),
        };
        match &self.fallback {
            Some(fallback) => format!("{from}; {fallback} when that node type has no templates"),
            None => from,
        }
    }

    /// The node type for `node`. `is_known` says whether a node type has snapshots; when the
    /// node's own type is unknown and a fallback is configured, the fallback is used.
    pub fn resolve(&self, node: &Node, is_known: impl Fn(&str) -> bool) -> String {
        let own = self.read(node);
        match &self.fallback {
            Some(fallback) if own.as_deref().is_none_or(|own| !is_known(own)) => fallback.clone(),
            _ => own.unwrap_or_default(),
        }
    }

    fn read(&self, node: &Node) -> Option<String> {
        let value = match &self.source {
            NodeTypeSource::IdPrefix => node.id.split('-').next().unwrap_or_default().to_owned(),
            NodeTypeSource::Cluster => node.cluster.clone(),
            NodeTypeSource::Metadata { key } => {
                let field = node.metadata.as_ref()?.fields.get(key)?;
                match &field.kind {
                    Some(Kind::StringValue(s)) => s.clone(),
                    _ => return None,
                }
            }
        };
        (!value.is_empty()).then_some(value)
    }
}

/// The node metadata key naming the Envoy's service, when `node.cluster` is used for something
/// else (such as the node type).
pub const SERVICE_METADATA_KEY: &str = "ecs-xds.service";

/// The service an Envoy belongs to, which picks its backend set: `node.metadata["ecs-xds.service"]`
/// if it is a string, else `node.cluster` (Envoy's `--service-cluster`); "" for none.
pub fn service_of(node: &Node) -> String {
    let from_metadata = node
        .metadata
        .as_ref()
        .and_then(|m| m.fields.get(SERVICE_METADATA_KEY))
        .and_then(|v| match &v.kind {
            Some(Kind::StringValue(s)) => Some(s.clone()),
            _ => None,
        });
    from_metadata.unwrap_or_else(|| node.cluster.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::{Struct, Value};

    fn node(id: &str, cluster: &str) -> Node {
        Node {
            id: id.into(),
            cluster: cluster.into(),
            ..Default::default()
        }
    }

    #[test]
    fn node_type_is_the_id_prefix_by_default() {
        let r = NodeTypeResolver::default();
        assert_eq!(r.resolve(&node("sidecar-app1", ""), |_| true), "sidecar");
        assert_eq!(r.resolve(&node("sidecar-app-1-x", ""), |_| true), "sidecar");
        assert_eq!(r.resolve(&node("ingress", ""), |_| true), "ingress");
    }

    #[test]
    fn node_type_can_come_from_cluster_or_metadata() {
        let r = NodeTypeResolver::new(NodeTypeSource::Cluster, None);
        assert_eq!(r.resolve(&node("x-1", "gateway"), |_| true), "gateway");

        let r = NodeTypeResolver::new(NodeTypeSource::Metadata { key: "role".into() }, None);
        let mut n = node("x-1", "");
        n.metadata = Some(Struct {
            fields: [(
                "role".to_string(),
                Value {
                    kind: Some(Kind::StringValue("edge".into())),
                },
            )]
            .into(),
        });
        assert_eq!(r.resolve(&n, |_| true), "edge");
    }

    #[test]
    fn the_service_is_node_cluster_unless_metadata_names_it() {
        assert_eq!(service_of(&node("sidecar-1", "web")), "web");
        let mut n = node("sidecar-1", "sidecar");
        n.metadata = Some(Struct {
            fields: [(
                SERVICE_METADATA_KEY.to_string(),
                Value {
                    kind: Some(Kind::StringValue("orders".into())),
                },
            )]
            .into(),
        });
        assert_eq!(service_of(&n), "orders");
        assert_eq!(service_of(&node("sidecar-1", "")), "");
    }

    #[test]
    fn fallback_applies_only_when_the_own_type_is_unknown() {
        let r = NodeTypeResolver::new(NodeTypeSource::IdPrefix, Some("default".into()));
        assert_eq!(
            r.resolve(&node("sidecar-1", ""), |t| t == "sidecar"),
            "sidecar"
        );
        assert_eq!(
            r.resolve(&node("mystery-1", ""), |t| t == "sidecar"),
            "default"
        );
        let r = NodeTypeResolver::new(NodeTypeSource::Cluster, Some("default".into()));
        assert_eq!(r.resolve(&node("x", ""), |_| true), "default");
    }
}
