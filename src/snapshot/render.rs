//! A snapshot as Envoy JSON (proto3 JSON mapping, `Any` payloads expanded with `@type`), for
//! `ecs-xds render` and the admin view: exactly what a node type is served, readable.

use prost_reflect::{DynamicMessage, SerializeOptions};
use serde_json::{json, Map, Value};

use super::{ResourceType, Snapshot};
use crate::descriptors;

impl Snapshot {
    /// Every resource and version, in push order, as Envoy JSON.
    pub fn to_envoy_json(&self) -> Value {
        let mut out = Map::new();
        let mut versions = Map::new();
        for ty in ResourceType::ALL {
            versions.insert(ty.short_name().into(), json!(&**self.version(ty)));
            let resources: Vec<Value> = self
                .of(ty)
                .resources()
                .values()
                .map(|r| resource_json(ty, r.any_bytes()))
                .collect();
            out.insert(section(ty).into(), Value::Array(resources));
        }
        out.insert("versions".into(), Value::Object(versions));
        Value::Object(out)
    }
}

fn section(ty: ResourceType) -> &'static str {
    match ty {
        ResourceType::Cluster => "clusters",
        ResourceType::Endpoint => "endpoints",
        ResourceType::Listener => "listeners",
        ResourceType::Route => "routes",
        ResourceType::Secret => "secrets",
    }
}

/// One encoded `Any` as JSON; a resource that cannot be rendered says why instead.
fn resource_json(ty: ResourceType, any: &[u8]) -> Value {
    let pool = descriptors::pool();
    let any_desc = pool
        .get_message_by_name("google.protobuf.Any")
        .expect("the descriptor set has google.protobuf.Any");
    let rendered = DynamicMessage::decode(any_desc, any)
        .map_err(|e| e.to_string())
        .and_then(|msg| {
            let options = SerializeOptions::new().skip_default_fields(true);
            msg.serialize_with_options(serde_json::value::Serializer, &options)
                .map_err(|e| e.to_string())
        });
    rendered.unwrap_or_else(|e| json!({ "error": format!("cannot render {ty} resource: {e}") }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_renders_as_envoy_json_with_typed_configs_expanded() {
        let snapshot = crate::snapshot::tests::orders_egress();
        let json = snapshot.to_envoy_json();
        let cluster = &json["clusters"][0];
        assert_eq!(
            cluster["@type"],
            "type.googleapis.com/envoy.config.cluster.v3.Cluster"
        );
        assert_eq!(cluster["name"], "orders");
        assert_eq!(cluster["type"], "EDS");
        assert_eq!(cluster["connectTimeout"], "0.250s");
        let hcm = &json["listeners"][0]["filterChains"][0]["filters"][0]["typedConfig"];
        assert_eq!(hcm["rds"]["routeConfigName"], "egress");
        assert_eq!(
            json["versions"]["cds"],
            **snapshot.version(ResourceType::Cluster)
        );
        assert_eq!(
            json["endpoints"][0]["endpoints"][0]["lbEndpoints"][0]["endpoint"]["address"]
                ["socketAddress"]["portValue"],
            8080
        );
    }
}
