//! Pure mapping: one ECS task (with its task definition, its service's tags and, for
//! bridge/host networking, its host's IP) → the endpoints it contributes. No I/O, no SDK types:
//! `aws` converts the SDK's values into plain facts first, and every tag and label is read by
//! `labels.rs`.
//!
//! Which containers and ports: `<prefix>enable` and `<prefix>ignore` pick the exposed
//! containers; with `<prefix>port`, that one port (a mapping name or a container port) is the
//! unnamed cluster `ecs.cluster_name`; without it, every named port mapping (as Service Connect
//! names them) of the exposed containers is one cluster `ecs.port_cluster_name`; without names,
//! the first port mapping of the first essential exposed container is the service's one
//! cluster. Service-wide keys read the labels of the container serving the first selected port.

use std::collections::{BTreeMap, BTreeSet};

use crate::aws::{ContainerDef, NetworkMode, PortMapping, TaskDef, TaskFacts};
use crate::inventory::{
    ClusterOverrides, Endpoint, Health, Locality, RoutePolicy, Security, Workload,
};
use crate::settings::{render_template, EcsSettings, ServiceFilter};

use super::labels::Labels;

/// The settings and names one ECS cluster's mapping needs.
pub(crate) struct MappingContext<'a> {
    pub settings: &'a EcsSettings,
    pub filter: &'a ServiceFilter,
    pub ecs_cluster: &'a str,
    /// The region written on every endpoint's locality.
    pub region: &'a str,
    /// The account of the source, for `{account}` in cluster names ("" when not asked for).
    pub account: &'a str,
}

/// One endpoint of one cluster, as contributed by one task.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Mapped {
    pub cluster_name: String,
    pub service: String,
    pub port_name: Option<String>,
    pub overrides: ClusterOverrides,
    pub route: RoutePolicy,
    pub backends: Option<Vec<String>>,
    pub security: Security,
    pub endpoint: Endpoint,
    /// Task-definition revision: the newest revision's overrides win for the cluster.
    pub revision: i32,
}

/// The ECS service a task belongs to, if it passes the include/exclude filter.
pub(crate) fn service_of<'t>(task: &'t TaskFacts, filter: &ServiceFilter) -> Option<&'t str> {
    let service = task.group.as_deref()?.strip_prefix("service:")?;
    filter.allows(service).then_some(service)
}

/// Whether `task` serves traffic: `Some(false)` while it runs, `Some(true)` while it still runs
/// but is being stopped (desired STOPPED, or ECS deactivating or stopping it: it serves out its
/// stop timeout, so it drains), `None` before it runs and once its containers are gone.
pub(crate) fn serving(task: &TaskFacts) -> Option<bool> {
    match task.last_status.as_str() {
        "RUNNING" => Some(task.desired_status == "STOPPED"),
        "DEACTIVATING" | "STOPPING" => Some(true),
        _ => None,
    }
}

/// Whether `task` is done for good: ECS never runs a task again once it is to be stopped, so
/// a task with desired status STOPPED that no longer serves (or never did) stays gone.
pub(crate) fn finished(task: &TaskFacts) -> bool {
    serving(task).is_none()
        && (task.desired_status == "STOPPED"
            || matches!(task.last_status.as_str(), "DEPROVISIONING" | "STOPPED"))
}

/// Does this task definition need its host's IP (bridge or host networking)?
pub(crate) fn needs_host_ip(def: &TaskDef) -> bool {
    matches!(def.network_mode, NetworkMode::Bridge | NetworkMode::Host)
}

/// The endpoints `task` contributes, if it is [`serving`]. `draining` is set for tasks being
/// stopped while they still run. Problems a human should fix go to `warnings`.
pub(crate) fn map_task(
    ctx: &MappingContext<'_>,
    task: &TaskFacts,
    def: &TaskDef,
    service_tags: &BTreeMap<String, String>,
    host_ip: Option<&str>,
    draining: bool,
    warnings: &mut BTreeSet<String>,
) -> Vec<Mapped> {
    let Some(service) = service_of(task, ctx.filter) else {
        return Vec::new();
    };
    if serving(task).is_none() || def.network_mode == NetworkMode::None {
        // No network: never an endpoint, and not worth a warning per task.
        return Vec::new();
    }
    let whose = format!("ECS service {}/{service}", ctx.ecs_cluster);
    let prefix = &ctx.settings.label_prefix;
    let mut labels = Labels::new(prefix, service_tags, &task.tags, whose, warnings);
    let exposed = exposed_containers(ctx.settings, def, &mut labels);
    let ports = selected_ports(&exposed, &mut labels);
    let Some(first) = ports.first() else {
        return Vec::new();
    };
    let wanted = labels.service(first.container);
    let id = task.arn.rsplit('/').next().unwrap_or(&task.arn).to_owned();
    let address_known = match def.network_mode {
        NetworkMode::Awsvpc => task.eni_ipv4.is_some(),
        _ => host_ip.is_some(),
    };
    if !address_known {
        let mode = def.network_mode;
        labels.warn(format!(
            "task {id} has no address yet (network mode {mode:?}); left out"
        ));
        return Vec::new();
    }
    let endpoint = Endpoint {
        address: String::new(),
        port: 0,
        health: health(task, draining),
        locality: Locality {
            region: ctx.region.to_owned(),
            zone: task.zone.clone(),
        },
        weight: wanted.weight,
        id,
        revision: u32::try_from(def.revision).ok(),
        deployment: task.started_by.clone(),
    };
    let name_service = wanted.cluster_name.as_deref().unwrap_or(service);
    let mapped = ports.iter().filter_map(|port| {
        let (address, port_number) = address(def, task, port, host_ip)?;
        Some(Mapped {
            cluster_name: cluster_name(ctx, name_service, port),
            service: service.to_owned(),
            port_name: port.name().map(str::to_owned),
            overrides: ClusterOverrides {
                http2: wanted.overrides.http2.or(port.implies_http2()),
                ..wanted.overrides.clone()
            },
            route: wanted.route.clone(),
            backends: wanted.backends.clone(),
            security: Security {
                workload: Workload::of_task_arn(&task.arn),
                ..wanted.security.clone()
            },
            endpoint: Endpoint {
                address,
                port: port_number,
                ..endpoint.clone()
            },
            revision: def.revision,
        })
    });
    mapped.collect()
}

/// One port a service is exposed on.
struct SelectedPort<'d> {
    container: &'d ContainerDef,
    container_port: u16,
    mapping: Option<&'d PortMapping>,
    /// A named port mapping's own cluster (`ecs.port_cluster_name`), not the service's one.
    named: bool,
}

impl SelectedPort<'_> {
    fn name(&self) -> Option<&str> {
        self.mapping.and_then(|m| m.name.as_deref())
    }

    /// An `appProtocol` of `http2` or `grpc` asks for HTTP/2.
    fn implies_http2(&self) -> Option<bool> {
        let protocol = self.mapping.and_then(|m| m.app_protocol.as_deref());
        matches!(protocol, Some("http2" | "grpc")).then_some(true)
    }
}

/// The containers `enable` and `ignore` (and `ecs.ignore_container_names`) leave exposed.
fn exposed_containers<'d>(
    settings: &EcsSettings,
    def: &'d TaskDef,
    labels: &mut Labels<'d>,
) -> Vec<&'d ContainerDef> {
    let mut exposed = Vec::new();
    for c in &def.containers {
        let ignore = labels.label("ignore", c);
        let ignored = settings.ignore_container_names.contains(&c.name)
            || labels.flag("ignore", ignore, false);
        let enable = labels.value("enable", c);
        if !ignored && labels.flag("enable", enable, settings.exposed_by_default) {
            exposed.push(c);
        }
    }
    exposed
}

/// The ports the service is exposed on: the `port` override's, else every named port mapping,
/// else the first port mapping of the first essential container.
fn selected_ports<'d>(
    exposed: &[&'d ContainerDef],
    labels: &mut Labels<'d>,
) -> Vec<SelectedPort<'d>> {
    let port_label = || exposed.iter().find_map(|c| labels.label("port", c));
    if let Some(wanted) = labels.tag("port").or_else(port_label) {
        let by_mapping = exposed.iter().find_map(|c| {
            let p = c.ports.iter().find(|p| {
                p.name.as_deref() == Some(wanted) || wanted.parse::<u16>() == Ok(p.container_port)
            })?;
            Some(selected(c, p.container_port, Some(p), false))
        });
        let by_number = || {
            let port = wanted.parse::<u16>().ok()?;
            let c = exposed.iter().find(|c| c.essential).or(exposed.first())?;
            Some(selected(c, port, None, false))
        };
        let found = by_mapping.or_else(by_number);
        if found.is_none() {
            let prefix = labels.prefix();
            labels.warn(format!(
                "{prefix}port=`{wanted}` names no port mapping of an exposed container"
            ));
        }
        return found.into_iter().collect();
    }
    let named: Vec<SelectedPort<'d>> = exposed
        .iter()
        .flat_map(|c| c.ports.iter().map(move |p| (*c, p)))
        .filter(|(_, p)| p.name.is_some())
        .map(|(c, p)| selected(c, p.container_port, Some(p), true))
        .collect();
    if !named.is_empty() {
        return named;
    }
    let first = exposed
        .iter()
        .filter(|c| c.essential)
        .chain(exposed)
        .find_map(|c| {
            c.ports
                .first()
                .map(|p| selected(c, p.container_port, Some(p), false))
        });
    first.into_iter().collect()
}

fn selected<'d>(
    container: &'d ContainerDef,
    container_port: u16,
    mapping: Option<&'d PortMapping>,
    named: bool,
) -> SelectedPort<'d> {
    SelectedPort {
        container,
        container_port,
        mapping,
        named,
    }
}

fn health(task: &TaskFacts, draining: bool) -> Health {
    match (draining, task.health.as_deref()) {
        (true, _) => Health::Draining,
        (false, Some("HEALTHY")) => Health::Healthy,
        (false, Some("UNHEALTHY")) => Health::Unhealthy,
        _ => Health::Unknown,
    }
}

/// Where `port` is reached: the task's own address (awsvpc), or its host's (host networking:
/// the container port; bridge: the bound host port, `None` until the agent has bound it).
fn address(
    def: &TaskDef,
    task: &TaskFacts,
    port: &SelectedPort<'_>,
    host_ip: Option<&str>,
) -> Option<(String, u16)> {
    match def.network_mode {
        NetworkMode::Awsvpc => Some((task.eni_ipv4.clone()?, port.container_port)),
        NetworkMode::Host => Some((host_ip?.to_owned(), port.container_port)),
        NetworkMode::Bridge => {
            let (_, host_port) = (task.containers.iter())
                .filter(|c| c.name == port.container.name)
                .flat_map(|c| &c.bindings)
                .find(|(container_port, _)| *container_port == port.container_port)?;
            Some((host_ip?.to_owned(), *host_port))
        }
        NetworkMode::None => None,
    }
}

/// The Envoy cluster name of `port`: `ecs.port_cluster_name` for a named port mapping's own
/// cluster, else `ecs.cluster_name`.
fn cluster_name(ctx: &MappingContext<'_>, service: &str, port: &SelectedPort<'_>) -> String {
    let settings = ctx.settings;
    match port.named {
        true => render_template(
            &settings.port_cluster_name,
            &[
                ("service", service),
                ("port_name", port.name().unwrap_or_default()),
                ("ecs_cluster", ctx.ecs_cluster),
                ("account", ctx.account),
                ("region", ctx.region),
            ],
        ),
        false => render_template(
            &settings.cluster_name,
            &[
                ("service", service),
                ("ecs_cluster", ctx.ecs_cluster),
                ("account", ctx.account),
                ("region", ctx.region),
            ],
        ),
    }
}

/// What a running task's service declares it calls (`<prefix>backends`: service tag, then task
/// tag, then any container's label), for a service that serves no port and so has no cluster
/// to carry it: a worker's Envoy calls others too.
pub(crate) fn declared_backends(
    ctx: &MappingContext<'_>,
    task: &TaskFacts,
    def: &TaskDef,
    service_tags: &BTreeMap<String, String>,
    warnings: &mut BTreeSet<String>,
) -> Option<(String, Vec<String>)> {
    let service = service_of(task, ctx.filter)?;
    serving(task)?;
    let whose = format!("ECS service {}/{service}", ctx.ecs_cluster);
    let prefix = &ctx.settings.label_prefix;
    let mut labels = Labels::new(prefix, service_tags, &task.tags, whose, warnings);
    let label = || {
        def.containers
            .iter()
            .find_map(|c| labels.label("backends", c))
    };
    let value = labels.tag("backends").or_else(label)?;
    Some((service.to_owned(), labels.backends(Some(value))?))
}

#[cfg(test)]
mod tests;
