//! A recorded-response AWS for discovery: SDK clients whose requests are answered by
//! aws-smithy-mocks rules computed from an in-memory [`World`], so paging, batch limits,
//! throttling and failures behave as real ECS does (moto can't: it neither pages nor limits
//! batches). No request leaves the process. Shared with `examples/discover-calls.rs`.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use aws_sdk_ecs::config::{Credentials, Region};
use aws_sdk_ecs::error::ErrorMetadata;
use aws_sdk_ecs::types::{
    Attachment, Container, ContainerDefinition, ContainerInstance, DesiredStatus, HealthStatus,
    KeyValuePair, NetworkBinding, NetworkMode, PortMapping, Service, Tag, Task, TaskDefinition,
};
use aws_smithy_mocks::{mock, MockResponse, MockResponseInterceptor, Rule, RuleMode};
use ecs_xds::aws::{Aws, RetryPolicy};

pub const REGION: &str = "us-east-1";
pub const ACCOUNT: &str = "123456789012";

/// The AWS state the fake answers from. Tests change it between polls.
#[derive(Debug, Default)]
pub struct World {
    /// Tasks per ECS cluster name, in listing order.
    pub tasks: BTreeMap<String, Vec<Task>>,
    /// Task definitions by ARN.
    pub task_defs: BTreeMap<String, TaskDefinition>,
    /// Service tags per (cluster, service name); a service listed here exists.
    pub services: BTreeMap<(String, String), Vec<Tag>>,
    /// Container instance ARN → EC2 instance id.
    pub container_instances: BTreeMap<String, String>,
    /// EC2 instance id → private IP.
    pub instance_ips: BTreeMap<String, String>,
    /// Answer the next N ListTasks with ThrottlingException.
    pub throttle_list_tasks: usize,
    /// Answer every DescribeTasks on these clusters with ServerException.
    pub fail_describe_tasks: Vec<String>,
}

#[derive(Clone, Default)]
pub struct Fake {
    world: Arc<Mutex<World>>,
}

impl Fake {
    pub fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap()
    }

    /// Discovery clients answered by this fake, with millisecond retries.
    pub fn aws(&self) -> Aws {
        let fast = RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
        };
        Aws::from_clients(
            self.ecs_client(),
            self.ec2_client(),
            self.cloud_map_client(),
            REGION,
        )
        .with_retry_policy(fast)
    }

    fn ecs_client(&self) -> aws_sdk_ecs::Client {
        let w = self.world.clone();
        let list_tasks =
            mock!(aws_sdk_ecs::Client::list_tasks).then_compute_response(move |input| {
                let mut world = w.lock().unwrap();
                if world.throttle_list_tasks > 0 {
                    world.throttle_list_tasks -= 1;
                    return MockResponse::Error(
                        aws_sdk_ecs::operation::list_tasks::ListTasksError::generic(throttling()),
                    );
                }
                let page = input.max_results().unwrap_or(100) as usize;
                assert!(page <= 100, "ListTasks maxResults is at most 100");
                let wants_running = input.desired_status() == Some(&DesiredStatus::Running);
                let arns: Vec<String> = world
                    .tasks
                    .get(input.cluster().unwrap_or("default"))
                    .into_iter()
                    .flatten()
                    .filter(|t| !wants_running || t.desired_status() == Some("RUNNING"))
                    .filter_map(|t| t.task_arn().map(str::to_owned))
                    .collect();
                let start: usize = input.next_token().map_or(0, |t| t.parse().unwrap());
                let end = (start + page).min(arns.len());
                MockResponse::Output(
                    aws_sdk_ecs::operation::list_tasks::ListTasksOutput::builder()
                        .set_task_arns(Some(arns[start..end].to_vec()))
                        .set_next_token((end < arns.len()).then(|| end.to_string()))
                        .build(),
                )
            });
        let w = self.world.clone();
        let describe_tasks =
            mock!(aws_sdk_ecs::Client::describe_tasks).then_compute_response(move |input| {
                let world = w.lock().unwrap();
                let cluster = input.cluster().unwrap_or("default");
                if input.tasks().len() > 100 {
                    return MockResponse::Error(
                        aws_sdk_ecs::operation::describe_tasks::DescribeTasksError::generic(error(
                            "InvalidParameterException",
                            "Tasks cannot contain more than 100 elements",
                        )),
                    );
                }
                if world.fail_describe_tasks.iter().any(|c| c == cluster) {
                    return MockResponse::Error(
                        aws_sdk_ecs::operation::describe_tasks::DescribeTasksError::generic(error(
                            "ServerException",
                            "Service unavailable (recorded)",
                        )),
                    );
                }
                let wanted: std::collections::HashSet<&str> =
                    input.tasks().iter().map(String::as_str).collect();
                let tasks = world.tasks.get(cluster).into_iter().flatten();
                let found = tasks
                    .filter(|t| t.task_arn().is_some_and(|a| wanted.contains(a)))
                    .cloned();
                MockResponse::Output(
                    aws_sdk_ecs::operation::describe_tasks::DescribeTasksOutput::builder()
                        .set_tasks(Some(found.collect()))
                        .build(),
                )
            });
        let w = self.world.clone();
        let describe_services = mock!(aws_sdk_ecs::Client::describe_services)
            .then_compute_response(move |input| {
                let world = w.lock().unwrap();
                if input.services().len() > 10 {
                    return MockResponse::Error(
                        aws_sdk_ecs::operation::describe_services::DescribeServicesError::generic(
                            error(
                                "InvalidParameterException",
                                "Services cannot contain more than 10 elements",
                            ),
                        ),
                    );
                }
                let cluster = input.cluster().unwrap_or("default").to_owned();
                let services = input.services().iter().filter_map(|name| {
                    let tags = world.services.get(&(cluster.clone(), name.clone()))?;
                    Some(
                        Service::builder()
                            .service_name(name)
                            .set_tags(Some(tags.clone()))
                            .build(),
                    )
                });
                MockResponse::Output(
                    aws_sdk_ecs::operation::describe_services::DescribeServicesOutput::builder()
                        .set_services(Some(services.collect()))
                        .build(),
                )
            });
        let w = self.world.clone();
        let describe_task_definition =
            mock!(aws_sdk_ecs::Client::describe_task_definition).then_compute_response(move |input| {
                let world = w.lock().unwrap();
                match world.task_defs.get(input.task_definition().unwrap_or_default()) {
                    Some(td) => MockResponse::Output(
                        aws_sdk_ecs::operation::describe_task_definition::DescribeTaskDefinitionOutput::builder()
                            .task_definition(td.clone())
                            .build(),
                    ),
                    None => MockResponse::Error(
                        aws_sdk_ecs::operation::describe_task_definition::DescribeTaskDefinitionError::generic(error(
                            "ClientException",
                            "Unable to describe task definition.",
                        )),
                    ),
                }
            });
        let w = self.world.clone();
        let describe_container_instances =
            mock!(aws_sdk_ecs::Client::describe_container_instances).then_compute_response(move |input| {
                let world = w.lock().unwrap();
                assert!(input.container_instances().len() <= 100);
                let found = input.container_instances().iter().filter_map(|arn| {
                    let id = world.container_instances.get(arn)?;
                    Some(ContainerInstance::builder().container_instance_arn(arn).ec2_instance_id(id).build())
                });
                MockResponse::Output(
                    aws_sdk_ecs::operation::describe_container_instances::DescribeContainerInstancesOutput::builder()
                        .set_container_instances(Some(found.collect()))
                        .build(),
                )
            });
        let w = self.world.clone();
        let list_clusters =
            mock!(aws_sdk_ecs::Client::list_clusters).then_compute_response(move |_| {
                let world = w.lock().unwrap();
                let arns = world
                    .tasks
                    .keys()
                    .map(|c| format!("arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/{c}"));
                MockResponse::Output(
                    aws_sdk_ecs::operation::list_clusters::ListClustersOutput::builder()
                        .set_cluster_arns(Some(arns.collect()))
                        .build(),
                )
            });
        let rules = [
            list_tasks,
            describe_tasks,
            describe_services,
            describe_task_definition,
            describe_container_instances,
            list_clusters,
        ];
        aws_sdk_ecs::Client::from_conf(
            aws_sdk_ecs::Config::builder()
                .behavior_version_latest()
                .region(Region::new(REGION))
                .credentials_provider(Credentials::new("testing", "testing", None, None, "fake"))
                .http_client(aws_smithy_mocks::create_mock_http_client())
                .interceptor(interceptor(&rules))
                .build(),
        )
    }

    fn ec2_client(&self) -> aws_sdk_ec2::Client {
        let w = self.world.clone();
        let describe_instances = mock!(aws_sdk_ec2::Client::describe_instances)
            .then_compute_response(move |input| {
                let world = w.lock().unwrap();
                let ids = input.instance_ids();
                assert!(ids.len() <= 100);
                let instances = ids.iter().filter_map(|id| {
                    let ip = world.instance_ips.get(id)?;
                    Some(
                        aws_sdk_ec2::types::Instance::builder()
                            .instance_id(id)
                            .private_ip_address(ip)
                            .build(),
                    )
                });
                let reservation = aws_sdk_ec2::types::Reservation::builder()
                    .set_instances(Some(instances.collect()))
                    .build();
                MockResponse::Output(
                    aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput::builder()
                        .reservations(reservation)
                        .build(),
                )
            });
        aws_sdk_ec2::Client::from_conf(
            aws_sdk_ec2::Config::builder()
                .behavior_version_latest()
                .region(aws_sdk_ec2::config::Region::new(REGION))
                .credentials_provider(Credentials::new("testing", "testing", None, None, "fake"))
                .http_client(aws_smithy_mocks::create_mock_http_client())
                .interceptor(interceptor(&[describe_instances]))
                .build(),
        )
    }

    fn cloud_map_client(&self) -> aws_sdk_servicediscovery::Client {
        aws_sdk_servicediscovery::Client::from_conf(
            aws_sdk_servicediscovery::Config::builder()
                .behavior_version_latest()
                .region(aws_sdk_servicediscovery::config::Region::new(REGION))
                .credentials_provider(Credentials::new("testing", "testing", None, None, "fake"))
                .http_client(aws_smithy_mocks::create_mock_http_client())
                .interceptor(interceptor(&[]))
                .build(),
        )
    }
}

fn interceptor(rules: &[Rule]) -> MockResponseInterceptor {
    rules.iter().fold(
        MockResponseInterceptor::new().rule_mode(RuleMode::MatchAny),
        |i, r| i.with_rule(r),
    )
}

fn error(code: &str, message: &str) -> ErrorMetadata {
    ErrorMetadata::builder().code(code).message(message).build()
}

fn throttling() -> ErrorMetadata {
    error("ThrottlingException", "Rate exceeded")
}

// ---- builders for the world's contents ----

pub fn task_arn(cluster: &str, id: &str) -> String {
    format!("arn:aws:ecs:{REGION}:{ACCOUNT}:task/{cluster}/{id}")
}

pub fn task_def_arn(family: &str, revision: i32) -> String {
    format!("arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/{family}:{revision}")
}

/// A task definition with an `app` container on `ports` ((container port, name)) and an
/// `envoy` sidecar.
pub fn task_def(
    family: &str,
    revision: i32,
    mode: NetworkMode,
    ports: &[(i32, Option<&str>)],
) -> TaskDefinition {
    let bridge = mode == NetworkMode::Bridge;
    let mappings = ports.iter().map(|(p, name)| {
        PortMapping::builder()
            .container_port(*p)
            .set_host_port(if bridge { Some(0) } else { Some(*p) })
            .set_name(name.map(str::to_owned))
            .build()
    });
    TaskDefinition::builder()
        .task_definition_arn(task_def_arn(family, revision))
        .family(family)
        .revision(revision)
        .network_mode(mode)
        .container_definitions(
            ContainerDefinition::builder()
                .name("app")
                .essential(true)
                .set_port_mappings(Some(mappings.collect()))
                .build(),
        )
        .container_definitions(
            ContainerDefinition::builder()
                .name("envoy")
                .essential(true)
                .port_mappings(PortMapping::builder().container_port(15000).build())
                .build(),
        )
        .build()
}

/// A RUNNING awsvpc task of `service` at ENI address `ip`.
pub fn awsvpc_task(
    cluster: &str,
    id: &str,
    service: &str,
    task_def: &str,
    ip: &str,
    zone: &str,
) -> Task {
    Task::builder()
        .task_arn(task_arn(cluster, id))
        .group(format!("service:{service}"))
        .last_status("RUNNING")
        .desired_status("RUNNING")
        .health_status(HealthStatus::Healthy)
        .availability_zone(zone)
        .task_definition_arn(task_def)
        .attachments(
            Attachment::builder()
                .r#type("ElasticNetworkInterface")
                .details(
                    KeyValuePair::builder()
                        .name("privateIPv4Address")
                        .value(ip)
                        .build(),
                )
                .build(),
        )
        .containers(Container::builder().name("app").build())
        .build()
}

/// A RUNNING task on an EC2 container instance; `bindings` are the app container's (container
/// port, host port) network bindings (empty for host networking).
pub fn ec2_task(
    cluster: &str,
    id: &str,
    service: &str,
    task_def: &str,
    container_instance: &str,
    bindings: &[(i32, i32)],
) -> Task {
    let bindings = bindings.iter().map(|(c, h)| {
        NetworkBinding::builder()
            .container_port(*c)
            .host_port(*h)
            .build()
    });
    Task::builder()
        .task_arn(task_arn(cluster, id))
        .group(format!("service:{service}"))
        .last_status("RUNNING")
        .desired_status("RUNNING")
        .availability_zone("us-east-1b")
        .task_definition_arn(task_def)
        .container_instance_arn(container_instance)
        .containers(
            Container::builder()
                .name("app")
                .set_network_bindings(Some(bindings.collect()))
                .build(),
        )
        .build()
}

/// `count` awsvpc tasks spread over `services` services (one task-definition revision each),
/// all in `cluster`: the shape the efficiency figure is measured on.
pub fn populate(world: &mut World, cluster: &str, services: usize, count: usize) {
    for s in 0..services {
        let name = format!("svc-{s:04}");
        world.task_defs.insert(
            task_def_arn(&name, 1),
            task_def(&name, 1, NetworkMode::Awsvpc, &[(8080, None)]),
        );
        world
            .services
            .insert((cluster.to_owned(), name), Vec::new());
    }
    let tasks = world.tasks.entry(cluster.to_owned()).or_default();
    for t in 0..count {
        let name = format!("svc-{:04}", t % services);
        let ip = format!("10.{}.{}.{}", (t >> 16) & 255, (t >> 8) & 255, t & 255);
        let zone = ["us-east-1a", "us-east-1b", "us-east-1c"][t % 3];
        tasks.push(awsvpc_task(
            cluster,
            &format!("task{t:06}"),
            &name,
            &task_def_arn(&name, 1),
            &ip,
            zone,
        ));
    }
}
