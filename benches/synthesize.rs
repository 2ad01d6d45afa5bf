//! Synthesis cost at 1,000 services / 10,000 tasks and 3 node types (issue 4's target: all
//! snapshots rebuilt in ≤ 20 ms).
//!
//! - `cold`: a new `Synthesizer` (nothing encoded yet) synthesizes every node type.
//! - `one_service_changed`: a warm `Synthesizer` synthesizes an inventory in which one task of
//!   one service changed health, which is what a poll usually brings.
//! - `*_policy`: the same with traffic policy everywhere: every service split 90/10 across two
//!   task-definition revisions (with timeouts and retries), and the sidecar and gateway node
//!   types zone-aware over the 3 zones the tasks run in.
//! - `floor`: encoding and hashing the distinct resources of the cold synthesis once, from
//!   ready-made messages (no synthesis); the bench prints `cold / floor`, a figure that holds
//!   across machines where absolute times do not.
//!
//! - `authz` (printed, not a criterion case): the sidecar and gateway with `[mtls] mode =
//!   "strict"` (TLS on every cluster, each checking its callee's SPIFFE ID), first with no
//!   service tagged, then with every service tagged `allow-from` three others, so each of the
//!   1,000 services gets its own ingress listener (RBAC) and snapshot; the issue's target is
//!   tagged ≤ 1.3× untagged.
//!
//! Run with `cargo bench --bench synthesize`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use ecs_xds::inventory::{
    AllowFrom, Cluster, ClusterOverrides, Endpoint, Health, Inventory, Locality, RevisionWeight,
    Source, Workload,
};
use ecs_xds::snapshot::{ResourceType, Snapshot, SnapshotBuilder};
use ecs_xds::synthesize::{Synthesis, Synthesizer, Templates};
use envoy_types::pb::envoy::config::cluster::v3::Cluster as EnvoyCluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;

const SERVICES: usize = 1_000;
const TASKS_PER_SERVICE: usize = 10;

fn inventory() -> Inventory {
    let zones = ["eu-west-1a", "eu-west-1b", "eu-west-1c"];
    let clusters = (0..SERVICES).map(|s| {
        let name = format!("svc-{s:04}");
        let endpoints = (0..TASKS_PER_SERVICE)
            .map(|t| Endpoint {
                address: format!("10.{}.{}.{}", s / 250, s % 250, t + 1),
                port: 8080,
                health: Health::Healthy,
                locality: Locality {
                    region: "eu-west-1".into(),
                    zone: Some(zones[t % zones.len()].into()),
                },
                weight: 1,
                id: format!("{s:04}{t:02}0123456789abcdef"),
                revision: Some(7),
                deployment: Some(format!("ecs-svc/{s:019}")),
            })
            .collect();
        let cluster = Cluster {
            name: name.clone(),
            source: Source::Ecs {
                ecs_cluster: "prod".into(),
                service: name.clone(),
            },
            port_name: None,
            overrides: ClusterOverrides {
                http2: (s % 10 == 0).then_some(true),
                ..Default::default()
            },
            route: Default::default(),
            backends: None,
            security: Default::default(),
            endpoints,
        };
        (name, cluster)
    });
    Inventory {
        clusters: clusters.collect(),
        warnings: Vec::new(),
        callers: Default::default(),
    }
}

/// The example sidecar (every service), an edge that exposes 100 of them, and a gateway with
/// other cluster defaults (every service, so its clusters are encoded apart from the sidecar's).
fn templates() -> Templates {
    parse(&template_files())
}

fn template_files() -> Vec<(&'static str, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/templates");
    let sidecar = std::fs::read_to_string(dir.join("sidecar.toml")).unwrap();
    let ingress = std::fs::read_to_string(dir.join("ingress.toml"))
        .unwrap()
        .replace(
            r#"include = ["web", "orders", "orders.*"]"#,
            r#"include = ["svc-00*"]"#,
        )
        .replace("\"orders\"", "\"svc-0001\"")
        .replace("\"web\"", "\"svc-0002\"");
    let gateway = sidecar
        .replace("connect_timeout = \"1s\"", "connect_timeout = \"2s\"")
        .replace("port_value = 15001", "port_value = 16001");
    vec![
        ("gateway.toml", gateway),
        ("ingress.toml", ingress),
        ("sidecar.toml", sidecar),
    ]
}

/// What a node type with `[interception]` (the project's `intercepted`, every service in
/// scope) adds: a cold synthesis with it against one without, and a task that moves (a new
/// address: its egress listener and routes are rebuilt) against a cold synthesis.
fn interception_ratio() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/templates");
    let intercepted = std::fs::read_to_string(dir.join("intercepted.toml")).unwrap();
    let mut files = template_files();
    files.push(("intercepted.toml", intercepted));
    let (plain, with) = (templates(), parse(&files));
    let base = inventory();
    let cold = |t: &Templates| median(9, || Synthesizer::new(t.clone()).synthesize(&base));
    let (without_time, with_time) = (cold(&plain), cold(&with));
    let mut moved = base.clone();
    moved.clusters.get_mut("svc-0500").unwrap().endpoints[3].address = "10.99.0.1".into();
    let moves = |templates: Templates| {
        let mut synthesizer = Synthesizer::new(templates);
        synthesizer.synthesize(&base);
        let mut flip = false;
        median(15, || {
            flip = !flip;
            synthesizer.synthesize(if flip { &moved } else { &base })
        })
    };
    let (changed, changed_without) = (moves(with), moves(plain));
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    eprintln!(
        "synthesize interception: cold {:.1} ms with an intercepted node type, {:.1} ms without ({:.2}x); a task that moves {:.1} ms with it, {:.1} ms without ({:.2}x; {:.3}x the cold one)",
        ms(with_time),
        ms(without_time),
        with_time.as_secs_f64() / without_time.as_secs_f64(),
        ms(changed),
        ms(changed_without),
        changed.as_secs_f64() / changed_without.as_secs_f64(),
        changed.as_secs_f64() / with_time.as_secs_f64(),
    );
}

/// [`templates`] with the sidecar and gateway zone-aware, and route defaults with a retry.
fn policy_templates() -> Templates {
    let extra = "\n[zone_aware]\nenabled = true\n\n[route_defaults]\ntimeout = \"3s\"\nretry_policy = { retry_on = \"5xx\", num_retries = 1 }\n";
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/templates");
    let sidecar = std::fs::read_to_string(dir.join("sidecar.toml")).unwrap() + extra;
    let gateway = sidecar
        .replace("connect_timeout = \"1s\"", "connect_timeout = \"2s\"")
        .replace("port_value = 15001", "port_value = 16001");
    let ingress = std::fs::read_to_string(dir.join("ingress.toml"))
        .unwrap()
        .replace(
            r#"include = ["web", "orders", "orders.*"]"#,
            r#"include = ["svc-00*"]"#,
        )
        .replace("\"orders\"", "\"svc-0001\"")
        .replace("\"web\"", "\"svc-0002\"");
    parse(&[
        ("gateway.toml", gateway),
        ("ingress.toml", ingress),
        ("sidecar.toml", sidecar),
    ])
}

/// [`inventory`] with every service's tasks split over revisions 7 and 8, weighted 90/10,
/// with a timeout and retries of its own.
fn policy_inventory() -> Inventory {
    let mut inventory = inventory();
    for cluster in inventory.clusters.values_mut() {
        for (i, e) in cluster.endpoints.iter_mut().enumerate() {
            e.revision = Some(if i % 2 == 0 { 7 } else { 8 });
        }
        cluster.route.weights = vec![
            RevisionWeight {
                revision: 8,
                weight: 10,
            },
            RevisionWeight {
                revision: 7,
                weight: 90,
            },
        ];
        cluster.route.timeout = Some(Duration::from_secs(2));
        cluster.route.retries = Some(2);
    }
    inventory
}

/// [`templates`] with mutual TLS on the sidecar and gateway.
fn mtls_templates() -> Templates {
    let mtls = "\n[mtls]\nmode = \"strict\"\ntrust_domain = \"mesh.test\"\n";
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/templates");
    let sidecar = std::fs::read_to_string(dir.join("sidecar.toml")).unwrap() + mtls;
    let gateway = sidecar
        .replace("connect_timeout = \"1s\"", "connect_timeout = \"2s\"")
        .replace("port_value = 15001", "port_value = 16001");
    parse(&[("gateway.toml", gateway), ("sidecar.toml", sidecar)])
}

/// [`inventory`] with each service's workload known (so its clusters get TLS), and with
/// `allow_from` every service allowing the next three.
fn mtls_inventory(allow_from: bool) -> Inventory {
    let mut inventory = inventory();
    for (s, cluster) in inventory.clusters.values_mut().enumerate() {
        cluster.security.workload = Some(Workload {
            account: "111122223333".into(),
            region: "eu-west-1".into(),
            ecs_cluster: "prod".into(),
        });
        if allow_from {
            let callers = (1..=3).map(|k| format!("svc-{:04}", (s + k) % SERVICES));
            cluster.security.allow_from = Some(AllowFrom::Services(callers.collect()));
        }
    }
    inventory
}

/// Prints cold synthesis with `allow-from` on every service against none, both with mTLS.
fn authz_ratio() {
    let templates = mtls_templates();
    let (untagged, tagged) = (mtls_inventory(false), mtls_inventory(true));
    // Interleaved, so that both see the same machine: a drift in its speed moves both.
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for _ in 0..15 {
        for (times, inventory) in [(&mut without, &untagged), (&mut with, &tagged)] {
            times.push(median(1, || {
                Synthesizer::new(templates.clone()).synthesize(inventory)
            }));
        }
    }
    let (without, with) = (middle(without), middle(with));
    let floor_of = |inventory: &Inventory| {
        let messages =
            distinct_messages(&Synthesizer::new(templates.clone()).synthesize(inventory));
        median(9, || floor(messages.clone()))
    };
    let (floor_without, floor_with) = (floor_of(&untagged), floor_of(&tagged));
    let synthesis = Synthesizer::new(templates.clone()).synthesize(&tagged);
    let own: usize = synthesis.backend_sets.values().map(|s| s.sets.len()).sum();
    let mut warm = Synthesizer::new(templates.clone());
    warm.synthesize(&tagged);
    let mut changed = tagged.clone();
    changed.clusters.get_mut("svc-0500").unwrap().endpoints[3].health = Health::Draining;
    let mut flip = false;
    let one_changed = median(15, || {
        flip = !flip;
        warm.synthesize(if flip { &changed } else { &tagged })
    });
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    eprintln!(
        "synthesize authz: cold with mTLS, no tags {:.1} ms (floor {:.1}); every service with allow-from {:.1} ms (floor {:.1}; {own} snapshots of their own), tagged/untagged {:.2} (floors {:.2}); one task changed (tagged) {:.2} ms",
        ms(without),
        ms(floor_without),
        ms(with),
        ms(floor_with),
        with.as_secs_f64() / without.as_secs_f64(),
        floor_with.as_secs_f64() / floor_without.as_secs_f64(),
        ms(one_changed),
    );
}

fn parse(files: &[(&str, String)]) -> Templates {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/templates");
    let files: Vec<_> = files.iter().map(|(f, t)| (dir.join(f), t)).collect();
    Templates::parse(files.iter().map(|(f, t)| (f.as_path(), t.as_str())))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Every distinct resource of `synthesis` (shared ones once), decoded back into messages, one
/// builder's worth per node type: what the floor encodes and hashes.
fn distinct_messages(synthesis: &Synthesis) -> Vec<Messages> {
    let mut seen = std::collections::HashSet::new();
    let snapshots = synthesis
        .snapshots
        .values()
        .chain(synthesis.places.values().flat_map(|z| z.values()))
        .chain(synthesis.backend_sets.values().flat_map(|b| {
            (b.sets.values())
                .flat_map(|set| std::iter::once(&set.snapshot).chain(set.places.values()))
        }));
    snapshots
        .map(|snapshot| {
            let mut messages = Messages::default();
            for ty in ResourceType::ALL {
                for resource in snapshot.of(ty).resources().values() {
                    if !seen.insert(Arc::as_ptr(resource)) {
                        continue;
                    }
                    match ty {
                        ResourceType::Cluster => messages.clusters.push(resource.decode().unwrap()),
                        ResourceType::Endpoint => {
                            messages.endpoints.push(resource.decode().unwrap())
                        }
                        ResourceType::Listener => {
                            messages.listeners.push(resource.decode().unwrap())
                        }
                        ResourceType::Route => messages.routes.push(resource.decode().unwrap()),
                        ResourceType::Secret => {}
                    }
                }
            }
            messages
        })
        .collect()
}

#[derive(Default, Clone)]
struct Messages {
    clusters: Vec<EnvoyCluster>,
    endpoints: Vec<ClusterLoadAssignment>,
    listeners: Vec<Listener>,
    routes: Vec<RouteConfiguration>,
}

/// Encodes and hashes every message once (into snapshots, as synthesis would).
fn floor(all: Vec<Messages>) -> Vec<Snapshot> {
    all.into_iter()
        .map(|m| {
            let mut b: SnapshotBuilder = Snapshot::builder();
            for c in m.clusters {
                b = b.cluster(c);
            }
            for e in m.endpoints {
                b = b.endpoints(e);
            }
            for l in m.listeners {
                b = b.listener(l);
            }
            for r in m.routes {
                b = b.route(r);
            }
            b.build()
        })
        .collect()
}

fn middle(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// Median wall time of `runs` calls of `f` (its output is dropped untimed).
fn median<T>(runs: usize, mut f: impl FnMut() -> T) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let started = Instant::now();
            let out = f();
            let took = started.elapsed();
            drop(out);
            took
        })
        .collect();
    times.sort();
    times[runs / 2]
}

/// Prints the cold synthesis against its floor, both measured here, now.
fn ratio(name: &str, templates: &Templates, inventory: &Inventory) {
    let cold = Synthesizer::new(templates.clone()).synthesize(inventory);
    let messages = distinct_messages(&cold);
    let count: usize = messages
        .iter()
        .map(|m| m.clusters.len() + m.endpoints.len() + m.listeners.len() + m.routes.len())
        .sum();
    let synth = median(15, || {
        Synthesizer::new(templates.clone()).synthesize(inventory)
    });
    let floor_time = median(15, || floor(messages.clone()));
    let zones: usize = cold.places.values().map(|z| z.len()).sum();
    eprintln!(
        "synthesize {name}: cold {:.1} ms, floor {:.1} ms ({count} distinct resources encoded and hashed once), cold/floor {:.2}; {} node types, {zones} zone snapshots",
        synth.as_secs_f64() * 1e3,
        floor_time.as_secs_f64() * 1e3,
        synth.as_secs_f64() / floor_time.as_secs_f64(),
        cold.snapshots.len(),
    );
}

fn bench(c: &mut Criterion) {
    ratio("plain", &templates(), &inventory());
    ratio("policy", &policy_templates(), &policy_inventory());
    authz_ratio();
    interception_ratio();
    // One changed task re-encodes its service's endpoints; with zones, also the assignment of
    // each of the 3 zones (shared by the two zone-aware node types).
    bench_case(c, "", templates(), inventory(), 1);
    bench_case(c, "_policy", policy_templates(), policy_inventory(), 4);
    let cold = Synthesizer::new(templates()).synthesize(&inventory());
    let messages = distinct_messages(&cold);
    c.bench_function("floor", |b| {
        b.iter_batched(|| messages.clone(), floor, BatchSize::SmallInput)
    });
}

fn bench_case(
    c: &mut Criterion,
    suffix: &str,
    templates: Templates,
    base: Inventory,
    encoded: usize,
) {
    let mut changed = base.clone();
    changed.clusters.get_mut("svc-0500").unwrap().endpoints[3].health = Health::Draining;

    let cold = Synthesizer::new(templates.clone()).synthesize(&base);
    assert_eq!(cold.snapshots.len(), 3);
    assert!(cold.warnings.is_empty(), "{:?}", cold.warnings);
    eprintln!(
        "inventory: {} services, {} tasks; cold synthesis encodes {} resources, reuses {}",
        base.clusters.len(),
        base.endpoint_count(),
        cold.encoded,
        cold.reused
    );

    c.bench_function(&format!("cold{suffix}"), |b| {
        b.iter_batched(
            || templates.clone(),
            // Returned, so that dropping them is not timed.
            |t| {
                let mut synthesizer = Synthesizer::new(t);
                let synthesis = synthesizer.synthesize(&base);
                (synthesizer, synthesis)
            },
            BatchSize::SmallInput,
        )
    });

    let mut synthesizer = Synthesizer::new(templates.clone());
    synthesizer.synthesize(&base);
    let mut flip = false;
    c.bench_function(&format!("one_service_changed{suffix}"), |b| {
        b.iter(|| {
            flip = !flip;
            let inventory = if flip { &changed } else { &base };
            let synthesis = synthesizer.synthesize(inventory);
            assert_eq!(synthesis.encoded, encoded);
            synthesis
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = bench
}
criterion_main!(benches);
