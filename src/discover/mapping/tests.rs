//! Unit tests of the pure task → endpoint mapping.

use super::*;
use crate::aws::ContainerFacts;
use crate::inventory::LbPolicy;

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
        task_role_arn: None,
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
            account: "123456789012",
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
            http2: Some(true),
            ..ClusterOverrides::default()
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

#[test]
fn task_without_a_known_address_is_left_out_with_a_warning() {
    let mut t = task("web");
    t.eni_ipv4 = None;
    let d = def(NetworkMode::Awsvpc, vec![container("app", &[(80, None)])]);
    let (mapped, warnings) = Fixture::new(EcsSettings::default()).map(&t, &d, &[], None, false);
    assert!(mapped.is_empty());
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings
        .iter()
        .next()
        .unwrap()
        .contains("task 0123abcd has no address yet"));

    let host = def(NetworkMode::Host, vec![container("app", &[(80, None)])]);
    let (mapped, warnings) =
        Fixture::new(EcsSettings::default()).map(&task("web"), &host, &[], None, false);
    assert!(mapped.is_empty() && warnings.len() == 1);
}

#[test]
fn service_wide_labels_come_from_the_container_serving_the_port() {
    let mut helper = container("log-router", &[]);
    helper.essential = false;
    helper
        .labels
        .insert("ecs-xds.cluster-name".into(), "wrong".into());
    let mut app = container("app", &[(8080, None)]);
    app.labels
        .insert("ecs-xds.cluster-name".into(), "storefront".into());
    let d = def(NetworkMode::Awsvpc, vec![helper, app]);
    assert_eq!(default_map(&task("web"), &d)[0].cluster_name, "storefront");
}

#[test]
fn service_tags_give_the_traffic_policy_and_a_bad_one_only_a_warning() {
    let mut t = task("web");
    t.started_by = Some("ecs-svc/4455667788".into());
    let mut definition = def(NetworkMode::Awsvpc, vec![container("app", &[(8080, None)])]);
    definition.revision = 12;
    definition.containers[0]
        .labels
        .insert("ecs-xds.timeout".into(), "9s".into());
    let (mapped, warnings) = Fixture::new(EcsSettings::default()).map(
        &t,
        &definition,
        &[
            ("ecs-xds.timeout", "2s"),
            ("ecs-xds.retries", "three"),
            ("ecs-xds.weights", "12=10,11=90"),
            ("ecs-xds.max-connections", "50"),
        ],
        None,
        false,
    );
    let m = &mapped[0];
    assert_eq!(
        m.route.timeout,
        Some(std::time::Duration::from_secs(2)),
        "the tag wins over the label"
    );
    assert_eq!(m.route.retries, None);
    assert_eq!(m.route.weights.len(), 2);
    assert_eq!(m.overrides.circuit_breakers.max_connections, Some(50));
    assert_eq!(m.endpoint.revision, Some(12));
    assert_eq!(m.endpoint.deployment.as_deref(), Some("ecs-svc/4455667788"));
    assert_eq!(
        warnings.into_iter().collect::<Vec<_>>(),
        ["ECS service demo/web: ecs-xds.retries=`three`: not a whole number from 0 to 10; using the template's default"]
    );
}

#[test]
fn a_service_serving_no_port_still_declares_what_it_calls() {
    let fixture = Fixture::new(EcsSettings::default());
    let ctx = MappingContext {
        settings: &fixture.settings,
        filter: &fixture.filter,
        ecs_cluster: "demo",
        region: "us-east-1",
        account: "123456789012",
    };
    let worker = def(NetworkMode::Awsvpc, vec![container("worker", &[])]);
    let mut warnings = BTreeSet::new();
    let tags: BTreeMap<String, String> =
        [("ecs-xds.backends".to_owned(), "orders payments".to_owned())].into();
    assert!(fixture
        .map(&task("queue"), &worker, &[], None, false)
        .0
        .is_empty());
    let declared = declared_backends(&ctx, &task("queue"), &worker, &tags, &mut warnings);
    assert_eq!(
        declared,
        Some((
            "queue".to_owned(),
            vec!["orders".to_owned(), "payments".to_owned()]
        ))
    );
    // A label works too; a malformed value is a warning and declares nothing.
    let mut labelled = worker.clone();
    labelled.containers[0]
        .labels
        .insert("ecs-xds.backends".into(), "a[b".into());
    let none = BTreeMap::new();
    assert_eq!(
        declared_backends(&ctx, &task("queue"), &labelled, &none, &mut warnings),
        None
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("ECS service demo/queue: ecs-xds.backends=`a[b`")),
        "{warnings:?}"
    );
}
