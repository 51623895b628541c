//! A map from names (key names, chosen by clients) to values, for the module's per-key tables
//! that grow with the data: the freshness of values written with DELTA/STALE, the
//! single-flight locks of OPT.FETCH, and the bookkeeping of keys in flight between cluster
//! nodes (`crate::expiring`).
//!
//! Why not a hash map: a hash map grows all at once, in the one write that crosses its size,
//! and the server waits for it. At four million keys written with DELTA one OPT.SET held the
//! server 168 ms, then 331 ms at the next doubling; four million OPT.FETCH locks, 358 ms
//! (SLOWLOG). Here entries sit in fixed chunks of slots that never move (a freed slot is
//! reused), found through an [`IdTable`], which grows a bounded number of buckets per write.
//! Slots that never move also let a caller walk the map by position in slices while entries
//! come and go: every entry present through the whole walk is seen once.

use crate::chunked::Chunked;
use crate::idtable::IdTable;
use crate::tags::name_hash;

/// Names to values of `V`, in slots that never move.
#[derive(Debug, Clone)]
pub(crate) struct NameMap<V> {
    slots: Chunked<Option<(Box<[u8]>, V)>>,
    /// Slots freed for reuse, in chunks: a vector would copy millions of ids in one removal.
    free: Chunked<u32>,
    by_name: IdTable,
}

impl<V> Default for NameMap<V> {
    fn default() -> Self {
        NameMap {
            slots: Chunked::new(),
            free: Chunked::new(),
            by_name: IdTable::default(),
        }
    }
}

impl<V> NameMap<V> {
    /// Entries held.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Slots and name-table buckets allocated.
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.slots.len() + self.by_name.capacity()
    }

    /// Positions a walk goes through: `0..positions()`, some of them empty.
    pub fn positions(&self) -> usize {
        self.slots.len()
    }

    fn find(&self, name: &[u8], hash: u64) -> Option<u32> {
        let slots = &self.slots;
        self.by_name.find(hash, |id| {
            slots[id as usize]
                .as_ref()
                .is_some_and(|(n, _)| **n == *name)
        })
    }

    /// The value of `name`.
    pub fn get(&self, name: &[u8]) -> Option<&V> {
        let id = self.find(name, name_hash(name))?;
        self.slots[id as usize].as_ref().map(|(_, v)| v)
    }

    /// The value of `name`, to change in place.
    pub fn get_mut(&mut self, name: &[u8]) -> Option<&mut V> {
        let id = self.find(name, name_hash(name))?;
        self.slots[id as usize].as_mut().map(|(_, v)| v)
    }

    /// Sets the value of `name`; returns the one it had.
    pub fn insert(&mut self, name: &[u8], value: V) -> Option<V> {
        self.upsert(name, value).1
    }

    /// Sets the value of `name`; returns its position (see [`Self::at`]) and the value it had.
    pub fn upsert(&mut self, name: &[u8], value: V) -> (usize, Option<V>) {
        let hash = name_hash(name);
        if let Some(id) = self.find(name, hash) {
            if let Some(slot) = self.slots[id as usize].as_mut() {
                return (id as usize, Some(std::mem::replace(&mut slot.1, value)));
            }
        }
        let entry = Some((Box::from(name), value));
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = entry;
                id
            }
            None => {
                self.slots.push(entry);
                (self.slots.len() - 1) as u32
            }
        };
        self.by_name.insert_unique(hash, id);
        (id as usize, None)
    }

    /// Takes out `name`; returns its value.
    pub fn remove(&mut self, name: &[u8]) -> Option<V> {
        let slots = &self.slots;
        let id = self.by_name.remove(name_hash(name), |id| {
            slots[id as usize]
                .as_ref()
                .is_some_and(|(n, _)| **n == *name)
        })?;
        self.release(id).map(|(_, v)| v)
    }

    /// The entry at position `pos`, if that slot holds one.
    pub fn at(&self, pos: usize) -> Option<(&[u8], &V)> {
        self.slots.get(pos)?.as_ref().map(|(name, v)| (&**name, v))
    }

    /// The value at position `pos`, to change in place, if that slot holds one.
    pub fn at_mut(&mut self, pos: usize) -> Option<&mut V> {
        if pos >= self.slots.len() {
            return None;
        }
        self.slots[pos].as_mut().map(|(_, v)| v)
    }

    /// Takes out the entry at position `pos`, if that slot holds one; no other entry moves.
    pub fn take_at(&mut self, pos: usize) -> Option<(Box<[u8]>, V)> {
        let hash = name_hash(&self.slots.get(pos)?.as_ref()?.0);
        let id = pos as u32;
        self.by_name.remove(hash, |found| found == id)?;
        self.release(id)
    }

    /// Empties slot `id` (already out of the name table) for reuse; returns what it held.
    fn release(&mut self, id: u32) -> Option<(Box<[u8]>, V)> {
        let taken = self.slots[id as usize].take();
        self.free.push(id);
        taken
    }

    /// Every entry, in position order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &V)> {
        self.slots
            .iter()
            .filter_map(|s| s.as_ref().map(|(name, v)| (&**name, v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Names written, rewritten and removed, by name and by position, with freed slots reused,
    /// match a plain map through the name table's growths; positions never move.
    #[test]
    fn matches_a_map_as_names_come_go_and_slots_are_reused() {
        let mut map: NameMap<u64> = NameMap::default();
        let mut model: HashMap<Vec<u8>, u64> = HashMap::new();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for step in 0..30_000u64 {
            crate::test_rng::xorshift(&mut x);
            let name = format!("key:{}", x % 5_000).into_bytes();
            match x % 8 {
                0 | 1 => assert_eq!(map.remove(&name), model.remove(&name), "step {step}"),
                2 => {
                    let pos = (x >> 8) as usize % map.positions().max(1);
                    let before = map.at(pos).map(|(n, v)| (n.to_vec(), *v));
                    let taken = map.take_at(pos).map(|(n, v)| (n.into_vec(), v));
                    assert_eq!(taken, before, "step {step}");
                    if let Some((n, _)) = taken {
                        model.remove(&n);
                    }
                }
                3 => {
                    if let Some(v) = map.get_mut(&name) {
                        *v += 1;
                        *model.get_mut(&name).unwrap() += 1;
                    }
                }
                _ => assert_eq!(map.insert(&name, step), model.insert(name.clone(), step)),
            }
            assert_eq!(map.get(&name), model.get(&name), "step {step}");
            assert_eq!(map.len(), model.len());
        }
        let listed: HashMap<Vec<u8>, u64> = map.iter().map(|(n, v)| (n.to_vec(), *v)).collect();
        assert_eq!(listed, model);
        assert!(map.positions() < 5_000, "freed slots are reused");
        // Positions never move: each entry is where a walk found it, after others left.
        let where_now: Vec<(usize, Vec<u8>)> = (0..map.positions())
            .filter_map(|p| map.at(p).map(|(n, _)| (p, n.to_vec())))
            .collect();
        for (p, n) in where_now.iter().step_by(3) {
            assert!(map.take_at(*p).is_some());
            model.remove(n);
        }
        for (p, n) in where_now.iter().skip(1).step_by(3) {
            assert_eq!(map.at(*p).map(|(name, _)| name), Some(&n[..]));
        }
        assert_eq!(map.len(), model.len());
    }
}
