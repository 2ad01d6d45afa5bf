//! The demo behind the README's first command: ECS (emulated by moto) → ecs-xds → a real
//! Envoy, and what Envoy then knows.
//!
//! 1. starts moto server on 127.0.0.1 and seeds an ECS cluster `demo` (services `web`, `api`,
//!    `orders`, two Fargate tasks each) and a Cloud Map namespace whose `backend` service has
//!    two instances: HTTP servers this demo runs on 127.0.0.1, one healthy, one unhealthy;
//! 2. runs the ecs-xds daemon (discovery every second, the `sidecar` template, the xDS server)
//!    and a real Envoy with node id `sidecar-demo`;
//! 3. prints the clusters and endpoints (with health) Envoy reports, and sends a request
//!    through Envoy's egress listener to the Cloud Map backend;
//! 4. tags service `web` with `ecs-xds.backends = orders` and starts a second Envoy as web's
//!    sidecar (`node.cluster = web`), which is served only `orders`;
//!    the same node's clusters over REST-JSON (`POST /v3/discovery:clusters`, `demo/rest.rs`),
//!    and the 304 a poll at the current version gets;
//! 5. workload identity: web's task proves it is web with its IAM task role (moto's STS) and
//!    gets a short-lived certificate from ecs-xds (the mesh's CA, made by `ecs-xds ca init`);
//!    an Envoy of web with it holds a mutual-TLS xDS stream whose service is the verified
//!    certificate's, and an Envoy presenting that certificate while claiming `api` is refused;
//! 6. mutual TLS between services (`demo/mtls.rs`): web, api and orders get their agents'
//!    certificates, orders is tagged `ecs-xds.allow-from = web`, and three Envoys on 127.0.0.1
//!    (served by a second ecs-xds from a saved inventory) show web's call answered over mTLS
//!    and api's refused by orders' RBAC;
//! 7. transparent interception (`demo/interception.rs`): orders is tagged
//!    `ecs-xds.hosts = orders.demo.local`, and an Envoy of node type `intercepted` shows the
//!    listener for redirected traffic: HTTP by `Host` (with that name), TCP by task address;
//! 8. several accounts and regions (`demo/regions.rs`): account 222222222222's cluster `prod`
//!    in eu-west-1 (its role assumed through moto's STS) is discovered beside the own account's
//!    `demo` with `[ecs] merge = true`, each service one cluster with endpoints in both regions;
//!    then a real Envoy stating region us-east-1 sends orders' requests to us-east-1's backend
//!    (127.0.0.1, served by a second ecs-xds from a saved inventory) and fails over to
//!    eu-west-1's when us-east-1's endpoint is marked unhealthy;
//! 9. stops everything it started.
//!
//! ecs-xds serves xDS with `xds.tls` on and `client_auth = "optional"` (the migration switch):
//! an Envoy that opens with TLS and a client certificate is verified, and the certificate names
//! its service; an Envoy without TLS (the demo's first two) is served by its own claim, as
//! before, on the same port.
//!
//! The ECS task addresses are the 10.x addresses moto invents: they are only displayed; no
//! request goes to them.

#[allow(dead_code)]
#[path = "../tests/support/backend.rs"]
mod backend;
#[allow(dead_code)]
#[path = "../tests/support/envoy.rs"]
mod envoy;
#[allow(dead_code)]
#[path = "../tests/support/http.rs"]
mod http;
#[path = "demo/interception.rs"]
mod interception;
#[path = "../tests/support/moto.rs"]
mod moto;
#[path = "demo/mtls.rs"]
mod mtls;
#[path = "demo/regions.rs"]
mod regions;
#[path = "demo/rest.rs"]
mod rest;
#[allow(dead_code)]
#[path = "../tests/support/templates.rs"]
mod templates;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const BACKEND: &str = "cloudmap.backend.demo.local";
/// The mesh's SPIFFE trust domain: certificates name `spiffe://demo.mesh/ecs/...`.
const TRUST_DOMAIN: &str = "demo.mesh";
const REFUSED: &str = "ecs_xds_xds_identity_refused_total{reason=\"service_mismatch\"}";
/// How long any one wait of the identity step may take.
const LIMIT: Duration = Duration::from_secs(20);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    // The identity agent runs as a child process of this demo (`demo agent ...`), as
    // `ecs-xds agent` runs beside the app in a task: the task role's credentials are in its
    // own environment, not in this process's (whose are the daemon's).
    match args.split_first() {
        Some((command, rest)) if command == "agent" => runtime.block_on(agent_process(rest)),
        _ => runtime.block_on(demo()),
    }
}

async fn demo() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    println!("demo: starting moto server (the AWS API emulator) and seeding ECS and Cloud Map");
    let emulator = moto::Moto::start();
    let healthy = backend::Backend::start("hello from the backend on 127.0.0.1").await;
    let unhealthy = backend::Backend::start("this instance is unhealthy").await;
    let seed = emulator.seed(&[
        "--tasks-per-service",
        "2",
        "--cloudmap-instance",
        &healthy.addr.to_string(),
        "--cloudmap-unhealthy-instance",
        &unhealthy.addr.to_string(),
    ]);

    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    println!("demo: ecs-xds ca init --trust-domain {TRUST_DOMAIN} (the mesh's CA)");
    ecs_xds::cli::ca_init(&ca, TRUST_DOMAIN).expect("ca init");
    let egress = envoy::free_port();
    let config = write_config(dir.path(), &emulator.endpoint, egress);
    let (_reload, reload_rx) = tokio::sync::mpsc::channel(1);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let daemon =
        ecs_xds::daemon::Daemon::start(ecs_xds::cli::load(&config).expect("settings load"), None)
            .await
            .expect("ecs-xds starts");
    let (xds, admin) = (daemon.xds_addr(), daemon.admin_addr());
    let identity = daemon.identity_addr().expect("identity is on");
    println!(
        "demo: starting ecs-xds (xDS over TLS on {xds}, client certificates optional; \
         identity endpoint on {identity}; polling every 1s)"
    );
    let daemon = tokio::spawn(daemon.run(reload_rx, async {
        let _ = stopped.await;
    }));

    let envoy = envoy::Envoy::start("sidecar-demo", xds, envoy::AdsMode::Sotw).await;
    println!(
        "demo: started Envoy 1.40 (node id sidecar-demo, admin {}; plaintext xDS, as before mTLS)",
        envoy.admin
    );
    envoy
        .wait_for(
            "every discovered cluster",
            Duration::from_secs(30),
            || async {
                let clusters = envoy.versions().await.clusters;
                ["web", "orders", BACKEND]
                    .iter()
                    .all(|c| clusters.iter().any(|have| have == c))
            },
        )
        .await;
    let body = request_backend(egress).await;
    show(&envoy).await;
    println!("\nGET http://{BACKEND}/ through Envoy's egress listener 127.0.0.1:{egress}:");
    println!(
        "  -> {body:?} (requests served by the healthy instance: {}, by the unhealthy one: {})",
        healthy.hits(),
        unhealthy.hits()
    );

    let web = declared_backends(&emulator, xds, &envoy).await;
    rest::show_rest_json(xds).await;
    let mesh = Mesh {
        emulator: &emulator,
        seed: &seed,
        dir: dir.path(),
        xds,
        admin,
        identity,
    };
    workload_identity(&mesh).await;
    mtls::between_services(&mesh).await;
    interception::show_interception(&emulator, xds).await;
    regions::several_regions(&emulator, dir.path()).await;
    web.stop().await;

    envoy.stop().await;
    let _ = stop.send(());
    let _ = daemon.await;
    drop(emulator);
    println!("\ndemo: stopped Envoy, ecs-xds, the backends and moto");
}

/// Tags `web` with what it calls and shows what web's own sidecar is then served. Returns that
/// sidecar, still connected: the identity step shows it beside an Envoy of web with a
/// certificate.
async fn declared_backends(
    emulator: &moto::Moto,
    xds: SocketAddr,
    demo: &envoy::Envoy,
) -> envoy::Envoy {
    let ecs = aws_sdk_ecs::Client::new(&emulator.sdk_config().await);
    moto::tag_service(&ecs, "web", "ecs-xds.backends", "orders").await;
    println!(
        "
demo: tagged ECS service web with ecs-xds.backends=orders (what web calls)"
    );
    let web = envoy::Envoy::start_of_service("sidecar-web", xds, envoy::AdsMode::Sotw, "web").await;
    // `local_app` is the template's own cluster: every sidecar has it.
    web.wait_for("only orders", Duration::from_secs(30), || async {
        web.versions().await.clusters == ["local_app", "orders"]
    })
    .await;
    println!(
        "demo: web's sidecar (node.cluster=web) holds {:?}; the demo Envoy (no declared service) holds {:?}",
        web.versions().await.clusters,
        demo.versions().await.clusters
    );
    web
}

fn write_config(dir: &Path, endpoint: &str, egress: u16) -> std::path::PathBuf {
    let config = dir.join("ecs-xds.toml");
    let settings = format!(
        "[xds]\nlisten = \"127.0.0.1:0\"\ntls = true\nclient_auth = \"optional\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[aws]\nendpoint_url = \"{endpoint}\"\n\
         [ecs]\nclusters = [\"demo\"]\npoll_interval = \"1s\"\n\
         [cloud_map]\nnamespaces = [\"demo.local\"]\n{}",
        identity_settings(dir, endpoint)
    );
    std::fs::write(&config, settings).unwrap();
    // The project's sidecar template, with the egress listener moved to a free port.
    let sidecar = std::fs::read_to_string(moto::repo_root().join("config/templates/sidecar.toml"))
        .unwrap()
        .replace("port_value = 15001", &format!("port_value = {egress}"))
        .replace("ports = [80, 15001]", &format!("ports = [80, {egress}]"))
        .replace(
            "port_value = 15000",
            &format!("port_value = {}", envoy::free_port()),
        )
        .replace("\"0.0.0.0\"", "\"127.0.0.1\"");
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    std::fs::write(dir.join("templates/sidecar.toml"), sidecar).unwrap();
    // The project's intercepted template, its egress on a free port and no ingress (the demo
    // redirects nothing into it).
    let intercepted =
        std::fs::read_to_string(moto::repo_root().join("config/templates/intercepted.toml"))
            .unwrap()
            .replace(
                "egress_port = 15001",
                &format!("egress_port = {}", envoy::free_port()),
            )
            .replace("app_ports = [9080]", "app_ports = []");
    std::fs::write(dir.join("templates/intercepted.toml"), intercepted).unwrap();
    config
}

async fn request_backend(egress: u16) -> String {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let url = format!("http://127.0.0.1:{egress}/");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let response = client.get(&url).header("host", BACKEND).send().await;
        if let Ok(r) = response {
            if r.status().is_success() {
                return r.text().await.unwrap_or_default();
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no answer through Envoy from {BACKEND}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The route Envoy holds for `host` in the generated route configuration: its timeout and
/// retries, which come from the ECS service's tags.
fn route_policy(dump: &serde_json::Value, host: &str) -> String {
    let configs = dump["configs"].as_array().cloned().unwrap_or_default();
    let routes = configs.iter().find(|c| {
        c["@type"]
            .as_str()
            .is_some_and(|t| t.ends_with(".RoutesConfigDump"))
    });
    let action = routes.and_then(|r| {
        r["dynamic_route_configs"].as_array()?.iter().find_map(|c| {
            let hosts = c["route_config"]["virtual_hosts"].as_array()?;
            let h = hosts.iter().find(|h| h["name"] == host)?;
            Some(h["routes"][0]["route"].clone())
        })
    });
    match action {
        Some(a) => format!(
            "timeout {}, {} retries on {}",
            a["timeout"].as_str().unwrap_or("none"),
            a["retry_policy"]["num_retries"],
            a["retry_policy"]["retry_on"].as_str().unwrap_or("-")
        ),
        None => "no route".to_owned(),
    }
}

/// What Envoy holds, from its admin API: each cluster's endpoints and their health.
async fn show(envoy: &envoy::Envoy) {
    let v = envoy.versions().await;
    println!("\nEnvoy now knows (from its admin API /clusters and /config_dump):");
    println!("  cds version {}  lds version {}", v.cds, v.lds);
    let policy = route_policy(&envoy.config_dump().await, "orders");
    println!("  route to orders: {policy} (from the ECS service's ecs-xds.* tags)");
    let clusters = envoy.admin_get("/clusters").await;
    for name in &v.clusters {
        println!("  cluster {name}");
        for line in clusters.lines() {
            let Some(rest) = line.strip_prefix(&format!("{name}::")) else {
                continue;
            };
            if let Some((addr, flags)) = rest.split_once("::health_flags::") {
                println!("    {addr:<22} {flags}");
            }
        }
    }
}

/// `[identity]`: ecs-xds as the mesh's CA (the files `ecs-xds ca init` wrote), with moto as STS
/// and one-hour certificates (short-lived: the agent renews at half of it).
fn identity_settings(dir: &Path, endpoint: &str) -> String {
    let ca = dir.join("ca");
    format!(
        "[identity]\nenabled = true\ntrust_domain = \"{TRUST_DOMAIN}\"\nlisten = \"127.0.0.1:0\"\n\
         server_names = [\"localhost\"]\nsts_endpoint = \"{endpoint}\"\ncertificate_ttl = \"1h\"\n\
         ca = {{ key_file = \"{}\", chain_file = \"{}\", bundle_file = \"{}\" }}\n",
        ca.join("intermediate-key.pem").display(),
        ca.join("intermediate.pem").display(),
        ca.join("bundle.pem").display(),
    )
}

/// An Envoy (of `service`, when given) whose xDS channel is TLS: with the agent's files in
/// `certs` as its client certificate, or none.
async fn start_envoy(
    node_id: &str,
    service: Option<&str>,
    xds: SocketAddr,
    bundle: &Path,
    certs: Option<&Path>,
) -> envoy::Envoy {
    let mut config = envoy::bootstrap_json(node_id, xds, envoy::AdsMode::Sotw);
    if let Some(service) = service {
        config["node"]["cluster"] = json!(service);
    }
    config["static_resources"]["clusters"][0]["transport_socket"] =
        envoy::xds_tls(bundle, certs, TRUST_DOMAIN);
    envoy::Envoy::start_config(config, envoy::AdsMode::Sotw).await
}

/// What the identity step needs of the running demo.
struct Mesh<'a> {
    emulator: &'a moto::Moto,
    seed: &'a Value,
    dir: &'a Path,
    xds: SocketAddr,
    admin: SocketAddr,
    identity: SocketAddr,
}

impl Mesh<'_> {
    fn bundle(&self) -> PathBuf {
        self.dir.join("ca/bundle.pem")
    }

    /// A seeded fact about `service`: its first task's ARN, or its task role.
    fn service(&self, service: &str, key: &str) -> String {
        let value = &self.seed["ecs"]["services"][service][key];
        let value = value.get(0).unwrap_or(value);
        value.as_str().expect("the seed names it").to_owned()
    }
}

/// Workload identity: web's task proves it is web with its task role and gets a certificate;
/// its Envoy's xDS channel is then mutual TLS, and the certificate names the stream's service.
async fn workload_identity(mesh: &Mesh<'_>) {
    let (task, role) = (
        mesh.service("web", "tasks"),
        mesh.service("web", "task_role"),
    );
    let task_id = task.rsplit('/').next().unwrap();
    println!(
        "\ndemo: web's task proves it is web with its task role {role}\n      \
         (moto STS AssumeRole, session = task id {task_id}, as ECS does for a task role)"
    );
    let creds = task_credentials(mesh.emulator, &role, task_id).await;
    let certs = mesh.dir.join("certs-web");
    let agent = Agent::start(mesh, &creds, &task, &certs);
    println!(
        "demo: started the agent: ecs-xds agent --server https://localhost:{} --server-id \
         ecs-xds.{TRUST_DOMAIN} --task-arn {task}",
        mesh.identity.port()
    );
    agent.wait_for_certificate(&certs).await;
    let (san, expires) = certificate(&certs);
    println!(
        "demo: the agent wrote its certificate for Envoy: {san}\n      valid until {expires} \
         (1h; renewed at half its life)"
    );

    let mtls = start_envoy(
        "sidecar-web-mtls",
        Some("web"),
        mesh.xds,
        &mesh.bundle(),
        Some(&certs),
    )
    .await;
    mtls.wait_for("web's clusters over mutual TLS", LIMIT, || async {
        mtls.cluster_names().await.contains("orders")
    })
    .await;
    println!(
        "demo: started an Envoy of web (node id sidecar-web-mtls) over mutual TLS with the agent's \
         files (SDS); it holds {:?}",
        mtls.versions().await.clusters
    );
    show_streams(mesh.admin).await;
    claims_another_service(mesh, &certs).await;
    mtls.stop().await;
}

/// Every stream ecs-xds holds, from its admin `/nodes`: the node, the service it claims, and
/// the SPIFFE ID its connection's certificate verified (`null`: no certificate, so its claim
/// alone decides what it is served).
async fn show_streams(admin: SocketAddr) {
    let nodes: Value = serde_json::from_str(&http::get(admin, "/nodes").await.1).unwrap();
    println!("\necs-xds's streams (GET http://{admin}/nodes):");
    for node in nodes["nodes"].as_array().into_iter().flatten() {
        let service = node["service"].as_str().unwrap_or("(none)");
        for stream in node["streams"].as_array().into_iter().flatten() {
            println!(
                "  node {:<18} claims service {:<14} identity {}",
                node["node_id"].as_str().unwrap_or("?"),
                service,
                stream["identity"]
            );
        }
    }
}

/// An Envoy presenting web's certificate while claiming to be `api` is refused its stream.
async fn claims_another_service(mesh: &Mesh<'_>, certs: &Path) {
    println!(
        "\ndemo: an Envoy presenting web's certificate but claiming node.cluster=api is refused:"
    );
    let before = http::scrape_metric(mesh.admin, REFUSED).await;
    let api = start_envoy(
        "sidecar-claims-api",
        Some("api"),
        mesh.xds,
        &mesh.bundle(),
        Some(certs),
    )
    .await;
    http::wait_for_metric(mesh.admin, REFUSED, before + 1.0, LIMIT).await;
    println!(
        "  {REFUSED} {} (GET http://{}/metrics)",
        http::scrape_metric(mesh.admin, REFUSED).await,
        mesh.admin
    );
    println!(
        "  that Envoy holds only its static clusters: {:?}",
        api.cluster_names().await
    );
    api.stop().await;
}

/// The credentials ECS would give the task `task_id` running with `role`: AssumeRole with the
/// task id as the session name.
async fn task_credentials(emulator: &moto::Moto, role: &str, task_id: &str) -> [String; 3] {
    let sts = aws_sdk_sts::Client::new(&emulator.sdk_config().await);
    let assumed = sts
        .assume_role()
        .role_arn(role)
        .role_session_name(task_id)
        .send()
        .await
        .expect("moto STS AssumeRole");
    let c = assumed.credentials().expect("credentials");
    [c.access_key_id(), c.secret_access_key(), c.session_token()].map(str::to_owned)
}

/// The SPIFFE ID (the one URI SAN) of the agent's certificate in `dir`, and its expiry.
fn certificate(dir: &Path) -> (String, String) {
    let pem = std::fs::read(dir.join("cert.pem")).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    let cert = pem.parse_x509().unwrap();
    let san = cert.subject_alternative_name().unwrap().expect("a SAN");
    let uri = (san.value.general_names.iter())
        .find_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(u) => Some(u.to_string()),
            _ => None,
        })
        .expect("a URI SAN");
    let (_, not_after) = ecs_xds::agent::files::validity(dir).unwrap();
    (
        uri,
        humantime::format_rfc3339_seconds(not_after).to_string(),
    )
}

/// The agent, a child process of this demo; its log goes to a file, shown if it fails.
struct Agent {
    _child: tokio::process::Child,
    log: PathBuf,
}

impl Agent {
    fn start(mesh: &Mesh<'_>, creds: &[String; 3], task: &str, out: &Path) -> Agent {
        let name = out.file_name().map(|n| n.to_string_lossy().into_owned());
        let log = mesh
            .dir
            .join(format!("agent-{}.log", name.unwrap_or_default()));
        let file = std::fs::File::create(&log).unwrap();
        let server = format!("https://localhost:{}", mesh.identity.port());
        let server_id = format!("ecs-xds.{TRUST_DOMAIN}");
        let child = tokio::process::Command::new(std::env::current_exe().unwrap())
            .arg("agent")
            .args([&server, &server_id])
            .arg(mesh.bundle())
            .arg(out)
            .arg(task)
            // The task role's credentials, and nothing else to find credentials in.
            .env("AWS_ACCESS_KEY_ID", &creds[0])
            .env("AWS_SECRET_ACCESS_KEY", &creds[1])
            .env("AWS_SESSION_TOKEN", &creds[2])
            .env("AWS_REGION", moto::REGION)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_CONTAINER_CREDENTIALS_FULL_URI")
            .env_remove("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
            .stdin(std::process::Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .expect("start the agent");
        Agent { _child: child, log }
    }

    /// Waits until the agent has written its certificate and both SDS files into `dir`.
    async fn wait_for_certificate(&self, dir: &Path) {
        let files = [
            "cert.pem",
            "tls_certificate.yaml",
            "validation_context.yaml",
        ];
        let started = Instant::now();
        while !files.iter().all(|f| dir.join(f).exists()) {
            assert!(
                started.elapsed() < LIMIT,
                "the agent wrote no certificate into {} within {LIMIT:?}; its log:\n{}",
                dir.display(),
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `demo agent SERVER SERVER_ID BUNDLE_FILE OUT TASK_ARN`: what `ecs-xds agent --server SERVER
/// --server-id SERVER_ID --trust-bundle-file BUNDLE_FILE --out OUT --task-arn TASK_ARN
/// --sts-region us-east-1` runs (the binary is not built with the example).
async fn agent_process(args: &[String]) {
    let [server, server_id, bundle, out, task_arn] = args else {
        panic!("usage: demo agent SERVER SERVER_ID BUNDLE_FILE OUT TASK_ARN");
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .init();
    let flags = ecs_xds::cli::AgentFlags {
        server: server.clone(),
        server_id: server_id.clone(),
        trust_bundle: None,
        trust_bundle_file: Some(bundle.into()),
        out_dir: out.into(),
        sts_region: Some(moto::REGION.to_owned()),
        task_arn: Some(task_arn.clone()),
        key_mode: 0o600,
    };
    if let Err(e) = ecs_xds::cli::agent(flags).await {
        eprintln!("agent: {e}");
        std::process::exit(e.exit_code().into());
    }
}
