//! What the synthesis loop does with each push command.
//!
//! A PUT is synthesized with the last complete inventory first; if the node type's merged
//! snapshot would have a dangling reference the push is refused and nothing changes. Then it
//! is persisted, and only then published: a push Envoy has seen is always one a restart
//! reloads. A failed write also leaves everything as it was.

use std::sync::Arc;

use super::objects::ObjectStore;
use super::shared::{Refresh, Refresher, S3Store, WriteRefused};
use super::store::{DirStore, StoreError, Stored};
use super::{PushCommand, PutOutcome, Refused};
use crate::inventory::Inventory;
use crate::snapshot::{InconsistentSnapshot, Snapshot};
use crate::synthesize::{Synthesis, Synthesizer};

/// The persisted pushes, owned by the synthesis loop (the only writer, so commands apply in
/// order and never interleave with a synthesis).
#[derive(Debug)]
pub struct Pushes {
    store: Store,
}

/// Where pushes are kept.
#[derive(Debug)]
enum Store {
    /// `push.state_dir`, this replica's own.
    Local(DirStore),
    /// `push.store.s3`, shared by every replica.
    Shared(S3Store),
}

impl Pushes {
    /// Opens the state directory and loads every persisted push.
    pub fn open(dir: &std::path::Path) -> Result<Pushes, StoreError> {
        Ok(Pushes {
            store: Store::Local(DirStore::open(dir)?),
        })
    }

    /// Pushes kept in `objects`, shared with every replica; nothing is held until the
    /// [`Refresher`]'s first listing arrives (see [`Pushes::loaded`]).
    pub fn shared(
        objects: Arc<dyn ObjectStore>,
        refresh_interval: std::time::Duration,
    ) -> (Pushes, Refresher) {
        let store = S3Store::new(objects);
        let refresher = store.refresher(refresh_interval);
        let store = Store::Shared(store);
        (Pushes { store }, refresher)
    }

    /// Whether the pushes are known: always for the local store; for the shared one once it
    /// has been listed. Nothing should be published before.
    pub fn loaded(&self) -> bool {
        match &self.store {
            Store::Local(_) => true,
            Store::Shared(shared) => shared.loaded(),
        }
    }

    /// Where the pushes are kept, for the startup log.
    pub fn location(&self) -> String {
        match &self.store {
            Store::Local(local) => local.dir().display().to_string(),
            Store::Shared(shared) => shared.location(),
        }
    }

    /// Every (node type, push) held, in name order.
    pub fn iter(&self) -> Box<dyn Iterator<Item = (&str, &Stored)> + '_> {
        match &self.store {
            Store::Local(local) => Box::new(local.iter()),
            Store::Shared(shared) => Box::new(shared.iter()),
        }
    }

    fn get(&self, node_type: &str) -> Option<&Stored> {
        match &self.store {
            Store::Local(local) => local.get(node_type),
            Store::Shared(shared) => shared.get(node_type),
        }
    }

    /// Gives `synthesizer` every persisted push (at start, before the first synthesis).
    pub fn load_into(&self, synthesizer: &mut Synthesizer) {
        for (node_type, stored) in self.iter() {
            synthesizer.set_pushed(node_type, Some(stored.resources.clone()));
        }
    }

    /// Handles one command. `inventory` is the last complete one (`None` before the first). An
    /// accepted PUT or DELETE hands its synthesis to `publish` before the reply is sent.
    pub async fn handle(
        &mut self,
        command: PushCommand,
        synthesizer: &mut Synthesizer,
        inventory: Option<&Inventory>,
        publish: impl FnOnce(Synthesis),
    ) {
        match command {
            PushCommand::Get { node_type, reply } => {
                let _ = reply.send(self.get(&node_type).cloned());
            }
            PushCommand::Put {
                node_type,
                body,
                resources,
                if_match,
                reply,
            } => {
                let resources = Arc::new(resources);
                let stored = Stored {
                    body,
                    resources: resources.clone(),
                };
                let put = self.put(
                    &node_type,
                    stored,
                    if_match.as_deref(),
                    synthesizer,
                    inventory,
                );
                let outcome = put.await.map(|(outcome, synthesis)| {
                    publish(synthesis);
                    outcome
                });
                if let Err(e) = &outcome {
                    tracing::warn!(%node_type, version = ?resources.version, error = %e, "push refused");
                }
                let _ = reply.send(outcome);
            }
            PushCommand::Delete { node_type, reply } => {
                let outcome = self.delete(&node_type, synthesizer, inventory, publish);
                let _ = reply.send(outcome.await);
            }
            PushCommand::Refresh(refresh) => self.refresh(refresh, synthesizer, inventory, publish),
        }
    }

    /// Checks, persists and returns the PUT's synthesis for publishing.
    async fn put(
        &mut self,
        node_type: &str,
        stored: Stored,
        if_match: Option<&str>,
        synthesizer: &mut Synthesizer,
        inventory: Option<&Inventory>,
    ) -> Result<(PutOutcome, Synthesis), Refused> {
        let Some(inventory) = inventory else {
            return Err(Refused::NotReady);
        };
        if let Some(wanted) = if_match {
            if !self.get(node_type).is_some_and(|held| held.matches(wanted)) {
                return Err(Refused::Changed(node_type.to_owned()));
            }
        }
        let etag = stored.etag();
        let resources = stored.resources.clone();
        let previous = synthesizer.set_pushed(node_type, Some(resources.clone()));
        let synthesis = synthesizer.synthesize(inventory);
        if let Err(e) = check(&synthesis, node_type) {
            synthesizer.set_pushed(node_type, previous);
            return Err(Refused::Inconsistent {
                path: resources.locate(&e),
                source: e,
            });
        }
        let persisted = match &mut self.store {
            Store::Local(local) => local.put(node_type, stored).map_err(Refused::Persist),
            Store::Shared(shared) => (shared.put(node_type, stored, if_match.is_some()).await)
                .map_err(|e| e.refusal(node_type)),
        };
        if let Err(e) = persisted {
            synthesizer.set_pushed(node_type, previous);
            return Err(e);
        }
        let warnings = synthesis
            .warnings
            .iter()
            .filter(|f| f.node_type == node_type)
            .map(|f| f.to_string())
            .collect();
        tracing::info!(
            %node_type,
            version = ?resources.version,
            counts = ?resources.counts(),
            "push accepted"
        );
        let outcome = PutOutcome {
            version: resources.version.clone(),
            etag,
            counts: resources.counts(),
            warnings,
        };
        Ok((outcome, synthesis))
    }

    /// Removing a push cannot leave a dangling reference (templates are consistent alone), so
    /// a DELETE is refused only when nothing was pushed or the file cannot be removed. A node
    /// type with no template is then served an empty snapshot: Envoy drops what was pushed.
    async fn delete(
        &mut self,
        node_type: &str,
        synthesizer: &mut Synthesizer,
        inventory: Option<&Inventory>,
        publish: impl FnOnce(Synthesis),
    ) -> Result<(), Refused> {
        let deleted = match &mut self.store {
            Store::Local(local) => local.delete(node_type).map_err(Refused::Persist),
            Store::Shared(shared) => shared
                .delete(node_type)
                .await
                .map_err(|e| e.refusal(node_type)),
        };
        if !deleted? {
            return Err(Refused::NotFound(node_type.to_owned()));
        }
        synthesizer.set_pushed(node_type, None);
        tracing::info!(%node_type, "push deleted");
        if let Some(inventory) = inventory {
            let mut synthesis = synthesizer.synthesize(inventory);
            synthesis
                .snapshots
                .entry(node_type.to_owned())
                .or_insert_with(|| Snapshot::builder().build());
            publish(synthesis);
        }
        Ok(())
    }

    /// Another replica's pushes, from a listing of the shared store: each change goes to the
    /// synthesizer, and one synthesis is published (always after the first listing, which
    /// is what lets the daemon publish at all).
    fn refresh(
        &mut self,
        refresh: Refresh,
        synthesizer: &mut Synthesizer,
        inventory: Option<&Inventory>,
        publish: impl FnOnce(Synthesis),
    ) {
        let Store::Shared(shared) = &mut self.store else {
            return;
        };
        let first = !shared.loaded();
        let changes = shared.apply(refresh);
        for (node_type, stored) in &changes {
            let action = if stored.is_some() {
                "changed"
            } else {
                "deleted"
            };
            tracing::info!(%node_type, "shared push {action} (by another replica)");
            synthesizer.set_pushed(node_type, stored.as_ref().map(|s| s.resources.clone()));
        }
        if let (Some(inventory), true) = (inventory, first || !changes.is_empty()) {
            let mut synthesis = synthesizer.synthesize(inventory);
            for (node_type, _) in changes {
                // A node type whose push went and that has no template gets an empty snapshot.
                synthesis
                    .snapshots
                    .entry(node_type)
                    .or_insert_with(|| Snapshot::builder().build());
            }
            publish(synthesis);
        }
    }
}

impl WriteRefused {
    fn refusal(self, node_type: &str) -> Refused {
        match self {
            WriteRefused::Changed => Refused::Changed(node_type.to_owned()),
            WriteRefused::Unavailable(e) => Refused::Unavailable(e),
        }
    }
}

/// The node type's merged snapshot has no dangling reference, and none was papered over.
fn check(synthesis: &Synthesis, node_type: &str) -> Result<(), InconsistentSnapshot> {
    if let Some((_, e)) = synthesis.dangling.iter().find(|(n, _)| n == node_type) {
        return Err(e.clone());
    }
    match synthesis.snapshots.get(node_type) {
        Some(snapshot) => snapshot.check_consistency(),
        None => Ok(()),
    }
}
