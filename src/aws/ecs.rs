//! The ECS requests discovery makes, one function per request, each turning the SDK's types
//! into the plain facts of `ecs/facts.rs` right away.

use std::collections::BTreeMap;

use aws_sdk_ecs::operation::list_clusters::ListClustersOutput;
use aws_sdk_ecs::operation::list_tasks::ListTasksOutput;
use aws_sdk_ecs::types::{DesiredStatus, ServiceField, TaskField};

use super::retry::Request;
use super::{Aws, AwsError, TaskDef, TaskFacts};

pub(super) mod facts;

/// ECS pages ListTasks at 100 at most, and DescribeTasks takes 100 tasks at most.
pub(crate) const TASK_BATCH: usize = 100;
/// DescribeServices takes 10 services at most.
pub(crate) const SERVICE_BATCH: usize = 10;
/// DescribeContainerInstances takes 100 at most; EC2 DescribeInstances is kept to the same.
pub(crate) const INSTANCE_BATCH: usize = 100;

fn target(ecs_cluster: &str) -> String {
    format!("ECS cluster {ecs_cluster}")
}

impl Aws {
    /// Names of every ECS cluster of the account and region, sorted.
    pub(crate) async fn list_clusters(&self) -> Result<Vec<String>, AwsError> {
        let request = Request::new("ListClusters");
        let send = |token| {
            let list = self.ecs.list_clusters().max_results(100);
            list.set_next_token(token).send()
        };
        let page = |out: ListClustersOutput| {
            let arns = out.cluster_arns().iter();
            let names = arns.map(|arn| arn.rsplit('/').next().unwrap_or(arn).to_owned());
            (names.collect(), out.next_token().map(str::to_owned))
        };
        let target = "the account's ECS clusters";
        let mut names = self.call_paged(request, target, send, page).await?;
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// ListTasks (desired status RUNNING), every page. Tasks being stopped are not listed.
    pub(crate) async fn list_running_task_arns(
        &self,
        cluster: &str,
    ) -> Result<Vec<String>, AwsError> {
        let send = |token| {
            let list = self.ecs.list_tasks().cluster(cluster);
            let list = list.desired_status(DesiredStatus::Running);
            list.max_results(TASK_BATCH as i32)
                .set_next_token(token)
                .send()
        };
        let page = |out: ListTasksOutput| {
            (
                out.task_arns().to_vec(),
                out.next_token().map(str::to_owned),
            )
        };
        self.call_paged(Request::new("ListTasks"), &target(cluster), send, page)
            .await
    }

    /// DescribeTasks with tags for at most [`TASK_BATCH`] tasks.
    pub(crate) async fn describe_tasks(
        &self,
        cluster: &str,
        arns: &[String],
    ) -> Result<Vec<TaskFacts>, AwsError> {
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
        Ok(out.tasks().iter().map(facts::task_facts).collect())
    }

    /// DescribeServices with tags for at most [`SERVICE_BATCH`] services: (name, tags). A
    /// service ECS no longer knows is simply missing from the answer.
    pub(crate) async fn describe_services(
        &self,
        cluster: &str,
        names: &[String],
    ) -> Result<Vec<(String, BTreeMap<String, String>)>, AwsError> {
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
    ) -> Result<TaskDef, AwsError> {
        let out = self
            .call("DescribeTaskDefinition", &target(cluster), || {
                self.ecs
                    .describe_task_definition()
                    .task_definition(arn)
                    .send()
            })
            .await?;
        match out.task_definition() {
            Some(td) => Ok(facts::task_def(td)),
            None => Err(AwsError::empty(
                "DescribeTaskDefinition",
                format!("task definition {arn}"),
                "task definition",
            )),
        }
    }

    /// DescribeContainerInstances for at most [`INSTANCE_BATCH`]: (container instance ARN, EC2
    /// instance id).
    pub(crate) async fn describe_container_instances(
        &self,
        cluster: &str,
        arns: &[String],
    ) -> Result<Vec<(String, String)>, AwsError> {
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
}
