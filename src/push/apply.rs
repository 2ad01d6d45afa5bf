//! What the synthesis loop does with each push command.
//!
//! A PUT is synthesized with the last complete inventory first; if the node type's merged
//! snapshot would have a dangling reference the push is refused and nothing changes. Then it
//! is persisted, and only then published: a push Envoy has seen is always one a restart
//! reloads. A failed write also leaves everything as it was.

use std::sync::Arc;

use super::store::{PersistedStore, StoreError, Stored};
use super::{PushCommand, PutOutcome, Refused};
use crate::discover::Inventory;
use crate::snapshot::{InconsistentSnapshot, Snapshot};
use crate::synthesize::{Synthesis, Synthesizer};

/// The persisted pushes, owned by the synthesis loop (the only writer, so commands apply in
/// order and never interleave with a synthesis).
#[derive(Debug)]
pub struct Pushes {
    store: PersistedStore,
}

impl Pushes {
    /// Opens the state directory and loads every persisted push.
    pub fn open(dir: &std::path::Path) -> Result<Pushes, StoreError> {
        Ok(Pushes {
            store: PersistedStore::open(dir)?,
        })
    }

    /// The persisted pushes.
    pub fn store(&self) -> &PersistedStore {
        &self.store
    }

    /// Gives `synthesizer` every persisted push (at start, before the first synthesis).
    pub fn load_into(&self, synthesizer: &mut Synthesizer) {
        for (node_type, stored) in self.store.iter() {
            synthesizer.set_pushed(node_type, Some(stored.resources.clone()));
        }
    }

    /// Handles one command. `inventory` is the last complete one (`None` before the first). An
    /// accepted PUT or DELETE hands its synthesis to `publish` before the reply is sent.
    pub fn handle(
        &mut self,
        command: PushCommand,
        synthesizer: &mut Synthesizer,
        inventory: Option<&Inventory>,
        publish: impl FnOnce(Synthesis),
    ) {
        match command {
            PushCommand::Get { node_type, reply } => {
                let _ = reply.send(self.store.get(&node_type).map(|s| s.body.clone()));
            }
            PushCommand::Put {
                node_type,
                body,
                resources,
                reply,
            } => {
                let resources = Arc::new(resources);
                let stored = Stored {
                    body,
                    resources: resources.clone(),
                };
                let outcome = self.put(&node_type, stored, synthesizer, inventory, publish);
                if let Err(e) = &outcome {
                    tracing::warn!(%node_type, version = ?resources.version, error = %e, "push refused");
                }
                let _ = reply.send(outcome);
            }
            PushCommand::Delete { node_type, reply } => {
                let outcome = self.delete(&node_type, synthesizer, inventory, publish);
                let _ = reply.send(outcome);
            }
        }
    }

    fn put(
        &mut self,
        node_type: &str,
        stored: Stored,
        synthesizer: &mut Synthesizer,
        inventory: Option<&Inventory>,
        publish: impl FnOnce(Synthesis),
    ) -> Result<PutOutcome, Refused> {
        let Some(inventory) = inventory else {
            return Err(Refused::NotReady);
        };
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
        if let Err(e) = self.store.put(node_type, stored) {
            synthesizer.set_pushed(node_type, previous);
            return Err(Refused::Persist(e));
        }
        let warnings = synthesis
            .findings
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
        publish(synthesis);
        Ok(PutOutcome {
            version: resources.version.clone(),
            counts: resources.counts(),
            warnings,
        })
    }

    /// Removing a push cannot leave a dangling reference (templates are consistent alone), so
    /// a DELETE is refused only when nothing was pushed or the file cannot be removed. A node
    /// type with no template is then served an empty snapshot: Envoy drops what was pushed.
    fn delete(
        &mut self,
        node_type: &str,
        synthesizer: &mut Synthesizer,
        inventory: Option<&Inventory>,
        publish: impl FnOnce(Synthesis),
    ) -> Result<(), Refused> {
        match self.store.delete(node_type) {
            Ok(true) => {}
            Ok(false) => return Err(Refused::NotFound(node_type.to_owned())),
            Err(e) => return Err(Refused::Persist(e)),
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
