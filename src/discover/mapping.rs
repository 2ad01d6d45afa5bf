//! Pure mapping: one ECS task (with its task definition, its service's tags and, for
//! bridge/host networking, its host's IP) → the endpoints it contributes. No I/O, no SDK types:
//! `ecs_calls.rs` converts the SDK's values into the plain facts below.
//!
//! # Labels and tags (`<prefix>` is `ecs.label_prefix`, default `ecs-xds.`)
//! A key is looked up on the ECS service's tags, then the task's tags, then the container's
//! docker labels; the first found wins. Tags win because they can change at run time, while a
//! label change needs a new task-definition revision. Booleans are `true`/`yes`/`1` and
//! `false`/`no`/`0`, in any case.
//! - `<prefix>enable`: expose the service (default `ecs.exposed_by_default`).
//!   On a container label it switches that container alone.
//! - `<prefix>ignore=true` (container label): never an endpoint (the Envoy sidecar); so is any
//!   container named in `ecs.ignore_container_names`.
//! - `<prefix>port`: a port mapping name or a container port: expose that one port only, as the
//!   unnamed cluster `ecs.cluster_name`.
//! - `<prefix>cluster-name`: replaces `{service}` in the cluster name templates.
//! - `<prefix>weight`: the endpoints' load-balancing weight (1 to 128), per task, so a canary
//!   revision may carry a different weight.
//! - `<prefix>lb-policy`, `<prefix>connect-timeout` (humantime), `<prefix>http2`: per-cluster
//!   overrides, read as data. A port mapping's `appProtocol` of `http2` or `grpc` implies http2.
//!
//! Service-wide keys (`cluster-name`, `weight` and the overrides) read container labels from
//! the container serving the selected port; `port` from the first exposed container carrying
//! it; `enable` and `ignore` are per container.
//!
//! Without a `port` override, every named port mapping (as Service Connect names them) of the
//! exposed containers is one cluster; without names, the first port mapping of the first
//! essential exposed container is the service's one cluster.

use std::collections::{BTreeMap, BTreeSet};

use super::settings::{render_template, EcsSettings, ServiceFilter};
use super::{policy, ClusterOverrides, Endpoint, Health, LbPolicy, Locality, RoutePolicy};

/// What the mapping needs from a DescribeTasks result.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct TaskFacts {
    pub arn: String,
    pub group: Option<String>,
    pub last_status: String,
    pub desired_status: String,
    pub health: Option<String>,
    pub zone: Option<String>,
    pub task_definition_arn: String,
    /// Private IPv4 of the task's ENI (awsvpc).
    pub eni_ipv4: Option<String>,
    pub container_instance_arn: Option<String>,
    pub containers: Vec<ContainerFacts>,
    pub tags: BTreeMap<String, String>,
    /// Who started the task: for a service's task, its deployment (`ecs-svc/...`).
    pub started_by: Option<String>,
    /// ECS's `version` of the task, which grows with every change (DescribeTasks and the task
    /// state change event carry the same one).
    pub version: Option<i64>,
}

/// A running container's host port bindings (bridge networking).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ContainerFacts {
    pub name: String,
    /// (container port, host port)
    pub bindings: Vec<(u16, u16)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NetworkMode {
    Awsvpc,
    Bridge,
    Host,
    None,
}

/// What the mapping needs from a task definition (immutable, so cached by ARN).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TaskDef {
    pub revision: i32,
    pub network_mode: NetworkMode,
    pub containers: Vec<ContainerDef>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ContainerDef {
    pub name: String,
    pub essential: bool,
    pub ports: Vec<PortMapping>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct PortMapping {
    pub container_port: u16,
    pub name: Option<String>,
    /// ECS `appProtocol`: `http`, `http2` or `grpc`.
    pub app_protocol: Option<String>,
}

/// The settings and names one ECS cluster's mapping needs.
pub(crate) struct MappingContext<'a> {
    pub settings: &'a EcsSettings,
    pub filter: &'a ServiceFilter,
    pub ecs_cluster: &'a str,
    pub region: &'a str,
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
    if serving(task).is_none() {
        return Vec::new();
    }
    let prefix = &ctx.settings.label_prefix;
    let tag = |key: &str| {
        let key = format!("{prefix}{key}");
        service_tags
            .get(&key)
            .or_else(|| task.tags.get(&key))
            .map(String::as_str)
    };
    let lookup = |key: &str, container: &ContainerDef| {
        tag(key)
            .or_else(|| {
                container
                    .labels
                    .get(&format!("{prefix}{key}"))
                    .map(String::as_str)
            })
            .map(str::to_owned)
    };
    let mut warn = |what: String| {
        warnings.insert(format!("ECS service {}/{service}: {what}", ctx.ecs_cluster));
    };
    let mut flag = |key: &str, value: Option<&str>, default: bool| match value.map(parse_bool) {
        None => default,
        Some(Ok(b)) => b,
        Some(Err(v)) => {
            warn(format!(
                "{prefix}{key}=`{v}` is not a boolean (true/yes/1, false/no/0); using {default}"
            ));
            default
        }
    };

    let mut exposed = Vec::new();
    for c in &def.containers {
        let ignored = ctx.settings.ignore_container_names.contains(&c.name)
            || flag(
                "ignore",
                c.labels.get(&format!("{prefix}ignore")).map(String::as_str),
                false,
            );
        if !ignored
            && flag(
                "enable",
                lookup("enable", c).as_deref(),
                ctx.settings.exposed_by_default,
            )
        {
            exposed.push(c);
        }
    }

    // (container, container port, port name, named cluster?)
    let mut ports: Vec<(&ContainerDef, u16, Option<&PortMapping>, bool)> = Vec::new();
    let port_override = tag("port").or_else(|| {
        exposed
            .iter()
            .find_map(|c| c.labels.get(&format!("{prefix}port")))
            .map(String::as_str)
    });
    if let Some(wanted) = port_override {
        let by_mapping = exposed.iter().find_map(|c| {
            c.ports
                .iter()
                .find(|p| {
                    p.name.as_deref() == Some(wanted)
                        || wanted.parse::<u16>() == Ok(p.container_port)
                })
                .map(|p| (*c, p.container_port, Some(p), false))
        });
        let by_number = || {
            let port = wanted.parse::<u16>().ok()?;
            let c = exposed.iter().find(|c| c.essential).or(exposed.first())?;
            Some((*c, port, None, false))
        };
        match by_mapping.or_else(by_number) {
            Some(p) => ports.push(p),
            None => warn(format!(
                "{prefix}port=`{wanted}` names no port mapping of an exposed container"
            )),
        }
    } else {
        for c in &exposed {
            for p in c.ports.iter().filter(|p| p.name.is_some()) {
                ports.push((c, p.container_port, Some(p), true));
            }
        }
        if ports.is_empty() {
            let first = exposed
                .iter()
                .filter(|c| c.essential)
                .chain(&exposed)
                .find_map(|c| c.ports.first().map(|p| (*c, p)));
            if let Some((c, p)) = first {
                ports.push((c, p.container_port, Some(p), false));
            }
        }
    }
    if ports.is_empty() {
        return Vec::new();
    }

    // Service-wide labels come from the container serving the (first) selected port.
    let any = ports[0].0;
    let name_service = tag("cluster-name")
        .or_else(|| {
            any.labels
                .get(&format!("{prefix}cluster-name"))
                .map(String::as_str)
        })
        .unwrap_or(service);
    let weight = match lookup("weight", any).map(|w| w.parse::<u32>()) {
        None => 1,
        Some(Ok(w)) if (1..=128).contains(&w) => w,
        Some(_) => {
            warn(format!(
                "{prefix}weight is not a number from 1 to 128; using 1"
            ));
            1
        }
    };
    let lb_policy = lookup("lb-policy", any).and_then(|v| {
        v.parse::<LbPolicy>()
            .map_err(|e| warn(format!("{prefix}lb-policy: {e}")))
            .ok()
    });
    let connect_timeout = lookup("connect-timeout", any).and_then(|v| {
        humantime::parse_duration(&v)
            .map_err(|e| warn(format!("{prefix}connect-timeout=`{v}`: {e}")))
            .ok()
    });
    let (route, circuit_breakers, outlier_detection, zone_aware) =
        policy::parse(|key| lookup(key, any), |w| warn(format!("{prefix}{w}")));
    let backends = lookup("backends", any).and_then(|v| {
        super::backends::parse(&v)
            .map_err(|e| {
                warn(format!(
                    "{prefix}backends=`{v}`: {e}; its Envoys get the node type's whole scope"
                ))
            })
            .ok()
    });
    let http2_label = lookup("http2", any).and_then(|v| {
        parse_bool(&v)
            .map_err(|v| {
                warn(format!(
                    "{prefix}http2=`{v}` is not a boolean (true/yes/1, false/no/0)"
                ))
            })
            .ok()
    });

    let health = if draining {
        Health::Draining
    } else {
        match task.health.as_deref() {
            Some("HEALTHY") => Health::Healthy,
            Some("UNHEALTHY") => Health::Unhealthy,
            _ => Health::Unknown,
        }
    };
    let id = task.arn.rsplit('/').next().unwrap_or(&task.arn).to_owned();
    let address_known = match def.network_mode {
        NetworkMode::Awsvpc => task.eni_ipv4.is_some(),
        NetworkMode::Bridge | NetworkMode::Host => host_ip.is_some(),
        // No network: never an endpoint, and not worth a warning per task.
        NetworkMode::None => return Vec::new(),
    };
    if !address_known {
        warn(format!(
            "task {id} has no address yet (network mode {:?}); left out",
            def.network_mode
        ));
        return Vec::new();
    }
    let mut out = Vec::new();
    for (container, container_port, mapping, named) in ports {
        let address_port = match def.network_mode {
            NetworkMode::Awsvpc => task.eni_ipv4.clone().map(|ip| (ip, container_port)),
            NetworkMode::Host => host_ip.map(|ip| (ip.to_owned(), container_port)),
            NetworkMode::Bridge => {
                let binding = task
                    .containers
                    .iter()
                    .filter(|c| c.name == container.name)
                    .flat_map(|c| &c.bindings)
                    .find(|(cp, _)| *cp == container_port);
                // No binding yet: the agent has not started the container; try next poll.
                binding.and_then(|(_, host_port)| host_ip.map(|ip| (ip.to_owned(), *host_port)))
            }
            NetworkMode::None => None,
        };
        let Some((address, port)) = address_port else {
            continue;
        };
        let port_name = mapping.and_then(|m| m.name.clone());
        let cluster_name = if named {
            render_template(
                &ctx.settings.port_cluster_name,
                &[
                    ("service", name_service),
                    ("port_name", port_name.as_deref().unwrap_or_default()),
                    ("ecs_cluster", ctx.ecs_cluster),
                ],
            )
        } else {
            render_template(
                &ctx.settings.cluster_name,
                &[("service", name_service), ("ecs_cluster", ctx.ecs_cluster)],
            )
        };
        let app_http2 = mapping
            .and_then(|m| m.app_protocol.as_deref())
            .map(|p| matches!(p, "http2" | "grpc"))
            .filter(|h| *h);
        out.push(Mapped {
            cluster_name,
            service: service.to_owned(),
            port_name,
            overrides: ClusterOverrides {
                lb_policy,
                connect_timeout,
                http2: http2_label.or(app_http2),
                circuit_breakers: circuit_breakers.clone(),
                outlier_detection: outlier_detection.clone(),
                zone_aware,
            },
            route: route.clone(),
            backends: backends.clone(),
            endpoint: Endpoint {
                address,
                port,
                health,
                locality: Locality {
                    region: ctx.region.to_owned(),
                    zone: task.zone.clone(),
                },
                weight,
                id: id.clone(),
                revision: u32::try_from(def.revision).ok(),
                deployment: task.started_by.clone(),
            },
            revision: def.revision,
        });
    }
    out
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
    let key = format!("{}backends", ctx.settings.label_prefix);
    let value = (service_tags.get(&key))
        .or_else(|| task.tags.get(&key))
        .or_else(|| def.containers.iter().find_map(|c| c.labels.get(&key)))?;
    match super::backends::parse(value) {
        Ok(items) => Some((service.to_owned(), items)),
        Err(e) => {
            warnings.insert(format!(
                "ECS service {}/{service}: {key}=`{value}`: {e}; its Envoys get the node type's whole scope",
                ctx.ecs_cluster
            ));
            None
        }
    }
}

pub(crate) fn parse_bool(v: &str) -> Result<bool, &str> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" => Ok(true),
        "false" | "no" | "0" => Ok(false),
        _ => Err(v),
    }
}

#[cfg(test)]
mod tests;
