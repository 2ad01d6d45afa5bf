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
        /// Serve a saved inventory (`ecs-xds discover --json`) instead of polling AWS, and each
        /// change to the file (a file that does not read keeps the last good one served).
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
    /// The identity sidecar of an app task: proves the task's ECS service with its task role,
    /// gets a certificate from ecs-xds and keeps it renewed in --out for Envoy.
    Agent {
        /// The identity endpoint, `https://HOST:PORT` (HOST a name in ecs-xds's certificate).
        #[arg(long, env = "ECS_XDS_IDENTITY_URL", required_unless_present = "check")]
        server: Option<String>,
        /// The server id ecs-xds expects (`identity.server_id`).
        #[arg(long, env = "ECS_XDS_SERVER_ID", required_unless_present = "check")]
        server_id: Option<String>,
        /// The trust bundle (PEM) itself, e.g. from an ECS secret.
        #[arg(long, env = "ECS_XDS_TRUST_BUNDLE", hide_env_values = true)]
        trust_bundle: Option<String>,
        /// A file holding the trust bundle (PEM).
        #[arg(long, env = "ECS_XDS_TRUST_BUNDLE_FILE")]
        trust_bundle_file: Option<PathBuf>,
        /// Where the certificate, key, bundle and Envoy's SDS files are written: the same path
        /// in the agent's and Envoy's containers.
        #[arg(long, default_value = "/certs")]
        out: PathBuf,
        /// The region whose STS the proof is signed for; default: AWS_REGION.
        #[arg(long)]
        sts_region: Option<String>,
        /// This task's ARN; default: from the ECS task metadata endpoint.
        #[arg(long, env = "ECS_XDS_TASK_ARN")]
        task_arn: Option<String>,
        /// Permission bits of the key file (octal): Envoy must be able to read it.
        #[arg(long, default_value = "600", value_parser = parse_mode)]
        key_mode: u32,
        /// Only check that --out holds a valid certificate with a tenth of its life left (a
        /// container health check); exits 0 if so, 6 if not.
        #[arg(long)]
        check: bool,
    },
    /// The identity CA.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
}

#[derive(Debug, Subcommand)]
enum CaCommand {
    /// Write a new root and an intermediate under it to --out, for a first try.
    Init {
        #[arg(long)]
        out: PathBuf,
        /// The SPIFFE trust domain (`identity.trust_domain`).
        #[arg(long)]
        trust_domain: String,
    },
}

fn parse_mode(text: &str) -> Result<u32, String> {
    u32::from_str_radix(text, 8).map_err(|e| format!("not an octal mode: {e}"))
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
        Command::Agent {
            check: true, out, ..
        } => cli::agent_check(&out),
        Command::Agent {
            server,
            server_id,
            trust_bundle,
            trust_bundle_file,
            out,
            sts_region,
            task_arn,
            key_mode,
            check: false,
        } => runtime.block_on(cli::agent(cli::AgentFlags {
            server: server.unwrap_or_default(),
            server_id: server_id.unwrap_or_default(),
            trust_bundle,
            trust_bundle_file,
            out_dir: out,
            sts_region,
            task_arn,
            key_mode,
        })),
        Command::Ca {
            command: CaCommand::Init { out, trust_domain },
        } => cli::ca_init(&out, &trust_domain),
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
