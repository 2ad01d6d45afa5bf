//! `ecs-xds run`: the daemon, with the process's signals: SIGTERM or SIGINT stop it cleanly,
//! SIGHUP reloads the templates.

use std::path::Path;

use tokio::signal::unix::{signal, SignalKind};

use super::CommandError;
use crate::daemon::Daemon;
use crate::inventory::Inventory;

/// Runs `config`'s daemon (serving the saved inventory `saved`, if given, and each change to
/// it, instead of polling AWS) until SIGTERM or SIGINT.
pub async fn run(config: &Path, saved: Option<&Path>) -> Result<(), CommandError> {
    let inventory = saved.map(Inventory::read_file).transpose()?;
    let mut daemon = Daemon::start(super::load(config)?, inventory).await?;
    if let Some(file) = saved {
        daemon = daemon.follow_inventory_file(file.to_owned());
    }
    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
    let mut hangups = signal(SignalKind::hangup()).expect("SIGHUP handler");
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading templates");
            let _ = reload_tx.try_send(());
        }
    });
    Ok(daemon.run(reload_rx, terminated()).await?)
}

/// Resolves on SIGTERM (ECS stopping the task) or SIGINT.
pub(super) async fn terminated() {
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
    }
}
