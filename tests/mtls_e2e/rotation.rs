//! Certificates and the CA change under steady traffic, and no request fails.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ecs_xds::inventory::Security;

use crate::identity_e2e::{ca_init, envoy_serials, identity_settings, prepared_dir, Mesh};
use crate::support::daemon::Running;
use crate::support::envoy::{free_port, Envoy};
use crate::support::moto::Moto;

use super::fleet::*;

impl Fleet {
    /// Stops the identity ecs-xds and starts it again with `config`, on the same identity
    /// address (the one the agents' `--server` names), as an operator restarts it with new CA
    /// files.
    pub(crate) async fn restart_identity(&mut self, config: &Path) {
        let at = self.mesh.identity;
        self.mesh.daemon.child.kill().await.unwrap();
        self.mesh.daemon = Running::start(config).await;
        assert_eq!(
            self.mesh.daemon.identity(),
            Some(at),
            "the same identity port"
        );
    }
}

/// What one request answered: its status and body, or why there was none.
type Answer = Result<(u16, String), String>;

/// Requests from `caller`'s app to `callee` through `caller`'s Envoy at a steady rate, each
/// started on its tick whatever the ones before are doing, each on a new downstream connection
/// and given 5 s.
pub(crate) struct Traffic {
    started: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    run: tokio::task::JoinHandle<Vec<Answer>>,
}

impl Traffic {
    /// Up to `limit` requests, one every `every`.
    pub(crate) fn start(
        fleet: &Fleet,
        caller: &str,
        callee: &'static str,
        every: Duration,
        limit: usize,
    ) -> Traffic {
        let url = format!("http://127.0.0.1:{}/", fleet.service(caller).egress);
        let http = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let started = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, stopped) = (started.clone(), stop.clone());
        let run = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut requests = Vec::new();
            while requests.len() < limit && !stopped.load(Ordering::SeqCst) {
                ticks.tick().await;
                let sent = http.get(&url).header("host", callee).send();
                requests.push(tokio::spawn(async move {
                    let response = sent.await.map_err(|e| format!("{e:?}"))?;
                    let status = response.status().as_u16();
                    Ok((status, response.text().await.unwrap_or_default()))
                }));
                count.fetch_add(1, Ordering::SeqCst);
            }
            let mut answers = Vec::new();
            for request in requests {
                answers.push(request.await.unwrap());
            }
            answers
        });
        Traffic { started, stop, run }
    }

    /// How many requests have been sent so far.
    pub(crate) fn started(&self) -> usize {
        self.started.load(Ordering::SeqCst)
    }

    /// Stops sending (unless all were sent already) and returns every answer, in order.
    pub(crate) async fn finish(self) -> Vec<Answer> {
        self.stop.store(true, Ordering::SeqCst);
        self.run.await.unwrap()
    }

    /// Waits until all `limit` requests were sent and answered.
    pub(crate) async fn wait(self) -> Vec<Answer> {
        self.run.await.unwrap()
    }
}

/// The answers that are not `200` from `callee`'s app for `caller_id`, with their index.
pub(crate) fn failures<'a>(
    answers: &'a [Answer],
    callee: &str,
    caller_id: &str,
) -> Vec<(usize, &'a Answer)> {
    let served = |a: &Answer| match a {
        Ok((200, body)) => {
            body.starts_with(&format!("{callee} xfcc="))
                && body.contains(&format!("URI={caller_id}"))
        }
        _ => false,
    };
    answers
        .iter()
        .enumerate()
        .filter(|(_, a)| !served(a))
        .collect()
}

/// The first few of `failed`, for a failure message.
pub(crate) fn first<T: std::fmt::Debug>(failed: &[T]) -> String {
    let shown: Vec<_> = failed.iter().take(5).collect();
    format!("{shown:?}{}", if failed.len() > 5 { " …" } else { "" })
}

/// Web's Envoy's upstream TLS and connection failures to orders (none under clean traffic, so
/// no retry or second try hid one).
const ORDERS_FAILURE_STATS: [&str; 4] = [
    "cluster.orders.ssl.connection_error",
    "cluster.orders.ssl.fail_verify_error",
    "cluster.orders.ssl.fail_verify_san",
    "cluster.orders.upstream_cx_connect_fail",
];

/// The [`ORDERS_FAILURE_STATS`] of `envoy`, by name.
pub(crate) async fn orders_failures(envoy: &Envoy) -> Vec<(&'static str, u64)> {
    let mut stats = Vec::new();
    for stat in ORDERS_FAILURE_STATS {
        stats.push((stat, envoy.stat(stat).await));
    }
    stats
}

/// The certificates (DER) of the PEM file `path`, `None` while it cannot be read (an agent
/// swapping its files).
pub(crate) fn pem_file(path: &Path) -> Option<Vec<Vec<u8>>> {
    let bytes = std::fs::read(path).ok()?;
    let blocks = x509_parser::pem::Pem::iter_from_buffer(&bytes);
    blocks.map(|p| p.ok().map(|p| p.contents)).collect()
}

/// The serial (lower-case hex, no leading zeros, as [`envoy_serials`] gives) of the workload
/// certificate in `certs`.
pub(crate) fn serial(certs: &Path) -> Option<String> {
    let chain = pem_file(&certs.join("cert.pem"))?;
    let (_, leaf) = x509_parser::parse_x509_certificate(chain.first()?).ok()?;
    let hex: String = leaf
        .raw_serial()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Some(hex.trim_start_matches('0').to_owned())
}

/// The serial of `certs`' certificate, waiting out a file swap.
pub(crate) async fn serial_now(certs: &Path) -> String {
    for _ in 0..100 {
        if let Some(serial) = serial(certs) {
            return serial;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no readable certificate in {}", certs.display());
}

/// Waits until `envoy` serves the certificate the agent last wrote into `certs`.
pub(crate) async fn wait_for_envoy_certificate(envoy: &Envoy, certs: &Path) {
    let limit = Duration::from_secs(10);
    let started = Instant::now();
    loop {
        let current = serial_now(certs).await;
        let held = envoy_serials(envoy).await;
        if held.contains(&current) {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "Envoy holds {held:?}, not the agent's current {current}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Certificates with a one-minute life (the shortest allowed) renewed at about half of it while
/// web calls orders 1,000 times, one request every 70 ms, each on a new upstream TLS
/// connection: every request is answered by orders, and both services' certificates rotated at
/// least twice under the traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn certificates_rotate_during_1000_requests_at_a_steady_rate_and_none_fails() {
    const REQUESTS: usize = 1000;
    let mesh = Mesh::start(r#"certificate_ttl = "1m""#).await;
    let fleet = Fleet::start_on(
        mesh,
        None,
        "strict",
        Security::default(),
        ONE_REQUEST_PER_CONNECTION,
    )
    .await;
    fleet.wait_for_call("web", "orders", 200).await;
    let web = fleet.envoy("web");
    let handshakes = web.stat("cluster.orders.ssl.handshake").await;
    let connections = web.stat("cluster.orders.upstream_cx_total").await;
    // Counted before: the first calls while orders' Envoy was still starting.
    let failures_before = orders_failures(web).await;
    let certs = |name: &str| fleet.service(name).certs.clone();
    let mut seen: [BTreeSet<String>; 2] = Default::default();
    for (set, name) in seen.iter_mut().zip(["web", "orders"]) {
        set.insert(serial_now(&certs(name)).await);
    }

    let started = Instant::now();
    let traffic = Traffic::start(&fleet, "web", "orders", Duration::from_millis(70), REQUESTS);
    while traffic.started() < REQUESTS {
        tokio::time::sleep(Duration::from_millis(250)).await;
        for (set, name) in seen.iter_mut().zip(["web", "orders"]) {
            set.extend(serial(&certs(name)));
        }
    }
    let answers = traffic.wait().await;
    let took = started.elapsed();

    assert_eq!(answers.len(), REQUESTS);
    let failed = failures(&answers, "orders", &fleet.spiffe_id("web"));
    assert!(
        failed.is_empty(),
        "{} of {REQUESTS} failed: {}",
        failed.len(),
        first(&failed)
    );
    // A steady rate: 1,000 ticks of 70 ms.
    assert!(took >= Duration::from_secs(69), "{took:?}");
    for (set, name) in seen.iter().zip(["web", "orders"]) {
        assert!(
            set.len() >= 3,
            "{name}'s certificate changed fewer than twice during the run: {set:?}"
        );
    }
    // Every request was a new connection, and so a new handshake: no connection kept from
    // before a renewal carried the traffic.
    let web_handshakes = web.stat("cluster.orders.ssl.handshake").await - handshakes;
    let web_connections = web.stat("cluster.orders.upstream_cx_total").await - connections;
    assert!(
        web_handshakes >= REQUESTS as u64 && web_connections >= REQUESTS as u64,
        "{web_handshakes} handshakes, {web_connections} connections for {REQUESTS} requests"
    );
    assert_eq!(orders_failures(web).await, failures_before);
    // The Envoys serve the agents' latest certificates.
    for name in ["web", "orders"] {
        wait_for_envoy_certificate(fleet.envoy(name), &certs(name)).await;
    }
    eprintln!(
        "{REQUESTS} requests in {took:?}, {web_handshakes} handshakes; certificates seen: web {}, orders {}",
        seen[0].len(),
        seen[1].len()
    );
}

/// Makes `served` hold the CA files of the identity ecs-xds: signing with the intermediate of
/// the CA made in `signer` (`ecs-xds ca init`), trusting the roots of the CAs in `roots`.
pub(crate) fn serve_ca(served: &Path, signer: &Path, roots: &[&Path]) {
    std::fs::create_dir_all(served).unwrap();
    for name in ["intermediate-key.pem", "intermediate.pem"] {
        std::fs::copy(signer.join(name), served.join(name)).unwrap();
    }
    let bundle: String = (roots.iter())
        .map(|ca| std::fs::read_to_string(ca.join("root.pem")).unwrap())
        .collect();
    std::fs::write(served.join("bundle.pem"), bundle).unwrap();
}

/// What an agent's directory holds from the CAs: the roots of its bundle.pem (by CA name) and
/// the CA that issued its cert.pem (the intermediate after the leaf), `None` mid-swap.
pub(crate) fn from_cas(certs: &Path, cas: &[(&str, &Path)]) -> Option<(Vec<String>, String)> {
    let der = |ca: &Path, name: &str| pem_file(&ca.join(name)).unwrap().remove(0);
    let bundle = pem_file(&certs.join("bundle.pem"))?;
    let roots = (bundle.iter())
        .map(|root| {
            let ca = cas.iter().find(|(_, ca)| der(ca, "root.pem") == *root);
            ca.map_or("unknown".to_owned(), |(name, _)| name.to_string())
        })
        .collect();
    let chain = pem_file(&certs.join("cert.pem"))?;
    let issuer = cas
        .iter()
        .find(|(_, ca)| chain.get(1) == Some(&der(ca, "intermediate.pem")));
    let issuer = issuer.map_or("unknown".to_owned(), |(name, _)| name.to_string());
    Some((roots, issuer))
}

/// A CA change with file CAs, under traffic: the identity ecs-xds is restarted with new CA
/// files at each step (a) CA A signs, bundle A; (b) A signs, bundle A+B; (c) B signs, bundle
/// A+B; (d) B signs, bundle B, each step taken once both agents hold what the last one
/// issued; web calls orders all the while, each request on a new TLS connection, and not one
/// request fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn the_ca_changes_through_a_bundle_of_both_roots_and_no_request_fails() {
    let moto = Moto::start();
    let seed = moto.seed(&["--tasks-per-service", "1"]);
    let dir = prepared_dir();
    let (a, b) = (dir.path().join("ca"), dir.path().join("ca-b"));
    ca_init(&b);
    let served = dir.path().join("served");
    serve_ca(&served, &a, &[&a]);
    // The agents check the identity endpoint's certificate, issued by A, then by B.
    let agents_trust = dir.path().join("agents-trust.pem");
    let both = [&a, &b].map(|ca| std::fs::read_to_string(ca.join("root.pem")).unwrap());
    std::fs::write(&agents_trust, both.concat()).unwrap();
    let identity = format!(
        r#"ca = {{ key_file = "{}", chain_file = "{}", bundle_file = "{}" }}
        certificate_ttl = "1m""#,
        served.join("intermediate-key.pem").display(),
        served.join("intermediate.pem").display(),
        served.join("bundle.pem").display(),
    );
    let listen = format!("127.0.0.1:{}", free_port());
    let config = identity_settings(&moto, &identity)
        .set("identity", "listen", listen.as_str())
        .write(dir.path());
    let mesh = Mesh::serve(moto, seed, dir, &config).await;
    assert_eq!(mesh.identity.to_string(), listen);
    let mut fleet = Fleet::start_on(
        mesh,
        Some(&agents_trust),
        "strict",
        Security::default(),
        ONE_REQUEST_PER_CONNECTION,
    )
    .await;
    let cas = [("A", a.as_path()), ("B", b.as_path())];
    let holds = |fleet: &Fleet, roots: &[&str], issuer: &str| {
        ["web", "orders"].iter().all(|name| {
            let held = from_cas(&fleet.service(name).certs, &cas);
            held.is_some_and(|(r, i)| r == roots && i == issuer)
        })
    };
    assert!(holds(&fleet, &["A"], "A"), "(a): issued by A, bundle A");
    fleet.wait_for_call("web", "orders", 200).await;
    let handshakes = (fleet.envoy("web"))
        .stat("cluster.orders.ssl.handshake")
        .await;
    let failures_before = orders_failures(fleet.envoy("web")).await;

    let started = Instant::now();
    let traffic = Traffic::start(
        &fleet,
        "web",
        "orders",
        Duration::from_millis(70),
        usize::MAX,
    );
    let mut sent_before = vec![];
    let steps: [(&Path, &[&Path], &[&str], &str); 3] = [
        (&a, &[&a, &b], &["A", "B"], "A"),
        (&b, &[&a, &b], &["A", "B"], "B"),
        (&b, &[&b], &["B"], "B"),
    ];
    for (step, (signer, roots, want_roots, want_issuer)) in ["b", "c", "d"].iter().zip(steps) {
        // A few seconds of traffic in the state reached, then the next step.
        tokio::time::sleep(Duration::from_secs(3)).await;
        sent_before.push(traffic.started());
        serve_ca(&served, signer, roots);
        fleet.restart_identity(&config).await;
        let step_started = Instant::now();
        // Both agents renew within about 33 s of their last certificate.
        while !holds(&fleet, want_roots, want_issuer) {
            let held: Vec<_> = (["web", "orders"].iter())
                .map(|name| from_cas(&fleet.service(name).certs, &cas))
                .collect();
            assert!(
                step_started.elapsed() < Duration::from_secs(50),
                "({step}): the agents hold {held:?}, not roots {want_roots:?} from {want_issuer}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        eprintln!("({step}) reached after {:?}", step_started.elapsed());
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    sent_before.push(traffic.started());
    let answers = traffic.finish().await;
    let took = started.elapsed();

    let failed = failures(&answers, "orders", &fleet.spiffe_id("web"));
    assert!(
        failed.is_empty(),
        "{} of {} failed (steps began at requests {sent_before:?}): {}",
        failed.len(),
        answers.len(),
        first(&failed)
    );
    // Traffic in every state: between the steps at least the 3 s of requests.
    let per_state: Vec<usize> = std::iter::once(0)
        .chain(sent_before.iter().copied())
        .collect::<Vec<_>>()
        .windows(2)
        .map(|w| w[1] - w[0])
        .collect();
    assert!(per_state.iter().all(|n| *n >= 30), "{per_state:?}");
    let web = fleet.envoy("web");
    let web_handshakes = web.stat("cluster.orders.ssl.handshake").await - handshakes;
    assert!(
        web_handshakes >= answers.len() as u64,
        "{web_handshakes} handshakes for {} requests",
        answers.len()
    );
    assert_eq!(orders_failures(web).await, failures_before);
    for name in ["web", "orders"] {
        wait_for_envoy_certificate(fleet.envoy(name), &fleet.service(name).certs).await;
    }
    eprintln!(
        "{} requests in {took:?}, {web_handshakes} handshakes, per state {per_state:?}",
        answers.len()
    );
}
