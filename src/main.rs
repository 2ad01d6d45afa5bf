//! The `ecs-xds` command line: parses flags, sets up logging, and hands over to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use ecs_xds::settings::Settings;

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

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
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

/// Exit codes, one per kind of failure.
const EXIT_AWS: u8 = 1;
const EXIT_SETTINGS: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match cli.command {
        Command::Discover { config, json } => runtime.block_on(discover(&config, json)),
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

async fn discover(config: &std::path::Path, json: bool) -> ExitCode {
    let settings = match Settings::load(config) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("ecs-xds: {e}");
            return ExitCode::from(EXIT_SETTINGS);
        }
    };
    match ecs_xds::discover::discover_once(&settings.discover()).await {
        Ok(inventory) if json => {
            let text = serde_json::to_string_pretty(&inventory).expect("inventory serializes");
            println!("{text}");
            ExitCode::SUCCESS
        }
        Ok(inventory) => {
            print!("{}", inventory.to_table());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ecs-xds: discovery failed: {e}");
            ExitCode::from(EXIT_AWS)
        }
    }
}
