//! Encodings kept with the inputs they were made from, for one synthesis and the next.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

use crate::snapshot::EncodedResource;

/// Encoded resources by key, each with its inputs. What a synthesis does not use is dropped at
/// its end ([`Memo::end_round`]), so removed services do not linger.
pub(super) struct Memo<K, I> {
    previous: HashMap<K, (I, Arc<EncodedResource>)>,
    current: HashMap<K, (I, Arc<EncodedResource>)>,
}

impl<K, I> Default for Memo<K, I> {
    fn default() -> Self {
        Memo {
            previous: HashMap::new(),
            current: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq + Clone, I> Memo<K, I> {
    /// The encoding kept for `key`, if its inputs pass `same`.
    pub fn get(&mut self, key: &K, same: impl Fn(&I) -> bool) -> Option<Arc<EncodedResource>> {
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

    pub fn insert(&mut self, key: K, inputs: I, resource: Arc<EncodedResource>) {
        self.current.insert(key, (inputs, resource));
    }

    pub fn end_round(&mut self) {
        self.previous = std::mem::take(&mut self.current);
    }
}
