//! The gRPC codec for xDS streams: prost, with small initial buffers.
//!
//! tonic's default keeps an 8 KiB encode and an 8 KiB decode buffer for the life of every
//! stream. xDS streams are long-lived and mostly idle, so at 10,000 streams those buffers
//! would be most of the server's memory; they start small here and grow only when a message
//! needs it.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// Initial buffer size per stream and direction.
const BUFFER_SIZE: usize = 512;
/// Encoded responses are handed to HTTP/2 once this many bytes are buffered (tonic's default).
const YIELD_THRESHOLD: usize = 32 * 1024;

/// Encodes `E` (responses), decodes `D` (requests).
#[derive(Debug)]
pub(super) struct XdsCodec<E, D>(PhantomData<(E, D)>);

impl<E, D> Default for XdsCodec<E, D> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<E, D> Codec for XdsCodec<E, D>
where
    E: prost::Message + Send + 'static,
    D: prost::Message + Default + Send + 'static,
{
    type Encode = E;
    type Decode = D;
    type Encoder = ProstEncoder<E>;
    type Decoder = ProstDecoder<D>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD))
    }
}
