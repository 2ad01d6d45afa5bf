//! The ECS and EC2 requests discovery makes, one function per request, each turning the SDK's
//! types into the plain facts of `mapping.rs` right away.

use std::collections::BTreeMap;

use aws_sdk_ecs::types::{DesiredStatus, ServiceField, TaskField};

use super::aws::Aws;
use super::mapping::{ContainerDef, ContainerFacts, NetworkMode, PortMapping, TaskDef, TaskFacts};
use super::DiscoverError;

/// ECS pages ListTasks at 100 at most, and DescribeTasks takes 100 tasks at most.
pub(crate) const TASK_BATCH: usize = 100;
/// DescribeServices takes 10 services at most.
pub(crate) const SERVICE_BATCH: usize = 10;
/// DescribeContainerInstances takes 100 at most; EC2 DescribeInstances is kept to the same.
pub(crate) const INSTANCE_BATCH: usize = 100;

pub(crate) fn target(ecs_cluster: &str) -> String {
    format!("ECS cluster {ecs_cluster}")
}

impl Aws {
    /// Names of every ECS cluster of the account and region, sorted.
    pub(crate) async fn list_clusters(&self) -> Result<Vec<String>, DiscoverError> {
        let mut names = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = self
                .call("ListClusters", "the account's ECS clusters", || {
                    self.ecs
                        .list_clusters()
                        .max_results(100)
                        .set_next_token(token.clone())
                        .send()
                })
                .await?;
            names.extend(
                out.cluster_arns()
                    .iter()
                    .map(|arn| arn.rsplit('/').next().unwrap_or(arn).to_owned()),
            );
            token = out.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// ListTasks (desired status RUNNING), every page. Tasks being stopped are not listed.
    pub(crate) async fn list_running_task_arns(
        &self,
        cluster: &str,
    ) -> Result<Vec<String>, DiscoverError> {
        let mut arns = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = self
                .call("ListTasks", &target(cluster), || {
                    self.ecs
                        .list_tasks()
                        .cluster(cluster)
                        .desired_status(DesiredStatus::Running)
                        .max_results(TASK_BATCH as i32)
                        .set_next_token(token.clone())
                        .send()
                })
                .await?;
            arns.extend(out.task_arns().iter().cloned());
            token = out.next_token().map(str::to_owned);
            if token.is_none() {
                return Ok(arns);
            }
        }
    }

    /// DescribeTasks with tags for at most [`TASK_BATCH`] tasks.
    pub(crate) async fn describe_tasks(
        &self,
        cluster: &str,
        arns: &[String],
    ) -> Result<Vec<TaskFacts>, DiscoverError> {
        let out = self
            .call("DescribeTasks", &target(cluster), || {
                self.ecs
                    .describe_tasks()
                    .cluster(cluster)
                    .set_tasks(Some(arns.to_vec()))
                    .include(TaskField::Tags)
                    .send()
            })
            .await?;
        Ok(out.tasks().iter().map(task_facts).collect())
    }

    /// DescribeServices with tags for at most [`SERVICE_BATCH`] services: (name, tags). A
    /// service ECS no longer knows is simply missing from the answer.
    pub(crate) async fn describe_services(
        &self,
        cluster: &str,
        names: &[String],
    ) -> Result<Vec<(String, BTreeMap<String, String>)>, DiscoverError> {
        let out = self
            .call("DescribeServices", &target(cluster), || {
                self.ecs
                    .describe_services()
                    .cluster(cluster)
                    .set_services(Some(names.to_vec()))
                    .include(ServiceField::Tags)
                    .send()
            })
            .await?;
        Ok(out
            .services()
            .iter()
            .filter_map(|s| {
                let tags = s
                    .tags()
                    .iter()
                    .filter_map(|t| Some((t.key()?.to_owned(), t.value()?.to_owned())))
                    .collect();
                Some((s.service_name()?.to_owned(), tags))
            })
            .collect())
    }

    pub(crate) async fn describe_task_definition(
        &self,
        cluster: &str,
        arn: &str,
    ) -> Result<TaskDef, DiscoverError> {
        let out = self
            .call("DescribeTaskDefinition", &target(cluster), || {
                self.ecs
                    .describe_task_definition()
                    .task_definition(arn)
                    .send()
            })
            .await?;
        let Some(td) = out.task_definition() else {
            return Err(DiscoverError::NotFound {
                target: format!("task definition {arn}"),
                message: "empty answer".into(),
            });
        };
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
        Ok(TaskDef {
            revision: td.revision(),
            network_mode,
            containers,
        })
    }

    /// DescribeContainerInstances for at most [`INSTANCE_BATCH`]: (container instance ARN, EC2
    /// instance id).
    pub(crate) async fn describe_container_instances(
        &self,
        cluster: &str,
        arns: &[String],
    ) -> Result<Vec<(String, String)>, DiscoverError> {
        let out = self
            .call("DescribeContainerInstances", &target(cluster), || {
                self.ecs
                    .describe_container_instances()
                    .cluster(cluster)
                    .set_container_instances(Some(arns.to_vec()))
                    .send()
            })
            .await?;
        Ok(out
            .container_instances()
            .iter()
            .filter_map(|ci| {
                Some((
                    ci.container_instance_arn()?.to_owned(),
                    ci.ec2_instance_id()?.to_owned(),
                ))
            })
            .collect())
    }

    /// EC2 DescribeInstances for at most [`INSTANCE_BATCH`] ids: (instance id, private IPv4).
    pub(crate) async fn describe_instance_ips(
        &self,
        cluster: &str,
        ids: &[String],
    ) -> Result<Vec<(String, String)>, DiscoverError> {
        let out = self
            .call("DescribeInstances", &target(cluster), || {
                self.ec2
                    .describe_instances()
                    .set_instance_ids(Some(ids.to_vec()))
                    .send()
            })
            .await?;
        Ok(out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .filter_map(|i| {
                Some((
                    i.instance_id()?.to_owned(),
                    i.private_ip_address()?.to_owned(),
                ))
            })
            .collect())
    }
}

fn task_facts(t: &aws_sdk_ecs::types::Task) -> TaskFacts {
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
    }
}
