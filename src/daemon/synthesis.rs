//! The synthesis stage: the one owner of the synthesizer, the persisted pushes and the cache's
//! publisher. Each event (a new inventory, a push command, a reload) is one method, applied in
//! the order they arrive, so a push never interleaves with a synthesis.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::reload::Reloader;
use super::Readiness;
use crate::admin::changes::{Change, ChangeKind, ChangeLog, Outcome};
use crate::cache::{NodeTypeSnapshots, Publisher};
use crate::inventory::{Inventory, InventoryDiff};
use crate::push::{PushCommand, Pushes};
use crate::synthesize::{Synthesis, Synthesizer, Warning};

/// What the startup line says once the first inventory is in.
pub(super) struct FirstLine {
    pub xds: SocketAddr,
    pub admin: SocketAddr,
    pub sources: String,
    /// The node types of the templates at start.
    pub node_types: Vec<String>,
}

pub(super) struct SynthesisStage {
    synthesizer: Synthesizer,
    publisher: Publisher,
    pushes: Option<Pushes>,
    readiness: Readiness,
    reloader: Reloader,
    /// The last complete inventory (`None` before the first).
    last: Option<Arc<Inventory>>,
    /// Findings of the last synthesis, so each is logged when it appears, not every time.
    warnings: Vec<Warning>,
    /// What each event changed, for `/changes` and `/ui`.
    changes: Arc<ChangeLog>,
}

impl SynthesisStage {
    pub fn new(
        synthesizer: Synthesizer,
        publisher: Publisher,
        pushes: Option<Pushes>,
        readiness: Readiness,
        reloader: Reloader,
    ) -> Self {
        SynthesisStage {
            synthesizer,
            publisher,
            pushes,
            readiness,
            reloader,
            last: None,
            warnings: Vec::new(),
            changes: Arc::default(),
        }
    }

    /// Records what each event changed into `changes`.
    pub fn with_changes(mut self, changes: Arc<ChangeLog>) -> Self {
        self.changes = changes;
        self
    }

    /// Applies events until `stop`.
    pub async fn run(
        mut self,
        first_line: FirstLine,
        mut inventories: watch::Receiver<Arc<Inventory>>,
        mut push_commands: mpsc::Receiver<PushCommand>,
        mut reloads: mpsc::Receiver<()>,
        stop: CancellationToken,
    ) {
        let mut first_line = Some(first_line);
        let mut discovery_open = true;
        loop {
            tokio::select! {
                changed = inventories.changed(), if discovery_open => {
                    if changed.is_err() {
                        // The discovery stage ended; supervision reports it. Keep serving
                        // pushes and reloads until stopped.
                        discovery_open = false;
                        continue;
                    }
                    let inventory = inventories.borrow_and_update().clone();
                    if let Some(line) = first_line.take() {
                        self.log_first_line(&line, &inventory);
                    }
                    self.on_inventory(inventory).await;
                }
                Some(command) = push_commands.recv() => self.on_push(command).await,
                Some(()) = reloads.recv() => self.on_reload(),
                _ = stop.cancelled() => return,
            }
        }
    }

    fn log_first_line(&self, line: &FirstLine, inventory: &Inventory) {
        tracing::info!(
            xds = %line.xds,
            admin = %line.admin,
            sources = %line.sources,
            node_types = ?line.node_types,
            clusters = inventory.clusters.len(),
            endpoints = inventory.endpoint_count(),
            "ecs-xds running: first complete inventory"
        );
    }

    /// A new complete inventory: synthesize and publish it; the first makes the daemon ready.
    /// Before the shared push store is first read, it is only kept: publishing without the
    /// pushes would take them away from every Envoy.
    async fn on_inventory(&mut self, inventory: Arc<Inventory>) {
        let diff = InventoryDiff::between(self.last.as_deref(), &inventory);
        self.last = Some(inventory.clone());
        if !self.pushes.as_ref().is_none_or(Pushes::loaded) {
            tracing::info!("holding the first snapshots until the shared push store is read");
            return;
        }
        let synthesis = self.synthesizer.synthesize(&inventory);
        let outcome = match diff.is_empty() {
            true => Outcome::Unchanged,
            false => Outcome::Published,
        };
        let published = self.publish(synthesis);
        (self.changes).record(with_refusal(Change::inventory(diff, outcome), published));
        self.readiness.first_inventory_published().await;
    }

    /// A push command: from the admin API, or a listing of the shared store (with push
    /// disabled there are none).
    async fn on_push(&mut self, command: PushCommand) {
        let Some(pushes) = self.pushes.as_mut() else {
            return;
        };
        let what = push_summary(&command);
        let Self {
            synthesizer,
            publisher,
            readiness,
            warnings,
            last,
            changes,
            ..
        } = self;
        let mut outcome = None;
        let published = pushes.handle(command, synthesizer, last.as_deref(), |synthesis| {
            outcome = Some(publish(publisher, readiness, warnings, synthesis));
        });
        published.await;
        if let (Some(what), Some(outcome)) = (what, outcome) {
            let change = Change::new(ChangeKind::Push, Outcome::Published, what);
            changes.record(with_refusal(change, outcome));
        }
        // The shared store's first listing is what the held inventory waited for.
        if pushes.loaded() && last.is_some() {
            readiness.first_inventory_published().await;
        }
    }

    /// SIGHUP or a changed file: re-read the templates; a failed reload keeps the running ones.
    fn on_reload(&mut self) {
        let stats = &self.readiness.stats;
        match self
            .reloader
            .reload(&mut self.synthesizer, self.last.as_deref())
        {
            Ok(synthesis) => {
                stats.reload_ok();
                let dir = self.reloader.templates_dir();
                tracing::info!(dir = %dir.display(), "templates reloaded");
                let summary = format!("templates reloaded from {}", dir.display());
                let change = match synthesis {
                    Some(synthesis) => {
                        let published = self.publish(synthesis);
                        let change = Change::new(ChangeKind::Reload, Outcome::Published, summary);
                        with_refusal(change, published)
                    }
                    None => Change::new(ChangeKind::Reload, Outcome::Unchanged, summary),
                };
                self.changes.record(change);
            }
            Err(e) => {
                stats.reload_failed(e.reason());
                tracing::error!("{e}");
                let summary = "template reload failed; the running templates stay";
                let change = Change::new(ChangeKind::Reload, Outcome::Failed, summary);
                self.changes.record(change.with_error(e.to_string()));
            }
        }
    }

    fn publish(&mut self, synthesis: Synthesis) -> Result<(), String> {
        publish(
            &self.publisher,
            &self.readiness,
            &mut self.warnings,
            synthesis,
        )
    }
}

/// `change`, failed with the refusal if publishing was refused.
fn with_refusal(change: Change, published: Result<(), String>) -> Change {
    match published {
        Ok(()) => change,
        Err(e) => Change {
            outcome: Outcome::Failed,
            ..change
        }
        .with_error(e),
    }
}

/// What a push command changes, for the change log; `None` for one that changes nothing.
fn push_summary(command: &PushCommand) -> Option<String> {
    match command {
        PushCommand::Put { node_type, .. } => Some(format!("resources pushed to {node_type}")),
        PushCommand::Delete { node_type, .. } => Some(format!("push removed from {node_type}")),
        PushCommand::Refresh(_) => Some("pushes read from the shared store".into()),
        PushCommand::Get { .. } => None,
    }
}

/// Publishes every node type's snapshot of `synthesis`, logging its new warnings. A snapshot
/// the cache refuses keeps what is being served and is logged; the first refusal is returned.
fn publish(
    publisher: &Publisher,
    readiness: &Readiness,
    known_warnings: &mut Vec<Warning>,
    synthesis: Synthesis,
) -> Result<(), String> {
    readiness.stats.synthesized();
    for warning in &synthesis.warnings {
        if !known_warnings.contains(warning) {
            tracing::warn!(node_type = %warning.node_type, "{warning}");
        }
    }
    *known_warnings = synthesis.warnings;
    let mut refused = None;
    let mut places = synthesis.places;
    let mut backend_sets = synthesis.backend_sets;
    for (node_type, snapshot) in synthesis.snapshots {
        let sets = backend_sets.remove(&node_type).unwrap_or_default();
        let snapshots = NodeTypeSnapshots {
            plain: snapshot,
            places: places.remove(&node_type).unwrap_or_default(),
            backend_sets: (sets.sets.into_iter())
                .map(|(key, set)| (key, (set.snapshot, set.places)))
                .collect(),
            callers: sets.callers,
        };
        if let Err(e) = publisher.publish_all(&node_type, snapshots) {
            tracing::error!(%node_type, error = %e, "snapshot refused; still serving the previous one");
            refused.get_or_insert(format!("node type {node_type}: {e}"));
        }
    }
    refused.map_or(Ok(()), Err)
}
