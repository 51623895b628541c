//! The big keys an analysis has seen, remembered so that later samples measure them whole.
//!
//! `OPT.KEYSPACE SAMPLES` measures a random part of the keys and scales it up. A few big keys
//! break that: twenty sorted sets holding 13% of a million keys' memory are missed by almost
//! every sample of 10,000 (the pattern then shows nothing) and, when one is hit, scaled up a
//! hundredfold. RedisInsight's analysis, a sample too, has the same blind spot. So every key
//! of at least [`KNOWN_BIG_KEY_BYTES`] that an analysis (FULL or SAMPLES) measures is
//! remembered here, per database, up to a configured number (`opt.keyspace-known-big-keys`,
//! the smallest dropped first), and a later SAMPLES measures each of them exactly and samples
//! only the other keys (a census stratum beside a sampled one, summed at the end). A name
//! remembered is only a hint: the key is looked up again, measured as it is now, and dropped
//! from here when it is gone or no longer big.

use crate::report::KeyspaceReport;

/// The size from which a measured key is remembered: 64 KiB (a 1,000-member sorted set is
/// about 100 KB; a string of 64 KB is big by any cache's measure).
pub const KNOWN_BIG_KEY_BYTES: u64 = 64 * 1024;

/// Remembered big keys, across databases, bounded by a capacity.
///
/// A FULL analysis of a db of big values notes every key, so noting is O(1): a hash map, and
/// the smallest size held cached, so that a key no bigger than it is turned away at once when
/// the map is full. Only a key that displaces the smallest costs a pass over the map (to find
/// the next smallest): about capacity x ln(keys / capacity) such passes over a whole db.
#[derive(Debug, Default, Clone)]
pub struct KnownBigKeys {
    /// (db, name) -> bytes when last measured.
    keys: Option<std::collections::HashMap<(u64, Vec<u8>), u64>>,
    /// The smallest size in `keys`, when known (None: recompute before use).
    smallest: Option<u64>,
    /// (db, unix seconds): when the last pass over every key of the db began (a FULL
    /// without MATCH or TYPE, or a round of the background walk), since the db was last
    /// flushed, swapped or loaded.
    passes: Vec<(u64, u64)>,
}

impl KnownBigKeys {
    /// Nothing remembered.
    pub const fn new() -> Self {
        KnownBigKeys {
            keys: None,
            smallest: None,
            passes: Vec::new(),
        }
    }

    /// Keys remembered, in every database.
    pub fn len(&self) -> usize {
        self.keys.as_ref().map_or(0, |k| k.len())
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Notes that `name` in `db` measured `bytes`: remembered (or its size updated) when it is
    /// big, forgotten when it is not. At `capacity` keys the smallest gives way to a bigger
    /// one; a capacity lowered since is applied here too.
    pub fn note(&mut self, db: u64, name: &[u8], bytes: u64, capacity: usize) {
        let keys = self.keys.get_or_insert_with(Default::default);
        let id = (db, name.to_vec());
        if bytes < KNOWN_BIG_KEY_BYTES {
            if keys.remove(&id).is_some() {
                self.smallest = None;
            }
            return;
        }
        if let Some(held) = keys.get_mut(&id) {
            *held = bytes;
            self.smallest = None;
        } else {
            if keys.len() >= capacity {
                let smallest = *self
                    .smallest
                    .get_or_insert_with(|| keys.values().copied().min().unwrap_or(0));
                if capacity == 0 || (keys.len() == capacity && bytes <= smallest) {
                    self.trim(capacity);
                    return;
                }
            }
            keys.insert(id, bytes);
            self.smallest = self.smallest.map(|m| m.min(bytes));
        }
        self.trim(capacity);
    }

    /// Drops the smallest keys until at most `capacity` are held.
    fn trim(&mut self, capacity: usize) {
        let Some(keys) = self.keys.as_mut() else {
            return;
        };
        while keys.len() > capacity {
            let smallest = keys
                .iter()
                .min_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
                .map(|(k, _)| k.clone());
            match smallest {
                Some(k) => {
                    keys.remove(&k);
                    self.smallest = None;
                }
                None => break,
            }
        }
    }

    /// Forgets `name` in `db` (the key is gone).
    pub fn forget(&mut self, db: u64, name: &[u8]) {
        if let Some(keys) = self.keys.as_mut() {
            if keys.remove(&(db, name.to_vec())).is_some() {
                self.smallest = None;
            }
        }
    }

    /// Forgets every key of `db`, or of every database when None (a flush; the keys would be
    /// looked up and dropped anyway, this only saves the lookups).
    pub fn forget_db(&mut self, db: Option<u64>) {
        if let Some(keys) = self.keys.as_mut() {
            match db {
                Some(db) => keys.retain(|(d, _), _| *d != db),
                None => *keys = Default::default(),
            }
        }
        match db {
            Some(db) => self.passes.retain(|(d, _)| *d != db),
            None => self.passes.clear(),
        }
        self.smallest = None;
    }

    /// Notes that a pass over every key of `db`, begun at `began` (unix seconds), has ended:
    /// every key of 64 KB or more then in the db was noted (up to the bound).
    pub fn pass_ended(&mut self, db: u64, began: u64) {
        match self.passes.iter_mut().find(|(d, _)| *d == db) {
            Some(p) => p.1 = p.1.max(began),
            None => self.passes.push((db, began)),
        }
    }

    /// When the last complete pass over `db` began (unix seconds), if one ended since the db
    /// was last flushed, swapped or loaded.
    pub fn last_pass(&self, db: u64) -> Option<u64> {
        self.passes.iter().find(|(d, _)| *d == db).map(|p| p.1)
    }

    /// The names remembered in `db`, biggest first.
    pub fn names_in(&self, db: u64) -> Vec<Vec<u8>> {
        let Some(keys) = self.keys.as_ref() else {
            return Vec::new();
        };
        let mut v: Vec<(&Vec<u8>, u64)> = keys
            .iter()
            .filter(|((d, _), _)| *d == db)
            .map(|((_, n), b)| (n, *b))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        v.into_iter().map(|(n, _)| n.clone()).collect()
    }

    /// Bytes held (names and entries), roughly: the map's slots and each name.
    pub fn memory_bytes(&self) -> usize {
        self.keys.as_ref().map_or(0, |k| {
            k.capacity() * (std::mem::size_of::<((u64, Vec<u8>), u64)>() + 1)
                + k.keys().map(|(_, n)| n.capacity()).sum::<usize>()
        })
    }
}

/// A SAMPLES report made of its two strata: `census`, the known big keys measured whole
/// (FULL's figures over them), and `sample`, the other keys sampled and scaled up to their
/// number. Patterns, types, sizes and top keys are summed as shards' reports are; the mode
/// stays `samples`.
pub fn combine_census(
    census: KeyspaceReport,
    sample: KeyspaceReport,
    top: usize,
) -> KeyspaceReport {
    let mode = sample.mode.clone();
    let whole = census.keys_scanned;
    let parts = [
        ("census".to_string(), census),
        ("sample".to_string(), sample),
    ];
    match crate::cluster::merge_keyspace(&parts, top) {
        Some(mut r) => {
            r.mode = mode;
            r.big_keys_measured_whole = whole;
            r
        }
        None => parts[1].1.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyspace::{Aggregator, KeyFacts, Mode, Thresholds};

    const BIG: u64 = KNOWN_BIG_KEY_BYTES;

    fn report(mode: Mode, keys: &[(&str, u64)], db_keys: u64) -> KeyspaceReport {
        let mut agg = Aggregator::new(b":", 3, Thresholds::default());
        for (name, bytes) in keys {
            agg.add(&KeyFacts {
                name: name.as_bytes(),
                type_name: "zset",
                encoding: "skiplist",
                bytes: *bytes,
                length: 10,
                ttl_ms: None,
                idle_s: None,
                lfu: None,
                now_ms: 0,
                integer_members: None,
            });
        }
        agg.finish(mode, 0, db_keys, keys.len() as u64, 1)
    }

    #[test]
    fn the_census_and_the_sample_add_up_and_stay_a_sample() {
        // The census: two boards measured whole. The sample: 2 of 100 other keys, scaled 50x.
        let census = report(Mode::Full, &[("board:1", 3 * BIG), ("board:2", 2 * BIG)], 2);
        let sample = report(Mode::Samples(2), &[("item:1", 100), ("item:2", 300)], 100);
        let r = combine_census(census, sample, 3);
        assert_eq!(r.mode, "samples");
        assert_eq!(r.db_keys, 102);
        assert_eq!(r.keys_scanned, 4);
        assert_eq!(r.big_keys_measured_whole, 2);
        let bytes = |p: &str| {
            r.patterns
                .iter()
                .find(|x| x.pattern == p)
                .map(|x| (x.keys, x.bytes))
        };
        assert_eq!(
            bytes("board:*"),
            Some((2, 5 * BIG)),
            "the census is not scaled"
        );
        assert_eq!(bytes("item:*"), Some((100, 20_000)), "the sample is");
        assert_eq!(r.total_bytes, 5 * BIG + 20_000);
        let top: Vec<&str> = r.top_by_bytes.iter().map(|k| k.key.as_str()).collect();
        assert_eq!(top, ["board:1", "board:2", "item:2"]);
    }

    #[test]
    fn only_big_keys_are_remembered_and_a_shrunk_one_is_forgotten() {
        let mut k = KnownBigKeys::new();
        k.note(0, b"small", BIG - 1, 10);
        assert!(k.is_empty());
        k.note(0, b"lb", BIG, 10);
        k.note(0, b"lb", 3 * BIG, 10);
        assert_eq!(k.len(), 1, "a key noted twice is one entry");
        k.note(0, b"lb", 100, 10);
        assert!(k.is_empty(), "a key measured small again is forgotten");
    }

    #[test]
    fn at_capacity_the_smallest_gives_way_and_a_lower_capacity_applies() {
        let mut k = KnownBigKeys::new();
        for (i, mult) in [5u64, 2, 9, 7].iter().enumerate() {
            k.note(0, format!("k{i}").as_bytes(), mult * BIG, 3);
        }
        // k1 (2 x) was the smallest when k3 came.
        assert_eq!(
            k.names_in(0),
            vec![b"k2".to_vec(), b"k3".to_vec(), b"k0".to_vec()]
        );
        k.note(0, b"k4", BIG, 3);
        assert_eq!(k.len(), 3, "a key smaller than all held does not stay");
        assert!(!k.names_in(0).contains(&b"k4".to_vec()));
        k.note(0, b"k2", 9 * BIG, 1);
        assert_eq!(k.names_in(0), vec![b"k2".to_vec()]);
        k.note(0, b"k2", 9 * BIG, 0);
        assert!(k.is_empty(), "capacity 0 remembers nothing");
    }

    #[test]
    fn a_whole_db_of_big_keys_keeps_the_biggest() {
        // Sizes in a scrambled order; the 100 biggest must stay, whatever the order.
        let mut k = KnownBigKeys::new();
        let n = 20_000u64;
        for i in 0..n {
            let size = BIG + (i * 7_919) % n;
            k.note(3, format!("v:{i}").as_bytes(), size, 100);
        }
        assert_eq!(k.len(), 100);
        let names = k.names_in(3);
        let sizes: Vec<u64> = names
            .iter()
            .map(|name| {
                let i: u64 = std::str::from_utf8(&name[2..]).unwrap().parse().unwrap();
                BIG + (i * 7_919) % n
            })
            .collect();
        let want: Vec<u64> = (0..100).map(|j| BIG + n - 1 - j).collect();
        assert_eq!(sizes, want);
    }

    #[test]
    fn databases_are_apart() {
        let mut k = KnownBigKeys::new();
        k.note(0, b"a", 2 * BIG, 10);
        k.note(1, b"a", 2 * BIG, 10);
        k.note(1, b"b", 3 * BIG, 10);
        assert_eq!(k.names_in(1), vec![b"b".to_vec(), b"a".to_vec()]);
        k.forget(1, b"a");
        assert_eq!(k.names_in(0), vec![b"a".to_vec()]);
        assert_eq!(k.names_in(1), vec![b"b".to_vec()]);
        k.forget_db(Some(1));
        assert!(k.names_in(1).is_empty());
        assert_eq!(k.len(), 1);
        k.pass_ended(1, 100);
        k.pass_ended(1, 90);
        k.pass_ended(2, 50);
        assert_eq!(
            (k.last_pass(1), k.last_pass(2), k.last_pass(0)),
            (Some(100), Some(50), None)
        );
        k.forget_db(Some(1));
        assert_eq!((k.last_pass(1), k.last_pass(2)), (None, Some(50)));
        k.forget_db(None);
        assert!(k.is_empty());
        assert_eq!(k.last_pass(2), None);
        assert!(k.names_in(0).is_empty());
    }
}
