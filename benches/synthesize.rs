//! Synthesis cost at 1,000 services / 10,000 tasks and 3 node types (issue 4's target: all
//! snapshots rebuilt in ≤ 20 ms).
//!
//! - `cold`: a new `Synthesizer` (nothing encoded yet) synthesizes every node type.
//! - `one_service_changed`: a warm `Synthesizer` synthesizes an inventory in which one task of
//!   one service changed health, which is what a poll usually brings.
//!
//! Run with `cargo bench --bench synthesize`.

use std::path::Path;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use ecs_xds::discover::{Cluster, ClusterOverrides, Endpoint, Health, Inventory, Locality, Source};
use ecs_xds::synthesize::{Synthesizer, Templates};

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
            endpoints,
        };
        (name, cluster)
    });
    Inventory {
        clusters: clusters.collect(),
        warnings: Vec::new(),
    }
}

/// The example sidecar (every service), an edge that exposes 100 of them, and a gateway with
/// other cluster defaults (every service, so its clusters are encoded apart from the sidecar's).
fn templates() -> Templates {
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
    let files = [
        ("gateway.toml", gateway),
        ("ingress.toml", ingress),
        ("sidecar.toml", sidecar),
    ];
    let files: Vec<_> = files.iter().map(|(f, t)| (dir.join(f), t)).collect();
    Templates::parse(files.iter().map(|(f, t)| (f.as_path(), t.as_str())))
        .unwrap_or_else(|e| panic!("{e}"))
}

fn bench(c: &mut Criterion) {
    let templates = templates();
    let base = inventory();
    let mut changed = base.clone();
    changed.clusters.get_mut("svc-0500").unwrap().endpoints[3].health = Health::Draining;

    let cold = Synthesizer::new(templates.clone()).synthesize(&base);
    assert_eq!(cold.snapshots.len(), 3);
    assert!(cold.findings.is_empty(), "{:?}", cold.findings);
    eprintln!(
        "inventory: {} services, {} tasks; cold synthesis encodes {} resources, reuses {}",
        base.clusters.len(),
        base.endpoint_count(),
        cold.encoded,
        cold.reused
    );

    c.bench_function("cold", |b| {
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
    c.bench_function("one_service_changed", |b| {
        b.iter(|| {
            flip = !flip;
            let inventory = if flip { &changed } else { &base };
            let synthesis = synthesizer.synthesize(inventory);
            assert_eq!(synthesis.encoded, 1);
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
