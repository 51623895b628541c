//! A map whose entries lapse a fixed time after they were added.
//!
//! The module keeps short-lived bookkeeping about keys in flight between cluster nodes: the
//! tags a target holds for keys that have not arrived yet, and, on Redis 7.0, the keys a
//! MIGRATE left behind that may still move at an EXEC. Each entry matters for some seconds
//! and then must go, whether or not anything asked for it, and the whole has a byte bound.
//! The entries are linked in the order they were added (or added again), oldest first, so
//! that expiring costs only the entries that lapse and every write a constant amount.
//!
//! Why not a hash map by (db, name), with the names again in an order queue: the map grew all
//! at once, and an entry added again left a dead line in the queue, which a compaction walked
//! whole. With 335,000 entries of 200 bytes (the 64 MiB bound) the longest insert took 111 ms
//! (a growth), and 253 ms when the same keys came again (a compaction), timed on the structure
//! alone. The entries then moved into a [`NameMap`] per database, which grows a few buckets
//! per write and whose slots never move: 0.3 ms and 6.5 ms. The compaction was still one walk,
//! so the queue is gone too: since slots never move, a slot's position names its entry, and
//! each entry links to the one added before and after it. An entry added again is unlinked and
//! linked at the newest end, an entry removed is unlinked. The databases are listed by number,
//! not indexed by it: the held tags' database comes from another node's message, and a number
//! from there must not size anything.

use std::time::{Duration, Instant};

use crate::name_map::NameMap;

/// Where an entry is: an index into `dbs` and a position in that database's map.
type Link = Option<(u32, u32)>;

/// Entries of `V` by database and key name, each with the time it was added and the bytes
/// it weighs.
#[derive(Debug)]
pub struct ExpiringMap<V> {
    /// Each database used so far, by number, in the order first used (never removed, so a
    /// link's index into it stays valid).
    dbs: Vec<(usize, NameMap<Entry<V>>)>,
    /// The entry added longest ago, which lapses first.
    oldest: Link,
    /// The entry added last.
    newest: Link,
    len: usize,
    bytes: usize,
}

#[derive(Debug)]
struct Entry<V> {
    value: V,
    at: Instant,
    size: usize,
    /// The entry added just before this one (toward `oldest`).
    older: Link,
    /// The entry added just after it (toward `newest`).
    newer: Link,
}

impl<V> Default for ExpiringMap<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V> ExpiringMap<V> {
    /// An empty map.
    pub fn new() -> Self {
        ExpiringMap {
            dbs: Vec::new(),
            oldest: None,
            newest: None,
            len: 0,
            bytes: 0,
        }
    }

    /// Entries in the map.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes of all entries, as given to [`insert`](Self::insert).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The entry `link` names; every link held points at a live entry.
    fn entry(&self, link: (u32, u32)) -> Option<&Entry<V>> {
        let (db, pos) = link;
        self.dbs
            .get(db as usize)?
            .1
            .at(pos as usize)
            .map(|(_, e)| e)
    }

    fn entry_mut(&mut self, link: (u32, u32)) -> Option<&mut Entry<V>> {
        let (db, pos) = link;
        self.dbs.get_mut(db as usize)?.1.at_mut(pos as usize)
    }

    /// Joins `older` and `newer`, the neighbours of an entry taken out of the order.
    fn join(&mut self, older: Link, newer: Link) {
        match older.and_then(|l| self.entry_mut(l)) {
            Some(e) => e.newer = newer,
            None => self.oldest = newer,
        }
        match newer.and_then(|l| self.entry_mut(l)) {
            Some(e) => e.older = older,
            None => self.newest = older,
        }
    }

    /// Links the entry at `link` (out of the order) as the newest.
    fn link_newest(&mut self, link: (u32, u32)) {
        let newest = self.newest;
        if let Some(e) = self.entry_mut(link) {
            e.older = newest;
            e.newer = None;
        }
        match newest.and_then(|l| self.entry_mut(l)) {
            Some(e) => e.newer = Some(link),
            None => self.oldest = Some(link),
        }
        self.newest = Some(link);
    }

    /// The index of database `db` in `dbs`, if it was used.
    fn db_index(&self, db: usize) -> Option<usize> {
        self.dbs.iter().position(|(n, _)| *n == db)
    }

    /// Adds `value` under `key` of `db` at `now`, weighing `size` bytes; returns the value it
    /// replaces. The caller checks its byte bound against [`bytes`](Self::bytes) first.
    /// Entries are expected in time order: an entry lapses no sooner than those added before.
    pub fn insert(
        &mut self,
        db: usize,
        key: &[u8],
        value: V,
        now: Instant,
        size: usize,
    ) -> Option<V> {
        self.bytes += size;
        let index = self.db_index(db).unwrap_or_else(|| {
            self.dbs.push((db, NameMap::default()));
            self.dbs.len() - 1
        });
        let entry = Entry {
            value,
            at: now,
            size,
            older: None,
            newer: None,
        };
        let (pos, old) = self.dbs[index].1.upsert(key, entry);
        let link = (index as u32, pos as u32);
        match &old {
            Some(old) => {
                self.bytes -= old.size;
                // The same slot: its neighbours still point at it.
                self.join(old.older, old.newer);
            }
            None => self.len += 1,
        }
        self.link_newest(link);
        old.map(|e| e.value)
    }

    /// Takes the entry of `key` in `db` out, with the time it was added.
    pub fn remove(&mut self, db: usize, key: &[u8]) -> Option<(V, Instant)> {
        let index = self.db_index(db)?;
        let e = self.dbs[index].1.remove(key)?;
        self.join(e.older, e.newer);
        self.bytes -= e.size;
        self.len -= 1;
        Some((e.value, e.at))
    }

    /// Drops the entries added `ttl` or longer before `now`; returns how many.
    pub fn expire(&mut self, now: Instant, ttl: Duration) -> usize {
        let mut expired = 0;
        while let Some(link) = self.oldest {
            let lapsed = self
                .entry(link)
                .is_some_and(|e| now.saturating_duration_since(e.at) >= ttl);
            if !lapsed {
                break;
            }
            let (db, pos) = link;
            let taken = self
                .dbs
                .get_mut(db as usize)
                .and_then(|(_, d)| d.take_at(pos as usize));
            let Some((_, e)) = taken else {
                // A link to no entry would be a bug; start the order afresh rather than loop.
                self.oldest = None;
                self.newest = None;
                break;
            };
            self.join(None, e.newer);
            self.bytes -= e.size;
            self.len -= 1;
            expired += 1;
        }
        expired
    }

    /// When the oldest entry lapses, given `ttl`; None when empty.
    pub fn next_expiry(&self, ttl: Duration) -> Option<Instant> {
        self.oldest.and_then(|l| self.entry(l)).map(|e| e.at + ttl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(30);

    #[test]
    fn entries_lapse_after_the_ttl_and_not_before() {
        let t0 = Instant::now();
        let mut m = ExpiringMap::new();
        m.insert(0, b"a", 1, t0, 10);
        m.insert(0, b"b", 2, t0 + Duration::from_secs(10), 20);
        assert_eq!((m.len(), m.bytes()), (2, 30));
        assert_eq!(m.expire(t0 + Duration::from_secs(29), TTL), 0);
        assert_eq!(m.next_expiry(TTL), Some(t0 + TTL));
        assert_eq!(m.expire(t0 + TTL, TTL), 1);
        assert_eq!((m.len(), m.bytes()), (1, 20));
        assert!(m.remove(0, b"a").is_none());
        assert_eq!(m.expire(t0 + Duration::from_secs(40), TTL), 1);
        assert!(m.is_empty());
        assert_eq!((m.bytes(), m.next_expiry(TTL)), (0, None));
    }

    #[test]
    fn an_entry_added_again_lives_from_its_new_time() {
        let t0 = Instant::now();
        let mut m = ExpiringMap::new();
        m.insert(0, b"a", 1, t0, 10);
        let old = m.insert(0, b"a", 2, t0 + Duration::from_secs(20), 15);
        assert_eq!(old, Some(1));
        assert_eq!((m.len(), m.bytes()), (1, 15));
        // The first line lapses without taking the new entry.
        assert_eq!(m.expire(t0 + TTL, TTL), 0);
        assert_eq!(m.remove(0, b"a"), Some((2, t0 + Duration::from_secs(20))));
        assert_eq!(m.bytes(), 0);
    }

    #[test]
    fn a_slot_reused_by_another_key_is_not_expired_by_the_old_line() {
        let t0 = Instant::now();
        let mut m = ExpiringMap::new();
        m.insert(0, b"keep", 0, t0, 1);
        m.insert(0, b"a", 1, t0, 1);
        assert_eq!(m.remove(0, b"a"), Some((1, t0)));
        // "b" takes the slot "a" left, later: a's line, which lapses first, must not take it.
        m.insert(0, b"b", 2, t0 + Duration::from_secs(20), 1);
        assert_eq!(m.expire(t0 + TTL, TTL), 1, "only keep");
        assert_eq!(m.len(), 1);
        assert_eq!(m.remove(0, b"b"), Some((2, t0 + Duration::from_secs(20))));
    }

    #[test]
    fn the_same_name_in_two_databases_is_two_entries() {
        let t0 = Instant::now();
        let mut m = ExpiringMap::new();
        m.insert(0, b"k", "db0", t0, 1);
        m.insert(9, b"k", "db9", t0 + Duration::from_secs(5), 1);
        assert_eq!(m.len(), 2);
        assert_eq!(m.expire(t0 + TTL, TTL), 1);
        assert_eq!(m.remove(0, b"k"), None);
        assert_eq!(
            m.remove(9, b"k"),
            Some(("db9", t0 + Duration::from_secs(5)))
        );
        assert!(m.remove(3, b"k").is_none(), "a database never used");
        // A number from another node's message is listed, not used as an index.
        m.insert(u32::MAX as usize, b"k", "far", t0, 1);
        assert_eq!(m.dbs.len(), 3, "0, 9 and this one");
        assert_eq!(m.remove(u32::MAX as usize, b"k"), Some(("far", t0)));
    }

    #[test]
    fn keys_that_come_again_keep_one_place_each_in_the_order() {
        let t0 = Instant::now();
        let mut m = ExpiringMap::new();
        for i in 0..100_000u32 {
            m.insert(0, format!("k{}", i % 10).as_bytes(), i, t0, 1);
        }
        assert_eq!((m.len(), m.bytes()), (10, 10));
        assert_eq!(m.dbs[0].1.positions(), 10, "no slot beyond the ten keys");
        assert_eq!(m.expire(t0 + TTL, TTL), 10);
        assert!(m.is_empty() && m.oldest.is_none() && m.newest.is_none());
    }

    /// Random inserts, re-inserts, removals and expiries in three databases, against a plain
    /// model: after every step the same entries, bytes and next expiry, and the order walks
    /// every entry once from oldest to newest.
    #[test]
    fn the_order_follows_a_model_through_random_operations() {
        use std::collections::HashMap;
        let t0 = Instant::now();
        let ttl = Duration::from_millis(500);
        let mut m = ExpiringMap::new();
        let mut model: HashMap<(usize, Vec<u8>), (u64, Instant, usize)> = HashMap::new();
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut now = t0;
        for step in 0..20_000u64 {
            now += Duration::from_millis(next() % 3);
            let db = [0usize, 5, 1 << 40][(next() % 3) as usize];
            let key = format!("k{}", next() % 200).into_bytes();
            match next() % 10 {
                0..=5 => {
                    let size = (next() % 100) as usize;
                    let old = m.insert(db, &key, step, now, size);
                    let was = model.insert((db, key), (step, now, size));
                    assert_eq!(old, was.map(|w| w.0));
                }
                6 | 7 => {
                    let got = m.remove(db, &key);
                    let was = model.remove(&(db, key));
                    assert_eq!(got, was.map(|w| (w.0, w.1)));
                }
                _ => {
                    let n = m.expire(now, ttl);
                    let before = model.len();
                    model.retain(|_, v| now.saturating_duration_since(v.1) < ttl);
                    assert_eq!(n, before - model.len());
                }
            }
            assert_eq!(m.len(), model.len());
            assert_eq!(m.bytes(), model.values().map(|v| v.2).sum::<usize>());
            let oldest = model.values().map(|v| v.1).min();
            assert_eq!(m.next_expiry(ttl), oldest.map(|at| at + ttl));
            // The order, walked from the oldest, holds every entry once, in time order.
            let mut walked = 0;
            let mut link = m.oldest;
            let mut last = None;
            while let Some(l) = link {
                let e = m.entry(l).expect("a link to a live entry");
                assert!(last.is_none_or(|t| t <= e.at));
                last = Some(e.at);
                walked += 1;
                link = e.newer;
            }
            assert_eq!(walked, model.len());
        }
    }
}
