//! What Envoy accepts beyond strict proto3 JSON, written the strict way before decoding, so a
//! config that works in Envoy works here: enum names in any case (`type: strict_dns`,
//! `lb_policy: round_robin`; Envoy parses JSON with case-insensitive enum names) and a single
//! value where a list belongs (`domains: "*"`, taken as `["*"]`).
//!
//! Accepted rather than refused, because users paste from Envoy's own docs and examples, and
//! what ecs-xds serves is the decoded message, so Envoy receives the canonical form anyway.
//! Run only when the strict decode fails: valid resources never pay for the walk.

use prost_reflect::{Kind, MessageDescriptor};
use serde_json::{Map, Value};

use crate::descriptors::pool;

/// Rewrites the lenient forms in `json`, a `desc` message; true when it changed anything.
pub fn normalize(desc: &MessageDescriptor, json: &mut Value) -> bool {
    match json {
        Value::Object(fields) if desc.full_name() == "google.protobuf.Any" => any(fields),
        Value::Object(fields) if !desc.full_name().starts_with("google.protobuf.") => {
            message(desc, fields)
        }
        _ => false,
    }
}

/// The fields of an `Any`: its `@type`'s message, when the descriptor set has it.
fn any(fields: &mut Map<String, Value>) -> bool {
    let name = (fields.get("@type").and_then(Value::as_str))
        .and_then(|url| url.rsplit_once('/'))
        .map(|(_, name)| name.to_owned());
    let Some(inner) = name.and_then(|name| pool().get_message_by_name(&name)) else {
        return false;
    };
    if inner.full_name().starts_with("google.protobuf.") {
        return false;
    }
    let mut changed = false;
    for (key, value) in fields.iter_mut().filter(|(key, _)| *key != "@type") {
        changed |= field(&inner, key, value);
    }
    changed
}

fn message(desc: &MessageDescriptor, fields: &mut Map<String, Value>) -> bool {
    let mut changed = false;
    for (key, value) in fields.iter_mut() {
        changed |= field(desc, key, value);
    }
    changed
}

fn field(desc: &MessageDescriptor, key: &str, value: &mut Value) -> bool {
    let found = (desc.get_field_by_json_name(key)).or_else(|| desc.get_field_by_name(key));
    let Some(field) = found else {
        return false;
    };
    let kind = field.kind();
    if field.is_map() {
        let Kind::Message(entry) = kind else {
            return false;
        };
        let value_kind = entry.map_entry_value_field().kind();
        let Value::Object(entries) = value else {
            return false;
        };
        return each(entries.values_mut(), &value_kind);
    }
    let mut changed = false;
    if field.is_list() && !matches!(value, Value::Array(_) | Value::Null) {
        *value = Value::Array(vec![value.take()]);
        changed = true;
    }
    match value {
        Value::Array(items) if field.is_list() => each(items.iter_mut(), &kind) || changed,
        value => value_of(&kind, value) || changed,
    }
}

/// Every one of `values` (all of them, not up to the first change).
fn each<'v>(values: impl Iterator<Item = &'v mut Value>, kind: &Kind) -> bool {
    let mut changed = false;
    for value in values {
        changed |= value_of(kind, value);
    }
    changed
}

/// One value of a field of `kind`: an enum name in Envoy's case, a message walked into.
fn value_of(kind: &Kind, value: &mut Value) -> bool {
    match (kind, value) {
        (Kind::Enum(e), Value::String(name)) if e.get_value_by_name(name).is_none() => {
            let canonical = e.values().find(|v| v.name().eq_ignore_ascii_case(name));
            match canonical {
                Some(v) => {
                    *name = v.name().to_owned();
                    true
                }
                None => false,
            }
        }
        (Kind::Message(m), value) => normalize(m, value),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn normalized(message: &str, mut json: Value) -> (bool, Value) {
        let desc = pool().get_message_by_name(message).unwrap();
        (normalize(&desc, &mut json), json)
    }

    #[test]
    fn enum_names_in_any_case_become_envoys_and_a_single_value_a_list() {
        let (changed, cluster) = normalized(
            "envoy.config.cluster.v3.Cluster",
            json!({"name": "a", "type": "strict_dns", "lb_policy": "Round_Robin",
                   "dns_lookup_family": "V4_ONLY"}),
        );
        assert!(changed);
        assert_eq!(cluster["type"], "STRICT_DNS");
        assert_eq!(cluster["lb_policy"], "ROUND_ROBIN");
        assert_eq!(cluster["dns_lookup_family"], "V4_ONLY");
        let (changed, route) = normalized(
            "envoy.config.route.v3.RouteConfiguration",
            json!({"virtual_hosts": [{"name": "all", "domains": "*"}]}),
        );
        assert!(changed);
        assert_eq!(route["virtual_hosts"][0]["domains"], json!(["*"]));
    }

    #[test]
    fn inside_a_typed_config_too_and_a_strict_resource_is_left_as_it_is() {
        let hcm = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
        let listener = json!({"name": "l", "filter_chains": [{"filters": [{"name": "hcm",
            "typed_config": {"@type": hcm, "codec_type": "auto", "stat_prefix": "x"}}]}]});
        let (changed, listener) = normalized("envoy.config.listener.v3.Listener", listener);
        assert!(changed);
        let config = &listener["filter_chains"][0]["filters"][0]["typed_config"];
        assert_eq!(config["codec_type"], "AUTO");
        let strict = json!({"name": "a", "type": "STATIC", "lb_policy": "MAGLEV"});
        assert_eq!(
            normalized("envoy.config.cluster.v3.Cluster", strict.clone()),
            (false, strict)
        );
        // An unknown name stays unknown, for the schema check to report.
        let (changed, _) = normalized(
            "envoy.config.cluster.v3.Cluster",
            json!({"type": "strictly_dns"}),
        );
        assert!(!changed);
    }
}
