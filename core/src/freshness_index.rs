//! Per-key freshness (logical expiry, compute time, stale window) of values written with
//! `OPT.SET ... DELTA ms | STALE s`, following the keyspace like the tag index does.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use crate::freshness::{Freshness, KeyMap};
use crate::tags::{IndexReader, IndexWriter};

const MAX_ENTRIES_ON_LOAD: u64 = 1 << 32;

/// Freshness of keys, per database.
#[derive(Debug, Default, Clone)]
pub struct FreshnessIndex {
    by_key: KeyMap<Freshness>,
}

impl FreshnessIndex {
    /// An empty index (usable in a `static`).
    pub const fn new_const() -> Self {
        FreshnessIndex {
            by_key: HashMap::with_hasher(BuildHasherDefault::new()),
        }
    }

    /// Every (db, key) tracked.
    pub fn keys(&self) -> impl Iterator<Item = (usize, Vec<u8>)> + '_ {
        self.by_key.keys().cloned()
    }

    /// Records `f` for `key`.
    pub fn set(&mut self, db: usize, key: &[u8], f: Freshness) {
        self.by_key.insert((db, key.to_vec()), f);
    }

    /// The freshness of `key`, if it was written with DELTA/STALE.
    pub fn get(&self, db: usize, key: &[u8]) -> Option<Freshness> {
        if self.by_key.is_empty() {
            return None;
        }
        self.by_key.get(&(db, key.to_vec())).copied()
    }

    /// Forgets `key`; returns what it had.
    pub fn remove(&mut self, db: usize, key: &[u8]) -> Option<Freshness> {
        if self.by_key.is_empty() {
            return None;
        }
        self.by_key.remove(&(db, key.to_vec()))
    }

    /// Keys tracked.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Forgets database `db`.
    pub fn flush_db(&mut self, db: usize) {
        self.by_key.retain(|(d, _), _| *d != db);
    }

    /// Forgets everything.
    pub fn flush_all(&mut self) {
        self.by_key.clear();
    }

    /// Swaps two databases.
    pub fn swap_db(&mut self, a: usize, b: usize) {
        self.by_key = std::mem::take(&mut self.by_key)
            .into_iter()
            .map(|((d, k), f)| {
                let d = if d == a {
                    b
                } else if d == b {
                    a
                } else {
                    d
                };
                ((d, k), f)
            })
            .collect();
    }

    /// Writes the freshness section.
    pub fn save(&self, w: &mut impl IndexWriter) {
        w.write_u64(self.by_key.len() as u64);
        for ((db, key), f) in &self.by_key {
            w.write_u64(*db as u64);
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
