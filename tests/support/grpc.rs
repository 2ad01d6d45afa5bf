//! Real proxyless gRPC clients and servers: grpcio (PyPI) through `tests/support/grpc/peer.py`,
//! and grpc-js with `@grpc/grpc-js-xds` (npm) through `tests/support/grpc/client.js`, both
//! installed by `scripts/setup-test-env.sh`. Every process is killed when its handle drops.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use ecs_xds::agent::files;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use super::moto::{repo_root, venv_python};

/// A gRPC client bootstrap (`GRPC_XDS_BOOTSTRAP_CONFIG`) for ADS to `xds` as `node_id`.
pub fn bootstrap(xds: SocketAddr, node_id: &str) -> String {
    json!({
        "xds_servers": [{
            "server_uri": xds.to_string(),
            "channel_creds": [{ "type": "insecure" }],
            "server_features": ["xds_v3"]
        }],
        // grpc-js requires a locality, even an empty one.
        "node": { "id": node_id, "cluster": "ecs-xds-test", "locality": {} }
    })
    .to_string()
}

/// `bootstrap` with the certificate provider instance `instance`: a `file_watcher` over the
/// agent's files in `dir`, as a client's TLS contexts (gRFC A29) name it.
pub fn with_certificate_provider(bootstrap: &str, instance: &str, dir: &Path) -> String {
    let mut config: serde_json::Value = serde_json::from_str(bootstrap).unwrap();
    let file = |name: &str| dir.join(name).display().to_string();
    config["certificate_providers"] = json!({
        instance: {
            "plugin_name": "file_watcher",
            "config": {
                "certificate_file": file(files::CERT),
                "private_key_file": file(files::KEY),
                "ca_certificate_file": file(files::BUNDLE),
                "refresh_interval": "10s"
            }
        }
    });
    config.to_string()
}

fn peer(args: &[&str]) -> Command {
    let mut command = Command::new(venv_python());
    command
        .arg(repo_root().join("tests/support/grpc/peer.py"))
        .args(args)
        // No proxy, ever: every address here is 127.0.0.1.
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env_remove("grpc_proxy")
        .kill_on_drop(true);
    command
}

/// A grpcio server on 127.0.0.1 answering every call with its name.
pub struct GrpcServer {
    pub addr: SocketAddr,
    _child: Child,
    _stdin: ChildStdin,
}

impl GrpcServer {
    pub async fn start(name: &str) -> GrpcServer {
        GrpcServer::start_with(&["server", name]).await
    }

    /// A server that takes only TLS with the agent's files in `dir` (a client certificate of
    /// the bundle's CA required) and answers `<name> to <the client's SPIFFE ID>`.
    pub async fn start_tls(name: &str, dir: &Path) -> GrpcServer {
        GrpcServer::start_with(&["server", name, &dir.display().to_string()]).await
    }

    /// An xDS-enabled server on `address` whose bootstrap (`GRPC_XDS_BOOTSTRAP_CONFIG`) is
    /// `bootstrap`: it serves once the control plane gives it its listener.
    pub async fn start_xds(name: &str, address: SocketAddr, bootstrap: &str) -> GrpcServer {
        let mut command = peer(&["xds-server", name, &address.to_string()]);
        command.env("GRPC_XDS_BOOTSTRAP_CONFIG", bootstrap);
        GrpcServer::start_command(command).await
    }

    async fn start_with(args: &[&str]) -> GrpcServer {
        GrpcServer::start_command(peer(args)).await
    }

    async fn start_command(mut command: Command) -> GrpcServer {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the grpcio server");
        let stdin = child.stdin.take().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let port = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("the grpcio server reports its port")
            .unwrap()
            .expect("a port line");
        GrpcServer {
            addr: format!("127.0.0.1:{}", port.trim()).parse().unwrap(),
            _child: child,
            _stdin: stdin,
        }
    }
}

/// `n` calls from a fresh grpcio client to `target`: each line `ok <reply>` or `error ...`.
pub async fn grpcio_calls(
    bootstrap: &str,
    target: &str,
    n: usize,
    env: &[(&str, &str)],
) -> Vec<String> {
    let mut command = peer(&["calls", target, &n.to_string()]);
    command.env("GRPC_XDS_BOOTSTRAP_CONFIG", bootstrap);
    for (k, v) in env {
        command.env(k, v);
    }
    output_lines(command).await
}

/// [`grpcio_calls`] over xDS credentials (`grpc.xds_channel_credentials`, insecure fallback):
/// TLS where the cluster says so, with the bootstrap's certificate providers.
pub async fn grpcio_xds_calls(bootstrap: &str, target: &str, n: usize) -> Vec<String> {
    let mut command = peer(&["calls", target, &n.to_string(), "xds"]);
    command.env("GRPC_XDS_BOOTSTRAP_CONFIG", bootstrap);
    output_lines(command).await
}

/// `n` calls from a fresh grpc-js client to `target`.
pub async fn grpc_js_calls(bootstrap: &str, target: &str, n: usize) -> Vec<String> {
    let mut command = Command::new("node");
    command
        .arg(repo_root().join("tests/support/grpc/client.js"))
        .args([target, &n.to_string()])
        .env("NODE_PATH", repo_root().join(".venv/node/node_modules"))
        .env("GRPC_XDS_BOOTSTRAP_CONFIG", bootstrap)
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env_remove("grpc_proxy")
        .kill_on_drop(true);
    output_lines(command).await
}

async fn output_lines(mut command: Command) -> Vec<String> {
    let out = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("the gRPC client finishes within 60 s")
        .expect("run the gRPC client");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "gRPC client failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.lines().map(str::to_owned).collect()
}

/// A grpcio client calling `target` every 50 ms for as long as it lives.
pub struct CallLoop {
    lines: Lines<BufReader<ChildStdout>>,
    _child: Child,
    _stdin: ChildStdin,
}

impl CallLoop {
    pub fn start(bootstrap: &str, target: &str) -> CallLoop {
        let mut child = peer(&["loop", target])
            .env("GRPC_XDS_BOOTSTRAP_CONFIG", bootstrap)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the grpcio call loop");
        CallLoop {
            _stdin: child.stdin.take().unwrap(),
            lines: BufReader::new(child.stdout.take().unwrap()).lines(),
            _child: child,
        }
    }

    /// Reads answers until one equals `want`; panics after `limit`. Returns what came before.
    pub async fn until(&mut self, want: &str, limit: Duration) -> Vec<String> {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("no {want:?} within {limit:?}; saw {seen:?}"))
                .unwrap()
                .expect("the call loop ended");
            if line == want {
                return seen;
            }
            seen.push(line);
        }
    }
}
