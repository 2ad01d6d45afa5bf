//! Synthesis: (Inventory, Templates) → one snapshot per node type. Pure: no I/O (except
//! [`Templates::load_dir`], which reads the files and hands them to the pure parser).
//!
//! - [`templates`]: Envoy-native TOML per node type, validated against Envoy's descriptors.
//! - [`Synthesizer`] (in `synthesizer.rs`): merges discovered clusters into each node type's
//!   template and keeps encodings between runs, so a change to one service re-encodes only it.
//! - `synthesizer/backend_sets.rs`: services that declare their backends get only those (one snapshot per
//!   distinct declaration).
//! - `pushed.rs`: resources pushed over the REST API, merged over templates and discovery (the
//!   merge rule is documented there).
//! - [`clusters`], [`endpoints`], [`listeners`], [`routes`]: the one place each kind of
//!   resource is built; [`routes`] is where a service's traffic policy becomes its route.
//!
//! # Using it
//! ```no_run
//! # fn demo(inventory: &ecs_xds::inventory::Inventory) -> Result<(), Box<dyn std::error::Error>> {
//! use ecs_xds::synthesize::{Synthesizer, Templates};
//! let templates = Templates::load_dir("config/templates".as_ref())?; // every error at once
//! let mut synthesizer = Synthesizer::new(templates);
//! let synthesis = synthesizer.synthesize(inventory); // again for each new inventory
//! for warning in &synthesis.warnings {
//!     eprintln!("warning: {warning}");
//! }
//! for (node_type, snapshot) in synthesis.snapshots {
//!     // cache.publish(&node_type, snapshot)
//! #   let _ = (node_type, snapshot);
//! }
//! # Ok(()) }
//! ```

pub mod clusters;
pub mod endpoints;
pub mod grpc;
pub mod grpc_server;
pub mod interception;
pub mod listeners;
mod pushed;
pub mod routes;
pub mod security;
pub(crate) mod synthesizer;
pub mod templates;

pub use pushed::{Counts, PushedResources};
pub use synthesizer::{
    set_key_parts, synthesize, BackendSet, BackendSets, Synthesis, Synthesizer, Warning,
};
pub use templates::{NodeTemplate, Templates};

use envoy_types::pb::envoy::config::core::v3::{
    config_source::ConfigSourceSpecifier, AggregatedConfigSource, ApiVersion, ConfigSource,
};

/// A config source pointing back at the ADS stream the resource arrived on.
pub fn ads_config_source() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        ..Default::default()
    }
}
