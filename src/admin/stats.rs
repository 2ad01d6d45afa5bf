//! The daemon's own counters and its readiness: written by the daemon's stages, read by
//! `/readyz`, `/metrics` and tests.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// Why a reload was refused (the `reason` label of `template_reloads_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadErrorKind {
    /// The settings file does not load.
    Settings,
    /// A template does not load.
    Templates,
    /// The templates load, but a node type's snapshot would be inconsistent (with what is
    /// pushed, say).
    Inconsistent,
}

impl ReloadErrorKind {
    pub const ALL: [ReloadErrorKind; 3] = [
        ReloadErrorKind::Settings,
        ReloadErrorKind::Templates,
        ReloadErrorKind::Inconsistent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReloadErrorKind::Settings => "settings",
            ReloadErrorKind::Templates => "templates",
            ReloadErrorKind::Inconsistent => "inconsistent",
        }
    }
}

/// Counters of the daemon's own events and its readiness.
#[derive(Debug, Default)]
pub struct DaemonStats {
    reloads_ok: AtomicU64,
    reloads_failed: [AtomicU64; ReloadErrorKind::ALL.len()],
    syntheses: AtomicU64,
    /// Set once the first complete inventory has been synthesized and published. Templates
    /// were valid at start (the daemon does not start otherwise) and a failed reload keeps the
    /// running ones, so this is all readiness needs while every stage runs.
    first_inventory_published: AtomicBool,
    /// Set when a stage ended before shutdown: the process is on its way out.
    stage_ended: OnceLock<String>,
    /// The sources (`account/region`) never discovered in full, as of the last poll.
    undiscovered: Mutex<Vec<String>>,
}

impl DaemonStats {
    pub fn reload_ok(&self) {
        self.reloads_ok.fetch_add(1, Ordering::Relaxed);
    }
    pub fn reload_failed(&self, reason: ReloadErrorKind) {
        self.reloads_failed[reason as usize].fetch_add(1, Ordering::Relaxed);
    }
    pub fn synthesized(&self) {
        self.syntheses.fetch_add(1, Ordering::Relaxed);
    }

    /// Records that the first complete inventory is published; true the first time.
    pub fn first_inventory_published(&self) -> bool {
        !self.first_inventory_published.swap(true, Ordering::AcqRel)
    }

    /// Records that a stage ended before shutdown (`why` names it), which makes the daemon
    /// unready for good.
    pub fn stage_ended(&self, why: String) {
        let _ = self.stage_ended.set(why);
    }

    /// Records the sources never discovered in full, after a poll.
    pub fn set_undiscovered(&self, sources: &[String]) {
        *self.undiscovered.lock().unwrap_or_else(|e| e.into_inner()) = sources.to_vec();
    }

    pub fn reloads_ok(&self) -> u64 {
        self.reloads_ok.load(Ordering::Relaxed)
    }
    pub fn reloads_failed(&self, reason: ReloadErrorKind) -> u64 {
        self.reloads_failed[reason as usize].load(Ordering::Relaxed)
    }
    pub fn syntheses(&self) -> u64 {
        self.syntheses.load(Ordering::Relaxed)
    }

    /// Why the daemon is not ready to serve Envoys, if it is not.
    pub fn not_ready_reason(&self) -> Option<String> {
        if let Some(why) = self.stage_ended.get() {
            return Some(format!("{why}; the process is exiting"));
        }
        if self.first_inventory_published.load(Ordering::Acquire) {
            return None;
        }
        let waiting = "waiting for the first complete discovery (every ECS cluster and Cloud Map namespace polled successfully once)";
        let undiscovered = self.undiscovered.lock().unwrap_or_else(|e| e.into_inner());
        match undiscovered.is_empty() {
            true => Some(waiting.to_owned()),
            false => Some(format!(
                "{waiting}; never discovered: {}",
                undiscovered.join(", ")
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_ready_names_the_sources_never_discovered_until_the_first_publish() {
        let stats = DaemonStats::default();
        assert!(!stats
            .not_ready_reason()
            .unwrap()
            .contains("never discovered"));
        stats.set_undiscovered(&["222222222222/us-east-1".into(), "self/default".into()]);
        let reason = stats.not_ready_reason().unwrap();
        assert!(
            reason.ends_with("never discovered: 222222222222/us-east-1, self/default"),
            "{reason}"
        );
        assert!(stats.first_inventory_published());
        assert_eq!(stats.not_ready_reason(), None, "fail static after that");
    }
}
