//! The real `ecs-xds run` binary, started the way an operator would, with dummy AWS credentials
//! so the SDK never looks for real ones or probes the instance-metadata address.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::moto::REGION;

/// `ecs-xds run --config <config>`, killed when dropped.
pub fn ecs_xds_command(config: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ecs-xds"));
    command
        .args(["run", "--config"])
        .arg(config)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", REGION)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("ECS_XDS_ADMIN_TOKEN")
        .kill_on_drop(true);
    command
}

pub fn start_ecs_xds(config: &Path) -> Child {
    ecs_xds_command(config).spawn().expect("start ecs-xds run")
}

/// Starts `command` with its log (stderr) collected.
pub fn start_logged(mut command: Command) -> (Child, Arc<Mutex<String>>) {
    let mut child = command
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ecs-xds run");
    let log = Arc::new(Mutex::new(String::new()));
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let sink = log.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let mut log = sink.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    (child, log)
}

/// `ecs-xds run` with its log collected.
pub fn start_ecs_xds_logged(config: &Path) -> (Child, Arc<Mutex<String>>) {
    start_logged(ecs_xds_command(config))
}
