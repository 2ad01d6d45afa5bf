//! xds-load: opens N ADS streams subscribed like Envoy sidecars, publishes one endpoint change,
//! and measures how long until every stream has it, plus the server's memory.
//!
//! ```text
//! cargo run --release --example xds-load -- --streams 10000 --mode sotw
//! cargo run --release --example xds-load -- --streams 1000 --mode delta --server 127.0.0.1:18000 --server-pid 1234
//! ```
//!
//! Without `--server`, the tool starts the server as a child process of itself (`--serve`),
//! so the server's RSS is measured alone, and drives the endpoint change through its stdin.
//! `--server-cmd "<command>"` starts another server in its place, speaking the same line
//! protocol on stdin/stdout (docs/benchmarks.md), so any xDS server wrapped in a small harness
//! is measured on exactly the same load.
//! It then measures the floor for the same push: the update encoded once and written to N
//! loopback sockets read by another process (`--sink`). The last line printed is the result:
//! `xds-load mode=sotw streams=N push_all_ms=... p50_ms=... p99_ms=... rss_mb=... rss_per_stream_kb=...`
//!
//! `--churn R --duration D` then soaks the server: R endpoint publishes a second for D, each
//! measured from the publish to every stream holding it, and the server's RSS before and after
//! (`xds-load churn ... p99_ms=... rss_change_pct=...`, see `xds-load/churn.rs`).

#[path = "xds-load/churn.rs"]
mod churn;
#[path = "xds-load/client.rs"]
mod client;
#[path = "xds-load/floor.rs"]
mod floor;
#[path = "../tests/support/proc.rs"]
mod proc_stats;
#[path = "xds-load/server.rs"]
mod server;

use proc_stats::{cpu_seconds, rss_kb};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{ChildStdin, ChildStdout, Command};

// The allocator the ecs-xds binary uses, so the server child's memory is the daemon's.
ecs_xds::use_jemalloc!();

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    Sotw,
    Delta,
}

#[derive(Debug, Parser)]
#[command(about = "Load-test an ecs-xds xDS server with N Envoy-like ADS streams")]
pub struct Args {
    /// Number of ADS streams (each its own HTTP/2 connection, like N Envoys).
    #[arg(long, default_value_t = 1000)]
    streams: usize,
    #[arg(long, value_enum, default_value_t = Mode::Sotw)]
    mode: Mode,
    /// Clusters each stream subscribes to over EDS.
    #[arg(long, default_value_t = 100)]
    clusters: usize,
    /// Endpoints per cluster.
    #[arg(long, default_value_t = 3)]
    endpoints: usize,
    /// Use a running server instead of starting one (no push is measured then).
    #[arg(long)]
    server: Option<SocketAddr>,
    /// The running server's pid, to read its RSS.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Start this command (run with `sh -c 'exec <command>'`) as the server child instead of
    /// ecs-xds's own, speaking the same stdin/stdout protocol (docs/benchmarks.md). It gets the
    /// load's shape in `XDS_LOAD_CLUSTERS`, `XDS_LOAD_ENDPOINTS` and `XDS_LOAD_NODE_TYPE`.
    #[arg(long, conflicts_with = "server")]
    server_cmd: Option<String>,
    /// Node id prefix: streams are `<prefix>-<i>`, so the node type is the prefix.
    #[arg(long, default_value = "sidecar")]
    node_type: String,
    /// The RDS route configuration each stream subscribes to.
    #[arg(long, default_value = "routes")]
    route_name: String,
    /// Streams state zones `us-east-1a`, `b`, ... in turn, this many (0: no zone), as Envoys of
    /// a zone-aware node type would.
    #[arg(long, default_value_t = 0)]
    zones: usize,
    /// Streams opened at once while connecting.
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// How long the streams stay idle before the server's memory is read: long enough for the
    /// allocator to return what the initial pushes freed (the daemon's jemalloc purges freed
    /// pages after about a second).
    #[arg(long, default_value_t = 3000)]
    idle_ms: u64,
    /// Churn soak: endpoint publishes per second, for `--duration`, after the single push.
    #[arg(long, default_value_t = 0)]
    churn: u32,
    /// How long the churn soak publishes.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Internal: run as the server child.
    #[arg(long, hide = true)]
    serve: bool,
    /// Internal: run as the floor-measurement sink child.
    #[arg(long, hide = true)]
    sink: bool,
}

fn main() {
    let args = Args::parse();
    raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if args.serve {
        runtime.block_on(server::serve(
            args.clusters,
            args.endpoints,
            &args.node_type,
        ));
    } else if args.sink {
        runtime.block_on(floor::sink(args.streams));
    } else {
        runtime.block_on(run(args));
    }
}

/// 10,000 streams need more descriptors than the usual soft limit of 1,024.
fn raise_fd_limit() {
    let (_, hard) = rlimit::Resource::NOFILE.get().expect("read RLIMIT_NOFILE");
    rlimit::Resource::NOFILE
        .set(hard, hard)
        .expect("raise RLIMIT_NOFILE");
}

/// A child process of this tool, talked to line by line.
pub struct Child {
    process: tokio::process::Child,
    stdin: ChildStdin,
    stdout: tokio::io::Lines<BufReader<ChildStdout>>,
}

impl Child {
    /// This tool again, in `role` (`--serve` or `--sink`).
    async fn spawn(role: &str, args: &Args) -> Child {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .arg(role)
            .args(["--streams", &args.streams.to_string()])
            .args(["--clusters", &args.clusters.to_string()])
            .args(["--endpoints", &args.endpoints.to_string()])
            .args(["--node-type", &args.node_type]);
        Child::start(command)
    }

    /// Another server, started from a shell command line; `exec` makes its pid the server's.
    async fn spawn_command(line: &str, args: &Args) -> Child {
        let mut command = Command::new("sh");
        command
            .args(["-c", &format!("exec {line}")])
            .env("XDS_LOAD_CLUSTERS", args.clusters.to_string())
            .env("XDS_LOAD_ENDPOINTS", args.endpoints.to_string())
            .env("XDS_LOAD_NODE_TYPE", &args.node_type);
        Child::start(command)
    }

    fn start(mut command: Command) -> Child {
        let mut process = command
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn child");
        let stdin = process.stdin.take().unwrap();
        let stdout = BufReader::new(process.stdout.take().unwrap()).lines();
        Child {
            process,
            stdin,
            stdout,
        }
    }

    async fn line(&mut self) -> String {
        self.stdout
            .next_line()
            .await
            .unwrap()
            .expect("child exited early")
    }

    async fn say(&mut self, line: &str) {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        self.stdin.flush().await.unwrap();
    }

    /// The server child's live heap, in KiB, if it can tell (it answers `na` otherwise).
    async fn heap_kb(&mut self) -> Option<u64> {
        self.say("heap").await;
        self.line()
            .await
            .trim()
            .parse::<u64>()
            .ok()
            .map(|b| b / 1024)
    }

    fn pid(&self) -> u32 {
        self.process.id().unwrap()
    }
}

async fn run(args: Args) {
    let mut child = match (&args.server, &args.server_cmd) {
        (Some(_), _) => None,
        (None, Some(line)) => Some(Child::spawn_command(line, &args).await),
        (None, None) => Some(Child::spawn("--serve", &args).await),
    };
    let (addr, pid) = match (&mut child, args.server) {
        (Some(child), _) => {
            let addr = child.line().await.parse().expect("server address");
            (addr, Some(child.pid()))
        }
        (None, Some(addr)) => (addr, args.server_pid),
        (None, None) => unreachable!(),
    };
    // The same settling time before the first reading: the server's start-up garbage must not
    // count against the streams when the allocator returns it during their idle time.
    tokio::time::sleep(Duration::from_millis(args.idle_ms)).await;
    let rss_before = pid.map(rss_kb).unwrap_or(0);
    let heap_before = match &mut child {
        Some(child) => child.heap_kb().await,
        None => None,
    };

    let cpu_start = pid.map(cpu_seconds);
    let started = Instant::now();
    let fleet = client::Fleet::connect(&args, addr).await;
    eprintln!(
        "xds-load: {} streams connected and subscribed in {} ms",
        args.streams,
        started.elapsed().as_millis()
    );
    tokio::time::sleep(Duration::from_millis(args.idle_ms)).await;
    let rss_idle = pid.map(rss_kb).unwrap_or(0);
    let heap_idle = match &mut child {
        Some(child) => child.heap_kb().await,
        None => None,
    };
    let cpu_connected = pid.map(cpu_seconds);

    let latencies = match &mut child {
        Some(child) => {
            fleet.arm(Instant::now());
            child.say("publish").await;
            let version = child.line().await;
            eprintln!("xds-load: published EDS version {version}");
            Some(fleet.wait_all(Duration::from_secs(60)).await)
        }
        None => None,
    };
    let rss_after = pid.map(rss_kb).unwrap_or(0);
    let cpu_pushed = pid.map(cpu_seconds);
    if let (Some(child), true) = (&mut child, args.churn > 0) {
        soak(&args, child, &fleet, pid.unwrap()).await;
    }
    let update_len = fleet.last_eds_len();
    drop(fleet);
    drop(child);

    let (push_all, p50, p99) = match &latencies {
        Some(l) => (
            fmt_ms(*l.last().unwrap()),
            fmt_ms(percentile(l, 50)),
            fmt_ms(percentile(l, 99)),
        ),
        None => ("na".into(), "na".into(), "na".into()),
    };
    // Server CPU time (user + system) for connecting and subscribing every stream (idle time
    // included), and for the one push.
    let cpu = |from: Option<f64>, to: Option<f64>| match (from, to) {
        (Some(from), Some(to)) => format!("{:.2}", to - from),
        _ => "na".into(),
    };
    let (cpu_connect, cpu_push) = (
        cpu(cpu_start, cpu_connected),
        cpu(cpu_connected, cpu_pushed),
    );
    if args.server.is_none() {
        let floor = floor::measure(&args).await;
        println!(
            "xds-load floor streams={} update_bytes={update_len} floor_update_bytes={} encode_us={} push_floor_ms={}",
            args.streams,
            floor.bytes,
            floor.encode.as_micros(),
            fmt_ms(floor.total)
        );
    }
    let per_stream = rss_idle.saturating_sub(rss_before) as f64 / args.streams as f64;
    // Live heap (bytes allocated and not freed), which RSS exceeds by what the allocator
    // keeps around and falls short of by pages allocated but never touched.
    let heap_per_stream = match (heap_before, heap_idle) {
        (Some(before), Some(idle)) => {
            format!(
                "{:.1}",
                idle.saturating_sub(before) as f64 / args.streams as f64
            )
        }
        _ => "na".into(),
    };
    println!(
        "xds-load mode={} streams={} push_all_ms={push_all} p50_ms={p50} p99_ms={p99} rss_mb={:.1} rss_per_stream_kb={per_stream:.1} heap_per_stream_kb={heap_per_stream} rss_after_push_mb={:.1} cpu_connect_s={cpu_connect} cpu_push_s={cpu_push}",
        match args.mode {
            Mode::Sotw => "sotw",
            Mode::Delta => "delta",
        },
        args.streams,
        rss_idle as f64 / 1024.0,
        rss_after as f64 / 1024.0,
    );
}

/// The churn soak: `--churn` publishes a second for `--duration`, then the latency and memory
/// figures (`xds-load churn ...`).
async fn soak(args: &Args, child: &mut Child, fleet: &client::Fleet, pid: u32) {
    let generations = (args.churn as f64 * args.duration.as_secs_f64()).ceil() as usize;
    assert!(
        generations + 2 < 57_000,
        "generations move a port up from 8000"
    );
    let shared = fleet.shared();
    let _ = shared.churn.set(churn::Churn::new(generations + 1));
    let churn = shared.churn.get().unwrap();
    // Settled (the single push's garbage returned) before the first reading.
    tokio::time::sleep(Duration::from_millis(args.idle_ms)).await;
    let rss_start = rss_kb(pid);
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(args.churn)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Generation 1 was the single measured push.
    for g in 2..(2 + generations) as u16 {
        tick.tick().await;
        churn.publishing(g);
        child.say("publish").await;
        child.line().await;
    }
    let publishing = started.elapsed();
    // Every stream holds the last generation: every publish was answered on every stream.
    let want = (generations as u64 + 1) * args.streams as u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    while shared
        .generations
        .load(std::sync::atomic::Ordering::Relaxed)
        < want
    {
        assert!(
            Instant::now() < deadline,
            "streams did not all catch up within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(args.idle_ms)).await;
    let rss_end = rss_kb(pid);
    let (samples, p50, p99, max) = churn.summary();
    println!(
        "xds-load churn mode={} streams={} publishes_per_s={} duration_s={:.0} publishes={generations} samples={samples} p50_ms={} p99_ms={} max_ms={} rss_start_mb={:.1} rss_end_mb={:.1} rss_change_pct={:.1}",
        match args.mode {
            Mode::Sotw => "sotw",
            Mode::Delta => "delta",
        },
        args.streams,
        args.churn,
        publishing.as_secs_f64(),
        p50.as_millis(),
        p99.as_millis(),
        max.as_millis(),
        rss_start as f64 / 1024.0,
        rss_end as f64 / 1024.0,
        (rss_end as f64 - rss_start as f64) / rss_start as f64 * 100.0,
    );
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    let i = (sorted.len() * p).div_ceil(100).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn fmt_ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// Shared between the fleet's stream tasks.
pub struct Shared {
    pub armed_at: std::sync::OnceLock<Instant>,
    pub latencies: std::sync::Mutex<Vec<Duration>>,
    pub ready: tokio::sync::Semaphore,
    pub done: tokio::sync::Notify,
    pub last_eds_len: std::sync::atomic::AtomicUsize,
    /// Set for the churn soak.
    pub churn: std::sync::OnceLock<churn::Churn>,
    /// Generations received, over every stream (churn soak).
    pub generations: std::sync::atomic::AtomicU64,
}

pub type SharedRef = Arc<Shared>;
