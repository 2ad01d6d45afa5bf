//! `/changes`: the last [`KEPT`] things that changed what ecs-xds serves, newest first: each
//! new inventory (what it added, removed and changed), template reload (and whether it took)
//! and push. Bounded and in memory: an operator's "what happened just before it broke?".

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Serialize;

use crate::inventory::InventoryDiff;

/// How many changes are kept.
pub const KEPT: usize = 100;

/// The change log, shared by the synthesis stage (which records) and the admin server.
#[derive(Debug, Default)]
pub struct ChangeLog {
    entries: Mutex<VecDeque<Change>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// Discovery found a new inventory.
    Inventory,
    /// The templates (or settings) were re-read.
    Reload,
    /// A push through the REST push API or the shared push store.
    Push,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// New snapshots were published.
    Published,
    /// Taken, but no snapshot changed.
    Unchanged,
    /// Refused: what was served stays.
    Failed,
}

/// One entry of the log.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// Grows by one per change since the process started.
    pub seq: u64,
    /// RFC 3339, UTC.
    pub at: String,
    pub kind: ChangeKind,
    pub outcome: Outcome,
    /// One line, for a person.
    pub summary: String,
    /// For an inventory: what it changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inventory: Option<InventoryDiff>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Change {
    pub fn new(kind: ChangeKind, outcome: Outcome, summary: impl Into<String>) -> Change {
        Change {
            seq: 0,
            at: String::new(),
            kind,
            outcome,
            summary: summary.into(),
            inventory: None,
            error: None,
        }
    }

    /// A new inventory, summarized from `diff`.
    pub fn inventory(diff: InventoryDiff, outcome: Outcome) -> Change {
        let mut change = Change::new(ChangeKind::Inventory, outcome, summarize(&diff));
        change.inventory = Some(diff);
        change
    }

    pub fn with_error(mut self, error: impl Into<String>) -> Change {
        self.error = Some(error.into());
        self
    }
}

/// `+1 cluster (orders), ~1 cluster (web), endpoints +2 −1 ~1`, or `no change` for an empty
/// diff.
fn summarize(diff: &InventoryDiff) -> String {
    let mut parts = Vec::new();
    let clusters = |sign: &str, names: &crate::inventory::Names| {
        let noun = if names.count == 1 {
            "cluster"
        } else {
            "clusters"
        };
        let mut listed = names.names.join(", ");
        if names.count > names.names.len() {
            listed.push_str(", …");
        }
        format!("{sign}{} {noun} ({listed})", names.count)
    };
    if diff.clusters_added.count > 0 {
        parts.push(clusters("+", &diff.clusters_added));
    }
    if diff.clusters_removed.count > 0 {
        parts.push(clusters("−", &diff.clusters_removed));
    }
    if diff.clusters_changed.count > 0 {
        parts.push(clusters("~", &diff.clusters_changed));
    }
    let (added, removed, changed) = (
        diff.endpoints_added,
        diff.endpoints_removed,
        diff.endpoints_changed,
    );
    if added + removed + changed > 0 {
        parts.push(format!("endpoints +{added} −{removed} ~{changed}"));
    }
    let warnings = diff.warnings_added.count + diff.warnings_removed.count;
    if warnings > 0 {
        parts.push(format!(
            "warnings +{} −{}",
            diff.warnings_added.count, diff.warnings_removed.count
        ));
    }
    match parts.is_empty() {
        true => "no change".into(),
        false => parts.join(", "),
    }
}

impl ChangeLog {
    /// Adds `change`, stamped with the time and the next sequence number; forgets the oldest
    /// beyond [`KEPT`].
    pub fn record(&self, mut change: Change) {
        let mut entries = self.entries.lock().unwrap();
        change.seq = entries.front().map_or(1, |newest| newest.seq + 1);
        change.at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        entries.push_front(change);
        entries.truncate(KEPT);
    }

    /// Newest first.
    pub fn recent(&self) -> Vec<Change> {
        self.entries.lock().unwrap().iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_keeps_the_newest_hundred_newest_first() {
        let log = ChangeLog::default();
        for i in 0..(KEPT + 5) {
            let change = Change::new(ChangeKind::Reload, Outcome::Published, format!("{i}"));
            log.record(change);
        }
        let recent = log.recent();
        assert_eq!(recent.len(), KEPT);
        assert_eq!(recent[0].summary, format!("{}", KEPT + 4));
        assert_eq!(recent[0].seq, KEPT as u64 + 5);
        assert_eq!(recent[KEPT - 1].summary, "5");
        assert!(recent[0].at.ends_with('Z'), "{}", recent[0].at);
    }

    #[test]
    fn an_inventory_change_is_summarized_in_one_line() {
        let mut diff = InventoryDiff::default();
        diff.clusters_added.count = 1;
        diff.clusters_added.names = vec!["orders".into()];
        diff.clusters_changed.count = 2;
        diff.clusters_changed.names = vec!["web".into(), "api".into()];
        diff.endpoints_added = 2;
        diff.endpoints_changed = 1;
        let change = Change::inventory(diff, Outcome::Published);
        assert_eq!(
            change.summary,
            "+1 cluster (orders), ~2 clusters (web, api), endpoints +2 −0 ~1"
        );
        let empty = Change::inventory(InventoryDiff::default(), Outcome::Unchanged);
        assert_eq!(empty.summary, "no change");
        let json = serde_json::to_value(&change).unwrap();
        assert_eq!(json["kind"], "inventory");
        assert_eq!(json["inventory"]["clusters_added"]["names"][0], "orders");
    }
}
