//! REST push (sxds compatible): Envoy resources an operator PUTs for a node type, merged over
//! that node type's templates and discovered clusters, and persisted across restarts.
//!
//! - this file: the body format ([`parse`] → [`PushedResources`]), node type names, and the
//!   commands the HTTP handlers send to the synthesis loop.
//! - [`store`]: one JSON file per node type in the state directory, written atomically.
//! - [`shared`]: or one S3 object per node type, shared by every replica, written
//!   conditionally and re-read every `push.refresh_interval`.
//! - [`apply`]: what the synthesis loop does with a command: check the merged snapshot, persist,
//!   publish; on any failure nothing changes.
//!
//! # The body
//! ```json
//! {"version": "v42", "listeners": [...], "clusters": [...], "endpoints": [...], "routes": [...]}
//! ```
//! Each list holds Envoy v3 resources in Envoy's proto3 JSON mapping (`Listener`, `Cluster`,
//! `ClusterLoadAssignment`, `RouteConfiguration`), checked against Envoy's descriptors like the
//! templates: unknown fields and unknown `@type`s are errors naming the field path. A resource
//! may carry `"@type"` naming its own type (as Envoy's config dump writes it). Every key is
//! optional. `version` (a string or a number) is the operator's label, kept for GET and logs;
//! what Envoy is served stays versioned by content hash.
//!
//! # The merge rule (see `synthesize`)
//! A pushed resource replaces the templated, generated or discovered resource of the same type
//! and name; the others are added.

pub mod apply;
pub mod objects;
pub mod shared;
pub mod store;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::oneshot;

use crate::envoy_json::{check_names, resources, FieldError, FieldPath};
use crate::problem::{Problem, Problems};
use crate::snapshot::InconsistentSnapshot;
pub use crate::synthesize::{Counts, PushedResources};

pub use apply::Pushes;
pub use objects::{Condition, Object, ObjectError, ObjectStore, Pending, Written};
pub use shared::Refresher;
pub use store::{DirStore, StoreError, Stored};

const SECTIONS: &[&str] = &["version", "listeners", "clusters", "endpoints", "routes"];

/// Parses and validates a pushed body, reporting every problem at once.
pub fn parse(body: &[u8]) -> Result<PushedResources, Problems> {
    let json: Value =
        serde_json::from_slice(body).map_err(|e| one_problem(format!("invalid JSON: {e}")))?;
    let Value::Object(root) = json else {
        return Err(one_problem(
            "expected a JSON object {\"version\", \"listeners\", \"clusters\", \"endpoints\", \"routes\"}",
        ));
    };
    let mut errors = Vec::new();
    for key in root.keys().filter(|k| !SECTIONS.contains(&k.as_str())) {
        errors.push(FieldError::new(
            FieldPath::default().key(key),
            format!(
                "unknown field {key:?} (expected one of {})",
                SECTIONS.join(", ")
            ),
        ));
    }
    let version = match root.get("version") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(_) => {
            let at = FieldPath::default().key("version");
            errors.push(FieldError::new(at, "expected a string"));
            None
        }
    };
    let pushed = PushedResources {
        version,
        listeners: resources(&root, "listeners", &mut errors),
        clusters: resources(&root, "clusters", &mut errors),
        endpoints: resources(&root, "endpoints", &mut errors),
        routes: resources(&root, "routes", &mut errors),
    };
    if errors.is_empty() {
        errors = check_names(&[
            (
                "listeners",
                "name",
                pushed.listeners.iter().map(|l| &l.name).collect(),
            ),
            (
                "clusters",
                "name",
                pushed.clusters.iter().map(|c| &c.name).collect(),
            ),
            (
                "endpoints",
                "cluster_name",
                pushed.endpoints.iter().map(|e| &e.cluster_name).collect(),
            ),
            (
                "routes",
                "name",
                pushed.routes.iter().map(|r| &r.name).collect(),
            ),
        ]);
    }
    if errors.is_empty() {
        return Ok(pushed);
    }
    let problems = errors
        .into_iter()
        .map(|e| Problem::at(e.path.to_string(), e.message));
    Err(Problems(problems.collect()))
}

/// A problem of the whole body.
fn one_problem(message: impl Into<String>) -> Problems {
    Problems(vec![Problem::at("", message)])
}

/// A node type name is also its file name in the state directory, so it is limited to
/// `[A-Za-z0-9_.-]`, at most 128 characters, not starting with `.`.
pub fn check_node_type(node_type: &str) -> Result<(), String> {
    let valid_chars = node_type
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if node_type.is_empty() || node_type.len() > 128 || !valid_chars || node_type.starts_with('.') {
        return Err(format!(
            "invalid node type {node_type:?}: use 1 to 128 of A-Z a-z 0-9 _ . - (not starting with '.')"
        ));
    }
    Ok(())
}

/// What the HTTP handlers ask the synthesis loop, each with its reply.
#[derive(Debug)]
pub enum PushCommand {
    /// Replace the node type's pushed resources with `resources` (parsed from `body`).
    Put {
        node_type: String,
        body: Bytes,
        resources: PushedResources,
        /// The client's `If-Match`: apply only over the push of that version (`*`: any).
        if_match: Option<String>,
        reply: oneshot::Sender<Result<PutOutcome, Refused>>,
    },
    /// Remove the node type's pushed resources.
    Delete {
        node_type: String,
        reply: oneshot::Sender<Result<(), Refused>>,
    },
    /// The node type's push, as persisted.
    Get {
        node_type: String,
        reply: oneshot::Sender<Option<Stored>>,
    },
    /// A listing of the shared store (from its [`Refresher`], not from the API).
    Refresh(shared::Refresh),
}

/// What an accepted PUT did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutOutcome {
    pub version: Option<String>,
    /// The push's content version, for `ETag` and a later `If-Match`.
    pub etag: String,
    pub counts: Counts,
    /// Findings of the node type after the push (e.g. a route to a cluster nobody serves).
    pub warnings: Vec<String>,
}

/// Why a PUT or DELETE changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// DELETE of a node type with nothing pushed.
    #[error("nothing is pushed for node type {0:?}")]
    NotFound(String),
    /// Before the first complete inventory, a push cannot be checked against what is
    /// discovered (and nothing is published yet).
    #[error("no complete inventory yet; retry shortly")]
    NotReady,
    /// The merged snapshot would have a dangling reference, at `path` in the body.
    #[error("{source}")]
    Inconsistent {
        path: String,
        #[source]
        source: InconsistentSnapshot,
    },
    /// The state file could not be written; the push was not applied.
    #[error("cannot persist the push: {0}")]
    Persist(#[source] StoreError),
    /// The shared store could not be reached; nothing was changed (fail static).
    #[error("the shared push store is unavailable, nothing was changed: {0}")]
    Unavailable(#[source] StoreError),
    /// `If-Match` named another version than the node type's push (it changed meanwhile).
    #[error("the push of node type {0:?} is not the version If-Match names (it changed meanwhile): GET it and retry")]
    Changed(String),
    /// The synthesis loop is gone (shutting down).
    #[error("shutting down")]
    Stopped,
}

#[cfg(test)]
pub(crate) mod tests;
