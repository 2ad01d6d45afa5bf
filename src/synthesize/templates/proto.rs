//! Proto3 JSON → Envoy messages, checked against Envoy's own descriptors.
//!
//! prost-reflect deserializes a `DynamicMessage` (the authority on what is valid: unknown fields
//! and `@type`s, wrong types, bad enum names, malformed durations), which is encoded and decoded
//! as the envoy-types message. It stops at the first problem, so when it rejects a resource
//! [`schema_check`](super::schema_check) walks the resource to report every problem at once,
//! each at its full field path (inside `Any` payloads too). Valid resources never pay for that.

use prost::{Message, Name};
use prost_reflect::{DeserializeOptions, DynamicMessage};
use serde_json::Value;

use super::schema_check;
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

/// Decodes `json`, found at `path`, as `M`. Every problem in it is reported at once.
pub fn decode<M: Message + Name + Default>(
    json: &Value,
    path: &FieldPath,
) -> Result<M, Vec<FieldError>> {
    let desc = pool()
        .get_message_by_name(&M::full_name())
        .expect("envoy-types messages are in the descriptor set");
    let mut track = serde_path_to_error::Track::new();
    let de = serde_path_to_error::Deserializer::new(json, &mut track);
    let options = DeserializeOptions::new();
    let dynamic =
        DynamicMessage::deserialize_with_options(desc.clone(), de, &options).map_err(|e| {
            let all = schema_check::check(&desc, json, path);
            if all.is_empty() {
                // Something the walk does not look for: prost-reflect's word, where it stopped.
                let at = path.join(&track.path().to_string());
                vec![FieldError::new(at, e.to_string())]
            } else {
                all
            }
        })?;
    M::decode(dynamic.encode_to_vec().as_slice()).map_err(|e| {
        vec![FieldError::new(
            path.clone(),
            format!("does not decode: {e}"),
        )]
    })
}
