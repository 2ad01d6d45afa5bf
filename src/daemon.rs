//! `ecs-xds run`: discovery, synthesis and the xDS server in one process.
//!
//! The stages meet through two channels: the poller publishes complete inventories on a
//! `watch`, synthesis turns each into one snapshot per node type, and the cache publishes those
//! (a push happens only where content changed). A reload (template or settings file changed,
//! or SIGHUP) re-reads the templates and resynthesizes the last inventory; an invalid reload
//! keeps the running templates and says why.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use std::time::Duration;

use notify::Watcher;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::admin::push::{PushApi, TokenRequired};
use crate::admin::{self, metrics::LiveState, AdminState, Metrics};
use crate::cache::Cache;
use crate::discover::{Aws, CallCounter, DiscoverError, Inventory, Poller};
use crate::push::{PushCommand, Pushes, StoreError};
use crate::serve::{ServeError, XdsServer};
use crate::settings::{Settings, SettingsError};
use crate::synthesize::templates::{TemplateErrors, Templates};
use crate::synthesize::{Finding, Synthesis, Synthesizer};

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("templates in {dir}:\n{source}")]
    Templates {
        dir: PathBuf,
        #[source]
        source: TemplateErrors,
    },
    #[error("cannot listen for xDS on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen for admin HTTP on {addr} (admin.listen): {source}")]
    AdminBind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Discover(#[from] DiscoverError),
    /// The push API would be exposed without a token.
    #[error(transparent)]
    PushToken(#[from] TokenRequired),
    /// The push state directory could not be loaded.
    #[error(transparent)]
    PushState(#[from] StoreError),
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// Counters of the daemon's own events and its readiness (read by tests, `/metrics` and
/// `/readyz`).
#[derive(Debug, Default)]
pub struct DaemonStats {
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
    pub syntheses: AtomicU64,
    /// Set once the first complete inventory has been synthesized and published. Templates
    /// were valid at start (the daemon does not start otherwise) and a failed reload keeps the
    /// running ones, so this is all readiness needs.
    pub first_inventory_published: AtomicBool,
}

impl DaemonStats {
    pub fn reloads_ok(&self) -> u64 {
        self.reloads_ok.load(Ordering::Relaxed)
    }
    pub fn reloads_failed(&self) -> u64 {
        self.reloads_failed.load(Ordering::Relaxed)
    }
    pub fn syntheses(&self) -> u64 {
        self.syntheses.load(Ordering::Relaxed)
    }

    /// Why the daemon is not ready to serve Envoys yet, if it is not.
    pub fn not_ready_reason(&self) -> Option<&'static str> {
        match self.first_inventory_published.load(Ordering::Acquire) {
            true => None,
            false => Some(
                "waiting for the first complete discovery (every ECS cluster and Cloud Map namespace polled successfully once)",
            ),
        }
    }
}

/// Loads the settings and templates a run needs, so both `run` and `validate` share it.
pub fn load(config: &Path) -> Result<(Settings, Templates, PathBuf), DaemonError> {
    let settings = Settings::load(config)?;
    let dir = settings.templates_path(config);
    let templates = load_templates(&settings, &dir).map_err(|source| DaemonError::Templates {
        dir: dir.clone(),
        source,
    })?;
    Ok((settings, templates, dir))
}

/// The templates of `dir`. With the REST push API on, there may be none: node types can come
/// from pushes alone, as they did in sxds.
fn load_templates(settings: &Settings, dir: &Path) -> Result<Templates, TemplateErrors> {
    match settings.push.enabled {
        true => Templates::load_dir_allow_empty(dir),
        false => Templates::load_dir(dir),
    }
}

/// Runs until `shutdown` completes; `reload` asks for templates to be re-read. With a fixed
/// `inventory` (a saved one), AWS is not polled: that inventory is served as discovered.
pub async fn run(
    config: PathBuf,
    inventory: Option<Inventory>,
    mut reload: mpsc::Receiver<()>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    stats: Arc<DaemonStats>,
) -> Result<(), DaemonError> {
    let (settings, templates, templates_dir) = load(&config)?;
    let running = settings.clone();
    // REST push, checked before anything starts: the handlers talk to the synthesis loop,
    // which owns the persisted pushes.
    let (push_tx, mut push_commands) = mpsc::channel::<PushCommand>(16);
    let mut pushes = None;
    let mut push_api = None;
    if settings.push.enabled {
        let token = settings.admin.token();
        let max = settings.push.max_body_bytes;
        push_api = Some(PushApi::new(push_tx, settings.admin.listen, token, max)?);
        let dir = settings.push_state_path(&config);
        let loaded = Pushes::open(&dir)?;
        let node_types: Vec<&str> = loaded.store().iter().map(|(n, _)| n).collect();
        tracing::info!(dir = %dir.display(), ?node_types, "REST push enabled; persisted pushes loaded");
        pushes = Some(loaded);
    }

    let cache = Cache::new(settings.node_type_resolver());
    let addr = settings.xds.listen;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| DaemonError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| DaemonError::Bind { addr, source })?;
    let admin_addr = settings.admin.listen;
    let admin_listener = tokio::net::TcpListener::bind(admin_addr)
        .await
        .map_err(|source| DaemonError::AdminBind {
            addr: admin_addr,
            source,
        })?;
    let admin_local = admin_listener
        .local_addr()
        .map_err(|source| DaemonError::AdminBind {
            addr: admin_addr,
            source,
        })?;
    let stop = CancellationToken::new();
    let (inventory_tx, mut inventories) = watch::channel(Arc::new(Inventory::default()));
    let poll_stop = stop.clone();
    let aws_calls = CallCounter::new();
    let metrics = Arc::new(Metrics::new(LiveState {
        cache: cache.clone(),
        stats: stats.clone(),
        aws_calls: aws_calls.clone(),
        inventory: inventories.clone(),
    }));
    let poller_task = match inventory {
        Some(fixed) => {
            inventory_tx.send_replace(Arc::new(fixed));
            inventories.mark_changed();
            tokio::spawn(async move {
                poll_stop.cancelled().await;
                drop(inventory_tx);
            })
        }
        None => {
            let aws = Aws::connect(&settings.aws)
                .await?
                .with_call_counter(aws_calls);
            let poller =
                Poller::new(settings.discover(), aws)?.with_observer(metrics.poll_observer());
            let stopped = async move { poll_stop.cancelled().await };
            tokio::spawn(poller.run(inventory_tx, stopped))
        }
    };

    // Reloads come from the caller (SIGHUP) and from the files themselves.
    let (reload_tx, mut reloads) = mpsc::channel(1);
    let forward = reload_tx.clone();
    tokio::spawn(async move {
        while reload.recv().await.is_some() {
            let _ = forward.try_send(());
        }
    });
    let _watcher = watch_files(&[config.clone(), templates_dir.clone()], reload_tx);

    let node_types: Vec<String> = templates.node_types().map(str::to_owned).collect();
    let admin_stats = stats.clone();
    let server = XdsServer::new(cache.clone());
    server.set_ready(false).await;
    let health = server.clone();
    let mut synthesizer = Synthesizer::new(templates);
    if let Some(pushes) = &pushes {
        pushes.load_into(&mut synthesizer);
    }
    let synth_cache = cache.clone();
    let synth_stop = stop.clone();
    let sources = match settings.ecs.auto_discover_clusters {
        true => "all ECS clusters".to_owned(),
        false => format!("ECS clusters {:?}", settings.ecs.clusters),
    };
    let synthesis = tokio::spawn(async move {
        let mut first = true;
        let mut last: Option<Arc<Inventory>> = None;
        let mut findings = Vec::new();
        loop {
            tokio::select! {
                changed = inventories.changed() => {
                    if changed.is_err() { break; }
                    let inventory = inventories.borrow_and_update().clone();
                    if first {
                        first = false;
                        tracing::info!(
                            xds = %local,
                            admin = %admin_local,
                            sources = %sources,
                            node_types = ?node_types,
                            clusters = inventory.clusters.len(),
                            endpoints = inventory.endpoint_count(),
                            "ecs-xds running: first complete inventory"
                        );
                    }
                    publish(&mut synthesizer, &inventory, &synth_cache, &stats, &mut findings);
                    if !stats.first_inventory_published.swap(true, Ordering::AcqRel) {
                        health.set_ready(true).await;
                    }
                    last = Some(inventory);
                }
                Some(command) = push_commands.recv() => {
                    let Some(pushes) = pushes.as_mut() else { continue };
                    pushes.handle(command, &mut synthesizer, last.as_deref(), |synthesis| {
                        stats.syntheses.fetch_add(1, Ordering::Relaxed);
                        publish_synthesis(synthesis, &synth_cache, &mut findings);
                    });
                }
                Some(()) = reloads.recv() => {
                    match Settings::load(&config) {
                        Err(e) => {
                            stats.reloads_failed.fetch_add(1, Ordering::Relaxed);
                            tracing::error!("settings reload failed; keeping the running settings: {e}");
                            continue;
                        }
                        Ok(new) if new != running => tracing::warn!(
                            "the settings file changed; templates are reloaded now, other settings apply at the next restart"
                        ),
                        Ok(_) => {}
                    }
                    match load_templates(&running, &templates_dir) {
                        Ok(templates) => {
                            let applied = apply_templates(&mut synthesizer, templates, last.as_deref());
                            match applied {
                                Ok(synthesis) => {
                                    stats.reloads_ok.fetch_add(1, Ordering::Relaxed);
                                    tracing::info!(dir = %templates_dir.display(), "templates reloaded");
                                    if let Some(synthesis) = synthesis {
                                        stats.syntheses.fetch_add(1, Ordering::Relaxed);
                                        publish_synthesis(synthesis, &synth_cache, &mut findings);
                                    }
                                }
                                Err(refused) => {
                                    stats.reloads_failed.fetch_add(1, Ordering::Relaxed);
                                    tracing::error!(
                                        dir = %templates_dir.display(),
                                        "template reload refused; keeping the running templates: {refused}"
                                    );
                                }
                            }
                        }
                        Err(errors) => {
                            stats.reloads_failed.fetch_add(1, Ordering::Relaxed);
                            tracing::error!(
                                dir = %templates_dir.display(),
                                "template reload failed; keeping the running templates:\n{errors}"
                            );
                        }
                    }
                }
                _ = synth_stop.cancelled() => break,
            }
        }
    });

    let mut admin_router = admin::router(AdminState {
        cache: cache.clone(),
        stats: admin_stats,
        metrics,
    });
    if let Some(api) = push_api {
        admin_router = admin_router.merge(admin::push::routes(api));
    }
    tracing::info!(admin = %admin_local, "admin HTTP listening");
    let admin_stop = stop.clone();
    let admin_task = tokio::spawn(admin::serve(admin_listener, admin_router, async move {
        admin_stop.cancelled().await
    }));

    let serve_stop = stop.clone();
    let served = server
        .serve(listener, async move {
            shutdown.await;
            serve_stop.cancel();
        })
        .await;
    stop.cancel();
    let _ = poller_task.await;
    let _ = synthesis.await;
    match admin_task.await {
        Ok(Err(e)) => tracing::error!(error = %e, "admin HTTP server failed"),
        Err(e) => tracing::error!(error = %e, "admin HTTP server task failed"),
        Ok(Ok(())) => {}
    }
    served?;
    Ok(())
}

/// Synthesizes `inventory` and publishes every node type's snapshot. A snapshot the cache
/// refuses keeps what is being served and is logged.
///
/// Findings (a route to a cluster that is not discovered, ...) are logged when they appear,
/// e.g. when a service disappears, not again on every synthesis while they last.
fn publish(
    synthesizer: &mut Synthesizer,
    inventory: &Inventory,
    cache: &Cache,
    stats: &DaemonStats,
    known_findings: &mut Vec<Finding>,
) {
    stats.syntheses.fetch_add(1, Ordering::Relaxed);
    publish_synthesis(synthesizer.synthesize(inventory), cache, known_findings);
}

/// Switches to reloaded `templates` and synthesizes `inventory` (when there is one yet) with
/// them. If a snapshot they give would be refused (with pushes, a template change can leave a
/// pushed listener's route configuration missing), the running templates are put back: served
/// as is, that node type would stop getting discovery updates until the next good reload.
fn apply_templates(
    synthesizer: &mut Synthesizer,
    templates: Templates,
    inventory: Option<&Inventory>,
) -> Result<Option<Synthesis>, String> {
    let previous = synthesizer.set_templates(templates);
    let Some(inventory) = inventory else {
        return Ok(None);
    };
    let synthesis = synthesizer.synthesize(inventory);
    for (node_type, snapshot) in &synthesis.snapshots {
        if let Err(e) = snapshot.check_consistency() {
            synthesizer.set_templates(previous);
            return Err(format!("node type {node_type}: {e}"));
        }
    }
    Ok(Some(synthesis))
}

/// Publishes every node type's snapshot of `synthesis`, logging its new findings.
fn publish_synthesis(synthesis: Synthesis, cache: &Cache, known_findings: &mut Vec<Finding>) {
    for finding in &synthesis.findings {
        if !known_findings.contains(finding) {
            tracing::warn!(node_type = %finding.node_type, "{finding}");
        }
    }
    *known_findings = synthesis.findings;
    for (node_type, snapshot) in synthesis.snapshots {
        if let Err(e) = cache.publish(&node_type, snapshot) {
            tracing::error!(%node_type, error = %e, "snapshot refused; still serving the previous one");
        }
    }
}

/// How long the watched files must stay quiet before a reload: editors and `cp` write a file
/// in several steps.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// Watches the settings file and the templates directory; each burst of changes asks for one
/// reload. Without a working watcher (logged), SIGHUP still reloads.
fn watch_files(paths: &[PathBuf], reload: mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
    let (changed, mut changes) = mpsc::unbounded_channel();
    let handler = move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            if !event.kind.is_access() {
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
    for path in paths {
        if let Err(e) = watcher.watch(path, notify::RecursiveMode::NonRecursive) {
            tracing::warn!(path = %path.display(), error = %e, "cannot watch; reload with SIGHUP");
        }
    }
    tokio::spawn(async move {
        while changes.recv().await.is_some() {
            loop {
                match tokio::time::timeout(DEBOUNCE, changes.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_quiet) => break,
                }
            }
            let _ = reload.try_send(());
        }
    });
    Some(watcher)
}
