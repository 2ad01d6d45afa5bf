//! Proto3 JSON → Envoy messages, checked against Envoy's own descriptors.
//!
//! Two passes. The first walks the JSON beside the descriptors and collects *every* unknown
//! field and unknown `@type` (prost-reflect stops at the first error, and cannot say where
//! inside an `Any` it was). The second, run only when the first found nothing, deserializes a
//! `DynamicMessage` (value errors: wrong types, bad enum names, malformed durations), encodes
//! it, and decodes the bytes as the envoy-types message.

use prost::{Message, Name};
use prost_reflect::{DeserializeOptions, DynamicMessage, Kind, MessageDescriptor};
use serde_json::Value;

use super::toml_json::FieldPath;
use crate::descriptors::pool;

/// One problem at one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub path: FieldPath,
    pub message: String,
}

impl FieldError {
    pub fn new(path: FieldPath, message: impl Into<String>) -> Self {
        Self {
            path,
            message: message.into(),
        }
    }
}

/// Decodes `json`, found at `path`, as `M`. Every unknown field and `@type` is reported at once.
pub fn decode<M: Message + Name + Default>(
    json: &Value,
    path: &FieldPath,
) -> Result<M, Vec<FieldError>> {
    let desc = pool()
        .get_message_by_name(&M::full_name())
        .expect("envoy-types messages are in the descriptor set");
    let mut errors = Vec::new();
    check_message(&desc, json, path, &mut errors);
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut track = serde_path_to_error::Track::new();
    let de = serde_path_to_error::Deserializer::new(json, &mut track);
    let dynamic = DynamicMessage::deserialize_with_options(desc, de, &DeserializeOptions::new())
        .map_err(|e| {
            let at = path.join(&track.path().to_string());
            vec![FieldError::new(at, e.to_string())]
        })?;
    M::decode(dynamic.encode_to_vec().as_slice()).map_err(|e| {
        vec![FieldError::new(
            path.clone(),
            format!("does not decode: {e}"),
        )]
    })
}

/// Well-known types whose JSON form is not an object of their fields; their values are left to
/// the deserializer.
const SPECIAL_JSON: &[&str] = &[
    "google.protobuf.Duration",
    "google.protobuf.Timestamp",
    "google.protobuf.FieldMask",
    "google.protobuf.Struct",
    "google.protobuf.Value",
    "google.protobuf.ListValue",
    "google.protobuf.BoolValue",
    "google.protobuf.BytesValue",
    "google.protobuf.DoubleValue",
    "google.protobuf.FloatValue",
    "google.protobuf.Int32Value",
    "google.protobuf.Int64Value",
    "google.protobuf.StringValue",
    "google.protobuf.UInt32Value",
    "google.protobuf.UInt64Value",
];

fn check_message(
    desc: &MessageDescriptor,
    json: &Value,
    path: &FieldPath,
    errors: &mut Vec<FieldError>,
) {
    let name = desc.full_name();
    if SPECIAL_JSON.contains(&name) {
        return;
    }
    // Anything but an object is a type error the deserializer reports.
    let Value::Object(fields) = json else { return };
    if name == "google.protobuf.Any" {
        return check_any(fields, path, errors);
    }
    check_fields(desc, fields, path, errors);
}

fn check_fields<'a>(
    desc: &MessageDescriptor,
    fields: impl IntoIterator<Item = (&'a String, &'a Value)>,
    path: &FieldPath,
    errors: &mut Vec<FieldError>,
) {
    for (key, value) in fields {
        let at = path.key(key);
        let field = desc
            .get_field_by_name(key)
            .or_else(|| desc.get_field_by_json_name(key));
        let Some(field) = field else {
            errors.push(FieldError::new(at, unknown_field(desc, key)));
            continue;
        };
        let Kind::Message(inner) = field.kind() else {
            continue;
        };
        match value {
            Value::Object(map) if field.is_map() => {
                // A map entry's value is field 2 of the entry message.
                if let Some(Kind::Message(value_desc)) = inner.get_field(2).map(|f| f.kind()) {
                    for (k, v) in map {
                        check_message(&value_desc, v, &at.key(k), errors);
                    }
                }
            }
            Value::Array(items) if field.is_list() => {
                for (i, item) in items.iter().enumerate() {
                    check_message(&inner, item, &at.index(i), errors);
                }
            }
            _ => check_message(&inner, value, &at, errors),
        }
    }
}

fn check_any(
    fields: &serde_json::Map<String, Value>,
    path: &FieldPath,
    errors: &mut Vec<FieldError>,
) {
    let at = path.key("@type");
    let type_url = match fields.get("@type") {
        Some(Value::String(url)) => url,
        Some(_) => return errors.push(FieldError::new(at, "\"@type\" must be a string")),
        None => {
            return errors.push(FieldError::new(
                path.clone(),
                "a typed config needs \"@type\" (e.g. \"type.googleapis.com/envoy.extensions.filters.http.router.v3.Router\")",
            ))
        }
    };
    let message_name = type_url.rsplit('/').next().unwrap_or_default();
    let Some(inner) = pool().get_message_by_name(message_name) else {
        return errors.push(FieldError::new(at, format!("unknown @type {type_url:?}")));
    };
    if SPECIAL_JSON.contains(&inner.full_name()) {
        // `{"@type": ".../google.protobuf.Duration", "value": "1s"}`
        for key in fields.keys().filter(|k| *k != "@type" && *k != "value") {
            errors.push(FieldError::new(
                path.key(key),
                format!("unknown field {key:?}"),
            ));
        }
        return;
    }
    let rest = fields.iter().filter(|(k, _)| *k != "@type");
    check_fields(&inner, rest, path, errors);
}

/// `unknown field "stat_prefixx"`, with a suggestion when a field name is one or two edits away.
fn unknown_field(desc: &MessageDescriptor, key: &str) -> String {
    let nearest = desc
        .fields()
        .map(|f| (edit_distance(key, f.name()), f.name().to_owned()))
        .min();
    match nearest {
        Some((d, name)) if d <= 2 => {
            format!(
                "unknown field {key:?} in {} (did you mean {name:?}?)",
                desc.full_name()
            )
        }
        _ => format!("unknown field {key:?} in {}", desc.full_name()),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}
