//! Workload identity with real parts: moto's STS and ECS, the real binary as ecs-xds (`run`,
//! with `[identity]`) and as the agent, a CA made by `ecs-xds ca init`, and a real Envoy 1.40
//! whose xDS channel is mutual TLS from the agent's files (file-based SDS).
//!
//! moto's STS answers GetCallerIdentity for the keys its AssumeRole issued with
//! `assumed-role/ROLE/SESSION`, as AWS does for a task role (ECS names the session after the
//! task id); it does not check signatures, so a forged signature is not among the cases here
//! (what ecs-xds checks before STS is: stale, other action, other server, other key).

mod accounts;
mod rest;
mod zones;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aws_sdk_ecs::Client as Ecs;
use serde_json::{json, Value};
use tokio::process::{Child, Command};

use crate::support::daemon::Running;
use crate::support::envoy::{bootstrap_json, free_port, xds_tls, AdsMode, Envoy};
use crate::support::http::{get, scrape_metric, wait_for_metric};
use crate::support::moto::{Moto, REGION};
use crate::support::settings::SettingsFile;
use crate::support::templates::egress_sidecar;

pub const TRUST_DOMAIN: &str = "mesh.test";
pub const SERVER_ID: &str = "ecs-xds.mesh.test";
const STS_CALLS: &str =
    "ecs_xds_aws_requests_total{account=\"self\",region=\"default\",operation=\"GetCallerIdentity\",outcome=\"ok\"}";
const TLS_FAILED: &str = "ecs_xds_connections_tls_failed_total{listener=\"xds\"}";

/// A moto with the demo cluster, a CA, and ecs-xds serving it with `[identity]` on and mTLS on
/// xDS (`client_auth` as given).
pub struct Mesh {
    pub moto: Moto,
    pub seed: Value,
    pub dir: tempfile::TempDir,
    pub daemon: Running,
    pub identity: SocketAddr,
}

impl Mesh {
    /// A mesh whose CA is files, with `identity` (TOML lines) added to `[identity]`.
    pub async fn start(identity: &str) -> Mesh {
        let moto = Moto::start();
        let seed = moto.seed(&["--tasks-per-service", "1"]);
        let dir = prepared_dir();
        let files = ca_files(dir.path());
        let config = identity_settings(&moto, &format!("{files}\n{identity}")).write(dir.path());
        Mesh::serve(moto, seed, dir, &config).await
    }

    /// Starts ecs-xds with `config` for the mesh.
    pub async fn serve(moto: Moto, seed: Value, dir: tempfile::TempDir, config: &Path) -> Mesh {
        let daemon = Running::start(config).await;
        let identity = daemon.identity().expect("the identity endpoint's address");
        Mesh {
            moto,
            seed,
            dir,
            daemon,
            identity,
        }
    }

    pub fn bundle(&self) -> PathBuf {
        self.dir.path().join("ca/bundle.pem")
    }

    /// The ARN of `service`'s seeded task.
    pub fn task(&self, service: &str) -> String {
        self.seed["ecs"]["services"][service]["tasks"][0]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub fn role(&self, service: &str) -> String {
        self.seed["ecs"]["services"][service]["task_role"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn ecs(&self) -> Ecs {
        Ecs::new(&self.moto.sdk_config().await)
    }

    /// The credentials ECS would give the task `task_arn` running with `role`: AssumeRole with
    /// the task id as the session name.
    pub async fn task_credentials(&self, role: &str, task_arn: &str) -> TaskCredentials {
        let sts = aws_sdk_sts::Client::new(&self.moto.sdk_config().await);
        let assumed = sts
            .assume_role()
            .role_arn(role)
            .role_session_name(task_id(task_arn))
            .send()
            .await
            .unwrap();
        let c = assumed.credentials().unwrap();
        TaskCredentials {
            key: c.access_key_id().to_owned(),
            secret: c.secret_access_key().to_owned(),
            token: c.session_token().to_owned(),
        }
    }

    /// `service`'s seeded task with the certificate its agent wrote into `dir_name`: (the task
    /// ARN, the directory, the agent, still renewing).
    pub async fn certified(&self, service: &str, dir_name: &str) -> (String, PathBuf, Agent) {
        let task = self.task(service);
        let creds = self.task_credentials(&self.role(service), &task).await;
        let certs = self.dir.path().join(dir_name);
        let agent = self.agent(&creds, &task, &certs);
        wait_for_certificate(&certs, &agent).await;
        (task, certs, agent)
    }

    /// `ecs-xds agent` for `task_arn` with `creds`, writing into `out`.
    pub fn agent(&self, creds: &TaskCredentials, task_arn: &str, out: &Path) -> Agent {
        self.agent_with(creds, task_arn, out, SERVER_ID, &self.bundle())
    }

    /// [`Mesh::agent`] naming `server_id` and trusting `bundle`.
    pub fn agent_with(
        &self,
        creds: &TaskCredentials,
        task_arn: &str,
        out: &Path,
        server_id: &str,
        bundle: &Path,
    ) -> Agent {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ecs-xds"));
        command
            .arg("agent")
            .arg("--server")
            .arg(format!("https://localhost:{}", self.identity.port()))
            .args(["--server-id", server_id, "--sts-region", REGION])
            .arg("--trust-bundle-file")
            .arg(bundle)
            .arg("--out")
            .arg(out)
            .args(["--task-arn", task_arn])
            .env("AWS_ACCESS_KEY_ID", &creds.key)
            .env("AWS_SECRET_ACCESS_KEY", &creds.secret)
            .env("AWS_SESSION_TOKEN", &creds.token)
            .env("AWS_REGION", REGION)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_PROFILE")
            .env_remove("ECS_CONTAINER_METADATA_URI_V4")
            .env_remove("AWS_CONTAINER_CREDENTIALS_FULL_URI")
            .env_remove("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
            .kill_on_drop(true);
        let (child, log) = crate::support::daemon::start_logged(command);
        Agent { _child: child, log }
    }

    /// `identity_certificates_issued_total`.
    pub async fn issued(&self) -> f64 {
        let metric = "ecs_xds_identity_certificates_issued_total";
        scrape_metric(self.daemon.admin, metric).await
    }

    /// Waits until `identity_requests_total{outcome,reason}` is at least `n`.
    pub async fn wait_for_outcome(&self, outcome: &str, reason: &str, n: f64) {
        let metric =
            format!("ecs_xds_identity_requests_total{{outcome=\"{outcome}\",reason=\"{reason}\"}}");
        wait_for_metric(self.daemon.admin, &metric, n, Duration::from_secs(20)).await;
    }

    /// An Envoy of `service` whose xDS channel is TLS with the agent's files in `certs` (or no
    /// client certificate when `None`), checking that the server is ecs-xds of the trust domain.
    pub async fn envoy(&self, node_id: &str, service: &str, certs: Option<&Path>) -> Envoy {
        let config = self.bootstrap(node_id, service, certs);
        Envoy::start_config(config, AdsMode::Sotw).await
    }

    /// The bootstrap of [`Mesh::envoy`].
    pub fn bootstrap(&self, node_id: &str, service: &str, certs: Option<&Path>) -> Value {
        let mut config = bootstrap_json(node_id, self.daemon.xds, AdsMode::Sotw);
        config["node"]["cluster"] = json!(service);
        config["static_resources"]["clusters"][0]["transport_socket"] =
            xds_tls(&self.bundle(), certs, TRUST_DOMAIN);
        config
    }
}

/// A test directory with a CA from `ecs-xds ca init` in `ca/` and the sidecar template.
pub fn prepared_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    ca_init(&dir.path().join("ca"));
    std::fs::create_dir_all(dir.path().join("templates")).unwrap();
    let sidecar = egress_sidecar(free_port(), "egress", 1);
    std::fs::write(dir.path().join("templates/sidecar.toml"), sidecar).unwrap();
    dir
}

/// `identity.ca` naming the files `ecs-xds ca init` wrote into `dir/ca`.
fn ca_files(dir: &Path) -> String {
    let ca = dir.join("ca");
    format!(
        r#"ca = {{ key_file = "{}", chain_file = "{}", bundle_file = "{}" }}"#,
        ca.join("intermediate-key.pem").display(),
        ca.join("intermediate.pem").display(),
        ca.join("bundle.pem").display(),
    )
}

/// ecs-xds discovering moto's demo cluster, with `[identity]` on (its CA and more keys in
/// `identity`) and mutual TLS on xDS.
pub fn identity_settings(moto: &Moto, identity: &str) -> SettingsFile {
    SettingsFile::new()
        .aws_endpoint(&moto.endpoint)
        .clusters(&["demo"])
        .set("xds", "tls", true)
        .raw(
            "identity",
            &format!(
                r#"enabled = true
                trust_domain = "{TRUST_DOMAIN}"
                listen = "127.0.0.1:0"
                server_names = ["localhost"]
                sts_endpoint = "{}"
                request_timeout = "2s"
                {identity}"#,
                moto.endpoint
            ),
        )
}

pub struct TaskCredentials {
    pub key: String,
    pub secret: String,
    pub token: String,
}

pub struct Agent {
    _child: Child,
    pub log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Agent {
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub async fn wait_for_log(&self, needle: &str, limit: Duration) {
        let started = Instant::now();
        while !self.log().contains(needle) {
            assert!(
                started.elapsed() < limit,
                "the agent did not log {needle:?} within {limit:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

pub fn task_id(task_arn: &str) -> &str {
    task_arn.rsplit('/').next().unwrap()
}

/// `ecs-xds ca init --out dir --trust-domain mesh.test`.
pub fn ca_init(dir: &Path) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ecs-xds"))
        .args(["ca", "init", "--trust-domain", TRUST_DOMAIN, "--out"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ca init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The URI SAN of the first certificate of `dir/cert.pem`, and its serial (hex).
pub fn certificate_identity(dir: &Path) -> (String, String) {
    let pem = std::fs::read(dir.join("cert.pem")).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    let cert = pem.parse_x509().unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    let uris: Vec<String> = san
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(u) => Some(u.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(uris.len(), 1, "one URI SAN: {uris:?}");
    (uris[0].clone(), normal_serial(&cert.raw_serial_as_string()))
}

/// A serial number as lower-case hex without separators or leading zeros, as both x509-parser
/// (`01:ab:…`) and Envoy's `/certs` can be compared in.
fn normal_serial(text: &str) -> String {
    let hex: String = text.chars().filter(|c| *c != ':').collect();
    hex.trim_start_matches('0').to_lowercase()
}

/// Waits until `envoy` holds the discovered cluster `web` (`what` says how it got there).
async fn wait_for_discovered(envoy: &Envoy, what: &str) {
    let limit = Duration::from_secs(20);
    envoy
        .wait_for(what, limit, || async {
            envoy.cluster_names().await.contains("web")
        })
        .await;
}

/// The admin `/nodes` of the ecs-xds whose admin endpoint is `admin`.
async fn nodes_of(admin: SocketAddr) -> Value {
    serde_json::from_str(&get(admin, "/nodes").await.1).unwrap()
}

/// Waits until the agent has written its certificate and both SDS files into `dir`.
pub async fn wait_for_certificate(dir: &Path, agent: &Agent) {
    let limit = Duration::from_secs(20);
    let files = [
        "cert.pem",
        "tls_certificate.yaml",
        "validation_context.yaml",
    ];
    let started = Instant::now();
    while !files.iter().all(|f| dir.join(f).exists()) {
        assert!(
            started.elapsed() < limit,
            "{} not written within {limit:?}; the agent's log:\n{}",
            dir.display(),
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn spiffe_id(service: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/ecs/123456789012/{REGION}/demo/{service}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_proves_its_service_with_its_task_role_and_its_envoy_gets_config_over_mutual_tls() {
    let mesh = Mesh::start("").await;
    let (_, certs, _agent) = mesh.certified("web", "certs-web").await;
    let (san, _) = certificate_identity(&certs);
    assert_eq!(san, spiffe_id("web"));
    mesh.wait_for_outcome("issued", "ok", 1.0).await;

    let envoy = mesh.envoy("sidecar-web", "web", Some(&certs)).await;
    wait_for_discovered(&envoy, "the discovered clusters over mTLS").await;
    let nodes: Value = nodes_of(mesh.daemon.admin).await;
    let stream = &nodes["nodes"][0]["streams"][0];
    assert_eq!(stream["identity"], spiffe_id("web"), "{nodes}");

    // The same certificate with another service's claim is refused, and counted.
    let claims_api = mesh.envoy("sidecar-api", "api", Some(&certs)).await;
    wait_for_metric(
        mesh.daemon.admin,
        "ecs_xds_xds_identity_refused_total{reason=\"service_mismatch\"}",
        1.0,
        Duration::from_secs(20),
    )
    .await;
    assert!(claims_api
        .cluster_names()
        .await
        .iter()
        .all(|c| c == "ecs-xds"));

    // No client certificate: the handshake itself is refused (client_auth = "required").
    let anonymous = mesh.envoy("sidecar-anon", "web", None).await;
    wait_for_metric(mesh.daemon.admin, TLS_FAILED, 1.0, Duration::from_secs(20)).await;
    assert!(anonymous
        .cluster_names()
        .await
        .iter()
        .all(|c| c == "ecs-xds"));

    // A certificate for web from another CA (one that trusts it, too): refused in the handshake.
    let foreign = mesh.dir.path().join("certs-foreign");
    foreign_certificate(&mesh.dir.path().join("other-ca"), &foreign, "web");
    let failed_before = scrape_metric(mesh.daemon.admin, TLS_FAILED).await;
    let impostor = mesh.envoy("sidecar-impostor", "web", Some(&foreign)).await;
    let limit = Duration::from_secs(20);
    wait_for_metric(mesh.daemon.admin, TLS_FAILED, failed_before + 1.0, limit).await;
    let names = impostor.cluster_names().await;
    assert!(names.iter().all(|c| c == "ecs-xds"), "{names:?}");

    let nodes: Value = nodes_of(mesh.daemon.admin).await;
    let ids: Vec<&str> = (nodes["nodes"].as_array().unwrap().iter())
        .filter_map(|n| n["node_id"].as_str())
        .collect();
    assert_eq!(ids, ["sidecar-web"], "only the proven Envoy holds a stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_is_refused_for_another_role_task_or_server_and_for_a_stopped_task() {
    let mesh = Mesh::start("").await;
    let (web, api) = (mesh.task("web"), mesh.task("api"));
    let out = |name: &str| mesh.dir.path().join(name);

    // The api role, with the session of web's task: STS vouches, ECS disagrees on the role.
    let creds = mesh.task_credentials(&mesh.role("api"), &web).await;
    let role = mesh.agent(&creds, &web, &out("role"));
    mesh.wait_for_outcome("refused", "role_mismatch", 1.0).await;
    // The caller learns a reference, not the reason.
    role.wait_for_log("answered 403", Duration::from_secs(10))
        .await;
    assert!(!role.log().contains("role_mismatch"), "{}", role.log());

    // web's credentials naming api's task.
    let creds = mesh.task_credentials(&mesh.role("web"), &web).await;
    let _other_task = mesh.agent(&creds, &api, &out("task"));
    mesh.wait_for_outcome("refused", "task_mismatch", 1.0).await;

    // A proof for another ecs-xds (its server id), refused before STS is asked.
    let sts_calls = |text: &str| {
        crate::support::http::metric(
            text,
            "ecs_xds_aws_requests_total{account=\"self\",region=\"default\",operation=\"GetCallerIdentity\",outcome=\"ok\"}",
        )
    };
    let before = sts_calls(&get(mesh.daemon.admin, "/metrics").await.1);
    assert!(
        before >= Some(2.0),
        "the refusals above asked STS: {before:?}"
    );
    let _other_server = mesh.agent_with(
        &creds,
        &web,
        &out("server"),
        "ecs-xds.other",
        &mesh.bundle(),
    );
    mesh.wait_for_outcome("refused", "wrong_server_id", 1.0)
        .await;
    assert_eq!(
        sts_calls(&get(mesh.daemon.admin, "/metrics").await.1),
        before
    );

    // A plain IAM user (moto's own keys) is not a task role.
    let user = TaskCredentials {
        key: "testing".into(),
        secret: "testing".into(),
        token: String::new(),
    };
    let _user = mesh.agent(&user, &web, &out("user"));
    mesh.wait_for_outcome("refused", "not_a_task_role", 1.0)
        .await;

    // A stopped task's credentials stop working for a certificate.
    let ecs = mesh.ecs().await;
    ecs.stop_task()
        .cluster("demo")
        .task(&api)
        .send()
        .await
        .unwrap();
    let creds = mesh.task_credentials(&mesh.role("api"), &api).await;
    let _stopped = mesh.agent(&creds, &api, &out("stopped"));
    mesh.wait_for_outcome("refused", "task_not_running", 1.0)
        .await;

    for dir in ["role", "task", "server", "user", "stopped"] {
        assert!(!out(dir).join("cert.pem").exists(), "{dir}: no certificate");
    }
    assert_eq!(mesh.issued().await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_given_another_ca_refuses_the_server_and_writes_nothing() {
    let mesh = Mesh::start("").await;
    let other = mesh.dir.path().join("other-ca");
    ca_init(&other);
    let web = mesh.task("web");
    let creds = mesh.task_credentials(&mesh.role("web"), &web).await;
    let out = mesh.dir.path().join("certs");
    let agent = mesh.agent_with(&creds, &web, &out, SERVER_ID, &other.join("bundle.pem"));
    agent
        .wait_for_log("UnknownIssuer", Duration::from_secs(20))
        .await;
    assert!(!out.join("cert.pem").exists());
    assert_eq!(mesh.issued().await, 0.0);
}

/// A client of the identity endpoint speaking for itself (not the agent): HTTPS trusting the
/// mesh's bundle, a body as given.
async fn post_certificate(mesh: &Mesh, body: Vec<u8>) -> (u16, String) {
    use http_body_util::BodyExt;
    let bundle = std::fs::read_to_string(mesh.bundle()).unwrap();
    let tls = ecs_xds::identity::tls::client_config(&bundle).unwrap();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, http_body_util::Full<bytes::Bytes>>(connector);
    let request = http::Request::post(format!(
        "https://localhost:{}/v1/certificate",
        mesh.identity.port()
    ))
    .header("content-type", "application/json")
    .body(http_body_util::Full::new(bytes::Bytes::from(body)))
    .unwrap();
    let response = client.request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A certificate request for `task_arn` signed with `creds` at `signed_at`, binding the key
/// whose hash is `bound_key` (the CSR's own when `None`), the CSR built from `params`.
fn crafted_request(
    creds: &TaskCredentials,
    task_arn: &str,
    signed_at: std::time::SystemTime,
    params: rcgen::CertificateParams,
    bound_key: Option<&str>,
) -> ecs_xds::identity::attest::CertificateRequest {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    let own = ecs_xds::identity::ca::key_sha256_hex(&csr).unwrap();
    let hash = bound_key.unwrap_or(&own);
    let credentials = aws_credential_types::Credentials::new(
        &creds.key,
        &creds.secret,
        Some(creds.token.clone()),
        None,
        "test",
    );
    let extra = [
        (ecs_xds::identity::proof::SERVER_ID_HEADER, SERVER_ID),
        (ecs_xds::identity::proof::KEY_HASH_HEADER, hash),
    ];
    let proof = ecs_xds::aws::sign_with(&credentials, REGION, &extra, signed_at).unwrap();
    ecs_xds::identity::attest::CertificateRequest {
        proof,
        csr,
        task_arn: task_arn.to_owned(),
    }
}

fn plain_csr() -> rcgen::CertificateParams {
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_identity_endpoint_refuses_stale_rebound_or_other_proofs_and_bad_input_with_clear_statuses(
) {
    let mesh = Mesh::start("").await;
    let web = mesh.task("web");
    let creds = mesh.task_credentials(&mesh.role("web"), &web).await;
    let now = std::time::SystemTime::now();
    let send = |request: &ecs_xds::identity::attest::CertificateRequest| {
        serde_json::to_vec(request).unwrap()
    };

    // The control: a well-formed request is answered with a certificate for web.
    let good = crafted_request(&creds, &web, now, plain_csr(), None);
    let (status, body) = post_certificate(&mesh, send(&good)).await;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["spiffe_id"], spiffe_id("web"));

    // Signed 20 minutes ago: older than the 15 minutes allowed.
    let stale = crafted_request(
        &creds,
        &web,
        now - Duration::from_secs(1200),
        plain_csr(),
        None,
    );
    assert_eq!(post_certificate(&mesh, send(&stale)).await.0, 403);
    mesh.wait_for_outcome("refused", "stale_signature", 1.0)
        .await;

    // A proof bound to another key than the CSR's (a stolen proof with the thief's key).
    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let other_csr = plain_csr()
        .serialize_request(&other)
        .unwrap()
        .pem()
        .unwrap();
    let other_hash = ecs_xds::identity::ca::key_sha256_hex(&other_csr).unwrap();
    let rebound = crafted_request(&creds, &web, now, plain_csr(), Some(&other_hash));
    assert_eq!(post_certificate(&mesh, send(&rebound)).await.0, 403);
    mesh.wait_for_outcome("refused", "key_mismatch", 1.0).await;

    // Another action in the body (its signature no longer matters: refused before STS).
    let mut action = crafted_request(&creds, &web, now, plain_csr(), None);
    action.proof.body = "Action=AssumeRole&Version=2011-06-15".into();
    assert_eq!(post_certificate(&mesh, send(&action)).await.0, 403);
    mesh.wait_for_outcome("refused", "wrong_action", 1.0).await;

    // A CSR asking to be a CA, and one asking for another name.
    let mut ca = plain_csr();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let asks_ca = crafted_request(&creds, &web, now, ca, None);
    let before = scrape_metric(mesh.daemon.admin, STS_CALLS).await;
    assert!(before >= 1.0, "the control request asked STS");
    let (status, body) = post_certificate(&mesh, send(&asks_ca)).await;
    assert_eq!(status, 400, "{body}");
    mesh.wait_for_outcome("bad_request", "csr_asks_for_ca", 1.0)
        .await;
    // Refused before STS is asked: such a CSR could never be issued.
    assert_eq!(scrape_metric(mesh.daemon.admin, STS_CALLS).await, before);
    let mut foreign = plain_csr();
    foreign.subject_alt_names = vec![rcgen::SanType::URI(
        rcgen::string::Ia5String::try_from(spiffe_id("orders")).unwrap(),
    )];
    let named = crafted_request(&creds, &web, now, foreign, None);
    assert_eq!(post_certificate(&mesh, send(&named)).await.0, 400);
    mesh.wait_for_outcome("bad_request", "csr_foreign_name", 1.0)
        .await;

    // Not JSON, and too large.
    let (status, body) = post_certificate(&mesh, b"not json".to_vec()).await;
    assert_eq!(status, 400, "{body}");
    mesh.wait_for_outcome("bad_request", "body_malformed", 1.0)
        .await;
    let (status, _) = post_certificate(&mesh, vec![b' '; 64 * 1024]).await;
    assert_eq!(status, 413);
    mesh.wait_for_outcome("bad_request", "body_too_large", 1.0)
        .await;

    // The door stays open for the next well-formed request.
    let after = crafted_request(&creds, &web, now, plain_csr(), None);
    assert_eq!(post_certificate(&mesh, send(&after)).await.0, 200);

    // Only the two well-formed requests were issued a certificate.
    assert_eq!(mesh.issued().await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_is_answered_408_after_the_request_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mesh = Mesh::start("").await;
    let bundle = std::fs::read_to_string(mesh.bundle()).unwrap();
    let tls = ecs_xds::identity::tls::client_config(&bundle).unwrap();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls));
    let tcp = tokio::net::TcpStream::connect(mesh.identity).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut stream = connector.connect(name, tcp).await.unwrap();
    let head = "POST /v1/certificate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{";
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    // request_timeout = "2s" in the mesh's settings.
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        started.elapsed()
    );
    mesh.wait_for_outcome("bad_request", "body_timeout", 1.0)
        .await;
}

/// The serial numbers of the certificates Envoy's admin `/certs` shows as loaded.
pub async fn envoy_serials(envoy: &Envoy) -> Vec<String> {
    let certs: Value = serde_json::from_str(&envoy.admin_get("/certs").await).unwrap();
    let mut serials: Vec<String> = (certs["certificates"].as_array().into_iter().flatten())
        .flat_map(|c| c["cert_chain"].as_array().into_iter().flatten())
        .filter_map(|c| c["serial_number"].as_str().map(normal_serial))
        .collect();
    serials.sort();
    serials.dedup();
    serials
}

/// Two-minute certificates held for six minutes: the agent renews each at half its life, Envoy
/// takes every renewal from its SDS files without a restart, and its xDS stream stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_minute_certificates_rotate_for_six_minutes_with_the_envoy_connected_throughout() {
    let mesh = Mesh::start(r#"certificate_ttl = "2m""#).await;
    let (_, certs, _agent) = mesh.certified("web", "certs").await;
    let (_, first) = certificate_identity(&certs);
    let envoy = mesh.envoy("sidecar-web", "web", Some(&certs)).await;
    wait_for_discovered(&envoy, "the clusters over mTLS").await;

    let started = Instant::now();
    let mut seen = std::collections::BTreeSet::new();
    while started.elapsed() < Duration::from_secs(360) {
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(
            envoy.stat("control_plane.connected_state").await,
            1,
            "Envoy lost ecs-xds after {:?}",
            started.elapsed()
        );
        let (_, on_disk) = certificate_identity(&certs);
        seen.insert(on_disk);
        seen.extend(envoy_serials(&envoy).await);
    }
    // No xDS error and nothing rejected while the certificate changed under the stream.
    for stat in [
        "cluster_manager.cds.update_rejected",
        "listener_manager.lds.update_rejected",
        "cluster_manager.cds.update_failure",
    ] {
        assert_eq!(envoy.stat(stat).await, 0, "{stat}");
    }
    // Renewed at 60 s ± 10%: at least five renewals in six minutes.
    assert!(seen.len() >= 5, "certificates seen: {seen:?}");
    assert!(!seen.is_empty() && !envoy_serials(&envoy).await.contains(&first));
    let (_, current) = certificate_identity(&certs);
    assert!(
        envoy_serials(&envoy).await.contains(&current),
        "Envoy holds the agent's current certificate {current}"
    );
    // The first certificate expired long ago; the current one opens a new stream.
    let again = mesh.envoy("sidecar-web-2", "web", Some(&certs)).await;
    wait_for_discovered(&again, "a new stream with the renewed certificate").await;
    assert!(mesh.issued().await >= 5.0);
}

/// Writes into `out` what an agent would, but with a certificate for `service` issued by a CA of
/// its own made in `ca_dir` (same trust domain, another root), trusting both roots.
fn foreign_certificate(ca_dir: &Path, out: &Path, service: &str) {
    use ecs_xds::agent::files;
    ca_init(ca_dir);
    let read = |name: &str| std::fs::read_to_string(ca_dir.join(name)).unwrap();
    let ca = ecs_xds::identity::ca::Ca::from_pem(
        &read("intermediate-key.pem"),
        &read("intermediate.pem"),
        &read("bundle.pem"),
        TRUST_DOMAIN,
    )
    .unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let csr = plain_csr().serialize_request(&key).unwrap().pem().unwrap();
    let id = ecs_xds::spiffe::SpiffeId::parse(&spiffe_id(service)).unwrap();
    let now = std::time::SystemTime::now();
    let issued = ca
        .issue_workload(&csr, &id, None, Duration::from_secs(3600), now)
        .unwrap();
    let ours = std::fs::read_to_string(out.parent().unwrap().join("ca/bundle.pem")).unwrap();
    let bundle = format!("{ours}{}", read("bundle.pem"));
    let written = files::Written {
        chain_pem: &issued.chain_pem,
        key_pem: &key.serialize_pem(),
        bundle_pem: &bundle,
    };
    files::write(out, &written, 0o600).unwrap();
    files::write_sds_files(out).unwrap();
}

/// Two replicas signing with one CA kept in moto's Secrets Manager: the Envoy holding a
/// certificate from the first fails over to the second, which accepts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_a_secrets_manager_ca_and_an_envoy_fails_over_with_its_certificate() {
    let moto = Moto::start();
    let seed = moto.seed(&["--tasks-per-service", "1"]);
    let dir = prepared_dir();
    let read = |name: &str| std::fs::read_to_string(dir.path().join("ca").join(name)).unwrap();
    let secret = json!({
        "key": read("intermediate-key.pem"),
        "chain": read("intermediate.pem"),
        "bundle": read("bundle.pem"),
    });
    let secrets = aws_sdk_secretsmanager::Client::new(&moto.sdk_config().await);
    secrets
        .create_secret()
        .name("ecs-xds/ca")
        .secret_string(secret.to_string())
        .send()
        .await
        .unwrap();
    let config = identity_settings(&moto, r#"ca = { secret_id = "ecs-xds/ca" }"#).write(dir.path());
    let second = Running::start(&config).await;
    let mesh = Mesh::serve(moto, seed, dir, &config).await;

    let (_, certs, _agent) = mesh.certified("web", "certs").await;

    // The Envoy's xDS cluster names both replicas; it connects to one of them.
    let mut config = bootstrap_json("sidecar-web", mesh.daemon.xds, AdsMode::Sotw);
    config["node"]["cluster"] = json!("web");
    let xds = &mut config["static_resources"]["clusters"][0];
    xds["transport_socket"] = xds_tls(&mesh.bundle(), Some(&certs), TRUST_DOMAIN);
    let endpoints: Vec<Value> = [mesh.daemon.xds, second.xds]
        .iter()
        .map(|r| {
            json!({ "endpoint": { "address": { "socket_address": {
            "address": r.ip().to_string(), "port_value": r.port() } } } })
        })
        .collect();
    xds["load_assignment"]["endpoints"] = json!([{ "lb_endpoints": endpoints }]);
    let envoy = Envoy::start_config(config, AdsMode::Sotw).await;
    wait_for_discovered(&envoy, "the clusters over mTLS").await;
    let holds = |replica: SocketAddr| async move {
        let nodes: Value = nodes_of(replica).await;
        nodes["nodes"][0]["streams"][0]["identity"] == spiffe_id("web")
    };
    let (serving, other) = if holds(mesh.daemon.admin).await {
        (&mesh.daemon, &second)
    } else {
        (&second, &mesh.daemon)
    };
    assert!(holds(serving.admin).await, "one replica holds the stream");
    serving.terminate();
    envoy
        .wait_for(
            "the stream on the other replica",
            Duration::from_secs(30),
            || holds(other.admin),
        )
        .await;
    assert_eq!(envoy.stat("control_plane.connected_state").await, 1);
    assert!(envoy.cluster_names().await.contains("web"));
}

/// deploy/ecs/envoy-bootstrap-mtls.yaml as the sidecar runs it (the node section envoy-init
/// appends; only the addresses, the certificate directory and the trust domain filled in for
/// 127.0.0.1) reaches ecs-xds over mutual TLS with the agent's files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deploy_mtls_bootstrap_reaches_ecs_xds_with_the_agents_files() {
    let mesh = Mesh::start("").await;
    let (web, certs, _agent) = mesh.certified("web", "certs").await;
    let path = crate::support::moto::repo_root().join("deploy/ecs/envoy-bootstrap-mtls.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let xds = mesh.daemon.xds;
    let text = text
        .replace("/certs/", &format!("{}/", certs.display()))
        .replace("<TRUST_DOMAIN>", TRUST_DOMAIN)
        .replace(
            "address: ecs-xds.mesh.local, port_value: 18000",
            &format!("address: 127.0.0.1, port_value: {}", xds.port()),
        )
        .replace("port_value: 9901", "port_value: 0");
    let text = format!(
        "{text}\nnode:\n  id: sidecar-{}\n  cluster: web\n",
        task_id(&web)
    );
    let config: Value = serde_yaml_ng::from_str(&text).unwrap();
    let envoy = Envoy::start_config(config, AdsMode::Delta).await;
    wait_for_discovered(&envoy, "the clusters over mTLS").await;
    let nodes: Value = nodes_of(mesh.daemon.admin).await;
    assert_eq!(
        nodes["nodes"][0]["streams"][0]["identity"],
        spiffe_id("web")
    );
}

/// `client_auth = "optional"`, for moving a fleet over: on one port, an Envoy without TLS is
/// served on its own claim (identity null), and an Envoy with its agent's certificate is
/// verified (its SPIFFE ID shown); that certificate still cannot claim another service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_client_auth_optional_plaintext_and_verified_envoys_share_the_xds_port() {
    let moto = Moto::start();
    let seed = moto.seed(&["--tasks-per-service", "1"]);
    let dir = prepared_dir();
    let files = ca_files(dir.path());
    let config = identity_settings(&moto, &files)
        .set("xds", "client_auth", "optional")
        .write(dir.path());
    let mesh = Mesh::serve(moto, seed, dir, &config).await;
    let (_, certs, _agent) = mesh.certified("web", "certs").await;

    let mut plain = bootstrap_json("sidecar-plain", mesh.daemon.xds, AdsMode::Sotw);
    plain["node"]["cluster"] = json!("api");
    let plain = Envoy::start_config(plain, AdsMode::Sotw).await;
    let verified = mesh.envoy("sidecar-verified", "web", Some(&certs)).await;
    for envoy in [&plain, &verified] {
        wait_for_discovered(envoy, "the clusters").await;
    }
    let nodes: Value = nodes_of(mesh.daemon.admin).await;
    let identity = |id: &str| {
        let node = (nodes["nodes"].as_array().unwrap().iter()).find(|n| n["node_id"] == id);
        node.map(|n| n["streams"][0]["identity"].clone())
    };
    assert_eq!(identity("sidecar-plain"), Some(Value::Null), "{nodes}");
    assert_eq!(identity("sidecar-verified"), Some(json!(spiffe_id("web"))));

    let _claims_api = mesh.envoy("sidecar-claims-api", "api", Some(&certs)).await;
    wait_for_metric(
        mesh.daemon.admin,
        "ecs_xds_xds_identity_refused_total{reason=\"service_mismatch\"}",
        1.0,
        Duration::from_secs(20),
    )
    .await;
}
