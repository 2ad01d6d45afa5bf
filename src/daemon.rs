//! `ecs-xds run`: discovery, synthesis and the xDS server in one process.
//!
//! Two steps, as linkerd's `Config::build` → `App::spawn`: [`Daemon::start`] does everything
//! that can fail (from the [`Loaded`] settings and templates: persisted pushes, AWS client,
//! both listeners bound) and [`Daemon::run`] starts the stages and supervises them until
//! shutdown. The command line (`cli`) loads the settings and maps failures to exit codes.
//!
//! The stages ([`Stage`]) meet through channels: discovery publishes complete inventories on a
//! `watch`, the synthesis stage ([`synthesis`]) turns each into one snapshot per node type and
//! is the only holder of the cache's publisher, the xDS server streams what is published, the
//! admin server shows it, and the reload stage ([`reload`]) turns file changes and SIGHUP into
//! reload requests. A stage that ends before shutdown ends the process ([`supervise`]): Envoys
//! must never sit on a frozen snapshot behind a replica that says it is ready.

mod identity;
mod reload;
mod replica;
mod supervise;
mod synthesis;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::admin::changes::ChangeLog;
use crate::admin::metrics::{LiveState, RequestCounts};
use crate::admin::push::{PushApi, TokenRequired};
use crate::admin::ui::UiAccess;
use crate::admin::{self, AdminState, DaemonStats, Metrics};
use crate::aws::{Aws, AwsError, CallCounter};
use crate::cache::Cache;
use crate::discover::{DiscoverError, Poller};
use crate::inventory::Inventory;
use crate::problem::Problems;
use crate::push::{ObjectStore, PushCommand, Pushes, Refresher, StoreError};
use crate::serve::XdsServer;
use crate::settings::{PushStore, Settings};
use crate::synthesize::templates::Templates;
use crate::synthesize::Synthesizer;
pub use supervise::Stage;
use supervise::Stages;
use synthesis::SynthesisStage;

/// Why the daemon could not start, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The push API would be exposed without a token.
    #[error(transparent)]
    PushToken(#[from] TokenRequired),
    /// The push state directory could not be loaded.
    #[error(transparent)]
    PushState(#[from] StoreError),
    /// Discovery could not start (its settings, or its AWS clients).
    #[error(transparent)]
    Discover(#[from] DiscoverError),
    /// AWS could not be set up (no region).
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error("cannot listen for {listener} on {addr} ({key}): {source}")]
    Bind {
        listener: &'static str,
        key: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The identity CA could not be loaded or used.
    #[error("identity CA from {from}: {message}")]
    Ca { from: String, message: String },
    /// A stage of `run` ended before shutdown.
    #[error("stage {stage} ended unexpectedly: {cause}")]
    StageEnded { stage: Stage, cause: String },
}

/// What a daemon starts from: the settings file, its settings, and the templates it names.
pub struct Loaded {
    pub config: PathBuf,
    pub settings: Settings,
    pub templates: Templates,
    pub templates_dir: PathBuf,
}

/// The templates of `dir`. With the REST push API on, there may be none: node types can come
/// from pushes alone, as they did in sxds.
pub fn load_templates(settings: &Settings, dir: &Path) -> Result<Templates, Problems> {
    match settings.push.enabled {
        true => Templates::load_dir_allow_empty(dir),
        false => Templates::load_dir(dir),
    }
}

/// Where inventories come from.
enum Discovery {
    Poll(Box<Poller>),
    /// A saved inventory, served as discovered (`run --inventory`), and the file to follow.
    Fixed(Inventory, Option<PathBuf>),
}

/// A daemon whose every fallible step is done: listeners bound, templates and pushes loaded.
pub struct Daemon {
    settings: Settings,
    config: PathBuf,
    templates_dir: PathBuf,
    xds: (TcpListener, SocketAddr),
    admin: (TcpListener, SocketAddr),
    discovery: Discovery,
    cache: Cache,
    synthesis: SynthesisStage,
    server: XdsServer,
    push_api: Option<PushApi>,
    push_commands: mpsc::Receiver<PushCommand>,
    /// With the shared push store: its lister, and the way to the synthesis stage it sends to.
    push_refresher: Option<(Refresher, mpsc::Sender<PushCommand>)>,
    stats: Arc<DaemonStats>,
    aws_calls: CallCounter,
    first_line: synthesis::FirstLine,
    /// This replica's name (ECS task id, or host name).
    replica: Arc<str>,
    /// The identity endpoint and CA (`[identity]` on).
    identity: Option<identity::Identity>,
    /// What the synthesis stage changed, for the admin server's `/changes`.
    changes: Arc<ChangeLog>,
}

impl Daemon {
    /// Follows the saved inventory's `file` (`run --inventory`): each change to it is served,
    /// as a poll's would be.
    pub fn follow_inventory_file(mut self, file: PathBuf) -> Self {
        if let Discovery::Fixed(_, follow) = &mut self.discovery {
            *follow = Some(file);
        }
        self
    }

    /// Loads the persisted pushes, binds both listeners and prepares discovery: a saved
    /// `inventory`, or a poller of AWS. Nothing runs yet.
    pub async fn start(
        loaded: Loaded,
        inventory: Option<Inventory>,
    ) -> Result<Daemon, DaemonError> {
        let Loaded {
            config,
            settings,
            templates,
            templates_dir,
        } = loaded;
        let config = config.as_path();
        let node_types: Vec<String> = templates.node_types().map(str::to_owned).collect();
        // The push API's handlers talk to the synthesis stage, which owns the pushes.
        let (push_tx, push_commands) = mpsc::channel::<PushCommand>(16);
        let push_tx_refresh = push_tx.clone();
        let mut synthesizer = Synthesizer::new(templates);
        let mut push_refresher = None;
        // One AWS client for everything a run asks of AWS (discovery, the shared push store),
        // so that every request is counted in `aws_requests_total`.
        let aws_calls = CallCounter::new();
        let mut aws = None;
        let (push_api, pushes) = match settings.push.enabled {
            false => (None, None),
            true => {
                let token = settings.admin.token();
                let max = settings.push.max_body_bytes;
                let api = PushApi::new(push_tx, settings.admin.listen, token, max)?;
                let aws = (&mut aws, &aws_calls);
                let (pushes, refresher) = open_pushes(&settings, config, aws).await?;
                push_refresher = refresher;
                pushes.load_into(&mut synthesizer);
                (Some(api), Some(pushes))
            }
        };
        let xds = bind("xDS", "xds.listen", settings.xds.listen).await?;
        let admin = bind("admin HTTP", "admin.listen", settings.admin.listen).await?;
        let replica: Arc<str> = replica::replica_id().await.into();
        let discovery = match inventory {
            Some(fixed) => Discovery::Fixed(fixed, None),
            None => {
                let aws = connected(&mut aws, &settings, &aws_calls).await?;
                let checked = settings.discover().map_err(DiscoverError::from)?;
                let poller = Poller::new(checked, aws)?.with_replica(replica.clone());
                Discovery::Poll(Box::new(poller))
            }
        };
        let identity = match settings.identity.enabled {
            false => None,
            true => {
                let aws = connected(&mut aws, &settings, &aws_calls).await?;
                Some(identity::open(&settings, config, aws).await?)
            }
        };
        let (cache, publisher) = Cache::new(settings.node_type_resolver());
        let mut server = XdsServer::new(cache.clone());
        if let Some((tls, client_auth)) = identity.as_ref().and_then(|i| i.xds_tls.clone()) {
            server = server.with_tls(tls, &settings.identity.trust_domain);
            if client_auth == crate::settings::ClientAuth::Optional {
                server = server.with_plaintext_beside_tls();
            }
        }
        let stats = Arc::new(DaemonStats::default());
        let readiness = Readiness {
            stats: stats.clone(),
            server: server.clone(),
        };
        readiness.set(false).await;
        let reloader = reload::Reloader::new(config, &settings, &templates_dir);
        let changes = Arc::new(ChangeLog::default());
        let synthesis = (SynthesisStage::new(synthesizer, publisher, pushes, readiness, reloader))
            .with_changes(changes.clone());
        let identity_addr = identity.as_ref().map(|i| i.addr);
        tracing::info!(xds = %xds.1, admin = %admin.1, identity = ?identity_addr, %replica, "ecs-xds listening");
        let first_line = synthesis::FirstLine {
            xds: xds.1,
            admin: admin.1,
            sources: sources(&settings, &discovery),
            node_types,
        };
        Ok(Daemon {
            changes,
            first_line,
            replica,
            identity,
            config: config.to_owned(),
            templates_dir,
            xds,
            admin,
            discovery,
            cache,
            synthesis,
            server,
            push_refresher: push_refresher.map(|r| (r, push_tx_refresh)),
            push_api,
            push_commands,
            stats,
            aws_calls,
            settings,
        })
    }

    /// The address the xDS listener is bound to (useful with port 0).
    pub fn xds_addr(&self) -> SocketAddr {
        self.xds.1
    }

    /// The address the admin listener is bound to.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.1
    }

    /// The address the identity endpoint is bound to, when `[identity]` is on.
    pub fn identity_addr(&self) -> Option<SocketAddr> {
        self.identity.as_ref().map(|i| i.addr)
    }

    /// The daemon's counters and readiness.
    pub fn stats(&self) -> Arc<DaemonStats> {
        self.stats.clone()
    }

    /// Runs every stage until `shutdown` completes (or a stage ends, which is an error);
    /// `reload` asks for the templates to be re-read (SIGHUP).
    pub async fn run(
        self,
        reload: mpsc::Receiver<()>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), DaemonError> {
        let stop = CancellationToken::new();
        let (inventory_tx, inventories) = watch::channel(Arc::new(Inventory::default()));
        let inventories_for_admin = inventories.clone();
        let admin_connections = Arc::default();
        let mut connections = vec![
            ("xds", self.server.connections().clone()),
            ("admin", Arc::clone(&admin_connections)),
        ];
        if let Some(identity) = &self.identity {
            connections.push(("identity", identity.connections.clone()));
        }
        let metrics = Arc::new(Metrics::new(LiveState {
            cache: self.cache.clone(),
            stats: self.stats.clone(),
            aws_calls: Arc::new(self.aws_calls),
            inventory: inventories.clone(),
            replica: self.replica.clone(),
            connections,
            identity: self
                .identity
                .as_ref()
                .map(|i| (i.stats.clone(), i.ca.clone())),
        }));
        let mut stages = Stages::new();
        let observer = metrics.discovery_observer();
        stages.spawn(
            Stage::Discovery,
            discover(self.discovery, inventory_tx, observer, stop.clone()),
        );
        let (reload_tx, reloads) = mpsc::channel(1);
        let watching = reload::Watched::new(&self.config, &self.templates_dir).watch();
        stages.spawn(
            Stage::Reload,
            reload::forward(watching, reload, reload_tx, stop.clone()),
        );
        let synthesis = self.synthesis.run(
            self.first_line,
            inventories,
            self.push_commands,
            reloads,
            stop.clone(),
        );
        stages.spawn(Stage::Synthesis, synthesis);
        if let Some(identity) = self.identity {
            stages.spawn(Stage::Identity, identity.run(stop.clone()));
        }
        if let Some((refresher, commands)) = self.push_refresher {
            stages.spawn(Stage::PushRefresh, refresher.run(commands, stop.clone()));
        }

        let mut admin_router = admin::router(AdminState {
            cache: self.cache,
            stats: self.stats.clone(),
            metrics,
            replica: self.replica,
            inventory: inventories_for_admin,
            changes: self.changes,
            ui: UiAccess::new(self.settings.admin.listen, self.settings.admin.token()),
        });
        if let Some(api) = self.push_api {
            admin_router = admin_router.merge(admin::push::routes(api));
        }
        let limits = self.settings.admin_limits();
        let (admin_listener, _) = self.admin;
        let admin = admin::serve(
            admin_listener,
            admin_router,
            limits,
            admin_connections,
            stop.clone(),
        );
        stages.spawn(Stage::Admin, admin);
        let readiness = Readiness {
            stats: self.stats,
            server: self.server.clone(),
        };
        let (xds_listener, _) = self.xds;
        let xds = self
            .server
            .serve(xds_listener, self.settings.xds_limits(), stop.clone());
        stages.spawn(Stage::Xds, xds);

        let grace = self.settings.shutdown_grace;
        stages.supervise(shutdown, &stop, grace, &readiness).await
    }
}

/// The discovery stage: polls AWS (or serves the saved inventory) until `stop`.
async fn discover(
    discovery: Discovery,
    inventories: watch::Sender<Arc<Inventory>>,
    observer: crate::discover::Observer,
    stop: CancellationToken,
) {
    match discovery {
        Discovery::Poll(poller) => {
            let poller = poller.with_observer(observer);
            poller.run(inventories, stop.cancelled()).await
        }
        Discovery::Fixed(inventory, None) => {
            inventories.send_replace(Arc::new(inventory));
            stop.cancelled().await;
        }
        Discovery::Fixed(inventory, Some(file)) => {
            inventories.send_replace(Arc::new(inventory));
            tokio::select! {
                _ = follow_inventory(&file, &inventories) => {}
                _ = stop.cancelled() => {}
            }
        }
    }
}

/// How often a followed inventory file is looked at.
const FOLLOW_INTERVAL: Duration = Duration::from_secs(1);

/// Serves each new version of the saved inventory `file`: one that does not read is logged
/// and the last good one stays served (fail static).
async fn follow_inventory(file: &Path, inventories: &watch::Sender<Arc<Inventory>>) {
    let modified = || std::fs::metadata(file).and_then(|m| m.modified()).ok();
    let mut seen = modified();
    loop {
        tokio::time::sleep(FOLLOW_INTERVAL).await;
        let now = modified();
        if now == seen {
            continue;
        }
        seen = now;
        match Inventory::read_file(file) {
            Ok(inventory) => {
                tracing::info!(file = %file.display(), "the saved inventory changed; serving it");
                inventories.send_if_modified(|current| {
                    let changed = **current != inventory;
                    if changed {
                        *current = Arc::new(inventory);
                    }
                    changed
                });
            }
            Err(e) => tracing::warn!(error = %e, "keeping the inventory already served"),
        }
    }
}

impl RequestCounts for CallCounter {
    fn request_counts(&self) -> Vec<(Arc<str>, &'static str, &'static str, u64)> {
        let counts = self.snapshot_by_source().into_iter();
        counts
            .map(|(source, op, outcome, n)| (source, op, outcome.as_str(), n))
            .collect()
    }
}

/// The persisted pushes: the state directory's, or the shared store's (with its refresher).
async fn open_pushes(
    settings: &Settings,
    config: &Path,
    (aws, calls): (&mut Option<Aws>, &CallCounter),
) -> Result<(Pushes, Option<Refresher>), DaemonError> {
    let (pushes, refresher) = match &settings.push.store {
        None => (Pushes::open(&settings.push_state_path(config))?, None),
        Some(PushStore::S3 { bucket, prefix }) => {
            let objects = connected(aws, settings, calls)
                .await?
                .objects(bucket, prefix)?;
            let objects: Arc<dyn ObjectStore> = Arc::new(objects);
            let (pushes, refresher) = Pushes::shared(objects, settings.push.refresh_interval);
            (pushes, Some(refresher))
        }
    };
    let node_types: Vec<&str> = pushes.iter().map(|(n, _)| n).collect();
    tracing::info!(store = %pushes.location(), ?node_types, "REST push enabled; persisted pushes loaded");
    Ok((pushes, refresher))
}

/// What the startup line says is watched.
fn sources(settings: &Settings, discovery: &Discovery) -> String {
    let several = &settings.ecs.sources;
    let watched = match settings.ecs.auto_discover_clusters {
        _ if matches!(discovery, Discovery::Fixed(..)) => "a saved inventory".to_owned(),
        _ if !several.is_empty() => format!("{} sources (accounts and regions)", several.len()),
        true => "all ECS clusters".to_owned(),
        false => format!("ECS clusters {:?}", settings.ecs.clusters),
    };
    match (discovery, &settings.events) {
        (Discovery::Poll(_), e) if e.enabled => watched + " (event-driven, with a reconcile poll)",
        _ => watched,
    }
}

/// The run's one AWS client, connected on first use, counting into `calls`.
async fn connected(
    slot: &mut Option<Aws>,
    settings: &Settings,
    calls: &CallCounter,
) -> Result<Aws, AwsError> {
    if let Some(aws) = slot {
        return Ok(aws.clone());
    }
    let events_endpoint = settings.events.endpoint_url.as_deref();
    let aws = Aws::connect(&settings.aws, events_endpoint)
        .await?
        .with_call_counter(calls.clone());
    *slot = Some(aws.clone());
    Ok(aws)
}

async fn bind(
    listener: &'static str,
    key: &'static str,
    addr: SocketAddr,
) -> Result<(TcpListener, SocketAddr), DaemonError> {
    let error = |source| DaemonError::Bind {
        listener,
        key,
        addr,
        source,
    };
    let bound = TcpListener::bind(addr).await.map_err(error)?;
    let local = bound.local_addr().map_err(error)?;
    Ok((bound, local))
}

/// What `/readyz` and the gRPC health service say, changed together.
#[derive(Clone)]
struct Readiness {
    stats: Arc<DaemonStats>,
    server: XdsServer,
}

impl Readiness {
    async fn set(&self, ready: bool) {
        self.server.set_ready(ready).await;
    }

    /// The first complete inventory is published: ready (once).
    async fn first_inventory_published(&self) {
        if self.stats.first_inventory_published() {
            self.set(true).await;
        }
    }

    /// A stage ended before shutdown: not ready for good, on both.
    async fn stage_ended(&self, stage: Stage, cause: &str) {
        self.stats
            .stage_ended(format!("stage {stage} ended unexpectedly: {cause}"));
        self.set(false).await;
    }
}
