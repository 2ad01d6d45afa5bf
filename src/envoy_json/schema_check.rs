//! Every problem in one resource, each at its full field path.
//!
//! prost-reflect stops at the first bad value, so when it rejects a resource this walks the JSON
//! beside Envoy's descriptors and collects them all: unknown fields (with the nearest name),
//! unknown `@type`s, and bad values. Field names, kinds and `@type`s come from the descriptors;
//! every value that is not a plain message (scalars, enums, durations, wrappers, `Struct`, a
//! table where a list belongs, ...) is judged by prost-reflect itself, one field at a time, so
//! this pass accepts exactly what the final deserialization accepts and only finds *where*.

use std::collections::HashMap;

use prost_reflect::{
    DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, OneofDescriptor,
};
use serde_json::{Map, Value};

use super::{FieldError, FieldPath};
use crate::descriptors::pool;

/// Every problem in `json`, a `desc` message found at `path`.
pub fn check(desc: &MessageDescriptor, json: &Value, path: &FieldPath) -> Vec<FieldError> {
    let mut errors = Vec::new();
    check_message(desc, json, path, &mut errors);
    errors
}

/// Messages written as an object of their fields, which this walks into. Every other message
/// (well-known types with a JSON form of their own) is a value prost-reflect judges whole.
fn is_plain(desc: &MessageDescriptor) -> bool {
    let name = desc.full_name();
    name == "google.protobuf.Empty" || !name.starts_with("google.protobuf.")
}

fn check_message(
    desc: &MessageDescriptor,
    json: &Value,
    path: &FieldPath,
    errors: &mut Vec<FieldError>,
) {
    match json {
        Value::Object(fields) if desc.full_name() == "google.protobuf.Any" => {
            check_any(desc, fields, path, errors)
        }
        Value::Object(fields) if is_plain(desc) => check_fields(desc, fields, path, errors),
        _ => {
            if let Err(message) = deserialize(desc, json) {
                errors.push(FieldError::new(
                    path.clone(),
                    hint(&Kind::Message(desc.clone()), message),
                ));
            }
        }
    }
}

fn check_fields(
    desc: &MessageDescriptor,
    fields: &Map<String, Value>,
    path: &FieldPath,
    errors: &mut Vec<FieldError>,
) {
    // Oneof name → the key that set it first.
    let mut oneofs: HashMap<String, &str> = HashMap::new();
    for (key, value) in fields {
        let at = path.key(key);
        let field = desc
            .get_field_by_json_name(key)
            .or_else(|| desc.get_field_by_name(key));
        let Some(field) = field else {
            if desc.get_extension_by_json_name(key).is_some() {
                check_one(desc, None, key, value, &at, errors);
            } else {
                errors.push(FieldError::new(at, unknown_field(desc, key)));
            }
            continue;
        };
        if let (Some(oneof), false) = (real_oneof(&field), value.is_null()) {
            if let Some(first) = oneofs.insert(oneof.name().to_owned(), key) {
                let message = format!(
                    "{key:?} and {first:?} are both set, but only one of oneof {:?} may be",
                    oneof.name()
                );
                errors.push(FieldError::new(at.clone(), message));
            }
        }
        check_field(desc, &field, key, value, &at, errors);
    }
}

/// The oneof a field is in, unless it is the synthetic one of a proto3 `optional` field.
fn real_oneof(field: &FieldDescriptor) -> Option<OneofDescriptor> {
    field.containing_oneof().filter(|o| !o.is_synthetic())
}

fn check_field(
    parent: &MessageDescriptor,
    field: &FieldDescriptor,
    key: &str,
    value: &Value,
    at: &FieldPath,
    errors: &mut Vec<FieldError>,
) {
    let (inner, map_entry) = match field.kind() {
        Kind::Message(entry) if field.is_map() => (None, Some(entry)),
        Kind::Message(m) => (Some(m), None),
        _ => (None, None),
    };
    let one = Some(field);
    match value {
        Value::Object(entries) if field.is_map() => {
            let entry = map_entry.expect("a map field's kind is its entry message");
            let value_message = match entry.map_entry_value_field().kind() {
                Kind::Message(m) => Some(m),
                _ => None,
            };
            let string_keys = entry.map_entry_key_field().kind() == Kind::String;
            for (k, v) in entries {
                match &value_message {
                    Some(m) if string_keys && !v.is_null() => {
                        check_message(m, v, &at.key(k), errors)
                    }
                    _ => {
                        let entry = Value::Object(Map::from_iter([(k.clone(), v.clone())]));
                        check_one(parent, one, key, &entry, &at.key(k), errors)
                    }
                }
            }
        }
        Value::Array(items) if field.is_list() => {
            for (i, item) in items.iter().enumerate() {
                match &inner {
                    Some(m) if !item.is_null() => check_message(m, item, &at.index(i), errors),
                    _ => {
                        let item = Value::Array(vec![item.clone()]);
                        check_one(parent, one, key, &item, &at.index(i), errors)
                    }
                }
            }
        }
        _ => match &inner {
            Some(m) if !field.is_list() && !value.is_null() => check_message(m, value, at, errors),
            _ => check_one(parent, one, key, value, at, errors),
        },
    }
}

/// prost-reflect's verdict on `{key: value}` as a `parent`: one field's value, on its own.
fn check_one(
    parent: &MessageDescriptor,
    field: Option<&FieldDescriptor>,
    key: &str,
    value: &Value,
    at: &FieldPath,
    errors: &mut Vec<FieldError>,
) {
    let one = Value::Object(Map::from_iter([(key.to_owned(), value.clone())]));
    if let Err(message) = deserialize(parent, &one) {
        let message = match field.map(|f| f.kind()) {
            Some(Kind::Enum(e)) if message.starts_with("unrecognized enum value") => {
                let names: Vec<String> = e.values().map(|v| v.name().to_owned()).collect();
                // The value, or the one item of a list item's check.
                let written = match value {
                    Value::Array(items) => items.first().and_then(Value::as_str),
                    _ => value.as_str(),
                };
                match written.and_then(|w| nearest(w, names.iter().map(String::as_str))) {
                    Some(name) => format!("{message} in {} (did you mean {name:?}?)", e.name()),
                    None if names.len() <= 12 => {
                        format!("{message} in {} (one of {})", e.name(), names.join(", "))
                    }
                    None => format!("{message} in {}", e.name()),
                }
            }
            Some(kind) => hint(&kind, message),
            None => message,
        };
        errors.push(FieldError::new(at.clone(), message));
    }
}

fn deserialize(desc: &MessageDescriptor, json: &Value) -> Result<(), String> {
    DynamicMessage::deserialize_with_options(desc.clone(), json, &DeserializeOptions::new())
        .map(drop)
        .map_err(|e| e.to_string())
}

/// prost-reflect's message, with how a value of `kind` is written where it does not say.
fn hint(kind: &Kind, message: String) -> String {
    let how = match kind {
        Kind::Message(m) if m.full_name() == "google.protobuf.Duration" => {
            return format!("{message} (a duration is written \"5s\" or \"0.25s\")");
        }
        // `google.protobuf.UInt32Value` and the like: written as their `value` field.
        Kind::Message(m) if m.full_name().ends_with("Value") && m.fields().len() == 1 => {
            return match m.get_field(1) {
                Some(value) => hint(&value.kind(), message),
                None => message,
            };
        }
        Kind::Uint32 | Kind::Fixed32 | Kind::Uint64 | Kind::Fixed64 => "a non-negative integer",
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => "an integer",
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => "an integer",
        Kind::Float | Kind::Double => "a number",
        Kind::Bool => "true or false",
        _ => return message,
    };
    if message.contains("expected") {
        message
    } else {
        format!("{message} (expected {how})")
    }
}

fn check_any(
    any: &MessageDescriptor,
    fields: &Map<String, Value>,
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
    let Some((_, message_name)) = type_url.rsplit_once('/') else {
        let message = format!(
            "@type {type_url:?} is not a type URL (write \"type.googleapis.com/{type_url}\")"
        );
        return errors.push(FieldError::new(at, message));
    };
    let Some(inner) = pool().get_message_by_name(message_name) else {
        return errors.push(FieldError::new(at, format!("unknown @type {type_url:?}")));
    };
    if is_plain(&inner) {
        check_fields(&inner, &without_type(fields), path, errors);
    } else if let Err(message) = deserialize(any, &Value::Object(fields.clone())) {
        // `{"@type": ".../google.protobuf.Duration", "value": "1s"}`
        errors.push(FieldError::new(
            path.clone(),
            hint(&Kind::Message(inner), message),
        ));
    }
}

fn without_type(fields: &Map<String, Value>) -> Map<String, Value> {
    let mut rest = fields.clone();
    rest.remove("@type");
    rest
}

/// `unknown field "stat_prefixx"`, with a suggestion when a field name is one or two edits away.
fn unknown_field(desc: &MessageDescriptor, key: &str) -> String {
    let names: Vec<String> = desc.fields().map(|f| f.name().to_owned()).collect();
    match nearest(key, names.iter().map(String::as_str)) {
        Some(name) => format!(
            "unknown field {key:?} in {} (did you mean {name:?}?)",
            desc.full_name()
        ),
        None => format!("unknown field {key:?} in {}", desc.full_name()),
    }
}

/// The candidate one or two edits away from `written` (and not all of it), if any.
fn nearest<'a>(written: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (edit_distance(written, c), c))
        .min()
        .filter(|(d, _)| *d <= 2 && *d < written.len())
        .map(|(_, c)| c)
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
