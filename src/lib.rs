//! ecs-xds: an xDS control plane that makes Envoy a service mesh on AWS ECS.
//!
//! # Layout
//! Modules follow the data flow:
//! - [`discover`]: AWS (ECS, Cloud Map) in, one complete `Inventory` out. Only module touching AWS.
//! - [`synthesize`]: pure (Inventory, Templates) → Snapshot per node type; the templates.
//! - [`snapshot`]: the Snapshot value, [`snapshot::ResourceType`], consistency check, content hashes.
//! - [`cache`]: latest snapshot per node type; publishing is the only push trigger.
//! - [`serve`]: tonic xDS services (ADS + per-type, SotW + delta). Only module touching gRPC.
//! - [`admin`]: the operator's HTTP endpoint: health, readiness, metrics, nodes, snapshots.
//! - [`push`]: REST-pushed resources (sxds compatible): parsing, the state files, applying a push.
//! - [`settings`]: the daemon's TOML settings; [`daemon`]: `ecs-xds run`, the stages wired together.
//! - [`descriptors`]: Envoy's protobuf descriptors, for templates and canonical hashing.

pub mod admin;
pub mod cache;
pub mod daemon;
pub mod descriptors;
pub mod discover;
pub mod push;
pub mod serve;
pub mod settings;
pub mod snapshot;
pub mod synthesize;
pub mod validate;
