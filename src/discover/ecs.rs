//! One ECS cluster → its [`Part`] of the inventory, with as few calls as the minimum
//! allows: ListTasks pages, DescribeTasks per 100, DescribeServices per 10 for the services the
//! tasks belong to, DescribeTaskDefinition only for revisions never seen, and (bridge/host only)
//! DescribeContainerInstances + EC2 DescribeInstances for hosts never seen.
//!
//! Each cluster's facts (its serving tasks, its services' tags) are kept in [`ClusterState`]
//! between polls, so an ECS event (`events/apply.rs`) can change one task and re-map the cluster
//! ([`map_cluster`]) without asking AWS again.
//!
//! # Draining
//! ListTasks with desired status RUNNING does not list a task ECS is stopping, yet that task may
//! still serve for its stop timeout. Listing desired status STOPPED as well would cost at least
//! one more ListTasks per cluster per poll, and page through every task stopped in the last hour
//! (ECS keeps them visible that long), roughly doubling the calls under churn. Instead each
//! cluster remembers the tasks that were serving on its last good poll (or since, from events);
//! those that vanish from the RUNNING listing are described again (DescribeTasks, 100 per call:
//! usually zero or one call) and, while they still serve, stay: as DRAINING endpoints when being
//! stopped, as they are when the listing merely lags. The cost: a task already being stopped
//! when the daemon starts is simply absent, never draining.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::aws::{
    run_bounded, Aws, AwsError, TaskDef, TaskFacts, CONCURRENCY, INSTANCE_BATCH, SERVICE_BATCH,
    TASK_BATCH,
};
use crate::settings::{EcsSettings, ServiceFilter};

use super::assemble::Part;
use super::mapping::{
    declared_backends, finished, map_task, needs_host_ip, service_of, serving, MappingContext,
};
use super::DiscoverError;

/// Entries kept in each cache; past it, entries unused by the latest poll are dropped.
const CACHE_BOUND: usize = 8192;

/// How long a finished task is remembered, so a late or repeated event cannot bring it back.
/// ECS itself shows stopped tasks for about an hour.
const FINISHED_MEMORY: Duration = Duration::from_secs(3600);

/// What ECS discovery remembers between polls, for every ECS cluster.
#[derive(Debug, Default)]
pub(crate) struct EcsState {
    /// Task definitions by ARN. Immutable in ECS, so never refreshed.
    pub(crate) task_defs: HashMap<String, Arc<TaskDef>>,
    /// Each container instance's EC2 host, by container instance ARN. An instance's primary
    /// private IP never changes, and a container instance never moves hosts.
    pub(crate) hosts: HashMap<String, Host>,
    /// Per ECS cluster name, its last known facts.
    pub(crate) clusters: HashMap<String, ClusterState>,
}

/// The EC2 host of a container instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Host {
    pub instance_id: String,
    pub ip: String,
}

/// One ECS cluster's facts: its last good poll, with the events applied since.
#[derive(Debug, Default)]
pub(crate) struct ClusterState {
    /// The serving tasks of exposed services (running, or draining), by ARN.
    pub tasks: BTreeMap<String, TaskFacts>,
    /// Tags of the services these tasks belong to, by service name.
    pub services: HashMap<String, ServiceFacts>,
    /// Tasks known to be finished, with when that was learnt: never an endpoint again.
    pub finished: HashMap<String, Instant>,
}

/// What is known of one ECS service.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ServiceFacts {
    pub tags: BTreeMap<String, String>,
    /// Some task of the service carries a `<prefix>` tag of its own (RunTask tags, or tags
    /// propagated from the task definition): new tasks of it are described once for theirs.
    pub task_tags_in_use: bool,
}

impl EcsState {
    /// Forgets clusters no longer polled (auto-discovery saw them go).
    pub(crate) fn retain_clusters(&mut self, clusters: &[String]) {
        self.clusters.retain(|c, _| clusters.contains(c));
    }
}

impl ClusterState {
    /// Records that `arn` is finished; forgets finished tasks older than [`FINISHED_MEMORY`].
    pub(crate) fn finish(&mut self, arn: &str) {
        self.tasks.remove(arn);
        let now = Instant::now();
        self.finished.insert(arn.to_owned(), now);
        if self.finished.len() > CACHE_BOUND {
            self.finished
                .retain(|_, at| now.duration_since(*at) < FINISHED_MEMORY);
        }
    }
}

/// Does any of `task`'s own tags carry an override key?
pub(crate) fn has_override_tags(task: &TaskFacts, settings: &EcsSettings) -> bool {
    task.tags
        .keys()
        .any(|k| k.starts_with(&settings.label_prefix))
}

/// Is `polled` older than what `known` already says of the same task? Versions decide when both
/// have one; without, a task ECS is stopping never goes back to running.
pub(crate) fn is_older(polled: &TaskFacts, known: &TaskFacts) -> bool {
    match (polled.version, known.version) {
        (Some(p), Some(k)) => p < k,
        _ => known.desired_status == "STOPPED" && polled.desired_status != "STOPPED",
    }
}

/// Polls one ECS cluster and replaces its facts in `state`. On error nothing in `state` that a
/// later poll relies on is changed, except the immutable caches.
pub(crate) async fn poll_cluster(
    aws: &Aws,
    settings: &EcsSettings,
    filter: &ServiceFilter,
    cluster: &str,
    state: &mut EcsState,
) -> Result<Part, DiscoverError> {
    let listed = aws.list_running_task_arns(cluster).await?;
    let listed_set: HashSet<&str> = listed.iter().map(String::as_str).collect();
    let empty = ClusterState::default();
    let known = state.clusters.get(cluster).unwrap_or(&empty);
    let vanished: Vec<String> = known
        .tasks
        .keys()
        .filter(|arn| !listed_set.contains(arn.as_str()))
        .cloned()
        .collect();
    let mut described = describe_tasks(aws, cluster, &listed).await?;
    described.extend(describe_tasks(aws, cluster, &vanished).await?);
    let mut next = ClusterState {
        finished: known.finished.clone(),
        ..ClusterState::default()
    };
    for task in described {
        if next.finished.contains_key(&task.arn) {
            continue;
        }
        // A read older than an event already applied (ECS reads lag a little) keeps the event's.
        let task = match known.tasks.get(&task.arn) {
            Some(k) if is_older(&task, k) => k.clone(),
            _ => task,
        };
        if finished(&task) {
            next.finish(&task.arn);
        } else if serving(&task).is_some() && service_of(&task, filter).is_some() {
            next.tasks.insert(task.arn.clone(), task);
        }
    }
    let names: BTreeSet<String> = next
        .tasks
        .values()
        .filter_map(|t| service_of(t, filter))
        .map(str::to_owned)
        .collect();
    let service_tags = describe_services(aws, cluster, names).await?;
    let tasks: Vec<&TaskFacts> = next.tasks.values().collect();
    load_task_defs(aws, cluster, &tasks, &mut state.task_defs).await?;
    load_hosts(aws, cluster, &tasks, &state.task_defs, &mut state.hosts).await?;
    for (name, tags) in service_tags {
        let task_tags_in_use = next.tasks.values().any(|t| {
            service_of(t, filter) == Some(name.as_str()) && has_override_tags(t, settings)
        });
        next.services.insert(
            name,
            ServiceFacts {
                tags,
                task_tags_in_use,
            },
        );
    }
    prune_caches(state, &next);
    let origin = (aws.account().unwrap_or_default(), aws.region());
    let part = map_cluster(origin, settings, filter, cluster, &next, state);
    state.clusters.insert(cluster.to_owned(), next);
    Ok(part)
}

fn prune_caches(state: &mut EcsState, cluster: &ClusterState) {
    if state.task_defs.len() > CACHE_BOUND {
        let used: HashSet<&str> = cluster
            .tasks
            .values()
            .map(|t| t.task_definition_arn.as_str())
            .collect();
        state.task_defs.retain(|arn, _| used.contains(arn.as_str()));
    }
    if state.hosts.len() > CACHE_BOUND {
        let used: HashSet<&str> = cluster
            .tasks
            .values()
            .filter_map(|t| t.container_instance_arn.as_deref())
            .collect();
        state.hosts.retain(|arn, _| used.contains(arn.as_str()));
    }
}

/// One cluster's facts → its part of the inventory. Pure: every task definition and host it
/// needs is in the caches (a task whose definition is missing is left out).
pub(crate) fn map_cluster(
    (account, region): (&str, &str),
    settings: &EcsSettings,
    filter: &ServiceFilter,
    cluster: &str,
    facts: &ClusterState,
    state: &EcsState,
) -> Part {
    let ctx = MappingContext {
        settings,
        filter,
        ecs_cluster: cluster,
        region,
        account,
    };
    let no_tags = BTreeMap::new();
    let mut warnings = BTreeSet::new();
    let mut mapped = Vec::new();
    let mut callers = BTreeMap::new();
    for task in facts.tasks.values() {
        let Some(def) = state.task_defs.get(&task.task_definition_arn) else {
            continue;
        };
        let service = service_of(task, filter).unwrap_or_default();
        let host_ip = task
            .container_instance_arn
            .as_ref()
            .and_then(|ci| state.hosts.get(ci))
            .map(|h| h.ip.as_str());
        let tags = facts.services.get(service).map_or(&no_tags, |s| &s.tags);
        let draining = serving(task) == Some(true);
        let from_task = map_task(&ctx, task, def, tags, host_ip, draining, &mut warnings);
        if from_task.is_empty() {
            callers.extend(declared_backends(&ctx, task, def, tags, &mut warnings));
        }
        mapped.extend(from_task);
    }
    // A service with clusters carries its declaration on them.
    callers.retain(|service, _| !mapped.iter().any(|m| m.service == *service));
    let mut part = Part::from_ecs(cluster, mapped, warnings);
    part.callers = callers;
    part
}

/// DescribeTasks in batches of 100, several batches in flight.
pub(crate) async fn describe_tasks(
    aws: &Aws,
    cluster: &str,
    arns: &[String],
) -> Result<Vec<TaskFacts>, DiscoverError> {
    in_batches(
        aws,
        cluster,
        arns,
        TASK_BATCH,
        |aws, cluster, batch| async move { aws.describe_tasks(&cluster, &batch).await },
    )
    .await
}

/// Service name → tags, via DescribeServices in batches of 10.
pub(crate) async fn describe_services(
    aws: &Aws,
    cluster: &str,
    services: BTreeSet<String>,
) -> Result<HashMap<String, BTreeMap<String, String>>, DiscoverError> {
    let services: Vec<String> = services.into_iter().collect();
    in_batches(
        aws,
        cluster,
        &services,
        SERVICE_BATCH,
        |aws, cluster, batch| async move { aws.describe_services(&cluster, &batch).await },
    )
    .await
}

/// Calls `call` with each batch of `size` of `items`, several batches in flight, and gathers
/// every answer's items; the first error fails the whole.
async fn in_batches<I, R, C, F, Fut>(
    aws: &Aws,
    cluster: &str,
    items: &[I],
    size: usize,
    call: F,
) -> Result<C, DiscoverError>
where
    I: Clone,
    F: Fn(Aws, String, Vec<I>) -> Fut,
    Fut: Future<Output = Result<R, AwsError>> + Send + 'static,
    R: IntoIterator + Send + 'static,
    C: FromIterator<R::Item>,
{
    let jobs = items
        .chunks(size)
        .map(|batch| call(aws.clone(), cluster.to_owned(), batch.to_vec()))
        .collect();
    let answers = run_bounded(jobs, CONCURRENCY)
        .await
        .into_iter()
        .collect::<Result<Vec<R>, _>>()?;
    Ok(answers.into_iter().flatten().collect())
}

/// DescribeTaskDefinition for each task-definition ARN not in the cache.
pub(crate) async fn load_task_defs(
    aws: &Aws,
    cluster: &str,
    tasks: &[&TaskFacts],
    cache: &mut HashMap<String, Arc<TaskDef>>,
) -> Result<(), DiscoverError> {
    let missing: BTreeSet<&String> = tasks
        .iter()
        .map(|t| &t.task_definition_arn)
        .filter(|arn| !cache.contains_key(*arn))
        .collect();
    let jobs = missing
        .into_iter()
        .map(|arn| {
            let (aws, cluster, arn) = (aws.clone(), cluster.to_owned(), arn.clone());
            async move {
                aws.describe_task_definition(&cluster, &arn)
                    .await
                    .map(|def| (arn, def))
            }
        })
        .collect();
    // Keep what succeeded even if one failed: definitions are immutable, the next poll reuses them.
    let mut first_error = None;
    for result in run_bounded(jobs, CONCURRENCY).await {
        match result {
            Ok((arn, def)) => {
                cache.insert(arn, Arc::new(def));
            }
            Err(e) => first_error = first_error.or(Some(e)),
        }
    }
    first_error.map_or(Ok(()), |e| Err(e.into()))
}

/// Resolves the host of every bridge/host-networked task's container instance not cached:
/// DescribeContainerInstances (100 per call), then EC2 DescribeInstances (100 per call).
pub(crate) async fn load_hosts(
    aws: &Aws,
    cluster: &str,
    tasks: &[&TaskFacts],
    task_defs: &HashMap<String, Arc<TaskDef>>,
    cache: &mut HashMap<String, Host>,
) -> Result<(), DiscoverError> {
    let missing: Vec<String> = tasks
        .iter()
        .filter(|t| {
            task_defs
                .get(&t.task_definition_arn)
                .is_some_and(|d| needs_host_ip(d))
        })
        .filter_map(|t| t.container_instance_arn.clone())
        .filter(|ci| !cache.contains_key(ci))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let instance_of: Vec<(String, String)> =
        in_batches(
            aws,
            cluster,
            &missing,
            INSTANCE_BATCH,
            |aws, cluster, batch| async move {
                aws.describe_container_instances(&cluster, &batch).await
            },
        )
        .await?;
    resolve_hosts(aws, cluster, instance_of, cache).await
}

/// EC2 DescribeInstances (100 per call) for the instances of `instance_of` ((container instance
/// ARN, EC2 instance id)), caching each host.
pub(crate) async fn resolve_hosts(
    aws: &Aws,
    cluster: &str,
    instance_of: Vec<(String, String)>,
    cache: &mut HashMap<String, Host>,
) -> Result<(), DiscoverError> {
    let ids: Vec<String> = instance_of
        .iter()
        .map(|(_, id)| id.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let ips: HashMap<String, String> = in_batches(
        aws,
        cluster,
        &ids,
        INSTANCE_BATCH,
        |aws, cluster, batch| async move { aws.describe_instance_ips(&cluster, &batch).await },
    )
    .await?;
    for (ci, instance_id) in instance_of {
        if let Some(ip) = ips.get(&instance_id) {
            let ip = ip.clone();
            cache.insert(ci, Host { instance_id, ip });
        }
    }
    Ok(())
}
