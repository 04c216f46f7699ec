//! Prefix KV reuse across requests: the KV caches of recent prompts, so that a prompt sharing a
//! prefix with one of them (a fixed system prompt of the paper's Tables 6–9, the same image
//! after it, the same concept list) prefills only what follows the first difference.
//!
//! A prompt is compared as a sequence of keys: a text token is its id; an image-pad token is a
//! hash of the image's content and the pad's index in it, because two images of the same size
//! give identical ids but different keys and values. Entries are kept per namespace (the LoRA
//! adapter in use changes every key and value), bounded by bytes, least recently used first out.

use crate::lru::ByteLru;
use crate::qwen2_5_vl::KvCache;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

/// The comparison keys of a prompt: `image_ids[k]` identifies the content of the k-th image
/// (its hash); every image-pad token of that image gets a distinct key derived from it.
pub fn prompt_keys(input_ids: &[i64], image_token_id: i64, image_ids: &[&str]) -> Vec<u64> {
    let mut keys = Vec::with_capacity(input_ids.len());
    let mut image = 0usize;
    let mut pad = 0u64;
    let mut previous_was_pad = false;
    for &id in input_ids {
        if id == image_token_id {
            if !previous_was_pad && pad > 0 {
                image += 1;
                pad = 0;
            }
            let mut hasher = DefaultHasher::new();
            image_ids.get(image).hash(&mut hasher);
            pad.hash(&mut hasher);
            // The top bit keeps image keys apart from token ids.
            keys.push(hasher.finish() | 1 << 63);
            pad += 1;
            previous_was_pad = true;
        } else {
            keys.push(id as u64);
            previous_was_pad = false;
        }
    }
    keys
}

/// What an entry is found by: the adapter namespace and the prompt's comparison keys.
#[derive(PartialEq)]
struct PrefixKey {
    namespace: String,
    keys: Vec<u64>,
}

/// What a lookup found.
pub struct PrefixHit {
    /// A cache holding the first `len` positions of the prompt.
    pub cache: KvCache,
    pub len: usize,
}

pub struct PrefixCache {
    entries: ByteLru<PrefixKey, KvCache>,
}

fn cache_bytes(cache: &KvCache) -> usize {
    cache
        .layers
        .iter()
        .flatten()
        .map(|(k, v)| (k.numel() + v.numel()) * k.kind().elt_size_in_bytes())
        .sum()
}

impl PrefixCache {
    /// `capacity_bytes` 0 turns reuse off.
    pub fn new(capacity_bytes: usize) -> Self {
        PrefixCache {
            entries: ByteLru::new(capacity_bytes),
        }
    }

    pub fn used_bytes(&self) -> usize {
        self.entries.used_bytes()
    }

    /// Number of stored prompts.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The longest stored prefix of `keys` in `namespace`, always leaving at least the last
    /// prompt position to run (its logits start generation).
    pub fn lookup(&mut self, namespace: &str, keys: &[u64]) -> Option<PrefixHit> {
        let limit = keys.len().saturating_sub(1);
        let (stored, len) = self.entries.best_by(|key, _| {
            if key.namespace != namespace {
                return None;
            }
            let common = key
                .keys
                .iter()
                .zip(keys)
                .take_while(|(a, b)| a == b)
                .count();
            Some(common.min(limit)).filter(|&len| len > 0)
        })?;
        let mut cache = stored.clone();
        cache.truncate(len as i64);
        Some(PrefixHit { cache, len })
    }

    /// Keeps the KV of a prompt: `cache` holds at least its `keys.len()` positions (extra
    /// generated positions are cut off).
    pub fn insert(&mut self, namespace: &str, keys: Vec<u64>, cache: &KvCache) {
        let capacity = self.entries.capacity_bytes();
        if capacity == 0 || keys.is_empty() || (cache.len as usize) < keys.len() {
            return;
        }
        let mut snapshot = cache.clone();
        snapshot.truncate(keys.len() as i64);
        // Keep only the prompt's own positions, not the storage of what was generated after.
        for (k, v) in snapshot.layers.iter_mut().flatten() {
            *k = k.contiguous().copy();
            *v = v.contiguous().copy();
        }
        let bytes = cache_bytes(&snapshot);
        if bytes > capacity {
            return;
        }
        // A stored prompt that this one extends (or repeats) adds nothing.
        self.entries.retain(|stored, _| {
            stored.namespace != namespace
                || stored.keys.len() > keys.len()
                || keys[..stored.keys.len()] != stored.keys[..]
        });
        let key = PrefixKey {
            namespace: namespace.to_string(),
            keys,
        };
        self.entries.insert(key, snapshot, bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Kind, Tensor};

    fn cache_of(len: i64) -> KvCache {
        let mut cache = KvCache::new(1);
        let k = Tensor::arange(len, (Kind::Float, tch::Device::Cpu)).view([1, 1, len, 1]);
        cache.layers[0] = Some((k.shallow_clone(), k));
        cache.len = len;
        cache
    }

    #[test]
    fn image_pads_are_keyed_by_image_content() {
        let ids = [1, 9, 9, 2, 9, 9, 3];
        let a = prompt_keys(&ids, 9, &["cat", "dog"]);
        let b = prompt_keys(&ids, 9, &["cat", "cow"]);
        assert_eq!(a[..4], b[..4], "same first image");
        assert_ne!(a[4], b[4], "different second image");
        assert_ne!(a[1], a[2], "each pad of an image differs");
        assert_eq!(a[3], 2);
        assert_ne!(a[1], prompt_keys(&ids, 9, &["dog", "cat"])[1]);
    }

    #[test]
    fn lookup_finds_the_longest_prefix_in_the_namespace_and_keeps_the_last_token() {
        let mut store = PrefixCache::new(1 << 20);
        store.insert("base", vec![1, 2, 3, 4], &cache_of(6));
        store.insert("base", vec![1, 2, 7], &cache_of(3));
        store.insert("bo", vec![1, 2, 3, 4, 5], &cache_of(5));
        let hit = store.lookup("base", &[1, 2, 3, 8]).unwrap();
        assert_eq!(hit.len, 3);
        assert_eq!(hit.cache.len, 3);
        let (k, _) = hit.cache.layers[0].as_ref().unwrap();
        assert_eq!(k.size(), [1, 1, 3, 1]);
        assert_eq!(
            store.lookup("base", &[1, 2, 3, 4]).unwrap().len,
            3,
            "last token runs"
        );
        assert!(store.lookup("base", &[5, 6]).is_none());
        assert!(store.lookup("other", &[1, 2, 3]).is_none());
        // An extension replaces the entry it extends.
        store.insert("base", vec![1, 2, 3, 4, 5, 6], &cache_of(6));
        assert_eq!(store.len(), 3);
        assert_eq!(store.lookup("base", &[1, 2, 3, 4, 5, 6, 7]).unwrap().len, 6);
    }

    #[test]
    fn the_byte_bound_evicts_least_recently_used() {
        // 4 positions * 2 tensors * 4 bytes = 32 bytes per entry.
        let mut store = PrefixCache::new(64);
        store.insert("base", vec![1, 1, 1, 1], &cache_of(4));
        store.insert("base", vec![2, 2, 2, 2], &cache_of(4));
        assert!(store.lookup("base", &[1, 1, 1, 1, 0]).is_some());
        store.insert("base", vec![3, 3, 3, 3], &cache_of(4));
        assert!(store.lookup("base", &[2, 2, 2, 2, 0]).is_none(), "evicted");
        assert!(store.lookup("base", &[1, 1, 1, 1, 0]).is_some());
        assert_eq!(store.used_bytes(), 64);
        let mut off = PrefixCache::new(0);
        off.insert("base", vec![1, 2], &cache_of(2));
        assert!(off.lookup("base", &[1, 2, 3]).is_none());
    }
}
