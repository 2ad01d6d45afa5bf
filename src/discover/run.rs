//! [`Poller::run`], discovery's loop: polling every `ecs.poll_interval`, or with `[events]` on,
//! the event-driven loop of `reconcile.rs`.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::watch;

use super::poller::Poller;
use crate::inventory::Inventory;

impl Poller {
    /// Runs until `shutdown` completes, publishing to `tx`: polls every `ecs.poll_interval`,
    /// or, with `[events]` on, applies ECS events as they come and polls every
    /// `events.reconcile_interval` (see [`crate::discover::events`]).
    ///
    /// The channel's initial value is the caller's placeholder: receivers should wait for
    /// `changed()` before trusting it. A poll in progress is abandoned at shutdown.
    pub async fn run(self, tx: watch::Sender<Arc<Inventory>>, shutdown: impl Future<Output = ()>) {
        match self.settings().events_source().cloned() {
            Some(from) => super::reconcile::run(self, from, tx, shutdown).await,
            None => self.run_polling(tx, shutdown).await,
        }
    }
}
