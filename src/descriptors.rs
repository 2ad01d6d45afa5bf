//! Envoy's protobuf descriptors, loaded once and shared.
//!
//! `proto/envoy.descriptor.bin` is the descriptor set envoy-types is built from (every Envoy v3
//! message and extension, plus `google.protobuf`). Templates are validated against it, and
//! canonical hashing walks encodings with it.

use std::sync::OnceLock;

use prost_reflect::DescriptorPool;

static DESCRIPTORS: &[u8] = include_bytes!("../proto/envoy.descriptor.bin");

/// The pool of every Envoy message, decoded on first use.
pub fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(DESCRIPTORS).expect("the bundled descriptor set decodes")
    })
}
