//! The tables that find a slot id from a 64-bit hash: names in the tag index and its maps
//! ([`IdTable`], which grows), keys in the hot-key summary ([`FixedIdTable`], which never does).
//!
//! Why not hashbrown's `HashTable`: finding a key there is three dependent cache misses (the
//! control bytes, the id beside them, then the slot the id names, to compare the name), and a
//! caller cannot start them early. OPT.SET pays them on every write, on top of the server's own
//! lookup of the same key, and perf showed that lookup at 13% of the server's CPU; the hot-key
//! filter pays them on every recorded command. Here a
//! bucket is one `u64` (the hash's low 32 bits and the id), at a position a caller can compute
//! and prefetch before the server looks the key up, so that the misses overlap with the
//! server's ([`IdTable::bucket_address`], [`IdTable::first_candidate`]).
//!
//! Linear probing from the bucket the stored 32 bits name, with backward-shift deletion (no
//! tombstones in the table in use), growing at 3/4 load. The stored 32 bits give each entry's
//! home bucket, so growing never rehashes a name, and they filter candidates before a name is
//! compared. They are the caller's hash mixed with the process's secret
//! ([`crate::hash_secret`]): callers hash client-chosen names with a public function, and a
//! table placed by that hash alone could be filled with names aimed at one bucket.
//!
//! Growing moves the entries a bounded number of buckets at a time, as Redis' own dictionaries
//! rehash: the table of twice the size takes new entries at once, and each later insert or
//! removal moves [`MOVE_PER_WRITE`] buckets of the old one. Moving them all in the insert that
//! crossed the load made one OPT.SET hold the server 59 to 66 ms at six million tagged keys
//! (SLOWLOG), twice that at each doubling. While the old table is being emptied, lookups read
//! both; an entry removed from the part of the old table not yet moved leaves a tombstone
//! there, so that the old table's probe runs stay whole until it is dropped.
//!
//! The hot-key summary's table is sized once for its capacity and looks a key up on every
//! recorded command, so it has a type of its own without any of that: with the growing table
//! there, the module's filter ran 566 instructions a recorded GET or SET instead of 516 (at
//! `opt.hotkeys-sample-ratio 1`, `benches/hotkeys_cost.sh 100000 300000`, its module column),
//! as the compiler stopped inlining the lookup and the prefetch; 515 with this type.

use crate::hash_secret::{keyed_tag, process_secret};

/// Ids by name hash; the caller compares names (through `eq`) and keeps the names.
#[derive(Debug, Clone)]
pub struct IdTable {
    /// 0: empty; else the entry's tag (its hash mixed with `secret`) above, id + 1 below.
    buckets: Vec<u64>,
    /// While growing: the table before, whose buckets below `moved` were copied into
    /// `buckets` (the copies left there are never read again); empty otherwise.
    old: Vec<u64>,
    /// Buckets of `old` copied so far.
    moved: usize,
    /// Entries held, in both tables.
    len: usize,
    /// [`crate::hash_secret::process_secret`], copied here where lookups read it anyway.
    secret: u64,
}

impl Default for IdTable {
    fn default() -> Self {
        IdTable {
            buckets: Vec::new(),
            old: Vec::new(),
            moved: 0,
            len: 0,
            secret: process_secret(),
        }
    }
}

const EMPTY: u64 = 0;
/// An entry removed from the old table before it was moved: not empty (probe runs go on past
/// it), and not live (its low half, id + 1, is 0, which no entry has).
const TOMBSTONE: u64 = 1 << 32;
const MIN_BUCKETS: usize = 16;
/// Buckets of the old table each insert or removal moves while the table grows: 1 KB read in
/// order and about a hundred entries placed, around a microsecond. Both tables are held until
/// the old one is emptied, which takes N/128 writes of the 3N/4 inserts between two growths
/// of an N-bucket table: 1% of the time (4 buckets a write held both a third of the time, and
/// `tags_bench 1` measured 36.6 bytes a pair, 33.1 now, 33.4 when tables grew at once).
/// The new table (2N buckets) is then far under its own 3/4 load, which would start the next
/// growth.
pub const MOVE_PER_WRITE: usize = 128;

fn pack(tag: u32, id: u32) -> u64 {
    (u64::from(tag) << 32) | (u64::from(id) + 1)
}

fn id_of(bucket: u64) -> u32 {
    (bucket as u32).wrapping_sub(1)
}

fn tag_of(bucket: u64) -> u32 {
    (bucket >> 32) as u32
}

fn is_live(bucket: u64) -> bool {
    bucket as u32 != 0
}

/// Where an entry sits.
#[derive(Debug, Clone, Copy)]
enum Place {
    Current(usize),
    Old(usize),
}

impl IdTable {
    /// Entries held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Buckets allocated (8 bytes each), the old table's included while the table grows.
    pub fn capacity(&self) -> usize {
        self.buckets.len() + self.old.len()
    }

    /// Whether entries are still being moved out of the table before the last growth.
    fn is_growing(&self) -> bool {
        !self.old.is_empty()
    }

    /// The 32 bits stored for `hash`: it mixed with the secret.
    fn tag(&self, hash: u64) -> u32 {
        keyed_tag(hash, self.secret)
    }

    /// The id whose hash is `hash` and for which `eq` holds, if any.
    #[inline]
    pub fn find(&self, hash: u64, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        self.locate(hash, &mut eq).map(|p| id_of(self.bucket(p)))
    }

    fn bucket(&self, p: Place) -> u64 {
        match p {
            Place::Current(i) => self.buckets[i],
            Place::Old(i) => self.old[i],
        }
    }

    /// Where the entry is. The table in use is probed as a table that never grows would be
    /// (no tombstone, nothing to pass over); the old table only while one grows, out of line.
    #[inline]
    fn locate(&self, hash: u64, eq: &mut impl FnMut(u32) -> bool) -> Option<Place> {
        if self.buckets.is_empty() {
            return None;
        }
        let tag = self.tag(hash);
        if let Some(i) = probe(&self.buckets, tag, eq) {
            return Some(Place::Current(i));
        }
        if self.old.is_empty() {
            return None;
        }
        self.locate_in_old(tag, eq)
    }

    #[cold]
    #[inline(never)]
    fn locate_in_old(&self, tag: u32, eq: &mut impl FnMut(u32) -> bool) -> Option<Place> {
        probe_old(&self.old, tag, self.moved, eq).map(Place::Old)
    }

    /// Adds `id` under `hash`; the caller knows no equal entry is there.
    ///
    /// # Panics
    /// If `id` is `u32::MAX` (it is stored plus one).
    pub fn insert_unique(&mut self, hash: u64, id: u32) {
        assert!(id != u32::MAX, "IdTable ids stop below u32::MAX");
        self.move_some();
        if (self.len + 1) * 4 > self.buckets.len() * 3 {
            self.grow();
        }
        let bucket = pack(self.tag(hash), id);
        place(&mut self.buckets, bucket);
        self.len += 1;
    }

    /// Starts growing: a table of twice the size takes new entries, and the entries of this one
    /// move there [`MOVE_PER_WRITE`] buckets at a time.
    fn grow(&mut self) {
        // Only an insert pattern the bound above rules out could cross the load again before
        // the last growth ended; finish that one first rather than stack two.
        while self.is_growing() {
            self.move_some();
        }
        let size = (self.buckets.len() * 2).max(MIN_BUCKETS);
        self.old = std::mem::replace(&mut self.buckets, vec![EMPTY; size]);
        self.moved = 0;
    }

    /// Moves the next [`MOVE_PER_WRITE`] buckets of the old table, if the table is growing.
    fn move_some(&mut self) {
        if self.old.is_empty() {
            return;
        }
        let end = (self.moved + MOVE_PER_WRITE).min(self.old.len());
        for i in self.moved..end {
            let b = self.old[i];
            if is_live(b) {
                place(&mut self.buckets, b);
            }
        }
        self.moved = end;
        if self.moved == self.old.len() {
            self.old = Vec::new();
            self.moved = 0;
        }
    }

    /// Removes the entry whose hash is `hash` and for which `eq` holds; returns its id.
    pub fn remove(&mut self, hash: u64, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        let found = self.locate(hash, &mut eq)?;
        let id = id_of(self.bucket(found));
        match found {
            Place::Current(i) => remove_at(&mut self.buckets, i),
            // The old table is only read until it is dropped: a tombstone keeps its runs whole.
            Place::Old(i) => self.old[i] = TOMBSTONE,
        }
        self.len -= 1;
        self.move_some();
        Some(id)
    }

    /// Buckets a table rebuilt for `n` entries has: the smallest power of two holding them
    /// under the growth load (3/4).
    pub fn buckets_for(n: usize) -> usize {
        (n * 4).div_ceil(3).max(MIN_BUCKETS).next_power_of_two()
    }

    /// Keeps only the entries whose id `keep` accepts, in a table sized for them: one pass over
    /// the buckets in memory order, where removing entries one at a time reads a random bucket
    /// for each (and shifts its run back). For a caller dropping many entries at once; the room
    /// of the dropped ones is given back.
    pub fn retain(&mut self, mut keep: impl FnMut(u32) -> bool) {
        let not_moved = self.old.get(self.moved..).unwrap_or_default();
        let kept: Vec<u64> = self
            .buckets
            .iter()
            .chain(not_moved)
            .copied()
            .filter(|&b| is_live(b) && keep(id_of(b)))
            .collect();
        self.old = Vec::new();
        self.moved = 0;
        self.len = kept.len();
        if kept.is_empty() {
            self.buckets = Vec::new();
            return;
        }
        self.buckets = vec![EMPTY; Self::buckets_for(kept.len())];
        for b in kept {
            place(&mut self.buckets, b);
        }
    }

    /// The address of the bucket a lookup of `hash` reads first, for a caller to prefetch;
    /// None while the table is empty. While the table grows, that of the table the entry is in
    /// if it is there at all: the old one until its home bucket has been moved.
    #[inline]
    pub fn bucket_address(&self, hash: u64) -> Option<*const u8> {
        if self.buckets.is_empty() {
            return None;
        }
        let tag = self.tag(hash);
        if !self.old.is_empty() {
            return Some(self.bucket_address_growing(tag));
        }
        Some(
            self.buckets
                .as_ptr()
                .wrapping_add(home(&self.buckets, tag))
                .cast(),
        )
    }

    #[cold]
    #[inline(never)]
    fn bucket_address_growing(&self, tag: u32) -> *const u8 {
        let old_home = home(&self.old, tag);
        let bucket = if old_home >= self.moved {
            self.old.as_ptr().wrapping_add(old_home)
        } else {
            self.buckets.as_ptr().wrapping_add(home(&self.buckets, tag))
        };
        bucket.cast()
    }

    /// The id of the first entry in `hash`'s probe sequence whose stored bits match: the entry
    /// a lookup will compare first, so its slot is the one to prefetch. Reads the buckets (call
    /// it once they were prefetched).
    pub fn first_candidate(&self, hash: u64) -> Option<u32> {
        let mut first = None;
        self.locate(hash, &mut |id| {
            first = Some(id);
            true
        });
        first
    }
}

/// Ids by name hash in a table of a fixed size, for a caller that never holds more than 3/4
/// of its buckets (the hot-key summary: at most its capacity, in four times as many buckets).
/// The same buckets, probing and removal as the table [`IdTable`] uses, without growth.
#[derive(Debug, Clone)]
pub struct FixedIdTable {
    /// 0: empty; else the entry's tag above, id + 1 below (as in [`IdTable`]).
    buckets: Vec<u64>,
    len: usize,
    /// [`crate::hash_secret::process_secret`].
    secret: u64,
}

impl FixedIdTable {
    /// An empty table of `n` buckets rounded up to a power of two (at least 16).
    pub fn with_buckets(n: usize) -> Self {
        FixedIdTable {
            buckets: vec![EMPTY; n.max(MIN_BUCKETS).next_power_of_two()],
            len: 0,
            secret: process_secret(),
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the table holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Buckets allocated (8 bytes each).
    pub fn capacity(&self) -> usize {
        self.buckets.len()
    }

    /// The id whose hash is `hash` and for which `eq` holds, if any.
    #[inline]
    pub fn find(&self, hash: u64, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        let tag = keyed_tag(hash, self.secret);
        probe(&self.buckets, tag, &mut eq).map(|i| id_of(self.buckets[i]))
    }

    /// Adds `id` under `hash`; the caller knows no equal entry is there.
    ///
    /// # Panics
    /// If the table would be more than 3/4 full (a caller that sized it wrongly: a full table
    /// would have no empty bucket to end a probe), or `id` is `u32::MAX`.
    pub fn insert_unique(&mut self, hash: u64, id: u32) {
        assert!(id != u32::MAX, "FixedIdTable ids stop below u32::MAX");
        assert!(
            (self.len + 1) * 4 <= self.buckets.len() * 3,
            "FixedIdTable of {} buckets over 3/4 full",
            self.buckets.len()
        );
        place(&mut self.buckets, pack(keyed_tag(hash, self.secret), id));
        self.len += 1;
    }

    /// Removes the entry whose hash is `hash` and for which `eq` holds; returns its id.
    pub fn remove(&mut self, hash: u64, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        let tag = keyed_tag(hash, self.secret);
        let found = probe(&self.buckets, tag, &mut eq)?;
        let id = id_of(self.buckets[found]);
        remove_at(&mut self.buckets, found);
        self.len -= 1;
        Some(id)
    }

    /// The address of the bucket a lookup of `hash` reads first, for a caller to prefetch.
    #[inline]
    pub fn bucket_address(&self, hash: u64) -> *const u8 {
        let tag = keyed_tag(hash, self.secret);
        self.buckets
            .as_ptr()
            .wrapping_add(home(&self.buckets, tag))
            .cast()
    }
}

/// The bucket of `table` (a power of two of them, or none) where runs for `tag` start.
fn home(table: &[u64], tag: u32) -> usize {
    tag as usize & table.len().wrapping_sub(1)
}

/// The position in `table` (the table in use: no tombstones) of the entry with `tag` for which
/// `eq` holds, probing from its home bucket to the first empty one.
#[inline]
fn probe(table: &[u64], tag: u32, eq: &mut impl FnMut(u32) -> bool) -> Option<usize> {
    let mask = table.len() - 1;
    let mut i = home(table, tag);
    loop {
        let b = table[i];
        if b == EMPTY {
            return None;
        }
        if tag_of(b) == tag && eq(id_of(b)) {
            return Some(i);
        }
        i = (i + 1) & mask;
    }
}

/// [`probe`] in an old table being emptied: passes over tombstones, and over the positions
/// below `moved` (copied into the table in use, where the lookup looked already).
fn probe_old(
    table: &[u64],
    tag: u32,
    moved: usize,
    eq: &mut impl FnMut(u32) -> bool,
) -> Option<usize> {
    let mask = table.len() - 1;
    let mut i = home(table, tag);
    loop {
        let b = table[i];
        if b == EMPTY {
            return None;
        }
        if i >= moved && is_live(b) && tag_of(b) == tag && eq(id_of(b)) {
            return Some(i);
        }
        i = (i + 1) & mask;
    }
}

/// Puts `bucket` in the first empty bucket of its run (the table has room).
fn place(table: &mut [u64], bucket: u64) {
    let mask = table.len() - 1;
    let mut i = home(table, tag_of(bucket));
    while table[i] != EMPTY {
        i = (i + 1) & mask;
    }
    table[i] = bucket;
}

/// Empties bucket `found` of a table without tombstones. Backward shift: pulls each later entry
/// of the run into the hole when the hole lies between its home and where it sits, so every
/// entry stays reachable from its home.
fn remove_at(table: &mut [u64], found: usize) {
    let mask = table.len() - 1;
    let mut hole = found;
    let mut j = (found + 1) & mask;
    loop {
        let b = table[j];
        if b == EMPTY {
            break;
        }
        let h = home(table, tag_of(b));
        if (j.wrapping_sub(hole) & mask) <= (j.wrapping_sub(h) & mask) {
            table[hole] = b;
            hole = j;
        }
        j = (j + 1) & mask;
    }
    table[hole] = EMPTY;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn retain_keeps_exactly_the_accepted_entries_in_a_smaller_table() {
        let mut t = IdTable::default();
        let hash = |i: u32| u64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        for i in 0..10_000u32 {
            t.insert_unique(hash(i), i);
        }
        let before = t.capacity();
        t.retain(|id| id % 100 == 7);
        assert_eq!(t.len(), 100);
        assert!(
            t.capacity() <= 256,
            "room given back: {} of {before}",
            t.capacity()
        );
        for i in 0..10_000u32 {
            let found = t.find(hash(i), |id| id == i);
            assert_eq!(found.is_some(), i % 100 == 7, "id {i}");
        }
        // Still a working table: removals and inserts after the rebuild.
        assert_eq!(t.remove(hash(7), |id| id == 7), Some(7));
        t.insert_unique(hash(3), 3);
        assert_eq!(t.find(hash(3), |id| id == 3), Some(3));
        t.retain(|_| false);
        assert_eq!((t.len(), t.capacity()), (0, 0));
        assert_eq!(t.find(hash(3), |id| id == 3), None);
        t.insert_unique(hash(5), 5);
        assert_eq!(t.find(hash(5), |id| id == 5), Some(5));
    }

    /// A hash whose stored tag shares its low 10 bits with those of every other even `k` of
    /// the same `k % 7` (found by search, knowing the secret as no client does), to exercise
    /// long runs and wrap-around.
    fn crowded(k: u64) -> u64 {
        let secret = process_secret();
        (k << 32..)
            .find(|&h| keyed_tag(h, secret) & 0x3ff == (k % 7) as u32)
            .unwrap()
    }

    #[test]
    fn matches_a_map_through_inserts_removals_and_growth() {
        let table = follow_a_map(IdTable::default());
        assert!(table.len() * 4 <= table.capacity() * 3);
    }

    #[test]
    fn the_fixed_table_matches_a_map_through_inserts_and_removals() {
        // 3,000 names at most, so the table never passes 3/4 of its 4,096 buckets.
        let table = follow_a_map(FixedIdTable::with_buckets(4096));
        assert_eq!(table.capacity(), 4096);
    }

    #[test]
    #[should_panic(expected = "over 3/4 full")]
    fn the_fixed_table_refuses_an_entry_past_three_quarters() {
        let mut t = FixedIdTable::with_buckets(16);
        for i in 0..13u32 {
            t.insert_unique(u64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15), i);
        }
    }

    /// The operations both tables share, for [`follow_a_map`].
    trait Table {
        fn find(&self, hash: u64, eq: impl FnMut(u32) -> bool) -> Option<u32>;
        fn insert_unique(&mut self, hash: u64, id: u32);
        fn remove(&mut self, hash: u64, eq: impl FnMut(u32) -> bool) -> Option<u32>;
        fn len(&self) -> usize;
    }

    macro_rules! table_for_tests {
        ($t:ty) => {
            impl Table for $t {
                fn find(&self, hash: u64, eq: impl FnMut(u32) -> bool) -> Option<u32> {
                    <$t>::find(self, hash, eq)
                }
                fn insert_unique(&mut self, hash: u64, id: u32) {
                    <$t>::insert_unique(self, hash, id)
                }
                fn remove(&mut self, hash: u64, eq: impl FnMut(u32) -> bool) -> Option<u32> {
                    <$t>::remove(self, hash, eq)
                }
                fn len(&self) -> usize {
                    <$t>::len(self)
                }
            }
        };
    }
    table_for_tests!(IdTable);
    table_for_tests!(FixedIdTable);

    /// Runs 40,000 random lookups, inserts and removals of 3,000 names (half of them crowded
    /// into a few runs) on `table` and on a map, checking that they agree at every step and
    /// at the end; returns the table.
    fn follow_a_map<T: Table>(mut table: T) -> T {
        let mut model: HashMap<u64, u32> = HashMap::new();
        let hashes: Vec<u64> = (0..3_000u64)
            .map(|k| {
                if k % 2 == 0 {
                    crowded(k)
                } else {
                    k.wrapping_mul(0x9e37_79b9_7f4a_7c15)
                }
            })
            .collect();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for step in 0..40_000u32 {
            crate::test_rng::xorshift(&mut x);
            let k = x % 3_000;
            let h = hashes[k as usize];
            let found = table.find(h, |id| model.get(&k) == Some(&id));
            assert_eq!(found, model.get(&k).copied(), "step {step}, key {k}");
            match model.get(&k).copied() {
                Some(id) if x % 3 == 0 => {
                    model.remove(&k);
                    assert_eq!(table.remove(h, |i| i == id), Some(id));
                }
                Some(_) => {}
                None => {
                    table.insert_unique(h, step);
                    model.insert(k, step);
                }
            }
            assert_eq!(table.len(), model.len());
        }
        // Every entry left is found, nothing else is.
        for k in 0..3_000u64 {
            let h = hashes[k as usize];
            let want = model.get(&k).copied();
            assert_eq!(table.find(h, |id| Some(id) == want), want, "key {k}");
        }
        table
    }

    /// Growth moves at most [`MOVE_PER_WRITE`] buckets per write, and every entry stays found
    /// while it runs: removals from both tables (tombstones in the old one) and inserts, with
    /// hashes that make long runs crossing the moved boundary and wrapping past the end.
    #[test]
    fn growth_moves_a_few_buckets_per_write_and_loses_nothing() {
        let mut t = IdTable::default();
        let mut live: Vec<(u64, u32)> = Vec::new();
        let hash_of = |k: u64| {
            if k % 3 == 0 {
                crowded(k)
            } else {
                k.wrapping_mul(0x9e37_79b9_7f4a_7c15)
            }
        };
        let check = |t: &IdTable, live: &[(u64, u32)], context: &str| {
            for &(h, id) in live {
                assert_eq!(t.find(h, |i| i == id), Some(id), "{context}: id {id}");
            }
            assert_eq!(t.len(), live.len(), "{context}");
        };
        let mut growths = 0;
        let mut removed_from_old = 0;
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for k in 0..40_000u64 {
            let before = (t.is_growing(), t.moved, t.old.len());
            t.insert_unique(hash_of(k), k as u32);
            live.push((hash_of(k), k as u32));
            match (before, t.is_growing()) {
                // This insert started a growth: the old table is untouched but for one step.
                ((false, _, _), true) => {
                    growths += 1;
                    assert!(t.moved <= MOVE_PER_WRITE, "moved {} at once", t.moved);
                }
                // A step of a growth: MOVE_PER_WRITE buckets more, or the end.
                ((true, moved, _), true) => assert_eq!(t.moved, moved + MOVE_PER_WRITE),
                ((true, moved, old), false) => assert!(old - moved <= MOVE_PER_WRITE),
                ((false, _, _), false) => {}
            }
            // Every write while growing removes an entry, often one not moved yet.
            if t.is_growing() {
                crate::test_rng::xorshift(&mut x);
                let victim = (x % live.len() as u64) as usize;
                let (h, id) = live.swap_remove(victim);
                let in_old = matches!(t.locate(h, &mut |i| i == id), Some(Place::Old(_)));
                removed_from_old += usize::from(in_old);
                assert_eq!(t.remove(h, |i| i == id), Some(id));
                assert_eq!(t.find(h, |i| i == id), None);
            }
            if k % 97 == 0 || t.is_growing() && k % 7 == 0 {
                check(&t, &live, &format!("after key {k}"));
            }
        }
        assert!(growths >= 8, "{growths} growths");
        assert!(
            removed_from_old > 20,
            "{removed_from_old} removals from the old table"
        );
        while t.is_growing() {
            let (h, id) = live.pop().unwrap();
            t.remove(h, |i| i == id);
        }
        check(&t, &live, "at the end");
        assert_eq!(t.capacity(), t.buckets.len());
        // Nothing dropped or kept twice: the current table holds exactly the live entries.
        let stored = t.buckets.iter().filter(|&&b| is_live(b)).count();
        assert_eq!(stored, live.len());
    }

    /// Hashes an attacker could aim at one bucket of a table placed by their low bits (all
    /// equal there) spread over the table: no run grows long.
    #[test]
    fn hashes_aimed_at_one_bucket_do_not_form_one_run() {
        let mut t = IdTable::default();
        for i in 0..20_000u32 {
            t.insert_unique((u64::from(i) << 32) | 0xabc, i);
        }
        let mut longest = 0;
        let mut run = 0;
        // Twice round, so that a run wrapping past the end is measured whole.
        for b in t.buckets.iter().chain(t.buckets.iter()) {
            run = if *b == EMPTY { 0 } else { run + 1 };
            longest = longest.max(run);
        }
        assert!(longest < 500, "longest run {longest} of 20,000 entries");
        for i in (0..20_000u32).step_by(97) {
            assert_eq!(t.find((u64::from(i) << 32) | 0xabc, |id| id == i), Some(i));
        }
    }

    #[test]
    fn equal_hashes_are_told_apart_by_the_callers_comparison() {
        let mut t = IdTable::default();
        for id in 0..50 {
            t.insert_unique(42, id);
        }
        for id in 0..50 {
            assert_eq!(t.find(42, |i| i == id), Some(id));
        }
        assert_eq!(t.remove(42, |i| i == 17), Some(17));
        assert_eq!(t.find(42, |i| i == 17), None);
        assert_eq!(t.find(42, |i| i == 49), Some(49));
        // The first entry in the probe sequence: some live id (growth reorders runs).
        let first = t.first_candidate(42).unwrap();
        assert!(first < 50 && first != 17);
        assert_eq!(t.first_candidate(43), None);
        assert!(t.bucket_address(42).is_some());
        assert!(IdTable::default().bucket_address(42).is_none());
    }
}
