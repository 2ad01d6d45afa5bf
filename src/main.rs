//! The `ecs-xds` command line: parses flags, sets up logging, and hands over to the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use ecs_xds::daemon::{Daemon, DaemonError};
use ecs_xds::inventory::Inventory;
use ecs_xds::settings::Settings;

ecs_xds::use_jemalloc!();

/// ecs-xds: an xDS control plane that makes Envoy a service mesh on AWS ECS.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Log line format (the level comes from RUST_LOG, default `info`).
    #[arg(long, value_enum, global = true, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Json,
    Yaml,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the control plane: discovery, synthesis and the xDS server, until SIGTERM or SIGINT.
    /// SIGHUP reloads the templates.
    Run {
        /// The settings file.
        #[arg(long, default_value = "config/ecs-xds.toml")]
        config: PathBuf,
        /// Serve a saved inventory (`ecs-xds discover --json`) instead of polling AWS.
        #[arg(long)]
        inventory: Option<PathBuf>,
    },
    /// Check the settings and templates; with --envoy, have a real Envoy check what each node
    /// type would be served. Exits 0 when everything is valid, 2 for invalid settings or
    /// templates, 4 when Envoy rejects what a node type would be served.
    Validate {
        /// The settings file.
        #[arg(long, default_value = "config/ecs-xds.toml")]
        config: PathBuf,
        /// An Envoy binary to run `--mode validate` with, once per node type.
        #[arg(long)]
        envoy: Option<PathBuf>,
        /// A saved inventory (`ecs-xds discover --json`) to synthesize with; default: none.
        #[arg(long)]
        inventory: Option<PathBuf>,
    },
    /// Print exactly what a node type would be served, as Envoy JSON.
    Render {
        /// The settings file.
        #[arg(long, default_value = "config/ecs-xds.toml")]
        config: PathBuf,
        /// The node type (a template file name without `.toml`).
        #[arg(long)]
        node_type: String,
        /// What the sidecar of this service gets (its `node.cluster`): only its declared
        /// backends, if it declares them.
        #[arg(long)]
        service: Option<String>,
        /// A saved inventory (`ecs-xds discover --json`) instead of live discovery.
        #[arg(long)]
        inventory: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Json)]
        format: Format,
    },
    /// Poll AWS once and print the inventory: every cluster with its endpoints and health.
    Discover {
        /// The settings file.
        #[arg(long, default_value = "config/ecs-xds.toml")]
        config: PathBuf,
        /// Print the inventory as JSON (the format `render --inventory` reads) instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let done = match cli.command {
        Command::Run { config, inventory } => runtime.block_on(run(&config, inventory.as_deref())),
        Command::Discover { config, json } => runtime.block_on(discover(&config, json)),
        Command::Validate {
            config,
            envoy,
            inventory,
        } => runtime.block_on(validate(&config, envoy.as_deref(), inventory.as_deref())),
        Command::Render {
            config,
            node_type,
            service,
            inventory,
            format,
        } => runtime.block_on(render(
            &config,
            (&node_type, service.as_deref()),
            inventory.as_deref(),
            format,
        )),
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ecs-xds: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn discover(config: &Path, json: bool) -> Result<(), DaemonError> {
    let settings = Settings::load(config)?;
    let inventory = ecs_xds::discover::discover_once(&settings.discover()).await?;
    match json {
        true => {
            let text = serde_json::to_string_pretty(&inventory).expect("inventory serializes");
            println!("{text}");
        }
        false => print!("{}", inventory.to_table()),
    }
    Ok(())
}

async fn run(config: &Path, saved: Option<&Path>) -> Result<(), DaemonError> {
    use tokio::signal::unix::{signal, SignalKind};
    let inventory = saved.map(Inventory::read_file).transpose()?;
    let daemon = Daemon::start(config, inventory).await?;
    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
    let mut hangups = signal(SignalKind::hangup()).expect("SIGHUP handler");
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading templates");
            let _ = reload_tx.try_send(());
        }
    });
    let shutdown = async {
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        }
    };
    daemon.run(reload_rx, shutdown).await
}

async fn render(
    config: &Path,
    (node_type, service): (&str, Option<&str>),
    saved: Option<&Path>,
    format: Format,
) -> Result<(), DaemonError> {
    let (settings, templates, _) = ecs_xds::daemon::load(config)?;
    let inventory = match saved {
        Some(path) => Inventory::read_file(path)?,
        None => ecs_xds::discover::discover_once(&settings.discover()).await?,
    };
    let synthesis = ecs_xds::synthesize::synthesize(&inventory, &templates);
    for finding in &synthesis.findings {
        eprintln!("warning: {finding}");
    }
    let Some((snapshot, set)) = synthesis.snapshot_of_service(node_type, service.unwrap_or(""))
    else {
        return Err(DaemonError::UnknownNodeType {
            node_type: node_type.to_owned(),
            known: templates.node_types().map(str::to_owned).collect(),
        });
    };
    if let Some(service) = service {
        match set {
            Some(set) => eprintln!("service {service:?} declares its backends: {set:?}"),
            None => eprintln!(
                "service {service:?} declares no backends (or is not discovered): it gets node type {node_type:?}'s whole scope"
            ),
        }
    }
    let rendered = snapshot.to_envoy_json();
    let text = match format {
        Format::Json => serde_json::to_string_pretty(&rendered).expect("JSON values print"),
        Format::Yaml => serde_yaml_ng::to_string(&rendered).expect("JSON values print as YAML"),
    };
    println!("{}", text.trim_end());
    Ok(())
}

async fn validate(
    config: &Path,
    envoy: Option<&Path>,
    saved: Option<&Path>,
) -> Result<(), DaemonError> {
    let (_, templates, _) = ecs_xds::daemon::load(config)?;
    let inventory = saved
        .map(Inventory::read_file)
        .transpose()?
        .unwrap_or_default();
    let synthesis = ecs_xds::synthesize::synthesize(&inventory, &templates);
    for finding in &synthesis.findings {
        println!("warning: {finding}");
    }
    let mut rejected = Vec::new();
    for (node_type, snapshot) in &synthesis.snapshots {
        // Each backend set's snapshot too: its own generated routes (503 hosts included).
        let sets = synthesis.backend_sets.get(node_type).into_iter();
        let sets = sets
            .flat_map(|s| &s.sets)
            .map(|(key, set)| (key, &set.snapshot));
        let Some(envoy) = envoy else {
            println!("node type {node_type}: valid");
            continue;
        };
        let mut accepted = envoy_accepts(envoy, &format!("node type {node_type}"), snapshot).await;
        for (key, snapshot) in sets {
            let label = format!("node type {node_type}, backends {key:?}");
            accepted &= envoy_accepts(envoy, &label, snapshot).await;
        }
        if !accepted {
            rejected.push(node_type.clone());
        }
    }
    match rejected.is_empty() {
        true => Ok(()),
        false => Err(DaemonError::EnvoyRejected(rejected)),
    }
}

/// Has `envoy --mode validate` check `snapshot`, and says what it found about `label`.
async fn envoy_accepts(envoy: &Path, label: &str, snapshot: &ecs_xds::snapshot::Snapshot) -> bool {
    let bootstrap = ecs_xds::validate::static_bootstrap(snapshot);
    let grpc_only = match ecs_xds::validate::api_listeners(snapshot) {
        0 => String::new(),
        n => format!(
            " (but its {n} API listeners, which are for proxyless gRPC clients: the Envoy server has no API listener)"
        ),
    };
    match ecs_xds::validate::envoy_validate(envoy, &bootstrap).await {
        Ok(()) => {
            let envoy = envoy.display();
            println!("{label}: valid, and Envoy ({envoy}) accepts it{grpc_only}");
            true
        }
        Err(e) => {
            println!("{label}: Envoy rejects it:\n{e}");
            false
        }
    }
}
