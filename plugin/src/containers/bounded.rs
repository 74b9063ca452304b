//! A map bounded in entries that evicts its oldest insertion first: the resolver's caches.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// A map bounded to `cap` entries that evicts the oldest insertion first.
#[derive(Debug)]
pub(super) struct Bounded<K, V> {
    pub(super) map: HashMap<K, (V, u64)>,
    pub(super) order: VecDeque<(K, u64)>,
    pub(super) seq: u64,
    pub(super) cap: usize,
}

impl<K: Hash + Eq + Clone, V> Bounded<K, V> {
    pub(super) fn new(cap: usize) -> Self {
        Bounded {
            map: HashMap::new(),
            order: VecDeque::new(),
            seq: 0,
            cap: cap.max(1),
        }
    }

    pub(super) fn get(&self, k: &K) -> Option<&V> {
        self.map.get(k).map(|(v, _)| v)
    }

    pub(super) fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        self.map.get_mut(k).map(|(v, _)| v)
    }

    pub(super) fn contains(&self, k: &K) -> bool {
        self.map.contains_key(k)
    }

    /// Inserts (or replaces, which counts as new); returns how many entries were evicted.
    pub(super) fn insert(&mut self, k: K, v: V) -> usize {
        self.seq += 1;
        self.map.insert(k.clone(), (v, self.seq));
        self.order.push_back((k, self.seq));
        let mut evicted = 0;
        while self.map.len() > self.cap {
            let Some((old, s)) = self.order.pop_front() else {
                break;
            };
            if self.map.get(&old).is_some_and(|(_, cur)| *cur == s) {
                self.map.remove(&old);
                evicted += 1;
            }
        }
        if self.order.len() > 2 * self.map.len() + 64 {
            self.compact();
        }
        evicted
    }

    pub(super) fn retain(&mut self, mut keep: impl FnMut(&K, &V) -> bool) {
        self.map.retain(|k, (v, _)| keep(k, v));
        self.compact();
    }

    pub(super) fn compact(&mut self) {
        let map = &self.map;
        self.order
            .retain(|(k, s)| map.get(k).is_some_and(|(_, cur)| cur == s));
        self.order.shrink_to(self.map.len().max(16) * 2);
    }

    pub(super) fn len(&self) -> usize {
        self.map.len()
    }
}
