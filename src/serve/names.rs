//! Compact per-stream name maps.
//!
//! Every stream keeps the names it subscribed to and, in delta, the version of each resource
//! its client holds: hundreds of entries per stream, on thousands of streams. A sorted `Vec` of
//! interned names costs 16 to 24 bytes an entry where a `BTreeMap` costs about three times that;
//! lookups are binary searches, and entries mostly arrive in name order, which appends.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// A map from interned resource names to `V`, sorted by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct NameMap<V> {
    entries: Vec<(Arc<str>, V)>,
}

/// A set of interned resource names.
pub(super) type NameSet = NameMap<()>;

impl<V> Default for NameMap<V> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
        }
    }
}

impl<V: Copy> NameMap<V> {
    fn find(&self, name: &str) -> Result<usize, usize> {
        self.entries.binary_search_by(|(n, _)| (**n).cmp(name))
    }

    pub fn get(&self, name: &str) -> Option<V> {
        self.find(name).ok().map(|i| self.entries[i].1)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.find(name).is_ok()
    }

    /// Inserts or replaces; returns the previous value.
    pub fn insert(&mut self, name: Arc<str>, value: V) -> Option<V> {
        match self.find(&name) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            Err(i) => {
                self.entries.insert(i, (name, value));
                None
            }
        }
    }

    pub fn remove(&mut self, name: &str) -> Option<V> {
        self.find(name).ok().map(|i| self.entries.remove(i).1)
    }

    pub fn values(&self) -> impl Iterator<Item = V> + '_ {
        self.entries.iter().map(|(_, v)| *v)
    }

    /// Keeps the entries `keep` accepts, and gives back memory the map no longer needs.
    pub fn retain(&mut self, mut keep: impl FnMut(&Arc<str>, V) -> bool) {
        self.entries.retain(|(n, v)| keep(n, *v));
        self.entries.shrink_to_fit();
    }

    pub fn names(&self) -> impl Iterator<Item = &Arc<str>> {
        self.entries.iter().map(|(n, _)| n)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn reserve(&mut self, additional: usize) {
        self.entries.reserve(additional);
    }

    pub fn shrink_to_fit(&mut self) {
        self.entries.shrink_to_fit();
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

impl FromIterator<Arc<str>> for NameSet {
    fn from_iter<I: IntoIterator<Item = Arc<str>>>(names: I) -> Self {
        let mut entries: Vec<(Arc<str>, ())> = names.into_iter().map(|n| (n, ())).collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        entries.dedup_by(|a, b| a.0 == b.0);
        entries.shrink_to_fit();
        Self { entries }
    }
}

/// Name sets in use, by a hash of their names, so equal sets are stored once.
#[derive(Default)]
struct SharedSets {
    sets: HashMap<u64, Weak<NameSet>>,
    /// Dead entries are swept when the map reaches this size.
    sweep_at: usize,
}

/// `set`, or an equal set already in use elsewhere.
///
/// Sidecars of one node type subscribe to the same EDS and RDS names, so thousands of streams
/// hold equal sets; sharing one copy saves an entry per name on every stream (1.6 KB for 100
/// clusters).
pub(super) fn share(set: Arc<NameSet>) -> Arc<NameSet> {
    static SHARED: OnceLock<Mutex<SharedSets>> = OnceLock::new();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for name in set.names() {
        name.hash(&mut hasher);
    }
    let key = hasher.finish();
    let mut shared = SHARED.get_or_init(Mutex::default).lock().unwrap();
    if let Some(existing) = shared.sets.get(&key).and_then(Weak::upgrade) {
        // Equal hashes of unequal sets: keep this one unshared.
        return if existing == set { existing } else { set };
    }
    if shared.sets.len() >= shared.sweep_at {
        shared.sets.retain(|_, weak| weak.strong_count() > 0);
        shared.sweep_at = (shared.sets.len() * 2).max(64);
    }
    shared.sets.insert(key, Arc::downgrade(&set));
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_maps_stay_sorted_and_behave_like_maps() {
        let mut m = NameMap::default();
        assert_eq!(m.insert("b".into(), 2), None);
        assert_eq!(m.insert("a".into(), 1), None);
        assert_eq!(m.insert("c".into(), 3), None);
        assert_eq!(m.insert("b".into(), 20), Some(2));
        assert_eq!(m.names().map(|n| &**n).collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(m.get("b"), Some(20));
        assert_eq!(m.remove("a"), Some(1));
        assert!(!m.contains("a") && m.contains("c"));
    }

    #[test]
    fn name_sets_from_requests_are_sorted_and_deduplicated() {
        let s: NameSet = ["c", "a", "c"].into_iter().map(Arc::from).collect();
        assert_eq!(s.names().map(|n| &**n).collect::<Vec<_>>(), ["a", "c"]);
    }

    #[test]
    fn equal_sets_are_shared_and_dropped_ones_are_not_kept() {
        let set = |names: &[&str]| Arc::new(names.iter().map(|n| Arc::from(*n)).collect());
        let first = share(set(&["share-a", "share-b"]));
        let equal = share(set(&["share-b", "share-a"]));
        assert!(Arc::ptr_eq(&first, &equal));
        let other = share(set(&["share-a"]));
        assert!(!Arc::ptr_eq(&first, &other));
        let weak = Arc::downgrade(&first);
        drop((first, equal));
        assert!(
            weak.upgrade().is_none(),
            "the registry holds no strong reference"
        );
    }
}
