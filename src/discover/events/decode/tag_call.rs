//! "AWS API Call via CloudTrail" → [`Change`]: ECS `TagResource` and `UntagResource` calls, the
//! only way to hear of a tag change (ECS emits no event of its own for them, and declared
//! backends, weights and policies live in tags). CloudTrail delivers these only where a trail
//! logs management events; without one the reconcile still reads tags.

use serde::Deserialize;

use super::{service_of_arn, Change, ClusterRef};

/// The CloudTrail `eventName`s of a tag change.
const TAG_CALLS: [&str; 2] = ["TagResource", "UntagResource"];

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ApiCallDetail {
    #[serde(default)]
    event_source: String,
    #[serde(default)]
    event_name: String,
    /// Set when the call failed (`AccessDenied`, `InvalidParameterException`): nothing changed.
    error_code: Option<String>,
    request_parameters: Option<RequestParameters>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestParameters {
    resource_arn: Option<String>,
}

impl ApiCallDetail {
    /// Is this an ECS tag call (successful or not)?
    pub(super) fn is_tag_call(&self) -> bool {
        self.event_source == "ecs.amazonaws.com" && TAG_CALLS.contains(&self.event_name.as_str())
    }

    /// What the call changed: a service's or a task's tags. A failed call, and a resource
    /// discovery does not read tags of (task definitions, clusters, container instances), are
    /// ignored; so are old-format ARNs (`service/NAME`, no cluster: ECS stopped making them in
    /// 2021), which the reconcile covers.
    pub(super) fn change(&self) -> Change {
        if self.error_code.is_some() {
            return Change::Ignored;
        }
        let Some(arn) = self
            .request_parameters
            .as_ref()
            .and_then(|p| p.resource_arn.as_deref())
        else {
            return Change::Ignored;
        };
        if let Some((cluster, service)) = service_of_arn(arn) {
            return Change::Service { cluster, service };
        }
        match task_cluster(arn) {
            Some(cluster) => Change::TaskTags {
                cluster,
                arn: arn.to_owned(),
            },
            None => Change::Ignored,
        }
    }
}

/// The cluster of `arn:aws:ecs:REGION:ACCOUNT:task/CLUSTER/ID`.
fn task_cluster(arn: &str) -> Option<ClusterRef> {
    let (prefix, path) = arn.split_once(":task/")?;
    let (cluster, _id) = path.split_once('/')?;
    Some(ClusterRef::from_arn(&format!("{prefix}:cluster/{cluster}")))
}
