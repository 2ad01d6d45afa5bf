use super::*;

/// The task state change event of the ECS developer guide (Fargate, awsvpc), with a service
/// group instead of the guide's `family:` one.
const TASK_EVENT: &str = r#"{
  "version": "0",
  "id": "3317b2af-7005-947d-b652-f55e762e571a",
  "detail-type": "ECS Task State Change",
  "source": "aws.ecs",
  "account": "111122223333",
  "time": "2020-01-23T17:57:58Z",
  "region": "us-west-2",
  "resources": ["arn:aws:ecs:us-west-2:111122223333:task/FargateCluster/c13b4cb40f1f4fe4a2971f76ae5a47ad"],
  "detail": {
    "attachments": [{"id": "1789bcae-ddfb-4d10-8ebe-8ac87ddba5b8", "type": "eni", "status": "ATTACHED",
      "details": [{"name": "subnetId", "value": "subnet-abcd1234"},
                  {"name": "networkInterfaceId", "value": "eni-abcd1234"},
                  {"name": "macAddress", "value": "0a:0b:0c:0d:0e:0f"},
                  {"name": "privateIPv4Address", "value": "10.0.0.139"}]}],
    "availabilityZone": "us-west-2c",
    "clusterArn": "arn:aws:ecs:us-west-2:111122223333:cluster/FargateCluster",
    "containers": [{"containerArn": "arn:aws:ecs:us-west-2:111122223333:container/cf159fd6-3e3f-4a9e-84f9-66cbe726af01",
      "lastStatus": "RUNNING", "name": "FargateApp", "image": "111122223333.dkr.ecr.us-west-2.amazonaws.com/hello-repository:latest",
      "taskArn": "arn:aws:ecs:us-west-2:111122223333:task/FargateCluster/c13b4cb40f1f4fe4a2971f76ae5a47ad",
      "networkInterfaces": [{"attachmentId": "1789bcae-ddfb-4d10-8ebe-8ac87ddba5b8", "privateIpv4Address": "10.0.0.139"}],
      "cpu": "0"}],
    "createdAt": "2020-01-23T17:57:34.402Z",
    "launchType": "FARGATE",
    "cpu": "256",
    "memory": "512",
    "desiredStatus": "RUNNING",
    "group": "service:web",
    "lastStatus": "RUNNING",
    "overrides": {"containerOverrides": [{"name": "FargateApp"}]},
    "connectivity": "CONNECTED",
    "startedAt": "2020-01-23T17:57:58.103Z",
    "updatedAt": "2020-01-23T17:57:58.103Z",
    "taskArn": "arn:aws:ecs:us-west-2:111122223333:task/FargateCluster/c13b4cb40f1f4fe4a2971f76ae5a47ad",
    "taskDefinitionArn": "arn:aws:ecs:us-west-2:111122223333:task-definition/sample-fargate:1",
    "version": 4,
    "platformVersion": "1.3.0"
  }
}"#;

fn task_of(event: &Event) -> (&ClusterRef, &TaskFacts) {
    match &event.change {
        Change::Task { cluster, task } => (cluster, task),
        other => panic!("not a task change: {other:?}"),
    }
}

#[test]
fn a_task_state_change_becomes_the_facts_a_describe_gives() {
    let event = decode(TASK_EVENT).unwrap();
    assert_eq!(event.id, "3317b2af-7005-947d-b652-f55e762e571a");
    assert_eq!(event.detail_type, DetailType::TaskStateChange);
    assert_eq!(
        event.time,
        Some(humantime::parse_rfc3339("2020-01-23T17:57:58Z").unwrap())
    );
    let (cluster, task) = task_of(&event);
    assert_eq!(cluster.name, "FargateCluster");
    assert!(cluster.is("FargateCluster") && cluster.is(&cluster.arn) && !cluster.is("other"));
    assert_eq!(task.eni_ipv4.as_deref(), Some("10.0.0.139"));
    assert_eq!(task.zone.as_deref(), Some("us-west-2c"));
    assert_eq!(task.group.as_deref(), Some("service:web"));
    assert_eq!(task.version, Some(4));
    assert_eq!(
        (task.last_status.as_str(), task.desired_status.as_str()),
        ("RUNNING", "RUNNING")
    );
    assert_eq!(task.health, None, "the event carries no task health here");
    assert!(task.tags.is_empty());
}

#[test]
fn an_event_inside_an_sns_notification_decodes_the_same() {
    let body = serde_json::json!({
        "Type": "Notification",
        "MessageId": "2f5c3a2e-0000-0000-0000-000000000000",
        "TopicArn": "arn:aws:sns:us-west-2:111122223333:ecs-events",
        "Message": TASK_EVENT,
        "Timestamp": "2020-01-23T17:57:59.000Z",
        "SignatureVersion": "1",
    })
    .to_string();
    assert_eq!(decode(&body).unwrap(), decode(TASK_EVENT).unwrap());
}

#[test]
fn bridge_network_bindings_and_the_container_instance_are_read() {
    let mut v: serde_json::Value = serde_json::from_str(TASK_EVENT).unwrap();
    let detail = &mut v["detail"];
    detail["attachments"] = serde_json::json!([]);
    detail["containerInstanceArn"] =
        "arn:aws:ecs:us-west-2:111122223333:container-instance/FargateCluster/ci1".into();
    detail["containers"] = serde_json::json!([{"name": "app", "networkBindings": [
        {"bindIP": "0.0.0.0", "containerPort": 8080, "hostPort": 32768, "protocol": "tcp"}]}]);
    detail["healthStatus"] = "HEALTHY".into();
    let event = decode(&v.to_string()).unwrap();
    let (_, task) = task_of(&event);
    assert_eq!(task.eni_ipv4, None);
    assert_eq!(task.containers[0].bindings, [(8080, 32768)]);
    assert_eq!(task.health.as_deref(), Some("HEALTHY"));
    assert!(task
        .container_instance_arn
        .as_deref()
        .unwrap()
        .ends_with("/ci1"));
}

#[test]
fn service_and_deployment_events_name_their_service_from_resources() {
    for detail_type in ["ECS Service Action", "ECS Deployment State Change"] {
        let body = serde_json::json!({
            "version": "0", "id": "e1", "detail-type": detail_type, "source": "aws.ecs",
            "time": "2020-01-23T17:57:58Z",
            "resources": ["arn:aws:ecs:us-west-2:111122223333:service/prod/web"],
            "detail": {"eventType": "INFO", "eventName": "SERVICE_STEADY_STATE"},
        })
        .to_string();
        let event = decode(&body).unwrap();
        assert_eq!(
            event.change,
            Change::Service {
                cluster: ClusterRef {
                    arn: "arn:aws:ecs:us-west-2:111122223333:cluster/prod".into(),
                    name: "prod".into()
                },
                service: "web".into()
            },
            "{detail_type}"
        );
    }
}

#[test]
fn a_container_instance_event_says_whether_it_still_hosts_tasks() {
    let body = |status: &str| {
        serde_json::json!({
            "version": "0", "id": "e2", "detail-type": "ECS Container Instance State Change",
            "source": "aws.ecs", "time": "2020-01-23T17:57:58Z",
            "resources": ["arn:aws:ecs:us-west-2:111122223333:container-instance/prod/ci1"],
            "detail": {"agentConnected": true, "clusterArn": "arn:aws:ecs:us-west-2:111122223333:cluster/prod",
                "containerInstanceArn": "arn:aws:ecs:us-west-2:111122223333:container-instance/prod/ci1",
                "ec2InstanceId": "i-0123", "status": status, "version": 14},
        })
        .to_string()
    };
    for (status, active) in [("ACTIVE", true), ("DRAINING", true), ("INACTIVE", false)] {
        match decode(&body(status)).unwrap().change {
            Change::ContainerInstance {
                cluster,
                instance_id,
                active: a,
                ..
            } => {
                assert_eq!(cluster.name, "prod");
                assert_eq!(instance_id.as_deref(), Some("i-0123"));
                assert_eq!(a, active, "{status}");
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn events_of_other_types_and_sources_are_ignored_not_refused() {
    let other_type = TASK_EVENT.replace("ECS Task State Change", "ECS Hook Invocation");
    let event = decode(&other_type).unwrap();
    assert_eq!(
        (event.detail_type, event.change),
        (DetailType::Other, Change::Ignored)
    );
    let other_source = TASK_EVENT.replace("\"aws.ecs\"", "\"my.app\"");
    assert_eq!(decode(&other_source).unwrap().change, Change::Ignored);
}

#[test]
fn undecodable_bodies_say_why() {
    let cases = [
        ("not json", "not JSON"),
        (r#"{"hello": 1}"#, "not an EventBridge event"),
        (r#"{"Type": "Notification", "Message": "nope"}"#, "SNS notification"),
        (&TASK_EVENT.replace("\"taskArn\": \"arn:aws:ecs:us-west-2:111122223333:task/FargateCluster/c13b4cb40f1f4fe4a2971f76ae5a47ad\",\n    \"taskDefinitionArn\"", "\"taskDefinitionArn\""), "missing field `taskArn`"),
        (&TASK_EVENT.replace("\"version\": 4", "\"version\": \"four\""), "ECS Task State Change detail"),
    ];
    for (body, why) in cases {
        let err = decode(body).unwrap_err().to_string();
        assert!(err.contains(why), "{body:.60}: {err}");
    }
}

/// CloudTrail's record of an ECS call, as EventBridge delivers it ("AWS API Call via
/// CloudTrail", source `aws.ecs`), trimmed of the identity and request ids.
fn api_call(event_name: &str, resource_arn: &str, error_code: Option<&str>) -> String {
    let mut detail = serde_json::json!({
        "eventVersion": "1.08", "eventTime": "2026-01-01T00:00:00Z",
        "eventSource": "ecs.amazonaws.com", "eventName": event_name, "awsRegion": "us-west-2",
        "requestParameters": {"resourceArn": resource_arn,
            "tags": [{"key": "ecs-xds.backends", "value": "orders"}]},
        "responseElements": null, "readOnly": false, "eventType": "AwsApiCall",
        "managementEvent": true, "eventCategory": "Management",
    });
    if let Some(code) = error_code {
        detail["errorCode"] = code.into();
    }
    serde_json::json!({
        "version": "0", "id": "ct1", "detail-type": "AWS API Call via CloudTrail",
        "source": "aws.ecs", "account": "111122223333", "time": "2026-01-01T00:00:00Z",
        "region": "us-west-2", "resources": [], "detail": detail,
    })
    .to_string()
}

#[test]
fn a_tag_call_on_a_service_or_task_names_what_to_re_read() {
    let prod = ClusterRef {
        arn: "arn:aws:ecs:us-west-2:111122223333:cluster/prod".into(),
        name: "prod".into(),
    };
    for call in ["TagResource", "UntagResource"] {
        let event = decode(&api_call(
            call,
            "arn:aws:ecs:us-west-2:111122223333:service/prod/web",
            None,
        ))
        .unwrap();
        assert_eq!(event.detail_type, DetailType::TagChange);
        assert_eq!(
            event.change,
            Change::Service {
                cluster: prod.clone(),
                service: "web".into()
            },
            "{call}"
        );
    }
    let task = "arn:aws:ecs:us-west-2:111122223333:task/prod/0123456789abcdef";
    assert_eq!(
        decode(&api_call("TagResource", task, None)).unwrap().change,
        Change::TaskTags {
            cluster: prod,
            arn: task.into()
        }
    );
}

#[test]
fn other_api_calls_failed_tag_calls_and_other_resources_are_ignored() {
    let service = "arn:aws:ecs:us-west-2:111122223333:service/prod/web";
    let other_call = decode(&api_call("UpdateService", service, None)).unwrap();
    assert_eq!(
        (other_call.detail_type, other_call.change),
        (DetailType::Other, Change::Ignored)
    );
    let ignored = [
        api_call("TagResource", service, Some("AccessDeniedException")),
        api_call(
            "TagResource",
            "arn:aws:ecs:us-west-2:111122223333:task-definition/web:3",
            None,
        ),
        api_call(
            "TagResource",
            "arn:aws:ecs:us-west-2:111122223333:cluster/prod",
            None,
        ),
        // The old ARN format names no cluster.
        api_call(
            "TagResource",
            "arn:aws:ecs:us-west-2:111122223333:service/web",
            None,
        ),
    ];
    for body in ignored {
        let event = decode(&body).unwrap();
        assert_eq!(event.detail_type, DetailType::TagChange);
        assert_eq!(event.change, Change::Ignored, "{body}");
    }
    // Another service's calls through CloudTrail are not ECS's.
    let s3 = api_call("TagResource", service, None).replace("\"aws.ecs\"", "\"aws.s3\"");
    assert_eq!(decode(&s3).unwrap().detail_type, DetailType::Other);
}
