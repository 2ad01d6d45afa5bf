//! Encodings kept with the inputs they were made from, for one synthesis and the next.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

use crate::snapshot::EncodedResource;

/// Encoded resources (or other shared values `V`) by key, each with its inputs. What a
/// synthesis does not use is dropped at its end ([`Memo::end_round`]), so removed services do
/// not linger.
pub(super) struct Memo<K, I, V = Arc<EncodedResource>> {
    previous: HashMap<K, (I, V)>,
    current: HashMap<K, (I, V)>,
}

impl<K, I, V> Default for Memo<K, I, V> {
    fn default() -> Self {
        Memo {
            previous: HashMap::new(),
            current: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq + Clone, I, V: Clone> Memo<K, I, V> {
    /// The encoding kept for `key`, if its inputs pass `same`.
    pub fn get(&mut self, key: &K, same: impl Fn(&I) -> bool) -> Option<V> {
        if let Some((inputs, resource)) = self.current.get(key) {
            return same(inputs).then(|| resource.clone());
        }
        let (inputs, resource) = self.previous.remove(key)?;
        if !same(&inputs) {
            return None;
        }
        self.current.insert(key.clone(), (inputs, resource.clone()));
        Some(resource)
    }

    pub fn insert(&mut self, key: K, inputs: I, resource: V) {
        self.current.insert(key, (inputs, resource));
    }

    pub fn end_round(&mut self) {
        self.previous = std::mem::take(&mut self.current);
    }
}
