//! The plain facts ECS answers, as the mapping needs them: a task (DescribeTasks) and its
//! task definition (DescribeTaskDefinition, immutable per ARN, so cached), converted from the
//! SDK's types as soon as they arrive.

use std::collections::BTreeMap;

/// What the mapping needs from a DescribeTasks result.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskFacts {
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
    /// The task role this task was run with (`overrides.taskRoleArn`), when it overrides its
    /// task definition's.
    pub task_role_override: Option<String>,
}

/// A running container's host port bindings (bridge networking).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerFacts {
    pub name: String,
    /// (container port, host port)
    pub bindings: Vec<(u16, u16)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkMode {
    Awsvpc,
    Bridge,
    Host,
    None,
}

/// What the mapping needs from a task definition (immutable, so cached by ARN).
#[derive(Debug, Clone, PartialEq)]
pub struct TaskDef {
    pub revision: i32,
    pub network_mode: NetworkMode,
    pub containers: Vec<ContainerDef>,
    /// `taskRoleArn`: the IAM role the task's containers get credentials for.
    pub task_role_arn: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerDef {
    pub name: String,
    pub essential: bool,
    pub ports: Vec<PortMapping>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct PortMapping {
    pub container_port: u16,
    pub name: Option<String>,
    /// ECS `appProtocol`: `http`, `http2` or `grpc`.
    pub app_protocol: Option<String>,
}

/// The facts of a task definition the mapping needs.
pub(super) fn task_def(td: &aws_sdk_ecs::types::TaskDefinition) -> TaskDef {
    let fargate = td
        .requires_compatibilities()
        .iter()
        .any(|c| c.as_str() == "FARGATE");
    let network_mode = match td.network_mode().map(|m| m.as_str()) {
        Some("awsvpc") => NetworkMode::Awsvpc,
        Some("host") => NetworkMode::Host,
        Some("none") => NetworkMode::None,
        Some("bridge") => NetworkMode::Bridge,
        // Unset: Fargate is always awsvpc; on EC2 (Linux) the default is bridge.
        _ if fargate => NetworkMode::Awsvpc,
        _ => NetworkMode::Bridge,
    };
    let containers = td
        .container_definitions()
        .iter()
        .map(|c| ContainerDef {
            name: c.name().unwrap_or_default().to_owned(),
            essential: c.essential().unwrap_or(true),
            ports: c
                .port_mappings()
                .iter()
                .filter_map(|p| {
                    Some(PortMapping {
                        container_port: u16::try_from(p.container_port()?).ok()?,
                        name: p.name().map(str::to_owned),
                        app_protocol: p.app_protocol().map(|a| a.as_str().to_owned()),
                    })
                })
                .collect(),
            labels: c
                .docker_labels()
                .map(|l| l.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
        })
        .collect();
    TaskDef {
        revision: td.revision(),
        network_mode,
        containers,
        task_role_arn: td.task_role_arn().map(str::to_owned),
    }
}

pub(super) fn task_facts(t: &aws_sdk_ecs::types::Task) -> TaskFacts {
    let eni_ipv4 = t
        .attachments()
        .iter()
        .filter(|a| a.r#type() == Some("ElasticNetworkInterface"))
        .flat_map(|a| a.details())
        .find(|d| d.name() == Some("privateIPv4Address"))
        .and_then(|d| d.value())
        .or_else(|| {
            t.containers()
                .iter()
                .flat_map(|c| c.network_interfaces())
                .find_map(|n| n.private_ipv4_address())
        })
        .map(str::to_owned);
    TaskFacts {
        arn: t.task_arn().unwrap_or_default().to_owned(),
        group: t.group().map(str::to_owned),
        last_status: t.last_status().unwrap_or_default().to_owned(),
        desired_status: t.desired_status().unwrap_or_default().to_owned(),
        health: t.health_status().map(|h| h.as_str().to_owned()),
        zone: t.availability_zone().map(str::to_owned),
        task_definition_arn: t.task_definition_arn().unwrap_or_default().to_owned(),
        eni_ipv4,
        container_instance_arn: t.container_instance_arn().map(str::to_owned),
        started_by: t.started_by().map(str::to_owned),
        containers: t
            .containers()
            .iter()
            .map(|c| ContainerFacts {
                name: c.name().unwrap_or_default().to_owned(),
                bindings: c
                    .network_bindings()
                    .iter()
                    .filter_map(|b| {
                        Some((
                            u16::try_from(b.container_port()?).ok()?,
                            u16::try_from(b.host_port()?).ok()?,
                        ))
                    })
                    .collect(),
            })
            .collect(),
        tags: t
            .tags()
            .iter()
            .filter_map(|tag| Some((tag.key()?.to_owned(), tag.value()?.to_owned())))
            .collect(),
        version: Some(t.version()).filter(|v| *v > 0),
        task_role_override: t
            .overrides()
            .and_then(|o| o.task_role_arn())
            .map(str::to_owned),
    }
}
