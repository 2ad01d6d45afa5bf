//! The discovery loop with `[events]` on: one owner of the facts (the [`Poller`]) takes ECS
//! events from the source task as they come, re-maps the clusters they change and publishes;
//! the full poll (the reconcile) runs every `events.reconcile_interval`, jittered, and counts
//! the endpoints it had to correct. While receiving fails (an error, or no answer within the
//! long poll's wait time and a margin), the poll runs at once and then every
//! `ecs.poll_interval`.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::inventory::{Endpoint, Inventory};

use crate::aws::AwsError;
use crate::settings::EventsSource;

use super::events::source::{self, Batch, Signal};
use super::events::{Event, EventOutcome, Mode, MAX_RECEIVES};
use super::poller::Poller;

/// Longest time between two heartbeats of this replica's queue.
const MAX_HEARTBEAT: Duration = Duration::from_secs(300);

/// The event-driven loop: the poller (the one owner of the facts), and the mode it is in.
struct EventLoop {
    poller: Poller,
    mode: Mode,
    /// Whether receiving has worked once (for the log).
    was_up: bool,
    /// When the next full poll is due.
    next_poll: Instant,
}

/// [`Poller::run`] with events: see the module doc.
pub(super) async fn run(
    poller: Poller,
    from: EventsSource,
    tx: watch::Sender<Arc<Inventory>>,
    shutdown: impl Future<Output = ()>,
) {
    let (signal_tx, mut signals) = mpsc::channel(1);
    let stop = CancellationToken::new();
    let events = poller.settings().events.clone();
    let heartbeat = (events.orphan_after / 4).min(MAX_HEARTBEAT);
    let source = tokio::spawn(source::run(
        poller.aws().clone(),
        (events, from),
        poller.replica().clone(),
        heartbeat,
        signal_tx,
        stop.clone(),
    ));
    // Polling until the queue says it works.
    let mut event_loop = EventLoop {
        poller,
        mode: Mode::Fallback,
        was_up: false,
        next_poll: Instant::now(),
    };
    event_loop.observe_mode();
    let mut source_open = true;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep_until(event_loop.next_poll) => {
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = event_loop.poll(&tx) => {}
                }
            }
            signal = signals.recv(), if source_open => match signal {
                Some(Signal::Batch(batch)) => event_loop.on_batch(batch, &tx).await,
                Some(Signal::Up(queue)) => event_loop.up(&queue),
                Some(Signal::Down(e)) => event_loop.down(&e),
                None => {
                    // The source only ends when stopped; should it end otherwise, poll.
                    source_open = false;
                    event_loop.mode = Mode::Fallback;
                    event_loop.observe_mode();
                }
            },
        }
    }
    stop.cancel();
    let _ = source.await;
}

impl EventLoop {
    /// The full poll: a reconcile (what events missed is counted) or a fallback poll.
    async fn poll(&mut self, tx: &watch::Sender<Arc<Inventory>>) {
        let reconcile = self.mode == Mode::Events;
        let before = reconcile
            .then(|| self.poller.published().cloned())
            .flatten();
        self.poller.poll_and_publish(tx).await;
        if let Some(before) = before {
            self.count_corrections(&before);
        }
        self.next_poll = Instant::now() + self.poll_interval(self.mode);
    }

    /// Receiving works (the first time, or again).
    fn up(&mut self, queue: &str) {
        let every = humantime::format_duration(self.poller.settings().events.reconcile_interval);
        match self.was_up {
            false => {
                tracing::info!(%queue, reconcile_every = %every, "event-driven discovery: receiving ECS events")
            }
            true => {
                tracing::info!(%queue, reconcile_every = %every, "receiving ECS events again; back to event-driven discovery")
            }
        }
        self.was_up = true;
        self.mode = Mode::Events;
        self.observe_mode();
        self.next_poll = Instant::now() + self.poll_interval(self.mode);
    }

    /// Receiving failed (an error, or no answer in time): poll until it works again.
    fn down(&mut self, error: &AwsError) {
        let every = humantime::format_duration(self.poller.settings().ecs.poll_interval);
        match self.mode {
            Mode::Events => {
                tracing::warn!(%error, poll_every = %every, "receiving ECS events failed; polling until it works again")
            }
            _ => {
                tracing::warn!(%error, poll_every = %every, "cannot receive ECS events; polling until it works")
            }
        }
        self.mode = Mode::Fallback;
        self.observe_mode();
        // Events may have been missed since the last receive: poll now.
        self.next_poll = Instant::now();
    }

    fn poll_interval(&self, mode: Mode) -> Duration {
        let settings = self.poller.settings();
        match mode {
            // Jittered, always earlier: replicas started together do not poll together.
            Mode::Events => {
                (settings.events.reconcile_interval).mul_f64(1.0 - fastrand::f64() / 10.0)
            }
            Mode::Polling | Mode::Fallback => settings.ecs.poll_interval,
        }
    }

    fn observe_mode(&self) {
        if let Some(observer) = self.poller.observer() {
            observer.mode(self.mode);
        }
    }

    /// After a reconcile poll: what events had missed, counted and logged.
    fn count_corrections(&self, before: &Inventory) {
        let Some(after) = self.poller.published() else {
            return;
        };
        let corrections = corrections(before, after);
        if corrections > 0 {
            tracing::info!(
                corrections,
                "the reconcile poll corrected endpoints that events had missed"
            );
        }
        if let Some(observer) = self.poller.observer() {
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
        let mut outcomes = self.poller.apply_events(&decoded).await.into_iter();
        let published = match self.poller.complete_inventory() {
            Some(inventory) => self.poller.publish(tx, inventory),
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
                        if let Some(observer) = self.poller.observer() {
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
            if let Some(observer) = self.poller.observer() {
                observer.event(detail_type, outcome);
            }
        }
        let _ = batch.done.send(flags);
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
            security: Default::default(),
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
