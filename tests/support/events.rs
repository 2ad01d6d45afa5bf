//! ECS events the way AWS delivers them, made from moto's own state: the `detail` of a task
//! state change is moto's DescribeTasks output for the task (with the `availabilityZone` and
//! `version` moto lacks), published with EventBridge `PutEvents` and routed by moto's own
//! EventBridge rule to an SQS queue, or published to an SNS topic as EventBridge would.

use serde_json::{json, Value};

use super::moto::{Moto, REGION};

pub const ACCOUNT: &str = "123456789012";

/// The SQS and SNS clients of this moto.
pub async fn sqs(moto: &Moto) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(&moto.sdk_config().await)
}

pub async fn sns(moto: &Moto) -> aws_sdk_sns::Client {
    aws_sdk_sns::Client::new(&moto.sdk_config().await)
}

/// A queue an EventBridge rule for ECS events targets (the single-replica wiring of
/// `deploy/ecs/`): returns the queue URL.
pub async fn routed_queue(moto: &Moto, name: &str) -> String {
    let sqs = sqs(moto).await;
    let url = sqs.create_queue().queue_name(name).send().await.unwrap();
    let url = url.queue_url().unwrap().to_owned();
    let arn = format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{name}");
    let pattern =
        std::fs::read_to_string(super::moto::repo_root().join("deploy/ecs/event-pattern.json"))
            .expect("deploy/ecs/event-pattern.json");
    moto.aws_json(
        "AWSEvents.PutRule",
        &json!({"Name": format!("{name}-rule"), "EventPattern": pattern, "State": "ENABLED"}),
    );
    moto.aws_json(
        "AWSEvents.PutTargets",
        &json!({"Rule": format!("{name}-rule"), "Targets": [{"Id": "queue", "Arn": arn}]}),
    );
    url
}

/// The `detail` of an "ECS Task State Change" for `task` as moto describes it now.
pub fn task_detail(moto: &Moto, cluster: &str, task: &str, version: i64) -> Value {
    let out = moto.aws_json(
        "AmazonEC2ContainerServiceV20141113.DescribeTasks",
        &json!({"cluster": cluster, "tasks": [task]}),
    );
    let mut detail = out["tasks"][0].clone();
    assert!(detail.is_object(), "moto does not know task {task}: {out}");
    detail["availabilityZone"] = "us-east-1a".into();
    detail["version"] = version.into();
    detail
}

/// The EventBridge envelope ECS would send for a task state change with `detail`.
pub fn task_envelope(detail: &Value) -> Value {
    json!({
        "version": "0",
        "id": format!("{:032x}", fastrand::u128(..)),
        "detail-type": "ECS Task State Change",
        "source": "aws.ecs",
        "account": ACCOUNT,
        "time": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        "region": REGION,
        "resources": [detail["taskArn"].clone()],
        "detail": detail,
    })
}

/// `PutEvents` of a task state change with `detail`, as ECS would emit it.
pub fn put_task_event(moto: &Moto, detail: &Value) {
    let out = moto.aws_json(
        "AWSEvents.PutEvents",
        &json!({"Entries": [{
            "Source": "aws.ecs",
            "DetailType": "ECS Task State Change",
            "Detail": detail.to_string(),
            "Resources": [detail["taskArn"].clone()],
        }]}),
    );
    assert_eq!(out["FailedEntryCount"], 0, "{out}");
}

/// `PutEvents` of CloudTrail's record of an ECS tag call (`TagResource`, `UntagResource`) on
/// `resource`, as EventBridge receives it where a trail logs management events (moto's ECS
/// records no CloudTrail events of its own).
pub fn put_tag_call_event(moto: &Moto, event_name: &str, resource: &str) {
    let detail = json!({
        "eventVersion": "1.08", "eventSource": "ecs.amazonaws.com", "eventName": event_name,
        "awsRegion": REGION, "eventType": "AwsApiCall", "managementEvent": true,
        "readOnly": false, "requestParameters": {"resourceArn": resource},
        "responseElements": null,
    });
    let out = moto.aws_json(
        "AWSEvents.PutEvents",
        &json!({"Entries": [{
            "Source": "aws.ecs",
            "DetailType": "AWS API Call via CloudTrail",
            "Detail": detail.to_string(),
        }]}),
    );
    assert_eq!(out["FailedEntryCount"], 0, "{out}");
}

/// SNS `Publish` of the EventBridge envelope of a task state change, which is what an
/// EventBridge rule targeting the topic delivers (moto cannot route EventBridge to SNS).
pub async fn publish_task_event(sns: &aws_sdk_sns::Client, topic: &str, detail: &Value) {
    sns.publish()
        .topic_arn(topic)
        .message(task_envelope(detail).to_string())
        .send()
        .await
        .unwrap();
}

/// Messages in `queue`, visible or in flight.
pub async fn queued(sqs: &aws_sdk_sqs::Client, queue: &str) -> u64 {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let out = sqs
        .get_queue_attributes()
        .queue_url(queue)
        .attribute_names(A::ApproximateNumberOfMessages)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .unwrap();
    let attributes = out.attributes().unwrap();
    [
        A::ApproximateNumberOfMessages,
        A::ApproximateNumberOfMessagesNotVisible,
    ]
    .iter()
    .map(|a| attributes[a].parse::<u64>().unwrap())
    .sum()
}
