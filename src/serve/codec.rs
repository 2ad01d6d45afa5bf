//! Request decoding for xDS streams: prost, with a small initial buffer.
//!
//! tonic's default decode buffer is 8 KiB per stream for the stream's whole life; xDS streams
//! are long-lived and mostly idle, so it starts small here and grows only when a request needs
//! it.

use tonic::codec::BufferSettings;
use tonic_prost::ProstDecoder;

/// Initial decode buffer per stream.
const BUFFER_SIZE: usize = 512;
/// tonic's default; only matters for encoding.
const YIELD_THRESHOLD: usize = 32 * 1024;

/// A decoder for the requests of one stream.
pub(super) fn request_decoder<D: prost::Message + Default>() -> ProstDecoder<D> {
    ProstDecoder::new(BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD))
}
