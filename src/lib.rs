//! ecs-xds: an xDS control plane that makes Envoy a service mesh on AWS ECS.
//!
//! # Layout
//! Modules follow the data flow, discover → synthesize → cache → serve:
//! - [`settings`]: the daemon's TOML settings, every problem at once ([`settings::Settings`],
//!   with `[aws]`, `[ecs]`, `[cloud_map]` and `[events]` in `settings/discover.rs`).
//! - [`aws`]: the only user of the AWS SDK: clients, one retry layer with an attempt timeout per
//!   operation, one [`aws::CallCounter`], a file per AWS service; no SDK type leaves it.
//! - [`inventory`]: the [`inventory::Inventory`] model: clusters, endpoints and the traffic
//!   policy services ask for, as plain data.
//! - [`discover`]: ECS, Cloud Map and ECS events, through [`aws`], to one complete inventory;
//!   every tag and label read in one place (`discover/labels.rs`).
//! - [`synthesize`]: pure (Inventory, Templates, pushed resources) → Snapshot per node type.
//! - [`snapshot`]: the Snapshot value, [`snapshot::ResourceType`], consistency check, content hashes.
//! - [`cache`]: latest snapshot per node type; its one [`cache::Publisher`] is the only push trigger.
//! - [`serve`]: tonic xDS services (ADS + per-type, SotW + delta), CSDS, and the access log
//!   service where Envoys report what rules in shadow would deny. Only module touching gRPC.
//! - [`push`]: REST-pushed resources (sxds compatible): parsing, the state directory or the
//!   shared store (any [`push::ObjectStore`]; the daemon gives it S3's), applying a push.
//! - [`admin`]: the operator's HTTP endpoint: health, readiness, metrics, nodes, snapshots.
//! - [`identity`]: workload identity: the CA, task attestation through STS and ECS, the
//!   identity endpoint, the listeners' TLS; [`agent`]: the sidecar that gets a task its
//!   certificate.
//! - [`daemon`]: `ecs-xds run`'s supervised stages; [`cli`]: the commands of the binary, one
//!   file each, their errors and exit codes (`validate --envoy` in `cli/validate/`).
//!
//! Shared by several of them:
//! - [`spiffe`]: the SPIFFE ID a workload certificate names
//!   (`spiffe://<trust_domain>/ecs/<account>/<region>/<cluster>/<service>`).
//! - [`problem`]: the one [`problem::Problem`] shape (file, line, path, message) of every
//!   "all errors at once" report: settings, templates, pushed bodies.
//! - [`descriptors`]: Envoy's protobuf descriptors, for templates, pushes and canonical hashing.
//! - [`envoy_json`]: Envoy's proto3 JSON → Envoy messages, every problem at its field path
//!   (templates and pushed bodies), taking what Envoy takes (enum names in any case).
//! - [`http_listener`]: the accept loop of both listeners: connection cap, first-request
//!   deadline, bounded graceful shutdown.

pub mod admin;
pub mod agent;
pub mod aws;
pub mod cache;
pub mod cli;
pub mod daemon;
pub mod descriptors;
pub mod discover;
pub mod envoy_json;
pub mod http_listener;
pub mod identity;
pub mod inventory;
pub mod problem;
pub mod push;
pub mod serve;
pub mod settings;
pub mod snapshot;
pub mod spiffe;
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
