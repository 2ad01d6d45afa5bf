//! Counts AWS requests per (source, operation, outcome): the metrics layer reads it, and
//! `examples/discover-calls.rs` measures call efficiency with it. The source is the
//! `account/region` a request went to (`[[ecs.sources]]`): each account has its own ECS quota.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// How one AWS request (one attempt, retries count again) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    /// AWS refused the request for its rate (ThrottlingException and friends, HTTP 429).
    Throttled,
    /// Any other failure: service error, timeout, connection failure.
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Throttled => "throttled",
            Outcome::Error => "error",
        }
    }
}

/// The source of requests made with the standard chain's credentials in the configured
/// region (what [`crate::settings::Scope::label`] calls the default scope).
pub const DEFAULT_SOURCE: &str = "self/default";

type Counts = BTreeMap<(Arc<str>, &'static str, Outcome), u64>;

/// A cheap, cloneable, thread-safe counter of AWS requests by (source, operation, outcome).
/// Clones count into the same map; [`CallCounter::for_source`] clones count under another
/// source.
///
/// A std `Mutex` is fine: it is held for one map update, never across an `.await`, and a poll
/// makes at most a few hundred calls.
#[derive(Debug, Clone)]
pub struct CallCounter {
    counts: Arc<Mutex<Counts>>,
    source: Arc<str>,
}

impl Default for CallCounter {
    fn default() -> Self {
        Self {
            counts: Arc::default(),
            source: DEFAULT_SOURCE.into(),
        }
    }
}

impl CallCounter {
    pub fn new() -> Self {
        Self::default()
    }

    /// A counter into the same map whose requests count under `source` (`account/region`).
    pub fn for_source(&self, source: &str) -> Self {
        Self {
            counts: self.counts.clone(),
            source: source.into(),
        }
    }

    /// Records one request of `operation` (e.g. `"DescribeTasks"`).
    pub fn record(&self, operation: &'static str, outcome: Outcome) {
        let key = (self.source.clone(), operation, outcome);
        *self.lock().entry(key).or_default() += 1;
    }

    /// Every (operation, outcome, count) over every source, ordered by operation then outcome.
    pub fn snapshot(&self) -> Vec<(&'static str, Outcome, u64)> {
        let mut summed: BTreeMap<(&'static str, Outcome), u64> = BTreeMap::new();
        for ((_, op, outcome), n) in self.lock().iter() {
            *summed.entry((op, *outcome)).or_default() += n;
        }
        summed.into_iter().map(|((op, o), n)| (op, o, n)).collect()
    }

    /// Every (source, operation, outcome, count), ordered by source, operation, outcome.
    pub fn snapshot_by_source(&self) -> Vec<(Arc<str>, &'static str, Outcome, u64)> {
        let counts = self.lock();
        let entries = counts.iter();
        entries
            .map(|((s, op, o), n)| (s.clone(), *op, *o, *n))
            .collect()
    }

    /// Requests of one operation and outcome.
    pub fn get(&self, operation: &str, outcome: Outcome) -> u64 {
        self.lock()
            .iter()
            .filter(|((_, op, o), _)| *op == operation && *o == outcome)
            .map(|(_, n)| n)
            .sum()
    }

    /// Requests of one operation, whatever their outcome.
    pub fn operation_total(&self, operation: &str) -> u64 {
        self.lock()
            .iter()
            .filter(|((_, op, _), _)| *op == operation)
            .map(|(_, n)| n)
            .sum()
    }

    /// Requests to one source (`account/region`), whatever their operation and outcome.
    pub fn source_total(&self, source: &str) -> u64 {
        let counts = self.lock();
        let of_source = counts.iter().filter(|((s, _, _), _)| &**s == source);
        of_source.map(|(_, n)| n).sum()
    }

    /// Every request counted so far.
    pub fn total(&self) -> u64 {
        self.lock().values().sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        // A panic while holding this lock cannot leave the map half-updated, so poisoning is moot.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_operation_and_outcome_across_clones() {
        let calls = CallCounter::new();
        let other = calls.clone();
        calls.record("ListTasks", Outcome::Ok);
        other.record("ListTasks", Outcome::Ok);
        other.record("ListTasks", Outcome::Throttled);
        calls.record("DescribeTasks", Outcome::Error);
        assert_eq!(calls.get("ListTasks", Outcome::Ok), 2);
        assert_eq!(calls.operation_total("ListTasks"), 3);
        assert_eq!(calls.total(), 4);
        assert_eq!(
            calls.snapshot(),
            vec![
                ("DescribeTasks", Outcome::Error, 1),
                ("ListTasks", Outcome::Ok, 2),
                ("ListTasks", Outcome::Throttled, 1)
            ]
        );
    }

    #[test]
    fn a_source_counter_counts_into_the_same_map_under_its_label() {
        let calls = CallCounter::new();
        let member = calls.for_source("222222222222/eu-west-1");
        calls.record("ListTasks", Outcome::Ok);
        member.record("ListTasks", Outcome::Ok);
        member.record("ListTasks", Outcome::Error);
        assert_eq!(calls.get("ListTasks", Outcome::Ok), 2);
        assert_eq!(calls.source_total("222222222222/eu-west-1"), 2);
        assert_eq!(calls.source_total(DEFAULT_SOURCE), 1);
        let by_source = calls.snapshot_by_source();
        assert_eq!(by_source.len(), 3, "{by_source:?}");
        assert_eq!(&*by_source[0].0, "222222222222/eu-west-1");
    }
}
