//! A cache bounded by the bytes its values hold, least recently used first out. The vision
//! encoder cache, the prefix KV cache and the cache of top-K adapter mixes are all one of these.
//!
//! Each worker owns its caches (tensors are not `Sync`), so there are no locks. Entries live
//! in a plain vector: the caches hold a few dozen large tensors at most, and the prefix cache
//! scans every entry for the longest shared prefix anyway, so a linear scan costs nothing next
//! to the tensor work the cache saves, and iteration order stays deterministic.

struct Slot<K, V> {
    key: K,
    value: V,
    bytes: usize,
    last_used: u64,
}

pub struct ByteLru<K, V> {
    capacity_bytes: usize,
    used_bytes: usize,
    /// Advances on every access; an entry's `last_used` is the tick of its last access.
    clock: u64,
    slots: Vec<Slot<K, V>>,
}

impl<K: PartialEq, V> ByteLru<K, V> {
    /// `capacity_bytes` 0 turns the cache off: nothing is ever stored.
    pub fn new(capacity_bytes: usize) -> Self {
        ByteLru {
            capacity_bytes,
            used_bytes: 0,
            clock: 0,
            slots: Vec::new(),
        }
    }

    pub fn capacity_bytes(&self) -> usize {
        self.capacity_bytes
    }

    pub fn used_bytes(&self) -> usize {
        self.used_bytes
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// The value stored under `key`, which becomes the most recently used.
    pub fn get(&mut self, key: &K) -> Option<&V> {
        let now = self.tick();
        let slot = self.slots.iter_mut().find(|slot| slot.key == *key)?;
        slot.last_used = now;
        Some(&slot.value)
    }

    /// The entry `score` rates highest (entries it rates `None` are not candidates), which
    /// becomes the most recently used; of equal scores the most recently used wins.
    pub fn best_by<S: Ord>(&mut self, score: impl Fn(&K, &V) -> Option<S>) -> Option<(&V, S)> {
        let now = self.tick();
        let mut best: Option<(&mut Slot<K, V>, S)> = None;
        for slot in self.slots.iter_mut() {
            let Some(candidate) = score(&slot.key, &slot.value) else {
                continue;
            };
            let better = best.as_ref().is_none_or(|(held, held_score)| {
                (&candidate, slot.last_used) > (held_score, held.last_used)
            });
            if better {
                best = Some((slot, candidate));
            }
        }
        let (slot, score) = best?;
        slot.last_used = now;
        Some((&slot.value, score))
    }

    /// Stores `value` (which holds `bytes`) under `key`, replacing what was there and evicting
    /// the least recently used entries until it fits. A value larger than the whole cache is
    /// not stored; returns whether it was.
    pub fn insert(&mut self, key: K, value: V, bytes: usize) -> bool {
        if bytes > self.capacity_bytes || self.capacity_bytes == 0 {
            return false;
        }
        self.retain(|held, _| *held != key);
        while self.used_bytes + bytes > self.capacity_bytes {
            let Some(oldest) = (0..self.slots.len()).min_by_key(|&i| self.slots[i].last_used)
            else {
                break;
            };
            self.used_bytes -= self.slots.swap_remove(oldest).bytes;
        }
        let now = self.tick();
        self.used_bytes += bytes;
        self.slots.push(Slot {
            key,
            value,
            bytes,
            last_used: now,
        });
        true
    }

    /// Keeps only the entries `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &V) -> bool) {
        let mut freed = 0;
        self.slots.retain(|slot| {
            let kept = keep(&slot.key, &slot.value);
            if !kept {
                freed += slot.bytes;
            }
            kept
        });
        self.used_bytes -= freed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used_within_its_byte_bound() {
        let mut cache = ByteLru::new(3 * 16);
        cache.insert("a", 1, 16);
        cache.insert("b", 2, 16);
        cache.insert("c", 3, 16);
        assert!(cache.get(&"a").is_some(), "a becomes the most recent");
        cache.insert("d", 4, 16);
        assert!(cache.get(&"b").is_none(), "b was the least recently used");
        assert!(cache.get(&"a").is_some());
        assert!(cache.get(&"c").is_some());
        assert!(cache.get(&"d").is_some());
        assert_eq!(cache.used_bytes(), 3 * 16);
        assert!(!cache.insert("big", 5, 4 * 16));
        assert!(cache.get(&"big").is_none(), "larger than the whole cache");
        let mut off = ByteLru::new(0);
        assert!(!off.insert("a", 1, 16));
        assert!(off.get(&"a").is_none(), "a zero bound turns the cache off");
    }

    #[test]
    fn replacing_a_key_frees_its_old_bytes_first() {
        let mut cache = ByteLru::new(32);
        cache.insert("a", 1, 16);
        cache.insert("b", 2, 16);
        cache.insert("a", 3, 16);
        assert_eq!(cache.get(&"b"), Some(&2), "nothing evicted to make room");
        assert_eq!(cache.get(&"a"), Some(&3));
        assert_eq!((cache.len(), cache.used_bytes()), (2, 32));
    }

    #[test]
    fn best_by_touches_the_winner_and_breaks_ties_by_recency() {
        let mut cache = ByteLru::new(48);
        cache.insert("a", 10, 16);
        cache.insert("b", 20, 16);
        cache.insert("c", 0, 16);
        let score = |_: &&str, value: &i32| (*value > 0).then_some(1);
        assert_eq!(cache.best_by(score), Some((&20, 1)), "b is the more recent");
        assert!(cache.get(&"a").is_some());
        assert_eq!(
            cache.best_by(score),
            Some((&10, 1)),
            "a is the more recent now"
        );
        // Both lookups touched their winner, so c, never a candidate, is the oldest.
        cache.insert("d", 40, 16);
        assert!(cache.get(&"c").is_none());
        assert!(cache.get(&"b").is_some());
        assert!(cache.best_by(|_, _| None::<i32>).is_none());
        cache.retain(|key, _| *key != "a");
        assert_eq!((cache.len(), cache.used_bytes()), (2, 32));
    }
}
