//! The real `ecs-xds run` binary as an operator runs it: exit codes, a stage that fails,
//! idle and slow connections, SIGTERM with connections open, and rename-style saves of the
//! settings file. Every daemon here serves a saved inventory (no AWS) and binds port 0.

use crate::support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::daemon::{ecs_xds_command, Running};
use support::http::{get, metric};
use support::settings::SettingsFile;

/// `settings`, an empty sidecar template and an empty saved inventory, in `dir`. Returns
/// (settings file, inventory file).
fn write_config(dir: &Path, settings: SettingsFile) -> (PathBuf, PathBuf) {
    let config = settings.write(dir);
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    std::fs::write(dir.join("templates/sidecar.toml"), "").unwrap();
    let inventory = dir.join("inventory.json");
    std::fs::write(&inventory, r#"{"clusters": {}}"#).unwrap();
    (config, inventory)
}

fn run_command(config: &Path, inventory: &Path) -> tokio::process::Command {
    let mut command = ecs_xds_command(config);
    command.arg("--inventory").arg(inventory);
    command
}

async fn start(config: &Path, inventory: &Path) -> Running {
    Running::start_command(run_command(config, inventory)).await
}

/// Runs `command` to its end (at most 30 s): (exit code, stderr).
async fn exit_of(mut command: tokio::process::Command) -> (Option<i32>, String) {
    command.stderr(std::process::Stdio::piped());
    let out = tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .expect("ecs-xds exits within 30 s")
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Reads until the peer closes; how long that took (panics after `limit`).
async fn closed_after(stream: &mut TcpStream, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(limit, stream.read(&mut buf)).await {
            Err(_) => panic!("still open after {limit:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_exit_2_and_a_port_in_use_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let (config, inventory) = write_config(
        dir.path(),
        SettingsFile::new().set("ecs", "poll_interval", 5),
    );
    let (code, stderr) = exit_of(run_command(&config, &inventory)).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("ecs.poll_interval") || stderr.contains("poll_interval"),
        "{stderr}"
    );

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let (config, inventory) = write_config(dir.path(), SettingsFile::new().xds_listen(addr));
    let (code, stderr) = exit_of(run_command(&config, &inventory)).await;
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains("xds.listen") && stderr.contains(&addr.to_string()),
        "{stderr}"
    );

    let (config, _) = write_config(dir.path(), SettingsFile::new());
    let (code, stderr) = exit_of(run_command(&config, &dir.path().join("missing.json"))).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("missing.json"), "{stderr}");
}

/// Each stage, made to panic as it starts (a debug-build test hook), ends the process with the
/// stage's own exit code and a message naming it; the other stages stop.
#[cfg(debug_assertions)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_that_ends_early_ends_the_process_with_its_exit_code_and_name() {
    let dir = tempfile::tempdir().unwrap();
    let (config, inventory) = write_config(dir.path(), SettingsFile::new());
    let runs = [
        ("discovery", 10),
        ("synthesis", 11),
        ("xds", 12),
        ("admin", 13),
        ("reload", 14),
    ]
    .map(|(stage, code)| {
        let mut command = run_command(&config, &inventory);
        command.env("ECS_XDS_TEST_FAIL_STAGE", stage);
        async move { (stage, code, exit_of(command).await) }
    });
    for (stage, want, (code, stderr)) in futures_join_all(runs).await {
        assert_eq!(code, Some(want), "{stage}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "stage {stage} ended unexpectedly: panicked: test fault"
            )),
            "{stage}: {stderr}"
        );
        assert!(stderr.contains("no longer ready"), "{stage}: {stderr}");
    }
}

/// Runs the futures concurrently, results in order.
async fn futures_join_all<F: std::future::Future>(futures: [F; 5]) -> Vec<F::Output> {
    let [a, b, c, d, e] = futures;
    let (a, b, c, d, e) = tokio::join!(a, b, c, d, e);
    vec![a, b, c, d, e]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_xds_connection_and_a_slow_admin_request_are_closed_by_their_deadlines() {
    let dir = tempfile::tempdir().unwrap();
    let settings = SettingsFile::new()
        .set("xds", "handshake_timeout", "1s")
        .set("admin", "header_read_timeout", "1s");
    let (config, inventory) = write_config(dir.path(), settings);
    let daemon = start(&config, &inventory).await;

    // Never sends the HTTP/2 preface.
    let mut xds = TcpStream::connect(daemon.xds).await.unwrap();
    // Sends half a request head, then nothing (a slowloris).
    let mut admin = TcpStream::connect(daemon.admin).await.unwrap();
    admin
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let (xds_closed, admin_closed) = tokio::join!(
        closed_after(&mut xds, Duration::from_secs(10)),
        closed_after(&mut admin, Duration::from_secs(10)),
    );
    for (what, took) in [("xds", xds_closed), ("admin", admin_closed)] {
        assert!(
            took >= Duration::from_millis(800) && took < Duration::from_secs(3),
            "{what} closed after {took:?}, deadline 1 s"
        );
    }
    let text = get(daemon.admin, "/metrics").await.1;
    for listener in ["xds", "admin"] {
        let line = format!("ecs_xds_connections_timed_out_total{{listener=\"{listener}\"}} ");
        assert_eq!(metric(&text, &line), Some(1.0), "{line} in\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_idle_connections_open_on_both_ports_exits_0_within_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    // Deadlines far off, so only shutdown can close these connections.
    let settings = SettingsFile::new()
        .set("", "shutdown_grace", "2s")
        .set("xds", "handshake_timeout", "60s")
        .set("admin", "header_read_timeout", "60s");
    let (config, inventory) = write_config(dir.path(), settings);
    let mut daemon = start(&config, &inventory).await;
    let _xds = TcpStream::connect(daemon.xds).await.unwrap();
    let mut admin = TcpStream::connect(daemon.admin).await.unwrap();
    admin.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    // Both connections are accepted and open.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    daemon.terminate();
    let status = tokio::time::timeout(Duration::from_secs(10), daemon.child.wait())
        .await
        .expect("ecs-xds exits after SIGTERM")
        .unwrap();
    let took = started.elapsed();
    assert!(status.success(), "{status}\n{}", daemon.log());
    assert!(
        took < Duration::from_millis(3500),
        "exited {took:?} after SIGTERM; grace 2 s\n{}",
        daemon.log()
    );
    assert!(
        daemon.log().contains("grace period over"),
        "{}",
        daemon.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_over_max_connections_is_closed_at_once_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let settings =
        SettingsFile::new()
            .set("xds", "max_connections", 1)
            .set("xds", "handshake_timeout", "60s");
    let (config, inventory) = write_config(dir.path(), settings);
    let daemon = start(&config, &inventory).await;
    let _first = TcpStream::connect(daemon.xds).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut second = TcpStream::connect(daemon.xds).await.unwrap();
    let took = closed_after(&mut second, Duration::from_secs(5)).await;
    assert!(took < Duration::from_secs(1), "closed after {took:?}");
    let text = get(daemon.admin, "/metrics").await.1;
    let refused = "ecs_xds_connections_refused_total{listener=\"xds\"} ";
    assert_eq!(metric(&text, refused), Some(1.0), "{text}");
    assert_eq!(
        metric(&text, "ecs_xds_connections{listener=\"xds\"} "),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_well_behaved_envoy_keeps_its_stream_past_the_handshake_deadline() {
    use support::envoy::{AdsMode, Envoy};
    let dir = tempfile::tempdir().unwrap();
    let settings = SettingsFile::new().set("xds", "handshake_timeout", "1s");
    let (config, inventory) = write_config(dir.path(), settings);
    let daemon = start(&config, &inventory).await;
    let envoy = Envoy::start("sidecar-app1", daemon.xds, AdsMode::Sotw).await;
    envoy
        .wait_for("connected", Duration::from_secs(10), || async {
            envoy.stat("control_plane.connected_state").await == 1
        })
        .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(envoy.stat("control_plane.connected_state").await, 1);
    let text = get(daemon.admin, "/metrics").await.1;
    let timed_out = "ecs_xds_connections_timed_out_total{listener=\"xds\"} ";
    assert_eq!(metric(&text, timed_out), Some(0.0), "{text}");
    assert_eq!(
        metric(&text, "ecs_xds_connections{listener=\"xds\"} "),
        Some(1.0),
        "{text}"
    );
    envoy.stop().await;
}

/// Editors and config tools save by writing a new file and renaming it over the old one; both
/// of two such saves are noticed (a watch on the file itself would miss the second).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_rename_style_saves_of_the_settings_file_are_both_noticed() {
    let dir = tempfile::tempdir().unwrap();
    let (config, inventory) = write_config(dir.path(), SettingsFile::new().poll_interval("5s"));
    let daemon = start(&config, &inventory).await;
    // The files are watched before the synthesis stage, which logs this line, runs.
    let started = Instant::now();
    while !daemon.log().contains("ecs-xds running") {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reloads_ok = "ecs_xds_template_reloads_total{outcome=\"ok\"} ";
    for (save, interval) in [(1.0, "6s"), (2.0, "7s")] {
        let temp = dir.path().join(".ecs-xds.toml.swp");
        let settings = SettingsFile::new().poll_interval(interval);
        std::fs::write(&temp, settings.text()).unwrap();
        std::fs::rename(&temp, &config).unwrap();
        let started = Instant::now();
        loop {
            let text = get(daemon.admin, "/metrics").await.1;
            if metric(&text, reloads_ok) == Some(save) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "save {save} not noticed:\n{text}\n{}",
                daemon.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert!(
        daemon.log().contains("sections=[\"ecs\"]"),
        "the changed section is named:\n{}",
        daemon.log()
    );
}
