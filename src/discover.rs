//! Discover: ECS and Cloud Map, through [`crate::aws`], in; one complete [`Inventory`] out.
//!
//! - `ecs.rs`: one ECS cluster → its part of the inventory (the pure task → endpoint mapping in
//!   `mapping.rs`, every tag and label read once in `labels.rs`).
//! - `cloud_map.rs`: one Cloud Map namespace → its part.
//! - `assemble.rs`: the parts → one inventory (name collisions, sorting, warnings).
//! - [`backends`]: declared backends (`<prefix>backends`), parsed and matched.
//! - [`poller`]: polls every source each interval, keeps the last good part of a failed source,
//!   and publishes only complete inventories that changed.
//! - `scopes.rs`: one (account, region) of `[[ecs.sources]]`, polled on its own with its own
//!   clients (an assumed role's), failing static on its own.
//! - [`events`] (with `reconcile.rs`): with `[events]` on, ECS events from SQS applied to the
//!   poller's facts as they come, and the full poll only every `events.reconcile_interval`.
//!
//! # Using it
//! ```no_run
//! # async fn demo(settings: ecs_xds::settings::DiscoverSettings) -> Result<(), ecs_xds::discover::DiscoverError> {
//! use std::sync::Arc;
//! use ecs_xds::aws::Aws;
//! use ecs_xds::discover::Poller;
//! use ecs_xds::inventory::Inventory;
//! let settings = settings.check()?; // every problem at once, and the compiled filter
//! let aws = Aws::connect(&settings.aws, settings.events.endpoint_url.as_deref()).await?;
//! let calls = aws.calls().clone(); // for the metrics layer
//! let (tx, mut rx) = tokio::sync::watch::channel(Arc::new(Inventory::default()));
//! tokio::spawn(Poller::new(settings, aws)?.run(tx, std::future::pending()));
//! rx.changed().await.ok(); // the first complete inventory
//! # Ok(()) }
//! ```
//! `ecs-xds discover` calls [`discover_once`] and prints the inventory as a table or JSON.
//!
//! # Naming rules
//! - An ECS service exposed on one unnamed port is the cluster `{service}`; each named port
//!   mapping of a service is the cluster `{service}.{port_name}` (both templates configurable,
//!   `ecs.cluster_name` / `ecs.port_cluster_name`; the `<prefix>cluster-name` label or tag
//!   replaces `{service}`).
//! - A Cloud Map service is `{cloud_map.cluster_name_prefix}{service}.{namespace}`.
//! - **Collisions** (the same name from two sources, e.g. service `web` in ECS clusters `a` and
//!   `b`): the source listed first in the settings wins (ECS clusters in `ecs.clusters` order, or
//!   by name when auto-discovered, then Cloud Map namespaces in order). The losing cluster is left
//!   out and a warning naming both is added to [`Inventory::warnings`] and logged. Fix a
//!   collision with `{ecs_cluster}`, `{account}` or `{region}` in the template or a
//!   `<prefix>cluster-name` tag.
//! - **Merging** (`ecs.merge = true`): an ECS service of one name in two sources (accounts or
//!   regions, `[[ecs.sources]]`) is one cluster with the endpoints of both, each endpoint in
//!   its own region's locality; the first source's tags decide the cluster's policy. Within
//!   one source, and for Cloud Map, the collision rule stays.

mod assemble;
pub mod backends;
mod cloud_map;
mod ecs;
pub mod events;
mod labels;
mod mapping;
pub mod poller;
mod reconcile;
mod run;
mod scopes;

pub use poller::{
    discover_once, discover_once_with, Observe, Observer, PollCycle, PollReport, Poller,
};

use crate::aws::AwsError;
use crate::problem::Problems;

/// Why discovery (or one source of it) failed. Each variant says which step, so the user can act.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoverError {
    /// An AWS request failed after its retries, e.g.
    /// `DescribeTasks on ECS cluster demo failed: ...`.
    #[error(transparent)]
    Aws(#[from] AwsError),
    /// A configured source does not exist (an unknown Cloud Map namespace).
    #[error("{target} not found: {message}")]
    NotFound { target: String, message: String },
    #[error("invalid discover settings:\n{0}")]
    Settings(#[from] Problems),
    /// A failure in one of several sources (`account/region`, and the role assumed for it).
    #[error("source {scope}{}: {error}", role.as_ref().map(|r| format!(" (role {r})")).unwrap_or_default())]
    InScope {
        scope: String,
        role: Option<String>,
        error: Box<DiscoverError>,
    },
}
