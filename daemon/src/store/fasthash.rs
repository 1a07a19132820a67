//! A cheap seeded hash for the store's in-memory maps: the read cache and
//! the audit log's fold of repeated reads. SipHash, the standard map's
//! hash, cost more than the lookup it served on a Retrieve.
//!
//! Every map draws its own random seed. The keys come only from callers of
//! the same uid (the daemon serves no one else), who could at worst slow
//! their own daemon down, which they can do anyway.

use std::hash::{BuildHasher, Hasher};

/// Builds [`FastHasher`]s with one random seed per map.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FastState(u64);

impl Default for FastState {
    fn default() -> Self {
        Self(std::collections::hash_map::RandomState::new().hash_one(0x6b68_u64))
    }
}

impl BuildHasher for FastState {
    type Hasher = FastHasher;

    fn build_hasher(&self) -> FastHasher {
        FastHasher(self.0)
    }
}

/// A multiply-rotate hash over 8-byte words.
#[derive(Debug)]
pub(crate) struct FastHasher(u64);

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in words.by_ref() {
            self.write_u64(u64::from_le_bytes([
                w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7],
            ]));
        }
        let rest = words.remainder();
        let mut tail = [0u8; 8];
        tail[..rest.len()].copy_from_slice(rest);
        // The length keeps "ab" + "c" apart from "a" + "bc".
        self.write_u64(u64::from_le_bytes(tail) ^ ((rest.len() as u64) << 59));
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn finish(&self) -> u64 {
        // A final mix, so the low bits a table uses depend on every word.
        let h = self.0;
        (h ^ (h >> 32)).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (h >> 29)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_keys_hash_alike_and_neighbours_apart() {
        let state = FastState::default();
        let h = |parts: &[&str]| {
            let mut hasher = state.build_hasher();
            for p in parts {
                std::hash::Hash::hash(p, &mut hasher);
            }
            hasher.finish()
        };
        assert_eq!(h(&["jellyfin", "srv-1"]), h(&["jellyfin", "srv-1"]));
        assert_ne!(h(&["jellyfin", "srv-1"]), h(&["jellyfin", "srv-2"]));
        assert_ne!(h(&["ab", "c"]), h(&["a", "bc"]));
        // 10,000 keys like a store's, and their low bits well spread.
        let mut buckets = [0u32; 64];
        for i in 0..10_000 {
            buckets[(h(&["jellyfin", &format!("srv-{i:07}")]) & 63) as usize] += 1;
        }
        let (lo, hi) = (buckets.iter().min(), buckets.iter().max());
        assert!(lo > Some(&80) && hi < Some(&240), "{buckets:?}");
    }

    #[test]
    fn each_map_has_its_own_seed() {
        let (a, b) = (FastState::default(), FastState::default());
        assert_ne!(a.hash_one("same key"), b.hash_one("same key"));
    }
}
