//! Pure mapping: one ECS task (with its task definition, its service's tags and, for
//! bridge/host networking, its host's IP) → the endpoints it contributes. No I/O, no SDK types:
//! `ecs_calls.rs` converts the SDK's values into the plain facts below.
//!
//! # Labels and tags (`<prefix>` is `ecs.label_prefix`, default `ecs-xds.`)
//! A key is looked up on the ECS service's tags, then the task's tags, then the container's
//! docker labels; the first found wins. Tags win because they can change at run time, while a
//! label change needs a new task-definition revision.
//! - `<prefix>enable` (`true`/`false`): expose the service (default `ecs.exposed_by_default`).
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
//! Service-wide keys (`port`, `cluster-name`, `weight` and the overrides) read container labels
//! from the first exposed container; `enable` and `ignore` are per container.
//!
//! Without a `port` override, every named port mapping (as Service Connect names them) of the
//! exposed containers is one cluster; without names, the first port mapping of the first
//! essential exposed container is the service's one cluster.

use std::collections::{BTreeMap, BTreeSet};

use super::settings::{render_template, EcsSettings, ServiceFilter};
use super::{ClusterOverrides, Endpoint, Health, LbPolicy, Locality};

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
    pub endpoint: Endpoint,
    /// Task-definition revision: the newest revision's overrides win for the cluster.
    pub revision: i32,
}

/// The ECS service a task belongs to, if it passes the include/exclude filter.
pub(crate) fn service_of<'t>(task: &'t TaskFacts, filter: &ServiceFilter) -> Option<&'t str> {
    let service = task.group.as_deref()?.strip_prefix("service:")?;
    filter.allows(service).then_some(service)
}

/// Does this task definition need its host's IP (bridge or host networking)?
pub(crate) fn needs_host_ip(def: &TaskDef) -> bool {
    matches!(def.network_mode, NetworkMode::Bridge | NetworkMode::Host)
}

/// The endpoints `task` contributes. `draining` is set for tasks whose desired status is
/// STOPPED while they still run. Problems a human should fix go to `warnings`.
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
    if task.last_status != "RUNNING" {
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
                "{prefix}{key}=`{v}` is not true or false; using {default}"
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

    let any = exposed[0];
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
    let http2_label = lookup("http2", any).and_then(|v| {
        parse_bool(&v)
            .map_err(|v| warn(format!("{prefix}http2=`{v}` is not true or false")))
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
            },
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
            },
            revision: def.revision,
        });
    }
    out
}

fn parse_bool(v: &str) -> Result<bool, &str> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" => Ok(true),
        "false" | "no" | "0" => Ok(false),
        _ => Err(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn container(name: &str, ports: &[(u16, Option<&str>)]) -> ContainerDef {
        ContainerDef {
            name: name.into(),
            essential: true,
            ports: ports
                .iter()
                .map(|(p, n)| PortMapping {
                    container_port: *p,
                    name: n.map(Into::into),
                    app_protocol: None,
                })
                .collect(),
            labels: BTreeMap::new(),
        }
    }

    fn def(mode: NetworkMode, containers: Vec<ContainerDef>) -> TaskDef {
        TaskDef {
            revision: 1,
            network_mode: mode,
            containers,
        }
    }

    fn task(service: &str) -> TaskFacts {
        TaskFacts {
            arn: "arn:aws:ecs:us-east-1:123456789012:task/demo/0123abcd".into(),
            group: Some(format!("service:{service}")),
            last_status: "RUNNING".into(),
            desired_status: "RUNNING".into(),
            health: Some("HEALTHY".into()),
            zone: Some("us-east-1a".into()),
            task_definition_arn: "arn:aws:ecs:us-east-1:123456789012:task-definition/web:1".into(),
            eni_ipv4: Some("10.0.1.5".into()),
            ..TaskFacts::default()
        }
    }

    struct Fixture {
        settings: EcsSettings,
        filter: ServiceFilter,
    }

    impl Fixture {
        fn new(settings: EcsSettings) -> Self {
            let filter = settings.service_filter();
            Self { settings, filter }
        }

        fn map(
            &self,
            task: &TaskFacts,
            def: &TaskDef,
            tags: &[(&str, &str)],
            host: Option<&str>,
            draining: bool,
        ) -> (Vec<Mapped>, BTreeSet<String>) {
            let ctx = MappingContext {
                settings: &self.settings,
                filter: &self.filter,
                ecs_cluster: "demo",
                region: "us-east-1",
            };
            let tags = tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let mut warnings = BTreeSet::new();
            let mapped = map_task(&ctx, task, def, &tags, host, draining, &mut warnings);
            (mapped, warnings)
        }
    }

    fn default_map(task: &TaskFacts, def: &TaskDef) -> Vec<Mapped> {
        Fixture::new(EcsSettings::default())
            .map(task, def, &[], Some("172.31.0.9"), false)
            .0
    }

    fn summary(mapped: &[Mapped]) -> Vec<(String, String, u16)> {
        mapped
            .iter()
            .map(|m| {
                (
                    m.cluster_name.clone(),
                    m.endpoint.address.clone(),
                    m.endpoint.port,
                )
            })
            .collect()
    }

    #[test]
    fn awsvpc_task_is_an_endpoint_at_its_eni_ip_and_container_port() {
        let mapped = default_map(
            &task("web"),
            &def(NetworkMode::Awsvpc, vec![container("app", &[(8080, None)])]),
        );
        assert_eq!(summary(&mapped), [("web".into(), "10.0.1.5".into(), 8080)]);
        let e = &mapped[0].endpoint;
        assert_eq!(e.id, "0123abcd");
        assert_eq!(e.health, Health::Healthy);
        assert_eq!(e.weight, 1);
        assert_eq!(
            e.locality,
            Locality {
                region: "us-east-1".into(),
                zone: Some("us-east-1a".into())
            }
        );
    }

    #[test]
    fn bridge_task_uses_the_host_ip_and_its_dynamic_host_port() {
        let mut t = task("web");
        t.eni_ipv4 = None;
        t.containers = vec![ContainerFacts {
            name: "app".into(),
            bindings: vec![(9090, 32768), (8080, 49153)],
        }];
        let mapped = default_map(
            &t,
            &def(NetworkMode::Bridge, vec![container("app", &[(8080, None)])]),
        );
        assert_eq!(
            summary(&mapped),
            [("web".into(), "172.31.0.9".into(), 49153)]
        );
    }

    #[test]
    fn bridge_task_without_a_binding_yet_is_not_an_endpoint() {
        let mut t = task("web");
        t.containers = vec![ContainerFacts {
            name: "app".into(),
            bindings: vec![],
        }];
        assert!(default_map(
            &t,
            &def(NetworkMode::Bridge, vec![container("app", &[(8080, None)])])
        )
        .is_empty());
    }

    #[test]
    fn host_task_uses_the_host_ip_and_the_container_port() {
        let mapped = default_map(
            &task("web"),
            &def(NetworkMode::Host, vec![container("app", &[(7000, None)])]),
        );
        assert_eq!(
            summary(&mapped),
            [("web".into(), "172.31.0.9".into(), 7000)]
        );
    }

    #[test]
    fn task_health_maps_to_endpoint_health() {
        let d = def(NetworkMode::Awsvpc, vec![container("app", &[(80, None)])]);
        for (status, health) in [
            (Some("HEALTHY"), Health::Healthy),
            (Some("UNHEALTHY"), Health::Unhealthy),
            (Some("UNKNOWN"), Health::Unknown),
            (None, Health::Unknown),
        ] {
            let mut t = task("web");
            t.health = status.map(Into::into);
            assert_eq!(default_map(&t, &d)[0].endpoint.health, health, "{status:?}");
        }
    }

    #[test]
    fn stopping_task_that_still_runs_becomes_a_draining_endpoint() {
        let mut t = task("web");
        t.desired_status = "STOPPED".into();
        let d = def(NetworkMode::Awsvpc, vec![container("app", &[(80, None)])]);
        let (mapped, _) = Fixture::new(EcsSettings::default()).map(&t, &d, &[], None, true);
        assert_eq!(mapped[0].endpoint.health, Health::Draining);
    }

    #[test]
    fn only_running_tasks_of_services_are_endpoints() {
        let d = def(NetworkMode::Awsvpc, vec![container("app", &[(80, None)])]);
        let mut pending = task("web");
        pending.last_status = "PENDING".into();
        assert!(default_map(&pending, &d).is_empty());
        let mut standalone = task("web");
        standalone.group = Some("family:web".into());
        assert!(default_map(&standalone, &d).is_empty());
    }

    #[test]
    fn named_port_mappings_give_one_cluster_per_port_name() {
        let d = def(
            NetworkMode::Awsvpc,
            vec![container(
                "app",
                &[(8080, Some("http")), (9090, Some("grpc")), (9901, None)],
            )],
        );
        let mapped = default_map(&task("web"), &d);
        assert_eq!(
            summary(&mapped),
            [
                ("web.http".into(), "10.0.1.5".into(), 8080),
                ("web.grpc".into(), "10.0.1.5".into(), 9090)
            ]
        );
        assert_eq!(mapped[1].port_name.as_deref(), Some("grpc"));
    }

    #[test]
    fn envoy_sidecar_is_skipped_by_name_or_by_ignore_label() {
        let mut sidecar = container("proxy", &[(15000, None)]);
        sidecar
            .labels
            .insert("ecs-xds.ignore".into(), "true".into());
        let d = def(
            NetworkMode::Awsvpc,
            vec![
                container("envoy", &[(10000, None)]),
                sidecar,
                container("app", &[(8080, None)]),
            ],
        );
        assert_eq!(
            summary(&default_map(&task("web"), &d)),
            [("web".into(), "10.0.1.5".into(), 8080)]
        );
    }

    #[test]
    fn first_port_of_the_essential_container_is_used_without_names() {
        let mut helper = container("helper", &[(5000, None)]);
        helper.essential = false;
        let d = def(
            NetworkMode::Awsvpc,
            vec![helper, container("app", &[(8080, None), (8081, None)])],
        );
        assert_eq!(
            summary(&default_map(&task("web"), &d)),
            [("web".into(), "10.0.1.5".into(), 8080)]
        );
    }

    #[test]
    fn enable_tag_and_label_override_exposed_by_default() {
        let d = def(NetworkMode::Awsvpc, vec![container("app", &[(80, None)])]);
        let fx = Fixture::new(EcsSettings::default());
        assert!(fx
            .map(
                &task("web"),
                &d,
                &[("ecs-xds.enable", "false")],
                None,
                false
            )
            .0
            .is_empty());

        let hidden = Fixture::new(EcsSettings {
            exposed_by_default: false,
            ..EcsSettings::default()
        });
        assert!(hidden.map(&task("web"), &d, &[], None, false).0.is_empty());
        let mut labelled = d.clone();
        labelled.containers[0]
            .labels
            .insert("ecs-xds.enable".into(), "true".into());
        assert_eq!(
            hidden
                .map(&task("web"), &labelled, &[], None, false)
                .0
                .len(),
            1
        );
        // The service tag wins over the container label.
        assert!(hidden
            .map(
                &task("web"),
                &labelled,
                &[("ecs-xds.enable", "no")],
                None,
                false
            )
            .0
            .is_empty());
    }

    #[test]
    fn port_label_selects_one_port_and_cluster_name_tag_renames() {
        let mut app = container("app", &[(8080, Some("http")), (9090, Some("admin"))]);
        app.labels.insert("ecs-xds.port".into(), "admin".into());
        let d = def(NetworkMode::Awsvpc, vec![app]);
        let (mapped, warnings) = Fixture::new(EcsSettings::default()).map(
            &task("web"),
            &d,
            &[("ecs-xds.cluster-name", "frontend")],
            None,
            false,
        );
        assert_eq!(
            summary(&mapped),
            [("frontend".into(), "10.0.1.5".into(), 9090)]
        );
        assert!(warnings.is_empty(), "{warnings:?}");

        // A bare number works on awsvpc even without a port mapping for it.
        let (mapped, _) = Fixture::new(EcsSettings::default()).map(
            &task("web"),
            &d,
            &[("ecs-xds.port", "7777")],
            None,
            false,
        );
        assert_eq!(summary(&mapped), [("web".into(), "10.0.1.5".into(), 7777)]);
    }

    #[test]
    fn cluster_overrides_are_parsed_and_bad_values_are_warned_about() {
        let mut app = container("app", &[(8080, None)]);
        app.ports[0].app_protocol = Some("grpc".into());
        app.labels
            .insert("ecs-xds.lb-policy".into(), "least-request".into());
        app.labels
            .insert("ecs-xds.connect-timeout".into(), "250ms".into());
        let d = def(NetworkMode::Awsvpc, vec![app.clone()]);
        let (mapped, warnings) = Fixture::new(EcsSettings::default()).map(
            &task("web"),
            &d,
            &[("ecs-xds.weight", "5")],
            None,
            false,
        );
        assert_eq!(
            mapped[0].overrides,
            ClusterOverrides {
                lb_policy: Some(LbPolicy::LeastRequest),
                connect_timeout: Some(std::time::Duration::from_millis(250)),
                http2: Some(true)
            }
        );
        assert_eq!(mapped[0].endpoint.weight, 5);
        assert!(warnings.is_empty());

        app.labels
            .insert("ecs-xds.lb-policy".into(), "fastest".into());
        app.labels.insert("ecs-xds.http2".into(), "maybe".into());
        let (mapped, warnings) = Fixture::new(EcsSettings::default()).map(
            &task("web"),
            &def(NetworkMode::Awsvpc, vec![app]),
            &[],
            None,
            false,
        );
        assert_eq!(mapped[0].overrides.lb_policy, None);
        assert_eq!(
            mapped[0].overrides.http2,
            Some(true),
            "appProtocol still applies"
        );
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings
                .iter()
                .all(|w| w.starts_with("ECS service demo/web: ecs-xds.")),
            "{warnings:?}"
        );
    }

    #[test]
    fn templates_can_qualify_names_with_the_ecs_cluster() {
        let settings = EcsSettings {
            cluster_name: "{ecs_cluster}-{service}".into(),
            port_cluster_name: "{ecs_cluster}-{service}-{port_name}".into(),
            ..EcsSettings::default()
        };
        let fx = Fixture::new(settings);
        let one = def(NetworkMode::Awsvpc, vec![container("app", &[(80, None)])]);
        assert_eq!(
            fx.map(&task("web"), &one, &[], None, false).0[0].cluster_name,
            "demo-web"
        );
        let named = def(
            NetworkMode::Awsvpc,
            vec![container("app", &[(80, Some("http"))])],
        );
        assert_eq!(
            fx.map(&task("web"), &named, &[], None, false).0[0].cluster_name,
            "demo-web-http"
        );
    }

    #[test]
    fn excluded_services_are_not_mapped() {
        let fx = Fixture::new(EcsSettings {
            exclude_services: vec!["w*".into()],
            ..EcsSettings::default()
        });
        let d = def(NetworkMode::Awsvpc, vec![container("app", &[(80, None)])]);
        assert!(fx.map(&task("web"), &d, &[], None, false).0.is_empty());
        assert_eq!(fx.map(&task("api"), &d, &[], None, false).0.len(), 1);
    }
}
