//! SQS message body → [`Event`]: the EventBridge envelope (raw, or inside an SNS notification
//! when the subscription does not use raw delivery) and the `detail` of the ECS events
//! discovery acts on, and of ECS tag calls through CloudTrail (`tag_call.rs`). Pure, no AWS
//! types: `detail` is the task as DescribeTasks returns it, in JSON, so it becomes the same
//! [`TaskFacts`] a poll gives.
//!
//! Unknown fields are ignored everywhere (ECS adds fields over time); a field discovery needs
//! that is missing or of the wrong type makes the message undecodable.

use std::time::SystemTime;

use serde::Deserialize;

use crate::aws::{ContainerFacts, TaskFacts};

mod tag_call;

/// The EventBridge `detail-type`s discovery knows, and the label they get in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DetailType {
    TaskStateChange,
    ServiceAction,
    DeploymentStateChange,
    ContainerInstanceStateChange,
    /// `TagResource` or `UntagResource` on ECS, through CloudTrail.
    TagChange,
    /// Any other event: acknowledged and left alone.
    Other,
}

impl DetailType {
    pub const ALL: [DetailType; 6] = [
        DetailType::TaskStateChange,
        DetailType::ServiceAction,
        DetailType::DeploymentStateChange,
        DetailType::ContainerInstanceStateChange,
        DetailType::TagChange,
        DetailType::Other,
    ];

    fn parse(detail_type: &str) -> DetailType {
        match detail_type {
            "ECS Task State Change" => DetailType::TaskStateChange,
            "ECS Service Action" => DetailType::ServiceAction,
            "ECS Deployment State Change" => DetailType::DeploymentStateChange,
            "ECS Container Instance State Change" => DetailType::ContainerInstanceStateChange,
            // Any ECS API call: `decode` keeps only the tag calls.
            "AWS API Call via CloudTrail" => DetailType::TagChange,
            _ => DetailType::Other,
        }
    }

    /// The `detail_type` label of `events_received_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            DetailType::TaskStateChange => "task_state_change",
            DetailType::ServiceAction => "service_action",
            DetailType::DeploymentStateChange => "deployment_state_change",
            DetailType::ContainerInstanceStateChange => "container_instance_state_change",
            DetailType::TagChange => "tag_change",
            DetailType::Other => "other",
        }
    }
}

/// One decoded ECS event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The EventBridge event id.
    pub id: String,
    pub detail_type: DetailType,
    /// When the change happened (EventBridge's `time`, to the second).
    pub time: Option<SystemTime>,
    pub(crate) change: Change,
}

/// What an event says changed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Change {
    /// A task's new state, as DescribeTasks would give it (without tags: events carry none).
    Task {
        cluster: ClusterRef,
        task: Box<TaskFacts>,
    },
    /// Something about a service (its deployment, its tags may have changed).
    Service {
        cluster: ClusterRef,
        service: String,
    },
    /// A task's own tags changed.
    TaskTags { cluster: ClusterRef, arn: String },
    /// A container instance changed (registered, draining, deregistered, agent reconnects).
    ContainerInstance {
        cluster: ClusterRef,
        arn: String,
        instance_id: Option<String>,
        /// ACTIVE or DRAINING: its tasks may still run there.
        active: bool,
    },
    /// Nothing discovery acts on.
    Ignored,
}

/// An ECS cluster as an event names it: settings may list clusters by name or by ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClusterRef {
    pub arn: String,
    pub name: String,
}

impl ClusterRef {
    fn from_arn(arn: &str) -> ClusterRef {
        ClusterRef {
            arn: arn.to_owned(),
            name: arn.rsplit('/').next().unwrap_or(arn).to_owned(),
        }
    }

    /// Is this the cluster a setting names (by name or ARN)?
    pub fn is(&self, configured: &str) -> bool {
        configured == self.name || configured == self.arn
    }
}

/// Why a message body is not an event discovery can use.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    #[error("not an EventBridge event: {0}")]
    NotAnEvent(#[source] serde_json::Error),
    #[error("SNS notification whose Message is not an EventBridge event: {0}")]
    BadSnsMessage(#[source] serde_json::Error),
    #[error("{detail_type} detail: {source}")]
    Detail {
        detail_type: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{detail_type} names no {what}")]
    Missing {
        detail_type: String,
        what: &'static str,
    },
}

#[derive(Deserialize)]
struct Envelope {
    id: String,
    #[serde(rename = "detail-type")]
    detail_type: String,
    source: String,
    time: Option<String>,
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    detail: serde_json::Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SnsNotification {
    #[serde(rename = "Type")]
    kind: String,
    message: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TaskDetail {
    task_arn: String,
    cluster_arn: String,
    last_status: String,
    desired_status: String,
    task_definition_arn: String,
    group: Option<String>,
    health_status: Option<String>,
    availability_zone: Option<String>,
    container_instance_arn: Option<String>,
    /// For a service's task, its deployment (`ecs-svc/...`): the endpoint's deployment metadata.
    started_by: Option<String>,
    #[serde(default)]
    attachments: Vec<Attachment>,
    #[serde(default)]
    containers: Vec<Container>,
    version: Option<i64>,
}

#[derive(Deserialize)]
struct Attachment {
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    details: Vec<NameValue>,
}

#[derive(Deserialize)]
struct NameValue {
    name: Option<String>,
    value: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Container {
    #[serde(default)]
    name: String,
    #[serde(default)]
    network_bindings: Vec<Binding>,
    #[serde(default)]
    network_interfaces: Vec<Interface>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Binding {
    container_port: Option<i64>,
    host_port: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Interface {
    private_ipv4_address: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContainerInstanceDetail {
    cluster_arn: String,
    container_instance_arn: String,
    ec2_instance_id: Option<String>,
    status: Option<String>,
}

/// Decodes one SQS message body.
pub fn decode(body: &str) -> Result<Event, DecodeError> {
    let value: serde_json::Value = serde_json::from_str(body).map_err(DecodeError::NotJson)?;
    let envelope: Envelope = match value.get("Type").and_then(|t| t.as_str()) {
        // SNS without raw message delivery: the event is a string inside the notification.
        Some("Notification") => {
            let sns: SnsNotification =
                serde_json::from_value(value).map_err(DecodeError::BadSnsMessage)?;
            debug_assert_eq!(sns.kind, "Notification");
            serde_json::from_str(&sns.message).map_err(DecodeError::BadSnsMessage)?
        }
        _ => serde_json::from_value(value).map_err(DecodeError::NotAnEvent)?,
    };
    let mut detail_type = match envelope.source.as_str() {
        "aws.ecs" => DetailType::parse(&envelope.detail_type),
        _ => DetailType::Other,
    };
    let time = envelope
        .time
        .as_deref()
        .and_then(|t| humantime::parse_rfc3339_weak(t).ok());
    let detail_error = |source| DecodeError::Detail {
        detail_type: envelope.detail_type.clone(),
        source,
    };
    let change = match detail_type {
        DetailType::TaskStateChange => {
            let detail: TaskDetail =
                serde_json::from_value(envelope.detail.clone()).map_err(detail_error)?;
            Change::Task {
                cluster: ClusterRef::from_arn(&detail.cluster_arn),
                task: Box::new(task_facts(detail)),
            }
        }
        DetailType::ServiceAction | DetailType::DeploymentStateChange => {
            let (cluster, service) = envelope
                .resources
                .iter()
                .find_map(|r| service_of_arn(r))
                .ok_or_else(|| DecodeError::Missing {
                    detail_type: envelope.detail_type.clone(),
                    what: "service ARN in resources",
                })?;
            Change::Service { cluster, service }
        }
        DetailType::ContainerInstanceStateChange => {
            let detail: ContainerInstanceDetail =
                serde_json::from_value(envelope.detail.clone()).map_err(detail_error)?;
            Change::ContainerInstance {
                cluster: ClusterRef::from_arn(&detail.cluster_arn),
                arn: detail.container_instance_arn,
                instance_id: detail.ec2_instance_id,
                active: matches!(detail.status.as_deref(), Some("ACTIVE" | "DRAINING") | None),
            }
        }
        DetailType::TagChange => {
            let detail: tag_call::ApiCallDetail =
                serde_json::from_value(envelope.detail.clone()).map_err(detail_error)?;
            if detail.is_tag_call() {
                detail.change()
            } else {
                detail_type = DetailType::Other;
                Change::Ignored
            }
        }
        DetailType::Other => Change::Ignored,
    };
    Ok(Event {
        id: envelope.id,
        detail_type,
        time,
        change,
    })
}

/// (cluster, service) of `arn:aws:ecs:REGION:ACCOUNT:service/CLUSTER/SERVICE`.
fn service_of_arn(arn: &str) -> Option<(ClusterRef, String)> {
    let (prefix, path) = arn.split_once(":service/")?;
    let (cluster, service) = path.split_once('/')?;
    let cluster_arn = format!("{prefix}:cluster/{cluster}");
    Some((ClusterRef::from_arn(&cluster_arn), service.to_owned()))
}

/// The detail's task as the facts mapping reads, like `aws/ecs/facts.rs` does for DescribeTasks.
fn task_facts(t: TaskDetail) -> TaskFacts {
    // Events name the attachment `eni`; DescribeTasks `ElasticNetworkInterface`.
    let eni_ipv4 = t
        .attachments
        .iter()
        .filter(|a| matches!(a.kind.as_deref(), Some("ElasticNetworkInterface" | "eni")))
        .flat_map(|a| &a.details)
        .find(|d| d.name.as_deref() == Some("privateIPv4Address"))
        .and_then(|d| d.value.clone())
        .or_else(|| {
            t.containers
                .iter()
                .flat_map(|c| &c.network_interfaces)
                .find_map(|n| n.private_ipv4_address.clone())
        });
    TaskFacts {
        arn: t.task_arn,
        group: t.group,
        last_status: t.last_status,
        desired_status: t.desired_status,
        health: t.health_status,
        zone: t.availability_zone,
        task_definition_arn: t.task_definition_arn,
        eni_ipv4,
        container_instance_arn: t.container_instance_arn,
        containers: t
            .containers
            .into_iter()
            .map(|c| ContainerFacts {
                name: c.name,
                bindings: c
                    .network_bindings
                    .iter()
                    .filter_map(|b| {
                        Some((
                            u16::try_from(b.container_port?).ok()?,
                            u16::try_from(b.host_port?).ok()?,
                        ))
                    })
                    .collect(),
            })
            .collect(),
        tags: Default::default(),
        started_by: t.started_by,
        version: t.version,
        // Only identity reads it, and identity asks DescribeTasks itself.
        task_role_override: None,
    }
}

#[cfg(test)]
mod tests;
