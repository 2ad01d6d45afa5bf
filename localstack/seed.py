#!/usr/bin/env python3
"""Seeds an AWS API emulator (moto server, or LocalStack with ECS) with a demo for ecs-xds.

Creates:
- a VPC (DNS hostnames on), a subnet and a security group;
- ECS cluster CLUSTER with three Fargate/awsvpc services, each with TASKS running tasks started
  by run_task with group="service:NAME" (what real ECS sets; emulators start none themselves):
  `web` (one unnamed port 8080), `api` (named ports http:8080 and grpc:9090, appProtocol grpc)
  and `orders` (port 8080, tagged ecs-xds.lb-policy=least_request, ecs-xds.timeout=2s and
  ecs-xds.retries=2), each with an `envoy`
  sidecar that discovery must skip;
- optionally a Cloud Map HTTP namespace with service `backend` and one instance per
  --cloudmap-instance IP:PORT (healthy) or --cloudmap-unhealthy-instance IP:PORT.

Prints a JSON summary (task ARNs per service, instance ids) on stdout.
Safety: only ever talks to --endpoint-url; the addresses it registers are data.
"""
import argparse
import json
import os
import sys
import urllib.request

os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402

SERVICES = {
    "web": [{"containerPort": 8080, "protocol": "tcp"}],
    "api": [
        {"containerPort": 8080, "protocol": "tcp", "name": "http", "appProtocol": "http"},
        {"containerPort": 9090, "protocol": "tcp", "name": "grpc", "appProtocol": "grpc"},
    ],
    "orders": [{"containerPort": 8080, "protocol": "tcp"}],
}
SERVICE_TAGS = {
    "orders": [
        {"key": "ecs-xds.lb-policy", "value": "least_request"},
        {"key": "ecs-xds.timeout", "value": "2s"},
        {"key": "ecs-xds.retries", "value": "2"},
    ]
}


def moto_stable_tasks(endpoint):
    """moto advances an ECS task one state per describe; keep them RUNNING instead."""
    body = json.dumps({"model_name": "ecs::task", "transition": {"progression": "manual", "times": 1000000}})
    req = urllib.request.Request(f"{endpoint}/moto-api/state-manager/set-transition", data=body.encode(), method="POST")
    urllib.request.urlopen(req, timeout=10).read()


def seed_ecs(session, endpoint, cluster, tasks_per_service):
    ec2 = session.client("ec2", endpoint_url=endpoint)
    ecs = session.client("ecs", endpoint_url=endpoint)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    sg = ec2.create_security_group(GroupName="ecs-xds-demo", Description="demo", VpcId=vpc)["GroupId"]
    network = {"awsvpcConfiguration": {"subnets": [subnet], "securityGroups": [sg], "assignPublicIp": "DISABLED"}}
    ecs.create_cluster(clusterName=cluster)
    summary = {"cluster": cluster, "subnet": subnet, "security_group": sg, "services": {}}
    # Each service runs with a task role of its own, as workload identity (`ecs-xds agent`)
    # expects: the role is what a task proves its service with.
    account = session.client("sts", endpoint_url=endpoint).get_caller_identity()["Account"]
    for name, ports in SERVICES.items():
        role = f"arn:aws:iam::{account}:role/{name}-task"
        td = ecs.register_task_definition(
            family=name,
            taskRoleArn=role,
            networkMode="awsvpc",
            requiresCompatibilities=["FARGATE"],
            cpu="256",
            memory="512",
            containerDefinitions=[
                {"name": "app", "image": f"demo/{name}", "memory": 256, "essential": True, "portMappings": ports},
                {"name": "envoy", "image": "envoyproxy/envoy", "memory": 128, "essential": True,
                 "portMappings": [{"containerPort": 15000, "protocol": "tcp"}]},
            ],
        )["taskDefinition"]["taskDefinitionArn"]
        ecs.create_service(
            cluster=cluster, serviceName=name, taskDefinition=td, desiredCount=tasks_per_service,
            launchType="FARGATE", networkConfiguration=network, tags=SERVICE_TAGS.get(name, []),
        )
        arns = []
        for _ in range(tasks_per_service):
            out = ecs.run_task(cluster=cluster, taskDefinition=td, launchType="FARGATE", count=1,
                               group=f"service:{name}", networkConfiguration=network)
            arns += [t["taskArn"] for t in out["tasks"]]
        summary["services"][name] = {"task_definition": td, "task_role": role, "tasks": arns}
    return summary


def seed_cloud_map(session, endpoint, namespace, healthy, unhealthy):
    # DiscoverInstances has a `data-` host prefix, which breaks custom endpoints.
    sd = session.client("servicediscovery", endpoint_url=endpoint, config=Config(inject_host_prefix=False))
    sd.create_http_namespace(Name=namespace)
    ns_id = next(n["Id"] for n in sd.list_namespaces()["Namespaces"] if n["Name"] == namespace)
    svc = sd.create_service(Name="backend", NamespaceId=ns_id, HealthCheckCustomConfig={"FailureThreshold": 1})
    svc_id = svc["Service"]["Id"]
    ids = []
    for i, (addr, bad) in enumerate([(a, False) for a in healthy] + [(a, True) for a in unhealthy]):
        ip, port = addr.rsplit(":", 1)
        inst = f"backend-{i}"
        attrs = {"AWS_INSTANCE_IPV4": ip, "AWS_INSTANCE_PORT": port, "AVAILABILITY_ZONE": "us-east-1a"}
        if bad:
            attrs["AWS_INIT_HEALTH_STATUS"] = "UNHEALTHY"
        sd.register_instance(ServiceId=svc_id, InstanceId=inst, Attributes=attrs)
        sd.update_instance_custom_health_status(ServiceId=svc_id, InstanceId=inst,
                                                Status="UNHEALTHY" if bad else "HEALTHY")
        ids.append(inst)
    return {"namespace": namespace, "namespace_id": ns_id, "service_id": svc_id, "instances": ids}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--endpoint-url", required=True)
    p.add_argument("--region", default=os.environ.get("AWS_REGION", "us-east-1"))
    p.add_argument("--cluster", default="demo")
    p.add_argument("--tasks-per-service", type=int, default=2)
    p.add_argument("--no-ecs", action="store_true", help="seed Cloud Map only")
    p.add_argument("--namespace", default="demo.local")
    p.add_argument("--cloudmap-instance", action="append", default=[], metavar="IP:PORT")
    p.add_argument("--cloudmap-unhealthy-instance", action="append", default=[], metavar="IP:PORT")
    p.add_argument("--moto", action="store_true", help="keep moto's ECS tasks RUNNING (state manager)")
    p.add_argument("--role-arn", help="seed the role's account (assumed through STS first)")
    args = p.parse_args()

    os.environ["AWS_REGION"] = args.region
    session = boto3.session.Session(region_name=args.region)
    if args.role_arn:
        sts = session.client("sts", endpoint_url=args.endpoint_url)
        creds = sts.assume_role(RoleArn=args.role_arn, RoleSessionName="seed")["Credentials"]
        session = boto3.session.Session(
            region_name=args.region,
            aws_access_key_id=creds["AccessKeyId"],
            aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds["SessionToken"],
        )
    if args.moto:
        moto_stable_tasks(args.endpoint_url)
    summary = {}
    if not args.no_ecs:
        summary["ecs"] = seed_ecs(session, args.endpoint_url, args.cluster, args.tasks_per_service)
    if args.cloudmap_instance or args.cloudmap_unhealthy_instance:
        summary["cloud_map"] = seed_cloud_map(session, args.endpoint_url, args.namespace,
                                              args.cloudmap_instance, args.cloudmap_unhealthy_instance)
    json.dump(summary, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
