//! Response messages built from pre-encoded resources.
//!
//! These mirror `DiscoveryResponse` and `DeltaDiscoveryResponse` field for field (same numbers,
//! so Envoy sees the standard messages), but their resources are the bytes the snapshot encoded
//! once. Writing a response copies those bytes into the frame; nothing is re-encoded per stream.

use bytes::{Buf, BufMut, Bytes};
use prost::encoding::{skip_field, DecodeContext, WireType};
use prost::DecodeError;

/// An already-encoded message, written verbatim as a length-delimited field.
#[derive(Clone, PartialEq, Default, Debug)]
pub struct Encoded(pub Bytes);

impl prost::Message for Encoded {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.0);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        // Responses are only ever encoded by the server.
        skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

/// `envoy.service.discovery.v3.DiscoveryResponse`, with pre-encoded `Any` resources.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SotwResponse {
    #[prost(string, tag = "1")]
    pub version_info: String,
    #[prost(message, repeated, tag = "2")]
    pub resources: Vec<Encoded>,
    #[prost(string, tag = "4")]
    pub type_url: String,
    #[prost(string, tag = "5")]
    pub nonce: String,
    /// Subscribed listeners and clusters that do not exist (`NOT_FOUND`).
    #[prost(message, repeated, tag = "7")]
    pub resource_errors: Vec<envoy_types::pb::envoy::service::discovery::v3::ResourceError>,
}

/// `envoy.service.discovery.v3.DeltaDiscoveryResponse`, with pre-encoded `Resource`s.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DeltaResponse {
    #[prost(string, tag = "1")]
    pub system_version_info: String,
    #[prost(message, repeated, tag = "2")]
    pub resources: Vec<Encoded>,
    #[prost(string, tag = "4")]
    pub type_url: String,
    #[prost(string, tag = "5")]
    pub nonce: String,
    #[prost(string, repeated, tag = "6")]
    pub removed_resources: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
    use envoy_types::pb::google::protobuf::Any;
    use prost::Message;

    #[test]
    fn sotw_response_decodes_as_the_standard_message() {
        let any = Any {
            type_url: "type.googleapis.com/x".into(),
            value: vec![1, 2, 3],
        };
        let response = SotwResponse {
            version_info: "v1".into(),
            resources: vec![Encoded(any.encode_to_vec().into())],
            type_url: "type.googleapis.com/x".into(),
            nonce: "7".into(),
            resource_errors: Vec::new(),
        };
        let decoded = DiscoveryResponse::decode(response.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded.version_info, "v1");
        assert_eq!(decoded.nonce, "7");
        assert_eq!(decoded.resources, vec![any]);
    }
}
