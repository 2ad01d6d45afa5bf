//! identity-load: how many workload-identity requests (`POST /v1/certificate`, issue 21) one
//! ecs-xds replica signs a second on this machine, and how much memory issuing them adds.
//!
//! ```text
//! cargo build --release --bin ecs-xds
//! cargo run --release --example identity-load -- --requests 5000 --concurrency 32
//! cargo run --release --example identity-load -- --requests 2000 --moto
//! ```
//!
//! Starts a fake AWS on 127.0.0.1 (STS GetCallerIdentity in XML; ECS ListTasks, DescribeTasks,
//! DescribeServices and DescribeTaskDefinition in awsJson1.1) for a fleet of `--tasks` awsvpc
//! tasks of `--services` services, each service with its task role. Then the real binary
//! (`ecs-xds run`, found next to this example's executable: build it with the same profile)
//! with `[identity]` on, its STS and ECS endpoints the fake, and a CA from `ecs-xds ca init`.
//!
//! Each request is what an agent sends: a fresh P-256 key and CSR, and a GetCallerIdentity
//! request signed with the task's (dummy) credentials and not sent. The requests are prepared
//! before the clock starts, so the rate is the server's and not the key generation's (which an
//! agent pays on its own task); that preparation is timed on its own (`client_prep_us`). Every
//! answer must be 200 with a certificate naming the task's service; a run with any failure
//! says so and exits 1.
//!
//! Phases, each `--requests` requests from `--concurrency` clients:
//! - `floor`: the same STS and ECS calls ecs-xds makes, made from here to the fake with the
//!   same clients ecs-xds uses (its `Sts`, the ECS SDK): what the AWS side costs on this
//!   machine without ecs-xds;
//! - `fresh`: one TLS connection per request (full handshake, no resumption), as agents do,
//!   renewing once every half certificate lifetime;
//! - `kept`: one kept-alive connection per client, for comparison.
//!
//! Prints one line per phase, then the daemon's memory: VmRSS before any request and after
//! every phase, once the allocator has settled (`--idle-ms`). CPU time per request (daemon and
//! this process, which is the clients and the fake AWS) says where the time goes: all of it
//! shares the machine's cores. `--moto` repeats `floor` and `fresh` against moto (Python, much
//! slower) for reference. Nothing leaves 127.0.0.1; the credentials are dummies.

#[path = "../tests/support/moto.rs"]
mod moto;
#[path = "../tests/support/proc.rs"]
mod proc_stats;
#[allow(dead_code)]
#[path = "../tests/support/templates.rs"]
mod templates;

use proc_stats::{cpu_seconds, rss_kb};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::Credentials;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use clap::{Parser, ValueEnum};
use ecs_xds::identity::attest::CertificateRequest;
use ecs_xds::identity::endpoint::{CertificateResponse, CERTIFICATE_PATH};
use ecs_xds::identity::proof::{KEY_HASH_HEADER, SERVER_ID_HEADER};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

const REGION: &str = "us-east-1";
const ACCOUNT: &str = "123456789012";
const CLUSTER: &str = "bench";
const TRUST_DOMAIN: &str = "bench.mesh";
const SERVER_ID: &str = "ecs-xds.bench.mesh";
/// A real session token is about a kilobyte; the proofs carry one of that size.
const TOKEN_UNIT: &str = "IQoJb3JpZ2luX2VjEXAMPLETOKEN/";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Connections {
    /// One TLS connection per request (what agents do).
    Fresh,
    /// One kept-alive connection per client.
    Kept,
    Both,
}

#[derive(Debug, Parser)]
#[command(about = "Load-test ecs-xds's identity endpoint (certificates signed per second)")]
struct Args {
    /// Requests per phase.
    #[arg(long, default_value_t = 5000)]
    requests: usize,
    /// Clients sending at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Tasks in the fake fleet (requests go to them in turn).
    #[arg(long, default_value_t = 1000)]
    tasks: usize,
    /// Services the tasks belong to (one task role and task definition each).
    #[arg(long, default_value_t = 10)]
    services: usize,
    #[arg(long, value_enum, default_value_t = Connections::Both)]
    connections: Connections,
    /// How long to let the daemon's allocator settle before each memory reading.
    #[arg(long, default_value_t = 3000)]
    idle_ms: u64,
    /// Also measure against moto (its STS and ECS), with `--moto-requests` requests.
    #[arg(long)]
    moto: bool,
    #[arg(long, default_value_t = 300)]
    moto_requests: usize,
}

fn main() {
    // Before the runtime starts any thread: dummy credentials, no instance-metadata probing,
    // for this process's AWS clients (the floor) and for the daemon it starts.
    moto::use_emulator_environment();
    let (_, hard) = rlimit::Resource::NOFILE.get().expect("read RLIMIT_NOFILE");
    let _ = rlimit::Resource::NOFILE.set(hard, hard);
    let args = Args::parse();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let failed = runtime.block_on(run(&args));
    if failed > 0 {
        eprintln!("identity-load: FAILED: {failed} requests did not get a certificate");
        std::process::exit(1);
    }
}

// ---- the fleet: tasks, their credentials and their requests ----

/// A task as its agent knows it: its ARN, its service and its task role's credentials.
#[derive(Clone)]
struct TaskCreds {
    task_arn: String,
    cluster: String,
    service: String,
    creds: Credentials,
}

/// The fake fleet's task `i`: its id is 32 hex digits, as ECS's are.
fn task_id(i: usize) -> String {
    format!("{i:032x}")
}

fn task_arn(i: usize) -> String {
    format!(
        "arn:aws:ecs:{REGION}:{ACCOUNT}:task/{CLUSTER}/{}",
        task_id(i)
    )
}

fn service(i: usize, services: usize) -> String {
    format!("svc-{:02}", i % services)
}

/// Each task's role credentials have their own access key, so the fake STS can tell which
/// task signed a proof (real STS tells from the key too).
fn access_key(i: usize) -> String {
    format!("ASIA{i:016}")
}

fn fake_fleet(tasks: usize, services: usize) -> Vec<TaskCreds> {
    let token = TOKEN_UNIT.repeat(1000 / TOKEN_UNIT.len());
    (0..tasks)
        .map(|i| TaskCreds {
            task_arn: task_arn(i),
            cluster: CLUSTER.to_owned(),
            service: service(i, services),
            creds: Credentials::new(
                access_key(i),
                "bench-secret",
                Some(token.clone()),
                None,
                "b",
            ),
        })
        .collect()
}

/// A request ready to send, and the service its certificate must name.
struct Prepared {
    body: Bytes,
    task: TaskCreds,
    proof: ecs_xds::aws::SignedRequest,
}

/// What an agent does for each renewal: a new key, its CSR, and the proof bound to it.
fn prepare(task: &TaskCreds) -> Prepared {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    let hash = ecs_xds::identity::ca::key_sha256_hex(&csr).unwrap();
    let extra = [
        (SERVER_ID_HEADER, SERVER_ID),
        (KEY_HASH_HEADER, hash.as_str()),
    ];
    let proof = ecs_xds::aws::sign_with(&task.creds, REGION, &extra, SystemTime::now()).unwrap();
    let request = CertificateRequest {
        proof: proof.clone(),
        csr,
        task_arn: task.task_arn.clone(),
    };
    Prepared {
        body: Bytes::from(serde_json::to_vec(&request).unwrap()),
        task: task.clone(),
        proof,
    }
}

/// `n` requests over `fleet` in turn, and how long one took to prepare (one thread).
fn prepare_all(fleet: &[TaskCreds], n: usize) -> (Arc<Vec<Prepared>>, Duration) {
    let started = Instant::now();
    let prepared: Vec<Prepared> = (0..n).map(|i| prepare(&fleet[i % fleet.len()])).collect();
    (Arc::new(prepared), started.elapsed() / n.max(1) as u32)
}

// ---- the fake AWS ----

/// Calls the fake answered, by operation.
#[derive(Default)]
struct Calls {
    sts: AtomicU64,
    describe_tasks: AtomicU64,
    describe_task_definition: AtomicU64,
    other: AtomicU64,
}

struct FakeAws {
    tasks: usize,
    services: usize,
    calls: Calls,
}

/// Serves the fake on a free 127.0.0.1 port; its `http://` endpoint.
async fn start_fake_aws(tasks: usize, services: usize) -> (String, Arc<FakeAws>) {
    let fake = Arc::new(FakeAws {
        tasks,
        services,
        calls: Calls::default(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let router = axum::Router::new()
        .fallback(fake_aws)
        .with_state(fake.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (endpoint, fake)
}

/// STS and ECS share the endpoint: ECS requests name their operation in `X-Amz-Target`.
async fn fake_aws(State(fake): State<Arc<FakeAws>>, headers: HeaderMap, body: Bytes) -> Response {
    match headers.get("x-amz-target").and_then(|t| t.to_str().ok()) {
        Some(target) => fake_ecs(&fake, target, &body),
        None => fake_sts(&fake, &headers),
    }
}

/// GetCallerIdentity: the task whose access key signed, as its role session (the task id).
/// The signature is not checked: that is STS's cost, not ecs-xds's.
fn fake_sts(fake: &FakeAws, headers: &HeaderMap) -> Response {
    fake.calls.sts.fetch_add(1, Ordering::Relaxed);
    let auth = headers.get("authorization").and_then(|a| a.to_str().ok());
    let key = auth.and_then(|a| a.split("Credential=").nth(1)?.split('/').next());
    let task = key
        .and_then(|k| k.strip_prefix("ASIA")?.parse::<usize>().ok())
        .filter(|i| *i < fake.tasks);
    let Some(i) = task else {
        let xml = "<ErrorResponse><Error><Type>Sender</Type><Code>InvalidClientTokenId</Code>\
                   <Message>The security token included in the request is invalid.</Message>\
                   </Error></ErrorResponse>";
        return (StatusCode::FORBIDDEN, [("content-type", "text/xml")], xml).into_response();
    };
    let (role, id) = (format!("{}-task", service(i, fake.services)), task_id(i));
    let xml = format!(
        "<GetCallerIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
         <GetCallerIdentityResult><Arn>arn:aws:sts::{ACCOUNT}:assumed-role/{role}/{id}</Arn>\
         <UserId>AROABENCH:{id}</UserId><Account>{ACCOUNT}</Account></GetCallerIdentityResult>\
         <ResponseMetadata><RequestId>bench</RequestId></ResponseMetadata>\
         </GetCallerIdentityResponse>"
    );
    (StatusCode::OK, [("content-type", "text/xml")], xml).into_response()
}

/// The ECS operations discovery and attestation call, answered as ECS does (awsJson1.1).
fn fake_ecs(fake: &FakeAws, target: &str, body: &[u8]) -> Response {
    let input: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let operation = target.rsplit('.').next().unwrap_or_default();
    let output = match operation {
        "ListTasks" => {
            let start: usize = input["nextToken"]
                .as_str()
                .map_or(0, |t| t.parse().unwrap_or(0));
            let end = (start + 100).min(fake.tasks);
            let next = (end < fake.tasks).then(|| end.to_string());
            json!({ "taskArns": (start..end).map(task_arn).collect::<Vec<_>>(), "nextToken": next })
        }
        "DescribeTasks" => {
            fake.calls.describe_tasks.fetch_add(1, Ordering::Relaxed);
            let arns = input["tasks"].as_array().cloned().unwrap_or_default();
            let tasks: Vec<Value> = (arns.iter().filter_map(|a| a.as_str()))
                .filter_map(|arn| fake.task_index(arn))
                .map(|i| fake.task_json(i))
                .collect();
            json!({ "tasks": tasks, "failures": [] })
        }
        "DescribeServices" => {
            let names = input["services"].as_array().cloned().unwrap_or_default();
            let services: Vec<Value> = (names.iter().filter_map(|n| n.as_str()))
                .map(|n| json!({ "serviceName": n, "serviceArn": format!("arn:aws:ecs:{REGION}:{ACCOUNT}:service/{CLUSTER}/{n}"), "status": "ACTIVE", "tags": [] }))
                .collect();
            json!({ "services": services, "failures": [] })
        }
        "DescribeTaskDefinition" => {
            fake.calls
                .describe_task_definition
                .fetch_add(1, Ordering::Relaxed);
            let arn = input["taskDefinition"].as_str().unwrap_or_default();
            let family = arn.rsplit('/').next().unwrap_or(arn);
            let family = family.split(':').next().unwrap_or(family);
            json!({ "taskDefinition": task_definition_json(family) })
        }
        _ => {
            fake.calls.other.fetch_add(1, Ordering::Relaxed);
            let error = json!({ "__type": "UnknownOperationException", "message": operation });
            return (StatusCode::BAD_REQUEST, amz_json(), error.to_string()).into_response();
        }
    };
    (StatusCode::OK, amz_json(), output.to_string()).into_response()
}

fn amz_json() -> [(&'static str, &'static str); 1] {
    [("content-type", "application/x-amz-json-1.1")]
}

impl FakeAws {
    fn task_index(&self, arn: &str) -> Option<usize> {
        let id = arn.strip_prefix(&format!("arn:aws:ecs:{REGION}:{ACCOUNT}:task/{CLUSTER}/"))?;
        usize::from_str_radix(id, 16)
            .ok()
            .filter(|i| *i < self.tasks)
    }

    /// A RUNNING awsvpc task of its service, with the fields ecs-xds reads.
    fn task_json(&self, i: usize) -> Value {
        let service = service(i, self.services);
        let ip = format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255);
        let zone = ["us-east-1a", "us-east-1b", "us-east-1c"][i % 3];
        json!({
            "taskArn": task_arn(i),
            "clusterArn": format!("arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/{CLUSTER}"),
            "group": format!("service:{service}"),
            "startedBy": "ecs-svc/1234567890",
            "lastStatus": "RUNNING",
            "desiredStatus": "RUNNING",
            "healthStatus": "HEALTHY",
            "availabilityZone": zone,
            "taskDefinitionArn": format!("arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/{service}:1"),
            "version": 3,
            "launchType": "FARGATE",
            "attachments": [{ "type": "ElasticNetworkInterface", "status": "ATTACHED", "details": [
                { "name": "privateIPv4Address", "value": ip },
                { "name": "subnetId", "value": "subnet-bench" } ] }],
            "containers": [
                { "name": "app", "lastStatus": "RUNNING" },
                { "name": "envoy", "lastStatus": "RUNNING" } ],
            "overrides": { "containerOverrides": [] },
            "tags": []
        })
    }
}

/// A service's task definition: its task role, an app on 8080 and an Envoy sidecar.
fn task_definition_json(family: &str) -> Value {
    json!({
        "taskDefinitionArn": format!("arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/{family}:1"),
        "family": family,
        "revision": 1,
        "networkMode": "awsvpc",
        "requiresCompatibilities": ["FARGATE"],
        "taskRoleArn": format!("arn:aws:iam::{ACCOUNT}:role/{family}-task"),
        "containerDefinitions": [
            { "name": "app", "essential": true, "portMappings": [{ "containerPort": 8080 }] },
            { "name": "envoy", "essential": true, "portMappings": [{ "containerPort": 15000 }] } ]
    })
}

// ---- the daemon ----

/// The `ecs-xds` binary of this example's profile: `target/<profile>/ecs-xds`.
fn binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().and_then(Path::parent).unwrap().join("ecs-xds");
    assert!(
        bin.exists(),
        "{} not found: build it with the same profile (cargo build --release --bin ecs-xds)",
        bin.display()
    );
    warn_if_stale(&bin);
    bin
}

/// A binary older than the sources would measure old code: say so (cargo does not rebuild it
/// for an example).
fn warn_if_stale(bin: &Path) {
    fn newest(dir: &Path) -> SystemTime {
        let entries = std::fs::read_dir(dir).into_iter().flatten().flatten();
        entries
            .map(|e| match e.file_type().is_ok_and(|t| t.is_dir()) {
                true => newest(&e.path()),
                false => {
                    (e.metadata().and_then(|m| m.modified())).unwrap_or(SystemTime::UNIX_EPOCH)
                }
            })
            .max()
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }
    let built = std::fs::metadata(bin).and_then(|m| m.modified());
    let src = newest(&moto::repo_root().join("src"));
    if built.is_ok_and(|built| built < src) {
        eprintln!(
            "identity-load: WARNING: {} is older than src/: rebuild it (cargo build --bin ecs-xds)",
            bin.display()
        );
    }
}

/// `ecs-xds run` with `[identity]` on, its log in `dir/ecs-xds.log`. Killed when dropped.
struct Daemon {
    child: tokio::process::Child,
    pid: u32,
    identity: SocketAddr,
    admin: SocketAddr,
    bundle: String,
    log: PathBuf,
}

/// `ecs-xds ca init`, then `ecs-xds run` against `aws` (STS and ECS), watching `cluster`.
async fn start_daemon(dir: &Path, aws: &str, cluster: &str) -> Daemon {
    let bin = binary();
    let ca = dir.join("ca");
    let init = std::process::Command::new(&bin)
        .args(["ca", "init", "--trust-domain", TRUST_DOMAIN, "--out"])
        .arg(&ca)
        .output()
        .expect("run ecs-xds ca init");
    assert!(
        init.status.success(),
        "ca init: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    let sidecar = templates::egress_sidecar(15001, "egress", 1);
    std::fs::write(dir.join("templates/sidecar.toml"), sidecar).unwrap();
    let settings = format!(
        r#"[xds]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[aws]
endpoint_url = "{aws}"
[ecs]
clusters = ["{cluster}"]
# One discovery at start: polls must not share the measured time.
poll_interval = "1h"
[identity]
enabled = true
trust_domain = "{TRUST_DOMAIN}"
listen = "127.0.0.1:0"
server_names = ["localhost"]
sts_endpoint = "{aws}"
max_connections = 4096
ca = {{ key_file = "{0}/intermediate-key.pem", chain_file = "{0}/intermediate.pem", bundle_file = "{0}/bundle.pem" }}
"#,
        ca.display()
    );
    let config = dir.join("ecs-xds.toml");
    std::fs::write(&config, settings).unwrap();
    let log_path = dir.join("ecs-xds.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let child = tokio::process::Command::new(&bin)
        .args(["run", "--config"])
        .arg(&config)
        .env("NO_COLOR", "1")
        .env_remove("AWS_ENDPOINT_URL")
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("start ecs-xds run");
    let (identity, admin) = wait_listening(&log_path).await;
    Daemon {
        pid: child.id().unwrap(),
        child,
        identity,
        admin,
        bundle: std::fs::read_to_string(ca.join("bundle.pem")).unwrap(),
        log: log_path,
    }
}

/// The identity and admin addresses of the `ecs-xds listening ...` line, once logged.
async fn wait_listening(log: &Path) -> (SocketAddr, SocketAddr) {
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains("ecs-xds listening")) {
            let field = |name: &str| -> Option<SocketAddr> {
                let start = line.find(name)? + name.len();
                let rest = &line[start..];
                rest.split([' ', ')']).next()?.parse().ok()
            };
            if let (Some(identity), Some(admin)) = (field("identity=Some("), field("admin=")) {
                return (identity, admin);
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "ecs-xds did not report its identity listener:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Daemon {
    /// A metric from the admin API's `/metrics` (0 when absent).
    async fn metric(&self, name: &str) -> f64 {
        let url = format!("http://{}/metrics", self.admin);
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let text = match client.get(&url).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        (text.lines())
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// Stops the daemon, and shows any warning or error it logged: a refusal, or a discovery
    /// that did not go through, would make the figures wrong.
    async fn stop(mut self) {
        let _ = self.child.kill().await;
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let bad: Vec<&str> = (log.lines())
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .collect();
        for line in bad.iter().take(5) {
            eprintln!("identity-load: ecs-xds logged: {line}");
        }
        if !bad.is_empty() {
            eprintln!(
                "identity-load: ecs-xds logged {} warnings or errors",
                bad.len()
            );
        }
    }
}

// ---- the clients ----

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// The identity endpoint, reached over TLS trusting the CA's bundle, as agents reach it.
struct Target {
    addr: SocketAddr,
    tls: tokio_rustls::TlsConnector,
}

impl Target {
    /// `resume`: whether TLS sessions may be resumed. An agent renews once every half
    /// certificate lifetime (hours), long after any session ticket it kept has expired, so
    /// each renewal is a full handshake.
    fn new(addr: SocketAddr, bundle: &str, resume: bool) -> Target {
        let mut config = ecs_xds::identity::tls::client_config(bundle).unwrap();
        if !resume {
            config.resumption = rustls::client::Resumption::disabled();
        }
        Target {
            addr,
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        }
    }

    async fn connect(&self) -> Result<Sender, String> {
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let tls = (self.tls.connect(name, tcp).await).map_err(|e| format!("TLS: {e}"))?;
        let io = hyper_util::rt::TokioIo::new(tls);
        let (sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        tokio::spawn(connection);
        Ok(sender)
    }
}

/// Sends `p` on `sender` and checks the answer: 200, a certificate, the task's service.
async fn send(sender: &mut Sender, p: &Prepared) -> Result<(), String> {
    sender.ready().await.map_err(|e| format!("HTTP: {e}"))?;
    let request = http::Request::post(CERTIFICATE_PATH)
        .header(http::header::HOST, "localhost")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(p.body.clone()))
        .unwrap();
    let response = (sender.send_request(request).await).map_err(|e| format!("HTTP: {e}"))?;
    let status = response.status();
    let body = (response.into_body().collect().await)
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    if status != http::StatusCode::OK {
        return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body)));
    }
    let answer: CertificateResponse =
        serde_json::from_slice(&body).map_err(|e| format!("answer: {e}"))?;
    let names = format!("/{}/{}", p.task.cluster, p.task.service);
    if !answer
        .certificate_chain
        .starts_with("-----BEGIN CERTIFICATE-----")
        || !answer.spiffe_id.ends_with(&names)
    {
        return Err(format!(
            "unexpected answer for {names}: {}",
            answer.spiffe_id
        ));
    }
    Ok(())
}

/// The AWS calls ecs-xds makes for one request, made from here with the clients it uses.
struct Floor {
    sts: ecs_xds::aws::Sts,
    ecs: aws_sdk_ecs::Client,
}

impl Floor {
    fn new(endpoint: &str) -> Floor {
        let counter = ecs_xds::aws::CallCounter::default();
        let creds = Credentials::new("testing", "testing", None, None, "bench");
        let config = aws_sdk_ecs::Config::builder()
            .behavior_version_latest()
            .region(aws_sdk_ecs::config::Region::new(REGION))
            .endpoint_url(endpoint)
            .credentials_provider(creds)
            .build();
        Floor {
            sts: ecs_xds::aws::Sts::new(REGION, Some(endpoint), counter).unwrap(),
            ecs: aws_sdk_ecs::Client::from_conf(config),
        }
    }

    /// GetCallerIdentity with the proof, then DescribeTasks for the task it names.
    async fn call(&self, p: &Prepared) -> Result<(), String> {
        let arn = (self.sts.caller_arn(&p.proof).await).map_err(|e| e.to_string())?;
        let id = p.task.task_arn.rsplit('/').next().unwrap_or_default();
        if !arn.ends_with(&format!("/{id}")) {
            return Err(format!("STS says {arn}"));
        }
        let described = self
            .ecs
            .describe_tasks()
            .cluster(&p.task.cluster)
            .tasks(&p.task.task_arn)
            .include(aws_sdk_ecs::types::TaskField::Tags)
            .send()
            .await
            .map_err(|e| aws_sdk_ecs::error::DisplayErrorContext(e).to_string())?;
        match described.tasks().len() {
            1 => Ok(()),
            n => Err(format!("DescribeTasks found {n} tasks")),
        }
    }
}

/// What one phase's clients do for each request.
enum Mode {
    Floor(Box<Floor>),
    Fresh(Target),
    Kept(Target),
}

impl Mode {
    fn name(&self) -> &'static str {
        match self {
            Mode::Floor(_) => "floor",
            Mode::Fresh(_) => "fresh",
            Mode::Kept(_) => "kept",
        }
    }
}

/// One client: takes the next request until none is left; its latencies and errors.
async fn client(
    mode: Arc<Mode>,
    prepared: Arc<Vec<Prepared>>,
    next: Arc<AtomicUsize>,
) -> (Vec<Duration>, Vec<String>) {
    let (mut latencies, mut errors) = (Vec::new(), Vec::new());
    let mut kept: Option<Sender> = None;
    while let Some(p) = prepared.get(next.fetch_add(1, Ordering::Relaxed)) {
        let started = Instant::now();
        let one = async {
            match &*mode {
                Mode::Floor(floor) => floor.call(p).await,
                Mode::Fresh(target) => send(&mut target.connect().await?, p).await,
                Mode::Kept(target) => {
                    if kept.is_none() {
                        kept = Some(target.connect().await?);
                    }
                    send(kept.as_mut().unwrap(), p).await
                }
            }
        };
        let outcome = match tokio::time::timeout(Duration::from_secs(30), one).await {
            Ok(outcome) => outcome,
            Err(_) => Err("no answer within 30 s".to_owned()),
        };
        match outcome {
            Ok(()) => latencies.push(started.elapsed()),
            Err(e) => {
                kept = None;
                errors.push(e);
            }
        }
    }
    (latencies, errors)
}

// ---- the phases ----

/// One phase's figures.
struct Phase {
    name: &'static str,
    latencies: Vec<Duration>,
    errors: Vec<String>,
    elapsed: Duration,
    /// CPU seconds the daemon and this process (clients, fake AWS) used during the phase.
    daemon_cpu: f64,
    own_cpu: f64,
}

/// `prepared` sent by `concurrency` clients in `mode`; `daemon` is watched for its CPU time.
async fn phase(
    mode: Mode,
    prepared: Arc<Vec<Prepared>>,
    concurrency: usize,
    daemon: Option<u32>,
) -> Phase {
    let name = mode.name();
    let (mode, next) = (Arc::new(mode), Arc::new(AtomicUsize::new(0)));
    let daemon_cpu = || daemon.map_or(0.0, cpu_seconds);
    let (daemon_start, own_start) = (daemon_cpu(), cpu_seconds("self"));
    let started = Instant::now();
    let clients: Vec<_> = (0..concurrency)
        .map(|_| tokio::spawn(client(mode.clone(), prepared.clone(), next.clone())))
        .collect();
    let (mut latencies, mut errors) = (Vec::new(), Vec::new());
    for c in clients {
        let (l, e) = c.await.unwrap();
        latencies.extend(l);
        errors.extend(e);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    Phase {
        name,
        latencies,
        errors,
        elapsed,
        daemon_cpu: daemon_cpu() - daemon_start,
        own_cpu: cpu_seconds("self") - own_start,
    }
}

impl Phase {
    fn per_s(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile_ms(&self, p: usize) -> f64 {
        let Some(last) = self.latencies.len().checked_sub(1) else {
            return f64::NAN;
        };
        let i = (self.latencies.len() * p).div_ceil(100).clamp(1, last + 1) - 1;
        self.latencies[i].as_secs_f64() * 1000.0
    }

    /// `identity-load <against> <phase> ...`; `floor` is the floor's rate, for the ratio.
    fn print(&self, against: &str, concurrency: usize, floor: Option<f64>) {
        let n = (self.latencies.len() + self.errors.len()).max(1) as f64;
        let ratio = floor.map_or(String::new(), |f| {
            format!(" of_floor={:.2}", self.per_s() / f)
        });
        let daemon = match self.name {
            "floor" => String::new(),
            _ => format!(
                " daemon_cpu_ms_per_req={:.3} daemon_one_core_per_s={:.0}",
                self.daemon_cpu * 1000.0 / n,
                n / self.daemon_cpu.max(1e-9)
            ),
        };
        println!(
            "identity-load {against} {} requests={} concurrency={concurrency} ok={} failed={} per_s={:.0}{ratio} p50_ms={:.2} p99_ms={:.2}{daemon} own_cpu_ms_per_req={:.3}",
            self.name,
            n as usize,
            self.latencies.len(),
            self.errors.len(),
            self.per_s(),
            self.percentile_ms(50),
            self.percentile_ms(99),
            self.own_cpu * 1000.0 / n,
        );
        for e in self.errors.iter().take(5) {
            eprintln!("identity-load: {against} {}: {e}", self.name);
        }
    }
}

/// The floor, then each connection mode against `daemon`, then its memory; the failures.
async fn measure(
    args: &Args,
    against: &str,
    fleet: &[TaskCreds],
    endpoint: &str,
    daemon: &Daemon,
    n: usize,
    modes: &[Connections],
) -> usize {
    let c = args.concurrency;
    let (prepared, prep) = prepare_all(fleet, n);
    println!(
        "identity-load {against} client_prep_us={:.0} client_prep_one_core_per_s={:.0}",
        prep.as_secs_f64() * 1e6,
        1.0 / prep.as_secs_f64()
    );
    let floor = phase(
        Mode::Floor(Box::new(Floor::new(endpoint))),
        prepared,
        c,
        None,
    )
    .await;
    floor.print(against, c, None);
    let mut failed = floor.errors.len();
    tokio::time::sleep(Duration::from_millis(args.idle_ms)).await;
    let mut rss = vec![("before", rss_kb(daemon.pid))];
    let mut issued = 0;
    for mode in modes {
        // Prepared afresh: proofs are valid for 15 minutes from their signing.
        let (prepared, _) = prepare_all(fleet, n);
        let mode = match mode {
            Connections::Kept => Mode::Kept(Target::new(daemon.identity, &daemon.bundle, true)),
            _ => Mode::Fresh(Target::new(daemon.identity, &daemon.bundle, false)),
        };
        let p = phase(mode, prepared, c, Some(daemon.pid)).await;
        p.print(against, c, Some(floor.per_s()));
        (failed, issued) = (failed + p.errors.len(), issued + p.latencies.len());
        tokio::time::sleep(Duration::from_millis(args.idle_ms)).await;
        rss.push((p.name, rss_kb(daemon.pid)));
    }
    let counted = daemon
        .metric("ecs_xds_identity_certificates_issued_total")
        .await;
    if counted as usize != issued {
        eprintln!("identity-load: the daemon counts {counted} certificates, the clients {issued}");
    }
    print_memory(against, &rss, issued, fleet.len().min(n));
    failed
}

/// The daemon's RSS at each reading, and what the certificates added; `tasks` is how many
/// distinct tasks they went to (the daemon keeps each task's newest expiry for `/metrics`).
fn print_memory(against: &str, rss: &[(&str, u64)], issued: usize, tasks: usize) {
    let (before, after) = (rss[0].1, rss[rss.len() - 1].1);
    let added = after.saturating_sub(before) as f64;
    let readings: Vec<String> = (rss.iter())
        .map(|(at, kb)| format!("rss_{at}_mb={:.1}", *kb as f64 / 1024.0))
        .collect();
    println!(
        "identity-load {against} memory tasks={tasks} certificates={issued} {} added_mb={:.2} added_kb_per_certificate={:.3} added_kb_per_task={:.2}",
        readings.join(" "),
        added / 1024.0,
        added / issued.max(1) as f64,
        added / tasks.max(1) as f64,
    );
}

async fn run(args: &Args) -> usize {
    let modes: &[Connections] = match args.connections {
        Connections::Both => &[Connections::Fresh, Connections::Kept],
        Connections::Fresh => &[Connections::Fresh],
        Connections::Kept => &[Connections::Kept],
    };
    let fleet = fake_fleet(args.tasks, args.services);
    let (endpoint, fake) = start_fake_aws(args.tasks, args.services).await;
    let dir = tempfile::tempdir().unwrap();
    let daemon = start_daemon(dir.path(), &endpoint, CLUSTER).await;
    eprintln!(
        "identity-load: ecs-xds (pid {}) identity on {}, fake AWS on {endpoint}, {} cores",
        daemon.pid,
        daemon.identity,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut failed = measure(
        args,
        "fake",
        &fleet,
        &endpoint,
        &daemon,
        args.requests,
        modes,
    )
    .await;
    let calls = &fake.calls;
    println!(
        "identity-load fake aws_calls get_caller_identity={} describe_tasks={} describe_task_definition={} unknown={}",
        calls.sts.load(Ordering::Relaxed),
        calls.describe_tasks.load(Ordering::Relaxed),
        calls.describe_task_definition.load(Ordering::Relaxed),
        calls.other.load(Ordering::Relaxed),
    );
    daemon.stop().await;
    if args.moto {
        failed += against_moto(args).await;
    }
    failed
}

/// The same against moto: its STS issues each seeded task's role credentials (AssumeRole,
/// session named after the task id, as ECS does) and answers GetCallerIdentity for them.
async fn against_moto(args: &Args) -> usize {
    let emulator = moto::Moto::start();
    let seed = emulator.seed(&["--tasks-per-service", "2"]);
    let sts = aws_sdk_sts::Client::new(&emulator.sdk_config().await);
    let mut fleet = Vec::new();
    let services = seed["ecs"]["services"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    for (service, facts) in services {
        let role = facts["task_role"].as_str().unwrap();
        for task in facts["tasks"].as_array().into_iter().flatten() {
            let task_arn = task.as_str().unwrap().to_owned();
            let assumed = sts
                .assume_role()
                .role_arn(role)
                .role_session_name(task_arn.rsplit('/').next().unwrap())
                .send()
                .await
                .expect("moto AssumeRole");
            let c = assumed.credentials().unwrap();
            let creds = Credentials::new(
                c.access_key_id(),
                c.secret_access_key(),
                Some(c.session_token().to_owned()),
                None,
                "moto",
            );
            let (cluster, service) = ("demo".to_owned(), service.clone());
            fleet.push(TaskCreds {
                task_arn,
                cluster,
                service,
                creds,
            });
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let daemon = start_daemon(dir.path(), &emulator.endpoint, "demo").await;
    let n = args.moto_requests;
    let failed = measure(
        args,
        "moto",
        &fleet,
        &emulator.endpoint,
        &daemon,
        n,
        &[Connections::Fresh],
    )
    .await;
    daemon.stop().await;
    failed
}
