//! The poller: every `ecs.poll_interval`, polls each source (each ECS cluster, each Cloud Map
//! namespace) and publishes the whole [`Inventory`] when it changed.
//!
//! Fail static: a source whose poll fails keeps its last good part, and the failure is logged
//! with the AWS operation and error. Nothing is published until every source has succeeded once,
//! so a failure is never mistaken for "zero tasks"; a successful poll that finds zero tasks is
//! real and is published.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::aws::Aws;
use crate::inventory::Inventory;
use crate::problem::{Problem, Problems};
use crate::settings::DiscoverConfig;

use futures_util::future::join_all;

use super::assemble::assemble;
use super::ecs::map_cluster;
use super::events::apply::{self, Applied, Context};
use super::events::decode::{Change, ClusterRef};
use super::events::{local_replica_id, DetailType, Event, EventOutcome, Mode};
use super::scopes::{PartId, ScopeState};
use super::DiscoverError;

/// The outcome of one [`Poller::poll`].
#[derive(Debug, Clone, PartialEq)]
pub struct PollReport {
    /// Fresh parts where this poll succeeded and the last good parts where it failed. `None`
    /// while some source has never succeeded.
    pub inventory: Option<Inventory>,
    /// One error per source that failed in this poll.
    pub errors: Vec<DiscoverError>,
}

/// Polls AWS and remembers what fail-static and call efficiency need between polls.
pub struct Poller {
    pub(crate) settings: DiscoverConfig,
    /// The standard chain's clients: the default scope's, the events queue's, and what every
    /// other scope's clients are made from.
    pub(crate) aws: Aws,
    /// Every (account, region) watched, in priority order.
    pub(crate) scopes: Vec<ScopeState>,
    pub(crate) published: Option<Arc<Inventory>>,
    pub(crate) observer: Option<Observer>,
    /// Names this replica's own events queue.
    pub(crate) replica: Arc<str>,
}

/// What one poll cycle looked like, for metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PollCycle {
    pub duration: std::time::Duration,
    /// Sources (ECS clusters, Cloud Map namespaces, ListClusters) that failed in this cycle.
    pub failed_sources: usize,
}

/// What discovery reports as it works; the metrics layer records it. Every method does nothing
/// unless implemented.
pub trait Observe: Send + Sync {
    /// A poll cycle over every source ended.
    fn poll_cycle(&self, _cycle: PollCycle) {}
    /// A message was received: its event's detail type (`None` when undecodable) and outcome.
    fn event(&self, _detail_type: Option<DetailType>, _outcome: EventOutcome) {}
    /// An applied event's change was published, `lag` after the event's time.
    fn event_lag(&self, _lag: Duration) {}
    /// A reconcile poll (events on) added, removed or changed `corrections` endpoints.
    fn reconciled(&self, _corrections: usize) {}
    /// Discovery is now in `mode`.
    fn mode(&self, _mode: Mode) {}
    /// After each poll: the sources (`account/region`) that have never been discovered in
    /// full, so nothing is published yet.
    fn undiscovered(&self, _sources: &[String]) {}
}

/// The observer [`Poller::with_observer`] takes.
pub type Observer = Arc<dyn Observe>;

impl Poller {
    /// A poller of checked settings; no AWS call is made yet.
    pub fn new(settings: DiscoverConfig, aws: Aws) -> Result<Self, DiscoverError> {
        if settings.events_source().is_some() && !aws.has_event_clients() {
            let problem = Problem::at("events.enabled", "these AWS clients have no SQS/SNS client");
            return Err(DiscoverError::Settings(Problems(vec![problem])));
        }
        let scopes = settings.scopes().into_iter();
        let scopes = scopes.map(|scope| ScopeState::new(scope, &settings, None));
        Ok(Self {
            scopes: scopes.collect(),
            settings,
            aws,
            published: None,
            observer: None,
            replica: local_replica_id().into(),
        })
    }

    /// Names this replica `id` (its events queue is `{queue_prefix}{id}-{start}`); by default
    /// host name and pid.
    pub fn with_replica(mut self, id: Arc<str>) -> Self {
        self.replica = id;
        self
    }

    /// Reports poll cycles, events and the mode to `observer`.
    pub fn with_observer(mut self, observer: Observer) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Polls every source once, the scopes (accounts and regions) side by side: each has its
    /// own ECS quota.
    pub async fn poll(&mut self) -> PollReport {
        let several = self.scopes.len() > 1;
        let (base, settings) = (&self.aws, &self.settings);
        let polls = self.scopes.iter_mut().map(|scope| async move {
            let mut errors = Vec::new();
            scope.poll(base, settings, &mut errors).await;
            let errors = errors.into_iter();
            errors
                .map(|e| in_scope(scope, e, several))
                .collect::<Vec<_>>()
        });
        let errors: Vec<DiscoverError> = join_all(polls).await.into_iter().flatten().collect();
        for e in &errors {
            tracing::error!(error = %e, "discovery failed; the failed sources keep their last good part");
        }
        if let Some(observer) = &self.observer {
            observer.undiscovered(&self.undiscovered());
        }
        PollReport {
            inventory: self.complete_inventory(),
            errors,
        }
    }

    /// The scopes some cluster or namespace of which has never been polled successfully.
    pub fn undiscovered(&self) -> Vec<String> {
        let incomplete = self.scopes.iter().filter(|s| !s.complete());
        incomplete.map(|s| s.label.clone()).collect()
    }

    /// Every source's part in priority order, or `None` if some source has none yet.
    pub fn complete_inventory(&self) -> Option<Inventory> {
        if !self.scopes.iter().all(ScopeState::complete) {
            return None;
        }
        let parts = (self.scopes.iter()).flat_map(|scope| {
            scope
                .order()
                .map(move |id| (scope.label.as_str(), &scope.parts[&id]))
        });
        Some(assemble(parts, self.settings.ecs.merge))
    }

    /// Polls once and publishes the inventory if it is complete and differs from the last one
    /// published (the first complete one is always published). Returns whether it published.
    pub async fn poll_and_publish(&mut self, tx: &watch::Sender<Arc<Inventory>>) -> bool {
        let started = std::time::Instant::now();
        let report = self.poll().await;
        if let Some(observer) = &self.observer {
            observer.poll_cycle(PollCycle {
                duration: started.elapsed(),
                failed_sources: report.errors.len(),
            });
        }
        let Some(inventory) = report.inventory else {
            tracing::warn!("not publishing: some source has never been discovered successfully");
            return false;
        };
        let published = self.publish(tx, inventory);
        if let (true, Some(inventory)) = (published, &self.published) {
            tracing::info!(
                clusters = inventory.clusters.len(),
                endpoints = inventory.endpoint_count(),
                warnings = inventory.warnings.len(),
                "publishing a changed inventory"
            );
        }
        published
    }

    /// Publishes `inventory` if it differs from the last one published; returns whether it did.
    pub(crate) fn publish(
        &mut self,
        tx: &watch::Sender<Arc<Inventory>>,
        inventory: Inventory,
    ) -> bool {
        if self.published.as_deref() == Some(&inventory) {
            return false;
        }
        let inventory = Arc::new(inventory);
        // Each warning (a bad tag, a name collision) once, when it appears.
        let known = self.published.as_ref().map(|p| &p.warnings);
        for warning in &inventory.warnings {
            if known.is_none_or(|k| !k.contains(warning)) {
                tracing::warn!("{warning}");
            }
        }
        self.published = Some(inventory.clone());
        // send_replace: publishing must not depend on a receiver being alive.
        tx.send_replace(inventory);
        true
    }

    pub(crate) fn settings(&self) -> &DiscoverConfig {
        &self.settings
    }

    pub(crate) fn aws(&self) -> &Aws {
        &self.aws
    }

    pub(crate) fn replica(&self) -> &Arc<str> {
        &self.replica
    }

    /// The last inventory published.
    pub(crate) fn published(&self) -> Option<&Arc<Inventory>> {
        self.published.as_ref()
    }

    pub(crate) fn observer(&self) -> Option<&Observer> {
        self.observer.as_ref()
    }

    /// Applies `events` in order and re-maps the ECS clusters they changed; returns each
    /// event's outcome. Publishing is the caller's: [`Poller::complete_inventory`] has the
    /// result.
    pub async fn apply_events(&mut self, events: &[&Event]) -> Vec<EventOutcome> {
        let Poller {
            settings, scopes, ..
        } = self;
        let filter = settings.filter();
        let mut changed = BTreeSet::new();
        let mut outcomes = Vec::with_capacity(events.len());
        for event in events {
            let Some((i, cluster)) = watching(scopes, &event.change) else {
                outcomes.push(EventOutcome::Ignored);
                continue;
            };
            let scope = &mut scopes[i];
            let Some(aws) = &scope.aws else {
                outcomes.push(EventOutcome::Ignored);
                continue;
            };
            let ctx = Context {
                aws,
                settings: &settings.ecs,
                filter,
            };
            let outcome = match apply::apply(&ctx, &cluster, &event.change, &mut scope.ecs).await {
                Ok(Applied::Changed) => {
                    changed.insert((i, cluster));
                    EventOutcome::Applied
                }
                Ok(Applied::Unchanged) => EventOutcome::Unchanged,
                Ok(Applied::Stale) => EventOutcome::Stale,
                Ok(Applied::Ignored) => EventOutcome::Ignored,
                Err(e) => {
                    tracing::warn!(event = %event.id, source = %scope.label, error = %e, "could not apply an ECS event; SQS will deliver it again");
                    EventOutcome::Failed
                }
            };
            outcomes.push(outcome);
        }
        for (i, cluster) in changed {
            let scope = &mut scopes[i];
            let aws = scope.aws.as_ref().expect("an event was applied with them");
            let origin = (aws.account().unwrap_or_default(), aws.region());
            let facts = &scope.ecs.clusters[&cluster];
            let part = map_cluster(origin, &settings.ecs, filter, &cluster, facts, &scope.ecs);
            scope.parts.insert(PartId::Ecs(cluster), part);
        }
        outcomes
    }

    /// The loop without events: polls every `ecs.poll_interval` until `shutdown`.
    pub(super) async fn run_polling(
        mut self,
        tx: watch::Sender<Arc<Inventory>>,
        shutdown: impl Future<Output = ()>,
    ) {
        if let Some(observer) = &self.observer {
            observer.mode(Mode::Polling);
        }
        let mut interval = tokio::time::interval(self.settings.ecs.poll_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = interval.tick() => {}
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = self.poll_and_publish(&tx) => {}
            }
        }
    }
}

/// The scope and ECS cluster (by its configured name) an event is about, if watched: the first
/// scope, in priority order, of the cluster ARN's account and region that watches it.
fn watching(scopes: &[ScopeState], change: &Change) -> Option<(usize, String)> {
    let cluster = change_cluster(change)?;
    scopes.iter().enumerate().find_map(|(i, scope)| {
        let name = scope.ecs_clusters.iter().find(|name| cluster.is(name))?;
        scope.holds_arn(&cluster.arn).then(|| (i, name.clone()))
    })
}

/// `error` named with its scope, when there are several.
fn in_scope(scope: &ScopeState, error: DiscoverError, several: bool) -> DiscoverError {
    if !several {
        return error;
    }
    DiscoverError::InScope {
        scope: scope.label.clone(),
        role: scope.scope.role_arn.clone(),
        error: Box::new(error),
    }
}

/// The cluster an event is about.
fn change_cluster(change: &Change) -> Option<&ClusterRef> {
    match change {
        Change::Task { cluster, .. }
        | Change::Service { cluster, .. }
        | Change::TaskTags { cluster, .. }
        | Change::ContainerInstance { cluster, .. } => Some(cluster),
        Change::Ignored => None,
    }
}

/// One complete discovery for `ecs-xds discover`: loads AWS from the standard chain and polls
/// every source once. Any failed source is an error (the first one; all are logged).
pub async fn discover_once(settings: DiscoverConfig) -> Result<Inventory, DiscoverError> {
    let events_endpoint = settings.events.endpoint_url.as_deref();
    let aws = Aws::connect(&settings.aws, events_endpoint).await?;
    discover_once_with(settings, aws).await
}

/// [`discover_once`] with ready-made clients.
pub async fn discover_once_with(
    settings: DiscoverConfig,
    aws: Aws,
) -> Result<Inventory, DiscoverError> {
    let report = Poller::new(settings, aws)?.poll().await;
    match (report.errors.into_iter().next(), report.inventory) {
        (Some(e), _) => Err(e),
        (None, Some(inventory)) => Ok(inventory),
        (None, None) => unreachable!("a poll without errors covers every source"),
    }
}
