//! An Envoy in the app namespace running as [`ENVOY_UID`], its admin API on a unix socket: the
//! test runs in the root namespace, which cannot reach the app's 127.0.0.1, while a socket
//! path is the same file in every namespace.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

use super::{BoxError, Namespaces, NsProcess, Who, ENVOY_UID, SERVER_LIFETIME};
use crate::support::envoy::envoy_binary;

/// An Envoy started by [`Namespaces::start_envoy`]; killed on drop.
pub struct NsEnvoy {
    process: NsProcess,
    admin: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Namespaces {
    /// Starts Envoy with `bootstrap` (its `admin` replaced) as uid 1337 in the app namespace;
    /// returns once `/ready` answers LIVE. Its log is in the panic message of a failed start,
    /// and on stderr with `ECS_XDS_ENVOY_LOGS` set.
    pub async fn start_envoy(&self, bootstrap: Value) -> NsEnvoy {
        self.start_envoy_as(Who::AppAs(ENVOY_UID), bootstrap).await
    }

    /// [`Namespaces::start_envoy`] as `who` (a caller's Envoy in the peer namespace).
    pub async fn start_envoy_as(&self, who: Who, mut bootstrap: Value) -> NsEnvoy {
        let dir = tempfile::tempdir().unwrap();
        // Envoy's uid writes its admin socket and log here.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let admin = dir.path().join("admin.sock");
        bootstrap["admin"] = json!({ "address": { "pipe": { "path": admin } } });
        let config = dir.path().join("bootstrap.json");
        std::fs::write(&config, bootstrap.to_string()).unwrap();
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
        let log = dir.path().join("envoy.log");
        let mut cmd = self.command(who, SERVER_LIFETIME);
        // No hot restart: its shared memory is not per namespace, and nothing restarts here.
        cmd.arg(envoy_binary())
            .arg("--config-path")
            .arg(&config)
            .args([
                "--disable-hot-restart",
                "--concurrency",
                "1",
                "--drain-time-s",
                "1",
            ])
            .args(["--log-level", "warning", "--log-path"])
            .arg(&log);
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
        if std::env::var_os("ECS_XDS_ENVOY_LOGS").is_none() {
            cmd.stderr(Stdio::null());
        }
        let mut envoy = NsEnvoy {
            process: NsProcess::spawn(cmd, "envoy"),
            admin,
            log,
            _dir: dir,
        };
        envoy.wait_ready(Duration::from_secs(30)).await;
        envoy
    }
}

impl NsEnvoy {
    /// Waits until `/ready` answers LIVE; panics with Envoy's log after `limit`.
    pub async fn wait_ready(&mut self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Ok(answer) = get(&self.admin, "/ready").await {
                if answer.trim() == "LIVE" {
                    return;
                }
            }
            if tokio::time::Instant::now() > deadline || self.process.has_exited() {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                panic!("Envoy in a test namespace never became ready; its log:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The admin API's answer to GET `path`.
    pub async fn admin_get(&self, path: &str) -> String {
        (get(&self.admin, path).await).unwrap_or_else(|e| panic!("Envoy admin GET {path}: {e}"))
    }

    /// The counter or gauge `name`, 0 when Envoy does not have it (yet).
    pub async fn stat(&self, name: &str) -> u64 {
        let stats = self.admin_get("/stats").await;
        let line = stats
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "));
        line.and_then(|v| v.trim().parse().ok()).unwrap_or(0)
    }

    pub async fn config_dump(&self) -> Value {
        serde_json::from_str(&self.admin_get("/config_dump").await).unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }
}

/// GET `uri` over HTTP/1.1 on the unix socket `socket` (Envoy's admin refuses HTTP/1.0).
async fn get(socket: &Path, uri: &str) -> Result<String, BoxError> {
    let stream = tokio::net::UnixStream::connect(socket).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = hyper::Request::get(uri)
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let body = response.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}
