//! Counts AWS requests per (operation, outcome): the metrics layer reads it, and
//! `examples/discover-calls.rs` measures call efficiency with it.

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

/// A cheap, cloneable, thread-safe counter of AWS requests by (operation, outcome).
///
/// A std `Mutex` is fine: it is held for one map update, never across an `.await`, and a poll
/// makes at most a few hundred calls.
#[derive(Debug, Clone, Default)]
pub struct CallCounter {
    counts: Arc<Mutex<BTreeMap<(&'static str, Outcome), u64>>>,
}

impl CallCounter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one request of `operation` (e.g. `"DescribeTasks"`).
    pub fn record(&self, operation: &'static str, outcome: Outcome) {
        *self.lock().entry((operation, outcome)).or_default() += 1;
    }

    /// Every (operation, outcome, count), ordered by operation then outcome.
    pub fn snapshot(&self) -> Vec<(&'static str, Outcome, u64)> {
        self.lock()
            .iter()
            .map(|(&(op, outcome), &n)| (op, outcome, n))
            .collect()
    }

    /// Requests of one operation and outcome.
    pub fn get(&self, operation: &str, outcome: Outcome) -> u64 {
        self.lock()
            .iter()
            .filter(|((op, o), _)| *op == operation && *o == outcome)
            .map(|(_, n)| n)
            .sum()
    }

    /// Requests of one operation, whatever their outcome.
    pub fn operation_total(&self, operation: &str) -> u64 {
        self.lock()
            .iter()
            .filter(|((op, _), _)| *op == operation)
            .map(|(_, n)| n)
            .sum()
    }

    /// Every request counted so far.
    pub fn total(&self) -> u64 {
        self.lock().values().sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(&'static str, Outcome), u64>> {
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
}
