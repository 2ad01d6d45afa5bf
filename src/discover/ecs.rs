//! One ECS cluster → its [`Part`] of the inventory, with as few calls as the minimum
//! allows: ListTasks pages, DescribeTasks per 100, DescribeServices per 10 for the services the
//! tasks belong to, DescribeTaskDefinition only for revisions never seen, and (bridge/host only)
//! DescribeContainerInstances + EC2 DescribeInstances for hosts never seen.
//!
//! # Draining
//! ListTasks with desired status RUNNING does not list a task ECS is stopping, yet that task may
//! still serve for its stop timeout. Listing desired status STOPPED as well would cost at least
//! one more ListTasks per cluster per poll, and page through every task stopped in the last hour
//! (ECS keeps them visible that long), roughly doubling the calls under churn. Instead each
//! cluster remembers the tasks that were endpoints on its last good poll; those that vanish from
//! the RUNNING listing are described again (DescribeTasks, 100 per call: usually zero or one
//! call) and, while their last status is still RUNNING, stay as DRAINING endpoints. The cost:
//! a task already being stopped when the daemon starts is simply absent, never draining.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;

use super::assemble::Part;
use super::aws::{run_bounded, Aws, CONCURRENCY};
use super::ecs_calls::{INSTANCE_BATCH, SERVICE_BATCH, TASK_BATCH};
use super::mapping::{map_task, needs_host_ip, service_of, MappingContext, TaskDef, TaskFacts};
use super::settings::{EcsSettings, ServiceFilter};
use super::DiscoverError;

/// Entries kept in each cache; past it, entries unused by the latest poll are dropped.
const CACHE_BOUND: usize = 8192;

/// What ECS discovery remembers between polls, for every ECS cluster.
#[derive(Debug, Default)]
pub(crate) struct EcsState {
    /// Task definitions by ARN. Immutable in ECS, so never refreshed.
    task_defs: HashMap<String, Arc<TaskDef>>,
    /// Private IP of each container instance's EC2 host, by container instance ARN. An
    /// instance's primary private IP never changes, and a container instance never moves hosts.
    host_ips: HashMap<String, String>,
    /// Per ECS cluster, the tasks that were endpoints on the last good poll (see "Draining").
    live: HashMap<String, BTreeSet<String>>,
}

impl EcsState {
    /// Forgets clusters no longer polled (auto-discovery saw them go).
    pub(crate) fn retain_clusters(&mut self, clusters: &[String]) {
        self.live.retain(|c, _| clusters.contains(c));
    }
}

/// Polls one ECS cluster. On error nothing in `state` that a later poll relies on is changed,
/// except the immutable caches.
pub(crate) async fn poll_cluster(
    aws: &Aws,
    settings: &EcsSettings,
    filter: &ServiceFilter,
    cluster: &str,
    state: &mut EcsState,
) -> Result<Part, DiscoverError> {
    let listed = aws.list_running_task_arns(cluster).await?;
    let listed_set: HashSet<&str> = listed.iter().map(String::as_str).collect();
    let vanished: Vec<String> = state
        .live
        .get(cluster)
        .into_iter()
        .flatten()
        .filter(|arn| !listed_set.contains(arn.as_str()))
        .cloned()
        .collect();
    let mut tasks = describe_tasks(aws, cluster, &listed).await?;
    let mut draining = HashSet::new();
    for task in describe_tasks(aws, cluster, &vanished).await? {
        if task.desired_status == "STOPPED" && task.last_status == "RUNNING" {
            draining.insert(task.arn.clone());
            tasks.push(task);
        }
    }
    tasks.retain(|t| t.last_status == "RUNNING" && service_of(t, filter).is_some());

    let services: BTreeSet<String> = tasks
        .iter()
        .filter_map(|t| service_of(t, filter))
        .map(str::to_owned)
        .collect();
    let service_tags = describe_services(aws, cluster, services).await?;
    load_task_defs(aws, cluster, &tasks, &mut state.task_defs).await?;
    load_host_ips(aws, cluster, &tasks, &state.task_defs, &mut state.host_ips).await?;

    let region = aws.region().to_owned();
    let ctx = MappingContext {
        settings,
        filter,
        ecs_cluster: cluster,
        region: &region,
    };
    let no_tags = BTreeMap::new();
    let mut warnings = BTreeSet::new();
    let mut mapped = Vec::new();
    let mut live = BTreeSet::new();
    for task in &tasks {
        let def = &state.task_defs[&task.task_definition_arn];
        let service = service_of(task, filter).unwrap_or_default();
        let host_ip = task
            .container_instance_arn
            .as_ref()
            .and_then(|ci| state.host_ips.get(ci))
            .map(String::as_str);
        let tags = service_tags.get(service).unwrap_or(&no_tags);
        let endpoints = map_task(
            &ctx,
            task,
            def,
            tags,
            host_ip,
            draining.contains(&task.arn),
            &mut warnings,
        );
        if !endpoints.is_empty() {
            live.insert(task.arn.clone());
        }
        mapped.extend(endpoints);
    }
    state.live.insert(cluster.to_owned(), live);
    if state.task_defs.len() > CACHE_BOUND {
        let used: HashSet<&str> = tasks
            .iter()
            .map(|t| t.task_definition_arn.as_str())
            .collect();
        state.task_defs.retain(|arn, _| used.contains(arn.as_str()));
    }
    if state.host_ips.len() > CACHE_BOUND {
        let used: HashSet<&str> = tasks
            .iter()
            .filter_map(|t| t.container_instance_arn.as_deref())
            .collect();
        state.host_ips.retain(|arn, _| used.contains(arn.as_str()));
    }
    Ok(Part::from_ecs(cluster, mapped, warnings))
}

/// DescribeTasks in batches of 100, several batches in flight.
async fn describe_tasks(
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
async fn describe_services(
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
    Fut: Future<Output = Result<R, DiscoverError>> + Send + 'static,
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
async fn load_task_defs(
    aws: &Aws,
    cluster: &str,
    tasks: &[TaskFacts],
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
    first_error.map_or(Ok(()), Err)
}

/// Resolves the host IP of every bridge/host-networked task's container instance not cached:
/// DescribeContainerInstances (100 per call), then EC2 DescribeInstances (100 per call).
async fn load_host_ips(
    aws: &Aws,
    cluster: &str,
    tasks: &[TaskFacts],
    task_defs: &HashMap<String, Arc<TaskDef>>,
    cache: &mut HashMap<String, String>,
) -> Result<(), DiscoverError> {
    let missing: Vec<String> = tasks
        .iter()
        .filter(|t| needs_host_ip(&task_defs[&t.task_definition_arn]))
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
    for (ci, instance) in instance_of {
        if let Some(ip) = ips.get(&instance) {
            cache.insert(ci, ip.clone());
        }
    }
    Ok(())
}
