//! Synthesis: pure functions from inventory and templates to Envoy resources. No I/O.
//!
//! Today this holds the resource builders every other stage shares (one place builds
//! clusters, one place builds endpoints); the template merge lands on top of them.

pub mod clusters;
pub mod endpoints;
pub mod listeners;
pub mod templates;

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
