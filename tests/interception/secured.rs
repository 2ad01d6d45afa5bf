//! Redirected ingress under `[mtls]`: callers' Envoys (in the peer namespace) reach orders'
//! task address on its app port over mutual TLS; ECS's rules hand the connection to orders'
//! Envoy, which checks the caller's certificate against orders' `allow-from` and only then
//! passes it to the app. Certificates are the CA's, made here as the agent would write them.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime};

use ecs_xds::agent::files::{write, write_sds_files, Written};
use ecs_xds::identity::ca::{init, Ca};
use ecs_xds::inventory::{AllowFrom, Inventory, RoutePolicy, Workload};
use ecs_xds::spiffe::SpiffeId;

use super::mesh::{endpoint, service, start_ecs_xds, APP_PORT, XDS_PORT};
use crate::support;
use support::envoy::{bootstrap_json, AdsMode};
use support::netns::{Namespaces, NsEnvoy, ProxyConfiguration, Who, APP_ADDR, PEER_ADDR};

const TD: &str = "mesh.test";
const ACCOUNT: &str = "111122223333";
const REGION: &str = "us-east-1";

/// The agent's files for `service` in `dir`: a certificate of its SPIFFE ID from `ca`.
fn certificates(ca: &Ca, dir: &Path, service: &str) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    let id = SpiffeId::new(TD, ACCOUNT, REGION, "prod", service).unwrap();
    let hour = Duration::from_secs(3600);
    let issued = ca
        .issue_workload(&csr, &id, None, hour, SystemTime::now())
        .unwrap();
    let written = Written {
        chain_pem: &issued.chain_pem,
        key_pem: &key.serialize_pem(),
        bundle_pem: ca.bundle_pem(),
    };
    // Readable by Envoy's uid, which is not the test's.
    write(dir, &written, 0o644).unwrap();
    write_sds_files(dir).unwrap();
}

fn mtls(dir: &Path, certs: &str) -> String {
    let certs = dir.join(certs);
    format!(
        "[mtls]\nmode = \"strict\"\ntrust_domain = \"{TD}\"\ncertificate_dir = \"{}\"\n",
        certs.display()
    )
}

/// A caller's node type: the tests' egress sidecar on 127.0.0.1:`port`, over mTLS.
fn caller_template(dir: &Path, certs: &str, port: u16) -> String {
    mtls(dir, certs) + &support::templates::egress_sidecar(port, "egress", 1)
}

/// orders (allowing web only) at the app's task address; web and api, whose tasks get no call.
fn write_inventory(dir: &Path) {
    let workload = Workload {
        account: ACCOUNT.into(),
        region: REGION.into(),
        ecs_cluster: "prod".into(),
    };
    let mut orders = service(
        "orders",
        RoutePolicy::default(),
        vec![endpoint(APP_ADDR, APP_PORT)],
    );
    orders.security.allow_from = Some(AllowFrom::Services(vec!["web".into()]));
    let others = ["web", "api"].map(|name| {
        service(
            name,
            RoutePolicy::default(),
            vec![endpoint("10.200.0.50", 8080)],
        )
    });
    let mut clusters: Vec<_> = [orders].into_iter().chain(others).collect();
    for cluster in &mut clusters {
        if let ecs_xds::inventory::Source::Ecs { ecs_cluster, .. } = &mut cluster.source {
            *ecs_cluster = "prod".into();
        }
        cluster.security.workload = Some(workload.clone());
    }
    let inventory = Inventory {
        clusters: clusters.into_iter().map(|c| (c.name.clone(), c)).collect(),
        warnings: Vec::new(),
        callers: Default::default(),
    };
    std::fs::write(
        dir.join("inventory.json"),
        serde_json::to_string(&inventory).unwrap(),
    )
    .unwrap();
}

fn bootstrap(node_type: &str, service: &str) -> serde_json::Value {
    let xds: SocketAddr = format!("{PEER_ADDR}:{XDS_PORT}").parse().unwrap();
    let mut config = bootstrap_json(&format!("{node_type}-{service}"), xds, AdsMode::Sotw);
    config["node"]["cluster"] = service.into();
    config
}

/// Waits until `envoy` holds the cluster `orders` (its config arrived).
async fn wait_for_orders(envoy: &NsEnvoy) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while envoy.stat("cluster.orders.membership_total").await == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no cluster orders");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirected_ingress_under_mtls_lets_in_only_the_callers_allow_from_names() {
    let dir = tempfile::tempdir().unwrap();
    let files = init(TD, SystemTime::now()).unwrap();
    let ca = Ca::from_pem(
        &files.intermediate_key_pem,
        &files.intermediate_pem,
        &files.root_pem,
        TD,
    )
    .unwrap();
    for service in ["orders", "web", "api"] {
        certificates(&ca, &dir.path().join(format!("certs-{service}")), service);
    }
    // The certificate directories are read by orders' Envoy, which runs as uid 1337.
    for d in [dir.path().to_owned(), dir.path().join("certs-orders")] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let templates = dir.path().join("templates");
    std::fs::create_dir_all(&templates).unwrap();
    let shipped = support::moto::repo_root().join("config/templates/intercepted.toml");
    let intercepted = std::fs::read_to_string(shipped).unwrap() + &mtls(dir.path(), "certs-orders");
    std::fs::write(templates.join("secured.toml"), intercepted).unwrap();
    std::fs::write(
        templates.join("web.toml"),
        caller_template(dir.path(), "certs-web", 16001),
    )
    .unwrap();
    std::fs::write(
        templates.join("api.toml"),
        caller_template(dir.path(), "certs-api", 16002),
    )
    .unwrap();
    write_inventory(dir.path());

    let ns = Namespaces::new("secured", &[]);
    let _app = ns
        .serve(Who::App, &[&format!("http:0.0.0.0:{APP_PORT}:orders-app")])
        .await;
    ns.proxy_configuration(&ProxyConfiguration::ecs_defaults(&[APP_PORT]));
    let _xds = start_ecs_xds(&ns, dir.path());
    let orders = ns.start_envoy(bootstrap("secured", "orders")).await;
    let web = ns.start_envoy_as(Who::Peer, bootstrap("web", "web")).await;
    let api = ns.start_envoy_as(Who::Peer, bootstrap("api", "api")).await;
    for envoy in [&web, &api] {
        wait_for_orders(envoy).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let answer = loop {
        let answer = ns
            .get(Who::Peer, "http://127.0.0.1:16001/", Some("orders"))
            .await;
        if answer.starts_with("200 ") || tokio::time::Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    // web's call went to orders' task address and port, and ECS's rule gave it to orders'
    // Envoy: TLS both ways (the app sees it from 127.0.0.1, in plaintext).
    assert!(
        answer.starts_with("200 orders-app\nsource 127.0.0.1:"),
        "web got {answer:?}"
    );
    assert!(web.stat("cluster.orders.ssl.handshake").await >= 1);
    assert!(orders.stat("listener.0.0.0.0_15000.ssl.handshake").await >= 1);
    let denied = "ingress.rbac.denied";
    assert_eq!(orders.stat(denied).await, 0);
    // api holds a valid certificate of the trust domain, but orders does not allow it.
    let refused = ns
        .get(Who::Peer, "http://127.0.0.1:16002/", Some("orders"))
        .await;
    assert!(refused.starts_with("503 "), "api got {refused:?}");
    assert!(
        orders.stat(denied).await >= 1,
        "{}",
        orders.admin_get("/stats?filter=rbac").await
    );
}
