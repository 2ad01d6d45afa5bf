//! Supervision: every stage of `run` is a named task, and the first one to end before shutdown
//! (returning or panicking) ends the process, with its name and cause and its own exit code, so
//! ECS replaces the task instead of leaving its Envoys on a frozen snapshot.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use tokio::task::{Id, JoinError, JoinSet};
use tokio_util::sync::CancellationToken;

use super::{DaemonError, Readiness};

/// The stages of `ecs-xds run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// The poller (or the saved inventory given with `--inventory`).
    Discovery,
    /// Inventories, pushes and reloads → snapshots; the only publisher.
    Synthesis,
    /// The xDS gRPC server.
    Xds,
    /// The admin HTTP server.
    Admin,
    /// File watching and SIGHUP → reload requests.
    Reload,
    /// Listing the shared push store (`push.store.s3` only).
    PushRefresh,
    /// The identity endpoint and the renewal of ecs-xds's own certificate (`[identity]` only).
    Identity,
}

impl Stage {
    pub const ALL: [Stage; 7] = [
        Stage::Discovery,
        Stage::Synthesis,
        Stage::Xds,
        Stage::Admin,
        Stage::Reload,
        Stage::PushRefresh,
        Stage::Identity,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Discovery => "discovery",
            Stage::Synthesis => "synthesis",
            Stage::Xds => "xds",
            Stage::Admin => "admin",
            Stage::Reload => "reload",
            Stage::PushRefresh => "push-refresh",
            Stage::Identity => "identity",
        }
    }

    /// The exit code of a process whose stage ended unexpectedly: 10 and up, one per stage.
    pub fn exit_code(self) -> u8 {
        match self {
            Stage::Discovery => 10,
            Stage::Synthesis => 11,
            Stage::Xds => 12,
            Stage::Admin => 13,
            Stage::Reload => 14,
            Stage::PushRefresh => 15,
            Stage::Identity => 16,
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The running stages.
pub(super) struct Stages {
    tasks: JoinSet<()>,
    names: HashMap<Id, Stage>,
}

/// Extra time, past the listeners' grace period, for the stages to return once stopped.
const STOP_MARGIN: Duration = Duration::from_secs(1);

impl Stages {
    pub fn new() -> Self {
        Stages {
            tasks: JoinSet::new(),
            names: HashMap::new(),
        }
    }

    /// Starts `stage`. A stage runs until the stop token it was given is cancelled; ending
    /// earlier, either way, is a failure.
    pub fn spawn(&mut self, stage: Stage, run: impl Future<Output = ()> + Send + 'static) {
        let run = fault::inject(stage, run);
        let handle = self.tasks.spawn(run);
        self.names.insert(handle.id(), stage);
    }

    /// Waits for `shutdown` or for a stage to end, whichever comes first; then stops every
    /// stage (`stop`) and waits for them, at most `grace` (plus a margin).
    ///
    /// A stage that ended early is logged with its cause, makes `readiness` say not ready
    /// (`/readyz` and gRPC health) before the others stop, and is the error returned.
    pub async fn supervise(
        mut self,
        shutdown: impl Future<Output = ()>,
        stop: &CancellationToken,
        grace: Duration,
        readiness: &Readiness,
    ) -> Result<(), DaemonError> {
        let early = tokio::select! {
            _ = shutdown => None,
            Some(joined) = self.tasks.join_next_with_id() => Some(ended(&self.names, joined)),
        };
        if let Some((stage, cause)) = &early {
            tracing::error!(%stage, %cause, "stage ended unexpectedly; no longer ready, shutting down");
            readiness.stage_ended(*stage, cause).await;
        }
        stop.cancel();
        let mut failed = early;
        let (tasks, names) = (&mut self.tasks, &self.names);
        let rest = async {
            while let Some(joined) = tasks.join_next_with_id().await {
                if joined.is_err() {
                    let (stage, cause) = ended(names, joined);
                    tracing::error!(%stage, %cause, "stage failed while stopping");
                    failed.get_or_insert((stage, cause));
                }
            }
        };
        if tokio::time::timeout(grace + STOP_MARGIN, rest)
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = self.tasks.len(),
                "stages still running after the grace period; aborting them"
            );
            self.tasks.abort_all();
        }
        match failed {
            None => Ok(()),
            Some((stage, cause)) => Err(DaemonError::StageEnded { stage, cause }),
        }
    }
}

/// Which stage a finished task was, and why it ended.
fn ended(names: &HashMap<Id, Stage>, joined: Result<(Id, ()), JoinError>) -> (Stage, String) {
    let (id, cause) = match joined {
        Ok((id, ())) => (id, "it returned before shutdown".to_owned()),
        Err(e) => (e.id(), cause(e)),
    };
    let stage = *names.get(&id).expect("every task is a named stage");
    (stage, cause)
}

/// What a join error says: the panic message, or that the task was cancelled.
fn cause(e: JoinError) -> String {
    if e.is_cancelled() {
        return "it was cancelled".to_owned();
    }
    let panic = e.into_panic();
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic with no message".to_owned());
    format!("panicked: {message}")
}

/// A test-only fault: in debug builds, `ECS_XDS_TEST_FAIL_STAGE=<stage>` makes that stage
/// panic as it starts, so tests can watch supervision end the process. Release builds have
/// no such hook.
mod fault {
    use std::future::Future;

    use super::Stage;

    pub const VAR: &str = "ECS_XDS_TEST_FAIL_STAGE";

    pub fn inject(
        stage: Stage,
        run: impl Future<Output = ()> + Send + 'static,
    ) -> impl Future<Output = ()> + Send + 'static {
        let fail =
            cfg!(debug_assertions) && std::env::var(VAR).is_ok_and(|named| named == stage.name());
        async move {
            if fail {
                panic!("test fault injected with {VAR}={stage}");
            }
            run.await
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::admin::DaemonStats;
    use crate::cache::{Cache, NodeTypeResolver};
    use crate::serve::XdsServer;

    fn readiness() -> Readiness {
        let (cache, _publisher) = Cache::new(NodeTypeResolver::default());
        Readiness {
            stats: Arc::new(DaemonStats::default()),
            server: XdsServer::new(cache),
        }
    }

    /// A stage that runs until it is stopped, and notes that it was.
    fn until_stopped(
        stop: &CancellationToken,
        stopped: &Arc<std::sync::atomic::AtomicBool>,
    ) -> impl Future<Output = ()> + Send + 'static {
        let (stop, stopped) = (stop.clone(), stopped.clone());
        async move {
            stop.cancelled().await;
            stopped.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Supervises `stages` with no shutdown coming: it ends when a stage does.
    async fn until_a_stage_ends(
        stages: Stages,
        stop: &CancellationToken,
        readiness: &Readiness,
    ) -> Result<(), DaemonError> {
        let grace = Duration::from_secs(1);
        stages
            .supervise(std::future::pending(), stop, grace, readiness)
            .await
    }

    #[tokio::test]
    async fn a_stage_that_panics_is_named_makes_the_daemon_unready_and_stops_the_others() {
        let readiness = readiness();
        readiness.first_inventory_published().await;
        assert!(readiness.server.serving().await);
        assert_eq!(readiness.stats.not_ready_reason(), None);

        let stop = CancellationToken::new();
        let stopped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut stages = Stages::new();
        stages.spawn(Stage::Xds, until_stopped(&stop, &stopped));
        stages.spawn(Stage::Synthesis, async {
            tokio::task::yield_now().await;
            let inventories: Vec<u32> = Vec::new();
            let _ = inventories[0];
        });
        let result = until_a_stage_ends(stages, &stop, &readiness).await;
        let Err(DaemonError::StageEnded { stage, cause }) = result else {
            panic!("{result:?}")
        };
        assert_eq!(stage, Stage::Synthesis);
        assert!(
            cause.starts_with("panicked: index out of bounds"),
            "{cause}"
        );
        assert!(
            stopped.load(std::sync::atomic::Ordering::SeqCst),
            "the other stage was stopped"
        );
        assert!(
            !readiness.server.serving().await,
            "gRPC health says NOT_SERVING"
        );
        let reason = readiness.stats.not_ready_reason().expect("not ready");
        assert!(
            reason.contains("stage synthesis ended unexpectedly"),
            "{reason}"
        );
    }

    #[tokio::test]
    async fn a_stage_that_returns_before_shutdown_is_a_failure_too() {
        let readiness = readiness();
        let stop = CancellationToken::new();
        let mut stages = Stages::new();
        stages.spawn(Stage::Discovery, async {});
        let result = until_a_stage_ends(stages, &stop, &readiness).await;
        assert!(
            matches!(&result, Err(DaemonError::StageEnded { stage: Stage::Discovery, cause }) if cause.contains("returned")),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn shutdown_stops_every_stage_and_is_not_an_error() {
        let readiness = readiness();
        let stop = CancellationToken::new();
        let stopped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut stages = Stages::new();
        for stage in [Stage::Xds, Stage::Admin] {
            stages.spawn(stage, until_stopped(&stop, &stopped));
        }
        let result = stages
            .supervise(
                std::future::ready(()),
                &stop,
                Duration::from_secs(1),
                &readiness,
            )
            .await;
        assert!(result.is_ok(), "{result:?}");
        assert!(stopped.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[test]
    fn every_stage_has_its_own_exit_code_above_the_others() {
        let mut codes: Vec<u8> = Stage::ALL.iter().map(|s| s.exit_code()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), Stage::ALL.len());
        assert!(codes.iter().all(|&c| c >= 10));
    }
}
