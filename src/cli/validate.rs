//! `ecs-xds validate`: checks settings and templates, and optionally has a real Envoy check
//! what each node type would be served, so configs Envoy would NACK are caught before they ship.
//!
//! Envoy checks each snapshot inside the sidecar's own bootstrap (`--bootstrap`, by default the
//! one of `deploy/ecs`, built in): its `admin`, `node`, `bootstrap_extensions` and the rest
//! matter to what Envoy accepts (an internal listener needs its bootstrap extension). Only its
//! `dynamic_resources` are left out: the snapshot comes in as static resources
//! (`bootstrap.rs`). An Envoy that dies of a signal has crashed, which is told apart from
//! Envoy rejecting the config.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::CommandError;
use crate::inventory::Inventory;
use crate::snapshot::Snapshot;

mod bootstrap;

pub use bootstrap::{api_listeners, envoy_validate, grpc_tls_clusters, static_bootstrap, Verdict};

/// deploy/ecs's sidecar bootstrap, the default of `--bootstrap`.
const SIDECAR_BOOTSTRAP: &str = include_str!("../../deploy/ecs/envoy-bootstrap.yaml");

/// What `validate` is asked to check.
pub struct Validate<'a> {
    pub config: &'a Path,
    /// An Envoy binary to run `--mode validate` with, once per snapshot.
    pub envoy: Option<&'a Path>,
    /// The sidecar's bootstrap (YAML or JSON); `None`: deploy/ecs's.
    pub bootstrap: Option<&'a Path>,
    /// A saved inventory to synthesize with; `None`: an empty one.
    pub inventory: Option<&'a Path>,
}

/// Checks settings and templates, and with an Envoy what each node type would be served.
pub async fn validate(asked: Validate<'_>) -> Result<(), CommandError> {
    let loaded = super::load(asked.config)?;
    let sidecar = sidecar_bootstrap(asked.bootstrap)?;
    let inventory = (asked.inventory.map(Inventory::read_file))
        .transpose()?
        .unwrap_or_default();
    let synthesis = crate::synthesize::synthesize(&inventory, &loaded.templates);
    for warning in &synthesis.warnings {
        println!("warning: {warning}");
    }
    let (mut rejected, mut crashed) = (Vec::new(), Vec::new());
    for (node_type, snapshot) in &synthesis.snapshots {
        let Some(envoy) = asked.envoy else {
            println!("node type {node_type}: valid");
            continue;
        };
        // Each backend set's snapshot too: its own generated routes (503 hosts included).
        let sets = synthesis.backend_sets.get(node_type).into_iter();
        let sets = sets.flat_map(|s| &s.sets).map(|(key, set)| {
            let label = format!("node type {node_type}, backends {key:?}");
            (label, &set.snapshot)
        });
        let whole = (format!("node type {node_type}"), snapshot);
        let mut verdicts = Vec::new();
        for (label, snapshot) in std::iter::once(whole).chain(sets) {
            verdicts.push(check(envoy, &sidecar, &label, snapshot).await);
        }
        if verdicts.iter().any(|v| matches!(v, Verdict::Rejected(_))) {
            rejected.push(node_type.clone());
        } else if verdicts.iter().any(|v| matches!(v, Verdict::Crashed(_))) {
            crashed.push(node_type.clone());
        }
    }
    match (rejected.is_empty(), crashed.is_empty()) {
        (true, true) => Ok(()),
        (false, _) => Err(CommandError::EnvoyRejected(rejected)),
        (true, false) => Err(CommandError::EnvoyCrashed(crashed)),
    }
}

/// The sidecar bootstrap at `path` (YAML, or JSON, which is YAML too), or deploy/ecs's.
fn sidecar_bootstrap(path: Option<&Path>) -> Result<Value, CommandError> {
    let error = |path: &Path, message: String| CommandError::Bootstrap {
        path: path.to_owned(),
        message,
    };
    let (text, path) = match path {
        None => (
            SIDECAR_BOOTSTRAP.to_owned(),
            PathBuf::from("deploy/ecs/envoy-bootstrap.yaml"),
        ),
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| error(path, e.to_string()))?;
            (text, path.to_owned())
        }
    };
    let value: Value = serde_yaml_ng::from_str(&text).map_err(|e| error(&path, e.to_string()))?;
    match value {
        Value::Object(_) => Ok(value),
        _ => Err(error(&path, "not a YAML or JSON object".to_owned())),
    }
}

/// Has `envoy --mode validate` check `snapshot` within `sidecar`, and says what it found.
async fn check(envoy: &Path, sidecar: &Value, label: &str, snapshot: &Snapshot) -> Verdict {
    let bootstrap = static_bootstrap(sidecar, snapshot);
    let grpc_only = match (api_listeners(snapshot), grpc_tls_clusters(snapshot)) {
        (0, 0) => String::new(),
        (n, 0) => format!(
            " (but its {n} API listeners, which are for proxyless gRPC clients: the Envoy server has no API listener)"
        ),
        (n, tls) => format!(
            " (but its {n} API listeners and the TLS contexts of {tls} clusters, which are for proxyless gRPC clients: the Envoy server has no API listener, nor their bootstrap's certificate providers)"
        ),
    };
    let verdict = envoy_validate(envoy, &bootstrap).await;
    match &verdict {
        Verdict::Accepted => {
            let envoy = envoy.display();
            println!("{label}: valid, and Envoy ({envoy}) accepts it{grpc_only}");
        }
        Verdict::Rejected(why) => println!("{label}: Envoy rejects it:\n{why}"),
        Verdict::Crashed(how) => println!(
            "{label}: Envoy crashed checking it ({how}); that is a fault of Envoy's, not a rejection: try it on a running Envoy"
        ),
    }
    verdict
}
