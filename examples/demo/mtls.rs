//! The demo's mutual-TLS step: web, api and orders each get their agent's certificate, orders is
//! tagged `ecs-xds.allow-from = web`, and three real Envoys on 127.0.0.1 carry the calls: web's
//! reaches orders over mutual TLS (orders' app is told it was web), api's is refused by orders'
//! Envoy (RBAC, 403).
//!
//! moto's tasks have 10.x addresses, which get no traffic: a second ecs-xds (in this process)
//! serves the three services from a saved inventory whose endpoints are the Envoys' ingress
//! ports, with each service's workload (account, region, cluster) from its seeded task's ARN.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ecs_xds::inventory::{
    AllowFrom, Cluster, Endpoint, Health, Inventory, Locality, Security, Source, Workload,
};

use super::templates::{mtls_sidecar, MtlsSidecar};
use super::{backend, envoy, moto, task_credentials, Agent, Mesh, LIMIT, TRUST_DOMAIN};

const SERVICES: [&str; 3] = ["web", "api", "orders"];

/// One service of the step: its task, agent, app and Envoy's ports.
struct Service {
    name: &'static str,
    task: String,
    certs: PathBuf,
    app: backend::Backend,
    egress: u16,
    ingress: u16,
    _agent: Agent,
}

impl Service {
    async fn start(mesh: &Mesh<'_>, name: &'static str) -> Service {
        let (task, role) = (mesh.service(name, "tasks"), mesh.service(name, "task_role"));
        let task_id = task.rsplit('/').next().unwrap();
        let creds = task_credentials(mesh.emulator, &role, task_id).await;
        let certs = mesh.dir.join(format!("certs-{name}-mtls"));
        let agent = Agent::start(mesh, &creds, &task, &certs);
        agent.wait_for_certificate(&certs).await;
        Service {
            name,
            task,
            certs,
            app: backend::Backend::start_telling_caller(name).await,
            egress: envoy::free_port(),
            ingress: envoy::free_port(),
            _agent: agent,
        }
    }

    /// Its inventory entry: its Envoy's ingress on 127.0.0.1, its workload from its task ARN.
    fn cluster(&self, security: Security) -> Cluster {
        Cluster {
            name: self.name.to_owned(),
            source: Source::Ecs {
                ecs_cluster: "demo".into(),
                service: self.name.to_owned(),
            },
            port_name: None,
            overrides: Default::default(),
            route: Default::default(),
            backends: None,
            security: Security {
                workload: Workload::of_task_arn(&self.task),
                ..security
            },
            endpoints: vec![Endpoint {
                address: "127.0.0.1".into(),
                port: self.ingress,
                health: Health::Healthy,
                locality: Locality {
                    region: moto::REGION.into(),
                    zone: None,
                },
                weight: 1,
                id: self.task.rsplit('/').next().unwrap().to_owned(),
                revision: None,
                deployment: None,
            }],
        }
    }
}

/// Settings and one node type per service (each Envoy has its own certificate directory and
/// ports on this one machine; in ECS one `sidecar` template with `/certs` serves them all).
fn write_mesh(dir: &Path, services: &[Service]) -> PathBuf {
    let templates = dir.join("templates");
    std::fs::create_dir_all(&templates).unwrap();
    for s in services {
        let template = mtls_sidecar(&MtlsSidecar {
            mode: "strict",
            trust_domain: TRUST_DOMAIN,
            certs: &s.certs,
            egress: s.egress,
            ingress: s.ingress,
            app: s.app.addr.port(),
            defaults: "",
            authz: "",
        });
        std::fs::write(templates.join(format!("{}.toml", s.name)), template).unwrap();
    }
    let config = dir.join("ecs-xds.toml");
    let settings = format!(
        "templates_dir = {:?}\n[xds]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        templates.display().to_string()
    );
    std::fs::write(&config, settings).unwrap();
    config
}

/// `caller`'s app calling `http://orders/` through its Envoy: (status, body).
async fn call(caller: &Service, callee: &str) -> (u16, String) {
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!("http://127.0.0.1:{}/", caller.egress);
    match http.get(url).header("host", callee).send().await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

pub async fn between_services(mesh: &Mesh<'_>) {
    println!(
        "\ndemo: mutual TLS between services: the agents of web, api and orders get their \
         certificates; orders is tagged ecs-xds.allow-from=web; [mtls] mode = \"strict\""
    );
    let mut services = Vec::new();
    for name in SERVICES {
        services.push(Service::start(mesh, name).await);
    }
    let dir = mesh.dir.join("mtls");
    let config = write_mesh(&dir, &services);
    let allow_web = Security {
        allow_from: Some(AllowFrom::Services(vec!["web".into()])),
        ..Default::default()
    };
    let clusters = services.iter().map(|s| {
        let security = if s.name == "orders" {
            allow_web.clone()
        } else {
            Security::default()
        };
        (s.name.to_owned(), s.cluster(security))
    });
    let inventory = Inventory {
        clusters: clusters.collect(),
        ..Default::default()
    };
    let loaded = ecs_xds::cli::load(&config).expect("settings load");
    let daemon = ecs_xds::daemon::Daemon::start(loaded, Some(inventory))
        .await
        .expect("ecs-xds starts");
    let xds = daemon.xds_addr();
    let (_reload, reload_rx) = tokio::sync::mpsc::channel(1);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(daemon.run(reload_rx, async {
        let _ = stopped.await;
    }));
    let mut envoys = Vec::new();
    for s in &services {
        let node = format!("{}-mtls", s.name);
        envoys.push(envoy::Envoy::start_of_service(&node, xds, envoy::AdsMode::Sotw, s.name).await);
    }
    println!("demo: a second ecs-xds ({xds}) serves them, with one Envoy each on 127.0.0.1");
    show_calls(&services, &envoys[2]).await;
    for envoy in envoys {
        envoy.stop().await;
    }
    let _ = stop.send(());
    let _ = running.await;
}

/// web → orders (allowed, over mTLS) and api → orders (denied), as each app sees it.
async fn show_calls(services: &[Service], orders: &envoy::Envoy) {
    let (web, api) = (&services[0], &services[1]);
    let started = Instant::now();
    let (status, body) = loop {
        let answer = call(web, "orders").await;
        if answer.0 == 200 || started.elapsed() > LIMIT {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!("\nGET http://orders/ from web's app through web's Envoy:\n  -> {status} {body:?}");
    println!(
        "     (orders' app is told its caller by orders' Envoy: the URI of web's certificate)"
    );
    let (status, body) = call(api, "orders").await;
    println!("GET http://orders/ from api's app through api's Envoy:\n  -> {status} {body:?}");
    let ingress = format!("listener.127.0.0.1_{}.ssl.handshake", services[2].ingress);
    let (handshakes, denied) = (
        orders.stat(&ingress).await,
        orders.stat("http.ingress.rbac.denied").await,
    );
    println!(
        "orders' Envoy: {handshakes} TLS handshakes on its ingress, {denied} request(s) denied by RBAC (http.ingress.rbac.denied)"
    );
    let (status, _) = call(api, "web").await;
    println!("GET http://web/ from api's app (web has no allow-from): {status}");
}
