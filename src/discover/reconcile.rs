//! The discovery loop with `[events]` on: one owner of the facts (the [`Poller`]) takes ECS
//! events from the source task as they come, re-maps the clusters they change and publishes;
//! the full poll (the reconcile) runs every `events.reconcile_interval`, jittered, and counts
//! the endpoints it had to correct. While receiving fails (an error, or no answer within the
//! long poll's wait time and a margin), the poll runs at once and then every
//! `ecs.poll_interval`.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::inventory::{Endpoint, Inventory};

use super::ecs::map_cluster;
use super::events::apply::{self, Applied, Context};
use super::events::decode::Change;
use super::events::source::{self, Batch, Signal};
use super::events::{Event, EventOutcome, Mode, MAX_RECEIVES};
use super::poller::{Poller, SourceId};

/// Longest time between two heartbeats of this replica's queue.
const MAX_HEARTBEAT: Duration = Duration::from_secs(300);

impl Poller {
    /// Applies `events` in order and re-maps the ECS clusters they changed; returns each
    /// event's outcome. Publishing is the caller's: [`Poller::complete_inventory`] has the
    /// result.
    pub async fn apply_events(&mut self, events: &[&Event]) -> Vec<EventOutcome> {
        let Poller {
            settings,
            filter,
            aws,
            ecs,
            ecs_clusters,
            parts,
            ..
        } = self;
        let ctx = Context {
            aws,
            settings: &settings.ecs,
            filter,
        };
        let mut changed = BTreeSet::new();
        let mut outcomes = Vec::with_capacity(events.len());
        for event in events {
            let watched = change_cluster(&event.change)
                .and_then(|c| ecs_clusters.iter().find(|name| c.is(name)));
            let Some(cluster) = watched else {
                outcomes.push(EventOutcome::Ignored);
                continue;
            };
            let outcome = match apply::apply(&ctx, cluster, &event.change, ecs).await {
                Ok(Applied::Changed) => {
                    changed.insert(cluster.clone());
                    EventOutcome::Applied
                }
                Ok(Applied::Unchanged) => EventOutcome::Unchanged,
                Ok(Applied::Stale) => EventOutcome::Stale,
                Ok(Applied::Ignored) => EventOutcome::Ignored,
                Err(e) => {
                    tracing::warn!(event = %event.id, error = %e, "could not apply an ECS event; SQS will deliver it again");
                    EventOutcome::Failed
                }
            };
            outcomes.push(outcome);
        }
        for cluster in changed {
            let facts = &ecs.clusters[&cluster];
            let part = map_cluster(aws.region(), &settings.ecs, filter, &cluster, facts, ecs);
            parts.insert(SourceId::Ecs(cluster), part);
        }
        outcomes
    }

    /// [`Poller::run`] with events: see the module doc.
    pub(crate) async fn run_with_events(
        mut self,
        tx: watch::Sender<Arc<Inventory>>,
        shutdown: impl Future<Output = ()>,
    ) {
        let (signal_tx, mut signals) = mpsc::channel(1);
        let stop = CancellationToken::new();
        let events = self.settings.events.clone();
        let heartbeat = (events.orphan_after / 4).min(MAX_HEARTBEAT);
        let source = tokio::spawn(source::run(
            self.aws.clone(),
            events,
            self.replica.clone(),
            heartbeat,
            signal_tx,
            stop.clone(),
        ));
        // Polling until the queue says it works.
        let mut mode = Mode::Fallback;
        let mut was_up = false;
        self.observe_mode(mode);
        let mut next_poll = Instant::now();
        let mut source_open = true;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep_until(next_poll) => {
                    let before = (mode == Mode::Events).then(|| self.published.clone()).flatten();
                    tokio::select! {
                        _ = &mut shutdown => break,
                        _ = self.poll_and_publish(&tx) => {}
                    }
                    if let Some(before) = before {
                        self.count_corrections(&before);
                    }
                    next_poll = Instant::now() + self.poll_interval(mode);
                }
                signal = signals.recv(), if source_open => match signal {
                    Some(Signal::Batch(batch)) => self.on_batch(batch, &tx).await,
                    Some(Signal::Up(queue)) => {
                        let every = humantime::format_duration(self.settings.events.reconcile_interval);
                        match was_up {
                            false => tracing::info!(%queue, reconcile_every = %every, "event-driven discovery: receiving ECS events"),
                            true => tracing::info!(%queue, reconcile_every = %every, "receiving ECS events again; back to event-driven discovery"),
                        }
                        was_up = true;
                        mode = Mode::Events;
                        self.observe_mode(mode);
                        next_poll = Instant::now() + self.poll_interval(mode);
                    }
                    Some(Signal::Down(e)) => {
                        let every = humantime::format_duration(self.settings.ecs.poll_interval);
                        match mode {
                            Mode::Events => tracing::warn!(error = %e, poll_every = %every, "receiving ECS events failed; polling until it works again"),
                            _ => tracing::warn!(error = %e, poll_every = %every, "cannot receive ECS events; polling until it works"),
                        }
                        mode = Mode::Fallback;
                        self.observe_mode(mode);
                        // Events may have been missed since the last receive: poll now.
                        next_poll = Instant::now();
                    }
                    None => {
                        // The source only ends when stopped; should it end otherwise, poll.
                        source_open = false;
                        mode = Mode::Fallback;
                        self.observe_mode(mode);
                    }
                },
            }
        }
        stop.cancel();
        let _ = source.await;
    }

    fn poll_interval(&self, mode: Mode) -> Duration {
        match mode {
            // Jittered, always earlier: replicas started together do not poll together.
            Mode::Events => self
                .settings
                .events
                .reconcile_interval
                .mul_f64(1.0 - fastrand::f64() / 10.0),
            Mode::Polling | Mode::Fallback => self.settings.ecs.poll_interval,
        }
    }

    fn observe_mode(&self, mode: Mode) {
        if let Some(observer) = &self.observer {
            observer.mode(mode);
        }
    }

    /// After a reconcile poll: what events had missed, counted and logged.
    fn count_corrections(&self, before: &Inventory) {
        let Some(after) = &self.published else {
            return;
        };
        let corrections = corrections(before, after);
        if corrections > 0 {
            tracing::info!(
                corrections,
                "the reconcile poll corrected endpoints that events had missed"
            );
        }
        if let Some(observer) = &self.observer {
            observer.reconciled(corrections);
        }
    }

    /// Applies a batch, publishes, then tells the source which messages it may delete.
    async fn on_batch(&mut self, batch: Batch, tx: &watch::Sender<Arc<Inventory>>) {
        let decoded: Vec<&Event> = batch
            .messages
            .iter()
            .filter_map(|m| m.event.as_ref().ok())
            .collect();
        let mut outcomes = self.apply_events(&decoded).await.into_iter();
        let published = match self.complete_inventory() {
            Some(inventory) => self.publish(tx, inventory),
            None => false,
        };
        if published {
            tracing::debug!("publishing an inventory changed by ECS events");
        }
        let now = SystemTime::now();
        let mut flags = Vec::with_capacity(batch.messages.len());
        for message in &batch.messages {
            let (detail_type, outcome) = match &message.event {
                Err(e) => {
                    tracing::warn!(message = %message.id, error = %e, "undecodable SQS message; deleted");
                    (None, EventOutcome::Undecodable)
                }
                Ok(event) => {
                    let outcome = outcomes.next().expect("one outcome per event");
                    if let (EventOutcome::Applied, Some(time)) = (outcome, event.time) {
                        let lag = now.duration_since(time).unwrap_or_default();
                        if let Some(observer) = &self.observer {
                            observer.event_lag(lag);
                        }
                    }
                    (Some(event.detail_type), outcome)
                }
            };
            let keep = outcome == EventOutcome::Failed && message.receive_count < MAX_RECEIVES;
            if outcome == EventOutcome::Failed && !keep {
                tracing::warn!(message = %message.id, deliveries = message.receive_count, "dropping an ECS event that failed to apply on every delivery; the next reconcile covers it");
            }
            flags.push(!keep);
            if let Some(observer) = &self.observer {
                observer.event(detail_type, outcome);
            }
        }
        let _ = batch.done.send(flags);
    }
}

/// The cluster an event is about.
fn change_cluster(change: &Change) -> Option<&super::events::decode::ClusterRef> {
    match change {
        Change::Task { cluster, .. }
        | Change::Service { cluster, .. }
        | Change::TaskTags { cluster, .. }
        | Change::ContainerInstance { cluster, .. } => Some(cluster),
        Change::Ignored => None,
    }
}

/// Endpoints added, removed or changed from `before` to `after`.
pub(crate) fn corrections(before: &Inventory, after: &Inventory) -> usize {
    fn keyed(inventory: &Inventory) -> BTreeMap<(&str, &str, &str, u16), &Endpoint> {
        inventory
            .clusters
            .iter()
            .flat_map(|(name, c)| {
                c.endpoints.iter().map(move |e| {
                    (
                        (name.as_str(), e.id.as_str(), e.address.as_str(), e.port),
                        e,
                    )
                })
            })
            .collect()
    }
    let (before, after) = (keyed(before), keyed(after));
    let changed = before
        .iter()
        .filter(|(key, e)| after.get(key) != Some(e))
        .count();
    let added = after.keys().filter(|key| !before.contains_key(key)).count();
    changed + added
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{Cluster, Health, Locality, Source};

    fn inventory(endpoints: &[(&str, Health)]) -> Inventory {
        let cluster = Cluster {
            name: "web".into(),
            source: Source::Ecs {
                ecs_cluster: "demo".into(),
                service: "web".into(),
            },
            port_name: None,
            overrides: Default::default(),
            route: Default::default(),
            backends: None,
            endpoints: endpoints
                .iter()
                .map(|(id, health)| Endpoint {
                    address: format!("10.0.0.{}", id.len()),
                    port: 80,
                    health: *health,
                    locality: Locality::default(),
                    weight: 1,
                    id: (*id).into(),
                    revision: None,
                    deployment: None,
                })
                .collect(),
        };
        Inventory {
            clusters: [("web".to_owned(), cluster)].into(),
            warnings: Vec::new(),
            callers: Default::default(),
        }
    }

    #[test]
    fn corrections_count_endpoints_added_removed_and_changed() {
        let before = inventory(&[("a", Health::Healthy), ("bb", Health::Healthy)]);
        assert_eq!(corrections(&before, &before), 0);
        let after = inventory(&[("a", Health::Draining), ("ccc", Health::Healthy)]);
        assert_eq!(
            corrections(&before, &after),
            3,
            "a changed, bb removed, ccc added"
        );
    }
}
