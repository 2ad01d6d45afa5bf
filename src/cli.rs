//! The commands of the `ecs-xds` binary, one file each; `main.rs` only parses the flags.
//!
//! - [`run()`]: the daemon until SIGTERM or SIGINT (SIGHUP reloads the templates);
//! - [`validate()`]: the settings and templates, and with `--envoy` what a real Envoy says of
//!   what each node type would be served;
//! - [`render()`]: exactly what a node type (or one service's sidecar) would be served;
//! - [`discover()`]: one poll of AWS, as a table or the inventory JSON;
//! - [`agent()`]: the identity sidecar of an app task ([`agent_check()`], its health check);
//! - [`ca_init()`]: a root and an intermediate CA for a first try.
//!
//! Every failure is a [`CommandError`] with its own exit code ([`exit_code`]), so an operator
//! (or ECS's stopped reason) tells them apart.

use std::path::{Path, PathBuf};

use crate::daemon::{DaemonError, Loaded};
use crate::discover::DiscoverError;
use crate::inventory::InventoryFileError;
use crate::problem::Problems;
use crate::settings::{Settings, SettingsError};

mod agent;
mod ca;
mod discover;
mod render;
mod run;
mod validate;

pub use agent::{agent, agent_check, AgentFlags};
pub use ca::ca_init;
pub use discover::{discover, inventory_table};
pub use render::{render, Format};
pub use run::run;
pub use validate::{validate, Validate};

/// Why a command could not do its job.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("templates in {dir}:\n{source}")]
    Templates {
        dir: PathBuf,
        #[source]
        source: Problems,
    },
    /// A saved inventory given with `--inventory`.
    #[error(transparent)]
    InventoryFile(#[from] InventoryFileError),
    /// AWS could not be reached or answered with an error (`discover`, `render`).
    #[error(transparent)]
    Discover(#[from] DiscoverError),
    /// `render --node-type` names a node type with no templates.
    #[error("no templates for node type {node_type:?}; node types: {known:?}")]
    UnknownNodeType {
        node_type: String,
        known: Vec<String>,
    },
    /// `validate --envoy`: Envoy rejects (or crashes on) what these node types would be served.
    #[error("Envoy rejects what node type(s) {0:?} would be served")]
    EnvoyRejected(Vec<String>),
    /// `validate --envoy`: Envoy crashed (died of a signal) checking these node types.
    #[error("Envoy crashed checking what node type(s) {0:?} would be served")]
    EnvoyCrashed(Vec<String>),
    /// `validate --bootstrap`: the sidecar bootstrap given could not be read.
    #[error("cannot use {path} as the sidecar's bootstrap: {message}")]
    Bootstrap { path: PathBuf, message: String },
    /// `agent`: its flags or trust bundle are unusable.
    #[error("agent: {0}")]
    AgentInput(String),
    /// `agent`: it stopped for good, or `--check` found no valid certificate.
    #[error("agent: {0}")]
    Agent(String),
    /// `ca init` could not write the CA.
    #[error("ca init in {dir}: {message}")]
    CaInit { dir: PathBuf, message: String },
    /// `run`: the daemon could not start, or a stage ended.
    #[error(transparent)]
    Daemon(#[from] DaemonError),
}

/// The exit codes, one per kind of failure (the README has the table). 0 is success; a stage
/// of `run` that ends unexpectedly exits with its own code, 10 and up (`daemon::Stage`).
pub mod exit_code {
    /// AWS failed (discovery, or `run`'s AWS client).
    pub const AWS: u8 = 1;
    /// Invalid input: settings, templates, a saved inventory, the push state, flags.
    pub const INPUT: u8 = 2;
    /// A listener could not be bound.
    pub const LISTEN: u8 = 3;
    /// `validate --envoy`: Envoy rejects the config.
    pub const ENVOY_REJECTED: u8 = 4;
    /// `validate --envoy`: Envoy crashed checking the config (a fault of Envoy's).
    pub const ENVOY_CRASHED: u8 = 5;
    /// `agent`: no valid certificate (`--check`), or the agent cannot go on.
    pub const IDENTITY: u8 = 6;
}

impl CommandError {
    /// The process exit code for this failure. No catch-all: a new variant must choose.
    pub fn exit_code(&self) -> u8 {
        match self {
            CommandError::Discover(_) => exit_code::AWS,
            CommandError::Settings(_)
            | CommandError::Templates { .. }
            | CommandError::InventoryFile(_)
            | CommandError::UnknownNodeType { .. }
            | CommandError::Bootstrap { .. }
            | CommandError::AgentInput(_)
            | CommandError::CaInit { .. } => exit_code::INPUT,
            CommandError::Agent(_) => exit_code::IDENTITY,
            CommandError::EnvoyRejected(_) => exit_code::ENVOY_REJECTED,
            CommandError::EnvoyCrashed(_) => exit_code::ENVOY_CRASHED,
            CommandError::Daemon(e) => match e {
                DaemonError::Discover(_) | DaemonError::Aws(_) => exit_code::AWS,
                DaemonError::PushToken(_) | DaemonError::PushState(_) => exit_code::INPUT,
                DaemonError::Bind { .. } => exit_code::LISTEN,
                DaemonError::Ca { .. } => exit_code::INPUT,
                DaemonError::StageEnded { stage, .. } => stage.exit_code(),
            },
        }
    }
}

/// Loads the settings and templates of `config`: what `run`, `validate` and `render` start from.
pub fn load(config: &Path) -> Result<Loaded, CommandError> {
    let settings = Settings::load(config)?;
    let templates_dir = settings.templates_path(config);
    let templates = crate::daemon::load_templates(&settings, &templates_dir).map_err(|source| {
        CommandError::Templates {
            dir: templates_dir.clone(),
            source,
        }
    })?;
    Ok(Loaded {
        config: config.to_owned(),
        settings,
        templates,
        templates_dir,
    })
}
