//! `ecs-xds discover`, the real binary, against moto server over HTTP.

use crate::support;

use std::process::Command;

use ecs_xds::inventory::Inventory;
use support::moto::{Moto, REGION};
use support::settings::SettingsFile;

fn ecs_xds(config: &std::path::Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ecs-xds"))
        .arg("discover")
        .arg("--config")
        .arg(config)
        .args(extra)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", REGION)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL")
        .output()
        .expect("run ecs-xds")
}

fn settings(dir: &tempfile::TempDir, endpoint: &str) -> std::path::PathBuf {
    SettingsFile::bare()
        .aws_endpoint(endpoint)
        .clusters(&["demo"])
        .namespaces(&["demo.local"])
        .write(dir.path())
}

#[test]
fn discover_prints_the_inventory_as_a_table_and_as_json() {
    let moto = Moto::start();
    moto.seed(&[
        "--tasks-per-service",
        "2",
        "--cloudmap-instance",
        "127.0.0.1:8081",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let config = settings(&dir, &moto.endpoint);

    let out = ecs_xds(&config, &[]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in [
        "orders",
        "web",
        "cloudmap.backend.demo.local",
        "127.0.0.1:8081",
    ] {
        assert!(table.contains(name), "{name} missing from:\n{table}");
    }

    let out = ecs_xds(&config, &["--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let inventory: Inventory = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(inventory.clusters["orders"].endpoints.len(), 2);
    assert_eq!(inventory.clusters["web"].endpoints.len(), 2);
}

#[test]
fn discover_exits_non_zero_naming_the_aws_call_when_aws_is_unreachable() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let dir = tempfile::tempdir().unwrap();
    let out = ecs_xds(&settings(&dir, &endpoint), &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("discovery failed"), "{stderr}");
    assert!(
        stderr.contains("ListTasks") || stderr.contains("ListNamespaces"),
        "{stderr}"
    );
}

#[test]
fn discover_exits_2_naming_the_file_and_key_on_bad_settings() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[ecs]\npoll_interval = \"1ms\"\n").unwrap();
    let out = ecs_xds(&path, &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.toml") && stderr.contains("ecs.poll_interval"),
        "{stderr}"
    );
}
