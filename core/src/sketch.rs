//! A bounded heavy-hitter summary: Space-Saving (Metwally, Agrawal, El Abbadi, 2005).
//!
//! Why Space-Saving rather than HeavyKeeper or a Count-Min sketch with a heap: it is
//! deterministic and gives, for every entry, an exact upper bound on how much its count is
//! overestimated (`error`), and for the whole summary a detection floor: any key whose true
//! count exceeds the smallest tracked count is guaranteed to be tracked. Those two numbers are
//! what `OPT.HOTKEYS` promises its users; HeavyKeeper only gives probabilistic bounds. On skewed
//! (Zipf) traffic its estimates of the top keys are near exact, and memory is fixed by the
//! capacity, whatever the keyspace size.
//!
//! Layout: counters live in a vector sorted ascending, so the minimum is at index 0 and an
//! increment moves an entry to the end of its run of equal counts (found by binary search, or
//! at once when the next count is larger, the usual case for hot keys). Empty slots hold count
//! 0, so filling and replacing share one code path. A hash map from the 64-bit key hash to the
//! position finds entries; names are kept, truncated, only to show them.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Longest key name kept for display; longer names are cut (the hash still tells them apart).
pub const MAX_NAME_BYTES: usize = 128;

/// The access kinds counted apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A read of a key.
    Read = 0,
    /// A write of a key.
    Write = 1,
    /// A read of a key that did not exist (a subset of reads).
    Miss = 2,
}

/// One tracked key.
#[derive(Debug, Clone, Default)]
pub struct Slot {
    /// 64-bit hash of the full key (the identity).
    pub hash: u64,
    /// The key name, cut at [`MAX_NAME_BYTES`].
    pub name: Vec<u8>,
    /// Whether `name` was cut.
    pub truncated: bool,
    /// Upper bound on the overestimate of this entry's count.
    pub error: u64,
    /// Reads, writes and misses counted since the key entered the summary.
    pub split: [u64; 3],
    occupied: bool,
}

/// A hasher for keys that are already 64-bit hashes.
#[derive(Default, Clone, Copy)]
pub struct PassThroughHasher(u64);

impl Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

type Index = HashMap<u64, u32, BuildHasherDefault<PassThroughHasher>>;

/// A tracked entry as returned by queries.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Hash of the full key.
    pub hash: u64,
    /// Name (possibly cut).
    pub name: Vec<u8>,
    /// Whether the name was cut.
    pub truncated: bool,
    /// Estimated count (an upper bound: the true count is in `count - error ..= count`).
    pub count: u64,
    /// Upper bound of the overestimate.
    pub error: u64,
    /// Reads, writes, misses counted while tracked.
    pub split: [u64; 3],
}

/// The Space-Saving summary.
#[derive(Debug, Clone)]
pub struct SpaceSaving {
    counts: Vec<u64>,
    slots: Vec<Slot>,
    index: Index,
    total: u64,
}

impl SpaceSaving {
    /// A summary tracking at most `capacity` keys (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        let mut index = Index::default();
        index.reserve(capacity);
        SpaceSaving {
            counts: vec![0; capacity],
            slots: vec![Slot::default(); capacity],
            index,
            total: 0,
        }
    }

    /// How many keys it can track.
    pub fn capacity(&self) -> usize {
        self.counts.len()
    }

    /// How many keys it tracks now.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether nothing was counted yet.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Accesses counted (the stream length N).
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The smallest tracked count: every key counted more often than this is tracked, and any
    /// untracked key was counted at most this often. 0 while there is room left.
    pub fn floor(&self) -> u64 {
        self.counts[0]
    }

    /// Counts one access of the key with hash `hash` and name `name`.
    pub fn add(&mut self, hash: u64, name: &[u8], kind: Kind) {
        self.total += 1;
        let pos = match self.index.get(&hash) {
            Some(&p) => p as usize,
            None => self.take_min_slot(hash, name),
        };
        let pos = self.increment(pos);
        self.slots[pos].split[kind as usize] += 1;
    }

    /// Adds to the split counter of an already tracked key without counting an access (used
    /// for misses, which were already counted as reads). Returns whether the key was tracked.
    pub fn mark(&mut self, hash: u64, kind: Kind) -> bool {
        match self.index.get(&hash) {
            Some(&p) => {
                self.slots[p as usize].split[kind as usize] += 1;
                true
            }
            None => false,
        }
    }

    /// Replaces the minimum entry with a new key; returns its position (0).
    fn take_min_slot(&mut self, hash: u64, name: &[u8]) -> usize {
        let slot = &mut self.slots[0];
        if slot.occupied {
            self.index.remove(&slot.hash);
        }
        let cut = name.len().min(MAX_NAME_BYTES);
        slot.hash = hash;
        slot.name.clear();
        slot.name.extend_from_slice(&name[..cut]);
        slot.truncated = cut < name.len();
        slot.error = self.counts[0];
        slot.split = [0; 3];
        slot.occupied = true;
        self.index.insert(hash, 0);
        0
    }

    /// Adds one to the count at `pos`, keeping the order; returns the entry's new position.
    fn increment(&mut self, pos: usize) -> usize {
        let c = self.counts[pos];
        let n = self.counts.len();
        let last = if pos + 1 == n || self.counts[pos + 1] > c {
            pos
        } else {
            pos + self.counts[pos..].partition_point(|&x| x <= c) - 1
        };
        if last != pos {
            self.slots.swap(pos, last);
            if self.slots[pos].occupied {
                self.index.insert(self.slots[pos].hash, pos as u32);
            }
            self.index.insert(self.slots[last].hash, last as u32);
        }
        self.counts[last] = c + 1;
        last
    }

    /// The tracked entry for `hash`, if any.
    pub fn get(&self, hash: u64) -> Option<Entry> {
        self.index.get(&hash).map(|&p| self.entry_at(p as usize))
    }

    fn entry_at(&self, p: usize) -> Entry {
        let s = &self.slots[p];
        Entry {
            hash: s.hash,
            name: s.name.clone(),
            truncated: s.truncated,
            count: self.counts[p],
            error: s.error,
            split: s.split,
        }
    }

    /// Every tracked entry, highest count first.
    pub fn entries(&self) -> Vec<Entry> {
        (0..self.counts.len())
            .rev()
            .filter(|&p| self.slots[p].occupied)
            .map(|p| self.entry_at(p))
            .collect()
    }

    /// The `n` entries with the highest counts, highest first.
    pub fn top(&self, n: usize) -> Vec<Entry> {
        (0..self.counts.len())
            .rev()
            .filter(|&p| self.slots[p].occupied)
            .take(n)
            .map(|p| self.entry_at(p))
            .collect()
    }

    /// Changes the capacity. Shrinking drops the entries with the lowest counts, which keeps
    /// the guarantees: every dropped count is at most the new floor.
    pub fn resize(&mut self, capacity: usize) {
        let capacity = capacity.max(1);
        let n = self.counts.len();
        if capacity > n {
            let extra = capacity - n;
            self.counts.splice(0..0, std::iter::repeat_n(0, extra));
            self.slots
                .splice(0..0, std::iter::repeat_n(Slot::default(), extra));
        } else if capacity < n {
            let cut = n - capacity;
            for s in self.slots.drain(..cut) {
                if s.occupied {
                    self.index.remove(&s.hash);
                }
            }
            self.counts.drain(..cut);
        } else {
            return;
        }
        self.index.clear();
        for (p, s) in self.slots.iter().enumerate() {
            if s.occupied {
                self.index.insert(s.hash, p as u32);
            }
        }
        self.index.shrink_to(capacity);
    }

    /// Forgets everything, keeping the capacity.
    pub fn clear(&mut self) {
        let cap = self.capacity();
        *self = SpaceSaving::new(cap);
    }

    /// Bytes of heap and inline memory this summary holds (names included).
    pub fn memory_bytes(&self) -> usize {
        let slots = self.slots.capacity() * std::mem::size_of::<Slot>();
        let names: usize = self.slots.iter().map(|s| s.name.capacity()).sum();
        let counts = self.counts.capacity() * 8;
        // hashbrown: one control byte plus the (u64, u32) pair, padded to 16 bytes, per bucket.
        let index = self.index.capacity() * (16 + 1);
        std::mem::size_of::<Self>() + slots + names + counts + index
    }
}

/// 64-bit hash of a key name: xxh3, fast on short keys and well spread for the index.
pub fn key_hash(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn add(s: &mut SpaceSaving, key: &str, kind: Kind) {
        s.add(key_hash(key.as_bytes()), key.as_bytes(), kind);
    }

    #[test]
    fn exact_while_there_is_room() {
        let mut s = SpaceSaving::new(8);
        for (k, n) in [("a", 5), ("b", 3), ("c", 1)] {
            for _ in 0..n {
                add(&mut s, k, Kind::Read);
            }
        }
        let top = s.top(10);
        let got: Vec<(String, u64, u64)> = top
            .iter()
            .map(|e| (String::from_utf8(e.name.clone()).unwrap(), e.count, e.error))
            .collect();
        assert_eq!(
            got,
            vec![("a".into(), 5, 0), ("b".into(), 3, 0), ("c".into(), 1, 0)]
        );
        assert_eq!(s.floor(), 0);
        assert_eq!(s.total(), 9);
    }

    #[test]
    fn guarantees_hold_on_random_streams() {
        // Deterministic pseudo-random skewed stream.
        let mut x: u64 = 0x9e3779b97f4a7c15;
        let mut truth: HashMap<u64, u64> = HashMap::new();
        let mut s = SpaceSaving::new(64);
        for _ in 0..50_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let u = (x >> 11) as f64 / (1u64 << 53) as f64;
            let k = (1000.0 * u.powi(3)) as u64;
            let name = format!("k{k}");
            *truth.entry(k).or_default() += 1;
            add(
                &mut s,
                &name,
                if k % 3 == 0 { Kind::Write } else { Kind::Read },
            );
        }
        let floor = s.floor();
        let entries = s.entries();
        let sum: u64 = (0..s.capacity()).map(|p| s.counts[p]).sum();
        assert_eq!(sum, s.total(), "counts add up to the stream length");
        for (k, &t) in &truth {
            let h = key_hash(format!("k{k}").as_bytes());
            match entries.iter().find(|e| e.hash == h) {
                Some(e) => {
                    assert!(e.count >= t && e.count - e.error <= t, "bounds of k{k}");
                    assert_eq!(e.split[0] + e.split[1], e.count - e.error);
                }
                None => assert!(t <= floor, "k{k} counted {t} > floor {floor} but untracked"),
            }
        }
        // Sorted order is kept.
        assert!(s.counts.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn mark_only_touches_tracked_keys() {
        let mut s = SpaceSaving::new(4);
        add(&mut s, "x", Kind::Read);
        assert!(s.mark(key_hash(b"x"), Kind::Miss));
        assert!(!s.mark(key_hash(b"y"), Kind::Miss));
        assert_eq!(s.get(key_hash(b"x")).unwrap().split, [1, 0, 1]);
        assert_eq!(s.total(), 1);
    }

    #[test]
    fn long_names_are_cut_but_kept_apart() {
        let mut s = SpaceSaving::new(4);
        let a = "a".repeat(300);
        let b = format!("{}b", "a".repeat(299));
        add(&mut s, &a, Kind::Read);
        add(&mut s, &b, Kind::Read);
        assert_eq!(s.len(), 2);
        let e = s.top(1).remove(0);
        assert!(e.truncated && e.name.len() == MAX_NAME_BYTES);
    }

    #[test]
    fn resize_keeps_the_top_and_the_invariants() {
        let mut s = SpaceSaving::new(16);
        for i in 0..16u64 {
            for _ in 0..=i {
                add(&mut s, &format!("k{i}"), Kind::Read);
            }
        }
        s.resize(4);
        let names: Vec<String> = s
            .top(10)
            .iter()
            .map(|e| String::from_utf8(e.name.clone()).unwrap())
            .collect();
        assert_eq!(names, vec!["k15", "k14", "k13", "k12"]);
        assert_eq!(s.floor(), 13);
        add(&mut s, "new", Kind::Read);
        assert_eq!(s.get(key_hash(b"new")).unwrap().error, 13);
        s.resize(32);
        assert_eq!(s.capacity(), 32);
        assert_eq!(s.floor(), 0);
        assert_eq!(s.top(1)[0].name, b"k15");
        add(&mut s, "another", Kind::Write);
        assert_eq!(s.get(key_hash(b"another")).unwrap().error, 0);
        assert!(s.counts.windows(2).all(|w| w[0] <= w[1]));
    }
}
