//! What a delta client holds of one resource type, kept relative to a snapshot.
//!
//! A delta stream must know the version of every resource its client holds, to send only what
//! changed. Kept as one entry per resource, that is hundreds or thousands of entries on every
//! stream (a sidecar holding 1,000 clusters costs 24 KB). But a client that is up to date holds
//! exactly what some snapshot has, for the names it wants; so this keeps that snapshot, shared
//! with the cache and every other stream, plus the few names where the client differs from it.
//! An idle stream in step with the cache costs a pointer per type.

use std::sync::Arc;

use super::names::NameMap;
use crate::snapshot::{ResourceType, Snapshot};

/// The versions (content hashes) of one type's resources a client holds.
///
/// For a name in `diff`, the client holds that version, or nothing for `None`. For any other
/// name, it holds `base`'s version if it wants the name, and nothing otherwise. So whenever a
/// name starts or stops being wanted, the caller first pins its version with [`Held::pin`].
#[derive(Debug, Clone, Default)]
pub(super) struct Held {
    base: Option<Arc<Snapshot>>,
    diff: NameMap<Option<u64>>,
}

impl Held {
    /// The version of `name` the client holds; `wanted` is whether it currently wants it.
    pub fn get(&self, ty: ResourceType, name: &str, wanted: bool) -> Option<u64> {
        match self.diff.get(name) {
            Some(pinned) => pinned,
            None if wanted => self.base_hash(ty, name),
            None => None,
        }
    }

    /// Records that the client holds `name` at `version` (`None`: not at all).
    pub fn set(&mut self, name: Arc<str>, version: Option<u64>) {
        self.diff.insert(name, version);
    }

    /// Makes `name`'s version explicit before whether it is wanted changes, where the change
    /// would otherwise alter it (the base has the name).
    pub fn pin(
        &mut self,
        ty: ResourceType,
        name: &Arc<str>,
        wanted_before: bool,
        wanted_after: bool,
    ) {
        if self.diff.contains(name) {
            return;
        }
        let before = self.get(ty, name, wanted_before);
        if before != self.get(ty, name, wanted_after) {
            self.diff.insert(name.clone(), before);
        }
    }

    /// [`Held::pin`] for every name of the base, before a wildcard subscription changes.
    pub fn pin_all(
        &mut self,
        ty: ResourceType,
        wanted_before: impl Fn(&str) -> bool,
        wanted_after: impl Fn(&str) -> bool,
    ) {
        let Some(base) = self.base.clone() else {
            return;
        };
        for name in base.of(ty).resources().keys() {
            self.pin(ty, name, wanted_before(name), wanted_after(name));
        }
    }

    /// Forgets `name`: the client no longer wants it, and what it holds no longer matters.
    pub fn forget(&mut self, name: &str) {
        self.diff.remove(name);
    }

    /// True when the client holds nothing of this type.
    pub fn is_empty(&self) -> bool {
        self.base.is_none() && self.diff.values().all(|v| v.is_none())
    }

    /// The snapshot the client is relative to, if any.
    pub fn base(&self) -> Option<&Arc<Snapshot>> {
        self.base.as_ref()
    }

    /// Names where the client differs from the base.
    pub fn diff_names(&self) -> impl Iterator<Item = &Arc<str>> {
        self.diff.names()
    }

    /// After a response that brought every wanted name to `snapshot`'s version (and removed
    /// the wanted names it lacks): the client now holds `snapshot`, for the names it wants,
    /// plus whatever pinned versions it holds of names it does not want.
    pub fn rebase(&mut self, snapshot: Arc<Snapshot>, wanted: impl Fn(&str) -> bool) {
        self.diff
            .retain(|name, version| version.is_some() && !wanted(name));
        self.base = Some(snapshot);
    }

    fn base_hash(&self, ty: ResourceType, name: &str) -> Option<u64> {
        self.base.as_ref()?.of(ty).get(name).map(|r| r.hash())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use envoy_types::pb::envoy::config::core::v3::HealthStatus;

    use super::*;
    use crate::snapshot::ResourceType::Endpoint;
    use crate::synthesize::clusters::eds_cluster;
    use crate::synthesize::endpoints::load_assignment;

    fn snapshot(endpoints: &[(&str, u16)]) -> Arc<Snapshot> {
        let mut b = Snapshot::builder();
        for (name, port) in endpoints {
            let cla = load_assignment(name, [("127.0.0.1".into(), *port, HealthStatus::Healthy)]);
            b = b
                .cluster(eds_cluster(name, Duration::from_secs(1)))
                .endpoints(cla);
        }
        Arc::new(b.build())
    }

    fn hash(s: &Snapshot, name: &str) -> Option<u64> {
        s.of(Endpoint).get(name).map(|r| r.hash())
    }

    #[test]
    fn after_a_rebase_the_client_holds_the_snapshot_for_wanted_names_only() {
        let s1 = snapshot(&[("a", 1), ("b", 1), ("c", 1)]);
        let mut held = Held::default();
        assert!(held.is_empty());
        held.rebase(s1.clone(), |n| n != "c");
        assert!(!held.is_empty());
        assert_eq!(held.get(Endpoint, "a", true), hash(&s1, "a"));
        assert_eq!(
            held.get(Endpoint, "c", false),
            None,
            "never wanted, never sent"
        );
        assert_eq!(held.diff_names().count(), 0, "in step: nothing per name");
    }

    #[test]
    fn pinning_before_a_subscription_change_keeps_what_the_client_really_holds() {
        let s1 = snapshot(&[("a", 1), ("b", 1)]);
        let mut held = Held::default();
        held.rebase(s1.clone(), |n| n == "a");
        // `b` becomes wanted: the client never got it, and pinning says so.
        held.pin(Endpoint, &Arc::from("b"), false, true);
        assert_eq!(held.get(Endpoint, "b", true), None);
        // `a` stops being wanted through a wildcard change: its version is kept.
        held.pin_all(Endpoint, |n| n == "a", |_| false);
        assert_eq!(held.get(Endpoint, "a", false), hash(&s1, "a"));
        // Pins only where the change would alter the answer.
        assert_eq!(
            held.diff_names().map(|n| &**n).collect::<Vec<_>>(),
            ["a", "b"]
        );
        let mut fresh = Held::default();
        fresh.pin(Endpoint, &Arc::from("a"), false, true);
        assert_eq!(fresh.diff_names().count(), 0, "no base: nothing to pin");
    }

    #[test]
    fn a_rebase_keeps_pinned_versions_of_unwanted_names_and_drops_the_rest() {
        let s1 = snapshot(&[("a", 1)]);
        let s2 = snapshot(&[("a", 2)]);
        let mut held = Held::default();
        held.set("x".into(), Some(7)); // from initial_resource_versions, not wanted
        held.set("a".into(), Some(1)); // wanted, about to be brought up to date
        held.rebase(s2.clone(), |n| n == "a");
        assert_eq!(held.get(Endpoint, "x", false), Some(7));
        assert_eq!(held.get(Endpoint, "a", true), hash(&s2, "a"));
        assert_ne!(hash(&s1, "a"), hash(&s2, "a"));
        assert_eq!(held.diff_names().map(|n| &**n).collect::<Vec<_>>(), ["x"]);
    }
}
