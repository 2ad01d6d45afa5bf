//! One ECS event → the cluster's facts ([`ClusterState`]), with an AWS call only for what the
//! facts do not hold yet. Every call is made before anything changes, so an event whose call
//! fails changes nothing (fail static) and is retried when SQS delivers it again.
//!
//! # Task events, and what they cost
//! The event's `detail` is the task as DescribeTasks gives it, so a task event replaces that
//! task's facts with **no call** when its task definition and service are known (and, for
//! bridge/host networking, its container instance). Otherwise, once per new thing:
//! DescribeTaskDefinition for a revision never seen (cached, immutable), DescribeServices for a
//! service never seen, DescribeContainerInstances + EC2 DescribeInstances for a host never seen.
//!
//! The event carries no tags. Service tags are read with the service (and refreshed by its
//! service and deployment events), and come first in the lookup order anyway, so tags ECS
//! propagates from the service change nothing. A task's *own* override tags (RunTask tags,
//! or `propagateTags = TASK_DEFINITION`) are read by describing the new task once (one
//! DescribeTasks) only when its service is new or some task of the service had such a tag on
//! the last poll; later events of that task keep the tags read then.
//!
//! A tag change has no ECS event, but CloudTrail's record of the `TagResource` or
//! `UntagResource` call does (when a trail logs management events): on a service it re-reads
//! the service's tags like a service event (one DescribeServices), on a known task that task's
//! (one DescribeTasks).
//!
//! The event carries no task health either, unless ECS adds `healthStatus`: an event without
//! it keeps the health known for the task (a new task is `unknown` until the next reconcile).
//!
//! # Order and duplicates
//! Events arrive at least once and in any order. Each task's facts keep ECS's `version`; an
//! event whose version is not newer is stale and dropped. A finished task is remembered for an
//! hour and never comes back; without versions, a task being stopped never returns to running.

use std::collections::BTreeSet;

use super::decode::Change;
use crate::aws::{Aws, TaskFacts};
use crate::discover::ecs::{
    describe_services, describe_tasks, has_override_tags, load_hosts, load_task_defs,
    resolve_hosts, ClusterState, EcsState, ServiceFacts,
};
use crate::discover::mapping::{finished, service_of, serving};
use crate::discover::DiscoverError;
use crate::settings::{EcsSettings, ServiceFilter};

/// What applying one event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Applied {
    /// The cluster's facts changed: re-map it.
    Changed,
    /// Applied, and nothing that maps to endpoints changed.
    Unchanged,
    /// Older than (or the same as) what is known: dropped.
    Stale,
    /// About a cluster not watched, or not yet polled once (the first poll reads the state it
    /// describes).
    Ignored,
}

/// The settings and clients an event needs.
pub(crate) struct Context<'a> {
    pub aws: &'a Aws,
    pub settings: &'a EcsSettings,
    pub filter: &'a ServiceFilter,
}

/// Applies `change` to the facts of the watched ECS cluster `cluster` (as the settings name it).
pub(crate) async fn apply(
    ctx: &Context<'_>,
    cluster: &str,
    change: &Change,
    state: &mut EcsState,
) -> Result<Applied, DiscoverError> {
    if !state.clusters.contains_key(cluster) {
        return Ok(Applied::Ignored);
    }
    match change {
        Change::Task { task, .. } => apply_task(ctx, cluster, task, state).await,
        Change::Service { service, .. } => apply_service(ctx, cluster, service, state).await,
        Change::TaskTags { arn, .. } => apply_task_tags(ctx, cluster, arn, state).await,
        Change::ContainerInstance {
            arn,
            instance_id,
            active,
            ..
        } => apply_instance(ctx, cluster, arn, instance_id.as_deref(), *active, state).await,
        Change::Ignored => Ok(Applied::Ignored),
    }
}

/// Is `event` no newer than `known`? With both versions, the version decides (equal is a
/// duplicate); without, an event saying the same, or one that would undo a stop, is stale.
fn is_stale(event: &TaskFacts, known: &TaskFacts) -> bool {
    match (event.version, known.version) {
        (Some(e), Some(k)) => e <= k,
        _ => {
            let undoes_stop =
                known.desired_status == "STOPPED" && event.desired_status != "STOPPED";
            let same = TaskFacts {
                tags: known.tags.clone(),
                version: known.version,
                ..event.clone()
            } == *known;
            undoes_stop || same
        }
    }
}

async fn apply_task(
    ctx: &Context<'_>,
    cluster: &str,
    event: &TaskFacts,
    state: &mut EcsState,
) -> Result<Applied, DiscoverError> {
    let facts = &state.clusters[cluster];
    if facts.finished.contains_key(&event.arn) {
        return Ok(Applied::Stale);
    }
    let known = facts.tasks.get(&event.arn);
    if known.is_some_and(|k| is_stale(event, k)) {
        return Ok(Applied::Stale);
    }
    if finished(event) {
        let facts = state.clusters.get_mut(cluster).expect("checked above");
        let was_serving = facts.tasks.contains_key(&event.arn);
        facts.finish(&event.arn);
        return Ok(if was_serving {
            Applied::Changed
        } else {
            Applied::Unchanged
        });
    }
    let Some(service) = service_of(event, ctx.filter) else {
        return Ok(Applied::Unchanged);
    };
    if serving(event).is_none() {
        // Provisioning or pending: not an endpoint yet, and nothing known to replace.
        return Ok(Applied::Unchanged);
    }
    let mut task = event.clone();
    let service_known = facts.services.get(service);
    match known {
        Some(k) => {
            task.tags = k.tags.clone();
            task.health = task.health.or_else(|| k.health.clone());
        }
        None if service_known.is_none_or(|s| s.task_tags_in_use) => {
            let described = describe_tasks(ctx.aws, cluster, &[task.arn.clone()]).await?;
            if let Some(d) = described.into_iter().find(|d| d.arn == task.arn) {
                task.tags = d.tags;
                task.health = task.health.or(d.health);
            }
        }
        None => {}
    }
    let new_service = match service_known {
        Some(_) => None,
        None => {
            let names = BTreeSet::from([service.to_owned()]);
            let tags = describe_services(ctx.aws, cluster, names).await?;
            Some(tags.get(service).cloned().unwrap_or_default())
        }
    };
    load_task_defs(ctx.aws, cluster, &[&task], &mut state.task_defs).await?;
    load_hosts(
        ctx.aws,
        cluster,
        &[&task],
        &state.task_defs,
        &mut state.hosts,
    )
    .await?;

    let facts = state.clusters.get_mut(cluster).expect("checked above");
    let overrides = has_override_tags(&task, ctx.settings);
    let service_facts = facts.services.entry(service.to_owned()).or_default();
    if let Some(tags) = new_service {
        service_facts.tags = tags;
    }
    service_facts.task_tags_in_use |= overrides;
    let changed = facts
        .tasks
        .get(&task.arn)
        .is_none_or(|k| !same_endpoints(k, &task));
    facts.tasks.insert(task.arn.clone(), task);
    Ok(if changed {
        Applied::Changed
    } else {
        Applied::Unchanged
    })
}

/// Do two facts of one task map to the same endpoints? (The version alone does not matter.)
fn same_endpoints(a: &TaskFacts, b: &TaskFacts) -> bool {
    TaskFacts {
        version: b.version,
        ..a.clone()
    } == *b
}

/// A service or deployment event: re-read the service's tags, if any of its tasks is known
/// (otherwise the first task event of it reads them).
async fn apply_service(
    ctx: &Context<'_>,
    cluster: &str,
    service: &str,
    state: &mut EcsState,
) -> Result<Applied, DiscoverError> {
    let facts: &ClusterState = &state.clusters[cluster];
    if !ctx.filter.allows(service) || !facts.services.contains_key(service) {
        return Ok(Applied::Unchanged);
    }
    let names = BTreeSet::from([service.to_owned()]);
    let mut tags = describe_services(ctx.aws, cluster, names).await?;
    // A service ECS no longer knows has no tags; its tasks' own events remove them.
    let tags = tags.remove(service).unwrap_or_default();
    let facts = state.clusters.get_mut(cluster).expect("checked above");
    let known: &mut ServiceFacts = facts.services.get_mut(service).expect("checked above");
    if known.tags == tags {
        return Ok(Applied::Unchanged);
    }
    known.tags = tags;
    Ok(Applied::Changed)
}

/// A task's tags changed (a tag call through CloudTrail): re-read them, if the task serves.
/// A task not known yet has its tags read with it, when its service uses task tags.
async fn apply_task_tags(
    ctx: &Context<'_>,
    cluster: &str,
    arn: &str,
    state: &mut EcsState,
) -> Result<Applied, DiscoverError> {
    if !state.clusters[cluster].tasks.contains_key(arn) {
        return Ok(Applied::Unchanged);
    }
    let described = describe_tasks(ctx.aws, cluster, &[arn.to_owned()]).await?;
    // A task ECS no longer describes is gone: its own events remove it.
    let Some(tags) = described.into_iter().find(|d| d.arn == arn).map(|d| d.tags) else {
        return Ok(Applied::Unchanged);
    };
    let facts = state.clusters.get_mut(cluster).expect("checked above");
    let task = facts.tasks.get_mut(arn).expect("checked above");
    if task.tags == tags {
        return Ok(Applied::Unchanged);
    }
    task.tags = tags;
    let overrides = has_override_tags(task, ctx.settings);
    if let Some(service) = service_of(task, ctx.filter) {
        let service = service.to_owned();
        facts.services.entry(service).or_default().task_tags_in_use |= overrides;
    }
    Ok(Applied::Changed)
}

/// A container instance event: forget a host that no longer runs tasks; resolve the host of
/// one our tasks use when it is not known or has changed (agent reconnects cost nothing).
async fn apply_instance(
    ctx: &Context<'_>,
    cluster: &str,
    arn: &str,
    instance_id: Option<&str>,
    active: bool,
    state: &mut EcsState,
) -> Result<Applied, DiscoverError> {
    let used = state.clusters[cluster]
        .tasks
        .values()
        .any(|t| t.container_instance_arn.as_deref() == Some(arn));
    if !active {
        let removed = state.hosts.remove(arn).is_some();
        return Ok(if removed && used {
            Applied::Changed
        } else {
            Applied::Unchanged
        });
    }
    let Some(instance_id) = instance_id else {
        return Ok(Applied::Unchanged);
    };
    let current = state.hosts.get(arn).map(|h| h.instance_id.as_str());
    if !used || current == Some(instance_id) {
        return Ok(Applied::Unchanged);
    }
    let before = state.hosts.get(arn).cloned();
    let pair = vec![(arn.to_owned(), instance_id.to_owned())];
    resolve_hosts(ctx.aws, cluster, pair, &mut state.hosts).await?;
    Ok(if state.hosts.get(arn) != before.as_ref() {
        Applied::Changed
    } else {
        Applied::Unchanged
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(version: Option<i64>, desired: &str) -> TaskFacts {
        TaskFacts {
            arn: "arn:aws:ecs:us-east-1:1:task/demo/t1".into(),
            last_status: "RUNNING".into(),
            desired_status: desired.into(),
            version,
            ..TaskFacts::default()
        }
    }

    #[test]
    fn an_event_no_newer_than_what_is_known_is_stale() {
        let known = task(Some(3), "RUNNING");
        assert!(is_stale(&task(Some(3), "RUNNING"), &known), "a duplicate");
        assert!(is_stale(&task(Some(2), "STOPPED"), &known), "an older one");
        assert!(!is_stale(&task(Some(4), "STOPPED"), &known));
    }

    #[test]
    fn without_versions_a_repeat_or_an_undone_stop_is_stale() {
        let known = task(None, "STOPPED");
        assert!(is_stale(&task(Some(9), "RUNNING"), &known));
        assert!(is_stale(&task(None, "STOPPED"), &known));
        let mut moved = task(None, "STOPPED");
        moved.last_status = "DEACTIVATING".into();
        assert!(!is_stale(&moved, &known));
    }
}
