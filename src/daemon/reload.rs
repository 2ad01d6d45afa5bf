//! Reloads: what asks for one (SIGHUP, a change to the settings file or the templates
//! directory) and what one does (re-read both; keep the running templates unless every node
//! type's snapshot would be consistent with them).

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::Watcher;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::load_templates;
use crate::admin::ReloadErrorKind;
use crate::inventory::Inventory;
use crate::problem::Problems;
use crate::settings::{Settings, SettingsError};
use crate::snapshot::InconsistentSnapshot;
use crate::synthesize::{Synthesis, Synthesizer};

/// Why a reload kept the running templates.
#[derive(Debug, thiserror::Error)]
pub(super) enum ReloadError {
    #[error("settings reload failed; keeping the running settings: {0}")]
    Settings(#[source] SettingsError),
    #[error("template reload failed; keeping the running templates (in {dir}):\n{source}")]
    Templates {
        dir: PathBuf,
        #[source]
        source: Problems,
    },
    #[error(
        "template reload refused; keeping the running templates: node type {node_type}: {source}"
    )]
    Inconsistent {
        node_type: String,
        #[source]
        source: InconsistentSnapshot,
    },
}

impl ReloadError {
    /// The `reason` label it is counted under.
    pub fn reason(&self) -> ReloadErrorKind {
        match self {
            ReloadError::Settings(_) => ReloadErrorKind::Settings,
            ReloadError::Templates { .. } => ReloadErrorKind::Templates,
            ReloadError::Inconsistent { .. } => ReloadErrorKind::Inconsistent,
        }
    }
}

/// Re-reads the settings file and the templates.
pub(super) struct Reloader {
    config: PathBuf,
    /// The settings in effect: only the templates change without a restart.
    running: Settings,
    templates_dir: PathBuf,
}

impl Reloader {
    pub fn new(config: &Path, running: &Settings, templates_dir: &Path) -> Self {
        Reloader {
            config: config.to_owned(),
            running: running.clone(),
            templates_dir: templates_dir.to_owned(),
        }
    }

    pub fn templates_dir(&self) -> &Path {
        &self.templates_dir
    }

    /// Checks the settings file, then switches `synthesizer` to the re-read templates and
    /// synthesizes `inventory` (when there is one yet) with them. If a snapshot they give
    /// would be refused (with pushes, a template change can leave a pushed listener's route
    /// configuration missing), the running templates are put back: served as is, that node
    /// type would stop getting discovery updates until the next good reload.
    pub fn reload(
        &self,
        synthesizer: &mut Synthesizer,
        inventory: Option<&Inventory>,
    ) -> Result<Option<Synthesis>, ReloadError> {
        let settings = Settings::load(&self.config).map_err(ReloadError::Settings)?;
        let changed = self.running.changed_sections(&settings);
        if !changed.is_empty() {
            tracing::warn!(
                sections = ?changed,
                "the settings file changed; templates are reloaded now, the other settings apply at the next restart"
            );
        }
        let templates = load_templates(&self.running, &self.templates_dir).map_err(|source| {
            ReloadError::Templates {
                dir: self.templates_dir.clone(),
                source,
            }
        })?;
        let previous = synthesizer.set_templates(templates);
        let Some(inventory) = inventory else {
            return Ok(None);
        };
        let synthesis = synthesizer.synthesize(inventory);
        for (node_type, snapshot) in &synthesis.snapshots {
            if let Err(source) = snapshot.check_consistency() {
                synthesizer.set_templates(previous);
                let node_type = node_type.clone();
                return Err(ReloadError::Inconsistent { node_type, source });
            }
        }
        Ok(Some(synthesis))
    }
}

/// How long the watched files must stay quiet before a reload: editors and `cp` write a file
/// in several steps.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// The files whose changes ask for a reload: the settings file, and any file in the templates
/// directory.
///
/// Both are watched through their directory. A watch on the settings file itself would follow
/// its inode, and editors and config tools save by writing a new file and renaming it over the
/// old one: the watch would then be on a deleted file and miss every later edit.
pub(super) struct Watched {
    settings_dir: PathBuf,
    settings_name: std::ffi::OsString,
    templates_dir: PathBuf,
}

impl Watched {
    pub fn new(config: &Path, templates_dir: &Path) -> Self {
        let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_owned());
        let config = absolute(config);
        Watched {
            settings_dir: config.parent().map(Path::to_owned).unwrap_or_default(),
            settings_name: config.file_name().map(Into::into).unwrap_or_default(),
            templates_dir: absolute(templates_dir),
        }
    }

    /// Whether a change to `path` asks for a reload.
    fn concerns(&self, path: &Path) -> bool {
        let (dir, name) = (path.parent(), path.file_name());
        dir == Some(self.templates_dir.as_path())
            || (dir == Some(self.settings_dir.as_path())
                && name == Some(self.settings_name.as_os_str()))
    }

    /// Starts watching; each change that concerns us is sent on `changed`. Without a working
    /// watcher (logged), SIGHUP still reloads.
    fn start(self, changed: mpsc::UnboundedSender<()>) -> Option<notify::RecommendedWatcher> {
        let dirs = [self.settings_dir.clone(), self.templates_dir.clone()];
        let handler = move |event: notify::Result<notify::Event>| {
            if let Ok(event) = event {
                if !event.kind.is_access() && event.paths.iter().any(|p| self.concerns(p)) {
                    let _ = changed.send(());
                }
            }
        };
        let mut watcher = match notify::recommended_watcher(handler) {
            Ok(watcher) => watcher,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch files; reload with SIGHUP");
                return None;
            }
        };
        for dir in &dirs {
            if let Err(e) = watcher.watch(dir, notify::RecursiveMode::NonRecursive) {
                tracing::warn!(path = %dir.display(), error = %e, "cannot watch; reload with SIGHUP");
            }
        }
        Some(watcher)
    }
}

/// A started watch of the files (none when it could not start) and the changes it sends.
pub(super) type Watching = (
    Option<notify::RecommendedWatcher>,
    mpsc::UnboundedReceiver<()>,
);

impl Watched {
    /// Starts watching now, before any stage runs, so that a save right after startup is seen.
    pub(super) fn watch(self) -> Watching {
        let (changed, changes) = mpsc::unbounded_channel();
        (self.start(changed), changes)
    }
}

/// The reload stage: turns SIGHUPs (`signals`) and bursts of file changes into reload requests
/// on `reload`, until `stop`.
pub(super) async fn forward(
    (_watcher, mut changes): Watching,
    mut signals: mpsc::Receiver<()>,
    reload: mpsc::Sender<()>,
    stop: CancellationToken,
) {
    let mut signals_open = true;
    loop {
        tokio::select! {
            signal = signals.recv(), if signals_open => match signal {
                Some(()) => {
                    let _ = reload.try_send(());
                }
                // Whoever sent SIGHUPs is gone; file changes still reload.
                None => signals_open = false,
            },
            Some(()) = changes.recv() => {
                // Wait for the burst to end, then ask once.
                loop {
                    tokio::select! {
                        more = tokio::time::timeout(DEBOUNCE, changes.recv()) => match more {
                            Ok(Some(())) => continue,
                            Ok(None) | Err(_) => break,
                        },
                        _ = stop.cancelled() => return,
                    }
                }
                let _ = reload.try_send(());
            }
            _ = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_settings_file_and_the_templates_directory_concern_a_reload() {
        let watched = Watched::new(
            Path::new("/etc/ecs-xds/ecs-xds.toml"),
            Path::new("/etc/ecs-xds/templates"),
        );
        assert!(watched.concerns(Path::new("/etc/ecs-xds/ecs-xds.toml")));
        assert!(watched.concerns(Path::new("/etc/ecs-xds/templates/sidecar.toml")));
        assert!(!watched.concerns(Path::new("/etc/ecs-xds/ecs-xds.toml.swp")));
        assert!(!watched.concerns(Path::new("/etc/ecs-xds/other.toml")));
        assert!(!watched.concerns(Path::new("/etc/ecs-xds/templates/deeper/x.toml")));
    }
}
