//! `ecs-xds render`, the real binary, on a saved inventory and the project's example templates.

use std::process::Command;

use ecs_xds::inventory::{Cluster, Endpoint, Health, Inventory, Locality, Source};

fn inventory() -> Inventory {
    let mut inventory = Inventory::default();
    let endpoint = |address: &str| Endpoint {
        address: address.into(),
        port: 8080,
        health: Health::Healthy,
        locality: Locality {
            region: "us-east-1".into(),
            zone: Some("us-east-1a".into()),
        },
        weight: 1,
        id: address.into(),
        revision: Some(3),
        deployment: None,
    };
    inventory.clusters.insert(
        "orders".into(),
        Cluster {
            name: "orders".into(),
            source: Source::Ecs {
                ecs_cluster: "prod".into(),
                service: "orders".into(),
            },
            port_name: None,
            overrides: Default::default(),
            route: Default::default(),
            backends: None,
            security: Default::default(),
            endpoints: vec![endpoint("10.0.0.1"), endpoint("10.0.0.2")],
        },
    );
    inventory
}

fn render(dir: &std::path::Path, node_type: &str, extra: &[&str]) -> std::process::Output {
    render_inventory(dir, &inventory(), node_type, extra)
}

fn render_inventory(
    dir: &std::path::Path,
    inventory: &Inventory,
    node_type: &str,
    extra: &[&str],
) -> std::process::Output {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = dir.join("ecs-xds.toml");
    let templates = root.join("config/templates");
    std::fs::write(
        &config,
        format!("templates_dir = {:?}\n", templates.display().to_string()),
    )
    .unwrap();
    let saved = dir.join("inventory.json");
    std::fs::write(&saved, serde_json::to_string(inventory).unwrap()).unwrap();
    Command::new(env!("CARGO_BIN_EXE_ecs-xds"))
        .args(["render", "--node-type", node_type, "--config"])
        .arg(&config)
        .arg("--inventory")
        .arg(&saved)
        .args(extra)
        .output()
        .expect("run ecs-xds render")
}

#[test]
fn render_prints_what_a_node_type_is_served_as_envoy_json() {
    let dir = tempfile::tempdir().unwrap();
    let out = render(dir.path(), "sidecar", &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names = |section: &str, key: &str| -> Vec<String> {
        json[section]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r[key].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names("clusters", "name"), ["local_app", "orders"]);
    assert_eq!(names("endpoints", "clusterName"), ["orders"]);
    assert_eq!(names("listeners", "name"), ["egress", "ingress"]);
    assert!(names("routes", "name").contains(&"egress".to_owned()));
    let endpoints = &json["endpoints"][0]["endpoints"][0];
    assert_eq!(endpoints["locality"]["zone"], "us-east-1a");
    assert_eq!(endpoints["lbEndpoints"].as_array().unwrap().len(), 2);
    assert_eq!(json["versions"]["cds"].as_str().unwrap().len(), 16);
}

#[test]
fn render_names_the_known_node_types_when_asked_for_another() {
    let dir = tempfile::tempdir().unwrap();
    let out = render(dir.path(), "gateway", &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("\"gateway\"") && stderr.contains("sidecar") && stderr.contains("ingress"),
        "{stderr}"
    );
}

#[test]
fn render_prints_the_same_resources_as_yaml() {
    let dir = tempfile::tempdir().unwrap();
    let json = render(dir.path(), "sidecar", &[]);
    let yaml = render(dir.path(), "sidecar", &["--format", "yaml"]);
    assert!(
        yaml.status.success(),
        "{}",
        String::from_utf8_lossy(&yaml.stderr)
    );
    let from_json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let from_yaml: serde_json::Value = serde_yaml_ng::from_slice(&yaml.stdout).unwrap();
    assert_eq!(from_json, from_yaml);
    assert!(String::from_utf8_lossy(&yaml.stdout).contains("clusterName: orders"));
}

#[test]
fn render_service_prints_what_its_sidecar_gets_only_its_declared_backends() {
    let mut inventory = inventory();
    for (name, backends) in [("web", Some(vec!["orders".to_owned()])), ("users", None)] {
        let mut cluster = inventory.clusters["orders"].clone();
        cluster.name = name.into();
        cluster.source = Source::Ecs {
            ecs_cluster: "prod".into(),
            service: name.into(),
        };
        cluster.backends = backends;
        inventory.clusters.insert(name.into(), cluster);
    }
    let dir = tempfile::tempdir().unwrap();
    let clusters = |service: &[&str]| {
        let out = render_inventory(dir.path(), &inventory, "sidecar", service);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let names: Vec<String> = (json["clusters"].as_array().unwrap().iter())
            .map(|c| c["name"].as_str().unwrap().to_owned())
            .collect();
        (names, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (web, said) = clusters(&["--service", "web"]);
    assert_eq!(web, ["local_app", "orders"]);
    assert!(said.contains("declares its backends: \"orders\""), "{said}");
    let (users, said) = clusters(&["--service", "users"]);
    assert_eq!(users, ["local_app", "orders", "users", "web"]);
    assert!(said.contains("whole scope"), "{said}");
}

#[test]
fn render_service_says_who_may_call_it_and_serves_its_rbac() {
    use ecs_xds::inventory::{AllowFrom, Workload};
    let mut inventory = inventory();
    let orders = inventory.clusters.get_mut("orders").unwrap();
    orders.security.workload = Some(Workload {
        account: "111122223333".into(),
        region: "us-east-1".into(),
        ecs_cluster: "prod".into(),
    });
    orders.security.allow_from = Some(AllowFrom::Services(vec!["web".into()]));
    let dir = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let shipped = std::fs::read_to_string(root.join("config/templates/sidecar.toml")).unwrap();
    std::fs::create_dir_all(dir.path().join("templates")).unwrap();
    let mtls = "\n[mtls]\nmode = \"strict\"\ntrust_domain = \"mesh.test\"\n";
    std::fs::write(dir.path().join("templates/sidecar.toml"), shipped + mtls).unwrap();
    let config = dir.path().join("ecs-xds.toml");
    let templates = dir.path().join("templates").display().to_string();
    std::fs::write(&config, format!("templates_dir = {templates:?}\n")).unwrap();
    let saved = dir.path().join("inventory.json");
    std::fs::write(&saved, serde_json::to_string(&inventory).unwrap()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ecs-xds"))
        .args(["render", "--node-type", "sidecar", "--service", "orders"])
        .arg("--config")
        .arg(&config)
        .arg("--inventory")
        .arg(&saved)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    let web = "spiffe://mesh.test/ecs/111122223333/us-east-1/prod/web";
    assert!(
        said.contains(&format!(
            "service \"orders\" accepts (its tags): strict allow {web}"
        )),
        "{said}"
    );
    let json = String::from_utf8_lossy(&out.stdout);
    assert!(
        json.contains("envoy.filters.http.rbac") && json.contains(web),
        "{json}"
    );
    assert!(json.contains("spiffe://mesh.test/ecs/111122223333/us-east-1/prod/orders"));
}
