//! Envoy resources in Envoy's proto3 JSON mapping → Envoy messages, checked against Envoy's
//! own descriptors. Shared by the two inputs written in that mapping: the templates (TOML turned
//! into JSON) and REST-pushed bodies.
//!
//! prost-reflect deserializes a `DynamicMessage` (the authority on what is valid: unknown fields
//! and `@type`s, wrong types, bad enum names, malformed durations), which is encoded and decoded
//! as the envoy-types message. It stops at the first problem, so when it rejects a resource
//! [`schema_check`] walks the resource to report every problem at once, each at its full field
//! path (inside `Any` payloads too). Valid resources never pay for that. What Envoy takes
//! beyond strict proto3 JSON (enum names in any case, a single value for a list) is rewritten
//! the strict way and decoded again (`lenient.rs`).

mod lenient;
pub(crate) mod schema_check;

use std::borrow::Cow;

use prost::{Message, Name};
use prost_reflect::{DeserializeOptions, DynamicMessage, MessageDescriptor};
use serde_json::Value;

use crate::descriptors::pool;

/// A field path as errors print it: `listeners[0].filter_chains[0].name` (the same form
/// `serde_path_to_error` prints, so paths from both can be looked up).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldPath(String);

impl FieldPath {
    pub fn key(&self, key: &str) -> FieldPath {
        if self.0.is_empty() {
            FieldPath(key.to_owned())
        } else {
            FieldPath(format!("{}.{key}", self.0))
        }
    }

    pub fn index(&self, index: usize) -> FieldPath {
        FieldPath(format!("{}[{index}]", self.0))
    }

    /// A path appended to this one (`other` as `serde_path_to_error` prints it; "." is empty).
    pub fn join(&self, other: &str) -> FieldPath {
        match other {
            "" | "." => self.clone(),
            o if o.starts_with('[') || self.0.is_empty() => FieldPath(format!("{}{o}", self.0)),
            o => FieldPath(format!("{}.{o}", self.0)),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for FieldPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

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

/// Decodes `json`, found at `path`, as `M`. Every problem in it is reported at once.
pub fn decode<M: Message + Name + Default>(
    json: &Value,
    path: &FieldPath,
) -> Result<M, Vec<FieldError>> {
    let desc = pool()
        .get_message_by_name(&M::full_name())
        .expect("envoy-types messages are in the descriptor set");
    let dynamic = match strict(&desc, json) {
        Ok(dynamic) => dynamic,
        Err(first) => {
            // What Envoy accepts too (lower-case enum names, a value for a list), then again.
            let mut lenient = json.clone();
            let retried = match lenient::normalize(&desc, &mut lenient) {
                true => strict(&desc, &lenient),
                false => Err(first),
            };
            retried.map_err(|(e, stopped_at)| {
                let all = schema_check::check(&desc, &lenient, path);
                if all.is_empty() {
                    // Something the walk does not look for: prost-reflect's word, where it
                    // stopped.
                    vec![FieldError::new(path.join(&stopped_at), e)]
                } else {
                    all
                }
            })?
        }
    };
    M::decode(dynamic.encode_to_vec().as_slice()).map_err(|e| {
        vec![FieldError::new(
            path.clone(),
            format!("does not decode: {e}"),
        )]
    })
}

/// prost-reflect's strict proto3 JSON decode; on error, its message and where it stopped.
fn strict(desc: &MessageDescriptor, json: &Value) -> Result<DynamicMessage, (String, String)> {
    let mut track = serde_path_to_error::Track::new();
    let de = serde_path_to_error::Deserializer::new(json, &mut track);
    let options = DeserializeOptions::new();
    DynamicMessage::deserialize_with_options(desc.clone(), de, &options)
        .map_err(|e| (e.to_string(), track.path().to_string()))
}

/// Names are present and unique within each section, given as (section, name field, names).
pub fn check_names(sections: &[(&str, &str, Vec<&String>)]) -> Vec<FieldError> {
    let mut errors = Vec::new();
    for (section, field, names) in sections {
        for (i, name) in names.iter().enumerate() {
            let at = FieldPath::default().key(section).index(i);
            if name.is_empty() {
                errors.push(FieldError::new(at, format!("needs a {field}")));
            } else if let Some(first) = names[..i].iter().position(|n| n == name) {
                let message = format!("duplicate name {name:?} (also {section}[{first}])");
                errors.push(FieldError::new(at.key(field), message));
            }
        }
    }
    errors
}

/// `[[section]]` (or a JSON array): a list of Envoy resources of type `M`. Each may carry an
/// `"@type"` naming `M`, as Envoy's config dump writes them, so a dump can be pasted back.
pub fn resources<M: prost::Message + prost::Name + Default>(
    root: &serde_json::Map<String, Value>,
    section: &str,
    errors: &mut Vec<FieldError>,
) -> Vec<M> {
    let at = FieldPath::default().key(section);
    match root.get(section) {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| {
                let at = at.index(i);
                let item = match item {
                    Value::Object(fields) if fields.contains_key("@type") => {
                        let mut fields = fields.clone();
                        let url = fields.remove("@type");
                        if url.as_ref().and_then(Value::as_str) != Some(&M::type_url()) {
                            let message = format!("\"@type\" must be {:?} here", M::type_url());
                            errors.push(FieldError::new(at.key("@type"), message));
                            return None;
                        }
                        Cow::Owned(Value::Object(fields))
                    }
                    item => Cow::Borrowed(item),
                };
                decode::<M>(&item, &at).map_err(|e| errors.extend(e)).ok()
            })
            .collect(),
        Some(_) => {
            let message = format!("expected a list of {} resources", M::NAME);
            errors.push(FieldError::new(at, message));
            Vec::new()
        }
    }
}
