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

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Entries of `V` by `K`, each with the time it was added and the bytes it weighs.
#[derive(Debug)]
pub struct ExpiringMap<K, V> {
    entries: HashMap<K, Entry<V>>,
    /// Every insertion, oldest first: its time, its number and its key.
    order: VecDeque<(Instant, u64, K)>,
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

impl<K: Hash + Eq + Clone, V> Default for ExpiringMap<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Hash + Eq + Clone, V> ExpiringMap<K, V> {
    /// An empty map.
    pub fn new() -> Self {
        ExpiringMap {
            entries: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            next_seq: 0,
        }
    }

    /// Entries in the map.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The sum of the sizes the entries were added with.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Adds `value` under `key` at `now`, weighing `size` bytes; returns the value it
    /// replaces. The caller checks its byte bound against [`bytes`](Self::bytes) first.
    pub fn insert(&mut self, key: K, value: V, now: Instant, size: usize) -> Option<V> {
        self.bytes += size;
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.push_back((now, seq, key.clone()));
        let old = self.entries.insert(
            key,
            Entry {
                value,
                at: now,
                seq,
                size,
            },
        );
        if let Some(old) = &old {
            self.bytes -= old.size;
        }
        if self.order.len() > 2 * self.entries.len() + 1024 {
            let entries = &self.entries;
            self.order
                .retain(|(_, seq, key)| entries.get(key).is_some_and(|e| e.seq == *seq));
        }
        old.map(|e| e.value)
    }

    /// Takes the entry of `key` out, with the time it was added.
    pub fn remove(&mut self, key: &K) -> Option<(V, Instant)> {
        let e = self.entries.remove(key)?;
        self.bytes -= e.size;
        if self.entries.is_empty() {
            self.order.clear();
        }
        Some((e.value, e.at))
    }

    /// Drops the entries added `ttl` or longer before `now`; returns how many.
    pub fn expire(&mut self, now: Instant, ttl: Duration) -> usize {
        let mut expired = 0;
        while let Some((at, seq, key)) = self.order.front() {
            if now.saturating_duration_since(*at) < ttl {
                break;
            }
            if self.entries.get(key).is_some_and(|e| e.seq == *seq) {
                if let Some(e) = self.entries.remove(key) {
                    self.bytes -= e.size;
                    expired += 1;
                }
            }
            self.order.pop_front();
        }
        if self.entries.is_empty() {
            self.order.clear();
        }
        expired
    }

    /// When the oldest line in the order lapses, given `ttl` (a line replaced since may come
    /// first: expiring then finds nothing and the next call looks further); None when empty.
    pub fn next_expiry(&self, ttl: Duration) -> Option<Instant> {
        self.order.front().map(|(at, _, _)| *at + ttl)
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
        m.insert("a", 1, t0, 10);
        m.insert("b", 2, t0 + Duration::from_secs(10), 20);
        assert_eq!((m.len(), m.bytes()), (2, 30));
        assert_eq!(m.expire(t0 + Duration::from_secs(29), TTL), 0);
        assert_eq!(m.next_expiry(TTL), Some(t0 + TTL));
        assert_eq!(m.expire(t0 + TTL, TTL), 1);
        assert_eq!((m.len(), m.bytes()), (1, 20));
        assert!(m.remove(&"a").is_none());
        assert_eq!(m.expire(t0 + Duration::from_secs(40), TTL), 1);
        assert!(m.is_empty());
        assert_eq!((m.bytes(), m.next_expiry(TTL)), (0, None));
    }

    #[test]
    fn an_entry_added_again_lives_from_its_new_time() {
        let t0 = Instant::now();
        let mut m = ExpiringMap::new();
        m.insert("a", 1, t0, 10);
        let old = m.insert("a", 2, t0 + Duration::from_secs(20), 15);
        assert_eq!(old, Some(1));
        assert_eq!((m.len(), m.bytes()), (1, 15));
        // The first line lapses without taking the new entry.
        assert_eq!(m.expire(t0 + TTL, TTL), 0);
        assert_eq!(m.remove(&"a"), Some((2, t0 + Duration::from_secs(20))));
        assert_eq!(m.bytes(), 0);
    }

    #[test]
    fn the_order_stays_bounded_when_the_same_keys_come_again() {
        let t0 = Instant::now();
        let mut m = ExpiringMap::new();
        for i in 0..100_000u32 {
            m.insert(i % 10, i, t0, 1);
        }
        assert_eq!((m.len(), m.bytes()), (10, 10));
        assert!(m.order.len() <= 2 * 10 + 1024 + 1, "{}", m.order.len());
        assert_eq!(m.expire(t0 + TTL, TTL), 10);
        assert!(m.is_empty() && m.order.is_empty());
    }
}
