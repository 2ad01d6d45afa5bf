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

/// `ecs-xds run --inventory` serving `clusters` with the templates already in `dir/templates`
/// (xDS and admin on free 127.0.0.1 ports).
pub async fn serve_inventory(
    dir: &Path,
    clusters: impl IntoIterator<Item = ecs_xds::inventory::Cluster>,
) -> Running {
    let config = super::settings::SettingsFile::new().write(dir);
    let inventory = ecs_xds::inventory::Inventory {
        clusters: clusters.into_iter().map(|c| (c.name.clone(), c)).collect(),
        warnings: Vec::new(),
        callers: Default::default(),
    };
    let path = dir.join("inventory.json");
    std::fs::write(&path, serde_json::to_string(&inventory).unwrap()).unwrap();
    let mut command = ecs_xds_command(&config);
    command.arg("--inventory").arg(&path);
    Running::start_command(command).await
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

/// A running `ecs-xds run`, with the addresses it bound (its settings may say port 0) read
/// back from its startup line, and its log collected. Killed when dropped.
pub struct Running {
    pub child: Child,
    pub log: Arc<Mutex<String>>,
    pub xds: std::net::SocketAddr,
    pub admin: std::net::SocketAddr,
}

impl Running {
    /// Starts `ecs-xds run --config <config>` and waits until both listeners are bound.
    pub async fn start(config: &Path) -> Running {
        Running::start_command(ecs_xds_command(config)).await
    }

    /// Starts `command` (an `ecs-xds run`) and waits until both listeners are bound.
    pub async fn start_command(command: Command) -> Running {
        let (mut child, log) = start_logged(command);
        let started = std::time::Instant::now();
        loop {
            let bound = listening(&log.lock().unwrap());
            if let Some((xds, admin)) = bound {
                return Running {
                    child,
                    log,
                    xds,
                    admin,
                };
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "ecs-xds exited ({status}) before listening:\n{}",
                    log.lock().unwrap()
                );
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(20),
                "ecs-xds did not report its listeners:\n{}",
                log.lock().unwrap()
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// The identity endpoint's address (`[identity]` on), from the startup line.
    pub fn identity(&self) -> Option<std::net::SocketAddr> {
        let log = self.log();
        let line = log.lines().find(|l| l.contains("ecs-xds listening"))?;
        let start = line.find("identity=Some(")? + "identity=Some(".len();
        line[start..].split(')').next()?.parse().ok()
    }

    /// The log so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log contains `needle`.
    pub async fn wait_for_log(&self, needle: &str, limit: std::time::Duration) {
        let started = std::time::Instant::now();
        while !self.log().contains(needle) {
            assert!(
                started.elapsed() < limit,
                "{needle:?} not logged within {limit:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let pid = self.child.id().expect("running").to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(sent.success());
    }
}

/// The addresses of the `ecs-xds listening xds=... admin=...` line, once logged.
fn listening(log: &str) -> Option<(std::net::SocketAddr, std::net::SocketAddr)> {
    let line = log.lines().find(|l| l.contains("ecs-xds listening"))?;
    let field = |name: &str| {
        let start = line.find(&format!("{name}="))? + name.len() + 1;
        line[start..].split_whitespace().next()?.parse().ok()
    };
    Some((field("xds")?, field("admin")?))
}
