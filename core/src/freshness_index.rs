//! Per-key freshness (logical expiry, compute time, stale window) of values written with
//! `OPT.SET ... DELTA ms | STALE s`, following the keyspace like the tag index does.
//!
//! Each database's names are a [`NameMap`], which grows without holding the server (see there).

use crate::freshness::Freshness;
use crate::name_map::NameMap;
use crate::tags::{IndexReader, IndexWriter};

const MAX_ENTRIES_ON_LOAD: u64 = 1 << 32;

/// Freshness of keys, one map per database, so that FLUSHDB and SWAPDB take constant time
/// (one map dropped or two swapped) as they do in the server.
#[derive(Debug, Default, Clone)]
pub struct FreshnessIndex {
    /// Key name to freshness, per database.
    dbs: Vec<NameMap<Freshness>>,
    /// Keys tracked in every database.
    len: usize,
}

impl FreshnessIndex {
    /// An empty index (usable in a `static`).
    pub const fn new_const() -> Self {
        FreshnessIndex {
            dbs: Vec::new(),
            len: 0,
        }
    }

    /// Every (db, key) tracked.
    pub fn keys(&self) -> impl Iterator<Item = (usize, Vec<u8>)> + '_ {
        self.dbs
            .iter()
            .enumerate()
            .flat_map(|(db, m)| m.iter().map(move |(k, _)| (db, k.to_vec())))
    }

    /// Databases with any key tracked.
    pub fn dbs_in_use(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.dbs.len()).filter(|&db| !self.dbs[db].is_empty())
    }

    /// Takes out the keys of `db` for which `pred` holds, with their freshness, among the
    /// `scan` positions below `from` (`usize::MAX` to start a walk), and returns the position
    /// to go on from (`None` once position 0 was looked at).
    ///
    /// Entries never move, so every entry present from the start of a walk to its end is
    /// looked at once. A key added during the walk may or may not be (it can take a freed
    /// position either side of the walk's).
    pub fn take_where_from(
        &mut self,
        db: usize,
        from: usize,
        scan: usize,
        mut pred: impl FnMut(&[u8]) -> bool,
    ) -> (Vec<(Vec<u8>, Freshness)>, Option<usize>) {
        let Some(m) = self.dbs.get_mut(db) else {
            return (Vec::new(), None);
        };
        let top = from.min(m.positions());
        let bottom = top.saturating_sub(scan);
        let mut taken = Vec::new();
        for i in (bottom..top).rev() {
            if m.at(i).is_some_and(|(key, _)| pred(key)) {
                if let Some((key, f)) = m.take_at(i) {
                    taken.push((key.into_vec(), f));
                }
            }
        }
        self.len -= taken.len();
        (taken, (bottom > 0).then_some(bottom))
    }

    /// Records `f` for `key`.
    pub fn set(&mut self, db: usize, key: &[u8], f: Freshness) {
        if self.dbs.len() <= db {
            self.dbs.resize_with(db + 1, NameMap::default);
        }
        if self.dbs[db].insert(key, f).is_none() {
            self.len += 1;
        }
    }

    /// The freshness of `key`, if it was written with DELTA/STALE.
    pub fn get(&self, db: usize, key: &[u8]) -> Option<Freshness> {
        if self.len == 0 {
            return None;
        }
        self.dbs.get(db)?.get(key).copied()
    }

    /// Forgets `key`; returns what it had.
    pub fn remove(&mut self, db: usize, key: &[u8]) -> Option<Freshness> {
        if self.len == 0 {
            return None;
        }
        let removed = self.dbs.get_mut(db)?.remove(key);
        if removed.is_some() {
            self.len -= 1;
        }
        removed
    }

    /// Keys tracked.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets database `db` and returns what it held, for the caller to free.
    pub fn flush_db(&mut self, db: usize) -> FreshnessIndex {
        let Some(m) = self.dbs.get_mut(db) else {
            return FreshnessIndex::default();
        };
        let old = std::mem::take(m);
        self.len -= old.len();
        FreshnessIndex {
            len: old.len(),
            dbs: vec![old],
        }
    }

    /// Once no key is tracked any more, takes out the maps, which keep the room of their
    /// largest size after their entries leave, for the caller to free; None while a key is
    /// tracked or when nothing is held. O(1).
    pub fn take_if_emptied(&mut self) -> Option<FreshnessIndex> {
        (self.len == 0 && !self.dbs.is_empty()).then(|| std::mem::take(self))
    }

    /// Forgets everything and returns it, for the caller to free.
    pub fn flush_all(&mut self) -> FreshnessIndex {
        std::mem::take(self)
    }

    /// Swaps two databases, in constant time.
    pub fn swap_db(&mut self, a: usize, b: usize) {
        if a == b {
            return;
        }
        if self.dbs.len() <= a.max(b) {
            self.dbs.resize_with(a.max(b) + 1, NameMap::default);
        }
        self.dbs.swap(a, b);
    }

    /// Writes the freshness section.
    pub fn save(&self, w: &mut impl IndexWriter) {
        w.write_u64(self.len as u64);
        for (db, key, f) in self
            .dbs
            .iter()
            .enumerate()
            .flat_map(|(db, m)| m.iter().map(move |(k, f)| (db, k, f)))
        {
            w.write_u64(db as u64);
            w.write_bytes(key);
            w.write_u64(f.expires_at_ms as u64);
            w.write_u64(f.delta_ms);
            w.write_u64(f.stale_ms);
        }
    }

    /// Reads the freshness section, dropping keys `key_exists` says are gone.
    pub fn load(
        r: &mut impl IndexReader,
        key_exists: &mut impl FnMut(usize, &[u8]) -> bool,
    ) -> Result<FreshnessIndex, String> {
        let n = r.read_u64()?;
        if n > MAX_ENTRIES_ON_LOAD {
            return Err(format!("freshness section claims {n} keys"));
        }
        let mut ix = FreshnessIndex::default();
        for _ in 0..n {
            let db = r.read_u64()?;
            if db >= 1 << 16 {
                return Err(format!("freshness section names database {db}"));
            }
            let key = r.read_bytes()?;
            let f = Freshness {
                expires_at_ms: r.read_u64()? as i64,
                delta_ms: r.read_u64()?,
                stale_ms: r.read_u64()?,
            };
            if key_exists(db as usize, &key) {
                ix.set(db as usize, &key, f);
            }
        }
        Ok(ix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: Freshness = Freshness {
        expires_at_ms: 1_000,
        delta_ms: 5,
        stale_ms: 0,
    };

    #[test]
    fn an_emptied_index_is_taken_out_with_its_room() {
        let mut ix = FreshnessIndex::default();
        assert!(ix.take_if_emptied().is_none(), "nothing held");
        for i in 0..1000 {
            ix.set(i % 2, format!("k{i}").as_bytes(), F);
        }
        for i in 0..999 {
            ix.remove(i % 2, format!("k{i}").as_bytes());
        }
        assert!(ix.take_if_emptied().is_none(), "a key is still tracked");
        ix.remove(1, b"k999");
        let taken = ix.take_if_emptied().expect("emptied");
        let room: usize = taken.dbs.iter().map(|m| m.capacity()).sum();
        assert!(room >= 1000, "the maps kept room for {room}");
        assert!(ix.dbs.is_empty());
        assert!(ix.take_if_emptied().is_none());
        ix.set(0, b"again", F);
        assert_eq!(ix.get(0, b"again"), Some(F));
    }

    #[test]
    fn take_where_takes_only_matching_keys_of_one_db() {
        let mut ix = FreshnessIndex::default();
        for k in ["a1", "a2", "b1"] {
            ix.set(0, k.as_bytes(), F);
        }
        ix.set(3, b"a3", F);
        assert_eq!(ix.dbs_in_use().collect::<Vec<_>>(), vec![0, 3]);
        let (mut taken, next) = ix.take_where_from(0, usize::MAX, 10, |k| k.starts_with(b"a"));
        assert_eq!(next, None);
        taken.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(taken, vec![(b"a1".to_vec(), F), (b"a2".to_vec(), F)]);
        assert_eq!(ix.len(), 2);
        assert_eq!(ix.get(0, b"b1"), Some(F));
        assert_eq!(ix.get(3, b"a3"), Some(F));
        assert!(ix.take_where_from(7, usize::MAX, 10, |_| true).0.is_empty());
        ix.take_where_from(3, usize::MAX, 10, |_| true);
        assert_eq!(ix.dbs_in_use().collect::<Vec<_>>(), vec![0]);
    }

    /// A walk in slices takes every matching key even when keys are removed and added
    /// between the slices (an added key may take the slot a removed one freed).
    #[test]
    fn a_sliced_walk_misses_no_key_while_others_come_and_go() {
        for seed in 0..50u64 {
            let mut ix = FreshnessIndex::default();
            let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let mut next_rand = move || {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng
            };
            let name = |i: u64, wanted: bool| format!("{}{i}", if wanted { "w" } else { "o" });
            let mut wanted = std::collections::BTreeSet::new();
            for i in 0..500 {
                let w = next_rand() % 3 == 0;
                ix.set(0, name(i, w).as_bytes(), F);
                if w {
                    wanted.insert(name(i, w));
                }
            }
            let mut others: Vec<String> = (0..500)
                .map(|i| name(i, false))
                .filter(|k| ix.get(0, k.as_bytes()).is_some())
                .collect();
            let mut taken = std::collections::BTreeSet::new();
            let mut from = Some(usize::MAX);
            let mut added = 500;
            while let Some(at) = from {
                let (got, next) = ix.take_where_from(0, at, 7, |k| k.starts_with(b"w"));
                taken.extend(got.into_iter().map(|(k, _)| String::from_utf8(k).unwrap()));
                from = next;
                // Between slices: other keys leave, and new ones (not wanted) arrive.
                for _ in 0..3 {
                    if !others.is_empty() {
                        let k = others.swap_remove((next_rand() % others.len() as u64) as usize);
                        assert!(ix.remove(0, k.as_bytes()).is_some());
                    }
                }
                ix.set(0, name(added, false).as_bytes(), F);
                others.push(name(added, false));
                added += 1;
            }
            assert_eq!(taken, wanted, "seed {seed}");
            assert_eq!(ix.len(), others.len());
        }
    }
}
