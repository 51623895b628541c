//! A map whose entries lapse a fixed time after they were added.
//!
//! The module keeps short-lived bookkeeping about keys in flight between cluster nodes: the
//! tags a target holds for keys that have not arrived yet, and, on Redis 7.0, the keys a
//! MIGRATE left behind that may still move at an EXEC. Each entry matters for some seconds
//! and then must go, whether or not anything asked for it, and the whole has a byte bound.
//! Entries are kept in insertion order beside the map, so that expiring costs only the
//! entries that lapse: an entry added again leaves its old line in the order until that line
//! comes up (each insertion is numbered, and only the line with the entry's number removes
//! it), and the order is compacted when such lines outnumber the live entries.
//!
//! Why not a hash map by (db, name), with the names again in the order: the map grew all at
//! once and the compaction hashed every line's name. With 335,000 entries of 200 bytes (the
//! 64 MiB bound) the longest insert took 111 ms (a growth), and 253 ms when the same keys
//! came again (a compaction), timed on the structure alone. The entries now live in a
//! [`NameMap`] per database, which grows a few buckets per write and whose slots never move,
//! so an order line is a slot position and a number, checked without hashing: 0.3 ms and
//! 6.5 ms the same way. The databases are listed by number, not indexed by it: the held tags'
//! database comes from another node's message, and a number from there must not size
//! anything.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::name_map::NameMap;

/// Entries of `V` by database and key name, each with the time it was added and the bytes
/// it weighs.
#[derive(Debug)]
pub struct ExpiringMap<V> {
    /// Each database used so far, by number, in the order first used (never removed, so a
    /// line's index into it stays valid).
    dbs: Vec<(usize, NameMap<Entry<V>>)>,
    /// Every insertion, oldest first.
    order: VecDeque<Line>,
    len: usize,
    bytes: usize,
    /// The number of the next insertion.
    next_seq: u64,
}

#[derive(Debug)]
struct Entry<V> {
    value: V,
    at: Instant,
    seq: u64,
    size: usize,
}

/// One insertion in the order: when, its number, and where its entry went (an index into
/// `dbs`, a position in that map).
#[derive(Debug, Clone, Copy)]
struct Line {
    at: Instant,
    seq: u64,
    db: usize,
    pos: usize,
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
            order: VecDeque::new(),
            len: 0,
            bytes: 0,
            next_seq: 0,
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

    /// The sum of the sizes the entries were added with.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether `line` is the insertion of the entry now at its position (not replaced or
    /// removed since, its slot not reused).
    fn is_live(dbs: &[(usize, NameMap<Entry<V>>)], line: &Line) -> bool {
        dbs.get(line.db)
            .and_then(|(_, d)| d.at(line.pos))
            .is_some_and(|(_, e)| e.seq == line.seq)
    }

    /// The index of database `db` in `dbs`, if it was used.
    fn db_index(&self, db: usize) -> Option<usize> {
        self.dbs.iter().position(|(n, _)| *n == db)
    }

    /// Adds `value` under `key` of `db` at `now`, weighing `size` bytes; returns the value it
    /// replaces. The caller checks its byte bound against [`bytes`](Self::bytes) first.
    pub fn insert(
        &mut self,
        db: usize,
        key: &[u8],
        value: V,
        now: Instant,
        size: usize,
    ) -> Option<V> {
        self.bytes += size;
        let seq = self.next_seq;
        self.next_seq += 1;
        let index = self.db_index(db).unwrap_or_else(|| {
            self.dbs.push((db, NameMap::default()));
            self.dbs.len() - 1
        });
        let entry = Entry {
            value,
            at: now,
            seq,
            size,
        };
        let (pos, old) = self.dbs[index].1.upsert(key, entry);
        match &old {
            Some(old) => self.bytes -= old.size,
            None => self.len += 1,
        }
        self.order.push_back(Line {
            at: now,
            seq,
            db: index,
            pos,
        });
        if self.order.len() > 2 * self.len + 1024 {
            let dbs = &self.dbs;
            self.order.retain(|line| Self::is_live(dbs, line));
        }
        old.map(|e| e.value)
    }

    /// Takes the entry of `key` in `db` out, with the time it was added.
    pub fn remove(&mut self, db: usize, key: &[u8]) -> Option<(V, Instant)> {
        let index = self.db_index(db)?;
        let e = self.dbs[index].1.remove(key)?;
        self.bytes -= e.size;
        self.len -= 1;
        if self.len == 0 {
            self.order.clear();
        }
        Some((e.value, e.at))
    }

    /// Drops the entries added `ttl` or longer before `now`; returns how many.
    pub fn expire(&mut self, now: Instant, ttl: Duration) -> usize {
        let mut expired = 0;
        while let Some(line) = self.order.front().copied() {
            if now.saturating_duration_since(line.at) < ttl {
                break;
            }
            if Self::is_live(&self.dbs, &line) {
                if let Some((_, e)) = self.dbs[line.db].1.take_at(line.pos) {
                    self.bytes -= e.size;
                    self.len -= 1;
                    expired += 1;
                }
            }
            self.order.pop_front();
        }
        if self.len == 0 {
            self.order.clear();
        }
        expired
    }

    /// When the oldest line in the order lapses, given `ttl` (a line replaced since may come
    /// first: expiring then finds nothing and the next call looks further); None when empty.
    pub fn next_expiry(&self, ttl: Duration) -> Option<Instant> {
        self.order.front().map(|line| line.at + ttl)
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
    fn the_order_stays_bounded_when_the_same_keys_come_again() {
        let t0 = Instant::now();
        let mut m = ExpiringMap::new();
        for i in 0..100_000u32 {
            m.insert(0, format!("k{}", i % 10).as_bytes(), i, t0, 1);
        }
        assert_eq!((m.len(), m.bytes()), (10, 10));
        assert!(m.order.len() <= 2 * 10 + 1024 + 1, "{}", m.order.len());
        assert_eq!(m.expire(t0 + TTL, TTL), 10);
        assert!(m.is_empty() && m.order.is_empty());
    }
}
