//! ecs-xds: an xDS control plane that makes Envoy a service mesh on AWS ECS.
//!
//! # Layout
//! Modules follow the data flow:
//! - [`discover`]: AWS (ECS, Cloud Map) in, one complete `Inventory` out. Only module touching AWS.
//! - [`synthesize`]: pure (Inventory, Templates, pushed resources) → Snapshot per node type.
//! - [`snapshot`]: the Snapshot value, [`snapshot::ResourceType`], consistency check, content hashes.
//! - [`cache`]: latest snapshot per node type; its one [`cache::Publisher`] is the only push trigger.
//! - [`serve`]: tonic xDS services (ADS + per-type, SotW + delta). Only module touching gRPC.
//! - [`admin`]: the operator's HTTP endpoint: health, readiness, metrics, nodes, snapshots.
//! - [`push`]: REST-pushed resources (sxds compatible): parsing, the state files, applying a push.
//! - [`settings`]: the daemon's TOML settings; [`daemon`]: `ecs-xds run`, the supervised stages.
//! - [`validate`]: `ecs-xds validate`: a snapshot as a static bootstrap for `envoy --mode validate`.
//!
//! Shared by several of them:
//! - [`descriptors`]: Envoy's protobuf descriptors, for templates, pushes and canonical hashing.
//! - [`envoy_json`]: Envoy's proto3 JSON → Envoy messages, every problem at its field path
//!   (templates and pushed bodies).
//! - [`http_listener`]: the accept loop of both listeners: connection cap, first-request
//!   deadline, bounded graceful shutdown.

pub mod admin;
pub mod aws;
pub mod cache;
pub mod cli;
pub mod daemon;
pub mod descriptors;
pub mod discover;
pub mod envoy_json;
pub mod http_listener;
pub mod inventory;
pub mod problem;
pub mod push;
pub mod serve;
pub mod settings;
pub mod snapshot;
pub mod synthesize;

#[doc(hidden)]
pub use tikv_jemallocator;

/// Makes jemalloc a binary's allocator, set up for a long-running server: freed memory goes
/// back to the system about a second later, from a background thread (jemalloc's default
/// keeps it ten seconds, and only purges when the program allocates again).
///
/// jemalloc rather than the system allocator: with thousands of long-lived HTTP/2 connections,
/// each holding fixed buffers it mostly never touches, jemalloc keeps the untouched pages out
/// of memory and fragments less (docs/benchmarks.md has the figures). Used by `ecs-xds` and
/// by the `xds-load` tool, so the server it measures allocates as the daemon does.
#[macro_export]
macro_rules! use_jemalloc {
    () => {
        #[global_allocator]
        static ALLOCATOR: $crate::tikv_jemallocator::Jemalloc = $crate::tikv_jemallocator::Jemalloc;

        /// jemalloc reads its options from this symbol at start.
        #[export_name = "_rjem_malloc_conf"]
        static MALLOC_CONF: &[u8] =
            b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";
    };
}
