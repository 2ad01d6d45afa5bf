//! A moto server (the AWS API emulator) for one test: started on a free 127.0.0.1 port from the
//! project venv, killed by pid when dropped, and bounded in time even if the test process dies
//! (it runs under `timeout`). ECS tasks are kept RUNNING (moto advances them on every describe).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::collections::BTreeSet;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ecs::config::Credentials;
use aws_sdk_ecs::types::{AwsVpcConfiguration, NetworkConfiguration};

/// Longest a moto server may live, whatever happens to the test.
const LIFETIME_SECS: u64 = 600;
pub const REGION: &str = "us-east-1";

pub struct Moto {
    child: Child,
    pub port: u16,
    pub endpoint: String,
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn venv_python() -> PathBuf {
    repo_root().join(".venv/bin/python")
}

impl Moto {
    pub fn start() -> Moto {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Moto::start_on(port)
    }

    /// Starts moto on a given port (to bring an emulator back where a stopped one was).
    pub fn start_on(port: u16) -> Moto {
        let bin = repo_root().join(".venv/bin/moto_server");
        assert!(
            bin.exists(),
            "moto server not found at {}: run scripts/setup-test-env.sh first",
            bin.display()
        );
        let child = Command::new("timeout")
            .args(["--kill-after=5", &LIFETIME_SECS.to_string()])
            .arg(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", REGION)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let moto = Moto {
            child,
            port,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while moto.request("GET", "/moto-api/data.json", "").is_err() {
            assert!(
                Instant::now() < deadline,
                "moto did not answer on port {port} within 30s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        moto.post(
            "/moto-api/state-manager/set-transition",
            r#"{"model_name":"ecs::task","transition":{"progression":"manual","times":1000000}}"#,
        );
        moto
    }

    /// POSTs to moto's own API, panicking on failure.
    pub fn post(&self, path: &str, body: &str) {
        let (status, text) = self.request("POST", path, body).expect("moto API request");
        assert!(status < 300, "POST {path}: HTTP {status}: {text}");
    }

    /// One AWS JSON-protocol request (`target` as in `X-Amz-Target`, e.g.
    /// `AWSEvents.PutEvents`), answered with moto's own JSON. For what the SDK cannot give as
    /// JSON (DescribeTasks output exactly as ECS writes it) and for EventBridge, whose SDK the
    /// project does not otherwise need.
    pub fn aws_json(&self, target: &str, body: &serde_json::Value) -> serde_json::Value {
        self.aws_json_as("testing", REGION, target, body)
    }

    /// [`Moto::aws_json`] signed (in name: moto checks no signature) with access key `key` in
    /// `region`: moto answers from the account the key was issued for.
    pub fn aws_json_as(
        &self,
        key: &str,
        region: &str,
        target: &str,
        body: &serde_json::Value,
    ) -> serde_json::Value {
        // moto routes a request by the service named in its credential scope.
        let service = match target.split('.').next() {
            Some("AWSEvents") => "events",
            Some("AmazonEC2ContainerServiceV20141113") => "ecs",
            other => panic!("no service known for {other:?}"),
        };
        let headers = format!(
            "Content-Type: application/x-amz-json-1.1\r\nX-Amz-Target: {target}\r\nAuthorization: AWS4-HMAC-SHA256 Credential={key}/20260101/{region}/{service}/aws4_request, SignedHeaders=host, Signature=0\r\n"
        );
        let (status, text) = self
            .raw_request("POST", "/", &headers, &body.to_string())
            .expect("moto AWS request");
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        assert!(status < 300, "{target}: HTTP {status}: {body}");
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null)
    }

    /// A minimal HTTP/1.0 client, only ever for 127.0.0.1.
    fn request(&self, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
        self.raw_request(method, path, "Content-Type: application/json\r\n", body)
    }

    fn raw_request(
        &self,
        method: &str,
        path: &str,
        headers: &str,
        body: &str,
    ) -> std::io::Result<(u16, String)> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            stream,
            "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{headers}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Ok((status, response))
    }

    /// [`Moto::sdk_config`] with `role_arn`'s credentials (assumed through moto's STS) in
    /// `region`: the clients of another account, as an operator of it would have.
    pub async fn sdk_config_as(&self, role_arn: &str, region: &str) -> SdkConfig {
        let base = self.sdk_config().await;
        let provider = aws_config::sts::AssumeRoleProvider::builder(role_arn)
            .session_name("test")
            .configure(&base)
            .build()
            .await;
        base.to_builder()
            .region(Region::new(region.to_owned()))
            .credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(provider),
            )
            .build()
    }

    /// SDK config pointing at this moto with dummy credentials: no env, profile or
    /// instance-metadata lookups.
    pub async fn sdk_config(&self) -> SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(&self.endpoint)
            .credentials_provider(Credentials::new("testing", "testing", None, None, "moto"))
            .load()
            .await
    }

    /// Runs `localstack/seed.py` against this moto; returns its JSON summary.
    pub fn seed(&self, args: &[&str]) -> serde_json::Value {
        self.seed_in(None, REGION, args)
    }

    /// [`Moto::seed`] in `region` of the account of `role_arn` (assumed first), or of the
    /// caller's own account.
    pub fn seed_in(
        &self,
        role_arn: Option<&str>,
        region: &str,
        args: &[&str],
    ) -> serde_json::Value {
        let role = role_arn.map(|r| vec!["--role-arn", r]).unwrap_or_default();
        let out = Command::new(venv_python())
            .arg(repo_root().join("localstack/seed.py"))
            .args([
                "--endpoint-url",
                &self.endpoint,
                "--region",
                region,
                "--moto",
            ])
            .args(role)
            .args(args)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", REGION)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .output()
            .expect("run localstack/seed.py");
        assert!(
            out.status.success(),
            "seed.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("seed.py prints JSON")
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        // SIGTERM to `timeout` is forwarded to moto; SIGKILL is the fallback.
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The awsvpc network of the cluster `localstack/seed.py` made, for `run_task`.
pub fn awsvpc_network(seed: &serde_json::Value) -> NetworkConfiguration {
    NetworkConfiguration::builder()
        .awsvpc_configuration(
            AwsVpcConfiguration::builder()
                .subnets(seed["ecs"]["subnet"].as_str().unwrap())
                .security_groups(seed["ecs"]["security_group"].as_str().unwrap())
                .build()
                .unwrap(),
        )
        .build()
}

/// For a process whose AWS clients talk only to the emulator (the benchmark tools): dummy
/// credentials, a region and no instance-metadata probing, whatever the caller's environment
/// holds. Call before any thread starts (it sets environment variables).
pub fn use_emulator_environment() {
    for (key, value) in [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", REGION),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ] {
        std::env::set_var(key, value);
    }
    for key in ["AWS_PROFILE", "AWS_SESSION_TOKEN"] {
        std::env::remove_var(key);
    }
}

/// Starts one more Fargate task of `service` in the seeded cluster (as the service's scheduler
/// would, with its group); returns the task ARN.
pub async fn run_service_task(
    ecs: &aws_sdk_ecs::Client,
    seed: &serde_json::Value,
    service: &str,
) -> String {
    let out = ecs
        .run_task()
        .cluster(seed["ecs"]["cluster"].as_str().unwrap_or("demo"))
        .task_definition(
            seed["ecs"]["services"][service]["task_definition"]
                .as_str()
                .unwrap(),
        )
        .launch_type(aws_sdk_ecs::types::LaunchType::Fargate)
        .group(format!("service:{service}"))
        .network_configuration(awsvpc_network(seed))
        .send()
        .await
        .unwrap();
    out.tasks()[0].task_arn().unwrap().to_owned()
}

/// Sets tag `key` = `value` on ECS service `service` of the seeded cluster, as an operator would.
pub async fn tag_service(
    ecs: &aws_sdk_ecs::Client,
    service: &str,
    key: &str,
    value: &str,
) -> String {
    let described = ecs
        .describe_services()
        .cluster("demo")
        .services(service)
        .send()
        .await
        .unwrap();
    let arn = described.services()[0].service_arn().unwrap().to_owned();
    let tag = aws_sdk_ecs::types::Tag::builder()
        .key(key)
        .value(value)
        .build();
    ecs.tag_resource()
        .resource_arn(&arn)
        .tags(tag)
        .send()
        .await
        .unwrap();
    arn
}

/// The ENI address of each running task of `service` in the seeded cluster, from ECS itself.
pub async fn running_task_ips(ecs: &aws_sdk_ecs::Client, service: &str) -> BTreeSet<String> {
    running_task_ips_in(ecs, "demo", service).await
}

/// [`running_task_ips`] in ECS cluster `cluster`.
pub async fn running_task_ips_in(
    ecs: &aws_sdk_ecs::Client,
    cluster: &str,
    service: &str,
) -> BTreeSet<String> {
    let listed = ecs.list_tasks().cluster(cluster).send().await.unwrap();
    if listed.task_arns().is_empty() {
        return BTreeSet::new();
    }
    let tasks = ecs
        .describe_tasks()
        .cluster(cluster)
        .set_tasks(Some(listed.task_arns().to_vec()))
        .send()
        .await
        .unwrap();
    let group = format!("service:{service}");
    tasks
        .tasks()
        .iter()
        .filter(|t| t.group() == Some(group.as_str()) && t.last_status() == Some("RUNNING"))
        .flat_map(|t| t.attachments())
        .flat_map(|a| a.details())
        .filter(|d| d.name() == Some("privateIPv4Address"))
        .filter_map(|d| d.value().map(str::to_owned))
        .collect()
}
