//! Per-key freshness (logical expiry, compute time, stale window) of values written with
//! `OPT.SET ... DELTA ms | STALE s`, following the keyspace like the tag index does.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use crate::freshness::{Freshness, KeyHasher};
use crate::tags::{IndexReader, IndexWriter};

const MAX_ENTRIES_ON_LOAD: u64 = 1 << 32;

/// Key name to freshness, within one database.
type NameMap = HashMap<Vec<u8>, Freshness, BuildHasherDefault<KeyHasher>>;

/// Freshness of keys, one map per database, so that FLUSHDB and SWAPDB take constant time
/// (one map dropped or two swapped) as they do in the server.
#[derive(Debug, Default, Clone)]
pub struct FreshnessIndex {
    dbs: Vec<NameMap>,
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
            .flat_map(|(db, m)| m.keys().map(move |k| (db, k.clone())))
    }

    /// Databases with any key tracked.
    pub fn dbs_in_use(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.dbs.len()).filter(|&db| !self.dbs[db].is_empty())
    }

    /// Takes out the keys of `db` for which `pred` holds, with their freshness: one pass over
    /// that database's map, copying only the names taken.
    pub fn take_where(
        &mut self,
        db: usize,
        mut pred: impl FnMut(&[u8]) -> bool,
    ) -> Vec<(Vec<u8>, Freshness)> {
        let Some(m) = self.dbs.get_mut(db) else {
            return Vec::new();
        };
        let mut taken = Vec::new();
        m.retain(|key, f| {
            let take = pred(key);
            if take {
                taken.push((key.clone(), *f));
            }
            !take
        });
        self.len -= taken.len();
        taken
    }

    /// Records `f` for `key`.
    pub fn set(&mut self, db: usize, key: &[u8], f: Freshness) {
        if self.dbs.len() <= db {
            self.dbs.resize_with(db + 1, NameMap::default);
        }
        if self.dbs[db].insert(key.to_vec(), f).is_none() {
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
    fn take_where_takes_only_matching_keys_of_one_db() {
        let mut ix = FreshnessIndex::default();
        for k in ["a1", "a2", "b1"] {
            ix.set(0, k.as_bytes(), F);
        }
        ix.set(3, b"a3", F);
        assert_eq!(ix.dbs_in_use().collect::<Vec<_>>(), vec![0, 3]);
        let mut taken = ix.take_where(0, |k| k.starts_with(b"a"));
        taken.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(taken, vec![(b"a1".to_vec(), F), (b"a2".to_vec(), F)]);
        assert_eq!(ix.len(), 2);
        assert_eq!(ix.get(0, b"b1"), Some(F));
        assert_eq!(ix.get(3, b"a3"), Some(F));
        assert!(ix.take_where(7, |_| true).is_empty());
        ix.take_where(3, |_| true);
        assert_eq!(ix.dbs_in_use().collect::<Vec<_>>(), vec![0]);
    }
}
