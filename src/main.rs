//! The `ecs-xds` command line: parses flags, sets up logging, and hands over to [`cli`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use ecs_xds::cli;

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

impl From<Format> for cli::Format {
    fn from(format: Format) -> cli::Format {
        match format {
            Format::Json => cli::Format::Json,
            Format::Yaml => cli::Format::Yaml,
        }
    }
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
    /// templates, 4 when Envoy rejects what a node type would be served, 5 when Envoy crashed
    /// checking it.
    Validate {
        /// The settings file.
        #[arg(long, default_value = "config/ecs-xds.toml")]
        config: PathBuf,
        /// An Envoy binary to run `--mode validate` with, once per node type.
        #[arg(long)]
        envoy: Option<PathBuf>,
        /// The sidecar's bootstrap (YAML or JSON) the node types are checked in; default:
        /// deploy/ecs/envoy-bootstrap.yaml, built in. Its dynamic_resources are left out.
        #[arg(long, requires = "envoy")]
        bootstrap: Option<PathBuf>,
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
        Command::Run { config, inventory } => {
            runtime.block_on(cli::run(&config, inventory.as_deref()))
        }
        Command::Discover { config, json } => runtime.block_on(cli::discover(&config, json)),
        Command::Validate {
            config,
            envoy,
            bootstrap,
            inventory,
        } => runtime.block_on(cli::validate(cli::Validate {
            config: &config,
            envoy: envoy.as_deref(),
            bootstrap: bootstrap.as_deref(),
            inventory: inventory.as_deref(),
        })),
        Command::Render {
            config,
            node_type,
            service,
            inventory,
            format,
        } => runtime.block_on(cli::render(
            &config,
            (&node_type, service.as_deref()),
            inventory.as_deref(),
            format.into(),
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
